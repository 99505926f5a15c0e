"""ext4 for ``inspect``: the filesystem summary (a probe registered with
:mod:`pydiskimg.audit.table`) and the file listing of ``inspect --files``."""

from __future__ import annotations

import hashlib
from typing import Any

from ..ext4 import read as e4
from .table import ReadableSource, register_probe


def ext4_info(src: ReadableSource, offset: int, size: int) -> dict[str, Any]:
    """UUID, label, features, block and inode counts, free counts, times, hash seed, journal.

    Keys follow ``dumpe2fs -h``'s lines (see :meth:`pydiskimg.ext4.read.Ext4.info`).  Raises
    :class:`~pydiskimg.errors.Ext4Error` (or ChecksumError) on a malformed filesystem.
    """
    return e4.Ext4(src, offset, size, name=f"ext4 at byte {offset}").info()


def probe(src: ReadableSource, offset: int, size: int) -> dict[str, Any] | None:
    """The ``inspect`` probe: None unless an ext2/3/4 superblock magic is there."""
    if size < 2048 or not e4.probe(src, offset):
        return None
    return ext4_info(src, offset, size)


def ext4_files(src: ReadableSource, offset: int, size: int,
               hashes: bool = True) -> list[dict[str, Any]]:
    """Every file: path, type, mode, owner, size, times (ns), xattr names, sha256 (regular files),
    link target (symlinks), device numbers (devices), inode number and link count."""
    fs = e4.Ext4(src, offset, size, name=f"ext4 at byte {offset}")
    out = []
    for path, ino in fs.walk():
        inode = fs.inode(ino)
        d: dict[str, Any] = {
            "path": path.decode("utf-8", "surrogateescape").encode("utf-8", "backslashreplace").decode(),
            "inode": ino, "type": inode.kind, "mode": f"{inode.mode & 0o7777:04o}",
            "uid": inode.uid, "gid": inode.gid, "size": inode.size, "links": inode.links,
        }
        for t in ("atime", "mtime", "ctime", "crtime"):
            d[f"{t}_ns"] = inode.time_ns(t)
        d["xattrs"] = sorted(fs.xattrs(inode))
        if inode.kind == "file" and hashes:
            h = hashlib.sha256()
            for chunk in fs.iter_data(inode):
                h.update(chunk)
            d["sha256"] = h.hexdigest()
        elif inode.kind == "symlink":
            d["target"] = fs.symlink_target(inode).decode("utf-8", "backslashreplace")
        elif inode.kind in ("chr", "blk"):
            major, minor = fs.device(inode)
            d["device"] = f"{major}:{minor}"
        out.append(d)
    return out


register_probe("ext4", probe)
