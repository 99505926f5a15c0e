"""Filesystem geometry, exactly as mke2fs 1.47.0 computes it with ``-b 4096`` and Debian's
``/etc/mke2fs.conf`` (pure functions: a block count in, positions out).

Sources: e2fsprogs v1.47.0 ``misc/mke2fs.c`` (size classes, inode count, reserved blocks),
``lib/ext2fs/initialize.c`` (groups, inodes per group, reserved GDT blocks, dropping a short
last group), ``lib/ext2fs/alloc_tables.c`` (flex_bg placement of bitmaps and inode tables),
``lib/ext2fs/mkjournal.c`` (journal size and goal), ``lib/ext2fs/closefs.c`` (sparse_super
backups).  The tests compare every figure with ``mkfs.ext4 -b 4096`` itself.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError

BLOCK_SIZE = 4096
LOG_BLOCK_SIZE = 2  # 1024 << 2
BLOCKS_PER_GROUP = 8 * BLOCK_SIZE  # 32768
INODE_SIZE = 256
DESC_SIZE = 64
DESC_PER_BLOCK = BLOCK_SIZE // DESC_SIZE  # 64
ADDR_PER_BLOCK = BLOCK_SIZE // 4  # 1024
LOG_GROUPS_PER_FLEX = 4
FLEX_SIZE = 1 << LOG_GROUPS_PER_FLEX
FIRST_INO = 11
RESERVED_RATIO = 5.0  # percent, mke2fs.conf default
MIB = 1 << 20
#: mke2fs refuses below this (one group must hold its metadata); we refuse a bit earlier
MIN_BLOCKS = 64
#: with more blocks the resize inode is dropped by mke2fs; we do not go there
MAX_BLOCKS = (1 << 32) - 1
#: maximum length of an initialized extent
MAX_EXTENT_LEN = 32768


def inode_ratio(blocks: int) -> int:
    """Bytes per inode from the mke2fs.conf size class of a ``blocks``-block filesystem.

    The class is chosen on the size (``floppy`` < 3 MiB, ``small`` < 512 MiB, ``default``
    < 4 TiB, ``big`` < 16 TiB, else ``huge``); ``-b 4096`` fixes the block size but the
    class's ``inode_ratio`` still applies, raised to at least the block size.
    """
    meg = MIB // BLOCK_SIZE
    if blocks < 3 * meg:
        ratio = 8192
    elif blocks < 512 * meg:
        ratio = 4096
    elif blocks < 4 * 1024 * 1024 * meg:
        ratio = 16384
    elif blocks < 16 * 1024 * 1024 * meg:
        ratio = 32768
    else:
        ratio = 65536
    return max(ratio, BLOCK_SIZE)


def journal_blocks_for(blocks: int) -> int:
    """``ext2fs_default_journal_size``: journal blocks for a filesystem of ``blocks`` blocks
    (0: too small for a journal, mke2fs then leaves has_journal out)."""
    if blocks < 2048:
        return 0
    for limit, size in (
        (32768, 1024),
        (256 * 1024, 4096),
        (512 * 1024, 8192),
        (4096 * 1024, 16384),
        (8192 * 1024, 32768),
        (16384 * 1024, 65536),
        (32768 * 1024, 131072),
    ):
        if blocks < limit:
            return size
    return 262144


def has_super(group: int) -> bool:
    """sparse_super: groups 0, 1 and powers of 3, 5 and 7 carry a superblock backup."""
    if group <= 1:
        return True
    if not group & 1:
        return False
    for p in (3, 5, 7):
        g = group
        while g % p == 0:
            g //= p
        if g == 1:
            return True
    return False


def backup_groups(groups: int) -> list[int]:
    """Groups after group 0 holding a backup, in ``list_backups`` order (1, 3, 5, 7, 9, 25...)."""
    out: list[int] = []
    three, five, seven = 1, 5, 7
    while True:
        # list_backups: the smallest of the three sequences, then advance it
        if three <= five and three <= seven:
            g = three
            three *= 3
        elif five <= seven:
            g = five
            five *= 5
        else:
            g = seven
            seven *= 7
        if g >= groups:
            return out
        out.append(g)


def _count_backups(groups: int) -> int:
    """Number of groups (group 0 included) carrying a superblock copy."""
    return 1 + len(backup_groups(groups))


@dataclass(frozen=True)
class Params:
    """What ``ext2fs_initialize`` settles for a requested block count."""

    blocks: int  # s_blocks_count (after dropping a short last group)
    bpg: int  # s_blocks_per_group (32768 unless mke2fs had to shrink it)
    r_blocks: int  # s_r_blocks_count
    groups: int
    desc_blocks: int
    inodes_per_group: int
    inode_blocks_per_group: int
    inodes_count: int
    reserved_gdt: int
    journal_blocks: int  # 0: no journal

    @property
    def super_groups(self) -> list[int]:
        return [0, *backup_groups(self.groups)]

    def static_overhead(self) -> int:
        """Blocks used by superblocks, GDTs, reserved GDTs, bitmaps and inode tables."""
        per_super = 1 + self.desc_blocks + self.reserved_gdt
        return (
            _count_backups(self.groups) * per_super
            + self.groups * (2 + self.inode_blocks_per_group)
        )


def params_for(requested_blocks: int) -> Params:
    """mke2fs's parameters for a device of ``requested_blocks`` 4 KiB blocks."""
    if requested_blocks < MIN_BLOCKS:
        raise UsageError(
            f"ext4 size: {requested_blocks * BLOCK_SIZE} bytes is too small, at least "
            f"{MIN_BLOCKS * BLOCK_SIZE} bytes are needed"
        )
    if requested_blocks > MAX_BLOCKS:
        raise UsageError(
            f"ext4 size: {requested_blocks * BLOCK_SIZE} bytes is too large, at most "
            f"{MAX_BLOCKS * BLOCK_SIZE} bytes (2^32 blocks) are supported"
        )
    blocks = requested_blocks
    # mke2fs.c: inode count from the requested size, reserved blocks as a float product
    n_inodes = blocks * BLOCK_SIZE // inode_ratio(blocks)
    r_blocks = int(RESERVED_RATIO * blocks / 100.0)
    param_blocks, param_r = blocks, r_blocks
    bpg = BLOCKS_PER_GROUP
    while True:  # initialize.c "retry"
        groups = -(-blocks // bpg)
        desc_blocks = -(-groups // DESC_PER_BLOCK)
        inodes = max(n_inodes, FIRST_INO + 1)
        ipg = -(-inodes // groups)
        if ipg > BLOCK_SIZE * 8:
            # too many inodes for one bitmap: mke2fs retries with 8 blocks less per group
            bpg -= 8
            blocks = param_blocks  # (the reserved count stays as the last trim left it)
            continue
        ipg = min(ipg, 8 * BLOCK_SIZE)
        while True:  # ipg_retry
            itb = -(-(ipg * INODE_SIZE) // BLOCK_SIZE)
            ipg2 = itb * BLOCK_SIZE // INODE_SIZE
            ipg2 = max(ipg2, 8) & ~7
            itb = -(-(ipg2 * INODE_SIZE) // BLOCK_SIZE)
            if ipg2 * groups > 0xFFFFFFFF:
                ipg -= 1
                continue
            break
        # calc_reserved_gdt_blocks
        max_blocks = 0xFFFFFFFF
        if blocks < max_blocks // 1024:
            max_blocks = blocks * 1024
        rsv_groups = -(-max_blocks // bpg)
        rsv = -(-rsv_groups // DESC_PER_BLOCK) - desc_blocks
        rsv = min(max(rsv, 0), ADDR_PER_BLOCK)
        if rsv + desc_blocks > bpg * 3 // 4:  # pragma: no cover - > 16 TiB
            raise UsageError("ext4 size: would need meta_bg, which this writer does not do")
        overhead = 2 + itb
        if has_super(groups - 1):
            overhead += 1 + desc_blocks + rsv
        rem = blocks % bpg
        if groups == 1 and rem and rem < overhead:
            raise UsageError(
                f"ext4 size: {blocks * BLOCK_SIZE} bytes is too small for the filesystem's "
                f"own metadata"
            )
        if rem and rem < overhead + 50:
            blocks -= rem
            ratio = 100.0 * param_r / param_blocks
            r_blocks = int(ratio * blocks / 100.0)
            continue
        break
    return Params(
        blocks=blocks,
        bpg=bpg,
        r_blocks=r_blocks,
        groups=groups,
        desc_blocks=desc_blocks,
        inodes_per_group=ipg2,
        inode_blocks_per_group=itb,
        inodes_count=ipg2 * groups,
        reserved_gdt=rsv,
        journal_blocks=journal_blocks_for(blocks),
    )


# ---------------------------------------------------------------------------------------------
# block usage as sorted, disjoint intervals; the libext2fs allocation primitives on top
# ---------------------------------------------------------------------------------------------


class Used:
    """Used blocks as sorted disjoint half-open intervals ``[start, end)``."""

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self.starts: list[int] = []
        self.ends: list[int] = []

    def mark(self, start: int, length: int) -> None:
        if length <= 0:
            return
        end = start + length
        i = bisect.bisect_left(self.ends, start)
        # merge with every interval touching [start, end)
        j = i
        while j < len(self.starts) and self.starts[j] <= end:
            start = min(start, self.starts[j])
            end = max(end, self.ends[j])
            j += 1
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def next_used(self, b: int) -> tuple[int, int] | None:
        """The first used interval ending after ``b``."""
        i = bisect.bisect_right(self.ends, b)
        if i < len(self.starts):
            return self.starts[i], self.ends[i]
        return None

    def is_free(self, b: int, n: int) -> bool:
        iv = self.next_used(b)
        return iv is None or iv[0] >= b + n

    def get_free_blocks(self, start: int, finish: int, num: int) -> int | None:
        """``ext2fs_get_free_blocks2``: the first ``b`` from ``start`` with ``num`` free blocks,
        stepping one block at a time, wrapping to block 0 past the end (only when ``finish``
        is not after ``start``) and giving up on reaching ``finish``; None when none."""
        b = start
        if not finish:
            finish = start
        wrap_at = self.blocks - num + 1
        wraps = 0
        while True:
            if b >= wrap_at:
                if finish > start or wraps:
                    return None
                b, wraps = 0, wraps + 1
            iv = self.next_used(b)
            if iv is None or iv[0] >= b + num:
                return b
            nb = iv[1]  # every position before the end of this used run fails too
            if b < wrap_at <= nb:
                if b < finish <= wrap_at:
                    return None
                b = wrap_at
                continue
            if b < finish <= nb:
                return None
            b = nb

    def new_block(self, goal: int) -> int:
        """``ext2fs_new_block2``: the first free block at or after ``goal``, wrapping."""
        if goal >= self.blocks:
            goal = 0
        b = goal
        while True:
            iv = self.next_used(b)
            if iv is None or iv[0] > b:
                if b < self.blocks:
                    return b
            else:
                b = iv[1]
                if b < self.blocks:
                    continue
            if goal == 0:
                raise UsageError("ext4: no free block left")  # pragma: no cover
            b, goal = 0, 0

    def free_runs(self, start: int = 0) -> list[tuple[int, int]]:
        """Free ``(start, length)`` runs from ``start`` to the end of the filesystem."""
        out = []
        b = start
        i = bisect.bisect_right(self.ends, b)
        while b < self.blocks:
            if i < len(self.starts):
                s, e = self.starts[i], self.ends[i]
                if s > b:
                    out.append((b, min(s, self.blocks) - b))
                b = max(b, e)
                i += 1
            else:
                out.append((b, self.blocks - b))
                break
        return out

    def used_in(self, start: int, end: int) -> int:
        """Number of used blocks in ``[start, end)``."""
        i = bisect.bisect_right(self.ends, start)
        n = 0
        while i < len(self.starts) and self.starts[i] < end:
            n += min(end, self.ends[i]) - max(start, self.starts[i])
            i += 1
        return n


@dataclass
class Layout:
    """Where mke2fs puts every static structure for given :class:`Params`."""

    p: Params
    block_bitmap: np.ndarray  # per group
    inode_bitmap: np.ndarray
    inode_table: np.ndarray
    used: Used  # static metadata only
    static_runs: list[tuple[int, int]] = field(default_factory=list)


def _flexbg_offset(
    used: Used, p: Params, group: int, start_blk: int, rem_grp: int, elem_size: int
) -> int:
    """alloc_tables.c ``flexbg_offset``."""
    flexbg = group // FLEX_SIZE
    size = rem_grp * elem_size
    if size > p.bpg // 4:
        size = p.bpg // 4
    if start_blk and start_blk < p.blocks:
        r = used.get_free_blocks(start_blk, start_blk + size, elem_size)
        if r is not None:
            return r
    start_blk = FLEX_SIZE * flexbg * p.bpg
    last_grp = min(group | (FLEX_SIZE - 1), p.groups - 1)
    last_blk = min((last_grp + 1) * p.bpg, p.blocks) - 1
    for s, n in ((start_blk, size), (start_blk, elem_size), (0, elem_size)):
        r = used.get_free_blocks(s, last_blk, n)
        if r is not None:
            return r
    return 0  # pragma: no cover


def layout(p: Params) -> Layout:
    """Superblock/GDT copies, then ``ext2fs_allocate_group_table`` for every group."""
    used = Used(p.blocks)
    per_super = 1 + p.desc_blocks + p.reserved_gdt
    for g in p.super_groups:
        used.mark(g * p.bpg, per_super)
    bb = np.zeros(p.groups, dtype=np.int64)
    ib = np.zeros(p.groups, dtype=np.int64)
    it = np.zeros(p.groups, dtype=np.int64)
    itb = p.inode_blocks_per_group
    for g in range(p.groups):
        last_grp = min(g | (FLEX_SIZE - 1), p.groups - 1)
        rem = last_grp - g + 1
        last_blk = min((last_grp + 1) * p.bpg, p.blocks) - 1
        group_blk = g * p.bpg
        table_offset = FLEX_SIZE
        prev = 0
        if g % FLEX_SIZE:
            prev = int(bb[g - 1]) + 1
        elif last_grp == p.groups - 1:
            table_offset = last_grp & (FLEX_SIZE - 1)
            table_offset = FLEX_SIZE if table_offset == 0 else table_offset + 1
        start = _flexbg_offset(used, p, g, prev, rem, 1)
        r = used.get_free_blocks(start, last_blk, 1)
        if r is None:
            r = used.get_free_blocks(group_blk, last_blk, 1)
        assert r is not None
        used.mark(r, 1)
        bb[g] = r
        prev = int(ib[g - 1]) + 1 if g % FLEX_SIZE else int(bb[g]) + table_offset
        start = _flexbg_offset(used, p, g, prev, rem, 1)
        r = used.get_free_blocks(start, last_blk, 1)
        if r is None:
            r = used.get_free_blocks(group_blk, last_blk, 1)
        assert r is not None
        used.mark(r, 1)
        ib[g] = r
        prev = int(it[g - 1]) + itb if g % FLEX_SIZE else int(ib[g]) + table_offset
        start = _flexbg_offset(used, p, g, prev, rem, itb)
        r = used.get_free_blocks(start, last_blk, itb)
        assert r is not None, f"no room for the inode table of group {g}"
        used.mark(r, itb)
        it[g] = r
    return Layout(p, bb, ib, it, used)


def journal_goal(p: Params, used: Used) -> int:
    """mkjournal.c ``get_midpoint_journal_block`` given the blocks used so far."""

    def free_in(g: int) -> int:
        s = g * p.bpg
        e = min(s + p.bpg, p.blocks)
        return (e - s) - used.used_in(s, e)

    group = (p.blocks // 2) // p.bpg
    if group > FLEX_SIZE:
        group &= ~(FLEX_SIZE - 1)
        while group < p.groups and free_in(group) == 0:
            group += 1
        if group == p.groups:
            group = 0
        start = group
    else:
        start = group - 1 if group > 0 else group
    end = group + 1 if group + 1 < p.groups else group
    group = start
    for i in range(start + 1, end + 1):
        if free_in(i) > free_in(group):
            group = i
    return group * p.bpg
