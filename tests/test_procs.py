"""pydiskimg.procs: children that die with the build.  No VM here: plain ``sleep`` children,
judged by the kernel's process table (/proc) and by their exit status."""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import subprocess
import threading
import time

import pytest

from pydiskimg import procs


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def test_descendants_finds_grandchildren() -> None:
    shell = subprocess.Popen(["sh", "-c", "sleep 600 & echo $!; wait"], stdout=subprocess.PIPE, text=True)
    try:
        assert shell.stdout is not None
        grandchild = int(shell.stdout.readline())
        found = procs.descendants()
        assert {shell.pid, grandchild} <= found
        assert os.getpid() not in found
    finally:
        os.kill(grandchild, signal.SIGKILL)
        shell.kill()
        shell.wait()


def test_interruptible_returns_and_raises() -> None:
    assert procs.interruptible(lambda cancelled: 42) == 42

    def fail(cancelled: threading.Event) -> int:
        raise ValueError("from the worker")

    with pytest.raises(ValueError, match="from the worker"):
        procs.interruptible(fail)


def test_interrupt_kills_what_the_worker_started() -> None:
    """The main thread is interrupted while the worker waits on a child (as libguestfs waits on
    QEMU): the child is killed, the worker sees ``cancelled``, the interrupt goes on."""
    started: list[subprocess.Popen[bytes]] = []
    seen_cancel = threading.Event()
    older = subprocess.Popen(["sleep", "600"])  # started before the call: left alone

    def work(cancelled: threading.Event) -> None:
        child = subprocess.Popen(["sleep", "600"])
        started.append(child)
        _thread.interrupt_main()  # what SIGINT does to the main thread
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=60)  # returns once the child is killed
        if cancelled.is_set():
            seen_cancel.set()

    # interrupt_main() calls the Python-level SIGINT handler: make it Python's own for this test
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            procs.interruptible(work)
        print(f"interrupted and wound down in {time.monotonic() - t0:.2f} s")
        assert started and started[0].wait(timeout=10) == -signal.SIGKILL
        assert seen_cancel.wait(timeout=10)
        assert alive(older.pid)
    finally:
        signal.signal(signal.SIGINT, previous)
        for p in (*started, older):
            p.kill()
            p.wait()


def test_run_kills_the_whole_group() -> None:
    """procs.run interrupted by a real SIGINT (Linux hands a process-directed signal to the main
    thread, which is blocked reading the child's output): the shell and its background child
    die together, and the interrupt goes on."""
    result: list[int] = []

    def interrupt_when_started() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kids = procs.descendants()
            if len(kids) >= 3:  # the shell and its two sleeps
                result.extend(kids)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_when_started, daemon=True)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        watcher.start()
        with pytest.raises(KeyboardInterrupt):
            procs.run(["sh", "-c", "sleep 600 & sleep 600; echo never"], stdout=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)
    watcher.join()
    assert len(result) >= 3
    deadline = time.monotonic() + 5
    while any(alive(p) for p in result) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in result if alive(p)] == []
