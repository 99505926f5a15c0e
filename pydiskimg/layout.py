"""Partition layouts: the seed's five tables and current nixpkgs' ``efixbootldr``, planned exactly
as their parted scripts place them.

Public API (pure functions and frozen dataclasses; the only I/O is in :func:`write_table` and
:func:`read_table`):

``plan_layout(table, disk_bytes, boot_size, *, root_gpuid=None, disk_guid=None, seed=None)``
    → :class:`DiskLayout`.  ``table`` is one of :data:`TABLES`; ``disk_bytes`` the image size;
    ``boot_size`` the seed's ``bootSize`` (a string read as parted reads it, see
    :func:`pydiskimg.sizes.parse_boot_size`; used by ``efi``, ``hybrid`` and ``efixbootldr`` only).  Raises
    :class:`~pydiskimg.errors.DoesNotFitError` (disk too small: says the minimum) or
    :class:`~pydiskimg.errors.UsageError` (unknown table, bad boot size).
``min_disk_size(table, boot_size, root_fs_bytes)`` → the smallest whole-MiB disk size whose
    root partition holds ``root_fs_bytes``.
``reserved_space(table, boot_size)`` → bytes of a whole-MiB disk that are not the root
    partition (``disk − root``; the same for every whole-MiB disk size that fits).
``min_fitting_disk(table, boot_size)`` → the smallest disk size (bytes, whole sectors) on which
    the seed's parted script succeeds at all.
``write_table(image, layout)`` writes the MBR, or the protective MBR + GPT + backups.
``read_table(path_or_fd)`` → :class:`DiskLayout` read back from an image (checked; hostile
    input raises :class:`~pydiskimg.errors.MBRError` / :class:`~pydiskimg.errors.GPTError`).

Placement: every partition's first and last sector come from :mod:`pydiskimg.gpt.parted_model`,
a step-by-step model of parted 3.5 running the seed's script on a disk of that size, so they
match parted at any size, whole MiB or not.  For the seed's defaults (1000 MiB, bootSize 256M):

============  ========================================================================
legacy        1: 2048 .. 2045951, MBR type 0x83
legacy+gpt    1: 2048 .. 4095 BIOS boot "no-fs" · 2: 4096 .. 2045951 Linux fs "primary"
efi           1: 16384 .. 499711 ESP "ESP" · 2: 499712 .. 2045951 Linux fs "primary"
hybrid        1: 16384 .. 499711 ESP · 2: 34 .. 2048 BIOS boot "no-fs" · 3: 499712 .. root
efixbootldr   1: 16384 .. 204799 ESP "ESP" · 2: 204800 .. 499711 XBOOTLDR "BOOT" ·
              3: 499712 .. 2045951 Linux fs "ROOT"
============  ========================================================================

``efixbootldr`` is current nixpkgs' sixth ``partitionTableType`` (systemd-boot with an XBOOTLDR
partition): ``mkpart ESP fat32 8MiB 100MiB``, ``set 1 boot on``, ``mkpart BOOT fat32 100MiB
${bootSize}``, ``set 2 bls_boot on``, ``mkpart ROOT ext4 ${bootSize} -1``; its sgdisk line gives
partition 2 ``970C694F-…`` and partition 3 ``rootGPUID``.  Its ``bootSize`` must be more than
100 MiB (XBOOTLDR runs from 100 MiB to it).

Identifiers (:mod:`pydiskimg.ids`): by default those of the seed's sgdisk line — disk GUID
:data:`~pydiskimg.ids.SEED_DISK_GUID`, partition 1 ``1C06F03B-…``, partition 2 of ``hybrid``
``970C694F-…``, the root partition ``root_gpuid`` (default ``F222513B-…``; the seed's
``legacy+gpt`` line misses it and leaves ``970C694F-…`` there, pydiskimg sets ``root_gpuid``).
With ``seed``, every GUID not given explicitly is derived as systemd-repart derives it.  A plain
MBR gets the disk signature :func:`pydiskimg.ids.mbr_signature` of the disk GUID.
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

from . import ids
from .errors import DoesNotFitError, ImageError, UsageError
from .gpt import parted_model as pm
from .gpt.read import Reader, fd_reader, read_gpt
from .gpt.structs import TYPE_BIOS_BOOT, TYPE_ESP, TYPE_LINUX_FS, TYPE_ROOT_X86_64, TYPE_XBOOTLDR
from .gpt.write import write_gpt
from .mbr.read import read_mbr
from .mbr.structs import OSTYPE_ESP, OSTYPE_LINUX
from .mbr.write import MBRRecord, build_mbr
from .sizes import MiB, PartedLocation, format_bytes, parse_boot_size

#: the seed's partitionTableType values
TABLES = ("none", "legacy", "legacy+gpt", "efi", "hybrid", "efixbootldr")
#: the tables whose layout depends on ``bootSize``
BOOT_TABLES = ("efi", "hybrid", "efixbootldr")
#: table kinds :func:`read_table` may also report for tables that are none of the seed's shapes
READ_ONLY_TABLES = ("gpt", "mbr")
SECTOR = 512
log = logging.getLogger(__name__)

ESP_TYPE = uuid.UUID(TYPE_ESP)
BIOS_BOOT_TYPE = uuid.UUID(TYPE_BIOS_BOOT)
LINUX_FS_TYPE = uuid.UUID(TYPE_LINUX_FS)
XBOOTLDR_TYPE = uuid.UUID(TYPE_XBOOTLDR)
ROOT_TYPES = (LINUX_FS_TYPE, uuid.UUID(TYPE_ROOT_X86_64))

ROLES = ("esp", "xbootldr", "bios", "root", "data")


class Extent(NamedTuple):
    """A byte range of the disk."""

    offset: int
    size: int


@dataclass(frozen=True)
class Partition:
    """One partition, in sectors of 512 bytes.

    GPT partitions carry ``type_guid``, ``unique_guid``, ``name`` and ``attributes``; plain MBR
    partitions carry ``mbr_type`` and ``bootable``.
    """

    number: int  # 1-based: GPT entry index + 1, or MBR record slot + 1
    first_lba: int
    last_lba: int  # inclusive
    role: str  # "esp", "xbootldr", "bios", "root" or "data" (read back: other types)
    type_guid: uuid.UUID | None = None
    unique_guid: uuid.UUID | None = None
    name: str = ""
    attributes: int = 0
    mbr_type: int | None = None
    bootable: bool = False

    @property
    def sectors(self) -> int:
        return self.last_lba - self.first_lba + 1

    @property
    def offset(self) -> int:
        """Byte offset of the first sector."""
        return self.first_lba * SECTOR

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self.sectors * SECTOR

    @property
    def type_name(self) -> str:
        if self.type_guid is not None:
            return _TYPE_NAMES.get(self.type_guid, "unknown")
        return _MBR_TYPE_NAMES.get(self.mbr_type or 0, "unknown")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (the ``partitions[]`` items of ``inspect --json``)."""
        return {
            "number": self.number,
            "first_lba": self.first_lba,
            "last_lba": self.last_lba,
            "sectors": self.sectors,
            "offset": self.offset,
            "size": self.size,
            "role": self.role,
            "type": str(self.type_guid).upper() if self.type_guid is not None else f"{self.mbr_type:#04x}",
            "type_name": self.type_name,
            "guid": str(self.unique_guid).upper() if self.unique_guid is not None else None,
            "name": self.name if self.type_guid is not None else None,
            "attributes": self.attributes if self.type_guid is not None else None,
            "flags": partition_flags(self),
        }


_TYPE_NAMES = {
    ESP_TYPE: "EFI System",
    BIOS_BOOT_TYPE: "BIOS boot",
    XBOOTLDR_TYPE: "Linux extended boot (XBOOTLDR)",
    LINUX_FS_TYPE: "Linux filesystem",
    uuid.UUID(TYPE_ROOT_X86_64): "Linux root (x86-64)",
}
_MBR_TYPE_NAMES = {OSTYPE_LINUX: "Linux", OSTYPE_ESP: "EFI System", 0xEE: "GPT protective", 0x0C: "W95 FAT32 (LBA)", 0x05: "Extended", 0x0F: "W95 Extended (LBA)"}


def type_name(type_text: str) -> str:
    """The name of a partition type given as text: a GPT type GUID or an MBR type (``"0x83"``);
    ``"unknown"`` for types pydiskimg does not name."""
    if type_text.lower().startswith("0x"):
        return _MBR_TYPE_NAMES.get(int(type_text, 16), "unknown")
    try:
        return _TYPE_NAMES.get(uuid.UUID(type_text), "unknown")
    except ValueError:
        return "unknown"


def partition_flags(p: Partition) -> list[str]:
    """parted-style flag names: ``boot, esp`` for an ESP, ``bios_grub`` for BIOS boot, and
    ``bls_boot`` for XBOOTLDR, ``legacy_boot``/``required``/``no_block_io`` from GPT attribute
    bits, ``boot`` for an active
    MBR record."""
    flags: list[str] = []
    if p.type_guid is not None:
        if p.type_guid == ESP_TYPE:
            flags += ["boot", "esp"]
        if p.type_guid == BIOS_BOOT_TYPE:
            flags.append("bios_grub")
        if p.type_guid == XBOOTLDR_TYPE:
            flags.append("bls_boot")
        if p.attributes & 1:
            flags.append("required")
        if p.attributes & 2:
            flags.append("no_block_io")
        if p.attributes & 4:
            flags.append("legacy_boot")
    elif p.bootable:
        flags.append("boot")
    return flags


@dataclass(frozen=True)
class DiskLayout:
    """A disk's partition table: kind, size, identifiers and partitions (sorted by number).

    ``disk_guid`` is the GPT disk GUID (``None`` for a plain MBR, whose signature is derived from
    the disk GUID the plan would have used); ``mbr_signature`` the plain MBR's disk signature
    (``None`` on GPT disks).
    """

    table: str
    disk_bytes: int
    disk_guid: uuid.UUID | None
    mbr_signature: int | None
    partitions: tuple[Partition, ...] = field(default_factory=tuple)

    @property
    def scheme(self) -> str:
        """``"none"``, ``"mbr"`` or ``"gpt"``: what is on disk."""
        if self.table in ("none",):
            return "none"
        return "mbr" if self.table in ("legacy", "mbr") else "gpt"

    @property
    def disk_sectors(self) -> int:
        return self.disk_bytes // SECTOR

    def partition(self, role: str) -> Partition | None:
        """The first partition with ``role``, or None."""
        for p in self.partitions:
            if p.role == role:
                return p
        return None

    @property
    def root(self) -> Extent:
        """Byte offset and size of the root filesystem (the whole disk for ``none``)."""
        p = self.partition("root")
        if p is None:
            if self.table == "none":
                return Extent(0, self.disk_bytes)
            raise UsageError(f"{self.table} table has no root partition")
        return Extent(p.offset, p.size)

    @property
    def esp(self) -> Extent | None:
        """Byte offset and size of the ESP, or None."""
        p = self.partition("esp")
        return None if p is None else Extent(p.offset, p.size)

    # conveniences for the build pipeline
    @property
    def root_offset(self) -> int:
        return self.root.offset

    @property
    def root_size(self) -> int:
        return self.root.size

    @property
    def root_number(self) -> int | None:
        p = self.partition("root")
        return None if p is None else p.number

    @property
    def root_guid(self) -> uuid.UUID | None:
        p = self.partition("root")
        return None if p is None else p.unique_guid

    @property
    def esp_offset(self) -> int | None:
        e = self.esp
        return None if e is None else e.offset

    @property
    def esp_size(self) -> int | None:
        e = self.esp
        return None if e is None else e.size

    @property
    def esp_number(self) -> int | None:
        p = self.partition("esp")
        return None if p is None else p.number

    @property
    def esp_guid(self) -> uuid.UUID | None:
        p = self.partition("esp")
        return None if p is None else p.unique_guid

    @property
    def xbootldr(self) -> Extent | None:
        """Byte offset and size of the XBOOTLDR partition (``efixbootldr``), or None."""
        p = self.partition("xbootldr")
        return None if p is None else Extent(p.offset, p.size)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description of the table (``inspect --json``'s ``table`` plus partitions)."""
        d: dict[str, Any] = {
            "kind": self.table,
            "scheme": self.scheme,
            "disk_bytes": self.disk_bytes,
            "disk_sectors": self.disk_sectors,
            "sector_size": SECTOR,
        }
        if self.scheme == "gpt":
            d["disk_guid"] = str(self.disk_guid).upper() if self.disk_guid else None
        if self.scheme == "mbr":
            d["mbr_signature"] = f"0x{self.mbr_signature:08x}" if self.mbr_signature is not None else None
        d["partitions"] = [p.to_dict() for p in self.partitions]
        return d


# -- planning -----------------------------------------------------------------------------------

_MB = 1000 * 1000


def _loc(text: str, number: float, unit: int, iec: bool) -> pm.Location:
    return pm.Location(text, number, unit, iec)


_L_1MIB = _loc("1MiB", 1, MiB, True)
_L_8MIB = _loc("8MiB", 8, MiB, True)
_L_100MIB = _loc("100MiB", 100, MiB, True)
_L_1MB = _loc("1MB", 1, _MB, False)
_L_2MB = _loc("2MB", 2, _MB, False)
_L_0 = _loc("0", 0, _MB, False)
_L_1024KIB = _loc("1024KiB", 1024, 1024, True)
_L_END = _loc("-1", -1, _MB, False)


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise UsageError(
            f"partitionTableType (--partition-table): {table!r} is not a table type; expected "
            f"one of {', '.join(TABLES)}"
        )


@lru_cache(maxsize=4096)
def _run_seed_script(table: str, sectors: int, boot: PartedLocation) -> tuple[tuple[int, int, int], ...]:
    """The (number, first, last) of each partition the seed's parted lines make, in the order
    they are made; raises pm.PartedFailure when the script would fail."""
    b = pm.Location(boot.text, boot.number, boot.unit_bytes, boot.iec)
    if table == "legacy":
        d = pm.Disk("msdos", sectors)
        d.mkpart("primary", _L_1MIB, _L_END)
    elif table == "legacy+gpt":
        d = pm.Disk("gpt", sectors)
        d.mkpart("no-fs", _L_1MB, _L_2MB)
        d.align_check(1)
        d.mkpart("primary", _L_2MB, _L_END)
        d.align_check(2)
    elif table == "efi":
        d = pm.Disk("gpt", sectors)
        d.mkpart("ESP", _L_8MIB, b)
        d.mkpart("primary", b, _L_END)
    elif table == "hybrid":
        d = pm.Disk("gpt", sectors)
        d.mkpart("ESP", _L_8MIB, b)
        d.mkpart("no-fs", _L_0, _L_1024KIB)
        d.mkpart("primary", b, _L_END)
    elif table == "efixbootldr":
        # `set 1 boot on` and `set 2 bls_boot on` change types only, not places
        d = pm.Disk("gpt", sectors)
        d.mkpart("ESP", _L_8MIB, _L_100MIB)
        d.mkpart("BOOT", _L_100MIB, b)
        d.mkpart("ROOT", b, _L_END)
    else:  # pragma: no cover - checked before
        raise AssertionError(table)
    return tuple((p.num, p.start, p.end) for p in d.parts)


# roles, seed GUIDs and names of each table's partitions, in the order parted makes them
_SHAPES: dict[str, tuple[tuple[str, str, uuid.UUID | None], ...]] = {
    "legacy": (("root", "", None),),
    "legacy+gpt": (("bios", "no-fs", ids.SEED_PART1_GUID), ("root", "primary", None)),
    "efi": (("esp", "ESP", ids.SEED_PART1_GUID), ("root", "primary", None)),
    "hybrid": (
        ("esp", "ESP", ids.SEED_PART1_GUID),
        ("bios", "no-fs", ids.SEED_PART2_GUID),
        ("root", "primary", None),
    ),
    "efixbootldr": (
        ("esp", "ESP", ids.SEED_PART1_GUID),
        ("xbootldr", "BOOT", ids.SEED_PART2_GUID),
        ("root", "ROOT", None),
    ),
}
_ROLE_TYPE = {"esp": ESP_TYPE, "xbootldr": XBOOTLDR_TYPE, "bios": BIOS_BOOT_TYPE, "root": LINUX_FS_TYPE}


def _boot(table: str, boot_size: str | PartedLocation) -> PartedLocation:
    if table == "efixbootldr":
        boot = parse_boot_size(boot_size, "bootSize (--boot-size)")
        if boot.approx_bytes <= 100 * MiB:
            raise UsageError(
                f"bootSize (--boot-size): {boot.text!r} is too small for the efixbootldr layout: "
                f"XBOOTLDR runs from 100 MiB (where the ESP ends) to bootSize, so it must be more "
                f"than 100 MiB (e.g. '256M')"
            )
        return boot
    if table in BOOT_TABLES:
        return parse_boot_size(boot_size, "bootSize (--boot-size)")
    # unused by the other tables (as in the seed), but still validated
    parse_boot_size(boot_size, "bootSize (--boot-size)")
    return parse_boot_size("256M")


def _fits(table: str, sectors: int, boot: PartedLocation) -> bool:
    try:
        _run_seed_script(table, sectors, boot)
    except pm.PartedFailure:
        return False
    return True


@lru_cache(maxsize=256)
def _min_fitting_sectors(table: str, boot: PartedLocation) -> int:
    """The smallest sector count on which the seed's script succeeds (success is monotonic in
    the disk size past that point: the tests check it against parted)."""
    hi = 1 << 16
    while not _fits(table, hi, boot):
        hi <<= 1
        if hi > 1 << 44:
            raise UsageError(
                f"bootSize (--boot-size): {boot.text!r} cannot be laid out by the seed's parted "
                f"script at any disk size"
            )
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits(table, mid, boot):
            hi = mid
        else:
            lo = mid + 1
    return lo


def min_fitting_disk(table: str, boot_size: str | PartedLocation = "256M") -> int:
    """The smallest disk size in bytes (a whole number of sectors) that the seed's parted
    script can partition for ``table``; 0 for ``none``."""
    _check_table(table)
    if table == "none":
        return 0
    return _min_fitting_sectors(table, _boot(table, boot_size)) * SECTOR


def _roomy(boot: PartedLocation) -> int:
    """A disk size (sectors) with room to spare for a layout with this boot size."""
    return max(1 << 22, 4 * int(boot.approx_bytes) // SECTOR + (1 << 20))


@lru_cache(maxsize=1)
def _max_legacy_sectors() -> int:
    """The largest disk (sectors) the seed's msdos script can partition."""
    boot = parse_boot_size("256M")
    lo, hi = _min_fitting_sectors("legacy", boot), 1 << 34
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _fits("legacy", mid, boot):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _min_boot_size(table: str) -> str:
    """The smallest whole-MB ``bootSize`` the seed's script accepts (for error messages)."""
    for mb in range(101 if table == "efixbootldr" else 1, 1000):
        cand = parse_boot_size(f"{mb}M")
        if _fits(table, _roomy(cand), cand):
            return f"{mb}M"
    return "?"  # pragma: no cover


def plan_layout(
    table: str,
    disk_bytes: int,
    boot_size: str | PartedLocation = "256M",
    *,
    root_gpuid: uuid.UUID | None = None,
    disk_guid: uuid.UUID | None = None,
    seed: uuid.UUID | None = None,
) -> DiskLayout:
    """The seed's partition layout ``table`` on a disk of ``disk_bytes`` bytes.

    ``root_gpuid``/``disk_guid``: explicit identifiers (``None``: derived from ``seed`` if given,
    else the seed's defaults).  Raises DoesNotFitError when the disk is too small (the message
    says the smallest size that fits) and UsageError for an unknown table or a bad boot size.
    """
    _check_table(table)
    if disk_bytes < 0:
        raise UsageError(f"diskSize (--disk-size): {disk_bytes} is negative")
    boot = _boot(table, boot_size)
    if disk_guid is None:
        disk_guid = ids.repart_disk_uuid(seed) if seed is not None else ids.SEED_DISK_GUID
    if table == "none":
        return DiskLayout("none", disk_bytes, None, None, ())
    sectors = disk_bytes // SECTOR
    try:
        made = _run_seed_script(table, sectors, boot)
    except pm.PartedFailure as e:
        if table == "legacy" and sectors > _max_legacy_sectors():
            raise UsageError(
                f"diskSize (--disk-size): {disk_bytes} bytes is too large for the legacy (MBR) "
                f"layout: an MBR partition holds at most 2^32 - 1 sectors, so the seed's parted "
                f"script fails above {_max_legacy_sectors() * SECTOR} bytes; use legacy+gpt"
            ) from None
        if table in BOOT_TABLES and not _fits(table, _roomy(boot), boot):
            smallest = _min_boot_size(table)
            if boot.approx_bytes >= parse_boot_size(smallest).approx_bytes:
                raise UsageError(
                    f"bootSize (--boot-size): the seed's parted script cannot lay out the {table} "
                    f"layout with bootSize {boot.text!r} at any disk size (parted reads it as sector "
                    f"{boot.sector()} with a tolerance of {boot.radius()} sectors, and the "
                    f"{'XBOOTLDR' if table == 'efixbootldr' else 'ESP'}'s end "
                    f"and the root partition's start collide there); write it in M (MB) or MiB, "
                    f"e.g. '256M' or '256MiB'"
                ) from None
            raise UsageError(
                f"bootSize (--boot-size): {boot.text!r} is too small for the {table} layout "
                f"(the {'XBOOTLDR partition starts at 100' if table == 'efixbootldr' else 'ESP starts at 8'} MiB; parted reads {boot.text!r} as about "
                f"{format_bytes(int(boot.approx_bytes))}): at least {smallest!r} is needed"
            ) from None
        need = _min_fitting_sectors(table, boot) * SECTOR
        log.debug("parted would fail: %s", e)
        raise DoesNotFitError(
            f"diskSize (--disk-size) for the {table} layout"
            + (f" with bootSize {boot.text}" if table in BOOT_TABLES else ""),
            need,
            disk_bytes,
        ) from None
    shape = _SHAPES[table]
    parts: list[Partition] = []
    seen_types: dict[uuid.UUID, int] = {}
    for (num, first, last), (role, name, default_guid) in sorted(zip(made, shape, strict=False), key=lambda x: x[0][0]):
        if table == "legacy":
            parts.append(Partition(num, first, last, role, mbr_type=OSTYPE_LINUX))
            continue
        type_guid = _ROLE_TYPE[role]
        k = seen_types.get(type_guid, 0)
        seen_types[type_guid] = k + 1
        if role == "root" and root_gpuid is not None:
            guid = root_gpuid
        elif seed is not None:
            guid = ids.repart_partition_uuid(seed, type_guid, k)
        else:
            guid = default_guid if default_guid is not None else ids.SEED_ROOT_GPUID
        parts.append(Partition(num, first, last, role, type_guid, guid, name, 0))
    if table == "legacy":
        return DiskLayout("legacy", disk_bytes, None, ids.mbr_signature(disk_guid), tuple(parts))
    return DiskLayout(table, disk_bytes, disk_guid, None, tuple(parts))


def reserved_space(table: str, boot_size: str | PartedLocation = "256M") -> int:
    """Bytes of a whole-MiB disk outside the root partition (``disk − root``).

    The same for every whole-MiB disk size from one MiB above the smallest whole-MiB size that
    fits (at that smallest size parted may give up alignment and end the root partition
    elsewhere): the root partition starts where the script puts it and ends 1 MiB before the
    disk's end (parted's ``-1`` = 1 MB before the end, snapped to the 1 MiB grid).  0 for
    ``none``.  :func:`min_disk_size` checks its answer with :func:`plan_layout` in any case.
    """
    _check_table(table)
    if table == "none":
        return 0
    boot = _boot(table, boot_size)
    disk = -(-(_min_fitting_sectors(table, boot) * SECTOR) // MiB) * MiB + 4 * MiB
    lay = plan_layout(table, disk, boot)
    return disk - lay.root_size


def min_disk_size(table: str, boot_size: str | PartedLocation, root_fs_bytes: int) -> int:
    """The smallest whole-MiB disk size whose root partition holds ``root_fs_bytes``.

    This is the ``auto`` disk size once the root filesystem's size is known.
    """
    _check_table(table)
    if root_fs_bytes < 0:
        raise UsageError(f"root filesystem size {root_fs_bytes} is negative")
    if table == "none":
        return -(-root_fs_bytes // MiB) * MiB
    boot = _boot(table, boot_size)
    floor = -(-(_min_fitting_sectors(table, boot) * SECTOR) // MiB)
    mib = max(floor, -(-(root_fs_bytes + reserved_space(table, boot)) // MiB))

    def ok(m: int) -> bool:
        return m >= floor and plan_layout(table, m * MiB, boot).root_size >= root_fs_bytes

    while not ok(mib):
        mib += 1
    while mib - 1 >= floor and ok(mib - 1):
        mib -= 1
    return mib * MiB


# -- writing and reading ------------------------------------------------------------------------


def write_table(image: Any, layout: DiskLayout) -> None:
    """Write ``layout``'s partition table to ``image`` (a :class:`pydiskimg.io.Image`).

    ``none``: nothing.  MBR: sector 0 (boot code zero, signature, four records).  GPT: protective
    MBR, primary header and entries, backup entries and header (byte-identical to parted +
    sgdisk for the seed's layouts and identifiers).
    """
    if layout.scheme == "none":
        return
    if layout.scheme == "mbr":
        records: list[MBRRecord | None] = [None] * 4
        for p in layout.partitions:
            if not 1 <= p.number <= 4:
                raise UsageError(f"MBR partition number {p.number}: only 1 to 4 exist")
            records[p.number - 1] = MBRRecord(p.first_lba, p.sectors, p.mbr_type or OSTYPE_LINUX, p.bootable)
        image.write(0, build_mbr(records, layout.mbr_signature or 0))
        return
    assert layout.disk_guid is not None
    write_gpt(image, layout.disk_sectors, layout.disk_guid, layout.partitions)


def infer_role(type_guid: uuid.UUID | None = None, mbr_type: int | None = None) -> str:
    """The role a partition type implies when reading a table back."""
    if type_guid is not None:
        if type_guid == ESP_TYPE:
            return "esp"
        if type_guid == BIOS_BOOT_TYPE:
            return "bios"
        if type_guid == XBOOTLDR_TYPE:
            return "xbootldr"
        if type_guid in ROOT_TYPES:
            return "root"
        return "data"
    if mbr_type == OSTYPE_LINUX:
        return "root"
    if mbr_type == OSTYPE_ESP:
        return "esp"
    return "data"


def classify(scheme: str, partitions: tuple[Partition, ...]) -> str:
    """The seed's table name a read-back table looks like: ``legacy`` for any plain MBR;
    ``hybrid``/``efi``/``legacy+gpt``/``efixbootldr`` for a GPT with ESP and BIOS boot / ESP /
    BIOS boot / ESP and XBOOTLDR partitions and one root partition; ``gpt`` otherwise."""
    if scheme == "mbr":
        return "legacy"
    roles = sorted(p.role for p in partitions)
    return {
        ("bios", "esp", "root"): "hybrid",
        ("esp", "root"): "efi",
        ("bios", "root"): "legacy+gpt",
        ("esp", "root", "xbootldr"): "efixbootldr",
    }.get(tuple(roles), "gpt")


class ByteSource(Protocol):
    """What :func:`read_table` reads from besides paths and descriptors (e.g.
    :class:`pydiskimg.audit.source.Source`): a guest ``size`` and ``read(offset, length)``."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...


def read_table(source: str | os.PathLike[str] | int | ByteSource, name: str | None = None) -> DiskLayout:
    """Read an image's partition table back (checked) as a :class:`DiskLayout`.

    ``source``: a path, an open file descriptor, or a :class:`ByteSource`.  Raises
    :class:`pydiskimg.mbr.read.NoTableError` when sector 0 has no 55 AA signature, MBRError /
    GPTError for anything malformed (checksums, LBAs out of range, overlaps, truncation), and
    UsageError when a path cannot be opened.
    """
    fd: int | None = None
    if isinstance(source, int):
        fd = source
        label = name or f"fd {source}"
    elif isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        try:
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise UsageError(f"{label}: cannot open: {e.strerror}") from None
    else:
        label = name or str(getattr(source, "path", "image"))
    try:
        if fd is not None:
            try:
                st = os.fstat(fd)
                size = st.st_size if stat.S_ISREG(st.st_mode) else os.lseek(fd, 0, os.SEEK_END)
            except OSError as e:
                raise ImageError(f"{label}: cannot read: {e.strerror}") from None
            reader = fd_reader(fd)
        else:
            assert not isinstance(source, (int, str, os.PathLike))
            size = source.size
            reader = source.read
        return _read_table(reader, size, label)
    finally:
        if fd is not None and not isinstance(source, int):
            os.close(fd)


def _read_table(reader: Reader, size: int, label: str) -> DiskLayout:
    try:
        sector0 = reader(0, 512)
    except OSError as e:
        raise ImageError(f"{label}: cannot read: {e.strerror}") from None
    mbr = read_mbr(sector0, size // SECTOR, label)
    if not mbr.is_protective:
        parts = tuple(
            Partition(p.number, p.start, p.last, infer_role(mbr_type=p.os_type), mbr_type=p.os_type, bootable=p.bootable)
            for p in mbr.partitions
        )
        return DiskLayout("legacy", size, None, mbr.disk_signature, parts)
    gpt = read_gpt(reader, size, SECTOR, label)
    gparts = tuple(
        Partition(e.number, e.first_lba, e.last_lba, infer_role(e.type_guid), e.type_guid, e.unique_guid, e.name, e.attributes)
        for e in gpt.entries
    )
    return DiskLayout(classify("gpt", gparts), size, gpt.disk_guid, None, gparts)


__all__ = [
    "TABLES",
    "DiskLayout",
    "Extent",
    "Partition",
    "classify",
    "infer_role",
    "min_disk_size",
    "min_fitting_disk",
    "plan_layout",
    "read_table",
    "reserved_space",
    "type_name",
    "write_table",
]
