"""Read an image's partition table and describe it: the engine of ``pydiskimg inspect``.

JSON shape of :func:`inspect_image` (``inspect --json`` prints exactly this)::

    {
      "image": "/abs/path.img",          # the file inspected
      "format": "raw",                   # container format (raw, qcow2, vdi, vhd-fixed, vpc)
      "size": 1048576000,                # guest disk size in bytes
      "table": {                         # DiskLayout.to_dict() without "partitions"
        "kind": "efi",                   # none | legacy | legacy+gpt | efi | hybrid | efixbootldr | gpt
        "scheme": "gpt",                 # none | mbr | gpt
        "disk_bytes": ..., "disk_sectors": ..., "sector_size": 512,
        "disk_guid": "97FD5997-...",     # GPT only
        "mbr_signature": "0x37251638"    # MBR only
      },
      "partitions": [                    # sorted by number
        {"number": 1, "first_lba": 16384, "last_lba": 499711, "sectors": ..., "offset": ...,
         "size": ..., "role": "esp", "type": "C12A7328-...", "type_name": "EFI System",
         "guid": "1C06F03B-...", "name": "ESP", "attributes": 0, "flags": ["boot", "esp"],
         "filesystem": null}             # a probe's dict, or null
      ],
      "filesystem": null                 # kind "none" only: what a probe found at offset 0
    }

Filesystems are described by *probes*, registered with :func:`register_probe`: a probe is
``probe(source, offset, size) -> dict | None`` where ``source.read(offset, length)`` reads guest
bytes; it returns ``None`` when the bytes are not its filesystem, otherwise a JSON-ready dict
with at least ``"type"``.  Probes live in the modules listed in :data:`PROBE_MODULES`, imported
on first use (a module that does not exist yet is skipped); each registers itself at import.
A probe that raises a :class:`pydiskimg.errors.Error` is reported as ``{"type": NAME, "error": MSG}``.

File listings (``inspect --files``) come from *listers*: ``lister(source, offset, size) ->
list[dict]``, keyed by the name of the probe that recognised the filesystem
(:func:`register_lister`; :data:`DEFAULT_LISTERS` names the known ones as ``"module:function"``,
imported on first use).  With ``files=True`` each described filesystem gets a ``"files"`` list
(absent when no lister exists for it); a lister that raises a pydiskimg error gives
``"files_error": MSG`` instead.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import Error, GPTError, MBRError
from ..layout import read_table


class ReadableSource(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


Probe = Callable[[ReadableSource, int, int], "dict[str, Any] | None"]

#: modules that register probes when imported (ext4, FAT); missing ones are skipped
PROBE_MODULES = ("pydiskimg.audit.ext4", "pydiskimg.audit.fat")

Lister = Callable[[ReadableSource, int, int], "list[dict[str, Any]]"]
#: probe name -> "module:function" of its lister, resolved on first use
DEFAULT_LISTERS = {"ext4": "pydiskimg.audit.ext4:ext4_files", "fat": "pydiskimg.audit.fat:fat_files"}

_PROBES: list[tuple[str, Probe]] = []
_LISTERS: dict[str, Lister] = {}
_loaded = False


def register_lister(name: str, lister: Lister) -> Lister:
    """File lister for filesystems the probe ``name`` recognises; returns it (decorator use)."""
    _LISTERS[name] = lister
    return lister


def _lister(name: str) -> Lister | None:
    if name in _LISTERS:
        return _LISTERS[name]
    target = DEFAULT_LISTERS.get(name)
    if target is None:
        return None
    mod, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(mod), attr, None)
    except ModuleNotFoundError as e:
        if e.name != mod:
            raise
        fn = None
    if fn is not None:
        _LISTERS[name] = fn
    return fn


def register_probe(name: str, probe: Probe) -> Probe:
    """Add ``probe`` (tried in registration order) under ``name``; returns it (decorator use)."""
    if all(n != name for n, _ in _PROBES):
        _PROBES.append((name, probe))
    return probe


def probes() -> list[tuple[str, Probe]]:
    """The registered probes, after importing :data:`PROBE_MODULES`."""
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in PROBE_MODULES:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:
                    raise
    return list(_PROBES)


def _probe(source: ReadableSource, offset: int, size: int) -> tuple[str | None, dict[str, Any] | None]:
    for name, probe in probes():
        try:
            found = probe(source, offset, size)
        except Error as e:
            return None, {"type": name, "error": str(e)}
        if found is not None:
            return name, found
    return None, None


def probe_filesystem(source: ReadableSource, offset: int, size: int) -> dict[str, Any] | None:
    """The first probe's description of the filesystem at ``offset``, or None."""
    return _probe(source, offset, size)[1]


def _filesystem(source: ReadableSource, offset: int, size: int, files: bool) -> dict[str, Any] | None:
    name, fs = _probe(source, offset, size)
    if fs is not None and files and name is not None:
        lister = _lister(name)
        if lister is not None:
            try:
                fs = {**fs, "files": lister(source, offset, size)}
            except Error as e:
                fs = {**fs, "files_error": str(e)}
    return fs


def describe(source: ReadableSource, name: str, files: bool = False) -> dict[str, Any]:
    """The JSON description of an open image (see the module docstring)."""
    def bare(fs: dict[str, Any]) -> dict[str, Any]:
        return {
            "table": {"kind": "none", "scheme": "none", "disk_bytes": source.size,
                      "disk_sectors": source.size // 512, "sector_size": 512},
            "partitions": [],
            "filesystem": fs,
        }

    try:
        lay = read_table(source, name=name)
    except GPTError:
        raise
    except MBRError as e:
        # no table (or not an MBR): a bare filesystem image is still an image
        fs = _filesystem(source, 0, source.size, files)
        if fs is None:
            raise MBRError(f"{e}; no filesystem found either: not a disk image") from None
        return bare(fs)
    if lay.scheme == "mbr" and not lay.partitions:
        # a FAT boot sector ends in 55 AA too: an "MBR" with no partition over a filesystem
        # is that filesystem (as libblkid decides)
        fs = _filesystem(source, 0, source.size, files)
        if fs is not None:
            return bare(fs)
    table = lay.to_dict()
    parts = table.pop("partitions")
    for p, d in zip(lay.partitions, parts, strict=True):
        d["filesystem"] = _filesystem(source, p.offset, p.size, files)
    return {"table": table, "partitions": parts, "filesystem": None}


def inspect_image(path: str | os.PathLike[str], files: bool = False) -> dict[str, Any]:
    """Open ``path`` (raw or any format :mod:`pydiskimg.audit.source` reads) and describe it;
    ``files``: add each filesystem's file listing."""
    from .source import open_image

    path = os.fspath(path)
    with open_image(path) as src:
        body = describe(src, path, files)
        return {"image": os.path.abspath(path), "format": src.format, "size": src.size, **body}
