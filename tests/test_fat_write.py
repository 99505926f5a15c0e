"""Whole images: fsck.fat -n silent, mtools reads back the exact tree (names, data, times),
determinism, hostile and impossible inputs."""

from __future__ import annotations

import calendar
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fatcheck import assert_fsck_silent, digest, mdir, minfo, mtools_extract

from pydiskimg import fat
from pydiskimg.cli import main as cli_main
from pydiskimg.errors import DoesNotFitError, SourceError, UsageError
from pydiskimg.io import Image
from pydiskimg.tree import Kind, Node, Tree, scan

MiB = 1 << 20


def make_sample(root: Path, *, order_seed: int = 0) -> Path:
    """A small ESP-like tree: nested folders, long and odd names, sizes around cluster edges."""
    rng = random.Random(1234)
    items: list[tuple[str, bytes | None]] = [
        ("EFI", None), ("EFI/BOOT", None), ("EFI/systemd", None), ("loader", None),
        ("loader/entries", None), ("Long Directory Name", None), ("Long Directory Name/deeper still", None),
        ("EFI/BOOT/BOOTX64.EFI", rng.randbytes(150_000)),
        ("EFI/systemd/systemd-bootx64.efi", rng.randbytes(90_001)),
        ("loader/loader.conf", b"timeout 3\ndefault nixos-*\n"),
        ("loader/entries/nixos-generation-1.conf", b"title NixOS\nlinux /vmlinuz\n"),
        ("This is a very long file name.txt", b"long"),
        ("MixedCase.Txt", b"mixed"), ("a.b.c.d", b"dots"), ("empty", b""),
        ("one-cluster", b"c" * 512), ("one-cluster+1", b"c" * 513), ("four-k", b"k" * 4096),
        ("Long Directory Name/deeper still/ünïcödé.txt", b"unicode"),
        ("Long Directory Name/deeper still/日本語.efi", rng.randbytes(3000)),
    ] + [(f"EFI/many/file number {i:03d}.bin", rng.randbytes(i * 7)) for i in range(60)]
    if ("EFI/many", None) not in items:
        items.insert(1, ("EFI/many", None))
    order = list(items)
    if order_seed:
        # creation order must not matter; folders still before what they hold
        random.Random(order_seed).shuffle(order)
        order.sort(key=lambda it: it[0].count("/"))
    for rel, data in order:
        p = root / rel
        if data is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    t = calendar.timegm((2024, 5, 17, 13, 37, 42))
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), ns=(t * 10**9 + 5, t * 10**9 + 123_456_789))
    return root


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("sample") / "src")


def build(src: Path, img: Path, size: int = 64 * MiB, **kw) -> fat.FatPlan:
    return fat.make_fat(scan(src, all_root=True), img, size, fat.FatOptions(**kw))


def assert_mtools_equal(img: Path, src: Path, tmp: Path) -> None:
    out = mtools_extract(img, tmp / "out")
    assert digest(out, mtimes=True) == digest(src, mtimes=True)
    shutil.rmtree(out)


@pytest.mark.parametrize("size", [33 * MiB, 236 * MiB, 300 * MiB], ids=["33MiB", "236MiB", "300MiB-4KiB-clusters"])
def test_sample_tree_fsck_and_mtools(sample, tmp_path, size):
    img = tmp_path / "esp.img"
    plan = build(sample, img, size)
    assert_fsck_silent(img)
    assert_mtools_equal(img, sample, tmp_path)
    listing = mdir(img)
    assert listing["/This is a very long file name.txt"]["short"] == "THISIS~1.TXT"
    assert listing["/Long Directory Name"]["short"] == "LONGDI~1"
    assert listing["/a.b.c.d"]["short"] == "ABC~1.D"
    assert listing["/MixedCase.Txt"]["short"] == "MIXEDC~1.TXT"
    # times are UTC (mtools shows them as local time, and TZ=UTC here)
    assert listing["/EFI/BOOT/BOOTX64.EFI"]["when"] == "2024-05-17 13:37"
    # FSInfo: fsck.fat checked the free count; minfo shows the hint
    info = minfo(img)
    assert int(info["free clusters"]) == plan.free_clusters
    assert int(info["last allocated cluster"]) == plan.used_clusters + 1


def test_fsck_counts(sample, tmp_path):
    """fsck.fat's own count of files and used clusters agrees with the source and the plan."""
    img = tmp_path / "esp.img"
    plan = build(sample, img)
    out = assert_fsck_silent(img)
    entries = sum(1 for _ in sample.rglob("*"))
    files, used, total = re.search(r": (\d+) files, (\d+)/(\d+) clusters", out).groups()
    assert int(files) == entries + 1  # + the volume label entry
    assert (int(used), int(total)) == (plan.used_clusters, plan.geometry.clusters)


def test_determinism_and_creation_order(tmp_path):
    a = make_sample(tmp_path / "a")
    b = make_sample(tmp_path / "b", order_seed=99)
    ia, ib = tmp_path / "a.img", tmp_path / "b.img"
    build(a, ia, volume_id=0xDEADBEEF, timestamp=1_700_000_000)
    build(b, ib, volume_id=0xDEADBEEF, timestamp=1_700_000_000)
    assert ia.read_bytes() == ib.read_bytes()
    # and under another umask, zone and locale
    ic = tmp_path / "c.img"
    env = dict(os.environ, TZ="Pacific/Kiritimati", LC_ALL="C", SOURCE_DATE_EPOCH="1700000000")
    code = "import sys; from pydiskimg.cli import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run(
        ["sh", "-c", 'umask 077; exec "$0" -c "$1" fat --root "$2" -o "$3" --size 64M --volume-id DEAD-BEEF',
         sys.executable, code, str(b), str(ic)],
        env=env, check=True,
    )
    assert ia.read_bytes() == ic.read_bytes()


def test_big_folders_and_deep_nesting(tmp_path):
    src = tmp_path / "src"
    big = src / "big folder"
    big.mkdir(parents=True)
    for i in range(700):  # many clusters of entries, ~ and ~nn tails
        (big / f"a rather long file name number {i}.conf").write_bytes(str(i).encode())
    deep = src
    for i in range(30):
        deep = deep / f"level {i} folder"
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_bytes(b"leaf")
    img = tmp_path / "esp.img"
    build(src, img, 40 * MiB)
    assert_fsck_silent(img)
    assert_mtools_equal(img, src, tmp_path)


def test_dates_clamped_and_utc(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, when in (("old", -86400 * 365), ("y1980", 315532800), ("odd-second", 1_000_000_001), ("future", 5_000_000_000)):
        (src / name).write_bytes(name.encode())
        os.utime(src / name, (when, when))
    img = tmp_path / "esp.img"
    build(src, img, 40 * MiB)
    assert_fsck_silent(img)
    got = {p: e["when"] for p, e in mdir(img).items()}
    assert got["/old"] == "1980-01-01 0:00"
    assert got["/y1980"] == "1980-01-01 0:00"
    assert got["/odd-second"] == "2001-09-09 1:46"
    assert got["/future"] == "2107-12-31 23:59"
    out = mtools_extract(img, tmp_path / "out")
    assert int(os.stat(out / "odd-second").st_mtime) == 1_000_000_000  # 2-second steps, rounded down


def test_hidden_sectors_in_bpb(sample, tmp_path):
    img = tmp_path / "esp.img"
    build(sample, img, 40 * MiB, hidden_sectors=16384)
    assert minfo(img)["hidden sectors"] == "16384"
    assert_fsck_silent(img)


def test_holes_and_sparse_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.bin", "wb") as f:
        f.seek(3 * MiB)
        f.write(b"tail")
        f.seek(MiB)
        f.write(b"middle")
    img = tmp_path / "esp.img"
    build(src, img, 40 * MiB)
    assert_fsck_silent(img)
    assert_mtools_equal(img, src, tmp_path)


def test_written_into_a_partition_view(sample, tmp_path):
    """At an offset inside a bigger file (as the pipeline writes the ESP)."""
    disk = tmp_path / "disk.img"
    off = 2048 * 512
    plan = fat.plan(scan(sample, all_root=True), 40 * MiB, fat.FatOptions(hidden_sectors=2048))
    img = Image.create(disk, off + 40 * MiB + MiB)
    try:
        fat.write(plan, img.view(off))
    finally:
        img.close()
    part = tmp_path / "part.img"
    with open(disk, "rb") as f, open(part, "wb") as g:
        f.seek(off)
        g.write(f.read(40 * MiB))
    assert_fsck_silent(part)
    assert_mtools_equal(part, sample, tmp_path)


# --- impossible or invalid requests -----------------------------------------------------------

def test_too_small_names_needed_size(sample, tmp_path):
    tree = scan(sample, all_root=True)
    need = fat.min_size(tree, fat.FatOptions())
    fat.plan(tree, need, fat.FatOptions())
    with pytest.raises(DoesNotFitError) as e:
        fat.plan(tree, 20 * MiB, fat.FatOptions())
    assert e.value.needed == need


def test_min_size_is_tight_for_a_full_tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(b"\1" * (40 * MiB))
    tree = scan(src)
    need = fat.min_size(tree, fat.FatOptions())
    plan = fat.plan(tree, need, fat.FatOptions())
    with pytest.raises(DoesNotFitError):
        fat.plan(tree, need - 512 * 32, fat.FatOptions())
    fat.write(plan, img := Image.create(tmp_path / "esp.img", need))
    img.close()
    assert_fsck_silent(tmp_path / "esp.img")


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_non_regular_refused(tmp_path, kind):
    src = tmp_path / "src"
    (src / "EFI").mkdir(parents=True)
    if kind == "symlink":
        os.symlink("target", src / "EFI" / "link")
    else:
        os.mkfifo(src / "EFI" / "link")
    with pytest.raises(UsageError, match=r"/EFI/link: is a (symlink|fifo); FAT holds only regular files and folders"):
        fat.plan(scan(src), 40 * MiB, fat.FatOptions())


def test_huge_file_refused():
    root = Node(Kind.DIR, 0o755, entries={b"huge": Node(Kind.REG, 0o644, size=5 << 30, source="/nonexistent")})
    with pytest.raises(UsageError, match="at most 4294967295"):
        fat.plan(Tree(root), 64 << 30, fat.FatOptions())


@pytest.mark.parametrize("name", [b"trailing.", b"trailing ", b"col:on", b"\xff\xfe"])
def test_bad_names_refused(name):
    root = Node(Kind.DIR, 0o755, entries={name: Node(Kind.REG, 0o644)})
    with pytest.raises(UsageError):
        fat.plan(Tree(root), 40 * MiB, fat.FatOptions())


def test_bad_volume_id():
    with pytest.raises(UsageError, match="volume ID"):
        fat.plan(Tree(Node(Kind.DIR, 0o755)), 40 * MiB, fat.FatOptions(volume_id=1 << 32))


def test_source_changed_after_scan(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"1234")
    tree = scan(src)
    (src / "f").write_bytes(b"123")
    with pytest.raises(SourceError, match="changed"):
        fat.make_fat(tree, tmp_path / "esp.img", 40 * MiB, fat.FatOptions())
    assert not (tmp_path / "esp.img").exists()


# --- the command line --------------------------------------------------------------------------

def test_cli(sample, tmp_path, capsys):
    img = tmp_path / "esp.img"
    assert cli_main(["fat", "--root", str(sample), "-o", str(img), "--size", "48M", "--label", "boot",
                     "--volume-id", "0badcafe", "--source-date-epoch", "1700000000"]) == 0
    assert img.stat().st_size == 48 * MiB
    assert_fsck_silent(img)
    info = minfo(img)
    assert info["serial number"] == "0BADCAFE"
    assert info["disk label"].strip() == "BOOT"
    assert_mtools_equal(img, sample, tmp_path)
    assert cli_main(["fat", "--root", str(sample), "-o", str(tmp_path / "auto.img"), "--size", "auto"]) == 0
    assert (tmp_path / "auto.img").stat().st_size % MiB == 0
    assert_fsck_silent(tmp_path / "auto.img")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--size", "10M"], "too small"),
        (["--size", "48M", "--label", "a.b"], "label"),
        (["--size", "48M", "--volume-id", "xyz"], "volume-id"),
        (["--size", "lots"], "size"),
    ],
)
def test_cli_errors(sample, tmp_path, capsys, args, message):
    out = tmp_path / "x.img"
    assert cli_main(["fat", "--root", str(sample), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pydiskimg: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_folder_entry_limit():
    """A FAT folder holds at most 65536 entries; long names take several each."""
    many = {f"a long file name number {i:05d}".encode(): Node(Kind.REG, 0o644) for i in range(22000)}
    with pytest.raises(UsageError, match="65536"):
        fat.plan(Tree(Node(Kind.DIR, 0o755, entries=many)), 64 * MiB, fat.FatOptions())


def test_hardlinks_become_copies_and_label_named_file(tmp_path):
    """FAT has no hardlinks: each name gets its own chain.  A file may share the label's name."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "x").write_bytes(b"linked data" * 100)
    os.link(src / "x", src / "y")
    (src / "ESP").write_bytes(b"same name as the label")
    img = tmp_path / "esp.img"
    build(src, img, 40 * MiB)
    out = assert_fsck_silent(img)
    assert " 4 files, " in out  # label + 3 files
    assert_mtools_equal(img, src, tmp_path)


def test_cli_bare_size_is_mib(sample, tmp_path):
    img = tmp_path / "esp.img"
    assert cli_main(["fat", "--root", str(sample), "-o", str(img), "--size", "40"]) == 0
    assert img.stat().st_size == 40 * MiB
