"""The ext4 writer: a whole filesystem from a :class:`pydiskimg.tree.Tree`, as mke2fs 1.47.0
makes it by default on Debian 12 with ``-b 4096`` (features has_journal ext_attr resize_inode
dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink
extra_isize metadata_csum), deterministic, with no root and no kernel help but
``copy_file_range``.

Use :func:`plan` then :func:`write` (the build pipeline writes at a partition's offset through
``image.view(offset)``), or :func:`make_filesystem` for a standalone filesystem image.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..io import Image, atomic_output, check_space, output_errors
from ..tree import Tree
from .plan import DEFAULT_UUID, Ext4Options, Ext4Plan, Prepared, plan, prepare
from .write import write as _write


def write(
    plan: Ext4Plan, image: Image, progress: Callable[[int, int], None] | None = None
) -> None:
    """Write the planned filesystem at offset 0 of ``image``, which must read as zeros
    there (a fresh sparse image).  ``progress(bytes_done, bytes_total)`` reports the file
    data copy."""
    _write(plan, image, progress)


def make_filesystem(
    tree: Tree,
    path: str | os.PathLike[str],
    size: int | None = None,
    options: Ext4Options | None = None,
    additional_space: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Ext4Plan:
    """Plan and write a filesystem image file at ``path`` (nothing is left on failure)."""
    from ..space import ext4_bytes, margin

    p = plan(tree, size, options or Ext4Options(), additional_space=additional_space)
    needed = margin(ext4_bytes(p))
    check_space(path, needed)
    # the output side failing (disk full, quota, I/O error) is one line; sources raise SourceError
    with output_errors(path, needed), atomic_output(path, final=True) as tmp:
        img = Image.create(tmp, p.size)
        try:
            _write(p, img, progress)
            img.sync()
        finally:
            img.close()
    return p


__all__ = [
    "DEFAULT_UUID", "Ext4Options", "Ext4Plan", "Prepared", "make_filesystem", "plan", "prepare", "write",
]
