"""Reading the staged tree the way a boot loader installer reads the installed system.

Paths are looked up in the in-memory :class:`~pydiskimg.tree.Tree` (so files grafted by
``contents`` count), with symlinks followed *inside* the tree, an absolute target from the
tree's root, as a chroot would.  Only ``Tree.lookup`` and a node's kind, entries, symlink target
and data source are used.
"""

from __future__ import annotations

import os

from ..errors import SourceError
from ..tree import Kind, Node, Tree

_MAX_HOPS = 40


def resolve(tree: Tree, path: str) -> Node | None:
    """The node at ``path`` with every symlink on the way (and at the end) followed inside the
    tree, or None when something is missing or a loop is met."""
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
            if hops > _MAX_HOPS:
                return None
            link = node.target
            if link.startswith(b"/"):
                done = []
            todo = [p for p in link.split(b"/") if p not in (b"", b".")] + todo
            continue
        done.append(name)
    return tree.lookup(b"/" + b"/".join(done))


def listdir(tree: Tree, path: str) -> dict[str, Node]:
    """The entries of the folder at ``path`` (resolved), each resolved too; {} when ``path`` is
    not a folder.  Entries whose symlinks lead nowhere are left out."""
    d = resolve(tree, path)
    if d is None or d.kind is not Kind.DIR:
        return {}
    out: dict[str, Node] = {}
    for name in sorted(d.entries):
        n = resolve(tree, f"{path.rstrip('/')}/{os.fsdecode(name)}")
        if n is not None:
            out[os.fsdecode(name)] = n
    return out


def is_file(node: Node | None) -> bool:
    return node is not None and node.kind is Kind.REG


def read(tree: Tree, path: str) -> bytes | None:
    """The content of the regular file at ``path``, or None when there is none."""
    n = resolve(tree, path)
    if n is None or n.kind is not Kind.REG:
        return None
    if not n.source:
        return b""
    try:
        with open(n.source, "rb") as f:
            return f.read()
    except OSError as e:
        raise SourceError(f"{n.source}: cannot read: {e.strerror}") from None


def source(node: Node, empty: str) -> str:
    """The host file holding a regular file's data (``empty``, an empty file, for size 0)."""
    return node.source or empty


def os_release(tree: Tree) -> dict[str, str]:
    """The tree's os-release (/etc/os-release, else /usr/lib/os-release), unquoted."""
    data = read(tree, "/etc/os-release")
    if data is None:
        data = read(tree, "/usr/lib/os-release") or b""
    out: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out
