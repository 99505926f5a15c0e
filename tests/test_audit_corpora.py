"""The readers on images written by others: e2fsprogs' test corpus and util-linux's blkid corpus.

The corpora are the ``tests/*/image.gz`` of Debian's e2fsprogs source package (many of them
corrupted on purpose) and ``tests/ts/blkid/images-fs`` and ``images-pt`` of Debian's util-linux
source package (filesystems and partition tables of every kind).  ``scripts/install-deps
--test`` fetches both with ``apt-get source`` into :data:`CORPORA`, outside the repository.

Per image:

* ``inspect --files --json`` ends with exit 0 (valid JSON) or 2 (``pydiskimg: error:`` lines),
  with no traceback and within :data:`TIMEOUT` seconds;
* ``diff`` against its neighbour in the corpus (another image) and, for e2fsprogs' images,
  against the copy ``e2fsck -fy`` repaired: exit 0, 1 or 2, the same checks; and exit 0 exactly
  when the two files are byte-identical;
* when ``e2fsck -fn`` calls the filesystem clean, ``inspect --files`` lists exactly the files
  ``debugfs`` lists: path, inode, type, mode, owner, size, symlink target and content.

The CLI runs in-process (its ``main``, with a per-image alarm), which is several times faster
than one interpreter per image; a few images also go through ``python -m pydiskimg``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pydiskimg.cli import main

CORPORA = Path(os.environ.get("PYDISKIMG_CORPORA", "/var/cache/pydiskimg-test/corpora"))
#: seconds one image may take (a hang, not a speed limit: the slowest takes ~10 s alone)
TIMEOUT = 180
#: seconds e2fsck may take on one image (e2fsck -n loops forever on a few of them; the
#: slowest of the others takes about 1 s)
FSCK_TIMEOUT = 10


def _sources() -> dict[str, Path]:
    out = {}
    for p in sorted(CORPORA.glob("e2fsprogs-*/tests/*/image.gz")):
        out[f"e2fsprogs/{p.parent.name}"] = p
    for p in sorted(CORPORA.glob("util-linux-*/tests/ts/blkid/images-*/*.img.xz")):
        out[f"blkid-{p.parent.name.removeprefix('images-')}/{p.name.removesuffix('.img.xz')}"] = p
    return out


SOURCES = _sources()
NAMES = sorted(SOURCES) or ["(corpora missing)"]
E2FS_NAMES = [n for n in NAMES if n.startswith("e2fsprogs/")] or ["(corpora missing)"]


def _need_corpora() -> None:
    if not SOURCES:
        pytest.skip(f"no corpus images under {CORPORA}: run scripts/install-deps --test")
    for tool in ("e2fsck", "debugfs"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing")


def _unpack(src: Path, dst: Path) -> None:
    """Decompress ``src`` to ``dst``, leaving zero runs as holes."""
    opener = gzip.open if src.suffix == ".gz" else lzma.open
    zero = bytes(1 << 16)
    with opener(src, "rb") as f, open(dst, "wb") as out:
        pos = 0
        while block := f.read(1 << 16):
            if block != zero[:len(block)]:
                out.seek(pos)
                out.write(block)
            pos += len(block)
        out.truncate(pos)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> the decompressed image (every image of both corpora, unpacked once)."""
    if not SOURCES:
        return {}
    root = tmp_path_factory.mktemp("corpora")
    out = {name: root / (name.replace("/", "__") + ".img") for name in SOURCES}
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: _unpack(SOURCES[n], out[n]), SOURCES))
    return out


class _Hang(BaseException):
    """Raised by the alarm: not an Exception, so no ``except Exception`` swallows it."""


def _alarm(signum: int, frame: object) -> None:
    raise _Hang


def cli(*argv: str) -> tuple[int, str, str]:
    """``pydiskimg ARGV`` in-process: (exit status, stdout, stderr).  Anything escaping ``main``
    (a traceback) fails the test, as does a run longer than :data:`TIMEOUT`."""
    out, err = io.StringIO(), io.StringIO()
    old_alarm = signal.signal(signal.SIGALRM, _alarm)
    old_term = signal.getsignal(signal.SIGTERM)
    signal.alarm(TIMEOUT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(list(argv))
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 2
    except _Hang:
        pytest.fail(f"pydiskimg {' '.join(argv)}: no result after {TIMEOUT} s (a hang?)")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)
    return rc, out.getvalue(), err.getvalue()


def _check_stderr(argv: tuple[str, ...], rc: int, err: str) -> None:
    lines = err.splitlines()
    assert "Traceback" not in err, f"{argv}: traceback:\n{err}"
    bad = [ln for ln in lines if not ln.startswith("pydiskimg: error: ")]
    assert not bad, f"{argv}: exit {rc}, stray stderr lines: {bad[:5]}"
    if rc == 2:
        assert lines, f"{argv}: exit 2 without a message"


def _filesystems(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if d.get("filesystem"):
        yield d["filesystem"]
    for p in d.get("partitions", []):
        if p.get("filesystem"):
            yield p["filesystem"]


_INSPECTED: dict[Path, tuple[int, str, str]] = {}


def inspect_files(image: Path) -> tuple[int, str, str]:
    """``inspect --files --json IMAGE`` in-process, run once per image and session."""
    if image not in _INSPECTED:
        _INSPECTED[image] = cli("inspect", "--files", "--json", str(image))
    return _INSPECTED[image]


@pytest.mark.parametrize("name", NAMES)
def test_inspect_files(corpus: dict[str, Path], name: str) -> None:
    _need_corpora()
    argv = ("inspect", "--files", "--json", str(corpus[name]))
    rc, out, err = inspect_files(corpus[name])
    assert rc in (0, 2), f"{argv}: exit {rc}\n{err}"
    _check_stderr(argv, rc, err)
    if rc == 0:
        d = json.loads(out)
        for fs in _filesystems(d):
            # a filesystem that could not be opened or listed makes the exit status 2
            assert "files_error" not in fs and "error" not in fs, fs
            assert "files" in fs or fs["type"] not in ("ext4", "fat"), fs


@pytest.mark.parametrize("name", NAMES)
def test_diff_neighbour(corpus: dict[str, Path], name: str) -> None:
    """``diff`` of each image with the next one of the corpus: two foreign images."""
    _need_corpora()
    other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
    _diff(corpus[name], corpus[other])


def _diff(a: Path, b: Path) -> int:
    argv = ("diff", str(a), str(b))
    rc, out, err = cli(*argv)
    assert rc in (0, 1, 2), f"{argv}: exit {rc}\n{err}"
    _check_stderr(argv, rc, err)
    if rc != 2:
        same = _same_bytes(a, b)
        assert (rc == 0) == same, f"{argv}: exit {rc}, but the files are {'' if same else 'not '}identical"
        assert bool(out.strip()) == (rc == 1), f"{argv}: exit {rc} with output {out[:300]!r}"
    return rc


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _e2fsck(args: list[str], image: Path) -> int | None:
    """e2fsck's exit status, None when it runs past :data:`FSCK_TIMEOUT`."""
    try:
        p = subprocess.run(["e2fsck", *args, str(image)], capture_output=True,
                           timeout=FSCK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return None
    return p.returncode


@pytest.fixture(scope="session")
def repaired(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """e2fsprogs image name -> a copy ``e2fsck -fy`` repaired (as far as it got in
    :data:`FSCK_TIMEOUT` seconds: it loops on a few images)."""
    root = tmp_path_factory.mktemp("repaired")
    names = [n for n in corpus if n.startswith("e2fsprogs/")]

    def fix(name: str) -> tuple[str, Path]:
        dst = root / corpus[name].name
        subprocess.run(["cp", "--sparse=always", str(corpus[name]), str(dst)], check=True)
        _e2fsck(["-fy"], dst)
        return name, dst

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(fix, names))


@pytest.mark.parametrize("name", E2FS_NAMES)
def test_diff_e2fsck_repair(corpus: dict[str, Path], repaired: dict[str, Path], name: str) -> None:
    """``diff`` of each e2fsprogs image with the copy e2fsck -fy repaired: the same filesystem
    before and after the reference tool's fixes, in place."""
    _need_corpora()
    _diff(corpus[name], repaired[name])


# -- agreement with debugfs -------------------------------------------------------------------------
#: what e2fsck -n prints when it finds something, even with exit status 0: a question it
#: answered "no", a problem it ignored, a superblock it could not use
_FSCK_FINDING = re.compile(rb"\? no$|IGNORED|[Ss]uperblock", re.M)


def _fsck(image: Path) -> str:
    """``"clean"`` (exit 0, nothing found), ``"exit 0"`` (exit 0, but e2fsck found something it
    was not allowed to fix, such as an extent tree it would make shallower), or ``"no"``."""
    with open(image, "rb") as f:
        f.seek(1024 + 0x38)
        if f.read(2) != b"\x53\xef":  # no ext2/3/4 superblock magic: nothing to ask e2fsck
            return "no"
    try:
        p = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True,
                           timeout=FSCK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return "no"
    if p.returncode != 0:
        return "no"
    return "exit 0" if _FSCK_FINDING.search(p.stdout + p.stderr) else "clean"


@pytest.fixture(scope="session")
def fsck(corpus: dict[str, Path]) -> dict[str, str]:
    """name -> :func:`_fsck` of each image."""
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(corpus, pool.map(lambda n: _fsck(corpus[n]), corpus), strict=True))


@pytest.fixture(scope="session")
def clean(fsck: dict[str, str]) -> set[str]:
    """The images ``e2fsck -fn`` calls clean: exit 0 with nothing found on the way."""
    return {n for n, v in fsck.items() if v == "clean"}


def test_clean_images_found(clean: set[str]) -> None:
    """The agreement test below has images to judge (e2fsck calls dozens of them clean)."""
    _need_corpora()
    assert len(clean) >= 10, sorted(clean)


_KIND = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chr",
         stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock"}


def _debugfs(image: Path, commands: list[str], tmp: Path) -> bytes:
    script = tmp / "debugfs.cmds"
    script.write_text("".join(c + "\n" for c in commands))
    p = subprocess.run(["debugfs", "-f", str(script), str(image)], capture_output=True,
                       timeout=TIMEOUT, check=True)
    return p.stdout


def _per_command(output: bytes) -> Iterator[list[bytes]]:
    """debugfs -f echoes each command as ``debugfs: CMD``: the lines printed after each."""
    cur: list[bytes] | None = None
    for line in output.split(b"\n"):
        if line.startswith(b"debugfs: "):
            if cur is not None:
                yield cur
            cur = []
        elif cur is not None:
            cur.append(line)
    if cur is not None:
        yield cur


def debugfs_listing(image: Path, tmp: Path) -> dict[str, dict[str, Any]]:
    """Every reachable file as debugfs sees it: path -> {inode, type, mode, uid, gid, size,
    target or sha256}.  Directories are listed level by level with ``ls -p <ino>`` (one debugfs
    run per level), then ``stat`` gives directory sizes and fast symlink targets, and ``dump``
    the content of files and slow symlinks."""
    found: dict[bytes, dict[str, Any]] = {}
    level: list[tuple[bytes, int]] = [(b"", 2)]
    seen = {2}
    while level:
        out = _debugfs(image, [f"ls -p <{ino}>" for _, ino in level], tmp)
        nxt = []
        for (prefix, _), lines in zip(level, _per_command(out), strict=True):
            for line in lines:
                if not line.startswith(b"/"):
                    continue
                parts = line[1:-1].split(b"/")
                ino, mode, uid, gid = int(parts[0]), int(parts[1], 8), int(parts[2]), int(parts[3])
                name = b"/".join(parts[4:-1])
                if ino == 0:
                    continue
                if name == b".":
                    if prefix == b"":
                        found[b"/"] = {"inode": ino, "mode": mode, "uid": uid, "gid": gid}
                    continue
                if name == b"..":
                    continue
                path = prefix + b"/" + name
                entry: dict[str, Any] = {"inode": ino, "mode": mode, "uid": uid, "gid": gid}
                if not stat.S_ISDIR(mode):
                    entry["size"] = int(parts[-1])
                found[path] = entry
                if stat.S_ISDIR(mode) and ino not in seen:
                    seen.add(ino)
                    nxt.append((path, ino))
        level = nxt
    # directory sizes and fast symlink targets from stat; contents from dump
    need_stat = [p for p, e in found.items() if stat.S_ISDIR(e["mode"]) or stat.S_ISLNK(e["mode"])]
    dumps = tmp / "dump"
    dumps.mkdir(exist_ok=True)
    cmds = [f"stat <{found[p]['inode']}>" for p in need_stat]
    dumped = {p: dumps / str(e["inode"]) for p, e in found.items()
              if stat.S_ISREG(e["mode"]) or stat.S_ISLNK(e["mode"])}
    cmds += [f"dump <{found[p]['inode']}> {dst}" for p, dst in dumped.items()]
    out = _debugfs(image, cmds, tmp) if cmds else b""
    for p, lines in zip(need_stat, _per_command(out), strict=False):
        text = b"\n".join(lines)
        e = found[p]
        if stat.S_ISDIR(e["mode"]):
            m = re.search(rb"Size: (\d+)", text)
            assert m, f"debugfs stat of {p!r}: no size in {text[:200]!r}"
            e["size"] = int(m.group(1))
        else:
            m = re.search(rb'Fast link dest: "(.*)"$', text, re.M)
            if m:
                e["target"] = m.group(1)
    result = {}
    for p, e in found.items():
        kind = _KIND.get(stat.S_IFMT(e["mode"]), "unknown")
        row = {"inode": e["inode"], "type": kind, "mode": f"{e['mode'] & 0o7777:04o}",
               "uid": e["uid"], "gid": e["gid"], "size": e.get("size")}
        if kind == "symlink":
            target = e.get("target")
            if target is None:
                target = dumped[p].read_bytes()
            row["target"] = target.decode("utf-8", "backslashreplace")
        elif kind == "file":
            # debugfs dumps an inline-data file's whole inline area (60 bytes and more), past
            # its i_size: the content is the first i_size bytes of what it dumps
            data = dumped[p].read_bytes()[:row["size"]]
            row["sha256"] = hashlib.sha256(data).hexdigest()
        result[_json_path(p)] = row
    return result


def _json_path(p: bytes) -> str:
    """A path as ``inspect --json`` writes it (bytes that are not UTF-8 as ``\\udcXX``)."""
    return p.decode("utf-8", "surrogateescape").encode("utf-8", "backslashreplace").decode()


KEYS = ("inode", "type", "mode", "uid", "gid", "size", "target", "sha256")


def test_agrees_with_debugfs(corpus: dict[str, Path], fsck: dict[str, str], tmp_path: Path) -> None:
    """On every filesystem e2fsck -fn calls clean, ``inspect --files`` lists what debugfs lists.

    Where e2fsck -fn exits 0 but found something on the way (a checksum it ignored, a backup
    superblock it used, an extent tree deeper than the kernel accepts), inspect may refuse;
    when it lists the files, they must equal debugfs's too."""
    _need_corpora()
    failures = []
    for name in sorted(n for n, v in fsck.items() if v != "no"):
        image = corpus[name]
        rc, out, err = inspect_files(image)
        if rc != 0:
            if fsck[name] == "clean":
                failures.append(f"{name}: inspect refused a filesystem e2fsck -fn calls clean: {err}")
            continue
        fs = json.loads(out)["filesystem"]
        if fs is None or not fs["type"].startswith("ext") or "files" not in fs:
            failures.append(f"{name}: inspect listed no ext2/3/4 filesystem: {fs}")
            continue
        ours = {f["path"]: {k: f[k] for k in KEYS if k in f} for f in fs["files"]}
        work = tmp_path / name.replace("/", "__")
        work.mkdir()
        theirs = debugfs_listing(image, work)
        if sorted(ours) != sorted(theirs):
            failures.append(
                f"{name}: paths only in inspect: {sorted(set(ours) - set(theirs))[:5]}, "
                f"only in debugfs: {sorted(set(theirs) - set(ours))[:5]}")
            continue
        wrong = [(p, ours[p], theirs[p]) for p in sorted(ours) if ours[p] != theirs[p]]
        if wrong:
            failures.append(f"{name}: {len(wrong)} files differ from debugfs, first: {wrong[:2]}")
    assert not failures, f"{len(failures)} images disagree with debugfs:\n" + "\n".join(failures)


# -- through the console entry point ---------------------------------------------------------------
SUBPROCESS_SAMPLE = ("e2fsprogs/f_ea_inode_self_ref", "e2fsprogs/f_extent_too_deep",
                     "blkid-pt/gpt", "blkid-fs/fat32_label_64MB")


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_cli_subprocess(corpus: dict[str, Path], name: str) -> None:
    """A few images through ``python -m pydiskimg``: the real exit status and stderr."""
    _need_corpora()
    assert name in corpus, f"{name} is not in the corpus"
    p = subprocess.run([sys.executable, "-m", "pydiskimg", "inspect", "--files", "--json",
                        str(corpus[name])], capture_output=True, text=True, timeout=TIMEOUT,
                       check=False)
    assert p.returncode in (0, 2), p.stderr
    _check_stderr(("inspect", name), p.returncode, p.stderr)


def _blkid_label(image: Path) -> bytes | None:
    """The raw LABEL libblkid reads (``ID_FS_LABEL_ENC``, ``\\xNN``-escaped), None without one."""
    p = subprocess.run(["blkid", "-p", "-o", "udev", str(image)], capture_output=True, text=True,
                       check=False)
    for line in p.stdout.splitlines():
        if line.startswith("ID_FS_LABEL_ENC="):
            enc = line.split("=", 1)[1]
            return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), enc).encode("latin-1")
    return None


def test_fat_root_labels_agree_with_blkid(corpus: dict[str, Path]) -> None:
    """The volume label in a FAT root folder (which libblkid prefers to the boot sector's), as
    bytes, equals what blkid reads, 0xE5 stored as 0x05 included (fat32_cp850_O_tilde)."""
    _need_corpora()
    if shutil.which("blkid") is None:
        pytest.skip("blkid is missing")
    compared, wrong = [], []
    for name in NAMES:
        if not name.startswith("blkid-fs/"):
            continue
        rc, out, _ = inspect_files(corpus[name])
        fs = json.loads(out)["filesystem"] if rc == 0 else None
        if not fs or not fs.get("type", "").startswith("FAT") or fs.get("root_label") is None:
            continue
        theirs = _blkid_label(corpus[name])
        ours = fs["root_label"].encode("cp437")
        compared.append(name)
        if ours != (theirs or b""):
            wrong.append((name, ours, theirs))
    assert len(compared) >= 10, compared
    assert not wrong, wrong
