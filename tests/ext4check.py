"""Check an ext4 image with the reference tools only: ``e2fsck`` and ``debugfs``.

The same functions judge an image made by ``mkfs.ext4 -d`` and one made by pydiskimg (the
pycdlib pattern); what ``mkfs.ext4 -d`` is known to lose is switched off by parameters
(:data:`MKFS_LOSSES`).

* :func:`assert_fsck_clean` runs ``e2fsck -fn`` and accepts only the pass headers and the summary.
* :func:`assert_tree_matches` reads every inode back with a few ``debugfs`` processes (one per
  directory level for the listing, one for all ``stat``/``ex``, one for all ``ea_get``) and
  compares it with the source read independently here with ``os.lstat``/``os.listxattr`` and
  SEEK_DATA/SEEK_HOLE: names, types, modes, owners, sizes, file data (read from the image at the
  blocks ``debugfs ex`` reports), the hole map, symlink targets, hardlink groups and link counts,
  device numbers, xattrs (ACLs by meaning) and times.

Nothing here imports pydiskimg.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# ------------------------------------------------------------------------------------------
# e2fsck
# ------------------------------------------------------------------------------------------

_FSCK_OK = re.compile(
    rb"^(Pass [1-5][A-Z]?: .*"
    rb"|e2fsck \d.*"
    rb"|.*: \d+/\d+ files \([\d.]+% non-contiguous\), \d+/\d+ blocks)$"
)


def _spec(image: str | os.PathLike[str], offset: int) -> str:
    p = os.fspath(image)
    return f"{p}?offset={offset}" if offset else p


def fsck_output(image: str | os.PathLike[str], offset: int = 0) -> tuple[int, list[bytes]]:
    """Run ``e2fsck -fn`` and return (exit status, every output line)."""
    r = subprocess.run(
        ["e2fsck", "-fn", _spec(image, offset)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    return r.returncode, r.stdout.splitlines()


def assert_fsck_clean(image: str | os.PathLike[str], offset: int = 0) -> None:
    """``e2fsck -fn`` exits 0 and prints nothing beyond its pass headers and summary line."""
    rc, lines = fsck_output(image, offset)
    extra = [ln for ln in lines if ln.strip() and not _FSCK_OK.match(ln)]
    text = b"\n".join(lines).decode(errors="replace")
    assert rc == 0 and not extra, f"e2fsck -fn {image} (offset {offset}): rc={rc}\n{text}"


# ------------------------------------------------------------------------------------------
# the model both sides are brought to
# ------------------------------------------------------------------------------------------

REG, DIR, LNK, CHR, BLK, FIFO, SOCK = "reg", "dir", "symlink", "chr", "blk", "fifo", "sock"
_KIND_OF_FMT = {
    stat.S_IFREG: REG, stat.S_IFDIR: DIR, stat.S_IFLNK: LNK, stat.S_IFCHR: CHR,
    stat.S_IFBLK: BLK, stat.S_IFIFO: FIFO, stat.S_IFSOCK: SOCK,
}


@dataclass
class Entry:
    """One name in a tree, as read from the source or from the image."""

    kind: str
    mode: int  # permission bits, 0o7777
    uid: int
    gid: int
    size: int
    mtime_ns: int
    #: identity of the inode (source: (st_dev, st_ino); image: inode number)
    ident: object = None
    nlink: int = 0
    target: bytes | None = None
    rdev: tuple[int, int] | None = None
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    #: source: path of the data file; image: None
    source: bytes | None = None
    #: source: data ranges (offset, length) by SEEK_DATA/SEEK_HOLE (None: whole file)
    segments: list[tuple[int, int]] | None = None
    #: image only
    atime_ns: int | None = None
    ctime_ns: int | None = None
    crtime_ns: int | None = None
    #: image only: leaf extents (logical block, physical block, length, initialized)
    extents: list[tuple[int, int, int, bool]] | None = None


def _seek_map(path: bytes, size: int) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        out: list[tuple[int, int]] = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if start >= size:
                break
            out.append((start, end - start))
            pos = end
        return out
    finally:
        os.close(fd)


def source_entry(path: bytes, st: os.stat_result | None = None) -> Entry:
    """Read one source path (not following symlinks) into an :class:`Entry`."""
    if st is None:
        st = os.lstat(path)
    kind = _KIND_OF_FMT[stat.S_IFMT(st.st_mode)]
    e = Entry(kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, 0, st.st_mtime_ns,
              ident=None if kind == DIR else (st.st_dev, st.st_ino))
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        names = []
    for n in names:
        e.xattrs[os.fsencode(n)] = os.getxattr(path, n, follow_symlinks=False)
    if kind == REG:
        e.size = st.st_size
        e.source = path
        if st.st_blocks * 512 < st.st_size:
            e.segments = _seek_map(path, st.st_size)
    elif kind == LNK:
        e.target = os.readlink(path)
        e.size = len(e.target)
    elif kind in (CHR, BLK):
        e.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return e


def expected_from_source(
    src: str | os.PathLike[str] | bytes, prefix: bytes = b"", *, include_root: bool = True
) -> dict[bytes, Entry]:
    """Every path of the source folder ``src`` as the image should hold it, keyed by the
    absolute path in the image (``prefix`` + the path below ``src``; ``b"/"`` for the root).
    Link counts are filled in by :func:`fill_link_counts`."""
    s = os.fsencode(src)
    out: dict[bytes, Entry] = {}
    top = prefix or b"/"
    if include_root:
        out[top] = source_entry(s, os.stat(s))
    stack = [(s, prefix)]
    while stack:
        d, p = stack.pop()
        with os.scandir(d) as it:
            for de in it:
                st = de.stat(follow_symlinks=False)
                e = source_entry(de.path, st)
                out[p + b"/" + de.name] = e
                if e.kind == DIR:
                    stack.append((de.path, p + b"/" + de.name))
    return out


def fill_link_counts(tree: dict[bytes, Entry]) -> None:
    """Expected ``i_links_count``: names per inode; folders 2 + subfolders (dir_nlink: 1 when
    the count would pass 65000)."""
    names: dict[object, int] = {}
    subdirs: dict[bytes, int] = {}
    for p, e in tree.items():
        if e.kind == DIR:
            if p != b"/":
                parent = p.rsplit(b"/", 1)[0] or b"/"
                subdirs[parent] = subdirs.get(parent, 0) + 1
        else:
            names[e.ident] = names.get(e.ident, 0) + 1
    for p, e in tree.items():
        if e.kind == DIR:
            n = 2 + subdirs.get(p, 0)
            e.nlink = 1 if n >= 65000 else n
        else:
            e.nlink = names[e.ident]


# ------------------------------------------------------------------------------------------
# debugfs
# ------------------------------------------------------------------------------------------


def debugfs_batch(image: str | os.PathLike[str], cmds: list[str], offset: int = 0) -> list[bytes]:
    """Run ``cmds`` in one ``debugfs -f`` process and return each command's output."""
    if not cmds:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".cmds", delete=False) as f:
        f.write("\n".join(cmds) + "\n")
        cmdfile = f.name
    try:
        r = subprocess.run(
            ["debugfs", "-f", cmdfile, _spec(image, offset)],
            capture_output=True,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    finally:
        os.unlink(cmdfile)
    assert r.returncode == 0, f"debugfs failed on {image}: {r.stderr.decode(errors='replace')}"
    out = r.stdout
    marks = []
    pos = 0
    for c in cmds:
        m = b"debugfs: " + c.encode() + b"\n"
        i = out.find(m, pos)
        assert i >= 0, f"debugfs output lost command {c!r}"
        marks.append((i, i + len(m)))
        pos = i + len(m)
    res = []
    for k, (_, start) in enumerate(marks):
        end = marks[k + 1][0] if k + 1 < len(marks) else len(out)
        res.append(out[start:end])
    return res


_LS_RE = re.compile(rb"^/(\d+)/(\d+)/(-?\d+)/(-?\d+)/([^/]*)/(\d*)/\n", re.M)
_TIME_RE = re.compile(rb"^[ \t]*(c|a|m|cr)time: 0x([0-9a-f]+):([0-9a-f]+)", re.M)
_EXT_RE = re.compile(
    rb"^[ \t]*(\d+)/[ \t]*(\d+)[ \t]+\d+/[ \t]*\d+[ \t]+(\d+)[ \t]*-[ \t]*(\d+)[ \t]+(\d+)"
    rb"(?:[ \t]*-[ \t]*(\d+))?[ \t]+(\d+)[ \t]*(Uninit)?",
    re.M,
)
_XATTR_RE = re.compile(rb"^  (\S+) \((\d+)\)", re.M)


def _decode_time(lo: int, extra: int) -> int:
    sec = lo - (1 << 32) if lo & 0x80000000 else lo
    sec += (extra & 3) << 32
    return sec * 1_000_000_000 + (extra >> 2)


def _field(text: bytes, name: bytes) -> int:
    m = re.search(rb"\b" + re.escape(name) + rb":\s*(-?\d+)", text)
    assert m, f"debugfs stat output has no {name!r}: {text[:300]!r}"
    return int(m.group(1))


def read_image_tree(image: str | os.PathLike[str], offset: int = 0) -> dict[bytes, Entry]:
    """Every path of the ext4 image as debugfs reports it (data stays in the image; see
    :func:`compare_data`)."""
    # 1) names: ls -p by inode number, one debugfs per directory level
    paths: dict[bytes, int] = {b"/": 2}
    modes: dict[int, int] = {2: stat.S_IFDIR}
    level = [(b"", 2)]
    while level:
        outs = debugfs_batch(image, [f"ls -p <{ino}>" for _, ino in level], offset)
        nxt = []
        for (prefix, _), out in zip(level, outs, strict=True):
            for m in _LS_RE.finditer(out):
                ino, mode, name = int(m.group(1)), int(m.group(2), 8), m.group(5)
                if name in (b".", b"..") or ino == 0:
                    continue
                p = prefix + b"/" + name
                paths[p] = ino
                modes[ino] = mode
                if stat.S_ISDIR(mode):
                    nxt.append((p, ino))
        level = nxt
    # 2) stat and extents of every inode, one process
    inos = sorted(set(paths.values()))
    cmds = []
    for ino in inos:
        cmds.append(f"stat <{ino}>")
        if stat.S_ISREG(modes[ino]) or stat.S_ISLNK(modes[ino]) or stat.S_ISDIR(modes[ino]):
            cmds.append(f"ex <{ino}>")
    outs = dict(zip(cmds, debugfs_batch(image, cmds, offset), strict=True))
    by_ino: dict[int, Entry] = {}
    ea_cmds: list[tuple[int, bytes, str, str]] = []
    tmpdir = tempfile.mkdtemp(prefix="ext4check-")
    for ino in inos:
        st_out = outs[f"stat <{ino}>"]
        fmt = stat.S_IFMT(modes[ino])
        m_mode = re.search(rb"Mode:\s*([0-7]+)", st_out)
        assert m_mode, f"inode {ino}: no mode in {st_out[:200]!r}"
        e = Entry(
            _KIND_OF_FMT[fmt], int(m_mode.group(1), 8) & 0o7777,
            # debugfs prints 32-bit ids as signed numbers
            _field(st_out, b"User") & 0xFFFFFFFF, _field(st_out, b"Group") & 0xFFFFFFFF,
            _field(st_out, b"Size"), 0,
            ident=ino, nlink=_field(st_out, b"Links"),
        )
        times = {m.group(1): _decode_time(int(m.group(2), 16), int(m.group(3), 16))
                 for m in _TIME_RE.finditer(st_out)}
        e.mtime_ns = times[b"m"]
        e.atime_ns, e.ctime_ns, e.crtime_ns = times.get(b"a"), times.get(b"c"), times.get(b"cr")
        xa = st_out.split(b"Extended attributes:\n", 1)
        if len(xa) == 2:
            for m in _XATTR_RE.finditer(xa[1].split(b"Inode checksum", 1)[0]):
                name = m.group(1)
                fn = os.path.join(tmpdir, f"{ino}-{len(ea_cmds)}")
                qn = name.decode()
                ea_cmds.append((ino, name, fn, f"ea_get -f {fn} <{ino}> {qn}"))
        if e.kind in (CHR, BLK):
            m = re.search(rb"Device major/minor number: (\d+):(\d+)", st_out)
            assert m, f"inode {ino}: no device number in {st_out!r}"
            e.rdev = (int(m.group(1)), int(m.group(2)))
        ex_out = outs.get(f"ex <{ino}>")
        if ex_out is not None:
            exts = []
            for m in _EXT_RE.finditer(ex_out):
                lvl, depth = int(m.group(1)), int(m.group(2))
                if lvl != depth:
                    continue
                lstart, lend, pstart = int(m.group(3)), int(m.group(4)), int(m.group(5))
                length = int(m.group(7))
                assert lend - lstart + 1 == length, f"inode {ino}: odd extent line {m.group(0)!r}"
                exts.append((lstart, pstart, length, m.group(8) is None))
            e.extents = exts
        if e.kind == LNK:
            m = re.search(rb'Fast link dest: "', st_out)
            if m:
                e.target = st_out[m.end(): m.end() + e.size]
        by_ino[ino] = e
    # 3) xattr values, one process
    outs3 = debugfs_batch(image, [c for *_, c in ea_cmds], offset)
    for (ino, name, fn, _), out in zip(ea_cmds, outs3, strict=True):
        assert os.path.exists(fn), f"debugfs ea_get <{ino}> {name!r} failed: {out!r}"
        with open(fn, "rb") as f:
            by_ino[ino].xattrs[name] = f.read()
        os.unlink(fn)
    os.rmdir(tmpdir)
    return {p: by_ino[ino] for p, ino in paths.items()}


def block_size(image: str | os.PathLike[str], offset: int = 0) -> int:
    """The filesystem block size, from ``debugfs stats``."""
    (out,) = debugfs_batch(image, ["stats"], offset)
    return _field(out, b"Block size")


# ------------------------------------------------------------------------------------------
# comparisons
# ------------------------------------------------------------------------------------------


def acl_meaning(value: bytes) -> list[tuple[int, int, int | None]] | bytes:
    """A POSIX ACL xattr value (VFS format, version 2) as sorted (tag, perm, id) entries, the
    id kept only for named users and groups (``getfacl``'s meaning).  Other bytes unchanged."""
    if len(value) < 4 or struct.unpack_from("<I", value)[0] != 2 or (len(value) - 4) % 8:
        return value
    out = []
    for off in range(4, len(value), 8):
        tag, perm, ident = struct.unpack_from("<HHI", value, off)
        out.append((tag, perm, ident if tag in (2, 8) else None))
    return sorted(out)


def _xattr_meaning(x: Mapping[bytes, bytes]) -> dict[bytes, object]:
    return {k: acl_meaning(v) if k.startswith(b"system.posix_acl_") else v for k, v in x.items()}


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, n in sorted(ranges):
        if n <= 0:
            continue
        if out and s <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], s + n - out[-1][0])
        else:
            out.append([s, n])
    return [(s, n) for s, n in out]


def compare_data(
    exp: Entry, got: Entry, image_fd: int, offset: int, bs: int, *, zero_blocks_may_be_holes: bool
) -> list[str]:
    """Compare a regular file's data and hole map.  Returns problems (empty: equal)."""
    problems: list[str] = []
    assert exp.source is not None
    segs = exp.segments if exp.segments is not None else ([(0, exp.size)] if exp.size else [])
    want = _merge((s // bs, -(-(s + n) // bs) - s // bs) for s, n in segs)
    mapped = _merge((lb, n) for lb, _, n, init in got.extents or [] if init)
    if zero_blocks_may_be_holes:
        covered = _merge(want + mapped)
        if covered != want:
            problems.append(f"blocks mapped outside the source's data: {mapped} vs {want}")
    elif mapped != want:
        problems.append(f"data blocks (logical block, count) {mapped}, source has {want}")
    phys = sorted((lb, pb, n) for lb, pb, n, init in got.extents or [] if init)

    def image_bytes(off: int, n: int) -> bytes:
        buf = bytearray(n)
        first, last = off // bs, (off + n - 1) // bs
        for lb, pb, cnt in phys:
            if lb + cnt <= first or lb > last:
                continue
            s = max(lb * bs, off)
            e = min((lb + cnt) * bs, off + n)
            data = os.pread(image_fd, e - s, offset + pb * bs + (s - lb * bs))
            buf[s - off: s - off + len(data)] = data
        return bytes(buf)

    chunk = 8 << 20
    fd = os.open(exp.source, os.O_RDONLY)
    try:
        for s, n in segs:
            pos = s
            while pos < s + n:
                k = min(chunk, s + n - pos)
                a = os.pread(fd, k, pos)
                b = image_bytes(pos, k)
                if a != b:
                    i = next(j for j in range(k) if a[j : j + 1] != b[j : j + 1])
                    problems.append(f"data differs at byte {pos + i}")
                    return problems
                pos += k
    finally:
        os.close(fd)
    return problems


#: what ``mkfs.ext4 -d`` (1.47.0) does not keep, as keyword arguments of assert_tree_matches
MKFS_LOSSES: dict[str, object] = {
    "time_mode": "seconds32",
    "derived_times": None,
    "zero_blocks_may_be_holes": True,
    "check_root": False,
}


def assert_tree_matches(image: str | os.PathLike[str], source: object, offset: int = 0,
                        **kw: object) -> dict[bytes, Entry]:
    """The image holds exactly the source tree (see :func:`tree_differences` for the
    parameters).  Returns the image tree read back."""
    problems, got = tree_differences(image, source, offset, **kw)  # type: ignore[arg-type]
    assert not problems, f"{image}: {len(problems)} differences:\n" + "\n".join(problems[:60])
    return got


def tree_differences(
    image: str | os.PathLike[str],
    source: str | os.PathLike[str] | bytes | dict[bytes, Entry],
    offset: int = 0,
    *,
    time_mode: str = "exact",
    derived_times: str | None = "mtime",
    zero_blocks_may_be_holes: bool = False,
    check_root: bool = True,
    overrides: Mapping[bytes, Mapping[str, int]] | None = None,
    clamp_mtime_ns: int | None = None,
    all_root: bool = False,
    ignore: Iterable[bytes] = (b"/lost+found",),
) -> tuple[list[str], dict[bytes, Entry]]:
    """Every difference between the image and the source tree, and the image tree read back.

    ``source``: a folder (read here with ``os.lstat`` etc.) or a dict from
    :func:`expected_from_source` (possibly merged and edited, e.g. for ``contents``).
    ``time_mode``: ``"exact"`` (nanoseconds, 34-bit seconds) or ``"seconds32"`` (what mkfs.ext4
    -d keeps: the low 32 bits of the seconds).  ``derived_times``: ``"mtime"`` requires
    atime = ctime = crtime = mtime; ``None`` skips them.  ``overrides``: image path -> fields
    (``mode``, ``uid``, ``gid``) replacing the source's.  ``ignore``: paths the writer adds
    (lost+found: checked to be a root-owned 0700 folder unless the source has one).
    ``zero_blocks_may_be_holes``: accept holes where the source has zero-filled data blocks
    (mkfs.ext4 -d makes them; pydiskimg must not).  ``check_root``: compare the root folder's
    own mode, owner, times and xattrs.  ``clamp_mtime_ns``/``all_root``: what the scan options
    of the same names do to the expected values.  :data:`MKFS_LOSSES` holds the settings for
    an image made by mkfs.ext4 -d.
    """
    exp = dict(expected_from_source(source)) if not isinstance(source, dict) else dict(source)
    got = read_image_tree(image, offset)
    fill_link_counts(exp)
    for p in ignore:
        if p not in exp and p in got:
            lf = got.pop(p)
            assert lf.kind == DIR and lf.mode == 0o700 and lf.uid == 0 and lf.gid == 0, (
                f"{p!r}: {lf}"
            )
            # the writer's own folder is a subfolder of its parent
            exp[p.rsplit(b"/", 1)[0] or b"/"].nlink += 1
    for p, ov in (overrides or {}).items():
        for k, v in ov.items():
            setattr(exp[p], k, v)
    problems: list[str] = []
    missing = sorted(set(exp) - set(got))
    extra = sorted(set(got) - set(exp))
    if missing:
        problems.append(f"missing in image: {missing[:20]}")
    if extra:
        problems.append(f"not in source: {extra[:20]}")
    bs = block_size(image, offset)
    fd = os.open(image, os.O_RDONLY)
    try:
        for p in sorted(set(exp) & set(got)):
            e, g = exp[p], got[p]
            if p == b"/" and not check_root:
                continue
            where = repr(p)
            if e.kind != g.kind:
                problems.append(f"{where}: type {g.kind}, expected {e.kind}")
                continue
            uid, gid = (0, 0) if all_root else (e.uid, e.gid)
            for name, want, have in (
                ("mode", oct(e.mode), oct(g.mode) if g.kind != LNK else oct(e.mode)),
                ("uid", uid, g.uid), ("gid", gid, g.gid), ("links", e.nlink, g.nlink),
            ):
                if want != have:
                    problems.append(f"{where}: {name} {have}, expected {want}")
            if e.kind in (REG, LNK) and e.size != g.size:
                problems.append(f"{where}: size {g.size}, expected {e.size}")
            if e.kind == LNK:
                target = g.target
                if target is None:  # slow symlink: the target is in its first block
                    assert g.extents, f"{where}: symlink without data"
                    target = os.pread(fd, g.size, offset + g.extents[0][1] * bs)
                if target != e.target:
                    problems.append(f"{where}: symlink target {target!r}, expected {e.target!r}")
            if e.kind in (CHR, BLK) and e.rdev != g.rdev:
                problems.append(f"{where}: device {g.rdev}, expected {e.rdev}")
            if _xattr_meaning(e.xattrs) != _xattr_meaning(g.xattrs):
                problems.append(f"{where}: xattrs {g.xattrs!r}, expected {e.xattrs!r}")
            want_m = e.mtime_ns
            if clamp_mtime_ns is not None:
                want_m = min(want_m, clamp_mtime_ns)
            if time_mode == "exact":
                if g.mtime_ns != want_m:
                    problems.append(f"{where}: mtime {g.mtime_ns}, expected {want_m}")
            else:
                s = want_m // 1_000_000_000
                s = (s + (1 << 31)) % (1 << 32) - (1 << 31)
                if g.mtime_ns // 1_000_000_000 != s:
                    problems.append(f"{where}: mtime {g.mtime_ns}, expected seconds {s}")
            if derived_times == "mtime":
                for name, t in (("atime", g.atime_ns), ("ctime", g.ctime_ns),
                                ("crtime", g.crtime_ns)):
                    if t != g.mtime_ns:
                        problems.append(f"{where}: {name} {t}, expected the mtime {g.mtime_ns}")
            if e.kind == REG:
                problems += [f"{where}: {x}" for x in compare_data(
                    e, g, fd, offset, bs, zero_blocks_may_be_holes=zero_blocks_may_be_holes)]
    finally:
        os.close(fd)
    # hardlink groups: the same partition of names on both sides
    groups_e: dict[object, set[bytes]] = {}
    groups_g: dict[object, set[bytes]] = {}
    for p in set(exp) & set(got):
        if exp[p].kind != DIR:
            groups_e.setdefault(exp[p].ident, set()).add(p)
            groups_g.setdefault(got[p].ident, set()).add(p)
    pe = sorted(sorted(s) for s in groups_e.values())
    pg = sorted(sorted(s) for s in groups_g.values())
    if pe != pg:
        diff = [s for s in pg if s not in pe][:5]
        problems.append(f"hardlink groups differ, e.g. image has {diff}")
    return problems, got


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a (possibly sparse, large) file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
