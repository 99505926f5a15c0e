"""Build sector 0: a plain MBR, or the protective MBR in front of a GPT."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .structs import BOOT_ACTIVE, BOOT_INACTIVE, MBR, OSTYPE_GPT_PROTECTIVE

#: the BIOS geometry sfdisk and fdisk assume for CHS fields (FORMATS.md C "Plain MBR")
HEADS = 255
SECTORS_PER_TRACK = 63


def lba_to_chs(lba: int) -> bytes:
    """CHS bytes (head, sector | cyl-high << 6, cyl-low) of ``lba`` at 255 heads x 63 sectors.

    Beyond cylinder 1023 the address cannot be expressed: ``FE FF FF``, as sfdisk writes it.
    """
    cyl = lba // (HEADS * SECTORS_PER_TRACK)
    if cyl > 1023:
        return b"\xfe\xff\xff"
    head = (lba // SECTORS_PER_TRACK) % HEADS
    sector = lba % SECTORS_PER_TRACK + 1
    return bytes((head, sector | ((cyl >> 8) << 6), cyl & 0xFF))


@dataclass(frozen=True)
class MBRRecord:
    """One primary partition record, in sectors."""

    start: int
    size: int
    os_type: int
    bootable: bool = False


_EMPTY = {
    "BootIndicator": 0,
    "StartingCHS": b"\0\0\0",
    "OSType": 0,
    "EndingCHS": b"\0\0\0",
    "StartingLBA": 0,
    "SizeInLBA": 0,
}


def build_mbr(records: Sequence[MBRRecord | None], disk_signature: int, boot_code: bytes = b"") -> bytes:
    """Sector 0 holding up to four primary records (``None`` = unused slot).

    The boot code area is zero unless ``boot_code`` is given (a bootloader installs its own).
    """
    if len(records) > 4:
        raise ValueError("an MBR holds at most four primary records")
    recs = []
    for r in list(records) + [None] * (4 - len(records)):
        if r is None:
            recs.append(dict(_EMPTY))
            continue
        recs.append(
            {
                "BootIndicator": BOOT_ACTIVE if r.bootable else BOOT_INACTIVE,
                "StartingCHS": lba_to_chs(r.start),
                "OSType": r.os_type,
                "EndingCHS": lba_to_chs(r.start + r.size - 1),
                "StartingLBA": r.start,
                "SizeInLBA": r.size,
            }
        )
    return MBR.build(
        {
            "BootCode": boot_code.ljust(440, b"\0"),
            "UniqueMBRDiskSignature": disk_signature,
            "Unknown": 0,
            "PartitionRecord": recs,
        }
    )


def build_protective_mbr(disk_sectors: int) -> bytes:
    """The protective MBR exactly as parted writes it (and sgdisk then keeps).

    One record: not bootable, starting CHS ``00 02 00``, type 0xEE, ending CHS ``FF FF FF``,
    starting LBA 1, size ``min(disk_sectors - 1, 0xFFFFFFFF)``; boot code and disk signature
    zero [UEFI §5.2.3; parted libparted/labels/gpt.c ``_write_pmbr``].
    """
    rec = {
        "BootIndicator": BOOT_INACTIVE,
        "StartingCHS": b"\x00\x02\x00",
        "OSType": OSTYPE_GPT_PROTECTIVE,
        "EndingCHS": b"\xff\xff\xff",
        "StartingLBA": 1,
        "SizeInLBA": min(disk_sectors - 1, 0xFFFFFFFF),
    }
    return MBR.build(
        {
            "BootCode": bytes(440),
            "UniqueMBRDiskSignature": 0,
            "Unknown": 0,
            "PartitionRecord": [rec, dict(_EMPTY), dict(_EMPTY), dict(_EMPTY)],
        }
    )
