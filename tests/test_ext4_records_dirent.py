"""Directory blocks: byte-identical to mkfs.ext4 where mkfs makes the same thing (lost+found,
one-block directories), and htree directories written into real images are accepted by
``e2fsck -fn`` without a word and listed completely by debugfs."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ext4_records_tools import (
    BS,
    HASH_SEED,
    RawImage,
    assert_fsck_clean,
    blocks_of,
    debugfs,
    e2fsck_output,
    fs_uuid_bytes,
    ino_of,
    install_dir,
    ls_names,
    mkfs,
    needs_e2fsprogs,
    run,
)

from pydiskimg.errors import UsageError
from pydiskimg.ext4 import csum
from pydiskimg.ext4.dirent import (
    DirData,
    build_dir,
    build_empty_dir_blocks,
    dir_blocks_needed,
    dx_node_limit,
    dx_root_limit,
    is_indexed,
)
from pydiskimg.ext4.dirhash import dx_hash

SEED = csum.fs_csum_seed(fs_uuid_bytes())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RawImage]:
    """mkfs image of a tree with a one-block directory and a folder /d holding one file."""
    b = tmp_path_factory.mktemp("dirent")
    t = b / "tree"
    (t / "small").mkdir(parents=True)
    for n in ("zeta", "alpha", "Beta", "with space", "ünïcødé", "x" * 200, "a.b", "0"):
        (t / "small" / n).write_bytes(b"")
    (t / "small" / "subdir").mkdir()
    os.symlink("alpha", t / "small" / "link")
    (t / "d").mkdir()
    (t / "d" / "f0").write_bytes(b"target\n")
    img = mkfs(t, b / "base.img", "64M")
    r = RawImage(img)
    yield img, r
    r.close()


@needs_e2fsprogs
def test_lost_found_identical_to_mkfs(base: tuple[Path, RawImage]) -> None:
    img, r = base
    blocks = blocks_of(img, "/lost+found")
    assert len(blocks) == 4
    on_disk = b"".join(r.block(b) for b in blocks)
    assert build_empty_dir_blocks(11, 2, 4, block_size=BS, csum_seed=SEED, gen=0) == on_disk


@needs_e2fsprogs
def test_one_block_dir_identical_to_mkfs(base: tuple[Path, RawImage]) -> None:
    img, r = base
    ino = ino_of(img, "/small")
    ents = []
    for name, child in ls_names(img, "/small"):
        mode = struct.unpack_from("<H", r.inode(child), 0)[0]
        ft = {0x8000: 1, 0x4000: 2, 0xA000: 7}[mode & 0xF000]
        ents.append((name, child, ft))
    assert len(ents) == 10
    [blk] = blocks_of(img, "/small")
    d = build_dir(ents[::-1], ino, 2, block_size=BS, csum_seed=SEED, gen=0,
                  hash_seed_words=r.hash_seed)
    assert not d.indexed and d.nblocks == 1 and d.flags == 0
    assert d.data == r.block(blk)
    assert not is_indexed(d.data, BS)


@needs_e2fsprogs
def test_empty_dir_identical_to_mkfs(tmp_path: Path) -> None:
    t = tmp_path / "t"
    (t / "e").mkdir(parents=True)
    img = mkfs(t, tmp_path / "e.img", "16M")
    r = RawImage(img)
    try:
        ino = ino_of(img, "/e")
        [blk] = blocks_of(img, "/e")
        d = build_dir([], ino, 2, block_size=BS, csum_seed=SEED, gen=0, hash_seed_words=r.hash_seed)
        assert d.data == r.block(blk)
        assert build_empty_dir_blocks(ino, 2, 1, block_size=BS, csum_seed=SEED, gen=0) == d.data
    finally:
        r.close()


def _install_and_check(img: Path, names: list[bytes], *, version: int = 1, gen: int = 0) -> DirData:
    r = RawImage(img)
    try:
        dino = ino_of(img, "/d")
        fino = ino_of(img, "/d/f0")
        ents = [(n, fino, 1) for n in names]
        extra = ()
        if gen:
            extra = (f"sif /d generation {gen}",)
        d = build_dir(ents, dino, 2, block_size=BS, csum_seed=SEED, gen=gen,
                      hash_seed_words=r.hash_seed, hash_version=version,
                      hash_unsigned=r.unsigned_hash)
        assert d.nblocks == dir_blocks_needed(ents, BS, r.hash_seed, version, r.unsigned_hash)
        assert is_indexed(d.data, BS) == d.indexed
        install_dir(img, "/d", d.data, d.indexed,
                    (f"sif /d/f0 links_count {len(names)}",) + extra)
    finally:
        r.close()
    assert_fsck_clean(img)
    listed = ls_names(img, "/d")
    assert sorted(listed) == sorted((n, fino) for n in names)
    return d


@needs_e2fsprogs
@pytest.mark.parametrize("version", [0, 1, 2])
def test_htree_accepted_by_e2fsck(base: tuple[Path, RawImage], tmp_path: Path, version: int) -> None:
    img = tmp_path / "h.img"
    shutil.copyfile(base[0], img)
    names = [b"file-%05d.%s" % (i, "ü".encode() * (i % 5)) for i in range(3000)]
    d = _install_and_check(img, names, version=version, gen=0x1234 if version == 2 else 0)
    assert d.indexed
    assert d.data[0x1C] == version and d.data[0x1E] == 0
    # debugfs walks the index (htree_dump) and finds every name in the leaves it lists
    out = debugfs(img, "htree /d")
    assert out.count(b"Entry #") >= 2
    assert sum(out.count(b" " + n + b" ") + out.count(b" " + n + b"\n") > 0 for n in names[:50]) == 50


@needs_e2fsprogs
def test_htree_with_dx_nodes_20000_names(base: tuple[Path, RawImage], tmp_path: Path) -> None:
    """20,000 long names need more leaves than a dx_root indexes: indirect_levels 1."""
    img = tmp_path / "big.img"
    shutil.copyfile(base[0], img)
    names = [b"%05d-" % i + b"n" * 110 for i in range(20000)]
    d = _install_and_check(img, names)
    nleaves_min = 20000 // ((BS - 12) // 124)
    assert nleaves_min > dx_root_limit(BS)
    assert d.data[0x1E] == 1  # indirect_levels
    count = struct.unpack_from("<H", d.data, 0x22)[0]
    assert 2 <= count <= dx_root_limit(BS)
    assert struct.unpack_from("<HH", d.data, BS + 8)[0] == dx_node_limit(BS)


#: half_md4 collisions under the test hash seed (HASH_SEED, signed): pairs of names with the
#: same major hash (found by a birthday search; test_collision_pairs checks them against debugfs)
COLLIDING = [tuple(p.split(",")) for p in ["c0129435,c0202618", "c0262510,c0266468", "c0013202,c0226390", "c0082529,c0150278", "c0080202,c0190379", "c0113302,c0236234", "c0143155,c0195809", "c0007047,c0223312", "c0105442,c0148150", "c0183864,c0278614", "c0017763,c0146316", "c0103693,c0152836", "c0157924,c0264240", "c0153820,c0210158", "c0095842,c0290979", "c0256515,c0273993"]]


@needs_e2fsprogs
def test_collision_pairs(base: tuple[Path, RawImage]) -> None:
    img, r = base
    cmds = [f"dx_hash -h half_md4 -s {HASH_SEED} {n}" for pair in COLLIDING for n in pair]
    out = debugfs(img, *cmds).decode()
    hashes = [ln.split(" is ")[1].split()[0] for ln in out.splitlines() if ln.startswith("Hash of")]
    assert len(hashes) == 2 * len(COLLIDING)
    for i in range(0, len(hashes), 2):
        assert hashes[i] == hashes[i + 1]
        assert int(hashes[i], 16) == dx_hash(COLLIDING[i // 2][0].encode(), 1, r.hash_seed, False)[0]


@needs_e2fsprogs
def test_htree_collision_run_across_leaves(base: tuple[Path, RawImage], tmp_path: Path) -> None:
    """Equal hashes split over two leaves: the second leaf's index hash carries the
    collision bit, e2fsck accepts the tree and every name is listed."""
    img = tmp_path / "c.img"
    shutil.copyfile(base[0], img)
    seed = base[1].hash_seed
    pairs = [n.encode() for pair in COLLIDING for n in pair]
    for nfill in range(100, 400):
        names = pairs + [b"filler-%04d-" % i + b"z" * 180 for i in range(nfill)]
        d = build_dir([(n, 20, 1) for n in names], 12, 2, block_size=BS, csum_seed=SEED,
                      gen=0, hash_seed_words=seed)
        count = struct.unpack_from("<H", d.data, 0x22)[0]
        hashes = struct.unpack_from(f"<{count}I", d.data, 0x20)[1:]
        if any(h & 1 for h in hashes):
            break
    else:
        pytest.fail("no filler count split a collision pair over two leaves")
    _install_and_check(img, names)


@needs_e2fsprogs
def test_wrong_hash_seed_is_caught(base: tuple[Path, RawImage], tmp_path: Path) -> None:
    """Negative control: the same directory hashed with another seed fails e2fsck."""
    img = tmp_path / "w.img"
    shutil.copyfile(base[0], img)
    fino = ino_of(img, "/d/f0")
    names = [b"file-%05d" % i for i in range(3000)]
    d = build_dir([(n, fino, 1) for n in names], ino_of(img, "/d"), 2, block_size=BS,
                  csum_seed=SEED, gen=0, hash_seed_words=(1, 2, 3, 4))
    install_dir(img, "/d", d.data, True, (f"sif /d/f0 links_count {len(names)}",))
    bad = e2fsck_output(img)
    assert any("bad max hash" in ln or "bad min hash" in ln for ln in bad), bad


NAME = st.binary(min_size=1, max_size=255).filter(
    lambda n: b"/" not in n and b"\0" not in n and b"\n" not in n and n not in (b".", b"..")
)


@needs_e2fsprogs
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(NAME, min_size=0, max_size=1500, unique=True),
    version=st.sampled_from([0, 1, 2]),
)
def test_random_dirs_accepted(
    base: tuple[Path, RawImage], tmp_path: Path, names: list[bytes], version: int
) -> None:
    img = tmp_path / "r.img"
    shutil.copyfile(base[0], img)
    if not names:
        names = [b"only"]
    _install_and_check(img, names, version=version)


def test_output_independent_of_input_order() -> None:
    ents = [(b"n%d" % i, 100 + i, 1 + i % 7) for i in range(2000)]
    kw = dict(block_size=BS, csum_seed=1, gen=0, hash_seed_words=(1, 2, 3, 4))
    a = build_dir(ents, 12, 2, **kw)
    b = build_dir(ents[::-1], 12, 2, **kw)
    assert a == b and a.indexed


def test_bad_entries() -> None:
    kw = dict(block_size=BS, csum_seed=1, gen=0, hash_seed_words=(0, 0, 0, 0))
    for ents in ([(b"a" * 256, 12, 1)], [(b"", 12, 1)], [(b"a/b", 12, 1)], [(b".", 12, 2)],
                 [(b"x", 12, 9)], [(b"x", 12, 1), (b"x", 13, 1)], [(b"x", 0, 1)]):
        with pytest.raises(UsageError):
            build_dir(ents, 12, 2, **kw)
    with pytest.raises(UsageError):
        build_empty_dir_blocks(11, 2, 0, block_size=BS, csum_seed=1, gen=0)


@needs_e2fsprogs
def test_dx_node_checksums_as_e2fsck_writes_them(base: tuple[Path, RawImage], tmp_path: Path) -> None:
    """e2fsck -fD re-indexes a 20,000-name directory with dx_nodes; csum.dx_csum recomputes
    the checksums it stored in the root and in every node."""
    img = tmp_path / "d.img"
    shutil.copyfile(base[0], img)
    names = [b"%05d-" % i + b"q" * 110 for i in range(20000)]
    _install_and_check(img, names)
    r = run("e2fsck", "-fyD", str(img), check=False)
    assert r.returncode in (0, 1), r.stdout
    assert_fsck_clean(img)
    raw = RawImage(img)
    try:
        dino = ino_of(img, "/d")
        blocks = blocks_of(img, "/d")
        root = raw.block(blocks[0])
        assert root[0x1E] == 1, "e2fsck -D made no dx_nodes"
        limit, count = struct.unpack_from("<HH", root, 0x20)
        assert csum.dx_csum(SEED, dino, 0, root, 0x20) == struct.unpack_from(
            "<I", root, 0x20 + 8 * limit + 4)[0]
        nodes = [struct.unpack_from("<I", root, 0x24 + 8 * i)[0] for i in range(count)]
        assert len(nodes) >= 2
        for lb in nodes:
            blk = raw.block(blocks[lb])
            assert struct.unpack_from("<IH", blk, 0) == (0, BS)
            nlimit = struct.unpack_from("<H", blk, 8)[0]
            assert nlimit == dx_node_limit(BS)
            stored = struct.unpack_from("<I", blk, 8 + 8 * nlimit + 4)[0]
            assert csum.dx_csum(SEED, dino, 0, blk, 8) == stored
    finally:
        raw.close()
