"""ext4 geometry and structure declarations, judged by mkfs.ext4 / dumpe2fs themselves."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pydiskimg.ext4 import geometry as geo
from pydiskimg.ext4 import structs

MiB = 1 << 20
GiB = 1 << 30

# sizes that exercise: no journal (< 8 MiB), floppy/small/default classes, one group with
# reserved GDT, a short last group dropped, mke2fs shrinking blocks-per-group, many flex groups
SIZES = [
    1 * MiB,
    7 * MiB,
    8 * MiB,
    64 * MiB,
    128 * MiB + 300 * 4096,
    256 * MiB + 100 * 4096,
    511 * MiB,
    600 * MiB + 12345,
    1 * GiB,
    2 * GiB + 7 * 4096,
    21 * GiB + 999 * 4096,
    100 * GiB + 128 * MiB + 1400 * 4096,
]


def mkfs_dump(tmp: Path, size: int) -> str:
    img = tmp / f"mkfs-{size}.img"
    with open(img, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-b", "4096", "-F", str(img)], check=True,
                   capture_output=True)
    out = subprocess.run(["dumpe2fs", str(img)], check=True, capture_output=True, text=True,
                         env={**os.environ, "LC_ALL": "C"}).stdout
    img.unlink()
    return out


def _num(out: str, key: str) -> int:
    m = re.search(r"^" + re.escape(key) + r":\s+(\d+)", out, re.M)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("size", SIZES)
def test_geometry_matches_mkfs(tmp_path: Path, size: int) -> None:
    out = mkfs_dump(tmp_path, size)
    p = geo.params_for(size // 4096)
    lay = geo.layout(p)
    assert p.blocks == _num(out, "Block count")
    assert p.r_blocks == _num(out, "Reserved block count")
    assert p.inodes_count == _num(out, "Inode count")
    assert p.inodes_per_group == _num(out, "Inodes per group")
    assert p.inode_blocks_per_group == _num(out, "Inode blocks per group")
    assert p.bpg == _num(out, "Blocks per group")
    assert p.reserved_gdt == _num(out, "Reserved GDT blocks")
    assert p.journal_blocks == _num(out, "Total journal blocks")
    assert ("has_journal" in out.split("Filesystem features:")[1].splitlines()[0]) == bool(
        p.journal_blocks
    )
    assert [int(x) for x in re.findall(r"Block bitmap at (\d+)", out)] == lay.block_bitmap.tolist()
    assert [int(x) for x in re.findall(r"Inode bitmap at (\d+)", out)] == lay.inode_bitmap.tolist()
    assert [int(x) for x in re.findall(r"Inode table at (\d+)", out)] == lay.inode_table.tolist()
    backups = [int(x) // p.bpg for x in re.findall(r"Backup superblock at (\d+)", out)]
    assert backups == geo.backup_groups(p.groups)


def test_struct_sizes_and_offsets() -> None:
    assert structs.ext4_super_block.sizeof() == 1024
    assert structs.ext4_group_desc.sizeof() == 64
    assert structs.ext4_inode.sizeof() == 256
    assert structs.journal_superblock_t.sizeof() == 1024
    assert structs.ext4_extent_header.sizeof() == 12
    assert structs.ext4_extent.sizeof() == 12
    assert structs.ext4_extent_idx.sizeof() == 12
    # offsets from the kernel's ext4.h / FORMATS.md A6
    d = structs.INODE_DTYPE
    for name, off in (("i_block", 0x28), ("i_generation", 0x64), ("l_i_checksum_lo", 0x7C),
                      ("i_extra_isize", 0x80), ("i_checksum_hi", 0x82), ("i_crtime", 0x90),
                      ("i_projid", 0x9C), ("i_xattr", 0xA0)):
        assert d.fields[name][1] == off, name
    s = structs.numpy_dtype(structs.ext4_super_block)
    for name, off in (("s_magic", 0x38), ("s_uuid", 0x68), ("s_reserved_gdt_blocks", 0xCE),
                      ("s_hash_seed", 0xEC), ("s_desc_size", 0xFE), ("s_jnl_blocks", 0x10C),
                      ("s_log_groups_per_flex", 0x174), ("s_kbytes_written", 0x178),
                      ("s_overhead_clusters", 0x248), ("s_checksum_seed", 0x270),
                      ("s_orphan_file_inum", 0x280), ("s_checksum", 0x3FC)):
        assert s.fields[name][1] == off, name
    g = structs.GROUP_DESC_DTYPE
    for name, off in (("bg_flags", 0x12), ("bg_checksum", 0x1E), ("bg_block_bitmap_hi", 0x20),
                      ("bg_inode_bitmap_csum_hi", 0x3A)):
        assert g.fields[name][1] == off, name
    j = structs.numpy_dtype(structs.journal_superblock_t)
    assert j.itemsize == 1024 and j.fields["s_uuid"][1] == 0x30 and j.fields["s_checksum"][1] == 0xFC


@pytest.mark.parametrize("struct_name", ["ext4_inode", "ext4_group_desc", "ext4_super_block"])
def test_dtype_row_identical_to_construct(struct_name: str) -> None:
    st = getattr(structs, struct_name)
    dt = structs.numpy_dtype(st)
    assert dt.itemsize == st.sizeof()
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 256, st.sizeof(), dtype=np.uint8).tobytes()
    parsed = st.parse(raw)
    row = np.zeros(1, dtype=dt)
    for name in dt.names:
        v = parsed[name]
        row[name][0] = np.frombuffer(v, dtype=np.uint8) if isinstance(v, bytes) else v
    assert row.tobytes() == raw
    assert st.build(parsed) == raw
    # and one changed byte is seen
    row2 = row.copy()
    row2.view(np.uint8)[5] ^= 1
    assert row2.tobytes() != raw


def test_sparse_super_groups() -> None:
    assert geo.backup_groups(100) == [1, 3, 5, 7, 9, 25, 27, 49, 81]
    assert [g for g in range(100) if geo.has_super(g)] == [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]


def test_journal_sizes() -> None:
    # ext2fs_default_journal_size, FORMATS.md A7 table
    assert geo.journal_blocks_for(2047) == 0
    assert geo.journal_blocks_for(2048) == 1024
    assert geo.journal_blocks_for(262144) == 8192
    assert geo.journal_blocks_for(32768 * 1024) == 262144


def _c_get_free_blocks(used: list[bool], start: int, finish: int, num: int) -> int | None:
    """ext2fs_get_free_blocks2 transcribed literally (one block per step)."""
    blocks = len(used)
    b = start
    if not finish:
        finish = start
    guard = 0
    while True:
        if b + num - 1 >= blocks:
            if finish > start:
                return None
            b = 0
            guard += 1
            if guard > 2:
                return None
        if not any(used[b : b + num]):
            return b
        b += 1
        if b == finish:
            return None


def _c_new_block(used: list[bool], goal: int) -> int | None:
    blocks = len(used)
    if goal >= blocks:
        goal = 0
    for b in list(range(goal, blocks)) + list(range(0, goal)):
        if not used[b]:
            return b
    return None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(20, 120).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 15)), max_size=8),
            st.integers(0, n - 1),
            st.integers(0, n - 1),
            st.integers(1, 10),
        )
    )
)
def test_allocator_primitives_match_libext2fs(args: tuple) -> None:
    n, marks, start, finish, num = args
    u = geo.Used(n)
    flags = [False] * n
    for s, ln in marks:
        ln = min(ln, n - s)
        u.mark(s, ln)
        for i in range(s, s + ln):
            flags[i] = True
    assert u.get_free_blocks(start, finish, num) == _c_get_free_blocks(flags, start, finish, num)
    if not all(flags):
        assert u.new_block(start) == _c_new_block(flags, start)
    assert u.used_in(0, n) == sum(flags)
    free = [b for s, ln in u.free_runs(0) for b in range(s, s + ln)]
    assert free == [i for i in range(n) if not flags[i]]
