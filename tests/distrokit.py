"""A real distribution for the boot tests: a Debian 12 tree made by mmdebstrap, built once per
machine and cached outside the repository.

The tree holds systemd, the distribution kernel and its initramfs, GRUB for BIOS (``grub-pc``)
and UEFI (``grub-efi-amd64-bin``), and ``systemd-boot-efi``.  A unit,
``pydiskimg-marker.service``, runs once ``multi-user.target`` is reached: it prints
:data:`MARKER` on the serial console (computed by the shell, so the string is in no file of the
image) and powers the machine off.  ``/etc/default/grub`` puts the console on ttyS0 and the
timeout at 0 and ``no_timer_check`` (under TCG on a loaded host the IO-APIC timer check can
fail and panic the kernel), so ``update-grub`` in the tree writes a configuration the tests can
boot; the serial getty is masked (its vhangup of ttyS0 raced the marker unit).

The cache lives in ``$PYDISKIMG_DISTRO_CACHE`` (default ``/var/cache/pydiskimg-test``), one
folder per recipe (its name carries a hash of the recipe below); a lock file lets parallel test
runs share one build.  mmdebstrap needs root and Debian's mirror (a package registry).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

#: What the marker unit prints; the shell computes the number.
MARKER = "PYDISKIMG-SYSTEMD-OK-42"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd-sysv",
    "udev",
    "linux-image-amd64",
    "initramfs-tools",
    "grub-pc",
    "grub-efi-amd64-bin",
    "systemd-boot-efi",
)

_UNIT = """\
[Unit]
Description=pydiskimg boot test marker
After=multi-user.target

[Service]
Type=oneshot
StandardOutput=tty
TTYPath=/dev/ttyS0
ExecStart=/bin/sh -c 'echo "PYDISKIMG-SYSTEMD-OK-$((40 + 2)) $(systemctl is-system-running)"'
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
"""

_DEFAULT_GRUB = """\
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0 panic=-1 no_timer_check"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""

#: Shell run by mmdebstrap in the finished tree ("$1" is the tree).
_CUSTOMIZE = f"""\
set -e
cat > "$1/etc/systemd/system/pydiskimg-marker.service" <<'EOF'
{_UNIT}EOF
mkdir -p "$1/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/pydiskimg-marker.service \
    "$1/etc/systemd/system/multi-user.target.wants/pydiskimg-marker.service"
cat > "$1/etc/default/grub" <<'EOF'
{_DEFAULT_GRUB}EOF
# no serial getty: its vhangup of ttyS0 can swallow the marker unit's line
ln -sf /dev/null "$1/etc/systemd/system/serial-getty@ttyS0.service"
echo debian12 > "$1/etc/hostname"
: > "$1/etc/machine-id"
"""


def _recipe_key() -> str:
    text = "\n".join([SUITE, MIRROR, *PACKAGES, _CUSTOMIZE])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    return Path(os.environ.get("PYDISKIMG_DISTRO_CACHE", "/var/cache/pydiskimg-test"))


def debian_tree() -> Path:
    """The cached Debian 12 tree (built on first use, about a minute): a read-only input for
    pydiskimg builds.  Never modify it; copy it first."""
    base = cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    tree = base / f"debian12-{_recipe_key()}"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = base / (tree.name + ".complete")
        if done.exists() and tree.is_dir():
            return tree
        work = base / (tree.name + ".partial")
        if work.exists():
            shutil.rmtree(work)
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                "--mode=root",
                "--include=" + ",".join(PACKAGES),
                "--customize-hook=" + _CUSTOMIZE,
                SUITE,
                str(work),
                MIRROR,
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        if tree.exists():
            shutil.rmtree(tree)
        work.rename(tree)
        done.write_text("")
        return tree


def kernel_version(tree: Path) -> str:
    """The version of the (only) kernel in the tree's /boot."""
    versions = sorted(p.name[len("vmlinuz-") :] for p in (tree / "boot").glob("vmlinuz-*"))
    if not versions:
        raise FileNotFoundError(f"{tree}/boot has no vmlinuz-*")
    return versions[-1]


# ---------------------------------------------------------------------------------------------
# images built from the tree through the bootloader stage (shared by the boot and repro tests)
# ---------------------------------------------------------------------------------------------

#: SOURCE_DATE_EPOCH of every stage build.
EPOCH = 1_700_000_000

#: The bootloader command each table gets, run chrooted in the image as the seed's
#: installBootLoader: the tree's own GRUB, then update-grub (grub-mkconfig reads
#: /etc/default/grub: serial console, timeout 0).  For ``efi`` the ESP is mounted at /boot, so
#: the kernel and initrd are put in the ESP tree too (see :func:`esp_tree`) and GRUB goes to
#: the removable path EFI/BOOT/BOOTX64.EFI with no NVRAM entry.
STAGE_COMMANDS = {
    "legacy": 'grub-install --target=i386-pc "$DISK" && update-grub',
    "efi": (
        "grub-install --target=x86_64-efi --efi-directory=/boot --boot-directory=/boot "
        "--removable --no-nvram && update-grub"
    ),
}

#: Room for what the stage writes into the root (GRUB's modules and configuration).
ADDITIONAL_SPACE = "128M"


def esp_tree(tree: Path, dest: Path) -> Path:
    """An ESP tree holding the tree's /boot files (kernel, initrd, config, System.map), times
    kept: with the ESP mounted at /boot in the stage, update-grub finds the kernel there."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted((tree / "boot").iterdir()):
        if src.is_file() and not src.is_symlink():
            shutil.copy2(src, dest / src.name)
    os.utime(dest, ns=(EPOCH * 10**9, EPOCH * 10**9))
    return dest


def build_command(table: str, out: Path, *extra: str) -> list[str]:
    """The ``pydiskimg build`` argv that puts the Debian tree in a ``table`` image at ``out``
    through the bootloader stage (GRUB chrooted, :data:`STAGE_COMMANDS`).  For ``efi`` the ESP
    tree is made beside ``out`` (``<out>.esp/``).  ``extra`` is appended (e.g. ``--quiet``)."""
    import sys

    if table not in STAGE_COMMANDS:
        raise ValueError(f"no stage command for table {table!r}")
    tree = debian_tree()
    cmd = [
        sys.executable,
        "-m",
        "pydiskimg",
        "build",
        "--root",
        str(tree),
        "-o",
        str(out),
        "--partition-table",
        table,
        "--source-date-epoch",
        str(EPOCH),
        "--additional-space",
        ADDITIONAL_SPACE,
        "--install-bootloader",
        STAGE_COMMANDS[table],
    ]
    if table == "efi":
        esp = esp_tree(tree, out.parent / (out.name + ".esp"))
        cmd += ["--esp", str(esp)]
    return [*cmd, *extra]


def build_through_stage(table: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Build the Debian tree into ``out`` (raw) through the bootloader stage with GRUB for
    ``table`` (``legacy``: BIOS, ``efi``: UEFI); returns the finished process (stdout and
    stderr captured as text): callers assert on ``returncode`` and show ``stderr``."""
    return subprocess.run(
        build_command(table, out, *extra),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
