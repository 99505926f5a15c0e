"""Reading the staged tree the way a boot loader installer reads the installed system.

Paths are looked up in the in-memory :class:`~pydiskimg.tree.Tree` (so files grafted by
``contents`` count), with symlinks followed *inside* the tree, an absolute target from the
tree's root, as a chroot would.  Only ``Tree.lookup`` and a node's kind, entries, symlink target
and data source are used.
"""

from __future__ import annotations

import os

from .. import contents
from ..tree import Kind, Node, Tree

#: ``resolve(tree, path)``: the node with symlinks followed inside the tree;
#: ``read(tree, path)``: a regular file's content.  Both shared with ``contents``.
resolve = contents.resolve
read = contents.read_file


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
