"""Extent trees as on-disk bytes: the 60-byte ``i_block`` and any tree blocks.

Runs of any length are accepted; :func:`build_extents` splits each into extents of at most
32768 blocks (initialized extents).  :func:`extents_needed` counts extents after that split,
and :func:`extent_tree_blocks` says how many tree blocks a file with that many extents needs,
so a planner can allocate them before building.

Tree shape: leaves are filled completely (``(bs-12)/12`` = 340 extents at 4 KiB) left to
right, index levels likewise; the inode root holds at most 4 entries.  ``tree_blocks`` are
used top-down, level by level, left to right: for a depth-1 tree they are simply the leaves
in logical order.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from ..errors import InternalError, UsageError
from .csum import crc32c_raw, inode_seed
from .records_structs import EXT4_EXT_MAGIC, EXTENT_DTYPE, EXTENT_HEADER_FMT, EXTENT_IDX_DTYPE

EXT_MAX_LEN = 32768
ROOT_SLOTS = 4
_HEADER = struct.Struct(EXTENT_HEADER_FMT)
_U32 = struct.Struct("<I")


def block_slots(block_size: int) -> int:
    """``eh_max`` of an extent tree block: 340 at 4 KiB."""
    return (block_size - 12) // 12


def extents_needed(runs: Sequence[tuple[int, int, int]]) -> int:
    """Number of extents for ``(logical, physical, length)`` runs once split to <= 32768."""
    if len(runs) == 1:
        return -(-runs[0][2] // EXT_MAX_LEN)
    return sum(-(-r[2] // EXT_MAX_LEN) for r in runs)


def _level_sizes(n_extents: int, block_size: int) -> list[int]:
    """Blocks per level below the inode, bottom (leaves) first; [] when the root suffices."""
    slots = block_slots(block_size)
    sizes: list[int] = []
    n = n_extents
    while n > ROOT_SLOTS:
        n = -(-n // slots)
        sizes.append(n)
    return sizes


def extent_tree_blocks(n_extents: int, block_size: int) -> int:
    """Tree blocks (leaves + index blocks) a file with ``n_extents`` extents needs."""
    if n_extents <= ROOT_SLOTS:
        return 0
    return sum(_level_sizes(n_extents, block_size))


def _split(runs: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Runs -> array of (logical, physical, length) with length <= 32768, validated."""
    out: list[tuple[int, int, int]] = []
    prev_end = 0
    for lb, pb, ln in runs:
        if ln <= 0 or lb < prev_end or lb + ln > 1 << 32 or pb < 0 or pb + ln > 1 << 48:
            raise UsageError(
                f"extent run (logical {lb}, physical {pb}, length {ln}): empty, overlapping, "
                "unsorted or out of range"
            )
        prev_end = lb + ln
        while ln > EXT_MAX_LEN:
            out.append((lb, pb, EXT_MAX_LEN))
            lb += EXT_MAX_LEN
            pb += EXT_MAX_LEN
            ln -= EXT_MAX_LEN
        out.append((lb, pb, ln))
    return np.array(out, dtype=np.int64).reshape(-1, 3)


_LEAF = struct.Struct("<IHHI")


def _root_only(runs: Sequence[tuple[int, int, int]]) -> bytes | None:
    """i_block for up to 4 runs that need no splitting (the common case), without numpy;
    None when the general path must handle them (long or invalid runs)."""
    out = [b""]
    prev_end = 0
    for lb, pb, ln in runs:
        if not 0 < ln <= EXT_MAX_LEN or lb < prev_end or lb + ln > 1 << 32 or pb < 0 or pb + ln > 1 << 48:
            return None
        prev_end = lb + ln
        out.append(_LEAF.pack(lb, ln, pb >> 32, pb & 0xFFFFFFFF))
    out[0] = _HEADER.pack(EXT4_EXT_MAGIC, len(runs), ROOT_SLOTS, 0, 0)
    return b"".join(out).ljust(60, b"\0")


def _leaf_bytes(ext: np.ndarray) -> bytes:
    a = np.zeros(len(ext), dtype=EXTENT_DTYPE)
    a["ee_block"] = ext[:, 0]
    a["ee_len"] = ext[:, 2]
    a["ee_start_hi"] = ext[:, 1] >> 32
    a["ee_start_lo"] = ext[:, 1] & 0xFFFFFFFF
    return a.tobytes()


def _idx_bytes(first_logical: np.ndarray, children: np.ndarray) -> bytes:
    a = np.zeros(len(children), dtype=EXTENT_IDX_DTYPE)
    a["ei_block"] = first_logical
    a["ei_leaf_lo"] = children & 0xFFFFFFFF
    a["ei_leaf_hi"] = children >> 32
    return a.tobytes()


def build_extents(
    runs: Sequence[tuple[int, int, int]],
    tree_blocks: Sequence[int],
    ino: int,
    gen: int,
    csum_seed: int,
    block_size: int,
) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Build a file's extent tree.

    ``runs`` are ``(logical block, physical block, length)`` sorted by logical block, not
    overlapping (holes between them are fine); ``tree_blocks`` the physical blocks reserved
    for the tree (exactly :func:`extent_tree_blocks` of :func:`extents_needed` of them).
    Returns the 60-byte ``i_block`` and ``[(physical block, block bytes), ...]`` with
    ``ext4_extent_tail`` checksums.  An empty ``runs`` gives an empty depth-0 root.
    """
    bs = block_size
    if len(runs) <= ROOT_SLOTS and not tree_blocks:
        fast = _root_only(runs)
        if fast is not None:
            return fast, []
    ext = _split(runs)
    n = len(ext)
    sizes = _level_sizes(n, bs)
    if len(tree_blocks) != sum(sizes):
        raise InternalError(
            f"inode {ino}: {n} extents need {sum(sizes)} tree blocks, {len(tree_blocks)} given"
        )
    slots = block_slots(bs)
    if not sizes:
        root = _HEADER.pack(EXT4_EXT_MAGIC, n, ROOT_SLOTS, 0, 0) + _leaf_bytes(ext)
        return root.ljust(60, b"\0"), []

    # assign physical blocks top-down: the level just below the root first
    tb = list(tree_blocks)
    phys_by_level: list[list[int]] = []  # bottom first
    pos = 0
    for cnt in reversed(sizes):
        phys_by_level.insert(0, tb[pos : pos + cnt])
        pos += cnt

    iseed = inode_seed(csum_seed, ino, gen)
    out: list[tuple[int, bytes]] = []
    tail_off = 12 + 12 * slots

    def make_block(depth: int, count: int, body: bytes) -> bytes:
        blk = bytearray(bs)
        _HEADER.pack_into(blk, 0, EXT4_EXT_MAGIC, count, slots, depth, 0)
        blk[12 : 12 + len(body)] = body
        _U32.pack_into(blk, tail_off, crc32c_raw(iseed, memoryview(blk)[:tail_off]))
        return bytes(blk)

    # leaves
    phys = phys_by_level[0]
    firsts = ext[::slots, 0]
    for j, p in enumerate(phys):
        chunk = ext[j * slots : (j + 1) * slots]
        out.append((p, make_block(0, len(chunk), _leaf_bytes(chunk))))
    child_first = firsts
    child_phys = np.array(phys, dtype=np.int64)
    for depth in range(1, len(sizes)):
        phys = phys_by_level[depth]
        for j, p in enumerate(phys):
            sl = slice(j * slots, (j + 1) * slots)
            out.append(
                (p, make_block(depth, len(child_phys[sl]), _idx_bytes(child_first[sl], child_phys[sl])))
            )
        child_first = child_first[::slots]
        child_phys = np.array(phys, dtype=np.int64)
    if len(child_phys) > ROOT_SLOTS:
        raise InternalError(f"inode {ino}: extent root with {len(child_phys)} entries")
    root = _HEADER.pack(EXT4_EXT_MAGIC, len(child_phys), ROOT_SLOTS, len(sizes), 0)
    root += _idx_bytes(child_first, child_phys)
    # order the tree blocks as given (top-down)
    order = {p: i for i, p in enumerate(tb)}
    out.sort(key=lambda t: order[t[0]])
    return root.ljust(60, b"\0"), out
