"""Fixtures of the ext4 benchmarks: the trees both tools write, and their common size.

Run with ``pytest bench/bench_ext4.py`` (optionally ``--benchmark-only``).  Trees are cached in
``$PYDISKIMG_BENCH_DIR`` (default /tmp/pydiskimg-bench); ``PYDISKIMG_BENCH_FILES`` and
``PYDISKIMG_BENCH_LARGE_MIB`` shrink the generated tree for a quick run.
"""

from __future__ import annotations

import os
import shutil

import compare
import pytest

TREES = ["generated", "usr-share"]


@pytest.fixture(scope="session")
def workdir() -> str:
    os.makedirs(compare.DEFAULT_WORKDIR, exist_ok=True)
    return compare.DEFAULT_WORKDIR


@pytest.fixture(scope="session", params=TREES)
def bench_tree(request: pytest.FixtureRequest, workdir: str) -> tuple[str, int]:
    """(tree folder, filesystem size in bytes both tools get)."""
    if shutil.which("mkfs.ext4") is None:
        pytest.fail("mkfs.ext4 (e2fsprogs) is not installed")
    if request.param == "usr-share":
        if not os.path.isdir("/usr/share"):
            pytest.skip("this machine has no /usr/share")
        tree = "/usr/share"
    else:
        files = int(os.environ.get("PYDISKIMG_BENCH_FILES", "50000"))
        large = int(os.environ.get("PYDISKIMG_BENCH_LARGE_MIB", "400"))
        (tree,) = compare.default_trees(workdir, files, large, usr_share=False)
    compare.warm(tree)
    return tree, compare.common_size(tree)
