"""What a write will take on the output's filesystem, computed before writing (pre-flight).

Images are sparse: only what the writers write takes space, so each estimate counts the 4 KiB
pages the writer touches, from the plan (no I/O), rounded up:

* ext4: superblocks and group descriptors (primary and backups), the bitmaps, the used part of
  each inode table, the journal superblock, every metadata block of the plan (folders, extent
  trees, xattr blocks, the resize inode, slow symlinks) and every data piece of every file;
* FAT: the reserved sectors, the used part of both FATs, the folders and every file's data;
* the partition table: the MBR, or the GPT's two copies.

A converted copy (qcow2, vdi, vpc) is estimated from the raw image once it is written, from its
data map (``SEEK_DATA``/``SEEK_HOLE``): qemu-img allocates a whole cluster (qcow2: 64 KiB) or
block (vdi: 1 MiB, vpc: 2 MiB) for any that holds data, plus its tables.  Compressed qcow2 has
no useful upper bound below that; it is checked against the uncompressed figure's metadata only
and a disk that fills during its conversion is reported as any other full disk.

The destination filesystem adds a little of its own (extent blocks of a sparse file): a margin
of 1/256 plus 64 KiB covers it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import io

PAGE = 4096
MiB = 1 << 20


def pages(offset: int, length: int) -> int:
    """4 KiB pages touched by ``length`` bytes at ``offset``."""
    if length <= 0:
        return 0
    return (offset + length - 1) // PAGE - offset // PAGE + 1


def margin(n: int) -> int:
    """``n`` plus what the destination filesystem may need to map it."""
    return n + n // 256 + 64 * 1024


def ext4_bytes(plan: Any) -> int:
    """Bytes :func:`pydiskimg.ext4.write` writes for ``plan`` (4 KiB blocks)."""
    from .ext4 import geometry as geo

    p = plan.params
    blocks = (1 + len(geo.backup_groups(p.groups))) * (1 + p.desc_blocks)
    blocks += p.groups  # block bitmaps (an upper bound: groups left BLOCK_UNINIT skip theirs)
    ipg = p.inodes_per_group
    for g in range(p.groups):
        used = max(0, min(plan.max_ino - g * ipg, ipg))
        blocks += pages(0, used * 256) + (1 if used else 0)  # inode table, inode bitmap
    blocks += 1 if p.journal_blocks else 0
    for blk, data in plan.blocks:  # an entry may span several blocks (a folder's)
        blocks += pages(blk * PAGE, len(data))
    for fc in plan.copies:  # files with holes or several extents
        for _src, dst, ln in fc.pieces:
            blocks += pages(dst, ln)
    # dense files in one extent: columns of image offsets and sizes
    sizes = np.asarray(plan.copy_size, dtype=np.int64)
    dst = np.asarray(plan.copy_dst, dtype=np.int64)
    nz = sizes > 0
    blocks += int(((dst[nz] + sizes[nz] - 1) // PAGE - dst[nz] // PAGE + 1).sum())
    return blocks * PAGE


def union_pages(ranges: list[tuple[int, int]], unit: int = PAGE) -> int:
    """Units (4 KiB pages by default) touched by the union of byte ranges ``(offset, length)``
    (ranges may share a unit: FAT clusters smaller than a page pack several files into one)."""
    spans = sorted((off // unit, (off + ln - 1) // unit) for off, ln in ranges if ln > 0)
    total = 0
    cur_a, cur_b = -1, -2
    for a, b in spans:
        if a > cur_b:
            total += cur_b - cur_a + 1 if cur_b >= cur_a else 0
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b >= cur_a >= 0:
        total += cur_b - cur_a + 1
    return total


def fat_bytes(plan: Any) -> int:
    """Bytes :func:`pydiskimg.fat.write` writes for ``plan`` (counted in 4 KiB pages)."""
    g = plan.geometry
    ranges = [(0, g.fat_offset)]  # boot sectors, FSInfo and their backups
    fat_len = len(plan.fat) * 4
    ranges += [(g.fat_offset + k * g.fat_sectors * 512, fat_len) for k in range(g.num_fats)]
    ranges += [(offset, len(data)) for offset, data in plan.directories]
    for _path, node, offset in plan.files:
        ranges += [(offset + seg_off, seg_len) for seg_off, seg_len in node.data_segments()]
    return union_pages(ranges) * PAGE


def table_bytes(layout: Any) -> int:
    """The partition table: the MBR, or the GPT's primary and backup copies (34 + 33 sectors)."""
    if layout is None:
        return 0
    return 2 * pages(0, 34 * 512) * PAGE


def data_ranges(path: str) -> list[tuple[int, int]]:
    """(offset, length) of every data range of a sparse file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return [(a, b - a) for a, b in io.data_ranges(fd, 0, os.fstat(fd).st_size)]
    finally:
        os.close(fd)


#: qemu-img's allocation unit per pydiskimg format
_UNIT = {"qcow2": 64 * 1024, "qcow2-compressed": 64 * 1024, "vdi": MiB, "vpc": 2 * MiB}


def converted_bytes(raw: str, fmt: str) -> int:
    """An upper bound of the size of ``raw`` converted to ``fmt`` by qemu-img."""
    unit = _UNIT[fmt]
    size = os.path.getsize(raw)
    ranges = data_ranges(raw)
    n = union_pages(ranges, unit)
    nunits = -(-size // unit)
    if fmt.startswith("qcow2"):
        # header, L1 table, one 64 KiB L2 table per 512 MiB, refcount table and blocks
        l2 = -(-size // (512 * MiB))
        refcount = -(-(n + l2 + 8) // 32768) + 1
        meta = (4 + l2 + refcount) * unit + 8 * -(-size // (512 * MiB))
        data = 0 if fmt == "qcow2-compressed" else n * unit
        return data + meta
    if fmt == "vdi":
        return n * unit + MiB + 4 * nunits
    # vpc (dynamic): qemu-img writes only the data sectors of a block (the rest stays a hole),
    # plus a 512-byte sector bitmap before each block, the BAT, header and footers
    data_pages = union_pages(ranges)
    return data_pages * PAGE + n * PAGE + 4 * nunits + 4 * 512 + 3 * 512
