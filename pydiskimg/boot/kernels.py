"""The kernels of a tree's /boot, newest first, as Debian's update-grub orders them.

A kernel is ``/boot/vmlinuz-VERSION`` (a regular file, or a symlink to one inside the tree);
its initrd is ``/boot/initrd.img-VERSION`` (Debian) or ``/boot/initramfs-VERSION.img``
(Fedora, Arch), when present.  Versions are compared as ``dpkg --compare-versions`` compares
them, which is what GRUB's ``10_linux`` uses on Debian (``version_find_latest``).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass

from ..tree import Node, Tree
from . import treefiles

log = logging.getLogger(__name__)

#: version strings used in boot entries and paths unquoted (what kernel packages use)
_SAFE_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~:-]*$")
INITRD_NAMES = ("initrd.img-{v}", "initramfs-{v}.img")


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinuz: Node  # the kernel file (symlinks resolved)
    initrd_name: str | None  # its initrd's name in /boot, or None
    initrd: Node | None

    @property
    def vmlinuz_name(self) -> str:
        return f"vmlinuz-{self.version}"


def find_kernels(tree: Tree) -> list[Kernel]:
    """Every /boot/vmlinuz-VERSION of the tree, newest version first."""
    boot = treefiles.listdir(tree, "/boot")
    found = []
    for name, node in boot.items():
        if not name.startswith("vmlinuz-") or not treefiles.is_file(node):
            continue
        version = name[len("vmlinuz-"):]
        if not _SAFE_VERSION.match(version):
            log.warning("/boot/%s: version %r has characters boot entries cannot hold: skipped", name, version)
            continue
        initrd_name = next((n.format(v=version) for n in INITRD_NAMES
                            if treefiles.is_file(boot.get(n.format(v=version)))), None)
        found.append(Kernel(version, node, initrd_name, boot[initrd_name] if initrd_name else None))
    found.sort(key=functools.cmp_to_key(lambda a, b: compare_versions(b.version, a.version)))
    return found


# -- dpkg's version comparison (lib/dpkg/version.c) -----------------------------------------


def _order(c: str) -> int:
    """dpkg's weight of one character of a non-digit run: '~' lowest, then the end, then
    letters, then everything else."""
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if not c:
        return 0
    if c.isascii() and c.isalpha():
        return ord(c)
    return ord(c) + 256


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(v: str) -> tuple[int, str, str]:
    epoch = 0
    head, sep, rest = v.partition(":")
    if sep and head.isdigit():
        epoch, v = int(head), rest
    upstream, sep, revision = v.rpartition("-")
    if not sep:
        upstream, revision = v, ""
    return epoch, upstream, revision


def compare_versions(a: str, b: str) -> int:
    """<0, 0 or >0 as ``dpkg --compare-versions a lt/eq/gt b``."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _verrevcmp(ua, ub) or _verrevcmp(ra, rb)
