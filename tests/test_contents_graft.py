"""contents grafting, judged by the seed's own shell loop run with rsync on a real folder."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import T_NS, _acl, _write, set_tree_mtimes

from pydiskimg.contents import apply_contents, load_contents_json, parse_chmod, validate_entries
from pydiskimg.errors import SourceError, UsageError
from pydiskimg.tree import Kind, Tree, scan

SDE = 1_650_000_000

#: make-disk-image.nix's preVM loop, verbatim but for the array set-up
SEED_LOOP = r"""
set -e
umask 022
for ((i = 0; i < ${#targets_[@]}; i++)); do
  source="${sources_[$i]}"
  target="${targets_[$i]}"
  mode="${modes_[$i]}"

  if [ -n "$mode" ]; then
    rsync_chmod_flags="--chmod=$mode"
  else
    rsync_chmod_flags=""
  fi
  rsync_flags="-a --no-o --no-g $rsync_chmod_flags"
  if [[ "$source" =~ '*' ]]; then
    mkdir -p $root/$target
    for fn in $source; do
      rsync $rsync_flags "$fn" $root/$target/
    done
  else
    mkdir -p $root/$(dirname $target)
    if [ -e $root/$target ]; then
      echo "duplicate entry $target -> $source"
      exit 1
    elif [ -d $source ]; then
      rsync $rsync_flags $source/ $root/$target
    else
      rsync $rsync_flags $source $root/$target
    fi
  fi
done
"""


def run_seed_loop(root: Path, entries: list[dict[str, str]]) -> subprocess.CompletedProcess[str]:
    def arr(key: str) -> str:
        return " ".join(shlex.quote(e.get(key, "")) for e in entries)

    script = (f"root={shlex.quote(str(root))}\n"
              f"sources_=({arr('source')})\ntargets_=({arr('target')})\nmodes_=({arr('mode')})\n"
              + SEED_LOOP)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """Things to graft: a file, a folder with every kind of entry, files for globs."""
    s = tmp_path / "src"
    s.mkdir()
    _write(s / "motd", b"welcome\n", 0o600)
    site = s / "site"
    (site / "sub").mkdir(parents=True)
    _write(site / "index.html", b"<p>hi</p>", 0o644)
    _write(site / "run.sh", b"#!/bin/sh\n", 0o4755)
    _write(site / "sub" / "data", b"d" * 5000, 0o640)
    os.symlink("index.html", site / "link")
    os.mkfifo(site / "fifo")
    os.chmod(site / "fifo", 0o644)
    keys = s / "keys"
    keys.mkdir()
    _write(keys / "id_a.pub", b"ssh-ed25519 A", 0o644)
    _write(keys / "id_b.pub", b"ssh-ed25519 B", 0o644)
    _write(keys / ".hidden", b"not matched by *", 0o644)
    (keys / "dir.pub").mkdir()
    _write(keys / "dir.pub" / "x", b"x", 0o644)
    os.symlink("motd", s / "motd-link")
    set_tree_mtimes(s, T_NS - 10**9)
    os.utime(site / "run.sh", ns=(T_NS, T_NS + 123))
    return s


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "usr" / "bin").mkdir(parents=True)
    (r / "home" / "alice").mkdir(parents=True)
    os.symlink("usr/bin", r / "bin")
    _write(r / "etc" / "passwd", b"root:x:0:0::/root:/bin/sh\n# comment\n"
           b"alice:x:1000:100::/home/alice:/bin/sh\nwww:x:54321:54321::/srv:/bin/false\n")
    _write(r / "etc" / "group", b"root:x:0:\nusers:x:100:alice\nwww:x:54321:\n")
    _write(r / "home" / "alice" / "README", b"hi")
    set_tree_mtimes(r, T_NS)
    return r


def shape(tree: Tree, *, mtimes_of: set[bytes] | None = None) -> dict[bytes, tuple[object, ...]]:
    out = {}
    for p, n in tree.walk():
        mt = n.mtime_ns if mtimes_of is None or p in mtimes_of else None
        out[p] = (n.kind, oct(n.mode) if n.kind is not Kind.SYMLINK else None, n.size
                  if n.kind is not Kind.DIR else None, n.target, mt)
    return out


CASES = {
    "file": [{"source": "motd", "target": "/etc/motd", "mode": "644"}],
    "file-no-mode": [{"source": "motd", "target": "/var/lib/x/motd"}],
    "dir-octal": [{"source": "site", "target": "/srv/www/site", "mode": "750"}],
    "dir-no-mode": [{"source": "site", "target": "/srv/site"}],
    "dir-D-F": [{"source": "site", "target": "/srv/site", "mode": "D2755,F644"}],
    "dir-symbolic": [{"source": "site", "target": "/srv/site", "mode": "u+x,go-w,o-r"}],
    "dir-X": [{"source": "site", "target": "/srv/site", "mode": "a+rX"}],
    "glob-new": [{"source": "keys/*.pub", "target": "/home/alice/.ssh", "mode": "600"}],
    "glob-existing": [{"source": "keys/*", "target": "/etc"}],
    "symlink-source": [{"source": "motd-link", "target": "/etc/motd"}],
    "through-symlink": [{"source": "motd", "target": "/bin/motd", "mode": "755"}],
    "several": [{"source": "motd", "target": "/a/b/c/motd"},
                {"source": "site", "target": "/a/b/site", "mode": "700"},
                {"source": "keys/id_*", "target": "/a/b/c"}],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_graft_like_the_seed(case: str, sources: Path, rootfs: Path, tmp_path: Path) -> None:
    """The tree after apply_contents equals the folder the seed's rsync loop produces."""
    if shutil.which("rsync") is None:
        pytest.fail("rsync (the seed's copy tool, the reference here) is not installed")
    entries = [{**e, "source": str(sources / e["source"])} for e in CASES[case]]
    staged = tmp_path / "staged"
    subprocess.run(["cp", "-a", str(rootfs), str(staged)], check=True)
    r = run_seed_loop(staged, entries)
    assert r.returncode == 0, r.stdout + r.stderr
    tree = scan(rootfs)
    apply_contents(tree, entries, tree_root=str(rootfs), timestamp=SDE)
    ref = scan(staged)
    # mtimes: what rsync -a copied keeps its source's; folders the loop created or changed
    # get the time of the copy there and SOURCE_DATE_EPOCH here (checked below)
    base = {p for p, _ in scan(rootfs).walk()}
    copied = {p for p, n in ref.walk() if p not in base and n.mtime_ns < T_NS + 10**9}
    assert shape(tree, mtimes_of=copied) == shape(ref, mtimes_of=copied)
    made = {p for p, n in ref.walk() if p not in base and p not in copied}
    for p in made:
        n = tree.lookup(p)
        assert n is not None and n.kind is Kind.DIR, p
        assert (n.mode, n.uid, n.gid, n.mtime_ns) == (0o755, 0, 0, SDE * 10**9), p
    # rsync --no-o --no-g: grafted files belong to root
    for p in copied:
        n = tree.lookup(p)
        assert n is not None and (n.uid, n.gid) == (0, 0), p


def test_owners_through_the_trees_passwd(sources: Path, rootfs: Path) -> None:
    tree = scan(rootfs)
    apply_contents(tree, [
        {"source": str(sources / "site"), "target": "/srv/site", "user": "www", "group": "www"},
        {"source": str(sources / "keys/*.pub"), "target": "/home/alice/.ssh", "mode": "600",
         "user": "alice", "group": "users"},
        {"source": str(sources / "motd"), "target": "/etc/motd", "user": "4242", "group": "77"},
    ], tree_root=str(rootfs), timestamp=SDE)
    for p, n in tree.walk():
        if p.startswith(b"/srv/site"):
            assert (n.uid, n.gid) == (54321, 54321), p  # symlinks too, as chown -R does
        elif p.startswith(b"/home/alice/.ssh"):
            assert (n.uid, n.gid) == (1000, 100), p  # the folder mkdir -p made too (chown -R)
        elif p == b"/etc/motd":
            assert (n.uid, n.gid) == (4242, 77)
        else:
            assert (n.uid, n.gid) == (os.getuid(), os.getgid()), p
    link = tree.lookup("/srv/site/link")
    assert link is not None and link.kind is Kind.SYMLINK and link.uid == 54321


def test_passwd_from_contents_itself(sources: Path, tmp_path: Path) -> None:
    """Names resolve in the tree after grafting: contents may bring /etc/passwd."""
    root = tmp_path / "bare"
    root.mkdir()
    extra = tmp_path / "etc"
    extra.mkdir()
    _write(extra / "passwd", b"svc:x:700:800::/:/bin/false\n")
    _write(extra / "group", b"svc:x:800:\n")
    tree = scan(root)
    apply_contents(tree, [
        {"source": str(sources / "motd"), "target": "/opt/motd", "user": "svc", "group": "svc"},
        {"source": str(extra), "target": "/etc"},
    ], tree_root=None, timestamp=0)
    n = tree.lookup("/opt/motd")
    assert n is not None and (n.uid, n.gid) == (700, 800)


def test_owner_names_through_symlinked_etc(sources: Path, tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "real-etc").mkdir(parents=True)
    _write(root / "real-etc" / "passwd", b"bob:x:1234:1234::/:/bin/sh\n")
    _write(root / "real-etc" / "group", b"bob:x:1235:\n")
    os.symlink("real-etc", root / "etc")
    tree = scan(root)
    apply_contents(tree, [{"source": str(sources / "motd"), "target": "/motd", "user": "bob",
                           "group": "bob"}], tree_root=str(root), timestamp=0)
    n = tree.lookup("/motd")
    assert n is not None and (n.uid, n.gid) == (1234, 1235)


@pytest.mark.parametrize(("entries", "exc", "message"), [
    ([{"source": "motd", "target": "/x", "user": "nobody-here", "group": "root"}],
     UsageError, "contents entry 0 (/x): unknown user 'nobody-here' (not in the tree's /etc/passwd"),
    ([{"source": "motd", "target": "/x", "user": "root", "group": "nogroup"}],
     UsageError, "unknown group 'nogroup' (not in the tree's /etc/group"),
    ([{"source": "motd", "target": "/etc/passwd"}],
     UsageError, "duplicate entry /etc/passwd -> motd"),
    ([{"source": "motd", "target": "/m"}, {"source": "site", "target": "/m"}],
     UsageError, "duplicate entry /m -> site"),
    ([{"source": "keys/*", "target": "/k"}, {"source": "motd", "target": "/k/id_a.pub"}],
     UsageError, "duplicate entry /k/id_a.pub -> motd"),
    ([{"source": "keys/*", "target": "/k"}, {"source": "keys/id_a*", "target": "/k"}],
     UsageError, "duplicate entry /k/id_a.pub -> "),
    ([{"source": "motd", "target": "/"}], UsageError, "duplicate entry / -> motd"),
    ([{"source": "motd", "target": "../escape"}], UsageError, "contains '..'"),
    ([{"source": "motd", "target": "/a/../../b"}], UsageError, "contains '..'"),
    ([{"source": "motd", "target": "/" + "n" * 256}], UsageError, "name of 256 bytes"),
    ([{"source": "nothing-*", "target": "/x"}], UsageError, "matches nothing"),
    ([{"source": "missing", "target": "/x"}], SourceError, "does not exist"),
    ([{"source": "motd", "target": "/etc/passwd/x"}], UsageError, "exists and is not a folder"),
    ([{"source": "motd", "target": "/x", "mode": "9z"}], UsageError, "key 'mode'"),
])
def test_graft_errors(entries: list[dict[str, str]], exc: type[Exception], message: str,
                      sources: Path, rootfs: Path) -> None:
    tree = scan(rootfs)
    with pytest.raises(exc) as info:
        apply_contents(tree, entries, tree_root=None, timestamp=0, base_dir=sources)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_no_passwd_in_tree(sources: Path, tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    tree = scan(tmp_path / "e")
    with pytest.raises(UsageError, match="unknown user 'alice': the tree has no /etc/passwd"):
        apply_contents(tree, [{"source": "motd", "target": "/m", "user": "alice",
                               "group": "users"}], tree_root=None, timestamp=0, base_dir=sources)
    # numeric ids need no table
    tree = scan(tmp_path / "e")
    apply_contents(tree, [{"source": "motd", "target": "/m", "user": "5", "group": "6"}],
                   tree_root=None, timestamp=0, base_dir=sources)
    n = tree.lookup("/m")
    assert n is not None and (n.uid, n.gid) == (5, 6)


def test_mode_updates_access_acl(tmp_path: Path) -> None:
    src = tmp_path / "f"
    _write(src, b"x", 0o644)
    os.setxattr(src, "system.posix_acl_access", _acl([
        (1, 6, 0xFFFFFFFF), (2, 6, 1000), (4, 4, 0xFFFFFFFF), (0x10, 6, 0xFFFFFFFF),
        (0x20, 4, 0xFFFFFFFF)]))
    # the kernel's own answer: chmod a copy and read its ACL back
    ref = tmp_path / "ref"
    subprocess.run(["cp", "-a", str(src), str(ref)], check=True)
    os.chmod(ref, 0o705)
    want = os.getxattr(ref, "system.posix_acl_access")
    (tmp_path / "r").mkdir()
    tree = scan(tmp_path / "r")
    apply_contents(tree, [{"source": str(src), "target": "/f", "mode": "705"}], tree_root=None,
                   timestamp=0)
    n = tree.lookup("/f")
    assert n is not None and n.mode == 0o705
    got = dict(n.xattrs)[b"system.posix_acl_access"]

    def entries(v: bytes) -> list[tuple[int, int, int]]:
        return [struct.unpack_from("<HHI", v, o) for o in range(4, len(v), 8)]

    assert entries(got) == entries(want)


def test_chmod_parser_against_chmod(tmp_path: Path) -> None:
    """Symbolic modes as coreutils chmod applies them (umask 0), octal modes replace all."""
    f = tmp_path / "f"
    f.write_text("")
    d = tmp_path / "d"
    d.mkdir()
    for spec in ("u+x,go-w", "a+rX", "g=u", "o=", "u-s,g+s", "+t", "ug+rwx,o-rwx", "a-x"):
        for start in (0o644, 0o755, 0o4711, 0o600):
            for path, is_dir in ((f, False), (d, True)):
                os.chmod(path, start)
                subprocess.run(["sh", "-c", f"umask 0; chmod {spec} {path}"], check=True)
                want = os.stat(path).st_mode & 0o7777
                assert parse_chmod(spec)(start, is_dir) == want, (spec, oct(start), is_dir)
    assert parse_chmod("755")(0o4644, False) == 0o755
    assert parse_chmod("D755,F644")(0o600, True) == 0o755
    assert parse_chmod("D755,F644")(0o600, False) == 0o644


def test_load_contents_json(tmp_path: Path) -> None:
    good = tmp_path / "c.json"
    good.write_text(json.dumps([{"source": "a", "target": "/a", "mode": "644"},
                                {"source": "b/*", "target": "/b", "user": "u", "group": "g"}]))
    data = load_contents_json(good)
    assert data[1]["user"] == "u" and len(validate_entries(data)) == 2
    cases = [
        ("not json", "not valid JSON"),
        ('{"source": "a"}', "expected a JSON list of objects, found dict"),
        ('["x"]', "entry 0: expected an object, found str"),
        ('[{"source": "a", "target": "/a"}, {"source": "a", "target": "/b", "owner": 1}]',
         "entry 1: unknown key 'owner'"),
        ('[{"target": "/a"}]', "entry 0: key 'source' is required"),
        ('[{"source": "a"}]', "entry 0: key 'target' is required"),
        ('[{"source": 5, "target": "/a"}]', "entry 0: key 'source': expected a string"),
        ('[{"source": "a", "target": "/a", "user": "u"}]', "entry 0: set both 'user' and 'group'"),
        ('[{"source": "a", "target": "/a", "mode": "rwx"}]', "entry 0: key 'mode'"),
        ('[{"source": "a", "target": "../a"}]', "entry 0: target '../a' contains '..'"),
    ]
    for text, message in cases:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UsageError) as info:
            load_contents_json(bad)
        assert str(info.value).startswith(f"{bad}: "), str(info.value)
        assert message in str(info.value), (text, str(info.value))
    with pytest.raises(UsageError, match="cannot read"):
        load_contents_json(tmp_path / "missing.json")


def test_contents_image_reads_back(sources: Path, rootfs: Path, tmp_path: Path) -> None:
    """Grafted tree -> ext4 image -> debugfs equals the seed's rsync staging folder, with the
    owners the seed's chown -R would give through the tree's passwd/group."""
    import ext4check as chk

    from pydiskimg.ext4 import Ext4Options, make_filesystem

    if shutil.which("rsync") is None:
        pytest.fail("rsync (the seed's copy tool, the reference here) is not installed")
    entries = [
        {"source": str(sources / "motd"), "target": "/etc/motd", "mode": "644",
         "user": "root", "group": "root"},
        {"source": str(sources / "site"), "target": "/srv/www/site", "mode": "750",
         "user": "www", "group": "www"},
        {"source": str(sources / "keys/*.pub"), "target": "/home/alice/.ssh", "mode": "600",
         "user": "alice", "group": "users"},
        {"source": str(sources / "motd-link"), "target": "/bin/motd"},
    ]
    staged = tmp_path / "staged"
    subprocess.run(["cp", "-a", str(rootfs), str(staged)], check=True)
    r = run_seed_loop(staged, entries)
    assert r.returncode == 0, r.stdout + r.stderr
    tree = scan(rootfs)
    apply_contents(tree, entries, tree_root=str(rootfs), timestamp=SDE)
    img = tmp_path / "c.img"
    make_filesystem(tree, img, options=Ext4Options(timestamp=SDE))
    chk.assert_fsck_clean(img)

    exp = chk.expected_from_source(staged)
    before = chk.expected_from_source(rootfs)
    for p, e in exp.items():
        if p in before:  # folders the loop wrote into keep their own mtime here
            e.mtime_ns = before[p].mtime_ns
        elif e.kind == chk.DIR and e.mtime_ns > T_NS:  # made by mkdir -p: SOURCE_DATE_EPOCH
            e.mtime_ns = SDE * 10**9
        for prefix, ids in ((b"/srv/www/site", (54321, 54321)), (b"/home/alice/.ssh", (1000, 100)),
                            (b"/etc/motd", (0, 0))):
            if p == prefix or p.startswith(prefix + b"/"):
                e.uid, e.gid = ids
    chk.assert_tree_matches(img, exp)
