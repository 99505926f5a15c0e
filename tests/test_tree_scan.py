"""tree.scan() against the source read independently (os.lstat, listxattr, SEEK_HOLE)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import ext4check as chk
import pytest
from conftest import IS_ROOT, build_torture_tree

from pydiskimg.errors import SourceError, UsageError
from pydiskimg.tree import Kind, Node, Tree, scan

_KIND = {
    chk.REG: Kind.REG, chk.DIR: Kind.DIR, chk.LNK: Kind.SYMLINK, chk.CHR: Kind.CHR,
    chk.BLK: Kind.BLK, chk.FIFO: Kind.FIFO, chk.SOCK: Kind.SOCK,
}


def canonical(tree: Tree) -> list[tuple[object, ...]]:
    """Everything a writer reads, minus where the data lives: equal trees give equal lists."""
    ids: dict[int, int] = {}
    out = []
    for path, n in tree.walk():
        ident = ids.setdefault(id(n), len(ids))
        out.append((path, ident, n.kind, n.mode, n.uid, n.gid, n.mtime_ns, n.atime_ns, n.ctime_ns,
                    n.crtime_ns, n.xattrs, n.size, n.segments, n.target, n.rdev_major,
                    n.rdev_minor, sorted(n.entries)))
    return out


def test_scan_matches_lstat(torture_tree: Path) -> None:
    tree = scan(torture_tree)
    exp = chk.expected_from_source(torture_tree)
    got = dict(tree.walk())
    assert sorted(got) == sorted(exp)
    for path, e in exp.items():
        n = got[path]
        assert n.kind is _KIND[e.kind], path
        assert (n.mode, n.uid, n.gid, n.mtime_ns) == (e.mode, e.uid, e.gid, e.mtime_ns), path
        assert dict(n.xattrs) == e.xattrs, path
        assert [k for k, _ in n.xattrs] == sorted(k for k, _ in n.xattrs), path
        assert n.atime_ns is None and n.ctime_ns is None and n.crtime_ns is None
        if e.kind == chk.REG:
            assert n.size == e.size, path
            assert n.segments == (None if e.segments is None else tuple(e.segments)), path
            assert (n.source is None) == (e.size == 0), path
            if n.source:
                assert os.path.samefile(n.source, e.source), path
        elif e.kind == chk.LNK:
            assert n.target == e.target and n.size == len(e.target), path
        elif e.kind in (chk.CHR, chk.BLK):
            assert (n.rdev_major, n.rdev_minor) == e.rdev, path
        elif e.kind == chk.DIR:
            assert list(n.entries) == sorted(n.entries), path


def test_hardlinks_are_one_node(torture_tree: Path) -> None:
    tree = scan(torture_tree)
    h1 = tree.lookup(b"/hard/h1")
    assert h1 is not None
    assert tree.lookup(b"/hard/h2") is h1 and tree.lookup("/hard/other/h3") is h1
    a = tree.lookup(b"/hard/pair-a")
    assert a is not None and tree.lookup(b"/hard/pair-b") is a and a is not h1
    names = [p for p, n in tree.walk() if n is h1]
    assert names == [b"/hard/h1", b"/hard/h2", b"/hard/other/h3"]
    assert tree.count() == len({id(n) for _, n in tree.walk()})


def test_sparse_segments(torture_tree: Path) -> None:
    tree = scan(torture_tree)

    def segs(p: str) -> tuple[tuple[int, int], ...] | None:
        n = tree.lookup(p)
        assert n is not None
        return n.segments

    assert segs("/sparse/holes") == ((0, 4096), (256 * 1024, 4096), ((1 << 20) - 4096, 4096))
    assert segs("/sparse/all-hole") == ()
    assert segs("/sparse/leading-hole") == ((40 * 4096, 4096),)
    assert len(segs("/sparse/depth2") or ()) == 1500
    big = tree.lookup("/sparse/over-4GiB")
    assert big is not None and big.size == 5 << 30
    assert big.segments == ((0, 4096), ((4 << 30) - 4096, 8192), ((5 << 30) - 4096, 4096))
    # written zeros are data, not holes
    assert segs("/files/zeros-not-hole") is None
    n = tree.lookup("/files/zeros-not-hole")
    assert n is not None and n.data_segments() == ((0, 16 * 4096),)


def test_types_and_devices(torture_tree: Path) -> None:
    tree = scan(torture_tree)
    kinds = {p: n.kind for p, n in tree.walk()}
    assert kinds[b"/dev/fifo"] is Kind.FIFO and kinds[b"/dev/socket"] is Kind.SOCK
    if not IS_ROOT:
        pytest.skip("device nodes need root to create")
    n = tree.lookup("/dev/chr-big")
    assert n is not None and n.kind is Kind.CHR and (n.rdev_major, n.rdev_minor) == (300, 70000)
    b = tree.lookup("/dev/blk-big")
    assert b is not None and b.kind is Kind.BLK and (b.rdev_major, b.rdev_minor) == (259, 65536)


def test_options(torture_tree: Path) -> None:
    clamp = 1_600_000_000
    t = scan(torture_tree, all_root=True, clamp_mtime=clamp, deterministic=False)
    raw = scan(torture_tree)
    by_path = dict(raw.walk())
    for p, n in t.walk():
        assert n.uid == 0 and n.gid == 0
        assert n.mtime_ns == min(by_path[p].mtime_ns, clamp * 10**9)
        st = os.lstat(os.path.join(os.fsencode(torture_tree), p.lstrip(b"/")) if p != b"/"
                      else torture_tree)
        assert n.ctime_ns == st.st_ctime_ns
        assert n.atime_ns is not None
    big = raw.lookup("/modes/big-ids")
    assert big is not None and (big.uid, big.gid) == (100000, 100001)


def test_scan_independent_of_creation_order(tmp_path: Path) -> None:
    a = build_torture_tree(tmp_path / "a", huge=False)
    old = os.umask(0o077)
    try:
        b = build_torture_tree(tmp_path / "b", reverse=True, huge=False)
    finally:
        os.umask(old)
    assert canonical(scan(a)) == canonical(scan(b))


def test_symlinked_root_is_followed(tmp_path: Path, small_tree: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(small_tree)
    assert canonical(scan(link)) == canonical(scan(small_tree))


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        scan(tmp_path / "missing")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        scan(f)


def _scan_as_nobody(root: Path) -> str:
    """scan(root) in a forked child running as uid/gid 65534: the error text or "ok"."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                scan(root)
                msg = "ok"
            except SourceError as e:
                msg = str(e)
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.mark.skipif(not IS_ROOT, reason="needs root to drop privileges")
def test_unreadable_folder_and_file() -> None:
    """As an unprivileged user: a folder without read permission, then a file."""
    base = Path(tempfile.mkdtemp(prefix="pydiskimg-perm-"))
    try:
        os.chmod(base, 0o755)
        root = base / "r"
        (root / "locked").mkdir(parents=True)
        os.chmod(root, 0o755)
        (root / "ok").write_text("x")
        os.chmod(root / "ok", 0o644)
        os.chmod(root / "locked", 0o000)
        assert _scan_as_nobody(root) == f"{root / 'locked'}: cannot read folder: permission denied"
        os.chmod(root / "locked", 0o755)
        (root / "locked" / "secret").write_text("s")
        os.chmod(root / "locked" / "secret", 0o000)
        assert _scan_as_nobody(root) == f"{root / 'locked' / 'secret'}: cannot read: permission denied"
        os.chmod(root / "locked" / "secret", 0o644)
        assert _scan_as_nobody(root) == "ok"
    finally:
        shutil.rmtree(base)


def test_walk_order_and_model() -> None:
    root = Node(Kind.DIR, 0o755)
    sub = Node(Kind.DIR, 0o700)
    f = Node(Kind.REG, 0o644, size=3)
    root.entries = {b"z": f, b"a": sub}
    sub.entries = {b"x": f}
    t = Tree(root)
    assert [p for p, _ in t.walk()] == [b"/", b"/a", b"/z", b"/a/x"]
    assert t.count() == 3
    assert t.lookup(b"/a/x") is f and t.lookup(b"/z/x") is None and t.lookup("/nope") is None


def test_name_too_long_and_vanished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux source filesystems stop at 255 bytes too, so a longer name (possible on other
    filesystems, e.g. FUSE ones) is simulated by a listing that returns one."""
    import pydiskimg.tree as tree_mod

    (tmp_path / "d").mkdir()
    real_scandir = os.scandir

    class Fake:
        def __init__(self, name: bytes, path: bytes) -> None:
            self.name, self.path = name, path

        def stat(self, follow_symlinks: bool = True) -> os.stat_result:
            return os.lstat(self.path)

    class Listing:
        def __init__(self, entries: list[Fake]) -> None:
            self.entries = entries

        def __enter__(self) -> list[Fake]:
            return self.entries

        def __exit__(self, *a: object) -> None:
            pass

    long = b"x" * 256
    d = os.fsencode(tmp_path / "d")
    monkeypatch.setattr(tree_mod.os, "scandir", lambda p: Listing(
        [Fake(long, os.path.join(p, long))] if p == d else list(real_scandir(p))))
    with pytest.raises(SourceError) as info:
        scan(tmp_path)
    assert str(info.value) == (f"{tmp_path}/d/{'x' * 256}: name is 256 bytes long, ext4 allows "
                               "at most 255")
    # the same listing with a 255-byte name: the entry vanished before lstat
    monkeypatch.setattr(tree_mod.os, "scandir", lambda p: Listing(
        [Fake(b"y" * 255, os.path.join(p, b"y" * 255))] if p == d else list(real_scandir(p))))
    with pytest.raises(SourceError) as info:
        scan(tmp_path)
    assert str(info.value) == f"{tmp_path}/d/{'y' * 255}: vanished while scanning"


def test_entries_only_for_folders(tmp_path: Path) -> None:
    """A folder gets a dict of its own; every other node shares one empty read-only mapping
    (a tree holds millions of files), so adding a child to a file fails loudly."""
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"x")
    tree = scan(tmp_path)
    f = tree.root.entries[b"f"]
    assert f.kind is Kind.REG and len(f.entries) == 0 and f.entries.get(b"x") is None
    with pytest.raises(TypeError):
        f.entries[b"x"] = f
    a, b = Node(Kind.DIR, 0o755), Node(Kind.DIR, 0o755)
    a.entries[b"k"] = f
    assert b.entries == {} and tree.root.entries[b"d"].entries == {}
    assert not hasattr(f, "__dict__")  # slots


def test_single_marks_one_link_only(torture_tree: Path) -> None:
    """``single`` (writers skip their hardlink bookkeeping) is set exactly for the non-folders
    whose lstat says one link; folders and hardlinked files keep the default."""
    tree = scan(torture_tree)
    root = os.fsencode(torture_tree)
    seen = 0
    for path, n in tree.walk()[1:]:
        st = os.lstat(root + path)
        assert n.single == (st.st_nlink == 1 and n.kind is not Kind.DIR), path
        seen += n.single
    assert seen and not tree.root.single
    assert not Node(Kind.REG, 0o644).single  # nodes made by hand are checked
