"""Plain MBRs built by pydiskimg against the ones sfdisk writes for the same records: every
byte of sector 0 (records, CHS at 255 heads x 63 sectors, FE FF FF past cylinder 1023, disk
signature, 55 AA)."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pydiskimg.mbr.read import read_mbr
from pydiskimg.mbr.write import MBRRecord, build_mbr, build_protective_mbr, lba_to_chs

pytestmark = pytest.mark.skipif(not shutil.which("sfdisk"), reason="sfdisk is needed (CI installs it)")

DISK = 3 * (1 << 40) // 512  # a sparse 3 TiB disk: any record below 2^32 sectors fits


def _random_records(rng: random.Random) -> list[MBRRecord | None]:
    n = rng.randint(1, 4)
    cuts = sorted(rng.sample(range(1, (1 << 32) - 1), 2 * n))
    recs: list[MBRRecord | None] = []
    for i in range(n):
        start, end = cuts[2 * i], cuts[2 * i + 1]
        recs.append(MBRRecord(start, end - start, rng.choice([0x83, 0x0C, 0xEF, 0x07, 0x82]), rng.random() < 0.3))
    return recs


def _sfdisk(path: Path, records: list[MBRRecord | None], sig: int) -> bytes:
    lines = ["label: dos", f"label-id: {sig:#010x}", "unit: sectors"]
    for r in records:
        assert r is not None
        lines.append(f"start={r.start}, size={r.size}, type={r.os_type:x}" + (", bootable" if r.bootable else ""))
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", str(DISK * 512), str(path)], check=True)
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)], check=True,
                   input="\n".join(lines) + "\n", text=True, capture_output=True)
    with open(path, "rb") as f:
        return f.read(512)


def test_sector0_identical_to_sfdisk(tmp_path: Path) -> None:
    rng = random.Random(7)
    cases = [([MBRRecord(2048, 2043904, 0x83)], 0x37251638),
             ([MBRRecord(63, 16002, 0x0C, True)], 1),
             ([MBRRecord(16064, 1, 0x83), MBRRecord(16065, 16065, 0x83)], 0xFFFFFFFF)]
    cases += [(_random_records(rng), rng.randrange(1, 1 << 32)) for _ in range(12)]
    for records, sig in cases:
        want = _sfdisk(tmp_path / "d.img", records, sig)
        got = build_mbr(records, sig)
        assert got == want, (records, sig)
        back = read_mbr(got, DISK)
        assert back.disk_signature == sig
        assert [(p.number, p.start, p.size, p.os_type, p.bootable) for p in back.partitions] == [
            (i + 1, r.start, r.size, r.os_type, r.bootable) for i, r in enumerate(records) if r is not None]


def test_chs_vectors() -> None:
    """FORMATS.md C (checked with sfdisk): LBA 2048 -> 20 21 00; beyond cylinder 1023 -> FE FF FF."""
    assert lba_to_chs(2048) == bytes.fromhex("202100")
    assert lba_to_chs(0) == bytes.fromhex("000100")
    assert lba_to_chs(1024 * 16065) == bytes.fromhex("feffff")
    assert lba_to_chs(1024 * 16065 - 1) == bytes((254, 63 | (3 << 6), 255))  # last CHS-addressable


def test_protective_mbr_as_parted_writes_it() -> None:
    small = build_protective_mbr(2048000)
    assert small[446:462] == bytes.fromhex("00000200eeffffff01000000ff3f1f00")
    assert small[510:] == b"\x55\xaa" and small[:446] == bytes(446)
    big = build_protective_mbr(6 << 30)  # 3 TiB: size clamps to 0xFFFFFFFF
    assert big[458:462] == b"\xff\xff\xff\xff"
