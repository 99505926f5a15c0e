"""pydiskimg's ext4 writer against ``mkfs.ext4 -d``, side by side, on the same trees.

    python bench/compare.py [--rounds 3] [--files 50000] [--large-mib 400] [--no-usr-share]
                            [--check] [--tree DIR ...] [--workdir DIR]

Trees: a generated one (bench/gentree.py: ~50,000 files, many small, some tens of MB, big
folders) and this machine's /usr/share when it exists (plus any ``--tree``).  Both tools write
a filesystem of the same size (pydiskimg's automatic size for the tree, plus 20%) to the same
folder, each as its own process, alternately; the page cache is warmed by reading the tree
first.  Wall time is the median of the rounds; peak RSS comes from ``wait4()`` on the tool's
process.  Prints a table: tree, tool, seconds, ratio (time / pydiskimg's time), peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_WORKDIR = os.environ.get("PYDISKIMG_BENCH_DIR", "/tmp/pydiskimg-bench")
SDE = "1700000000"
MiB = 1 << 20


@dataclass
class Run:
    seconds: float
    max_rss_kib: int


def tool_command(tool: str, tree: str, image: str, size: int) -> list[str]:
    """The command line of ``tool`` ("pydiskimg" or "mkfs.ext4") writing ``tree``."""
    if tool == "pydiskimg":
        call = f"make_ext4({tree!r}, {image!r}, size={size}, source_date_epoch={SDE})"
        return [sys.executable, "-c", f"import pydiskimg; pydiskimg.{call}"]
    if tool == "mkfs.ext4":
        return ["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, image, f"{size // MiB}M"]
    raise ValueError(tool)


def run_tool(tool: str, tree: str, image: str, size: int) -> Run:
    """Run one tool once (the image removed first) and measure it."""
    if os.path.exists(image):
        os.unlink(image)
    env = _env()
    t0 = time.perf_counter()
    p = subprocess.Popen(tool_command(tool, tree, image, size), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.returncode != 0:
        raise RuntimeError(f"{tool} failed on {tree} (exit {p.returncode}): {err.strip()}")
    return Run(dt, ru.ru_maxrss)


def common_size(tree: str) -> int:
    """pydiskimg's automatic size for ``tree`` + 20%, in whole MiB (used for both tools).

    Computed in a child process: this process stays small, so the RSS that ``wait4`` reports
    for a tool (which includes the forked child before ``exec``) is the tool's own."""
    code = ("import sys, pydiskimg\n"
            "spec = pydiskimg.ImageSpec(root=sys.argv[1], partition_table='none', additional_space=0)\n"
            "print(pydiskimg.build(spec, dry_run=True).root.size)\n")
    out = subprocess.run([sys.executable, "-c", code, tree], check=True, capture_output=True,
                         text=True, env=_env()).stdout
    return -(-int(int(out) * 1.2) // MiB) * MiB


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def warm(tree: str) -> None:
    """Read the whole tree once so both tools start with the same page cache."""
    subprocess.run(f"tar cf - -C {tree!r} . | cat > /dev/null", shell=True, check=False,
                   stderr=subprocess.DEVNULL)


def tree_stats(tree: str) -> tuple[int, int]:
    """(number of entries, apparent bytes of regular files)."""
    n = size = 0
    for dirpath, dirs, files in os.walk(tree):
        n += len(dirs) + len(files)
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(dirpath, f)):
                size += st.st_size
    return n, size


def fsck_clean(image: str) -> bool:
    r = subprocess.run(["e2fsck", "-fn", image], capture_output=True, text=True, check=False)
    return r.returncode == 0


def default_trees(workdir: str, files: int, large_mib: int, usr_share: bool) -> list[str]:
    """The generated tree (made by bench/gentree.py in a child process, see common_size) and
    /usr/share when present."""
    dest = os.path.join(workdir, f"gen-{files}")
    subprocess.run([sys.executable, os.path.join(HERE, "gentree.py"), dest, "--files",
                    str(files), "--large-mib", str(large_mib)], check=True,
                   stdout=subprocess.DEVNULL)
    trees = [dest]
    if usr_share and os.path.isdir("/usr/share"):
        trees.append("/usr/share")
    return trees


def compare(trees: list[str], workdir: str, rounds: int, check: bool) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    tools = ("pydiskimg", "mkfs.ext4")
    for tree in trees:
        size = common_size(tree)
        n, data = tree_stats(tree)
        warm(tree)
        runs: dict[str, list[Run]] = {t: [] for t in tools}
        for _ in range(rounds):
            for t in tools:
                runs[t].append(run_tool(t, tree, os.path.join(workdir, f"{t}.img"), size))
        if check:
            for t in tools:
                if not fsck_clean(os.path.join(workdir, f"{t}.img")):
                    raise RuntimeError(f"e2fsck -fn finds problems in {t}'s image of {tree}")
        base = statistics.median(r.seconds for r in runs["pydiskimg"])
        for t in tools:
            sec = statistics.median(r.seconds for r in runs[t])
            rows.append({"tree": tree, "entries": n, "data_mib": data / MiB,
                         "fs_mib": size / MiB, "tool": t, "seconds": sec, "ratio": sec / base,
                         "rss_mib": max(r.max_rss_kib for r in runs[t]) / 1024})
        for t in tools:
            img = os.path.join(workdir, f"{t}.img")
            if os.path.exists(img):
                os.unlink(img)
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    head = f"{'tree':<34} {'entries':>8} {'data MiB':>9} {'tool':<10} {'seconds':>8} {'ratio':>6} {'peak RSS MiB':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{str(r['tree'])[-34:]:<34} {r['entries']:>8} {r['data_mib']:>9.0f} {r['tool']:<10} "
            f"{r['seconds']:>8.2f} {r['ratio']:>6.2f} {r['rss_mib']:>12.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--large-mib", type=int, default=400)
    ap.add_argument("--no-usr-share", action="store_true")
    ap.add_argument("--tree", action="append", default=[], help="another tree to compare on")
    ap.add_argument("--workdir", default=DEFAULT_WORKDIR)
    ap.add_argument("--check", action="store_true", help="e2fsck -fn both images")
    a = ap.parse_args(argv)
    if shutil.which("mkfs.ext4") is None:
        print("mkfs.ext4 not found (Debian: e2fsprogs)", file=sys.stderr)
        return 2
    os.makedirs(a.workdir, exist_ok=True)
    trees = default_trees(a.workdir, a.files, a.large_mib, not a.no_usr_share) + a.tree
    rows = compare(trees, a.workdir, a.rounds, a.check)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
