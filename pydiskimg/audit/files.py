"""``inspect --files``: every file of every filesystem of an image.

Each file is a dict: ``path``, ``type`` (file, dir, symlink, chr, blk, fifo, sock), ``size``,
``mtime_ns`` and, for regular files, ``sha256``; ext4 adds ``inode``, ``mode`` (octal text),
``uid``, ``gid``, ``links``, ``atime_ns``, ``ctime_ns``, ``crtime_ns``, ``xattrs`` (names),
``target`` (symlinks) and ``device`` ("major:minor").  Times are integer nanoseconds since the
epoch (``crtime_ns`` may be null; FAT times are read as UTC).
"""

from __future__ import annotations

import os
from typing import Any

from .ext4 import ext4_files
from .fatdiff import fat_files
from .fsdiff import probe
from .source import Source, open_image


def list_files(src: Source, offset: int, size: int) -> list[dict[str, Any]] | None:
    """The files of the filesystem at ``offset``, or None when none is recognised there.

    Raises :class:`pydiskimg.errors.Error` on a malformed filesystem.
    """
    kind = probe(src, offset, size)
    if kind == "ext4":
        return ext4_files(src, offset, size)
    if kind == "fat":
        return fat_files(src, offset, size)
    return None


def add_files(description: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """Add a ``"files"`` list to each partition (and to a bare filesystem) of an ``inspect``
    description (see :mod:`pydiskimg.audit.table`); returns the same dict."""
    with open_image(path) as src:
        for p in description.get("partitions", []):
            fs = p.get("filesystem")
            if fs and "error" not in fs:
                p["files"] = list_files(src, p["offset"], p["size"])
        if description.get("filesystem") and "error" not in description["filesystem"]:
            description["files"] = list_files(src, 0, src.size)
    return description


def format_files(files: list[dict[str, Any]], prefix: str = "") -> list[str]:
    """One text line per file: type, mode, owner, size, mtime, sha256 or target, path."""
    from .fsdiff import _fmt_ns

    lines = []
    for f in files:
        owner = f"{f['uid']}:{f['gid']}" if "uid" in f else "-"
        extra = f.get("sha256") or (f"-> {f['target']}" if "target" in f else f.get("device", "-"))
        xattrs = (" xattrs=" + ",".join(f["xattrs"])) if f.get("xattrs") else ""
        lines.append(f"{prefix}{f['type']:7} {f.get('mode', '-'):>4} {owner:>11} "
                     f"{f['size']:>12} {_fmt_ns(f.get('mtime_ns')) or '-'} {extra} "
                     f"{f['path']}{xattrs}")
    return lines
