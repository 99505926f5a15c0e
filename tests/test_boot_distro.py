"""A real distribution through the bootloader stage: Debian 12 (tests/distrokit.py) with its own
GRUB installed chrooted in the image, as a user of the seed's installBootLoader would, then
booted until systemd has reached multi-user.target and the marker unit prints on ttyS0.

* ``legacy``: ``grub-install --target=i386-pc "$DISK" && update-grub``, booted under SeaBIOS;
* ``efi``: ``grub-install --target=x86_64-efi --removable --no-nvram`` into the ESP (mounted at
  /boot, holding the kernel), ``update-grub``, booted under OVMF.

Each image is built once per session (the ``distro_stage_image`` fixture) and shared with the
reproducibility tests.  Before booting, the reference tools judge what GRUB left: sfdisk, the
MBR's boot code, e2fsck -fn, debugfs, mtools and fsck.fat -n.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bootkit
import distrokit
import pytest

ROOT_GPUID = "f222513b-ded1-49fa-b591-20ce86a2fe7f"  # the seed's default rootFSUID


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


def partitions(img: Path) -> dict[int, dict[str, Any]]:
    table = bootkit.sfdisk_json(img)
    return {int(p["node"][len(str(img)) :]): p for p in table["partitions"]}


def assert_root_clean(img: Path, start_sector: int) -> str:
    """e2fsck -fn silent and the UUID the pinned one; returns /boot/grub/grub.cfg if any."""
    at = f"{img}?offset={start_sector * 512}"
    fsck = run("e2fsck", "-fn", at)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    info = run("dumpe2fs", "-h", at).stdout
    assert f"Filesystem UUID:          {ROOT_GPUID}" in info
    return run("debugfs", "-R", "cat /boot/grub/grub.cfg", at).stdout


@pytest.mark.slow
def test_debian_legacy_grub_boots_to_systemd(
    distro_stage_image: Callable[[str], tuple[Path, Any]], tmp_path: Path
) -> None:
    img, build = distro_stage_image("legacy")
    assert build.returncode == 0, build.stderr
    kernel = distrokit.kernel_version(distrokit.debian_tree())
    # the stage spoke as it went: GRUB's own lines on the progress stream
    assert "  | Installation finished. No error reported." in build.stderr.splitlines(), build.stderr
    assert f"  | Found linux image: /boot/vmlinuz-{kernel}" in build.stderr.splitlines()
    parts = partitions(img)
    assert list(parts) == [1] and parts[1]["type"] == "83"
    with open(img, "rb") as f:
        boot_code = f.read(440)
    assert b"GRUB" in boot_code  # grub-install wrote boot.img's code, not the zeros we write
    cfg = assert_root_clean(img, parts[1]["start"])
    assert f"linux\t/boot/vmlinuz-{kernel} root=UUID={ROOT_GPUID}" in cfg, cfg
    result = bootkit.boot(img, tmp_path / "vm", uefi=False, marker=distrokit.MARKER)
    print(f"legacy: booted to the marker in {result.seconds:.0f} s: {result.marker_line}")
    assert result.booted, result.tail()


@pytest.mark.slow
def test_debian_efi_grub_boots_to_systemd(
    distro_stage_image: Callable[[str], tuple[Path, Any]], tmp_path: Path
) -> None:
    img, build = distro_stage_image("efi")
    assert build.returncode == 0, build.stderr
    assert build.stderr == ""  # --quiet: neither progress nor the stage's output
    kernel = distrokit.kernel_version(distrokit.debian_tree())
    parts = partitions(img)
    assert parts[1]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    esp = f"{img}@@{parts[1]['start'] * 512}"
    listing = run("mdir", "-b", "-i", esp, "::/EFI/BOOT")
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing.stdout.splitlines(), listing.stdout + listing.stderr
    cfg = run("mtype", "-i", esp, "::/grub/grub.cfg")
    assert f"linux\t/vmlinuz-{kernel} root=UUID={ROOT_GPUID}" in cfg.stdout, cfg.stdout + cfg.stderr
    esp_copy = tmp_path / "esp.part"
    run(
        "dd",
        f"if={img}",
        f"of={esp_copy}",
        "bs=512",
        f"skip={parts[1]['start']}",
        f"count={parts[1]['size']}",
        "status=none",
    )
    fat = run("fsck.fat", "-n", str(esp_copy))
    assert fat.returncode == 0, fat.stdout
    assert_root_clean(img, parts[2]["start"])
    result = bootkit.boot(img, tmp_path / "vm", uefi=True, marker=distrokit.MARKER)
    print(f"efi: booted to the marker in {result.seconds:.0f} s: {result.marker_line}")
    assert result.booted, result.tail()
