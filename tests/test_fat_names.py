"""Short names, long-name slots and checksums, against what mtools writes for the same names."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from fatcheck import MT_ENV, assert_fsck_silent, mdir, mkfs_vfat, run

from pydiskimg import fat
from pydiskimg.errors import UsageError
from pydiskimg.fat import names
from pydiskimg.tree import scan

# ASCII names where mtools and the specification agree with pydiskimg's rules (see
# pydiskimg/fat/names.py for the few names where pydiskimg deliberately differs from mtools).
TRICKY = [
    "This is a very long file name.txt", "Long Directory Name", "a.b.c.d", "MixedCase.Txt",
    "Mixed.Txt", "grub.cfg", "README", ".hidden", "..dots", ". lead", "   spc", "foo+bar.txt",
    "x.toolongext", "abcdefgh.ijk", "ABCDEFGHI", "a b", "semi;colon", "UPPER.TXT", "lower",
    "ab.cdef", "~tilde", "e.x.e", "a b c d e f g.txt", "ab cdefghij.txt", "x'y.txt", "a+b.txt",
    "con.txt", "nul.x", "abcdefghij", "abcdefghijk", "hello world", "[x].txt", "a,b",
    "#$%&.()", "x.y.z.txt", "sp ace.t t", "a..b", "a=b;c[d]e", "kernel-6.1.0-amd64.efi",
    "loader.conf", "BOOTX64.EFI", "vmlinuz-linux", "initramfs-linux-fallback.img",
]
# collisions: ~1 .. ~12 on a long basis (the tail eats into the base at ~10) and on a short one
COLLIDE = [f"collision name number {i}.txt" for i in range(1, 13)] + [
    "x" + " " * i + "y.txt" for i in range(1, 13)
]
ALL = sorted(set(TRICKY + COLLIDE), key=lambda s: s.encode())


def test_slots():
    slots = names.lfn_chunks("This is a very long file name.txt")
    assert [o for o, _ in slots] == [0x43, 2, 1]
    assert b"".join(c for _, c in reversed(slots)).decode("utf-16-le").split("\0")[0] == (
        "This is a very long file name.txt"
    )
    assert names.lfn_chunks("x" * 13) == [(0x41, "x".encode("utf-16-le") * 13)]  # no terminator
    assert names.lfn_slot_count("x" * 255) == 20


@pytest.fixture(scope="module")
def mtools_image(tmp_path_factory):
    """mkfs.vfat + mcopy of every tricky name, in name order; mtools picks the short names."""
    d = tmp_path_factory.mktemp("mt")
    src = d / "src"
    src.mkdir()
    for n in ALL:
        (src / n).write_bytes(n.encode())
    img = d / "mt.img"
    # 32 KiB clusters: the whole root folder is its first cluster (read raw below)
    mkfs_vfat(img, 2100 << 20, "-F", "32", "-s", "64", "-i", "1")
    run("mcopy", "-i", str(img), *[str(src / n) for n in ALL], "::/", env=MT_ENV)
    return src, img


def test_short_names_match_mtools(mtools_image, tmp_path):
    src, img = mtools_image
    ref = mdir(img)
    assert sorted(ref) == sorted(f"/{n}" for n in ALL), "mtools stored every name"
    ref_short = {p[1:]: e["short"].upper() for p, e in ref.items()}
    # the naming module alone
    mine = dict(zip(ALL, (names.short_display(s) for s, _ in names.ShortNames().assign(ALL)), strict=True))
    assert mine == ref_short
    # and what our image holds, as mtools reads it
    out = tmp_path / "ours.img"
    fat.make_fat(scan(src), out, 40 << 20, fat.FatOptions())
    assert_fsck_silent(out)
    ours = mdir(out)
    assert {p[1:]: e["short"] for p, e in ours.items()} == ref_short
    # every name is back whole, mixed case included, each as a long name or an exact 8.3 name
    for n in ALL:
        e = ours[f"/{n}"]
        assert (e["long"] or e["short"]) == n


def test_lfn_checksums_match_mtools(mtools_image):
    """The checksum byte of every long-name slot mtools wrote equals ours for its short name."""
    _, img = mtools_image
    fsck = run("fsck.fat", "-n", "-v", str(img), check=False).stdout
    root = int(re.search(r"Data area starts at byte (\d+)", fsck)[1])
    with open(img, "rb") as f:
        f.seek(root)
        raw = f.read(32768)
    entries = [raw[i : i + 32] for i in range(0, len(raw), 32)]
    checked = 0
    pending = []
    for e in entries:
        if e[0] == 0:
            break
        if e[11] == 0x0F:
            pending.append(e[13])
            continue
        for c in pending:
            assert c == names.lfn_checksum(e[:11]), e[:11]
            checked += 1
        pending = []
    assert checked > 30


def test_long_name_limits(tmp_path):
    ok = "n" * 255
    assert names.decode_name(ok.encode(), "/x") == ok
    with pytest.raises(UsageError, match="255"):
        names.decode_name(b"n" * 256, "/x")
    # 128 non-BMP characters are 256 UTF-16 units
    with pytest.raises(UsageError, match="255"):
        names.decode_name(("\U0001F600" * 128).encode(), "/x")
    for bad in (b"a:b", b"a*b", b"a?b", b'a"b', b"a<b", b"a>b", b"a|b", b"a\\b", b"a\x01b", b"end.", b"end "):
        with pytest.raises(UsageError):
            names.decode_name(bad, "/x")
    with pytest.raises(UsageError, match="UTF-8"):
        names.decode_name(b"\xff\xfe", "/x")


def test_tails_beyond_nine_and_ninety_nine():
    longs = [f"same basis name {i:03d}.txt" for i in range(120)]
    got = [names.short_display(s) for s, _ in names.ShortNames().assign(longs)]
    assert got[0] == "SAMEBA~1.TXT" and got[8] == "SAMEBA~9.TXT"
    assert got[9] == "SAMEB~10.TXT" and got[98] == "SAMEB~99.TXT"
    assert got[99] == "SAME~100.TXT" and len(set(got)) == 120


def test_generated_name_never_steals_an_exact_one():
    # "A B" sorts before "AB~1": its generated name must not take the real file's name
    got = names.ShortNames().assign(["A B", "AB~1"])
    assert [names.short_display(s) for s, _ in got] == ["AB~2", "AB~1"]
    assert got[1][1] is False  # "AB~1" is its own short name: no long-name slots


def test_mtools_reads_unicode_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    uni = ["ünïcödé.txt", "日本語.txt", "Ελληνικά", "x" * 200 + ".txt"]
    astral = "emoji \U0001F600.efi"  # a surrogate pair in UTF-16
    for n in uni + [astral]:
        (src / n).write_text(n)
    img = tmp_path / "u.img"
    fat.make_fat(scan(src), img, 40 << 20, fat.FatOptions())
    assert_fsck_silent(img)
    got = mdir(img)
    # mtools 4.0.32 shows each half of a surrogate pair as "_" (it drops such names itself)
    assert sorted(p[1:] for p in got) == sorted(uni + ["emoji __.efi"])
    for p, e in got.items():
        assert e["short"].isascii() and "~" in e["short"], (p, e)
    fd = os.open(img, os.O_RDONLY)
    try:
        assert sorted(e.path.decode() for e in fat.read_tree(fd, 0, 40 << 20)) == sorted("/" + n for n in uni + [astral])
    finally:
        os.close(fd)


def test_case_insensitive_duplicates_refused(tmp_path):
    src = Path(tmp_path / "src")
    src.mkdir()
    (src / "Readme.TXT").write_text("a")
    (src / "README.txt").write_text("b")
    with pytest.raises(UsageError, match="case"):
        fat.plan(scan(src), 40 << 20, fat.FatOptions())
