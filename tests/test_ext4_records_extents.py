"""Extent trees: byte-identical to the ones mkfs.ext4 -d writes for the same extents (depth 0,
1 and 2, extents split at 32768 blocks), and structurally valid for random run lists."""

from __future__ import annotations

import hashlib
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
    fs_uuid_bytes,
    ino_of,
    mkfs,
    needs_e2fsprogs,
)

from pydiskimg.errors import InternalError, UsageError
from pydiskimg.ext4 import csum
from pydiskimg.ext4.extents import (
    block_slots,
    build_extents,
    extent_tree_blocks,
    extents_needed,
)
from pydiskimg.ext4.records_structs import ext4_extent, ext4_extent_header, ext4_extent_idx

SEED = csum.fs_csum_seed(fs_uuid_bytes())


def walk(root60: bytes, read_block) -> tuple[list[tuple[int, int, int]], list[int], dict[int, bytes]]:
    """Leaf extents (logical, physical, len) in order, tree blocks top-down level by level,
    and the tree blocks' bytes.  Written from the kernel's ext4_extents.h layout."""
    extents: list[tuple[int, int, int]] = []
    levels: list[list[int]] = []
    raw: dict[int, bytes] = {}

    def node(buf: bytes, level: int) -> None:
        magic, entries, _mx, depth = struct.unpack_from("<HHHH", buf, 0)
        assert magic == 0xF30A
        for i in range(entries):
            off = 12 + 12 * i
            if depth == 0:
                lb, ln, hi, lo = struct.unpack_from("<IHHI", buf, off)
                extents.append((lb, lo | hi << 32, ln))
            else:
                _lb, lo, hi = struct.unpack_from("<IIH", buf, off)
                child = lo | hi << 32
                while len(levels) <= level:
                    levels.append([])
                levels[level].append(child)
                raw[child] = read_block(child)
                node(raw[child], level + 1)

    node(root60, 0)
    return extents, [b for lv in levels for b in lv], raw


def merge(extents: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Join logically and physically contiguous extents into runs of any length."""
    runs: list[list[int]] = []
    for lb, pb, ln in extents:
        if runs and runs[-1][0] + runs[-1][2] == lb and runs[-1][1] + runs[-1][2] == pb:
            runs[-1][2] += ln
        else:
            runs.append([lb, pb, ln])
    return [tuple(r) for r in runs]  # type: ignore[misc]


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RawImage]:
    b = tmp_path_factory.mktemp("extents")
    t = b / "tree"
    t.mkdir()
    (t / "small").write_bytes(b"x" * 10000)
    with open(t / "depth1", "wb") as f:
        for i in range(11):
            f.seek(i * 3 * BS)
            f.write(b"d1")
    with open(t / "depth2", "wb") as f:
        for i in range(1500):
            f.seek(i * 2 * BS)
            f.write(b"%06d" % i)
    chunk = b"\xaa" * (1 << 20)
    with open(t / "long", "wb") as f:  # 40 MiB of data: a few long extents
        for _ in range(40):
            f.write(chunk)
    img = mkfs(t, b / "e.img", "128M")
    r = RawImage(img)
    yield img, r
    r.close()


@needs_e2fsprogs
@pytest.mark.parametrize(("path", "depth"), [("small", 0), ("depth1", 1), ("long", None)])
def test_identical_to_mkfs(ref: tuple[Path, RawImage], path: str, depth: int | None) -> None:
    img, r = ref
    ino = ino_of(img, "/" + path)
    raw = r.inode(ino)
    root = raw[0x28 : 0x28 + 60]
    gen = struct.unpack_from("<I", raw, 0x64)[0]
    extents, tree_blocks, blocks = walk(root, r.block)
    if depth is not None:
        assert struct.unpack_from("<H", root, 6)[0] == depth
    runs = merge(extents)
    assert extents_needed(runs) == len(extents)
    assert extent_tree_blocks(len(extents), BS) == len(tree_blocks)
    i_block, tree = build_extents(runs, tree_blocks, ino, gen, SEED, BS)
    # libext2fs leaves stale bytes in unused slots (from before a split): compare the used
    # part; ours are zero
    used = 12 + 12 * struct.unpack_from("<H", root, 2)[0]
    assert i_block[:used] == root[:used]
    assert i_block[used:] == bytes(60 - used)
    assert [p for p, _b in tree] == tree_blocks
    for p, data in tree:
        used = 12 + 12 * struct.unpack_from("<H", data, 2)[0]
        assert data[:used] == blocks[p][:used], f"tree block {p}"
        assert data[used:BS - 4] == bytes(BS - 4 - used)
        if blocks[p][used:BS - 4] == bytes(BS - 4 - used):
            assert data == blocks[p]


@needs_e2fsprogs
def test_runs_longer_than_an_extent(tmp_path: Path) -> None:
    """A 70000-block run (3 extents of <= 32768) over groups 10-12, which hold no metadata:
    the blocks are marked used with debugfs, the inode written raw; e2fsck is silent."""
    img = mkfs(None, tmp_path / "long.img", "2G")
    debugfs(img, "write /dev/null bigf", write=True)
    r = RawImage(img)
    start, n = 10 * r.bpg, 70000
    cmds = [f"setb {start} {n}"]
    left = n
    for g in (10, 11, 12):
        d = r.desc(g)
        flags = struct.unpack_from("<H", d, 0x12)[0]
        take = min(left, r.bpg)
        left -= take
        cmds += [f"set_bg {g} flags {flags & ~2}", f"set_bg {g} free_blocks_count {r.bpg - take}"]
    free = struct.unpack_from("<I", r.sb, 0xC)[0] | struct.unpack_from("<I", r.sb, 0x158)[0] << 32
    cmds.append(f"ssv free_blocks_count {free - n}")
    r.close()
    debugfs(img, *cmds, write=True)
    r = RawImage(img)
    try:
        ino = ino_of(img, "/bigf")
        i_block, tree = build_extents([(0, start, n)], [], ino, 0, SEED, BS)
        assert tree == [] and struct.unpack_from("<H", i_block, 2)[0] == 3
        raw = bytearray(r.inode(ino))
        raw[0x28:0x64] = i_block
        struct.pack_into("<I", raw, 0x04, n * BS & 0xFFFFFFFF)
        struct.pack_into("<I", raw, 0x6C, n * BS >> 32)
        struct.pack_into("<I", raw, 0x1C, n * BS // 512)
        c = csum.inode_csum(SEED, ino, 0, raw)
        struct.pack_into("<H", raw, 0x7C, c & 0xFFFF)
        struct.pack_into("<H", raw, 0x82, c >> 16)
        r.write(r.inode_off(ino), bytes(raw))
    finally:
        r.close()
    assert_fsck_clean(img)
    out = debugfs(img, "ex /bigf").decode()
    assert "32768" in out and "4464" in out


def test_tree_block_counts() -> None:
    s = block_slots(BS)
    assert s == 340 and block_slots(1024) == 84
    assert [extent_tree_blocks(n, BS) for n in (0, 1, 4, 5, 340, 4 * 340, 4 * 340 + 1)] == [
        0, 0, 0, 1, 1, 4, 5 + 1]
    assert extent_tree_blocks(340 * 340 * 4, BS) == 340 * 4 + 4
    assert extent_tree_blocks(340 * 340 * 4 + 1, BS) == 340 * 4 + 1 + 5 + 1
    assert extents_needed([(0, 100, 32768), (40000, 9, 32769), (90000, 1, 1)]) == 4


RUNS = st.lists(st.tuples(st.integers(0, 50), st.integers(1, 70000)), min_size=0, max_size=1600)


@settings(max_examples=40, deadline=None)
@given(RUNS, st.integers(0, 0xFFFFFFFF), st.sampled_from([1024, 4096]))
def test_random_runs(gaps: list[tuple[int, int]], gen: int, bs: int) -> None:
    runs = []
    lb = 0
    pb = 5 << 32  # physical blocks above 2^32: the _hi halves are used
    for gap, ln in gaps:
        lb += gap
        runs.append((lb, pb, ln))
        lb += ln
        pb += ln + 7
    n = extents_needed(runs)
    nt = extent_tree_blocks(n, bs)
    tree_blocks = list(range(1000, 1000 + nt))
    i_block, tree = build_extents(runs, tree_blocks, 77, gen, SEED, bs)
    assert len(i_block) == 60
    hdr = ext4_extent_header.parse(i_block[:12])
    assert hdr.eh_magic == 0xF30A and hdr.eh_max == 4 and hdr.eh_entries <= 4
    blocks = dict(tree)
    assert sorted(blocks) == tree_blocks
    for _p, data in tree:
        assert len(data) == bs
        h = ext4_extent_header.parse(data[:12])
        assert h.eh_max == (bs - 12) // 12
        tail = 12 + 12 * h.eh_max
        assert struct.unpack_from("<I", data, tail)[0] == csum.extent_block_csum(SEED, 77, gen, data)
        if h.eh_depth:  # index entries point at children whose first logical block matches
            for i in range(h.eh_entries):
                e = ext4_extent_idx.parse(data[12 + 12 * i : 24 + 12 * i])
                child = blocks[e.ei_leaf_lo | e.ei_leaf_hi << 32]
                ch = ext4_extent_header.parse(child[:12])
                assert ch.eh_depth == h.eh_depth - 1
                assert struct.unpack_from("<I", child, 12)[0] == e.ei_block
    extents, tb, _raw = walk(i_block, lambda b: blocks[b])
    assert sorted(tb) == tree_blocks
    assert len(extents) == n
    assert all(1 <= ln <= 32768 for _l, _p, ln in extents)
    assert merge(extents) == merge(runs)
    for lb_, pb_, ln_ in extents[:3]:
        e = ext4_extent.build(dict(ee_block=lb_, ee_len=ln_, ee_start_hi=pb_ >> 32,
                                   ee_start_lo=pb_ & 0xFFFFFFFF))
        assert len(e) == 12


def test_bad_input() -> None:
    with pytest.raises(UsageError):
        build_extents([(10, 1, 5), (12, 100, 5)], [], 1, 0, SEED, BS)  # overlap
    with pytest.raises(UsageError):
        build_extents([(0, 1, 0)], [], 1, 0, SEED, BS)
    with pytest.raises(InternalError):
        build_extents([(i * 2, i * 2, 1) for i in range(5)], [], 1, 0, SEED, BS)
    i_block, tree = build_extents([], [], 1, 0, SEED, BS)
    assert tree == [] and i_block[:12] == struct.pack("<HHHHI", 0xF30A, 0, 4, 0, 0)


@needs_e2fsprogs
def test_written_into_image(ref: tuple[Path, RawImage], tmp_path: Path) -> None:
    """Our trees replace mkfs's (same extents, same tree blocks; libext2fs fills a depth-2
    tree differently): e2fsck is silent and debugfs reads every file back unchanged."""
    img0, _r = ref
    img = tmp_path / "ours.img"
    shutil.copyfile(img0, img)
    r = RawImage(img)
    sums = {}
    try:
        for path in ("small", "depth1", "depth2", "long"):
            ino = ino_of(img, "/" + path)
            raw = bytearray(r.inode(ino))
            gen = struct.unpack_from("<I", raw, 0x64)[0]
            extents, tree_blocks, _blocks = walk(bytes(raw[0x28:0x64]), r.block)
            i_block, tree = build_extents(merge(extents), tree_blocks, ino, gen, SEED, BS)
            if path == "depth2":
                assert struct.unpack_from("<H", i_block, 6)[0] == 2
            for p, data in tree:
                r.write(p * BS, data)
            raw[0x28:0x64] = i_block
            c = csum.inode_csum(SEED, ino, gen, raw)
            struct.pack_into("<H", raw, 0x7C, c & 0xFFFF)
            struct.pack_into("<H", raw, 0x82, c >> 16)
            r.write(r.inode_off(ino), bytes(raw))
            sums[path] = hashlib.sha256((img0.parent / "tree" / path).read_bytes()).hexdigest()
    finally:
        r.close()
    assert_fsck_clean(img)
    for path, digest in sums.items():
        out = tmp_path / (path + ".out")
        debugfs(img, f"dump /{path} {out}")
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest, path
