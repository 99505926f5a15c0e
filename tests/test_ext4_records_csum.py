"""Checksums recomputed by pydiskimg.ext4.csum on real mkfs.ext4 / e2fsck -D images equal the
values those tools wrote."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from test_ext4_records_tools import (
    BS,
    RawImage,
    blocks_of,
    debugfs,
    fs_uuid_bytes,
    ino_of,
    mkfs,
    needs_e2fsprogs,
    run,
)

from pydiskimg.ext4 import csum

pytestmark = needs_e2fsprogs


def test_crc32c_raw_known_values() -> None:
    # CRC-32C check value: std(b"123456789") = 0xE3069283 = ~raw(~0, ...)
    assert csum.crc32c_raw(0xFFFFFFFF, b"123456789") ^ 0xFFFFFFFF == 0xE3069283
    # chaining: raw(raw(s, a), b) == raw(s, a + b)
    s = 0x12345678
    assert csum.crc32c_raw(csum.crc32c_raw(s, b"abc"), b"defg") == csum.crc32c_raw(s, b"abcdefg")
    assert csum.crc32c_raw(7, memoryview(b"xyz")) == csum.crc32c_raw(7, bytearray(b"xyz"))


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> RawImage:
    """An image with an extent tree block, an xattr block, an htree directory (e2fsck -fD)."""
    base = tmp_path_factory.mktemp("csumref")
    t = base / "tree"
    (t / "dir").mkdir(parents=True)
    (t / "big").mkdir()
    with open(t / "sparse", "wb") as f:
        for i in range(12):
            f.seek(i * 3 * BS)
            f.write(os.urandom(100))
    (t / "dir" / "file").write_bytes(b"hello\n")
    x = t / "xattrs"
    x.write_bytes(b"x")
    os.setxattr(x, "user.one", os.urandom(300))
    os.setxattr(x, "user.two", b"second value")
    os.setxattr(x, "trusted.t", b"3")
    for i in range(600):
        (t / "big" / f"some-file-name-{i:04d}").write_bytes(b"")
    img = mkfs(t, base / "ref.img", "64M")
    run("e2fsck", "-fyD", str(img), check=False)
    r = RawImage(img)
    yield r
    r.close()


def test_superblock(ref: RawImage) -> None:
    stored = struct.unpack_from("<I", ref.sb, 0x3FC)[0]
    assert csum.superblock_csum(ref.sb) == stored
    assert csum.superblock_csum(ref.sb[:0x3FC] + b"\xff" * 4) == stored  # csum field excluded
    assert csum.superblock_csum(b"\1" + ref.sb[1:]) != stored


def test_seed_gdt_and_bitmaps(ref: RawImage) -> None:
    assert ref.uuid == fs_uuid_bytes()
    seed = csum.fs_csum_seed(ref.uuid)
    checked = 0
    for g in range(ref.ngroups):
        d = ref.desc(g)
        assert csum.gdt_csum(seed, g, d) == struct.unpack_from("<H", d, 0x1E)[0]
        flags = struct.unpack_from("<H", d, 0x12)[0]
        bb = struct.unpack_from("<I", d, 0x0)[0] | struct.unpack_from("<I", d, 0x20)[0] << 32
        ib = struct.unpack_from("<I", d, 0x4)[0] | struct.unpack_from("<I", d, 0x24)[0] << 32
        if not flags & 2:  # BLOCK_UNINIT
            c = csum.bitmap_csum(seed, ref.block(bb)[: ref.bpg // 8])
            assert c & 0xFFFF == struct.unpack_from("<H", d, 0x18)[0]
            assert c >> 16 == struct.unpack_from("<H", d, 0x38)[0]
            checked += 1
        if not flags & 1:  # INODE_UNINIT
            c = csum.bitmap_csum(seed, ref.block(ib)[: ref.ipg // 8])
            assert c & 0xFFFF == struct.unpack_from("<H", d, 0x1A)[0]
            assert c >> 16 == struct.unpack_from("<H", d, 0x3A)[0]
            checked += 1
    assert checked >= 2
    # a wrong group number gives a different descriptor checksum
    assert csum.gdt_csum(seed, 1, ref.desc(0)) != struct.unpack_from("<H", ref.desc(0), 0x1E)[0]


def _stored_inode_csum(raw: bytes) -> int:
    return struct.unpack_from("<H", raw, 0x7C)[0] | struct.unpack_from("<H", raw, 0x82)[0] << 16


def test_inodes_one_by_one_and_vectorised(ref: RawImage) -> None:
    seed = csum.fs_csum_seed(ref.uuid)
    tbl = np.frombuffer(
        ref.read(ref.inode_table(0) * ref.bs, ref.ipg * ref.inode_size), dtype=np.uint8
    ).reshape(ref.ipg, ref.inode_size)
    used = [i for i in range(ref.ipg) if tbl[i].any()]
    assert len(used) > 600
    inos = np.array(used, dtype=np.uint32) + 1
    gens = np.array([struct.unpack_from("<I", tbl[i].tobytes(), 0x64)[0] for i in used])
    vec = csum.inode_table_csums(seed, inos, gens, tbl[used])
    n_checked = 0
    for k, i in enumerate(used):
        raw = tbl[i].tobytes()
        extra = struct.unpack_from("<H", raw, 0x80)[0]
        stored = _stored_inode_csum(raw) if extra >= 4 else struct.unpack_from("<H", raw, 0x7C)[0]
        one = csum.inode_csum(seed, i + 1, gens[k], raw)
        if extra >= 4:
            assert one == stored, f"inode {i + 1}"
            assert int(vec[k]) == stored, f"inode {i + 1} (vectorised)"
        else:  # inode 1 and the other extra_isize-0 inodes keep only 16 bits
            assert one & 0xFFFF == stored, f"inode {i + 1}"
        n_checked += 1
    assert n_checked == len(used)
    # the generation and the inode number are part of the checksum
    raw = tbl[1].tobytes()
    assert csum.inode_csum(seed, 2, 1, raw) != _stored_inode_csum(raw)
    assert csum.inode_csum(seed, 3, 0, raw) != _stored_inode_csum(raw)


def test_dir_blocks(ref: RawImage) -> None:
    seed = csum.fs_csum_seed(ref.uuid)
    n = 0
    for path in ("/", "/lost+found", "/dir"):
        ino = ino_of(ref.path, path)
        for b in blocks_of(ref.path, path):
            blk = ref.block(b)
            assert blk[-12:-4] == bytes.fromhex("00000000 0c00 00de".replace(" ", ""))
            assert csum.dirblock_csum(seed, ino, 0, blk) == struct.unpack_from("<I", blk, BS - 4)[0]
            n += 1
    assert n >= 6


def test_htree_blocks(ref: RawImage) -> None:
    """e2fsck -fD indexed /big: dx_root checksum and the leaves' tails."""
    seed = csum.fs_csum_seed(ref.uuid)
    ino = ino_of(ref.path, "/big")
    flags = struct.unpack_from("<I", ref.inode(ino), 0x20)[0]
    assert flags & 0x1000, "e2fsck -D did not index /big"
    blocks = blocks_of(ref.path, "/big")
    root = ref.block(blocks[0])
    limit, count = struct.unpack_from("<HH", root, 0x20)
    assert limit == (BS - 0x20 - 8) // 8 and count >= 2
    tail = 0x20 + 8 * limit
    assert csum.dx_csum(seed, ino, 0, root, 0x20) == struct.unpack_from("<I", root, tail + 4)[0]
    for b in blocks[1:]:
        blk = ref.block(b)
        assert csum.dirblock_csum(seed, ino, 0, blk) == struct.unpack_from("<I", blk, BS - 4)[0]


def test_extent_block(ref: RawImage) -> None:
    seed = csum.fs_csum_seed(ref.uuid)
    ino = ino_of(ref.path, "/sparse")
    ib = ref.inode(ino)[0x28:0x28 + 60]
    magic, entries, _max, depth = struct.unpack_from("<HHHH", ib, 0)
    assert magic == 0xF30A and depth == 1 and entries == 1
    leaf = struct.unpack_from("<I", ib, 12 + 4)[0] | struct.unpack_from("<H", ib, 12 + 8)[0] << 32
    blk = ref.block(leaf)
    eh_max = struct.unpack_from("<H", blk, 4)[0]
    stored = struct.unpack_from("<I", blk, 12 + 12 * eh_max)[0]
    assert csum.extent_block_csum(seed, ino, 0, blk) == stored


def test_xattr_block(ref: RawImage) -> None:
    seed = csum.fs_csum_seed(ref.uuid)
    ino = ino_of(ref.path, "/xattrs")
    raw = ref.inode(ino)
    acl = struct.unpack_from("<I", raw, 0x68)[0] | struct.unpack_from("<H", raw, 0x76)[0] << 32
    assert acl, "mkfs put no xattr block"
    blk = ref.block(acl)
    assert csum.xattr_block_csum(seed, acl, blk) == struct.unpack_from("<I", blk, 0x10)[0]
    assert csum.xattr_block_csum(seed, acl + 1, blk) != struct.unpack_from("<I", blk, 0x10)[0]
    # debugfs agrees the block is there
    assert b"user.one" in debugfs(ref.path, "ea_list /xattrs")


def test_csum_functions_accept_numpy_and_memoryview() -> None:
    a = np.arange(256, dtype=np.uint8)
    assert csum.crc32c_raw(1, a.tobytes()) == csum.crc32c_raw(1, memoryview(a.tobytes()))
    assert csum.inode_csum(5, 12, 0, a.tobytes()) == csum.inode_csum(5, 12, 0, memoryview(a.tobytes()))
    tbl = np.stack([a, a[::-1]])
    v = csum.inode_table_csums(5, np.array([12, 13]), np.array([0, 7]), tbl)
    assert int(v[0]) == csum.inode_csum(5, 12, 0, a.tobytes())
    assert int(v[1]) == csum.inode_csum(5, 13, 7, a[::-1].tobytes())


def test_fs_csum_seed_rejects_bad_uuid() -> None:
    with pytest.raises(ValueError):
        csum.fs_csum_seed(b"short")


def _unused(p: Path) -> None:  # pragma: no cover - keeps the Path import for type hints
    pass


def test_backends_agree() -> None:
    """The crc32c-package path and crcmod's C path give the same raw registers."""
    import random

    rng = random.Random(3)
    for n in (0, 1, 3, 4, 7, 64, 255, 256, 264, 4096):
        data = bytes(rng.randrange(256) for _ in range(n))
        seed = rng.randrange(1 << 32)
        assert csum._crcmod_raw(data, seed) == csum.crc32c_raw(seed, data)
        if csum._hw_crc32c is not None:
            assert csum._crc32c_pkg_raw(data, seed) == csum._crcmod_raw(data, seed)
