"""FAT for ``inspect``: the volume summary (a probe registered with
:mod:`pydiskimg.audit.table`) and the file listing of ``inspect --files``."""

from __future__ import annotations

from typing import Any

from .fatdiff import fat_files, fat_info
from .fsdiff import probe as _magic
from .table import ReadableSource, register_probe


def probe(src: ReadableSource, offset: int, size: int) -> dict[str, Any] | None:
    """The ``inspect`` probe: None unless a FAT boot sector is there."""
    if size < 512 or _magic(src, offset, size) != "fat":  # type: ignore[arg-type]
        return None
    return fat_info(src, offset, size)  # type: ignore[arg-type]


__all__ = ["fat_files", "fat_info", "probe"]

register_probe("fat", probe)
