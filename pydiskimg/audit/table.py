"""Read an image's partition table and describe it: the engine of ``pydiskimg inspect``.

JSON shape of :func:`inspect_image` (``inspect --json`` prints exactly this)::

    {
      "image": "/abs/path.img",          # the file inspected
      "format": "raw",                   # container format (raw, qcow2, vdi, vhd-fixed, vpc)
      "size": 1048576000,                # guest disk size in bytes
      "table": {                         # DiskLayout.to_dict() without "partitions"
        "kind": "efi",                   # none | legacy | legacy+gpt | efi | hybrid | gpt
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

_PROBES: list[tuple[str, Probe]] = []
_loaded = False


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


def probe_filesystem(source: ReadableSource, offset: int, size: int) -> dict[str, Any] | None:
    """The first probe's description of the filesystem at ``offset``, or None."""
    for name, probe in probes():
        try:
            found = probe(source, offset, size)
        except Error as e:
            return {"type": name, "error": str(e)}
        if found is not None:
            return found
    return None


def describe(source: ReadableSource, name: str) -> dict[str, Any]:
    """The JSON description of an open image (see the module docstring)."""
    try:
        lay = read_table(source, name=name)
    except GPTError:
        raise
    except MBRError as e:
        # no table (or not an MBR): a bare filesystem image is still an image
        fs = probe_filesystem(source, 0, source.size)
        if fs is None:
            raise MBRError(f"{e}; no filesystem found either: not a disk image") from None
        return {
            "table": {"kind": "none", "scheme": "none", "disk_bytes": source.size,
                      "disk_sectors": source.size // 512, "sector_size": 512},
            "partitions": [],
            "filesystem": fs,
        }
    table = lay.to_dict()
    parts = table.pop("partitions")
    for p, d in zip(lay.partitions, parts, strict=True):
        d["filesystem"] = probe_filesystem(source, p.offset, p.size)
    return {"table": table, "partitions": parts, "filesystem": None}


def inspect_image(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Open ``path`` (raw or any format :mod:`pydiskimg.audit.source` reads) and describe it."""
    from .source import open_image

    path = os.fspath(path)
    with open_image(path) as src:
        body = describe(src, path)
        return {"image": os.path.abspath(path), "format": src.format, "size": src.size, **body}
