"""Filesystem-level part of ``diff``: ext4 and FAT, field by field and file by file.

See :mod:`pydiskimg.audit.diff` for the overall method.  Offsets handed to the context are
absolute image offsets; inside this module, ``rel`` offsets are relative to the filesystem.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import Error
from ..ext4 import read as e4
from . import fatdiff
from .accounting import Ctx, Ranges
from .source import Source

log = logging.getLogger(__name__)


def probe(src: Source, offset: int, size: int) -> str | None:
    """``"ext4"``, ``"fat"`` or None: the filesystem at ``offset``, by its magic."""
    if size >= 2048 and e4.probe(src, offset):
        return "ext4"
    boot = src.read(offset, 512)
    if len(boot) == 512 and boot[510:512] == b"\x55\xaa" and boot[0] in (0xEB, 0xE9) and (
            boot[54:59] == b"FAT12" or boot[54:59] == b"FAT16" or boot[82:87] == b"FAT32"
            or boot[54:57] == b"FAT"):
        return "fat"
    return None


def diff_filesystems(A: Source, B: Source, oa: int, sa: int, ob: int, sb: int,
                     ranges: Ranges | None, ctx: Ctx, label: str) -> None:
    """Compare the filesystems at ``oa`` (in A) and ``ob`` (in B).

    ``ranges`` is None when the two are not at the same place: then only the files are compared.
    """
    ta, tb = probe(A, oa, sa), probe(B, ob, sb)
    ctx.locators.append((oa, oa + sa, label, None))
    if ta != tb:
        ctx.add(label, "filesystem", "type", ta, tb)
        if ranges is not None:
            ctx.explained.append((oa, oa + sa))
        return
    if ta == "ext4":
        Ext4Diff(A, B, oa, sa, ob, sb, ranges, ctx, label).run()
    elif ta == "fat":
        fatdiff.diff_fat(A, B, oa, sa, ob, sb, ranges, ctx, label)


# -- ext4 ----------------------------------------------------------------------------------------
SB_DERIVED = {"s_checksum"}
SB_ALLOC = {"s_free_blocks_count_lo", "s_free_blocks_hi", "s_free_inodes_count"}
GD_DERIVED = {"bg_checksum"}
GD_CSUM = {"bg_block_bitmap_csum_lo", "bg_block_bitmap_csum_hi", "bg_inode_bitmap_csum_lo",
           "bg_inode_bitmap_csum_hi"}
GD_ALLOC = {"bg_free_blocks_count_lo", "bg_free_blocks_count_hi", "bg_free_inodes_count_lo",
            "bg_free_inodes_count_hi", "bg_used_dirs_count_lo", "bg_used_dirs_count_hi",
            "bg_itable_unused_lo", "bg_itable_unused_hi", "bg_flags",
            "bg_block_bitmap_csum_lo", "bg_block_bitmap_csum_hi",
            "bg_inode_bitmap_csum_lo", "bg_inode_bitmap_csum_hi"}

#: which compared attribute accounts for each inode field
FIELD_ATTRS: dict[str, set[str]] = {
    "i_mode": {"type", "mode"}, "i_uid": {"uid"}, "l_i_uid_high": {"uid"},
    "i_gid": {"gid"}, "l_i_gid_high": {"gid"}, "i_size_lo": {"size"}, "i_size_high": {"size"},
    "i_atime": {"atime"}, "i_atime_extra": {"atime"}, "i_ctime": {"ctime"},
    "i_ctime_extra": {"ctime"}, "i_mtime": {"mtime"}, "i_mtime_extra": {"mtime"},
    "i_crtime": {"crtime"}, "i_crtime_extra": {"crtime"}, "i_dtime": {"dtime"},
    "i_links_count": {"links"}, "i_blocks_lo": {"blocks", "i_blocks"},
    "l_i_blocks_high": {"blocks", "i_blocks"}, "i_flags": {"flags"},
    "l_i_version": {"version"}, "i_version_hi": {"version"},
    "i_block": {"blocks", "target", "device"}, "i_generation": {"generation"},
    "i_file_acl_lo": {"xattrs", "xattr block"}, "l_i_file_acl_high": {"xattrs", "xattr block"},
    "i_extra_isize": {"extra_isize"}, "i_projid": {"projid"}, "in-inode xattrs": {"xattrs"},
    "i_obso_faddr": {"faddr"},
}
INODE_CSUM = {"l_i_checksum_lo", "i_checksum_hi"}


def has_super(fs: e4.Ext4, g: int) -> bool:
    """Whether group ``g`` holds a superblock copy (sparse_super, sparse_super2)."""
    return fs.has_super(g)


@dataclass
class Side:
    fs: e4.Ext4
    paths: dict[bytes, int]
    ino_paths: dict[int, bytes]
    own_start: np.ndarray
    own_end: np.ndarray
    own_ino: np.ndarray
    own_lblk: np.ndarray
    own_kind: list[str]
    maps: dict[int, e4.BlockMap]

    def owner(self, blk: int) -> tuple[int, int, str, int] | None:
        """(ino, logical block, kind, end of run) of physical block ``blk``, or None."""
        i = int(np.searchsorted(self.own_start, blk, side="right")) - 1
        if i >= 0 and blk < self.own_end[i]:
            return (int(self.own_ino[i]), int(self.own_lblk[i]) + blk - int(self.own_start[i]),
                    self.own_kind[i], int(self.own_end[i]))
        return None

    def name(self, ino: int) -> str:
        p = self.ino_paths.get(ino)
        if p is not None:
            return p.decode("utf-8", "backslashreplace")
        return {1: "bad blocks", 2: "/", 5: "boot loader", 7: "resize inode",
                8: "journal"}.get(ino, "unused" if ino > 10 else "reserved")


def _load_side(fs: e4.Ext4) -> Side:
    paths: dict[bytes, int] = {}
    ino_paths: dict[int, bytes] = {}
    for p, ino in fs.walk():
        paths[p] = ino
        ino_paths.setdefault(ino, p)
    runs: list[tuple[int, int, int, int, str]] = []
    maps: dict[int, e4.BlockMap] = {}
    extra = [8] if fs.compat & e4.COMPAT_HAS_JOURNAL and fs.sb["s_journal_inum"] == 8 else []
    for ino in sorted(set(ino_paths) | set(extra)):
        inode = fs.inode(ino)
        try:
            bm = fs.block_map(inode)
        except Error:
            continue
        maps[ino] = bm
        kind = "journal" if ino == 8 else ("directory" if inode.kind == "dir" else "data")
        for e in bm.extents:
            runs.append((e.pblk, e.pblk + e.length, ino, e.lblk, kind))
        for m in bm.meta:
            runs.append((m, m + 1, ino, 0, "extent tree block"))
        if inode.file_acl and inode.file_acl < fs.blocks_count:
            runs.append((inode.file_acl, inode.file_acl + 1, ino, 0, "xattr block"))
    runs.sort()
    return Side(fs, paths, ino_paths,
                np.array([r[0] for r in runs], dtype=np.int64),
                np.array([r[1] for r in runs], dtype=np.int64),
                np.array([r[2] for r in runs], dtype=np.int64),
                np.array([r[3] for r in runs], dtype=np.int64),
                [r[4] for r in runs], maps)


def _sha(chunks: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


class Ext4Diff:
    def __init__(self, A: Source, B: Source, oa: int, sa: int, ob: int, sb: int,
                 ranges: Ranges | None, ctx: Ctx, label: str) -> None:
        self.A, self.B, self.oa, self.ob = A, B, oa, ob
        self.ctx = ctx
        self.scope = f"{label} (ext4)"
        self.label = label
        self.in_place = ranges is not None
        self.ranges = ranges
        self.sa, self.sb_ = sa, sb
        self.attrs_a: dict[int, set[str]] = {}
        self.attrs_b: dict[int, set[str]] = {}
        #: group descriptor fields reported on their own (filled by _diff_allocation)
        self.gd_reported: dict[int, set[str]] = {}

    def add(self, item: str, fld: str | None, a: Any, b: Any) -> None:
        self.ctx.add(self.scope, item, fld, a, b)

    def run(self) -> None:
        try:
            fa = e4.Ext4(self.A, self.oa, self.sa, verify=False, name=f"{self.label} of A")
            fb = e4.Ext4(self.B, self.ob, self.sb_, verify=False, name=f"{self.label} of B")
        except Error as e:
            self.add("filesystem", "unreadable", None, str(e))
            return
        self.fa, self.fb = fa, fb
        # a different UUID (or checksum seed) changes every metadata checksum: all of them are
        # then accounted for by that superblock field
        self.seed_changed = fa.csum_seed != fb.csum_seed and fa.metadata_csum
        self.sb_diff = self._diff_superblock()
        self.gd_diff = self._diff_gdt()
        self.alloc_blocks, self.alloc_inodes = self._diff_allocation()
        try:
            self.side_a, self.side_b = _load_side(fa), _load_side(fb)
        except Error as e:
            self.add("files", "unreadable", None, str(e))
            return
        self._dirty()
        self._diff_files()
        self.ctx.locators.append((self.oa, self.oa + fa.size, self.label, self._locate_abs))
        if self.in_place:
            self._account()

    # -- superblock and group descriptors -----------------------------------------------------
    def _diff_superblock(self) -> set[str]:
        a, b = self.fa.sb, self.fb.sb
        changed = {k for k in a if a[k] != b[k]}
        alloc_changed = changed & SB_ALLOC
        for k in sorted(changed - SB_DERIVED - SB_ALLOC, key=_sb_order):
            self.add("superblock", k, _fmt(k, a[k]), _fmt(k, b[k]))
        self._sb_alloc_fields = alloc_changed
        if changed == SB_DERIVED:
            self.add("superblock", "s_checksum", hex(a["s_checksum"]), hex(b["s_checksum"]))
        return changed

    def _diff_gdt(self) -> dict[int, set[str]]:
        out: dict[int, set[str]] = {}
        fa, fb = self.fa, self.fb
        if fa.groups != fb.groups:
            return out
        names = [n for n, _ in e4.GROUP_DESC_FIELDS]
        for g in range(fa.groups):
            if fa.group_desc_raw(g) == fb.group_desc_raw(g):
                continue
            a, b = fa.gd[g], fb.gd[g]
            changed = {k for k in names if a[k] != b[k]}
            out[g] = changed
            for k in names:
                if k in changed and k not in GD_DERIVED and k not in GD_ALLOC:
                    self.add(f"group {g} descriptor", k, a[k], b[k])
            if changed == GD_DERIVED:
                self.add(f"group {g} descriptor", "bg_checksum", a["bg_checksum"], b["bg_checksum"])
        return out

    def _diff_allocation(self) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]]:
        """Per group, (used only in A, used only in B) for blocks and for inodes."""
        fa, fb = self.fa, self.fb
        blocks: dict[int, tuple[int, int]] = {}
        inodes: dict[int, tuple[int, int]] = {}
        if fa.groups != fb.groups or fa.bpg != fb.bpg or fa.ipg != fb.ipg:
            return blocks, inodes
        for g in range(fa.groups):
            for which, nbits, out in (("block", fa.bpg, blocks), ("inode", fa.ipg, inodes)):
                try:
                    ba, bb = fa.bitmap(g, which), fb.bitmap(g, which)
                except Error:
                    continue
                if ba == bb:
                    continue
                if which == "block":
                    nbits = min(nbits, fa.blocks_count - fa.first_data_block - g * fa.bpg)
                xa = np.unpackbits(np.frombuffer(ba, np.uint8), bitorder="little")[:nbits]
                xb = np.unpackbits(np.frombuffer(bb, np.uint8), bitorder="little")[:nbits]
                only_a = int(np.count_nonzero(xa & ~xb & 1))
                only_b = int(np.count_nonzero(xb & ~xa & 1))
                if only_a or only_b:
                    out[g] = (only_a, only_b)
        for what, d in (("blocks", blocks), ("inodes", inodes)):
            if d:
                na = sum(x for x, _ in d.values())
                nb = sum(y for _, y in d.values())
                gl = ", ".join(str(g) for g in sorted(d)[:8]) + (" ..." if len(d) > 8 else "")
                self.add(f"{what} allocated differently (groups {gl})", None,
                         f"{na} {what} in use only in A", f"{nb} only in B")
        if not blocks and not inodes:
            # free counts differ without any allocation difference: report the fields
            for k in sorted(self._sb_alloc_fields):
                self.add("superblock", k, self.fa.sb[k], self.fb.sb[k])
        # group descriptor counters and flags of a group whose bitmaps agree: report them
        names = [n for n, _ in e4.GROUP_DESC_FIELDS]
        for g, ch in sorted(self.gd_diff.items()):
            if g in blocks or g in inodes:
                continue
            for k in names:
                if k in ch and k in GD_ALLOC and not (self.seed_changed and k in GD_CSUM):
                    self.gd_reported.setdefault(g, set()).add(k)
                    self.add(f"group {g} descriptor", k, self.fa.gd[g][k], self.fb.gd[g][k])
        return blocks, inodes

    # -- files ------------------------------------------------------------------------------
    def _dirty(self) -> None:
        """Inodes whose table slot, data or tree blocks hold a differing byte (in place only)."""
        self.dirty_a: set[int] = set()
        self.dirty_b: set[int] = set()
        if not self.in_place:
            return
        assert self.ranges is not None
        fa = self.fa
        bs = fa.block_size
        itb = -(-fa.ipg * fa.inode_size // bs)
        tables = sorted((fa.gd[g]["inode_table"], g) for g in range(fa.groups))
        t_starts = [t for t, _ in tables]
        block_ranges = []
        for a, b in self.ranges.intersect(self.oa, self.oa + min(fa.size, self.fb.size)):
            b0, b1 = (a - self.oa) // bs, (b - self.oa - 1) // bs + 1
            block_ranges.append((b0, b1))
            # inode table slots
            i = bisect.bisect_right(t_starts, b0) - 1
            while 0 <= i < len(tables) and tables[i][0] < b1:
                t, g = tables[i]
                lo = max(a - self.oa, t * bs) - t * bs
                hi = min(b - self.oa, (t + itb) * bs) - t * bs
                if hi > lo:
                    for idx in range(lo // fa.inode_size, (hi - 1) // fa.inode_size + 1):
                        if idx < fa.ipg:
                            self.dirty_a.add(g * fa.ipg + idx + 1)
                i += 1
        for side, dirty in ((self.side_a, self.dirty_a), (self.side_b, self.dirty_b)):
            if not len(side.own_start):
                continue
            cummax = np.maximum.accumulate(side.own_end)
            for b0, b1 in block_ranges:
                i0 = int(np.searchsorted(cummax, b0, side="right"))
                i1 = int(np.searchsorted(side.own_start, b1, side="left"))
                for k in range(i0, i1):
                    if side.own_end[k] > b0:
                        dirty.add(int(side.own_ino[k]))
        self.dirty_b |= {i for i in self.dirty_a if i <= fa.inodes_count}

    def _diff_files(self) -> None:
        A, B = self.side_a, self.side_b
        for p in sorted(set(A.paths) | set(B.paths)):
            show = p.decode("utf-8", "backslashreplace")
            ia, ib = A.paths.get(p), B.paths.get(p)
            if ib is None:
                self.add(show, None, "present", "removed")
                assert ia is not None
                self.attrs_a.setdefault(ia, set()).add("*")
                self._mark_parent(p)
                continue
            if ia is None:
                self.add(show, None, "absent", "added")
                self.attrs_b.setdefault(ib, set()).add("*")
                self._mark_parent(p)
                continue
            if ia == ib and ia not in self.dirty_a and ib not in self.dirty_b:
                continue  # no differing byte in its inode, data or tree blocks
            keys = self._diff_inode(show, ia, ib)
            self.attrs_a.setdefault(ia, set()).update(keys)
            self.attrs_b.setdefault(ib, set()).update(keys)
            if "inode" in keys:
                self._mark_parent(p)

        # the reserved inodes no path reaches (bad blocks, resize, journal, ...)
        first = min(self.fa.sb["s_first_ino"], self.fb.sb["s_first_ino"], 64)
        for ino in range(1, first):
            if ino == e4.ROOT_INO or ino not in self.dirty_a | self.dirty_b:
                continue
            if ino > self.fa.inodes_count or ino > self.fb.inodes_count:
                continue
            try:
                keys = self._diff_inode(f"inode {ino} ({A.name(ino)})", ino, ino)
            except Error as e:
                self.add(f"inode {ino}", "unreadable", None, str(e))
                keys = {"*"}
            self.attrs_a.setdefault(ino, set()).update(keys)
            self.attrs_b.setdefault(ino, set()).update(keys)

    def _mark_parent(self, p: bytes) -> None:
        parent = p.rsplit(b"/", 1)[0] or b"/"
        for side, attrs in ((self.side_a, self.attrs_a), (self.side_b, self.attrs_b)):
            ino = side.paths.get(parent)
            if ino is not None:
                attrs.setdefault(ino, set()).add("entries")

    def _diff_inode(self, show: str, ia: int, ib: int) -> set[str]:
        fa, fb = self.fa, self.fb
        xa, xb = fa.inode(ia), fb.inode(ib)
        keys: set[str] = set()

        def cmp(key: str, va: Any, vb: Any) -> None:
            if va != vb:
                keys.add(key)
                self.add(show, key, va, vb)

        if ia != ib:
            keys.add("inode")
            self.add(show, "inode number", ia, ib)
        if xa.raw == xb.raw and ia == ib and not self._data_touched(ia, ib):
            return keys
        cmp("type", xa.kind, xb.kind)
        cmp("mode", f"{xa.mode & 0o7777:04o}", f"{xb.mode & 0o7777:04o}")
        cmp("uid", xa.uid, xb.uid)
        cmp("gid", xa.gid, xb.gid)
        cmp("size", xa.size, xb.size)
        cmp("links", xa.links, xb.links)
        for t in ("atime", "ctime", "mtime", "crtime"):
            cmp(t, _fmt_ns(xa.time_ns(t)), _fmt_ns(xb.time_ns(t)))
        for k, key in (("i_dtime", "dtime"), ("i_flags", "flags"), ("i_generation", "generation"),
                       ("i_projid", "projid"), ("i_extra_isize", "extra_isize"),
                       ("i_obso_faddr", "faddr")):
            va, vb = xa.f.get(k), xb.f.get(k)
            cmp(key, hex(va) if k == "i_flags" and va is not None else va,
                hex(vb) if k == "i_flags" and vb is not None else vb)
        va = (xa.f["l_i_version"], xa.f.get("i_version_hi"))
        vb = (xb.f["l_i_version"], xb.f.get("i_version_hi"))
        cmp("version", va, vb)
        try:
            xaa, xab = fa.xattrs(xa), fb.xattrs(xb)
        except Error as e:
            xaa, xab = {"<unreadable>": str(e).encode()}, {}
        if xaa != xab:
            keys.add("xattrs")
            for n in sorted(set(xaa) | set(xab)):
                if xaa.get(n) != xab.get(n):
                    self.add(show, f"xattr {n}", xaa.get(n), xab.get(n))
        if xa.file_acl != xb.file_acl and xaa == xab:
            keys.add("xattr block")
            self.add(show, "xattr block", xa.file_acl, xb.file_acl)
        if xa.kind != xb.kind:
            return keys
        if xa.kind in ("chr", "blk"):
            cmp("device", "{}:{}".format(*fa.device(xa)), "{}:{}".format(*fb.device(xb)))
            if xa.f["i_block"] != xb.f["i_block"]:
                keys.add("device")
        elif xa.kind == "symlink":
            try:
                cmp("target", fa.symlink_target(xa), fb.symlink_target(xb))
            except Error as e:
                cmp("target", "<unreadable>", str(e))
            self._diff_blocks(show, ia, ib, keys, content=False)
        elif xa.kind == "file":
            self._diff_blocks(show, ia, ib, keys, content=True)
        elif xa.kind == "dir":
            self._diff_blocks(show, ia, ib, keys, content=False)
            try:
                ea = [(e.name, e.ino) for e in fa.dir_entries(xa)]
                eb = [(e.name, e.ino) for e in fb.dir_entries(xb)]
            except Error as e:
                self.add(show, "entries", "<unreadable>", str(e))
                keys.add("entries")
                return keys
            if ea != eb:
                keys.add("entries")
                if sorted(ea) == sorted(eb):
                    self.add(show, "entry order on disk", None, None)
                else:
                    # children are compared by path; "." and ".." are only seen here
                    da, db = dict(ea), dict(eb)
                    for dot in (b".", b".."):
                        if da.get(dot) != db.get(dot):
                            self.add(show, f"entry {dot.decode()}", da.get(dot), db.get(dot))
                    if len(ea) != len(da) or len(eb) != len(db):
                        self.add(show, "duplicate entry names", len(ea) - len(da),
                                 len(eb) - len(db))
        ba = (int(xa.f["i_blocks_lo"]), int(xa.f["l_i_blocks_high"]))
        bb = (int(xb.f["i_blocks_lo"]), int(xb.f["l_i_blocks_high"]))
        if ba != bb:
            keys.add("i_blocks")
            if not keys & {"blocks", "content", "size", "xattrs", "xattr block"}:
                self.add(show, "i_blocks", ba[0] | ba[1] << 32, bb[0] | bb[1] << 32)
        return keys

    def _data_touched(self, ia: int, ib: int) -> bool:
        """Whether a differing range touches the data or tree blocks of the inode."""
        if not self.in_place:
            return True
        if ia not in self.dirty_a and ib not in self.dirty_b:
            return False
        bs = self.fa.block_size
        for side, ino, base in ((self.side_a, ia, self.oa), (self.side_b, ib, self.ob)):
            bm = side.maps.get(ino)
            if bm is None:
                continue
            assert self.ranges is not None
            for e in bm.extents:
                if self.ranges.any_in(base + e.pblk * bs, base + (e.pblk + e.length) * bs):
                    return True
            for m in bm.meta:
                if self.ranges.any_in(base + m * bs, base + (m + 1) * bs):
                    return True
            inode = side.fs.inode(ino)
            if inode.file_acl and self.ranges.any_in(base + inode.file_acl * bs,
                                                     base + (inode.file_acl + 1) * bs):
                return True
        return False

    def _diff_blocks(self, show: str, ia: int, ib: int, keys: set[str], content: bool) -> None:
        ma, mb = self.side_a.maps.get(ia), self.side_b.maps.get(ib)
        fa, fb = self.fa, self.fb
        same_map = ma == mb
        if not same_map:
            keys.add("blocks")
            self.add(show, "blocks", _map_summary(ma), _map_summary(mb))
        if not content:
            return
        if same_map and self.in_place and not self._data_touched(ia, ib):
            return
        xa, xb = fa.inode(ia), fb.inode(ib)
        try:
            ha = _sha(fa.iter_data(xa))
            hb = _sha(fb.iter_data(xb))
        except Error as e:
            self.add(show, "content", "<unreadable>", str(e))
            keys.add("content")
            return
        if ha != hb:
            keys.add("content")
            self.add(show, "content", "sha256:" + ha[:16], "sha256:" + hb[:16])

    # -- locating and accounting ------------------------------------------------------------
    def _regions(self, fs: e4.Ext4) -> list[tuple[int, int, str, int]]:
        """Metadata regions of ``fs`` in blocks: (start, end, kind, group)."""
        out = []
        rsv = fs.sb["s_reserved_gdt_blocks"]
        for g in range(fs.groups):
            # group 0's superblock is in the block before the descriptors (block 1 with 1 KiB
            # blocks, even when bigalloc makes s_first_data_block 0)
            start = fs.gdt_block - 1 if g == 0 else fs.first_data_block + g * fs.bpg
            if has_super(fs, g):
                out.append((start, start + 1, "sb", g))
                out.append((start + 1, start + 1 + fs.gdt_blocks, "gdt", g))
                if rsv:
                    out.append((start + 1 + fs.gdt_blocks, start + 1 + fs.gdt_blocks + rsv,
                                "rgdt", g))
            d = fs.gd[g]
            out.append((d["block_bitmap"], d["block_bitmap"] + 1, "bbitmap", g))
            out.append((d["inode_bitmap"], d["inode_bitmap"] + 1, "ibitmap", g))
            itb = -(-fs.ipg * fs.inode_size // fs.block_size)
            out.append((d["inode_table"], d["inode_table"] + itb, "itable", g))
        out.sort()
        return out

    def _locate(self, rel: int) -> tuple[str, int, tuple[Any, ...]]:
        """(label, end (relative), key) of the structure at filesystem byte ``rel``."""
        fs = self.fa
        bs = fs.block_size
        if not hasattr(self, "_reg"):
            self._reg = self._regions(fs)
            self._reg_starts = [r[0] for r in self._reg]
        blk = rel // bs
        if rel < 1024:
            return "boot area (bytes 0-1023)", 1024, ("boot",)
        if rel < 2048:
            f = e4.field_at(e4.SUPERBLOCK_LAYOUT, rel - 1024)
            end = 1024 + _field_end(e4.SUPERBLOCK_LAYOUT, rel - 1024)
            return f"superblock, {f}", end, ("sb", f.split("+")[0])
        if blk == 0 and bs > 2048 and rel < bs:
            return "block 0 after the superblock", bs, ("boot",)
        i = bisect.bisect_right(self._reg_starts, blk) - 1
        while i >= 0 and i < len(self._reg):
            s, e, kind, g = self._reg[i]
            if s <= blk < e:
                return self._locate_meta(rel, s, e, kind, g)
            if s > blk:
                break
            # overlapping regions are not expected; look only at the nearest one
            break
        # file data, or free
        nxt_meta = self._reg_starts[i + 1] if i + 1 < len(self._reg) else fs.blocks_count
        for side in (self.side_a, self.side_b):
            o = side.owner(blk)
            if o is not None:
                ino, lblk, kind, run_end = o
                end_blk = max(blk + 1, min(run_end, nxt_meta))
                if kind in ("extent tree block", "xattr block"):
                    lab = f"inode {ino} ({side.name(ino)}) {kind} {blk}"
                elif kind == "journal":
                    lab = f"journal (inode {ino}), logical block {lblk}"
                else:
                    lab = f"inode {ino} ({side.name(ino)}) {kind}, logical block {lblk}"
                return lab, end_blk * bs, ("data", ino, kind, side is self.side_a,
                                           rel - blk * bs, lblk)
        end_blk = nxt_meta
        for side in (self.side_a, self.side_b):
            j = int(np.searchsorted(side.own_start, blk, side="right"))
            if j < len(side.own_start):
                end_blk = min(end_blk, int(side.own_start[j]))
        end_blk = max(end_blk, blk + 1)
        return f"unallocated block {blk}", end_blk * bs, ("free", blk)

    def _locate_meta(self, rel: int, s: int, e: int, kind: str, g: int
                     ) -> tuple[str, int, tuple[Any, ...]]:
        fs = self.fa
        bs = fs.block_size
        off = rel - s * bs
        if kind == "sb":
            if g == 0:
                return "block 0", (s + 1) * bs, ("boot",)
            if off < 1024:
                f = e4.field_at(e4.SUPERBLOCK_LAYOUT, off)
                return (f"backup superblock in group {g}, {f}",
                        s * bs + _field_end(e4.SUPERBLOCK_LAYOUT, off), ("bsb", g, f.split("+")[0]))
            return f"backup superblock block in group {g} (padding)", (s + 1) * bs, ("pad",)
        if kind == "gdt":
            dg, doff = divmod(off, fs.desc_size)
            if dg >= fs.groups:
                return f"group descriptor block padding (group {g} copy)", e * bs, ("pad",)
            f = e4.field_at(e4.GROUP_DESC_LAYOUT, doff) if doff < 64 else "padding"
            where = "" if g == 0 else f"backup in group {g}, "
            end = s * bs + dg * fs.desc_size + (_field_end(e4.GROUP_DESC_LAYOUT, doff) if doff < 64 else fs.desc_size)
            return f"{where}group {dg} descriptor, {f}", end, ("gd", dg, f)
        if kind == "rgdt":
            return f"reserved GDT blocks (group {g})", e * bs, ("rgdt", g)
        if kind in ("bbitmap", "ibitmap"):
            what = "block" if kind == "bbitmap" else "inode"
            return f"group {g} {what} bitmap", e * bs, ("bitmap", g, what)
        # inode table
        idx, ioff = divmod(off, fs.inode_size)
        if idx >= fs.ipg:
            return f"group {g} inode table (tail)", e * bs, ("pad",)
        ino = g * fs.ipg + idx + 1
        raw = self.A.read(self.oa + s * bs + idx * fs.inode_size, fs.inode_size)
        extra = int.from_bytes(raw[0x80:0x82], "little") if fs.inode_size > 128 else 0
        if ioff >= 128 + extra and ioff >= 128:
            f, fend = "in-inode xattrs", fs.inode_size
        else:
            f = e4.field_at(e4.INODE_LAYOUT, ioff)
            fend = _field_end(e4.INODE_LAYOUT, ioff)
        name = self.side_a.name(ino) if ino in self.side_a.ino_paths else self.side_b.name(ino)
        base = s * bs + idx * fs.inode_size
        return (f"group {g} inode table, inode {ino} ({name}), {f.split('+')[0]}", base + fend,
                ("inode", ino, f.split("+")[0]))

    def _locate_abs(self, off: int) -> tuple[str, int]:
        label, end, _ = self._locate(off - self.oa)
        return label, end + self.oa

    def _explained(self, key: tuple[Any, ...]) -> bool:
        kind = key[0]
        if kind in ("sb", "bsb"):
            f = key[-1]
            if f in SB_DERIVED:
                return bool(self.sb_diff - SB_DERIVED)
            if f in SB_ALLOC:
                return bool(self.alloc_blocks or self.alloc_inodes) or f in self.sb_diff
            if kind == "bsb":
                return f in self.sb_diff or f in ("s_block_group_nr", "s_state")
            return f in self.sb_diff
        if kind == "gd":
            g, f = key[1], key[2]
            ch = self.gd_diff.get(g, set())
            if f in GD_DERIVED or (f in GD_CSUM and self.seed_changed):
                return bool(ch - GD_DERIVED) or self.seed_changed
            if f in GD_ALLOC:
                return bool(self.alloc_blocks.get(g) or self.alloc_inodes.get(g)) or (
                    f in self.gd_reported.get(g, set()))
            return f in ch
        if kind == "bitmap":
            g, what = key[1], key[2]
            return g in (self.alloc_blocks if what == "block" else self.alloc_inodes)
        if kind == "inode":
            ino, f = key[1], key[2]
            attrs = self.attrs_a.get(ino, set()) | self.attrs_b.get(ino, set())
            if "*" in attrs or "inode" in attrs:
                return True
            if f in INODE_CSUM:
                return self.seed_changed or bool(attrs)
            return bool(FIELD_ATTRS.get(f, set()) & attrs)
        if kind == "data" and self.seed_changed and key[4] is not None:
            what, at = key[2], key[4]
            bs = self.fa.block_size
            if (what == "directory" and at >= bs - 8) or (
                    what == "extent tree block" and at >= bs - 4) or (
                    what == "xattr block" and 0x10 <= at < 0x14):
                return True
        if kind == "data" and key[2] == "journal" and key[5] == 0 and key[4] is not None and \
                0x30 <= key[4] < 0x40 and "s_uuid" in self.sb_diff:
            return True  # the journal superblock's s_uuid is the filesystem's
        if kind == "data":
            ino, what = key[1], key[2]
            attrs = self.attrs_a.get(ino, set()) if key[3] else self.attrs_b.get(ino, set())
            if attrs & {"*", "inode", "content", "blocks"}:
                return True
            if what == "directory" and "entries" in attrs:
                return True
            if what == "xattr block" and attrs & {"xattrs", "xattr block"}:
                return True
            return what == "data" and "target" in attrs
        return False

    def _account(self) -> None:
        assert self.ranges is not None
        end_fs = self.oa + min(self.fa.size, self.fb.size)
        for a, b in self.ranges.intersect(self.oa, end_fs):
            pos = a - self.oa
            stop = b - self.oa
            while pos < stop:
                label, end, key = self._locate(pos)
                end = max(min(end, stop), pos + 1)
                ok = self._explained(key)
                if not ok and key[0] == "data":
                    # the block may belong to something else on the other side
                    other = self.side_b if key[3] else self.side_a
                    o = other.owner(pos // self.fa.block_size)
                    if o is not None:
                        attrs = (self.attrs_b if key[3] else self.attrs_a).get(o[0], set())
                        ok = bool(attrs & {"*", "inode", "content", "blocks", "entries",
                                           "xattrs", "target"})
                if not ok and key[0] in ("data", "free"):
                    g = (pos // self.fa.block_size - self.fa.first_data_block) // self.fa.bpg
                    if key[0] == "free" and g in self.alloc_blocks:
                        ok = False  # junk in a block free in both: keep it
                if ok:
                    self.ctx.explained.append((pos + self.oa, end + self.oa))
                pos = end


def _field_end(layout: list[tuple[str, int, int]], off: int) -> int:
    for _name, o, n in layout:
        if o <= off < o + n:
            return o + n
    return off + 1


_SB_POS = {n: i for i, (n, _) in enumerate(e4.SUPERBLOCK_FIELDS)}


def _sb_order(k: str) -> int:
    return _SB_POS.get(k, 1 << 30)


def _fmt(k: str, v: Any) -> Any:
    if isinstance(v, bytes):
        if k in ("s_uuid", "s_hash_seed", "s_journal_uuid") and len(v) == 16:
            import uuid

            return str(uuid.UUID(bytes=v))
        if k in ("s_volume_name", "s_last_mounted"):
            return v.split(b"\0", 1)[0].decode("utf-8", "replace")
    if k.startswith("s_feature_") and isinstance(v, int):
        return hex(v)
    return v


def _fmt_ns(ns: int | None) -> str | None:
    if ns is None:
        return None
    sec, frac = divmod(ns, 1_000_000_000)
    import datetime

    try:
        t = datetime.datetime.fromtimestamp(sec, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, ValueError, OSError):
        t = f"{sec}s"
    return f"{t}.{frac:09d}Z"


def _map_summary(bm: e4.BlockMap | None) -> str:
    if bm is None:
        return "(unreadable)"
    ext = bm.extents
    s = ", ".join(f"{e.pblk}+{e.length}" for e in ext[:4])
    if len(ext) > 4:
        s += f", ... ({len(ext)} extents)"
    return s or "(none)"


_ = Callable  # typing re-export for annotations
