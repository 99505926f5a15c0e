"""Grafting the seed's ``contents`` list into a :class:`~pydiskimg.tree.Tree`.

make-disk-image.nix copies each entry with ``rsync -a --no-o --no-g [--chmod=MODE]`` before the
install, then, inside its VM, runs ``chown -R USER:GROUP TARGET`` through ``nixos-enter`` so that
names resolve through the image's own ``/etc/passwd`` and ``/etc/group``.  This module does the
same on the in-memory tree, with no copy, no chown and no VM:

* ``source`` without ``*``: a folder is copied *to* ``target`` (``rsync src/ target``), anything
  else (a file, a symlink, a device...) becomes ``target``; the folders above ``target`` are
  created as ``mkdir -p`` would (mode 0755, owner 0:0, mtime = the build's timestamp) and
  symlinks met on the way are followed inside the tree.  A ``target`` that already exists (in
  the scanned root or from an earlier entry) is the seed's error ``duplicate entry TARGET ->
  SOURCE``.
* ``source`` with ``*``: a glob, each match copied *inside* the folder ``target``
  (``rsync match target/``), which is created if needed and may already exist.  A match whose
  name is already there is a duplicate too (rsync would silently overwrite it: we refuse).
  No match is an error (the seed's rsync fails on the unexpanded pattern).
* ``mode``: applied as ``rsync --chmod`` does, to everything the entry copied (recursively into
  a copied folder; symlinks excepted), not to the folders ``mkdir -p`` made.  Octal (``755``,
  ``4755``), ``D``/``F``-prefixed items (``D755,F644``) and chmod's symbolic form
  (``u+rwX,go-w``) are accepted.  An octal mode replaces every bit (setuid included), as rsync
  does.  A POSIX access ACL is updated as ``chmod`` updates it (owner, mask or group, other).
* ownership: rsync runs with ``--no-o --no-g``, so whatever an entry copies is owned by 0:0;
  with ``user`` and ``group`` (both or neither) the whole ``target`` is then ``chown -R``-ed
  (symlinks themselves, as ``chown -R`` without ``-L`` does), in entry order after all entries
  are grafted, exactly as the seed's VM step.  Names are looked up in the tree's own
  ``etc/passwd`` and ``etc/group`` *after* grafting (so ``contents`` may provide them); a string
  of digits is taken as a numeric id.
* What rsync ``-a`` keeps, the graft keeps: mtimes (nanoseconds), symlinks as symlinks,
  devices, FIFOs, sockets.  Unlike ``rsync -a`` (no ``-H``/``-X``/``-A``) hardlinks inside one
  entry stay hardlinks and xattrs/ACLs are kept, as for the scanned root.

Relative ``source`` paths are relative to ``base_dir`` (the working directory by default), as
in the seed where they are absolute store paths.  ``target`` may not contain ``..``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SourceError, UsageError
from .tree import NAME_MAX, Kind, Node, Tree, scan_path

#: keys a ``contents`` entry may have
KEYS = ("source", "target", "mode", "user", "group")
_MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class ContentsEntry:
    """One validated ``contents`` entry."""

    source: str
    target: str
    mode: str | None = None
    user: str | None = None
    group: str | None = None


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def validate_entries(entries: Iterable[Mapping[str, Any]], where: str = "contents") -> list[ContentsEntry]:
    """Check a ``contents`` list (dicts with the seed's keys) and return typed entries.

    Errors name ``where``, the entry index and the key.
    """
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Iterable):
        raise UsageError(f"{where}: expected a list of objects, found {type(entries).__name__}")
    out = []
    for i, e in enumerate(entries):
        at = f"{where}: entry {i}"
        if not isinstance(e, Mapping):
            raise UsageError(f"{at}: expected an object, found {type(e).__name__}")
        for k in e:
            if k not in KEYS:
                raise UsageError(f"{at}: unknown key {k!r} (expected {', '.join(KEYS)})")
        vals: dict[str, str | None] = {}
        for k in KEYS:
            v = e.get(k)
            if v is None or (k in ("mode", "user", "group") and v == ""):
                if k in ("source", "target"):
                    raise UsageError(f"{at}: key {k!r} is required")
                vals[k] = None
                continue
            if not isinstance(v, str):
                raise UsageError(f"{at}: key {k!r}: expected a string, found {v!r}")
            if not v or "\0" in v:
                raise UsageError(f"{at}: key {k!r}: {v!r} is not a valid value")
            vals[k] = v
        if (vals["user"] is None) != (vals["group"] is None):
            raise UsageError(
                f"{at}: set both 'user' and 'group' or neither (as make-disk-image.nix requires)"
            )
        if vals["mode"] is not None:
            try:
                parse_chmod(vals["mode"])
            except UsageError as err:
                raise UsageError(f"{at}: key 'mode': {err}") from None
        _target_parts(vals["target"] or "", at)
        out.append(ContentsEntry(**vals))  # type: ignore[arg-type]
    return out


def load_contents_json(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read and validate a JSON ``contents`` file: a list of ``{source, target, mode, user,
    group}`` objects, returned as they are (sources untouched: the caller anchors relative
    ones)."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            data = json.loads(f.read())
    except OSError as e:
        raise UsageError(f"{p}: cannot read: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{p}: not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise UsageError(f"{p}: expected a JSON list of objects, found {type(data).__name__}")
    validate_entries(data, p)
    return data


# --------------------------------------------------------------------------------------------
# chmod as rsync --chmod
# --------------------------------------------------------------------------------------------

_SYM_RE = re.compile(r"^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$")
_OP_RE = re.compile(r"([-+=])([ugo]|[rwxXst]*)")
_WHO = {"u": 0o4700, "g": 0o2070, "o": 0o1007}


def parse_chmod(spec: str) -> Callable[[int, bool], int]:
    """Compile an ``rsync --chmod`` string into ``f(mode, is_dir) -> mode`` (bits 0o7777)."""
    items: list[tuple[str, Callable[[int, bool], int]]] = []
    for raw in spec.split(","):
        item = raw.strip()
        only = ""
        if item[:1] in ("D", "F"):
            only, item = item[0], item[1:]
        if re.fullmatch(r"[0-7]{1,4}", item):
            items.append((only, _absolute(int(item, 8))))
            continue
        m = _SYM_RE.match(item)
        if not m:
            raise UsageError(f"{spec!r} is not a mode (expected octal like 755, or chmod's u+rwX form)")
        who = m.group(1) or "a"
        mask = 0
        for w in who.replace("a", "ugo"):
            mask |= _WHO[w]
        ops = _OP_RE.findall(m.group(2))
        items.append((only, _symbolic(mask, ops)))

    def apply(mode: int, is_dir: bool) -> int:
        for only, f in items:
            if only == "D" and not is_dir or only == "F" and is_dir:
                continue
            mode = f(mode, is_dir) & 0o7777
        return mode

    return apply


def _absolute(value: int) -> Callable[[int, bool], int]:
    def f(mode: int, is_dir: bool) -> int:
        return value

    return f


def _symbolic(mask: int, ops: list[tuple[str, str]]) -> Callable[[int, bool], int]:
    def f(mode: int, is_dir: bool) -> int:
        for op, perms in ops:
            bits = 0
            if perms in ("u", "g", "o"):  # copy another class's rwx
                src = {"u": (mode >> 6) & 7, "g": (mode >> 3) & 7, "o": mode & 7}[perms]
                bits = (src << 6) | (src << 3) | src
            else:
                for c in perms:
                    if c == "r":
                        bits |= 0o444
                    elif c == "w":
                        bits |= 0o222
                    elif c == "x" or (c == "X" and (is_dir or mode & 0o111)):
                        bits |= 0o111
                    elif c == "s":
                        bits |= 0o6000
                    elif c == "t":
                        bits |= 0o1000
            bits &= mask
            if op == "+":
                mode |= bits
            elif op == "-":
                mode &= ~bits
            else:
                mode = (mode & ~(mask & 0o7777)) | bits
        return mode

    return f


def _acl_chmod(value: bytes, mode: int) -> bytes:
    """Update a POSIX access ACL (VFS format) for a new mode, as the kernel's
    ``posix_acl_chmod``: owner <- u bits, mask (or the owning group without one) <- g bits,
    other <- o bits."""
    if len(value) < 4 or (len(value) - 4) % 8:
        return value
    has_mask = any(
        struct.unpack_from("<H", value, off)[0] == 0x10 for off in range(4, len(value), 8)
    )
    out = bytearray(value)
    for off in range(4, len(value), 8):
        tag = struct.unpack_from("<H", value, off)[0]
        perm = None
        if tag == 0x01:
            perm = (mode >> 6) & 7
        elif tag == 0x10 or (tag == 0x04 and not has_mask):
            perm = (mode >> 3) & 7
        elif tag == 0x20:
            perm = mode & 7
        if perm is not None:
            struct.pack_into("<H", out, off + 2, perm)
    return bytes(out)


def _chmod_node(n: Node, f: Callable[[int, bool], int]) -> None:
    n.mode = f(n.mode, n.kind is Kind.DIR)
    if n.xattrs:
        n.xattrs = tuple(
            (k, _acl_chmod(v, n.mode) if k == b"system.posix_acl_access" else v)
            for k, v in n.xattrs
        )


# --------------------------------------------------------------------------------------------
# paths inside the tree
# --------------------------------------------------------------------------------------------


def _target_parts(target: str, at: str) -> list[bytes]:
    parts = [p for p in os.fsencode(target).split(b"/") if p not in (b"", b".")]
    for p in parts:
        if p == b"..":
            raise UsageError(f"{at}: target {target!r} contains '..' (it may leave the tree)")
        if len(p) > NAME_MAX:
            raise UsageError(
                f"{at}: target {target!r}: name of {len(p)} bytes, ext4 allows at most {NAME_MAX}"
            )
    return parts


def _resolve_dir(tree: Tree, parts: list[bytes], *, create: bool, timestamp_ns: int, at: str,
                 shown: str) -> Node:
    """The folder at ``parts`` (``mkdir -p``: missing folders created when ``create``;
    symlinks followed inside the tree, an absolute one from the tree's root).  UsageError when
    a component is missing (not creating) or not a folder."""
    node = tree.root
    stack: list[Node] = []  # parents of node, for relative symlinks and '..'
    todo = list(parts)
    hops = 0
    while todo:
        name = todo.pop(0)
        if name in (b"", b"."):
            continue
        if name == b"..":  # only from symlink targets
            node = stack.pop() if stack else tree.root
            continue
        child = node.entries.get(name)
        if child is None:
            if not create:
                raise UsageError(f"{at}: {shown!r}: {os.fsdecode(name)!r} does not exist")
            child = Node(Kind.DIR, 0o755, 0, 0, timestamp_ns, origin=f"(folder for {shown})")
            node.entries[name] = child
        if child.kind is Kind.SYMLINK:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise UsageError(f"{at}: target {shown!r}: too many levels of symlinks")
            link = child.target
            if link.startswith(b"/"):
                node, stack = tree.root, []
            todo = [p for p in link.split(b"/")] + todo
            continue
        if child.kind is not Kind.DIR:
            raise UsageError(
                f"{at}: target {shown!r}: {os.fsdecode(name)!r} exists and is not a folder"
            )
        stack.append(node)
        node = child
    return node


def mkdir_p(tree: Tree, path: str, *, timestamp_ns: int, at: str) -> Node:
    """``mkdir -p path`` in the tree (symlinks followed inside it); created folders are 0755,
    owned by root, with mtime ``timestamp_ns``.  ``at`` names the option in errors."""
    return _resolve_dir(tree, os.fsencode(path).split(b"/"), create=True,
                        timestamp_ns=timestamp_ns, at=at, shown=path)


def resolve(tree: Tree, path: str) -> Node | None:
    """The node at ``path`` with every symlink on the way (and at the end) followed inside the
    tree (an absolute target from the tree's root, as a chroot would), or None when something
    is missing or a loop is met."""
    todo = [p for p in os.fsencode(path).split(b"/") if p not in (b"", b".")]
    done: list[bytes] = []
    hops = 0
    while todo:
        name = todo.pop(0)
        if name == b"..":
            if done:
                done.pop()
            continue
        node = tree.lookup(b"/" + b"/".join(done + [name]))
        if node is None:
            return None
        if node.kind is Kind.SYMLINK:
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                return None
            link = node.target
            if link.startswith(b"/"):
                done = []
            todo = [p for p in link.split(b"/") if p not in (b"", b".")] + todo
            continue
        done.append(name)
    return tree.lookup(b"/" + b"/".join(done))


def read_file(tree: Tree, path: str) -> bytes | None:
    """The content of the regular file at ``path`` of the tree (symlinks followed inside it),
    or None when there is none."""
    node = resolve(tree, path)
    if node is None or node.kind is not Kind.REG:
        return None
    if not node.source:
        return b""
    try:
        with open(node.source, "rb") as f:
            return f.read()
    except OSError as e:
        raise SourceError(f"{node.source}: cannot read: {e.strerror}") from None


def _id_table(tree: Tree, path: str) -> dict[str, int] | None:
    data = read_file(tree, path)
    if data is None:
        return None
    table: dict[str, int] = {}
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            table.setdefault(fields[0], int(fields[2]))
    return table


def _resolve_id(name: str, table: dict[str, int] | None, what: str, path: str, at: str) -> int:
    if name.isdigit():
        v = int(name)
        if v > 0xFFFFFFFE:
            raise UsageError(f"{at}: {what} id {v} is out of range")
        return v
    if table is None:
        raise UsageError(f"{at}: unknown {what} {name!r}: the tree has no {path}")
    if name not in table:
        raise UsageError(f"{at}: unknown {what} {name!r} (not in the tree's {path})")
    return table[name]


def _subtree(node: Node) -> list[Node]:
    """Every node below and including ``node``, each inode once."""
    seen: set[int] = set()
    out: list[Node] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        out.append(n)
        if n.kind is Kind.DIR:
            stack.extend(n.entries.values())
    return out


# --------------------------------------------------------------------------------------------
# grafting
# --------------------------------------------------------------------------------------------


def apply_contents(
    tree: Tree,
    entries: Iterable[ContentsEntry | Mapping[str, Any]],
    *,
    tree_root: str | None,
    timestamp: int,
    base_dir: str | os.PathLike[str] | None = None,
    clamp_mtime: int | None = None,
    deterministic: bool = True,
) -> None:
    """Graft ``contents`` entries into ``tree`` in place (see the module docstring).

    ``tree_root`` is the folder ``tree`` was scanned from (only used to name the tree in
    messages, may be None); ``timestamp`` (seconds, ``SOURCE_DATE_EPOCH``) is the mtime of the
    folders created for targets; ``base_dir`` anchors relative sources; ``clamp_mtime`` and
    ``deterministic`` are passed to the scan of each source, as for the root.
    """
    items = list(entries)
    if all(isinstance(e, ContentsEntry) for e in items):
        ents: list[ContentsEntry] = items  # type: ignore[assignment]
    else:
        ents = validate_entries(
            [dataclasses.asdict(e) if isinstance(e, ContentsEntry) else e for e in items]
        )
    base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
    ts_ns = timestamp * 1_000_000_000
    tname = f" of {tree_root}" if tree_root else ""
    owners: list[tuple[str, Node, ContentsEntry]] = []
    for i, e in enumerate(ents):
        at = f"contents entry {i} ({e.target})"
        parts = _target_parts(e.target, at)
        chmod = parse_chmod(e.mode) if e.mode is not None else None
        source = os.path.join(base, e.source)
        scan_opts = {"all_root": True, "clamp_mtime": clamp_mtime, "deterministic": deterministic}
        grafted: list[Node] = []
        if "*" in e.source:
            target_dir = _resolve_dir(tree, parts, create=True, timestamp_ns=ts_ns, at=at,
                                      shown=e.target)
            matches = sorted(glob.glob(os.fsencode(source)))
            if not matches:
                raise UsageError(f"{at}: source pattern {e.source!r} matches nothing")
            for mpath in matches:
                name = os.path.basename(mpath.rstrip(b"/"))
                if name in target_dir.entries:
                    raise UsageError(
                        f"duplicate entry {e.target.rstrip('/')}/{os.fsdecode(name)} -> "
                        f"{os.fsdecode(mpath)}"
                    )
                node = scan_path(mpath, **scan_opts)  # type: ignore[arg-type]
                target_dir.entries[name] = node
                grafted.append(node)
            owner_node = target_dir
        else:
            if not parts:
                raise UsageError(f"duplicate entry {e.target} -> {e.source}")
            parent = _resolve_dir(tree, parts[:-1], create=True, timestamp_ns=ts_ns, at=at,
                                  shown=e.target)
            if parts[-1] in parent.entries:
                raise UsageError(f"duplicate entry {e.target} -> {e.source}")
            if not os.path.lexists(source):
                raise SourceError(f"{at}: source {source} does not exist")
            node = scan_path(source, follow_top_symlink=os.path.isdir(source),
                             **scan_opts)  # type: ignore[arg-type]
            parent.entries[parts[-1]] = node
            grafted.append(node)
            owner_node = node
        if chmod is not None:
            done: set[int] = set()
            for g in grafted:
                for n in _subtree(g):
                    if n.kind is not Kind.SYMLINK and id(n) not in done:
                        done.add(id(n))
                        _chmod_node(n, chmod)
        if e.user is not None:
            owners.append((at, owner_node, e))
    if not owners:
        return
    passwd = _id_table(tree, "/etc/passwd")
    group = _id_table(tree, "/etc/group")
    for at, node, e in owners:
        assert e.user is not None and e.group is not None
        uid = _resolve_id(e.user, passwd, "user", f"/etc/passwd{tname}", at)
        gid = _resolve_id(e.group, group, "group", f"/etc/group{tname}", at)
        for n in _subtree(node):
            n.uid, n.gid = uid, gid
