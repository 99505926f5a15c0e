"""FAT32 ESP: ``pydiskimg fat`` beside ``mkfs.vfat -F 32`` + ``mcopy -s``, same tree, same run.

The tree is ESP-like and deterministic: a few large files (kernels, initrds) and many small ones
(loader entries, drivers, fonts) in nested folders with long names.

    python -m pytest bench/bench_fat.py --benchmark-only --benchmark-group-by=param:tree
    python bench/bench_fat.py [--small 3000] [--size-mib 512]    # a table: seconds, ratio, peak RSS

Both sides write a fresh sparse image file of the same size and flush it to disk (pydiskimg
fsyncs before its atomic rename; the reference gets a ``sync FILE``); both are checked by
fsck.fat -n.  On a shared machine wall times are noisy: the table also gives CPU seconds
(user + system of the child processes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

MTIME = 1_700_000_000
ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1", TZ="UTC")


def make_tree(dest: Path, small: int = 3000, large_mib: tuple[int, ...] = (12, 64, 20)) -> Path:
    """Create (or reuse) the tree: ``small`` files of 0..16 KiB in 60 folders + large files."""
    marker = dest.with_suffix(".json")
    params = {"small": small, "large": list(large_mib), "v": 1}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    rng = np.random.default_rng(7)
    pool = rng.bytes(1 << 20)
    (dest / "EFI" / "BOOT").mkdir(parents=True)
    (dest / "EFI" / "nixos").mkdir(parents=True)
    for i, mib in enumerate(large_mib):
        with open(dest / "EFI" / "nixos" / f"kernel-or-initrd-{i}-6.1.0-amd64.efi", "wb") as f:
            for _ in range(mib):
                f.write(rng.bytes(1 << 20))
    folders = [dest / "EFI" / f"Vendor Folder {k:02d}" / ("drivers" if k % 2 else "fonts") for k in range(60)]
    for d in folders:
        d.mkdir(parents=True, exist_ok=True)
    sizes = rng.integers(0, 16384, small)
    for i in range(small):
        n = int(sizes[i])
        off = int(rng.integers(0, len(pool) - n))
        (folders[i % 60] / f"Component File Number {i:05d}.bin").write_bytes(pool[off : off + n])
    for p in dest.rglob("*"):
        os.utime(p, (MTIME, MTIME))
    marker.write_text(json.dumps(params))
    return dest


def run_pydiskimg(src: Path, out: Path, size: int) -> None:
    import pydiskimg

    if out.exists():
        out.unlink()
    pydiskimg.make_fat(src, out, size, volume_id=0xDEADBEEF)


def pydiskimg_cmd(src: Path, out: Path, size: int) -> list[list[str]]:
    """The same API call in a process of its own (start-up included, as for mkfs.vfat)."""
    call = f"make_fat({str(src)!r}, {str(out)!r}, {size}, volume_id=0xDEADBEEF)"
    return [[sys.executable, "-c", f"import pydiskimg; pydiskimg.{call}"]]


def reference_cmds(src: Path, out: Path, size: int) -> list[list[str]]:
    return [
        ["rm", "-f", str(out)],
        ["truncate", "-s", str(size), str(out)],
        ["mkfs.vfat", "-F", "32", "-i", "DEADBEEF", "-n", "ESP", str(out)],
        ["sh", "-c", 'exec mcopy -s -p -m -i "$0" "$1"/* ::/', str(out), str(src)],
        ["sync", str(out)],  # pydiskimg fsyncs its output before renaming it into place
    ]


def run_cmds(cmds: list[list[str]]) -> None:
    for c in cmds:
        subprocess.run(c, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fsck_ok(img: Path) -> None:
    r = subprocess.run(["fsck.fat", "-n", str(img)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- pytest-benchmark -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="bench_fat"))
    yield d
    shutil.rmtree(d)


TREES = {"esp-3000-small+96MiB": 3000, "esp-300-small+96MiB": 300}
SIZE = 512 << 20


@pytest.mark.parametrize("tree", TREES)
def test_pydiskimg(benchmark, work, tree):
    src = make_tree(work / tree, TREES[tree])
    out = work / f"{tree}.pydiskimg.img"
    benchmark.pedantic(run_pydiskimg, args=(src, out, SIZE), rounds=3, iterations=1)
    fsck_ok(out)


@pytest.mark.parametrize("tree", TREES)
def test_mkfs_vfat_mcopy(benchmark, work, tree):
    src = make_tree(work / tree, TREES[tree])
    out = work / f"{tree}.mtools.img"
    benchmark.pedantic(run_cmds, args=(reference_cmds(src, out, SIZE),), rounds=3, iterations=1)
    fsck_ok(out)


# --- table ------------------------------------------------------------------------------------

_MEASURE = r"""
import json, resource, subprocess, sys, time, os
cmds = json.loads(sys.argv[1])
env = dict(os.environ, MTOOLS_SKIP_CHECK="1", TZ="UTC")
t0 = time.perf_counter()
for c in cmds:
    subprocess.run(c, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": ru.ru_utime + ru.ru_stime,
                  "peak_rss_kib": ru.ru_maxrss}))
"""


def measure(cmds: list[list[str]]) -> dict:
    r = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(cmds)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def in_process(src: Path, out: Path, size: int) -> dict:
    """scan + plan + write + fsync in this process, imports excluded (Python and numpy start-up
    is about 0.4 s of CPU before any work)."""
    import resource
    import time

    import pydiskimg.api  # noqa: F401  (imports before the clock starts)
    import pydiskimg.fat  # noqa: F401
    import pydiskimg.tree  # noqa: F401

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    run_pydiskimg(src, out, size)
    t = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": t, "cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, "peak_rss_kib": r1.ru_maxrss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--small", type=int, default=3000)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    size = a.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="bench_fat") as d:
        w = Path(d)
        src = make_tree(w / "tree", a.small)
        ours, ref = w / "ours.img", w / "ref.img"
        best = {"pydiskimg": None, "mkfs.vfat+mcopy": None, "pydiskimg API": None}
        for _ in range(a.rounds):
            for name, cmds in (("pydiskimg", pydiskimg_cmd(src, ours, size)), ("mkfs.vfat+mcopy", reference_cmds(src, ref, size))):
                m = measure(cmds)
                if best[name] is None or m["seconds"] < best[name]["seconds"]:
                    best[name] = m
            m = in_process(src, ours, size)
            if best["pydiskimg API"] is None or m["seconds"] < best["pydiskimg API"]["seconds"]:
                best["pydiskimg API"] = m
        fsck_ok(ours)
        fsck_ok(ref)
        p, r = best["pydiskimg"], best["mkfs.vfat+mcopy"]
        print(f"tree: {a.small} small files + 96 MiB in 3 large, image {a.size_mib} MiB, best of {a.rounds}")
        print(f"{'tool':<18}{'wall s':>10}{'CPU s':>10}{'peak RSS MiB':>15}")
        for name, m in best.items():
            print(f"{name:<18}{m['seconds']:>10.2f}{m['cpu']:>10.2f}{m['peak_rss_kib'] / 1024:>15.1f}")
        print(f"wall ratio (mkfs.vfat+mcopy / pydiskimg): {r['seconds'] / p['seconds']:.2f}x; "
              f"CPU ratio: {r['cpu'] / p['cpu']:.2f}x")
        q = best["pydiskimg API"]
        print(f"without start-up (pydiskimg API, imports done): wall {r['seconds'] / q['seconds']:.2f}x, "
              f"CPU {r['cpu'] / q['cpu']:.2f}x")


if __name__ == "__main__":
    main()
