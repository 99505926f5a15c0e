"""FAT part of ``diff`` and ``inspect``: boot sector fields, FSInfo, files by path.

Reads with the FAT helper's reader (:mod:`pydiskimg.fat.read`), which takes a file descriptor:
raw images are passed as they are; for other formats the partition's data ranges are copied
into a sparse in-memory file first (an ESP is small; holes cost nothing).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from typing import Any

from ..errors import Error
from ..fat import read as fat_read
from ..fat.structs import BootSector16, BootSector32, FSInfo
from .diff import Ctx, Ranges
from .fsdiff import _fmt_ns
from .source import Source


@contextlib.contextmanager
def fat_fd(src: Source, offset: int, size: int) -> Iterator[tuple[int, int]]:
    """(fd, offset) through which the FAT reader sees the volume at ``offset`` of ``src``."""
    if getattr(src, "extents", 0) is None and getattr(src, "format", "") in ("raw", "vhd-fixed"):
        yield src.fd, offset
        return
    fd = os.memfd_create("pydiskimg-fat", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        ranges = (src.data_ranges(offset, offset + size) if hasattr(src, "data_ranges")
                  else [(offset, size)])
        for off, n in ranges:
            pos = off
            while pos < off + n:
                k = min(1 << 24, off + n - pos)
                os.pwrite(fd, src.read(pos, k), pos - offset)
                pos += k
        yield fd, 0
    finally:
        os.close(fd)


def fat_info(src: Source, offset: int, size: int) -> dict[str, Any]:
    """The FAT summary ``inspect`` prints (type, volume ID, label, cluster size, ...)."""
    with fat_fd(src, offset, size) as (fd, off):
        return fat_read.read_info(fd, off, size)


def fat_files(src: Source, offset: int, size: int) -> list[dict[str, Any]]:
    """Every file and folder: path, type, size, mtime, sha256 (``inspect --files``)."""
    out = []
    with fat_fd(src, offset, size) as (fd, off):
        for e in fat_read.read_tree(fd, off, size):
            d: dict[str, Any] = {"path": e.path.decode("utf-8", "replace"),
                                 "type": "dir" if e.is_dir else "file", "size": e.size,
                                 "mtime_ns": e.mtime_ns}
            if not e.is_dir:
                h = hashlib.sha256()
                for c in e.data():
                    h.update(c)
                d["sha256"] = h.hexdigest()
            out.append(d)
    return out


def _layout(decl: Any) -> list[tuple[str, int, int]]:
    out = []
    off = 0
    for sc in decl.subcons:
        n = sc.sizeof()
        out.append((sc.name, off, n))
        off += n
    return out


_BS32 = _layout(BootSector32)
_BS16 = _layout(BootSector16)
_FSI = _layout(FSInfo)


def _field(layout: list[tuple[str, int, int]], off: int) -> tuple[str, int]:
    for name, o, n in layout:
        if o <= off < o + n:
            return name, o + n
    return f"byte {off}", off + 1


def _fields(raw: bytes, layout: list[tuple[str, int, int]]) -> dict[str, bytes]:
    return {name: raw[o:o + n] for name, o, n in layout}


def diff_fat(A: Source, B: Source, oa: int, sa: int, ob: int, sb: int, ranges: Ranges | None,
             ctx: Ctx, label: str) -> None:
    scope = f"{label} (FAT)"
    try:
        with fat_fd(A, oa, sa) as (fda, offa), fat_fd(B, ob, sb) as (fdb, offb):
            ia = fat_read.read_info(fda, offa, sa)
            ib = fat_read.read_info(fdb, offb, sb)
            files_a = {e.path: e for e in fat_read.read_tree(fda, offa, sa)}
            files_b = {e.path: e for e in fat_read.read_tree(fdb, offb, sb)}
            file_diffs = _diff_files(files_a, files_b, ctx, scope)
    except Error as e:
        ctx.add(scope, "filesystem", "unreadable", None, str(e))
        return
    fat32 = ia["type"] == "FAT32"
    layout = _BS32 if fat32 else _BS16
    boot_a, boot_b = A.read(oa, 512), B.read(ob, 512)
    fa, fb = _fields(boot_a, layout), _fields(boot_b, layout)
    boot_changed = set()
    for name, _o, _n in layout:
        if fa[name] != fb[name]:
            boot_changed.add(name)
            va, vb = fa[name], fb[name]
            if len(va) <= 4:
                ctx.add(scope, "boot sector", name, int.from_bytes(va, "little"),
                        int.from_bytes(vb, "little"))
            elif name == "BS_BootCode":
                ctx.add(scope, "boot sector", "boot code",
                        "sha256:" + hashlib.sha256(va).hexdigest()[:16],
                        "sha256:" + hashlib.sha256(vb).hexdigest()[:16])
            else:
                ctx.add(scope, "boot sector", name, va, vb)
    fsi_changed = set()
    for k in ("fsinfo_free_count", "fsinfo_next_free", "fsinfo_valid", "root_label",
              "fats_identical", "backup_boot_identical"):
        if ia.get(k) != ib.get(k):
            fsi_changed.add(k)
            if k in ("fsinfo_free_count", "fsinfo_next_free") and file_diffs:
                continue  # follows from the files that changed
            ctx.add(scope, k.replace("_", " "), None, ia.get(k), ib.get(k))
    bps, reserved = ia["bytes_per_sector"], ia["reserved_sectors"]
    fat_start = reserved * bps
    fat_len = ia["fat_sectors"] * bps
    data_off, csize = ia["data_offset"], ia["cluster_size"]
    bk = ia.get("backup_boot_sector", 0) or 0
    fsi = ia.get("fsinfo_sector", 0) or 0

    def locate(off: int) -> tuple[str, int]:
        rel = off - oa
        if rel < 512:
            f, end = _field(layout, rel)
            return f"boot sector, {f}", oa + end
        if fat32 and bk and bk * bps <= rel < bk * bps + 512:
            f, end = _field(layout, rel - bk * bps)
            return f"backup boot sector, {f}", oa + bk * bps + end
        if fat32 and fsi and fsi * bps <= rel < fsi * bps + 512:
            f, end = _field(_FSI, rel - fsi * bps)
            return f"FSInfo, {f}", oa + fsi * bps + end
        if rel < fat_start:
            return "reserved sectors", oa + fat_start
        if rel < fat_start + ia["fats"] * fat_len:
            k, r = divmod(rel - fat_start, fat_len)
            width = {"FAT12": 1.5, "FAT16": 2, "FAT32": 4}[ia["type"]]
            c = int(r // width)
            end = fat_start + k * fat_len + int((c + 1) * width)
            return f"FAT {k + 1}, entry of cluster {c}", oa + max(end, rel + 1)
        if rel < data_off:
            return "root folder", oa + data_off
        c = (rel - data_off) // csize + 2
        return f"data cluster {c}", oa + data_off + (c - 1) * csize

    ctx.locators.append((oa, oa + sa, label, locate))
    if ranges is None:
        return
    for a, b in ranges.intersect(oa, oa + sa):
        pos = a
        while pos < b:
            lab, end = locate(pos)
            end = max(min(end, b), pos + 1)
            rel = pos - oa
            ok = False
            if rel < 512:
                ok = bool(boot_changed)
            elif fat32 and bk and bk * bps <= rel < bk * bps + 512:
                ok = bool(boot_changed) and boot_a == A.read(oa + bk * bps, 512) and \
                    boot_b == B.read(ob + bk * bps, 512)
            elif fat32 and fsi and fsi * bps <= rel < fsi * bps + 512:
                ok = bool(fsi_changed & {"fsinfo_free_count", "fsinfo_next_free", "fsinfo_valid"})
            elif fat_start <= rel < data_off:
                ok = bool(file_diffs & {"added", "removed", "size", "content", "type"})
                if rel >= fat_start + ia["fats"] * fat_len:  # FAT12/16 root folder
                    ok = bool(file_diffs)
            elif rel >= data_off:
                ok = bool(file_diffs)
            if ok:
                ctx.explained.append((pos, end))
            pos = end


def _diff_files(fa: dict[bytes, Any], fb: dict[bytes, Any], ctx: Ctx, scope: str) -> set[str]:
    kinds: set[str] = set()
    for p in sorted(set(fa) | set(fb)):
        show = p.decode("utf-8", "replace")
        a, b = fa.get(p), fb.get(p)
        if b is None:
            ctx.add(scope, show, None, "present", "removed")
            kinds.add("removed")
            continue
        if a is None:
            ctx.add(scope, show, None, "absent", "added")
            kinds.add("added")
            continue
        if a.is_dir != b.is_dir:
            ctx.add(scope, show, "type", "dir" if a.is_dir else "file", "dir" if b.is_dir else "file")
            kinds.add("type")
            continue
        if a.size != b.size:
            ctx.add(scope, show, "size", a.size, b.size)
            kinds.add("size")
        if a.mtime_ns != b.mtime_ns:
            ctx.add(scope, show, "mtime", _fmt_ns(a.mtime_ns), _fmt_ns(b.mtime_ns))
            kinds.add("mtime")
        if not a.is_dir:
            ha, hb = hashlib.sha256(), hashlib.sha256()
            for c in a.data():
                ha.update(c)
            for c in b.data():
                hb.update(c)
            if ha.digest() != hb.digest():
                ctx.add(scope, show, "content", "sha256:" + ha.hexdigest()[:16],
                        "sha256:" + hb.hexdigest()[:16])
                kinds.add("content")
    return kinds
