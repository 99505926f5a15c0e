"""Plan a whole ext4 filesystem up front: inode numbers, directory contents, xattr blocks,
the size, and every block's place -- before a byte is written.

Inode numbers follow ``mke2fs -d``: root 2, ``lost+found`` 11, then the tree depth-first in
name order (a folder's subtree before its next sibling), a hardlinked file at its first name.

Blocks are placed as mke2fs places them on an empty filesystem (root's first block, then
lost+found's four, the resize inode's double-indirect block, the journal at the midpoint
goal), and everything else first-fit from the start of the filesystem in one stream:
shared xattr blocks, extent tree blocks, then every inode's data in inode-number order, so
most files are one contiguous extent and the data copy moves large runs.

Pure: no I/O, no clock.  Memory grows with the number of inodes, never with file sizes.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import logging
import struct
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import DoesNotFitError, InternalError, SourceError, UsageError
from ..ids import hmac_v4
from ..tree import Kind, Node, Tree
from . import geometry as geo
from .csum import fs_csum_seed
from .dirent import DirData, build_dir, build_empty_dir_blocks
from .extents import build_extents, extent_tree_blocks, extents_needed
from .xattr import BlockXattrs, build_xattr_block, encode_xattrs

log = logging.getLogger(__name__)

BS = geo.BLOCK_SIZE
ROOT_INO = 2
RESIZE_INO = 7
JOURNAL_INO = 8
LOST_FOUND_INO = 11
INLINE_XATTR_SPACE = 256 - 0xA0  # 96: after i_extra_isize = 32
LOST_FOUND_BLOCKS = 4  # mke2fs create_lost_and_found: >= 16 KiB and >= 2 blocks
EXT4_EXTENTS_FL = 0x80000
EXT4_INDEX_FL = 0x1000
DIR_NLINK_MAX = 65000
DEFAULT_UUID = uuidlib.UUID("f222513b-ded1-49fa-b591-20ce86a2fe7f")  # the seed's rootFSUID

_S_IFMT = {
    Kind.REG: 0o100000,
    Kind.DIR: 0o040000,
    Kind.CHR: 0o020000,
    Kind.BLK: 0o060000,
    Kind.FIFO: 0o010000,
    Kind.SOCK: 0o140000,
    Kind.SYMLINK: 0o120000,
}


@dataclass(frozen=True)
class Ext4Options:
    """Filesystem-level choices.

    ``label`` is ``s_volume_name`` (at most 16 bytes of UTF-8).  ``uuid`` is the filesystem
    (and journal) UUID.  ``hash_seed`` is the htree hash seed; None derives it from ``uuid``
    as ``hmac_v4(uuid.bytes, b"ext4-hash-seed")``.  ``timestamp`` (SOURCE_DATE_EPOCH) gives
    the filesystem's own times and those of the inodes pydiskimg creates (lost+found, journal,
    resize inode).  ``deterministic`` False only allows the clock for the filesystem times.
    """

    label: str = ""
    uuid: uuidlib.UUID = DEFAULT_UUID
    hash_seed: uuidlib.UUID | None = None
    timestamp: int = 0
    deterministic: bool = True

    def label_bytes(self) -> bytes:
        b = self.label.encode("utf-8")
        if len(b) > 16:
            raise UsageError(f"ext4 label {self.label!r}: {len(b)} bytes, at most 16 allowed")
        return b

    def seed_uuid(self) -> uuidlib.UUID:
        if self.hash_seed is not None:
            return self.hash_seed
        return hmac_v4(self.uuid.bytes, b"ext4-hash-seed")


@dataclass
class FileCopy:
    """Data of one source file: byte ranges ``(src_offset, dst_byte_offset, length)``."""

    ino: int
    source: str
    size: int
    pieces: list[tuple[int, int, int]]


@dataclass
class Ext4Plan:
    """Everything :func:`pydiskimg.ext4.write.write` needs; ``size`` is the filesystem's
    size in bytes."""

    size: int
    options: Ext4Options
    params: geo.Params
    layout: geo.Layout
    used: geo.Used  # every used block
    csum_seed: int
    max_ino: int
    inodes: np.ndarray  # INODE_DTYPE rows for inodes 1..max_ino (checksums not yet set)
    dirs_per_group: np.ndarray
    blocks: list[tuple[int, bytes]]  # metadata blocks to write (dirs, trees, xattrs, resize)
    copies: list[FileCopy]
    copy_bytes: int
    journal_runs: list[tuple[int, int, int]]  # (logical, physical, length)
    dind_block: int
    overhead: int  # s_overhead_clusters
    hash_seed_words: tuple[int, int, int, int]
    timestamp: int
    extra: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# inode numbering and per-inode facts
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Ino:
    ino: int
    node: Node
    parent: int = 0  # for directories
    links: int = 0
    entries: list[tuple[bytes, int, int]] = field(default_factory=list)
    dir: DirData | None = None
    dir_bytes: bytes = b""
    # logical runs of data blocks: (logical, length)
    runs: list[tuple[int, int]] = field(default_factory=list)
    nblocks: int = 0
    inline_x: bytes = b""
    xblock: BlockXattrs | None = None
    preassigned: list[int] = field(default_factory=list)  # physical blocks of logical 0..k-1


def split_time(ns: int, what: str) -> tuple[int, int]:
    """Nanoseconds since the epoch -> (i_*time low 32 bits, i_*time_extra)."""
    sec, nsec = divmod(ns, 1_000_000_000)
    if not -(1 << 31) <= sec < (1 << 34) - (1 << 31):
        raise UsageError(f"{what}: time {sec} s is outside what ext4 stores (1901..2446)")
    lo = sec & 0xFFFFFFFF
    lo_signed = lo - (1 << 32) if lo & 0x80000000 else lo
    epoch = ((sec - lo_signed) >> 32) & 3
    if epoch == 3 and lo & 0x80000000:
        # 2310-04-04 .. 2378-04-22: old kernels wrote pre-1970 times this way, and e2fsck
        # (pass 1, "likely pre-1970") rewrites such times to 1901..1970 until the year 2242
        raise UsageError(
            f"{what}: time {sec} s (2310..2378) would be taken by e2fsck for a mis-encoded "
            "pre-1970 date and rewritten; use --clamp-mtime or fix the source's time"
        )
    return lo, (nsec << 2) | epoch


def _number(tree: Tree, timestamp: int) -> tuple[list[_Ino], Node | None]:
    """Inode numbers in mke2fs -d order; returns the inodes (index ino-1 for ino >= 11,
    reserved ones are absent) and the lost+found node."""
    root = tree.root
    lf = root.entries.get(b"lost+found")
    if lf is None or lf.kind is not Kind.DIR:
        synth = Node(Kind.DIR, 0o700, 0, 0, timestamp * 1_000_000_000, origin="lost+found")
        if lf is None:
            lf = synth
            root_entries = dict(root.entries)
            root_entries[b"lost+found"] = lf
        else:  # a non-folder named lost+found: keep it, no lost+found folder
            lf = None
            root_entries = root.entries
    else:
        root_entries = root.entries
    by_id: dict[int, _Ino] = {}
    out: list[_Ino] = []
    r = _Ino(ROOT_INO, root, parent=ROOT_INO)
    by_id[id(root)] = r
    nxt = LOST_FOUND_INO
    if lf is not None:
        li = _Ino(LOST_FOUND_INO, lf, parent=ROOT_INO)
        by_id[id(lf)] = li
        out.append(li)
        nxt += 1
    # depth-first, name order, subtree before the next sibling
    DIR = Kind.DIR
    stack: list[tuple[_Ino, Iterator[tuple[bytes, Node]]]] = [
        (r, iter(sorted(root_entries.items())))
    ]
    while stack:
        d, it = stack[-1]
        entries = d.entries
        for name, child in it:
            kind = child.kind
            c = by_id.get(id(child))
            new = c is None or (c.ino == LOST_FOUND_INO and c.links == 0)
            if c is None:
                c = _Ino(nxt, child)
                nxt += 1
                by_id[id(child)] = c
                out.append(c)
            elif not new and kind is DIR:
                raise SourceError(f"{child.origin or name!r}: folder reachable under two names")
            c.links += 1
            entries.append((name, c.ino, int(kind)))
            if kind is DIR:
                d.links += 1  # the child's ".."
                if new:
                    c.parent = d.ino
                    stack.append((c, iter(sorted(child.entries.items()))))
                    break
        else:
            stack.pop()
    r.links += 2  # "." and the root's ".." pointing to itself
    for c in out:
        if c.node.kind is Kind.DIR:
            c.links += 1  # "."
    out.sort(key=lambda c: c.ino)
    return [r, *out], lf


def _logical_runs(node: Node) -> list[tuple[int, int]]:
    size = node.size
    if node.segments is None:
        return [(0, -(-size // BS))] if size else []
    runs: list[list[int]] = []
    for off, ln in node.data_segments():
        end = min(off + ln, size)
        if end <= off:
            continue
        a, b = off // BS, -(-end // BS)
        if runs and a <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    return [(a, b - a) for a, b in runs]


# ---------------------------------------------------------------------------------------------
# sizing
# ---------------------------------------------------------------------------------------------

# block counts at which something jumps (journal size, size class): fits() is monotone
# between consecutive thresholds, up to reserved-GDT steps of a few blocks
_THRESHOLDS = sorted(
    {2048, 32768, 256 * 1024, 512 * 1024, 4096 * 1024, 8192 * 1024, 16384 * 1024,
     32768 * 1024, 3 * 256, 512 * 256, 4 * 1024 * 1024 * 256}
)


def _capacity(p: geo.Params) -> int:
    """Blocks left for directories, files and xattrs once mke2fs's own structures are in."""
    jb = p.journal_blocks
    etb = extent_tree_blocks(-(-jb // geo.MAX_EXTENT_LEN) + 2, BS) if jb else 0
    return p.blocks - p.static_overhead() - 1 - jb - etb


def _fits(blocks: int, need_blocks: int, need_inodes: int, reserve: bool = True) -> bool:
    try:
        p = geo.params_for(blocks)
    except UsageError:
        return False
    if p.inodes_count < need_inodes:
        return False
    return _capacity(p) - (p.r_blocks if reserve else 0) >= need_blocks


def auto_blocks(need_blocks: int, need_inodes: int, reserve: bool = True) -> int:
    """The smallest block count (>= 2048, so there is a journal) that fits."""
    lo_bound = 2048
    bounds = [t for t in _THRESHOLDS if t > lo_bound] + [geo.MAX_BLOCKS + 1]
    start = lo_bound
    for end in bounds:
        hi = end - 1
        if _fits(hi, need_blocks, need_inodes, reserve):
            lo = start
            while lo < hi:
                mid = (lo + hi) // 2
                if _fits(mid, need_blocks, need_inodes, reserve):
                    hi = mid
                else:
                    lo = mid + 1
            return lo
        start = end
    raise UsageError(
        f"ext4: the tree needs {need_blocks} blocks and {need_inodes} inodes, more than the "
        f"largest supported filesystem holds"
    )


# ---------------------------------------------------------------------------------------------
# the stream: free runs after the fixed structures, filled first-fit in order
# ---------------------------------------------------------------------------------------------


class _Stream:
    def __init__(self, runs: list[tuple[int, int]]) -> None:
        self.starts = np.array([s for s, _ in runs], dtype=np.int64)
        lens = np.array([n for _, n in runs], dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(lens)])  # stream position of each run
        self.total = int(self.cum[-1])
        self._cum_list = self.cum.tolist()
        self._starts_list = self.starts.tolist()

    def run_of(self, pos: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.cum, pos, side="right") - 1

    def pieces(self, pos: int, length: int) -> list[tuple[int, int]]:
        """Physical (block, length) pieces of stream range [pos, pos+length)."""
        out = []
        cum, starts = self._cum_list, self._starts_list
        k = bisect.bisect_right(cum, pos) - 1
        while length > 0:
            room = cum[k + 1] - pos
            n = min(room, length)
            out.append((starts[k] + pos - cum[k], n))
            pos += n
            length -= n
            k += 1
        return out


def _journal_runs(used: geo.Used, goal: int, n: int) -> list[tuple[int, int]]:
    """ext2fs_fallocate of ``n`` blocks from ``goal``, wrapping: free runs in order."""
    runs: list[tuple[int, int]] = []
    after = used.free_runs(goal)
    before = [(s, min(ln, goal - s)) for s, ln in used.free_runs(0) if s < goal]
    for s, ln in after + before:
        take = min(ln, n)
        runs.append((s, take))
        n -= take
        if n == 0:
            return runs
    raise UsageError("ext4: no room for the journal")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: planning creates many small objects next to a big
    tree of them, and each generational pass would walk the whole tree (3x slower)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def plan(
    tree: Tree, size: int | None, options: Ext4Options, *, additional_space: int = 0
) -> Ext4Plan:
    """Plan the filesystem for ``tree``.

    ``size`` None picks the smallest filesystem (whole 4 KiB blocks, at least 8 MiB so it has
    a journal) that holds the tree with mke2fs's geometry for that size -- enough inodes,
    blocks for everything, the 5 % root reserve left free -- plus ``additional_space`` bytes
    free beyond that.  A fixed ``size`` too small raises
    :class:`~pydiskimg.errors.DoesNotFitError` with the size needed.
    """
    with no_gc():
        return _plan(tree, size, options, additional_space)


def _plan(tree: Tree, size: int | None, options: Ext4Options, additional_space: int) -> Ext4Plan:
    label = options.label_bytes()
    if additional_space < 0:
        raise UsageError(f"ext4 additional space: {additional_space} is negative")
    ts = options.timestamp
    seed_uuid = options.seed_uuid()
    hash_seed_words = struct.unpack("<4I", seed_uuid.bytes)
    csum_seed = fs_csum_seed(options.uuid.bytes)

    inos, lf_node = _number(tree, ts)
    max_ino = inos[-1].ino if inos[-1].ino >= LOST_FOUND_INO else LOST_FOUND_INO - 1
    # lost+found is always 11; a tree without one still reserves up to 10
    max_ino = max(max_ino, LOST_FOUND_INO - 1 if lf_node is None else LOST_FOUND_INO)

    # per-inode contents
    xblocks: dict[BlockXattrs, int] = {}  # block set -> refcount
    data_blocks = 0
    for c in inos:
        n = c.node
        if n.xattrs:
            c.inline_x, c.xblock = encode_xattrs(n.xattrs, INLINE_XATTR_SPACE, BS)
            if c.xblock is not None:
                xblocks[c.xblock] = xblocks.get(c.xblock, 0) + 1
        k = n.kind
        if k is Kind.DIR:
            if c.ino == LOST_FOUND_INO and not c.entries:
                c.dir_bytes = build_empty_dir_blocks(
                    c.ino, c.parent, LOST_FOUND_BLOCKS, block_size=BS, csum_seed=csum_seed, gen=0
                )
            else:
                c.dir = build_dir(
                    c.entries, c.ino, c.parent, block_size=BS, csum_seed=csum_seed, gen=0,
                    hash_seed_words=hash_seed_words, hash_version=1, hash_unsigned=False,
                )
                c.dir_bytes = c.dir.data
                if c.ino == LOST_FOUND_INO and not c.dir.indexed and c.dir.nblocks < LOST_FOUND_BLOCKS:
                    c.dir_bytes += build_empty_dir_blocks(
                        c.ino, c.parent, LOST_FOUND_BLOCKS, block_size=BS,
                        csum_seed=csum_seed, gen=0,
                    )[BS:BS * (LOST_FOUND_BLOCKS - c.dir.nblocks + 1)]
            nb = len(c.dir_bytes) // BS
            c.runs = [(0, nb)]
            c.nblocks = nb
        elif k is Kind.REG:
            if n.size and n.source is None:
                raise InternalError(f"{n.origin}: regular file with data but no source")
            c.runs = _logical_runs(n)
            c.nblocks = sum(r[1] for r in c.runs)
            if c.runs and c.runs[-1][0] + c.runs[-1][1] >= 1 << 32:
                raise UsageError(f"{n.origin}: {n.size} bytes, more than ext4 files hold")
        elif k is Kind.SYMLINK and len(n.target) >= 60:
            if len(n.target) > BS - 1:
                raise SourceError(f"{n.origin}: symlink target longer than {BS - 1} bytes")
            c.runs = [(0, 1)]
            c.nblocks = 1
        data_blocks += c.nblocks
    xlist = sorted(xblocks)  # deterministic order of shared xattr blocks
    n_x = len(xlist)

    # tree blocks without any split by the layout (lower bound; the allocation refines it)
    def tree_need(c: _Ino) -> int:
        return extent_tree_blocks(extents_needed([(a, 0, b) for a, b in c.runs]), BS)

    t_base = sum(tree_need(c) for c in inos if len(c.runs) > 4 or c.nblocks > 4 * geo.MAX_EXTENT_LEN)
    need_inodes = max_ino
    need_blocks = data_blocks + n_x + t_base + -(-additional_space // BS)

    if size is None:
        blocks = auto_blocks(need_blocks, need_inodes)
    else:
        if size < 0:
            raise UsageError(f"ext4 size: {size} is negative")
        blocks = size // BS
        if not _fits(blocks, need_blocks, need_inodes, reserve=False):
            needed = auto_blocks(need_blocks, need_inodes, reserve=False)
            raise DoesNotFitError("ext4 filesystem", needed * BS, size)
    while True:
        try:
            return _allocate(
                tree, blocks, options, label, inos, lf_node, max_ino, xlist, xblocks,
                csum_seed, hash_seed_words, need_blocks, data_blocks, size is None,
            )
        except _NoRoom as e:
            if size is not None:
                raise DoesNotFitError("ext4 filesystem", (blocks + e.short) * BS, size) from None
            blocks += e.short


class _NoRoom(Exception):
    def __init__(self, short: int) -> None:
        self.short = short


def _allocate(
    tree: Tree,
    blocks: int,
    options: Ext4Options,
    label: bytes,
    inos: list[_Ino],
    lf_node: Node | None,
    max_ino: int,
    xlist: list[BlockXattrs],
    xrefs: dict[BlockXattrs, int],
    csum_seed: int,
    hash_seed_words: tuple[int, ...],
    need_blocks: int,
    data_blocks: int,
    auto: bool,
) -> Ext4Plan:
    p = geo.params_for(blocks)
    if p.inodes_count < max_ino:
        raise InternalError("inode count checked before allocation")
    lay = geo.layout(p)
    used = geo.Used(p.blocks)
    used.starts, used.ends = list(lay.used.starts), list(lay.used.ends)
    by_ino = {c.ino: c for c in inos}
    ts = options.timestamp

    # mke2fs's own allocations: root's first block, lost+found, resize dind, journal
    root = by_ino[ROOT_INO]
    b = used.new_block(0)
    used.mark(b, 1)
    root.preassigned = [b]
    lf = by_ino.get(LOST_FOUND_INO)
    if lf is not None and lf.node.kind is Kind.DIR:
        lf.preassigned = []  # from scratch: an auto-size retry allocates again
        goal = 0
        for _ in range(min(LOST_FOUND_BLOCKS, lf.nblocks)):
            b = used.new_block(goal)
            used.mark(b, 1)
            lf.preassigned.append(b)
            goal = b + 1
    dind = used.new_block(p.desc_blocks + p.reserved_gdt + 2 + p.inode_blocks_per_group)
    used.mark(dind, 1)
    journal_runs: list[tuple[int, int, int]] = []
    jtree: list[int] = []
    if p.journal_blocks:
        goal = geo.journal_goal(p, used)
        jr = _journal_runs(used, goal, p.journal_blocks)
        lb = 0
        for s, n in jr:
            used.mark(s, n)
            journal_runs.append((lb, s, n))
            lb += n
        nt = extent_tree_blocks(extents_needed(journal_runs), BS)
        if nt:
            first = jr[0][0]
            for _ in range(nt):
                cand = first - 1 if used.is_free(first - 1, 1) else used.new_block(first)
                used.mark(cand, 1)
                jtree.append(cand)
    overhead = p.static_overhead() + p.journal_blocks

    # the stream
    stream = _Stream(used.free_runs(0))
    order = [c for c in inos if c.nblocks > len(c.preassigned)]
    counts = np.array([c.nblocks - len(c.preassigned) for c in order], dtype=np.int64)
    n_x = len(xlist)
    t_res = 0
    for c in order:
        if len(c.runs) > 4 or c.nblocks > 4 * geo.MAX_EXTENT_LEN:
            t_res += extent_tree_blocks(extents_needed([(a, 0, b) for a, b in c.runs]), BS)
    while True:
        base = n_x + t_res
        total = base + int(counts.sum())
        reserve = p.r_blocks if auto else 0
        if total > stream.total - (reserve if auto else 0):
            raise _NoRoom(total - (stream.total - (reserve if auto else 0)))
        pos = base + np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else counts
        k0 = stream.run_of(pos) if len(counts) else counts
        k1 = stream.run_of(pos + counts - 1) if len(counts) else counts
        simple = (k0 == k1) & (counts <= geo.MAX_EXTENT_LEN)
        ext: dict[int, list[tuple[int, int, int]]] = {}
        t_need = 0
        pos_l = pos.tolist()
        simple_l = simple.tolist()
        for j, c in enumerate(order):
            if simple_l[j] and len(c.runs) == 1 and not c.preassigned:
                continue
            runs: list[tuple[int, int, int]] = []
            lb0 = 0
            for pb in c.preassigned:
                runs.append((lb0, pb, 1))
                lb0 += 1
            sp = pos_l[j]
            for a, n in c.runs:
                if a + n <= lb0:
                    continue
                if a < lb0:
                    n -= lb0 - a
                    a = lb0
                for phys, ln in stream.pieces(sp, n):
                    runs.append((a, phys, ln))
                    a += ln
                    sp += ln
            # merge physically contiguous neighbours
            merged: list[tuple[int, int, int]] = []
            for r in runs:
                if merged and merged[-1][0] + merged[-1][2] == r[0] and merged[-1][1] + merged[-1][2] == r[1]:
                    merged[-1] = (merged[-1][0], merged[-1][1], merged[-1][2] + r[2])
                else:
                    merged.append(r)
            ext[c.ino] = merged
            t_need += extent_tree_blocks(extents_needed(merged), BS)
        if t_need <= t_res:
            break
        t_res = t_need

    for c in inos:  # inodes whose blocks were all placed up front (root, lost+found)
        if c.preassigned and c.ino not in ext:
            merged = []
            for lb, pb in enumerate(c.preassigned):
                if merged and merged[-1][1] + merged[-1][2] == pb:
                    merged[-1] = (merged[-1][0], merged[-1][1], merged[-1][2] + 1)
                else:
                    merged.append((lb, pb, 1))
            ext[c.ino] = merged

    # mark the stream's used parts
    for s, n in stream.pieces(0, n_x + t_need) if n_x + t_need else []:
        used.mark(s, n)
    if len(counts) and int(counts.sum()):
        for s, n in stream.pieces(n_x + t_res, int(counts.sum())):
            used.mark(s, n)
    free_after = p.blocks - sum(e - s for s, e in zip(used.starts, used.ends, strict=False))
    if auto and free_after < p.r_blocks:  # pragma: no cover - checked through the stream
        raise _NoRoom(p.r_blocks - free_after)

    xphys = [stream.pieces(i, 1)[0][0] for i in range(n_x)]
    xblock_of = {xb: xphys[i] for i, xb in enumerate(xlist)}
    meta: list[tuple[int, bytes]] = []
    for i, xb in enumerate(xlist):
        meta.append((xphys[i], build_xattr_block(xb, xphys[i], xrefs[xb], csum_seed, BS)))

    # ---- the inode table ----
    from .structs import INODE_DTYPE

    itab = np.zeros(max_ino, dtype=INODE_DTYPE)
    raw = itab.view(np.uint8).reshape(max_ino, 256)
    dirs_per_group = np.zeros(p.groups, dtype=np.int64)
    copies: list[FileCopy] = []
    copy_bytes = 0
    tpos = n_x  # next tree block in the stream
    simple_phys = {}
    if len(order):
        ss = stream.starts[k0] + (pos - stream.cum[k0])
        for j, c in enumerate(order):
            if c.ino not in ext:
                simple_phys[c.ino] = int(ss[j])

    rows_mode, rows_uid, rows_gid, rows_links = [], [], [], []
    rows_size, rows_blocks, rows_flags, rows_acl = [], [], [], []
    rows_times: list[tuple[int, int, int, int, int, int, int, int]] = []
    rows_idx = []
    iblock_rows: list[int] = []  # inodes whose i_block is given as bytes
    iblock_data: list[bytes] = []
    one_ext: list[tuple[int, int, int, int]] = []  # (idx, logical, physical, length)
    no_ext: list[int] = []  # extent-mapped inodes without blocks
    inline_rows: list[int] = []
    inline_data: list[bytes] = []
    S_IFMT = _S_IFMT
    DIR, REG, SYMLINK, CHR, BLK = Kind.DIR, Kind.REG, Kind.SYMLINK, Kind.CHR, Kind.BLK
    ipg = p.inodes_per_group
    for c in inos:
        nd = c.node
        idx = c.ino - 1
        rows_idx.append(idx)
        kind = nd.kind
        mode = S_IFMT[kind] | (nd.mode & 0o7777)
        size = 0
        flags = 0
        nblocks_alloc = c.nblocks
        iblock = b""
        if kind is DIR:
            size = len(c.dir_bytes)
            flags = EXT4_EXTENTS_FL | (EXT4_INDEX_FL if c.dir is not None and c.dir.indexed else 0)
            dirs_per_group[idx // ipg] += 1
        elif kind is REG:
            size = nd.size
            flags = EXT4_EXTENTS_FL
        elif kind is SYMLINK:
            size = len(nd.target)
            if c.nblocks:
                flags = EXT4_EXTENTS_FL
            else:
                iblock = nd.target.ljust(60, b"\0")
        elif kind is CHR or kind is BLK:
            ma, mi = nd.rdev_major, nd.rdev_minor
            if ma < 256 and mi < 256:
                iblock = struct.pack("<I", (ma << 8) | mi).ljust(60, b"\0")
            else:
                iblock = struct.pack(
                    "<II", 0, (mi & 0xFF) | (ma << 8) | ((mi & ~0xFF) << 12)
                ).ljust(60, b"\0")
        if flags:  # extent-mapped
            got = ext.get(c.ino)
            if got is not None:
                runs = got
                nt = extent_tree_blocks(extents_needed(runs), BS)
                tb = [ph for ph, ln in stream.pieces(tpos, nt) for ph in range(ph, ph + ln)] if nt else []
                tpos += nt
                iblock, tblocks = build_extents(runs, tb, c.ino, 0, csum_seed, BS)
                meta.extend(tblocks)
                nblocks_alloc += nt
                iblock_rows.append(idx)
                iblock_data.append(iblock)
            elif c.nblocks:
                ph = simple_phys[c.ino]
                a, ln = c.runs[0]
                runs = [(a, ph, ln)]
                one_ext.append((idx, a, ph, ln))
            else:
                runs = []
                no_ext.append(idx)
            # where the content goes
            if kind is DIR:
                _place_bytes(meta, runs, c.dir_bytes)
            elif kind is SYMLINK:
                _place_bytes(meta, runs, nd.target.ljust(BS, b"\0"))
            elif c.nblocks:
                if nd.segments is None and len(runs) == 1:
                    pieces = [(0, runs[0][1] * BS, nd.size)]
                else:
                    pieces = _byte_pieces(nd, runs)
                copies.append(FileCopy(c.ino, nd.source or "", nd.size, pieces))
                copy_bytes += nd.size if nd.segments is None else sum(pc[2] for pc in pieces)
        elif iblock:
            iblock_rows.append(idx)
            iblock_data.append(iblock)
        if c.xblock is not None:
            rows_acl.append(xblock_of[c.xblock])
            nblocks_alloc += 1
        else:
            rows_acl.append(0)
        if c.inline_x:
            inline_rows.append(idx)
            inline_data.append(c.inline_x)
        links = c.links
        if kind is DIR and links >= DIR_NLINK_MAX:
            links = 1
        if links > 0xFFFF:
            raise UsageError(f"{nd.origin}: {links} hard links, ext4 allows at most 65000")
        mt = nd.mtime_ns
        m = split_time(mt, nd.origin)
        at = split_time(nd.atime_ns, nd.origin) if nd.atime_ns is not None else m
        ct = split_time(nd.ctime_ns, nd.origin) if nd.ctime_ns is not None else m
        cr = split_time(nd.crtime_ns, nd.origin) if nd.crtime_ns is not None else m
        rows_times.append((at[0], at[1], ct[0], ct[1], m[0], m[1], cr[0], cr[1]))
        rows_mode.append(mode)
        if not (0 <= nd.uid < 1 << 32 and 0 <= nd.gid < 1 << 32):
            raise UsageError(f"{nd.origin}: owner {nd.uid}:{nd.gid} out of the 32-bit range")
        rows_uid.append(nd.uid)
        rows_gid.append(nd.gid)
        rows_links.append(links)
        rows_size.append(size)
        rows_blocks.append(nblocks_alloc * (BS // 512))
        rows_flags.append(flags)

    if iblock_rows:
        itab["i_block"][np.array(iblock_rows)] = np.frombuffer(
            b"".join(iblock_data), dtype=np.uint8
        ).reshape(-1, 60)
    if inline_rows:
        itab["i_xattr"][np.array(inline_rows)] = np.frombuffer(
            b"".join(inline_data), dtype=np.uint8
        ).reshape(-1, INLINE_XATTR_SPACE)
    if one_ext or no_ext:
        rt = np.dtype([("eh_magic", "<u2"), ("eh_entries", "<u2"), ("eh_max", "<u2"),
                       ("eh_depth", "<u2"), ("eh_generation", "<u4"), ("ee_block", "<u4"),
                       ("ee_len", "<u2"), ("ee_start_hi", "<u2"), ("ee_start_lo", "<u4"),
                       ("pad", "V36")])
        oe = np.array(one_ext, dtype=np.int64).reshape(-1, 4)
        rows = np.concatenate([oe[:, 0], np.array(no_ext, dtype=np.int64)])
        ib = np.zeros(len(rows), dtype=rt)
        ib["eh_magic"] = 0xF30A
        ib["eh_max"] = 4
        k = len(oe)
        ib["eh_entries"][:k] = 1
        ib["ee_block"][:k] = oe[:, 1]
        ib["ee_len"][:k] = oe[:, 3]
        ib["ee_start_hi"][:k] = oe[:, 2] >> 32
        ib["ee_start_lo"][:k] = oe[:, 2] & 0xFFFFFFFF
        itab["i_block"][rows] = ib.view(np.uint8).reshape(-1, 60)

    if rows_idx:
        ix = np.array(rows_idx, dtype=np.int64)
        itab["i_mode"][ix] = np.array(rows_mode, dtype=np.uint16)
        u = np.array(rows_uid, dtype=np.uint64)
        g = np.array(rows_gid, dtype=np.uint64)
        itab["i_uid"][ix] = u & 0xFFFF
        itab["l_i_uid_high"][ix] = u >> 16
        itab["i_gid"][ix] = g & 0xFFFF
        itab["l_i_gid_high"][ix] = g >> 16
        sz = np.array(rows_size, dtype=np.uint64)
        itab["i_size_lo"][ix] = sz & 0xFFFFFFFF
        itab["i_size_high"][ix] = sz >> 32
        bl = np.array(rows_blocks, dtype=np.uint64)
        itab["i_blocks_lo"][ix] = bl & 0xFFFFFFFF
        itab["l_i_blocks_high"][ix] = bl >> 32
        itab["i_links_count"][ix] = np.array(rows_links, dtype=np.uint16)
        itab["i_flags"][ix] = np.array(rows_flags, dtype=np.uint32)
        acl = np.array(rows_acl, dtype=np.uint64)
        itab["i_file_acl_lo"][ix] = acl & 0xFFFFFFFF
        itab["l_i_file_acl_high"][ix] = acl >> 32
        t = np.array(rows_times, dtype=np.uint64).reshape(-1, 8)
        itab["i_atime"][ix] = t[:, 0]
        itab["i_atime_extra"][ix] = t[:, 1]
        itab["i_ctime"][ix] = t[:, 2]
        itab["i_ctime_extra"][ix] = t[:, 3]
        itab["i_mtime"][ix] = t[:, 4]
        itab["i_mtime_extra"][ix] = t[:, 5]
        itab["i_crtime"][ix] = t[:, 6]
        itab["i_crtime_extra"][ix] = t[:, 7]
        itab["i_extra_isize"][ix] = 32

    # ---- mke2fs's special inodes ----
    tlo, textra = split_time(ts * 1_000_000_000, "SOURCE_DATE_EPOCH")
    # 1: bad blocks: times only, no extra fields
    for f in ("i_atime", "i_ctime", "i_mtime"):
        itab[f][0] = tlo
    # 7: resize inode, indirect-mapped
    nback = len(geo.backup_groups(p.groups))
    apb = geo.ADDR_PER_BLOCK
    rsize = (apb * apb + apb + 12) * BS
    r = itab[RESIZE_INO - 1]
    r["i_mode"] = 0o100600
    r["i_links_count"] = 1
    r["i_size_lo"] = rsize & 0xFFFFFFFF
    r["i_size_high"] = rsize >> 32
    r["i_blocks_lo"] = (1 + p.reserved_gdt * (1 + nback)) * (BS // 512)
    iblk = bytearray(60)
    struct.pack_into("<I", iblk, 13 * 4, dind)
    raw[RESIZE_INO - 1, 0x28:0x64] = np.frombuffer(bytes(iblk), dtype=np.uint8)
    for f in ("i_atime", "i_ctime", "i_mtime", "i_crtime"):
        r[f] = tlo
    for f in ("i_atime_extra", "i_ctime_extra", "i_mtime_extra", "i_crtime_extra"):
        r[f] = textra & 3  # mke2fs: whole seconds
    r["i_extra_isize"] = 32
    itab[RESIZE_INO - 1] = r
    dind_buf = np.zeros(apb, dtype="<u4")
    bk = geo.backup_groups(p.groups)
    for k in range(p.reserved_gdt):
        gblk = 1 + p.desc_blocks + k
        dind_buf[(p.desc_blocks + k) % apb] = gblk
        lst = np.array([gblk + grp * p.bpg for grp in bk], dtype="<u4")
        buf = np.zeros(apb, dtype="<u4")
        buf[: len(lst)] = lst
        meta.append((gblk, buf.tobytes()))
    meta.append((dind, dind_buf.tobytes()))
    # 8: journal
    if p.journal_blocks:
        jn = itab[JOURNAL_INO - 1]
        jn["i_mode"] = 0o100600
        jn["i_links_count"] = 1
        jsize = p.journal_blocks * BS
        jn["i_size_lo"] = jsize & 0xFFFFFFFF
        jn["i_size_high"] = jsize >> 32
        jn["i_blocks_lo"] = (p.journal_blocks + len(jtree)) * (BS // 512)
        jn["i_flags"] = EXT4_EXTENTS_FL
        for f in ("i_atime", "i_ctime", "i_mtime", "i_crtime"):
            jn[f] = tlo
        for f in ("i_atime_extra", "i_ctime_extra", "i_mtime_extra", "i_crtime_extra"):
            jn[f] = textra & 3
        jn["i_extra_isize"] = 32
        itab[JOURNAL_INO - 1] = jn
        jib, jtb = build_extents(journal_runs, jtree, JOURNAL_INO, 0, csum_seed, BS)
        raw[JOURNAL_INO - 1, 0x28:0x64] = np.frombuffer(jib, dtype=np.uint8)
        meta.extend(jtb)
    # a root/lost+found made by pydiskimg: whole-second times like mke2fs
    extra: dict[str, int] = {}
    return Ext4Plan(
        size=p.blocks * BS,
        options=options,
        params=p,
        layout=lay,
        used=used,
        csum_seed=csum_seed,
        max_ino=max_ino,
        inodes=itab,
        dirs_per_group=dirs_per_group,
        blocks=meta,
        copies=copies,
        copy_bytes=copy_bytes,
        journal_runs=journal_runs,
        dind_block=dind,
        overhead=overhead,
        hash_seed_words=tuple(hash_seed_words),  # type: ignore[arg-type]
        timestamp=ts,
        extra=extra,
    )


def _place_bytes(meta: list[tuple[int, bytes]], runs: list[tuple[int, int, int]], data: bytes) -> None:
    """Queue ``data`` (whole blocks, logical 0..) for writing where ``runs`` map it."""
    for lb, pb, ln in runs:
        chunk = data[lb * BS : (lb + ln) * BS]
        if chunk:
            meta.append((pb, chunk))


def _byte_pieces(node: Node, runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Source byte ranges -> (src_offset, dst_byte, length) through the extent map."""
    out: list[tuple[int, int, int]] = []
    lstarts = [r[0] for r in runs]
    size = node.size
    for off, ln in node.data_segments():
        end = min(off + ln, size)
        while off < end:
            k = bisect.bisect_right(lstarts, off // BS) - 1
            lb, pb, rl = runs[k]
            run_end = (lb + rl) * BS
            n = min(end, run_end) - off
            if n <= 0:  # pragma: no cover
                raise InternalError(f"{node.origin}: byte {off} not mapped")
            dst = pb * BS + (off - lb * BS)
            if out and out[-1][0] + out[-1][2] == off and out[-1][1] + out[-1][2] == dst:
                out[-1] = (out[-1][0], out[-1][1], out[-1][2] + n)
            else:
                out.append((off, dst, n))
            off += n
    return out


__all__ = ["Ext4Options", "Ext4Plan", "plan", "split_time", "DEFAULT_UUID", "dataclasses"]
