"""The ext4 checker (tests/ext4check.py) judged on images made by mkfs.ext4 -d itself.

The same functions check pydiskimg's images (test_ext4_readback_pydiskimg.py); here they must
accept the reference tool's image, modulo what mkfs.ext4 -d is known to lose, and must reject
each kind of difference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import ext4check as chk
import pytest
from conftest import build_small_tree

MiB = 1 << 20


def mkfs_d(tree: Path, image: Path, size: str = "8G", offset: int = 0) -> Path:
    """``mkfs.ext4 -b 4096 -d TREE`` (at ``offset`` inside the image when non-zero)."""
    if shutil.which("mkfs.ext4") is None:
        pytest.fail("mkfs.ext4 (e2fsprogs) is not installed")
    args = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", str(tree)]
    if offset:
        args += ["-E", f"offset={offset}"]
    subprocess.run([*args, str(image), size], check=True, capture_output=True,
                   env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"})
    return image


@pytest.fixture(scope="module")
def ref_image(tmp_path_factory: pytest.TempPathFactory, _torture_base: Path) -> Path:
    return mkfs_d(_torture_base, tmp_path_factory.mktemp("ref") / "ref.img", "512M")


def test_reference_image_passes(ref_image: Path, torture_tree: Path) -> None:
    chk.assert_fsck_clean(ref_image)
    got = chk.assert_tree_matches(ref_image, torture_tree, **chk.MKFS_LOSSES)  # type: ignore[arg-type]
    # the checker really looked at everything
    assert len(got) == len(chk.expected_from_source(torture_tree))
    assert got[b"/dev/chr-big"].rdev == (300, 70000) or os.geteuid() != 0
    assert got[b"/hard/h1"].ident == got[b"/hard/other/h3"].ident
    assert got[b"/hard/h1"].nlink == 3
    assert len(got[b"/sparse/depth2"].extents or []) == 1500


def test_reference_image_at_offset(tmp_path: Path) -> None:
    tree = build_small_tree(tmp_path / "t")
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(2 * MiB)
        f.write(b"\xaa" * 512)  # something before the filesystem
    mkfs_d(tree, img, "64M", offset=MiB)
    chk.assert_fsck_clean(img, offset=MiB)
    chk.assert_tree_matches(img, tree, offset=MiB, **chk.MKFS_LOSSES)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        chk.assert_fsck_clean(img)  # no filesystem at offset 0


def test_checker_sees_what_mkfs_loses(ref_image: Path, torture_tree: Path) -> None:
    """Strict settings (what pydiskimg must meet) reject mkfs.ext4 -d's image, for the
    documented reasons: nanoseconds, 2038, atimes copied from the source, zero blocks made
    holes."""
    problems, _ = chk.tree_differences(ref_image, torture_tree, check_root=False)
    text = "\n".join(problems)
    assert "b'/times/ns': mtime 1700000000000000000, expected 1700000000123456789" in text
    assert "b'/times/post-2038': mtime" in text
    assert "b'/files/zeros-not-hole': data blocks (logical block, count) [], source has [(0, 16)]" in text
    assert "atime" in text


def test_checker_rejects_changed_data(ref_image: Path, torture_tree: Path, tmp_path: Path) -> None:
    img = tmp_path / "copy.img"
    subprocess.run(["cp", "--sparse=always", str(ref_image), str(img)], check=True)
    got = chk.read_image_tree(img)
    ext = got[b"/files/multi-block"].extents
    assert ext
    pblk = ext[0][1]
    with open(img, "r+b") as f:
        f.seek(pblk * 4096 + 4100)
        b = f.read(1)
        f.seek(pblk * 4096 + 4100)
        f.write(bytes([b[0] ^ 1]))
    chk.assert_fsck_clean(img)  # data is not metadata: e2fsck cannot see it
    with pytest.raises(AssertionError, match=r"multi-block': data differs at byte 4100"):
        chk.assert_tree_matches(img, torture_tree, **chk.MKFS_LOSSES)  # type: ignore[arg-type]


def test_checker_rejects_source_differences(tmp_path: Path) -> None:
    tree = build_small_tree(tmp_path / "t")
    img = mkfs_d(tree, tmp_path / "s.img", "64M")
    chk.assert_tree_matches(img, tree, **chk.MKFS_LOSSES)  # type: ignore[arg-type]
    exp = chk.expected_from_source(tree)
    tweaks = {
        "mode": (b"/bin/tool", "mode", 0o700, "mode 0o755, expected 0o700"),
        "uid": (b"/etc/hostname", "uid", 5, "uid 0, expected 5"),
        "target": (b"/bin/alias", "target", b"tool2", "symlink target b'tool', expected b'tool2'"),
        "size": (b"/etc/passwd", "size", 1, "size 30, expected 1"),
        "xattr": (b"/etc/hostname", "xattrs", {b"user.x": b"1"}, "xattrs {}, expected"),
        "kind": (b"/empty-dir", "kind", chk.REG, "type dir, expected reg"),
    }
    for name, (path, attr, value, message) in tweaks.items():
        e = {p: chk.Entry(**vars(v)) for p, v in exp.items()}
        setattr(e[path], attr, value)
        with pytest.raises(AssertionError) as info:
            chk.assert_tree_matches(img, e, **chk.MKFS_LOSSES)  # type: ignore[arg-type]
        assert message in str(info.value), (name, str(info.value))
    # a missing and an extra name
    e = dict(exp)
    del e[b"/etc/hostname"]
    e[b"/etc/new"] = exp[b"/etc/passwd"]
    with pytest.raises(AssertionError) as info:
        chk.assert_tree_matches(img, e, **chk.MKFS_LOSSES)  # type: ignore[arg-type]
    assert "missing in image: [b'/etc/new']" in str(info.value)
    assert "not in source: [b'/etc/hostname']" in str(info.value)


def test_checker_rejects_broken_hardlinks(tmp_path: Path) -> None:
    """Two names of one inode in the source must be one inode in the image."""
    t = tmp_path / "t"
    t.mkdir()
    (t / "a").write_text("same")
    (t / "b").write_text("same")
    img = mkfs_d(t, tmp_path / "h.img", "64M")
    exp = chk.expected_from_source(t)
    exp[b"/b"].ident = exp[b"/a"].ident  # pretend the source had a hardlink
    with pytest.raises(AssertionError) as info:
        chk.assert_tree_matches(img, exp, **chk.MKFS_LOSSES)  # type: ignore[arg-type]
    assert "hardlink groups differ" in str(info.value)
    assert "b'/a': links 1, expected 2" in str(info.value)


def test_fsck_check_sees_corruption(tmp_path: Path) -> None:
    tree = build_small_tree(tmp_path / "t")
    img = mkfs_d(tree, tmp_path / "c.img", "64M")
    chk.assert_fsck_clean(img)
    # change the link count of the root inode (inode 2: inode table via debugfs)
    subprocess.run(["debugfs", "-w", "-R", "sif <2> links_count 7", str(img)], check=True,
                   capture_output=True)
    with pytest.raises(AssertionError, match="rc=4"):
        chk.assert_fsck_clean(img)


def test_acl_meaning() -> None:
    from conftest import _acl

    vfs = _acl([(1, 6, 0xFFFFFFFF), (2, 6, 1000), (4, 4, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)])
    debugfs_style = _acl([(1, 6, 0), (2, 6, 1000), (4, 4, 0), (0x20, 4, 0)])
    assert chk.acl_meaning(vfs) == chk.acl_meaning(debugfs_style)
    other = _acl([(1, 6, 0), (2, 6, 1001), (4, 4, 0), (0x20, 4, 0)])
    assert chk.acl_meaning(vfs) != chk.acl_meaning(other)
