"""The staged root as an in-memory model (not a copy).

A :class:`Node` is one inode: a hardlinked file is one ``Node`` object that appears under
several names (``Dir.entries`` of different folders, or the same folder).  Names are bytes
(POSIX file names are bytes).  File data stays in the source files; a regular file records
where its data is (``source``) and which byte ranges hold data (``segments``, from
SEEK_DATA/SEEK_HOLE), so planners know every block count up front.

Scanning (``scan``), grafting ``contents`` and resolving owner names live further down in this
module; format writers only read the model.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Kind(enum.IntEnum):
    """File types, numbered as ext4's dirent ``file_type`` byte."""

    REG = 1
    DIR = 2
    CHR = 3
    BLK = 4
    FIFO = 5
    SOCK = 6
    SYMLINK = 7


@dataclass(eq=False)
class Node:
    """One inode of the tree.

    ``mode`` holds only the permission bits (``0o7777``: setuid, setgid, sticky included);
    the type is ``kind``.  Times are integer nanoseconds since the epoch and may be negative.
    ``atime_ns``/``ctime_ns``/``crtime_ns`` are ``None`` in deterministic mode: writers derive
    them from ``mtime_ns``.
    """

    kind: Kind
    mode: int
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    atime_ns: int | None = None
    ctime_ns: int | None = None
    crtime_ns: int | None = None
    #: extended attributes, full names (b"user.x", b"security.selinux",
    #: b"system.posix_acl_access" in the VFS (getxattr, version 2) format), sorted by name.
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    # --- REG
    size: int = 0
    #: path of the file holding the data (REG), or None for an empty file
    source: str | None = None
    #: data ranges (offset, length) of the source, sorted, not overlapping; the rest are holes.
    #: None means the whole file is data.
    segments: tuple[tuple[int, int], ...] | None = None
    # --- DIR: name -> node; iterate with sorted_entries() for the canonical order
    entries: dict[bytes, Node] = field(default_factory=dict)
    # --- SYMLINK
    target: bytes = b""
    # --- CHR/BLK
    rdev_major: int = 0
    rdev_minor: int = 0
    #: where it came from, for error messages
    origin: str = ""

    def sorted_entries(self) -> list[tuple[bytes, Node]]:
        """Children ordered by name bytes: the canonical, listing-order-free order."""
        return sorted(self.entries.items())

    def data_segments(self) -> tuple[tuple[int, int], ...]:
        """The data ranges of a regular file (the whole file when it has no holes)."""
        if self.segments is not None:
            return self.segments
        return ((0, self.size),) if self.size else ()


@dataclass
class Tree:
    """A whole tree: its root folder plus the identity of the tree's owner tables."""

    root: Node

    def walk(self) -> list[tuple[bytes, Node]]:
        """Every (path, node): root first as b"/", parents before children, each folder's
        entries together in name order.  A hardlinked node appears once per name."""
        out: list[tuple[bytes, Node]] = [(b"/", self.root)]
        stack: list[tuple[bytes, Node]] = [(b"", self.root)]
        while stack:
            prefix, d = stack.pop()
            kids = d.sorted_entries()
            for name, n in kids:
                out.append((prefix + b"/" + name, n))
            for name, n in reversed(kids):
                if n.kind is Kind.DIR:
                    stack.append((prefix + b"/" + name, n))
        return out
