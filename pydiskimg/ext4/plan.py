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
from .dirent import build_dir, build_empty_dir_blocks
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
    copies: list[FileCopy]  # files with holes or several extents
    #: dense files in one extent, in inode order: source path, byte offset in the image, size
    copy_src: list[str]
    copy_dst: np.ndarray
    copy_size: np.ndarray
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


@dataclass(eq=False)
class _Inodes:
    """The tree's inodes as columns, indexed by ``k``: k 0 is the root (inode 2), k >= 1 is
    inode ``10 + k`` (k 1 is lost+found when there is one).  One list slot per inode and a
    few numpy columns, instead of one Python object per inode."""

    nodes: list[Node]
    links: list[int]
    #: k -> (directory blocks, htree): built as soon as a folder's last entry is numbered
    dirs: dict[int, tuple[bytes, bool]]
    lf_node: Node | None

    def ino(self, k: int) -> int:
        return ROOT_INO if k == 0 else LOST_FOUND_INO - 1 + k


def _number(
    tree: Tree, timestamp: int, csum_seed: int, hash_seed_words: tuple[int, ...]
) -> _Inodes:
    """Inode numbers in mke2fs -d order (root 2, lost+found 11, then depth-first in name
    order, a subtree before the next sibling), link counts, and every folder's blocks."""
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
    nodes: list[Node] = [root]
    links: list[int] = [0]
    dirs: dict[int, tuple[bytes, bool]] = {}
    seen: dict[int, int] = {id(root): 0}  # id(node) -> k: hardlinks, folders seen twice
    lf_k = -1
    if lf is not None:
        lf_k = len(nodes)
        nodes.append(lf)
        links.append(0)
        seen[id(lf)] = lf_k
    base = LOST_FOUND_INO - 1

    def build(k: int, ino: int, parent: int, entries: list[tuple[bytes, int, int]]) -> None:
        # inode 11 (lost+found, or whatever folder got its number) gets mke2fs's 4 blocks
        if k == 1 and not entries:
            data = build_empty_dir_blocks(
                ino, parent, LOST_FOUND_BLOCKS, block_size=BS, csum_seed=csum_seed, gen=0
            )
            dirs[k] = (data, False)
            return
        d = build_dir(
            entries, ino, parent, block_size=BS, csum_seed=csum_seed, gen=0,
            hash_seed_words=hash_seed_words, hash_version=1, hash_unsigned=False,
        )
        data = d.data
        if k == 1 and not d.indexed and d.nblocks < LOST_FOUND_BLOCKS:
            data += build_empty_dir_blocks(
                ino, parent, LOST_FOUND_BLOCKS, block_size=BS, csum_seed=csum_seed, gen=0,
            )[BS : BS * (LOST_FOUND_BLOCKS - d.nblocks + 1)]
        dirs[k] = (data, d.indexed)

    DIR = Kind.DIR
    # (k, inode, parent inode, remaining entries, entries numbered so far)
    stack: list[tuple[int, int, int, Iterator[tuple[bytes, Node]], list[tuple[bytes, int, int]]]]
    stack = [(0, ROOT_INO, ROOT_INO, iter(sorted(root_entries.items())), [])]
    while stack:
        k, ino, parent, it, entries = stack[-1]
        for name, child in it:
            if child.single:  # one link (the scanner says so): new, and never met again
                c = len(nodes)
                nodes.append(child)
                links.append(1)
                kind = child.kind
                entries.append((name, base + c, int(kind)))
                continue
            got = seen.get(id(child))
            if got is None:
                c = len(nodes)
                nodes.append(child)
                links.append(1)
                seen[id(child)] = c
                new = True
            else:
                c = got
                new = c == lf_k and links[c] == 0
                if not new and child.kind is DIR:
                    raise SourceError(f"{child.origin or name!r}: folder reachable under two names")
                links[c] += 1
            kind = child.kind
            entries.append((name, base + c, int(kind)))
            if kind is DIR:
                links[k] += 1  # the child's ".."
                if new:
                    stack.append((c, base + c, ino, iter(sorted(child.entries.items())), []))
                    break
        else:
            stack.pop()
            build(k, ino, parent, entries)
    links[0] += 2  # "." and the root's ".." pointing to itself
    for k in dirs:
        if k:
            links[k] += 1  # "."
    return _Inodes(nodes, links, dirs, lf)


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
    tree: Tree,
    size: int | None,
    options: Ext4Options,
    *,
    additional_space: int = 0,
    prepared: Prepared | None = None,
) -> Ext4Plan:
    """Plan the filesystem for ``tree``.

    ``size`` None picks the smallest filesystem (whole 4 KiB blocks, at least 8 MiB so it has
    a journal) that holds the tree with mke2fs's geometry for that size -- enough inodes,
    blocks for everything, the 5 % root reserve left free -- plus ``additional_space`` bytes
    free beyond that.  A fixed ``size`` too small raises
    :class:`~pydiskimg.errors.DoesNotFitError` with the size needed.  ``prepared`` (from
    :func:`prepare` with the same tree and options) skips the size-independent half: inode
    numbers, folder blocks and per-inode columns, so a caller planning twice (the smallest
    size, then the partition's) does that work once.
    """
    if additional_space < 0:
        raise UsageError(f"ext4 additional space: {additional_space} is negative")
    with no_gc():
        if prepared is None:
            prepared = _prepare(tree, options)
        elif prepared.tree is not tree or prepared.options != options:
            raise InternalError("ext4 plan: prepared for another tree or other options")
        return _plan(prepared, size, additional_space)


@dataclass(eq=False)
class Prepared:
    """The part of a plan that does not depend on the filesystem's size (see :func:`prepare`)."""

    tree: Tree
    options: Ext4Options
    label: bytes
    csum_seed: int
    hash_seed_words: tuple[int, ...]
    tab: _Inodes
    cols: _Columns
    max_ino: int
    xlist: list[BlockXattrs]
    xblocks: dict[BlockXattrs, int]
    #: data, shared xattr and extent tree blocks before any split by the layout
    need_blocks: int


def prepare(tree: Tree, options: Ext4Options) -> Prepared:
    """Number the inodes, build every folder's blocks and the per-inode columns of ``tree``:
    what :func:`plan` does before it knows the size, reusable for several sizes."""
    with no_gc():
        return _prepare(tree, options)


def _prepare(tree: Tree, options: Ext4Options) -> Prepared:
    label = options.label_bytes()
    ts = options.timestamp
    seed_uuid = options.seed_uuid()
    hash_seed_words = struct.unpack("<4I", seed_uuid.bytes)
    csum_seed = fs_csum_seed(options.uuid.bytes)

    tab = _number(tree, ts, csum_seed, hash_seed_words)
    n = len(tab.nodes)
    max_ino = tab.ino(n - 1) if n > 1 else LOST_FOUND_INO - 1
    # lost+found is always 11; a tree without one still reserves up to 10
    max_ino = max(max_ino, LOST_FOUND_INO - 1 if tab.lf_node is None else LOST_FOUND_INO)
    cols = _columns(tab)

    xblocks: dict[BlockXattrs, int] = {}  # block set -> refcount
    for _inline, xb in cols.xattrs.values():
        if xb is not None:
            xblocks[xb] = xblocks.get(xb, 0) + 1
    data_blocks = int(cols.nblocks.sum())
    xlist = sorted(xblocks)  # deterministic order of shared xattr blocks
    n_x = len(xlist)

    # tree blocks without any split by the layout (lower bound; the allocation refines it)
    t_base = sum(_tree_need(cols, int(k)) for k in _big(cols))
    return Prepared(
        tree, options, label, csum_seed, hash_seed_words, tab, cols, max_ino, xlist, xblocks,
        data_blocks + n_x + t_base,
    )


def _plan(prep: Prepared, size: int | None, additional_space: int) -> Ext4Plan:
    need_inodes = prep.max_ino
    need_blocks = prep.need_blocks + -(-additional_space // BS)

    if size is None:
        blocks = auto_blocks(need_blocks, need_inodes)
    else:
        if size < 0:
            raise UsageError(f"ext4 size: {size} is negative")
        blocks = size // BS
        if blocks > geo.MAX_BLOCKS:
            raise UsageError(
                f"ext4 filesystem: {size} bytes is too large: the limit is 2^32-1 blocks of "
                f"4 KiB, {geo.MAX_BLOCKS * BS} bytes (16 TiB - 4 KiB)"
            )
        if not _fits(blocks, need_blocks, need_inodes, reserve=False):
            needed = auto_blocks(need_blocks, need_inodes, reserve=False)
            raise DoesNotFitError("ext4 filesystem", needed * BS, size)
    while True:
        try:
            return _allocate(
                blocks, prep.options, prep.label, prep.tab, prep.cols, prep.max_ino,
                prep.xlist, prep.xblocks, prep.csum_seed, prep.hash_seed_words, size is None,
            )
        except _NoRoom as e:
            if size is not None:
                raise DoesNotFitError("ext4 filesystem", (blocks + e.short) * BS, size) from None
            blocks += e.short


@dataclass(eq=False)
class _Columns:
    """Per-inode facts (index k, as :class:`_Inodes`) the allocation and the inode table
    need; the rare cases (sparse files, xattrs, long symlinks, devices) in dicts."""

    kind: np.ndarray  # uint8, Kind
    size: np.ndarray  # int64, i_size
    nblocks: np.ndarray  # int64, data blocks (directory blocks for folders)
    #: k -> logical runs (logical block, length), where not [(0, nblocks)] (sparse files)
    runs: dict[int, list[tuple[int, int]]]
    #: k -> (inline xattr bytes, block xattrs or None)
    xattrs: dict[int, tuple[bytes, BlockXattrs | None]]
    sparse: np.ndarray  # bool: a regular file with a segment map


def _columns(tab: _Inodes) -> _Columns:
    nodes = tab.nodes
    n = len(nodes)
    kind = np.fromiter((nd.kind for nd in nodes), np.uint8, n)
    size = np.zeros(n, dtype=np.int64)
    nblocks = np.zeros(n, dtype=np.int64)
    runs: dict[int, list[tuple[int, int]]] = {}
    xattrs: dict[int, tuple[bytes, BlockXattrs | None]] = {}
    for k in np.flatnonzero(np.fromiter((bool(nd.xattrs) for nd in nodes), bool, n)).tolist():
        xattrs[k] = encode_xattrs(nodes[k].xattrs, INLINE_XATTR_SPACE, BS)
    for k, (data, _ix) in tab.dirs.items():
        nblocks[k] = len(data) // BS
        size[k] = len(data)
    reg = kind == Kind.REG
    reg_k = np.flatnonzero(reg)
    rnodes = [nodes[k] for k in reg_k.tolist()]
    rsize = np.fromiter((nd.size for nd in rnodes), np.int64, len(rnodes))
    size[reg_k] = rsize
    nblocks[reg_k] = -(-rsize // BS)
    nosrc = np.fromiter((nd.source is None for nd in rnodes), bool, len(rnodes)) & (rsize > 0)
    if nosrc.any():
        nd = rnodes[int(np.flatnonzero(nosrc)[0])]
        raise InternalError(f"{nd.origin}: regular file with data but no source")
    sparse = np.zeros(n, dtype=bool)
    sp = np.fromiter((nd.segments is not None for nd in rnodes), bool, len(rnodes))
    sparse[reg_k[sp]] = True
    for k in reg_k[sp].tolist():
        r = _logical_runs(nodes[k])
        runs[k] = r
        nblocks[k] = sum(b for _, b in r)
        if r and r[-1][0] + r[-1][1] >= 1 << 32:
            raise UsageError(f"{nodes[k].origin}: {nodes[k].size} bytes, more than ext4 files hold")
    too_big = reg & ~sparse & (nblocks >= 1 << 32)
    if too_big.any():
        nd = nodes[int(np.flatnonzero(too_big)[0])]
        raise UsageError(f"{nd.origin}: {nd.size} bytes, more than ext4 files hold")
    for k in np.flatnonzero(kind == Kind.SYMLINK).tolist():
        t = nodes[k].target
        size[k] = len(t)
        if len(t) >= 60:
            if len(t) > BS - 1:
                raise SourceError(f"{nodes[k].origin}: symlink target longer than {BS - 1} bytes")
            nblocks[k] = 1
    return _Columns(kind, size, nblocks, runs, xattrs, sparse)


def _runs_of(cols: _Columns, k: int) -> list[tuple[int, int]]:
    r = cols.runs.get(k)
    if r is not None:
        return r
    nb = int(cols.nblocks[k])
    return [(0, nb)] if nb else []


def _big(cols: _Columns) -> list[int]:
    """Inodes that may need extent tree blocks: more than 4 runs or very large."""
    ks = set(np.flatnonzero(cols.nblocks > 4 * geo.MAX_EXTENT_LEN).tolist())
    ks.update(k for k, r in cols.runs.items() if len(r) > 4)
    return sorted(ks)


def _tree_need(cols: _Columns, k: int) -> int:
    return extent_tree_blocks(extents_needed([(a, 0, b) for a, b in _runs_of(cols, k)]), BS)


def _split_times(nodes: list[Node], mt: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_time` of many times at once: (i_*time, i_*time_extra) columns."""
    try:
        ns = np.array(mt, dtype=np.int64)
    except OverflowError:  # beyond 1677..2262: one by one
        pairs = [split_time(t, nodes[k].origin) for k, t in enumerate(mt)]
        a = np.array(pairs, dtype=np.uint64).reshape(-1, 2)
        return a[:, 0], a[:, 1]
    sec = ns // 1_000_000_000
    nsec = ns - sec * 1_000_000_000
    bad = (sec < -(1 << 31)) | (sec >= (1 << 34) - (1 << 31))
    lo = sec & 0xFFFFFFFF
    neg = (lo & 0x80000000) != 0
    epoch = ((sec - np.where(neg, lo - (1 << 32), lo)) >> 32) & 3
    bad |= (epoch == 3) & neg
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        split_time(mt[k], nodes[k].origin)  # raises with the message
        raise InternalError(f"{nodes[k].origin}: time {mt[k]} refused in bulk only")  # pragma: no cover
    return lo.astype(np.uint64), ((nsec << 2) | epoch).astype(np.uint64)


class _NoRoom(Exception):
    def __init__(self, short: int) -> None:
        self.short = short


def _allocate(
    blocks: int,
    options: Ext4Options,
    label: bytes,
    tab: _Inodes,
    cols: _Columns,
    max_ino: int,
    xlist: list[BlockXattrs],
    xrefs: dict[BlockXattrs, int],
    csum_seed: int,
    hash_seed_words: tuple[int, ...],
    auto: bool,
) -> Ext4Plan:
    p = geo.params_for(blocks)
    if p.inodes_count < max_ino:
        raise InternalError("inode count checked before allocation")
    lay = geo.layout(p)
    used = geo.Used(p.blocks)
    used.starts, used.ends = list(lay.used.starts), list(lay.used.ends)
    ts = options.timestamp
    nodes = tab.nodes
    n = len(nodes)
    kind = cols.kind
    nblocks = cols.nblocks

    # mke2fs's own allocations: root's first block, lost+found, resize dind, journal
    pre: dict[int, list[int]] = {}  # k -> physical blocks of logical 0..
    b = used.new_block(0)
    used.mark(b, 1)
    pre[0] = [b]
    if n > 1 and kind[1] == Kind.DIR:  # inode 11
        pre[1] = []
        goal = 0
        for _ in range(min(LOST_FOUND_BLOCKS, int(nblocks[1]))):
            b = used.new_block(goal)
            used.mark(b, 1)
            pre[1].append(b)
            goal = b + 1
    npre = np.zeros(n, dtype=np.int64)
    for k, blks in pre.items():
        npre[k] = len(blks)
    dind = used.new_block(p.desc_blocks + p.reserved_gdt + 2 + p.inode_blocks_per_group)
    used.mark(dind, 1)
    journal_runs: list[tuple[int, int, int]] = []
    jtree: list[int] = []
    if p.journal_blocks:
        goal = geo.journal_goal(p, used)
        jr = _journal_runs(used, goal, p.journal_blocks)
        lb = 0
        for s, ln in jr:
            used.mark(s, ln)
            journal_runs.append((lb, s, ln))
            lb += ln
        nt = extent_tree_blocks(extents_needed(journal_runs), BS)
        if nt:
            first = jr[0][0]
            for _ in range(nt):
                cand = first - 1 if used.is_free(first - 1, 1) else used.new_block(first)
                used.mark(cand, 1)
                jtree.append(cand)
    overhead = p.static_overhead() + p.journal_blocks

    # the stream: every inode's remaining blocks in inode order, after xattr and tree blocks
    stream = _Stream(used.free_runs(0))
    order = np.flatnonzero(nblocks > npre)
    counts = nblocks[order] - npre[order]
    n_x = len(xlist)
    t_res = sum(_tree_need(cols, k) for k in _big(cols) if nblocks[k] > npre[k])
    # positions in ``order`` that never take the one-extent path
    odd = np.zeros(len(order), dtype=bool)
    irregular = [k for k, r in cols.runs.items() if len(r) != 1] + list(pre)
    if irregular:
        ik = np.array(irregular, dtype=np.int64)
        at = np.searchsorted(order, ik)
        hit = at < len(order)
        hit[hit] = order[at[hit]] == ik[hit]
        odd[at[hit]] = True
    ext: dict[int, list[tuple[int, int, int]]] = {}
    while True:
        base = n_x + t_res
        total = base + int(counts.sum())
        reserve = p.r_blocks if auto else 0
        if total > stream.total - reserve:
            raise _NoRoom(total - (stream.total - reserve))
        pos = base + np.cumsum(counts) - counts
        k0 = stream.run_of(pos)
        k1 = stream.run_of(pos + counts - 1)
        simple = (k0 == k1) & (counts <= geo.MAX_EXTENT_LEN) & ~odd
        ext = {}
        t_need = 0
        for j in np.flatnonzero(~simple).tolist():
            k = int(order[j])
            runs: list[tuple[int, int, int]] = []
            lb0 = 0
            for pb in pre.get(k, ()):
                runs.append((lb0, pb, 1))
                lb0 += 1
            sp = int(pos[j])
            for a, ln in _runs_of(cols, k):
                if a + ln <= lb0:
                    continue
                if a < lb0:
                    ln -= lb0 - a
                    a = lb0
                for ph0, pl in stream.pieces(sp, ln):
                    runs.append((a, ph0, pl))
                    a += pl
                    sp += pl
            ext[k] = _merge(runs)
            t_need += extent_tree_blocks(extents_needed(ext[k]), BS)
        if t_need <= t_res:
            break
        t_res = t_need

    for k, blks in pre.items():  # inodes whose blocks were all placed up front
        if k not in ext:
            ext[k] = _merge([(lb, pb, 1) for lb, pb in enumerate(blks)])

    # mark the stream's used parts
    for s, ln in stream.pieces(0, n_x + t_need) if n_x + t_need else []:
        used.mark(s, ln)
    if len(counts) and int(counts.sum()):
        for s, ln in stream.pieces(n_x + t_res, int(counts.sum())):
            used.mark(s, ln)
    free_after = p.blocks - sum(e - s for s, e in zip(used.starts, used.ends, strict=False))
    if auto and free_after < p.r_blocks:  # pragma: no cover - checked through the stream
        raise _NoRoom(p.r_blocks - free_after)

    xphys = [stream.pieces(i, 1)[0][0] for i in range(n_x)]
    xblock_of = {xb: xphys[i] for i, xb in enumerate(xlist)}
    meta: list[tuple[int, bytes]] = []
    for i, xb in enumerate(xlist):
        meta.append((xphys[i], build_xattr_block(xb, xphys[i], xrefs[xb], csum_seed, BS)))

    # ---- the inode table, column by column ----
    from .structs import INODE_DTYPE

    itab = np.zeros(max_ino, dtype=INODE_DTYPE)
    raw = itab.view(np.uint8).reshape(max_ino, 256)
    ipg = p.inodes_per_group
    row0 = LOST_FOUND_INO - 2  # row (inode - 1) of k, for k >= 1
    dirs_k = np.array(sorted(tab.dirs), dtype=np.int64)
    dirs_rows = np.where(dirs_k == 0, ROOT_INO - 1, dirs_k + row0)
    dirs_per_group = np.bincount(dirs_rows // ipg, minlength=p.groups).astype(np.int64)

    # physical start of every one-extent inode (its logical start is 0 but for sparse files)
    s_j = np.flatnonzero(simple)
    s_k = order[s_j]
    s_phys = stream.starts[k0[s_j]] + (pos[s_j] - stream.cum[k0[s_j]])
    del s_j, pos, k0, k1, simple, odd, order, counts
    first_log = {k: r[0][0] for k, r in cols.runs.items() if len(r) == 1}
    phys = np.zeros(n, dtype=np.int64)
    phys[s_k] = s_phys
    phys_l = phys.tolist()

    flags = np.zeros(n, dtype=np.uint32)
    flags[kind == Kind.REG] = EXT4_EXTENTS_FL
    flags[(kind == Kind.SYMLINK) & (nblocks > 0)] = EXT4_EXTENTS_FL
    for k, (_data, indexed) in tab.dirs.items():
        flags[k] = EXT4_EXTENTS_FL | (EXT4_INDEX_FL if indexed else 0)
    extra_blocks: dict[int, int] = {}  # k -> extent tree and xattr blocks, counted in i_blocks

    iblock_rows: list[int] = []  # inodes whose i_block is given as bytes
    iblock_data: list[bytes] = []
    tpos = n_x  # next tree block in the stream
    for k in sorted(ext):
        eruns = ext[k]
        nt = extent_tree_blocks(extents_needed(eruns), BS)
        tb = [ph for ph, ln in stream.pieces(tpos, nt) for ph in range(ph, ph + ln)] if nt else []
        tpos += nt
        iblock, tblocks = build_extents(eruns, tb, tab.ino(k), 0, csum_seed, BS)
        meta.extend(tblocks)
        extra_blocks[k] = extra_blocks.get(k, 0) + nt
        iblock_rows.append(_row(k))
        iblock_data.append(iblock)
    in_ext = np.zeros(n, dtype=bool)
    if ext:
        in_ext[np.array(sorted(ext), dtype=np.int64)] = True
    for k in np.flatnonzero(kind == Kind.SYMLINK).tolist():
        if not nblocks[k]:
            iblock_rows.append(_row(k))
            iblock_data.append(nodes[k].target.ljust(60, b"\0"))
    for k in np.flatnonzero((kind == Kind.CHR) | (kind == Kind.BLK)).tolist():
        ma, mi = nodes[k].rdev_major, nodes[k].rdev_minor
        if ma < 256 and mi < 256:
            iblock = struct.pack("<I", (ma << 8) | mi).ljust(60, b"\0")
        else:
            iblock = struct.pack("<II", 0, (mi & 0xFF) | (ma << 8) | ((mi & ~0xFF) << 12)).ljust(60, b"\0")
        iblock_rows.append(_row(k))
        iblock_data.append(iblock)
    if iblock_rows:
        itab["i_block"][np.array(iblock_rows)] = np.frombuffer(
            b"".join(iblock_data), dtype=np.uint8
        ).reshape(-1, 60)
    # one extent in the inode, or none (an empty file): written through a view of i_block
    ev = itab.view(_EXTENT_ROOT_VIEW)
    for ks, one in ((s_k, True), (np.flatnonzero((flags != 0) & ~in_ext & (nblocks == 0)), False)):
        rows = _rows(ks)
        ev["eh_magic"][rows] = 0xF30A
        ev["eh_max"][rows] = 4
        if one:
            ev["eh_entries"][rows] = 1
            lg = np.zeros(len(ks), dtype=np.int64)
            if first_log:
                fk = np.array(sorted(first_log), dtype=np.int64)
                at = np.searchsorted(ks, fk)
                hit = at < len(ks)
                hit[hit] = ks[at[hit]] == fk[hit]
                lg[at[hit]] = [first_log[int(k)] for k in fk[hit]]
            ev["ee_block"][rows] = lg
            ev["ee_len"][rows] = nblocks[ks]
            ev["ee_start_hi"][rows] = s_phys >> 32
            ev["ee_start_lo"][rows] = s_phys & 0xFFFFFFFF
    del ev, s_phys

    # where the contents go: folders and slow symlinks as metadata, files as copies
    for k, (data, _ix) in tab.dirs.items():
        _place_bytes(meta, ext[k] if k in ext else [(0, phys_l[k], int(nblocks[k]))], data)
    for k in np.flatnonzero((kind == Kind.SYMLINK) & (nblocks > 0)).tolist():
        _place_bytes(meta, ext[k] if k in ext else [(0, phys_l[k], 1)], nodes[k].target.ljust(BS, b"\0"))
    files = (kind == Kind.REG) & (nblocks > 0)
    dense = files & ~cols.sparse & ~in_ext
    dense_k = np.flatnonzero(dense)
    copy_src = [nodes[k].source or "" for k in dense_k.tolist()]
    copy_dst = phys[dense_k] * BS
    copy_size = cols.size[dense_k].copy()
    copy_bytes = int(copy_size.sum())
    del dense_k, phys, in_ext
    copies: list[FileCopy] = []
    for k in np.flatnonzero(files & ~dense).tolist():
        nd = nodes[k]
        fruns = ext[k] if k in ext else [(first_log.get(k, 0), phys_l[k], int(nblocks[k]))]
        if nd.segments is None and len(fruns) == 1:
            pieces = [(0, fruns[0][1] * BS, nd.size)]
        else:
            pieces = _byte_pieces(nd, fruns)
        copies.append(FileCopy(tab.ino(k), nd.source or "", nd.size, pieces))
        copy_bytes += nd.size if nd.segments is None else sum(pc[2] for pc in pieces)
    del files, dense, phys_l

    # xattrs
    inline_rows: list[int] = []
    inline_data: list[bytes] = []
    acl_rows: list[int] = []
    acl_blocks: list[int] = []
    for k, (inline, xbk) in sorted(cols.xattrs.items()):
        if xbk is not None:
            acl_rows.append(_row(k))
            acl_blocks.append(xblock_of[xbk])
            extra_blocks[k] = extra_blocks.get(k, 0) + 1
        if inline:
            inline_rows.append(_row(k))
            inline_data.append(inline)
    if inline_rows:
        itab["i_xattr"][np.array(inline_rows)] = np.frombuffer(
            b"".join(inline_data), dtype=np.uint8
        ).reshape(-1, INLINE_XATTR_SPACE)
    if acl_rows:
        acl = np.array(acl_blocks, dtype=np.uint64)
        itab["i_file_acl_lo"][acl_rows] = acl & 0xFFFFFFFF
        itab["l_i_file_acl_high"][acl_rows] = acl >> 32

    # everything else, a slice of inodes at a time (bounded temporaries)
    ek = np.array(sorted(extra_blocks), dtype=np.int64)
    en = np.array([extra_blocks[k] for k in ek.tolist()], dtype=np.int64)
    del extra_blocks
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        lo, hi = np.searchsorted(ek, [a, b])
        _fill_rows(itab, a, b, tab, cols, flags[a:b], ek[lo:hi] - a, en[lo:hi])
    del flags

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
        copy_src=copy_src,
        copy_dst=copy_dst,
        copy_size=copy_size,
        copy_bytes=copy_bytes,
        journal_runs=journal_runs,
        dind_block=dind,
        overhead=overhead,
        hash_seed_words=tuple(hash_seed_words),  # type: ignore[arg-type]
        timestamp=ts,
        extra=extra,
    )


_CHUNK = 1 << 16

#: i_block as an extent root with one extent, overlaid on a whole inode record
_EXTENT_ROOT_VIEW = np.dtype({
    "names": ["eh_magic", "eh_entries", "eh_max", "eh_depth", "eh_generation", "ee_block",
              "ee_len", "ee_start_hi", "ee_start_lo"],
    "formats": ["<u2", "<u2", "<u2", "<u2", "<u4", "<u4", "<u2", "<u2", "<u4"],
    "offsets": [0x28, 0x2A, 0x2C, 0x2E, 0x30, 0x34, 0x38, 0x3A, 0x3C],
    "itemsize": 256,
})

_MODE_OF_KIND = np.array([_S_IFMT[Kind(v)] if v else 0 for v in range(8)], dtype=np.uint16)


def _row(k: int) -> int:
    """The inode table row (inode - 1) of k."""
    return ROOT_INO - 1 if k == 0 else k + LOST_FOUND_INO - 2


def _rows(ks: np.ndarray) -> np.ndarray:
    return np.where(ks == 0, ROOT_INO - 1, ks + (LOST_FOUND_INO - 2))


def _fill_rows(
    itab: np.ndarray, a: int, b: int, tab: _Inodes, cols: _Columns, flags: np.ndarray,
    extra_at: np.ndarray, extra: np.ndarray,
) -> None:
    """Mode, owner, size, block count, links, flags and times of inodes k = a..b-1."""
    nodes = tab.nodes[a:b]
    m = b - a
    rows = _rows(np.arange(a, b, dtype=np.int64))
    kind = cols.kind[a:b]
    # links
    links = np.array(tab.links[a:b], dtype=np.int64)
    links[(kind == Kind.DIR) & (links >= DIR_NLINK_MAX)] = 1
    over = links > 0xFFFF
    if over.any():
        j = int(np.flatnonzero(over)[0])
        raise UsageError(f"{nodes[j].origin}: {tab.links[a + j]} hard links, ext4 allows at most 65000")
    # owners
    try:
        ui = np.fromiter((nd.uid for nd in nodes), np.int64, m)
        gi = np.fromiter((nd.gid for nd in nodes), np.int64, m)
        bad = (ui < 0) | (ui >= 1 << 32) | (gi < 0) | (gi >= 1 << 32)
    except OverflowError:
        bad = np.fromiter(
            (not (0 <= nd.uid < 1 << 32 and 0 <= nd.gid < 1 << 32) for nd in nodes), bool, m
        )
    if bad.any():
        nd = nodes[int(np.flatnonzero(bad)[0])]
        raise UsageError(f"{nd.origin}: owner {nd.uid}:{nd.gid} out of the 32-bit range")
    # times: derived from mtime unless the tree carries them (non-deterministic mode)
    mlo, mex = _split_times(nodes, [nd.mtime_ns for nd in nodes])
    tcols = {"i_mtime": (mlo, mex)}
    for f, attr in (("i_atime", "atime_ns"), ("i_ctime", "ctime_ns"), ("i_crtime", "crtime_ns")):
        if all(getattr(nd, attr) is None for nd in nodes):
            tcols[f] = (mlo, mex)
        else:
            tcols[f] = _split_times(
                nodes, [nd.mtime_ns if v is None else v for nd in nodes for v in (getattr(nd, attr),)]
            )
    mode = _MODE_OF_KIND[kind] | np.fromiter((nd.mode & 0o7777 for nd in nodes), np.uint16, m)
    u = ui.astype(np.uint64)
    g = gi.astype(np.uint64)
    sz = cols.size[a:b].astype(np.uint64)
    sz[(kind != Kind.REG) & (kind != Kind.DIR) & (kind != Kind.SYMLINK)] = 0
    nb = cols.nblocks[a:b].copy()
    nb[extra_at] += extra  # extent tree and xattr blocks (one entry per inode)
    bl = nb.astype(np.uint64) * (BS // 512)
    itab["i_mode"][rows] = mode
    itab["i_uid"][rows] = u & 0xFFFF
    itab["l_i_uid_high"][rows] = u >> 16
    itab["i_gid"][rows] = g & 0xFFFF
    itab["l_i_gid_high"][rows] = g >> 16
    itab["i_size_lo"][rows] = sz & 0xFFFFFFFF
    itab["i_size_high"][rows] = sz >> 32
    itab["i_blocks_lo"][rows] = bl & 0xFFFFFFFF
    itab["l_i_blocks_high"][rows] = bl >> 32
    itab["i_links_count"][rows] = links.astype(np.uint16)
    itab["i_flags"][rows] = flags
    for f, (lo, ex) in tcols.items():
        itab[f][rows] = lo
        itab[f + "_extra"][rows] = ex
    itab["i_extra_isize"][rows] = 32


def _merge(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Merge (logical, physical, length) runs that continue each other on both sides."""
    merged: list[tuple[int, int, int]] = []
    for r in runs:
        if merged and merged[-1][0] + merged[-1][2] == r[0] and merged[-1][1] + merged[-1][2] == r[1]:
            merged[-1] = (merged[-1][0], merged[-1][1], merged[-1][2] + r[2])
        else:
            merged.append(r)
    return merged


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
