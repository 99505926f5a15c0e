"""Partitioning: ``pydiskimg partition`` beside the seed's truncate + parted + sgdisk, same disk,
same run.

Three ways, each making the same partition table on a fresh sparse file:

* ``seed``: truncate -s, the seed's parted script, its sgdisk line (sgdisk sleeps 1 s after
  writing, to let the kernel re-read a block device's table: that is most of its time);
* ``seed-parted``: truncate + parted only (no sgdisk; random GUIDs, so not the same table);
* ``cli``: ``python -m pydiskimg partition`` in a child process (interpreter start included);
* ``lib``: ``plan_layout`` + ``write_table`` in-process.

    python -m pytest bench/bench_partition.py --benchmark-only --benchmark-group-by=param:table
    python bench/bench_partition.py             # a table: seconds each way and the ratios
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pydiskimg import layout
from pydiskimg.io import Image

DISK = "4G"
DISK_BYTES = 4 << 30
DISK_GUID_ARG = "97FD5997-D90B-4AA3-8D16-C1723AEA73C"  # the seed's, verbatim
P1 = "1C06F03B-704E-4657-B9CD-681A087A2FDC"
P2 = "970C694F-AFD0-4B99-B750-CDB7A329AB6F"
ROOT = "F222513B-DED1-49FA-B591-20CE86A2FE7F"

PARTED = {
    "legacy": ["mklabel", "msdos", "mkpart", "primary", "ext4", "1MiB", "-1"],
    "legacy+gpt": ["mklabel", "gpt", "mkpart", "no-fs", "1MB", "2MB", "set", "1", "bios_grub", "on",
                   "align-check", "optimal", "1", "mkpart", "primary", "ext4", "2MB", "-1",
                   "align-check", "optimal", "2", "print"],
    "efi": ["mklabel", "gpt", "mkpart", "ESP", "fat32", "8MiB", "256M", "set", "1", "boot", "on",
            "mkpart", "primary", "ext4", "256M", "-1"],
    "hybrid": ["mklabel", "gpt", "mkpart", "ESP", "fat32", "8MiB", "256M", "set", "1", "boot", "on",
               "mkpart", "no-fs", "0", "1024KiB", "set", "2", "bios_grub", "on",
               "mkpart", "primary", "ext4", "256M", "-1"],
}
SGDISK = {
    "legacy+gpt": [f"--partition-guid=1:{P1}", f"--partition-guid=2:{P2}", f"--partition-guid=3:{ROOT}"],
    "efi": [f"--partition-guid=1:{P1}", f"--partition-guid=2:{ROOT}"],
    "hybrid": [f"--partition-guid=1:{P1}", f"--partition-guid=2:{P2}", f"--partition-guid=3:{ROOT}"],
}
TABLES = list(PARTED)


def seed(path: Path, table: str, sgdisk: bool = True) -> None:
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", DISK, str(path)], check=True)
    subprocess.run(["parted", "--script", str(path), "--", *PARTED[table]], check=True, capture_output=True)
    if sgdisk and table in SGDISK:
        subprocess.run(["sgdisk", f"--disk-guid={DISK_GUID_ARG}", *SGDISK[table], str(path)], check=True, capture_output=True)


def cli(path: Path, table: str) -> None:
    subprocess.run([sys.executable, "-m", "pydiskimg", "partition", str(path), "--partition-table", table,
                    "--disk-size", DISK], check=True)


def lib(path: Path, table: str) -> None:
    layout._run_seed_script.cache_clear()
    lay = layout.plan_layout(table, DISK_BYTES)
    img = Image.create(path, DISK_BYTES)
    try:
        layout.write_table(img, lay)
    finally:
        img.close()


WAYS: dict[str, Callable[[Path, str], None]] = {
    "seed": seed,
    "seed-parted": lambda p, t: seed(p, t, sgdisk=False),
    "cli": cli,
    "lib": lib,
}


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("way", list(WAYS))
def test_partition(benchmark, tmp_path: Path, table: str, way: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "disk.img"
    rounds = 3 if way in ("seed", "cli") else 10
    benchmark.pedantic(WAYS[way], args=(path, table), rounds=rounds, iterations=1)
    assert os.path.getsize(path) == DISK_BYTES


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "disk.img"
        print(f"{'table':<11} " + " ".join(f"{w:>12}" for w in WAYS) + "   seed/cli  seed/lib")
        for table in TABLES:
            t = {}
            for way, fn in WAYS.items():
                n = 3 if way == "seed" else 10
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    fn(path, table)
                    times.append(time.perf_counter() - t0)
                t[way] = min(times)
            print(f"{table:<11} " + " ".join(f"{t[w]:>11.4f}s" for w in WAYS)
                  + f"   {t['seed'] / t['cli']:>8.1f}x {t['seed'] / t['lib']:>8.0f}x")


if __name__ == "__main__":
    main()
