"""Helpers for the ext4 record tests: reference images made by mkfs.ext4, a minimal raw reader
(offsets from the kernel documentation, independent of pydiskimg's readers), debugfs and
e2fsck wrappers.  No tests here."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

FS_UUID = "11111111-2222-3333-4444-555555555555"
HASH_SEED = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
BS = 4096

needs_e2fsprogs = pytest.mark.skipif(
    shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
    reason="e2fsprogs not installed (CI installs it)",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["E2FSPROGS_FAKE_TIME"] = "1700000000"
    env["LC_ALL"] = "C"
    env["MKE2FS_CONFIG"] = "/etc/mke2fs.conf"
    return env


def run(*cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, env=_env())
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {r.returncode}:\n"
            f"{r.stdout.decode(errors='replace')}\n{r.stderr.decode(errors='replace')}"
        )
    return r


def mkfs(tree: Path | None, img: Path, size: str = "64M", *extra: str) -> Path:
    """``mkfs.ext4 -b 4096`` with a fixed UUID, hash seed and time, from ``tree`` (``-d``)."""
    if img.exists():
        img.unlink()
    args = ["mkfs.ext4", "-q", "-F", "-b", str(BS), "-U", FS_UUID, "-E", f"hash_seed={HASH_SEED}"]
    if tree is not None:
        args += ["-d", str(tree)]
    run(*args, *extra, str(img), size)
    return img


def debugfs(img: Path, *cmds: str | bytes, write: bool = False) -> bytes:
    """Run debugfs commands from a command file; returns stdout."""
    cf = img.with_suffix(".cmds")
    cf.write_bytes(b"\n".join(c if isinstance(c, bytes) else c.encode() for c in cmds) + b"\n")
    args = ["debugfs"] + (["-w"] if write else []) + ["-f", str(cf), str(img)]
    r = run(*args)
    return b"\n".join(ln for ln in r.stdout.split(b"\n") if not ln.startswith(b"debugfs: "))


def e2fsck_output(img: Path) -> list[str]:
    """Lines of ``e2fsck -fn`` that are not the pass headers / banner / summary."""
    r = run("e2fsck", "-fn", str(img), check=False)
    out = (r.stdout + r.stderr).decode(errors="replace")
    bad = []
    for ln in out.splitlines():
        s = ln.strip()
        if not s or s.startswith("e2fsck 1.") or re.match(r"Pass \d[A-Z]?: ", s):
            continue
        if re.search(r": \d+/\d+ files \(.*\), \d+/\d+ blocks$", s):
            continue
        bad.append(s)
    if r.returncode != 0 and not bad:
        bad.append(f"exit status {r.returncode}")
    return bad


def assert_fsck_clean(img: Path) -> None:
    bad = e2fsck_output(img)
    assert not bad, "e2fsck -fn reported:\n" + "\n".join(bad[:40])


class RawImage:
    """Just enough of an ext4 image read raw to test record bytes (4K blocks, 64bit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = open(path, "r+b")  # noqa: SIM115
        self.sb = self.read(1024, 1024)
        (self.inodes_count, self.blocks_count_lo) = struct.unpack_from("<II", self.sb, 0)
        self.log_bs = struct.unpack_from("<I", self.sb, 0x18)[0]
        self.bs = 1024 << self.log_bs
        self.bpg = struct.unpack_from("<I", self.sb, 0x20)[0]
        self.ipg = struct.unpack_from("<I", self.sb, 0x28)[0]
        self.inode_size = struct.unpack_from("<H", self.sb, 0x58)[0]
        self.uuid = bytes(self.sb[0x68:0x78])
        self.hash_seed = struct.unpack_from("<4I", self.sb, 0xEC)
        self.def_hash_version = self.sb[0xFC]
        self.desc_size = struct.unpack_from("<H", self.sb, 0xFE)[0]
        self.s_flags = struct.unpack_from("<I", self.sb, 0x160)[0]
        self.first_data_block = struct.unpack_from("<I", self.sb, 0x14)[0]
        self.ngroups = -(-(self.blocks_count_lo - self.first_data_block) // self.bpg)

    def close(self) -> None:
        self.f.close()

    def read(self, off: int, n: int) -> bytes:
        self.f.seek(off)
        return self.f.read(n)

    def write(self, off: int, data: bytes) -> None:
        self.f.seek(off)
        self.f.write(data)
        self.f.flush()

    def block(self, n: int) -> bytes:
        return self.read(n * self.bs, self.bs)

    def desc(self, g: int) -> bytes:
        gdt = (self.first_data_block + 1) * self.bs
        return self.read(gdt + g * self.desc_size, self.desc_size)

    def inode_table(self, g: int) -> int:
        d = self.desc(g)
        lo = struct.unpack_from("<I", d, 0x8)[0]
        hi = struct.unpack_from("<I", d, 0x28)[0] if self.desc_size >= 64 else 0
        return lo | hi << 32

    def inode_off(self, ino: int) -> int:
        g, i = divmod(ino - 1, self.ipg)
        return self.inode_table(g) * self.bs + i * self.inode_size

    def inode(self, ino: int) -> bytes:
        return self.read(self.inode_off(ino), self.inode_size)

    @property
    def unsigned_hash(self) -> bool:
        return bool(self.s_flags & 2)


def ino_of(img: Path, path: str) -> int:
    out = debugfs(img, f"stat {path}").decode(errors="replace")
    m = re.search(r"Inode: (\d+)", out)
    assert m, out
    return int(m.group(1))


def blocks_of(img: Path, path: str) -> list[int]:
    """Physical data blocks of a file in logical order (debugfs ``blocks``)."""
    out = debugfs(img, f"blocks {path}").decode().split()
    return [int(x) for x in out]


def fs_uuid_bytes() -> bytes:
    return uuid.UUID(FS_UUID).bytes


def install_dir(img: Path, path: str, data: bytes, indexed: bool, extra_cmds: tuple[str, ...] = ()) -> None:
    """Replace the blocks of directory ``path`` in ``img`` by ``data`` (logical blocks 0..):
    grow it with debugfs ``expand_dir`` (or punch the tail), write the bytes at the physical
    blocks debugfs reports, set EXT4_INDEX_FL as asked (debugfs rewrites the inode checksum)."""
    bs = BS
    need = len(data) // bs
    have = len(blocks_of(img, path))
    cmds: list[str] = []
    if need > have:
        cmds += [f"expand_dir {path}"] * (need - have)
    elif need < have:
        cmds += [f"punch {path} {need}", f"sif {path} size {need * bs}"]
    cmds.append(f"sif {path} flags {0x81000 if indexed else 0x80000:#x}")
    cmds += list(extra_cmds)
    debugfs(img, *cmds, write=True)
    blocks = blocks_of(img, path)
    assert len(blocks) == need, (len(blocks), need)
    with open(img, "r+b") as f:
        for i, b in enumerate(blocks):
            f.seek(b * bs)
            f.write(data[i * bs : (i + 1) * bs])


def ls_names(img: Path, path: str) -> list[tuple[bytes, int]]:
    """(name, inode) of every entry debugfs ``ls -p`` lists (. and .. excluded)."""
    out = debugfs(img, f"ls -p {path}")
    res = []
    for ln in out.split(b"\n"):
        if not ln.startswith(b"/"):
            continue
        parts = ln.split(b"/")
        # /ino/mode/uid/gid/name/size/  (names may contain '/'-free bytes only)
        ino = int(parts[1])
        name = b"/".join(parts[5:-2])
        if ino and name not in (b".", b".."):
            res.append((name, ino))
    return res
