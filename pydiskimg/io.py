"""The image file: write at an offset, copy a range from a source file, leave holes.

Every format writer goes through :class:`Image`, so each can be tested on a sparse temporary
file, and a filesystem can be written at a byte offset inside a whole disk image
(``image.view(offset)``).  :func:`atomic_output` makes sure no partial output survives a
failure or an interruption.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal
from collections.abc import Iterator

from .errors import Error, Interrupted, OutputError, SourceError, UsageError

_COPY_CHUNK = 1 << 30

#: errors of copy_file_range that only mean "not here": fall back to pread + pwrite
_CFR_UNSUPPORTED = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
#: errors that can only come from the side being written
_WRITE_SIDE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


class Image:
    """A random-access writable image, optionally seen through a base offset.

    Writes never extend the file past ``size`` when ``size`` is known; holes stay holes since
    nothing is written where there is no data.
    """

    def __init__(self, fd: int, base: int = 0, size: int | None = None) -> None:
        self.fd = fd
        self.base = base
        self.size = size

    @classmethod
    def create(cls, path: str | os.PathLike[str], size: int) -> Image:
        """Create (or truncate) ``path`` as a sparse file of ``size`` bytes."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        os.ftruncate(fd, size)
        return cls(fd, 0, size)

    def view(self, offset: int, size: int | None = None) -> Image:
        """The same file seen from ``offset`` (for example a partition)."""
        return Image(self.fd, self.base + offset, size)

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or (self.size is not None and offset + length > self.size):
            raise AssertionError(
                f"write of {length} bytes at {offset} outside image of {self.size} bytes"
            )

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``offset`` (relative to this view)."""
        mv = memoryview(data).cast("B")
        self._check(offset, len(mv))
        pos = self.base + offset
        while mv:
            n = os.pwrite(self.fd, mv, pos)
            mv = mv[n:]
            pos += n

    def copy_from(
        self, src_fd: int, src_offset: int, offset: int, length: int, src_name: str | None = None
    ) -> int:
        """Copy ``length`` bytes of ``src_fd`` at ``src_offset`` to ``offset``, kernel-side.

        Returns the number of bytes copied; fewer than ``length`` means the source ended early.
        With ``src_name``, a failure to read the source is a :class:`SourceError` naming it; a
        failure to write stays an ``OSError`` (see :func:`output_errors`).  An error
        copy_file_range cannot attribute (EIO) is retried as a read then a write, which can.
        """
        self._check(offset, length)
        dst = self.base + offset
        done = 0
        use_cfr = hasattr(os, "copy_file_range")
        while done < length:
            want = min(length - done, _COPY_CHUNK)
            n = 0
            if use_cfr:
                try:
                    n = os.copy_file_range(src_fd, self.fd, want, src_offset + done, dst + done)
                except OSError as e:
                    if e.errno in _WRITE_SIDE:
                        raise
                    use_cfr = False
                    if e.errno in _CFR_UNSUPPORTED:
                        continue
                    n = self._read_write(src_fd, src_offset + done, dst + done, want, src_name)
            else:
                n = self._read_write(src_fd, src_offset + done, dst + done, want, src_name)
            if n == 0:
                break
            done += n
        return done

    def _read_write(self, src_fd: int, src: int, dst: int, want: int, src_name: str | None) -> int:
        try:
            buf = os.pread(src_fd, min(want, 1 << 24), src)
        except OSError as e:
            if src_name is None:
                raise
            raise SourceError(f"{src_name}: cannot read: {e.strerror}") from None
        mv = memoryview(buf)
        pos = dst
        while mv:
            k = os.pwrite(self.fd, mv, pos)
            mv = mv[k:]
            pos += k
        return len(buf)

    def sync(self) -> None:
        """fsync: delayed allocation may only report ENOSPC or EIO here."""
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class _SignalState:
    """What :func:`on_signal` does: raise, hold (outputs are moving into place) or ignore (one
    was raised already and the cleanups run, or the outputs are in place: the command is
    done)."""

    held: list[int] | None = None
    stopping = False
    done = False

    def reset(self) -> None:
        self.held, self.stopping, self.done = None, False, False


signals = _SignalState()


def on_signal(signum: int, frame: object) -> None:
    """The one SIGINT/SIGTERM handler (installed by the CLI, and by :func:`atomic_output` for
    SIGTERM): raise :class:`Interrupted`, which unwinds through every cleanup, so nothing
    partial is left; while outputs move into place (:func:`commit`) the signal is held, and once
    they are in place it is ignored."""
    if signals.done or signals.stopping:
        return  # later signals must not cut the cleanups short
    if signals.held is not None:
        signals.held.append(signum)
        return
    signals.stopping = True
    raise Interrupted(signum)


@contextlib.contextmanager
def commit(final: bool = True) -> Iterator[None]:
    """Around the renames that put outputs in place: a signal arriving meanwhile is raised only
    at the end (the caller then removes what it moved); with ``final``, when none came, the
    command is done and later signals are ignored."""
    outer = signals.held
    signals.held = []
    try:
        yield
    finally:
        held, signals.held = signals.held, outer
    if held:
        signals.stopping = True
        raise Interrupted(held[0])
    if final and outer is None and signal.getsignal(signal.SIGINT) is on_signal:
        signals.done = True  # (only under the CLI: a library caller keeps its own signals)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], final: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    On any exception, ``KeyboardInterrupt`` and SIGTERM included, the temporary file is removed
    and ``path`` is left as it was (a signal during the rename undoes it).  ``final``: this
    rename completes the command (see :func:`commit`).
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{path}: output folder {parent} does not exist")
    tmp = os.path.join(parent, f".{os.path.basename(path)}.pydiskimg-{os.getpid()}.tmp")
    previous = signal.getsignal(signal.SIGTERM)
    installed = False
    if previous is not on_signal:  # a library call, not under the CLI: a state of its own
        with contextlib.suppress(ValueError):  # not in the main thread
            signal.signal(signal.SIGTERM, on_signal)
            installed = True
            signals.reset()
    renamed = False
    try:
        yield tmp
        with commit(final):
            os.replace(tmp, path)
            renamed = True
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path if renamed else tmp)
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)
            signals.reset()


def open_source(path: str) -> int:
    """Open a source file for reading, turning OS errors into a one-line SourceError."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceError(f"{path}: cannot read: {e.strerror}") from None
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e.strerror}") from None


# -- the output side: free space, and write errors as one line --------------------------------


def available_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes this process may still write in ``folder``'s filesystem (statvfs; root may use
    the blocks reserved for it)."""
    st = os.statvfs(folder)
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def _folder(path: str | os.PathLike[str]) -> str:
    return os.path.dirname(os.path.abspath(path))


def check_space(path: str | os.PathLike[str], needed: int, what: str = "") -> None:
    """Refuse, before writing, an output whose ``needed`` bytes do not fit in its folder."""
    folder = _folder(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)  # the default NAME/ folder is made later
    avail = available_bytes(folder)
    if needed > avail:
        raise OutputError(
            f"{os.fspath(path)}: not enough free space in {folder}{' for ' + what if what else ''}: "
            f"{needed:,} bytes needed, {avail:,} available"
        )


def output_failure(path: str | os.PathLike[str], e: OSError, needed: int | None = None) -> OutputError:
    """A write error on ``path``'s side as one line; for a full disk, what is left there."""
    text = f"{os.fspath(path)}: cannot write: {e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        folder = _folder(path)
        try:
            avail = f"{available_bytes(folder):,} bytes available"
        except OSError:
            avail = "free space unknown"
        need = f"{needed:,} bytes needed, " if needed else ""
        text += f" (in {folder}: {need}{avail})"
    return OutputError(text, e.errno)


@contextlib.contextmanager
def output_errors(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[None]:
    """Around code that writes ``path`` (or files beside it): an ``OSError`` that is not already
    a pydiskimg error (sources are read through :func:`open_source` and ``src_name``, which
    raise :class:`SourceError`) becomes a one-line :class:`OutputError`."""
    try:
        yield
    except Error:
        raise
    except OSError as e:
        raise output_failure(path, e, needed) from None


def check_output_path(path: str | os.PathLike[str], what: str, *, inputs: tuple[str, ...] = (),
                      trees: tuple[str, ...] = (), may_create_folder: bool = False) -> None:
    """Validate an output before any work: its folder exists and is writable, the path is not a
    folder, and it is neither one of ``inputs`` nor inside one of the source ``trees``."""
    path = os.fspath(path)
    folder = _folder(path)
    if not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if not (may_create_folder and os.path.isdir(parent)):
            raise UsageError(f"{what}: folder {folder} does not exist")
        folder = parent
    if not os.access(folder, os.W_OK | os.X_OK):
        reason = "read-only filesystem" if _read_only(folder) else "permission denied"
        raise UsageError(f"{what}: cannot write in folder {folder}: {reason}")
    if os.path.isdir(path):
        raise UsageError(f"{what}: {path} is a folder; expected an image file name")
    for src in inputs:
        if os.path.exists(path) and os.path.exists(src) and os.path.samefile(path, src):
            raise UsageError(f"{what}: {path} is the same file as the input {src}")
    real = os.path.realpath(path)
    for tree in trees:
        top = os.path.realpath(tree)
        if os.path.commonpath([real, top]) == top:
            raise UsageError(f"{what}: {path} is inside the source tree {tree}: the image would "
                             "be read as one of its own inputs")


def _read_only(folder: str) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_readable(path: str, what: str, folder: bool = False) -> None:
    """A source file or folder exists and can be read (and, a folder, listed)."""
    if not os.path.lexists(path):
        raise UsageError(f"{what}: {path}: no such {'folder' if folder else 'file'}")
    if folder and not os.path.isdir(path):
        raise UsageError(f"{what}: {path}: not a folder")
    if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
        raise UsageError(f"{what}: {path}: cannot read: permission denied")


# ---------------------------------------------------------------------------------------------
# making ranges read as zeros (normalization after the bootloader stage)
# ---------------------------------------------------------------------------------------------

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_ZERO_CHUNK = 1 << 20


def _libc_fallocate() -> object | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        f = ctypes.CDLL(name, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    f.restype = ctypes.c_int
    return f


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make ``length`` bytes at ``offset`` of ``fd`` read as zeros: a hole where the file
    system can punch one, else written zeros (only where they do not read as zeros already)."""
    if length <= 0:
        return
    fal = _libc_fallocate()
    if fal is not None:
        if fal(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:  # type: ignore[operator]
            return
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err))
    end = offset + length
    pos = offset
    zeros = bytes(_ZERO_CHUNK)
    while pos < end:
        n = min(_ZERO_CHUNK, end - pos)
        if any(os.pread(fd, n, pos)):
            os.pwrite(fd, zeros[:n], pos)
        pos += n


def data_ranges(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """Ranges of [start, end) of ``fd`` that are not holes (SEEK_DATA/SEEK_HOLE; the whole
    range where the file system does not tell)."""
    out: list[tuple[int, int]] = []
    pos = start
    try:
        while pos < end:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            if d >= end:
                break
            h = min(os.lseek(fd, d, os.SEEK_HOLE), end)
            out.append((d, h))
            pos = h
    except OSError:
        return [(start, end)]
    return out
