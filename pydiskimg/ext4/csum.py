"""ext4 metadata_csum checksums (CRC32C), pure functions over bytes.

``ext4_chksum(seed, buf)`` in the kernel is the raw CRC-32C register (Castagnoli, reflected)
started at ``seed`` with no final XOR; :func:`crc32c_raw` is exactly that.  It runs on the
``crc32c`` package (hardware CRC32 instruction) when installed, else on crcmod's C extension
(a warning is logged if only crcmod's pure-Python fallback is there); :data:`BACKEND` says
which.  Every other
function here is one formula of FORMATS.md A3, checked against e2fsprogs images in
``tests/test_ext4_records_csum.py``.  Functions return the full 32-bit value; callers store
the halves where the format says (inode lo16 @0x7C / hi16 @0x82, bitmap lo16/hi16, ...).
"""

from __future__ import annotations

import logging
import struct
import sys

import crcmod
import numpy as np

log = logging.getLogger(__name__)

_LE32 = struct.Struct("<I")
_LE64 = struct.Struct("<Q")
_MASK = 0xFFFFFFFF

#: crcmod's function with init/xorOut 0 is ``f(data, crc) -> raw register`` (no final XOR).
_crcmod_raw = crcmod.mkCrcFun(0x11EDC6F41, initCrc=0, rev=True, xorOut=0)
_CRCMOD_C = bool(getattr(sys.modules.get("crcmod.crcmod"), "_usingExtension", False))

try:  # optional: the ``crc32c`` package uses the CPU's CRC32 instruction (about 3x faster here)
    from crc32c import crc32c as _hw_crc32c
except ImportError:  # pragma: no cover - depends on the environment
    _hw_crc32c = None  # type: ignore[assignment]


def _crc32c_pkg_raw(data: bytes | bytearray | memoryview, seed: int) -> int:
    # crc32c() continues a standard CRC (pre- and post-inverted): invert around it
    return ~_hw_crc32c(data, ~seed & _MASK) & _MASK  # type: ignore[misc]


if _hw_crc32c is not None:
    _crc = _crc32c_pkg_raw
    BACKEND = "crc32c"
else:  # pragma: no cover - depends on the environment
    _crc = _crcmod_raw
    BACKEND = "crcmod" if _CRCMOD_C else "crcmod-python"
    if not _CRCMOD_C:
        log.warning(
            "crcmod's C extension is not available: ext4 checksums use the pure-Python "
            "fallback, about 25x slower (install crc32c or a compiled crcmod)"
        )


def crc32c_raw(seed: int, data: bytes | bytearray | memoryview) -> int:
    """The kernel's ``ext4_chksum``: CRC-32C register from ``seed`` over ``data``, no final XOR."""
    return _crc(data, seed)


def fs_csum_seed(uuid_bytes: bytes) -> int:
    """The filesystem checksum seed: ``crc32c_raw(~0, s_uuid)`` (no metadata_csum_seed)."""
    if len(uuid_bytes) != 16:
        raise ValueError(f"filesystem UUID must be 16 bytes, got {len(uuid_bytes)}")
    return _crc(uuid_bytes, _MASK)


def inode_seed(seed: int, ino: int, gen: int) -> int:
    """Per-inode seed: the fs seed run over ``le32(ino)`` then ``le32(i_generation)``."""
    return _crc(_LE32.pack(ino) + _LE32.pack(gen & _MASK), seed)


def inode_csum(seed: int, ino: int, gen: int, raw256: bytes | bytearray | memoryview) -> int:
    """Checksum of one inode record (any size >= 0x84), checksum fields taken as zero.

    Zeroes ``l_i_checksum_lo`` @0x7C and ``i_checksum_hi`` @0x82 (the latter only when
    ``i_extra_isize`` >= 4, as the kernel does).  Store ``csum & 0xFFFF`` at 0x7C and
    ``csum >> 16`` at 0x82.
    """
    b = bytearray(raw256)
    b[0x7C:0x7E] = b"\0\0"
    if len(b) > 0x84 and (b[0x80] | (b[0x81] << 8)) >= 4:
        b[0x82:0x84] = b"\0\0"
    return _crc(b, inode_seed(seed, ino, gen))


def inode_table_csums(
    seed: int, inos: np.ndarray, gens: np.ndarray, table: np.ndarray
) -> np.ndarray:
    """Checksums of many inode records at once.

    ``table`` is ``uint8`` of shape (n, inode_size) (or a structured array of n records);
    ``inos`` and ``gens`` have n entries.  Checksum fields are taken as zero whatever
    they hold (``i_checksum_hi`` only where ``i_extra_isize`` >= 4, as in
    :func:`inode_csum`).  Returns ``uint32[n]``; store lo16 and, where
    ``i_extra_isize`` >= 4, hi16.
    """
    t = np.ascontiguousarray(table).view(np.uint8)
    n = len(inos)
    t = t.reshape(n, -1)
    isz = t.shape[1]
    buf = np.empty((n, 8 + isz), dtype=np.uint8)
    buf[:, 8:] = t
    buf[:, 8 + 0x7C : 8 + 0x7E] = 0
    extra = t[:, 0x80].astype(np.uint16) | (t[:, 0x81].astype(np.uint16) << 8)
    buf[extra >= 4, 8 + 0x82 : 8 + 0x84] = 0
    head = buf[:, :8].view("<u4")
    head[:, 0] = np.asarray(inos, dtype=np.uint64).astype("<u4")
    head[:, 1] = np.asarray(gens, dtype=np.uint64).astype("<u4")
    data = buf.reshape(-1).data
    step = 8 + isz
    offs = range(0, n * step, step)
    if _hw_crc32c is not None:
        c = _hw_crc32c
        s = ~seed & _MASK
        return ~np.array([c(data[o : o + step], s) for o in offs], dtype=np.uint32)
    f = _crcmod_raw  # pragma: no cover - depends on the environment
    return np.array([f(data[o : o + step], seed) for o in offs], dtype=np.uint32)  # pragma: no cover


def gdt_csum(seed: int, group: int, desc: bytes | bytearray | memoryview) -> int:
    """16-bit group descriptor checksum: ``le32(group) + desc`` with ``bg_checksum`` @0x1E zeroed."""
    d = bytearray(desc)
    d[0x1E:0x20] = b"\0\0"
    return _crc(d, _crc(_LE32.pack(group), seed)) & 0xFFFF


def bitmap_csum(seed: int, bitmap: bytes | bytearray | memoryview) -> int:
    """Block or inode bitmap checksum over exactly the bytes given.

    Pass ``clusters_per_group // 8`` bytes of a block bitmap or ``inodes_per_group // 8``
    bytes of an inode bitmap.  Store lo16 and (64bit) hi16 in the group descriptor.
    """
    return _crc(bitmap, seed)


def superblock_csum(sb1024: bytes | bytearray | memoryview) -> int:
    """``s_checksum``: unseeded ``crc32c_raw(~0, sb[0:0x3FC])``."""
    return _crc(memoryview(sb1024)[:0x3FC], _MASK)


def extent_block_csum(
    seed: int, ino: int, gen: int, blk: bytes | bytearray | memoryview
) -> int:
    """Extent tree block checksum: over ``blk[0 : 12 + 12*eh_max]`` (the ``ext4_extent_tail``
    lives right after)."""
    eh_max = blk[4] | (blk[5] << 8)
    return _crc(memoryview(blk)[: 12 + 12 * eh_max], inode_seed(seed, ino, gen))


def dirblock_csum(
    seed: int, ino: int, gen: int, blk: bytes | bytearray | memoryview, block_size: int | None = None
) -> int:
    """Linear directory (leaf) block checksum over ``blk[0 : bs-12]`` (the tail follows)."""
    bs = len(blk) if block_size is None else block_size
    return _crc(memoryview(blk)[: bs - 12], inode_seed(seed, ino, gen))


def dx_csum(
    seed: int, ino: int, gen: int, blk: bytes | bytearray | memoryview, count_offset: int
) -> int:
    """htree root/node checksum.

    ``count_offset`` is 0x20 for a dx_root (with an 8-byte dx_root_info) and 0x08 for a
    dx_node.  Covers ``blk[0 : count_offset + 8*count]`` then the 8-byte ``dx_tail`` (found
    after ``limit`` slots) with its checksum field taken as zero.
    """
    mv = memoryview(blk)
    limit = mv[count_offset] | (mv[count_offset + 1] << 8)
    count = mv[count_offset + 2] | (mv[count_offset + 3] << 8)
    tail = count_offset + 8 * limit
    c = _crc(mv[: count_offset + 8 * count], inode_seed(seed, ino, gen))
    c = _crc(mv[tail : tail + 4], c)
    return _crc(b"\0\0\0\0", c)


def xattr_block_csum(
    seed: int, block_nr: int, blk: bytes | bytearray | memoryview
) -> int:
    """Xattr block checksum: seeded with ``le64(block_nr)``, ``h_checksum`` @0x10 zeroed."""
    b = bytearray(blk)
    b[0x10:0x14] = b"\0\0\0\0"
    return _crc(b, _crc(_LE64.pack(block_nr), seed))
