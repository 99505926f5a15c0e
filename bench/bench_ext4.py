"""pytest-benchmark: pydiskimg's ext4 writer and ``mkfs.ext4 -b 4096 -d`` on the same trees, in
one run, each as its own process writing a filesystem of the same size (see bench/compare.py,
which prints the same comparison as a table with peak RSS).

    pytest bench/bench_ext4.py --benchmark-columns=min,median,max --benchmark-group-by=param:bench_tree
"""

from __future__ import annotations

import os

import compare
import pytest


@pytest.mark.parametrize("tool", ["pydiskimg", "mkfs.ext4"])
def test_ext4_from_tree(benchmark: object, bench_tree: tuple[str, int], workdir: str,
                        tool: str) -> None:
    tree, size = bench_tree
    image = os.path.join(workdir, f"bench-{tool}.img")
    rss: list[int] = []

    def once() -> None:
        rss.append(compare.run_tool(tool, tree, image, size).max_rss_kib)

    benchmark.pedantic(once, rounds=int(os.environ.get("PYDISKIMG_BENCH_ROUNDS", "2")),  # type: ignore[attr-defined]
                       iterations=1)
    benchmark.extra_info["peak_rss_mib"] = max(rss) / 1024  # type: ignore[attr-defined]
    assert compare.fsck_clean(image), f"e2fsck -fn finds problems in {tool}'s image of {tree}"
    os.unlink(image)
