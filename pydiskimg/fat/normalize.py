"""Normalize a FAT volume after a kernel has mounted and changed it (the bootloader stage).

Linux's vfat stamps every entry it creates or changes with its clock, leaves removed entries'
names and times behind a 0xE5 mark, keeps the data of clusters it freed, and writes its own
FSInfo hints.  Given the directory entries as they were before the stage (:func:`snapshot`),
:func:`normalize` puts a cleanly unmounted volume back on pydiskimg's rules:

* a short entry that is not in the snapshot (created or changed by the stage) gets each of its
  times (creation, write, access date) later than ``timestamp`` set to ``timestamp``, encoded as
  pydiskimg writes times (UTC, :mod:`pydiskimg.fat.dates`); entries from before are left alone;
* a removed entry (first byte 0xE5) keeps its mark and nothing else (bytes 1..31 zeroed);
* FSInfo (and its backup) holds the exact free count and, as "next free" hint, the last
  allocated cluster, as the writer puts them;
* free clusters holding data (written then freed during the stage) are zeroed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import FATError
from ..io import data_ranges, zero_range
from . import dates
from .read import _Volume
from .structs import ATTR_DIRECTORY, ATTR_LONG_NAME, FSI_LEAD_SIG, FSI_STRUC_SIG, FSI_TRAIL_SIG

_MAX_DIRS = 1 << 20


@dataclass
class Snapshot:
    """The short directory entries (32 bytes each) of the volume before the stage."""

    entries: set[bytes] = field(default_factory=set)


@dataclass
class Report:
    entries_clamped: int = 0
    entries_cleared: int = 0
    free_bytes_zeroed: int = 0


def _dirs(v: _Volume) -> list[tuple[str, list[tuple[int, int]]]]:
    """(what, byte ranges within the volume) of every folder, the root first."""
    out: list[tuple[str, list[tuple[int, int]]]] = []
    if v.bits == 32:
        todo: list[tuple[str, int]] = [("/", v.root_cluster)]
    else:
        out.append(("/", [(v.root_offset, v.root_offset + v.root_entries * 32)]))
        todo = []
        for first in _subdirs(v, v.read(v.root_offset, v.root_entries * 32, "root folder")):
            todo.append(("/", first))
    seen: set[int] = set()
    while todo:
        what, first = todo.pop()
        if first in seen:
            continue
        seen.add(first)
        if len(seen) > _MAX_DIRS:
            raise FATError("FAT: more folders than the volume can hold (a loop?)")
        runs = v.chain(first, f"folder at cluster {first}")
        ranges = [(v.cluster_pos(c), v.cluster_pos(c) + n * v.cluster_bytes) for c, n in runs]
        out.append((what, ranges))
        data = b"".join(v.read(a, b - a, what) for a, b in ranges)
        for sub in _subdirs(v, data):
            todo.append((what, sub))
    return out


def _subdirs(v: _Volume, data: bytes) -> list[int]:
    out = []
    for k in range(0, len(data) - 31, 32):
        e = data[k : k + 32]
        if e[0] == 0:
            break
        if e[0] == 0xE5 or e[11] & 0x3F == ATTR_LONG_NAME or not e[11] & ATTR_DIRECTORY:
            continue
        if e[0:11] in (b".          ", b"..         "):
            continue
        first = int.from_bytes(e[26:28], "little") | (
            int.from_bytes(e[20:22], "little") << 16 if v.bits == 32 else 0
        )
        if first:
            out.append(first)
    return out


def _short_entries(data: bytes) -> list[bytes]:
    out = []
    for k in range(0, len(data) - 31, 32):
        e = data[k : k + 32]
        if e[0] == 0:
            break
        if e[0] != 0xE5 and e[11] & 0x3F != ATTR_LONG_NAME:
            out.append(e)
    return out


def snapshot(fd: int, offset: int, size: int) -> Snapshot:
    """The short directory entries of the FAT volume at byte ``offset`` of ``fd``."""
    v = _Volume(fd, offset, size)
    snap = Snapshot()
    for what, ranges in _dirs(v):
        data = b"".join(v.read(a, b - a, what) for a, b in ranges)
        snap.entries.update(_short_entries(data))
    return snap


def _clamp_entry(e: bytearray, timestamp: int) -> bool:
    limit = timestamp * 1_000_000_000
    date, time, cs = dates.fat_datetime(limit)
    changed = False
    crt = dates.unix_ns(int.from_bytes(e[16:18], "little"), int.from_bytes(e[14:16], "little"), e[13])
    if crt is None or crt > limit:
        e[13] = cs
        e[14:16] = time.to_bytes(2, "little")
        e[16:18] = date.to_bytes(2, "little")
        changed = True
    wrt = dates.unix_ns(int.from_bytes(e[24:26], "little"), int.from_bytes(e[22:24], "little"))
    if wrt is None or wrt > limit:
        e[22:24] = time.to_bytes(2, "little")
        e[24:26] = date.to_bytes(2, "little")
        changed = True
    acc = dates.unix_ns(int.from_bytes(e[18:20], "little"), 0)
    if acc is None or acc > limit:
        e[18:20] = date.to_bytes(2, "little")
        changed = True
    return changed


def normalize(fd: int, offset: int, size: int, *, timestamp: int, before: Snapshot) -> Report:
    """Normalize the cleanly unmounted FAT volume at byte ``offset`` (``size`` bytes) of
    ``fd`` (see the module documentation); ``before`` is its :func:`snapshot` from before
    the kernel mounted it.  Raises :class:`~pydiskimg.errors.FATError` on a volume that does
    not parse."""
    v = _Volume(fd, offset, size)
    rep = Report()
    for what, ranges in _dirs(v):
        for a, b in ranges:
            data = bytearray(v.read(a, b - a, what))
            was = bytes(data)
            for k in range(0, len(data) - 31, 32):
                e = data[k : k + 32]
                if e[0] == 0:
                    break
                if e[0] == 0xE5:
                    if any(e[1:]):
                        data[k + 1 : k + 32] = bytes(31)
                        rep.entries_cleared += 1
                    continue
                if e[11] & 0x3F == ATTR_LONG_NAME or bytes(e) in before.entries:
                    continue
                if _clamp_entry(e, timestamp):
                    data[k : k + 32] = e
                    rep.entries_clamped += 1
            if bytes(data) != was:
                os.pwrite(fd, bytes(data), offset + a)
    # FSInfo, as the writer makes it
    n = v.clusters + 2
    fat = v.fat[:n]
    free = int(np.count_nonzero(fat[2:] == 0))
    used = np.nonzero(fat[2:])[0]
    last = int(used[-1]) + 2 if len(used) else 0xFFFFFFFF
    if v.bits == 32:
        fsi_sector = int(v.bs.BPB_FSInfo)
        bk = int(v.bs.BPB_BkBootSec)
        for sector in {fsi_sector, bk + fsi_sector} if bk else {fsi_sector}:
            raw = bytearray(v.read(sector * v.bps, 512, "FSInfo"))
            if (
                int.from_bytes(raw[0:4], "little") != FSI_LEAD_SIG
                or int.from_bytes(raw[484:488], "little") != FSI_STRUC_SIG
                or int.from_bytes(raw[508:512], "little") != FSI_TRAIL_SIG
            ):
                continue
            raw[488:492] = free.to_bytes(4, "little")
            raw[492:496] = last.to_bytes(4, "little")
            os.pwrite(fd, bytes(raw), offset + sector * v.bps)
    # free clusters: zeros
    free_idx = np.nonzero(fat[2:] == 0)[0]
    if len(free_idx):
        d = np.diff(free_idx)
        breaks = np.nonzero(d != 1)[0]
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks + 1, [len(free_idx)]))
        for s, e in zip(starts, ends, strict=True):
            c0 = int(free_idx[s]) + 2
            cn = int(e - s)
            a = offset + v.cluster_pos(c0)
            b = a + cn * v.cluster_bytes
            for x, y in data_ranges(fd, a, b):
                zero_range(fd, x, y - x)
                rep.free_bytes_zeroed += y - x
    os.fsync(fd)
    return rep
