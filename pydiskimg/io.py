"""The image file: write at an offset, copy a range from a source file, leave holes.

Every format writer goes through :class:`Image`, so each can be tested on a sparse temporary
file, and a filesystem can be written at a byte offset inside a whole disk image
(``image.view(offset)``).  :func:`atomic_output` makes sure no partial output survives a
failure or an interruption.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterator

from .errors import SourceError, UsageError

_COPY_CHUNK = 1 << 30


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

    def copy_from(self, src_fd: int, src_offset: int, offset: int, length: int) -> int:
        """Copy ``length`` bytes of ``src_fd`` at ``src_offset`` to ``offset``, kernel-side.

        Returns the number of bytes copied; fewer than ``length`` means the source ended early.
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
                    if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    use_cfr = False
                    continue
            else:
                buf = os.pread(src_fd, min(want, 1 << 24), src_offset + done)
                if buf:
                    os.pwrite(self.fd, buf, dst + done)
                n = len(buf)
            if n == 0:
                break
            done += n
        return done

    def close(self) -> None:
        os.close(self.fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    On any exception, ``KeyboardInterrupt`` and SIGTERM included, the temporary file is removed
    and ``path`` is left as it was.
    """
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{path}: output folder {parent} does not exist")
    tmp = os.path.join(parent, f".{os.path.basename(path)}.pydiskimg-{os.getpid()}.tmp")
    previous = signal.getsignal(signal.SIGTERM)

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    installed = False
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _term)
        installed = True
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)


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
