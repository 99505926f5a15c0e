"""Hostile images whose cost, not shape, is the attack: the readers bound their total work.

A FAT volume made by mkfs.vfat + mcopy, then edited so that 2000 files all point at the same
24 MiB cluster chain (fsck.fat -n confirms the cross-links).  Read naively, ``inspect --files``
would follow and hash that chain 2000 times (48 GB); the reader refuses after a few files.
"""

from __future__ import annotations

import json
import re
import resource
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


E2TOOLS = ("mke2fs", "debugfs", "e2fsck")
needs_e2 = pytest.mark.skipif(any(shutil.which(t) is None for t in E2TOOLS), reason=f"needs {E2TOOLS}")


def _tree(root: Path) -> Path:
    (root / "d" / "e").mkdir(parents=True)
    for i in range(50):
        (root / "d" / f"f{i}").write_bytes(b"file %d\n" % i)
    (root / "d" / "e" / "big").write_bytes(bytes(range(251)) * 12000)
    (root / "link").symlink_to("d/f1")
    return root


@needs_e2
def test_meta_bg_agrees_with_debugfs(tmp_path: Path) -> None:
    """meta_bg (descriptors in the first groups of each meta group, as resize2fs makes past
    the reserved GDT): the listing equals debugfs's, and e2fsck calls the image clean."""
    from test_audit_corpora import KEYS, debugfs_listing

    img = tmp_path / "mb.img"
    with open(img, "wb") as f:
        f.truncate(200 * MiB)
    # 1 KiB blocks and 64-byte descriptors: 16 per block, so groups 16.. use meta group 1's block
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode",
                    "-E", "root_owner=0:0", "-d", str(_tree(tmp_path / "tree")), str(img)],
                   check=True, capture_output=True)
    assert subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, check=False).returncode == 0
    dump = subprocess.run(["dumpe2fs", str(img)], capture_output=True, text=True, check=True).stdout
    assert "meta_bg" in dump and "Group 16:" in dump
    p = subprocess.run([sys.executable, "-m", "pydiskimg", "inspect", "--files", "--json", str(img)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    files = json.loads(p.stdout)["filesystem"]["files"]
    ours = {f["path"]: {k: f[k] for k in KEYS if k in f} for f in files}
    work = tmp_path / "debugfs"
    work.mkdir()
    assert ours == debugfs_listing(img, work)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@needs_e2
def test_ext4_absurd_group_count_is_cheap(tmp_path: Path) -> None:
    """A superblock edited to claim 200 million groups (8 blocks each) over a sparse 1.6 TB
    file: reading every descriptor up front means 6.4 GB of descriptors and a dict each.
    Within a 4 GiB address-space limit, the reader reads descriptors as it needs them, finds
    group 1's empty (mke2fs wrote one group) and says so in one line."""
    img = tmp_path / "groups.img"
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-I", "128", "-N", "16",
                    "-O", "^resize_inode,^dir_index,^ext_attr", "-E", "root_owner=0:0", str(img), "8M"],
                   check=True, capture_output=True)
    groups = 200_000_000
    with open(img, "r+b") as f:
        f.seek(1024)
        sb = bytearray(f.read(1024))
        assert struct.unpack_from("<H", sb, 0x38)[0] == 0xEF53
        assert struct.unpack_from("<I", sb, 0x28)[0] == 16  # s_inodes_per_group
        struct.pack_into("<I", sb, 0x04, 8 * groups + 1)  # s_blocks_count_lo
        struct.pack_into("<I", sb, 0x20, 8)  # s_blocks_per_group
        struct.pack_into("<I", sb, 0x24, 8)  # s_clusters_per_group
        struct.pack_into("<I", sb, 0x00, 16 * groups)  # s_inodes_count
        f.seek(1024)
        f.write(sb)
        f.truncate((8 * groups + 1) * 1024)
    p = subprocess.run([sys.executable, "-m", "pydiskimg", "inspect", "--files", "--json", str(img)],
                       capture_output=True, text=True, timeout=300, check=False,
                       preexec_fn=_limit_memory)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and "group 1 descriptor: block_bitmap at block 0" in lines[0], lines
