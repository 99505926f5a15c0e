"""Xattrs and ACLs against mkfs.ext4 -d images: ACL bytes as mkfs converts setfacl's ACLs,
xattr blocks byte-identical to mkfs's (but for h_hash, which libext2fs leaves 0), entry
hashes as e2fsprogs computes them, and our inode body + block written into a real image
accepted by e2fsck and read back by debugfs."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ext4_records_tools import (
    BS,
    RawImage,
    assert_fsck_clean,
    debugfs,
    e2fsck_output,
    fs_uuid_bytes,
    ino_of,
    mkfs,
    needs_e2fsprogs,
    run,
)

from pydiskimg.errors import UsageError
from pydiskimg.ext4 import csum
from pydiskimg.ext4.records_structs import ext4_xattr_entry, ext4_xattr_header
from pydiskimg.ext4.xattr import (
    BlockXattrs,
    acl_vfs_to_ext4,
    build_xattr_block,
    encode_xattrs,
    entry_hash,
    full_name,
)

SEED = csum.fs_csum_seed(fs_uuid_bytes())
needs_setfacl = pytest.mark.skipif(shutil.which("setfacl") is None, reason="acl not installed")


def parse_entries(buf: bytes, off: int, base: int) -> list[tuple[int, bytes, int, int, int, bytes]]:
    """(index, name, value_offs, value_size, hash, value) from ``off`` to the zero word;
    value offsets count from ``base``.  Written from the kernel's xattr.h layout."""
    out = []
    while struct.unpack_from("<I", buf, off)[0] != 0:
        nl, idx, voff, inum, vsz, h = struct.unpack_from("<BBHIII", buf, off)
        assert inum == 0
        name = bytes(buf[off + 16 : off + 16 + nl])
        out.append((idx, name, voff, vsz, h, bytes(buf[base + voff : base + voff + vsz])))
        off += (16 + nl + 3) & ~3
    return out


def on_disk_xattrs(r: RawImage, ino: int) -> tuple[dict[bytes, bytes], int, list]:
    """Full name -> value of an inode's xattrs read raw; the block number; block entries."""
    raw = r.inode(ino)
    res: dict[bytes, bytes] = {}
    extra = struct.unpack_from("<H", raw, 0x80)[0]
    body = 0x80 + extra
    if struct.unpack_from("<I", raw, body)[0] == 0xEA020000:
        for idx, name, _o, _s, _h, val in parse_entries(raw, body + 4, body + 4):
            res[full_name(idx, name)] = val
    blk_nr = struct.unpack_from("<I", raw, 0x68)[0] | struct.unpack_from("<H", raw, 0x76)[0] << 32
    ents = []
    if blk_nr:
        blk = r.block(blk_nr)
        assert struct.unpack_from("<I", blk, 0)[0] == 0xEA020000
        ents = parse_entries(blk, 32, 0)
        for idx, name, _o, _s, _h, val in ents:
            res[full_name(idx, name)] = val
    return res, blk_nr, ents


def _src_xattrs(p: Path) -> tuple[tuple[bytes, bytes], ...]:
    return tuple(
        (n.encode(), os.getxattr(p, n, follow_symlinks=False))
        for n in sorted(os.listxattr(p, follow_symlinks=False))
    )


def test_acl_example_from_formats() -> None:
    vfs = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", t, p, i)
        for t, p, i in ((1, 6, 0xFFFFFFFF), (2, 6, 1000), (4, 4, 0xFFFFFFFF), (8, 4, 100),
                        (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF))
    )
    assert acl_vfs_to_ext4(vfs).hex() == (
        "01000000" "01000600" "02000600e8030000" "04000400" "0800040064000000" "10000600" "20000400"
    )
    for bad in (b"", b"\2\0\0\0\1", struct.pack("<I", 1) + bytes(8), struct.pack("<IHHI", 2, 0x40, 0, 0)):
        with pytest.raises(UsageError):
            acl_vfs_to_ext4(bad)


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, RawImage]:
    b = tmp_path_factory.mktemp("xattr")
    t = b / "tree"
    t.mkdir()
    f = t / "acl-file"
    f.write_bytes(b"a")
    d = t / "acl-dir"
    d.mkdir()
    if shutil.which("setfacl"):
        run("setfacl", "-m", "u:1000:rw,u:100000:r,g:100:r,g:54321:rwx,m::rwx,o::r", str(f))
        run("setfacl", "-m", "u:33:rx", str(d))
        run("setfacl", "-d", "-m", "u::rwx,u:1000:rwx,g::rx,o::-", str(d))
    m = t / "many"
    m.write_bytes(b"m")
    os.setxattr(m, "user.aaa", bytes(range(40)))
    os.setxattr(m, "user.b", os.urandom(1000))
    os.setxattr(m, "user.c", b"12345")
    os.setxattr(m, "user.longer-name-here", b"v" * 77)
    os.setxattr(m, "trusted.zz", b"")
    os.setxattr(m, "trusted.overlay.opaque", b"y")
    os.setxattr(m, "security.selinux", b"system_u:object_r:etc_t:s0\0")
    os.setxattr(m, "security.capability", bytes.fromhex("0100000200040000000000000000000000000000"))
    for i in (1, 2):
        s = t / f"share-{i}"
        s.write_bytes(b"s")
        os.setxattr(s, "user.big-a", b"A" * 700)
        os.setxattr(s, "user.big-b", b"B" * 900)
    img = mkfs(t, b / "x.img", "16M")
    r = RawImage(img)
    yield t, img, r
    r.close()


@needs_e2fsprogs
@needs_setfacl
@pytest.mark.parametrize(("path", "attr"), [
    ("acl-file", "system.posix_acl_access"),
    ("acl-dir", "system.posix_acl_access"),
    ("acl-dir", "system.posix_acl_default"),
])
def test_acl_bytes_as_mkfs(ref: tuple[Path, Path, RawImage], path: str, attr: str) -> None:
    t, img, r = ref
    vfs = os.getxattr(t / path, attr)
    disk, _blk, _e = on_disk_xattrs(r, ino_of(img, "/" + path))
    assert acl_vfs_to_ext4(vfs) == disk[attr.encode()]


@needs_e2fsprogs
def test_block_identical_to_mkfs(ref: tuple[Path, Path, RawImage]) -> None:
    _t, img, r = ref
    n = 0
    for path in ("many", "share-1", "share-2"):
        _vals, blk_nr, ents = on_disk_xattrs(r, ino_of(img, "/" + path))
        assert blk_nr
        on_disk = r.block(blk_nr)
        for _idx, name, _o, _s, h, val in ents:
            assert entry_hash(name, val) == h, name  # e2fsprogs' e_hash
        b = BlockXattrs(tuple((e[0], e[1], e[5]) for e in ents))
        refcount = struct.unpack_from("<I", on_disk, 4)[0]
        mine = bytearray(build_xattr_block(b, blk_nr, refcount, SEED, BS))
        # libext2fs 1.47.0 leaves h_hash 0; the kernel computes it: compare the rest
        assert struct.unpack_from("<I", on_disk, 0xC)[0] == 0
        mine[0xC:0x10] = b"\0\0\0\0"
        # an empty value: the kernel stores e_value_offs 0, libext2fs the current value end
        off = 32
        for _idx, name, voff, vsz, _h, _val in ents:
            if vsz == 0:
                assert struct.unpack_from("<H", mine, off + 2)[0] == 0
                struct.pack_into("<H", mine, off + 2, voff)
            off += (16 + len(name) + 3) & ~3
        struct.pack_into("<I", mine, 0x10, csum.xattr_block_csum(SEED, blk_nr, mine))
        assert bytes(mine) == on_disk, path
        n += 1
    assert n == 3


def _put_inode_xattrs(r: RawImage, ino: int, body: bytes, blk_nr: int) -> None:
    raw = bytearray(r.inode(ino))
    raw[0xA0:] = body.ljust(len(raw) - 0xA0, b"\0") if body else bytes(len(raw) - 0xA0)
    struct.pack_into("<I", raw, 0x68, blk_nr & 0xFFFFFFFF)
    struct.pack_into("<H", raw, 0x76, blk_nr >> 32)
    c = csum.inode_csum(SEED, ino, 0, raw)
    struct.pack_into("<H", raw, 0x7C, c & 0xFFFF)
    struct.pack_into("<H", raw, 0x82, c >> 16)
    r.write(r.inode_off(ino), bytes(raw))


@needs_e2fsprogs
def test_ours_written_into_image(ref: tuple[Path, Path, RawImage], tmp_path: Path) -> None:
    """Replace mkfs's xattrs by ours (body + block; the two share files share one block with
    refcount 2, the freed block released with debugfs): e2fsck is silent and the values read
    back are the source's (ACLs in ext4 form)."""
    t, img0, _r0 = ref
    img = tmp_path / "ours.img"
    shutil.copyfile(img0, img)
    r = RawImage(img)
    try:
        expected = {}
        blocks: dict[BlockXattrs, int] = {}
        users: dict[BlockXattrs, int] = {}
        freed = []
        paths = ["many", "share-1", "share-2"]
        if shutil.which("setfacl"):
            paths += ["acl-file", "acl-dir"]
        plan = []
        for path in paths:
            ino = ino_of(img, "/" + path)
            src = _src_xattrs(t / path)
            body, b = encode_xattrs(src, 96, BS)
            assert len(body) in (0, 96)
            _v, old_blk, _e = on_disk_xattrs(r, ino)
            if b is not None:
                assert old_blk, f"{path}: mkfs had no block for the overflow"
                if b in blocks:
                    freed.append(old_blk)
                else:
                    blocks[b] = old_blk
                users[b] = users.get(b, 0) + 1
            else:
                assert not old_blk, f"{path}: we need no block, mkfs used one"
            plan.append((ino, body, b))
            expected[path] = {
                n: (acl_vfs_to_ext4(v) if n.startswith(b"system.posix_acl") else v) for n, v in src
            }
        assert any(u == 2 for u in users.values()), "the share-* files should share a block"
        for b, nr in blocks.items():
            r.write(nr * BS, build_xattr_block(b, nr, users[b], SEED, BS))
        for ino, body, b in plan:
            _put_inode_xattrs(r, ino, body, blocks[b] if b is not None else 0)
    finally:
        r.close()
    if freed:
        # debugfs freeb clears the bitmap bit only: fix the free counts with set_bg/ssv
        r = RawImage(img)
        cmds = []
        for b in freed:
            g = b // r.bpg
            d = r.desc(g)
            free_g = struct.unpack_from("<H", d, 0xC)[0] | struct.unpack_from("<H", d, 0x2C)[0] << 16
            cmds.append(f"set_bg {g} free_blocks_count {free_g + 1}")
        free = struct.unpack_from("<I", r.sb, 0xC)[0] | struct.unpack_from("<I", r.sb, 0x158)[0] << 32
        cmds.append(f"ssv free_blocks_count {free + len(freed)}")
        r.close()
        debugfs(img, *[f"freeb {b}" for b in freed], *cmds, write=True)
    assert_fsck_clean(img)
    r = RawImage(img)
    try:
        for path, exp in expected.items():
            got, _b, _e = on_disk_xattrs(r, ino_of(img, "/" + path))
            assert got == exp, path
            listed = debugfs(img, f"ea_list /{path}")
            for name in exp:
                assert name in listed
    finally:
        r.close()


@needs_e2fsprogs
def test_wrong_refcount_is_caught(ref: tuple[Path, Path, RawImage], tmp_path: Path) -> None:
    """Negative control for the test above: a block claiming refcount 3 for 1 user fails."""
    t, img0, _r0 = ref
    img = tmp_path / "bad.img"
    shutil.copyfile(img0, img)
    r = RawImage(img)
    try:
        ino = ino_of(img, "/many")
        body, b = encode_xattrs(_src_xattrs(t / "many"), 96, BS)
        assert b is not None
        _v, nr, _e = on_disk_xattrs(r, ino)
        r.write(nr * BS, build_xattr_block(b, nr, 3, SEED, BS))
        _put_inode_xattrs(r, ino, body, nr)
    finally:
        r.close()
    assert any("reference count" in ln for ln in e2fsck_output(img))


def test_split_and_errors() -> None:
    body, b = encode_xattrs(((b"security.selinux", b"a_t\0"),), 96)
    assert len(body) == 96 and b is None
    assert struct.unpack_from("<I", body, 0)[0] == 0xEA020000
    e = ext4_xattr_entry.parse(body[4:20])
    assert (e.e_name_index, e.e_name_len, e.e_value_size) == (6, 7, 4)
    assert body[4 + e.e_value_offs : 4 + e.e_value_offs + 4] == b"a_t\0"
    assert encode_xattrs((), 96) == (b"", None)
    # too big for a block: a clear error naming the attribute
    with pytest.raises(UsageError, match="user.huge"):
        encode_xattrs(((b"user.huge", bytes(5000)),), 96)
    with pytest.raises(UsageError, match="do not fit"):
        encode_xattrs(tuple((b"user.v%d" % i, bytes(1000)) for i in range(5)), 96)
    with pytest.raises(UsageError, match="unsupported"):
        encode_xattrs(((b"os2.foo", b"x"),), 96)
    with pytest.raises(UsageError, match="given twice"):
        encode_xattrs(((b"user.a", b"x"), (b"user.a", b"y")), 96)
    # a list, bytearray values (not cached) and a tuple (cached) give the same result
    xs = ((b"user.a", b"1" * 90), (b"security.selinux", b"l_t\0"))
    assert encode_xattrs(list(xs), 96) == encode_xattrs(xs, 96) == encode_xattrs(xs, 96)
    assert encode_xattrs(tuple((n, bytearray(v)) for n, v in xs), 96) == encode_xattrs(xs, 96)
    # ACL values already in ext4 form are kept; VFS form converted
    acl1 = bytes.fromhex("01000000" "01000600" "04000400" "20000400")
    body, _b = encode_xattrs(((b"system.posix_acl_access", acl1),), 96)
    assert acl1 in body


XNAME = st.sampled_from([b"user.", b"trusted.", b"security."]).flatmap(
    lambda p: st.binary(min_size=1, max_size=40).map(lambda n: p + n)
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(XNAME, st.binary(max_size=700), max_size=6))
def test_roundtrip_random(xs: dict[bytes, bytes]) -> None:
    items = tuple(xs.items())
    try:
        body, b = encode_xattrs(items, 96, BS)
    except UsageError:
        assert sum(len(v) + len(n) + 20 for n, v in items) > BS - 32 - 96
        return
    got: dict[bytes, bytes] = {}
    if body:
        assert len(body) == 96
        for idx, name, voff, vsz, _h, val in parse_entries(body, 4, 4):
            got[full_name(idx, name)] = val
            assert vsz == 0 or voff >= 4  # values after the entries
    if b is not None:
        blk = build_xattr_block(b, 1234, 1, SEED, BS)
        hdr = ext4_xattr_header.parse(blk[:32])
        assert (hdr.h_magic, hdr.h_refcount, hdr.h_blocks) == (0xEA020000, 1, 1)
        assert hdr.h_checksum == csum.xattr_block_csum(SEED, 1234, blk)
        ents = parse_entries(blk, 32, 0)
        keys = [(e[0], len(e[1]), e[1]) for e in ents]
        assert keys == sorted(keys)
        for idx, name, _voff, _vsz, h, val in ents:
            assert h == entry_hash(name, val)
            got[full_name(idx, name)] = val
    assert got == dict(items)
