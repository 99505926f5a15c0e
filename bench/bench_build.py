"""The whole build, side by side with the classic pipeline, in the same run.

Classic pipeline (what make-disk-image.nix runs, minus its VM): truncate + parted + sgdisk +
mkfs.ext4 -d (at the root partition's offset) + mkfs.vfat -F 32 (at the ESP's offset) + mcopy +
qemu-img convert.  pydiskimg: one `pydiskimg build` of the same trees at the same disk size.

    python -m pytest bench/bench_build.py --benchmark-only          # pytest-benchmark
    python bench/bench_build.py [--files N] [--format qcow2]        # a table: seconds, ratio, peak RSS

Trees: bench/gentree.py's generated tree (deterministic) as the root and a small ESP tree.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gentree import generate  # noqa: E402

DISK_GUID = "97FD5997-F390-0B4A-A3F8-D106C1723AEA"
ESP_GUID = "1C06F03B-704E-4657-B9CD-681A087A2FDC"
ROOT_GUID = "F222513B-DED1-49FA-B591-20CE86A2FE7F"
BOOT_SIZE = "256M"
SDE = "1700000000"

# Runs a command list in a child and reports wall time and the peak RSS of its children.
_MEASURE = r"""
import json, resource, subprocess, sys, time
cmds = json.loads(sys.argv[1])
t0 = time.perf_counter()
for c in cmds:
    r = subprocess.run(c, shell=isinstance(c, str), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        sys.exit(f"{c}: {r.stderr[-2000:]}")
t = time.perf_counter() - t0
print(json.dumps({"seconds": t, "peak_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measure(cmds: list) -> dict:
    r = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(cmds)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout)


def make_esp(root: Path) -> Path:
    if root.exists():
        return root
    (root / "EFI" / "BOOT").mkdir(parents=True)
    (root / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(os.urandom(150_000))
    (root / "loader" / "entries").mkdir(parents=True)
    (root / "loader" / "loader.conf").write_text("default nixos.conf\n")
    for i in range(20):
        (root / "loader" / "entries" / f"nixos-generation-{i}.conf").write_text(f"title NixOS {i}\n")
    (root / "kernels").mkdir()
    (root / "kernels" / "vmlinuz").write_bytes(os.urandom(12 << 20))
    (root / "kernels" / "initrd").write_bytes(os.urandom(20 << 20))
    return root


def spec(root: Path, esp: Path, out: Path, fmt: str, disk_size: int | None = None) -> dict[str, object]:
    """The ImageSpec keywords of the build timed here."""
    return {"root": str(root), "esp": str(esp), "output": str(out), "partition_table": "efi",
            "format": fmt, "boot_size": BOOT_SIZE, "additional_space": "64M",
            "source_date_epoch": SDE, "disk_size": disk_size}


def pydiskimg_cmd(root: Path, esp: Path, out: Path, fmt: str, disk_size: int | None = None) -> list[str]:
    """``pydiskimg.build(ImageSpec(...))`` in a process of its own, so that its time and peak RSS
    are measured alone, as the classic pipeline's processes are."""
    kw = spec(root, esp, out, fmt, disk_size)
    return [sys.executable, "-c", f"import pydiskimg; pydiskimg.build(pydiskimg.ImageSpec(**{kw!r}))"]


def plan_size(root: Path, esp: Path, work: Path) -> int:
    """The automatic disk size: a dry run of the same build through the API."""
    import pydiskimg

    return pydiskimg.build(pydiskimg.ImageSpec(**spec(root, esp, work / "plan.img", "raw")),  # type: ignore[arg-type]
                           dry_run=True).disk_size


def classic_cmds(root: Path, esp: Path, img: Path, out: Path, fmt: str, disk_size: int) -> list[str]:
    """The seed's steps (efi) as shell lines, with the tools it uses."""
    q = lambda p: f"'{p}'"  # noqa: E731
    esp_start, esp_end = 16384, None  # parted: 8MiB .. 256M -> sectors 16384 .. 499711
    esp_end = 499711
    lines = [
        f"rm -f {q(img)} {q(out)}",
        f"truncate -s {disk_size} {q(img)}",
        f"parted --script {q(img)} -- mklabel gpt mkpart ESP fat32 8MiB {BOOT_SIZE} set 1 boot on "
        f"mkpart primary ext4 {BOOT_SIZE} -1",
        f"sgdisk --disk-guid={DISK_GUID} --partition-guid=1:{ESP_GUID} --partition-guid=2:{ROOT_GUID} {q(img)}",
        f"eval $(partx {q(img)} -o START,SECTORS --nr 2 --pairs) && "
        f"E2FSPROGS_FAKE_TIME={SDE} mkfs.ext4 -q -b 4096 -F -L nixos -U {ROOT_GUID} -E offset=$((START*512)) "
        f"-d {q(root)} {q(img)} $((SECTORS/2))K",
        f"rm -f {q(img)}.esp && mkfs.vfat -F 32 -n ESP -i 3C36A6AA -C {q(img)}.esp {(esp_end - esp_start + 1) // 2} >/dev/null",
        f"MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -i {q(img)}.esp {q(esp)}/* ::/",
        f"dd if={q(img)}.esp of={q(img)} bs=1M seek={esp_start * 512 // 2**20} conv=notrunc,sparse status=none",
    ]
    if fmt != "raw":
        qfmt, extra = ("qcow2", "-c") if fmt == "qcow2-compressed" else (fmt, "")
        lines.append(f"qemu-img convert -f raw -O {qfmt} {extra} {q(img)} {q(out)}")
    return ["set -e; " + " && ".join(lines)]


def trees(files: int) -> tuple[Path, Path]:
    base = Path(os.environ.get("PYDISKIMG_BENCH_DIR", tempfile.gettempdir())) / "pydiskimg-bench"
    base.mkdir(exist_ok=True)
    root = Path(generate(str(base / f"tree-{files}"), files=files, large_mib=200))
    return root, make_esp(base / "esp")


# --- pytest-benchmark -----------------------------------------------------------------------

def _bench(benchmark, which: str, fmt: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, esp = trees(int(os.environ.get("PYDISKIMG_BENCH_FILES", "20000")))
    size = plan_size(root, esp, tmp_path)
    out = tmp_path / f"out.{fmt}"
    if which == "pydiskimg":
        cmds = [pydiskimg_cmd(root, esp, out, fmt, size)]
    else:
        cmds = classic_cmds(root, esp, tmp_path / "classic.img", out, fmt, size)
    benchmark.group = f"build efi {fmt}"
    benchmark.extra_info["disk_size"] = size
    result = benchmark.pedantic(lambda: measure(cmds), rounds=2, iterations=1)
    benchmark.extra_info["peak_rss_kib"] = result["peak_rss_kib"]


def test_build_raw_pydiskimg(benchmark, tmp_path):  # type: ignore[no-untyped-def]
    _bench(benchmark, "pydiskimg", "raw", tmp_path)


def test_build_raw_classic(benchmark, tmp_path):  # type: ignore[no-untyped-def]
    _bench(benchmark, "classic", "raw", tmp_path)


def test_build_qcow2_pydiskimg(benchmark, tmp_path):  # type: ignore[no-untyped-def]
    _bench(benchmark, "pydiskimg", "qcow2", tmp_path)


def test_build_qcow2_classic(benchmark, tmp_path):  # type: ignore[no-untyped-def]
    _bench(benchmark, "classic", "qcow2", tmp_path)


# --- table ----------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--format", default="raw")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    root, esp = trees(a.files)
    with tempfile.TemporaryDirectory(dir=os.environ.get("PYDISKIMG_BENCH_DIR")) as d:
        work = Path(d)
        size = plan_size(root, esp, work)
        out = work / f"out.{a.format}"
        rows = {}
        for name, cmds in [("pydiskimg build", [pydiskimg_cmd(root, esp, out, a.format, size)]),
                           ("parted+sgdisk+mkfs.ext4 -d+mkfs.vfat+mcopy" + ("+qemu-img" if a.format != "raw" else ""),
                            classic_cmds(root, esp, work / "classic.img", out, a.format, size))]:
            runs = [measure(cmds) for _ in range(a.rounds)]
            rows[name] = (min(r["seconds"] for r in runs), max(r["peak_rss_kib"] for r in runs))
            shutil.rmtree(work / "x", ignore_errors=True)
        base = rows[next(iter(rows))][0]
        print(f"efi disk of {size / 2**20:,.0f} MiB, {a.files} files, format {a.format}, best of {a.rounds}")
        print(f"{'pipeline':48} {'seconds':>8} {'vs pydiskimg':>12} {'peak RSS':>10}")
        for name, (t, rss) in rows.items():
            print(f"{name:48} {t:8.2f} {t / base:11.2f}x {rss / 1024:8.0f} MiB")


if __name__ == "__main__":
    main()
