"""GPT on-disk structures [UEFI 2.x §5.3], declared once, for writing and for reading.

Field names follow the UEFI specification.  Everything is little-endian; GUIDs are stored
mixed-endian (``uuid.UUID.bytes_le``).  :data:`GPT_ENTRY_DTYPE` is the numpy dtype of one
partition entry, derived from :data:`GPTPartitionEntry` so the two cannot drift apart; the entry
array is built and parsed in bulk with it.
"""

from __future__ import annotations

import numpy as np
from construct import Bytes, Const, Int32ul, Int64ul, Padding, Struct

#: "EFI PART"
GPT_SIGNATURE = b"EFI PART"
#: revision 1.0
GPT_REVISION = 0x00010000
#: bytes of the header covered by HeaderCRC32 (the rest of its sector is reserved, zero)
GPT_HEADER_SIZE = 92
#: entries in the array, and bytes per entry, as sgdisk and parted write them
GPT_ENTRIES = 128
GPT_ENTRY_SIZE = 128

# UEFI Table 5-5 "GPT Header" ------------------------------------------------------------------
GPTHeader = Struct(
    "Signature" / Const(GPT_SIGNATURE),  # 0x00 "EFI PART"
    "Revision" / Int32ul,  # 0x08 0x00010000
    "HeaderSize" / Int32ul,  # 0x0C 92; bytes covered by HeaderCRC32
    "HeaderCRC32" / Int32ul,  # 0x10 CRC32 of HeaderSize bytes, this field zeroed
    "Reserved" / Int32ul,  # 0x14 must be zero
    "MyLBA" / Int64ul,  # 0x18 LBA of this header (1, or the last sector for the backup)
    "AlternateLBA" / Int64ul,  # 0x20 LBA of the other header
    "FirstUsableLBA" / Int64ul,  # 0x28 first sector a partition may use
    "LastUsableLBA" / Int64ul,  # 0x30 last sector a partition may use (inclusive)
    "DiskGUID" / Bytes(16),  # 0x38 disk GUID, mixed-endian
    "PartitionEntryLBA" / Int64ul,  # 0x48 first LBA of this header's entry array
    "NumberOfPartitionEntries" / Int32ul,  # 0x50 entries in the array
    "SizeOfPartitionEntry" / Int32ul,  # 0x54 bytes per entry (128 * 2^n)
    "PartitionEntryArrayCRC32" / Int32ul,  # 0x58 CRC32 of the whole entry array
)  # 0x5C = 92 bytes

# UEFI Table 5-6 "GPT Partition Entry" --------------------------------------------------------
GPTPartitionEntry = Struct(
    "PartitionTypeGUID" / Bytes(16),  # 0x00 type GUID, mixed-endian; all zero = unused entry
    "UniquePartitionGUID" / Bytes(16),  # 0x10 this partition's GUID, mixed-endian
    "StartingLBA" / Int64ul,  # 0x20 first sector
    "EndingLBA" / Int64ul,  # 0x28 last sector, inclusive
    "Attributes" / Int64ul,  # 0x30 bit 0 required, 1 no block IO, 2 legacy BIOS bootable, 48-63 type specific
    "PartitionName" / Bytes(72),  # 0x38 36 UTF-16LE code units, zero padded
)  # 0x80 = 128 bytes

# UEFI Table 5-1 "Legacy MBR" / 5-3 "Protective MBR": see pydiskimg.mbr.structs.

#: header sector: the 92-byte header then zeros up to the sector size
GPTHeaderSector = Struct("header" / GPTHeader, Padding(512 - GPT_HEADER_SIZE))

def dtype_of(struct: Struct) -> np.dtype:
    """A packed numpy dtype with the same fields, offsets and sizes as ``struct``.

    Only fixed-size integer and ``Bytes`` fields are supported (enough for the entry array).
    """
    fields = []
    for sc in struct.subcons:
        name = sc.name
        inner = sc.subcon if hasattr(sc, "subcon") else sc
        cls = type(inner).__name__
        if cls == "FormatField":
            fmt = {"<Q": "<u8", "<L": "<u4", "<H": "<u2", "<B": "u1", "B": "u1"}[inner.fmtstr]
            fields.append((name, fmt))
        elif cls == "Bytes":
            fields.append((name, f"V{inner.length}"))
        else:  # pragma: no cover - a declaration this helper does not know
            raise TypeError(f"{name}: cannot map {cls} to numpy")
    dt = np.dtype(fields)
    if dt.itemsize != struct.sizeof():  # pragma: no cover - checked by the tests too
        raise TypeError("numpy dtype and construct declaration disagree")
    return dt


#: one partition entry, for bulk building and parsing of the entry array
GPT_ENTRY_DTYPE: np.dtype = dtype_of(GPTPartitionEntry)

# Partition type GUIDs (RFC text form) ----------------------------------------------------------
TYPE_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # EFI System Partition (sgdisk EF00)
TYPE_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"  # BIOS boot, "Hah!IdontNeedEFI" (EF02)
TYPE_LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # Linux filesystem data (8300)
TYPE_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # DPS root x86-64 (8304)
TYPE_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"  # Microsoft basic data (0700)
TYPE_XBOOTLDR = "BC13C2FF-59E6-4262-A352-B275FD6F7172"  # Linux extended boot, XBOOTLDR (EA00; parted bls_boot)

#: Attribute bits [UEFI Table 5-7]
ATTR_REQUIRED = 1 << 0
ATTR_NO_BLOCK_IO = 1 << 1
ATTR_LEGACY_BIOS_BOOTABLE = 1 << 2
