"""Explain why two disk images differ, at the highest level that accounts for each difference.

1. Compare the two images chunk by chunk (1 MiB, holes skipped) and keep the exact differing
   byte ranges.  Identical images stop here.
2. Partition table: every differing field of the MBR, the GPT headers and entries.  The table
   areas are then accounted for.
3. Per partition present in both images at the same place and touched by a differing range:
   the filesystem (ext4 or FAT) is read from both sides and compared: superblock / boot sector
   fields, group descriptors, allocation, then every file by path (content, mode, owner, times,
   xattrs, link target, added or removed, inode number).  The on-disk bytes each reported
   difference explains are accounted for, field by field.
4. Whatever differing bytes remain are reported as ranges, each named by the structure it falls
   in ("partition 2, group 3 inode table, inode 4711 (/etc/passwd), i_ctime").

Checksums are derived values: a checksum field that differs is reported only when nothing it
covers differs.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import Error, ImageError
from . import disk as disk_mod
from . import fsdiff
from .accounting import Ctx, Difference, Ranges, _merge
from .source import Source

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: merge differing runs closer than this (bytes) into one range
MERGE_GAP = 0
#: at most this many exact ranges are kept; beyond, ranges are merged per chunk
MAX_RANGES = 200_000
#: residual byte-range lines printed per scope
MAX_RESIDUAL_LINES = 200


def differing_ranges(A: Source, B: Source, chunk: int = CHUNK) -> Ranges:
    """Exact differing byte ranges of the common length of ``A`` and ``B``.

    Ranges where both images are holes are skipped without reading; each chunk is compared as a
    whole first, and only differing chunks are scanned byte by byte (numpy).
    """
    size = min(A.size, B.size)
    spans = _merge(sorted([(o, o + n) for o, n in A.data_ranges(0, size)]
                          + [(o, o + n) for o, n in B.data_ranges(0, size)]), 0)
    out: list[tuple[int, int]] = []
    coarse = False
    for s0, s1 in spans:
        pos = (s0 // chunk) * chunk
        while pos < s1:
            n = min(chunk, size - pos)
            a = A.read(pos, n)
            b = B.read(pos, n)
            if a != b:
                if coarse:
                    out.append((pos, pos + n))
                else:
                    x = np.frombuffer(a, dtype=np.uint8) != np.frombuffer(b, dtype=np.uint8)
                    idx = np.flatnonzero(x)
                    brk = np.flatnonzero(np.diff(idx) > MERGE_GAP + 1)
                    starts = np.concatenate(([idx[0]], idx[brk + 1]))
                    ends = np.concatenate((idx[brk], [idx[-1]])) + 1
                    out.extend(zip((starts + pos).tolist(), (ends + pos).tolist(), strict=True))
                    if len(out) > MAX_RANGES:
                        coarse = True
            pos += n
    return Ranges(_merge(out, MERGE_GAP))


def diff_images(path_a: str, path_b: str) -> list[Difference]:
    """Every difference between the images at ``path_a`` and ``path_b``, explained."""
    from .source import open_image

    with open_image(path_a) as A, open_image(path_b) as B:
        return diff_sources(A, B)


def diff_sources(A: Source, B: Source) -> list[Difference]:
    ctx = Ctx()
    if A.size != B.size:
        ctx.add("image", "size", None, A.size, B.size)
    ranges = differing_ranges(A, B)
    if not ranges and A.size == B.size:
        return []
    log.info("%d differing byte ranges, %d bytes", len(ranges.items), ranges.total())
    da, db = _read_disk(A, ctx, "a"), _read_disk(B, ctx, "b")
    _diff_tables(A, B, da, db, ranges, ctx)
    if (da is None) != (db is None):
        # one table is unreadable: compare the filesystems where the readable one says they are
        da = db = da or db
    if da is not None and db is not None:
        parts_b = {p.number: p for p in db.parts}
        for pa in da.parts:
            pb = parts_b.get(pa.number)
            if pb is None:
                continue
            _diff_partition(A, B, pa, pb, ranges, ctx)
    if (da is not None and da.kind == "none") and (db is not None and db.kind == "none"):
        whole = disk_mod.Part(0, 0, min(A.size, B.size) // 512 - 1, "none")
        _diff_partition(A, B, whole, whole, ranges, ctx, scope="whole disk")
    _residual(A, B, ranges, ctx, da)
    return _group_same_change(ctx.diffs)


#: identical changes (same field, same old and new value) of more files than this are one line
GROUP_OVER = 3


def _group_same_change(diffs: list[Difference]) -> list[Difference]:
    """Fold the same change made to many files (every crtime from one mkfs time to another)
    into one difference naming how many files and the first few."""
    groups: dict[tuple[str, str, str, str], list[Difference]] = {}
    for d in diffs:
        if _groupable(d):
            groups.setdefault((d.scope, d.field or "", repr(d.a), repr(d.b)), []).append(d)
    out: list[Difference] = []
    done: set[tuple[str, str, str, str]] = set()
    for d in diffs:
        key = (d.scope, d.field or "", repr(d.a), repr(d.b))
        g = groups.get(key) if _groupable(d) else None
        if g is None or len(g) <= GROUP_OVER:
            out.append(d)
            continue
        if key in done:
            continue
        done.add(key)
        names = ", ".join(x.item for x in g[:3])
        what = "files" if all(x.item.startswith("/") for x in g) else "inodes"
        out.append(Difference(d.scope, f"{len(g)} {what} ({names}, ...)", d.field, d.a, d.b))
    return out


def _groupable(d: Difference) -> bool:
    return d.field is not None and (d.item.startswith("/") or d.item.startswith("inode "))


def _read_disk(src: Source, ctx: Ctx, side: str) -> disk_mod.Disk | None:
    try:
        return disk_mod.read_disk(src)
    except Error as e:
        ctx.add("partition table", f"image {side.upper()}", "invalid", None, str(e))
        return None


# -- partition tables ------------------------------------------------------------------------------
_DERIVED_GPT = {"HeaderCRC32", "PartitionEntryArrayCRC32"}


def _diff_tables(A: Source, B: Source, da: disk_mod.Disk | None, db: disk_mod.Disk | None,
                 ranges: Ranges, ctx: Ctx) -> None:
    scope = "partition table"
    ka = da.kind if da else "invalid"
    kb = db.kind if db else "invalid"
    if ka != kb and "invalid" not in (ka, kb):
        ctx.add(scope, "table type", None, ka, kb)
    # sector 0 is an MBR (plain or protective) whenever it ends in 55 AA
    if ranges.any_in(0, 512) and {ka, kb} & {"mbr", "gpt"}:
        fa: dict[str, Any] | None
        fb: dict[str, Any] | None
        try:
            fa, fb = disk_mod.mbr_fields(A), disk_mod.mbr_fields(B)
        except Error:
            fa = fb = None
        if fa is not None and fb is not None:
            name = "protective MBR" if "gpt" in (ka, kb) else "MBR"
            for k in fa:
                if fa[k] != fb.get(k):
                    if k == "BootCode":
                        ctx.add(scope, name, "boot code", _digest(fa[k]), _digest(fb[k]))
                    else:
                        ctx.add(scope, name, k, _fmt_field(k, fa[k]), _fmt_field(k, fb[k]))
            ctx.explained.append((0, 512))
    if ka == kb == "gpt":
        assert da is not None and db is not None
        try:
            _diff_gpt(A, B, da, db, ranges, ctx)
        except Error as e:
            ctx.add(scope, "GPT", "unreadable", None, str(e))
    ctx.locators.append((0, 512, "MBR" if {ka, kb} & {"mbr", "gpt"} else "sector 0", None))
    for d in (da, db):
        if d is not None:
            for a, b, label in d.areas:
                ctx.locators.append((a, b, label, _gpt_field_locator(a, label)))


def _layout_of(decl: Any) -> list[tuple[str, int, int]]:
    out, off = [], 0
    for sc in decl.subcons:
        n = sc.sizeof()
        out.append((sc.name, off, n))
        off += n
    return out


def _gpt_field_locator(start: int, label: str) -> Any:
    """A function naming the GPT header field or entry field at an absolute offset."""
    from ..gpt.structs import GPTHeader, GPTPartitionEntry

    if label.endswith("GPT header"):
        layout = _layout_of(GPTHeader)

        def header(off: int) -> tuple[str, int]:
            for name, o, n in layout:
                if o <= off - start < o + n:
                    return name, start + o + n
            return "reserved", start + 512
        return header
    if label.endswith("GPT entries"):
        layout = _layout_of(GPTPartitionEntry)

        def entry(off: int) -> tuple[str, int]:
            k, r = divmod(off - start, 128)
            for name, o, n in layout:
                if o <= r < o + n:
                    return f"entry {k + 1}, {name}", start + k * 128 + o + n
            return f"entry {k + 1}", start + (k + 1) * 128
        return entry
    return None


def _diff_gpt(A: Source, B: Source, da: disk_mod.Disk, db: disk_mod.Disk, ranges: Ranges,
              ctx: Ctx) -> None:
    scope = "partition table"
    ta, tb = da.table, db.table
    reported_entries: set[tuple[int, str]] = set()
    for which, la, lb in (("primary", 1, 1), ("backup", ta.primary.alternate_lba,
                                               tb.primary.alternate_lba)):
        ha, hb = disk_mod.gpt_header_fields(A, la), disk_mod.gpt_header_fields(B, lb)
        ea = disk_mod.gpt_entries(A, ha["PartitionEntryLBA"], ha["NumberOfPartitionEntries"],
                                  ha["SizeOfPartitionEntry"])
        eb = disk_mod.gpt_entries(B, hb["PartitionEntryLBA"], hb["NumberOfPartitionEntries"],
                                  hb["SizeOfPartitionEntry"])
        entry_diff = False
        for i in range(max(len(ea), len(eb))):
            xa = ea[i] if i < len(ea) else None
            xb = eb[i] if i < len(eb) else None
            if xa == xb:
                continue
            entry_diff = True
            keys = (xa or xb or {}).keys()
            for k in keys:
                va = xa.get(k) if xa else None
                vb = xb.get(k) if xb else None
                if va != vb and (i + 1, k) not in reported_entries:
                    reported_entries.add((i + 1, k))
                    ctx.add(scope, f"partition {i + 1}", k, _fmt_field(k, va), _fmt_field(k, vb))
        hdr_diff = False
        for k in ha:
            if k in _DERIVED_GPT or ha[k] == hb[k]:
                continue
            hdr_diff = True
            if which == "backup" and k in ("MyLBA", "AlternateLBA", "PartitionEntryLBA") and \
                    ta.disk_sectors != tb.disk_sectors:
                continue  # follows from the disk size, reported once as the image size
            if which == "backup" and k not in ("MyLBA", "AlternateLBA", "PartitionEntryLBA") and \
                    any(d.item == "GPT header" and d.field == k for d in ctx.diffs):
                continue
            ctx.add(scope, "GPT header" if which == "primary" else "backup GPT header", k,
                    _fmt_field(k, ha[k]), _fmt_field(k, hb[k]))
        if not entry_diff and ha["PartitionEntryArrayCRC32"] != hb["PartitionEntryArrayCRC32"]:
            ctx.add(scope, f"{which} GPT header", "PartitionEntryArrayCRC32",
                    ha["PartitionEntryArrayCRC32"], hb["PartitionEntryArrayCRC32"])
        if not (entry_diff or hdr_diff) and ha["HeaderCRC32"] != hb["HeaderCRC32"]:
            ctx.add(scope, f"{which} GPT header", "HeaderCRC32", ha["HeaderCRC32"],
                    hb["HeaderCRC32"])
        # both sides' areas are now accounted for
        for h in (ha, hb):
            lba = la if h is ha else lb
            ctx.explained.append((lba * 512, lba * 512 + 512))
            start = h["PartitionEntryLBA"] * 512
            ctx.explained.append((start, start + h["NumberOfPartitionEntries"] * h["SizeOfPartitionEntry"]))


def _fmt_field(k: str, v: Any) -> Any:
    if isinstance(v, int) and ("Signature" in k or "OSType" in k or "Attributes" in k
                               or "CRC" in k or k == "UniqueMBRDiskSignature"):
        return f"{v:#x}"
    if isinstance(v, bytes) and len(v) <= 4:
        return v.hex()
    return v


def _digest(b: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(b).hexdigest()[:16]


# -- partitions ------------------------------------------------------------------------------------
def _diff_partition(A: Source, B: Source, pa: disk_mod.Part, pb: disk_mod.Part, ranges: Ranges,
                    ctx: Ctx, scope: str | None = None) -> None:
    label = scope or f"partition {pa.number}"
    if pa.offset != pb.offset or pa.size != pb.size:
        # moved or resized (the table says so): the bytes cannot be compared in place, so they
        # are accounted for by the table difference; compare the files only
        ctx.explained.append((pa.offset, pa.offset + pa.size))
        ctx.explained.append((pb.offset, pb.offset + pb.size))
        fsdiff.diff_filesystems(A, B, pa.offset, pa.size, pb.offset, pb.size, None, ctx, label)
        return
    if not ranges.any_in(pa.offset, pa.offset + pa.size):
        return
    fsdiff.diff_filesystems(A, B, pa.offset, pa.size, pb.offset, pb.size, ranges, ctx, label)


# -- residual byte ranges --------------------------------------------------------------------------
_BLOCK_NO = re.compile(r"(logical block|block|cluster|entry of cluster) \d+")


def _residual(A: Source, B: Source, ranges: Ranges, ctx: Ctx, da: disk_mod.Disk | None) -> None:
    """Report the differing bytes nothing above accounted for, named by structure.

    Consecutive pieces in the same structure (the same file's blocks, the journal, free space)
    are reported as one line with the number of ranges.
    """
    rest = ranges.subtract(ctx.explained)
    groups: list[list[Any]] = []  # [first, last_end, label key, label, bytes, ranges]
    for a, b in rest.items:
        for s, e, label in _split_by_structure(a, b, ctx, da):
            key = _BLOCK_NO.sub(r"\1 N", label)
            if groups and groups[-1][2] == key:
                g = groups[-1]
                g[1] = e
                g[4] += e - s
                g[5] += 1
            else:
                groups.append([s, e, key, label, e - s, 1])
    for n, (s, e, key, label, nbytes, count) in enumerate(groups):
        if n == MAX_RESIDUAL_LINES:
            ctx.add("bytes", f"... and {len(groups) - n} more differing structures")
            break
        if count == 1:
            ctx.add("bytes", f"{s:#x}-{e - 1:#x} ({nbytes} bytes)", label)
        else:
            ctx.add("bytes", f"{s:#x}-{e - 1:#x} ({nbytes} bytes in {count} ranges)",
                    key.replace(" N", "s"))


def _split_by_structure(a: int, b: int, ctx: Ctx, da: disk_mod.Disk | None
                        ) -> Iterator[tuple[int, int, str]]:
    pos = a
    while pos < b:
        label, end = _locate(pos, ctx, da)
        end = max(min(end, b), pos + 1)
        yield pos, end, label
        pos = end


def _locate(off: int, ctx: Ctx, da: disk_mod.Disk | None) -> tuple[str, int]:
    best: tuple[str, int] | None = None
    for s, e, label, fn in ctx.locators:
        if s <= off < e:
            if fn is not None:
                sub, end = fn(off)
                return f"{label}, {sub}", min(end, e)
            best = (label, e)
    if best:
        return best
    # not in any known structure: between partitions
    nxt = min([s for s, _e, _l, _f in ctx.locators if s > off], default=off + (1 << 62))
    return "outside any partition", nxt


def summary_uuid(v: bytes) -> str:
    return str(uuid.UUID(bytes=v))


__all__ = ["Difference", "diff_images", "diff_sources", "differing_ranges", "Ranges",
           "ImageError"]
