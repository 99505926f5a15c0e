"""Helpers for the tests of ``--bootloader`` (boot loaders installed with no VM).

* :func:`poisoned_env`: an environment in which any start of a VM fails loudly: stub
  ``qemu-system-*``, ``qemu-kvm``, ``kvm``, ``guestfish``, ``virt-*`` and ``supermin`` first on
  the PATH (each writes a flag file and exits 1) and ``LIBGUESTFS_HV`` pointing to a failing
  stub, so that a build which launched anything would fail and leave the flag.
* :func:`grub_bios_setup`: GRUB's own ``grub-bios-setup`` (from the Debian test tree, run with
  that tree's dynamic loader and libraries) on an *image file*, the oracle for boot.img and
  core.img's placement.  grub-bios-setup insists on finding the device of its ``--directory``
  in ``/proc/self/mountinfo``; as mkosi does, a private mount namespace shows it a mountinfo
  that puts that folder on the image (it then never touches the host's disks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VM_TOOLS = ("qemu-system-x86_64", "qemu-system-i386", "qemu-kvm", "kvm", "guestfish",
            "virt-customize", "virt-rescue", "supermin", "libguestfs-test-tool")


def poisoned_env(tmp: Path) -> tuple[dict[str, str], Path]:
    """(environment, flag file): the flag exists iff a VM tool was started."""
    stubs = tmp / "vm-stubs"
    stubs.mkdir(exist_ok=True)
    flag = tmp / "vm-was-started"
    for name in VM_TOOLS:
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {flag}\necho "no VM allowed: {name}" >&2\nexit 1\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}",
           "LIBGUESTFS_HV": str(stubs / "qemu-system-x86_64"),
           "LIBGUESTFS_BACKEND": "direct"}
    return env, flag


def build(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pydiskimg", "build", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd)


def kernel_tree(dest: Path, versions: tuple[str, ...] = ("6.1.0-1-amd64",), *, initrd: bool = True) -> Path:
    """A tiny root whose /boot holds fake kernels (enough to build, not to boot)."""
    (dest / "boot").mkdir(parents=True)
    (dest / "etc").mkdir()
    (dest / "etc" / "os-release").write_text('PRETTY_NAME="Test OS 1"\nID=testos\n')
    for v in versions:
        (dest / "boot" / f"vmlinuz-{v}").write_bytes(b"kernel " + v.encode())
        if initrd:
            (dest / "boot" / f"initrd.img-{v}").write_bytes(b"initrd " + v.encode())
    return dest


def grub_bios_setup(tree: Path, directory: Path, image: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The tree's grub-bios-setup on ``image`` (boot.img and core.img read from ``directory``)."""
    mountinfo = directory.parent / "fake-mountinfo"
    mountinfo.write_text(f"1 0 1:1 / / - fat {image}\n")
    device_map = directory.parent / "device.map"
    device_map.write_text(f"(hd0) {image}\n")
    loader = tree / "lib64" / "ld-linux-x86-64.so.2"
    libs = f"{tree}/lib/x86_64-linux-gnu:{tree}/usr/lib/x86_64-linux-gnu"
    tool = f"{loader} --library-path {libs} {tree}/usr/sbin/grub-bios-setup"
    script = (f'mount --bind {mountinfo} /proc/$$/mountinfo && exec {tool} --directory {directory} '
              f'--device-map {device_map} {" ".join(extra)} {image}')
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True)
