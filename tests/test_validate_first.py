"""Outputs and inputs are checked before any scan or plan work, and the small things of
issue 12: -q on every command, ext4's upper size limit, build --help's metavars."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PY = [sys.executable, "-m", "pydiskimg"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PY, *args], capture_output=True, text=True, cwd=cwd)


def error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (r / "hello").write_text("hello\n")
    return r


def test_missing_output_folder_before_the_scan(root: Path, tmp_path: Path) -> None:
    """A contents entry that matches nothing fails while the tree is grafted (after the scan):
    the missing output folder must be reported first."""
    contents = tmp_path / "contents.json"
    contents.write_text('[{"source": "nothing-here-*", "target": "/x"}]')
    r = run("build", "-q", "--root", str(root), "--contents", str(contents), "-o", "/missing/dir/x.img")
    assert error_line(r) == "pydiskimg: error: output (-o): folder /missing/dir does not exist"
    for cmd in (["ext4", "--root", str(root)], ["fat", "--root", str(root), "--size", "64M"]):
        r = run(*cmd, "-q", "-o", "/missing/dir/x.img")
        assert error_line(r) == "pydiskimg: error: -o: folder /missing/dir does not exist"
    r = run("partition", "-q", "/missing/dir/x.img", "--partition-table", "efi", "--disk-size", "1G")
    assert error_line(r) == "pydiskimg: error: IMAGE: folder /missing/dir does not exist"


def test_output_is_not_an_input(root: Path, tmp_path: Path) -> None:
    config = tmp_path / "configuration.nix"
    config.write_text("{ }\n")
    r = run("build", "-q", "--root", str(root), "--config-file", str(config), "-o", str(config))
    assert error_line(r) == f"pydiskimg: error: output (-o): {config} is the same file as the input {config}"
    assert config.read_text() == "{ }\n"
    # a hardlink to the input is the same file too
    os.link(config, tmp_path / "link.img")
    r = run("build", "-q", "--root", str(root), "--config-file", str(config), "-o", str(tmp_path / "link.img"))
    assert "is the same file as the input" in error_line(r)
    # inside a source tree: it would be read as one of its own inputs (next time, or now)
    for cmd, flag in ((["build"], "output (-o)"), (["ext4"], "-o"), (["fat", "--size", "64M"], "-o")):
        r = run(*cmd, "-q", "--root", str(root), "-o", str(root / "hello"))
        assert error_line(r) == (f"pydiskimg: error: {flag}: {root / 'hello'} is inside the source tree "
                                 f"{root}: the image would be read as one of its own inputs")
    assert (root / "hello").read_text() == "hello\n"
    esp = tmp_path / "esp"
    esp.mkdir()
    r = run("build", "-q", "--root", str(root), "--esp", str(esp), "--partition-table", "efi",
            "-o", str(esp / "x.img"))
    assert "is inside the source tree" in error_line(r)


def test_sources_exist(root: Path, tmp_path: Path) -> None:
    r = run("build", "-q", "--root", str(root), "--esp", str(tmp_path / "noesp"), "--partition-table", "efi",
            "-o", str(tmp_path / "x.img"))
    assert error_line(r).startswith(f"pydiskimg: error: esp (--esp): {tmp_path / 'noesp'}")
    contents = tmp_path / "contents.json"
    contents.write_text('[{"source": "motd", "target": "/etc/motd"}]')
    r = run("build", "-q", "--root", str(root), "--contents", str(contents), "-o", str(tmp_path / "x.img"))
    assert error_line(r) == f"pydiskimg: error: contents[0] source: {tmp_path / 'motd'}: no such file"
    assert sorted(os.listdir(tmp_path)) == ["contents.json", "root"]


def test_every_command_takes_quiet(root: Path, tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    assert run("build", "-q", "--root", str(root), "-o", str(img), "--partition-table", "efi").stderr == ""
    assert run("ext4", "-q", "--root", str(root), "-o", str(tmp_path / "fs.img")).returncode == 0
    assert run("fat", "--quiet", "--root", str(root), "-o", str(tmp_path / "esp.img"), "--size", "auto").returncode == 0
    assert run("partition", "-q", str(tmp_path / "p.img"), "--partition-table", "efi", "--disk-size", "1G").returncode == 0
    r = run("inspect", "-q", str(img))
    assert r.returncode == 0 and "ESP" in r.stdout
    assert run("diff", "-q", str(img), str(img)).returncode == 0
    assert run("split", "-q", str(img), str(tmp_path / "parts")).returncode == 0
    for cmd in ("build", "partition", "ext4", "fat", "inspect", "diff", "split"):
        assert "-q, --quiet" in run(cmd, "--help").stdout, cmd


def test_ext4_too_large_names_the_limit(root: Path, tmp_path: Path) -> None:
    r = run("ext4", "-q", "--root", str(root), "-o", str(tmp_path / "fs.img"), "--size", "600T")
    assert error_line(r) == ("pydiskimg: error: ext4 filesystem: 659706976665600 bytes is too large: the "
                             "limit is 2^32-1 blocks of 4 KiB, 17592186040320 bytes (16 TiB - 4 KiB)")
    # the largest size that is allowed plans (nothing is written: a dry run of the build)
    r = run("build", "-q", "--root", str(root), "-o", str(tmp_path / "x.img"), "--partition-table", "none",
            "--disk-size", "17179869180K", "--dry-run")  # 16 TiB - 4 KiB
    assert r.returncode == 0, r.stderr
    r = run("build", "-q", "--root", str(root), "-o", str(tmp_path / "x.img"), "--partition-table", "none",
            "--disk-size", "16T", "--dry-run")
    assert "is too large" in error_line(r) and "16 TiB - 4 KiB" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["root"]


def test_build_help_names_its_metavars() -> None:
    from pydiskimg.spec import FORMATS, TABLE_TYPES

    text = run("build", "--help").stdout
    for flag, metavar in (("--root", "DIR"), ("-o", "FILE"), ("--disk-size", "SIZE"), ("--esp", "DIR"),
                          ("--contents", "FILE"), ("--seed", "UUID"), ("--root-gpuid", "UUID"),
                          ("--install-bootloader", "CMD"), ("--post-vm", "CMD"), ("--mem-size", "N"),
                          ("--source-date-epoch", "N"), ("--xbootldr", "DIR"), ("--grub-dir", "DIR")):
        assert f"{flag} {metavar}" in text, (flag, metavar)
    assert "--partition-table {" + ",".join(TABLE_TYPES) + "}" in text
    assert "--format {" + ",".join(FORMATS) + "}" in text
    assert " VALUE" not in text
