"""Generate a deterministic benchmark tree: many small files, some large ones, big folders.

    python bench/gentree.py DEST [--files 50000] [--seed 1] [--large-mib 400]

The same seed and counts always give the same names, sizes, contents, modes and mtimes.
A marker beside it (``DEST.gentree.json``) records the parameters, so an existing tree is
reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

import numpy as np

MTIME_NS = 1_700_000_000_000_000_000


def generate(dest: str, files: int = 50_000, seed: int = 1, large_mib: int = 400) -> str:
    """Create the tree under ``dest`` (replaced if its marker does not match) and return it."""
    params = {"files": files, "seed": seed, "large_mib": large_mib, "version": 1}
    if reusable(dest, params, "gentree"):
        return dest
    os.makedirs(dest)
    rng = np.random.default_rng(seed)
    pool = rng.bytes(1 << 20)  # small files are slices of this

    # folders: a few big ones (thousands of entries: htrees) and a random hierarchy
    big_dirs = [f"big{i}" for i in range(3)]
    dirs = list(big_dirs)
    for i in range(400):
        depth = int(rng.integers(1, 5))
        parent = dirs[int(rng.integers(0, len(dirs)))] if depth > 1 and i else ""
        dirs.append(os.path.join(parent, f"d{i:03d}") if parent else f"d{i:03d}")
    for d in dirs:
        os.makedirs(os.path.join(dest, d), exist_ok=True)

    # large files: tens of MiB each, large_mib in total
    n_large = max(1, large_mib // 40)
    for i in range(n_large):
        size = (large_mib << 20) // n_large + int(rng.integers(0, 4096))
        path = os.path.join(dest, dirs[3 + i % (len(dirs) - 3)], f"large{i:02d}.bin")
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = rng.bytes(min(left, 8 << 20))
                f.write(chunk)
                left -= len(chunk)

    # small files: sizes mostly under 16 KiB (log-uniform), 5000 in each big folder
    per_big = min(5000, files // 10)
    n_small = files - n_large
    sizes = np.exp(rng.uniform(0, np.log(64 << 10), n_small)).astype(np.int64) - 1
    offsets = rng.integers(0, len(pool) - (64 << 10), n_small)
    where = rng.integers(3, len(dirs), n_small)
    exec_bits = rng.random(n_small) < 0.1
    for k in range(n_small):
        d = big_dirs[k // per_big] if k < per_big * len(big_dirs) else dirs[int(where[k])]
        name = f"f{k:06d}{'.sh' if exec_bits[k] else '.txt'}"
        path = os.path.join(dest, d, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755 if exec_bits[k] else 0o644)
        try:
            s = int(sizes[k])
            if s:
                o = int(offsets[k])
                os.write(fd, pool[o : o + s])
        finally:
            os.close(fd)
    # a few symlinks and hardlinks
    big0 = sorted(n for n in os.listdir(os.path.join(dest, "big0")) if n.startswith("f"))
    for i in range(200):
        os.symlink(f"../big0/{big0[i]}", os.path.join(dest, "big1", f"link{i:03d}"))
    for i in range(50):
        os.link(os.path.join(dest, "big0", big0[i]), os.path.join(dest, "big2", f"hard{i:03d}"))

    finish(dest, params, "gentree")
    return dest


def _marker(dest: str, kind: str) -> str:
    return os.path.normpath(dest) + f".{kind}.json"


def reusable(dest: str, params: dict[str, Any], kind: str) -> bool:
    """True when ``dest`` was generated with ``params`` (its marker ``DEST.KIND.json`` says so);
    otherwise ``dest`` is removed, to be generated anew."""
    try:
        with open(_marker(dest, kind)) as f:
            if json.load(f) == params:
                return True
    except (OSError, ValueError):
        pass
    if os.path.exists(dest):
        shutil.rmtree(dest)
    return False


def finish(dest: str, params: dict[str, Any], kind: str) -> None:
    """Give every entry of ``dest`` the same mtime (:data:`MTIME_NS`), then write its marker."""
    for root, dnames, fnames in os.walk(dest, topdown=False):
        for n in fnames + dnames:
            os.utime(os.path.join(root, n), ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
        os.utime(root, ns=(MTIME_NS, MTIME_NS))
    with open(_marker(dest, kind), "w") as f:
        json.dump(params, f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("dest")
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--large-mib", type=int, default=400)
    a = ap.parse_args(argv)
    print(generate(a.dest, a.files, a.seed, a.large_mib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
