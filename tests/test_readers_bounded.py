"""Hostile images whose cost, not shape, is the attack: the readers bound their total work.

A FAT volume made by mkfs.vfat + mcopy, then edited so that 2000 files all point at the same
24 MiB cluster chain (fsck.fat -n confirms the cross-links).  Read naively, ``inspect --files``
would follow and hash that chain 2000 times (48 GB); the reader refuses after a few files.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

MiB = 1 << 20
BIG = 24 * MiB  # 2000 files x 24 MiB: 48 GB to hash if the reader followed every link
TOOLS = ("mkfs.vfat", "mcopy", "fsck.fat")
needs = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason=f"needs {TOOLS}")


def _entries(data: bytes, pattern: bytes) -> dict[bytes, int]:
    """Offset of each directory entry whose 11-byte short name matches ``pattern``."""
    found: dict[bytes, int] = {}
    for m in re.finditer(pattern, data):
        if m.start() % 32 == 0:  # entries are 32-byte aligned
            assert m.group() not in found, m.group()
            found[m.group()] = m.start()
    return found


@needs
def test_fat_cross_linked_files_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "many").mkdir(parents=True)
    (src / "big.bin").write_bytes(bytes(range(256)) * (BIG // 256))
    for i in range(2000):
        (src / "many" / f"f{i:04d}").write_bytes(b"x")
    img = tmp_path / "fat.img"
    subprocess.run(["mkfs.vfat", "-F", "32", "-C", str(img), str(64 * 1024)], check=True,
                   capture_output=True)
    subprocess.run(["mcopy", "-s", "-i", str(img), str(src / "big.bin"), str(src / "many"), "::"],
                   check=True, capture_output=True)
    data = bytearray(img.read_bytes())
    big = _entries(data, rb"BIG     BIN")[b"BIG     BIN"]
    hi, lo, size = struct.unpack_from("<H", data, big + 20)[0], *struct.unpack_from("<HI", data, big + 26)
    assert size == BIG
    small = _entries(data, rb"F\d{4}      ")
    assert len(small) == 2000
    for e in small.values():
        struct.pack_into("<H", data, e + 20, hi)
        struct.pack_into("<HI", data, e + 26, lo, size)
    img.write_bytes(bytes(data))
    fsck = subprocess.run(["fsck.fat", "-n", str(img)], capture_output=True, text=True, check=False)
    assert fsck.returncode != 0 and "share clusters" in fsck.stdout.lower(), fsck.stdout[-2000:]

    p = subprocess.run([sys.executable, "-m", "pydiskimg", "inspect", "--files", "--json", str(img)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pydiskimg: error: "), lines
    assert "cross-linked" in lines[0], lines[0]
