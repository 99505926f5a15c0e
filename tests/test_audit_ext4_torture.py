"""The ext4 reader on ``mkfs.ext4 -d`` of the torture tree (every file type, odd names, holes,
depth-2 extent trees, a 3000-entry folder, hard links, xattrs and ACLs, devices, 5 GiB sparse
file): every path, type, mode, owner, size, mtime (as mke2fs 1.47.0 stores it: 32-bit seconds),
link target, device and xattr name agrees with the source tree (os.lstat and
friends), and file contents hash the same."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from test_audit_images import FAKE_TIME, FS_UUID, needs_tools, run

from pydiskimg.audit.ext4 import ext4_files
from pydiskimg.audit.source import open_image
from pydiskimg.ext4.read import Ext4

pytestmark = needs_tools

_KIND = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chr",
         stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock"}


def test_reader_agrees_with_the_torture_tree(torture_tree: Path, tmp_path: Path) -> None:
    img = tmp_path / "t.img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-U", FS_UUID, "-d", str(torture_tree), str(img),
        env=dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME, LC_ALL="C"))
    with open_image(img) as src:
        files = {os.fsencode(f["path"]) if "\\" not in f["path"] else None: f
                 for f in ext4_files(src, 0, src.size, hashes=False)}
        fs = Ext4(src, 0, src.size)
        paths = dict(fs.walk())
        assert fs.lookup(b"/hard/other/h3") == paths[b"/hard/other/h3"]
        root = os.fsencode(torture_tree)
        seen = 0
        inode_of: dict[tuple[int, int], int] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                full = os.path.join(dirpath, n)
                rel = b"/" + os.path.relpath(full, root)
                st = os.lstat(full)
                ino = paths[rel]
                inode = fs.inode(ino)
                assert inode.kind == _KIND[stat.S_IFMT(st.st_mode)], rel
                assert inode.mode & 0o7777 == stat.S_IMODE(st.st_mode), rel
                assert (inode.uid, inode.gid) == (st.st_uid, st.st_gid), rel
                # mke2fs 1.47.0 stores the low 32 bits of the seconds and no epoch bits or
                # nanoseconds (debugfs shows a post-2038 time in 1970): the reader must too
                sec = (st.st_mtime_ns // 10**9 + (1 << 31)) % (1 << 32) - (1 << 31)
                assert inode.time_ns("mtime") == sec * 10**9, rel
                key = (st.st_dev, st.st_ino)
                assert inode_of.setdefault(key, ino) == ino, rel  # hard links share an inode
                names = sorted(os.listxattr(full, follow_symlinks=False))
                assert sorted(fs.xattrs(inode)) == names, rel
                if stat.S_ISREG(st.st_mode):
                    assert inode.size == st.st_size, rel
                    if st.st_size < 64 << 20:
                        h = hashlib.sha256()
                        for c in fs.iter_data(inode):
                            h.update(c)
                        with open(full, "rb") as f:
                            assert h.hexdigest() == hashlib.file_digest(f, "sha256").hexdigest(), rel
                elif stat.S_ISLNK(st.st_mode):
                    assert fs.symlink_target(inode) == os.readlink(full), rel
                elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    assert fs.device(inode) == (os.major(st.st_rdev), os.minor(st.st_rdev)), rel
                seen += 1
        assert len(paths) == seen + 2  # plus / and /lost+found
    assert files  # the listing ran over the whole tree without error
