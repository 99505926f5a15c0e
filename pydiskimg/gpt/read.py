"""Read and check a GPT: both headers, both entry arrays, their CRCs and the partitions.

Hostile input gives one :class:`~pydiskimg.errors.GPTError` (or :class:`GPTChecksumError`) that
names the structure, the LBA and what was expected; never a traceback, never a huge read.
"""

from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ChecksumError, GPTError
from ..mbr.read import parse
from .structs import GPT_ENTRY_DTYPE, GPT_HEADER_SIZE, GPT_SIGNATURE, GPTHeader

#: refuse entry arrays larger than this (sgdisk's own limit is far lower in practice)
MAX_ENTRY_ARRAY_BYTES = 1 << 22


class GPTChecksumError(GPTError, ChecksumError):
    """A GPT header or entry array CRC32 does not match."""


@dataclass(frozen=True)
class GPTEntry:
    """One used entry of the array."""

    number: int  # 1-based index in the array
    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int  # inclusive
    attributes: int
    name: str


@dataclass(frozen=True)
class GPTHeaderInfo:
    """The fields of one header, checked."""

    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: uuid.UUID
    entry_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int
    header_crc: int
    revision: int
    header_size: int


@dataclass(frozen=True)
class GPTTable:
    """A GPT as read: the primary header, the backup header, the used entries."""

    disk_sectors: int
    sector_size: int
    primary: GPTHeaderInfo
    backup: GPTHeaderInfo
    entries: tuple[GPTEntry, ...]

    @property
    def disk_guid(self) -> uuid.UUID:
        return self.primary.disk_guid


Reader = Callable[[int, int], bytes]
"""``read(offset, length) -> bytes``: a random-access byte source (``os.pread`` on a file,
:meth:`pydiskimg.audit.source.Source.read`, ...)."""


def fd_reader(fd: int) -> Reader:
    """A :data:`Reader` over an open file descriptor."""
    return lambda offset, length: os.pread(fd, length, offset)


def _pread(fd: Reader, length: int, offset: int, what: str, file_size: int, name: str) -> bytes:
    if offset + length > file_size:
        raise GPTError(
            f"{name}: {what} at bytes {offset}..{offset + length - 1} lies past the end of the "
            f"file ({file_size} bytes): truncated image?"
        )
    try:
        data = fd(offset, length)
    except OSError as e:
        raise GPTError(f"{name}: {what}: cannot read: {e.strerror}") from None
    if len(data) != length:
        raise GPTError(f"{name}: {what}: short read ({len(data)} of {length} bytes): truncated image?")
    return data


def _header(fd: Reader, lba: int, sector_size: int, file_size: int, sectors: int, name: str, which: str) -> tuple[GPTHeaderInfo, bytes]:
    where = f"{name}: {which} GPT header (LBA {lba})"
    sector = _pread(fd, sector_size, lba * sector_size, f"{which} GPT header (LBA {lba})", file_size, name)
    if sector[:8] != GPT_SIGNATURE:
        raise GPTError(f"{where}: signature is {sector[:8]!r}, expected {GPT_SIGNATURE!r}")
    h = parse(GPTHeader, sector[:GPT_HEADER_SIZE], where, GPTError)
    if not GPT_HEADER_SIZE <= h.HeaderSize <= sector_size:
        raise GPTError(f"{where}: HeaderSize is {h.HeaderSize}, expected {GPT_HEADER_SIZE}..{sector_size}")
    covered = bytearray(sector[: h.HeaderSize])
    covered[16:20] = b"\0\0\0\0"
    crc = zlib.crc32(covered)
    if crc != h.HeaderCRC32:
        raise GPTChecksumError(f"{where}: HeaderCRC32", crc, h.HeaderCRC32)
    if h.MyLBA != lba:
        raise GPTError(f"{where}: MyLBA is {h.MyLBA}, expected {lba}")
    if h.SizeOfPartitionEntry < 128 or h.SizeOfPartitionEntry % 128:
        raise GPTError(f"{where}: SizeOfPartitionEntry is {h.SizeOfPartitionEntry}, expected a multiple of 128")
    if h.NumberOfPartitionEntries == 0 or h.NumberOfPartitionEntries * h.SizeOfPartitionEntry > MAX_ENTRY_ARRAY_BYTES:
        raise GPTError(
            f"{where}: {h.NumberOfPartitionEntries} entries of {h.SizeOfPartitionEntry} bytes, "
            f"expected 1..{MAX_ENTRY_ARRAY_BYTES} bytes in all"
        )
    if not h.FirstUsableLBA <= h.LastUsableLBA + 1 or h.LastUsableLBA >= sectors or h.FirstUsableLBA < 2:
        raise GPTError(
            f"{where}: usable LBAs {h.FirstUsableLBA}..{h.LastUsableLBA} do not fit a disk of "
            f"{sectors} sectors: truncated image?"
        )
    info = GPTHeaderInfo(
        my_lba=h.MyLBA,
        alternate_lba=h.AlternateLBA,
        first_usable=h.FirstUsableLBA,
        last_usable=h.LastUsableLBA,
        disk_guid=uuid.UUID(bytes_le=bytes(h.DiskGUID)),
        entry_lba=h.PartitionEntryLBA,
        entry_count=h.NumberOfPartitionEntries,
        entry_size=h.SizeOfPartitionEntry,
        entries_crc=h.PartitionEntryArrayCRC32,
        header_crc=h.HeaderCRC32,
        revision=h.Revision,
        header_size=h.HeaderSize,
    )
    # the entry array must lie outside the usable area and inside the disk
    array_sectors = -(-info.entry_count * info.entry_size // sector_size)
    a0, a1 = info.entry_lba, info.entry_lba + array_sectors - 1
    inside_usable = not (a1 < info.first_usable or a0 > info.last_usable)
    if a0 < 1 or a1 >= sectors or a0 <= lba <= a1 or inside_usable:
        raise GPTError(
            f"{where}: entry array at LBA {a0}..{a1} is out of range (disk {sectors} sectors, "
            f"usable {info.first_usable}..{info.last_usable})"
        )
    return info, sector


def _entries(fd: Reader, info: GPTHeaderInfo, sector_size: int, file_size: int, name: str, which: str) -> bytes:
    length = info.entry_count * info.entry_size
    array = _pread(fd, length, info.entry_lba * sector_size, f"{which} GPT entry array (LBA {info.entry_lba})", file_size, name)
    crc = zlib.crc32(array)
    if crc != info.entries_crc:
        raise GPTChecksumError(f"{name}: {which} GPT entry array (LBA {info.entry_lba}): PartitionEntryArrayCRC32", crc, info.entries_crc)
    return array


def _decode_entries(array: bytes, info: GPTHeaderInfo, name: str) -> tuple[GPTEntry, ...]:
    rows = np.frombuffer(array, dtype=np.dtype((np.void, info.entry_size)))
    first128 = np.frombuffer(b"".join(bytes(r)[:128] for r in rows) if info.entry_size != 128 else array, dtype=GPT_ENTRY_DTYPE)
    used = np.nonzero(first128.view(np.uint8).reshape(-1, 128)[:, :16].any(axis=1))[0]
    out = []
    for i in used.tolist():
        r = first128[i]
        first, last = int(r["StartingLBA"]), int(r["EndingLBA"])
        n = i + 1
        if first > last:
            raise GPTError(f"{name}: GPT partition {n}: first LBA {first} is after last LBA {last}")
        if first < info.first_usable or last > info.last_usable:
            raise GPTError(
                f"{name}: GPT partition {n}: LBAs {first}..{last} are outside the usable range "
                f"{info.first_usable}..{info.last_usable}"
            )
        raw_name = bytes(r["PartitionName"])
        units = [raw_name[j : j + 2] for j in range(0, 72, 2)]
        if b"\0\0" in units:
            units = units[: units.index(b"\0\0")]
        out.append(
            GPTEntry(
                number=n,
                type_guid=uuid.UUID(bytes_le=bytes(r["PartitionTypeGUID"])),
                unique_guid=uuid.UUID(bytes_le=bytes(r["UniquePartitionGUID"])),
                first_lba=first,
                last_lba=last,
                attributes=int(r["Attributes"]),
                name=b"".join(units).decode("utf-16-le", errors="replace"),
            )
        )
    by_start = sorted(out, key=lambda e: e.first_lba)
    for a, b in zip(by_start, by_start[1:], strict=False):
        if b.first_lba <= a.last_lba:
            raise GPTError(
                f"{name}: GPT partitions {a.number} ({a.first_lba}..{a.last_lba}) and {b.number} "
                f"({b.first_lba}..{b.last_lba}) overlap"
            )
    return tuple(out)


def read_gpt(fd: Reader | int, file_size: int, sector_size: int = 512, name: str = "image") -> GPTTable:
    """Read and check the GPT of an image of ``file_size`` bytes (``fd``: a file descriptor or
    a :data:`Reader`).

    Both headers and both arrays are checked (signature, CRC32s, LBAs, consistency), and every
    used entry must lie in the usable range without overlapping another.
    """
    if isinstance(fd, int):
        fd = fd_reader(fd)
    sectors = file_size // sector_size
    if sectors < 3:
        raise GPTError(f"{name}: {file_size} bytes, too small to hold a GPT: truncated image?")
    primary, _ = _header(fd, 1, sector_size, file_size, sectors, name, "primary")
    array = _entries(fd, primary, sector_size, file_size, name, "primary")
    alt = primary.alternate_lba
    if alt >= sectors or alt <= 1:
        raise GPTError(
            f"{name}: primary GPT header: AlternateLBA is {alt}, outside the disk (last sector "
            f"{sectors - 1}): truncated image?"
        )
    backup, _ = _header(fd, alt, sector_size, file_size, sectors, name, "backup")
    if backup.alternate_lba != 1:
        raise GPTError(f"{name}: backup GPT header (LBA {alt}): AlternateLBA is {backup.alternate_lba}, expected 1")
    for field in ("first_usable", "last_usable", "disk_guid", "entry_count", "entry_size", "entries_crc"):
        if getattr(primary, field) != getattr(backup, field):
            raise GPTError(
                f"{name}: primary and backup GPT headers disagree on {field}: "
                f"{getattr(primary, field)} and {getattr(backup, field)}"
            )
    _entries(fd, backup, sector_size, file_size, name, "backup")
    return GPTTable(
        disk_sectors=sectors,
        sector_size=sector_size,
        primary=primary,
        backup=backup,
        entries=_decode_entries(array, primary, name),
    )
