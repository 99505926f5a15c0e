"""Directory contents as on-disk bytes: one linear block, or a hash-indexed (htree) directory.

Pure and I/O-free: the output depends only on the entries, the directory's own inode number,
generation and parent, the checksum seed and the hash seed — never on physical block numbers
(htree indexes use logical block numbers), so directories can be built at planning time.

Layout of an htree directory made by :func:`build_dir` (logical blocks):

* block 0: ``dx_root`` ("." and "..", ``dx_root_info``, index entries, ``dx_tail``);
* with ``indirect_levels`` 1 only: blocks 1..K: ``dx_node`` blocks;
* then the leaves: ordinary dirent blocks with checksum tails, entries sorted by
  (major hash, minor hash, name), filled as full as they go.  A leaf that starts in the middle
  of a run of equal major hashes gets bit 0 set in its index hash (the kernel's collision
  flag), so lookups continue from the previous leaf.

The inode of an indexed directory must carry ``EXT4_INDEX_FL`` (0x1000): see
:attr:`DirData.indexed`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InternalError, UsageError
from .csum import crc32c_raw, inode_seed
from .dirhash import dx_hash_many
from .records_structs import (
    DIRENT_DTYPE,
    DIRENT_FMT,
    DIRENT_TAIL_FMT,
    DX_ROOT_HEAD_FMT,
    EXT4_FT_DIR_CSUM,
)

EXT4_INDEX_FL = 0x1000
FT_DIR = 2
TAIL_SIZE = 12
DX_ROOT_COUNT_OFFSET = 0x20
DX_NODE_COUNT_OFFSET = 0x08
#: Without the largedir feature an htree has at most one level of dx_nodes.
MAX_INDIRECT_LEVELS = 1

_DIRENT = struct.Struct(DIRENT_FMT)
_TAIL = struct.Struct(DIRENT_TAIL_FMT)
_DX_ROOT_HEAD = struct.Struct(DX_ROOT_HEAD_FMT)
_CL = struct.Struct("<HH")
_U32 = struct.Struct("<I")
_REC_LEN = struct.Struct("<H")
_PAD = (b"", b"\0", b"\0\0", b"\0\0\0")


@dataclass(frozen=True)
class DirData:
    """A directory's contents: ``data`` is ``nblocks * block_size`` bytes (logical blocks 0..);
    ``indexed`` means htree, so the inode needs ``EXT4_INDEX_FL``."""

    data: bytes
    indexed: bool
    block_size: int

    @property
    def nblocks(self) -> int:
        """Number of directory blocks (the directory's ``i_size`` is ``nblocks * block_size``)."""
        return len(self.data) // self.block_size

    @property
    def flags(self) -> int:
        """The ``i_flags`` bits this directory needs: ``EXT4_INDEX_FL`` or 0."""
        return EXT4_INDEX_FL if self.indexed else 0


def rec_len_for(name_len: int) -> int:
    """Minimum ``rec_len`` of an entry with a name of ``name_len`` bytes."""
    return (8 + name_len + 3) & ~3


def dx_root_limit(block_size: int) -> int:
    """dx_entry slots in a dx_root with metadata_csum (507 at 4 KiB)."""
    return (block_size - DX_ROOT_COUNT_OFFSET - 8) // 8


def dx_node_limit(block_size: int) -> int:
    """dx_entry slots in a dx_node with metadata_csum (510 at 4 KiB)."""
    return (block_size - DX_NODE_COUNT_OFFSET - 8) // 8


def _validate(entries: Sequence[tuple[bytes, int, int]]) -> None:
    """Names 1..255 bytes without "/" or NUL, not "." or "..", unique; types 1..7; inodes > 0."""
    if not entries:
        return
    names, inos, ftl = zip(*entries, strict=True)
    lens = list(map(len, names))
    joined = b"".join(names)
    fts = set(ftl)
    if (
        min(lens) < 1
        or max(lens) > 255
        or b"/" in joined
        or b"\0" in joined
        or not fts <= {1, 2, 3, 4, 5, 6, 7}
        or min(inos) < 1
        or max(inos) >= 1 << 32
        or b"." in names
        or b".." in names
        or len(set(names)) != len(names)
    ):
        _explain(entries)


def _explain(entries: Sequence[tuple[bytes, int, int]]) -> None:
    """Raise a UsageError for the first bad entry (the slow path of :func:`_validate`)."""
    seen: set[bytes] = set()
    for name, ino, ft in entries:
        if not 1 <= len(name) <= 255:
            raise UsageError(
                f"directory entry {name[:64]!r}...: name is {len(name)} bytes, expected 1 to 255"
                if name
                else "directory entry: empty name"
            )
        if b"/" in name or b"\0" in name or name in (b".", b".."):
            raise UsageError(f"directory entry {name!r}: not a valid file name")
        if not 1 <= ft <= 7:
            raise UsageError(f"directory entry {name!r}: file_type {ft}, expected 1..7")
        if not 0 < ino < 1 << 32:
            raise UsageError(f"directory entry {name!r}: inode number {ino} out of range")
        if name in seen:
            raise UsageError(f"directory entry {name!r}: duplicate name")
        seen.add(name)
    raise InternalError("directory entries failed validation without a reason")


def _linear_fits(entries: Sequence[tuple[bytes, int, int]], block_size: int) -> bool:
    room = block_size - TAIL_SIZE - 24
    total = 0
    for name, _ino, _ft in entries:
        total += (len(name) + 11) & ~3
        if total > room:
            return False
    return True


@dataclass
class _Plan:
    order: np.ndarray  # entry indexes (into the name-sorted list) in hash order
    leaf_starts: list[int]  # position in ``order`` where each leaf starts
    leaf_hash: list[int]  # index hash of each leaf (collision bit included)
    nodes: list[tuple[int, int]]  # (first leaf, leaf count) per dx_node; [] for 1 level
    offs: np.ndarray  # byte offset of each entry (hash order) within its leaf
    rec_lens: np.ndarray  # rec_len of each entry (hash order), the leaf's last one stretched
    leaf_of: np.ndarray  # leaf number of each entry (hash order)


def _plan_htree(
    names: list[bytes],
    block_size: int,
    hash_seed_words: Sequence[int],
    hash_version: int,
    hash_unsigned: bool,
) -> _Plan:
    n = len(names)
    major, minor = dx_hash_many(names, hash_version, hash_seed_words, hash_unsigned)
    # names are sorted and lexsort is stable: ties on (major, minor) end in name order
    order = np.lexsort((minor, major))
    hs = major[order]
    lens = np.fromiter(map(len, names), dtype=np.int64, count=n)[order]
    rl = (lens + 11) & ~3
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(rl, out=cum[1:])
    cap = block_size - TAIL_SIZE
    # greedy fill: each leaf takes entries while they fit (one search per leaf)
    leaf_starts: list[int] = []
    i = 0
    while i < n:
        leaf_starts.append(i)
        i = int(np.searchsorted(cum, cum[i] + cap, side="right")) - 1
    starts = np.array(leaf_starts, dtype=np.int64)
    counts = np.diff(np.append(starts, n))
    leaf_of = np.repeat(np.arange(len(starts)), counts)
    offs = cum[:-1] - cum[starts][leaf_of]
    rec_lens = rl.copy()
    last = starts + counts - 1
    rec_lens[last] = cap - offs[last]
    hl = hs.tolist()
    leaf_hash = [0]
    for st in leaf_starts[1:]:
        h = hl[st]
        leaf_hash.append(h | 1 if h == hl[st - 1] else h)
    nleaves = len(leaf_starts)
    rlim = dx_root_limit(block_size)
    nlim = dx_node_limit(block_size)
    nodes: list[tuple[int, int]] = []
    if nleaves > rlim:
        nnodes = -(-nleaves // nlim)
        if nnodes > rlim:
            raise UsageError(
                f"directory with {n} entries needs {nleaves} leaf blocks, more than "
                f"an htree of depth 2 can index ({rlim * nlim}) without the largedir feature"
            )
        nodes = [(j, min(nlim, nleaves - j)) for j in range(0, nleaves, nlim)]
    return _Plan(order, leaf_starts, leaf_hash, nodes, offs, rec_lens, leaf_of)


def dir_blocks_needed(
    entries: Sequence[tuple[bytes, int, int]],
    block_size: int,
    hash_seed_words: Sequence[int] = (0, 0, 0, 0),
    hash_version: int = 1,
    hash_unsigned: bool = False,
) -> int:
    """Number of blocks :func:`build_dir` returns for these entries (same arguments)."""
    if _linear_fits(entries, block_size):
        return 1
    names = sorted(e[0] for e in entries)
    p = _plan_htree(names, block_size, hash_seed_words, hash_version, hash_unsigned)
    return 1 + len(p.nodes) + len(p.leaf_starts)


def _put_tail(blk: bytearray, bs: int, iseed: int) -> None:
    _TAIL.pack_into(blk, bs - TAIL_SIZE, 0, TAIL_SIZE, 0, EXT4_FT_DIR_CSUM, 0)
    _U32.pack_into(blk, bs - 4, crc32c_raw(iseed, memoryview(blk)[: bs - TAIL_SIZE]))


def _dot_dotdot(blk: bytearray, ino: int, parent_ino: int, dotdot_rec_len: int) -> None:
    _DIRENT.pack_into(blk, 0, ino, 12, 1, FT_DIR)
    blk[8:12] = b".\0\0\0"
    _DIRENT.pack_into(blk, 12, parent_ino, dotdot_rec_len, 2, FT_DIR)
    blk[20:24] = b"..\0\0"


def _dx_block(
    bs: int, head: bytes, count_off: int, entries: list[tuple[int, int]], iseed: int
) -> bytearray:
    """A dx_root or dx_node: ``head`` then count/limit, entries, dx_tail with checksum.

    ``entries`` are (hash, block); the first entry's hash is replaced by count/limit."""
    limit = (bs - count_off - 8) // 8
    if len(entries) > limit:
        raise InternalError(f"{len(entries)} dx entries, limit {limit}")
    blk = bytearray(bs)
    blk[: len(head)] = head
    arr = np.array(entries, dtype="<u4").reshape(-1, 2)
    blk[count_off : count_off + 8 * len(entries)] = arr.tobytes()
    _CL.pack_into(blk, count_off, limit, len(entries))
    tail = count_off + 8 * limit
    mv = memoryview(blk)
    c = crc32c_raw(iseed, mv[: count_off + 8 * len(entries)])
    c = crc32c_raw(c, mv[tail : tail + 4])
    c = crc32c_raw(c, b"\0\0\0\0")
    _U32.pack_into(blk, tail + 4, c)
    return blk


def build_dir(
    entries: Sequence[tuple[bytes, int, int]],
    ino: int,
    parent_ino: int,
    *,
    block_size: int,
    csum_seed: int,
    gen: int,
    hash_seed_words: Sequence[int],
    hash_version: int = 1,
    hash_unsigned: bool = False,
) -> DirData:
    """Build a directory's blocks.

    ``entries`` are ``(name, inode number, file_type 1..7)`` without "." and "..", in any
    order (the output does not depend on it).  When "." + ".." + every entry fit in one block
    the result is one linear block (entries sorted by name); otherwise an htree as described
    in the module docstring, ``hash_version`` stored in the dx_root (the signedness is the
    superblock's flag, passed as ``hash_unsigned``).  Every block carries its metadata_csum
    checksum (``csum_seed`` is the filesystem seed; ``ino``/``gen`` are this directory's).
    Raises :class:`UsageError` for an invalid or duplicate name.
    """
    bs = block_size
    _validate(entries)
    iseed = inode_seed(csum_seed, ino, gen)
    ents = sorted(entries)
    end = bs - TAIL_SIZE
    if _linear_fits(ents, bs):
        blk = bytearray(bs)
        if ents:
            _dot_dotdot(blk, ino, parent_ino, 12)
            pack = _DIRENT.pack
            body = b"".join(
                [pack(i, (len(nm) + 11) & ~3, len(nm), ft) + nm + _PAD[-len(nm) & 3]
                 for nm, i, ft in ents]
            )
            blk[24 : 24 + len(body)] = body
            last = 24 + len(body) - ((len(ents[-1][0]) + 11) & ~3)
            _REC_LEN.pack_into(blk, last + 4, end - last)
        else:
            _dot_dotdot(blk, ino, parent_ino, end - 12)
        _put_tail(blk, bs, iseed)
        return DirData(bytes(blk), False, bs)

    names_t, inos_t, fts_t = zip(*ents, strict=True)
    names = list(names_t)
    p = _plan_htree(names, bs, hash_seed_words, hash_version, hash_unsigned)
    nleaves = len(p.leaf_starts)
    nnodes = len(p.nodes)
    first_leaf = 1 + nnodes
    out = bytearray()

    # dx_root
    head = _DX_ROOT_HEAD.pack(
        ino, 12, 1, FT_DIR, b".", parent_ino, bs - 12, 2, FT_DIR, b"..",
        0, hash_version, 8, 1 if nnodes else 0, 0,
    )
    if nnodes:
        root_entries = [(p.leaf_hash[first], 1 + j) for j, (first, _n) in enumerate(p.nodes)]
    else:
        root_entries = [(p.leaf_hash[j], first_leaf + j) for j in range(nleaves)]
    out += _dx_block(bs, head, DX_ROOT_COUNT_OFFSET, root_entries, iseed)

    # dx_nodes
    node_head = _DIRENT.pack(0, bs, 0, 0) if bs < 65536 else _DIRENT.pack(0, 0, 0, 0)
    for first, cnt in p.nodes:
        ne = [(p.leaf_hash[first + j], first_leaf + first + j) for j in range(cnt)]
        out += _dx_block(bs, node_head, DX_NODE_COUNT_OFFSET, ne, iseed)

    # leaves: headers and names scattered into one array, then tails and checksums
    n = len(ents)
    order = p.order
    nm = [names[k] for k in order.tolist()]
    lens = np.fromiter(map(len, nm), dtype=np.int64, count=n)
    pos = p.leaf_of * bs + p.offs
    hdr = np.zeros(n, dtype=DIRENT_DTYPE)
    hdr["inode"] = np.array(inos_t, dtype=np.uint32)[order]
    hdr["rec_len"] = p.rec_lens
    hdr["name_len"] = lens
    hdr["file_type"] = np.array(fts_t, dtype=np.uint8)[order]
    leaves = np.zeros(nleaves * bs, dtype=np.uint8)
    leaves[pos[:, None] + np.arange(8)] = hdr.view(np.uint8).reshape(n, 8)
    flat = np.frombuffer(b"".join(nm), dtype=np.uint8)
    name_start = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=name_start[1:])
    leaves[np.repeat(pos + 8 - name_start, lens) + np.arange(len(flat))] = flat
    lv = leaves.reshape(nleaves, bs)
    lv[:, bs - TAIL_SIZE : bs - 4] = np.frombuffer(
        _TAIL.pack(0, TAIL_SIZE, 0, EXT4_FT_DIR_CSUM, 0)[:8], dtype=np.uint8
    )
    mv = leaves.data
    sums = np.array(
        [crc32c_raw(iseed, mv[j * bs : j * bs + bs - TAIL_SIZE]) for j in range(nleaves)],
        dtype="<u4",
    )
    lv[:, bs - 4 :] = sums.view(np.uint8).reshape(nleaves, 4)
    out += leaves.data
    return DirData(bytes(out), True, bs)


def build_empty_dir_blocks(
    ino: int, parent_ino: int, nblocks: int, *, block_size: int, csum_seed: int, gen: int
) -> bytes:
    """An empty linear directory of ``nblocks`` blocks, as mke2fs makes lost+found: block 0
    holds "." and "..", the others one unused dirent each; every block has a checksum tail."""
    if nblocks < 1:
        raise UsageError(f"empty directory: {nblocks} blocks, expected at least 1")
    bs = block_size
    iseed = inode_seed(csum_seed, ino, gen)
    out = bytearray()
    blk = bytearray(bs)
    _dot_dotdot(blk, ino, parent_ino, bs - TAIL_SIZE - 12)
    _put_tail(blk, bs, iseed)
    out += blk
    if nblocks > 1:
        blk = bytearray(bs)
        _DIRENT.pack_into(blk, 0, 0, bs - TAIL_SIZE, 0, 0)
        _put_tail(blk, bs, iseed)
        out += bytes(blk) * (nblocks - 1)
    return bytes(out)


def is_indexed(data: bytes, block_size: int) -> bool:
    """True if ``data`` (a directory's blocks) starts with an htree dx_root."""
    if len(data) < block_size or block_size < 64:
        return False
    rl = data[16] | (data[17] << 8)
    return (
        len(data) > block_size
        and rl == block_size - 12
        and data[0x18:0x1C] == b"\0\0\0\0"
        and data[0x1D] == 8
    )
