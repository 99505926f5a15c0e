"""Read and check sector 0: a plain MBR or a protective MBR.

Hostile input gives one :class:`~pydiskimg.errors.MBRError` that says what is wrong and where;
construct's own exceptions never escape (see :func:`parse`).
"""

from __future__ import annotations

import struct as _struct
from dataclasses import dataclass
from typing import Any

from construct import ConstructError

from ..errors import ImageError, MBRError
from .structs import BOOT_ACTIVE, BOOT_INACTIVE, MBR, OSTYPE_GPT_PROTECTIVE


class NoTableError(MBRError):
    """Sector 0 carries no 55 AA signature: there is no partition table at all."""


def parse(struct: Any, data: bytes, where: str, error: type[ImageError]) -> Any:
    """``struct.parse(data)``, with every construct failure turned into ``error`` naming ``where``.

    The one place where construct's exceptions (and the ``KeyError``/``struct.error`` it can
    leak) are translated.
    """
    try:
        return struct.parse(data)
    except (ConstructError, KeyError, _struct.error, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error(f"{where}: cannot parse: {msg}") from None


@dataclass(frozen=True)
class MBRPartition:
    """One used primary record."""

    number: int  # 1..4, the record's slot + 1
    bootable: bool
    os_type: int
    start: int  # first sector
    size: int  # sectors
    starting_chs: bytes
    ending_chs: bytes

    @property
    def last(self) -> int:
        return self.start + self.size - 1


@dataclass(frozen=True)
class MBRTable:
    """Sector 0 as read."""

    disk_signature: int
    partitions: tuple[MBRPartition, ...]
    boot_code_zero: bool

    @property
    def is_protective(self) -> bool:
        """True when a record has type 0xEE: a GPT follows (a hybrid MBR if others are used)."""
        return any(p.os_type == OSTYPE_GPT_PROTECTIVE for p in self.partitions)


def read_mbr(sector0: bytes, disk_sectors: int, name: str = "image") -> MBRTable:
    """Parse and check sector 0 of a disk of ``disk_sectors`` sectors.

    Checks: the 55 AA signature, boot indicators 0x00/0x80, non-empty records inside the disk,
    no overlaps (a protective record is allowed to cover the others, as in a hybrid MBR).
    """
    if len(sector0) < 512:
        raise NoTableError(f"{name}: {len(sector0)} bytes, too short to hold an MBR (512 bytes)")
    if sector0[510:512] != b"\x55\xaa":
        raise NoTableError(
            f"{name}: no partition table: bytes 510-511 are {sector0[510:512].hex(' ')}, expected 55 aa"
        )
    raw = parse(MBR, sector0[:512], f"{name}: MBR", MBRError)
    parts = []
    for i, rec in enumerate(raw.PartitionRecord, start=1):
        if rec.BootIndicator not in (BOOT_ACTIVE, BOOT_INACTIVE):
            raise MBRError(
                f"{name}: MBR partition {i}: boot indicator {rec.BootIndicator:#04x}, expected 0x00 or 0x80"
            )
        if rec.OSType == 0:
            continue
        if rec.SizeInLBA == 0:
            raise MBRError(f"{name}: MBR partition {i} (type {rec.OSType:#04x}) has zero sectors")
        if rec.StartingLBA == 0:
            raise MBRError(f"{name}: MBR partition {i} starts at sector 0, over the MBR itself")
        p = MBRPartition(
            number=i,
            bootable=rec.BootIndicator == BOOT_ACTIVE,
            os_type=rec.OSType,
            start=rec.StartingLBA,
            size=rec.SizeInLBA,
            starting_chs=bytes(rec.StartingCHS),
            ending_chs=bytes(rec.EndingCHS),
        )
        # The protective record of a GPT disk larger than 2 TiB is clamped to 0xFFFFFFFF and
        # may claim more than the disk in a truncated or grown image: only plain records are
        # held to the disk's end.
        if p.os_type != OSTYPE_GPT_PROTECTIVE and p.last >= disk_sectors:
            raise MBRError(
                f"{name}: MBR partition {i}: sectors {p.start}..{p.last} run past the end of the "
                f"disk ({disk_sectors} sectors): truncated image?"
            )
        parts.append(p)
    plain = sorted((p for p in parts if p.os_type != OSTYPE_GPT_PROTECTIVE), key=lambda p: p.start)
    for a, b in zip(plain, plain[1:], strict=False):
        if b.start <= a.last:
            raise MBRError(
                f"{name}: MBR partitions {a.number} ({a.start}..{a.last}) and {b.number} "
                f"({b.start}..{b.last}) overlap"
            )
    return MBRTable(
        disk_signature=raw.UniqueMBRDiskSignature,
        partitions=tuple(parts),
        boot_code_zero=not any(raw.BootCode),
    )
