"""Hostile input: mutated images never make the readers (partition tables, ext4, FAT, diff)
raise anything but a :class:`pydiskimg.errors.Error`, and never hang (the readers bound their
own work; no wall-clock assertion here).

Base images come from the reference tools (sgdisk, mkfs.ext4 -d, e2fsck -fD for htree folders,
mkfs.vfat + mcopy).  Hypothesis flips bytes in the superblock, group descriptors, inode table,
extent tree blocks, directory blocks (linear and htree), xattr block, journal superblock, GPT
header and entries, FAT boot sector, FAT and root folder.  A few hand-made corruptions go
through the CLI in a subprocess: exit status and one-line message, no traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_audit_images import FAKE_TIME, FS_UUID, needs_tools, run

from pydiskimg.audit import diff as diff_mod
from pydiskimg.audit.disk import read_disk
from pydiskimg.audit.fatdiff import _walk as fat_walk
from pydiskimg.audit.fatdiff import fat_fd, fat_files, fat_info
from pydiskimg.errors import ChecksumError, Error
from pydiskimg.ext4.read import Ext4

pytestmark = needs_tools

MiB = 1 << 20
ESP_OFF, ESP_SIZE = 2048 * 512, 1 * MiB
ROOT_OFF = 4096 * 512


class BytesSource:
    """An in-memory image with the interface of :class:`pydiskimg.audit.source.Source`."""

    format = "bytes"
    extents = None

    def __init__(self, data: bytes, path: str = "mem") -> None:
        self.data = bytes(data)
        self.size = len(self.data)
        self.path = path

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise Error("bad read")
        return self.data[offset:offset + length]

    def data_ranges(self, start: int = 0, end: int | None = None):  # type: ignore[no-untyped-def]
        end = self.size if end is None else min(end, self.size)
        if start < end:
            yield start, end - start

    def close(self) -> None:
        pass


@dataclass
class Base:
    data: bytes
    root_size: int
    regions: dict[str, tuple[int, int]]
    entries: int  # names in the source tree

    def __repr__(self) -> str:  # keep Hypothesis reports short
        return f"Base({len(self.data)} bytes)"


def _tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    os.setxattr(root / "etc" / "passwd", "user.big", bytes(range(256)) * 3)  # xattr block
    os.setxattr(root / "etc" / "passwd", "user.small", b"s")
    with open(root / "sparse", "wb") as f:  # 8 fragments: extent tree of depth 1
        for i in range(8):
            f.seek(i * 8192)
            f.write(b"%d" % i * 100)
    (root / "dir").mkdir()
    for i in range(120):
        (root / "dir" / f"name-with-some-length-{i:04d}").write_bytes(b"x")
    os.symlink("etc/passwd", root / "link")
    os.symlink("y" * 90, root / "slowlink")
    os.link(root / "etc" / "passwd", root / "hard")
    return root


_BASE: dict[str, Base] = {}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    if "b" in _BASE:
        return _BASE["b"]
    d = tmp_path_factory.mktemp("fuzz")
    tree = _tree(d / "tree")
    img = d / "disk.img"
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
    run("sgdisk", "-U", "0F0F0F0F-1111-2222-3333-444444444444",
        "-n", "1:2048:+1M", "-t", "1:EF00", "-n", "2:4096:0", "-t", "2:8300", str(img))
    last = 8 * MiB // 512 - 34
    root_size = (last - 4096 + 1) * 512
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME)
    run("mkfs.ext4", "-q", "-F", "-b", "1024", "-U", FS_UUID, "-E",
        f"hash_seed={FS_UUID},offset={ROOT_OFF}", "-d", str(tree), str(img),
        str(root_size // 1024), env=env)
    run("e2fsck", "-fyD", f"{img}?offset={ROOT_OFF}", env=env, ok=(0, 1))  # index folders
    run("mkfs.vfat", "-i", "DEADBEEF", "--offset", "2048", str(img), str(ESP_SIZE // 1024))
    run("mcopy", "-s", "-i", f"{img}@@{ESP_OFF}", str(tree / "etc"), str(tree / "link"), "::/")
    data = img.read_bytes()
    # where the interesting structures are (found with the reader on the clean image)
    src = BytesSource(data)
    fs = Ext4(src, ROOT_OFF, root_size)
    bs = fs.block_size
    regions: dict[str, tuple[int, int]] = {
        "superblock": (ROOT_OFF + 1024, 1024),
        "gdt": (ROOT_OFF + fs.gdt_block * bs, fs.groups * fs.desc_size),
        "inode table": (ROOT_OFF + fs.gd[0]["inode_table"] * bs, 40 * fs.inode_size),
        "gpt": (0, 34 * 512),
        "gpt backup": (len(data) - 33 * 512, 33 * 512),
        "fat boot": (ESP_OFF, 512),
        "fat tables+root": (ESP_OFF + 512, 16 * 512),
    }
    ino = fs.lookup("/sparse")
    meta = fs.block_map(fs.inode(ino)).meta
    assert meta, "the sparse file should need an extent tree block"
    regions["extent block"] = (ROOT_OFF + meta[0] * bs, bs)
    for name in ("/dir", "/"):
        bm = fs.block_map(fs.inode(fs.lookup(name)))
        regions[f"dir {name}"] = (ROOT_OFF + bm.extents[0].pblk * bs,
                                  min(bm.extents[0].length, 3) * bs)
    acl = fs.inode(fs.lookup("/etc/passwd")).file_acl
    assert acl
    regions["xattr block"] = (ROOT_OFF + acl * bs, bs)
    j = fs.block_map(fs.inode(8)).extents[0].pblk
    regions["journal sb"] = (ROOT_OFF + j * bs, 1024)
    assert fs.inode(fs.lookup("/dir")).flags & 0x1000, "e2fsck -fD should index /dir"
    entries = sum(len(d) + len(f) for _, d, f in os.walk(tree))
    _BASE["b"] = Base(data, root_size, regions, entries)
    return _BASE["b"]


def exercise(src: BytesSource, root_size: int) -> None:
    """Everything a reader does for inspect --files and diff; only Error may escape."""
    with contextlib.suppress(Error):
        read_disk(src)
    for verify in (True, False):
        try:
            fs = Ext4(src, ROOT_OFF, root_size, verify=verify)
            fs.info()
            for _path, ino in fs.walk():
                inode = fs.inode(ino)
                fs.xattrs(inode)
                if inode.kind == "file":
                    h = hashlib.sha256()
                    for c in fs.iter_data(inode):
                        h.update(c)
                elif inode.kind == "symlink":
                    fs.symlink_target(inode)
                elif inode.kind in ("chr", "blk"):
                    fs.device(inode)
        except Error:
            pass
    try:
        fat_info(src, ESP_OFF, ESP_SIZE)  # type: ignore[arg-type]
        fat_files(src, ESP_OFF, ESP_SIZE)  # type: ignore[arg-type]
    except Error:
        pass
    try:
        with fat_fd(src, ESP_OFF, ESP_SIZE) as (fd, off):  # type: ignore[arg-type]
            vol = fat_walk(fd, off, ESP_SIZE)
            for path, node in vol.nodes.items():
                if not node.is_dir:
                    for _ in vol.data(path):
                        pass
    except Error:
        pass


def mutate(data: bytes, region: tuple[int, int], flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    start, length = region
    for pos, x in flips:
        out[start + pos % length] ^= x
    return bytes(out)


flips = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(1, 255)), min_size=1,
                 max_size=6)
REGIONS = ["superblock", "gdt", "inode table", "extent block", "dir /dir", "dir /",
           "xattr block", "journal sb", "gpt", "gpt backup", "fat boot", "fat tables+root"]


def test_base_image_reads_clean(base: Base) -> None:
    src = BytesSource(base.data)
    fs = Ext4(src, ROOT_OFF, base.root_size)
    assert len(list(fs.walk())) == base.entries + 2  # and / and /lost+found
    run_ok = fat_info(src, ESP_OFF, ESP_SIZE)  # type: ignore[arg-type]
    assert run_ok["volume_id"] == 0xDEADBEEF


#: more examples for a local soak: PYDISKIMG_FUZZ_EXAMPLES=5000 PYDISKIMG_FUZZ_RANDOM=1
EXAMPLES = int(os.environ.get("PYDISKIMG_FUZZ_EXAMPLES", "120"))
RANDOM = bool(os.environ.get("PYDISKIMG_FUZZ_RANDOM"))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(region=st.sampled_from(REGIONS), fl=flips, do_diff=st.integers(0, 5))
def test_mutated_images_raise_only_errors(base: Base, region: str,
                                          fl: list[tuple[int, int]], do_diff: int) -> None:
    bad = mutate(base.data, base.regions[region], fl)
    src = BytesSource(bad, "mutated")
    exercise(src, base.root_size)
    if do_diff == 0:
        try:
            diffs = diff_mod.diff_sources(BytesSource(base.data, "clean"), src)
        except Error:
            return
        if bad != base.data:
            assert diffs, "a mutated image must differ from the clean one"


@settings(max_examples=max(25, EXAMPLES // 5), deadline=None, derandomize=not RANDOM,
          database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cut=st.integers(0, 8 * MiB))
def test_truncated_images_raise_only_errors(base: Base, cut: int) -> None:
    exercise(BytesSource(base.data[:cut], "truncated"), base.root_size)


# -- hand-made corruptions through the CLI ----------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pydiskimg", *args], capture_output=True,
                          text=True, check=False, timeout=300)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_cli_truncated_and_garbage(base: Base, tmp_path: Path) -> None:
    good = _write(tmp_path / "good.img", base.data)
    trunc = _write(tmp_path / "trunc.img", base.data[: 5 * MiB])
    p = cli("split", str(trunc), str(tmp_path / "out"))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    p = cli("diff", str(good), str(trunc))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout.startswith("image: size: 8388608 -> 5242880")
    garbage = _write(tmp_path / "garbage.img", hashlib.sha256(b"x").digest() * 1000)
    p = cli("split", str(garbage), str(tmp_path / "out2"))
    assert p.returncode == 2 and p.stderr.startswith("pydiskimg: error: ")


def test_directory_loop_is_an_error(base: Base, tmp_path: Path) -> None:
    img = _write(tmp_path / "loop.img", base.data)
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME)
    run("debugfs", "-w", "-R", "ln /etc /etc/loop", f"{img}?offset={ROOT_OFF}", env=env)
    src = BytesSource(img.read_bytes())
    fs = Ext4(src, ROOT_OFF, base.root_size)
    with pytest.raises(Error, match="directory loop"):
        list(fs.walk())
    p = cli("diff", str(_write(tmp_path / "good.img", base.data)), str(img))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "directory loop" in p.stdout


def test_extent_tree_loop_is_an_error(base: Base, tmp_path: Path) -> None:
    data = bytearray(base.data)
    start, bs = base.regions["extent block"]
    blk = (start - ROOT_OFF) // bs
    # make the leaf block an index block pointing at itself
    data[start + 6:start + 8] = (1).to_bytes(2, "little")  # eh_depth = 1
    data[start + 12 + 4:start + 12 + 8] = blk.to_bytes(4, "little")
    data[start + 12 + 8:start + 12 + 10] = b"\0\0"
    src = BytesSource(bytes(data))
    fs = Ext4(src, ROOT_OFF, base.root_size, verify=False)
    with pytest.raises(Error, match="extent tree (loop|depth)"):
        fs.block_map(fs.inode(fs.lookup("/sparse")))


@pytest.mark.parametrize("field,value,match", [
    (0x00, (1 << 32) - 1, "s_inodes_count"),            # absurd inode count
    (0x04, (1 << 32) - 1, "s_blocks_count"),            # more blocks than the partition holds
    (0x18, 20, "s_log_block_size"),                     # 1 GiB blocks
    (0x28, 0, "s_inodes_per_group"),
    (0x38, 0x1234, "magic"),
])
def test_absurd_superblock_fields(base: Base, field: int, value: int, match: str) -> None:
    data = bytearray(base.data)
    at = ROOT_OFF + 1024 + field
    width = 2 if field == 0x38 else 4
    data[at:at + width] = value.to_bytes(width, "little")
    with pytest.raises(Error, match=match):
        Ext4(BytesSource(bytes(data)), ROOT_OFF, base.root_size, verify=False)
    if field != 0x38:  # with checksums verified the superblock checksum fails first
        with pytest.raises(Error, match="checksum"):
            Ext4(BytesSource(bytes(data)), ROOT_OFF, base.root_size, verify=True)


def test_directory_block_checksum_is_verified(base: Base) -> None:
    data = bytearray(base.data)
    start, _ = base.regions["dir /"]
    data[start + 33] ^= 0x20  # a letter of the third entry's name (lost+found)
    src = BytesSource(bytes(data))
    with pytest.raises(ChecksumError, match="directory inode 2 block 0"):
        list(Ext4(src, ROOT_OFF, base.root_size).walk())
    names = {p for p, _ in Ext4(src, ROOT_OFF, base.root_size, verify=False).walk()}
    assert b"/lOst+found" in names
