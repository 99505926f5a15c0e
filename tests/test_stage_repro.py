"""Byte-reproducible images through the bootloader stage (deterministic mode, the default).

Each case builds the same inputs twice through ``--install-bootloader`` (one libguestfs launch
per build; the Debian images' first build is the session's ``distro_stage_image``, which the
boot tests also boot, so this file adds four launches) and compares the images byte for byte; on a mismatch
the failure shows ``pydiskimg diff`` of the two.  Each image is then judged by the reference
tools: ``e2fsck -fn`` silent, ``tune2fs -l`` and ``resize2fs -P`` accept the root filesystem,
``fsck.fat -n`` silent on the ESP.

* the Debian 12 tree of :mod:`distrokit` with GRUB chrooted (:data:`distrokit.STAGE_COMMANDS`),
  ``legacy`` (i386-pc) and ``efi`` (x86_64-efi at the removable path; the stage mounts the ESP
  at ``/boot``, so GRUB's ``--efi-directory`` is ``/boot``, not Debian's ``/boot/efi``; the
  kernels come in the ESP tree);
* the small busybox kit of :mod:`bootkit` with the appliance's own extlinux
  (``--bootloader-in-appliance``, ``legacy+gpt``), whose command also replaces files (the
  kernel and initrd are rewritten), so freed inodes and blocks are exercised.

Booting these images is covered by test_boot_bios.py and the distribution boot tests.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bootkit
import pytest
from fatcheck import MT_ENV, assert_fsck_silent

from pydiskimg import guestfs
from pydiskimg.io import data_ranges

EPOCH = "1700000000"


def run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=env)


@pytest.fixture(autouse=True)
def _needs_libguestfs() -> None:
    if not guestfs.libguestfs_available():
        pytest.skip("python3-guestfs is not installed (scripts/install-deps --test installs it)")


def build(out: Path, *args: object) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pydiskimg", "build", "-o", str(out), "--source-date-epoch", EPOCH,
         *map(str, args)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def assert_same_bytes(a: Path, b: Path) -> None:
    if a.stat().st_size == b.stat().st_size and sha256(a) == sha256(b):
        return
    d = run(sys.executable, "-m", "pydiskimg", "diff", str(a), str(b))
    lines = d.stdout.splitlines()
    shown = "\n".join(lines[:80])
    raise AssertionError(f"the two builds differ ({len(lines)} lines of pydiskimg diff):\n{shown}\n{d.stderr}")


def partitions(img: Path) -> dict[int, tuple[int, int]]:
    """Partition number -> (byte offset, byte size), as sfdisk reads the table."""
    out = {}
    for p in bootkit.sfdisk_json(img)["partitions"]:
        n = int(p["node"][len(str(img)):])
        out[n] = (p["start"] * 512, p["size"] * 512)
    return out


def assert_root_accepted(img: Path, number: int) -> None:
    off, _ = partitions(img)[number]
    at = f"{img}?offset={off}"
    fsck = run("e2fsck", "-fn", at)
    assert fsck.returncode == 0 and "Pass 1" in fsck.stdout, fsck.stdout + fsck.stderr
    noise = [ln for ln in fsck.stdout.splitlines()
             if not (ln.startswith("Pass ") or " files (" in ln)]
    assert not noise, fsck.stdout
    tune = run("tune2fs", "-l", at)
    assert tune.returncode == 0 and "Filesystem state:         clean" in tune.stdout, tune.stderr
    resize = run("resize2fs", "-P", at)
    assert resize.returncode == 0 and "Estimated minimum size" in resize.stdout, resize.stdout + resize.stderr


def assert_esp_accepted(img: Path, number: int, tmp: Path) -> None:
    off, size = partitions(img)[number]
    esp = tmp / "esp.img"
    with open(img, "rb") as src, open(esp, "wb") as dst:
        dst.truncate(size)
        for a, b in data_ranges(src.fileno(), off, off + size):
            src.seek(a)
            dst.seek(a - off)
            dst.write(src.read(b - a))
    assert_fsck_silent(esp)


def build_twice(tmp_path: Path, *args: object) -> tuple[Path, Path]:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    build(a, *args)
    build(b, *args)
    assert_same_bytes(a, b)
    return a, b


def build_again(table: str, first: Path, tmp_path: Path) -> Path:
    """The Debian tree built a second time, as the session's ``distro_stage_image`` was built."""
    import distrokit

    again = tmp_path / f"again-{table}.img"
    r = distrokit.build_through_stage(table, again, "--quiet")
    assert r.returncode == 0, r.stderr
    assert_same_bytes(first, again)
    return again


@pytest.mark.slow
def test_debian_legacy_grub_is_reproducible(
    distro_stage_image: Callable[[str], tuple[Path, Any]], tmp_path: Path
) -> None:
    a, first = distro_stage_image("legacy")
    assert first.returncode == 0, first.stderr
    build_again("legacy", a, tmp_path)
    assert_root_accepted(a, 1)
    off, _ = partitions(a)[1]
    cfg = run("debugfs", "-R", "cat /boot/grub/grub.cfg", f"{a}?offset={off}").stdout
    assert "linux\t/boot/vmlinuz-" in cfg, cfg[-2000:]
    # the BIOS drive of the image is hd0, whatever name the appliance's kernel gave it
    assert "hd0,msdos1" in cfg and "hd1," not in cfg, cfg[-2000:]


@pytest.mark.slow
def test_debian_efi_grub_is_reproducible(
    distro_stage_image: Callable[[str], tuple[Path, Any]], tmp_path: Path
) -> None:
    a, first = distro_stage_image("efi")
    assert first.returncode == 0, first.stderr
    build_again("efi", a, tmp_path)
    assert_root_accepted(a, 2)
    assert_esp_accepted(a, 1, tmp_path)
    off, _ = partitions(a)[1]
    listing = run("mdir", "-/", "-b", "-i", f"{a}@@{off}", "::/EFI/BOOT", env=MT_ENV)
    assert listing.returncode == 0, listing.stderr
    assert "BOOTX64.EFI" in listing.stdout.upper(), listing.stdout
    # the kernel the ESP tree brought keeps its own time; what GRUB wrote has SOURCE_DATE_EPOCH
    files = run("mdir", "-/", "-a", "-i", f"{a}@@{off}", "::/", env=MT_ENV).stdout
    assert "2023-11-14  22:13" in files, files


@pytest.mark.slow
def test_busybox_extlinux_in_appliance_is_reproducible(tmp_path: Path) -> None:
    missing = bootkit.host_tools_missing()
    if missing:
        pytest.skip(f"missing host tools: {missing}")
    root = bootkit.make_root_tree(tmp_path / "root", kernel_in_boot=True)
    a, _ = build_twice(tmp_path, "--root", root, "--partition-table", "legacy+gpt",
                       "--install-bootloader", bootkit.extlinux_appliance_command(gpt_boot_part=2),
                       "--bootloader-in-appliance")
    assert_root_accepted(a, 2)
    assert "legacy BIOS bootable" in run("sgdisk", "-A", "2:show", str(a)).stdout
