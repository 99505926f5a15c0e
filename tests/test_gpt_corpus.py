"""A corpus of broken tables: each gives exactly one clear error (class, file name, what was
expected), through the library and through ``pydiskimg inspect`` (exit 2, one line)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydiskimg import cli, layout
from pydiskimg.errors import Error, GPTError, ImageError, MBRError
from pydiskimg.gpt.read import GPTChecksumError
from pydiskimg.io import Image
from pydiskimg.mbr.read import NoTableError

SECTOR = 512
DISK = 300 << 20
N = DISK // SECTOR


def _good(path: Path, table: str = "hybrid") -> None:
    lay = layout.plan_layout(table, DISK)
    img = Image.create(path, DISK)
    layout.write_table(img, lay)
    img.close()


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _fix_crcs(path: Path, header_lba: int = 1) -> None:
    """Recompute the array and header CRCs after a deliberate change of an entry."""
    with open(path, "r+b") as f:
        f.seek(header_lba * SECTOR)
        h = bytearray(f.read(92))
        entry_lba, count, size = struct.unpack_from("<QII", h, 72)
        f.seek(entry_lba * SECTOR)
        crc = zlib.crc32(f.read(count * size))
        struct.pack_into("<I", h, 88, crc)
        struct.pack_into("<I", h, 16, 0)
        struct.pack_into("<I", h, 16, zlib.crc32(bytes(h)))
        f.seek(header_lba * SECTOR)
        f.write(h)


def _entry(n: int) -> int:
    return 2 * SECTOR + (n - 1) * 128


def _both(path: Path, entry_change: Callable[[Path, int], None]) -> None:
    """Apply the same change to the primary and backup arrays, fix every CRC."""
    entry_change(path, 2 * SECTOR)
    entry_change(path, (N - 33) * SECTOR)
    _fix_crcs(path, 1)
    _fix_crcs(path, N - 1)


def _overlap(p: Path) -> None:
    _both(p, lambda q, base: _patch(q, base + 128 * 2 + 32, struct.pack("<Q", 490000)))


def _out_of_range(p: Path) -> None:
    _both(p, lambda q, base: _patch(q, base + 128 * 2 + 40, struct.pack("<Q", N - 10)))


def _first_after_last(p: Path) -> None:
    _both(p, lambda q, base: _patch(q, base + 32, struct.pack("<QQ", 400000, 300000)))


def _huge_count(p: Path) -> None:
    _patch(p, SECTOR + 80, struct.pack("<I", 1 << 24))
    _fix_header_only(p, 1)


def _header_size(p: Path) -> None:
    _patch(p, SECTOR + 12, struct.pack("<I", 600))
    _fix_header_only(p, 1)


def _fix_header_only(p: Path, lba: int) -> None:
    with open(p, "r+b") as f:
        f.seek(lba * SECTOR)
        h = bytearray(f.read(92))
        size = struct.unpack_from("<I", h, 12)[0]
        f.seek(lba * SECTOR)
        h = bytearray(f.read(min(size, SECTOR)))
        struct.pack_into("<I", h, 16, 0)
        struct.pack_into("<I", h, 16, zlib.crc32(bytes(h)))
        f.seek(lba * SECTOR)
        f.write(h)


def _truncate(size: int) -> Callable[[Path], None]:
    return lambda p: os.truncate(p, size)


def _mbr_with(record: bytes, sig: bytes = b"\x55\xaa") -> Callable[[Path], None]:
    def change(p: Path) -> None:
        _patch(p, 0, bytes(446) + record.ljust(64, b"\0") + sig)
    return change


#: name -> (change to a good hybrid image, expected error class, words the message must hold)
CORPUS: dict[str, tuple[Callable[[Path], None], type[Error], str]] = {
    "no 55 AA": (lambda p: _patch(p, 510, b"\0\0"), NoTableError, "expected 55 aa"),
    "bad GPT signature": (lambda p: _patch(p, SECTOR, b"EFI PARX"), GPTError, "signature"),
    "bad header CRC": (lambda p: _patch(p, SECTOR + 16, b"\1\2\3\4"), GPTChecksumError, "HeaderCRC32"),
    "bad entry array CRC": (lambda p: _patch(p, _entry(1) + 60, b"X"), GPTChecksumError, "PartitionEntryArrayCRC32"),
    "bad backup header CRC": (lambda p: _patch(p, (N - 1) * SECTOR + 40, b"\7"), GPTChecksumError, "backup GPT header"),
    "bad backup array CRC": (lambda p: _patch(p, (N - 33) * SECTOR + 5, b"\7"), GPTError, "backup"),
    "truncated: backup gone": (_truncate(DISK - 16 * SECTOR), GPTError, "truncated"),
    "truncated: inside the entries": (_truncate(10 * SECTOR), GPTError, "truncated"),
    "truncated: half a sector": (_truncate(200), NoTableError, "too short"),
    "entries overlap": (_overlap, GPTError, "overlap"),
    "entry out of range": (_out_of_range, GPTError, "outside the usable range"),
    "entry first after last": (_first_after_last, GPTError, "after last"),
    "entry count huge": (_huge_count, GPTError, "entries of"),
    "header size": (_header_size, GPTError, "HeaderSize"),
    "MBR boot indicator": (_mbr_with(bytes.fromhex("12000000830000000008000000100000")), MBRError, "boot indicator"),
    "MBR past the disk end": (_mbr_with(bytes.fromhex("00000000830000000008000000ffff00")), MBRError, "past the end"),
    "MBR overlap": (_mbr_with(bytes.fromhex("0000000083000000000800000010000000000000830000000010000000100000")), MBRError, "overlap"),
    "MBR zero size": (_mbr_with(bytes.fromhex("00000000830000000008000000000000")), MBRError, "zero sectors"),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_broken_table_gives_one_clear_error(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    change, cls, words = CORPUS[name]
    path = tmp_path / "broken.img"
    _good(path)
    layout.read_table(path)  # the image is good before the change
    change(path)
    with pytest.raises(cls) as ei:
        layout.read_table(path)
    msg = str(ei.value)
    assert words in msg and str(path) in msg and "\n" not in msg
    assert cli.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pydiskimg: error: ") and str(path) in err


def test_inspect_error_in_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "broken.img"
    _good(path)
    CORPUS["bad header CRC"][0](path)
    r = subprocess.run([sys.executable, "-m", "pydiskimg", "inspect", str(path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 34 * SECTOR - 1), st.integers(0, 255)), min_size=1, max_size=6),
       table=st.sampled_from(["legacy", "efi", "hybrid"]))
def test_random_damage_never_escapes(tmp_path: Path, flips: list[tuple[int, int]], table: str) -> None:
    """Random bytes in the first 34 sectors: read_table succeeds or raises an ImageError."""
    path = tmp_path / f"fuzz-{table}.img"
    _good(path, table)
    with open(path, "r+b") as f:
        for off, val in flips:
            f.seek(off)
            f.write(bytes((val,)))
    try:
        layout.read_table(path)
    except ImageError as e:
        assert str(e) and "\n" not in str(e)
