"""Helpers for the boot tests: a tiny init, root and ESP trees, a serial-marker QEMU runner.

* **The init** is a shell script run by busybox-static's shell: it prints a marker line on the
  console (``console=ttyS0``, so the serial port) and powers the machine off.  The marker is
  computed by the shell (``$((40 + 2))``), so the exact string appears nowhere in the image:
  seeing it proves the kernel mounted the root filesystem and ran its ``/sbin/init``.
* **The kernel and initrd** are the host's (Debian's ``linux-image-amd64``): ``/boot/vmlinuz-*``
  and ``/boot/initrd.img-*``.  Debian's initramfs matches ``root=PARTUUID=`` case-sensitively
  against lower-case GUIDs, so command lines are always written in lower case.
* **QEMU** runs under TCG (``-accel tcg``: no KVM needed), with OVMF (Debian's ``ovmf``:
  ``OVMF_CODE_4M.fd`` read-only and a private copy of ``OVMF_VARS_4M.fd``) for UEFI and QEMU's
  default SeaBIOS otherwise; the serial console goes to a file that is polled for the marker.
* ``ref_*`` functions assemble images with the reference tools (parted, sgdisk, mkfs.ext4 -d,
  mkfs.vfat, mcopy), to tell a bootkit problem from a pydiskimg problem.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from test_layout_seedref import parted_script

#: What the init prints; the shell computes the number, so the string is not in the image.
MARKER = "PYDISKIMG-BOOT-OK-42"
_INIT = """#!/bin/sh
# pydiskimg boot test: say we got here, then power off.
/bin/busybox mount -t proc proc /proc 2>/dev/null
echo "PYDISKIMG-BOOT-OK-$((40 + 2)) root: $(/bin/busybox grep ' / ' /proc/mounts)"
/bin/busybox poweroff -f
"""

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
SYSTEMD_BOOT = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
SYSLINUX_MBR = "/usr/lib/syslinux/mbr/mbr.bin"
SYSLINUX_GPTMBR = "/usr/lib/syslinux/mbr/gptmbr.bin"
QEMU = "qemu-system-x86_64"
#: Kernel parameters every test entry uses: serial console, reboot (so QEMU exits) on panic, no
#: IO-APIC timer check (under TCG on a loaded host it can fail and panic the kernel).
BASE_CMDLINE = "console=ttyS0 panic=-1 no_timer_check ro"


# ---------------------------------------------------------------------------------------------
# host pieces
# ---------------------------------------------------------------------------------------------


def host_kernel() -> tuple[str, str]:
    """(vmlinuz, initrd) of the newest kernel in /boot that has both."""
    for vmlinuz in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        initrd = "/boot/initrd.img-" + vmlinuz.split("vmlinuz-", 1)[1]
        if os.path.isfile(initrd) and os.access(vmlinuz, os.R_OK):
            return vmlinuz, initrd
    raise FileNotFoundError("no /boot/vmlinuz-* with a matching initrd: install linux-image-amd64")


def _is_static_elf(path: str) -> bool:
    """True when the ELF file at ``path`` has no PT_INTERP (needs no dynamic loader)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        (phoff,) = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def busybox_static() -> str:
    """A statically linked busybox (Debian's busybox-static installs it as /bin/busybox)."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(cand) and _is_static_elf(cand):
            return cand
    raise FileNotFoundError("no statically linked busybox: install Debian's busybox-static")


def host_tools_missing() -> list[str]:
    """What the boot tests need from the host that is not installed."""
    missing = [t for t in (QEMU, "qemu-img") if shutil.which(t) is None]
    for f in (OVMF_CODE, OVMF_VARS, SYSTEMD_BOOT, SYSLINUX_MBR, SYSLINUX_GPTMBR):
        if not os.path.isfile(f):
            missing.append(f)
    try:
        host_kernel()
        busybox_static()
    except FileNotFoundError as e:
        missing.append(str(e))
    return missing


# ---------------------------------------------------------------------------------------------
# trees
# ---------------------------------------------------------------------------------------------


def make_root_tree(dest: Path, *, kernel_in_boot: bool = False) -> Path:
    """A minimal root: busybox-static as /bin/sh, the init as /sbin/init, empty /dev /proc
    /sys /run /tmp /etc /boot; with ``kernel_in_boot``, the host kernel and initrd as
    /boot/vmlinuz and /boot/initrd.img."""
    dest.mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "dev", "proc", "sys", "run", "tmp", "etc", "boot"):
        (dest / d).mkdir(exist_ok=True)
    busybox = busybox_static()
    shutil.copy2(busybox, dest / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for name in sorted(set(applets.stdout.split())):  # what `busybox --install -s` links
        if "/" not in name and not (dest / "bin" / name).exists():
            (dest / "bin" / name).symlink_to("busybox")
    init = dest / "sbin" / "init"
    init.write_text(_INIT)
    init.chmod(0o755)
    (dest / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\n")
    if kernel_in_boot:
        vmlinuz, initrd = host_kernel()
        shutil.copyfile(vmlinuz, dest / "boot" / "vmlinuz")
        shutil.copyfile(initrd, dest / "boot" / "initrd.img")
    return dest


def make_systemd_boot_esp(dest: Path, *, root_partuuid: str) -> Path:
    """An ESP tree: systemd-boot as the default loader (/EFI/BOOT/BOOTX64.EFI), a loader
    configuration booting its only entry at once, the host kernel and initrd, and
    ``root=PARTUUID=<root_partuuid in lower case>``."""
    vmlinuz, initrd = host_kernel()
    (dest / "EFI" / "BOOT").mkdir(parents=True, exist_ok=True)
    (dest / "loader" / "entries").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SYSTEMD_BOOT, dest / "EFI" / "BOOT" / "BOOTX64.EFI")
    shutil.copyfile(vmlinuz, dest / "vmlinuz")
    shutil.copyfile(initrd, dest / "initrd.img")
    (dest / "loader" / "loader.conf").write_text("default pydiskimg.conf\ntimeout 0\neditor no\n")
    (dest / "loader" / "entries" / "pydiskimg.conf").write_text(
        "title pydiskimg boot test\n"
        "linux /vmlinuz\n"
        "initrd /initrd.img\n"
        f"options root=PARTUUID={root_partuuid.lower()} {BASE_CMDLINE}\n"
    )
    return dest


def extlinux_conf(root: str) -> str:
    """extlinux.conf booting /boot/vmlinuz with ``root=`` (e.g. ``PARTUUID=1234abcd-01``)."""
    return (
        "DEFAULT linux\nPROMPT 0\nTIMEOUT 0\n"
        "LABEL linux\n"
        "  LINUX /boot/vmlinuz\n"
        "  INITRD /boot/initrd.img\n"
        f"  APPEND root={root} {BASE_CMDLINE}\n"
    )


def _extlinux_steps(sysroot: str, root_expr: str) -> str:
    """Shell steps shared by both ways in: rewrite the kernel and initrd without holes (syslinux
    cannot read sparse files: a writer that turns zero blocks into holes breaks it), write
    extlinux.conf with ``root=<root_expr>`` (expanded by the shell), install extlinux."""
    conf = extlinux_conf("@ROOT@").replace("@ROOT@", root_expr)
    return (
        f"mkdir -p {sysroot}/boot/syslinux\n"
        "for f in vmlinuz initrd.img; do\n"
        f"  cat {sysroot}/boot/$f > {sysroot}/boot/$f.new && mv {sysroot}/boot/$f.new {sysroot}/boot/$f\n"
        "done\n"
        f"cat > {sysroot}/boot/syslinux/extlinux.conf <<EOF\n{conf}EOF\n"
        f"extlinux --install {sysroot}/boot/syslinux\n"
    )


def extlinux_appliance_command(*, gpt_boot_part: int | None = None) -> str:
    """The bootloader command for ``run_in_guest(in_appliance=True)``: the appliance's own
    extlinux installed into the image's /boot/syslinux, ``root=PARTUUID=`` as blkid reads the
    root partition (lower case), syslinux's MBR code in the first 440 bytes, and the boot
    partition marked: MBR active flag (``gpt_boot_part`` None, mbr.bin) or the GPT partition's
    LegacyBIOSBootable attribute (gptmbr.bin)."""
    mbr = "gptmbr.bin" if gpt_boot_part is not None else "mbr.bin"
    mark = (
        f"sfdisk --part-attrs $DISK {gpt_boot_part} LegacyBIOSBootable"
        if gpt_boot_part is not None
        else "sfdisk --activate $DISK 1"
    )
    return (
        "set -e\n"
        'partuuid=$(blkid -p -s PART_ENTRY_UUID -o value "$ROOT_DEV")\n'
        + _extlinux_steps("$SYSROOT", "PARTUUID=$partuuid")
        + "for d in /usr/lib/syslinux/mbr /usr/lib/SYSLINUX /usr/share/syslinux; do\n"
        f"  if [ -f $d/{mbr} ]; then dd if=$d/{mbr} of=$DISK bs=440 count=1 conv=notrunc; break; fi\n"
        "done\n"
        f"{mark}\n"
        "sync\n"
    )


def add_extlinux(root: Path) -> Path:
    """Ship the host's extlinux (with its libraries) and syslinux's MBR code in the root tree,
    as a distribution's bootloader package would be."""
    libs = ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
    for f in ["/usr/bin/extlinux", SYSLINUX_MBR, *libs]:
        dst = root / f.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(f), dst)
    return root


def extlinux_chroot_command() -> str:
    """The bootloader command for ``run_in_guest`` chrooted in the image (legacy MBR): the
    image's own extlinux (:func:`add_extlinux`) and busybox.  ``root=PARTUUID=`` is the MBR
    signature read by ``od`` in lower-case hex, then ``-01``; the active flag is byte 446."""
    return (
        "set -e\n"
        "sig=$(od -An -tx4 -j440 -N4 \"$DISK\" | tr -d ' ')\n"
        + _extlinux_steps("", "PARTUUID=$sig-01")
        + "dd if=/usr/lib/syslinux/mbr/mbr.bin of=\"$DISK\" bs=440 count=1 conv=notrunc\n"
        "printf '\\200' | dd of=\"$DISK\" bs=1 seek=446 count=1 conv=notrunc\n"
        "sync\n"
    )


# ---------------------------------------------------------------------------------------------
# QEMU
# ---------------------------------------------------------------------------------------------


@dataclass
class BootResult:
    booted: bool  # the marker appeared on the serial console
    marker_line: str  # the console line holding the marker ("" when not booted)
    seconds: float
    exit_code: int | None  # QEMU's, None when it was killed
    console: str  # the whole serial log

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.console.splitlines()[-n:])


def qemu_command(
    image: str,
    *,
    uefi: bool,
    serial_log: str,
    vars_copy: str | None,
    mem_size: int = 1024,
    fmt: str = "raw",
) -> list[str]:
    """The QEMU command line the boot tests use (TCG, no display, serial to a file)."""
    cmd = [
        QEMU,
        "-accel",
        "tcg",
        "-m",
        str(mem_size),
        "-smp",
        "1",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        f"file:{serial_log}",
        "-drive",
        f"file={image},format={fmt},if=virtio,snapshot=on",
    ]
    if uefi:
        assert vars_copy is not None
        cmd += [
            "-machine",
            "q35",
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={vars_copy}",
        ]
    return cmd


def boot(
    image: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    *,
    uefi: bool,
    timeout: float = 900.0,
    mem_size: int = 1024,
    fmt: str = "raw",
    marker: str = MARKER,
) -> BootResult:
    """Boot ``image`` under QEMU until ``marker`` appears on the serial console, QEMU exits, or
    ``timeout`` seconds pass; QEMU is always stopped before returning.  The image is opened
    with ``snapshot=on``: booting never changes it."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "serial.log"
    log_path.write_bytes(b"")
    vars_copy = None
    if uefi:
        vars_copy = str(workdir / "OVMF_VARS.fd")
        shutil.copyfile(OVMF_VARS, vars_copy)
    cmd = qemu_command(
        os.fspath(image),
        uefi=uefi,
        serial_log=str(log_path),
        vars_copy=vars_copy,
        mem_size=mem_size,
        fmt=fmt,
    )
    (workdir / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    marker_line = ""
    exit_code: int | None = None
    try:
        while time.monotonic() - start < timeout:
            text = log_path.read_bytes().decode("utf-8", "replace")
            if marker in text:
                marker_line = next(ln for ln in text.splitlines() if marker in ln).strip()
                # the init powers off: let QEMU exit by itself for a moment
                with contextlib.suppress(subprocess.TimeoutExpired):
                    exit_code = proc.wait(timeout=20)
                break
            if proc.poll() is not None:
                exit_code = proc.returncode
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        else:
            exit_code = proc.returncode
        out = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    console = log_path.read_bytes().decode("utf-8", "replace")
    if out.strip():
        console += "\n[qemu stderr]\n" + out
    return BootResult(bool(marker_line), marker_line, time.monotonic() - start, exit_code, console)


# ---------------------------------------------------------------------------------------------
# images made by the reference tools
# ---------------------------------------------------------------------------------------------


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def sfdisk_json(image: str | os.PathLike[str]) -> dict:
    """``sfdisk --json`` of an image: the reference reading of its partition table."""
    return json.loads(_run("sfdisk", "--json", os.fspath(image)))["partitiontable"]


def mbr_partuuid(image: str | os.PathLike[str], number: int) -> str:
    """Linux's PARTUUID of MBR partition ``number``: the disk signature in lower-case hex, a
    dash, the number in two hex digits (as sfdisk reads the signature)."""
    sig = int(sfdisk_json(image)["id"], 16)
    return f"{sig:08x}-{number:02x}"


def gpt_partuuid(image: str | os.PathLike[str], number: int) -> str:
    """The unique GUID of GPT partition ``number`` in lower case, as sfdisk reads it."""
    for p in sfdisk_json(image)["partitions"]:
        if p["node"] == f"{os.fspath(image)}{number}":
            return p["uuid"].lower()
    raise KeyError(number)


def ref_image(
    path: Path,
    *,
    table: str,
    root_tree: Path,
    esp_tree: Path | None = None,
    size_mib: int = 320,
    root_partuuid: str | None = None,
) -> Path:
    """Assemble an image with the reference tools: parted (the seed's scripts), mkfs.ext4 -d for
    the root, mkfs.vfat -F 32 + mcopy for the ESP, sgdisk for the root's GUID."""
    path = Path(path)
    work = path.parent
    with open(path, "wb") as f:
        f.truncate(size_mib << 20)
    root_numbers = {"legacy": 1, "legacy+gpt": 2, "efi": 2}
    if table not in root_numbers:
        raise ValueError(table)
    _run("parted", "-s", str(path), "--", *parted_script(table, "256MiB"))
    root_no = root_numbers[table]
    if root_partuuid is not None:
        _run("sgdisk", f"--partition-guid={root_no}:{root_partuuid}", str(path))
    parts = {p["node"][len(str(path)) :]: p for p in sfdisk_json(path)["partitions"]}
    root = parts[str(root_no)]
    root_img = work / (path.name + ".root")
    _run(
        "mkfs.ext4",
        "-q",
        "-F",
        "-d",
        str(root_tree),
        "-E",
        "root_owner=0:0",
        str(root_img),
        f"{root['size'] * 512 // 1024}k",
    )
    _run(
        "dd",
        f"if={root_img}",
        f"of={path}",
        "bs=1M",
        f"seek={root['start'] * 512}",
        "oflag=seek_bytes",
        "conv=notrunc,sparse",
        "status=none",
    )
    root_img.unlink()
    if table == "efi":
        esp = parts["1"]
        esp_img = work / (path.name + ".esp")
        _run(
            "mkfs.vfat", "-F", "32", "-n", "ESP", "-C", str(esp_img), str(esp["size"] * 512 // 1024)
        )
        if esp_tree is not None:
            for child in sorted(esp_tree.iterdir()):
                _run("mcopy", "-s", "-i", str(esp_img), str(child), "::/")
        _run(
            "dd",
            f"if={esp_img}",
            f"of={path}",
            "bs=1M",
            f"seek={esp['start'] * 512}",
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        )
        esp_img.unlink()
    return path
