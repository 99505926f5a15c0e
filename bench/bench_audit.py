#!/usr/bin/env python3
"""``pydiskimg diff`` and ``split`` beside the reference tools, on the same images, same run.

    python bench/bench_audit.py [--size-mib 2048] [--tree /usr/share/doc] [--rounds 3]
    python -m pytest bench/bench_audit.py --benchmark-only

Image: a GPT disk (sgdisk) with one ext4 partition made by mkfs.ext4 -d from ``--tree``; B is
a copy with one planted difference (a file's mode, debugfs sif).

* diff, identical images: ``cmp A A2`` against ``pydiskimg diff A A2`` (both exit 0);
* diff, one planted difference: ``cmp -l A B`` (lists the differing bytes) against
  ``pydiskimg diff A B`` (names the file and the field);
* split: the seed's recipe (sfdisk --json for the geometry, then ``dd conv=sparse`` per
  partition) against ``pydiskimg split``.

Prints seconds (median of the rounds), the ratio reference / pydiskimg (> 1: pydiskimg is
faster) and peak RSS of each process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import pytest

#: the API's diff and split, each in a process of its own (timed as cmp and dd are)
API_DIFF = [sys.executable, "-c", "import sys, pydiskimg; "
            "sys.exit(0 if pydiskimg.diff(sys.argv[1], sys.argv[2]).identical else 1)"]
API_SPLIT = [sys.executable, "-c", "import sys, pydiskimg; pydiskimg.split(sys.argv[1], sys.argv[2], hashes=False)"]
WORK = os.environ.get("PYDISKIMG_BENCH_DIR", "/tmp/pydiskimg-bench")


def sh(*cmd: str, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if p.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)}: {p.returncode}: {p.stderr}")
    return p.stdout


def make_images(work: str, size_mib: int, tree: str) -> tuple[str, str, str]:
    """(A, identical copy of A, B with one planted mode change)."""
    os.makedirs(work, exist_ok=True)
    a = os.path.join(work, f"audit-a-{size_mib}.img")
    if not os.path.exists(a):
        with open(a + ".tmp", "wb") as f:
            f.truncate(size_mib << 20)
        sh("sgdisk", "-U", "0F0F0F0F-1111-2222-3333-444444444444", "-n", "1:2048:0",
           "-t", "1:8300", a + ".tmp")
        last = (size_mib << 20) // 512 - 34
        blocks = (last - 2048 + 1) * 512 // 4096
        sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-U", "11111111-2222-3333-4444-555555555555",
           "-E", f"offset={2048 * 512}", "-d", tree, a + ".tmp", str(blocks),
           env=dict(os.environ, E2FSPROGS_FAKE_TIME="1000000"))
        os.replace(a + ".tmp", a)
    a2 = os.path.join(work, f"audit-a2-{size_mib}.img")
    b = os.path.join(work, f"audit-b-{size_mib}.img")
    for dst in (a2, b):
        if not os.path.exists(dst):
            sh("cp", "--sparse=always", a, dst)
    path = "/" + sorted(os.listdir(tree))[0]  # a folder: 0755 -> 0700
    sh("debugfs", "-w", "-R", f"sif {path} mode 040700", f"{b}?offset={2048 * 512}",
       env=dict(os.environ, E2FSPROGS_FAKE_TIME="1000000"))
    return a, a2, b


def timed(cmd: list[str], ok: tuple[int, ...] = (0, 1)) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of one child process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}: {p.stderr.read() if p.stderr else ''}")
    return time.perf_counter() - t, ru.ru_maxrss


def seed_split(image: str, out: str) -> list[list[str]]:
    """The seed's recipe as commands: dd every partition sfdisk lists."""
    t = json.loads(sh("sfdisk", "--json", image))["partitiontable"]
    cmds = []
    for i, p in enumerate(t["partitions"], start=1):
        cmds.append(["dd", f"if={image}", f"of={out}/part{i}.img", "bs=1M", "conv=sparse",
                     f"skip={p['start'] * 512}", f"count={p['size'] * 512}",
                     "iflag=skip_bytes,count_bytes", "status=none"])
    return cmds


def run_all(size_mib: int, tree: str, rounds: int) -> list[tuple[str, str, float, int]]:
    a, a2, b = make_images(WORK, size_mib, tree)
    rows: list[tuple[str, str, float, int]] = []

    def measure(case: str, tool: str, fn: Callable[[], tuple[float, int]]) -> None:
        res = [fn() for _ in range(rounds)]
        rows.append((case, tool, statistics.median(r[0] for r in res), max(r[1] for r in res)))

    measure("diff identical", "cmp", lambda: timed(["cmp", a, a2]))
    measure("diff identical", "pydiskimg", lambda: timed([*API_DIFF, a, a2]))
    measure("diff one mode", "cmp -l", lambda: timed(["sh", "-c", f"cmp -l {a} {b} | wc -l > /dev/null"], (0, 1)))
    measure("diff one mode", "pydiskimg", lambda: timed([*API_DIFF, a, b]))

    def split_seed() -> tuple[float, int]:
        out = tempfile.mkdtemp(dir=WORK)
        try:
            total, peak = 0.0, 0
            for cmd in seed_split(a, out):
                s, r = timed(cmd, (0,))
                total, peak = total + s, max(peak, r)
            return total, peak
        finally:
            shutil.rmtree(out)

    def split_ours() -> tuple[float, int]:
        out = tempfile.mkdtemp(dir=WORK)
        try:
            return timed([*API_SPLIT, a, os.path.join(out, "s")], (0,))
        finally:
            shutil.rmtree(out)

    measure("split", "dd (seed recipe)", split_seed)
    measure("split", "pydiskimg", split_ours)
    return rows


def print_table(rows: list[tuple[str, str, float, int]]) -> None:
    ours = {case: s for case, tool, s, _ in rows if tool == "pydiskimg"}
    print(f"{'case':16} {'tool':18} {'seconds':>8} {'ref/ours':>8} {'peak RSS MiB':>12}")
    for case, tool, s, rss in rows:
        print(f"{case:16} {tool:18} {s:8.2f} {s / ours[case]:8.2f} {rss / 1024:12.1f}")


# -- pytest-benchmark -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images() -> tuple[str, str, str]:
    return make_images(WORK, 1024, "/usr/share/doc")


@pytest.mark.parametrize("tool", ["cmp", "pydiskimg"])
def test_diff_identical(benchmark: object, images: tuple[str, str, str], tool: str) -> None:
    a, a2, _ = images
    cmd = ["cmp", a, a2] if tool == "cmp" else [*API_DIFF, a, a2]
    benchmark.pedantic(lambda: timed(cmd), rounds=3)  # type: ignore[attr-defined]


@pytest.mark.parametrize("tool", ["cmp -l", "pydiskimg"])
def test_diff_one_mode(benchmark: object, images: tuple[str, str, str], tool: str) -> None:
    a, _, b = images
    cmd = ["sh", "-c", f"cmp -l {a} {b} | wc -l > /dev/null"] if tool == "cmp -l" else [*API_DIFF, a, b]
    benchmark.pedantic(lambda: timed(cmd), rounds=3)  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--tree", default="/usr/share/doc")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    print_table(run_all(args.size_mib, args.tree, args.rounds))


if __name__ == "__main__":
    main()
