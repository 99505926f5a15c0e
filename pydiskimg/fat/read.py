"""FAT12/16/32 reader for ``inspect`` and ``diff``: bounded, and safe on hostile images.

Every structure is parsed with the declarations of :mod:`.structs`; every problem (a field out
of range, a chain that leaves the volume, loops or ends early, a folder that contains one of its
ancestors, a read past the end) is a :class:`~pydiskimg.errors.FATError` naming the field or
path.  Work is bounded by the volume's size: each cluster chain is followed at most
``clusters`` steps, all chains together at most 4 x ``clusters`` steps (so cross-linked files
cannot multiply the data read), and each folder is read once.

The FAT type is decided as Linux and dosfstools decide it: FAT32 when ``BPB_FATSz16`` is 0,
otherwise FAT12 below 4085 clusters and FAT16 from there.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
from construct import ConstructError, Struct

from ..errors import FATError
from . import dates
from .structs import (
    ATTR_DIRECTORY,
    ATTR_LONG_NAME,
    ATTR_VOLUME_ID,
    BOOT_SIGNATURE,
    DIRENT_DTYPE,
    FSI_LEAD_SIG,
    FSI_STRUC_SIG,
    FSI_TRAIL_SIG,
    LAST_LONG_ENTRY,
    BootSector16,
    BootSector32,
    FSInfo,
)

_CHUNK = 1 << 20
_MAX_DEPTH = 1024


class FatEntry(NamedTuple):
    """One file or folder of a FAT volume, as :func:`read_tree` yields it."""

    path: bytes  #: absolute, UTF-8, b"/EFI/BOOT/BOOTX64.EFI"
    is_dir: bool
    size: int  #: bytes (0 for folders)
    mtime_ns: int | None  #: last write time read as UTC, None when the stored date is invalid
    data: Callable[[], Iterator[bytes]]  #: yields the file's bytes in chunks (nothing for folders)


def _parse(st: Struct, data: bytes, where: str) -> Any:
    """The one place construct's exceptions become FATError."""
    try:
        return st.parse(data)
    except (ConstructError, KeyError, struct.error, ValueError) as e:
        raise FATError(f"{where}: cannot be parsed: {e}") from None


class _Volume:
    def __init__(self, fd: int, offset: int, size: int) -> None:
        self.fd = fd
        self.offset = offset
        self.size = size
        raw = self.read(0, 512, "boot sector")
        common = _parse(BootSector16, raw, "boot sector")
        bps = common.BPB_BytsPerSec
        spc = common.BPB_SecPerClus
        if bps not in (512, 1024, 2048, 4096):
            raise FATError(f"boot sector: BPB_BytsPerSec is {bps}, expected 512, 1024, 2048 or 4096")
        if spc == 0 or spc & (spc - 1) or spc > 128:
            raise FATError(f"boot sector: BPB_SecPerClus is {spc}, expected a power of two up to 128")
        if common.BPB_RsvdSecCnt == 0:
            raise FATError("boot sector: BPB_RsvdSecCnt is 0, expected at least 1")
        if common.BPB_NumFATs == 0:
            raise FATError("boot sector: BPB_NumFATs is 0, expected at least 1")
        if not (common.BPB_Media == 0xF0 or common.BPB_Media >= 0xF8):
            raise FATError(f"boot sector: BPB_Media is {common.BPB_Media:#04x}, expected F0 or F8..FF")
        self.bps, self.spc = bps, spc
        self.cluster_bytes = bps * spc
        self.signature_ok = common.Signature_word == BOOT_SIGNATURE
        total = common.BPB_TotSec16 or common.BPB_TotSec32
        if common.BPB_FATSz16 == 0:
            bs = _parse(BootSector32, raw, "boot sector")
            self.type = "FAT32"
            fatsz = bs.BPB_FATSz32
            if common.BPB_RootEntCnt != 0:
                raise FATError(f"boot sector: BPB_RootEntCnt is {common.BPB_RootEntCnt}, expected 0 on FAT32")
        else:
            bs = common
            fatsz = common.BPB_FATSz16
        self.bs = bs
        if fatsz == 0:
            raise FATError("boot sector: BPB_FATSz32 is 0, expected the sectors of one FAT")
        root_sectors = -(-common.BPB_RootEntCnt * 32 // bps)
        first_data = common.BPB_RsvdSecCnt + common.BPB_NumFATs * fatsz + root_sectors
        if total == 0 or first_data >= total:
            raise FATError(
                f"boot sector: {total} total sectors leave no data area after sector {first_data}"
            )
        if total * bps > size:
            raise FATError(
                f"boot sector: the volume claims {total * bps} bytes ({total} sectors), "
                f"the region holds {size} bytes"
            )
        self.clusters = (total - first_data) // spc
        if self.clusters == 0:
            raise FATError("boot sector: the data area holds no cluster")
        if common.BPB_FATSz16 != 0:
            self.type = "FAT12" if self.clusters < 4085 else "FAT16"
        bits = {"FAT12": 12, "FAT16": 16, "FAT32": 32}[self.type]
        if fatsz * bps * 8 // bits < self.clusters + 2:
            raise FATError(
                f"boot sector: a FAT of {fatsz} sectors holds {fatsz * bps * 8 // bits} entries, "
                f"the volume has {self.clusters} clusters (+2)"
            )
        self.bits = bits
        self.total = total
        self.fatsz = fatsz
        self.nfats = common.BPB_NumFATs
        self.reserved = common.BPB_RsvdSecCnt
        self.root_entries = common.BPB_RootEntCnt
        self.root_offset = (common.BPB_RsvdSecCnt + common.BPB_NumFATs * fatsz) * bps
        self.data_offset = first_data * bps
        if bits == 32:
            rc = bs.BPB_RootClus
            if not 2 <= rc < self.clusters + 2:
                raise FATError(f"boot sector: BPB_RootClus is {rc}, expected 2..{self.clusters + 1}")
            self.root_cluster = rc
        else:
            self.root_cluster = 0
        self.eoc = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}[bits]
        self.bad = self.eoc - 1
        self.fat = self._load_fat(0)
        # every cluster belongs to at most one chain, and each chain is followed at most twice
        # (a folder: checked, then read): more steps than that means chains share clusters
        # (cross-links), which could otherwise make N files cost N times the volume
        self.chain_budget = 4 * (self.clusters + 2) + 65536

    def read(self, pos: int, length: int, what: str) -> bytes:
        if pos < 0 or pos + length > self.size:
            raise FATError(f"{what}: bytes {pos}..{pos + length} lie outside the {self.size}-byte volume")
        try:
            data = os.pread(self.fd, length, self.offset + pos)
        except OSError as e:
            raise FATError(f"{what}: cannot read at byte {self.offset + pos}: {e.strerror}") from None
        if len(data) != length:
            raise FATError(f"{what}: the image ends before byte {self.offset + pos + length}")
        return data

    def fat_bytes(self, k: int) -> bytes:
        start = (self.reserved + k * self.fatsz) * self.bps
        return self.read(start, self.fatsz * self.bps, f"FAT {k + 1}")

    def _load_fat(self, k: int) -> np.ndarray:
        raw = self.fat_bytes(k)
        n = self.clusters + 2
        if self.bits == 32:
            return np.frombuffer(raw, dtype="<u4", count=n).astype(np.uint32) & 0x0FFFFFFF
        if self.bits == 16:
            return np.frombuffer(raw, dtype="<u2", count=n).astype(np.uint32)
        b = np.frombuffer(raw, dtype=np.uint8, count=(n * 3 + 1) // 2).astype(np.uint32)
        b = np.concatenate([b, np.zeros(3, dtype=np.uint32)])
        idx = np.arange(n)
        lo = (idx * 3) // 2
        even = b[lo] | ((b[lo + 1] & 0x0F) << 8)
        odd = (b[lo] >> 4) | (b[lo + 1] << 4)
        return np.where(idx % 2 == 0, even, odd).astype(np.uint32)

    def chain(self, first: int, what: str) -> list[tuple[int, int]]:
        """Runs (first cluster, count) of the chain starting at ``first``; bounded and checked."""
        if not 2 <= first < self.clusters + 2:
            raise FATError(f"{what}: first cluster {first} is outside 2..{self.clusters + 1}")
        runs: list[tuple[int, int]] = []
        fat = self.fat
        cur = first
        start, count = first, 0
        steps = 0
        limit = self.clusters
        while True:
            steps += 1
            if steps > limit:
                raise FATError(f"{what}: the cluster chain loops (longer than the {limit} clusters of the volume)")
            self.chain_budget -= 1
            if self.chain_budget < 0:
                raise FATError(
                    f"{what}: the cluster chains read so far are over 4 times the volume's "
                    f"{self.clusters} clusters: files share clusters (cross-linked)")
            count += 1
            nxt = int(fat[cur])
            if nxt >= self.eoc:
                runs.append((start, count))
                return runs
            if nxt == self.bad:
                raise FATError(f"{what}: the chain reaches bad cluster {cur}")
            if not 2 <= nxt < self.clusters + 2:
                raise FATError(f"{what}: cluster {cur} points to {nxt}, outside 2..{self.clusters + 1}")
            if nxt != cur + 1:
                runs.append((start, count))
                start, count = nxt, 0
            cur = nxt

    def cluster_pos(self, c: int) -> int:
        return self.data_offset + (c - 2) * self.cluster_bytes

    def read_runs(self, runs: list[tuple[int, int]], limit: int | None, what: str) -> Iterator[bytes]:
        left = limit
        for c, n in runs:
            pos = self.cluster_pos(c)
            length = n * self.cluster_bytes
            while length > 0 and (left is None or left > 0):
                k = min(length, _CHUNK, left if left is not None else _CHUNK)
                yield self.read(pos, k, what)
                pos += k
                length -= k
                if left is not None:
                    left -= k

    def dir_bytes(self, first: int, what: str) -> bytes:
        if first == 0 and self.bits != 32:
            return self.read(self.root_offset, self.root_entries * 32, f"{what} (root folder)")
        return b"".join(self.read_runs(self.chain(first, what), None, what))


def _short_name(raw: bytes, ntres: int) -> str:
    base = bytearray(raw[:8])
    if base[:1] == b"\x05":
        base[0] = 0xE5
    b = bytes(base).rstrip(b" ").decode("cp437")
    e = raw[8:11].rstrip(b" ").decode("cp437")
    if ntres & 0x08:
        b = b.lower()
    if ntres & 0x10:
        e = e.lower()
    return f"{b}.{e}" if e else b


def _lfn_checksum(name11: bytes) -> int:
    s = 0
    for c in name11:
        s = (((s & 1) << 7) + (s >> 1) + c) & 0xFF
    return s


def _entries(data: bytes) -> Iterator[tuple[str, np.void, str | None]]:
    """(name, short entry, label) of each live entry; long names checked as Linux does."""
    n = len(data) // 32
    arr = np.frombuffer(data, dtype=DIRENT_DTYPE, count=n)
    names = np.frombuffer(data, dtype=np.uint8, count=n * 32).reshape(n, 32)
    slots: dict[int, bytes] = {}
    want = 0
    csum = -1
    for i in range(n):
        row = names[i]
        first = int(row[0])
        if first == 0:
            return
        if first == 0xE5:
            slots, want = {}, 0
            continue
        attr = int(row[11])
        if attr & 0x3F == ATTR_LONG_NAME:
            order = first
            seq = order & 0x3F
            if order & LAST_LONG_ENTRY:
                slots = {}
                want = seq
                csum = int(row[13])
            elif seq != want or int(row[13]) != csum:
                slots, want = {}, 0
                continue
            if seq == 0 or seq > 20:
                slots, want = {}, 0
                continue
            slots[seq] = bytes(row[1:11]) + bytes(row[14:26]) + bytes(row[28:32])
            want = seq - 1
            continue
        raw = bytes(row[0:11])
        e = arr[i]
        if attr & ATTR_VOLUME_ID:
            slots, want = {}, 0
            # a first byte 0xE5 is stored as 0x05 (0xE5 marks a deleted entry), as in names
            label = (b"\xe5" + raw[1:] if raw[:1] == b"\x05" else raw).rstrip(b" ")
            yield "", e, label.decode("cp437")
            continue
        name = None
        if slots and want == 0 and 1 in slots and _lfn_checksum(raw) == csum:
            units = b"".join(slots[k] for k in sorted(slots))
            end = len(units)
            for j in range(0, len(units), 2):
                if units[j : j + 2] == b"\x00\x00":
                    end = j
                    break
            name = units[:end].decode("utf-16-le", "replace")
        slots, want = {}, 0
        if name is None:
            name = _short_name(raw, int(e["DIR_NTRes"]))
        yield name, e, None


def _check_name(name: str, where: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise FATError(f"{where}: holds an entry named {name!r}")


def read_info(fd: int, offset: int, size: int) -> dict[str, Any]:
    """What ``inspect`` shows of a FAT volume at ``offset`` (``size`` bytes) of ``fd``."""
    v = _Volume(fd, offset, size)
    bs = v.bs
    used = int(np.count_nonzero(v.fat[2:]))
    info: dict[str, Any] = {
        "type": v.type,
        "oem_name": bytes(bs.BS_OEMName).decode("latin-1"),
        "bytes_per_sector": v.bps,
        "sectors_per_cluster": v.spc,
        "cluster_size": v.cluster_bytes,
        "reserved_sectors": v.reserved,
        "fats": v.nfats,
        "fat_sectors": v.fatsz,
        "root_entries": v.root_entries,
        "total_sectors": v.total,
        "hidden_sectors": bs.BPB_HiddSec,
        "media": bs.BPB_Media,
        "sectors_per_track": bs.BPB_SecPerTrk,
        "heads": bs.BPB_NumHeads,
        "data_offset": v.data_offset,
        "clusters": v.clusters,
        "used_clusters": used,
        "free_clusters": v.clusters - used,
        "boot_signature": v.signature_ok,
    }
    if bs.BS_BootSig == 0x29:
        info["volume_id"] = bs.BS_VolID
        info["volume_id_text"] = f"{bs.BS_VolID >> 16:04X}-{bs.BS_VolID & 0xFFFF:04X}"
        info["label"] = bytes(bs.BS_VolLab).decode("cp437").rstrip()
        info["fs_type_field"] = bytes(bs.BS_FilSysType).decode("latin-1").rstrip()
    info["fats_identical"] = all(v.fat_bytes(k) == v.fat_bytes(0) for k in range(1, v.nfats))
    if v.bits == 32:
        info["root_cluster"] = v.root_cluster
        info["fsinfo_sector"] = bs.BPB_FSInfo
        info["backup_boot_sector"] = bs.BPB_BkBootSec
        fsi = bs.BPB_FSInfo
        if 0 < fsi < v.reserved:
            f = _parse(FSInfo, v.read(fsi * v.bps, 512, "FSInfo"), "FSInfo")
            if (f.FSI_LeadSig, f.FSI_StrucSig, f.FSI_TrailSig) == (FSI_LEAD_SIG, FSI_STRUC_SIG, FSI_TRAIL_SIG):
                info["fsinfo_free_count"] = f.FSI_Free_Count
                info["fsinfo_next_free"] = f.FSI_Nxt_Free
            else:
                info["fsinfo_valid"] = False
        bk = bs.BPB_BkBootSec
        if 0 < bk < v.reserved:
            info["backup_boot_identical"] = v.read(bk * v.bps, 512, "backup boot sector") == v.read(0, 512, "boot sector")
    label = None
    root = v.dir_bytes(v.root_cluster, "root folder")
    for _name, _e, lab in _entries(root):
        if lab is not None:
            label = lab
            break
    info["root_label"] = label
    return info


def read_tree(fd: int, offset: int, size: int) -> Iterator[FatEntry]:
    """Every file and folder of a FAT volume (the root itself excepted), parents first.

    Raises :class:`FATError` on anything malformed, a folder loop included.
    """
    v = _Volume(fd, offset, size)
    seen: set[int] = {v.root_cluster} if v.root_cluster else set()
    stack: list[tuple[bytes, int, int]] = [(b"", v.root_cluster, 0)]
    while stack:
        prefix, first, depth = stack.pop()
        where = (prefix or b"/").decode("utf-8", "replace")
        data = v.dir_bytes(first, where)
        subdirs = []
        for name, e, label in _entries(data):
            if label is not None:
                continue
            if name in (".", ".."):
                continue
            path_s = f"{where.rstrip('/')}/{name}"
            _check_name(name, path_s)
            path = prefix + b"/" + name.encode("utf-8", "replace")
            cl = int(e["DIR_FstClusHI"]) << 16 | int(e["DIR_FstClusLO"])
            if v.bits != 32:
                cl &= 0xFFFF
            mtime = dates.unix_ns(int(e["DIR_WrtDate"]), int(e["DIR_WrtTime"]))
            if int(e["DIR_Attr"]) & ATTR_DIRECTORY:
                if cl in seen or cl == 0:
                    raise FATError(f"{path_s}: folder starts at cluster {cl}, already read as another folder (a loop or a cross-link)")
                if depth + 1 > _MAX_DEPTH:
                    raise FATError(f"{path_s}: folders nested deeper than {_MAX_DEPTH}")
                v.chain(cl, path_s)
                seen.add(cl)
                subdirs.append((path, cl, depth + 1))
                yield FatEntry(path, True, 0, mtime, _no_data)
            else:
                fsize = int(e["DIR_FileSize"])
                runs: list[tuple[int, int]] = []
                if fsize:
                    runs = v.chain(cl, path_s)
                    have = sum(n for _, n in runs) * v.cluster_bytes
                    if have < fsize:
                        raise FATError(f"{path_s}: {fsize} bytes but its cluster chain holds {have}")
                yield FatEntry(path, False, fsize, mtime, _reader(v, runs, fsize, path_s))
        stack.extend(reversed(subdirs))


def _no_data() -> Iterator[bytes]:
    return iter(())


def _reader(v: _Volume, runs: list[tuple[int, int]], size: int, what: str) -> Callable[[], Iterator[bytes]]:
    def data() -> Iterator[bytes]:
        return v.read_runs(runs, size, what)

    return data
