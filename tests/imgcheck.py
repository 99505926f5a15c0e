"""Reference-tool checks for whole disk images (sgdisk, sfdisk, fsck.fat, mtools, qemu-img).

Each check runs the reference tool and asserts on what *it* says; nothing here trusts
pydiskimg's own readers.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path


def run(*cmd: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def sfdisk_json(image: str | Path) -> dict:
    return json.loads(run("sfdisk", "--json", str(image)).stdout)["partitiontable"]


def partitions(image: str | Path) -> list[tuple[int, int]]:
    """(byte offset, byte size) of each partition, in table order, as sfdisk reads them."""
    t = sfdisk_json(image)
    ss = t.get("sectorsize", 512)
    return [(p["start"] * ss, p["size"] * ss) for p in t["partitions"]]


def assert_table_clean(image: str | Path, kind: str) -> None:
    """sgdisk -v finds no problem (GPT) and sfdisk --verify is silent (every table)."""
    if kind in ("legacy+gpt", "efi", "hybrid"):
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


def assert_fat_clean(fat_image: str | Path) -> None:
    """fsck.fat -n exits 0 and prints nothing beyond its banner and summary."""
    r = run("fsck.fat", "-n", str(fat_image), check=False)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    noise = [ln for ln in lines if not (ln.startswith("fsck.fat ") or "files," in ln and "clusters" in ln)]
    assert r.returncode == 0 and not noise, "\n".join(lines)


def fat_tree(fat_image: str | Path, dest: str | Path) -> Path:
    """Copy the whole FAT filesystem out with mtools (names, folders, data)."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    os.makedirs(dest, exist_ok=True)
    r = run("mdir", "-i", str(fat_image), "-b", "::/", check=False, env=env)
    if r.stdout.strip():
        run("mcopy", "-s", "-n", "-i", str(fat_image), "::/*", str(dest) + "/", env=env)
    return Path(dest)


def tree_digest(root: str | Path, *, regular_and_dirs_only: bool = False) -> dict[str, str]:
    """path -> 'dir' or sha256 of the data, for comparing trees read back by a reference tool."""
    out: dict[str, str] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            if regular_and_dirs_only and not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


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
