"""The normalizers of the bootloader stage, without the appliance: filesystems written by
pydiskimg, changed by the reference tools (debugfs, e2fsck, mtools) as a kernel would change them
(new inodes with other generations and the clock's times, removed files, rewritten folders),
then normalized.  Judged by e2fsck -fn / fsck.fat -n, debugfs and mtools, and by comparing bytes
with an image the changes never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ext4check import assert_fsck_clean
from fatcheck import MT_ENV, assert_fsck_silent, mdir

from pydiskimg import guestfs
from pydiskimg.ext4 import normalize as ext4_normalize
from pydiskimg.ext4.plan import DEFAULT_UUID
from pydiskimg.fat import normalize as fat_normalize

SDE = 1700000000  # 2023-11-14 22:13:20 UTC
TOOLS = ("debugfs", "e2fsck", "mcopy", "mmd", "mdel", "fsck.fat")


@pytest.fixture(autouse=True)
def _tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools: {missing}")


def run(*cmd: str, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stdout}{r.stderr}"
    return r.stdout


def tree(root: Path, *, mtime: int = SDE, old: int | None = None) -> Path:
    (root / "d").mkdir(parents=True)
    for name in ("a", "b", "zz"):
        (root / name).write_text(f"file {name}\n")
    for i in range(40):
        (root / "d" / f"file{i}").write_text(f"{i}\n")
    for p in [*root.rglob("*"), root]:
        os.utime(p, (mtime, mtime))
    if old is not None:
        os.utime(root / "a", (old, old))
    return root


def make_ext4(src: Path, out: Path) -> Path:
    run(sys.executable, "-m", "pydiskimg", "ext4", "--root", str(src), "-o", str(out),
        "--source-date-epoch", str(SDE))
    return out


def debugfs_w(img: Path, script: str, fake_time: int) -> None:
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(fake_time))
    r = subprocess.run(["debugfs", "-w", "-f", "-", str(img)], input=script, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "rror" not in r.stdout + r.stderr.replace("debugfs 1.", ""), r.stdout + r.stderr


def stat(img: Path, what: str) -> str:
    return run("debugfs", "-R", f"stat {what}", str(img))


def normalize_ext4(img: Path, snap: ext4_normalize.Snapshot, kbytes: int) -> ext4_normalize.Report:
    fd = os.open(img, os.O_RDWR)
    try:
        rep = ext4_normalize.normalize(fd, 0, timestamp=SDE, before=snap)
    finally:
        os.close(fd)
    guestfs.repin_ext4(img, 0, DEFAULT_UUID, timestamp=SDE, kbytes_written=kbytes)
    return rep


def snapshot_ext4(img: Path) -> tuple[ext4_normalize.Snapshot, int]:
    fd = os.open(img, os.O_RDONLY)
    try:
        return ext4_normalize.snapshot(fd, 0), guestfs.read_kbytes_written(img, 0)
    finally:
        os.close(fd)


def change_like_a_stage(img: Path, fake_time: int, gen: int) -> None:
    """What a bootloader installer does to the root: a new folder and file (with their own
    generations), a removed file, a rewritten one; then e2fsck -fy re-checksums what debugfs
    left stale (a folder's blocks are seeded by its generation)."""
    debugfs_w(img, "mkdir /boot\nwrite /etc/hostname /boot/x\nrm /b\n", fake_time)
    debugfs_w(img, f"set_inode_field /boot/x generation {gen + 1}\n"
                   f"set_inode_field /boot generation {gen}\n", fake_time)
    r = subprocess.run(["e2fsck", "-fy", str(img)], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stdout + r.stderr


def test_ext4_normalized_is_clean_and_clamped(tmp_path: Path) -> None:
    src = tree(tmp_path / "t", old=SDE - 86400)
    img = make_ext4(src, tmp_path / "fs.img")
    snap, kb = snapshot_ext4(img)
    change_like_a_stage(img, SDE + 5_000_000, 12345)
    assert "Generation: 12345" in stat(img, "/boot")
    assert "2024" in stat(img, "/boot")  # debugfs stamped its (fake) clock
    rep = normalize_ext4(img, snap, kb)
    assert_fsck_clean(img)
    run("tune2fs", "-l", str(img))
    run("resize2fs", "-P", str(img))
    for path in ("/boot", "/boot/x", "/"):
        out = stat(img, path)
        assert "Generation: 0 " in out, out
        for field in ("ctime", "atime", "mtime", "crtime"):
            assert f"{field}: 0x6553f100:00000000" in out, out
    # untouched: /a keeps its own (older) time
    assert f"mtime: {SDE - 86400:#010x}:00000000" in stat(img, "/a")
    assert rep.inodes_zeroed == 1 and rep.inodes_normalized == 3


def test_ext4_normalization_gives_back_the_untouched_bytes(tmp_path: Path) -> None:
    """Changes that the rules undo entirely (generations, times later than SOURCE_DATE_EPOCH,
    a file written then removed, a stale extent slot): the normalized image equals the one never
    changed."""
    src = tree(tmp_path / "t")
    ref = make_ext4(src, tmp_path / "ref.img")
    img = tmp_path / "fs.img"
    shutil.copyfile(ref, img)
    snap, kb = snapshot_ext4(img)
    debugfs_w(img, "write /etc/hostname /d/tmpfile\nrm /d/tmpfile\n", SDE + 999)
    debugfs_w(img, "set_inode_field /d generation 4242\nset_inode_field /a generation 7\n"
                   "set_inode_field /a mtime 202612011200\n"
                   # an old extent left in an unused slot of the inode's extent root
                   "set_inode_field /a block[9] 57005\n", SDE + 999)
    r = subprocess.run(["e2fsck", "-fy", str(img)], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert "Generation: 4242" in stat(img, "/d")
    assert ref.read_bytes() != img.read_bytes()
    normalize_ext4(img, snap, kb)
    assert_fsck_clean(img)
    a, b = ref.read_bytes(), img.read_bytes()
    # the one expected difference: the stage's repin stamps the mount time (s_mtime, 0x2C), which
    # the never-mounted reference does not have; then the superblock checksum (0x3FC)
    assert int.from_bytes(b[1024 + 0x2C : 1024 + 0x30], "little") == SDE
    differ = [i for i in range(len(a)) if a[i] != b[i]] if a != b else []
    assert all(1024 + 0x2C <= i < 1024 + 0x30 or i >= 1024 + 0x3FC and i < 2048 for i in differ), differ[:20]


def test_ext4_two_stages_at_other_times_normalize_to_the_same_bytes(tmp_path: Path) -> None:
    src = tree(tmp_path / "t")
    imgs = []
    for k, (t, gen) in enumerate(((SDE + 1000, 11), (SDE + 7_000_000, 999999))):
        img = make_ext4(src, tmp_path / f"fs{k}.img")
        snap, kb = snapshot_ext4(img)
        change_like_a_stage(img, t, gen)
        normalize_ext4(img, snap, kb)
        assert_fsck_clean(img)
        imgs.append(img.read_bytes())
    assert imgs[0] == imgs[1]


def test_ext4_refuses_a_filesystem_needing_recovery(tmp_path: Path) -> None:
    src = tree(tmp_path / "t")
    img = make_ext4(src, tmp_path / "fs.img")
    snap, _ = snapshot_ext4(img)
    run("debugfs", "-w", "-R", "feature needs_recovery", str(img))
    fd = os.open(img, os.O_RDWR)
    try:
        with pytest.raises(Exception, match="not cleanly unmounted"):
            ext4_normalize.normalize(fd, 0, timestamp=SDE, before=snap)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# FAT
# ---------------------------------------------------------------------------------------------


def test_ext4_made_by_mkfs_with_1k_blocks(tmp_path: Path) -> None:
    """A root made by mkfs.ext4 itself on a small partition (1 KiB blocks, as the stage tests'
    reference images are): normalized, e2fsck -fn is silent and the journal superblock is the
    one mke2fs wrote (it once got 4 KiB as its block size: "Journal superblock is corrupt")."""
    src = tree(tmp_path / "t")
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(60 << 20)
    run("mkfs.ext4", "-q", "-F", "-d", str(src), str(img))
    assert "Block size:               1024" in run("dumpe2fs", "-h", str(img))

    def journal_sb() -> bytes:
        first = int(run("debugfs", "-R", "bmap <8> 0", str(img)).split()[0])
        with open(img, "rb") as f:
            f.seek(first * 1024)
            return f.read(1024)

    made_by_mke2fs = journal_sb()
    snap, kb = snapshot_ext4(img)
    change_like_a_stage(img, SDE + 5_000_000, 777)
    normalize_ext4(img, snap, kb)
    assert_fsck_clean(img)
    assert journal_sb() == made_by_mke2fs


def make_fat(src: Path, out: Path) -> Path:
    run(sys.executable, "-m", "pydiskimg", "fat", "--root", str(src), "-o", str(out),
        "--size", "40M", "--source-date-epoch", str(SDE))
    return out


def change_fat(img: Path, payload: Path) -> None:
    i = f"-i{img}"
    run("mmd", i, "::/EFI", env=MT_ENV)
    run("mmd", i, "::/EFI/BOOT", env=MT_ENV)
    run("mcopy", i, str(payload), "::/EFI/BOOT/BOOTX64.EFI", env=MT_ENV)
    run("mcopy", i, str(payload), "::/a-temporary-name.txt", env=MT_ENV)
    run("mdel", i, "::/a-temporary-name.txt", env=MT_ENV)
    run("mdel", i, "::/b", env=MT_ENV)


def normalize_fat(img: Path, snap: fat_normalize.Snapshot) -> fat_normalize.Report:
    fd = os.open(img, os.O_RDWR)
    try:
        return fat_normalize.normalize(fd, 0, img.stat().st_size, timestamp=SDE, before=snap)
    finally:
        os.close(fd)


def snapshot_fat(img: Path) -> fat_normalize.Snapshot:
    fd = os.open(img, os.O_RDONLY)
    try:
        return fat_normalize.snapshot(fd, 0, img.stat().st_size)
    finally:
        os.close(fd)


def test_fat_normalized_is_clean_clamped_and_reproducible(tmp_path: Path) -> None:
    src = tree(tmp_path / "t", old=SDE - 86400)
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(100_000))
    images = []
    for k in range(2):
        img = make_fat(src, tmp_path / f"esp{k}.img")
        snap = snapshot_fat(img)
        change_fat(img, payload)
        if k == 0:
            time.sleep(2.1)  # the second change happens at another FAT time
        assert "a-tem".encode("utf-16-le") in img.read_bytes()  # the removed entry's name
        normalize_fat(img, snap)
        assert_fsck_silent(img)
        images.append(img.read_bytes())
    assert images[0] == images[1]
    entries = mdir(tmp_path / "esp0.img")
    assert entries["/EFI/BOOT/BOOTX64.EFI"]["when"] == "2023-11-14 22:13", entries
    assert entries["/EFI"]["when"] == "2023-11-14 22:13"
    assert entries["/a"]["when"] == "2023-11-13 22:13"  # untouched
    assert "/b" not in entries
    assert "a-tem".encode("utf-16-le") not in images[0]
