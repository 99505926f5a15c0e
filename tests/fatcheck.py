"""Reference-tool checks for FAT images: fsck.fat, mtools, mkfs.vfat.

Expected values come from these tools and from the source folders (os.lstat, file bytes),
never from pydiskimg.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

MT_ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1", TZ="UTC", LC_ALL="C.UTF-8")


def run(*cmd: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def assert_fsck_silent(img: str | Path) -> str:
    """fsck.fat -n: exit 0 and no message besides its banner and the one-line summary."""
    r = run("fsck.fat", "-n", str(img), check=False)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    noise = [ln for ln in lines if not (ln.startswith("fsck.fat ") or re.search(r": \d+ files, \d+/\d+ clusters$", ln))]
    assert r.returncode == 0 and not noise, f"rc={r.returncode}\n" + "\n".join(lines)
    return r.stdout


def mkfs_vfat(path: str | Path, size: int, *args: str) -> None:
    """A fresh sparse file of ``size`` bytes formatted by mkfs.vfat with ``args``."""
    p = Path(path)
    if p.exists():
        p.unlink()
    with open(p, "wb") as f:
        f.truncate(size)
    run("mkfs.vfat", *args, str(p))


_ENTRY = re.compile(
    r"^(?P<base>.{8}) (?P<ext>.{3}) +(?P<size><DIR>|\d+) +(?P<date>\d{4}-\d\d-\d\d) +(?P<time>\d+:\d\d) ?(?: (?P<long>.+))?$"
)


def mdir(img: str | Path) -> dict[str, dict[str, object]]:
    """``mdir -/ -a``: path -> {short, long, dir, size, when} for every entry but . and ..."""
    r = run("mdir", "-/", "-a", "-i", str(img), "::/", env=MT_ENV, check=False)
    out: dict[str, dict[str, object]] = {}
    if r.returncode == 1 and r.stderr.strip() == 'mdir: File "::/" not found':
        return out  # what mdir says of an empty volume (mkfs.vfat's too)
    assert r.returncode == 0, r.stderr
    folder = None
    for line in r.stdout.splitlines():
        if line.startswith("Directory for ::"):
            folder = line[len("Directory for ::"):].rstrip("/")
            continue
        m = _ENTRY.match(line)
        if not m or folder is None:
            continue
        base, ext = m["base"].rstrip(), m["ext"].rstrip()
        if base in (".", ".."):
            continue
        short = f"{base}.{ext}" if ext else base
        name = m["long"] if m["long"] else short
        out[f"{folder}/{name}"] = {
            "short": short,
            "long": m["long"],
            "dir": m["size"] == "<DIR>",
            "size": None if m["size"] == "<DIR>" else int(m["size"]),
            "when": f"{m['date']} {m['time']}",
        }
    return out


def mtools_extract(img: str | Path, dest: str | Path) -> Path:
    """Copy everything out with ``mcopy -s -m`` (names, folders, data, mtimes)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    r = run("mdir", "-b", "-a", "-i", str(img), "::/", env=MT_ENV, check=False)
    if r.stdout.strip():
        run("mcopy", "-s", "-m", "-n", "-i", str(img), "::/*", str(dest) + "/", env=MT_ENV)
    return dest


def digest(root: str | Path, *, mtimes: bool = False) -> dict[str, object]:
    """relative path -> 'dir' or sha256 (with the mtime rounded down to FAT's 2 s when asked)."""
    out: dict[str, object] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                h = hashlib.sha256(fh.read()).hexdigest()
            if mtimes:
                out[os.path.relpath(p, root)] = (h, int(os.lstat(p).st_mtime) // 2 * 2)
            else:
                out[os.path.relpath(p, root)] = h
    return out


def minfo(img: str | Path) -> dict[str, str]:
    """``minfo`` lines of the form 'key: value' (last one wins)."""
    r = run("minfo", "-i", str(img), "::", env=MT_ENV)
    out = {}
    for line in r.stdout.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
        elif "=" in line:
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip().strip('"')
    return out


def fsck_verbose(img: str | Path) -> str:
    return run("fsck.fat", "-n", "-v", str(img), check=False).stdout
