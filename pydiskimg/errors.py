"""One exception root for pydiskimg, split by who is at fault.

* ``ImageError`` and its per-family subclasses: the image being read is malformed.
* ``UsageError``: the request is invalid (bad option, bad value, does not fit).
* ``SourceError``: the source tree cannot be read as asked (unreadable, vanished, changed).
* ``ToolError``: an external tool (qemu-img, libguestfs) failed.
* ``OutputError``: the output cannot be written (no space, quota, I/O error, read-only).
* ``InternalError``: a bug in pydiskimg.

Apart from the root: ``Interrupted`` (a ``KeyboardInterrupt``) for SIGINT and SIGTERM.

The CLI prints ``str(error)`` on one line and exits with status 2.
"""

from __future__ import annotations


class Error(Exception):
    """Root of every error pydiskimg raises on purpose."""


class UsageError(Error, ValueError):
    """An invalid or impossible request: bad option value, size too small, unknown name."""


class DoesNotFitError(UsageError):
    """A fixed size is too small; the message says how much is needed."""

    def __init__(self, what: str, needed: int, given: int) -> None:
        self.needed = needed
        self.given = given
        super().__init__(
            f"{what}: {given} bytes is too small, at least {needed} bytes "
            f"({-(-needed // 1048576)} MiB) are needed"
        )


class SourceError(Error, OSError):
    """A source file or folder cannot be read as planned."""


class OutputError(Error):
    """The output cannot be written: not enough space (before or during the write), a quota,
    an I/O error, a read-only filesystem.  Not an ``OSError`` subclass on purpose: code that turns
    a source's ``OSError`` into a :class:`SourceError` must not catch it."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno  #: the OS error behind it, if any (ENOSPC...)


class ImageError(Error):
    """The image being read is malformed."""


class ChecksumError(ImageError):
    """A checksum does not match; carries the expected and found values."""

    def __init__(self, where: str, expected: int, found: int) -> None:
        self.expected = expected
        self.found = found
        super().__init__(f"{where}: checksum is {found:#010x}, expected {expected:#010x}")


class MBRError(ImageError):
    """Malformed MBR."""


class GPTError(ImageError):
    """Malformed GPT."""


class Ext4Error(ImageError):
    """Malformed ext4 filesystem."""


class FATError(ImageError):
    """Malformed FAT filesystem."""


class ToolError(Error):
    """An external tool (qemu-img, libguestfs, a user command) failed."""


class InternalError(Error):
    """A bug in pydiskimg: an invariant did not hold."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the build stops, cleaning up as it unwinds.

    A ``KeyboardInterrupt`` (not an :class:`Error`): no ``except Exception`` may swallow it.
    The CLI exits with status 128 + ``signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)
