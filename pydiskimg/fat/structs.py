"""FAT on-disk structures, each declared once, used for writing and for reading.

Field names are the Microsoft FAT specification's ("FAT32 File System Specification",
fatgen103 v1.03, [MSFAT]); every field is little-endian.  Offsets are in the comments.
Directory entries are bulk tables: :data:`DIRENT_DTYPE` and :data:`LFN_DTYPE` are numpy dtypes
derived from :data:`DirEntry` and :data:`LfnEntry` by :func:`struct_dtype` (the test suite checks
that sizes and sample rows agree byte for byte).
"""

from __future__ import annotations

import numpy as np
from construct import Bytes, Int8ul, Int16ul, Int32ul, Renamed, Struct

SECTOR = 512

#: the BPB fields shared by FAT12/16 and FAT32 (offsets 0..35)
_BPB_COMMON = (
    "BS_jmpBoot" / Bytes(3) * "0: x86 jump to the boot code (EB xx 90)",
    "BS_OEMName" / Bytes(8) * "3: formatting tool's name, informational",
    "BPB_BytsPerSec" / Int16ul * "11: bytes per sector: 512, 1024, 2048 or 4096",
    "BPB_SecPerClus" / Int8ul * "13: sectors per cluster, a power of two up to 128",
    "BPB_RsvdSecCnt" / Int16ul * "14: reserved sectors before the first FAT (boot sector included)",
    "BPB_NumFATs" / Int8ul * "16: number of FAT copies",
    "BPB_RootEntCnt" / Int16ul * "17: FAT12/16 root directory entries; 0 on FAT32",
    "BPB_TotSec16" / Int16ul * "19: total sectors if < 65536, else 0",
    "BPB_Media" / Int8ul * "21: media descriptor (F8 fixed disk), copied in FAT[0]",
    "BPB_FATSz16" / Int16ul * "22: FAT12/16 sectors per FAT; 0 on FAT32",
    "BPB_SecPerTrk" / Int16ul * "24: CHS sectors per track (INT 13h geometry)",
    "BPB_NumHeads" / Int16ul * "26: CHS heads",
    "BPB_HiddSec" / Int32ul * "28: sectors before this volume (partition start LBA)",
    "BPB_TotSec32" / Int32ul * "32: total sectors if >= 65536 (or always on FAT32)",
)

#: FAT32 boot sector (sector 0, backup at BPB_BkBootSec), 512 bytes
BootSector32 = Struct(
    *_BPB_COMMON,
    "BPB_FATSz32" / Int32ul * "36: sectors per FAT",
    "BPB_ExtFlags" / Int16ul * "40: bit 7 set = only FAT number bits 0-3 active; 0 = mirrored",
    "BPB_FSVer" / Int16ul * "42: version 0.0",
    "BPB_RootClus" / Int32ul * "44: first cluster of the root directory (2)",
    "BPB_FSInfo" / Int16ul * "48: sector of the FSInfo structure (1)",
    "BPB_BkBootSec" / Int16ul * "50: sector of the backup boot sector (6)",
    "BPB_Reserved" / Bytes(12) * "52: zero",
    "BS_DrvNum" / Int8ul * "64: INT 13h drive number (0x80 hard disk)",
    "BS_Reserved1" / Int8ul * "65: zero (Windows NT dirty flags)",
    "BS_BootSig" / Int8ul * "66: 0x29: the three next fields are present",
    "BS_VolID" / Int32ul * "67: volume serial number",
    "BS_VolLab" / Bytes(11) * "71: volume label, space padded ('NO NAME    ' when none)",
    "BS_FilSysType" / Bytes(8) * "82: 'FAT32   ', informational only",
    "BS_BootCode" / Bytes(420) * "90: boot code",
    "Signature_word" / Int16ul * "510: 0xAA55",
)

#: FAT12/FAT16 boot sector (read only: pydiskimg writes FAT32), 512 bytes
BootSector16 = Struct(
    *_BPB_COMMON,
    "BS_DrvNum" / Int8ul * "36: INT 13h drive number",
    "BS_Reserved1" / Int8ul * "37: zero",
    "BS_BootSig" / Int8ul * "38: 0x29: the three next fields are present",
    "BS_VolID" / Int32ul * "39: volume serial number",
    "BS_VolLab" / Bytes(11) * "43: volume label",
    "BS_FilSysType" / Bytes(8) * "54: 'FAT12   ' or 'FAT16   ', informational only",
    "BS_BootCode" / Bytes(448) * "62: boot code",
    "Signature_word" / Int16ul * "510: 0xAA55",
)

#: FAT32 FSInfo sector (BPB_FSInfo, backup at BPB_BkBootSec + BPB_FSInfo), 512 bytes
FSInfo = Struct(
    "FSI_LeadSig" / Int32ul * "0: 0x41615252 ('RRaA')",
    "FSI_Reserved1" / Bytes(480) * "4: zero",
    "FSI_StrucSig" / Int32ul * "484: 0x61417272 ('rrAa')",
    "FSI_Free_Count" / Int32ul * "488: free clusters, 0xFFFFFFFF = unknown",
    "FSI_Nxt_Free" / Int32ul * "492: hint: the last allocated cluster, 0xFFFFFFFF = unknown",
    "FSI_Reserved2" / Bytes(12) * "496: zero",
    "FSI_TrailSig" / Int32ul * "508: 0xAA550000",
)

#: short (8.3) directory entry, 32 bytes
DirEntry = Struct(
    "DIR_Name" / Bytes(11) * "0: 8+3 name, space padded, upper case; [0]=0xE5 deleted, 0x00 end",
    "DIR_Attr" / Int8ul * "11: RO 1, HID 2, SYS 4, VOL 8, DIR 0x10, ARCH 0x20; 0x0F = LFN slot",
    "DIR_NTRes" / Int8ul * "12: Windows NT case bits (0x08 base, 0x10 ext lower case)",
    "DIR_CrtTimeTenth" / Int8ul * "13: creation time, 10 ms units 0..199 on top of DIR_CrtTime",
    "DIR_CrtTime" / Int16ul * "14: creation time h<<11 | m<<5 | s/2",
    "DIR_CrtDate" / Int16ul * "16: creation date (y-1980)<<9 | m<<5 | d",
    "DIR_LstAccDate" / Int16ul * "18: last access date",
    "DIR_FstClusHI" / Int16ul * "20: first cluster, high 16 bits",
    "DIR_WrtTime" / Int16ul * "22: last write time",
    "DIR_WrtDate" / Int16ul * "24: last write date",
    "DIR_FstClusLO" / Int16ul * "26: first cluster, low 16 bits",
    "DIR_FileSize" / Int32ul * "28: file size in bytes (0 for folders)",
)

#: VFAT long-name slot, 32 bytes, stored in reverse order before its short entry
LfnEntry = Struct(
    "LDIR_Ord" / Int8ul * "0: slot number 1..20; 0x40 set on the last (physically first) slot",
    "LDIR_Name1" / Bytes(10) * "1: characters 1-5 (UTF-16LE)",
    "LDIR_Attr" / Int8ul * "11: 0x0F",
    "LDIR_Type" / Int8ul * "12: 0",
    "LDIR_Chksum" / Int8ul * "13: checksum of the short name",
    "LDIR_Name2" / Bytes(12) * "14: characters 6-11",
    "LDIR_FstClusLO" / Int16ul * "26: 0",
    "LDIR_Name3" / Bytes(4) * "28: characters 12-13",
)


def struct_dtype(struct: Struct) -> np.dtype:
    """The packed little-endian numpy dtype of a flat Struct of IntNul and Bytes(n) fields."""
    fields: list[tuple[str, object]] = []
    for sc in struct.subcons:
        sub = sc
        while isinstance(sub, Renamed):
            sub = sub.subcon
        if sub is Int8ul:
            fields.append((sc.name, "u1"))
        elif sub is Int16ul:
            fields.append((sc.name, "<u2"))
        elif sub is Int32ul:
            fields.append((sc.name, "<u4"))
        else:
            fields.append((sc.name, ("u1", (sub.sizeof(),))))
    return np.dtype(fields)


DIRENT_DTYPE = struct_dtype(DirEntry)
LFN_DTYPE = struct_dtype(LfnEntry)

# Constants of the format [MSFAT]
ATTR_READ_ONLY = 0x01
ATTR_HIDDEN = 0x02
ATTR_SYSTEM = 0x04
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LONG_NAME = 0x0F
LAST_LONG_ENTRY = 0x40
BOOT_SIGNATURE = 0xAA55
FSI_LEAD_SIG = 0x41615252
FSI_STRUC_SIG = 0x61417272
FSI_TRAIL_SIG = 0xAA550000
EXT_BOOT_SIG = 0x29
FAT32_MASK = 0x0FFFFFFF
MIN_CLUST_32 = 65525  # fewer clusters is FAT16 by the type rule [MSFAT]
MAX_CLUST_12 = 4084  # dosfstools' limits around the FAT12/16 boundary
MIN_CLUST_16 = 4087
MAX_CLUST_32 = 268435446  # dosfstools: 0x0FFFFFF6 - 2 + 2: highest usable cluster number - 1
