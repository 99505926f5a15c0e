"""Scale: pydiskimg ``ext4`` against ``mkfs.ext4 -d`` on trees of many small files.

    python bench/scale.py [--files 10k,100k,400k,1M] [--rounds 2] [--workdir DIR] [--no-fsck]

Each tree holds N files of 1-3000 random bytes, 100 per folder (folders of 100 folders above
them), generated from a fixed seed: the same N gives the same names, sizes, contents and mtimes
(a marker ``DIR.scale.json`` beside the tree lets a later run reuse it).  The page cache is
warmed by reading the tree, then each round runs pydiskimg (``--size auto``) and
``mkfs.ext4 -d -i 4096`` (the same size, and enough inodes) one after the other, as separate
processes, in the same run: the machine's noise hits both.  Wall time is the best of the rounds
(every round is in ``--json``), CPU time (user + system, less sensitive to a busy machine)
and peak RSS come from ``wait4()``, the read floor is
``tar cf - . | cat >/dev/null`` on the warm tree, and both images go through ``e2fsck -fn``.

The memory budget of issue 11 is 1 KiB per file plus 150 MB; ``budget`` says whether the peak
RSS of pydiskimg is inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gentree  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_WORKDIR = os.environ.get("PYDISKIMG_BENCH_DIR", "/tmp/pydiskimg-scale")
SDE = "1700000000"
PER_FOLDER = 100
MAX_FILE = 3000


def parse_count(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1000, "m": 1000_000}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def label(n: int) -> str:
    if n >= 1000_000 and n % 1000_000 == 0:
        return f"{n // 1000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def generate(dest: str, files: int, seed: int = 11) -> str:
    """``files`` files of 1..3000 random bytes, 100 per folder, under ``dest``: leaf folder k
    is ``dest/(k // 100)/(k % 100)`` (so no folder holds more than 100 entries)."""
    params = {"files": files, "seed": seed, "per_folder": PER_FOLDER, "max": MAX_FILE, "version": 1}
    if gentree.reusable(dest, params, "scale"):
        return dest
    rng = np.random.default_rng(seed)
    pool = rng.bytes(4 << 20)
    sizes = rng.integers(1, MAX_FILE + 1, files)
    offsets = rng.integers(0, len(pool) - MAX_FILE, files)
    leaves = -(-files // PER_FOLDER)
    for leaf in range(leaves):
        d = os.path.join(dest, f"{leaf // 100:05d}", f"{leaf % 100:02d}")
        os.makedirs(d)
        for k in range(leaf * PER_FOLDER, min(files, (leaf + 1) * PER_FOLDER)):
            fd = os.open(os.path.join(d, f"f{k:07d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                o, s = int(offsets[k]), int(sizes[k])
                os.write(fd, pool[o : o + s])
            finally:
                os.close(fd)
    gentree.finish(dest, params, "scale")
    return dest


def timed(cmd: list[str], shell: bool = False) -> tuple[float, int, float]:
    """Run ``cmd``; (wall seconds, peak RSS in KiB, CPU seconds: user + system)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd) if not shell else cmd[0]} failed ({proc.returncode}): {err}")
    return dt, ru.ru_maxrss, ru.ru_utime + ru.ru_stime


def read_floor(tree: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(f"tar cf - -C '{tree}' . | cat >/dev/null", shell=True, check=True)
    return time.perf_counter() - t0


def fsck(image: str) -> str:
    r = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True)
    return "clean" if r.returncode == 0 else f"exit {r.returncode}"


def pyd_cmd(tree: str, image: str) -> list[str]:
    return [sys.executable, "-m", "pydiskimg", "ext4", "--root", tree, "-o", image,
            "--size", "auto", "--source-date-epoch", SDE]


def mkfs_cmd(tree: str, image: str, size: int) -> list[str]:
    return ["mkfs.ext4", "-q", "-F", "-b", "4096", "-i", "4096", "-E", "root_owner=0:0",
            "-d", tree, image, f"{size // 1024}k"]


def bench_one(tree: str, files: int, workdir: str, rounds: int, check: bool) -> dict[str, Any]:
    img_p = os.path.join(workdir, "pyd.img")
    img_m = os.path.join(workdir, "mkfs.img")
    read_floor(tree)  # warm the page cache
    floors = [read_floor(tree)]
    pyd: list[tuple[float, int, float]] = []
    mk: list[tuple[float, int, float]] = []
    for _ in range(rounds):
        for p in (img_p, img_m):
            if os.path.exists(p):
                os.unlink(p)
        pyd.append(timed(pyd_cmd(tree, img_p)))
        size = os.path.getsize(img_p)
        with open(img_m, "wb") as f:
            f.truncate(size)
        mk.append(timed(mkfs_cmd(tree, img_m, size)))
        floors.append(read_floor(tree))
    verdict_p = fsck(img_p) if check else "-"
    verdict_m = fsck(img_m) if check else "-"
    for p in (img_p, img_m):
        os.unlink(p)
    tp = min(t for t, _, _ in pyd)
    tm = min(t for t, _, _ in mk)
    rss_p = max(r for _, r, _ in pyd)
    budget = rss_p * 1024 <= files * 1024 + 150_000_000
    return {
        "files": files, "pyd_s": tp, "pyd_all": [round(t, 2) for t, _, _ in pyd],
        "mkfs_s": tm, "mkfs_all": [round(t, 2) for t, _, _ in mk], "ratio": tp / tm,
        "pyd_cpu": min(c for _, _, c in pyd), "mkfs_cpu": min(c for _, _, c in mk),
        "pyd_rss_kib": rss_p, "mkfs_rss_kib": max(r for _, r, _ in mk),
        "rss_per_file_kib": rss_p / files, "budget": budget,
        "floor_s": min(floors), "vs_floor": tp / min(floors),
        "us_per_file": tp / files * 1e6,
        "fsck_pyd": verdict_p, "fsck_mkfs": verdict_m,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| files | pydiskimg | mkfs.ext4 -d | ratio | CPU pydiskimg / mkfs | pydiskimg peak RSS "
        "(per file, budget) | mkfs peak RSS | read floor | pydiskimg / floor | µs/file "
        "| e2fsck pydiskimg / mkfs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {label(int(r['files']))} | {r['pyd_s']:.2f} s | {r['mkfs_s']:.2f} s "
            f"| {r['ratio']:.2f} | {r['pyd_cpu']:.2f} s / {r['mkfs_cpu']:.2f} s "
            f"| {int(r['pyd_rss_kib']) / 1024:.0f} MiB "
            f"({r['rss_per_file_kib']:.2f} KiB, {'ok' if r['budget'] else 'over'}) "
            f"| {int(r['mkfs_rss_kib']) / 1024:.1f} MiB "
            f"| {r['floor_s']:.2f} s | {r['vs_floor']:.2f} | {r['us_per_file']:.1f} "
            f"| {r['fsck_pyd']} / {r['fsck_mkfs']} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", default="10k,100k,400k,1M", help="comma-separated counts (k, M)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default=DEFAULT_WORKDIR)
    ap.add_argument("--no-fsck", action="store_true")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    a = ap.parse_args(argv)
    if shutil.which("mkfs.ext4") is None:
        print("mkfs.ext4 not found (Debian: e2fsprogs)", file=sys.stderr)
        return 2
    os.makedirs(a.workdir, exist_ok=True)
    rows = []
    for n in [parse_count(s) for s in a.files.split(",")]:
        tree = generate(os.path.join(a.workdir, f"tree-{label(n)}"), n)
        rows.append(bench_one(tree, n, a.workdir, a.rounds, not a.no_fsck))
        print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(format_table(rows))
    if a.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
