"""The Linux kernel (libguestfs appliance) mounts a filesystem pydiskimg wrote from the torture
tree, reads it back equal to the source (types, modes, owners, sizes, data, link targets,
devices, xattrs, mtimes to the nanosecond), takes a write, and e2fsck -fn is silent after the
unmount.  Slow: one appliance launch."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import ext4check
import pytest
from guestcheck import launch

from pydiskimg.ext4 import make_filesystem
from pydiskimg.tree import scan


@pytest.mark.slow
def test_kernel_reads_torture_tree(tmp_path: Path, _torture_base: Path) -> None:
    src = _torture_base
    img = tmp_path / "k.img"
    make_filesystem(scan(src), img)
    g = launch(img)
    try:
        g.mount("/dev/sda", "/")
        checked = 0
        for dirpath, dirnames, filenames in os.walk(src):
            names = []
            for name in sorted(dirnames + filenames):
                try:  # the bindings pass str: names that are not UTF-8 are checked by debugfs
                    name.encode("utf-8")
                    dirpath.encode("utf-8")
                except UnicodeEncodeError:
                    continue
                names.append(name)
            if not names:
                continue
            rdir = "/" + os.path.relpath(dirpath, src) if dirpath != str(src) else "/"
            rdir = os.path.normpath(rdir)
            stats = g.lstatnslist(rdir, names)  # one call per folder
            xattrs = g.lxattrlist(rdir, names)
            xi = 0
            for name, gs in zip(names, stats, strict=True):
                path = os.path.join(dirpath, name)
                rel = os.path.join(rdir, name)
                st = os.lstat(path)
                assert gs["st_mode"] == st.st_mode, rel
                assert (gs["st_uid"], gs["st_gid"]) == (st.st_uid, st.st_gid), rel
                assert gs["st_mtime_sec"] * 10**9 + gs["st_mtime_nsec"] == st.st_mtime_ns, rel
                if stat.S_ISREG(st.st_mode):
                    assert gs["st_size"] == st.st_size, rel
                elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    assert gs["st_rdev"] == st.st_rdev, rel
                # lxattrlist: per name a count entry ("" name, count as value), then the xattrs
                head = xattrs[xi]
                assert head["attrname"] == "", (rel, head)
                n = int(head["attrval"].rstrip(b"\0"))
                got_x = {x["attrname"]: x["attrval"] for x in xattrs[xi + 1 : xi + 1 + n]}
                xi += 1 + n
                want_x = {k: os.getxattr(path, k, follow_symlinks=False)
                          for k in os.listxattr(path, follow_symlinks=False)}
                assert set(got_x) == set(want_x), rel
                for k, v in want_x.items():
                    if not k.startswith("system.posix_acl"):
                        assert got_x[k] == v, (rel, k)
                checked += 1
        # data and link targets of a few entries of each kind
        for rel in ("/files/tiny", "/files/multi-block", "/files/zeros-not-hole",
                    "/sparse/holes", "/sparse/depth2", "/big"):
            path = os.path.join(src, rel.lstrip("/"))
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    want = hashlib.sha256(f.read()).hexdigest()
                assert g.checksum("sha256", rel) == want, rel
        for rel in ("/links/short", "/links/len60", "/links/long", "/links/dangling"):
            assert g.readlink(rel).encode() == os.readlink(os.path.join(src, rel.lstrip("/"))).encode()
        assert checked > 20
        # a write through the kernel keeps the filesystem clean
        g.write("/files/new-by-kernel", b"written by Linux\n")
        g.mkdir("/files/newdir")
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
    ext4check.assert_fsck_clean(img)
