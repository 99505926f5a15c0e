"""On-disk headers of the image formats qemu-img writes whose fields pydiskimg pins.

Declarations only, no logic.  Field names follow QEMU's ``block/vdi.c`` (``VdiHeader``) and
``block/vpc.c`` (``VHDFooter``, ``VHDDynDiskHeader``), which follow the VirtualBox and Microsoft
VHD specifications.  qcow2 needs nothing here: qemu-img's qcow2 output carries no clock or random
value (checked by the tests).
"""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    Const,
    Int8ub,
    Int16ub,
    Int32ub,
    Int32ul,
    Int64ub,
    Int64ul,
    Struct,
)

#: VirtualBox VDI header, version 1.1, at offset 0 of a .vdi file (512 bytes).
#: Multi-byte fields are little-endian.  UUIDs are stored as IPRT writes them: the first three
#: groups little-endian (``uuid.UUID.bytes_le``), as in GPT.
VdiHeader = Struct(
    "text" / Bytes(0x40),  # 0x000 free text, qemu: "<<< QEMU VM Virtual Disk Image >>>\n"
    "signature" / Const(0xBEDA107F, Int32ul),  # 0x040 VDI_SIGNATURE
    "version" / Int32ul,  # 0x044 0x00010001 = 1.1
    "header_size" / Int32ul,  # 0x048 size of the header after this field's start (0x180)
    "image_type" / Int32ul,  # 0x04C 1 dynamic, 2 static
    "image_flags" / Int32ul,  # 0x050 unused by qemu (0)
    "description" / Bytes(256),  # 0x054 free text (zero)
    "offset_bmap" / Int32ul,  # 0x154 byte offset of the block map
    "offset_data" / Int32ul,  # 0x158 byte offset of the first data block
    "cylinders" / Int32ul,  # 0x15C legacy geometry (0)
    "heads" / Int32ul,  # 0x160 legacy geometry (0)
    "sectors" / Int32ul,  # 0x164 legacy geometry (0)
    "sector_size" / Int32ul,  # 0x168 512
    "unused1" / Int32ul,  # 0x16C
    "disk_size" / Int64ul,  # 0x170 virtual size in bytes
    "block_size" / Int32ul,  # 0x178 1 MiB
    "block_extra" / Int32ul,  # 0x17C extra data per block (0)
    "blocks_in_image" / Int32ul,  # 0x180 entries in the block map
    "blocks_allocated" / Int32ul,  # 0x184 blocks present in the file
    "uuid_image" / Bytes(16),  # 0x188 this image's UUID: random in qemu-img, pinned by pydiskimg
    "uuid_last_snap" / Bytes(16),  # 0x198 UUID of the last modification: random, pinned
    "uuid_link" / Bytes(16),  # 0x1A8 differencing-image link: must be null for qemu
    "uuid_parent" / Bytes(16),  # 0x1B8 parent image: must be null for qemu
    "unused2" / Array(7, Int64ul),  # 0x1C8 .. 0x200
)

#: VHD hard disk footer (512 bytes): at the end of every .vhd file and, for dynamic disks, also
#: copied at offset 0.  Big-endian.  ``checksum`` is the one's complement of the byte sum of the
#: footer with the checksum field taken as zero.
VhdFooter = Struct(
    "creator" / Const(b"conectix"),  # 0x00 cookie
    "features" / Int32ub,  # 0x08 2 = reserved bit, always set
    "version" / Int32ub,  # 0x0C file format version 0x00010000
    "data_offset" / Int64ub,  # 0x10 offset of the dynamic header; all ones for fixed disks
    "timestamp" / Int32ub,  # 0x18 creation time, seconds since 2000-01-01 00:00:00 UTC: pinned
    "creator_app" / Bytes(4),  # 0x1C "qemu", or "qem2" with force_size=on
    "major" / Int16ub,  # 0x20 creator version major (5)
    "minor" / Int16ub,  # 0x22 creator version minor (3)
    "creator_os" / Bytes(4),  # 0x24 "Wi2k"
    "orig_size" / Int64ub,  # 0x28 size at creation, bytes
    "current_size" / Int64ub,  # 0x30 current size, bytes
    "cyls" / Int16ub,  # 0x38 CHS geometry: cylinders
    "heads" / Int8ub,  # 0x3A CHS geometry: heads
    "secs_per_cyl" / Int8ub,  # 0x3B CHS geometry: sectors per track
    "type" / Int32ub,  # 0x3C 2 fixed, 3 dynamic, 4 differencing
    "checksum" / Int32ub,  # 0x40 ~sum(bytes of the footer with this field zero)
    "uuid" / Bytes(16),  # 0x44 unique id of this disk: random in qemu-img, pinned
    "in_saved_state" / Int8ub,  # 0x54 0
    "reserved" / Bytes(427),  # 0x55 .. 0x200 zero
)

#: VHD dynamic disk header (1024 bytes) at ``footer.data_offset``.  qemu-img writes no clock or
#: random value here; declared so that ``check`` can verify its checksum.
VhdDynDiskHeader = Struct(
    "magic" / Const(b"cxsparse"),  # 0x000 cookie
    "data_offset" / Int64ub,  # 0x008 unused, all ones
    "table_offset" / Int64ub,  # 0x010 offset of the block allocation table (BAT)
    "version" / Int32ub,  # 0x018 0x00010000
    "max_table_entries" / Int32ub,  # 0x01C BAT entries (u32 each, big-endian)
    "block_size" / Int32ub,  # 0x020 2 MiB
    "checksum" / Int32ub,  # 0x024 ~sum(bytes of the header with this field zero)
    "parent_uuid" / Bytes(16),  # 0x028 differencing disks only (zero)
    "parent_timestamp" / Int32ub,  # 0x038 differencing disks only (zero)
    "reserved" / Int32ub,  # 0x03C
    "parent_name" / Bytes(512),  # 0x040 UTF-16 parent name (zero)
    "parent_locator" / Bytes(8 * 24),  # 0x240 eight parent locator entries (zero)
    "reserved2" / Bytes(256),  # 0x300 .. 0x400
)

VDI_HEADER_SIZE = 512
VHD_FOOTER_SIZE = 512
VHD_DYN_HEADER_SIZE = 1024
#: VHD timestamps count seconds from 2000-01-01 00:00:00 UTC.
VHD_EPOCH = 946684800
