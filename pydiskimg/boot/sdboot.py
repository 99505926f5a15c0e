"""systemd-boot installed with no VM: what ``bootctl install`` + ``kernel-install add`` do.

* the tree's ``/usr/lib/systemd/boot/efi/systemd-bootx64.efi`` goes to the removable path
  ``EFI/BOOT/BOOTX64.EFI`` and to ``EFI/systemd/systemd-bootx64.efi`` of the ESP, with
  ``loader/loader.conf`` (``timeout 0``, ``editor no``), as bootctl installs it (bootctl also
  writes a random seed and EFI variables: pydiskimg writes neither);
* each kernel of the tree's /boot gets a Boot Loader Specification type #1 entry
  ``loader/entries/TOKEN-VERSION.conf``, its kernel and initrd copied to ``/TOKEN/VERSION/``
  (``linux`` and the initrd's own name), as kernel-install's ``90-loaderentry.install`` does.
  TOKEN is kernel-install's entry token: ``/etc/kernel/entry-token``, else the machine ID,
  else os-release's ``IMAGE_ID``, else ``ID``, else ``linux``.

The loader goes to the ESP; the entries and kernels go to whatever partition the caller
grafts :attr:`SdBootFiles.entries` into: the ESP, or the XBOOTLDR partition of ``efixbootldr``
(as kernel-install does when there is one; systemd-boot finds it by its type GUID).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import UsageError
from ..tree import Node, Tree
from . import treefiles
from .kernels import Kernel

LOADER = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def entry_token(tree: Tree) -> str:
    """kernel-install's ``--entry-token=auto``."""
    data = treefiles.read(tree, "/etc/kernel/entry-token")
    if data is not None and _TOKEN_RE.match(data.decode("utf-8", "replace").strip()):
        return data.decode().strip()
    mid = (treefiles.read(tree, "/etc/machine-id") or b"").decode("utf-8", "replace").strip()
    if re.fullmatch(r"[0-9a-f]{32}", mid) and mid != "0" * 32:
        return mid
    rel = treefiles.os_release(tree)
    for key in ("IMAGE_ID", "ID"):
        if _TOKEN_RE.match(rel.get(key, "")):
            return rel[key]
    return "linux"


@dataclass
class SdBootFiles:
    """What to put where: (text files as ``{path: text}``, copies as ``{path: node}``)."""

    loader_text: dict[str, str] = field(default_factory=dict)
    loader_copies: dict[str, Node] = field(default_factory=dict)
    entries_text: dict[str, str] = field(default_factory=dict)
    entries_copies: dict[str, Node] = field(default_factory=dict)


def plan(tree: Tree, kernels: list[Kernel], fs_uuid: str, cmdline: str) -> SdBootFiles:
    """The files systemd-boot needs for ``kernels`` (newest first)."""
    loader = treefiles.resolve(tree, LOADER)
    if not treefiles.is_file(loader):
        raise UsageError(f"bootLoader (--bootloader) systemd-boot: the tree has no {LOADER} "
                         "(Debian: systemd-boot-efi)")
    assert loader is not None
    token = entry_token(tree)
    rel = treefiles.os_release(tree)
    title = rel.get("PRETTY_NAME") or rel.get("NAME") or "Linux"
    mid = (treefiles.read(tree, "/etc/machine-id") or b"").decode("utf-8", "replace").strip()
    files = SdBootFiles()
    files.loader_copies["/EFI/BOOT/BOOTX64.EFI"] = loader
    files.loader_copies["/EFI/systemd/systemd-bootx64.efi"] = loader
    files.loader_text["/loader/loader.conf"] = "timeout 0\neditor no\n"
    options = f"root=UUID={fs_uuid} ro" + (f" {cmdline}" if cmdline else "")
    for k in kernels:
        d = f"/{token}/{k.version}"
        lines = [f"title      {title}", f"version    {k.version}"]
        if re.fullmatch(r"[0-9a-f]{32}", mid) and mid == token:
            lines.append(f"machine-id {mid}")
        if token != mid:
            lines.append(f"sort-key   {token}")
        lines.append(f"options    {options}")
        lines.append(f"linux      {d}/linux")
        files.entries_copies[f"{d}/linux"] = k.vmlinuz
        if k.initrd_name and k.initrd is not None:
            lines.append(f"initrd     {d}/{k.initrd_name}")
            files.entries_copies[f"{d}/{k.initrd_name}"] = k.initrd
        files.entries_text[f"/loader/entries/{token}-{k.version}.conf"] = "\n".join(lines) + "\n"
    return files
