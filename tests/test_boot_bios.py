"""BIOS images whose bootloader is put in place through the guest stage boot under SeaBIOS.

* legacy (MBR): `pydiskimg build --install-bootloader CMD` where CMD runs *chrooted in the
  image* and uses the extlinux the image ships (a distribution's bootloader, as the seed's
  switch-to-configuration), syslinux's mbr.bin in the first 440 bytes, the partition active,
  ``root=PARTUUID=<MBR signature>-01``;
* legacy+gpt: the appliance's own extlinux (``--bootloader-in-appliance``), gptmbr.bin, the root partition's
  LegacyBIOSBootable attribute, ``root=PARTUUID=<root GUID>``.

Both judge the result with the reference tools (sfdisk, debugfs, dumpe2fs, e2fsck -fn) before
booting QEMU's default BIOS to the init's marker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bootkit
import pytest

ROOT_GPUID = "f222513b-ded1-49fa-b591-20ce86a2fe7f"  # the seed's default rootGPUID = rootFSUID
EPOCH = "1700000000"


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


def pydiskimg_build(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pydiskimg", "build", *map(str, args)],
        capture_output=True,
        text=True,
    )


def root_start(img: Path, number: int) -> int:
    for p in bootkit.sfdisk_json(img)["partitions"]:
        if p["node"] == f"{img}{number}":
            return p["start"] * 512
    raise KeyError(number)


def assert_root_after_stage(img: Path, number: int) -> str:
    """e2fsck -fn silent, UUID still the pinned one, machine-id gone; returns extlinux.conf."""
    at = f"{img}?offset={root_start(img, number)}"
    fsck = run("e2fsck", "-fn", at)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    info = run("dumpe2fs", "-h", at).stdout
    assert f"Filesystem UUID:          {ROOT_GPUID}" in info
    assert "Mount count:              0" in info
    assert "File not found" in run("debugfs", "-R", "stat /etc/machine-id", at).stderr
    return run("debugfs", "-R", "cat /boot/syslinux/extlinux.conf", at).stdout


@pytest.mark.slow
def test_legacy_mbr_extlinux_chrooted_boots_under_seabios(tmp_path: Path) -> None:
    root = bootkit.add_extlinux(bootkit.make_root_tree(tmp_path / "root", kernel_in_boot=True))
    img = tmp_path / "legacy.img"
    r = pydiskimg_build(
        "--root",
        root,
        "-o",
        img,
        "--partition-table",
        "legacy",
        "--install-bootloader",
        bootkit.extlinux_chroot_command(),
        "--source-date-epoch",
        EPOCH,
    )
    assert r.returncode == 0, r.stderr
    table = bootkit.sfdisk_json(img)
    assert table["partitions"][0].get("bootable") is True
    with open(img, "rb") as f:
        head = f.read(440)
    with open(bootkit.SYSLINUX_MBR, "rb") as f:
        mbr = f.read()
    assert head[: len(mbr)] == mbr[:440]
    conf = assert_root_after_stage(img, 1)
    assert f"root=PARTUUID={bootkit.mbr_partuuid(img, 1)} " in conf, conf
    result = bootkit.boot(img, tmp_path / "vm", uefi=False)
    assert result.booted, result.tail()
    assert "/dev/vda1 / ext4" in result.marker_line, result.marker_line


@pytest.mark.slow
def test_gpt_extlinux_from_the_appliance_boots_under_seabios(tmp_path: Path) -> None:
    """Also: the stage runs on the raw image before the conversion (qcow2 here) and postVM
    runs after both."""
    root = bootkit.make_root_tree(tmp_path / "root", kernel_in_boot=True)
    qcow2 = tmp_path / "gpt.qcow2"
    r = pydiskimg_build(
        "--root",
        root,
        "-o",
        qcow2,
        "--partition-table",
        "legacy+gpt",
        "--format",
        "qcow2",
        "--source-date-epoch",
        EPOCH,
        "--install-bootloader",
        bootkit.extlinux_appliance_command(gpt_boot_part=2),
        "--bootloader-in-appliance",
        "--post-vm",
        'qemu-img check -q "$diskImage" && echo postvm-ran > "$diskImage.postvm"',
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "gpt.qcow2.postvm").read_text() == "postvm-ran\n"
    img = tmp_path / "gpt.img"
    back = run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(img))
    assert back.returncode == 0, back.stderr
    assert run("sgdisk", "-v", str(img)).returncode == 0
    attrs = run("sgdisk", "-A", "2:show", str(img)).stdout
    assert "legacy BIOS bootable" in attrs, attrs
    conf = assert_root_after_stage(img, 2)
    assert f"root=PARTUUID={bootkit.gpt_partuuid(img, 2)} " in conf, conf
    result = bootkit.boot(qcow2, tmp_path / "vm", uefi=False, fmt="qcow2")
    print(f"booted in {result.seconds:.0f} s: {result.marker_line}")
    assert result.booted, result.tail()
    assert "/dev/vda2 / ext4" in result.marker_line, result.marker_line
