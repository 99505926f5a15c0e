"""Open any disk image read-only as a random-access byte source, without a full raw copy.

Formats are detected by their magic, never by the file name:

* raw: read natively with ``pread``; holes are found with ``SEEK_DATA``/``SEEK_HOLE``;
* fixed VHD (a raw disk followed by a 512-byte ``conectix`` footer): read natively;
* qcow2, vdi, dynamic VHD ("vpc"): ``qemu-img map --output=json`` gives, for every guest range,
  whether it holds data and where in the file it is stored; uncompressed data is then read
  natively from the image file and unallocated ranges read as zeros.  Ranges that have data but
  no file offset (compressed qcow2 clusters) are served from a temporary raw conversion made on
  first need (``qemu-img convert``), deleted on :meth:`Source.close`.

Images with a backing file or an external data file are refused: a hostile image must not make
us open other files.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ImageError, SourceError, ToolError

log = logging.getLogger(__name__)

QCOW2_MAGIC = b"QFI\xfb"
VDI_SIGNATURE = 0xBEDA107F  # little-endian u32 at 0x40
VHD_COOKIE = b"conectix"

#: largest single read we serve (a hostile structure may ask for more; readers bound it too)
MAX_READ = 1 << 30


@dataclass(frozen=True)
class Extent:
    """One guest range: ``start``/``length`` in the guest; ``offset`` in the file, or None.

    ``kind`` is ``"data"`` (read the file at ``offset``), ``"zero"`` (reads as zeros) or
    ``"convert"`` (data without a plain file offset: compressed; read from a raw conversion).
    """

    start: int
    length: int
    kind: str
    offset: int | None = None


def detect_format(path: str, fd: int, file_size: int) -> str:
    """Name the format of the open image by its magic: raw, vhd-fixed, qcow2, vdi or vpc."""
    head = os.pread(fd, 512, 0)
    if head[:4] == QCOW2_MAGIC:
        return "qcow2"
    if len(head) >= 0x44 and int.from_bytes(head[0x40:0x44], "little") == VDI_SIGNATURE:
        return "vdi"
    if head[:8] == VHD_COOKIE:
        return "vpc"
    if file_size >= 1024 and file_size % 512 == 0:
        tail = os.pread(fd, 512, file_size - 512)
        # disk type (big-endian u32 at 60): 2 = fixed
        if tail[:8] == VHD_COOKIE and int.from_bytes(tail[60:64], "big") == 2:
            return "vhd-fixed"
    return "raw"


class Source:
    """A read-only, random-access view of a disk image's guest bytes.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceError(f"{self.path}: cannot open: {e.strerror}") from None
        self._tmpdir: str | None = None
        self._raw_fd: int | None = None
        try:
            st = os.fstat(self.fd)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                raise SourceError(f"{self.path}: not a regular file or block device")
            self.file_size = st.st_size if stat.S_ISREG(st.st_mode) else _blk_size(self.fd)
            self.format = detect_format(self.path, self.fd, self.file_size)
            self.extents: list[Extent] | None = None
            if self.format == "raw":
                self.size = self.file_size
            elif self.format == "vhd-fixed":
                self.size = self.file_size - 512
            else:
                self.size, self.extents = _qemu_map(self.path, self.format)
            self._starts = [e.start for e in self.extents] if self.extents else []
        except BaseException:
            self.close()
            raise

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the image and delete any temporary conversion."""
        for attr in ("_raw_fd", "fd"):
            fd = getattr(self, attr, None)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # -- reading ---------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at guest ``offset``; short only at the end of the image."""
        if offset < 0 or length < 0:
            raise ImageError(f"{self.path}: read at {offset} of {length} bytes is out of range")
        if length > MAX_READ:
            raise ImageError(f"{self.path}: refusing a single read of {length} bytes")
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if self.extents is None:
            return _pread_full(self.fd, end - offset, offset)
        out = bytearray()
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        pos = offset
        while pos < end and i < len(self.extents):
            ext = self.extents[i]
            ext_end = ext.start + ext.length
            if ext_end <= pos:
                i += 1
                continue
            n = min(end, ext_end) - pos
            if ext.kind == "zero":
                out += bytes(n)
            elif ext.kind == "data":
                assert ext.offset is not None
                chunk = _pread_full(self.fd, n, ext.offset + (pos - ext.start))
                out += chunk
                if len(chunk) < n:  # file shorter than its own map says
                    raise ImageError(
                        f"{self.path}: data for guest offset {pos} lies past the end of the file"
                    )
            else:
                out += _pread_full(self._converted(), n, pos)
            pos += n
            i += 1
        if pos < end:
            out += bytes(end - pos)
        return bytes(out)

    def data_ranges(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """Yield ``(offset, length)`` of guest ranges that may hold non-zero bytes.

        Everything outside the yielded ranges reads as zeros.  Ranges are in order, and
        clipped to ``[start, end)``.
        """
        end = self.size if end is None else min(end, self.size)
        if self.extents is not None:
            for e in self.extents:
                if e.kind == "zero":
                    continue
                a, b = max(start, e.start), min(end, e.start + e.length)
                if a < b:
                    yield a, b - a
            return
        pos = start
        limit = end
        while pos < limit:
            try:
                d = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos; EINVAL: unsupported
                if pos == start and not _seek_supported(self.fd):
                    yield start, limit - start
                return
            if d >= limit:
                return
            try:
                h = os.lseek(self.fd, d, os.SEEK_HOLE)
            except OSError:
                h = limit
            h = min(h, limit)
            yield d, h - d
            pos = h

    def _converted(self) -> int:
        """The fd of a temporary raw conversion of the whole image (made on first call)."""
        if self._raw_fd is None:
            self._tmpdir = tempfile.mkdtemp(prefix="pydiskimg-audit-")
            raw = os.path.join(self._tmpdir, "raw.img")
            log.info("%s: compressed clusters: converting to a temporary raw image", self.path)
            _run(["qemu-img", "convert", "-f", self.format, "-O", "raw", "-S", "4k",
                  self.path, raw], self.path)
            self._raw_fd = os.open(raw, os.O_RDONLY | os.O_CLOEXEC)
        return self._raw_fd


def open_image(path: str | os.PathLike[str]) -> Source:
    """Open ``path`` (raw, qcow2, vdi, vpc; detected by magic) as a read-only :class:`Source`."""
    return Source(path)


# -- helpers --------------------------------------------------------------------------------
def _pread_full(fd: int, length: int, offset: int) -> bytes:
    parts = []
    while length > 0:
        b = os.pread(fd, min(length, 1 << 26), offset)
        if not b:
            break
        parts.append(b)
        length -= len(b)
        offset += len(b)
    return b"".join(parts)


def _blk_size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)


def _seek_supported(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_HOLE)
        return True
    except OSError:
        return False


def _run(cmd: list[str], path: str) -> str:
    if shutil.which(cmd[0]) is None:
        raise ToolError(f"{path}: reading this image format needs {cmd[0]} (Debian: qemu-utils)")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{path}: {' '.join(cmd[:2])} timed out") from None
    if p.returncode != 0:
        msg = (p.stderr.strip().splitlines() or ["failed"])[-1]
        raise ImageError(f"{path}: {cmd[0]} {cmd[1]}: {msg}")
    return p.stdout


def _qemu_map(path: str, fmt: str) -> tuple[int, list[Extent]]:
    """Virtual size and guest->file map of a qcow2/vdi/vpc image, via qemu-img."""
    try:
        info = json.loads(_run(["qemu-img", "info", "--output=json", "-f", fmt, path], path))
    except json.JSONDecodeError:
        raise ToolError(f"{path}: qemu-img info printed no JSON") from None
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageError(f"{path}: image has a backing file; refusing to follow it")
    spec = (info.get("format-specific") or {}).get("data") or {}
    if spec.get("data-file"):
        raise ImageError(f"{path}: image has an external data file; refusing to follow it")
    size = info.get("virtual-size")
    if not isinstance(size, int) or size < 0:
        raise ImageError(f"{path}: qemu-img reports no virtual size")
    try:
        rows = json.loads(_run(["qemu-img", "map", "--output=json", "-f", fmt, path], path))
    except json.JSONDecodeError:
        raise ToolError(f"{path}: qemu-img map printed no JSON") from None
    extents: list[Extent] = []
    pos = 0
    for r in rows:
        start, length = int(r["start"]), int(r["length"])
        if start != pos or length < 0:
            raise ImageError(f"{path}: qemu-img map has a gap or overlap at {start}")
        if not r.get("data"):
            kind, off = "zero", None
        elif "offset" in r and not r.get("compressed"):
            kind, off = "data", int(r["offset"])
        else:
            kind, off = "convert", None
        if extents and extents[-1].kind == kind and kind != "data":
            last = extents[-1]
            extents[-1] = Extent(last.start, last.length + length, kind)
        else:
            extents.append(Extent(start, length, kind, off))
        pos = start + length
    if pos != size:
        raise ImageError(f"{path}: qemu-img map covers {pos} bytes, image is {size}")
    return size, extents
