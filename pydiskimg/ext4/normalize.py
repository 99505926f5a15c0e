"""Normalize an ext4 filesystem after a kernel has mounted and changed it (the bootloader stage).

pydiskimg writes every byte of a filesystem deterministically; a kernel that then mounts it and
runs a bootloader installer does not: new inodes get a random ``i_generation``, every time it
sets comes from its clock, freed inodes keep their last state (``i_dtime``, times), and the
journal keeps the transactions it wrote.  Given the inode tables as they were before the stage
(:func:`snapshot`), :func:`normalize` puts the filesystem back on pydiskimg's rules, on a
cleanly unmounted filesystem:

* an inode in use that the stage changed (its record differs from the snapshot) gets
  ``i_generation`` 0, as every inode pydiskimg writes, and each of its four times later than
  ``timestamp`` (``SOURCE_DATE_EPOCH``) set to ``timestamp`` exactly (the reproducible-builds
  clamp, as ``--clamp-mtime``); inodes the stage did not change are left alone;
* an inode slot not in use is zeroed (as in a fresh inode table);
* the checksums that depend on what changed are recomputed: the inode's own and, where its
  extent tree blocks' and directory blocks' (leaf tails, htree root and nodes), which its
  generation seeds;
* unused entry slots of changed inodes' extent nodes (in the inode and in tree blocks) are
  zeroed: the kernel leaves old entries there when extents merge, and when they merge depends
  on the timing of writeback;
* unused bytes of changed directory blocks (what follows each entry's name, as the kernel leaves
  names of removed entries there) are zeroed, then their checksums recomputed;
* the journal is emptied: its superblock as mke2fs (and pydiskimg) writes it for a new
  filesystem, its log blocks zeros (holes where the file system allows);
* free blocks that hold data (written and freed during the stage) are zeroed.

The superblock's own times, UUID and counters are :func:`pydiskimg.guestfs.repin_ext4`'s job.
Group descriptors and bitmaps are not touched: the kernel keeps them consistent and the stage's
allocation is deterministic given the same operations on the same filesystem.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import Ext4Error
from ..io import data_ranges, zero_range
from .csum import dirblock_csum, dx_csum, extent_block_csum, inode_csum
from .read import EXT4_EXTENTS_FL, Ext4
from .write import journal_superblock

JOURNAL_INO = 8
EXT4_INDEX_FL = 0x1000
BG_INODE_UNINIT = 0x1
BG_BLOCK_UNINIT = 0x2
_S_IFMT = 0o170000
_S_IFDIR = 0o040000

#: (seconds field, its _extra field) of atime, ctime, mtime, crtime in an inode record
_TIMES = ((0x08, 0x8C), (0x0C, 0x84), (0x10, 0x88), (0x90, 0x94))
_GEN = 0x64


class _FdSource:
    """Random reads from a file descriptor (the reader's Source)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)


@dataclass
class Snapshot:
    """The inode tables in use before the stage: group number -> (ipg, inode_size) records."""

    tables: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Report:
    """What :func:`normalize` changed."""

    inodes_normalized: int = 0
    inodes_zeroed: int = 0
    blocks_rechecksummed: int = 0
    journal_blocks_cleared: int = 0
    free_bytes_zeroed: int = 0


def snapshot(fd: int, offset: int) -> Snapshot:
    """The inode tables of the groups with inodes in use, of the ext4 filesystem at byte
    ``offset`` of ``fd`` (about 256 bytes per inode of those groups)."""
    fs = Ext4(_FdSource(fd), offset, verify=False)
    snap = Snapshot()
    for g in range(fs.groups):
        if fs.gd[g]["bg_flags"] & BG_INODE_UNINIT:
            continue
        snap.tables[g] = fs.inode_table_array(g).copy()
    return snap


def _time_fields(extra_isize: int) -> list[tuple[int, int | None]]:
    out: list[tuple[int, int | None]] = []
    for sec_off, extra_off in _TIMES:
        if sec_off >= 0x80 and 0x80 + extra_isize < sec_off + 4:
            continue  # crtime absent
        out.append((sec_off, extra_off if 0x80 + extra_isize >= extra_off + 4 else None))
    return out


def _encode(ts: int) -> tuple[int, int]:
    lo = ts & 0xFFFFFFFF
    lo_signed = lo - (1 << 32) if lo & 0x80000000 else lo
    return lo, ((ts - lo_signed) >> 32) & 3


def _decode_ns(lo: int, extra: int | None) -> int:
    sec = lo - (1 << 32) if lo & 0x80000000 else lo
    ns = 0
    if extra is not None:
        sec += (extra & 3) << 32
        ns = extra >> 2
    return sec * 1_000_000_000 + ns


def clamp_inode(rec: bytearray, timestamp: int) -> None:
    """Clamp the four times of inode record ``rec`` to ``timestamp`` (those later than it
    become exactly ``timestamp``, nanoseconds 0) and set ``i_generation`` to 0."""
    extra_isize = int.from_bytes(rec[0x80:0x82], "little") if len(rec) > 0x80 else 0
    lo_ts, epoch_ts = _encode(timestamp)
    limit = timestamp * 1_000_000_000
    for sec_off, extra_off in _time_fields(extra_isize):
        lo = int.from_bytes(rec[sec_off : sec_off + 4], "little")
        extra = (
            int.from_bytes(rec[extra_off : extra_off + 4], "little") if extra_off is not None else None
        )
        if _decode_ns(lo, extra) > limit:
            rec[sec_off : sec_off + 4] = lo_ts.to_bytes(4, "little")
            if extra_off is not None:
                rec[extra_off : extra_off + 4] = epoch_ts.to_bytes(4, "little")
    rec[_GEN : _GEN + 4] = bytes(4)


def scrub_extent_node(node: bytearray, base: int = 0) -> None:
    """Zero the unused entry slots (past ``eh_entries``, up to ``eh_max``) of the extent node at
    ``base`` of ``node``: the kernel leaves old entries there when extents merge."""
    if int.from_bytes(node[base : base + 2], "little") != 0xF30A:
        return
    entries = int.from_bytes(node[base + 2 : base + 4], "little")
    emax = int.from_bytes(node[base + 4 : base + 6], "little")
    end = min(base + 12 + 12 * emax, len(node))
    start = base + 12 + 12 * entries
    if start < end:
        node[start:end] = bytes(end - start)


def _set_inode_csum(rec: bytearray, seed: int, ino: int) -> None:
    gen = int.from_bytes(rec[_GEN : _GEN + 4], "little")
    c = inode_csum(seed, ino, gen, rec)
    rec[0x7C:0x7E] = (c & 0xFFFF).to_bytes(2, "little")
    if len(rec) > 0x84 and int.from_bytes(rec[0x80:0x82], "little") >= 4:
        rec[0x82:0x84] = (c >> 16).to_bytes(2, "little")


def _scrub_leaf(blk: bytearray, end: int) -> bool:
    """Zero what follows each entry's name in a linear directory block (up to ``end``); False
    when the block does not parse as one."""
    pos = 0
    while pos < end:
        if pos + 8 > end:
            return False
        rec_len = int.from_bytes(blk[pos + 4 : pos + 6], "little")
        name_len = blk[pos + 6]
        if rec_len < 12 or rec_len % 4 or pos + rec_len > end or 8 + name_len > rec_len:
            return False
        blk[pos + 8 + name_len : pos + rec_len] = bytes(rec_len - 8 - name_len)
        pos += rec_len
    return True


def _fix_dir_block(blk: bytearray, lblk: int, indexed: bool, seed: int, ino: int) -> bool:
    """Scrub and re-checksum one directory block; True when it was recognized.

    In an htree folder, block 0 is the root and a block starting with an empty entry spanning
    the whole block is an interior node; checked first, since a root the kernel made from a
    linear block keeps the old leaf tail's bytes where its dx_tail lies."""
    bs = len(blk)
    count_offset = 0
    if indexed and lblk == 0:
        count_offset = 0x18 + blk[0x1D]
    elif indexed and blk[0:4] == b"\0\0\0\0" and int.from_bytes(blk[4:6], "little") == bs:
        count_offset = 8
    if count_offset:
        limit = int.from_bytes(blk[count_offset : count_offset + 2], "little")
        tail_at = count_offset + 8 * limit
        if tail_at + 8 > bs:
            return False
        blk[tail_at + 4 : tail_at + 8] = dx_csum(seed, ino, 0, blk, count_offset).to_bytes(4, "little")
        return True
    tail = bs - 12
    if not (
        blk[tail : tail + 4] == b"\0\0\0\0"
        and int.from_bytes(blk[tail + 4 : tail + 6], "little") == 12
        and blk[tail + 6] == 0
        and blk[tail + 7] == 0xDE
    ):
        return False
    if not _scrub_leaf(blk, tail):
        return False
    blk[bs - 4 :] = dirblock_csum(seed, ino, 0, blk).to_bytes(4, "little")
    return True


def _free_runs(bitmap: np.ndarray, base: int, count: int) -> list[tuple[int, int]]:
    """(first block, blocks) of the runs of clear bits among the first ``count`` bits."""
    bits = np.unpackbits(bitmap, bitorder="little")[:count]
    if not count:
        return []
    d = np.diff(np.concatenate(([1], bits.astype(np.int8), [1])))
    starts = np.nonzero(d == -1)[0]
    ends = np.nonzero(d == 1)[0]
    return [(base + int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def normalize(fd: int, offset: int, *, timestamp: int, before: Snapshot) -> Report:
    """Normalize the cleanly unmounted ext4 filesystem at byte ``offset`` of ``fd`` (see the
    module documentation); ``before`` is its :func:`snapshot` from before the kernel mounted
    it.  Raises :class:`~pydiskimg.errors.Ext4Error` when the filesystem is not cleanly
    unmounted or its metadata do not parse."""
    src = _FdSource(fd)
    fs = Ext4(src, offset, verify=False)
    if not fs.metadata_csum:
        raise Ext4Error("ext4: normalization needs metadata_csum (pydiskimg's filesystems have it)")
    if fs.sb["s_feature_incompat"] & 0x4:  # needs_recovery
        raise Ext4Error("ext4: the journal needs recovery: the filesystem was not cleanly unmounted")
    seed = fs.csum_seed
    bs = fs.block_size
    isz = fs.inode_size
    ipg = fs.ipg
    rep = Report()
    touched: list[int] = []  # directories whose blocks get scrubbed
    extent_inos: list[int] = []  # changed inodes mapped by extents (tree blocks scrubbed)
    for g in range(fs.groups):
        gd = fs.gd[g]
        if gd["bg_flags"] & BG_INODE_UNINIT:
            continue
        table = fs.inode_table_array(g).copy()
        bitmap = np.frombuffer(fs.bitmap(g, "inode")[: ipg // 8], dtype=np.uint8)
        used = np.unpackbits(bitmap, bitorder="little")[:ipg].astype(bool)
        old = before.tables.get(g)
        if old is None:
            old = np.zeros_like(table)
        nonzero = table.any(axis=1)
        to_zero = ~used & nonzero
        changed = used & (table != old).any(axis=1)
        if not (to_zero.any() or changed.any()):
            continue
        table[to_zero] = 0
        rep.inodes_zeroed += int(to_zero.sum())
        for i in np.nonzero(changed)[0]:
            ino = g * ipg + int(i) + 1
            rec = bytearray(table[i].tobytes())
            clamp_inode(rec, timestamp)
            if int.from_bytes(rec[0x20:0x24], "little") & EXT4_EXTENTS_FL:
                scrub_extent_node(rec, 0x28)
                extent_inos.append(ino)
            if int.from_bytes(rec[0:2], "little") & _S_IFMT == _S_IFDIR:
                touched.append(ino)
            _set_inode_csum(rec, seed, ino)
            table[i] = np.frombuffer(bytes(rec), dtype=np.uint8)
            rep.inodes_normalized += 1
        rows = np.nonzero(to_zero | changed)[0]
        a, b = int(rows[0]), int(rows[-1]) + 1
        os.pwrite(fd, table[a:b].tobytes(), offset + gd["inode_table"] * bs + a * isz)

    # blocks seeded by an inode's generation (extent tree blocks, directory blocks), and the
    # directory blocks of changed folders (scrubbed)
    fs2 = Ext4(src, offset, verify=False)
    for ino in sorted(set(extent_inos) | set(touched)):
        inode = fs2.inode(ino)
        bm = fs2.block_map(inode)
        for blk_nr in bm.meta if inode.flags & EXT4_EXTENTS_FL else ():
            blk = bytearray(fs2.read_block(blk_nr, f"inode {ino} extent block"))
            was = bytes(blk)
            emax = int.from_bytes(blk[4:6], "little")
            end = 12 + 12 * emax
            if end + 4 > bs:
                raise Ext4Error(f"ext4: inode {ino}: extent block {blk_nr}: eh_max {emax} too large")
            scrub_extent_node(blk)
            blk[end : end + 4] = extent_block_csum(seed, ino, 0, blk).to_bytes(4, "little")
            if bytes(blk) != was:
                os.pwrite(fd, bytes(blk), offset + blk_nr * bs)
                rep.blocks_rechecksummed += 1
        if inode.kind != "dir":
            continue
        indexed = bool(inode.flags & EXT4_INDEX_FL)
        for e in bm.extents:
            if e.uninit:
                continue
            for k in range(e.length):
                blk_nr = e.pblk + k
                blk = bytearray(fs2.read_block(blk_nr, f"inode {ino} directory block"))
                was = bytes(blk)
                if not _fix_dir_block(blk, e.lblk + k, indexed, seed, ino):
                    raise Ext4Error(
                        f"ext4: inode {ino}: directory block {blk_nr} (logical {e.lblk + k}) "
                        "has no checksum tail and is no htree node"
                    )
                if bytes(blk) != was:
                    os.pwrite(fd, bytes(blk), offset + blk_nr * bs)
                    rep.blocks_rechecksummed += 1

    # the journal: as new
    if fs.compat & 0x4:
        jino = fs.sb["s_journal_inum"] or JOURNAL_INO
        jbm = fs2.block_map(fs2.inode(jino))
        if not jbm.extents or jbm.extents[0].lblk != 0:
            raise Ext4Error(f"ext4: the journal (inode {jino}) has no first block")
        first = jbm.extents[0].pblk
        jraw = fs2.read_block(first, "journal superblock")
        if struct.unpack_from(">I", jraw, 0)[0] != 0xC03B3998:
            raise Ext4Error(f"ext4: block {first}: not a journal superblock")
        maxlen = struct.unpack_from(">I", jraw, 0x10)[0]
        jsb = journal_superblock(maxlen, jraw[0x30:0x40], bs)  # the filesystem's block size (mke2fs uses 1 KiB on small ones)
        os.pwrite(fd, jsb + bytes(bs - len(jsb)), offset + first * bs)
        for e in jbm.extents:
            start = e.pblk + (1 if e.lblk == 0 else 0)
            n = e.length - (1 if e.lblk == 0 else 0)
            for a, b in data_ranges(fd, offset + start * bs, offset + (start + n) * bs):
                zero_range(fd, a, b - a)
                rep.journal_blocks_cleared += (b - a) // bs

    # free blocks holding data (written, then freed, by the stage)
    for g in range(fs.groups):
        gd = fs.gd[g]
        gstart = fs.first_data_block + g * fs.bpg
        count = min(fs.bpg, fs.blocks_count - gstart)
        if gd["bg_flags"] & BG_BLOCK_UNINIT:
            runs = []  # the kernel has not allocated here: nothing it freed either
        else:
            runs = _free_runs(np.frombuffer(fs.bitmap(g, "block"), dtype=np.uint8), gstart, count)
        for s, n in runs:
            for a, b in data_ranges(fd, offset + s * bs, offset + (s + n) * bs):
                zero_range(fd, a, b - a)
                rep.free_bytes_zeroed += b - a
    os.fsync(fd)
    return rep
