"""`--bootloader grub|systemd-boot`: images that boot with no VM anywhere in the build.

Each build runs with QEMU and libguestfs poisoned (stubs first on the PATH, ``LIBGUESTFS_HV``
pointing to a stub; any start leaves a flag and fails), is built a second time from another
folder with another umask and time zone and compared byte for byte, and then boots under QEMU:

* the Debian 12 tree of ``distrokit`` (distribution kernel and initramfs, its own GRUB modules
  and systemd-boot) to systemd's multi-user.target: SeaBIOS for legacy, legacy+gpt and hybrid
  (GRUB i386-pc), OVMF for efi (GRUB x86_64-efi and systemd-boot), hybrid (GRUB x86_64-efi)
  and efixbootldr (systemd-boot on the ESP, its entries and the kernel on XBOOTLDR);
* the busybox kit of ``bootkit`` (the host's kernel and initrd as /boot/vmlinuz-VERSION, the
  host's GRUB via --grub-dir, the host's systemd-boot) to its init's marker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import bootkit
import distrokit
import novmkit
import pytest

EPOCH = "1700000000"
#: serial console, reboot on panic; no getty on the serial console: agetty's vhangup() of ttyS0
#: races the distrokit marker unit's write to ttyS0 (seen: the marker lost, no power-off);
#: no_timer_check: on a loaded host the kernel's IO-APIC timer check can fail under TCG (seen:
#: a panic before any boot loader question arose)
CMDLINE = "console=ttyS0 panic=-1 systemd.getty_auto=0 no_timer_check"
#: (table, loader, boot with OVMF)
CASES = [
    ("legacy", "grub", False),
    ("legacy+gpt", "grub", False),
    ("hybrid", "grub", False),
    ("efi", "grub", True),
    ("efi", "systemd-boot", True),
    ("hybrid", "grub", True),
    ("efixbootldr", "systemd-boot", True),  # entries and kernels on XBOOTLDR
]
IDS = [f"{t}-{b}-{'ovmf' if u else 'seabios'}" for t, b, u in CASES]


def build_twice(tmp_path: Path, root: Path, table: str, loader: str, *extra: object) -> Path:
    """Build with every VM poisoned, twice (other cwd, umask, TZ); the bytes must be equal."""
    env, flag = novmkit.poisoned_env(tmp_path)
    img = tmp_path / "disk.img"
    args = ["--root", root, "--partition-table", table, "--bootloader", loader,
            "--kernel-cmdline", CMDLINE, "--source-date-epoch", EPOCH, "-q", *extra]
    r = novmkit.build(*args, "-o", img, env=env)
    assert r.returncode == 0, r.stderr
    assert not flag.exists(), f"a VM was started: {flag.read_text()}"
    other = tmp_path / "again"
    other.mkdir()
    env2 = {**env, "TZ": "Asia/Kathmandu", "LC_ALL": "C.UTF-8"}
    again = other / "disk.img"
    old = os.umask(0o077)
    try:
        r = novmkit.build(*args, "-o", again, env=env2, cwd=other)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    assert not flag.exists()
    cmp = subprocess.run(["cmp", img, again], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    again.unlink()
    return img


@pytest.mark.slow
@pytest.mark.parametrize(("table", "loader", "uefi"), CASES, ids=IDS)
def test_debian_boots_to_systemd_with_no_vm_in_the_build(tmp_path: Path, table: str, loader: str, uefi: bool) -> None:
    tree = distrokit.debian_tree()
    img = build_twice(tmp_path, tree, table, loader)
    result = bootkit.boot(img, tmp_path / "vm", uefi=uefi, marker=distrokit.MARKER)
    print(f"{table} {loader}: booted in {result.seconds:.0f} s: {result.marker_line}")
    assert result.booted, result.tail()


def busybox_root(dest: Path) -> Path:
    """bootkit's busybox root with the host's kernel and initrd as /boot/vmlinuz-VERSION and
    /boot/initrd.img-VERSION, and the host's systemd-boot where a distribution puts it."""
    root = bootkit.make_root_tree(dest)
    vmlinuz, initrd = bootkit.host_kernel()
    version = os.path.basename(vmlinuz)[len("vmlinuz-"):]
    shutil.copyfile(vmlinuz, root / "boot" / f"vmlinuz-{version}")
    shutil.copyfile(initrd, root / "boot" / f"initrd.img-{version}")
    efi = root / "usr/lib/systemd/boot/efi"
    efi.mkdir(parents=True)
    shutil.copyfile(bootkit.SYSTEMD_BOOT, efi / "systemd-bootx64.efi")
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("table", "loader", "uefi"), CASES, ids=IDS)
def test_busybox_kit_boots_with_no_vm_in_the_build(tmp_path: Path, table: str, loader: str, uefi: bool) -> None:
    root = busybox_root(tmp_path / "root")
    extra = ["--grub-dir", "/usr/lib/grub"] if loader == "grub" else []
    img = build_twice(tmp_path, root, table, loader, *extra)
    result = bootkit.boot(img, tmp_path / "vm", uefi=uefi)
    print(f"{table} {loader}: booted in {result.seconds:.0f} s: {result.marker_line}")
    assert result.booted, result.tail()
    assert " / ext4" in result.marker_line, result.marker_line


@pytest.mark.slow
def test_boot_code_and_core_img_placement_match_grub_install_through_the_stage(
        tmp_path: Path, distro_stage_image) -> None:  # type: ignore[no-untyped-def]
    """The same Debian tree, legacy: grub-install in the bootloader stage vs --bootloader grub.
    Sector 0's boot code (boot.img as grub-bios-setup patches it) is identical; core.img
    starts at sector 1 in both, its first sector (diskboot.img) and blocklist start and segment
    are identical; only the blocklist's length differs: grub-install appends Reed-Solomon codes
    (up to twice core.img's size), pydiskimg does not."""
    stage_img, proc = distro_stage_image("legacy")
    assert proc.returncode == 0, proc.stderr
    env, flag = novmkit.poisoned_env(tmp_path)
    ours = tmp_path / "ours.img"
    r = novmkit.build("--root", distrokit.debian_tree(), "-o", ours, "--partition-table", "legacy",
                      "--bootloader", "grub", "--kernel-cmdline", CMDLINE, "--source-date-epoch", EPOCH,
                      "--additional-space", distrokit.ADDITIONAL_SPACE, "--json", "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert not flag.exists()
    with open(stage_img, "rb") as f:
        theirs = f.read(2048 * 512)
    with open(ours, "rb") as f:
        mine = f.read(2048 * 512)
    assert mine[:0x1BE] == theirs[:0x1BE]  # boot code, patched fields, disk signature
    assert mine[0x1FE:512] == theirs[0x1FE:512]  # (the records differ with the disk size)
    assert int.from_bytes(mine[0x5C:0x64], "little") == 1
    assert mine[512:512 + 500] == theirs[512:512 + 500]  # diskboot.img
    ours_bl, their_bl = mine[512 + 500:1024], theirs[512 + 500:1024]
    assert ours_bl[:8] == their_bl[:8] == (2).to_bytes(8, "little")  # the run starts at sector 2
    assert ours_bl[10:] == their_bl[10:] == (0x820).to_bytes(2, "little")
    our_len, their_len = int.from_bytes(ours_bl[8:10], "little"), int.from_bytes(their_bl[8:10], "little")
    assert their_len >= our_len
    print(f"core.img sectors after the first: pydiskimg {our_len}, grub-install {their_len} "
          f"(with Reed-Solomon codes); build: {json.loads(r.stdout)['stages']}")
