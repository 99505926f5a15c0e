"""The Linux kernel (libguestfs appliance) reads and updates our htree directories: lookups
through dx_nodes and across a collision run split over two leaves, readdir, inserts that
split our full leaves; e2fsck -fn is silent afterwards.  Slow: one appliance launch."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from guestcheck import launch
from test_ext4_records_dirent import COLLIDING
from test_ext4_records_tools import (
    BS,
    RawImage,
    assert_fsck_clean,
    fs_uuid_bytes,
    ino_of,
    install_dir,
    mkfs,
    needs_e2fsprogs,
)

from pydiskimg.ext4 import csum
from pydiskimg.ext4.dirent import build_dir

SEED = csum.fs_csum_seed(fs_uuid_bytes())


@pytest.mark.slow
@needs_e2fsprogs
def test_kernel_reads_and_updates_our_htrees(tmp_path: Path) -> None:
    t = tmp_path / "tree"
    (t / "d").mkdir(parents=True)
    (t / "d" / "f0").write_bytes(b"target\n")
    (t / "c").mkdir()
    (t / "c" / "g0").write_bytes(b"other\n")
    img = mkfs(t, tmp_path / "k.img", "64M")
    r = RawImage(img)
    seed = r.hash_seed
    big = [b"%05d-" % i + b"n" * 110 for i in range(20000)]
    pairs = [n.encode() for pair in COLLIDING for n in pair]
    fino, gino = ino_of(img, "/d/f0"), ino_of(img, "/c/g0")
    d = build_dir([(n, fino, 1) for n in big], ino_of(img, "/d"), 2, block_size=BS,
                  csum_seed=SEED, gen=0, hash_seed_words=seed)
    assert d.data[0x1E] == 1  # dx_nodes
    for nfill in range(100, 400):  # a collision pair split over two leaves
        cnames = pairs + [b"filler-%04d-" % i + b"z" * 180 for i in range(nfill)]
        c = build_dir([(n, gino, 1) for n in cnames], ino_of(img, "/c"), 2, block_size=BS,
                      csum_seed=SEED, gen=0, hash_seed_words=seed)
        count = struct.unpack_from("<H", c.data, 0x22)[0]
        if any(h & 1 for h in struct.unpack_from(f"<{count}I", c.data, 0x20)[1:]):
            break
    else:
        pytest.fail("no filler count split a collision pair over two leaves")
    r.close()
    install_dir(img, "/d", d.data, True, (f"sif /d/f0 links_count {len(big)}",))
    install_dir(img, "/c", c.data, True, (f"sif /c/g0 links_count {len(cnames)}",))
    assert_fsck_clean(img)

    g = launch(img)
    try:
        g.mount("/dev/sda", "/")
        assert len(g.ls("/d")) == len(big)
        assert sorted(x.encode() for x in g.ls("/c")) == sorted(cnames)
        for n in big[::97] + big[-3:]:
            assert g.is_file("/d/" + n.decode()), n
        for n in pairs:  # dx lookups that must continue into the next leaf
            assert g.is_file("/c/" + n.decode()), n
        assert not g.is_file("/d/no-such-name")
        # inserts into full leaves: the kernel splits them
        for i in range(300):
            g.touch(f"/d/new-{i:04d}-" + "m" * 100)
        g.mkdir("/c/sub")
        for n in pairs:
            g.touch("/c/" + n.decode() + "-x")
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    assert_fsck_clean(img)
    assert os.path.getsize(img) == 64 << 20
