"""Extended attributes as on-disk bytes: the in-inode area and the shared xattr block.

* :func:`encode_xattrs` splits a file's xattrs between the inode body (what fits, in the
  canonical order, first fit) and one xattr block (the rest), as mke2fs does.
* :class:`BlockXattrs` is the block's content, hashable: identical sets share one block.
* :func:`build_xattr_block` makes the block: entries sorted by (index, name_len, name), values
  packed from the end, ``e_hash``/``h_hash`` as the kernel computes them, metadata_csum.
* :func:`acl_vfs_to_ext4` turns a ``system.posix_acl_*`` value as ``getxattr`` returns it
  (version 2) into ext4's on-disk form (version 1); :func:`encode_xattrs` applies it itself
  to ACL values that are still in VFS form.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UsageError
from .csum import crc32c_raw
from .records_structs import EXT4_XATTR_MAGIC, XATTR_ENTRY_FMT, XATTR_HEADER_FMT

_ENTRY = struct.Struct(XATTR_ENTRY_FMT)
_HEADER = struct.Struct(XATTR_HEADER_FMT)
_U32 = struct.Struct("<I")
_LE64 = struct.Struct("<Q")
_M = 0xFFFFFFFF

XATTR_HEADER_SIZE = 32
XATTR_ENTRY_SIZE = 16

#: Exact names first, then prefixes (first match wins): kernel ``ext4_xattr_handler_map``.
_EXACT = {b"system.posix_acl_access": 2, b"system.posix_acl_default": 3}
_PREFIXES = ((b"user.", 1), (b"trusted.", 4), (b"security.", 6), (b"system.", 7))
_INDEX_PREFIX = {1: b"user.", 2: b"system.posix_acl_access", 3: b"system.posix_acl_default",
                 4: b"trusted.", 6: b"security.", 7: b"system."}

#: Which attributes get the inode body first (then first fit): those the kernel reads on
#: every access (SELinux label, ACLs, file capabilities), then system, trusted, user.
_INLINE_PRIORITY = {6: 0, 2: 1, 3: 2, 7: 3, 4: 4, 1: 5}

ACL_USER_OBJ = 0x01
ACL_USER = 0x02
ACL_GROUP_OBJ = 0x04
ACL_GROUP = 0x08
ACL_MASK = 0x10
ACL_OTHER = 0x20
POSIX_ACL_XATTR_VERSION = 2
EXT4_ACL_VERSION = 1


def entry_len(name_len: int) -> int:
    """``EXT4_XATTR_LEN``: an entry with its name, padded to 4."""
    return (XATTR_ENTRY_SIZE + name_len + 3) & ~3


def value_len(size: int) -> int:
    """``EXT4_XATTR_SIZE``: a value padded to 4."""
    return (size + 3) & ~3


def split_name(full: bytes) -> tuple[int, bytes]:
    """(name_index, stored suffix) of a full xattr name such as ``b"user.mime_type"``."""
    idx = _EXACT.get(full)
    if idx is not None:
        return idx, b""
    for pfx, i in _PREFIXES:
        if full.startswith(pfx) and len(full) > len(pfx):
            return i, full[len(pfx) :]
    raise UsageError(
        f"xattr {full.decode(errors='replace')!r}: unsupported name (ext4 stores user., "
        "trusted., security., system. and the POSIX ACLs)"
    )


def full_name(index: int, name: bytes) -> bytes:
    """Inverse of :func:`split_name`."""
    return _INDEX_PREFIX[index] + name


def acl_vfs_to_ext4(value: bytes, what: str = "POSIX ACL") -> bytes:
    """Convert a POSIX ACL from the VFS xattr form (``getxattr``, version 2, 8-byte entries)
    to ext4's on-disk form (version 1; 4-byte entries for USER_OBJ, GROUP_OBJ, MASK, OTHER)."""
    n, rem = divmod(len(value) - 4, 8)
    if len(value) < 4 or rem:
        raise UsageError(f"{what}: {len(value)} bytes is not a VFS ACL (4 + 8*n bytes expected)")
    (ver,) = _U32.unpack_from(value, 0)
    if ver != POSIX_ACL_XATTR_VERSION:
        raise UsageError(f"{what}: ACL version {ver}, expected {POSIX_ACL_XATTR_VERSION}")
    out = bytearray(_U32.pack(EXT4_ACL_VERSION))
    for i in range(n):
        tag, perm, eid = struct.unpack_from("<HHI", value, 4 + 8 * i)
        if tag in (ACL_USER, ACL_GROUP):
            out += struct.pack("<HHI", tag, perm, eid)
        elif tag in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER):
            out += struct.pack("<HH", tag, perm)
        else:
            raise UsageError(f"{what}: entry {i} has unknown ACL tag {tag:#x}")
    return bytes(out)


def _is_vfs_acl(value: bytes) -> bool:
    return len(value) >= 4 and _U32.unpack_from(value, 0)[0] == POSIX_ACL_XATTR_VERSION


def entry_hash(name: bytes, value: bytes) -> int:
    """``ext4_xattr_hash_entry``: name bytes (unsigned), then the value as le32 words."""
    h = 0
    for c in name:
        h = ((h << 5) & _M) ^ (h >> 27) ^ c
    if value:
        padded = value + b"\0" * (value_len(len(value)) - len(value))
        for (w,) in struct.iter_unpack("<I", padded):
            h = ((h << 16) & _M) ^ (h >> 16) ^ w
    return h


def _block_hash(hashes: Iterable[int]) -> int:
    """``ext4_xattr_rehash``: 0 as soon as one entry hash is 0."""
    h = 0
    for eh in hashes:
        if eh == 0:
            return 0
        h = ((h << 16) & _M) ^ (h >> 16) ^ eh
    return h


@dataclass(frozen=True, order=True)
class BlockXattrs:
    """The attributes stored in an xattr block: ``(name_index, stored name, value)`` triples
    sorted by (index, name_len, name).  Hashable and comparable, so identical sets can share
    one block."""

    entries: tuple[tuple[int, bytes, bytes], ...]

    def size(self) -> int:
        """Bytes used after the 32-byte header: entries, 4-byte terminator, padded values."""
        return sum(entry_len(len(n)) + value_len(len(v)) for _i, n, v in self.entries) + 4


def _sort_key(e: tuple[int, bytes, bytes]) -> tuple[int, int, bytes]:
    return (e[0], len(e[1]), e[1])


def _canonical(xattrs: Iterable[tuple[bytes, bytes]]) -> list[tuple[int, bytes, bytes]]:
    out: list[tuple[int, bytes, bytes]] = []
    seen: set[tuple[int, bytes]] = set()
    for full, value in xattrs:
        idx, name = split_name(full)
        if len(name) > 255:
            raise UsageError(f"xattr {full.decode(errors='replace')!r}: name longer than 255 bytes")
        if idx in (2, 3) and _is_vfs_acl(value):
            value = acl_vfs_to_ext4(value, f"xattr {full.decode()}")
        if (idx, name) in seen:
            raise UsageError(f"xattr {full.decode(errors='replace')!r}: given twice")
        seen.add((idx, name))
        out.append((idx, name, bytes(value)))
    out.sort(key=_sort_key)
    return out


def _write_entries(
    buf: bytearray,
    entries_off: int,
    area_end: int,
    offs_base: int,
    entries: list[tuple[int, bytes, bytes]],
) -> list[int]:
    """Write entries from ``entries_off`` and values downward from ``area_end``.

    ``offs_base`` is the position that ``e_value_offs`` counts from.  Returns the e_hash list.
    """
    off = entries_off
    end = area_end
    hashes = []
    for idx, name, value in entries:
        vsz = len(value)
        if vsz:
            end -= value_len(vsz)
            buf[end : end + vsz] = value
            voff = end - offs_base
        else:
            voff = 0
        h = entry_hash(name, value)
        hashes.append(h)
        _ENTRY.pack_into(buf, off, len(name), idx, voff, 0, vsz, h)
        buf[off + 16 : off + 16 + len(name)] = name
        off += entry_len(len(name))
    if off + 4 > end:
        raise UsageError("xattrs overflow their area")  # callers check sizes first
    return hashes


def encode_xattrs(
    xattrs: Iterable[tuple[bytes, bytes]], inline_space: int, block_size: int = 4096
) -> tuple[bytes, BlockXattrs | None]:
    """Split a file's xattrs between the inode body and an xattr block (see
    :func:`_encode_xattrs`).  Results for a tuple of (bytes, bytes) pairs are cached: trees
    repeat the same sets (one SELinux label on thousands of files)."""
    if isinstance(xattrs, tuple):
        try:
            return _encode_cached(xattrs, inline_space, block_size)
        except TypeError:  # unhashable items (bytearray values): no cache
            pass
    return _encode_xattrs(xattrs, inline_space, block_size)


@functools.lru_cache(maxsize=16384)
def _encode_cached(
    xattrs: tuple[tuple[bytes, bytes], ...], inline_space: int, block_size: int
) -> tuple[bytes, BlockXattrs | None]:
    return _encode_xattrs(xattrs, inline_space, block_size)


def _encode_xattrs(
    xattrs: Iterable[tuple[bytes, bytes]], inline_space: int, block_size: int = 4096
) -> tuple[bytes, BlockXattrs | None]:
    """Split a file's xattrs between the inode body and an xattr block.

    ``xattrs`` are ``(full name, value)`` pairs (``b"user.x"``, ``b"security.selinux"``,
    ``b"system.posix_acl_access"``; ACL values in VFS form are converted).  ``inline_space``
    is the room after ``i_extra_isize`` (96 for 256-byte inodes with extra_isize 32), 4-byte
    magic included.  Attributes are taken security.* first, then the ACLs, system.*,
    trusted.*, user.* (within each, by name_len then name); each goes into the inode if it
    still fits there (first fit), else into the block, where entries are sorted by
    (index, name_len, name) as the kernel requires.  (mke2fs fills the inode in listxattr
    order; any split is valid, this one keeps the attributes the kernel reads on every
    access in the inode and does not depend on listing order.)

    Returns the bytes for the inode from ``0x80 + i_extra_isize`` (exactly ``inline_space``
    bytes, or ``b""`` when nothing is stored inline) and the block's content (or None).
    Raises :class:`UsageError` naming the attribute when it cannot fit even in a block.
    """
    ents = _canonical(xattrs)
    if not ents:
        return b"", None
    block_room = block_size - XATTR_HEADER_SIZE - 4
    inline: list[tuple[int, bytes, bytes]] = []
    rest: list[tuple[int, bytes, bytes]] = []
    used = 4 + 4  # magic + terminator
    for e in sorted(ents, key=lambda e: (_INLINE_PRIORITY[e[0]], _sort_key(e))):
        need = entry_len(len(e[1])) + value_len(len(e[2]))
        if need > block_room:
            raise UsageError(
                f"xattr {full_name(e[0], e[1]).decode(errors='replace')!r}: value of "
                f"{len(e[2])} bytes does not fit in one {block_size}-byte xattr block "
                f"(at most {block_room - entry_len(len(e[1]))} bytes; ea_inode is not enabled)"
            )
        if used + need <= inline_space:
            inline.append(e)
            used += need
        else:
            rest.append(e)
    rest.sort(key=_sort_key)
    blk = None
    if rest:
        blk = BlockXattrs(tuple(rest))
        if blk.size() > block_size - XATTR_HEADER_SIZE:
            names = ", ".join(full_name(i, n).decode(errors="replace") for i, n, _v in rest)
            raise UsageError(
                f"xattrs {names}: {blk.size()} bytes do not fit in one {block_size}-byte "
                f"xattr block (at most {block_size - XATTR_HEADER_SIZE}; ea_inode is not enabled)"
            )
    body = b""
    if inline:
        buf = bytearray(inline_space)
        _U32.pack_into(buf, 0, EXT4_XATTR_MAGIC)
        _write_entries(buf, 4, inline_space, 4, inline)
        body = bytes(buf)
    return body, blk


def build_xattr_block(
    b: BlockXattrs, block_nr: int, refcount: int, csum_seed: int, block_size: int
) -> bytes:
    """The xattr block for ``b`` at physical block ``block_nr`` shared by ``refcount`` inodes:
    header (``h_blocks`` 1, ``h_hash``), sorted entries, values at the end, metadata_csum."""
    bs = block_size
    if b.size() > bs - XATTR_HEADER_SIZE:
        raise UsageError(f"xattr block content of {b.size()} bytes exceeds the block")
    buf = bytearray(bs)
    hashes = _write_entries(buf, XATTR_HEADER_SIZE, bs, 0, list(b.entries))
    _HEADER.pack_into(buf, 0, EXT4_XATTR_MAGIC, refcount, 1, _block_hash(hashes), 0)
    c = crc32c_raw(crc32c_raw(csum_seed, _LE64.pack(block_nr)), buf)
    _U32.pack_into(buf, 0x10, c)
    return bytes(buf)
