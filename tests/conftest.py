"""Shared fixtures: source trees holding everything a root tree can hold.

``torture_tree`` builds (as root: devices need it) every file type, odd names, times, xattrs,
ACLs, holes and hardlinks; ``small_tree`` a handful of ordinary files.  Both are plain folders:
the expected values of a test are read from them with ``os.lstat`` and friends (see
``tests/ext4check.py``), never from pydiskimg.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

IS_ROOT = os.geteuid() == 0

#: mtimes (ns) used by the trees: nanoseconds, before 1970, after 2038 (needs ext4's extra
#: epoch bits), negative with a fraction.
T_NS = 1_700_000_000_123_456_789
T_PRE1970 = -1_000_000_000_987_654_321 + 1  # 1938, odd nanoseconds
T_POST2038 = ((1 << 32) + 12_345) * 1_000_000_000 + 42  # 2106
T_NEG_FRAC = -1_500_000_000  # -1.5 s: seconds -2, 500000000 ns on disk

#: a valid VFS_CAP_REVISION_2 security.capability value (cap_net_bind_service=ep)
CAP_NET_BIND = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")

BLOCK = 4096

#: scripts/test (and so CI) sets this: every tool is installed there, so a test that would skip
#: for a missing tool or privilege fails instead.  A contributor's plain `pytest` may skip.
REQUIRE_ALL = os.environ.get("PYDISKIMG_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where everything must run (PYDISKIMG_REQUIRE_ALL=1): {reason}"


@pytest.fixture(autouse=True)
def _signal_handlers_restored() -> Iterator[None]:
    """Every test leaves SIGINT/SIGTERM handling (and pydiskimg's signal state) as it found it:
    a test calling the CLI in-process must not change how a later test is interrupted."""
    import signal

    from pydiskimg.io import signals

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
    signals.reset()


def _write(path: Path | bytes, data: bytes = b"", mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def _sparse(path: Path | bytes, size: int, chunks: list[tuple[int, bytes]]) -> None:
    """A file of ``size`` bytes with data only at the given offsets (the rest holes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for off, data in chunks:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    os.chmod(path, 0o644)


def _pattern(n: int, seed: int) -> bytes:
    """``n`` deterministic non-zero-looking bytes."""
    import hashlib

    out = bytearray()
    ctr = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, ctr)).digest()
        ctr += 1
    return bytes(out[:n])


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A POSIX ACL xattr value in the VFS format (version 2): (tag, perm, id) entries."""
    import struct

    out = struct.pack("<I", 2)
    for tag, perm, ident in entries:
        out += struct.pack("<HHI", tag, perm, ident)
    return out


# tags and the "undefined id" of the VFS format
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
ACL_UNDEF = 0xFFFFFFFF


def build_torture_tree(root: Path, *, reverse: bool = False, huge: bool = True) -> Path:
    """Create the torture tree under ``root`` (which must not exist).

    ``reverse`` creates the entries in the opposite order (same final tree, different inode
    numbers and directory listing order); ``huge`` adds the 5 GiB sparse file.
    Device nodes need root; without it they are left out (the callers say so).
    """
    root.mkdir()
    os.chmod(root, 0o755)
    r = os.fsencode(root)

    def p(*parts: str | bytes) -> bytes:
        return os.path.join(r, *[os.fsencode(x) for x in parts])

    steps: list[Callable[[], None]] = []
    add = steps.append

    # --- folders first (each step below may need them)
    for d in ("files", "links", "hard", "hard/other", "dev", "modes", "names", "times",
              "xattr", "big", "sparse"):
        os.makedirs(p(d), exist_ok=True)
        os.chmod(p(d), 0o755)

    # --- regular files of every size
    add(lambda: _write(p("files", "empty")))
    add(lambda: _write(p("files", "tiny"), b"hello\n"))
    add(lambda: _write(p("files", "one-block"), _pattern(BLOCK, 1)))
    add(lambda: _write(p("files", "multi-block"), _pattern(5 * BLOCK + 123, 2)))
    add(lambda: _write(p("files", "zeros-not-hole"), bytes(16 * BLOCK)))
    add(lambda: _write(p("files", "mostly-zeros"), bytes(3 * BLOCK) + b"x" + bytes(2 * BLOCK)))

    # --- sparse files
    add(lambda: _sparse(p("sparse", "holes"), 1 << 20,
                        [(0, _pattern(100, 3)), (256 * 1024, _pattern(BLOCK, 4)),
                         ((1 << 20) - 10, b"tail-bytes")]))
    add(lambda: _sparse(p("sparse", "leading-hole"), 64 * BLOCK, [(40 * BLOCK, b"data")]))
    add(lambda: _sparse(p("sparse", "trailing-hole"), 64 * BLOCK, [(0, b"data")]))
    add(lambda: _sparse(p("sparse", "all-hole"), 10 * BLOCK, []))
    # 8 extents: more than the 4 an inode holds, so the extent tree gets depth 1
    add(lambda: _sparse(p("sparse", "depth1"), 40 * BLOCK,
                        [(i * 5 * BLOCK, _pattern(BLOCK, 10 + i)) for i in range(8)]))
    # 1500 extents: more than 4 index entries x 340 leaf entries, so depth 2
    add(lambda: _sparse(p("sparse", "depth2"), 3000 * BLOCK,
                        [(i * 2 * BLOCK, b"%06d" % i) for i in range(1500)]))
    if huge:
        big = 5 << 30
        add(lambda: _sparse(p("sparse", "over-4GiB"), big,
                            [(0, b"start"), ((4 << 30) - 2, b"across-4GiB"),
                             (big - 3, b"end")]))

    # --- symlinks: short (fast, in the inode), 59/60 bytes (the fast/slow boundary), long,
    # dangling, to a folder
    add(lambda: os.symlink(b"../files/tiny", p("links", "short")))
    add(lambda: os.symlink(b"x" * 59, p("links", "len59")))
    add(lambda: os.symlink(b"y" * 60, p("links", "len60")))
    add(lambda: os.symlink(b"/very/long/" + b"z" * 300, p("links", "long")))
    add(lambda: os.symlink(b"/nonexistent/target", p("links", "dangling")))
    add(lambda: os.symlink(b"../files", p("links", "to-dir")))

    # --- hardlinks: 3 names, one in another folder; and a pair
    def hard() -> None:
        _write(p("hard", "h1"), b"shared data\n")
        os.link(p("hard", "h1"), p("hard", "h2"))
        os.link(p("hard", "h1"), p("hard", "other", "h3"))
        _write(p("hard", "pair-a"), _pattern(3 * BLOCK, 5))
        os.link(p("hard", "pair-a"), p("hard", "pair-b"))

    add(hard)

    # --- devices, FIFO, socket
    def devices() -> None:
        # (modes set again after creation: mknod, mkfifo and bind apply the umask)
        if IS_ROOT:
            for name, kind, m, dev in (("null", stat.S_IFCHR, 0o666, (1, 3)),
                                       ("chr-big", stat.S_IFCHR, 0o600, (300, 70000)),
                                       ("blk-sda", stat.S_IFBLK, 0o660, (8, 0)),
                                       ("blk-big", stat.S_IFBLK, 0o640, (259, 65536)),
                                       ("chr-255", stat.S_IFCHR, 0o600, (255, 255))):
                os.mknod(p("dev", name), kind | m, os.makedev(*dev))
                os.chmod(p("dev", name), m)
        os.mkfifo(p("dev", "fifo"), 0o644)
        os.chmod(p("dev", "fifo"), 0o644)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(p("dev", "socket"))
        finally:
            s.close()
        os.chmod(p("dev", "socket"), 0o755)

    add(devices)

    # --- modes
    def modes() -> None:
        for name, m in (("suid", 0o4755), ("sgid", 0o2755), ("suid-sgid", 0o6711),
                        ("none", 0o000), ("all", 0o777), ("sticky-file", 0o1644)):
            _write(p("modes", name), name.encode(), m)
        for name, m in (("sticky-dir", 0o1777), ("sgid-dir", 0o2750), ("private", 0o700)):
            os.mkdir(p("modes", name))
            os.chmod(p("modes", name), m)
        _write(p("modes", "big-ids"), b"owned by 100000:100001")
        os.lchown(p("modes", "big-ids"), 100000, 100001)
        _write(p("modes", "id-65536"), b"")
        os.lchown(p("modes", "id-65536"), 65536, 65535)
        _write(p("modes", "ids-2^31"), b"")
        os.lchown(p("modes", "ids-2^31"), 2**32 - 2, 2**31)  # debugfs prints these signed
        os.symlink(b"big-ids", p("modes", "owned-link"))
        os.lchown(p("modes", "owned-link"), 4242, 4343)

    add(modes)

    # --- odd names
    def names() -> None:
        for n in (b"with space", b"new\nline", "ünïcødé ☃".encode(), b"-starts-with-dash",
                  b"\xff\xfe not utf-8", b"a" * 255, b"tab\there", b"quote\"'", b".hidden",
                  b"..dots", b"back\\slash", b"colon:semi;", b"*glob?[x]"):
            _write(p("names", n), n)

    add(names)

    # --- a folder big enough for an htree
    def bigdir() -> None:
        for i in range(3000):
            data = b"%d\n" % i if i % 7 == 0 else b""
            _write(p("big", f"entry-{i:05d}-with-a-longer-name"), data)

    add(bigdir)

    # --- xattrs and ACLs
    def xattrs() -> None:
        f = p("xattr", "plain")
        _write(f, b"x")
        os.setxattr(f, "user.comment", b"hello")
        os.setxattr(f, "user.empty", b"")
        os.setxattr(f, "trusted.overlay.opaque", b"y")
        os.setxattr(f, "security.selinux", b"system_u:object_r:etc_t:s0\0")
        g = p("xattr", "cap")
        _write(g, b"#!/bin/true\n", 0o755)
        os.setxattr(g, "security.capability", CAP_NET_BIND)
        a = p("xattr", "acl-file")
        _write(a, b"acl")
        os.setxattr(a, "system.posix_acl_access", _acl([
            (ACL_USER_OBJ, 6, ACL_UNDEF), (ACL_USER, 6, 1000), (ACL_GROUP_OBJ, 4, ACL_UNDEF),
            (ACL_GROUP, 4, 100), (ACL_MASK, 6, ACL_UNDEF), (ACL_OTHER, 4, ACL_UNDEF)]))
        d = p("xattr", "acl-dir")
        os.mkdir(d)
        os.setxattr(d, "system.posix_acl_default", _acl([
            (ACL_USER_OBJ, 7, ACL_UNDEF), (ACL_USER, 7, 100000), (ACL_GROUP_OBJ, 5, ACL_UNDEF),
            (ACL_MASK, 7, ACL_UNDEF), (ACL_OTHER, 5, ACL_UNDEF)]))
        os.setxattr(d, "system.posix_acl_access", _acl([
            (ACL_USER_OBJ, 7, ACL_UNDEF), (ACL_GROUP_OBJ, 5, ACL_UNDEF),
            (ACL_GROUP, 7, 54321), (ACL_MASK, 7, ACL_UNDEF), (ACL_OTHER, 5, ACL_UNDEF)]))
        # too big for the inode body: goes to an xattr block; two files share one block
        for name in ("big-1", "big-2"):
            b = p("xattr", name)
            _write(b, name.encode())
            os.setxattr(b, "user.big-a", _pattern(1000, 20))
            os.setxattr(b, "user.big-b", _pattern(1500, 21))
            os.setxattr(b, "trusted.t", b"t")
        os.symlink(b"plain", p("xattr", "link-with-xattr"))
        os.setxattr(p("xattr", "link-with-xattr"), "trusted.on-link", b"yes",
                    follow_symlinks=False)

    add(xattrs)

    for step in reversed(steps) if reverse else steps:
        step()

    # --- times last (creating entries changes folder mtimes), deepest first
    os.utime(p("times"), ns=(0, 0))
    for name, t in (("ns", T_NS), ("pre-1970", T_PRE1970), ("post-2038", T_POST2038),
                    ("neg-frac", T_NEG_FRAC), ("epoch", 0)):
        _write(p("times", name), name.encode())
        os.utime(p("times", name), ns=(T_NS, t))
    os.symlink(b"ns", p("times", "link-post-2038"))
    os.utime(p("times", "link-post-2038"), ns=(T_NS, T_POST2038), follow_symlinks=False)
    set_tree_mtimes(root, T_NS)
    os.utime(p("times"), ns=(T_NS, T_PRE1970))
    return root


def set_tree_mtimes(root: Path, t_ns: int) -> None:
    """Give every folder of ``root`` that still has a fresh mtime the mtime ``t_ns`` (so trees
    built at different moments are equal), deepest first; files keep theirs unless fresh."""
    import time

    now = time.time_ns()
    r = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(r, topdown=False):
        for n in filenames + dirnames:
            q = os.path.join(dirpath, n)
            st = os.lstat(q)
            if abs(st.st_mtime_ns - now) < 3600 * 10**9:
                os.utime(q, ns=(t_ns, t_ns), follow_symlinks=False)
        os.utime(dirpath, ns=(t_ns, t_ns))


def build_small_tree(root: Path) -> Path:
    """A few ordinary files, folders and a symlink, with fixed mtimes."""
    root.mkdir()
    (root / "etc").mkdir()
    _write(root / "etc" / "hostname", b"small\n")
    _write(root / "etc" / "passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    (root / "bin").mkdir()
    _write(root / "bin" / "tool", _pattern(10_000, 7), 0o755)
    os.symlink("tool", root / "bin" / "alias")
    (root / "empty-dir").mkdir()
    set_tree_mtimes(root, T_NS)
    return root


@pytest.fixture(scope="session")
def _torture_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_torture_tree(tmp_path_factory.mktemp("torture") / "root")


@pytest.fixture
def torture_tree(_torture_base: Path) -> Path:
    """The torture tree (built once per session; treat it as read-only)."""
    if not IS_ROOT:
        import warnings

        warnings.warn("not root: the torture tree has no device nodes", stacklevel=1)
    return _torture_base


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    """A small ordinary tree (fresh per test: may be modified)."""
    return build_small_tree(tmp_path / "small")


@pytest.fixture(scope="session")
def distro_stage_image(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Any]]:
    """``get(table)``: (image, finished build process) of the Debian tree built through the
    bootloader stage with GRUB (``tests/distrokit.py``'s :func:`build_through_stage`), built on
    first request and shared by every test of the session (boot tests, reproducibility tests):
    each costs a libguestfs launch and a GRUB install under TCG.  ``legacy`` is built with the
    progress stream on (the stage's output is in its stderr), ``efi`` with ``--quiet``.
    Callers must not modify the image (boot it with ``snapshot=on``, as bootkit.boot does)."""
    import distrokit

    built: dict[str, tuple[Path, Any]] = {}

    def get(table: str) -> tuple[Path, Any]:
        if table not in built:
            out = tmp_path_factory.mktemp(f"distro-{table}") / f"{table}.img"
            extra = ("--quiet",) if table == "efi" else ()
            built[table] = (out, distrokit.build_through_stage(table, out, *extra))
        return built[table]

    return get


# -- no Python from the PATH --------------------------------------------------------------------
# Tests start Python through sys.executable (the venv's), never a `python3` found on the PATH:
# on a fresh machine that one lacks pydiskimg's dependencies.  To prove it, the whole session
# runs with a stub `python3`/`python` first on the PATH that fails loudly.

PATH_PYTHON_STUB_MESSAGE = "tests must use sys.executable, not a python from the PATH"
_stub_dir: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _stub_dir
    import tempfile

    _stub_dir = tempfile.mkdtemp(prefix="pydiskimg-no-path-python-")
    for name in ("python3", "python", "python3.11"):
        stub = os.path.join(_stub_dir, name)
        with open(stub, "w") as f:
            f.write(f'#!/bin/sh\necho "$0: {PATH_PYTHON_STUB_MESSAGE}" >&2\nexit 97\n')
        os.chmod(stub, 0o755)
    os.environ["PATH"] = _stub_dir + os.pathsep + os.environ.get("PATH", "")


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if _stub_dir is not None:
        shutil.rmtree(_stub_dir, ignore_errors=True)
