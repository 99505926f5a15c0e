"""On-disk ext4 structures the filesystem writer builds: superblock, group descriptor, inode,
extent header/index/leaf and the jbd2 journal superblock.

Declarations only (plus :func:`numpy_dtype`, which derives a numpy structured dtype from a
declaration so bulk tables -- the inode table, the group descriptor table -- are filled column
by column with exactly the same layout).  Field names are the kernel's / e2fsprogs'
(``fs/ext4/ext4.h``, ``lib/ext2fs/ext2_fs.h``, ``lib/ext2fs/kernel-jbd.h``).  ext4 is
little-endian; the jbd2 superblock is big-endian.  Offsets in the comments are hexadecimal.
"""

from __future__ import annotations

import numpy as np
from construct import (
    Array,
    Bytes,
    Int8ub,
    Int8ul,
    Int16sl,
    Int16ub,
    Int16ul,
    Int32sb,
    Int32ub,
    Int32ul,
    Int64ul,
    Struct,
)

# ---------------------------------------------------------------------------------------------
# superblock (1024 bytes at byte 1024; backups at the start of sparse_super groups)
# ---------------------------------------------------------------------------------------------

ext4_super_block = Struct(
    "s_inodes_count" / Int32ul,  # 000 total inodes
    "s_blocks_count_lo" / Int32ul,  # 004 total blocks, low 32 bits
    "s_r_blocks_count_lo" / Int32ul,  # 008 blocks reserved for root, low 32 bits
    "s_free_blocks_count_lo" / Int32ul,  # 00C free blocks, low 32 bits
    "s_free_inodes_count" / Int32ul,  # 010 free inodes
    "s_first_data_block" / Int32ul,  # 014 block holding the superblock: 0 for 4 KiB blocks
    "s_log_block_size" / Int32ul,  # 018 block size = 1024 << this
    "s_log_cluster_size" / Int32ul,  # 01C cluster size = 1024 << this (= block size)
    "s_blocks_per_group" / Int32ul,  # 020 blocks per group
    "s_clusters_per_group" / Int32ul,  # 024 clusters per group
    "s_inodes_per_group" / Int32ul,  # 028 inodes per group
    "s_mtime" / Int32ul,  # 02C last mount time
    "s_wtime" / Int32ul,  # 030 last write time
    "s_mnt_count" / Int16ul,  # 034 mounts since last check
    "s_max_mnt_count" / Int16sl,  # 036 mounts allowed before a check (-1: never)
    "s_magic" / Int16ul,  # 038 0xEF53
    "s_state" / Int16ul,  # 03A 1 = cleanly unmounted
    "s_errors" / Int16ul,  # 03C behaviour on errors: 1 continue
    "s_minor_rev_level" / Int16ul,  # 03E minor revision
    "s_lastcheck" / Int32ul,  # 040 time of last check
    "s_checkinterval" / Int32ul,  # 044 max time between checks (0: none)
    "s_creator_os" / Int32ul,  # 048 0 = Linux
    "s_rev_level" / Int32ul,  # 04C 1 = dynamic inode sizes
    "s_def_resuid" / Int16ul,  # 050 uid allowed to use reserved blocks
    "s_def_resgid" / Int16ul,  # 052 gid allowed to use reserved blocks
    "s_first_ino" / Int32ul,  # 054 first non-reserved inode (11)
    "s_inode_size" / Int16ul,  # 058 inode record size (256)
    "s_block_group_nr" / Int16ul,  # 05A group holding this copy of the superblock
    "s_feature_compat" / Int32ul,  # 05C compatible features
    "s_feature_incompat" / Int32ul,  # 060 incompatible features
    "s_feature_ro_compat" / Int32ul,  # 064 read-only compatible features
    "s_uuid" / Bytes(16),  # 068 filesystem UUID (RFC byte order)
    "s_volume_name" / Bytes(16),  # 078 label, NUL padded
    "s_last_mounted" / Bytes(64),  # 088 last mount point, NUL padded
    "s_algorithm_usage_bitmap" / Int32ul,  # 0C8 compression (unused)
    "s_prealloc_blocks" / Int8ul,  # 0CC blocks to preallocate for files
    "s_prealloc_dir_blocks" / Int8ul,  # 0CD blocks to preallocate for directories
    "s_reserved_gdt_blocks" / Int16ul,  # 0CE GDT blocks reserved for online growth
    "s_journal_uuid" / Bytes(16),  # 0D0 external journal UUID (0: internal)
    "s_journal_inum" / Int32ul,  # 0E0 journal inode (8)
    "s_journal_dev" / Int32ul,  # 0E4 external journal device
    "s_last_orphan" / Int32ul,  # 0E8 head of the orphan list
    "s_hash_seed" / Array(4, Int32ul),  # 0EC htree hash seed
    "s_def_hash_version" / Int8ul,  # 0FC default htree hash (1 half_md4)
    "s_jnl_backup_type" / Int8ul,  # 0FD 1: s_jnl_blocks holds a copy of the journal i_block
    "s_desc_size" / Int16ul,  # 0FE group descriptor size (64 with 64bit)
    "s_default_mount_opts" / Int32ul,  # 100 default mount options (0x0C acl,user_xattr)
    "s_first_meta_bg" / Int32ul,  # 104 first meta_bg group
    "s_mkfs_time" / Int32ul,  # 108 creation time
    "s_jnl_blocks" / Array(17, Int32ul),  # 10C journal i_block[15], i_size_high, i_size
    "s_blocks_count_hi" / Int32ul,  # 150 total blocks, high 32 bits
    "s_r_blocks_count_hi" / Int32ul,  # 154 reserved blocks, high 32 bits
    "s_free_blocks_hi" / Int32ul,  # 158 free blocks, high 32 bits
    "s_min_extra_isize" / Int16ul,  # 15C every inode has at least this i_extra_isize
    "s_want_extra_isize" / Int16ul,  # 15E new inodes get this i_extra_isize
    "s_flags" / Int32ul,  # 160 1 signed hash, 2 unsigned hash, 4 test fs
    "s_raid_stride" / Int16ul,  # 164 RAID stride
    "s_mmp_update_interval" / Int16ul,  # 166 MMP interval (s)
    "s_mmp_block" / Int64ul,  # 168 MMP block
    "s_raid_stripe_width" / Int32ul,  # 170 RAID stripe width
    "s_log_groups_per_flex" / Int8ul,  # 174 flex_bg size = 1 << this
    "s_checksum_type" / Int8ul,  # 175 1 = crc32c
    "s_encryption_level" / Int8ul,  # 176 versioning level for encryption
    "s_reserved_pad" / Int8ul,  # 177 padding
    "s_kbytes_written" / Int64ul,  # 178 KiB written over the filesystem's life
    "s_snapshot_inum" / Int32ul,  # 180 active snapshot inode
    "s_snapshot_id" / Int32ul,  # 184 active snapshot id
    "s_snapshot_r_blocks_count" / Int64ul,  # 188 blocks reserved for the snapshot
    "s_snapshot_list" / Int32ul,  # 190 head of the snapshot list
    "s_error_count" / Int32ul,  # 194 errors seen
    "s_first_error_time" / Int32ul,  # 198 first error: time
    "s_first_error_ino" / Int32ul,  # 19C first error: inode
    "s_first_error_block" / Int64ul,  # 1A0 first error: block
    "s_first_error_func" / Bytes(32),  # 1A8 first error: function
    "s_first_error_line" / Int32ul,  # 1C8 first error: line
    "s_last_error_time" / Int32ul,  # 1CC last error: time
    "s_last_error_ino" / Int32ul,  # 1D0 last error: inode
    "s_last_error_line" / Int32ul,  # 1D4 last error: line
    "s_last_error_block" / Int64ul,  # 1D8 last error: block
    "s_last_error_func" / Bytes(32),  # 1E0 last error: function
    "s_mount_opts" / Bytes(64),  # 200 default mount option string
    "s_usr_quota_inum" / Int32ul,  # 240 user quota inode
    "s_grp_quota_inum" / Int32ul,  # 244 group quota inode
    "s_overhead_clusters" / Int32ul,  # 248 overhead blocks (0: the kernel computes it)
    "s_backup_bgs" / Array(2, Int32ul),  # 24C sparse_super2 backup groups
    "s_encrypt_algos" / Bytes(4),  # 254 encryption algorithms
    "s_encrypt_pw_salt" / Bytes(16),  # 258 encryption salt
    "s_lpf_ino" / Int32ul,  # 268 lost+found inode (only with casefold/encrypt)
    "s_prj_quota_inum" / Int32ul,  # 26C project quota inode
    "s_checksum_seed" / Int32ul,  # 270 crc32c(uuid), only with metadata_csum_seed
    "s_wtime_hi" / Int8ul,  # 274 s_wtime bits 32-39
    "s_mtime_hi" / Int8ul,  # 275 s_mtime bits 32-39
    "s_mkfs_time_hi" / Int8ul,  # 276 s_mkfs_time bits 32-39
    "s_lastcheck_hi" / Int8ul,  # 277 s_lastcheck bits 32-39
    "s_first_error_time_hi" / Int8ul,  # 278 s_first_error_time bits 32-39
    "s_last_error_time_hi" / Int8ul,  # 279 s_last_error_time bits 32-39
    "s_first_error_errcode" / Int8ul,  # 27A first error code
    "s_last_error_errcode" / Int8ul,  # 27B last error code
    "s_encoding" / Int16ul,  # 27C filename charset encoding (casefold)
    "s_encoding_flags" / Int16ul,  # 27E filename charset encoding flags
    "s_orphan_file_inum" / Int32ul,  # 280 orphan file inode
    "s_reserved" / Array(94, Int32ul),  # 284 zero padding
    "s_checksum" / Int32ul,  # 3FC crc32c of bytes 0-3FB (not seeded)
)

# ---------------------------------------------------------------------------------------------
# group descriptor (64 bytes with the 64bit feature)
# ---------------------------------------------------------------------------------------------

ext4_group_desc = Struct(
    "bg_block_bitmap_lo" / Int32ul,  # 00 block bitmap block, low 32 bits
    "bg_inode_bitmap_lo" / Int32ul,  # 04 inode bitmap block, low 32 bits
    "bg_inode_table_lo" / Int32ul,  # 08 first inode table block, low 32 bits
    "bg_free_blocks_count_lo" / Int16ul,  # 0C free blocks, low 16 bits
    "bg_free_inodes_count_lo" / Int16ul,  # 0E free inodes, low 16 bits
    "bg_used_dirs_count_lo" / Int16ul,  # 10 directories, low 16 bits
    "bg_flags" / Int16ul,  # 12 1 INODE_UNINIT, 2 BLOCK_UNINIT, 4 INODE_ZEROED
    "bg_exclude_bitmap_lo" / Int32ul,  # 14 snapshot exclude bitmap, low 32 bits
    "bg_block_bitmap_csum_lo" / Int16ul,  # 18 block bitmap crc32c, low 16 bits
    "bg_inode_bitmap_csum_lo" / Int16ul,  # 1A inode bitmap crc32c, low 16 bits
    "bg_itable_unused_lo" / Int16ul,  # 1C never-used inodes at the end of the table, low 16
    "bg_checksum" / Int16ul,  # 1E crc32c(seed, le32 group, descriptor) & 0xFFFF
    "bg_block_bitmap_hi" / Int32ul,  # 20 block bitmap block, high 32 bits
    "bg_inode_bitmap_hi" / Int32ul,  # 24 inode bitmap block, high 32 bits
    "bg_inode_table_hi" / Int32ul,  # 28 first inode table block, high 32 bits
    "bg_free_blocks_count_hi" / Int16ul,  # 2C free blocks, high 16 bits
    "bg_free_inodes_count_hi" / Int16ul,  # 2E free inodes, high 16 bits
    "bg_used_dirs_count_hi" / Int16ul,  # 30 directories, high 16 bits
    "bg_itable_unused_hi" / Int16ul,  # 32 never-used inodes, high 16 bits
    "bg_exclude_bitmap_hi" / Int32ul,  # 34 snapshot exclude bitmap, high 32 bits
    "bg_block_bitmap_csum_hi" / Int16ul,  # 38 block bitmap crc32c, high 16 bits
    "bg_inode_bitmap_csum_hi" / Int16ul,  # 3A inode bitmap crc32c, high 16 bits
    "bg_reserved" / Int32ul,  # 3C padding
)

# ---------------------------------------------------------------------------------------------
# inode (256 bytes: 128 classic + i_extra_isize = 32 extra + 96 in-inode xattr space)
# ---------------------------------------------------------------------------------------------

ext4_inode = Struct(
    "i_mode" / Int16ul,  # 00 type and permission bits
    "i_uid" / Int16ul,  # 02 owner uid, low 16 bits
    "i_size_lo" / Int32ul,  # 04 size in bytes, low 32 bits
    "i_atime" / Int32ul,  # 08 access time, seconds (low 32 bits, signed)
    "i_ctime" / Int32ul,  # 0C change time, seconds
    "i_mtime" / Int32ul,  # 10 modification time, seconds
    "i_dtime" / Int32ul,  # 14 deletion time
    "i_gid" / Int16ul,  # 18 group gid, low 16 bits
    "i_links_count" / Int16ul,  # 1A hard links
    "i_blocks_lo" / Int32ul,  # 1C allocated 512-byte sectors, low 32 bits
    "i_flags" / Int32ul,  # 20 EXT4_*_FL (0x80000 extents, 0x1000 htree index)
    "l_i_version" / Int32ul,  # 24 inode version (NFS)
    "i_block" / Bytes(60),  # 28 extent tree root / symlink target / device numbers / block map
    "i_generation" / Int32ul,  # 64 file version (NFS)
    "i_file_acl_lo" / Int32ul,  # 68 xattr block, low 32 bits
    "i_size_high" / Int32ul,  # 6C size in bytes, high 32 bits
    "i_obso_faddr" / Int32ul,  # 70 obsolete fragment address
    "l_i_blocks_high" / Int16ul,  # 74 allocated sectors, bits 32-47 (huge_file)
    "l_i_file_acl_high" / Int16ul,  # 76 xattr block, high 16 bits
    "l_i_uid_high" / Int16ul,  # 78 owner uid, high 16 bits
    "l_i_gid_high" / Int16ul,  # 7A group gid, high 16 bits
    "l_i_checksum_lo" / Int16ul,  # 7C inode crc32c, low 16 bits
    "l_i_reserved" / Int16ul,  # 7E padding
    "i_extra_isize" / Int16ul,  # 80 bytes of extra fields past 0x80 (32)
    "i_checksum_hi" / Int16ul,  # 82 inode crc32c, high 16 bits
    "i_ctime_extra" / Int32ul,  # 84 ctime: nanoseconds << 2 | epoch bits
    "i_mtime_extra" / Int32ul,  # 88 mtime: nanoseconds << 2 | epoch bits
    "i_atime_extra" / Int32ul,  # 8C atime: nanoseconds << 2 | epoch bits
    "i_crtime" / Int32ul,  # 90 creation time, seconds
    "i_crtime_extra" / Int32ul,  # 94 crtime: nanoseconds << 2 | epoch bits
    "i_version_hi" / Int32ul,  # 98 inode version, high 32 bits
    "i_projid" / Int32ul,  # 9C project id
    "i_xattr" / Bytes(96),  # A0 in-inode xattrs: le32 magic 0xEA020000, entries, values
)

# ---------------------------------------------------------------------------------------------
# extents (in i_block and in extent tree blocks)
# ---------------------------------------------------------------------------------------------

ext4_extent_header = Struct(
    "eh_magic" / Int16ul,  # 0 0xF30A
    "eh_entries" / Int16ul,  # 2 valid entries
    "eh_max" / Int16ul,  # 4 capacity (4 in i_block, (bs-12)/12 in a block)
    "eh_depth" / Int16ul,  # 6 0: entries are leaves; n: index entries n levels above
    "eh_generation" / Int32ul,  # 8 unused (0)
)

ext4_extent_idx = Struct(
    "ei_block" / Int32ul,  # 0 first logical block covered
    "ei_leaf_lo" / Int32ul,  # 4 child tree block, low 32 bits
    "ei_leaf_hi" / Int16ul,  # 8 child tree block, high 16 bits
    "ei_unused" / Int16ul,  # A padding
)

ext4_extent = Struct(
    "ee_block" / Int32ul,  # 0 first logical block
    "ee_len" / Int16ul,  # 4 blocks (> 32768: uninitialized, len - 32768)
    "ee_start_hi" / Int16ul,  # 6 first physical block, high 16 bits
    "ee_start_lo" / Int32ul,  # 8 first physical block, low 32 bits
)

ext4_extent_tail = Struct(
    "et_checksum" / Int32ul,  # 0 crc32c(seed, ino, gen, block[0:12+12*eh_max])
)

# ---------------------------------------------------------------------------------------------
# jbd2 journal superblock (big-endian, journal block 0)
# ---------------------------------------------------------------------------------------------

journal_superblock_t = Struct(
    "h_magic" / Int32ub,  # 000 0xC03B3998
    "h_blocktype" / Int32ub,  # 004 4 = superblock v2
    "h_sequence" / Int32ub,  # 008 0
    "s_blocksize" / Int32ub,  # 00C journal block size (= fs block size)
    "s_maxlen" / Int32ub,  # 010 journal blocks
    "s_first" / Int32ub,  # 014 first log block (1)
    "s_sequence" / Int32ub,  # 018 first expected commit id (1)
    "s_start" / Int32ub,  # 01C first log block of the log, 0 = clean
    "s_errno" / Int32sb,  # 020 error value
    "s_feature_compat" / Int32ub,  # 024 compatible features
    "s_feature_incompat" / Int32ub,  # 028 incompatible features
    "s_feature_ro_compat" / Int32ub,  # 02C read-only compatible features
    "s_uuid" / Bytes(16),  # 030 journal UUID (= filesystem UUID for an internal journal)
    "s_nr_users" / Int32ub,  # 040 filesystems sharing the journal (1)
    "s_dynsuper" / Int32ub,  # 044 dynamic superblock copy block (unused)
    "s_max_transaction" / Int32ub,  # 048 limit of journal blocks per transaction (0)
    "s_max_trans_data" / Int32ub,  # 04C limit of data blocks per transaction (0)
    "s_checksum_type" / Int8ub,  # 050 checksum type (0)
    "s_padding2" / Bytes(3),  # 051 padding
    "s_num_fc_blks" / Int32ub,  # 054 fast commit blocks (0)
    "s_head" / Int32ub,  # 058 log head (0)
    "s_padding" / Array(40, Int32ub),  # 05C padding
    "s_checksum" / Int32ub,  # 0FC crc32c of the superblock (only with CSUM_V2/V3)
    "s_users" / Bytes(16 * 48),  # 100 UUIDs of the filesystems sharing the journal
)

# ---------------------------------------------------------------------------------------------
# numpy dtypes derived from the declarations
# ---------------------------------------------------------------------------------------------

_SCALAR = {
    Int8ul: "u1",
    Int8ub: "u1",
    Int16ul: "<u2",
    Int16sl: "<i2",
    Int32ul: "<u4",
    Int64ul: "<u8",
    Int16ub: ">u2",
    Int32ub: ">u4",
    Int32sb: ">i4",
}


def numpy_dtype(struct: Struct) -> np.dtype:
    """The numpy structured dtype with the same fields, offsets and size as ``struct``.

    Scalars map to sized integers of the same endianness, ``Bytes(n)`` to ``(u1, n)`` and
    ``Array(n, scalar)`` to ``(scalar, n)``.
    """
    names: list[str] = []
    formats: list[object] = []
    offsets: list[int] = []
    off = 0
    for sc in struct.subcons:
        sub = sc.subcon
        if sub in _SCALAR:
            fmt: object = _SCALAR[sub]
        elif isinstance(sub, Bytes):
            fmt = ("u1", (sub.length,))
        elif isinstance(sub, Array) and sub.subcon in _SCALAR:
            fmt = (_SCALAR[sub.subcon], (sub.count,))
        else:  # pragma: no cover - declarations above use only these
            raise TypeError(f"{sc.name}: no numpy equivalent for {sub!r}")
        names.append(sc.name)
        formats.append(fmt)
        offsets.append(off)
        off += sc.sizeof()
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": off})


SUPER_BLOCK_SIZE = ext4_super_block.sizeof()  # 1024
GROUP_DESC_SIZE = ext4_group_desc.sizeof()  # 64
INODE_SIZE = ext4_inode.sizeof()  # 256

GROUP_DESC_DTYPE = numpy_dtype(ext4_group_desc)
INODE_DTYPE = numpy_dtype(ext4_inode)
