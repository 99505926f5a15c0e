"""Format conversion through ``qemu-img`` (Debian's ``qemu-utils``), with deterministic headers.

``qemu-img convert`` writes random identifiers and the wall clock into two of the formats the
seed offers (found by converting the same raw image twice and diffing the bytes, then reading
QEMU's ``block/vdi.c`` and ``block/vpc.c``):

* **vdi**: ``uuid_image`` and ``uuid_last_snap`` (random UUIDs).  ``uuid_link`` and
  ``uuid_parent`` stay null (QEMU refuses to open a VDI where they are not).
* **vpc**: the footer's ``timestamp`` (seconds since 2000-01-01 UTC) and ``uuid`` (unique id),
  and so its ``checksum``; the footer is written twice (offset 0 and end of file).  The dynamic
  disk header holds nothing variable.
* **qcow2** (plain and ``-c``) and **raw**: no clock, no randomness; nothing to pin.

In deterministic mode :func:`convert` pins them: UUIDs derived from the disk GUID with
:func:`pydiskimg.ids.hmac_v4` (messages ``b"vdi-image-uuid"``, ``b"vdi-last-snap-uuid"``,
``b"vpc-unique-id"``), the VHD timestamp from ``timestamp`` (``SOURCE_DATE_EPOCH``) clamped to
the VHD range, checksums recomputed.

vpc is written with ``force_size=on``: its virtual size is then exactly the raw image's size, so
converting back gives the same bytes (without it qemu-img rounds the size up to a CHS geometry,
as the seed's vpc images are).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import construct

from . import procs
from . import qemu_structs as qs
from .errors import ImageError, InternalError, ToolError, UsageError
from .ids import hmac_v4
from .io import atomic_output, output_failure

log = logging.getLogger(__name__)

#: pydiskimg format name -> (qemu-img output format, extra ``convert`` arguments).
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "raw": ("raw", ()),
    "qcow2": ("qcow2", ()),
    "qcow2-compressed": ("qcow2", ("-c",)),
    "vdi": ("vdi", ()),
    "vpc": ("vpc", ("-o", "force_size=on")),
}

#: Messages for the HMAC derivation of the identifiers pinned in deterministic mode.
VDI_IMAGE_UUID_MSG = b"vdi-image-uuid"
VDI_LAST_SNAP_UUID_MSG = b"vdi-last-snap-uuid"
VPC_UNIQUE_ID_MSG = b"vpc-unique-id"

_QEMU_IMG = "qemu-img"
_CHECK_UNSUPPORTED = 63  # qemu-img check: "This image format does not support checks"


def qemu_img_available() -> bool:
    """True when ``qemu-img`` is on the PATH."""
    return shutil.which(_QEMU_IMG) is not None


def _qemu_img() -> str:
    exe = shutil.which(_QEMU_IMG)
    if exe is None:
        raise ToolError(
            "qemu-img: not found on the PATH; install Debian's qemu-utils "
            "(needed for every --format but raw)"
        )
    return exe


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


def _run(args: list[str], what: str) -> subprocess.CompletedProcess[str]:
    """Run qemu-img with ``args``; a failure becomes a one-line ToolError naming ``what``."""
    cmd = [_qemu_img(), *args]
    log.debug("running %s", " ".join(cmd))
    try:
        proc = procs.run(  # an interrupt kills qemu-img too
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env={**os.environ, "LC_ALL": "C"},
        )
    except OSError as e:
        raise ToolError(f"{what}: cannot run qemu-img: {e.strerror}") from None
    return proc


def _fail(what: str, proc: subprocess.CompletedProcess[str]) -> ToolError:
    msg = _last_line(proc.stderr or proc.stdout)
    if msg.startswith("qemu-img: "):
        msg = msg[len("qemu-img: ") :]
    return ToolError(f"{what}: qemu-img failed (exit {proc.returncode}): {msg}")


def _parse(struct: construct.Struct, data: bytes, where: str) -> Any:
    """The one place construct's exceptions become pydiskimg errors for these headers."""
    try:
        return struct.parse(data)
    except (construct.ConstructError, KeyError, ValueError) as e:
        raise ImageError(f"{where}: not a valid header: {str(e).splitlines()[0]}") from None


def _build(struct: construct.Struct, value: Any, where: str) -> bytes:
    try:
        return bytes(struct.build(value))
    except (construct.ConstructError, KeyError, ValueError) as e:
        raise InternalError(f"{where}: cannot build header: {str(e).splitlines()[0]}") from None


def vhd_checksum(block: bytes, checksum_offset: int) -> int:
    """VHD checksum: one's complement of the byte sum, the 4-byte checksum field counted as zero."""
    total = sum(block) - sum(block[checksum_offset : checksum_offset + 4])
    return ~total & 0xFFFFFFFF


def vhd_timestamp(unix_time: int) -> int:
    """A Unix time as a VHD timestamp (seconds since 2000-01-01 UTC), clamped to ``[0, 2**32-1]``."""
    return min(max(unix_time - qs.VHD_EPOCH, 0), 0xFFFFFFFF)


@dataclass(frozen=True)
class PinnedIds:
    """The values deterministic mode writes; derived from the disk GUID and the timestamp."""

    vdi_image_uuid: uuid.UUID
    vdi_last_snap_uuid: uuid.UUID
    vpc_unique_id: uuid.UUID
    vpc_timestamp: int

    @classmethod
    def derive(cls, disk_guid: uuid.UUID, timestamp: int) -> PinnedIds:
        key = disk_guid.bytes
        return cls(
            vdi_image_uuid=hmac_v4(key, VDI_IMAGE_UUID_MSG),
            vdi_last_snap_uuid=hmac_v4(key, VDI_LAST_SNAP_UUID_MSG),
            vpc_unique_id=hmac_v4(key, VPC_UNIQUE_ID_MSG),
            vpc_timestamp=vhd_timestamp(timestamp),
        )


def _pin_vdi(path: str, ids: PinnedIds) -> None:
    with open(path, "r+b") as f:
        raw = f.read(qs.VDI_HEADER_SIZE)
        if len(raw) != qs.VDI_HEADER_SIZE:
            raise ToolError(f"{path}: qemu-img wrote a VDI file shorter than its header")
        hdr = _parse(qs.VdiHeader, raw, f"{path}: VDI header")
        if hdr.uuid_link != bytes(16) or hdr.uuid_parent != bytes(16):
            raise InternalError(f"{path}: qemu-img wrote a VDI with a link or parent UUID")
        hdr.uuid_image = ids.vdi_image_uuid.bytes_le  # IPRT byte order
        hdr.uuid_last_snap = ids.vdi_last_snap_uuid.bytes_le
        new = _build(qs.VdiHeader, hdr, f"{path}: VDI header")
        f.seek(0)
        f.write(new)


def _pin_vpc(path: str, ids: PinnedIds) -> None:
    size = os.path.getsize(path)
    n = qs.VHD_FOOTER_SIZE
    if size < 2 * n:
        raise ToolError(f"{path}: qemu-img wrote a VHD file of only {size} bytes")
    with open(path, "r+b") as f:
        head = f.read(n)
        f.seek(size - n)
        tail = f.read(n)
        footer = _parse(qs.VhdFooter, tail, f"{path}: VHD footer at {size - n}")
        dynamic = head[:8] == b"conectix"
        if dynamic and head != tail:
            raise InternalError(f"{path}: the VHD footer copies at 0 and {size - n} differ")
        footer.timestamp = ids.vpc_timestamp
        footer.uuid = ids.vpc_unique_id.bytes
        footer.checksum = 0
        block = _build(qs.VhdFooter, footer, f"{path}: VHD footer")
        footer.checksum = vhd_checksum(block, 0x40)
        block = _build(qs.VhdFooter, footer, f"{path}: VHD footer")
        if dynamic:
            f.seek(0)
            f.write(block)
        f.seek(size - n)
        f.write(block)


def convert(
    raw_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    fmt: str,
    *,
    deterministic: bool,
    disk_guid: uuid.UUID,
    timestamp: int,
) -> None:
    """Convert the raw image at ``raw_path`` to ``out_path`` in ``fmt``.

    ``fmt`` is one of :data:`FORMATS`.  The output is written to a temporary name beside
    ``out_path`` (:func:`pydiskimg.io.atomic_output`) and renamed only when qemu-img succeeded
    and, in deterministic mode, the headers are pinned: a failure or an interruption leaves no
    partial output, so callers need not wrap this in ``atomic_output`` themselves.
    ``raw_path`` is only read; it may be a temporary file the caller removes afterwards.

    Raises :class:`~pydiskimg.errors.UsageError` for an unknown format and
    :class:`~pydiskimg.errors.ToolError` (one line) when qemu-img is missing or fails.
    """
    if fmt not in FORMATS:
        raise UsageError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    raw_path = os.fspath(raw_path)
    out_path = os.fspath(out_path)
    if not os.path.isfile(raw_path):
        raise UsageError(f"{raw_path}: raw image not found")
    qfmt, extra = FORMATS[fmt]
    _qemu_img()  # a clear error before creating anything
    with atomic_output(out_path) as tmp:
        proc = _run(
            ["convert", "-q", "-f", "raw", "-O", qfmt, *extra, raw_path, tmp],
            f"convert {raw_path} to {fmt}",
        )
        if proc.returncode != 0:
            # the output side failing (disk full...) is said as for any other write
            for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
                if os.strerror(code) in (proc.stderr or ""):
                    raise output_failure(out_path, OSError(code, os.strerror(code)))
            raise _fail(f"convert {raw_path} to {fmt}", proc)
        if deterministic:
            ids = PinnedIds.derive(disk_guid, timestamp)
            if qfmt == "vdi":
                _pin_vdi(tmp, ids)
            elif qfmt == "vpc":
                _pin_vpc(tmp, ids)
        os.chmod(tmp, 0o644)


def info(path: str | os.PathLike[str], fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` as a dict (``format``, ``virtual-size``, ...)."""
    path = os.fspath(path)
    args = ["info", "--output=json"]
    if fmt is not None:
        args += ["-f", FORMATS[fmt][0] if fmt in FORMATS else fmt]
    proc = _run([*args, path], f"info {path}")
    if proc.returncode != 0:
        raise _fail(f"info {path}", proc)
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        raise ToolError(f"info {path}: qemu-img printed no JSON") from None


def _check_vpc_structure(path: str) -> None:
    """What qemu-img has no ``check`` for in vpc: both footers equal, both checksums right."""
    size = os.path.getsize(path)
    n = qs.VHD_FOOTER_SIZE
    if size < n:
        raise ImageError(f"{path}: {size} bytes is too short for a VHD footer")
    with open(path, "rb") as f:
        f.seek(size - n)
        tail = f.read(n)
        footer = _parse(qs.VhdFooter, tail, f"{path}: VHD footer at {size - n}")
        want = vhd_checksum(tail, 0x40)
        if footer.checksum != want:
            raise ImageError(
                f"{path}: VHD footer checksum is {footer.checksum:#010x}, expected {want:#010x}"
            )
        if footer.type != 3:
            return
        f.seek(0)
        if f.read(n) != tail:
            raise ImageError(f"{path}: VHD footer copies at 0 and {size - n} differ")
        f.seek(footer.data_offset)
        dyn_raw = f.read(qs.VHD_DYN_HEADER_SIZE)
        dyn = _parse(qs.VhdDynDiskHeader, dyn_raw, f"{path}: VHD dynamic header")
        want = vhd_checksum(dyn_raw, 0x24)
        if dyn.checksum != want:
            raise ImageError(
                f"{path}: VHD dynamic header checksum is {dyn.checksum:#010x}, expected {want:#010x}"
            )


def check(path: str | os.PathLike[str], fmt: str) -> str:
    """Check an image with ``qemu-img check``; returns qemu-img's summary line.

    Corruption, leaks or a file qemu-img cannot open raise :class:`ToolError` with qemu-img's
    message.  qemu-img has no check for vpc (exit 63): for it the image must open cleanly
    (``qemu-img info``, which verifies the footer checksum) and pydiskimg verifies the footer
    copies and the dynamic header checksum itself.  raw has nothing to check.
    """
    path = os.fspath(path)
    if fmt not in FORMATS:
        raise UsageError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    qfmt = FORMATS[fmt][0]
    if qfmt == "raw":
        return "raw: nothing to check"
    proc = _run(["check", "-f", qfmt, path], f"check {path}")
    if proc.returncode == _CHECK_UNSUPPORTED:
        info(path, fmt)
        _check_vpc_structure(path)
        return f"{qfmt}: qemu-img has no check for this format; it opens cleanly, headers verified"
    if proc.returncode != 0:
        raise _fail(f"check {path} ({qfmt})", proc)
    for line in proc.stdout.splitlines():
        if line.startswith("No errors"):
            return line.strip()
    return _last_line(proc.stdout)


def compare(raw_path: str | os.PathLike[str], image_path: str | os.PathLike[str], fmt: str) -> None:
    """``qemu-img compare`` of the contents, plus equal virtual sizes; ToolError when they differ.

    (``compare -s`` would also compare allocation, which differs between a sparse raw file and
    a converted image holding the same bytes.)
    """
    qfmt = FORMATS[fmt][0] if fmt in FORMATS else fmt
    raw_size = os.path.getsize(raw_path)
    virt = int(info(image_path, fmt)["virtual-size"])
    if virt != raw_size:
        raise ToolError(f"{image_path}: virtual size is {virt} bytes, expected {raw_size}")
    proc = _run(
        ["compare", "-q", "-f", "raw", "-F", qfmt, os.fspath(raw_path), os.fspath(image_path)],
        f"compare {image_path}",
    )
    if proc.returncode != 0:
        raise _fail(f"compare {raw_path} with {image_path}", proc)
