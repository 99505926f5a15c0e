"""An efi image built by `pydiskimg build` boots under QEMU with OVMF (no VM in the build).

The ESP holds systemd-boot (Debian's systemd-boot-efi) as the default loader
(/EFI/BOOT/BOOTX64.EFI), a loader entry, the host's kernel and initrd; the root holds the
bootkit's tiny init.  The test passes when the init's marker reaches the serial console and
shows the root mounted from partition 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bootkit
import pytest

ROOT_GPUID = "F222513B-DED1-49FA-B591-20CE86A2FE7F"  # the seed's default, upper case as given


def pydiskimg_build(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "pydiskimg", "build", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return r.stderr


@pytest.mark.slow
def test_efi_image_boots_with_systemd_boot_under_ovmf(tmp_path: Path) -> None:
    root = bootkit.make_root_tree(tmp_path / "root")
    # Debian's initramfs compares root=PARTUUID= with lower-case GUIDs: the ESP entry says it
    # in lower case whatever case the build was given
    esp = bootkit.make_systemd_boot_esp(tmp_path / "esp", root_partuuid=ROOT_GPUID)
    img = tmp_path / "efi.img"
    # no VM in the build: a qemu-system on the PATH would record that it was called
    stub_dir = tmp_path / "stubs"
    stub_dir.mkdir()
    called = tmp_path / "vm-called"
    for name in ("qemu-system-x86_64", "qemu-kvm", "guestfish"):
        stub = stub_dir / name
        stub.write_text(f"#!/bin/sh\ntouch {called}\nexit 1\n")
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub_dir}:{os.environ['PATH']}"}
    pydiskimg_build(
        "--root",
        root,
        "--esp",
        esp,
        "-o",
        img,
        "--partition-table",
        "efi",
        "--disk-size",
        "auto",
        "--root-gpuid",
        ROOT_GPUID,
        "--source-date-epoch",
        "1700000000",
        env=env,
    )
    assert not called.exists()
    # the reference reading of the table: partition 2 carries the GUID the entry names
    assert bootkit.gpt_partuuid(img, 2) == ROOT_GPUID.lower()
    result = bootkit.boot(img, tmp_path / "vm", uefi=True)
    assert result.booted, result.tail()
    assert "/dev/vda2 / ext4" in result.marker_line, result.marker_line
