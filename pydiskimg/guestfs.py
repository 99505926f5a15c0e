"""The bootloader stage: run a command in libguestfs's appliance on the finished raw image.

The seed runs its ``installBootLoader`` step (``switch-to-configuration boot`` through
``nixos-enter``) in a KVM virtual machine.  pydiskimg does the same in libguestfs's appliance,
which needs no root and no KVM:

1. launch the appliance on the raw image (``mem_size`` MiB of memory);
2. mount the root partition at ``/`` and, for ``efi`` and ``hybrid``, the ESP at ``/boot``
   (created when missing, as the seed's ``mkdir -p /mnt/boot``); for ``efixbootldr``, the ESP
   at ``/efi`` and XBOOTLDR at ``/boot``, as current nixpkgs does (``$XBOOTLDR_DEV`` names it);
3. when ``grub_device`` is given, make it a link to the image's disk (as the appliance's kernel
   names it: ``/dev/sda`` or ``/dev/sdb``, since the appliance's own disk may come first), as the
   seed links ``config.boot.loader.grub.device`` to its ``/dev/vda``;
4. run the command, either

   * **chrooted into the image** (``in_appliance=False``, the default, the seed's
     ``nixos-enter``): libguestfs's ``command`` chroots into the mounted image and bind-mounts
     ``/dev``, ``/proc`` and ``/sys`` there, then runs the image's own ``/bin/sh -c CMD``.  The
     image must hold a ``/bin/sh``; a distribution's bootloader installer (GRUB,
     ``bootctl``, NixOS's ``switch-to-configuration``) runs this way; or
   * **in the appliance** (``in_appliance=True``): ``/bin/sh -c CMD`` of the appliance itself, with
     the image mounted under ``$SYSROOT`` (``/sysroot``); ``$DISK`` is the whole disk,
     ``$ROOT_DEV`` and ``$ESP_DEV`` the partitions.  Tools the appliance ships (``extlinux``,
     ``sfdisk``, ``dd``, syslinux's MBR code under ``/usr/lib/SYSLINUX``) install a bootloader the
     image does not contain, e.g.
     ``extlinux --install $SYSROOT/boot/syslinux && dd if=/usr/lib/SYSLINUX/mbr.bin of=$DISK
     bs=440 count=1 conv=notrunc``;

   In both modes ``$DISK`` (the whole disk), ``$ROOT_DEV`` and ``$ESP_DEV`` name the image's
   devices as the appliance's kernel does.  Use them: the image is not always ``/dev/sda``
   there (the appliance's own disk is sometimes enumerated first), and a bootloader written
   to a hard-coded name may land on the appliance's disk instead;

5. remove ``/etc/machine-id`` from the image (the seed's ``rm -f``), unmount, shut down.

Then, in deterministic mode, :func:`repin_ext4` puts back what the seed's ``tune2fs`` lines pin
(filesystem UUID, mount/write/check times, mount counts, check interval) and what the kernel
changed on mount (last mount point, lifetime writes), so resize2fs and tune2fs accept the
filesystem and ``e2fsck -fn`` stays silent.  Before that, deterministic mode makes the whole
stage reproducible: the appliance's clock starts at ``SOURCE_DATE_EPOCH``, the partitions are
mounted ``noatime``, a chrooted command finds a GRUB ``device.map`` naming the image ``(hd0)``,
and :mod:`pydiskimg.ext4.normalize` and :mod:`pydiskimg.fat.normalize` bring back what the
kernel changed (times clamped, inode generations, freed inodes and blocks, the journal,
FSInfo; checksums recomputed): see :func:`bootloader_stage`.

**Output and interrupts.**  libguestfs's ``command`` returns a command's output only when it
ends, so the wrappers (:func:`chroot_argv`, :func:`appliance_script`) also copy each line, marked,
to the appliance's console, which libguestfs hands to the event callback as it comes: the lines
go to ``output`` while the command runs.  Every libguestfs call runs in a worker thread
(:func:`pydiskimg.procs.interruptible`), so the main thread takes SIGINT and SIGTERM at once
(a blocking call would delay them, or run the handler inside an event callback, where the
exception is only printed); the appliance's processes are then killed and the interrupt goes on.

**KVM.**  The appliance first tries KVM (libguestfs's default ``accel=kvm:tcg``).  Where
``/dev/kvm`` is missing or unusable, or QEMU dies starting under KVM (as on machines whose
``/dev/kvm`` is a paravirtual stub: ``failed to set MSR``), it falls back by itself to TCG
(``LIBGUESTFS_BACKEND=direct``, ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg``) and says so through
``progress``; the verdict is remembered for the rest of the process.  An environment that
already sets ``LIBGUESTFS_BACKEND_SETTINGS`` is obeyed as it is.

**Bindings.**  The Python bindings come from Debian's ``python3-guestfs``, installed for
``/usr/bin/python3``: ``import guestfs`` is tried first, then the same import with
``/usr/lib/python3/dist-packages`` appended to ``sys.path`` (works for any CPython 3.11, e.g. a
pyenv one, since the extension module is built for that ABI).  Without usable bindings the
stage is a :class:`~pydiskimg.errors.ToolError` naming the package to install.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from . import procs
from .errors import Ext4Error, ToolError, UsageError

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]

#: Where Debian's python3-guestfs installs ``guestfs.py`` and ``libguestfsmod*.so``.
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
#: The appliance's name for the disk (the first and only drive added).
#: the image as libguestfs's API names it (the daemon translates it; commands must not use it)
API_DISK = "/dev/sda"
#: Mount point of the image inside the appliance.
SYSROOT = "/sysroot"

_HEARTBEAT_SECONDS = 10.0
_STATUS_MARK = "pydiskimg-exit-status:"
#: None: not decided yet; True: KVM worked in this process; False: use TCG.
_kvm_verdict: bool | None = None


# ---------------------------------------------------------------------------------------------
# bindings and acceleration
# ---------------------------------------------------------------------------------------------


def load_bindings() -> ModuleType | None:
    """The ``guestfs`` module, from the interpreter's path or Debian's; None when unavailable."""
    try:
        return importlib.import_module("guestfs")
    except ImportError:
        pass
    if not os.path.isdir(DEBIAN_DIST_PACKAGES) or DEBIAN_DIST_PACKAGES in sys.path:
        return None
    sys.path.append(DEBIAN_DIST_PACKAGES)
    try:
        return importlib.import_module("guestfs")
    except ImportError as e:
        log.debug("python3-guestfs not importable from %s: %s", DEBIAN_DIST_PACKAGES, e)
        return None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(DEBIAN_DIST_PACKAGES)


def libguestfs_available() -> bool:
    """True when the libguestfs Python bindings can be imported."""
    return load_bindings() is not None


def kvm_device_usable(path: str = "/dev/kvm") -> bool:
    """Cheap probe: ``/dev/kvm`` opens read-write and answers KVM_GET_API_VERSION with 12.

    A True answer does not prove QEMU will run under KVM (it does not on paravirtual hosts);
    :func:`run_in_guest` still falls back to TCG when the KVM launch fails.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        import fcntl

        return fcntl.ioctl(fd, 0xAE00) == 12  # KVM_GET_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def _env_forces_backend() -> bool:
    return "LIBGUESTFS_BACKEND_SETTINGS" in os.environ


# ---------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------


class _Console:
    """The command's output lines, picked out of the appliance's console as they come.

    Lines count only between :meth:`start` and :meth:`stop`; :meth:`finish` then passes on the
    lines the console had not delivered yet (from the command's whole output), so ``emit``
    sees every line once, in order.  Nothing is passed on once ``cancelled`` is set."""

    def __init__(self, emit: ProgressFn | None, cancelled: threading.Event) -> None:
        self.emit = emit
        self.cancelled = cancelled
        self.partial = ""
        self.count = 0
        self.active = False

    def start(self) -> None:
        self.partial, self.count, self.active = "", 0, True

    def stop(self) -> None:
        self.active = False

    def feed(self, text: str) -> None:
        if not self.active:
            return
        *whole, self.partial = (self.partial + text).split("\n")
        for line in whole:
            at = line.find(_LINE_MARK)
            if at >= 0:
                self.count += 1
                self._out(line[at + len(_LINE_MARK) :].rstrip("\r"))

    def finish(self, output: str) -> None:
        lines = output.split("\n")
        if lines[-1] == "":
            lines.pop()
        for line in lines[self.count :]:
            self._out(line)

    def _out(self, line: str) -> None:
        if self.emit is not None and not self.cancelled.is_set():
            self.emit(line)


class _Messages:
    """The last libguestfs/QEMU messages, to explain a failed launch in one line; the
    appliance's console also goes to ``console``."""

    appliance_event = 0  # libguestfs's EVENT_APPLIANCE, set when the bindings are loaded

    def __init__(self, console: _Console | None = None) -> None:
        self.lines: deque[str] = deque(maxlen=200)
        self.console = console

    def callback(self, event: int, handle: int, buf: bytes | str, array: Any) -> None:
        # runs inside libguestfs's C code: an exception here would only be printed there, and
        # the call would go on as if nothing happened, so none may escape
        try:
            text = buf.decode("utf-8", "replace") if isinstance(buf, bytes) else str(buf)
            if self.console is not None and event == self.appliance_event:
                self.console.feed(text)
            for line in text.splitlines():
                line = line.strip()
                if line:
                    self.lines.append(line)
        except Exception:
            log.debug("libguestfs event callback failed", exc_info=True)

    def explain(self) -> str:
        """The most telling line: QEMU's own error first, then any error or failure."""
        lines = [ln for ln in self.lines if "see earlier" not in ln and "trace" not in ln]
        for keys in (("qemu-system",), ("Assertion", "error:"), ("failed", "killed", "cannot")):
            for ln in lines:
                if any(k in ln for k in keys) and (
                    "error" in ln.lower() or keys != ("qemu-system",)
                ):
                    return ln
        return ""


@contextlib.contextmanager
def _heartbeat(progress: ProgressFn | None, what: str) -> Iterator[None]:
    """Call ``progress`` every few seconds while a long step runs."""
    if progress is None:
        yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not stop.wait(_HEARTBEAT_SECONDS):
            progress(f"{what}: {time.monotonic() - start:.0f} s")

    thread = threading.Thread(target=beat, name="pydiskimg-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _one_line(text: str) -> str:
    return " | ".join(ln.strip() for ln in str(text).strip().splitlines() if ln.strip())


def _tail_line(text: str, keep: int = 20) -> str:
    """The last ``keep`` non-empty lines of a command's output, joined on one line."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    if len(lines) <= keep:
        return " | ".join(lines)
    return f"[{len(lines) - keep} earlier lines] " + " | ".join(lines[-keep:])


def _new_handle(gfs: ModuleType, image_path: str, mem_size: int, tcg: bool, msgs: _Messages) -> Any:
    _Messages.appliance_event = gfs.EVENT_APPLIANCE
    g = gfs.GuestFS(python_return_dict=True, close_on_exit=True)
    g.set_verbose(True)  # messages go to the callback only, for error reports
    events = gfs.EVENT_APPLIANCE | gfs.EVENT_LIBRARY | gfs.EVENT_WARNING
    g.set_event_callback(msgs.callback, events)
    g.set_memsize(mem_size)
    g.set_smp(1)  # one vCPU (libguestfs's default, pinned): the kernel's allocation is then repeatable
    # SCSI disks probed in order: the image is always the first disk (sda), the appliance's own
    # the second; with the default asynchronous scan the order varies from launch to launch
    g.set_append("scsi_mod.scan=sync")
    if tcg:
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
    g.add_drive_opts(image_path, format="raw", readonly=False, cachemode="writeback")
    return g


def _launch(
    gfs: ModuleType,
    image_path: str,
    mem_size: int,
    say: ProgressFn,
    cancelled: threading.Event,
    console: _Console,
) -> Any:
    """Launch the appliance, trying KVM first and falling back to TCG by itself; nothing new
    is started once ``cancelled`` is set.  The appliance's console goes to ``console``."""
    global _kvm_verdict
    if _env_forces_backend():
        tries = [False]  # the environment decides
        say(
            "libguestfs: using LIBGUESTFS_BACKEND_SETTINGS="
            f"{os.environ['LIBGUESTFS_BACKEND_SETTINGS']!r} from the environment"
        )
    elif _kvm_verdict is False:
        tries = [True]
    elif not kvm_device_usable():
        say(
            "libguestfs: /dev/kvm is missing or not usable: running the appliance under TCG "
            "(software emulation, slower)"
        )
        _kvm_verdict = False
        tries = [True]
    else:
        tries = [False, True]
    last_error = ""
    for tcg in tries:
        if cancelled.is_set():
            raise ToolError("libguestfs: the stage was stopped")
        msgs = _Messages(console)
        g = _new_handle(gfs, image_path, mem_size, tcg, msgs)
        mode = "TCG" if tcg else ("KVM" if not _env_forces_backend() else "configured backend")
        say(f"libguestfs: starting the appliance ({mode}, {mem_size} MiB; this takes a while)")
        t0 = time.monotonic()
        try:
            with _heartbeat(say, "libguestfs: appliance still starting"):
                g.launch()
        except RuntimeError as e:
            detail = msgs.explain()
            last_error = _one_line(str(e)) + (f" ({detail})" if detail else "")
            with contextlib.suppress(Exception):
                g.close()
            if not tcg and len(tries) > 1:
                say(
                    "libguestfs: QEMU failed under KVM"
                    f"{': ' + detail if detail else ''}; falling back to TCG "
                    "(LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg)"
                )
                _kvm_verdict = False
                continue
            raise ToolError(f"libguestfs: the appliance did not start: {last_error}") from None
        if not tcg and not _env_forces_backend():
            _kvm_verdict = True
        say(f"libguestfs: appliance up in {time.monotonic() - t0:.0f} s")
        return g
    raise ToolError(f"libguestfs: the appliance did not start: {last_error}")


def _device(part: int | None) -> str:
    return API_DISK if part is None else f"{API_DISK}{part}"


#: Where the wrappers copy each line of the command's output, marked, as it comes: the
#: appliance's console, which libguestfs hands to the event callback (EVENT_APPLIANCE) while
#: ``command`` still runs (``command`` itself returns the output only at the end).
CONSOLE = "/dev/console"
#: Starts each copied line.  The wrappers write it in two pieces (the shell joins them), so the
#: daemon's own log of the command line, also on the console, never holds it.
_LINE_MARK = "pydiskimg-stage-output:"
_LINE_MARK_SH = '"pydiskimg-stage-"' + "'output:'"


def _wrapper(run: str, console: str) -> str:
    """Shell that runs ``run`` (a command line), stdin from /dev/null and stderr merged into
    stdout, and passes each line of its output both to stdout and, marked, to ``console``
    (when writable); then prints the exit status on a last line of its own.  A last line
    without a newline stays so on stdout.  Fds 3-5 are the wrapper's; ``run`` gets none."""
    copy = f'printf "%s\\n" "$l" >&4; printf "%s%s\\n" {_LINE_MARK_SH} "$l" >&5'
    last = f'printf "%s" "$l" >&4; printf "%s%s\\n" {_LINE_MARK_SH} "$l" >&5'
    con = shlex.quote(console)
    return (
        f"if [ -w {con} ]; then exec 5>{con}; else exec 5>/dev/null; fi; exec 4>&1; "
        f"s=$( {{ {{ {run} </dev/null 2>&1 3>&- 4>&- 5>&-; echo $? >&3; }} | "
        f"{{ while IFS= read -r l; do {copy}; done; "
        f'if [ -n "$l" ]; then {last}; fi; }}; }} 3>&1 ); '
        f'echo; echo "{_STATUS_MARK}$s"'
    )


def chroot_argv(command: str, env: dict[str, str] | None = None, console: str = CONSOLE) -> list[str]:
    """The argv libguestfs's ``command`` runs chrooted in the image: the image's ``/bin/sh``
    runs ``command`` verbatim (passed as ``$1``, never re-quoted) with ``env`` exported,
    stderr merged into stdout, each line also copied to ``console`` as it comes, then prints
    the exit status on a last line of its own (``command`` only reports stderr when a command
    fails, and we want both streams in order)."""
    exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in (env or {}).items())
    return ["/bin/sh", "-c", exports + _wrapper('/bin/sh -c "$1"', console), "pydiskimg", command]


#: prints the kernel's names of the devices mounted at SYSROOT, SYSROOT$ESPMP and SYSROOT/boot
#: (XBOOTLDR when ESPMP is /efi), and of the whole disk holding the first; libguestfs's API
#: names (/dev/sda) are translated inside the daemon only, and the appliance's own disk may take
#: /dev/sda: a command must use the real ones
_REAL_DEVICES = (  # POSIX sh only: the appliance has no awk
    'r=; e=; x=; while read -r dev mp rest; do '
    '[ "$mp" = "$SYSROOT" ] && [ -z "$r" ] && r=$dev; '
    '[ "$mp" = "$SYSROOT$ESPMP" ] && [ -z "$e" ] && e=$dev; '
    '[ "$ESPMP" != /boot ] && [ "$mp" = "$SYSROOT/boot" ] && [ -z "$x" ] && x=$dev; '
    'done < /proc/mounts; '
    'n=$(basename "$(readlink -f "$r")"); '
    'if [ -e "/sys/class/block/$n/partition" ]; then '
    'd=/dev/$(basename "$(readlink -f "/sys/class/block/$n/..")"); else d=/dev/$n; fi; '
    'echo "$d"; echo "$r"; echo "$e"; echo "$x"'
)


def _real_devices(g: Any, esp_mount: str = "/boot") -> tuple[str, str, str, str]:
    """(whole disk, root device, ESP device or "", XBOOTLDR device or "") as the appliance's
    kernel names them."""
    try:
        out = g.debug("sh", [f"SYSROOT={SYSROOT}; ESPMP={esp_mount}; {_REAL_DEVICES}"])
    except RuntimeError as e:
        raise ToolError(f"libguestfs: cannot find the image's devices: {_one_line(str(e))}") from None
    lines = [ln.strip() for ln in out.splitlines()]
    if len(lines) < 2 or not lines[0].startswith("/dev/") or not lines[1].startswith("/dev/"):
        raise ToolError(f"libguestfs: cannot find the image's devices: {_one_line(out)}")
    lines += [""] * 2
    return lines[0], lines[1], lines[2], lines[3]


def appliance_script(command: str, env: dict[str, str], console: str = CONSOLE) -> str:
    """The script libguestfs's ``debug sh`` runs in the appliance: ``env`` exported, the
    working folder the image's root, then the same output and status convention as
    :func:`chroot_argv`."""
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return (
        f"export {exports}; cd {SYSROOT} || exit 1; "
        + _wrapper(f"/bin/sh -c {shlex.quote(command)}", console)
    )


def split_status(out: str, what: str) -> tuple[int, str]:
    """Split the output of :func:`chroot_argv` / :func:`appliance_script` into
    (exit status, the command's own output)."""
    head, sep, tail = out.rpartition(_STATUS_MARK)
    if not sep:
        raise ToolError(f"{what}: no exit status came back from the appliance: {_one_line(out)}")
    try:
        status = int(tail.strip())
    except ValueError:
        raise ToolError(f"{what}: unreadable exit status {tail.strip()!r}") from None
    return status, head[:-1] if head.endswith("\n") else head


def run_in_guest(
    image_path: str | os.PathLike[str],
    *,
    root_part: int | None,
    esp_part: int | None,
    command: str,
    mem_size: int = 1024,
    grub_device: str | None = None,
    in_appliance: bool = False,
    progress: ProgressFn | None = None,
    xbootldr_part: int | None = None,
    output: ProgressFn | None = None,
    clock: int | None = None,
) -> str:
    """Run ``command`` on the raw image at ``image_path`` in libguestfs's appliance.

    ``root_part`` is the root partition's number (``None``: the whole disk is the
    filesystem, the seed's ``partitionTableType = "none"``); ``esp_part`` the ESP's number, to
    mount at ``/boot`` (``None`` for ``legacy`` and ``legacy+gpt``); with ``xbootldr_part``
    (``efixbootldr``) the ESP goes to ``/efi`` and XBOOTLDR to ``/boot``.  ``clock``
    (deterministic mode: ``SOURCE_DATE_EPOCH``) sets the appliance's clock before anything is
    mounted and pins its writeback (:func:`_pin_appliance`); the partitions are then mounted
    ``noatime`` (reading a file changes nothing), the root with ext4's timed journal commits
    off (:data:`ROOT_MOUNT_OPTIONS`), and a chrooted command finds a GRUB ``device.map``
    (:func:`_pin_device_map`).  ``command`` is a shell
    command line: run chrooted into the image with the image's ``/bin/sh`` by default, or with
    the appliance's shell when ``in_appliance`` (see the module documentation).  Returns the
    command's output, stdout and stderr merged in order; ``output`` is called with each line of
    it as the command prints it (every line exactly once, in order), ``progress`` with what the
    stage is doing.

    The appliance runs in a worker thread (:func:`pydiskimg.procs.interruptible`): SIGINT and
    SIGTERM, as the CLI raises them, stop the stage at once, QEMU killed.

    Raises :class:`~pydiskimg.errors.ToolError` (one line) when libguestfs is missing, the
    appliance does not start, a partition does not mount, the image has no ``/bin/sh`` (chroot
    mode), or the command exits non-zero (with the command's output).
    """
    image_path = os.fspath(image_path)
    if not os.path.isfile(image_path):
        raise UsageError(f"{image_path}: image not found")
    if mem_size < 256:
        raise UsageError(f"memSize: {mem_size} MiB is too small for the appliance (at least 256)")
    if not command.strip():
        raise UsageError("installBootLoader: the command is empty")
    if grub_device and (not grub_device.startswith("/dev/") or "\n" in grub_device):
        raise UsageError(f"grub device: {grub_device!r} is not a /dev path")
    gfs = load_bindings()
    if gfs is None:
        raise ToolError(
            "libguestfs: the Python bindings are not importable; install Debian's python3-guestfs "
            "and libguestfs-tools (needed for installBootLoader)"
        )

    def stage(cancelled: threading.Event) -> str:
        def say(msg: str) -> None:
            if cancelled.is_set():  # the build is stopping: nothing more to report
                return
            log.info("%s", msg)
            if progress is not None:
                progress(msg)

        lines = _Console(output, cancelled)
        g = _launch(gfs, image_path, mem_size, say, cancelled, lines)
        if clock is not None:  # deterministic: the image must be the appliance's sda
            g = _image_first(g, lambda: _launch(gfs, image_path, mem_size, say, cancelled, lines), say)
        try:
            return _run_command(
                g,
                root_part=root_part,
                esp_part=esp_part,
                xbootldr_part=xbootldr_part,
                command=command,
                grub_device=grub_device,
                in_appliance=in_appliance,
                say=say,
                lines=lines,
                clock=clock,
            )
        finally:
            with contextlib.suppress(Exception):
                g.close()

    return procs.interruptible(stage)


#: Launches tried before giving up on the image being the appliance's first disk
_IMAGE_FIRST_TRIES = 6


def _image_scsi_target(g: Any) -> str:
    """The SCSI target of the appliance's ``/dev/sda`` ("0": the image, added first; the
    appliance's own disk is added after it)."""
    out = g.debug("sh", ["basename \"$(readlink -f /sys/block/sda/device)\""]).strip()
    parts = out.split(":")
    return parts[2] if len(parts) == 4 else out


def _image_first(g: Any, relaunch: Callable[[], Any], say: ProgressFn) -> Any:
    """A handle whose appliance names the image ``/dev/sda``, relaunching when needed.

    The appliance's kernel names its two SCSI disks in the order their probes finish, which
    varies from launch to launch even with an ordered scan; what a command derives from the
    names then varies too (update-grub writes ``--hint-bios=hd1 --hint-baremetal=ahci1`` into
    grub.cfg when the image is ``sdb``, from the name alone, whatever ``device.map`` says)."""
    for attempt in range(1, _IMAGE_FIRST_TRIES + 1):
        try:
            target = _image_scsi_target(g)
        except RuntimeError as e:
            say(f"libguestfs: cannot tell which disk is the image: {_one_line(str(e))}")
            return g
        if target == "0":
            return g
        if attempt == _IMAGE_FIRST_TRIES:
            say(f"libguestfs: the image is not the appliance's first disk after {attempt} launches; "
                "names derived from it may differ from build to build")
            return g
        say("libguestfs: the image came up as the appliance's second disk; relaunching so that "
            "it is /dev/sda (device names a command records must not vary)")
        with contextlib.suppress(Exception):
            g.shutdown()
        with contextlib.suppress(Exception):
            g.close()
        g = relaunch()
    return g


#: The appliance's kernel writes dirty data back only when told (sync, fsync, unmount) or when
#: dirty memory passes most of its RAM, never by age: delayed allocation then places a file's
#: blocks when the command's own steps say so, not when the flusher thread happens to wake up
#: (which under TCG varies from run to run and splits files differently).
_WRITEBACK_SYSCTLS = (
    ("dirty_writeback_centisecs", 0),
    ("dirty_expire_centisecs", 360000),
    ("dirty_background_ratio", 80),
    ("dirty_ratio", 90),
)
#: ext4's journal commits only when full or asked (not every 5 s): blocks a command frees are
#: reusable only after a commit, so timed commits would make allocation depend on timing too;
#: no delayed allocation (``nodelalloc``): blocks are allocated when written, in the command's
#: order, not when writeback runs (a legacy GRUB image had its modules and their folder placed
#: in another order in one build of two); no background inode-table zeroing (``noinit_itable``)
ROOT_MOUNT_OPTIONS = "noatime,commit=3600,nodelalloc,noinit_itable"


def _pin_appliance(g: Any, clock: int, say: ProgressFn) -> None:
    """Set the appliance's clock to ``clock`` (seconds since the epoch), so that what the stage
    stamps is ``clock`` plus the stage's own duration, never the host's date; and make its
    writeback timing-independent (:data:`_WRITEBACK_SYSCTLS`)."""
    sysctls = "; ".join(f"echo {v} > /proc/sys/vm/{k}" for k, v in _WRITEBACK_SYSCTLS)
    try:
        g.debug("sh", [f"date -u -s @{int(clock)} >/dev/null; {sysctls}"])
    except RuntimeError as e:
        say(f"libguestfs: cannot pin the appliance's clock and writeback: {_one_line(str(e))}")


#: GRUB's map of BIOS drives, read by grub-install and grub-mkconfig in the image
_DEVICE_MAP = "/boot/grub/device.map"


def _pin_device_map(g: Any, disk: str) -> Callable[[], None] | None:
    """Write ``/boot/grub/device.map`` mapping ``(hd0)`` to ``disk``, when the image has none;
    returns what removes it (and ``/boot/grub`` when made here and left empty).

    Without a map, GRUB numbers BIOS drives by the kernel's names: when the appliance's own disk
    took ``/dev/sda`` (the SCSI probe order varies from launch to launch), the image is ``hd1``
    and grub.cfg's ``--hint-bios`` and ``set root`` say ``hd1``; with the map they say ``hd0``,
    as in the seed's VM (one disk) and on the machine that boots the image.
    """
    try:
        if g.exists(_DEVICE_MAP):
            return None
        made_dir = not g.is_dir("/boot/grub")
        if made_dir:
            g.mkdir_p("/boot/grub")
        g.write(_DEVICE_MAP, f"(hd0)\t{disk}\n".encode())
    except RuntimeError as e:
        raise ToolError(f"libguestfs: cannot write {_DEVICE_MAP}: {_one_line(str(e))}") from None

    def remove() -> None:
        g.rm_f(_DEVICE_MAP)
        if made_dir and g.is_dir("/boot/grub") and not g.ls("/boot/grub"):
            g.rmdir("/boot/grub")

    return remove


def _run_command(
    g: Any,
    *,
    root_part: int | None,
    esp_part: int | None,
    xbootldr_part: int | None,
    command: str,
    grub_device: str | None,
    in_appliance: bool,
    say: ProgressFn,
    lines: _Console,
    clock: int | None = None,
) -> str:
    """The steps on a launched appliance: mount, find devices, link, run, clean up."""
    what = "installBootLoader"
    esp_mount = "/efi" if xbootldr_part is not None else "/boot"
    root_dev, esp_dev = (
        _device(root_part),
        (_device(esp_part) if esp_part is not None else None),
    )
    opts = root_opts = ""
    if clock is not None:
        _pin_appliance(g, clock, say)
        opts, root_opts = "noatime", ROOT_MOUNT_OPTIONS
    try:
        g.mount_options(root_opts, root_dev, "/")
        if esp_dev is not None:
            g.mkdir_p(esp_mount)
            g.mount_options(opts, esp_dev, esp_mount)
        if xbootldr_part is not None:
            g.mkdir_p("/boot")
            g.mount_options(opts, _device(xbootldr_part), "/boot")
    except RuntimeError as e:
        raise ToolError(
            f"libguestfs: cannot mount the image's partitions: {_one_line(str(e))}"
        ) from None
    disk, real_root, real_esp, real_xbootldr = _real_devices(g, esp_mount)
    if grub_device and grub_device != disk:
        link = (
            f"mkdir -p {shlex.quote(os.path.dirname(grub_device))} && "
            f"ln -sfn {disk} {shlex.quote(grub_device)}"
        )
        try:
            g.debug("sh", [link])
        except RuntimeError as e:
            raise ToolError(
                f"libguestfs: cannot link {grub_device} to {disk}: {_one_line(str(e))}"
            ) from None
    first = command.strip().splitlines()[0]
    shown = first if len(first) <= 60 and "\n" not in command.strip() else first[:57] + "..."
    where = "in the appliance" if in_appliance else "chrooted in the image"
    say(f"{what}: running {shown!r} {where}")
    env = {"DISK": disk, "ROOT_DEV": real_root, "ESP_DEV": real_esp}
    if xbootldr_part is not None:
        env["XBOOTLDR_DEV"] = real_xbootldr
    if in_appliance:
        script = appliance_script(command, {"SYSROOT": SYSROOT, **env})
        runner = lambda: g.debug("sh", [script])  # noqa: E731
    else:
        if not g.is_file("/bin/sh", followsymlinks=True):
            raise ToolError(
                f"{what}: the image has no /bin/sh, so a command cannot run chrooted in it; "
                "ship a shell in the root tree, or run the command in the appliance"
            )
        argv = chroot_argv(command, env)
        runner = lambda: g.command(argv)  # noqa: E731
    device_map = _pin_device_map(g, disk) if clock is not None and not in_appliance else None
    lines.start()
    try:
        with _heartbeat(say, f"{what}: still running"):
            raw_out = runner()
    except RuntimeError as e:
        raise ToolError(f"{what}: {shown!r} could not run: {_one_line(str(e))}") from None
    finally:
        lines.stop()
    status, out = split_status(raw_out, what)
    lines.finish(out)
    if status != 0:
        raise ToolError(
            f"{what}: {shown!r} failed with exit status {status}: "
            f"{_tail_line(out) or '(no output)'}"
        )
    try:
        if device_map is not None:
            device_map()
        g.rm_f("/etc/machine-id")
        g.umount_all()
        g.shutdown()
    except RuntimeError as e:
        raise ToolError(f"libguestfs: cannot unmount the image cleanly: {_one_line(str(e))}") from None
    say(f"{what}: done")
    return out


# ---------------------------------------------------------------------------------------------
# re-pinning the root filesystem
# ---------------------------------------------------------------------------------------------

_EXT4_SUPER_OFFSET = 1024
_EXT4_MAGIC = 0xEF53
_RO_COMPAT_METADATA_CSUM = 0x0400


def _read_super(image_path: str, offset: int) -> Any:
    from construct import ConstructError

    from .ext4 import structs as ext4_structs

    with open(image_path, "rb") as f:
        f.seek(offset + _EXT4_SUPER_OFFSET)
        raw = f.read(ext4_structs.SUPER_BLOCK_SIZE)
    if len(raw) != ext4_structs.SUPER_BLOCK_SIZE:
        raise Ext4Error(f"{image_path}: no ext4 superblock at byte {offset + _EXT4_SUPER_OFFSET}")
    try:
        sb = ext4_structs.ext4_super_block.parse(raw)
    except (ConstructError, KeyError, ValueError) as e:
        raise Ext4Error(f"{image_path}: unreadable superblock: {e}") from None
    if sb.s_magic != _EXT4_MAGIC:
        raise Ext4Error(
            f"{image_path}: s_magic at byte {offset + _EXT4_SUPER_OFFSET + 0x38} is "
            f"{sb.s_magic:#06x}, expected {_EXT4_MAGIC:#06x}"
        )
    return sb


def read_kbytes_written(image_path: str | os.PathLike[str], offset: int) -> int:
    """``s_kbytes_written`` of the ext4 filesystem at ``offset`` (to restore after the stage)."""
    return int(_read_super(os.fspath(image_path), offset).s_kbytes_written)


def _tune2fs_uuid(image_path: str, offset: int, fs_uuid: uuid.UUID) -> None:
    target = f"{image_path}?offset={offset}" if offset else image_path
    try:
        proc = subprocess.run(
            ["tune2fs", "-f", "-U", str(fs_uuid), target],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        )
    except OSError as e:
        raise ToolError(
            f"tune2fs: cannot run it ({e.strerror}); install Debian's e2fsprogs"
        ) from None
    if proc.returncode != 0:
        raise ToolError(
            f"tune2fs -U {fs_uuid} {target} failed (exit {proc.returncode}): "
            f"{_one_line(proc.stderr or proc.stdout)}"
        )


def repin_ext4(
    image_path: str | os.PathLike[str],
    offset: int,
    fs_uuid: uuid.UUID,
    *,
    timestamp: int = 0,
    kbytes_written: int | None = None,
) -> None:
    """Re-pin the ext4 superblock at byte ``offset`` of ``image_path`` after the guest stage.

    What the seed's ``tune2fs -U UUID -c 0 -i 0`` and ``tune2fs -f -T 19700101`` pin, with
    ``timestamp`` (``SOURCE_DATE_EPOCH``, 0 by default, the seed's 1970-01-01) for every time:
    ``s_uuid``; ``s_lastcheck``, ``s_mtime`` (mount time) and ``s_wtime`` (write time) with
    their ``_hi`` bytes; ``s_mnt_count`` 0, ``s_max_mnt_count`` -1 and ``s_checkinterval`` 0;
    plus what the kernel's mount changed: ``s_last_mounted`` emptied, ``s_kbytes_written`` back
    to ``kbytes_written`` when given.  A last check not older than the last mount is what
    resize2fs and tune2fs ask for.  When the UUID itself changed (the command ran ``tune2fs -U``),
    ``tune2fs -U`` puts it back, which also rewrites the metadata checksums seeded by it.  The
    superblock checksum is recomputed (metadata_csum).  Backup superblocks are left as the writer
    made them (the kernel does not touch them either).
    """
    from .ext4 import csum as ext4_csum
    from .ext4 import structs as ext4_structs

    image_path = os.fspath(image_path)
    sb = _read_super(image_path, offset)
    ts_lo, ts_hi = timestamp & 0xFFFFFFFF, (timestamp >> 32) & 0xFF
    if timestamp < 0:
        raise UsageError(f"SOURCE_DATE_EPOCH: {timestamp} is before 1970")

    def write_times() -> None:
        cur = _read_super(image_path, offset)
        cur.s_mtime = cur.s_wtime = cur.s_lastcheck = ts_lo
        cur.s_mtime_hi = cur.s_wtime_hi = cur.s_lastcheck_hi = ts_hi
        cur.s_mnt_count = 0
        cur.s_max_mnt_count = -1
        cur.s_checkinterval = 0
        cur.s_last_mounted = bytes(64)
        if kbytes_written is not None:
            cur.s_kbytes_written = kbytes_written
        raw = bytearray(ext4_structs.ext4_super_block.build(cur))
        if cur.s_feature_ro_compat & _RO_COMPAT_METADATA_CSUM:
            raw[0x3FC:0x400] = ext4_csum.superblock_csum(raw).to_bytes(4, "little")
        with open(image_path, "r+b") as f:
            f.seek(offset + _EXT4_SUPER_OFFSET)
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())

    write_times()  # first: a "freshly checked" filesystem, which tune2fs -U requires
    if bytes(sb.s_uuid) != fs_uuid.bytes:
        log.info("root filesystem UUID changed in the guest stage: setting it back to %s", fs_uuid)
        _tune2fs_uuid(image_path, offset, fs_uuid)
        write_times()  # tune2fs stamped s_wtime with the clock


# ---------------------------------------------------------------------------------------------
# the whole stage, as the pipeline calls it
# ---------------------------------------------------------------------------------------------


def bootloader_stage(
    image_path: str | os.PathLike[str],
    *,
    command: str,
    root_part: int | None,
    root_offset: int,
    esp_part: int | None,
    fs_uuid: uuid.UUID,
    deterministic: bool,
    timestamp: int,
    mem_size: int = 1024,
    grub_device: str | None = None,
    in_appliance: bool = False,
    progress: ProgressFn | None = None,
    xbootldr_part: int | None = None,
    output: ProgressFn | None = None,
    fat_volumes: Sequence[tuple[int, int]] = (),
) -> str:
    """:func:`run_in_guest`, then (deterministic mode) the normalization of what it changed.

    ``root_offset`` is the root filesystem's byte offset in the image (0 for a whole-disk
    filesystem); ``fat_volumes`` the (byte offset, size) of each FAT volume of the image (ESP,
    XBOOTLDR).

    Deterministic mode: the appliance's clock starts at ``timestamp`` and the partitions are
    mounted ``noatime``; after the stage (the filesystems cleanly unmounted, the appliance shut
    down), :func:`pydiskimg.ext4.normalize.normalize` and
    :func:`pydiskimg.fat.normalize.normalize` bring what the kernel changed back to
    pydiskimg's rules (times clamped to ``timestamp``, generations, freed inodes, the journal,
    freed blocks, FSInfo; checksums recomputed), given the inode tables and directory entries
    read before the stage; then :func:`repin_ext4` pins the superblock, ``s_kbytes_written``
    restored to its value before the stage.  Returns the command's output (also passed line by
    line to ``output``).
    """
    from .ext4 import normalize as ext4_normalize
    from .fat import normalize as fat_normalize

    image_path = os.fspath(image_path)
    before = read_kbytes_written(image_path, root_offset) if deterministic else None
    ext4_snap = None
    fat_snaps: list[tuple[int, int, fat_normalize.Snapshot]] = []
    if deterministic:
        fd = os.open(image_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ext4_snap = ext4_normalize.snapshot(fd, root_offset)
            fat_snaps = [(off, size, fat_normalize.snapshot(fd, off, size)) for off, size in fat_volumes]
        finally:
            os.close(fd)
    text = run_in_guest(
        image_path,
        root_part=root_part,
        esp_part=esp_part,
        command=command,
        mem_size=mem_size,
        grub_device=grub_device,
        in_appliance=in_appliance,
        progress=progress,
        xbootldr_part=xbootldr_part,
        output=output,
        clock=timestamp if deterministic else None,
    )
    if deterministic:
        assert ext4_snap is not None
        t0 = time.monotonic()
        fd = os.open(image_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            rep = ext4_normalize.normalize(fd, root_offset, timestamp=timestamp, before=ext4_snap)
            log.info("root filesystem normalized: %s", rep)
            for off, size, snap in fat_snaps:
                frep = fat_normalize.normalize(fd, off, size, timestamp=timestamp, before=snap)
                log.info("FAT volume at byte %d normalized: %s", off, frep)
        finally:
            os.close(fd)
        repin_ext4(image_path, root_offset, fs_uuid, timestamp=timestamp, kbytes_written=before)
        if progress is not None:
            progress(
                f"installBootLoader: normalized what the stage changed in "
                f"{time.monotonic() - t0:.1f} s ({rep.inodes_normalized} inodes)"
            )
    return text
