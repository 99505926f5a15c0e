"""FAT32 writer: plan (pure: names, geometry, every cluster) then write (a few large writes).

Layout of a planned volume:

* sectors 0 and 6: boot sector and its backup; 1 and 7: FSInfo and its backup; the rest of the
  32 reserved sectors stay zero, as mkfs.fat leaves them;
* two identical FATs; every chain is contiguous; end of chain 0x0FFFFFF8 (what mkfs.fat writes);
* clusters from 2 on, in this order: a folder's own clusters, then the data of its files (name
  order), then each of its subfolders the same way (depth first, name order).  The root folder
  is cluster 2 and starts with the volume label entry;
* FSInfo holds the exact free count and, as "next free" hint, the last allocated cluster (what
  the specification calls the usual value, and what mkfs.fat, mtools and Linux write).

:func:`write` expects the volume's byte range to read as zeros (a fresh sparse image, as
:meth:`pydiskimg.io.Image.create` makes): unused FAT entries, unused directory slots past each
folder's clusters and file holes are never written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DoesNotFitError, InternalError, SourceError, UsageError
from ..io import Image, atomic_output, check_space, open_source, output_errors
from ..tree import Kind, Node, Tree
from . import dates, names
from .geometry import Geometry, fat32_geometry, geometry_fits, regions
from .structs import (
    ATTR_ARCHIVE,
    ATTR_DIRECTORY,
    ATTR_LONG_NAME,
    ATTR_VOLUME_ID,
    BOOT_SIGNATURE,
    DIRENT_DTYPE,
    EXT_BOOT_SIG,
    FSI_LEAD_SIG,
    FSI_STRUC_SIG,
    FSI_TRAIL_SIG,
    LFN_DTYPE,
    SECTOR,
    BootSector32,
    FSInfo,
)

if TYPE_CHECKING:
    from . import FatOptions

log = logging.getLogger(__name__)

MEDIA = 0xF8  # fixed disk
DRIVE_NUMBER = 0x80
EOC = 0x0FFFFFF8  # end of chain, as mkfs.fat marks the root folder
FSINFO_SECTOR = 1
BACKUP_BOOT_SECTOR = 6
NO_NAME = b"NO NAME    "
MAX_DIR_ENTRIES = 65536  # a FAT folder holds at most 2 MiB of entries [MSFAT]
MAX_FILE_SIZE = 0xFFFFFFFF
#: boot code for BIOS boots of this volume (never meant to boot): INT 18h ("no bootable
#: device, try the next one"), then halt forever.  mkfs.fat puts a message printer here.
BOOT_JUMP = bytes([0xEB, 0x58, 0x90])  # jmp short to offset 0x5A, where BS_BootCode starts
BOOT_CODE = bytes([0xCD, 0x18, 0xF4, 0xEB, 0xFD])  # int 18h; hlt; jmp $-1
LABEL_FORBIDDEN = frozenset('"*+,./:;<=>?[\\]|')


def _display(path: bytes) -> str:
    return path.decode("utf-8", "surrogateescape")


def check_label(label: str) -> bytes:
    """The 11-byte volume label for ``label``: upper-cased, space padded; ``NO NAME`` if empty.

    mkfs.fat 4.2 keeps lower case (and warns that some systems mishandle it); pydiskimg
    upper-cases as Windows, mlabel and newer dosfstools do.  Only printable ASCII is accepted.
    """
    if not isinstance(label, str):
        raise UsageError(f"label: {label!r} is not a string")
    if len(label) > 11:
        raise UsageError(f"label: {label!r} has {len(label)} characters; a FAT label holds at most 11")
    for ch in label:
        if not 0x20 <= ord(ch) <= 0x7E:
            raise UsageError(f"label: {label!r} holds {ch!r}; only printable ASCII is allowed in a FAT label")
        if ch in LABEL_FORBIDDEN:
            raise UsageError(f"label: {label!r} holds {ch!r}; a FAT label cannot hold \" * + , . / : ; < = > ? [ \\ ] |")
    if label.startswith(" ") and label.strip():
        raise UsageError(f"label: {label!r} starts with a space, which FAT does not allow")
    raw = label.upper().encode("ascii").ljust(11, b" ")
    return NO_NAME if raw == b" " * 11 else raw


@dataclass(eq=False)
class _Item:
    """One thing that takes clusters: a folder or a file (once per name: FAT has no hardlinks)."""

    path: str
    node: Node
    is_dir: bool
    nbytes: int  # file size, or the folder's entries x 32
    #: folder: its entries (name11, long name or None, child item)
    entries: list[tuple[bytes, str | None, _Item]] = field(default_factory=list)
    parent: _Item | None = None
    first: int = 0  # first cluster (0: none)
    count: int = 0  # clusters


@dataclass
class _Prepared:
    """Everything about a tree that does not depend on the volume size."""

    items: list[_Item]  # allocation order; items[0] is the root folder
    label11: bytes

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.fromiter((it.nbytes for it in self.items), dtype=np.int64, count=len(self.items))
        isdir = np.fromiter((it.is_dir for it in self.items), dtype=bool, count=len(self.items))
        return sizes, isdir

    def cluster_counts(self, cluster_bytes: int) -> np.ndarray:
        sizes, isdir = self.arrays()
        counts = -(-sizes // cluster_bytes)
        counts[isdir] = np.maximum(counts[isdir], 1)
        return counts

    def clusters_needed(self, cluster_bytes: int) -> int:
        return int(self.cluster_counts(cluster_bytes).sum())


def _prepare(tree: Tree, label11: bytes) -> _Prepared:
    """Validate the tree for FAT, assign short names, order every folder and file."""
    root = tree.root
    if root.kind is not Kind.DIR:
        raise UsageError("FAT tree: the root is not a folder")
    root_item = _Item("/", root, True, 0)
    items: list[_Item] = []
    stack = [root_item]
    while stack:
        d = stack.pop()
        items.append(d)
        kids = d.node.sorted_entries()
        longs: list[str] = []
        seen: dict[str, bytes] = {}
        prefix = d.path.rstrip("/")
        for name, _child in kids:
            cpath = f"{prefix}/{_display(name)}"
            long = names.decode_name(name, cpath)
            key = names.fold(long)
            if key in seen:
                raise UsageError(
                    f"{cpath}: same name as {prefix}/{_display(seen[key])} once case is ignored, "
                    f"and FAT folders ignore case"
                )
            seen[key] = name
            longs.append(long)
        shorts = names.ShortNames().assign(longs)
        slots = 2 if d is not root_item else (1 if label11 != NO_NAME else 0)
        subdirs = []
        files = []
        for (_name, child), long, (name11, need_lfn) in zip(kids, longs, shorts, strict=True):
            cpath = f"{prefix}/{long}"
            if child.kind is Kind.DIR:
                it = _Item(cpath, child, True, 0, parent=d)
                subdirs.append(it)
            elif child.kind is Kind.REG:
                if child.size > MAX_FILE_SIZE:
                    raise UsageError(f"{cpath}: {child.size} bytes; a FAT file holds at most {MAX_FILE_SIZE} bytes")
                it = _Item(cpath, child, False, child.size, parent=d)
                files.append(it)
            else:
                raise UsageError(
                    f"{cpath}: is a {child.kind.name.lower()}; FAT holds only regular files and folders"
                )
            d.entries.append((name11, long if need_lfn else None, it))
            slots += 1 + (names.lfn_slot_count(long) if need_lfn else 0)
        if slots > MAX_DIR_ENTRIES:
            raise UsageError(f"{d.path}: needs {slots} directory entries; a FAT folder holds at most {MAX_DIR_ENTRIES}")
        d.nbytes = slots * 32
        items.extend(files)
        stack.extend(reversed(subdirs))
    return _Prepared(items, label11)


@dataclass
class FatPlan:
    """Every byte decided: write it with :func:`write`."""

    geometry: Geometry
    options: FatOptions
    label11: bytes
    boot_sector: bytes
    fsinfo: bytes
    fat: np.ndarray  #: FAT entries 0 .. last used cluster (uint32)
    directories: list[tuple[int, memoryview]]  #: (byte offset, whole clusters)
    files: list[tuple[str, Node, int]]  #: (path, node, byte offset of its data)
    used_clusters: int

    @property
    def size(self) -> int:
        """Bytes of the volume (the size it was planned for)."""
        return self.geometry.size

    @property
    def free_clusters(self) -> int:
        return self.geometry.clusters - self.used_clusters

    @property
    def data_bytes(self) -> int:
        """Bytes of file data to copy."""
        return sum(n.size for _, n, _ in self.files)

    def describe(self) -> dict[str, object]:
        g = self.geometry
        return {
            "type": "FAT32",
            "size": g.size,
            "total_sectors": g.total_sectors,
            "cluster_size": g.cluster_bytes,
            "clusters": g.clusters,
            "used_clusters": self.used_clusters,
            "free_clusters": self.free_clusters,
            "fat_sectors": g.fat_sectors,
            "reserved_sectors": g.reserved_sectors,
            "hidden_sectors": g.hidden_sectors,
            "volume_id": f"{self.options.volume_id:08X}",
            "label": self.label11.decode("ascii").rstrip(),
        }


def _check_options(options: FatOptions) -> bytes:
    vid = options.volume_id
    if isinstance(vid, bool) or not isinstance(vid, int) or not 0 <= vid <= 0xFFFFFFFF:
        raise UsageError(f"volume ID: {vid!r} is not a 32-bit unsigned number")
    if isinstance(options.timestamp, bool) or not isinstance(options.timestamp, int):
        raise UsageError(f"timestamp: {options.timestamp!r} is not an integer number of seconds")
    return check_label(options.label)


def _what(label11: bytes) -> str:
    return f"FAT32 filesystem {label11.decode('ascii').rstrip()!r}"


def min_size(tree: Tree, options: FatOptions) -> int:
    """The smallest volume size in bytes (a multiple of 512) that holds ``tree`` as FAT32."""
    label11 = _check_options(options)
    prep = _prepare(tree, label11)
    return _min_size(prep)


def _min_size(prep: _Prepared) -> int:
    for lo, hi, spc in regions():
        need = prep.clusters_needed(spc * SECTOR)
        if not geometry_fits(hi * SECTOR, need):
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if geometry_fits(mid * SECTOR, need):
                hi = mid
            else:
                lo = mid + 1
        return lo * SECTOR
    raise UsageError(f"{_what(prep.label11)}: the tree is too large for any FAT32 volume")


def plan(tree: Tree, size: int, options: FatOptions) -> FatPlan:
    """Plan a FAT32 volume of ``size`` bytes holding ``tree`` (regular files and folders only).

    Raises :class:`~pydiskimg.errors.DoesNotFitError` (with the size needed) when ``size`` is too
    small, :class:`~pydiskimg.errors.UsageError` for a bad option or a tree FAT cannot hold
    (a symlink, device, fifo or socket; names FAT refuses or that differ only in case).
    """
    label11 = _check_options(options)
    prep = _prepare(tree, label11)
    what = _what(label11)
    try:
        geo = fat32_geometry(size, options.hidden_sectors, what=what)
    except DoesNotFitError:
        raise DoesNotFitError(what, _min_size(prep), size) from None
    counts = prep.cluster_counts(geo.cluster_bytes)
    used = int(counts.sum())
    if used > geo.clusters:
        raise DoesNotFitError(what, _min_size(prep), size)
    starts = 2 + np.cumsum(counts) - counts
    items = prep.items
    for it, first, count in zip(items, starts.tolist(), counts.tolist(), strict=True):
        it.first = first if count else 0
        it.count = count
    if items[0].first != 2:
        raise InternalError("FAT: the root folder is not cluster 2")

    # FAT: every chain contiguous
    fat = np.zeros(2 + used, dtype=np.uint32)
    fat[0] = 0x0FFFFF00 | MEDIA
    fat[1] = 0x0FFFFFFF
    fat[2:] = np.arange(3, 3 + used, dtype=np.uint32)
    ends = (starts + counts - 1)[counts > 0]
    fat[ends] = EOC

    cb = geo.cluster_bytes
    dirs = _Directories()
    files = []
    for it in items:
        if it.is_dir:
            dirs.add(it, label11, options.timestamp, geo.cluster_offset(it.first), it.count * cb)
        elif it.count:
            files.append((it.path, it.node, geo.cluster_offset(it.first)))
    directories = dirs.build()

    boot = _boot_sector(geo, options.volume_id, label11)
    fsinfo = FSInfo.build(
        {
            "FSI_LeadSig": FSI_LEAD_SIG,
            "FSI_Reserved1": bytes(480),
            "FSI_StrucSig": FSI_STRUC_SIG,
            "FSI_Free_Count": geo.clusters - used,
            "FSI_Nxt_Free": 1 + used,  # the last allocated cluster
            "FSI_Reserved2": bytes(12),
            "FSI_TrailSig": FSI_TRAIL_SIG,
        }
    )
    log.info(
        "FAT32: %d sectors, %d-byte clusters, %d clusters, %d used",
        geo.total_sectors, cb, geo.clusters, used,
    )
    return FatPlan(geo, options, label11, boot, fsinfo, fat, directories, files, used)


def _boot_sector(geo: Geometry, volume_id: int, label11: bytes) -> bytes:
    return BootSector32.build(
        {
            "BS_jmpBoot": BOOT_JUMP,
            "BS_OEMName": b"mkfs.fat",  # what mkfs.fat writes; informational only
            "BPB_BytsPerSec": SECTOR,
            "BPB_SecPerClus": geo.sectors_per_cluster,
            "BPB_RsvdSecCnt": geo.reserved_sectors,
            "BPB_NumFATs": geo.num_fats,
            "BPB_RootEntCnt": 0,
            "BPB_TotSec16": 0,
            "BPB_Media": MEDIA,
            "BPB_FATSz16": 0,
            "BPB_SecPerTrk": geo.sectors_per_track,
            "BPB_NumHeads": geo.heads,
            "BPB_HiddSec": geo.hidden_sectors,
            "BPB_TotSec32": geo.total_sectors,
            "BPB_FATSz32": geo.fat_sectors,
            "BPB_ExtFlags": 0,
            "BPB_FSVer": 0,
            "BPB_RootClus": 2,
            "BPB_FSInfo": FSINFO_SECTOR,
            "BPB_BkBootSec": BACKUP_BOOT_SECTOR,
            "BPB_Reserved": bytes(12),
            "BS_DrvNum": DRIVE_NUMBER,
            "BS_Reserved1": 0,
            "BS_BootSig": EXT_BOOT_SIG,
            "BS_VolID": volume_id,
            "BS_VolLab": label11,
            "BS_FilSysType": b"FAT32   ",
            "BS_BootCode": BOOT_CODE.ljust(420, b"\0"),
            "Signature_word": BOOT_SIGNATURE,
        }
    )


class _Directories:
    """Every folder's entries, gathered in Python lists and stored in one numpy table at the end
    (a few column assignments for the whole volume rather than per folder)."""

    def __init__(self) -> None:
        self.total = 0  # rows so far (each folder padded to its clusters)
        self.spans: list[tuple[int, int, int]] = []  # (byte offset in the volume, first row, rows)
        self.rows: list[int] = []
        self.name11s: list[bytes] = []
        self.attrs: list[int] = []
        self.firsts: list[int] = []
        self.sizes: list[int] = []
        self.stamps: list[int] = []  # mtime in ns of each short entry
        self.no_cs: list[int] = []  # indexes (in rows) whose 10 ms byte stays 0
        self.lrows: list[int] = []
        self.ords: list[int] = []
        self.chunks: list[bytes] = []
        self.sums: list[int] = []

    def _short(self, row: int, name11: bytes, attr: int, first: int, size: int, stamp: int) -> None:
        self.rows.append(row)
        self.name11s.append(name11)
        self.attrs.append(attr)
        self.firsts.append(first)
        self.sizes.append(size)
        self.stamps.append(stamp)

    def add(self, d: _Item, label11: bytes, timestamp: int, offset: int, nbytes: int) -> None:
        """The folder's entries: label or '.'/'..', then long-name slots and short entries."""
        base = self.total
        i = base
        if d.parent is None:
            if label11 != NO_NAME:
                self.no_cs.append(len(self.rows))  # mkfs.fat: no hundredths on the label
                self._short(i, label11, ATTR_VOLUME_ID, 0, 0, timestamp * 1_000_000_000)
                i += 1
        else:
            st = d.node.mtime_ns
            up = d.parent.first if d.parent.parent is not None else 0  # '..' to the root is 0
            self._short(i, b".          ", ATTR_DIRECTORY, d.first, 0, st)
            self._short(i + 1, b"..         ", ATTR_DIRECTORY, up, 0, st)
            i += 2
        for name11, long, it in d.entries:
            if long is not None:
                csum = names.lfn_checksum(name11)
                for o, chunk in names.lfn_chunks(long):
                    self.lrows.append(i)
                    self.ords.append(o)
                    self.chunks.append(chunk)
                    self.sums.append(csum)
                    i += 1
            if it.is_dir:
                self._short(i, name11, ATTR_DIRECTORY, it.first, 0, it.node.mtime_ns)
            else:
                self._short(i, name11, ATTR_ARCHIVE, it.first, it.nbytes, it.node.mtime_ns)
            i += 1
        rows = nbytes // 32
        if i - base > rows:
            raise InternalError(f"FAT: folder {d.path} has {i - base} entries, planned {rows}")
        self.spans.append((offset, base, rows))
        self.total += rows

    def build(self) -> list[tuple[int, memoryview]]:
        buf = np.zeros(self.total, dtype=DIRENT_DTYPE)
        lfn = buf.view(LFN_DTYPE)
        if self.rows:
            r = np.array(self.rows, dtype=np.int64)
            buf["DIR_Name"][r] = np.frombuffer(b"".join(self.name11s), dtype=np.uint8).reshape(-1, 11)
            buf["DIR_Attr"][r] = self.attrs
            date, time, cs = dates.fat_datetimes(self.stamps)
            cs[self.no_cs] = 0
            buf["DIR_CrtTimeTenth"][r] = cs
            buf["DIR_CrtTime"][r] = time
            buf["DIR_CrtDate"][r] = date
            buf["DIR_LstAccDate"][r] = date
            buf["DIR_WrtTime"][r] = time
            buf["DIR_WrtDate"][r] = date
            fc = np.array(self.firsts, dtype=np.int64)
            buf["DIR_FstClusHI"][r] = fc >> 16
            buf["DIR_FstClusLO"][r] = fc & 0xFFFF
            buf["DIR_FileSize"][r] = self.sizes
        if self.lrows:
            r = np.array(self.lrows, dtype=np.int64)
            c = np.frombuffer(b"".join(self.chunks), dtype=np.uint8).reshape(-1, 26)
            lfn["LDIR_Ord"][r] = self.ords
            lfn["LDIR_Name1"][r] = c[:, 0:10]
            lfn["LDIR_Attr"][r] = ATTR_LONG_NAME
            lfn["LDIR_Chksum"][r] = self.sums
            lfn["LDIR_Name2"][r] = c[:, 10:22]
            lfn["LDIR_Name3"][r] = c[:, 22:26]
        raw = memoryview(buf.view(np.uint8).reshape(-1).data)
        return [(off, raw[first * 32 : (first + rows) * 32]) for off, first, rows in self.spans]


def write(plan: FatPlan, image: Image, progress: Callable[[int, int], None] | None = None) -> None:
    """Write a planned volume at offset 0 of ``image`` (a view of a zeroed region).

    ``progress(done, total)`` is called with the bytes of file data copied so far.
    """
    g = plan.geometry
    image.write(0, plan.boot_sector)
    image.write(FSINFO_SECTOR * SECTOR, plan.fsinfo)
    image.write(BACKUP_BOOT_SECTOR * SECTOR, plan.boot_sector)
    image.write((BACKUP_BOOT_SECTOR + FSINFO_SECTOR) * SECTOR, plan.fsinfo)
    fat = plan.fat.astype("<u4").tobytes()
    fat += bytes(-len(fat) % SECTOR)
    for k in range(g.num_fats):
        image.write(g.fat_offset + k * g.fat_sectors * SECTOR, fat)
    for offset, data in plan.directories:
        image.write(offset, data)
    total = plan.data_bytes
    done = 0
    for path, node, offset in plan.files:
        _copy_file(image, path, node, offset)
        done += node.size
        if progress is not None:
            progress(done, total)


def _source(path: str, node: Node) -> int:
    if node.source is None:
        raise SourceError(f"{path}: {node.size} bytes planned but the tree has no source file for it")
    return open_source(node.source)


def _changed(node: Node, found: int) -> SourceError:
    return SourceError(f"{node.source}: changed since it was scanned ({found} bytes, {node.size} expected)")


def _copy_file(image: Image, path: str, node: Node, offset: int) -> None:
    fd = _source(path, node)
    try:
        st = os.fstat(fd)
        if st.st_size != node.size:
            raise _changed(node, st.st_size)
        for seg_off, seg_len in node.data_segments():
            n = image.copy_from(fd, seg_off, offset + seg_off, seg_len, src_name=node.source)
            if n != seg_len:
                raise SourceError(f"{node.source}: changed while copied (ended at {seg_off + n} of {node.size} bytes)")
    finally:
        os.close(fd)


def make_fat(tree: Tree, path: str | os.PathLike[str], size: int, options: FatOptions) -> FatPlan:
    """Plan and write a FAT32 image file of ``size`` bytes at ``path`` (no partial output)."""
    from ..space import fat_bytes, margin

    p = plan(tree, size, options)
    needed = margin(fat_bytes(p))
    check_space(path, needed)
    with output_errors(path, needed), atomic_output(path, final=True) as tmp:
        img = Image.create(tmp, size)
        try:
            write(p, img)
            img.sync()
        finally:
            img.close()
    return p
