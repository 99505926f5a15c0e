"""pydiskimg: bootable disk images (MBR/GPT, ext4, FAT32) written from a tree, in pure Python.

The Python API (documented in the README's "Python API" section and in :mod:`pydiskimg.api`)::

    import pydiskimg

    spec = pydiskimg.ImageSpec(root="rootfs", partition_table="efi", esp="esp", output="disk.img")
    result = pydiskimg.build(spec)
    pydiskimg.inspect(result.output)

Names are imported on first use, so ``import pydiskimg`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: public name -> the module that defines it
_EXPORTS = {
    "ImageSpec": "spec",
    "ImageSpecFields": "spec",
    "ProgressEvent": "progress",
    "ProgressCallback": "progress",
    "BuildResult": "api",
    "PartitionInfo": "api",
    "FilesystemInfo": "api",
    "DiffResult": "api",
    "build": "api",
    "inspect": "api",
    "diff": "api",
    "split": "api",
    "make_ext4": "api",
    "make_fat": "api",
    "make_partition_table": "api",
    "Error": "errors",
    "UsageError": "errors",
    "DoesNotFitError": "errors",
    "SourceError": "errors",
    "ImageError": "errors",
    "ToolError": "errors",
    "InternalError": "errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # the names as type checkers see them; at run time, __getattr__ below
    from .api import BuildResult as BuildResult
    from .api import DiffResult as DiffResult
    from .api import FilesystemInfo as FilesystemInfo
    from .api import PartitionInfo as PartitionInfo
    from .api import build as build
    from .api import diff as diff
    from .api import inspect as inspect
    from .api import make_ext4 as make_ext4
    from .api import make_fat as make_fat
    from .api import make_partition_table as make_partition_table
    from .api import split as split
    from .errors import DoesNotFitError as DoesNotFitError
    from .errors import Error as Error
    from .errors import ImageError as ImageError
    from .errors import InternalError as InternalError
    from .errors import SourceError as SourceError
    from .errors import ToolError as ToolError
    from .errors import UsageError as UsageError
    from .progress import ProgressCallback as ProgressCallback
    from .progress import ProgressEvent as ProgressEvent
    from .spec import ImageSpec as ImageSpec
    from .spec import ImageSpecFields as ImageSpecFields


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pydiskimg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
