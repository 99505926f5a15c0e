"""The pre-flight estimates (pydiskimg/space.py) against what the kernel really allocates.

Images are written to a tmpfs, which allocates whole 4 KiB pages and nothing else, so the
file's ``st_blocks`` is exactly what the write took.  Each estimate must be an upper bound, and
close (a loose one would refuse builds that fit).  These tests also catch a writer or plan
change the estimate does not follow.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from test_faults import MiB, needs_root, tmpfs

from pydiskimg import ext4, fat, space
from pydiskimg.pipeline import Build, Progress
from pydiskimg.qemu import FORMATS
from pydiskimg.spec import load
from pydiskimg.tree import scan


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def close_above(estimate: int, real: int, upper_only: bool = False) -> None:
    """``estimate`` is an upper bound of ``real`` (``upper_only``: is not far above it)."""
    if not upper_only:
        assert estimate >= real, (estimate, real)
    assert estimate <= real * 1.05 + 256 * 1024, (estimate, real)


def _mixed_tree(root: Path) -> Path:
    """Small dense files, large ones, sparse ones (holes between data), empty ones."""
    rng = random.Random(5)
    (root / "etc").mkdir(parents=True)
    for i in range(300):
        (root / "etc" / f"f{i}").write_bytes(rng.randbytes(rng.randrange(0, 20000)))
    (root / "big").write_bytes(rng.randbytes(9 * MiB + 123))
    with open(root / "sparse", "wb") as f:
        for k in range(6):
            f.seek(k * 3 * MiB)
            f.write(rng.randbytes(70000))
    return root


@needs_root
def test_ext4_estimate(tmp_path: Path, torture_tree: Path) -> None:
    for src in (_mixed_tree(tmp_path / "mixed"), torture_tree):
        tree = scan(str(src))
        with tmpfs(256 * MiB) as mnt:
            plan = ext4.make_filesystem(tree, mnt / "fs.img")
            # (block bitmaps are counted for every group; a group left BLOCK_UNINIT has none)
            close_above(space.ext4_bytes(plan) - 4096 * plan.params.groups, allocated(mnt / "fs.img"),
                        upper_only=True)
            close_above(space.ext4_bytes(plan), allocated(mnt / "fs.img"))


@needs_root
def test_fat_estimate(tmp_path: Path) -> None:
    src = _mixed_tree(tmp_path / "mixed")
    tree = scan(str(src), all_root=True)
    with tmpfs(256 * MiB) as mnt:
        plan = fat.make_fat(tree, mnt / "esp.img", 64 * MiB, fat.FatOptions())
        close_above(space.fat_bytes(plan), allocated(mnt / "esp.img"))


@needs_root
@pytest.mark.parametrize("fmt", ["qcow2", "vdi", "vpc"])
def test_whole_build_and_conversion_estimates(tmp_path: Path, fmt: str) -> None:
    src = _mixed_tree(tmp_path / "mixed")
    with tmpfs(256 * MiB) as mnt:
        raw = mnt / "disk.img"
        b = Build(load(None, {"root": str(src), "output": str(raw), "partitionTableType": "efi"}),
                  Progress(quiet=True))
        b.run()
        close_above(b.needed, allocated(raw))  # the whole raw image: table, ESP, root

        out = mnt / f"disk.{fmt}"
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", FORMATS[fmt][0], *FORMATS[fmt][1],
                        str(raw), str(out)], check=True)
        estimate = space.converted_bytes(str(raw), fmt)
        assert estimate >= allocated(out), (estimate, allocated(out))
        assert estimate <= allocated(out) * 1.25 + MiB, (estimate, allocated(out))
