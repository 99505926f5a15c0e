"""Bad input to `pydiskimg build`: one line naming the field, exit 2, no traceback, no output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_build(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pydiskimg", "build", *args],
                          cwd=tmp_path, capture_output=True, text=True)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "hello").write_text("hello\n")
    return root


CASES = [
    (["--partition-table", "gpt"], "partitionTableType"),
    (["--format", "vmdk"], "format"),
    (["--fs-type", "btrfs"], "fsType"),
    (["--root-gpuid", "97FD5997-D90B-4AA3-8D16-C1723AEA73C"], "rootGPUID"),
    (["--root-fsuid", "not-a-guid"], "rootFSUID"),
    (["--seed", "1234"], "seed"),
    (["--disk-size", "12Q"], "diskSize"),
    (["--disk-size", "2"], "diskSize"),  # 2 MiB cannot hold an ext4 root
    (["--additional-space", "lots"], "additionalSpace"),
    (["--partition-table", "legacy", "--touch-efi-vars"], "touchEFIVars"),
    (["--only-nix-store", "--config-file", "/etc/hostname"], "onlyNixStore"),
    (["--partition-table", "legacy", "--esp", "."], "esp"),
    (["--mem-size", "lots"], "memSize"),
    (["--clamp-mtime"], "clampMtime"),
    (["--post-vm", "echo failing postVM; exit 3"], "postVM"),
]


@pytest.mark.parametrize(("extra", "field"), CASES, ids=[c[1] + "-" + "_".join(c[0])[:30] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path, src: Path, extra: list[str], field: str) -> None:
    before = set(os.listdir(tmp_path))
    r = run_build(tmp_path, "--root", str(src), "-o", "out.img", "--additional-space", "1M", *extra)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) >= 1 and "Traceback" not in r.stderr
    assert lines[-1].startswith("pydiskimg: error:") and field in lines[-1], r.stderr
    assert set(os.listdir(tmp_path)) == before, "output left behind"


def test_missing_root_names_the_folder(tmp_path: Path) -> None:
    r = run_build(tmp_path, "--root", "nowhere", "-o", "out.img")
    assert r.returncode == 2
    assert "nowhere" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.img").exists()


def test_unknown_toml_key_and_nix_only_key(tmp_path: Path, src: Path) -> None:
    spec = tmp_path / "image.toml"
    spec.write_text(f'root = "{src}"\noutput = "x.img"\ncopyChannel = true\n')
    r = run_build(tmp_path, str(spec))
    assert r.returncode == 2 and "copyChannel" in r.stderr and "inside Nix" in r.stderr
    spec.write_text(f'root = "{src}"\noutput = "x.img"\ndiskSzie = "auto"\n')
    r = run_build(tmp_path, str(spec))
    assert r.returncode == 2 and "diskSzie" in r.stderr
    assert not (tmp_path / "x.img").exists()


def test_unknown_owner_in_contents(tmp_path: Path, src: Path) -> None:
    (tmp_path / "motd").write_text("hi\n")
    contents = tmp_path / "contents.json"
    contents.write_text('[{"source": "motd", "target": "/etc/motd", "user": "mallory", "group": "root"}]')
    r = run_build(tmp_path, "--root", str(src), "-o", "out.img", "--contents", str(contents))
    assert r.returncode == 2 and "mallory" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.img").exists()


def test_interrupted_build_leaves_nothing(tmp_path: Path, src: Path) -> None:
    """SIGTERM in the middle of a build: no image, no staging folder."""
    big = src / "big.bin"
    with open(big, "wb") as f:
        f.write(os.urandom(1 << 20) * 256)  # 256 MiB of data to copy
    p = subprocess.Popen([sys.executable, "-m", "pydiskimg", "build", "--root", str(src), "-o", "out.img",
                          "--format", "qcow2"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    # wait for the write stage to start, then interrupt
    assert p.stderr is not None
    for line in p.stderr:
        if "writing" in line:
            break
    p.terminate()
    p.wait(timeout=60)
    assert p.returncode != 0
    assert [n for n in os.listdir(tmp_path) if n not in ("src",)] == []
