"""MBR on-disk structures [UEFI 2.x §5.2.1 "Legacy MBR", §5.2.3 "Protective MBR"].

Declared once, used to write and to read.  Field names follow the UEFI specification's tables.
"""

from __future__ import annotations

from construct import Array, Bytes, Const, Int8ul, Int16ul, Int32ul, Struct

#: bytes 510..511 of sector 0
MBR_SIGNATURE = 0xAA55
#: the protective MBR's partition record type [UEFI §5.2.3]
OSTYPE_GPT_PROTECTIVE = 0xEE
#: partition record types used here
OSTYPE_LINUX = 0x83
OSTYPE_ESP = 0xEF
OSTYPE_EXTENDED = (0x05, 0x0F, 0x85)
#: BootIndicator values
BOOT_ACTIVE = 0x80
BOOT_INACTIVE = 0x00

# UEFI Table 5-2 "Legacy MBR Partition Record" --------------------------------------------------
MBRPartitionRecord = Struct(
    "BootIndicator" / Int8ul,  # 0x0 0x80 bootable (active), 0x00 not
    "StartingCHS" / Bytes(3),  # 0x1 head, sector | (cylinder >> 8) << 6, cylinder & 0xFF
    "OSType" / Int8ul,  # 0x4 partition type (0x83 Linux, 0xEE GPT protective, 0 unused)
    "EndingCHS" / Bytes(3),  # 0x5 CHS of the last sector, same encoding
    "StartingLBA" / Int32ul,  # 0x8 first sector
    "SizeInLBA" / Int32ul,  # 0xC number of sectors
)  # 0x10 = 16 bytes

# UEFI Table 5-1 "Legacy MBR" (also the layout of the protective MBR, Table 5-3) ---------------
MBR = Struct(
    "BootCode" / Bytes(440),  # 0x000 x86 boot code (unused by UEFI)
    "UniqueMBRDiskSignature" / Int32ul,  # 0x1B8 disk signature (sfdisk's label-id); 0 in a PMBR
    "Unknown" / Int16ul,  # 0x1BC zero
    "PartitionRecord" / Array(4, MBRPartitionRecord),  # 0x1BE four primary records
    "Signature" / Const(MBR_SIGNATURE, Int16ul),  # 0x1FE 0xAA55 (bytes 55 AA)
)  # 0x200 = 512 bytes
