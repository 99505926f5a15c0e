"""Boot loaders installed by pydiskimg itself, with no VM (``--bootloader grub|systemd-boot``).

:func:`prepare` runs before the plan: it reads the tree (kernels, GRUB modules, systemd-boot),
makes GRUB's images with the host's ``grub-mkimage``, and lists the files to add to the root
filesystem and the ESP; :meth:`BootPlan.graft` adds them through the ``contents`` grafting
(:func:`pydiskimg.contents.apply_contents`), so they are planned, sized and written like any
file.  :meth:`BootPlan.check` refuses a layout whose embedding area cannot hold core.img, before
anything is written; :meth:`BootPlan.write` puts boot.img and core.img on the disk after the
partition table.  Generated files get mode 0644, owner root and ``SOURCE_DATE_EPOCH`` times;
copied files keep the tree's times: two builds are byte-identical.

See :mod:`.grub` and :mod:`.sdboot` for what each loader gets, and how it compares with
grub-install / grub-bios-setup and bootctl / kernel-install.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..contents import apply_contents
from ..errors import UsageError
from ..tree import Node, Tree
from . import grub, sdboot, treefiles
from .kernels import Kernel, find_kernels

log = logging.getLogger(__name__)

WHERE = "bootLoader (--bootloader)"


@dataclass
class BootPlan:
    bootloader: str
    kernels: list[Kernel]
    #: (target path, host source path) for the root filesystem and the ESP
    root_files: list[tuple[str, str]] = field(default_factory=list)
    esp_files: list[tuple[str, str]] = field(default_factory=list)
    #: efixbootldr: the entries and kernels, for the XBOOTLDR partition (kernel-install's $BOOT)
    xbootldr_files: list[tuple[str, str]] = field(default_factory=list)
    boot_img: bytes | None = None
    core_img: bytes | None = None
    efi_image: bytes | None = None

    def graft(self, tree: Tree, esp_tree: Tree | None, *, timestamp: int, deterministic: bool,
              root_name: str, esp_name: str | None, xbootldr_tree: Tree | None = None,
              xbootldr_name: str | None = None) -> None:
        """Add the planned files to the trees (one-line error if one is already there)."""
        _graft(tree, self.root_files, timestamp, deterministic, f"root (--root) {root_name}")
        if self.esp_files:
            assert esp_tree is not None
            _graft(esp_tree, self.esp_files, timestamp, deterministic,
                   f"esp (--esp) {esp_name}" if esp_name else "the ESP")
        if self.xbootldr_files:
            assert xbootldr_tree is not None
            _graft(xbootldr_tree, self.xbootldr_files, timestamp, deterministic,
                   f"xbootldr (--xbootldr) {xbootldr_name}" if xbootldr_name else "XBOOTLDR")

    def check(self, layout: Any) -> None:
        """Refuse a layout whose embedding area is too small for core.img (before writing)."""
        if self.core_img is not None:
            grub.check_fits(grub.embedding_area(layout), self.core_img)

    def write(self, image: Any, layout: Any) -> None:
        """boot.img and core.img on the disk (the partition table must be written already)."""
        if self.core_img is not None and self.boot_img is not None:
            grub.install_bios(image, self.boot_img, self.core_img, grub.embedding_area(layout))

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"bootloader": self.bootloader,
                             "kernels": [k.version for k in self.kernels]}
        if self.core_img is not None:
            d["core_img_sectors"] = grub.core_sectors(self.core_img)
        return d


def _graft(tree: Tree, files: list[tuple[str, str]], timestamp: int, deterministic: bool, where: str) -> None:
    for target, _ in files:
        if treefiles.resolve(tree, target) is not None:
            raise UsageError(f"{where}: {target} is already there, and {WHERE} installs its own "
                             "(remove it from the tree, or use installBootLoader)")
    apply_contents(tree, [{"source": src, "target": target} for target, src in files],
                   tree_root=None, timestamp=timestamp, deterministic=deterministic)


class _Files:
    """Generated files in the work folder: mode 0644, mtime ``timestamp``."""

    def __init__(self, workdir: str, timestamp: int) -> None:
        self.workdir = workdir
        self.timestamp = timestamp
        self.n = 0
        self.empty = self.text("empty", b"")

    def text(self, name: str, data: str | bytes) -> str:
        self.n += 1
        path = os.path.join(self.workdir, f"{self.n:04d}-{name}")
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(path, 0o644)
        os.utime(path, (self.timestamp, self.timestamp))
        return path

    def copy_of(self, node: Node) -> str:
        return treefiles.source(node, self.empty)


def prepare(bootloader: str, tree: Tree, *, table: str, fs_uuid: str, cmdline: str,
            grub_dir: str | None, workdir: str, timestamp: int) -> BootPlan:
    """Everything the boot loader needs, decided before the plan (one-line errors)."""
    kernels = find_kernels(tree)
    if not kernels:
        raise UsageError(f"{WHERE} {bootloader}: the tree has no kernel: no /boot/vmlinuz-VERSION")
    files = _Files(workdir, timestamp)
    plan = BootPlan(bootloader, kernels)
    if bootloader == "systemd-boot":
        sd = sdboot.plan(tree, kernels, fs_uuid, cmdline)
        for path, text in sd.loader_text.items():
            plan.esp_files.append((path, files.text(os.path.basename(path), text)))
        for path, node in sd.loader_copies.items():
            plan.esp_files.append((path, files.copy_of(node)))
        # the entries' destination, kernel-install's $BOOT: XBOOTLDR when there is one (bootctl
        # and kernel-install prefer it to the ESP), else the ESP
        entries = plan.xbootldr_files if table == "efixbootldr" else plan.esp_files
        for path, text in sd.entries_text.items():
            entries.append((path, files.text(os.path.basename(path), text)))
        for path, node in sd.entries_copies.items():
            entries.append((path, files.copy_of(node)))
        return plan
    grub.check_cmdline(cmdline, "kernelCmdline (--kernel-cmdline)")
    platforms = []
    if table in ("legacy", "legacy+gpt", "hybrid"):
        platforms.append(grub.BIOS)
    if table in ("efi", "hybrid"):
        platforms.append(grub.EFI)
    cfg = files.text("load.cfg", grub.load_cfg(fs_uuid))
    for platform in platforms:
        sources, where = _platform_files(tree, grub_dir, platform)
        missing = [n for n in grub.REQUIRED[platform] if n not in sources]
        if missing:
            hint = "grub-pc-bin" if platform == grub.BIOS else "grub-efi-amd64-bin"
            raise UsageError(f"{WHERE} grub: {where} lacks {', '.join(missing)} (install Debian's "
                             f"{hint} in the tree, or pass --grub-dir)")
        moddir = os.path.join(workdir, f"grub-{platform}")
        os.mkdir(moddir)
        for name, src in sources.items():
            os.symlink(os.path.abspath(src), os.path.join(moddir, name))
        out = os.path.join(workdir, f"grub-{platform}.img")
        image = grub.mkimage(moddir, platform, cfg, out)
        os.chmod(out, 0o644)
        os.utime(out, (timestamp, timestamp))
        dest = f"{grub.PREFIX}/{platform}"
        for name, src in sources.items():
            if name.endswith(grub.COPIED_SUFFIXES) or name in grub.COPIED_NAMES:
                plan.root_files.append((f"{dest}/{name}", src))
        if platform == grub.BIOS:
            plan.core_img = image
            with open(sources["boot.img"], "rb") as f:
                plan.boot_img = f.read()
            plan.root_files.append((f"{dest}/boot.img", sources["boot.img"]))
            plan.root_files.append((f"{dest}/core.img", out))
        else:
            plan.efi_image = image
            plan.esp_files.append(("/EFI/BOOT/BOOTX64.EFI", out))
    font = treefiles.resolve(tree, "/usr/share/grub/unicode.pf2")
    if treefiles.is_file(font) and treefiles.resolve(tree, f"{grub.PREFIX}/fonts/unicode.pf2") is None:
        assert font is not None
        plan.root_files.append((f"{grub.PREFIX}/fonts/unicode.pf2", files.copy_of(font)))
    if treefiles.resolve(tree, f"{grub.PREFIX}/grub.cfg") is None:
        rel = treefiles.os_release(tree)
        title = rel.get("PRETTY_NAME") or rel.get("NAME") or "Linux"
        text = grub.grub_cfg(kernels, fs_uuid, cmdline, title)
        plan.root_files.append((f"{grub.PREFIX}/grub.cfg", files.text("grub.cfg", text)))
    else:
        log.info("using the tree's own %s/grub.cfg", grub.PREFIX)
    return plan


def _platform_files(tree: Tree, grub_dir: str | None, platform: str) -> tuple[dict[str, str], str]:
    """{file name: host path} of a GRUB platform folder (regular files only), and its name for
    messages: ``--grub-dir``'s on the host, else the tree's /usr/lib/grub/<platform>."""
    empty_ok: dict[str, str] = {}
    if grub_dir is not None:
        d = os.path.join(grub_dir, platform)
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                p = os.path.join(d, name)
                if os.path.isfile(p):  # a symlinked file (a Nix store's links) is copied as a file
                    empty_ok[name] = os.path.realpath(p)
        return empty_ok, f"grubDir (--grub-dir) {d}/"
    for name, node in treefiles.listdir(tree, f"/usr/lib/grub/{platform}").items():
        if treefiles.is_file(node) and node.source:
            empty_ok[name] = node.source
    return empty_ok, f"the tree's /usr/lib/grub/{platform}/"
