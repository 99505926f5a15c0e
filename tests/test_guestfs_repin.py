"""The guest stage without a VM: re-pinning the ext4 superblock, and the stage's error paths.

Expected values come from e2fsprogs (dumpe2fs, e2fsck -fn, resize2fs, tune2fs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import bootkit
import pytest

from pydiskimg import guestfs
from pydiskimg.errors import Ext4Error, ToolError, UsageError

FS_UUID = uuid.UUID("f222513b-ded1-49fa-b591-20ce86a2fe7f")
OFFSET = 1 << 20  # the filesystem inside a "disk", as a partition


def run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def dumpe2fs(target: str) -> dict[str, str]:
    out = run("dumpe2fs", "-h", target)
    assert out.returncode == 0, out.stderr
    fields = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def assert_fsck_silent(target: str) -> None:
    r = run("e2fsck", "-fn", target)
    assert r.returncode == 0, r.stdout + r.stderr
    # only the five pass headers and the summary line: no problem reported
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert all(ln.startswith("Pass ") for ln in lines[:-1]), r.stdout


def as_if_mounted(fs: str, tmp: Path) -> None:
    """What the kernel's mount and a guest command leave in the superblock, made with the
    reference tools: clock times, counts, last mount point, lifetime writes, a new UUID."""
    env = {**os.environ, "TZ": "UTC"}
    script = tmp / "dbg"
    script.write_text(
        "ssv mtime 20251125120000\n"
        "ssv wtime 20251125120500\n"
        "ssv mnt_count 7\n"
        "ssv max_mnt_count 20\n"
        "ssv checkinterval 86400\n"
        "ssv last_mounted /sysroot\n"
        "ssv kbytes_written 123456\n"
    )
    r = run("debugfs", "-w", "-f", str(script), fs, env=env)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def disk(tmp_path: Path) -> str:
    """A 'disk' with a 64 MiB ext4 (default features: 64bit, metadata_csum) at 1 MiB."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("pydiskimg\n")
    fs = tmp_path / "fs.img"
    r = run(
        "mkfs.ext4",
        "-q",
        "-F",
        "-d",
        str(tree),
        "-U",
        str(FS_UUID),
        "-E",
        "root_owner=0:0",
        "-T",
        "default",
        str(fs),
        "64M",
    )
    assert r.returncode == 0, r.stderr
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(OFFSET + (64 << 20) + OFFSET)
    r = run(
        "dd",
        f"if={fs}",
        f"of={path}",
        "bs=1M",
        f"seek={OFFSET >> 20}",
        "conv=notrunc,sparse",
        "status=none",
    )
    assert r.returncode == 0
    return str(path)


def target(disk: str) -> str:
    return f"{disk}?offset={OFFSET}"


def test_repin_after_mount(disk: str, tmp_path: Path) -> None:
    fs = target(disk)
    before = dumpe2fs(fs)
    as_if_mounted(fs, tmp_path)
    changed = dumpe2fs(fs)
    assert changed["Mount count"] == "7" and changed["Last mounted on"] == "/sysroot"
    guestfs.repin_ext4(disk, OFFSET, FS_UUID, timestamp=1_700_000_000, kbytes_written=4321)
    after = dumpe2fs(fs)
    assert after["Filesystem UUID"] == str(FS_UUID)
    for key in ("Last mount time", "Last write time", "Last checked"):
        assert after[key] == "Tue Nov 14 22:13:20 2023", (key, after[key])
    assert after["Mount count"] == "0"
    assert after["Maximum mount count"] == "-1"
    assert after["Check interval"].startswith("0 ")
    assert after["Last mounted on"] == "<not available>"
    assert after["Lifetime writes"] == "4321 kB"
    for key in ("Filesystem features", "Block count", "Inode count", "Free blocks"):
        assert after[key] == before[key]
    assert_fsck_silent(fs)


def test_repin_epoch_zero_is_the_seeds_19700101(disk: str, tmp_path: Path) -> None:
    fs = target(disk)
    as_if_mounted(fs, tmp_path)
    guestfs.repin_ext4(disk, OFFSET, FS_UUID)
    after = dumpe2fs(fs)
    assert after["Last checked"] == "Thu Jan  1 00:00:00 1970"
    assert after["Last write time"] == "Thu Jan  1 00:00:00 1970"
    assert_fsck_silent(fs)


def test_repin_restores_a_changed_uuid(disk: str, tmp_path: Path) -> None:
    """A command that changed the UUID (tune2fs -U): put back, metadata checksums rewritten."""
    fs = target(disk)
    env = {**os.environ, "TZ": "UTC"}
    r = run("tune2fs", "-T", "now", "-U", "11111111-2222-4333-8444-555555555555", fs, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    as_if_mounted(fs, tmp_path)
    assert dumpe2fs(fs)["Filesystem UUID"] == "11111111-2222-4333-8444-555555555555"
    guestfs.repin_ext4(disk, OFFSET, FS_UUID, timestamp=0)
    after = dumpe2fs(fs)
    assert after["Filesystem UUID"] == str(FS_UUID)
    assert after["Last write time"] == "Thu Jan  1 00:00:00 1970"  # tune2fs's clock stamp undone
    assert_fsck_silent(fs)


def test_resize2fs_and_tune2fs_accept_the_repinned_filesystem(disk: str, tmp_path: Path) -> None:
    """The seed's reason for its tune2fs lines: resize2fs and tune2fs must not ask for an
    e2fsck first.  Checked on the filesystem alone (resize2fs grows a file, not a partition)."""
    as_if_mounted(target(disk), tmp_path)
    guestfs.repin_ext4(disk, OFFSET, FS_UUID, timestamp=0)
    fs = tmp_path / "alone.img"
    r = run(
        "dd",
        f"if={disk}",
        f"of={fs}",
        "bs=1M",
        f"skip={OFFSET >> 20}",
        "count=64",
        "conv=sparse",
        "status=none",
    )
    assert r.returncode == 0
    r = run("resize2fs", str(fs), "96M")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "e2fsck" not in r.stdout + r.stderr
    r = run("tune2fs", "-U", "22222222-3333-4444-8555-666666666666", str(fs))
    assert r.returncode == 0, r.stdout + r.stderr
    assert_fsck_silent(str(fs))


def test_repin_refuses_a_non_ext4(tmp_path: Path) -> None:
    img = tmp_path / "zero.img"
    img.write_bytes(bytes(8192))
    with pytest.raises(Ext4Error, match="s_magic"):
        guestfs.repin_ext4(str(img), 0, FS_UUID)


def test_missing_libguestfs_is_a_clear_error(disk: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guestfs, "load_bindings", lambda: None)
    with pytest.raises(ToolError) as e:
        guestfs.run_in_guest(disk, root_part=None, esp_part=None, command="true")
    assert "python3-guestfs" in str(e.value) and "\n" not in str(e.value)


def test_bad_requests(disk: str) -> None:
    with pytest.raises(UsageError, match="empty"):
        guestfs.run_in_guest(disk, root_part=None, esp_part=None, command="  ")
    with pytest.raises(UsageError, match="memSize"):
        guestfs.run_in_guest(disk, root_part=None, esp_part=None, command="true", mem_size=64)
    with pytest.raises(UsageError, match="not found"):
        guestfs.run_in_guest(disk + ".nope", root_part=None, esp_part=None, command="true")


def test_bindings_load_for_this_interpreter() -> None:
    """Debian's python3-guestfs is importable here (directly or from its dist-packages)."""
    assert shutil.which("guestfish") is not None
    mod = guestfs.load_bindings()
    assert mod is not None and hasattr(mod, "GuestFS")


def test_kvm_probe_is_false_without_a_device(tmp_path: Path) -> None:
    assert guestfs.kvm_device_usable(str(tmp_path / "kvm")) is False
    (tmp_path / "notkvm").write_bytes(b"")
    assert guestfs.kvm_device_usable(str(tmp_path / "notkvm")) is False


@pytest.mark.parametrize(
    ("command", "status", "output"),
    [
        ("echo one; echo two >&2; exit 3", 3, "one\ntwo\n"),
        ("true", 0, ""),
        ("printf 'no newline'", 0, "no newline"),
        ("echo \"$1\" '$HOME' `echo x`; false", 1, " $HOME x\n"),
        ("set -e\nfalse\necho never", 1, ""),
        ("printf 'a\\\\b  c\\n'; cat; echo \"$DISK\"", 0, "a\\b  c\n/dev/null\n"),
    ],
)
@pytest.mark.parametrize("shell", ["/bin/sh", "busybox"])
def test_command_wrappers_keep_output_and_status(
    command: str, status: int, output: str, shell: str, tmp_path: Path
) -> None:
    """The wrappers run by the appliance, run here by the host's /bin/sh (dash) and busybox's
    sh (the small images' shell): the command reaches the shell verbatim, both streams come
    back in order, the exit status is the command's, and every line is also copied, marked, to
    the console (a file here) as it is printed."""
    if shell == "busybox":
        shell = bootkit.busybox_static()
    prefix = [shell, "sh"] if shell.endswith("busybox") else [shell]
    marked = "".join(f"{guestfs._LINE_MARK}{ln}\n" for ln in output.splitlines())
    console = tmp_path / "console"
    console.write_text("")
    argv = guestfs.chroot_argv(command, {"DISK": "/dev/null"}, console=str(console))
    r = subprocess.run([*prefix, *argv[1:]], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert guestfs.split_status(r.stdout, "t") == (status, output)
    assert console.read_text() == marked
    console.write_text("")
    script = guestfs.appliance_script(
        command, {"SYSROOT": "/", "DISK": "/dev/null"}, console=str(console)
    )
    script = script.replace(f"cd {guestfs.SYSROOT}", "cd /")
    r = subprocess.run([*prefix, "-c", script], capture_output=True, text=True)
    assert guestfs.split_status(r.stdout, "t") == (status, output)
    assert console.read_text() == marked
    # the daemon logs the command line on the same console: the mark is not in it
    assert guestfs._LINE_MARK not in " ".join(argv) + script


def test_console_lines_reach_output_once_in_order() -> None:
    """What the console delivered (in pieces, with carriage returns and other console
    traffic) is passed on at once; the rest comes from the whole output at the end."""
    got: list[str] = []
    lines = guestfs._Console(got.append, threading.Event())
    lines.feed(f"[ 1.0] kernel says {guestfs._LINE_MARK}nothing yet\n")  # before start: ignored
    lines.start()
    lines.feed(f"guestfsd: running\r\n{guestfs._LINE_MARK}fir")
    assert got == []
    lines.feed(f"st\r\n{guestfs._LINE_MARK}second\r\n")
    assert got == ["first", "second"]
    lines.stop()
    lines.feed(f"{guestfs._LINE_MARK}third\r\n")  # after the command returned: from finish()
    lines.finish("first\nsecond\nthird\nlast, no newline")
    assert got == ["first", "second", "third", "last, no newline"]
    cancelled = threading.Event()
    quiet: list[str] = []
    stopped = guestfs._Console(quiet.append, cancelled)
    stopped.start()
    cancelled.set()
    stopped.feed(f"{guestfs._LINE_MARK}late\n")
    stopped.finish("late\n")
    assert quiet == []


def test_split_status_without_status_line() -> None:
    with pytest.raises(ToolError, match="no exit status"):
        guestfs.split_status("just output\n", "installBootLoader")


def test_long_output_is_cut_to_its_tail() -> None:
    out = "\n".join(f"line {i}" for i in range(100))
    text = guestfs._tail_line(out)
    assert text.startswith("[80 earlier lines] line 80 | ") and text.endswith("line 99")
    assert "\n" not in text


def test_image_first_relaunches_until_the_image_is_sda() -> None:
    """The appliance's kernel may name the image sdb (its probes finish in any order): the
    stage relaunches until sda is the image's SCSI target 0, closing each handle it drops."""
    from pydiskimg import guestfs as gfs

    class Handle:
        def __init__(self, address: str) -> None:
            self.address, self.closed = address, False

        def debug(self, cmd: str, args: list[str]) -> str:
            assert cmd == "sh" and "/sys/block/sda/device" in args[0]
            return self.address + "\n"

        def shutdown(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    first = Handle("2:0:1:0")
    later = [Handle("2:0:1:0"), Handle("2:0:0:0")]
    said: list[str] = []
    got = gfs._image_first(first, lambda: later.pop(0), said.append)
    assert got.address == "2:0:0:0" and not got.closed
    assert first.closed and not later
    assert sum("relaunching" in s for s in said) == 2
    # never the image: give up after the tries, say so, keep the last handle
    said.clear()
    stuck = gfs._image_first(Handle("2:0:1:0"), lambda: Handle("2:0:1:0"), said.append)
    assert stuck.address == "2:0:1:0" and not stuck.closed
    assert "not the appliance's first disk" in said[-1]
