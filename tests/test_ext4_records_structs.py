"""The record declarations: sizes and field offsets from the kernel headers, and the fast
paths (struct formats, numpy dtypes, the builders' output) byte-identical to construct."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pydiskimg.ext4 import records_structs as rs
from pydiskimg.ext4.dirent import build_dir, build_empty_dir_blocks
from pydiskimg.ext4.extents import build_extents
from pydiskimg.ext4.xattr import BlockXattrs, build_xattr_block, encode_xattrs

# (struct, size, {field: offset}) from ext4.h / namei.c / xattr.h / ext4_extents.h / acl.h
LAYOUT = [
    (rs.ext4_dir_entry_2, 8, {"inode": 0, "rec_len": 4, "name_len": 6, "file_type": 7}),
    (rs.ext4_dir_entry_tail, 12, {"det_rec_len": 4, "det_reserved_ft": 7, "det_checksum": 8}),
    (rs.dx_root_info, 8, {"hash_version": 4, "info_length": 5, "indirect_levels": 6}),
    (rs.dx_root_head, 0x20, {"dot": 0, "dotdot": 0xC, "info": 0x18}),
    (rs.dx_countlimit, 4, {"limit": 0, "count": 2}),
    (rs.dx_entry, 8, {"hash": 0, "block": 4}),
    (rs.dx_tail, 8, {"dt_reserved": 0, "dt_checksum": 4}),
    (rs.ext4_xattr_header, 32, {"h_refcount": 4, "h_blocks": 8, "h_hash": 0xC, "h_checksum": 0x10}),
    (rs.ext4_xattr_entry, 16, {"e_name_len": 0, "e_name_index": 1, "e_value_offs": 2,
                               "e_value_inum": 4, "e_value_size": 8, "e_hash": 0xC}),
    (rs.ext4_acl_entry, 8, {"e_id": 4}),
    (rs.ext4_acl_entry_short, 4, {"e_perm": 2}),
    (rs.posix_acl_xattr_entry, 8, {"e_id": 4}),
    (rs.ext4_extent_header, 12, {"eh_entries": 2, "eh_max": 4, "eh_depth": 6, "eh_generation": 8}),
    (rs.ext4_extent_idx, 12, {"ei_block": 0, "ei_leaf_lo": 4, "ei_leaf_hi": 8}),
    (rs.ext4_extent, 12, {"ee_block": 0, "ee_len": 4, "ee_start_hi": 6, "ee_start_lo": 8}),
    (rs.ext4_extent_tail, 4, {"et_checksum": 0}),
]


@pytest.mark.parametrize(("s", "size", "offsets"), LAYOUT)
def test_sizes_and_offsets(s, size: int, offsets: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    assert s.sizeof() == size
    names = [sc.name for sc in s.subcons]
    for field, off in offsets.items():
        before = s.subcons[: names.index(field)]
        assert sum(sc.sizeof() for sc in before) == off, field


def test_formats_and_dtypes_match_declarations() -> None:
    pairs = [
        (rs.DIRENT_FMT, rs.ext4_dir_entry_2), (rs.DIRENT_TAIL_FMT, rs.ext4_dir_entry_tail),
        (rs.DX_ROOT_HEAD_FMT, rs.dx_root_head), (rs.XATTR_HEADER_FMT, rs.ext4_xattr_header),
        (rs.XATTR_ENTRY_FMT, rs.ext4_xattr_entry), (rs.EXTENT_HEADER_FMT, rs.ext4_extent_header),
    ]
    for fmt, s in pairs:
        assert struct.calcsize(fmt) == s.sizeof(), fmt
    for dt, s in ((rs.EXTENT_DTYPE, rs.ext4_extent), (rs.EXTENT_IDX_DTYPE, rs.ext4_extent_idx),
                  (rs.DX_ENTRY_DTYPE, rs.dx_entry), (rs.DIRENT_DTYPE, rs.ext4_dir_entry_2)):
        assert dt.itemsize == s.sizeof()
        assert list(dt.names) == [sc.name for sc in s.subcons]
    # sample rows byte-identical
    a = np.zeros(1, rs.EXTENT_DTYPE)
    a[0] = (0x01020304, 0x0506, 0x0708, 0x090A0B0C)
    assert a.tobytes() == rs.ext4_extent.build(
        dict(ee_block=0x01020304, ee_len=0x0506, ee_start_hi=0x0708, ee_start_lo=0x090A0B0C))
    a = np.zeros(1, rs.EXTENT_IDX_DTYPE)
    a[0] = (7, 0xDEADBEEF, 0x1234, 0)
    assert a.tobytes() == rs.ext4_extent_idx.build(
        dict(ei_block=7, ei_leaf_lo=0xDEADBEEF, ei_leaf_hi=0x1234, ei_unused=0))
    assert struct.pack(rs.DIRENT_FMT, 12, 16, 5, 1) == rs.ext4_dir_entry_2.build(
        dict(inode=12, rec_len=16, name_len=5, file_type=1))
    a = np.zeros(1, rs.DIRENT_DTYPE)
    a[0] = (0x01020304, 0x0506, 7, 2)
    assert a.tobytes() == rs.ext4_dir_entry_2.build(
        dict(inode=0x01020304, rec_len=0x0506, name_len=7, file_type=2))


def _parse_dirents(blk: bytes, start: int, end: int) -> list:
    out, off = [], start
    while off < end:
        d = rs.ext4_dir_entry_2.parse(blk[off : off + 8])
        out.append((d, blk[off + 8 : off + 8 + d.name_len]))
        assert d.rec_len >= 8 and off + d.rec_len <= end
        off += d.rec_len
    assert off == end
    return out


def test_built_dirs_parse_with_construct() -> None:
    bs = 4096
    d = build_dir([(b"x%d" % i, 20 + i, 1) for i in range(1200)], 12, 2, block_size=bs,
                  csum_seed=5, gen=0, hash_seed_words=(1, 2, 3, 4))
    assert d.indexed
    head = rs.dx_root_head.parse(d.data[:0x20])
    assert (head.dot.inode, head.dot.rec_len, head.dot_name) == (12, 12, b".\0\0\0")
    assert (head.dotdot.inode, head.dotdot.rec_len, head.dotdot_name) == (2, bs - 12, b"..\0\0")
    assert (head.info.hash_version, head.info.info_length, head.info.indirect_levels) == (1, 8, 0)
    cl = rs.dx_countlimit.parse(d.data[0x20:0x24])
    assert cl.limit == (bs - 0x28) // 8 and cl.count == d.nblocks - 1
    names = set()
    for j in range(1, d.nblocks):
        blk = d.data[j * bs : (j + 1) * bs]
        tail = rs.ext4_dir_entry_tail.parse(blk[-12:])
        assert (tail.det_rec_len, tail.det_reserved_ft) == (12, 0xDE)
        names |= {n for _d, n in _parse_dirents(blk, 0, bs - 12)}
    assert len(names) == 1200
    e = build_empty_dir_blocks(11, 2, 2, block_size=bs, csum_seed=5, gen=0)
    [(dot, n1), (dotdot, n2)] = _parse_dirents(e[:bs], 0, bs - 12)
    assert (n1, n2, dot.file_type, dotdot.rec_len) == (b".", b"..", 2, bs - 24)
    [(empty, _n)] = _parse_dirents(e[bs:], 0, bs - 12)
    assert (empty.inode, empty.rec_len) == (0, bs - 12)


def test_built_xattrs_and_extents_parse_with_construct() -> None:
    body, b = encode_xattrs(((b"user.a", b"1" * 50), (b"user.bb", b"2" * 300)), 96)
    assert rs.ext4_xattr_ibody_header.parse(body[:4]).h_magic == rs.EXT4_XATTR_MAGIC
    e = rs.ext4_xattr_entry.parse(body[4:20])
    assert (e.e_name_index, e.e_value_size, body[20:21]) == (1, 50, b"a")
    assert isinstance(b, BlockXattrs)
    blk = build_xattr_block(b, 99, 2, 5, 4096)
    h = rs.ext4_xattr_header.parse(blk[:32])
    assert (h.h_magic, h.h_refcount, h.h_blocks, h.h_reserved) == (0xEA020000, 2, 1, bytes(12))
    e = rs.ext4_xattr_entry.parse(blk[32:48])
    assert blk[e.e_value_offs : e.e_value_offs + e.e_value_size] == b"2" * 300
    i_block, tree = build_extents([(0, 1000, 10), (20, 3000, 5)], [], 12, 0, 5, 4096)
    hdr = rs.ext4_extent_header.parse(i_block[:12])
    assert (hdr.eh_magic, hdr.eh_entries, hdr.eh_max, hdr.eh_depth) == (0xF30A, 2, 4, 0)
    x = rs.ext4_extent.parse(i_block[24:36])
    assert (x.ee_block, x.ee_len, x.ee_start_lo) == (20, 5, 3000)
