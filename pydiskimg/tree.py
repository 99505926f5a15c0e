"""The staged root as an in-memory model (not a copy).

A :class:`Node` is one inode: a hardlinked file is one ``Node`` object that appears under
several names (``Dir.entries`` of different folders, or the same folder).  Names are bytes
(POSIX file names are bytes).  File data stays in the source files; a regular file records
where its data is (``source``) and which byte ranges hold data (``segments``, from
SEEK_DATA/SEEK_HOLE), so planners know every block count up front.

Scanning (``scan``) lives further down in this module; grafting ``contents`` and resolving
owner names are in :mod:`pydiskimg.contents`; format writers only read the model.
"""

from __future__ import annotations

import enum
import errno
import operator
import os
import stat
import sys
from dataclasses import dataclass
from types import MappingProxyType

from .errors import SourceError, UsageError


class Kind(enum.IntEnum):
    """File types, numbered as ext4's dirent ``file_type`` byte."""

    REG = 1
    DIR = 2
    CHR = 3
    BLK = 4
    FIFO = 5
    SOCK = 6
    SYMLINK = 7


#: the ``entries`` of every node that is not a folder: empty and read-only
_NO_ENTRIES: MappingProxyType[bytes, Node] = MappingProxyType({})


@dataclass(eq=False, slots=True)
class Node:
    """One inode of the tree.

    ``mode`` holds only the permission bits (``0o7777``: setuid, setgid, sticky included);
    the type is ``kind``.  Times are integer nanoseconds since the epoch and may be negative.
    ``atime_ns``/``ctime_ns``/``crtime_ns`` are ``None`` in deterministic mode: writers derive
    them from ``mtime_ns``.  Slots, and one shared read-only empty ``entries`` for everything
    but folders: a tree holds millions of these.
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
    # --- DIR: name -> node; iterate with sorted_entries() for the canonical order (a new
    # empty dict for a DIR when not given; a shared empty read-only mapping otherwise)
    entries: dict[bytes, Node] = None  # type: ignore[assignment]
    # --- SYMLINK
    target: bytes = b""
    # --- CHR/BLK
    rdev_major: int = 0
    rdev_minor: int = 0
    #: where it came from, for error messages
    origin: str = ""
    #: the scanner saw one link (``st_nlink`` 1, not a folder): no other name in the tree can
    #: be this node, so writers may skip their hardlink bookkeeping for it.  False (the
    #: default) for nodes made any other way: they are checked.
    single: bool = False

    def __post_init__(self) -> None:
        if self.entries is None:
            self.entries = {} if self.kind is Kind.DIR else _NO_ENTRIES  # type: ignore[assignment]

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

    def unique_nodes(self) -> list[Node]:
        """Every inode once (a hardlinked node once, at its first name in :meth:`walk`)."""
        seen: set[int] = set()
        out: list[Node] = []
        for _, n in self.walk():
            if id(n) not in seen:
                seen.add(id(n))
                out.append(n)
        return out

    def count(self) -> int:
        """Number of distinct inodes in the tree (root included)."""
        return len(self.unique_nodes())

    def lookup(self, path: bytes | str) -> Node | None:
        """The node at ``path`` (absolute in the tree, ``/`` separated), not following
        symlinks, or None."""
        if isinstance(path, str):
            path = os.fsencode(path)
        node = self.root
        for part in path.split(b"/"):
            if part in (b"", b"."):
                continue
            if node.kind is not Kind.DIR:
                return None
            nxt = node.entries.get(part)
            if nxt is None:
                return None
            node = nxt
        return node


# --------------------------------------------------------------------------------------------
# Scanning a source folder
# --------------------------------------------------------------------------------------------

_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()

#: POSIX name limit of ext4 directory entries
NAME_MAX = 255

_KIND_OF_FMT = {
    stat.S_IFREG: Kind.REG,
    stat.S_IFDIR: Kind.DIR,
    stat.S_IFCHR: Kind.CHR,
    stat.S_IFBLK: Kind.BLK,
    stat.S_IFIFO: Kind.FIFO,
    stat.S_IFSOCK: Kind.SOCK,
    stat.S_IFLNK: Kind.SYMLINK,
}


def _xattrs(path: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """All extended attributes of ``path`` (not following a symlink), sorted by name."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            return ()
        raise SourceError(f"{os.fsdecode(path)}: cannot list extended attributes: {e.strerror}") from None
    if not names:
        return ()
    out = []
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENODATA:  # removed between the two calls
                continue
            raise SourceError(
                f"{os.fsdecode(path)}: cannot read extended attribute {name}: {e.strerror}"
            ) from None
        out.append((os.fsencode(name), value))
    out.sort()
    return tuple(out)


def data_segments_of(path: str | bytes, size: int) -> tuple[tuple[int, int], ...]:
    """The data ranges of a file as SEEK_DATA/SEEK_HOLE report them (offset, length)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise SourceError(f"{os.fsdecode(path)}: cannot open: {e.strerror}") from None
    try:
        segs: list[tuple[int, int]] = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole up to the end
                    break
                raise
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            segs.append((start, end - start))
            pos = end
        return tuple(segs)
    except OSError as e:
        raise SourceError(f"{os.fsdecode(path)}: cannot map holes: {e.strerror}") from None
    finally:
        os.close(fd)


#: a DirEntry's name, fetched in C (a sort key called once per entry of every folder)
_entry_name = operator.attrgetter("name")


class _Scanner:
    """One scan: options plus the (st_dev, st_ino) -> Node map for hardlinks."""

    def __init__(self, all_root: bool, clamp_mtime: int | None, deterministic: bool) -> None:
        self.all_root = all_root
        self.clamp_ns = None if clamp_mtime is None else clamp_mtime * 1_000_000_000
        self.deterministic = deterministic
        self.links: dict[tuple[int, int], Node] = {}
        # root reads everything: skip the access() call per file
        self.check_access = os.geteuid() != 0

    def node(self, path: bytes, st: os.stat_result) -> Node:
        """A new Node for ``path`` from its lstat result (a DIR comes back without entries),
        or the node already made for another name of the same inode."""
        fmt = st.st_mode & 0o170000
        kind = _KIND_OF_FMT.get(fmt)
        if kind is None:
            raise SourceError(f"{os.fsdecode(path)}: unsupported file type {fmt:#o}")
        single = False
        if kind is Kind.DIR:
            key = None
        elif st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            prev = self.links.get(key)
            if prev is not None:
                return prev
        else:
            key = None
            single = True
        mtime = st.st_mtime_ns
        if self.clamp_ns is not None and mtime > self.clamp_ns:
            mtime = self.clamp_ns
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            names = None  # let _xattrs() report it or decide it is unsupported
        det = self.deterministic
        n = Node(
            kind,
            st.st_mode & 0o7777,
            0 if self.all_root else st.st_uid,
            0 if self.all_root else st.st_gid,
            mtime,
            None if det else st.st_atime_ns,
            None if det else st.st_ctime_ns,
            None,
            _xattrs(path) if names or names is None else (),
            origin=path.decode(_FS_ENCODING, _FS_ERRORS),
            single=single,
        )
        if kind is Kind.REG:
            n.size = size = st.st_size
            if size:
                n.source = n.origin
                if self.check_access and not os.access(path, os.R_OK):
                    raise SourceError(f"{n.origin}: cannot read: permission denied")
                if st.st_blocks * 512 < size:
                    n.segments = data_segments_of(path, size)
        elif kind is Kind.SYMLINK:
            try:
                n.target = os.readlink(path)
            except OSError as e:
                raise SourceError(f"{n.origin}: cannot read symlink: {e.strerror}") from None
            n.size = len(n.target)
        elif kind is Kind.CHR or kind is Kind.BLK:
            n.rdev_major = os.major(st.st_rdev)
            n.rdev_minor = os.minor(st.st_rdev)
        if key is not None:
            self.links[key] = n
        return n

    def fill(self, top_path: bytes, top: Node) -> None:
        """Scan the folder ``top_path`` into the (empty) DIR node ``top``, recursively."""
        stack = [(top_path, top)]
        while stack:
            dpath, dnode = stack.pop()
            try:
                with os.scandir(dpath) as it:
                    items = sorted(it, key=_entry_name)
                for e in items:
                    name = e.name
                    if len(name) > NAME_MAX:
                        raise SourceError(
                            f"{os.fsdecode(e.path)}: name is {len(name)} bytes long, "
                            f"ext4 allows at most {NAME_MAX}"
                        )
                    child = self.node(e.path, e.stat(follow_symlinks=False))
                    dnode.entries[name] = child
                    if child.kind is Kind.DIR:
                        stack.append((e.path, child))
            except FileNotFoundError as err:
                gone = err.filename or dpath
                raise SourceError(f"{os.fsdecode(gone)}: vanished while scanning") from None
            except PermissionError:
                raise SourceError(f"{os.fsdecode(dpath)}: cannot read folder: permission denied") from None
            except NotADirectoryError:
                raise SourceError(f"{os.fsdecode(dpath)}: changed while scanning") from None
            except OSError as e:
                if isinstance(e, SourceError):
                    raise
                raise SourceError(f"{os.fsdecode(e.filename or dpath)}: {e.strerror}") from None


def scan_path(
    path: str | os.PathLike[str] | bytes,
    *,
    all_root: bool = False,
    clamp_mtime: int | None = None,
    deterministic: bool = True,
    follow_top_symlink: bool = False,
) -> Node:
    """Scan one source path of any type into a :class:`Node` (a folder with everything below).

    ``follow_top_symlink`` reads ``path`` itself through a symlink (as ``rsync src/`` does);
    nothing below it is ever followed.  Hardlinks are detected within this one scan.
    """
    p = os.fsencode(path)
    sc = _Scanner(all_root, clamp_mtime, deterministic)
    try:
        st = os.stat(p) if follow_top_symlink else os.lstat(p)
    except FileNotFoundError:
        raise SourceError(f"{os.fsdecode(p)}: no such file or folder") from None
    except OSError as e:
        raise SourceError(f"{os.fsdecode(p)}: cannot read: {e.strerror}") from None
    node = sc.node(p, st)
    if node.kind is Kind.DIR:
        sc.fill(p, node)
    return node


def scan(
    root: str | os.PathLike[str],
    *,
    all_root: bool = False,
    clamp_mtime: int | None = None,
    deterministic: bool = True,
) -> Tree:
    """Read the folder ``root`` into a :class:`Tree` (metadata only; data stays in place).

    One ``scandir`` per folder and one ``lstat`` per entry; symlinks are never followed
    (``root`` itself may be a symlink to a folder).  Hardlinks (same ``st_dev``/``st_ino``)
    become one shared :class:`Node`.  ``all_root`` makes every owner 0:0; ``clamp_mtime``
    (seconds) clamps later mtimes to it; in ``deterministic`` mode atime/ctime/crtime are left
    ``None`` for the writers to derive from mtime.  Holes are mapped with SEEK_DATA/SEEK_HOLE,
    only for files whose allocated size is below their length.

    Raises :class:`~pydiskimg.errors.SourceError` naming the path for an unreadable folder or
    file, a vanished entry or a name longer than 255 bytes.
    """
    node = scan_path(
        root,
        all_root=all_root,
        clamp_mtime=clamp_mtime,
        deterministic=deterministic,
        follow_top_symlink=True,
    )
    if node.kind is not Kind.DIR:
        raise UsageError(f"{os.fspath(root)}: not a folder")
    return Tree(node)
