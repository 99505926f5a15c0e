"""The reader: agrees with fsck.fat -v and minfo, reads FAT12/16/32 images that mkfs.vfat and
mcopy made (fragmented ones included), and turns every malformed image into FATError."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import struct
from pathlib import Path

import pytest
from fatcheck import MT_ENV, assert_fsck_silent, fsck_verbose, minfo, mkfs_vfat, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydiskimg import fat
from pydiskimg.errors import FATError
from pydiskimg.tree import scan

MiB = 1 << 20


def make_src(root: Path) -> Path:
    rng = random.Random(5)
    files = {
        "readme.txt": b"lower case name: case bits, no long name",
        "MixedCase.Txt": b"mixed",
        "EFI/BOOT/BOOTX64.EFI": rng.randbytes(70_000),
        "Long Directory Name/inner file.bin": rng.randbytes(9000),
        "Long Directory Name/empty": b"",
        "UPPER.TXT": b"upper",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    t = 1_600_000_000
    for p in root.rglob("*"):
        os.utime(p, (t, t))
    return root


def src_digest(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in root.rglob("*"):
        rel = "/" + str(p.relative_to(root))
        if p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), int(p.stat().st_mtime) // 2 * 2)
    return out


def read_digest(img: Path, size: int) -> dict[str, object]:
    out: dict[str, object] = {}
    fd = os.open(img, os.O_RDONLY)
    try:
        for e in fat.read_tree(fd, 0, size):
            if e.is_dir:
                out[e.path.decode()] = "dir"
            else:
                h = hashlib.sha256()
                n = 0
                for c in e.data():
                    h.update(c)
                    n += len(c)
                assert n == e.size
                out[e.path.decode()] = (h.hexdigest(), e.mtime_ns // 10**9)
    finally:
        os.close(fd)
    return out


def mtools_image(tmp: Path, src: Path, size: int, *mkfs_args: str, fragment: bool = False) -> Path:
    img = tmp / "mt.img"
    mkfs_vfat(img, size, "-i", "C0FFEE42", "-n", "MTOOLS", *mkfs_args)
    run("mcopy", "-s", "-m", "-i", str(img), *[str(p) for p in sorted(src.iterdir())], "::/", env=MT_ENV)
    if fragment:
        fragment_fat32(img)
        assert_fsck_silent(img)  # the reference tool agrees the moved chains are valid
    return img


def fragment_fat32(img: Path) -> None:
    """Split every chain of 4+ clusters: move its second half far away, reversed (FAT32)."""
    with open(img, "r+b") as f:
        boot = f.read(512)
        spc, rsv, nfats = boot[13], struct.unpack_from("<H", boot, 14)[0], boot[16]
        fatsz = struct.unpack_from("<I", boot, 36)[0]
        cb = spc * 512
        data = (rsv + nfats * fatsz) * 512
        f.seek(rsv * 512)
        fat_ = list(struct.unpack(f"<{fatsz * 128}I", f.read(fatsz * 512)))
        n = (struct.unpack_from("<I", boot, 32)[0] - rsv - nfats * fatsz) // spc
        heads = set(range(2, n + 2)) - {c & 0x0FFFFFFF for c in fat_[2 : n + 2]}
        free = [c for c in range(n + 1, 1, -1) if fat_[c] == 0]  # from the end, downwards
        for head in sorted(heads):
            if fat_[head] == 0:
                continue
            chain = [head]
            while fat_[chain[-1]] < 0x0FFFFFF8:
                chain.append(fat_[chain[-1]])
            if len(chain) < 4:
                continue
            keep, move = chain[: len(chain) // 2], chain[len(chain) // 2 :]
            new = [free.pop(0) for _ in move]  # descending cluster numbers: backward links
            for old, nw in zip(move, new, strict=True):
                f.seek(data + (old - 2) * cb)
                blob = f.read(cb)
                f.seek(data + (nw - 2) * cb)
                f.write(blob)
            fat_[keep[-1]] = new[0]
            for a, b in zip(new[:-1], new[1:], strict=True):
                fat_[a] = b
            fat_[new[-1]] = 0x0FFFFFFF
            for old in move:
                fat_[old] = 0
        raw = struct.pack(f"<{len(fat_)}I", *fat_)
        for k in range(nfats):
            f.seek((rsv + k * fatsz) * 512)
            f.write(raw)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return make_src(tmp_path_factory.mktemp("rsrc") / "src")


CASES = {
    "fat12": (4 * MiB, ["-F", "12"]),
    "fat16": (64 * MiB, ["-F", "16"]),
    "fat32": (300 * MiB, ["-F", "32"]),
    "fat32-fragmented": (64 * MiB, ["-F", "32"]),
}


@pytest.mark.parametrize("case", CASES, ids=CASES.keys())
def test_reads_mtools_images(src, tmp_path, case):
    size, args = CASES[case]
    img = mtools_image(tmp_path, src, size, *args, fragment="fragmented" in case)
    assert read_digest(img, size) == src_digest(src)
    check_info(img, size)


def test_reads_own_image(src, tmp_path):
    img = tmp_path / "ours.img"
    fat.make_fat(scan(src), img, 40 * MiB, fat.FatOptions(volume_id=0x0BADF00D, label="own"))
    assert read_digest(img, 40 * MiB) == src_digest(src)
    info = check_info(img, 40 * MiB)
    assert info["backup_boot_identical"] and info["fats_identical"]


def check_info(img: Path, size: int) -> dict:
    fd = os.open(img, os.O_RDONLY)
    try:
        info = fat.read_info(fd, 0, size)
    finally:
        os.close(fd)
    v = fsck_verbose(img)
    m = minfo(img)
    bits = int(re.search(r"(\d+) FATs?, (\d+) bit entries", v)[2])
    assert info["type"] == f"FAT{bits}"
    assert info["fats"] == int(re.search(r"(\d+) FATs?, ", v)[1])
    assert info["bytes_per_sector"] == int(re.search(r"(\d+) bytes per logical sector", v)[1])
    assert info["cluster_size"] == int(re.search(r"(\d+) bytes per cluster", v)[1])
    assert info["reserved_sectors"] == int(re.search(r"(\d+) reserved sectors?", v)[1])
    assert info["fat_sectors"] == int(re.search(r"bytes per FAT \(= (\d+) sectors\)", v)[1])
    assert info["data_offset"] == int(re.search(r"Data area starts at byte (\d+)", v)[1])
    assert info["clusters"] == int(re.search(r"(\d+) data clusters", v)[1])
    assert info["total_sectors"] == int(re.search(r"(\d+) sectors total", v)[1])
    assert info["hidden_sectors"] == int(re.search(r"(\d+) hidden sectors", v)[1])
    used, total = re.search(r"(\d+)/(\d+) clusters", v).groups()
    assert (info["used_clusters"], info["clusters"]) == (int(used), int(total))
    assert f"{info['volume_id']:08X}" == m["serial number"]
    assert info["label"] == m["disk label"].strip()
    assert info["media"] == int(m["media descriptor byte"], 16)
    if bits == 32:
        assert info["fsinfo_free_count"] == int(m["free clusters"])
        assert info["fsinfo_next_free"] == int(m["last allocated cluster"])
        assert info["root_cluster"] == int(m["rootCluster"])
    return info


# --- hostile images ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory, src) -> tuple[bytes, dict]:
    d = tmp_path_factory.mktemp("good")
    img = d / "g.img"
    fat.make_fat(scan(src), img, 33 * MiB, fat.FatOptions())
    raw = img.read_bytes()
    fd = os.open(img, os.O_RDONLY)
    try:
        info = fat.read_info(fd, 0, len(raw))
        entries = {e.path: e for e in fat.read_tree(fd, 0, len(raw))}
    finally:
        os.close(fd)
    return raw, {"info": info, "paths": sorted(entries)}


def read_all(tmp: Path, raw: bytes, size: int | None = None) -> None:
    p = tmp / "bad.img"
    p.write_bytes(raw)
    fd = os.open(p, os.O_RDONLY)
    try:
        n = len(raw) if size is None else size
        fat.read_info(fd, 0, n)
        for e in fat.read_tree(fd, 0, n):
            for _ in e.data():
                pass
    finally:
        os.close(fd)


def _dirent_offset(raw: bytes, info: dict, cluster_of_dir: int, short: bytes) -> int:
    pos = info["data_offset"] + (cluster_of_dir - 2) * info["cluster_size"]
    for i in range(pos, pos + info["cluster_size"], 32):
        if raw[i : i + 11] == short:
            return i
    raise AssertionError(short)


def _first_cluster(raw: bytes, off: int) -> int:
    hi, lo = struct.unpack_from("<H", raw, off + 20)[0], struct.unpack_from("<H", raw, off + 26)[0]
    return hi << 16 | lo


def corrupt(raw: bytes, info: dict, what: str) -> tuple[bytes, int | None]:
    b = bytearray(raw)
    fat0 = info["reserved_sectors"] * 512
    if what == "truncated":
        return bytes(b[: len(b) // 2]), None
    if what == "zeros":
        return bytes(len(b)), None
    if what == "bytes-per-sector":
        struct.pack_into("<H", b, 11, 513)
    elif what == "sectors-per-cluster":
        b[13] = 3
    elif what == "no-fats":
        b[16] = 0
    elif what == "no-reserved":
        struct.pack_into("<H", b, 14, 0)
    elif what == "fat-size-zero":
        struct.pack_into("<I", b, 36, 0)
    elif what == "total-too-big":
        struct.pack_into("<I", b, 32, 0xFFFFFFF0)
    elif what == "root-cluster":
        struct.pack_into("<I", b, 44, 0x0FFFFFF0)
    elif what == "small-region":
        return bytes(b), len(b) - 4096
    else:
        efi = _first_cluster(raw, _dirent_offset(raw, info, 2, b"EFI        "))
        boot = _first_cluster(raw, _dirent_offset(raw, info, efi, b"BOOT       "))
        foff = _dirent_offset(raw, info, boot, b"BOOTX64 EFI")
        first = _first_cluster(raw, foff)
        if what == "chain-loop":
            struct.pack_into("<I", b, fat0 + 4 * (first + 5), first)
        elif what == "chain-out-of-range":
            struct.pack_into("<I", b, fat0 + 4 * (first + 5), 0x0FFFFFF0)
        elif what == "chain-into-free":
            struct.pack_into("<I", b, fat0 + 4 * (first + 5), 0)
        elif what == "chain-bad-cluster":
            struct.pack_into("<I", b, fat0 + 4 * (first + 5), 0x0FFFFFF7)
        elif what == "file-longer-than-chain":
            struct.pack_into("<I", b, foff + 28, 10 * MiB)
        elif what == "folder-loop":
            # BOOT's subfolder entry made to point back at EFI
            boff = _dirent_offset(raw, info, efi, b"BOOT       ")
            struct.pack_into("<H", b, boff + 26, efi & 0xFFFF)
            struct.pack_into("<H", b, boff + 20, efi >> 16)
        elif what == "entry-slash":
            b[foff : foff + 11] = b"BOOT/64 EFI"
        else:
            raise AssertionError(what)
    return bytes(b), None


BROKEN = [
    "truncated", "zeros", "bytes-per-sector", "sectors-per-cluster", "no-fats", "no-reserved",
    "fat-size-zero", "total-too-big", "root-cluster", "small-region", "chain-loop",
    "chain-out-of-range", "chain-into-free", "chain-bad-cluster", "file-longer-than-chain",
    "folder-loop",
]


@pytest.mark.parametrize("what", BROKEN)
def test_broken_images_raise_fat_error(good, tmp_path, what):
    raw, meta = good
    read_all(tmp_path, raw)  # the unbroken image reads fine
    bad, size = corrupt(raw, meta["info"], what)
    with pytest.raises(FATError):
        read_all(tmp_path, bad, size)


def test_short_name_with_slash_is_an_error(good, tmp_path):
    raw, meta = good
    bad, _ = corrupt(raw, meta["info"], "entry-slash")
    with pytest.raises(FATError, match="named"):
        read_all(tmp_path, bad)


@pytest.fixture(scope="module")
def small_fat12(tmp_path_factory, src) -> bytes:
    d = tmp_path_factory.mktemp("f12")
    img = mtools_image(d, src, 1 * MiB, "-F", "12")
    return img.read_bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 24 * 1024 - 1), st.integers(0, 255)), min_size=1, max_size=12))
def test_fuzzed_metadata_only_fat_error(small_fat12, tmp_path, edits):
    """Random byte changes in the boot sector, FATs and folders: a result or FATError, nothing else."""
    b = bytearray(small_fat12)
    for off, val in edits:
        b[off] = val
    with contextlib.suppress(FATError):
        read_all(tmp_path, bytes(b))
