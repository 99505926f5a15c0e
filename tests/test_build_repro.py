"""The reproducibility matrix: one spec built twice in different environments, same bytes.

The second build differs in umask, TZ, LC_ALL, working directory, TMPDIR, the order in which the
source tree was created (so directory listing order differs) and the source files' atimes.
Every table type and every format must give identical bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from imgcheck import sha256

TABLES = ["none", "legacy", "legacy+gpt", "efi", "hybrid", "efixbootldr"]
FORMATS = ["raw", "qcow2", "qcow2-compressed", "vdi", "vpc"]
MTIME_NS = 1_600_000_000_123_456_789


def make_tree(root: Path, reverse: bool) -> Path:
    """A small tree with every common kind of entry, created in one order or its reverse."""
    files = {f"dir{i}/file{j}.txt": (f"payload {i} {j}\n" * (j * 40 + 1)).encode() for i in range(4) for j in range(6)}
    files["etc/passwd"] = b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\n"
    files["etc/group"] = b"root:x:0:\nusers:x:100:alice\n"
    files["big.bin"] = bytes(range(256)) * 4096
    items = sorted(files.items(), reverse=reverse)
    for rel, data in items:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "link").symlink_to("dir0/file0.txt")
    os.link(root / "dir1/file1.txt", root / "hardlink.txt")
    os.setxattr(root / "dir2/file2.txt", "user.demo", b"value")
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    os.utime(root, ns=(MTIME_NS, MTIME_NS))
    return root


def make_esp_tree(root: Path, reverse: bool) -> Path:
    """FAT holds folders and regular files only."""
    files = {
        "EFI/BOOT/BOOTX64.EFI": b"MZ" + bytes(4000),
        "loader/loader.conf": b"default demo.conf\n",
        "loader/entries/demo.conf": b"title demo\nlinux /vmlinuz\n",
        "A long file name.txt": b"long\n",
    }
    for rel, data in sorted(files.items(), reverse=reverse):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(MTIME_NS, MTIME_NS))
    return root


def build(args: list[str], cwd: Path, env_extra: dict[str, str], umask: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **env_extra)
    env.pop("SOURCE_DATE_EPOCH", None)

    def pre() -> None:
        os.umask(umask)

    return subprocess.run(
        [sys.executable, "-m", "pydiskimg", "build", "--quiet", *args],
        cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=pre,
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", TABLES)
def test_same_bytes_in_another_environment(tmp_path: Path, table: str, fmt: str) -> None:
    outs = []
    for run_no, (reverse, env_extra, umask) in enumerate([
        (False, {"TZ": "UTC", "LC_ALL": "C"}, 0o022),
        (True, {"TZ": "Asia/Kolkata", "LC_ALL": "C.UTF-8"}, 0o077),
    ]):
        work = tmp_path / f"run{run_no}"
        (work / "cwd").mkdir(parents=True)
        (work / "tmp").mkdir()
        src = make_tree(work / "src", reverse)
        esp = make_esp_tree(work / "espsrc", reverse) if table in ("efi", "hybrid", "efixbootldr") else None
        xbl = make_esp_tree(work / "xblsrc", not reverse) if table == "efixbootldr" else None
        if run_no == 1:
            # touch the atimes: reading the source must not leak into the image
            for dirpath, _, filenames in os.walk(src):
                for f in filenames:
                    p = os.path.join(dirpath, f)
                    if not os.path.islink(p):
                        st = os.lstat(p)
                        os.utime(p, ns=(st.st_atime_ns + 86_400 * 10**9 * 365, st.st_mtime_ns))
        out = work / f"disk.{fmt}"
        args = ["--root", str(src), "-o", str(out), "--partition-table", table, "--format", fmt,
                "--additional-space", "4M", "--boot-size", "160M" if xbl else "48M",
                "--source-date-epoch", "1700000000"]
        if esp is not None:
            args += ["--esp", str(esp)]
        if xbl is not None:
            args += ["--xbootldr", str(xbl)]
        env_extra = dict(env_extra, TMPDIR=str(work / "tmp"))
        r = build(args, work / "cwd", env_extra, umask)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    assert sha256(outs[0]) == sha256(outs[1])
