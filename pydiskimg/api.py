"""pydiskimg's Python API: what the command line does, callable without a subprocess.

Everything here is re-exported by :mod:`pydiskimg` (``from pydiskimg import build, ImageSpec``)
and is the stable, documented surface; the command line is a thin layer over it, so the same
inputs give byte-identical images and equal reports either way.

* :class:`ImageSpec` (every ``build`` input, validated) and :func:`build` -> :class:`BuildResult`;
* :func:`inspect`, :func:`diff` -> :class:`DiffResult`, :func:`split`: the audit commands;
* :func:`make_ext4`, :func:`make_fat`, :func:`make_partition_table`: one filesystem or one
  partition table on its own (the ``ext4``, ``fat`` and ``partition`` commands);
* :class:`~pydiskimg.errors.Error`: every error raised on purpose derives from it; bad input
  raises :class:`~pydiskimg.errors.UsageError` with the command line's one-line message, and
  leaves no output behind.

Sizes are ``int`` bytes or strings read exactly as the command line reads them (``"2G"``,
``"auto"``); paths are ``str`` or :class:`os.PathLike`.  Nothing here prints unless asked
(``quiet=False``); heavy modules are imported on first call.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from .errors import Error, UsageError
from .progress import ProgressCallback, ProgressEvent
from .spec import ImageSpec, ImageSpecFields

_Path = str | os.PathLike[str]

__all__ = [
    "BuildResult",
    "DiffResult",
    "Error",
    "FilesystemInfo",
    "ImageSpec",
    "ImageSpecFields",
    "PartitionInfo",
    "ProgressCallback",
    "ProgressEvent",
    "build",
    "diff",
    "inspect",
    "make_ext4",
    "make_fat",
    "make_partition_table",
    "split",
]


# -- build ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartitionInfo:
    """One partition of a built image (the ``table.partitions[]`` items of ``build --json``)."""

    number: int
    first_lba: int
    last_lba: int  #: inclusive
    offset: int  #: bytes from the start of the disk
    size: int  #: bytes
    role: str  #: ``esp``, ``bios``, ``xbootldr``, ``root`` (or ``data``)
    type: str  #: GPT type GUID (upper case) or MBR type (``0x83``)
    type_name: str
    guid: str | None  #: GPT unique partition GUID (upper case); None for MBR
    name: str | None  #: GPT partition name; None for MBR


@dataclass(frozen=True)
class FilesystemInfo:
    """A filesystem of a built image: the root (ext4), the ESP or XBOOTLDR (vfat)."""

    type: str  #: ``ext4`` or ``vfat``
    offset: int  #: bytes from the start of the disk
    size: int  #: bytes
    uuid: str  #: ext4: the filesystem UUID; vfat: the volume ID as 8 hex digits (``3C36A6AA``)
    label: str


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build` made (or, with ``dry_run``, would make): ``build --json``'s content.

    :meth:`to_json` returns exactly the document ``pydiskimg build --json`` prints.
    """

    output: str  #: absolute path of the image
    format: str
    disk_size: int  #: bytes
    partition_table: str
    disk_guid: str | None  #: GPT disk GUID (upper case); None without a GPT
    partitions: tuple[PartitionInfo, ...]
    root: FilesystemInfo
    esp: FilesystemInfo | None
    xbootldr: FilesystemInfo | None  #: efixbootldr's second FAT32 (label BOOT)
    stages: Mapping[str, float]  #: seconds per stage (empty for a dry run)
    dry_run: bool
    _json: dict[str, Any] = field(repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The ``build --json`` document (a fresh copy)."""
        return copy.deepcopy(self._json)

    @classmethod
    def from_json(cls, d: dict[str, Any], dry_run: bool = False) -> BuildResult:
        """The result a ``build --json`` document describes."""
        table = d.get("table") or {}
        parts = tuple(
            PartitionInfo(
                number=p["number"], first_lba=p["first_lba"], last_lba=p["last_lba"],
                offset=p["offset"], size=p["size"], role=p["role"], type=p["type"],
                type_name=p["type_name"], guid=p["guid"], name=p["name"],
            )
            for p in table.get("partitions", [])
        )
        r = d["root"]
        esp, xbl = d.get("esp"), d.get("xbootldr")
        return cls(
            output=d["image"], format=d["format"], disk_size=d["disk_size"],
            partition_table=d["partition_table"], disk_guid=table.get("disk_guid"),
            partitions=parts,
            root=FilesystemInfo(r["fs_type"], r["offset"], r["size"], r["uuid"], r["label"]),
            esp=FilesystemInfo("vfat", esp["offset"], esp["size"], esp["volume_id"], "ESP") if esp else None,
            xbootldr=FilesystemInfo("vfat", xbl["offset"], xbl["size"], xbl["volume_id"], "BOOT") if xbl else None,
            stages=dict(d.get("stages", {})), dry_run=dry_run, _json=copy.deepcopy(d),
        )


def build(spec: ImageSpec, *, quiet: bool = True, progress: ProgressCallback | None = None,
          dry_run: bool = False) -> BuildResult:
    """Build the image ``spec`` describes (``pydiskimg build``).

    ``quiet=False`` prints the command line's stage lines and copy bar on stderr.
    ``progress`` is called with a :class:`ProgressEvent` as each stage starts and ends and while
    file data is copied; an exception it raises stops the build.  ``dry_run`` plans everything
    and writes nothing.  On any error (or interrupt) nothing is left at the output path.
    """
    if not isinstance(spec, ImageSpec):
        raise UsageError(f"build: expected an ImageSpec, got {type(spec).__name__}")
    from .pipeline import build as run_build

    return BuildResult.from_json(run_build(spec, quiet=quiet, dry_run=dry_run, progress=progress),
                                 dry_run=dry_run)


# -- audit ---------------------------------------------------------------------------------------
def inspect(path: _Path, *, files: bool = False) -> dict[str, Any]:
    """The partition table and filesystems of the image at ``path`` (raw, qcow2, vdi, vpc):
    the document ``pydiskimg inspect --json`` prints (shape: :mod:`pydiskimg.audit.table`).
    ``files=True`` also lists every file of each filesystem (``--files``)."""
    from .audit.table import inspect_image

    return inspect_image(os.fspath(path), files=files)


@dataclass(frozen=True)
class DiffResult:
    """The differences between two images, as ``pydiskimg diff --json`` gives them.

    Each difference is a dict ``{"scope", "item", "field", "a", "b", "text"}`` (see
    :mod:`pydiskimg.commands.diff`); ``text`` is the line ``pydiskimg diff`` prints.
    """

    a: str
    b: str
    identical: bool
    differences: tuple[dict[str, Any], ...]

    def lines(self) -> list[str]:
        """The lines ``pydiskimg diff`` prints, one per difference."""
        return [d["text"] for d in self.differences]

    def to_json(self) -> dict[str, Any]:
        """The ``diff --json`` document."""
        return {"a": self.a, "b": self.b, "identical": self.identical,
                "differences": copy.deepcopy(list(self.differences))}


def diff(a: _Path, b: _Path) -> DiffResult:
    """Every difference between the images ``a`` and ``b``, explained (``pydiskimg diff``)."""
    from .audit.diff import diff_images

    pa, pb = os.fspath(a), os.fspath(b)
    found = tuple(d.to_json() for d in diff_images(pa, pb))
    return DiffResult(pa, pb, not found, found)


def split(path: _Path, folder: _Path, *, hashes: bool = True) -> dict[str, Any]:
    """Write each partition of the image at ``path`` to ``folder/partN.img`` (sparse), the table
    areas to ``mbr.bin``, ``gpt-primary.bin``, ``gpt-backup.bin``, and ``manifest.json``;
    returns the manifest (``pydiskimg split --json``).  ``folder`` must not exist or be empty."""
    from .audit.split import split_image

    return split_image(os.fspath(path), os.fspath(folder), hashes=hashes)


# -- one filesystem, one table -------------------------------------------------------------------
def _epoch(value: int | str | None) -> int:
    """``source_date_epoch``: the value, else $SOURCE_DATE_EPOCH, else 0 (as the commands)."""
    from .commands import source_date_epoch

    if isinstance(value, bool):
        raise UsageError(f"--source-date-epoch: {value!r} is not an integer number of seconds")
    return source_date_epoch(None if value is None else str(value))


def _size(value: int | str, where: str, *, disk: bool) -> int:
    from .sizes import parse_disk_size, parse_iec

    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"{where}: {value} is negative; expected a size in bytes")
        return value
    return parse_disk_size(value, where) if disk else parse_iec(value, where)


def _guid(value: UUID | str | None, where: str) -> UUID | None:
    from .ids import parse_guid

    if value is None or isinstance(value, UUID):
        return value
    return parse_guid(value, where)


def make_ext4(
    root: _Path,
    output: _Path,
    *,
    size: int | str | None = "auto",
    additional_space: int | str = 0,
    label: str = "",
    uuid: UUID | str | None = None,
    hash_seed: UUID | str | None = None,
    contents: _Path | list[dict[str, Any]] | None = None,
    source_date_epoch: int | str | None = None,
    clamp_mtime: bool = False,
    all_root: bool = False,
    deterministic: bool = True,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """An ext4 filesystem image of the folder ``root`` at ``output`` (``pydiskimg ext4``).

    ``size``: bytes, a ``truncate -s`` size (``"512M"``; a bare number is MiB), or ``"auto"``/None:
    the smallest filesystem that holds the tree, plus ``additional_space``.  ``uuid`` defaults
    to the seed's rootFSUID; ``hash_seed`` is derived from it.  ``contents``: a JSON file or a
    list of ``{source, target, mode, user, group}`` entries to graft in.  ``source_date_epoch``
    defaults to $SOURCE_DATE_EPOCH, else 0.  Returns the geometry ``ext4 --json`` prints.
    """
    from . import ext4
    from .ext4.plan import no_gc
    from .io import check_output_path, check_readable

    ts = _epoch(source_date_epoch)
    nbytes = None if size is None or size == "auto" else _size(size, "--size", disk=True)
    extra = _size(additional_space, "--additional-space", disk=False)
    if nbytes is not None and extra:
        raise UsageError("--additional-space: only meaningful with --size auto")
    opts = ext4.Ext4Options(
        label=label,
        uuid=_guid(uuid, "--uuid") or ext4.DEFAULT_UUID,
        hash_seed=_guid(hash_seed, "--hash-seed"),
        timestamp=ts,
        deterministic=deterministic,
    )
    opts.label_bytes()  # validate before scanning
    root = os.fspath(root)
    check_readable(root, "--root", folder=True)
    if contents is not None and not isinstance(contents, list):
        check_readable(os.fspath(contents), "--contents")
    check_output_path(output, "-o", trees=(root,),
                      inputs=(os.fspath(contents),) if isinstance(contents, (str, os.PathLike)) else ())
    with no_gc():
        from .tree import scan

        clamp = ts if clamp_mtime else None
        tree = scan(root, all_root=all_root, clamp_mtime=clamp, deterministic=deterministic)
        if contents is not None:
            from .contents import apply_contents, load_contents_json

            base = ""
            if not isinstance(contents, list):
                path = os.fspath(contents)
                contents, base = load_contents_json(path), os.path.dirname(os.path.abspath(path))
            apply_contents(tree, contents, tree_root=root, timestamp=ts, base_dir=base,
                           clamp_mtime=clamp, deterministic=deterministic)
        bar = None
        if progress is not None:
            cb = progress
            text = f"writing {os.fspath(output)}"

            def bar(done: int, total: int) -> None:
                cb(ProgressEvent("write", text, done, total))

        p = ext4.make_filesystem(tree, output, nbytes, opts, extra, progress=bar)
    g = p.params
    return {
        "size": p.size,
        "blocks": g.blocks,
        "block_size": 4096,
        "groups": g.groups,
        "inodes": g.inodes_count,
        "inodes_per_group": g.inodes_per_group,
        "reserved_gdt_blocks": g.reserved_gdt,
        "journal_blocks": g.journal_blocks,
        "used_inodes": p.max_ino,
    }


def _volume_id(value: int | str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 0xFFFFFFFF:
            raise UsageError(f"--volume-id: {value} is not a 32-bit volume ID")
        return value
    t = str(value).strip()
    if t.lower().startswith("0x"):
        t = t[2:]
    t = t.replace("-", "")
    if not t or len(t) > 8 or any(c not in "0123456789abcdefABCDEF" for c in t):
        raise UsageError(f"--volume-id: {value!r} is not a volume ID: expected up to 8 hex digits (like 1234ABCD or 1234-ABCD)")
    return int(t, 16)


def make_fat(
    root: _Path,
    output: _Path,
    size: int | str,
    *,
    label: str = "ESP",
    volume_id: int | str | None = None,
    source_date_epoch: int | str | None = None,
    hidden_sectors: int = 0,
) -> dict[str, Any]:
    """A FAT32 image (an ESP) of the folder ``root`` at ``output`` (``pydiskimg fat``).

    ``size``: bytes, a ``truncate -s`` size (a bare number is MiB), or ``"auto"``: the smallest
    FAT32 that holds the tree, rounded up to a MiB.  ``volume_id``: 32-bit int or hex text
    (``"1234-ABCD"``; default 1234ABCD).  ``hidden_sectors``: the partition's first sector when
    the image goes into a partition.  Returns the geometry ``fat --json`` prints.
    """
    from . import fat
    from .io import check_output_path, check_readable
    from .sizes import MiB
    from .tree import scan

    opts = fat.FatOptions(
        label=label,
        volume_id=_volume_id(volume_id) if volume_id is not None else fat.DEFAULT_VOLUME_ID,
        timestamp=_epoch(source_date_epoch),
        hidden_sectors=hidden_sectors,
    )
    if isinstance(hidden_sectors, bool) or not isinstance(hidden_sectors, int) or not 0 <= hidden_sectors <= 0xFFFFFFFF:
        raise UsageError(f"--hidden-sectors: {hidden_sectors} is not a 32-bit sector number")
    root = os.fspath(root)
    check_readable(root, "--root", folder=True)
    check_output_path(output, "-o", trees=(root,))
    tree = scan(root, all_root=True)
    if isinstance(size, str) and size.strip().lower() == "auto":
        nbytes = -(-fat.min_size(tree, opts) // MiB) * MiB
    else:
        nbytes = _size(size, "--size", disk=True)
    plan = fat.make_fat(tree, os.fspath(output), nbytes, opts)
    return plan.describe()


def make_partition_table(
    image: _Path,
    partition_table: str,
    disk_size: int | str,
    *,
    boot_size: str = "256M",
    root_gpuid: UUID | str | None = None,
    disk_guid: UUID | str | None = None,
    seed: UUID | str | None = None,
) -> dict[str, Any]:
    """A sparse file of ``disk_size`` holding only the partition table the seed's parted and
    sgdisk commands write for ``partition_table`` (``pydiskimg partition``).

    ``disk_size``: bytes or a ``truncate -s`` size (a bare number is MiB); ``boot_size`` as
    parted reads it (``"256M"`` = 256 MB).  Returns the layout ``partition --json`` prints.
    """
    from . import layout
    from .io import Image, atomic_output, check_output_path, check_space, output_errors
    from .space import margin, table_bytes

    path = os.fspath(image)
    check_output_path(path, "IMAGE")
    lay = layout.plan_layout(
        partition_table,
        _size(disk_size, "diskSize (--disk-size)", disk=True),
        boot_size,
        root_gpuid=_guid(root_gpuid, "rootGPUID (--root-gpuid)"),
        disk_guid=_guid(disk_guid, "--disk-guid"),
        seed=_guid(seed, "--seed"),
    )
    needed = margin(table_bytes(lay))
    check_space(path, needed)
    with output_errors(path, needed), atomic_output(path, final=True) as tmp:
        img = Image.create(tmp, lay.disk_bytes)
        try:
            layout.write_table(img, lay)
            img.sync()
        finally:
            img.close()
    return lay.to_dict()
