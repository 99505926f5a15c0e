"""Child processes that stop when the build is told to stop (Ctrl-C, SIGTERM).

The CLI turns SIGINT and SIGTERM into :class:`~pydiskimg.errors.Interrupted` in the main
thread.  What runs outside Python must then be stopped too, or it outlives the build:

* :func:`run` runs a command (qemu-img, postVM's shell) in a session of its own and, when
  anything interrupts the wait, kills that whole process group (a shell's own children
  included) and reaps the leader before letting the exception go on;
* :func:`interruptible` runs blocking library code (libguestfs) in a worker thread, so the main
  thread stays free to take signals; when interrupted it kills every process started since
  the call began (the appliance's QEMU, libguestfs's recovery process, supermin), waits a
  bounded time for the worker to give up, and lets the exception go on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: How long an interrupted call may take to wind down after its processes were killed.
WIND_DOWN_SECONDS = 10.0
_POLL_SECONDS = 0.2


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """:func:`subprocess.run` (no ``check``, no ``timeout``) in a new session; on any
    exception while it runs (an interrupt) the process group is killed and reaped first."""
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate()
    except BaseException:
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc``'s process group (``proc`` leads it), reap ``proc``, close its pipes."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _children() -> dict[int, int]:
    """{pid: parent pid} of every process this machine shows in /proc."""
    table: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            table[int(name)] = int(fields[1])
    return table


def descendants(pid: int | None = None) -> set[int]:
    """Every live process below ``pid`` (default: this process), at any depth."""
    root = os.getpid() if pid is None else pid
    by_parent: dict[int, list[int]] = {}
    for child, parent in _children().items():
        by_parent.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in by_parent.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def interruptible(work: Callable[[threading.Event], T]) -> T:
    """``work(cancelled)`` in a worker thread; its result or its exception.

    The main thread waits in short slices, so SIGINT and SIGTERM reach it at once (a blocking
    C call would otherwise delay them, or run the handler inside a callback of the library).
    On an interrupt: ``cancelled`` is set (``work`` must start nothing new once it is), every
    process started since the call began is killed (again and again, until the worker ends or
    :data:`WIND_DOWN_SECONDS` pass), then the interrupt goes on.  Call from the main thread.
    """
    before = descendants()
    cancelled = threading.Event()
    done = threading.Event()
    result: list[Any] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            result.append(work(cancelled))
        except BaseException as e:  # handed to the main thread
            failure.append(e)
        finally:
            done.set()

    worker = threading.Thread(target=target, name="pydiskimg-worker", daemon=True)
    worker.start()
    try:
        while not done.wait(_POLL_SECONDS):
            pass
    except BaseException:
        cancelled.set()
        deadline = time.monotonic() + WIND_DOWN_SECONDS
        while True:
            _kill(descendants() - before)
            if done.wait(0.1) or time.monotonic() > deadline:
                break
        _kill(descendants() - before)
        raise
    if failure:
        raise failure[0]
    return result[0]
