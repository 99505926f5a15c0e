"""The partition table of an image opened as a :class:`~pydiskimg.audit.source.Source`.

Reads with the partition helper's readers (:func:`pydiskimg.gpt.read.read_gpt`,
:func:`pydiskimg.mbr.read.read_mbr`); they take a file descriptor, so for images that are not
raw the table areas (the first and last MiB, where every table lives) are copied into a sparse
in-memory file of the disk's size first.  The raw records are also parsed field by field with
the same construct declarations, for ``diff``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import GPTError, ImageError, MBRError
from ..gpt.read import read_gpt
from ..gpt.structs import GPT_ENTRY_DTYPE, GPT_HEADER_SIZE, GPT_SIGNATURE, GPTHeader
from ..mbr.read import NoTableError, parse, read_mbr
from ..mbr.structs import MBR
from .source import Source

SECTOR = 512
_EDGE = 1 << 20


@dataclass(frozen=True)
class Part:
    """One partition, in bytes and sectors."""

    number: int
    first_lba: int
    last_lba: int
    type: str  # GPT type GUID (upper case) or MBR type as "0x83"
    guid: str | None = None
    name: str | None = None
    attributes: int | None = None
    bootable: bool | None = None

    @property
    def offset(self) -> int:
        return self.first_lba * SECTOR

    @property
    def size(self) -> int:
        return (self.last_lba - self.first_lba + 1) * SECTOR


@dataclass
class Disk:
    """The table kind, its partitions, and the byte areas the table occupies."""

    kind: str  # "gpt", "mbr" or "none"
    parts: list[Part] = field(default_factory=list)
    #: (start, end, label) byte ranges of the table structures
    areas: list[tuple[int, int, str]] = field(default_factory=list)
    disk_guid: str | None = None
    disk_signature: int | None = None
    table: Any = None


class _Fd:
    """A file descriptor holding the image's table areas (the image itself when raw)."""

    def __init__(self, src: Source) -> None:
        self.own = False
        if src.extents is None and src.format == "raw":
            self.fd = src.fd
            return
        self.fd = os.memfd_create("pydiskimg-table", os.MFD_CLOEXEC)
        self.own = True
        os.ftruncate(self.fd, src.size)
        head = src.read(0, min(_EDGE, src.size))
        os.pwrite(self.fd, head, 0)
        tail_at = max(0, src.size - _EDGE)
        os.pwrite(self.fd, src.read(tail_at, src.size - tail_at), tail_at)

    def close(self) -> None:
        if self.own:
            os.close(self.fd)


def read_disk(src: Source, name: str | None = None) -> Disk:
    """Read the partition table of ``src`` (GPT, MBR or none)."""
    name = name or src.path
    sector0 = src.read(0, SECTOR)
    sectors = src.size // SECTOR
    try:
        mbr = read_mbr(sector0, sectors, name)
    except NoTableError:
        return Disk("none")
    if mbr.is_protective or src.read(SECTOR, 8) == GPT_SIGNATURE:
        fdh = _Fd(src)
        try:
            gpt = read_gpt(fdh.fd, src.size, SECTOR, name)
        finally:
            fdh.close()
        parts = [Part(e.number, e.first_lba, e.last_lba, str(e.type_guid).upper(),
                      str(e.unique_guid).upper(), e.name, e.attributes) for e in gpt.entries]
        p, b = gpt.primary, gpt.backup
        areas = [(0, SECTOR, "protective MBR"),
                 (SECTOR, 2 * SECTOR, "primary GPT header"),
                 (p.entry_lba * SECTOR, p.entry_lba * SECTOR + p.entry_count * p.entry_size,
                  "primary GPT entries"),
                 (b.entry_lba * SECTOR, b.entry_lba * SECTOR + b.entry_count * b.entry_size,
                  "backup GPT entries"),
                 (b.my_lba * SECTOR, (b.my_lba + 1) * SECTOR, "backup GPT header")]
        return Disk("gpt", parts, areas, disk_guid=str(gpt.disk_guid).upper(), table=gpt,
                    disk_signature=mbr.disk_signature)
    parts = [Part(p.number, p.start, p.last, f"{p.os_type:#04x}", bootable=p.bootable)
             for p in mbr.partitions if p.os_type not in (0x05, 0x0F, 0x85)]
    if not mbr.partitions:
        from .fsdiff import probe  # (fsdiff imports this module's users)

        if probe(src, 0, src.size) is not None:
            # a FAT boot sector ends in 55 AA too: with no partition, it is a bare filesystem
            return Disk("none")
    return Disk("mbr", parts, [(0, SECTOR, "MBR")], disk_signature=mbr.disk_signature,
                table=mbr)


# -- raw records, for diff -----------------------------------------------------------------------
def _container_dict(c: Any) -> dict[str, Any]:
    return {k: v for k, v in c.items() if not k.startswith("_")}


def mbr_fields(src: Source) -> dict[str, Any]:
    """Every field of sector 0 by name (``PartitionRecord[1].OSType``...)."""
    raw = parse(MBR, src.read(0, SECTOR).ljust(SECTOR, b"\0")[:510] + b"\x55\xaa",
                "MBR", MBRError)
    out: dict[str, Any] = {}
    for k, v in _container_dict(raw).items():
        if k == "PartitionRecord":
            for i, rec in enumerate(v, start=1):
                for kk, vv in _container_dict(rec).items():
                    out[f"partition record {i} {kk}"] = vv
        else:
            out[k] = v
    out["Signature"] = src.read(510, 2)
    return out


def gpt_header_fields(src: Source, lba: int) -> dict[str, Any]:
    sector = src.read(lba * SECTOR, SECTOR)
    if sector[:8] != GPT_SIGNATURE:
        raise GPTError(f"GPT header at LBA {lba}: signature is {sector[:8]!r}")
    h = parse(GPTHeader, sector[:GPT_HEADER_SIZE], f"GPT header at LBA {lba}", GPTError)
    d = _container_dict(h)
    d["DiskGUID"] = str(uuid.UUID(bytes_le=bytes(d["DiskGUID"]))).upper()
    d["reserved bytes"] = sector[GPT_HEADER_SIZE:]
    return d


def gpt_entries(src: Source, lba: int, count: int, size: int) -> list[dict[str, Any]]:
    """The entries (all of them, used or not) as dicts, UUIDs as text."""
    if count * size > 1 << 22 or size < 128:
        raise ImageError(f"GPT entry array at LBA {lba}: {count} x {size} bytes is out of range")
    import numpy as np

    data = src.read(lba * SECTOR, count * size)
    rows = np.frombuffer(data, dtype=np.dtype((np.void, size)))
    out = []
    for r in rows:
        b = bytes(r)
        e = np.frombuffer(b[:128], dtype=GPT_ENTRY_DTYPE)[0]
        d = {
            "PartitionTypeGUID": str(uuid.UUID(bytes_le=bytes(e["PartitionTypeGUID"]))).upper(),
            "UniquePartitionGUID": str(uuid.UUID(bytes_le=bytes(e["UniquePartitionGUID"]))).upper(),
            "StartingLBA": int(e["StartingLBA"]),
            "EndingLBA": int(e["EndingLBA"]),
            "Attributes": int(e["Attributes"]),
            "PartitionName": bytes(e["PartitionName"]).decode("utf-16-le", "replace").rstrip("\0"),
            "extra bytes": b[128:],
        }
        out.append(d)
    return out
