"""Reference-tool checks for whole disk images (sgdisk, sfdisk, qemu-img); FAT ones are fatcheck's.

Each check runs the reference tool and asserts on what *it* says; nothing here trusts
pydiskimg's own readers.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fatcheck import run


def sfdisk_json(image: str | Path) -> dict:
    return json.loads(run("sfdisk", "--json", str(image)).stdout)["partitiontable"]


def partitions(image: str | Path) -> list[tuple[int, int]]:
    """(byte offset, byte size) of each partition, in table order, as sfdisk reads them."""
    t = sfdisk_json(image)
    ss = t.get("sectorsize", 512)
    return [(p["start"] * ss, p["size"] * ss) for p in t["partitions"]]


def assert_table_clean(image: str | Path, kind: str) -> None:
    """sgdisk -v finds no problem (GPT) and sfdisk --verify is silent (every table)."""
    if kind in ("legacy+gpt", "efi", "hybrid", "efixbootldr"):
        r = run("sgdisk", "-v", str(image))
        assert "No problems found" in r.stdout, r.stdout
    r = run("sfdisk", "--verify", str(image), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "problem" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr


def extract(image: str | Path, offset: int, size: int, dest: str | Path) -> Path:
    """Copy a byte range of an image to its own sparse file (kernel-side copy)."""
    with open(image, "rb") as src, open(dest, "wb") as dst:
        os.ftruncate(dst.fileno(), size)
        done = 0
        while done < size:
            n = os.copy_file_range(src.fileno(), dst.fileno(), size - done, offset + done, done)
            if n == 0:
                break
            done += n
    return Path(dest)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def qemu_img_check(path: str | Path, fmt: str) -> None:
    fmt = "qcow2" if fmt == "qcow2-compressed" else fmt
    if fmt == "raw":
        return
    if fmt == "vpc":
        # qemu-img has no check for vpc: it must at least open it as vpc, whole size
        info = json.loads(run("qemu-img", "info", "--output=json", "-f", fmt, str(path)).stdout)
        assert info["format"] == "vpc" and info["virtual-size"] > 0, info
        return
    r = run("qemu-img", "check", "-f", fmt, str(path), check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def to_raw(path: str | Path, fmt: str, dest: str | Path) -> Path:
    fmt = "qcow2" if fmt == "qcow2-compressed" else fmt
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(dest))
    return Path(dest)
