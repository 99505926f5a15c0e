"""pydiskimg's ext4 images read back by e2fsck and debugfs (tests/ext4check.py), strictly:
nanosecond mtimes, atime = ctime = crtime = mtime, holes exactly where the source has them.
The same checker accepts mkfs.ext4 -d's image modulo its losses
(test_ext4_readback_reference.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import ext4check as chk
import pytest
from conftest import build_small_tree, build_torture_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydiskimg.ext4 import Ext4Options, make_filesystem, plan, write
from pydiskimg.io import Image
from pydiskimg.tree import scan

SDE = 1_700_000_000
MiB = 1 << 20


def build(tree_dir: Path, image: Path, **scan_kw: object) -> Path:
    tree = scan(tree_dir, **scan_kw)  # type: ignore[arg-type]
    make_filesystem(tree, image, options=Ext4Options(timestamp=SDE))
    return image


@pytest.fixture(scope="module")
def torture_image(tmp_path_factory: pytest.TempPathFactory, _torture_base: Path) -> Path:
    return build(_torture_base, tmp_path_factory.mktemp("pd") / "torture.img")


def test_torture_tree_fsck_clean(torture_image: Path) -> None:
    chk.assert_fsck_clean(torture_image)


def test_torture_tree_reads_back(torture_image: Path, torture_tree: Path) -> None:
    got = chk.assert_tree_matches(torture_image, torture_tree)
    # the features the torture tree exists for really are in the image
    assert len(got[b"/sparse/depth2"].extents or []) == 1500
    assert got[b"/hard/h1"].nlink == 3 and got[b"/hard/h1"].ident == got[b"/hard/other/h3"].ident
    assert got[b"/times/post-2038"].mtime_ns > (1 << 32) * 10**9


def test_all_root_and_clamp(tmp_path: Path, torture_tree: Path) -> None:
    img = build(torture_tree, tmp_path / "r.img", all_root=True, clamp_mtime=SDE)
    chk.assert_fsck_clean(img)
    chk.assert_tree_matches(img, torture_tree, all_root=True, clamp_mtime_ns=SDE * 10**9)


def test_written_at_an_offset(tmp_path: Path) -> None:
    """The build pipeline's way: plan, then write through a view at a partition's offset."""
    src = build_small_tree(tmp_path / "t")
    p = plan(scan(src), None, Ext4Options(timestamp=SDE))
    img_path = tmp_path / "disk.img"
    img = Image.create(img_path, 3 * MiB + p.size)
    try:
        img.write(0, b"\xaa" * 4096)
        write(p, img.view(3 * MiB, p.size))
    finally:
        img.close()
    chk.assert_fsck_clean(img_path, offset=3 * MiB)
    chk.assert_tree_matches(img_path, src, offset=3 * MiB)


# --------------------------------------------------------------------------------------------
# random trees
# --------------------------------------------------------------------------------------------

_name = st.binary(min_size=1, max_size=40).map(
    lambda b: bytes(c for c in b if c not in (0, 47)) or b"n").filter(
    lambda b: b not in (b".", b".."))
# every time ext4 stores, except 2310..2378 (epoch bits 3 with the sign bit set), which e2fsck
# takes for a mis-encoded pre-1970 date and the writer refuses (see test_ext4_fs_write)
_time = st.one_of(
    st.integers(min_value=-(2**31) * 10**9, max_value=(3 * 2**32 - 2**31) * 10**9 - 1),
    st.integers(min_value=3 * 2**32 * 10**9, max_value=(2**34 - 2**31 - 1) * 10**9),
)
_ids = st.integers(min_value=0, max_value=2**32 - 2)

def _blob(n: int, seed: int) -> bytes:
    """``n`` bytes derived from ``seed`` (cheaper for Hypothesis than drawing them)."""
    out = b""
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, len(out))).digest()
    return out[:n]


_bytes = st.one_of(st.binary(max_size=24),
                   st.builds(_blob, st.integers(25, 20000), st.integers(0, 1 << 16)))
_file = st.fixed_dictionaries({
    "kind": st.just("reg"),
    "data": _bytes,
    "holes": st.lists(st.integers(0, 40), max_size=4),
    "mode": st.integers(0, 0o7777),
    "uid": _ids, "gid": _ids, "mtime": _time,
    "xattrs": st.dictionaries(st.sampled_from(["user.a", "user.bb", "trusted.t"]),
                              _bytes.map(lambda b: b[:700]), max_size=3),
})
_link = st.fixed_dictionaries({
    "kind": st.just("symlink"), "target": _bytes.map(
        lambda b: bytes(c for c in b[:200] if c) or b"t"), "uid": _ids, "gid": _ids, "mtime": _time,
})
_fifo = st.fixed_dictionaries({"kind": st.just("fifo"), "mode": st.integers(0, 0o777),
                               "uid": _ids, "gid": _ids, "mtime": _time})
_hard = st.fixed_dictionaries({"kind": st.just("hardlink")})
_leaf = st.one_of(_file, _file, _link, _fifo, _hard)


def _dir(children: st.SearchStrategy[object]) -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries({
        "kind": st.just("dir"), "mode": st.integers(0, 0o7777), "uid": _ids, "gid": _ids,
        "mtime": _time, "entries": st.dictionaries(_name, children, max_size=8),
    })


_tree = st.recursive(_leaf, _dir, max_leaves=25)


def materialise(spec: dict[str, object], root: bytes) -> None:
    """Create the random tree ``spec`` (a dir) at ``root``."""
    files: list[bytes] = []
    dirs: list[tuple[bytes, dict[str, object]]] = []

    def make(path: bytes, s: dict[str, object]) -> None:
        k = s["kind"]
        if k == "dir":
            if path != root:
                os.mkdir(path)
            for name, child in s["entries"].items():  # type: ignore[attr-defined]
                make(os.path.join(path, name), child)
            dirs.append((path, s))
            return
        if k == "hardlink":
            if files:
                os.link(files[len(path) % len(files)], path)
            else:
                os.mkfifo(path)
            return
        if k == "reg":
            data: bytes = s["data"]  # type: ignore[assignment]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            size = len(data) + 4096 * max(s["holes"] or [0])  # type: ignore[type-var]
            os.ftruncate(fd, size)
            pos = 0
            for h in s["holes"]:  # type: ignore[attr-defined]
                pos = min(size, pos + h * 4096)
            os.pwrite(fd, data, min(pos, size - len(data)))
            os.close(fd)
            for n, v in s["xattrs"].items():  # type: ignore[attr-defined]
                os.setxattr(path, n, v)
            files.append(path)
        elif k == "symlink":
            os.symlink(s["target"], path)  # type: ignore[arg-type]
        elif k == "fifo":
            os.mkfifo(path)
        os.lchown(path, s["uid"], s["gid"])  # type: ignore[arg-type]
        if k != "symlink":
            os.chmod(path, s["mode"])  # type: ignore[arg-type]
        os.utime(path, ns=(0, s["mtime"]), follow_symlinks=False)  # type: ignore[arg-type]

    make(root, spec)
    for path, s in dirs:  # children before parents
        os.lchown(path, s["uid"], s["gid"])  # type: ignore[arg-type]
        os.chmod(path, s["mode"] | 0o700)  # type: ignore[operator]
        os.utime(path, ns=(0, s["mtime"]))  # type: ignore[arg-type]


@pytest.mark.skipif(os.geteuid() != 0, reason="random owners need root (lchown)")
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_dir(_tree))
def test_random_trees(spec: dict[str, object]) -> None:
    base = tempfile.mkdtemp(prefix="pydiskimg-hyp-")
    try:
        root = os.path.join(base, "root").encode()
        os.mkdir(root)
        materialise(spec, root)
        img = Path(base) / "h.img"
        build(Path(os.fsdecode(root)), img)
        chk.assert_fsck_clean(img)
        chk.assert_tree_matches(img, root)
    finally:
        shutil.rmtree(base)


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------

_BUILD = """
import sys
from pydiskimg.tree import scan
from pydiskimg.ext4 import Ext4Options, make_filesystem
make_filesystem(scan(sys.argv[1]), sys.argv[2], options=Ext4Options(timestamp=1700000000))
"""


def _sha256(path: Path) -> str:
    return chk.sha256_file(path)


def _build_in_env(tree: Path, image: Path, cwd: Path, env: dict[str, str], umask: int) -> None:
    import pydiskimg

    pkg = os.path.dirname(os.path.dirname(pydiskimg.__file__))
    r = subprocess.run(
        [sys.executable, "-c", _BUILD, str(tree), str(image)], cwd=cwd,
        env={**os.environ, "PYTHONPATH": pkg, **env}, capture_output=True, text=True,
        preexec_fn=lambda: os.umask(umask), check=False,
    )
    assert r.returncode == 0, r.stderr


def test_same_bytes_in_different_environments(tmp_path: Path) -> None:
    a = build_torture_tree(tmp_path / "a", huge=False)
    b = build_torture_tree(tmp_path / "b", reverse=True, huge=False)
    # touch atimes of b: read every file
    for dirpath, _, files in os.walk(b):
        for f in files:
            p = os.path.join(dirpath, f)
            if stat.S_ISREG(os.lstat(p).st_mode):
                with open(p, "rb") as fh:
                    fh.read()
    (tmp_path / "cwd1").mkdir()
    (tmp_path / "cwd2").mkdir()
    _build_in_env(a, tmp_path / "a.img", tmp_path / "cwd1",
                  {"TZ": "UTC", "LC_ALL": "C"}, 0o022)
    _build_in_env(b, tmp_path / "b.img", tmp_path / "cwd2",
                  {"TZ": "America/Los_Angeles", "LC_ALL": "C.UTF-8"}, 0o077)
    assert _sha256(tmp_path / "a.img") == _sha256(tmp_path / "b.img")
    # and the image is a real one
    chk.assert_fsck_clean(tmp_path / "b.img")
