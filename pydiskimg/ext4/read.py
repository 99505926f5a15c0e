"""A hostile-input-safe ext4 reader.

Reads the superblock, the group descriptors, inodes, extent trees and indirect maps,
directories (linear; htree directories are read through their leaves, which are ordinary dirent
blocks), extended attributes (in the inode and in a block), symlinks and device numbers.

Every malformation raises :class:`pydiskimg.errors.Ext4Error` (or :class:`ChecksumError`) with
one line naming the inode, block or field; nothing else escapes.  Work is bounded: every block
read and every record parsed is charged to a :class:`Budget` proportional to the filesystem's
size, extent trees have a depth limit and loop detection, the directory walk detects directory
loops, so a hostile image ends in an error, never a hang or a memory blow-up.

Field names are the kernel's (``fs/ext4/ext4.h``).
"""

from __future__ import annotations

import functools
import logging
import stat
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import construct as S  # noqa: N812  (the scalar classes)
import crcmod
import numpy as np

from ..errors import ChecksumError, Ext4Error
from . import structs as _structs

log = logging.getLogger(__name__)

EXT4_SUPER_MAGIC = 0xEF53
EXT4_EXT_MAGIC = 0xF30A
EXT4_XATTR_MAGIC = 0xEA020000
ROOT_INO = 2

# feature bits (ext4.h)
COMPAT_HAS_JOURNAL = 0x4
COMPAT_SPARSE_SUPER2 = 0x200
INCOMPAT_FILETYPE = 0x2
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_CSUM_SEED = 0x2000
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_HUGE_FILE = 0x8
RO_COMPAT_GDT_CSUM = 0x10
RO_COMPAT_BIGALLOC = 0x200
RO_COMPAT_METADATA_CSUM = 0x400

# inode flags
EXT4_HUGE_FILE_FL = 0x40000
EXT4_EXTENTS_FL = 0x80000
EXT4_EA_INODE_FL = 0x200000
EXT4_INLINE_DATA_FL = 0x10000000

FEATURE_NAMES: dict[str, dict[int, str]] = {
    "compat": {0x1: "dir_prealloc", 0x2: "imagic_inodes", 0x4: "has_journal", 0x8: "ext_attr",
               0x10: "resize_inode", 0x20: "dir_index", 0x40: "lazy_bg", 0x80: "exclude_inode",
               0x100: "exclude_bitmap", 0x200: "sparse_super2", 0x400: "fast_commit",
               0x800: "stable_inodes", 0x1000: "orphan_file"},
    "incompat": {0x1: "compression", 0x2: "filetype", 0x4: "needs_recovery",
                 0x8: "journal_dev", 0x10: "meta_bg", 0x40: "extent", 0x80: "64bit",
                 0x100: "mmp", 0x200: "flex_bg", 0x400: "ea_inode", 0x1000: "dirdata",
                 0x2000: "metadata_csum_seed", 0x4000: "large_dir", 0x8000: "inline_data",
                 0x10000: "encrypt", 0x20000: "casefold"},
    "ro_compat": {0x1: "sparse_super", 0x2: "large_file", 0x4: "btree_dir", 0x8: "huge_file",
                  0x10: "uninit_bg", 0x20: "dir_nlink", 0x40: "extra_isize",
                  0x80: "has_snapshot", 0x100: "quota", 0x200: "bigalloc",
                  0x400: "metadata_csum", 0x800: "replica", 0x1000: "read-only",
                  0x2000: "project", 0x4000: "shared_blocks", 0x8000: "verity",
                  0x10000: "orphan_present"},
}

XATTR_PREFIXES = {1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default",
                  4: "trusted.", 6: "security.", 7: "system.", 8: "system.richacl"}

# -- record layouts -----------------------------------------------------------------------
# Every structure is declared once, in :mod:`pydiskimg.ext4.structs` (construct, used by the
# writer).  For reading hostile images field by field, each declaration is turned here into a
# ``struct`` format and a (name, offset, size) table; arrays are kept as raw bytes.  The audit
# code also maps a byte offset back to a field name with these tables (:func:`field_at`).
def _fields_of(decl: Any) -> list[tuple[str, str]]:
    """(name, struct code) of each field of a construct declaration, in order."""
    out = []
    for sc in decl.subcons:
        sub = sc.subcon
        code = _CODES.get(sub)
        if code is None:
            code = f"{sc.sizeof()}s"  # Bytes(n), Array(n, ...): raw bytes
        out.append((sc.name, code))
    return out


def _layout(fields: list[tuple[str, str]]) -> tuple[struct.Struct, list[tuple[str, int, int]]]:
    fmt = "<" + "".join(f for _, f in fields)
    offs = []
    off = 0
    for name, f in fields:
        n = struct.calcsize("<" + f)
        offs.append((name, off, n))
        off += n
    return struct.Struct(fmt), offs


_CODES = {S.Int8ul: "B", S.Int16ul: "H", S.Int16sl: "h", S.Int32ul: "I", S.Int64ul: "Q"}
SUPERBLOCK_FIELDS = _fields_of(_structs.ext4_super_block)
GROUP_DESC_FIELDS = _fields_of(_structs.ext4_group_desc)
#: the inode's fixed fields (the in-inode xattr area that follows is parsed separately)
INODE_FIELDS = [f for f in _fields_of(_structs.ext4_inode) if f[0] != "i_xattr"]
_SB, SUPERBLOCK_LAYOUT = _layout(SUPERBLOCK_FIELDS)
_GD, GROUP_DESC_LAYOUT = _layout(GROUP_DESC_FIELDS)
_INO, INODE_LAYOUT = _layout(INODE_FIELDS)
_INODE_NAMES = [n for n, _ in INODE_FIELDS]


@functools.cache
def _absent_fields(extra_isize: int) -> tuple[str, ...]:
    """Inode fields past ``128 + i_extra_isize``: not present in such an inode."""
    have = 128 + extra_isize
    return tuple(name for name, off, n in INODE_LAYOUT if off >= 0x82 and off + n > have)

assert _SB.size == 1024 and _GD.size == 64 and _INO.size == 160

# jbd2 superblock (big-endian), the fields we report
_JSB = struct.Struct(">III" "IIIII" "i" "III" "16s" "I")


def field_at(layout: list[tuple[str, int, int]], offset: int) -> str:
    """The name of the field of ``layout`` covering byte ``offset`` (with ``[i]`` in arrays)."""
    for name, off, n in layout:
        if off <= offset < off + n:
            return name if n <= 8 else f"{name}+{offset - off}"
    return f"byte {offset}"


_crc32c_raw = crcmod.mkCrcFun(0x11EDC6F41, initCrc=0, rev=True, xorOut=0)


def csum(seed: int, data: bytes) -> int:
    """ext4's crc32c: the raw register, seeded by ``seed``, no final xor."""
    return _crc32c_raw(data, seed)


class Source(Protocol):
    """What the reader needs from an image: random-access reads."""

    def read(self, offset: int, length: int) -> bytes: ...


class Budget:
    """A bound on the work a reader may do: each unit is a block read or a record parsed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def charge(self, n: int, what: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise Ext4Error(
                f"work budget of {self.limit} units exhausted while reading {what}: "
                "the filesystem references far more data than it holds (shared or looping blocks?)"
            )


def decode_time(lo: int, extra: int | None) -> int:
    """Seconds and nanoseconds of an inode time as integer nanoseconds since the epoch."""
    sec = lo - (1 << 32) if lo & 0x80000000 else lo
    ns = 0
    if extra is not None:
        sec += (extra & 3) << 32
        ns = extra >> 2
        if ns >= 1_000_000_000:
            ns = 999_999_999
    return sec * 1_000_000_000 + ns


@dataclass
class Inode:
    """One parsed inode: the raw bytes and the kernel-named fields, plus derived values."""

    ino: int
    raw: bytes
    f: dict[str, Any]
    extra: bool  # has the fields past the 128-byte base

    @property
    def mode(self) -> int:
        return int(self.f["i_mode"])

    @functools.cached_property
    def kind(self) -> str:
        return _KIND.get(stat.S_IFMT(self.mode), "unknown")

    @property
    def size(self) -> int:
        return int(self.f["i_size_lo"]) | (int(self.f["i_size_high"]) << 32)

    @property
    def uid(self) -> int:
        return int(self.f["i_uid"]) | (int(self.f["l_i_uid_high"]) << 16)

    @property
    def gid(self) -> int:
        return int(self.f["i_gid"]) | (int(self.f["l_i_gid_high"]) << 16)

    @property
    def flags(self) -> int:
        return int(self.f["i_flags"])

    @property
    def links(self) -> int:
        return int(self.f["i_links_count"])

    @property
    def file_acl(self) -> int:
        return int(self.f["i_file_acl_lo"]) | (int(self.f["l_i_file_acl_high"]) << 32)

    def time_ns(self, which: str) -> int | None:
        """``atime``/``mtime``/``ctime``/``crtime`` as ns since the epoch (crtime may be None)."""
        if which == "crtime" and not (self.extra and "i_crtime" in self.f):
            return None
        extra = self.f.get(f"i_{which}_extra") if self.extra else None
        return decode_time(int(self.f[f"i_{which}"]), extra)

    @property
    def is_zero(self) -> bool:
        return not any(self.raw)


_KIND = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFCHR: "chr", stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock"}


@dataclass(frozen=True)
class Extent:
    """A mapped run: logical block, physical block, length, uninitialized (reads as zeros)."""

    lblk: int
    pblk: int
    length: int
    uninit: bool = False


@dataclass
class BlockMap:
    """Where an inode's data is: ``extents`` and the tree/indirect blocks (``meta``)."""

    extents: list[Extent] = field(default_factory=list)
    meta: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class DirEntry:
    name: bytes
    ino: int
    file_type: int


class Ext4:
    """An ext4 (or ext2/ext3) filesystem at ``offset`` of ``src``, ``size`` bytes long.

    ``verify``: check metadata checksums (superblock, group descriptors, inodes, extent and
    directory blocks) and raise :class:`ChecksumError` on a mismatch.
    """

    MAX_DEPTH = 5  # extent tree depth (the kernel allows 5)
    INODE_CACHE = 1 << 16  # parsed inodes kept (about 1 KiB each)
    MAX_PATH_DEPTH = 4096

    def __init__(self, src: Source, offset: int = 0, size: int | None = None, *,
                 verify: bool = True, budget: Budget | None = None, name: str = "ext4") -> None:
        self.src = src
        self.offset = offset
        self.name = name
        src_size = getattr(src, "size", None)
        if size is None and isinstance(src_size, int):
            size = max(0, src_size - offset)
        self.verify = verify
        raw = src.read(offset + 1024, 1024)
        if len(raw) < 1024:
            raise Ext4Error(f"{name}: truncated: no room for a superblock at byte 1024")
        sb = dict(zip((n for n, _ in SUPERBLOCK_FIELDS), _SB.unpack(raw), strict=True))
        if sb["s_magic"] != EXT4_SUPER_MAGIC:
            raise Ext4Error(f"{name}: bad superblock magic {sb['s_magic']:#06x}, expected 0xef53")
        self.sb = sb
        self.sb_raw = raw
        self.incompat = sb["s_feature_incompat"]
        self.ro_compat = sb["s_feature_ro_compat"]
        self.compat = sb["s_feature_compat"]
        self.metadata_csum = bool(self.ro_compat & RO_COMPAT_METADATA_CSUM)
        if self.incompat & INCOMPAT_JOURNAL_DEV:
            raise Ext4Error(f"{name}: an external journal device (feature journal_dev): it holds no files")
        if self.metadata_csum and verify:
            want = csum(0xFFFFFFFF, raw[:0x3FC])
            if want != sb["s_checksum"]:
                raise ChecksumError(f"{name}: superblock s_checksum", want, sb["s_checksum"])
        if sb["s_log_block_size"] > 6:
            raise Ext4Error(f"{name}: s_log_block_size {sb['s_log_block_size']} is out of range (0..6)")
        self.block_size = bs = 1024 << sb["s_log_block_size"]
        self.is64 = bool(self.incompat & INCOMPAT_64BIT)
        self.blocks_count = sb["s_blocks_count_lo"] | (
            (sb["s_blocks_count_hi"] << 32) if self.is64 else 0)
        if size is not None and self.blocks_count * bs > size:
            raise Ext4Error(
                f"{name}: s_blocks_count {self.blocks_count} x {bs} bytes exceeds the "
                f"{size} bytes available")
        self.size = self.blocks_count * bs
        self.first_data_block = sb["s_first_data_block"]
        self.bpg = sb["s_blocks_per_group"]
        self.ipg = sb["s_inodes_per_group"]
        #: blocks per allocation unit: 1, or the cluster ratio with bigalloc (bitmaps count clusters)
        self.cluster_ratio = 1
        if self.ro_compat & RO_COMPAT_BIGALLOC:
            lc, lb = sb["s_log_cluster_size"], sb["s_log_block_size"]
            if not lb <= lc <= lb + 16:
                raise Ext4Error(f"{name}: s_log_cluster_size {lc} is out of range ({lb}..{lb + 16})")
            self.cluster_ratio = 1 << (lc - lb)
            cpg = sb["s_clusters_per_group"]
            if not (8 <= cpg <= 8 * bs) or self.bpg != cpg * self.cluster_ratio:
                raise Ext4Error(
                    f"{name}: s_clusters_per_group {cpg} (s_blocks_per_group {self.bpg}) is out of "
                    f"range: expected 8..{8 * bs} clusters of {self.cluster_ratio} blocks")
        elif not 8 <= self.bpg <= 8 * bs:
            raise Ext4Error(f"{name}: s_blocks_per_group {self.bpg} is out of range (8..{8 * bs})")
        if self.first_data_block >= max(self.blocks_count, 1):
            raise Ext4Error(
                f"{name}: s_first_data_block {self.first_data_block} lies past s_blocks_count "
                f"{self.blocks_count}")
        if not (1 <= self.ipg <= 8 * bs):
            raise Ext4Error(f"{name}: s_inodes_per_group {self.ipg} is out of range (1..{8 * bs})")
        self.groups = -(-(self.blocks_count - self.first_data_block) // self.bpg)
        if self.groups < 1:
            raise Ext4Error(f"{name}: no block groups (s_blocks_count {self.blocks_count})")
        if sb["s_inodes_count"] != self.groups * self.ipg:
            raise Ext4Error(
                f"{name}: s_inodes_count {sb['s_inodes_count']} is not groups x "
                f"s_inodes_per_group = {self.groups * self.ipg}")
        self.inodes_count = sb["s_inodes_count"]
        self.inode_size = 128 if sb["s_rev_level"] == 0 else sb["s_inode_size"]
        if (self.inode_size < 128 or self.inode_size > bs
                or self.inode_size & (self.inode_size - 1)):
            raise Ext4Error(f"{name}: s_inode_size {self.inode_size} is not a power of 2 in 128..{bs}")
        self.desc_size = sb["s_desc_size"] if self.is64 else 32
        if self.is64 and (self.desc_size < 32 or self.desc_size > 1024
                          or self.desc_size & (self.desc_size - 1)):
            raise Ext4Error(f"{name}: s_desc_size {self.desc_size} is not a power of 2 in 32..1024")
        if self.incompat & INCOMPAT_CSUM_SEED:
            self.csum_seed = sb["s_checksum_seed"]
        else:
            self.csum_seed = csum(0xFFFFFFFF, sb["s_uuid"])
        itable_blocks = -(-self.ipg * self.inode_size // bs)
        self.budget = budget or Budget(
            64 * (self.blocks_count + self.inodes_count) + itable_blocks * self.groups + 1_000_000)
        # the descriptors follow the superblock's block: with 1 KiB blocks and bigalloc,
        # s_first_data_block is 0 but the superblock is in block 1 (as libext2fs reads it)
        sb_block = self.first_data_block or (1 if bs == 1024 else 0)
        self.gdt_block = sb_block + 1
        #: descriptor blocks in all, and how many of them follow the superblock (the rest, with
        #: meta_bg, sit in the first groups of each meta group)
        self.desc_blocks = -(-self.groups * self.desc_size // bs)
        self.gdt_blocks = self.desc_blocks
        self.meta_bg = bool(self.incompat & INCOMPAT_META_BG)
        if self.meta_bg:
            # libext2fs refuses s_first_meta_bg past the descriptor blocks (e2fsck clears it)
            if sb["s_first_meta_bg"] > self.desc_blocks:
                raise Ext4Error(
                    f"{name}: s_first_meta_bg {sb['s_first_meta_bg']} exceeds the "
                    f"{self.desc_blocks} group descriptor blocks")
            self.gdt_blocks = sb["s_first_meta_bg"]
        self._desc_block_cache: dict[int, bytes] = {}
        self._inode_cache: dict[int, Inode] = {}
        self.gd = GroupDescriptors(self)
        # a filesystem of ordinary size has every descriptor checked now; beyond, on use
        for g in range(min(self.groups, GroupDescriptors.CACHE)):
            self.gd[g]

    # -- low level ----------------------------------------------------------------------------
    def _read_blocks(self, blk: int, count: int, what: str) -> bytes:
        if blk < 0 or count < 0 or blk + count > self.blocks_count:
            raise Ext4Error(
                f"{self.name}: {what}: blocks {blk}..{blk + count - 1} lie outside the "
                f"filesystem's {self.blocks_count} blocks")
        if hasattr(self, "budget"):
            self.budget.charge(count, what)
        bs = self.block_size
        data = self.src.read(self.offset + blk * bs, count * bs)
        if len(data) < count * bs:
            raise Ext4Error(f"{self.name}: {what}: block {blk} lies past the end of the image (truncated?)")
        return data

    def read_block(self, blk: int, what: str) -> bytes:
        return self._read_blocks(blk, 1, what)

    def has_super(self, g: int) -> bool:
        """Whether group ``g`` holds a superblock copy (sparse_super, sparse_super2)."""
        if g <= 1:
            return g == 0 or not self.compat & COMPAT_SPARSE_SUPER2 or g in self._backup_bgs()
        if self.compat & COMPAT_SPARSE_SUPER2:
            return g in self._backup_bgs()
        if not self.ro_compat & RO_COMPAT_SPARSE_SUPER:
            return True
        for p in (3, 5, 7):
            x = p
            while x < g:
                x *= p
            if x == g:
                return True
        return False

    def _backup_bgs(self) -> tuple[int, int]:
        bgs = self.sb["s_backup_bgs"]
        return int.from_bytes(bgs[0:4], "little"), int.from_bytes(bgs[4:8], "little")

    def desc_block(self, g: int) -> int:
        """The block holding group ``g``'s descriptor (libext2fs' descriptor_block_loc)."""
        i = g * self.desc_size // self.block_size
        if not self.meta_bg or i < self.gdt_blocks:
            return self.gdt_block + i
        first = i * (self.block_size // self.desc_size)  # first group of its meta group
        blk = self.first_data_block + first * self.bpg
        if blk == 0 and self.block_size == 1024:
            blk = 1
        return blk + (1 if self.has_super(first) else 0)

    def group_desc_raw(self, g: int) -> bytes:
        """Group ``g``'s descriptor, ``desc_size`` bytes."""
        if not 0 <= g < self.groups:
            raise Ext4Error(f"{self.name}: group {g} does not exist (0..{self.groups - 1})")
        blk = self.desc_block(g)
        data = self._desc_block_cache.get(blk)
        if data is None:
            data = self.read_block(blk, f"group {g} descriptor block {blk}")
            if len(self._desc_block_cache) >= 4096:
                self._desc_block_cache.clear()
            self._desc_block_cache[blk] = data
        off = g * self.desc_size % self.block_size
        return data[off:off + self.desc_size]

    def _parse_gd(self, g: int) -> dict[str, int]:
        ds = self.desc_size
        raw = self.group_desc_raw(g)
        buf = raw[:64] if ds >= 64 else raw + bytes(64 - len(raw))
        d = dict(zip((n for n, _ in GROUP_DESC_FIELDS), _GD.unpack(buf), strict=True))
        if self.verify and self.metadata_csum:
            data = bytearray(raw)
            data[0x1E:0x20] = b"\0\0"
            want = csum(self.csum_seed, struct.pack("<I", g) + bytes(data)) & 0xFFFF
            if want != d["bg_checksum"]:
                raise ChecksumError(f"{self.name}: group {g} descriptor bg_checksum", want, d["bg_checksum"])
        hi = ds >= 64
        d["block_bitmap"] = d["bg_block_bitmap_lo"] | ((d["bg_block_bitmap_hi"] << 32) if hi else 0)
        d["inode_bitmap"] = d["bg_inode_bitmap_lo"] | ((d["bg_inode_bitmap_hi"] << 32) if hi else 0)
        d["inode_table"] = d["bg_inode_table_lo"] | ((d["bg_inode_table_hi"] << 32) if hi else 0)
        itb = -(-self.ipg * self.inode_size // self.block_size)
        for key, n in (("block_bitmap", 1), ("inode_bitmap", 1), ("inode_table", itb)):
            if d[key] + n > self.blocks_count or d[key] < self.first_data_block:
                raise Ext4Error(
                    f"{self.name}: group {g} descriptor: {key} at block {d[key]} (+{n}) lies "
                    f"outside the filesystem's {self.blocks_count} blocks")
        return d


    # -- inodes --------------------------------------------------------------------------------
    def inode_location(self, ino: int) -> int:
        """Byte offset (within the filesystem) of inode ``ino``."""
        if not 1 <= ino <= self.inodes_count:
            raise Ext4Error(f"{self.name}: inode number {ino} is out of range (1..{self.inodes_count})")
        g, i = divmod(ino - 1, self.ipg)
        return self.gd[g]["inode_table"] * self.block_size + i * self.inode_size

    def inode(self, ino: int) -> Inode:
        """Parse inode ``ino``."""
        cached = self._inode_cache.get(ino)
        if cached is not None:
            return cached
        loc = self.inode_location(ino)
        self.budget.charge(1, f"inode {ino}")
        raw = self.src.read(self.offset + loc, self.inode_size)
        if len(raw) < self.inode_size:
            raise Ext4Error(f"{self.name}: inode {ino} lies past the end of the image (truncated?)")
        inode = self._parse_inode(ino, raw)
        if len(self._inode_cache) < self.INODE_CACHE:
            self._inode_cache[ino] = inode
        return inode

    def _parse_inode(self, ino: int, raw: bytes) -> Inode:
        extra_isize = 0
        if self.inode_size > 128:
            extra_isize = int.from_bytes(raw[0x80:0x82], "little")
            if extra_isize & 3 or 128 + extra_isize > self.inode_size:
                raise Ext4Error(
                    f"{self.name}: inode {ino}: i_extra_isize {extra_isize} is not a multiple of "
                    f"4 fitting in {self.inode_size - 128} bytes")
        buf = raw[:160] if len(raw) >= 160 else raw + bytes(160 - len(raw))
        f = dict(zip(_INODE_NAMES, _INO.unpack(buf), strict=True))
        # fields past i_extra_isize do not exist in this inode
        for name in _absent_fields(extra_isize):
            del f[name]
        inode = Inode(ino, raw, f, extra=extra_isize >= 4)
        if self.verify and self.metadata_csum and any(raw):
            data = bytearray(raw)
            data[0x7C:0x7E] = b"\0\0"
            if extra_isize >= 4:
                data[0x82:0x84] = b"\0\0"
            c = csum(self.csum_seed, struct.pack("<I", ino))
            c = csum(c, raw[0x64:0x68])
            c = csum(c, bytes(data))
            found = f["l_i_checksum_lo"]
            if extra_isize >= 4:
                found |= f["i_checksum_hi"] << 16
            else:
                c &= 0xFFFF
            if c != found:
                raise ChecksumError(f"{self.name}: inode {ino} checksum", c, found)
        return inode

    def inode_table_array(self, g: int) -> np.ndarray:
        """Group ``g``'s inode table as a (ipg, inode_size) uint8 array."""
        itb = -(-self.ipg * self.inode_size // self.block_size)
        data = self._read_blocks(self.gd[g]["inode_table"], itb, f"group {g} inode table")
        return np.frombuffer(data, dtype=np.uint8)[: self.ipg * self.inode_size].reshape(
            self.ipg, self.inode_size)

    def bitmap(self, g: int, which: str) -> bytes:
        """Group ``g``'s ``"block"`` or ``"inode"`` bitmap block."""
        return self.read_block(self.gd[g][f"{which}_bitmap"], f"group {g} {which} bitmap")

    # -- block maps ----------------------------------------------------------------------------
    def block_map(self, inode: Inode) -> BlockMap:
        """The extents (or indirect map) of ``inode``, validated and bounded."""
        bm = BlockMap()
        if inode.flags & EXT4_INLINE_DATA_FL or self._is_fast_symlink(inode):
            return bm
        if inode.kind in ("chr", "blk", "fifo", "sock"):
            return bm
        nblocks = -(-inode.size // self.block_size)
        if inode.flags & EXT4_EXTENTS_FL:
            self._walk_extents(inode, inode.f["i_block"], 0, set(), bm, None)
            last = -1
            for e in bm.extents:
                if e.lblk <= last:
                    raise Ext4Error(f"{self.name}: inode {inode.ino}: extents overlap or are unsorted at logical block {e.lblk}")
                last = e.lblk + e.length - 1
        else:
            self._walk_indirect(inode, nblocks, bm)
        return bm

    def _walk_extents(self, inode: Inode, node: bytes, depth_seen: int, seen: set[int],
                      bm: BlockMap, expect_depth: int | None) -> None:
        ino = inode.ino
        if len(node) < 12:
            raise Ext4Error(f"{self.name}: inode {ino}: extent node too short")
        magic, entries, emax, depth, _gen = struct.unpack_from("<HHHHI", node, 0)
        if magic != EXT4_EXT_MAGIC:
            raise Ext4Error(f"{self.name}: inode {ino}: bad extent header magic {magic:#06x}, expected 0xf30a")
        if depth > self.MAX_DEPTH or (expect_depth is not None and depth != expect_depth):
            raise Ext4Error(f"{self.name}: inode {ino}: extent tree depth {depth} is invalid")
        if entries > emax or 12 + 12 * emax > len(node):
            raise Ext4Error(
                f"{self.name}: inode {ino}: extent node has {entries} entries, max {emax}, in {len(node)} bytes")
        self.budget.charge(entries, f"inode {ino} extents")
        for k in range(entries):
            off = 12 + 12 * k
            if depth == 0:
                lblk, ln, hi, lo = struct.unpack_from("<IHHI", node, off)
                uninit = ln > 32768
                if uninit:
                    ln -= 32768
                pblk = lo | (hi << 32)
                if ln == 0 or pblk + ln > self.blocks_count or pblk < self.first_data_block:
                    raise Ext4Error(
                        f"{self.name}: inode {ino}: extent {lblk}+{ln} -> block {pblk} lies "
                        f"outside the filesystem's {self.blocks_count} blocks")
                if lblk + ln > 1 << 32:
                    raise Ext4Error(f"{self.name}: inode {ino}: extent logical block {lblk}+{ln} overflows")
                bm.extents.append(Extent(lblk, pblk, ln, uninit))
            else:
                _lblk, lo, hi = struct.unpack_from("<IIH", node, off)
                child = lo | (hi << 32)
                if child in seen:
                    raise Ext4Error(f"{self.name}: inode {ino}: extent tree loop at block {child}")
                seen.add(child)
                bm.meta.append(child)
                blk = self.read_block(child, f"inode {ino} extent tree block {child}")
                if self.verify and self.metadata_csum:
                    self._check_extent_block(inode, child, blk)
                self._walk_extents(inode, blk, depth_seen + 1, seen, bm, depth - 1)

    def _check_extent_block(self, inode: Inode, blk_nr: int, blk: bytes) -> None:
        emax = struct.unpack_from("<H", blk, 4)[0]
        end = 12 + 12 * emax
        if end + 4 > len(blk):
            raise Ext4Error(f"{self.name}: inode {inode.ino}: extent block {blk_nr}: eh_max {emax} too large")
        c = self._inode_seed(inode)
        want = csum(c, blk[:end])
        found = struct.unpack_from("<I", blk, end)[0]
        if want != found:
            raise ChecksumError(f"{self.name}: inode {inode.ino} extent block {blk_nr}", want, found)

    def _inode_seed(self, inode: Inode) -> int:
        c = csum(self.csum_seed, struct.pack("<I", inode.ino))
        return csum(c, inode.raw[0x64:0x68])

    def _walk_indirect(self, inode: Inode, nblocks: int, bm: BlockMap) -> None:
        ino = inode.ino
        apb = self.block_size // 4
        ptrs = struct.unpack_from("<15I", inode.f["i_block"])
        if nblocks <= 12:  # direct pointers only (most folders and small files): no closures
            out: list[Extent] = []
            start = length = 0
            for k in range(nblocks):
                p = ptrs[k]
                if not p:
                    continue
                if p >= self.blocks_count or p < self.first_data_block:
                    raise Ext4Error(f"{self.name}: inode {ino}: block pointer {p} at logical block {k} is outside the filesystem")
                if length and out[-1].lblk + length == k and start + length == p:
                    length += 1
                    out[-1] = Extent(out[-1].lblk, start, length)
                else:
                    start, length = p, 1
                    out.append(Extent(k, p, 1))
            bm.extents = out
            return
        seen: set[int] = set()
        runs: list[list[int]] = []

        def add(lblk: int, pblk: int) -> None:
            if pblk >= self.blocks_count or pblk < self.first_data_block:
                raise Ext4Error(f"{self.name}: inode {ino}: block pointer {pblk} at logical block {lblk} is outside the filesystem")
            if runs and runs[-1][0] + runs[-1][2] == lblk and runs[-1][1] + runs[-1][2] == pblk:
                runs[-1][2] += 1
            else:
                runs.append([lblk, pblk, 1])

        def walk(blk: int, level: int, base: int) -> None:
            if blk in seen:
                raise Ext4Error(f"{self.name}: inode {ino}: indirect block {blk} referenced twice")
            seen.add(blk)
            bm.meta.append(blk)
            data = self.read_block(blk, f"inode {ino} indirect block {blk}")
            vals = np.frombuffer(data, dtype="<u4")
            span = apb ** level
            self.budget.charge(int(np.count_nonzero(vals)), f"inode {ino} block map")
            for k in np.nonzero(vals)[0]:
                lb = base + int(k) * span
                if lb >= nblocks:
                    break
                if level == 0:
                    add(lb, int(vals[k]))
                else:
                    walk(int(vals[k]), level - 1, lb)

        for k in range(12):
            if k < nblocks and ptrs[k]:
                add(k, ptrs[k])
        base = 12
        for level, p in enumerate(ptrs[12:15]):
            if p and base < nblocks:
                if p >= self.blocks_count:
                    raise Ext4Error(f"{self.name}: inode {ino}: indirect pointer {p} is outside the filesystem")
                walk(p, level, base)
            base += apb ** (level + 1)
        bm.extents = [Extent(a, b, c) for a, b, c in runs]

    def _is_fast_symlink(self, inode: Inode) -> bool:
        if inode.kind != "symlink":
            return False
        if inode.flags & EXT4_EXTENTS_FL and inode.size >= 60:
            return False
        # the xattr block is charged as a whole cluster (bigalloc), as the kernel counts it
        blocks = int(inode.f["i_blocks_lo"]) - (
            (self.block_size * self.cluster_ratio >> 9) if inode.file_acl else 0)
        return blocks <= 0 and inode.size < 60

    # -- data ----------------------------------------------------------------------------------
    def iter_data(self, inode: Inode, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The contents of ``inode`` (regular file, directory or slow symlink), in chunks."""
        size = inode.size
        if inode.flags & EXT4_INLINE_DATA_FL:
            yield self._inline_data(inode)[:size]
            return
        if self._is_fast_symlink(inode):
            yield inode.f["i_block"][:size]
            return
        bm = self.block_map(inode)
        bs = self.block_size
        pos = 0
        for e in bm.extents:
            start = e.lblk * bs
            if start >= size:
                break
            if start > pos:
                yield from _zeros(start - pos, chunk, self.budget, bs, f"inode {inode.ino} hole")
                pos = start
            end = min(size, (e.lblk + e.length) * bs)
            blk = e.pblk
            while pos < end:
                nb = min(-(-(end - pos) // bs), max(1, chunk // bs))
                n = min(nb * bs, end - pos)
                if e.uninit:
                    self.budget.charge(nb, f"inode {inode.ino} data")
                    yield bytes(n)
                else:
                    yield self._read_blocks(blk, nb, f"inode {inode.ino} data")[:n]
                blk += nb
                pos += n
        if pos < size:
            yield from _zeros(size - pos, chunk, self.budget, bs, f"inode {inode.ino} hole")

    def read_data(self, inode: Inode, limit: int = 1 << 26) -> bytes:
        """The whole content of a small object (directory, symlink): at most ``limit`` bytes."""
        if inode.size > limit:
            raise Ext4Error(f"{self.name}: inode {inode.ino}: size {inode.size} exceeds the {limit}-byte limit")
        return b"".join(self.iter_data(inode))

    def _inline_data(self, inode: Inode) -> bytes:
        data = inode.f["i_block"]
        extra = self.xattrs(inode).get("system.data", b"")
        return data + extra

    # -- directories ---------------------------------------------------------------------------
    def dir_entries(self, inode: Inode) -> list[DirEntry]:
        """The live entries of directory ``inode`` (``.`` and ``..`` included), in disk order."""
        if inode.kind != "dir":
            raise Ext4Error(f"{self.name}: inode {inode.ino} is not a directory")
        out: list[DirEntry] = []
        bs = self.block_size
        if inode.flags & EXT4_INLINE_DATA_FL:
            data = self._inline_data(inode)
            # inline dirs: 4-byte parent inode, then dirents
            if len(data) < 4:
                return out
            out.append(DirEntry(b"..", int.from_bytes(data[:4], "little"), 2))
            self._parse_dirents(inode, data[4:], 0, out, len(data) - 4)
            return out
        if inode.size % bs:
            raise Ext4Error(f"{self.name}: directory inode {inode.ino}: i_size {inode.size} is not a multiple of the block size {bs}")
        if inode.size > self.size:
            raise Ext4Error(f"{self.name}: directory inode {inode.ino}: i_size {inode.size} exceeds the filesystem's {self.size} bytes")
        lblk = 0
        for chunk in self.iter_data(inode, chunk=bs * 64):
            for k in range(0, len(chunk), bs):
                blk = chunk[k:k + bs]
                if self.verify and self.metadata_csum:
                    self._check_dir_block(inode, lblk, blk)
                self._parse_dirents(inode, blk, lblk, out, bs)
                lblk += 1
        return out

    def _check_dir_block(self, inode: Inode, lblk: int, blk: bytes) -> None:
        """Verify a leaf block's checksum tail (htree index blocks carry another tail: skipped)."""
        bs = len(blk)
        ino, rec_len, name_len, ftype = struct.unpack_from("<IHBB", blk, bs - 12)
        if (ino, rec_len, name_len, ftype) != (0, 12, 0, 0xDE):
            return
        want = csum(self._inode_seed(inode), blk[:bs - 12])
        found = struct.unpack_from("<I", blk, bs - 4)[0]
        if want != found:
            raise ChecksumError(f"{self.name}: directory inode {inode.ino} block {lblk}", want, found)

    def _parse_dirents(self, inode: Inode, blk: bytes, lblk: int, out: list[DirEntry],
                       bs: int) -> None:
        pos = 0
        n = len(blk)
        ft_ok = bool(self.incompat & INCOMPAT_FILETYPE)
        while pos + 8 <= n:
            ino, rec_len, name_len, ftype = struct.unpack_from("<IHBB", blk, pos)
            if not ft_ok:
                name_len |= ftype << 8
                ftype = 0
            if bs >= 65536 and rec_len in (0, 65535):
                rec_len = 65536
            if rec_len < 8 or rec_len % 4 or pos + rec_len > n or (ino and 8 + name_len > rec_len):
                raise Ext4Error(
                    f"{self.name}: directory inode {inode.ino} block {lblk}: bad entry at byte "
                    f"{pos}: rec_len {rec_len}, name_len {name_len}")
            self.budget.charge(1, f"directory inode {inode.ino}")
            if ino:
                if ino > self.inodes_count:
                    raise Ext4Error(
                        f"{self.name}: directory inode {inode.ino} block {lblk}: entry names inode "
                        f"{ino}, beyond s_inodes_count {self.inodes_count}")
                out.append(DirEntry(bytes(blk[pos + 8:pos + 8 + name_len]), ino, ftype))
            pos += rec_len

    def lookup(self, path: str | bytes) -> int:
        """Inode number of an absolute ``path``."""
        if isinstance(path, str):
            path = path.encode("utf-8", "surrogateescape")
        ino = ROOT_INO
        for part in path.strip(b"/").split(b"/"):
            if not part:
                continue
            for e in self.dir_entries(self.inode(ino)):
                if e.name == part:
                    ino = e.ino
                    break
            else:
                raise Ext4Error(f"{self.name}: {path.decode('utf-8', 'replace')}: no such file")
        return ino

    def walk(self) -> Iterator[tuple[bytes, int]]:
        """Yield ``(path, inode number)`` for every reachable object, root (``b"/"``) first.

        Depth first, children in name order.  A directory reached twice (a loop or a hard link
        to a directory) is an error.
        """
        yield b"/", ROOT_INO
        seen_dirs = {ROOT_INO}
        stack: list[tuple[bytes, int, int]] = [(b"", ROOT_INO, 0)]
        while stack:
            prefix, ino, depth = stack.pop()
            if depth > self.MAX_PATH_DEPTH:
                raise Ext4Error(f"{self.name}: directory tree deeper than {self.MAX_PATH_DEPTH} at {prefix!r}")
            inode = self.inode(ino)
            if inode.kind != "dir":
                raise Ext4Error(f"{self.name}: inode {ino} ({_show(prefix or b'/')}) is listed as a directory but has mode {inode.mode:#o}")
            entries = sorted((e for e in self.dir_entries(inode) if e.name not in (b".", b"..")),
                             key=lambda e: e.name)
            subdirs = []
            for e in entries:
                if b"/" in e.name or b"\0" in e.name:
                    raise Ext4Error(f"{self.name}: directory inode {ino}: entry name {e.name!r} contains '/' or NUL")
                path = prefix + b"/" + e.name
                yield path, e.ino
                child = self.inode(e.ino)
                if child.kind == "dir":
                    if e.ino in seen_dirs:
                        raise Ext4Error(f"{self.name}: directory loop: inode {e.ino} is reached again at {_show(path)}")
                    seen_dirs.add(e.ino)
                    subdirs.append((path, e.ino, depth + 1))
            stack.extend(reversed(subdirs))

    # -- xattrs, links, devices ----------------------------------------------------------------
    def xattrs(self, inode: Inode) -> dict[str, bytes]:
        """Extended attributes of ``inode``, full names, in the inode and in its xattr block."""
        out: dict[str, bytes] = {}
        ino = inode.ino
        if inode.extra:
            start = 128 + int.from_bytes(inode.raw[0x80:0x82], "little")
            body = inode.raw[start:]
            if len(body) >= 4 and int.from_bytes(body[:4], "little") == EXT4_XATTR_MAGIC:
                self._parse_xattr_entries(inode, body, 4, 4, out, f"inode {ino} in-inode xattrs")
        acl = inode.file_acl
        if acl:
            blk = self.read_block(acl, f"inode {ino} xattr block {acl}")
            magic, _refc, nblocks = struct.unpack_from("<III", blk, 0)
            if magic != EXT4_XATTR_MAGIC or nblocks != 1:
                raise Ext4Error(f"{self.name}: inode {ino}: xattr block {acl}: bad header (magic {magic:#x}, h_blocks {nblocks})")
            if self.verify and self.metadata_csum:
                data = bytearray(blk)
                data[0x10:0x14] = b"\0\0\0\0"
                want = csum(csum(self.csum_seed, struct.pack("<Q", acl)), bytes(data))
                found = struct.unpack_from("<I", blk, 0x10)[0]
                if want != found:
                    raise ChecksumError(f"{self.name}: inode {ino} xattr block {acl}", want, found)
            self._parse_xattr_entries(inode, blk, 0x20, 0, out, f"inode {ino} xattr block {acl}")
        return out

    def _parse_xattr_entries(self, inode: Inode, buf: bytes, pos: int, vbase: int,
                             out: dict[str, bytes], where: str) -> None:
        n = len(buf)
        while pos + 4 <= n and buf[pos:pos + 4] != b"\0\0\0\0":
            if pos + 16 > n:
                raise Ext4Error(f"{self.name}: {where}: entry at byte {pos} runs past the end")
            name_len, idx, voff, vinum, vsize, _h = struct.unpack_from("<BBHIII", buf, pos)
            if pos + 16 + name_len > n:
                raise Ext4Error(f"{self.name}: {where}: name at byte {pos} runs past the end")
            self.budget.charge(1, where)
            name = buf[pos + 16:pos + 16 + name_len]
            prefix = XATTR_PREFIXES.get(idx)
            if prefix is None:
                full = f"<index {idx}>." + name.decode("utf-8", "surrogateescape")
            else:
                full = prefix + name.decode("utf-8", "surrogateescape")
            if vinum:
                if vsize > 1 << 26:
                    raise Ext4Error(f"{self.name}: {where}: value of {full} is {vsize} bytes")
                vi = self.inode(vinum)
                if not vi.flags & EXT4_EA_INODE_FL:
                    raise Ext4Error(f"{self.name}: {where}: {full} names inode {vinum}, which is not an xattr inode")
                # an xattr inode holds its value in blocks (the kernel reads it block by block);
                # inline data there would be read from xattrs again, possibly its own: a cycle
                if vi.flags & EXT4_INLINE_DATA_FL:
                    raise Ext4Error(
                        f"{self.name}: {where}: {full} names xattr inode {vinum}, which has "
                        "inline data, expected its value in blocks")
                value = self.read_data(vi)[:vsize]
            else:
                if vbase + voff + vsize > n:
                    raise Ext4Error(f"{self.name}: {where}: value of {full} (offset {voff}, {vsize} bytes) runs past the end")
                value = bytes(buf[vbase + voff:vbase + voff + vsize])
            out[full] = value
            pos += (16 + name_len + 3) & ~3

    def symlink_target(self, inode: Inode) -> bytes:
        if inode.kind != "symlink":
            raise Ext4Error(f"{self.name}: inode {inode.ino} is not a symlink")
        if inode.size > 65536:
            raise Ext4Error(f"{self.name}: symlink inode {inode.ino}: i_size {inode.size} is too large")
        return self.read_data(inode)

    def device(self, inode: Inode) -> tuple[int, int]:
        """(major, minor) of a device inode, old or new encoding."""
        b0, b1 = struct.unpack_from("<II", inode.f["i_block"])
        if b0:
            return (b0 >> 8) & 0xFF, b0 & 0xFF
        return (b1 & 0xFFF00) >> 8, (b1 & 0xFF) | ((b1 >> 12) & 0xFFF00)

    # -- summary -------------------------------------------------------------------------------
    def features(self) -> list[str]:
        out = []
        for kind, val in (("compat", self.compat), ("incompat", self.incompat),
                          ("ro_compat", self.ro_compat)):
            for bit in range(32):
                if val & (1 << bit):
                    out.append(FEATURE_NAMES[kind].get(1 << bit, f"FEATURE_{kind.upper()}_{bit}"))
        return out

    def info(self) -> dict[str, Any]:
        """The filesystem summary ``inspect`` prints (dumpe2fs -h's main fields)."""
        sb = self.sb
        free_blocks = sb["s_free_blocks_count_lo"] | (
            (sb["s_free_blocks_hi"] << 32) if self.is64 else 0)
        r_blocks = sb["s_r_blocks_count_lo"] | ((sb["s_r_blocks_count_hi"] << 32) if self.is64 else 0)

        def t(name: str) -> int:
            hi = sb.get(name + "_hi", 0) if name + "_hi" in sb else 0
            return sb[name] | (hi << 32)

        info: dict[str, Any] = {
            "type": "ext4" if self.incompat & INCOMPAT_EXTENTS else (
                "ext3" if self.compat & COMPAT_HAS_JOURNAL else "ext2"),
            "uuid": str(uuid.UUID(bytes=sb["s_uuid"])),
            "label": _cstr(sb["s_volume_name"]),
            "last_mounted": _cstr(sb["s_last_mounted"]),
            "features": self.features(),
            "block_size": self.block_size,
            "blocks_count": self.blocks_count,
            "reserved_blocks_count": r_blocks,
            "free_blocks_count": free_blocks,
            "inodes_count": self.inodes_count,
            "free_inodes_count": sb["s_free_inodes_count"],
            "first_data_block": self.first_data_block,
            "blocks_per_group": self.bpg,
            "inodes_per_group": self.ipg,
            "inode_size": self.inode_size,
            "groups": self.groups,
            "reserved_gdt_blocks": sb["s_reserved_gdt_blocks"],
            "state": sb["s_state"],
            "mkfs_time": t("s_mkfs_time"),
            "mount_time": t("s_mtime"),
            "write_time": t("s_wtime"),
            "lastcheck_time": t("s_lastcheck"),
            "mount_count": sb["s_mnt_count"],
            "max_mount_count": sb["s_max_mnt_count"],
            "hash_seed": str(uuid.UUID(bytes=sb["s_hash_seed"])),
            "default_hash_version": {0: "legacy", 1: "half_md4", 2: "tea"}.get(
                sb["s_def_hash_version"], str(sb["s_def_hash_version"])),
            "checksum_type": "crc32c" if sb["s_checksum_type"] == 1 else sb["s_checksum_type"],
            "checksum": sb["s_checksum"] if self.metadata_csum else None,
        }
        if self.compat & COMPAT_HAS_JOURNAL:
            # a broken journal does not hide the files (debugfs and a read-only mount without
            # recovery read them too): it is reported in place
            try:
                info["journal"] = self.journal_info()
            except Ext4Error as e:
                info["journal"] = {"inode": sb["s_journal_inum"], "error": str(e)}
        return info

    def journal_info(self) -> dict[str, Any]:
        sb = self.sb
        jino = sb["s_journal_inum"]
        out: dict[str, Any] = {"inode": jino}
        if not jino:
            out["device"] = sb["s_journal_dev"]
            return out
        j = self.inode(jino)
        bm = self.block_map(j)
        if not bm.extents or bm.extents[0].lblk != 0:
            raise Ext4Error(f"{self.name}: journal inode {jino} has no block 0")
        raw = self.read_block(bm.extents[0].pblk, "journal superblock")
        (magic, btype, _seq, jbs, maxlen, first, _s_seq, start, errno_, fcompat, fincompat,
         frocompat, juuid, nr_users) = _JSB.unpack_from(raw, 0)
        if magic != 0xC03B3998:
            raise Ext4Error(f"{self.name}: journal superblock: bad magic {magic:#x}, expected 0xc03b3998")
        out.update({
            "size": j.size, "blocks": maxlen, "block_size": jbs, "first": first,
            "start": start, "version": {3: 1, 4: 2}.get(btype, btype), "errno": errno_,
            "features_compat": fcompat, "features_incompat": fincompat,
            "features_ro_compat": frocompat, "uuid": str(uuid.UUID(bytes=juuid)),
            "nr_users": nr_users,
        })
        return out


class GroupDescriptors:
    """``fs.gd[g]``: group ``g``'s parsed descriptor, read and checked on first use.

    Descriptors are read block by block as needed and at most :data:`CACHE` parsed ones are
    kept, so a hostile superblock claiming hundreds of millions of groups costs nothing until
    those groups are used (reading everything up front would allocate gigabytes).
    """

    CACHE = 1 << 16

    def __init__(self, fs: Ext4) -> None:
        self.fs = fs
        self._cache: dict[int, dict[str, int]] = {}

    def __len__(self) -> int:
        return self.fs.groups

    def __getitem__(self, g: int) -> dict[str, int]:
        d = self._cache.get(g)
        if d is None:
            d = self.fs._parse_gd(g)
            if len(self._cache) >= self.CACHE:
                self._cache.clear()
            self._cache[g] = d
        return d


def _zeros(n: int, chunk: int, budget: Budget | None = None, bs: int = 4096,
           what: str = "a hole") -> Iterator[bytes]:
    while n > 0:
        k = min(n, chunk)
        if budget is not None:
            budget.charge(-(-k // bs), what)
        yield bytes(k)
        n -= k


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def probe(src: Source, offset: int) -> bool:
    """True when an ext2/3/4 superblock magic sits at ``offset`` + 1024 + 0x38."""
    return src.read(offset + 1024 + 0x38, 2) == b"\x53\xef"


def guard(fn: Callable[[], Any], name: str) -> Any:
    """Run ``fn``; translate the low-level exceptions a hostile image can provoke into Ext4Error."""
    try:
        return fn()
    except (struct.error, ValueError, IndexError, KeyError, OverflowError, MemoryError) as e:
        raise Ext4Error(f"{name}: malformed structure ({type(e).__name__}: {e})") from None
