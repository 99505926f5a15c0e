"""GRUB for BIOS (i386-pc): the fields of boot.img and core.img that installation patches.

Declared once; no logic.  Names and values are GRUB's own (GRUB 2.06):

* ``include/grub/i386/pc/boot.h`` — offsets inside boot.img, the 512-byte MBR boot code;
* ``include/grub/offsets.h`` — the blocklist record (``struct grub_pc_bios_boot_blocklist``) and
  the segment core.img is loaded at;
* ``util/setup.c`` (``grub-bios-setup``) — what is patched: the BPB and the partition table
  area are copied from the disk's sector 0, ``KERNEL_SECTOR`` gets the first sector of
  core.img, ``BOOT_DRIVE`` 0xFF, the 2-byte jump at ``DRIVE_CHECK`` two NOPs on a hard disk; in
  the first sector of core.img (diskboot.img) the blocklists, which grow *downwards* from the
  end of that sector, list the sectors of the rest of core.img.
"""

from __future__ import annotations

from construct import Int16ul, Int64ul, Struct

SECTOR = 512

# -- boot.img (include/grub/i386/pc/boot.h) -------------------------------------------------
#: GRUB_BOOT_MACHINE_BPB_START: the BIOS Parameter Block area, copied from the disk's sector 0
BPB_START = 0x03
#: GRUB_BOOT_MACHINE_BPB_END (exclusive)
BPB_END = 0x5A
#: GRUB_BOOT_MACHINE_KERNEL_SECTOR: le64, first sector (LBA) of core.img
KERNEL_SECTOR = 0x5C
#: GRUB_BOOT_MACHINE_BOOT_DRIVE: u8, the drive to read core.img from; 0xFF = the one the BIOS
#: booted from (DL), what grub-bios-setup writes
BOOT_DRIVE = 0x64
BOOT_DRIVE_FROM_BIOS = 0xFF
#: GRUB_BOOT_MACHINE_DRIVE_CHECK: a 2-byte ``jmp`` over the "BIOS passed a bad DL" workaround;
#: grub-bios-setup turns it into two NOPs for a hard disk (not a floppy)
DRIVE_CHECK = 0x66
DRIVE_CHECK_HARD_DISK = b"\x90\x90"
#: GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC: the disk signature (0x1B8) ...
WINDOWS_NT_MAGIC = 0x1B8
#: ... up to GRUB_BOOT_MACHINE_PART_END (exclusive): signature, 2 bytes, the four partition
#: records; grub-bios-setup keeps the disk's bytes there
PART_END = 0x1FE
#: GRUB_BOOT_MACHINE_SIGNATURE at 0x1FE
SIGNATURE = 0x1FE

# -- core.img (include/grub/offsets.h, util/setup.c) ---------------------------------------
#: struct grub_pc_bios_boot_blocklist: one run of sectors diskboot.img loads
Blocklist = Struct(
    "start" / Int64ul,  # first sector (LBA) of the run
    "len" / Int16ul,  # number of sectors; 0 ends the list
    "segment" / Int16ul,  # real-mode segment the run is loaded at
)  # 12 bytes = GRUB_BOOT_MACHINE_LIST_SIZE
BLOCKLIST_SIZE = 12
#: the first (highest) blocklist record sits at the very end of core.img's first sector
FIRST_BLOCKLIST = SECTOR - BLOCKLIST_SIZE
#: GRUB_BOOT_I386_PC_KERNEL_SEG: diskboot.img is loaded at 0x800:0; the rest of core.img
#: follows it, so the first run's segment is 0x800 + 512 / 16
KERNEL_SEG = 0x800
FIRST_RUN_SEGMENT = KERNEL_SEG + (SECTOR >> 4)
#: GRUB_KERNEL_I386_PC_NO_REED_SOLOMON_LENGTH, in core.img's second sector (lzma_decompress.img)
NO_REED_SOLOMON_LENGTH = 0x14
#: GRUB_KERNEL_I386_PC_REED_SOLOMON_REDUNDANCY: bytes of Reed-Solomon codes after core.img (0:
#: none, what ``grub-bios-setup --no-rs-codes`` leaves and what pydiskimg writes)
REED_SOLOMON_REDUNDANCY = 0x10
#: (0x78000 - GRUB_KERNEL_I386_PC_LINK_ADDR 0x9000) >> 9: the most sectors core.img may have
MAX_CORE_SECTORS = (0x78000 - 0x9000) >> 9
