"""Split a disk image into its partitions and partition-table areas (the seed's fdisk + dd
recipe, done right): sparse outputs, data moved kernel-side, a manifest describing each file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..io import Image, atomic_output, check_output_path, check_space, output_errors
from ..layout import type_name
from ..space import PAGE, margin, pages
from .disk import SECTOR, Disk, read_disk
from .source import Source, open_image

log = logging.getLogger(__name__)

_BLOCK = 1 << 16


@dataclass
class Piece:
    file: str
    offset: int
    size: int
    what: str
    extra: dict[str, Any]


def pieces(src: Source, d: Disk) -> list[Piece]:
    """What ``split`` writes: table areas first, then every partition."""
    out: list[Piece] = []
    if d.kind == "mbr":
        out.append(Piece("mbr.bin", 0, SECTOR, "MBR", {}))
    elif d.kind == "gpt":
        t = d.table
        out.append(Piece("mbr.bin", 0, SECTOR, "protective MBR", {}))
        p, b = t.primary, t.backup
        p_end = (p.entry_lba * SECTOR + p.entry_count * p.entry_size)
        out.append(Piece("gpt-primary.bin", SECTOR, p_end - SECTOR,
                         "primary GPT header and entries", {}))
        b_start = b.entry_lba * SECTOR
        out.append(Piece("gpt-backup.bin", b_start, (b.my_lba + 1) * SECTOR - b_start,
                         "backup GPT entries and header", {}))
    for part in d.parts:
        extra: dict[str, Any] = {"number": part.number, "first_lba": part.first_lba,
                                 "last_lba": part.last_lba, "type": part.type,
                                 "type_name": type_name(part.type)}
        for k in ("guid", "name", "attributes", "bootable"):
            v = getattr(part, k)
            if v is not None:
                extra[k] = v
        shown = f" ({extra['type_name']})" if extra["type_name"] != "unknown" else ""
        out.append(Piece(f"part{part.number}.img", part.offset, part.size,
                         f"partition {part.number}{shown}", extra))
    for pc in out:
        if pc.offset + pc.size > src.size:
            raise UsageError(f"{src.path}: {pc.what} ends at byte {pc.offset + pc.size}, past "
                             f"the end of the image ({src.size} bytes)")
    return out


def _copy(src: Source, pc: Piece, dst: str) -> None:
    img = Image.create(dst, pc.size)
    try:
        for off, n in src.data_ranges(pc.offset, pc.offset + pc.size):
            if src.extents is None and src.format in ("raw", "vhd-fixed"):
                done = img.copy_from(src.fd, off, off - pc.offset, n, src_name=src.path)
                if done != n:
                    raise UsageError(f"{src.path}: short copy of {pc.what}")
                continue
            pos = off
            while pos < off + n:
                k = min(_BLOCK * 16, off + n - pos)
                data = src.read(pos, k)
                for j in range(0, len(data), _BLOCK):
                    blk = data[j:j + _BLOCK]
                    if blk.count(0) != len(blk):
                        img.write(pos - pc.offset + j, blk)
                pos += k
    finally:
        img.close()


def _sha256(path: str, size: int) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos = 0
        while pos < size:
            b = os.pread(fd, min(1 << 24, size - pos), pos)
            if not b:
                break
            h.update(b)
            pos += len(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def split_image(path: str, outdir: str, hashes: bool = True) -> dict[str, Any]:
    """Write every partition and table area of ``path`` into ``outdir``; return the manifest."""
    made = False
    if os.path.exists(outdir):
        if not os.path.isdir(outdir):
            raise UsageError(f"{outdir}: exists and is not a folder")
        if os.listdir(outdir):
            raise UsageError(f"{outdir}: folder is not empty")
        if not os.access(outdir, os.W_OK | os.X_OK):
            raise UsageError(f"{outdir}: cannot write in this folder")
    else:
        check_output_path(outdir, "split", inputs=(path,))
        made = True
    try:
        with output_errors(os.path.join(outdir, "manifest.json")):
            if made:
                os.mkdir(outdir)
            return _split(path, outdir, hashes)
    except BaseException:
        if made:
            shutil.rmtree(outdir, ignore_errors=True)
        raise


def _split(path: str, outdir: str, hashes: bool) -> dict[str, Any]:
    with open_image(path) as src:
        d = read_disk(src)
        if d.kind == "none":
            raise UsageError(f"{path}: no partition table: nothing to split")
        manifest: dict[str, Any] = {
            "image": os.path.basename(path), "format": src.format, "size": src.size,
            "table": d.kind, "sector_size": SECTOR, "files": []}
        if d.disk_guid:
            manifest["disk_guid"] = d.disk_guid
        if d.disk_signature is not None:
            manifest["disk_signature"] = f"{d.disk_signature:#010x}"
        written: list[str] = []
        todo = pieces(src, d)
        needed = margin(sum(pages(off, n) * PAGE for pc in todo
                            for off, n in src.data_ranges(pc.offset, pc.offset + pc.size)))
        check_space(os.path.join(outdir, "manifest.json"), needed)
        try:
            for pc in todo:
                dst = os.path.join(outdir, pc.file)
                written.append(dst)  # before: a signal right after the rename removes it too
                with atomic_output(dst) as tmp:
                    _copy(src, pc, tmp)
                entry: dict[str, Any] = {"file": pc.file, "what": pc.what, "offset": pc.offset,
                                         "size": pc.size, **pc.extra}
                if hashes:
                    entry["sha256"] = _sha256(dst, pc.size)
                manifest["files"].append(entry)
            with atomic_output(os.path.join(outdir, "manifest.json"), final=True) as tmp, \
                    open(tmp, "w") as f:
                json.dump(manifest, f, indent=2)
                f.write("\n")
        except BaseException:
            for w in written:
                with contextlib.suppress(OSError):
                    os.unlink(w)
            raise
    return manifest
