"""An efixbootldr image boots under OVMF: systemd-boot on the ESP, its entry and the kernel on
XBOOTLDR (systemd-boot finds XBOOTLDR by its partition type GUID).

The Debian 12 tree (tests/distrokit.py) is the root.  The build puts the tree's kernel and
initrd on XBOOTLDR (``--xbootldr``); the bootloader stage, chrooted in the tree, writes
through the mount points upstream uses: systemd-boot from the tree's systemd-boot-efi to
``/efi/EFI/BOOT/BOOTX64.EFI`` and the BLS entry to ``/boot/loader/entries``.  The test passes
when the tree's marker unit reaches the serial console (systemd got to multi-user.target with
the root mounted from partition 3).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bootkit
import distrokit
import pytest
from fatcheck import assert_fsck_silent
from imgcheck import extract, sfdisk_json

ROOT_GPUID = "F222513B-DED1-49FA-B591-20CE86A2FE7F"


@pytest.mark.slow
def test_efixbootldr_boots_systemd_boot_entry_from_xbootldr(tmp_path: Path) -> None:
    tree = distrokit.debian_tree()
    kver = distrokit.kernel_version(tree)
    xbl = tmp_path / "xbootldr"
    (xbl / "debian").mkdir(parents=True)
    for name, dest in ((f"vmlinuz-{kver}", "vmlinuz"), (f"initrd.img-{kver}", "initrd.img")):
        (xbl / "debian" / dest).write_bytes((tree / "boot" / name).read_bytes())
    esp = tmp_path / "esp"
    (esp / "loader").mkdir(parents=True)
    (esp / "loader" / "loader.conf").write_text("timeout 0\neditor no\n")
    # chrooted in the tree: the ESP is at /efi and XBOOTLDR at /boot, as upstream mounts them
    command = (
        "set -e\n"
        "mkdir -p /efi/EFI/BOOT /boot/loader/entries\n"
        "cp /usr/lib/systemd/boot/efi/systemd-bootx64.efi /efi/EFI/BOOT/BOOTX64.EFI\n"
        "printf 'title Debian from XBOOTLDR\\nlinux /debian/vmlinuz\\ninitrd /debian/initrd.img\\n"
        f"options root=PARTUUID={ROOT_GPUID.lower()} {bootkit.BASE_CMDLINE}\\n' "
        "> /boot/loader/entries/debian.conf\n"
        "grep -q ' /efi vfat ' /proc/mounts && grep -q ' /boot vfat ' /proc/mounts\n"
        'echo "esp=$ESP_DEV xbootldr=$XBOOTLDR_DEV"\n'
    )
    img = tmp_path / "disk.img"
    r = subprocess.run(
        [sys.executable, "-m", "pydiskimg", "build", "--root", str(tree), "-o", str(img),
         "--partition-table", "efixbootldr", "--esp", str(esp), "--xbootldr", str(xbl),
         "--root-gpuid", ROOT_GPUID, "--source-date-epoch", "1700000000",
         "--install-bootloader", command],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    parts = sfdisk_json(img)["partitions"]
    # what the stage wrote landed on the right FATs, which stay clean
    for i, path in ((0, "::/EFI/BOOT/BOOTX64.EFI"), (1, "::/loader/entries/debian.conf")):
        fat = extract(img, parts[i]["start"] * 512, parts[i]["size"] * 512, tmp_path / f"p{i}.img")
        assert_fsck_silent(fat)
        got = subprocess.run(["mtype", "-i", str(fat), path], capture_output=True,
                             env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
        assert got.returncode == 0 and got.stdout, got.stderr
    result = bootkit.boot(img, tmp_path / "vm", uefi=True, marker=distrokit.MARKER)
    assert result.booted, result.tail()
    assert "EXT4-fs (vda3): mounted filesystem" in result.console, result.tail()
    print(f"booted to the marker in {result.seconds:.1f} s: {result.marker_line}")


@pytest.mark.slow
def test_efixbootldr_with_bootloader_systemd_boot_boots_without_vm_in_the_build(tmp_path: Path) -> None:
    """--bootloader systemd-boot (no VM in the build): the loader on the ESP, the entry and the
    Debian tree's kernel and initrd on XBOOTLDR, the root found by its filesystem UUID."""
    import novmkit

    env, flag = novmkit.poisoned_env(tmp_path)
    img = tmp_path / "disk.img"
    r = novmkit.build("--root", distrokit.debian_tree(), "-o", img, "--partition-table", "efixbootldr",
                      "--bootloader", "systemd-boot", "--kernel-cmdline", "console=ttyS0 panic=-1 no_timer_check",
                      "--source-date-epoch", "1700000000", "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert not flag.exists()
    result = bootkit.boot(img, tmp_path / "vm", uefi=True, marker=distrokit.MARKER)
    assert result.booted, result.tail()
    assert "EXT4-fs (vda3): mounted filesystem" in result.console, result.tail()
    print(f"booted to the marker in {result.seconds:.1f} s: {result.marker_line}")
