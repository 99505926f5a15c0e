"""On-disk ext4 records built by the record modules (dirents, htree, xattrs, extents, ACLs).

Declarations only, no logic.  Field names are the kernel's (``fs/ext4/ext4.h``,
``fs/ext4/namei.c``, ``fs/ext4/xattr.h``, ``fs/ext4/ext4_extents.h``, ``fs/ext4/acl.h``).
Everything is little-endian.  The hot paths in :mod:`.dirent`, :mod:`.xattr` and
:mod:`.extents` use ``struct``/numpy with the format strings and dtypes below; a test checks
that they are byte-identical to these construct declarations.
"""

from __future__ import annotations

import numpy as np
from construct import Bytes, Int8ul, Int16ul, Int32ul, Struct

# --- directories ---------------------------------------------------------------------------

#: ``struct ext4_dir_entry_2``: the 8-byte header of a linear directory entry; the name
#: (``name_len`` bytes, not NUL-terminated) follows, and ``rec_len`` pads to a multiple of 4.
ext4_dir_entry_2 = Struct(
    "inode" / Int32ul,  # 0x0 inode number, 0 = unused entry
    "rec_len" / Int16ul,  # 0x4 length of this record, multiple of 4
    "name_len" / Int8ul,  # 0x6 name length in bytes
    "file_type" / Int8ul,  # 0x7 EXT4_FT_*: 1 reg, 2 dir, 3 chr, 4 blk, 5 fifo, 6 sock, 7 symlink
)
DIRENT_FMT = "<IHBB"
DIRENT_DTYPE = np.dtype([("inode", "<u4"), ("rec_len", "<u2"), ("name_len", "u1"), ("file_type", "u1")])

#: ``struct ext4_dir_entry_tail``: the 12-byte fake dirent at the end of a leaf block
#: that carries the block's metadata_csum checksum.
ext4_dir_entry_tail = Struct(
    "det_reserved_zero1" / Int32ul,  # 0x0 pretends to be an unused inode: 0
    "det_rec_len" / Int16ul,  # 0x4 12
    "det_reserved_zero2" / Int8ul,  # 0x6 name_len: 0
    "det_reserved_ft" / Int8ul,  # 0x7 0xDE, EXT4_FT_DIR_CSUM
    "det_checksum" / Int32ul,  # 0x8 crc32c(csum_seed, ino, gen, block[0:bs-12])
)
DIRENT_TAIL_FMT = "<IHBBI"
EXT4_FT_DIR_CSUM = 0xDE

#: ``struct dx_root_info`` (8 bytes at 0x18 of an htree's block 0).
dx_root_info = Struct(
    "reserved_zero" / Int32ul,  # 0x0 0
    "hash_version" / Int8ul,  # 0x4 0 legacy, 1 half_md4, 2 tea (signedness is in s_flags)
    "info_length" / Int8ul,  # 0x5 8
    "indirect_levels" / Int8ul,  # 0x6 0 (root -> leaves) or 1 (root -> nodes -> leaves)
    "unused_flags" / Int8ul,  # 0x7 0
)

#: ``struct dx_root`` up to the count/limit word: fake "." and ".." dirents, then the info.
dx_root_head = Struct(
    "dot" / ext4_dir_entry_2,  # 0x00 inode = the directory, rec_len 12, name_len 1, type 2
    "dot_name" / Bytes(4),  # 0x08 b".\0\0\0"
    "dotdot" / ext4_dir_entry_2,  # 0x0C inode = parent, rec_len bs-12, name_len 2, type 2
    "dotdot_name" / Bytes(4),  # 0x14 b"..\0\0"
    "info" / dx_root_info,  # 0x18
)
DX_ROOT_HEAD_FMT = "<IHBB4sIHBB4sIBBBB"

#: ``struct dx_node`` header: one fake unused dirent that covers the whole block.
dx_node_head = Struct(
    "fake" / ext4_dir_entry_2,  # 0x0 inode 0, rec_len = block size, name_len 0, file_type 0
)

#: ``struct dx_countlimit``: overlays the hash field of the first ``dx_entry``.
dx_countlimit = Struct(
    "limit" / Int16ul,  # 0x0 number of dx_entry slots that fit (before the dx_tail)
    "count" / Int16ul,  # 0x2 number of dx_entry slots in use (the first included)
)

#: ``struct dx_entry``: one index slot; the first slot's hash is the count/limit word.
dx_entry = Struct(
    "hash" / Int32ul,  # 0x0 lowest hash in the child (bit 0 set: continues a collision run)
    "block" / Int32ul,  # 0x4 logical block of the child within the directory
)
DX_ENTRY_DTYPE = np.dtype([("hash", "<u4"), ("block", "<u4")])

#: ``struct dx_tail``: after the last dx_entry slot (``limit`` slots) of a root or node.
dx_tail = Struct(
    "dt_reserved" / Int32ul,  # 0x0 0
    "dt_checksum" / Int32ul,  # 0x4 crc32c(csum_seed, ino, gen, block[0:count_off+8*count], dx_tail with csum 0)
)

# --- extended attributes -------------------------------------------------------------------

EXT4_XATTR_MAGIC = 0xEA020000

#: ``struct ext4_xattr_header``: the 32-byte head of an xattr block.
ext4_xattr_header = Struct(
    "h_magic" / Int32ul,  # 0x00 0xEA020000
    "h_refcount" / Int32ul,  # 0x04 number of inodes that point at this block
    "h_blocks" / Int32ul,  # 0x08 1
    "h_hash" / Int32ul,  # 0x0C hash of the entries' hashes
    "h_checksum" / Int32ul,  # 0x10 crc32c(csum_seed, le64 block nr, block with h_checksum 0)
    "h_reserved" / Bytes(12),  # 0x14 0
)
XATTR_HEADER_FMT = "<IIIII12x"

#: ``struct ext4_xattr_ibody_header``: the magic at 0x80 + i_extra_isize of an inode.
ext4_xattr_ibody_header = Struct(
    "h_magic" / Int32ul,  # 0x0 0xEA020000
)

#: ``struct ext4_xattr_entry``: 16 bytes, then the name (prefix stripped), padded to 4.
ext4_xattr_entry = Struct(
    "e_name_len" / Int8ul,  # 0x0 length of the stored name
    "e_name_index" / Int8ul,  # 0x1 1 user, 2 acl access, 3 acl default, 4 trusted, 6 security, 7 system
    "e_value_offs" / Int16ul,  # 0x2 value offset: from the first entry (ibody) or block start (block)
    "e_value_inum" / Int32ul,  # 0x4 ea_inode holding the value: 0 (ea_inode not used)
    "e_value_size" / Int32ul,  # 0x8 value length in bytes
    "e_hash" / Int32ul,  # 0xC hash of name and value
)
XATTR_ENTRY_FMT = "<BBHIII"

# --- POSIX ACLs ----------------------------------------------------------------------------

#: ``ext4_acl_header``: the on-disk (version 1) ACL header.
ext4_acl_header = Struct(
    "a_version" / Int32ul,  # 0x0 EXT4_ACL_VERSION = 1
)
#: ``ext4_acl_entry``: ACL_USER and ACL_GROUP entries (8 bytes).
ext4_acl_entry = Struct(
    "e_tag" / Int16ul,  # 0x0 ACL_USER 2 or ACL_GROUP 8
    "e_perm" / Int16ul,  # 0x2 rwx bits
    "e_id" / Int32ul,  # 0x4 uid or gid
)
#: ``ext4_acl_entry_short``: ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER (4 bytes).
ext4_acl_entry_short = Struct(
    "e_tag" / Int16ul,  # 0x0 1 user_obj, 4 group_obj, 0x10 mask, 0x20 other
    "e_perm" / Int16ul,  # 0x2 rwx bits
)
#: ``posix_acl_xattr_header``/``posix_acl_xattr_entry``: the VFS (getxattr) form, version 2,
#: every entry 8 bytes (e_id 0xFFFFFFFF for the short kinds).
posix_acl_xattr_header = Struct(
    "a_version" / Int32ul,  # 0x0 POSIX_ACL_XATTR_VERSION = 2
)
posix_acl_xattr_entry = Struct(
    "e_tag" / Int16ul,  # 0x0 ACL_* tag
    "e_perm" / Int16ul,  # 0x2 rwx bits
    "e_id" / Int32ul,  # 0x4 uid/gid, or 0xFFFFFFFF (ACL_UNDEFINED_ID)
)

# --- extents -------------------------------------------------------------------------------

EXT4_EXT_MAGIC = 0xF30A

#: ``struct ext4_extent_header``: heads i_block and every extent tree block.
ext4_extent_header = Struct(
    "eh_magic" / Int16ul,  # 0x0 0xF30A
    "eh_entries" / Int16ul,  # 0x2 entries in use
    "eh_max" / Int16ul,  # 0x4 capacity: 4 in i_block, (bs-12)/12 in a block
    "eh_depth" / Int16ul,  # 0x6 0 = entries are leaves
    "eh_generation" / Int32ul,  # 0x8 0
)
EXTENT_HEADER_FMT = "<HHHHI"

#: ``struct ext4_extent_idx``: an index entry (depth > 0).
ext4_extent_idx = Struct(
    "ei_block" / Int32ul,  # 0x0 first logical block covered by the child
    "ei_leaf_lo" / Int32ul,  # 0x4 child block, low 32 bits
    "ei_leaf_hi" / Int16ul,  # 0x8 child block, high 16 bits
    "ei_unused" / Int16ul,  # 0xA 0
)
EXTENT_IDX_DTYPE = np.dtype(
    [("ei_block", "<u4"), ("ei_leaf_lo", "<u4"), ("ei_leaf_hi", "<u2"), ("ei_unused", "<u2")]
)

#: ``struct ext4_extent``: a leaf entry (depth 0).
ext4_extent = Struct(
    "ee_block" / Int32ul,  # 0x0 first logical block
    "ee_len" / Int16ul,  # 0x4 length, <= 32768 (initialized)
    "ee_start_hi" / Int16ul,  # 0x6 first physical block, high 16 bits
    "ee_start_lo" / Int32ul,  # 0x8 first physical block, low 32 bits
)
EXTENT_DTYPE = np.dtype(
    [("ee_block", "<u4"), ("ee_len", "<u2"), ("ee_start_hi", "<u2"), ("ee_start_lo", "<u4")]
)

#: ``struct ext4_extent_tail``: right after the eh_max slots of a tree block.
ext4_extent_tail = Struct(
    "et_checksum" / Int32ul,  # 0x0 crc32c(csum_seed, ino, gen, block[0:12+12*eh_max])
)
