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
from dataclasses import dataclass
from typing import Any

from ..errors import Error, FATError
from ..fat import read as fat_read
from ..fat.structs import ATTR_DIRECTORY, BootSector16, BootSector32, FSInfo
from .accounting import Ctx, Ranges
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


@dataclass
class _Node:
    """One entry of a FAT volume as the diff sees it."""

    is_dir: bool
    attr: int
    crt: tuple[int, int, int]  # DIR_CrtDate, DIR_CrtTime, DIR_CrtTimeTenth
    acc: int  # DIR_LstAccDate
    wrt: tuple[int, int]  # DIR_WrtDate, DIR_WrtTime
    size: int
    runs: list[tuple[int, int]]


@dataclass
class _Vol:
    v: Any
    nodes: dict[bytes, _Node]
    clusters: dict[int, bytes]  # cluster -> path owning it (file data or folder)

    def data(self, path: bytes) -> Iterator[bytes]:
        n = self.nodes[path]
        return self.v.read_runs(n.runs, n.size, path.decode("utf-8", "replace"))


def _walk(fd: int, off: int, size: int) -> _Vol:
    """Every entry of the volume with its attributes and clusters (bounded like read_tree).

    Uses the FAT helper's volume and directory parsers (:mod:`pydiskimg.fat.read`).
    """
    v = fat_read._Volume(fd, off, size)
    nodes: dict[bytes, _Node] = {}
    clusters: dict[int, bytes] = {}
    seen: set[int] = set()
    root_runs = v.chain(v.root_cluster, "root folder") if v.root_cluster else []
    nodes[b"/"] = _Node(True, 0x10, (0, 0, 0), 0, (0, 0), 0, root_runs)
    stack: list[tuple[bytes, int, int]] = [(b"", v.root_cluster, 0)]
    budget = v.clusters * max(1, v.cluster_bytes // 32) + v.root_entries + 16
    while stack:
        prefix, first, depth = stack.pop()
        where = (prefix or b"/").decode("utf-8", "replace")
        for c0, n in nodes[prefix or b"/"].runs:
            for c in range(c0, c0 + n):
                clusters[c] = prefix or b"/"
        for name, e, label in fat_read._entries(v.dir_bytes(first, where)):
            if label is not None or name in (".", ".."):
                continue
            budget -= 1
            if budget < 0:
                raise FATError(f"{where}: more entries than the volume can hold")
            fat_read._check_name(name, f"{where.rstrip('/')}/{name}")
            path = prefix + b"/" + name.encode("utf-8", "replace")
            cl = int(e["DIR_FstClusHI"]) << 16 | int(e["DIR_FstClusLO"])
            if v.bits != 32:
                cl &= 0xFFFF
            attr = int(e["DIR_Attr"])
            is_dir = bool(attr & ATTR_DIRECTORY)
            fsize = 0 if is_dir else int(e["DIR_FileSize"])
            show = path.decode("utf-8", "replace")
            if is_dir and (cl in seen or cl == 0 or depth + 1 > 1024):
                raise FATError(f"{show}: folder loop or cross-link at cluster {cl}")
            runs = v.chain(cl, show) if (is_dir or fsize) else []
            if not is_dir and sum(n for _, n in runs) * v.cluster_bytes < fsize:
                raise FATError(f"{show}: {fsize} bytes but its cluster chain is shorter")
            nodes[path] = _Node(
                is_dir, attr,
                (int(e["DIR_CrtDate"]), int(e["DIR_CrtTime"]), int(e["DIR_CrtTimeTenth"])),
                int(e["DIR_LstAccDate"]), (int(e["DIR_WrtDate"]), int(e["DIR_WrtTime"])),
                fsize, runs)
            if is_dir:
                seen.add(cl)
                stack.append((path, cl, depth + 1))
            else:
                for c0, n in runs:
                    for c in range(c0, c0 + n):
                        clusters.setdefault(c, path)
    return _Vol(v, nodes, clusters)


def diff_fat(A: Source, B: Source, oa: int, sa: int, ob: int, sb: int, ranges: Ranges | None,
             ctx: Ctx, label: str) -> None:
    scope = f"{label} (FAT)"
    try:
        with fat_fd(A, oa, sa) as (fda, offa), fat_fd(B, ob, sb) as (fdb, offb):
            ia = fat_read.read_info(fda, offa, sa)
            ib = fat_read.read_info(fdb, offb, sb)
            va, vb = _walk(fda, offa, sa), _walk(fdb, offb, sb)
            keys = _diff_nodes(va, vb, ctx, scope)
    except Error as e:
        ctx.add(scope, "filesystem", "unreadable", None, str(e))
        return
    file_diffs: set[str] = set().union(*keys.values()) if keys else set()
    dirty_dirs = {p.rsplit(b"/", 1)[0] or b"/" for p in keys}
    fat32 = ia["type"] == "FAT32"
    layout = _BS32 if fat32 else _BS16
    boot_a, boot_b = A.read(oa, 512), B.read(ob, 512)
    fa, fb = _fields(boot_a, layout), _fields(boot_b, layout)
    boot_changed = set()
    for name, _o, _n in layout:
        if fa[name] != fb[name]:
            boot_changed.add(name)
            xa, xb = fa[name], fb[name]
            if len(xa) <= 4:
                ctx.add(scope, "boot sector", name, int.from_bytes(xa, "little"),
                        int.from_bytes(xb, "little"))
            elif name == "BS_BootCode":
                ctx.add(scope, "boot sector", "boot code",
                        "sha256:" + hashlib.sha256(xa).hexdigest()[:16],
                        "sha256:" + hashlib.sha256(xb).hexdigest()[:16])
            else:
                ctx.add(scope, "boot sector", name, xa, xb)
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
            owner = va.clusters.get(c) or vb.clusters.get(c)
            who = f" ({owner.decode('utf-8', 'replace')})" if owner else " (free)"
            return f"FAT {k + 1}, entry of cluster {c}{who}", oa + max(end, rel + 1)
        if rel < data_off:
            return "root folder", oa + data_off
        c = (rel - data_off) // csize + 2
        owner = va.clusters.get(c) or vb.clusters.get(c)
        if owner is None:
            return f"free cluster {c}", oa + data_off + (c - 1) * csize
        node = va.nodes.get(owner) or vb.nodes[owner]
        what = "folder" if node.is_dir else "file"
        return (f"{what} {owner.decode('utf-8', 'replace')}, cluster {c}",
                oa + data_off + (c - 1) * csize)

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
            elif fat_start <= rel < fat_start + ia["fats"] * fat_len:
                r = (rel - fat_start) % fat_len
                width = {"FAT12": 1.5, "FAT16": 2, "FAT32": 4}[ia["type"]]
                c = int(r // width)
                ok = any(keys.get(o, set()) & _CHAIN_KEYS for o in _owners(va, vb, c))
            elif fat_start <= rel < data_off:  # FAT12/16 root folder
                ok = b"/" in dirty_dirs
            elif rel >= data_off:
                c = (rel - data_off) // csize + 2
                for o in _owners(va, vb, c):
                    node = va.nodes.get(o) or vb.nodes.get(o)
                    if node is not None and node.is_dir:
                        ok = ok or o in dirty_dirs or bool(keys.get(o, set()) & _CHAIN_KEYS)
                    else:
                        ok = ok or bool(keys.get(o, set()) & (_CHAIN_KEYS | {"content"}))
            if ok:
                ctx.explained.append((pos, end))
            pos = end


_CHAIN_KEYS = {"added", "removed", "size", "clusters", "type"}


def _owners(va: _Vol, vb: _Vol, c: int) -> set[bytes]:
    return {o for o in (va.clusters.get(c), vb.clusters.get(c)) if o is not None}


def _fmt_date(d: int, t: int | None = None) -> str:
    y, mo, da = 1980 + (d >> 9), (d >> 5) & 15, d & 31
    out = f"{y:04d}-{mo:02d}-{da:02d}"
    if t is not None:
        out += f"T{t >> 11:02d}:{(t >> 5) & 63:02d}:{(t & 31) * 2:02d}"
    return out


def _diff_nodes(va: _Vol, vb: _Vol, ctx: Ctx, scope: str) -> dict[bytes, set[str]]:
    """Compare every entry by path; the keys of what differs, per path."""
    out: dict[bytes, set[str]] = {}
    for p in sorted(set(va.nodes) | set(vb.nodes)):
        show = p.decode("utf-8", "replace")
        a, b = va.nodes.get(p), vb.nodes.get(p)
        k: set[str] = set()
        if b is None:
            ctx.add(scope, show, None, "present", "removed")
            k.add("removed")
        elif a is None:
            ctx.add(scope, show, None, "absent", "added")
            k.add("added")
        elif a.is_dir != b.is_dir:
            ctx.add(scope, show, "type", "dir" if a.is_dir else "file",
                    "dir" if b.is_dir else "file")
            k.add("type")
        else:
            if a.size != b.size:
                ctx.add(scope, show, "size", a.size, b.size)
                k.add("size")
            if a.wrt != b.wrt:
                ctx.add(scope, show, "mtime", _fmt_date(*a.wrt), _fmt_date(*b.wrt))
                k.add("mtime")
            if a.crt != b.crt:
                ctx.add(scope, show, "creation time",
                        f"{_fmt_date(a.crt[0], a.crt[1])}+{a.crt[2] * 10}ms",
                        f"{_fmt_date(b.crt[0], b.crt[1])}+{b.crt[2] * 10}ms")
                k.add("ctime")
            if a.acc != b.acc:
                ctx.add(scope, show, "access date", _fmt_date(a.acc), _fmt_date(b.acc))
                k.add("atime")
            if a.attr != b.attr:
                ctx.add(scope, show, "attributes", f"{a.attr:#04x}", f"{b.attr:#04x}")
                k.add("attr")
            if not a.is_dir:
                ha, hb = hashlib.sha256(), hashlib.sha256()
                for c in va.data(p):
                    ha.update(c)
                for c in vb.data(p):
                    hb.update(c)
                if ha.digest() != hb.digest():
                    ctx.add(scope, show, "content", "sha256:" + ha.hexdigest()[:16],
                            "sha256:" + hb.hexdigest()[:16])
                    k.add("content")
            if a.runs != b.runs:
                k.add("clusters")
                if not k - {"clusters"}:
                    ctx.add(scope, show, "clusters", _runs(a.runs), _runs(b.runs))
        if k:
            out[p] = k
    return out


def _runs(runs: list[tuple[int, int]]) -> str:
    s = ", ".join(f"{c}+{n}" for c, n in runs[:4])
    if len(runs) > 4:
        s += f", ... ({len(runs)} runs)"
    return s or "(none)"
