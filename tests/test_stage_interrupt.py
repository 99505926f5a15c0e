"""SIGINT and SIGTERM stop a build at once, whatever it is doing, and leave nothing behind.

Each test starts ``pydiskimg build`` on a small busybox tree (tests/bootkit.py), waits until
the build is where it should be interrupted (the appliance starting, the stage's command
running: its first line has reached the progress stream while it still runs, postVM
running), sends the signal to the build's process, then checks: exit status 128 + the
signal's number, one line on stderr saying why and no traceback, nothing in the output
folder (no image, no staging folder), and no process left that was working for the build
(QEMU names the staged image on its command line; postVM's shell and its children carry
``$diskImage`` in their environment).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import bootkit
import pytest

EPOCH = "1700000000"
#: How long a test waits for a step to be reached (a TCG launch on a busy machine) and for
#: the build to exit after the signal; generous, they are not performance thresholds.
REACH_TIMEOUT = 600.0
EXIT_TIMEOUT = 120.0


class Build:
    """``pydiskimg build`` running in the background; its stderr collected line by line."""

    def __init__(self, out_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.out_dir = out_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pydiskimg", "build", "-o", str(out_dir / "disk.img"), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + REACH_TIMEOUT
        while not any(text in ln for ln in self.lines):
            assert self.proc.poll() is None, "the build ended first:\n" + self.stderr()
            assert time.monotonic() < deadline, f"{text!r} never came:\n" + self.stderr()
            time.sleep(0.1)

    def stop(self, signum: int) -> float:
        """Send ``signum``; the seconds until the build exited."""
        t0 = time.monotonic()
        self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout=EXIT_TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        seconds = time.monotonic() - t0
        self._reader.join(timeout=10)
        return seconds

    def stderr(self) -> str:
        return "\n".join(self.lines)


def leftover_processes(token: str) -> list[str]:
    """Processes (other than this test's) whose command line or environment holds ``token``."""
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and (token.encode() in cmdline or token.encode() in environ):
            found.append(name + ": " + cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def assert_stopped_cleanly(build: Build, signum: int, seconds: float) -> None:
    name = signal.Signals(signum).name
    print(f"{name}: the build exited {seconds:.1f} s after the signal\n" + build.stderr())
    err = build.stderr()
    assert build.proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "Exception" not in err, err
    verdicts = [ln for ln in build.lines if ln.startswith(("pydiskimg: interrupted", "pydiskimg: terminated"))]
    assert verdicts == [build.lines[-1]], err
    assert f"by {name}" in verdicts[0], err
    assert sorted(p.name for p in build.out_dir.iterdir()) == [], err
    # the processes the build started die with it (killed with SIGKILL: give the kernel a moment)
    deadline = time.monotonic() + 5
    while leftover_processes(str(build.out_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftover_processes(str(build.out_dir)) == []


def stage_build(tmp_path: Path, command: str) -> Build:
    root = bootkit.make_root_tree(tmp_path / "root")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return Build(
        out_dir,
        "--root",
        str(root),
        "--partition-table",
        "legacy",
        "--format",
        "qcow2",
        "--source-date-epoch",
        EPOCH,
        "--install-bootloader",
        command,
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_the_stage_command_runs(tmp_path: Path, signum: int) -> None:
    """The command prints a line, then sleeps: the line reaches the progress stream while the
    command still runs (the stage speaks as it goes), then the signal stops everything."""
    build = stage_build(tmp_path, "echo stage-started-$((6 * 7)); sleep 600; echo never")
    build.wait_for("  | stage-started-42")
    seconds = build.stop(signum)
    assert "  | never" not in build.lines
    assert_stopped_cleanly(build, signum, seconds)


@pytest.mark.slow
def test_sigint_while_the_appliance_starts(tmp_path: Path) -> None:
    build = stage_build(tmp_path, "echo should-not-run")
    build.wait_for("libguestfs: starting the appliance")
    time.sleep(3)  # QEMU (or supermin) is running by now
    seconds = build.stop(signal.SIGINT)
    assert "  | should-not-run" not in build.lines
    assert_stopped_cleanly(build, signal.SIGINT, seconds)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_while_postvm_runs(tmp_path: Path, signum: int) -> None:
    """postVM's shell and what it started (a background job too) are killed with it."""
    root = bootkit.make_root_tree(tmp_path / "root")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    flag = tmp_path / "postvm-started"
    build = Build(
        out_dir,
        "--root",
        str(root),
        "--partition-table",
        "efi",
        "--source-date-epoch",
        EPOCH,
        "--post-vm",
        f"sleep 600 & touch {flag}; sleep 600; echo never",
    )
    deadline = time.monotonic() + REACH_TIMEOUT
    while not flag.exists():
        assert build.proc.poll() is None, build.stderr()
        assert time.monotonic() < deadline, build.stderr()
        time.sleep(0.1)
    seconds = build.stop(signum)
    assert_stopped_cleanly(build, signum, seconds)


def test_sigterm_while_qemu_img_converts(tmp_path: Path) -> None:
    """The conversion's process group is killed.  A conversion of a small image is over in a
    moment, so a stand-in ``qemu-img`` first on the PATH (a shell script) announces itself and
    sleeps in a child that carries the build's paths in its environment; the real qemu-img is
    not needed for what is tested here: what the build does with a conversion it must stop."""
    root = bootkit.make_root_tree(tmp_path / "root")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    flag = tmp_path / "converting"
    fake = tmp_path / "bin" / "qemu-img"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nexport ARGS="$*"\ntouch {flag}\nsleep 600\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}")
    build = Build(
        out_dir,
        "--root",
        str(root),
        "--partition-table",
        "legacy",
        "--format",
        "qcow2",
        "--source-date-epoch",
        EPOCH,
        env=env,
    )
    deadline = time.monotonic() + REACH_TIMEOUT
    while not flag.exists():
        assert build.proc.poll() is None, build.stderr()
        assert time.monotonic() < deadline, build.stderr()
        time.sleep(0.1)
    assert leftover_processes(str(out_dir)) != []  # the stand-in's sleep, found by its paths
    seconds = build.stop(signal.SIGTERM)
    assert_stopped_cleanly(build, signal.SIGTERM, seconds)
