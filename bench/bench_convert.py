"""Format conversion: pydiskimg's convert (qemu-img + header pinning) beside plain qemu-img.

The same raw image (sparse, 512 MiB virtual with ~160 MiB of data: compressible text, random
bytes, zero runs) is converted to every format both ways in one run.  The difference is the cost
of the deterministic mode (reading and rewriting one or two 512-byte headers) plus the temporary
name and rename.

    python -m pytest bench/bench_convert.py --benchmark-only --benchmark-group-by=param:fmt
    python bench/bench_convert.py            # a table: seconds each way and the ratio
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from pydiskimg import qemu

DISK_GUID = uuid.UUID("97FD5997-F390-0B4A-A3F8-D106C1723AEA")
EPOCH = 1_700_000_000
FORMATS = ["qcow2", "qcow2-compressed", "vdi", "vpc"]
SIZE = 512 << 20


def make_raw(path: Path) -> Path:
    """Deterministic sparse raw image: 64 MiB text, 64 MiB random, 32 MiB written zeros."""
    if path.exists() and path.stat().st_size == SIZE:
        return path
    text = (b"pydiskimg bench line: the quick brown fox jumps over the lazy dog\n" * 16384)[
        : 1 << 20
    ]
    with open(path, "wb") as f:
        f.truncate(SIZE)
        f.seek(16 << 20)
        for _ in range(64):
            f.write(text)
        f.seek(128 << 20)
        seed = b"bench"
        for i in range(64):
            f.write(hashlib.shake_256(seed + i.to_bytes(4, "little")).digest(1 << 20))
        f.seek(256 << 20)
        f.write(bytes(32 << 20))
    return path


def plain(raw: Path, out: Path, fmt: str) -> None:
    qfmt, extra = qemu.FORMATS[fmt]
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", qfmt, *extra, str(raw), str(out)],
        check=True,
    )


def ours(raw: Path, out: Path, fmt: str) -> None:
    qemu.convert(raw, out, fmt, deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw(tmp_path_factory.mktemp("bench") / "disk.raw")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("tool", ["qemu-img", "pydiskimg"])
def test_convert(benchmark, raw: Path, tmp_path: Path, fmt: str, tool: str) -> None:
    out = tmp_path / f"out.{fmt}"
    fn = plain if tool == "qemu-img" else ours

    def once() -> None:
        if out.exists():
            out.unlink()
        fn(raw, out, fmt)

    benchmark.group = f"convert {fmt}"
    benchmark.pedantic(once, rounds=3, iterations=1, warmup_rounds=0)


def main() -> int:
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        work = Path(d)
        raw = make_raw(work / "disk.raw")
        print(
            f"raw image: {SIZE >> 20} MiB virtual, {os.stat(raw).st_blocks * 512 >> 20} MiB allocated"
        )
        print(f"{'format':18} {'qemu-img s':>11} {'pydiskimg s':>12} {'ratio':>7}")
        for fmt in FORMATS:
            times = {}
            for name, fn in (("qemu-img", plain), ("pydiskimg", ours)):
                best = float("inf")
                for _ in range(3):
                    out = work / f"out.{fmt}"
                    if out.exists():
                        out.unlink()
                    t0 = time.perf_counter()
                    fn(raw, out, fmt)
                    best = min(best, time.perf_counter() - t0)
                times[name] = best
            ratio = times["pydiskimg"] / times["qemu-img"]
            print(f"{fmt:18} {times['qemu-img']:11.3f} {times['pydiskimg']:12.3f} {ratio:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
