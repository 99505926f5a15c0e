"""Geometry and metadata against ``mkfs.vfat -F 32`` on images of the same size.

An empty tree with mkfs.fat's ``--invariant`` identity (volume ID 0x1234ABCD, label time
1426325213) must give the very bytes mkfs.vfat writes, everywhere but the boot code (offsets
90..509 of sectors 0 and 6), which pydiskimg replaces with its own stub.
"""

from __future__ import annotations

import re

import pytest
from fatcheck import assert_fsck_silent, fsck_verbose, mkfs_vfat, run

from pydiskimg import fat
from pydiskimg.errors import DoesNotFitError, UsageError
from pydiskimg.fat.geometry import min_fat32_size
from pydiskimg.tree import Kind, Node, Tree

MiB = 1 << 20
GiB = 1 << 30
SIZES = {
    "33MiB": 33 * MiB,
    "seed-esp-236MiB": 483328 * 512,  # the seed's efi layout at its default disk size
    "seed-esp-244MiB": 244 * MiB,
    "256MiB": 256 * MiB,  # last size with the SD-card CHS geometry
    "260MiB": 260 * MiB,  # last size with 512-byte clusters
    "260MiB+1": 260 * MiB + 512,  # 4 KiB clusters from here
    "1000MiB": 1000 * MiB,  # not a whole number of 63-sector tracks
    "1GiB": GiB,
    "8GiB": 8 * GiB,
    "8GiB+1MiB": 8 * GiB + MiB,  # 8 KiB clusters
    "16GiB+1MiB": 16 * GiB + MiB,  # 16 KiB clusters
    "32GiB+1MiB": 32 * GiB + MiB,  # 32 KiB clusters, 64 reserved sectors
}


def empty_tree() -> Tree:
    return Tree(Node(Kind.DIR, 0o755))


def data_offset(img) -> int:
    return int(re.search(r"Data area starts at byte (\d+)", fsck_verbose(img))[1])


def compare_with_mkfs(tmp_path, size: int, label: str, hidden: int = 0) -> None:
    ref = tmp_path / "mkfs.img"
    args = ["-F", "32", "--invariant"] + (["-n", label] if label else []) + (["-h", str(hidden)] if hidden else [])
    mkfs_vfat(ref, size, *args)
    ours = tmp_path / "ours.img"
    opts = fat.FatOptions(label=label, volume_id=0x1234ABCD, timestamp=1426325213, hidden_sectors=hidden)
    plan = fat.make_fat(empty_tree(), ours, size, opts)
    assert ours.stat().st_size == ref.stat().st_size == size
    end = data_offset(ref) + plan.geometry.cluster_bytes  # metadata + the root folder's cluster
    assert data_offset(ours) == data_offset(ref)
    with open(ref, "rb") as f:
        a = bytearray(f.read(end))
    with open(ours, "rb") as f:
        b = bytearray(f.read(end))
    for sector in (0, 6):
        lo = sector * 512
        assert a[lo + 510 : lo + 512] == b[lo + 510 : lo + 512] == b"\x55\xaa"
        a[lo + 90 : lo + 510] = bytes(420)
        b[lo + 90 : lo + 510] = bytes(420)
    if a != b:
        first = next(i for i in range(end) if a[i] != b[i])
        raise AssertionError(f"first difference at byte {first}: mkfs {a[first]:#x}, ours {b[first]:#x}")
    assert_fsck_silent(ours)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_empty_volume_equals_mkfs_vfat(tmp_path, size):
    compare_with_mkfs(tmp_path, size, "ESP")


def test_no_label_and_hidden_sectors_equal_mkfs_vfat(tmp_path):
    compare_with_mkfs(tmp_path, 236 * MiB, "", hidden=16384)


def test_smallest_fat32(tmp_path):
    least = min_fat32_size()
    # mkfs.vfat -F 32 formats smaller volumes too, with fewer than 65525 clusters: check the
    # count it reports on both sides of our limit
    mkfs_vfat(tmp_path / "a.img", least, "-F", "32")
    n = int(re.search(r"(\d+) data clusters", fsck_verbose(tmp_path / "a.img"))[1])
    assert n >= 65525
    with open(tmp_path / "b.img", "wb") as f:
        f.truncate(least - 32 * 512)  # one 32-sector track less
    r = run("mkfs.vfat", "-F", "32", str(tmp_path / "b.img"))
    assert re.search(r"less th[ae]n suggested minimum", r.stderr), r.stderr
    fat.plan(empty_tree(), least, fat.FatOptions())
    with pytest.raises(DoesNotFitError) as e:
        fat.plan(empty_tree(), least - 512, fat.FatOptions())
    assert e.value.needed == least
    assert str(least) in str(e.value)


@pytest.mark.parametrize("label,stored", [("esp", b"ESP        "), ("My Disk", b"MY DISK    "), ("ABCDEFGHIJK", b"ABCDEFGHIJK")])
def test_label_upper_cased(tmp_path, label, stored):
    img = tmp_path / "l.img"
    fat.make_fat(empty_tree(), img, 40 * MiB, fat.FatOptions(label=label))
    with open(img, "rb") as f:
        assert f.read(512)[71:82] == stored
    assert_fsck_silent(img)


@pytest.mark.parametrize("label", ["ABCDEFGHIJKL", "a.b", "x*y", "tab\t", "é", " lead", 'q"'])
def test_bad_labels(label):
    with pytest.raises(UsageError, match="label"):
        fat.plan(empty_tree(), 40 * MiB, fat.FatOptions(label=label))
