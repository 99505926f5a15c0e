"""Byte comparison with the seed's own commands.

GPT tables: ``truncate`` + the seed's parted script + its sgdisk line on one file,
``pydiskimg partition`` on another; the protective MBR, primary header and entries (sectors
0..33) and the backup entries and header (the last 33 sectors) must be identical.
Legacy: parted's geometry, and sector 0 identical to what sfdisk writes for that geometry and
our disk signature (parted's own MBR carries its boot code, a random signature and a 4-head
CHS geometry; see the report / README).

sgdisk sleeps a second after writing, so the seed side runs in parallel threads.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_layout_seedref import P2, ROOT, need_tools, parted_geometry, seed_partition

from pydiskimg import cli, layout

SECTOR = 512

# (table, --disk-size as truncate reads it, bootSize, rootGPUID)
CASES = [
    ("efi", "1000M", "256M", ROOT),
    ("efi", "4G", "256M", ROOT),
    ("efi", "246M", "256M", ROOT),  # the smallest whole MiB that fits
    ("efi", "1000001KB", "100M", ROOT),  # not whole sectors; boot size not whole MiB
    ("efi", "3221225473K", "300MiB", "0867DA16-F251-457D-A9E8-C31F9A3C220B"),  # > 2 TiB
    ("efi", "2049M", "1G", ROOT),
    ("hybrid", "1000M", "256M", ROOT),
    ("hybrid", "246M", "256M", ROOT),
    ("hybrid", "2000000001KB", "333M", ROOT),
    ("hybrid", "3221225473K", "256M", "12345678-9ABC-4DEF-8123-456789ABCDEF"),
    ("hybrid", "777M", "129MiB", ROOT),
    ("efixbootldr", "1000M", "256M", ROOT),
    ("efixbootldr", "4G", "1G", ROOT),
    ("efixbootldr", "246M", "256M", ROOT),  # the smallest whole MiB that fits
    ("efixbootldr", "1000001KB", "105M", ROOT),  # XBOOTLDR's end and the root's start unaligned
    ("efixbootldr", "3221225473K", "300MiB", "0867DA16-F251-457D-A9E8-C31F9A3C220B"),  # > 2 TiB
    ("efixbootldr", "777M", "129MiB", ROOT),
    ("legacy+gpt", "1000M", "256M", ROOT),
    ("legacy+gpt", "3M", "256M", ROOT),
    ("legacy+gpt", "1000001KB", "256M", ROOT),
    ("legacy+gpt", "3221225473K", "256M", ROOT),
]


def truncate_bytes(path: Path, size: str) -> int:
    """The size truncate -s gives (the reference for our --disk-size reading)."""
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    n = os.path.getsize(path)
    path.unlink()
    return n


def _ends(path: Path) -> tuple[bytes, bytes]:
    sectors = os.path.getsize(path) // SECTOR
    with open(path, "rb") as f:
        head = f.read(34 * SECTOR)
        f.seek((sectors - 33) * SECTOR)
        tail = f.read(33 * SECTOR)
    return head, tail


@pytest.fixture(scope="module")
def seed_images(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, int]]:
    folder = tmp_path_factory.mktemp("seed")

    def one(i: int) -> tuple[Path, int]:
        table, size, boot, root = CASES[i]
        n = truncate_bytes(folder / f"t{i}", size if size[-1].isalpha() else size + "M")
        path = folder / f"seed{i}.img"
        # legacy+gpt: the seed's sgdisk line puts 970C694F-... on the root partition
        assert seed_partition(path, table, n, boot, root_gpuid=root)
        return path, n

    with ThreadPoolExecutor(8) as ex:
        return dict(enumerate(ex.map(one, range(len(CASES)))))


def _ours(path: Path, table: str, size: str, boot: str, root: str) -> None:
    rc = cli.main(["partition", str(path), "--partition-table", table, "--disk-size", size,
                   "--boot-size", boot, "--root-gpuid", root])
    assert rc == 0


@need_tools
@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_gpt_areas_byte_identical_to_parted_and_sgdisk(tmp_path: Path, seed_images: dict, i: int) -> None:
    table, size, boot, root = CASES[i]
    seed_path, n = seed_images[i]
    ours = tmp_path / "ours.img"
    # for legacy+gpt, reproduce the seed's root GUID to compare every byte; the default
    # difference (rootGPUID on the root partition) is checked separately below
    _ours(ours, table, size, boot, P2 if table == "legacy+gpt" else root)
    assert os.path.getsize(ours) == n
    assert os.stat(ours).st_blocks * 512 < 1 << 20, "the image must stay sparse"
    want_head, want_tail = _ends(seed_path)
    got_head, got_tail = _ends(ours)
    for what, want, got in (("sectors 0..33", want_head, got_head), ("last 33 sectors", want_tail, got_tail)):
        if want != got:
            diff = [f"+{o:#x}: seed {want[o:o + 16].hex()} ours {got[o:o + 16].hex()}"
                    for o in range(0, len(want), 16) if want[o:o + 16] != got[o:o + 16]]
            pytest.fail(f"{what} differ:\n" + "\n".join(diff[:20]))


@need_tools
@pytest.mark.parametrize("i", [i for i, c in enumerate(CASES) if c[0] == "legacy+gpt"])
def test_legacy_gpt_differs_only_by_root_guid(tmp_path: Path, seed_images: dict, i: int) -> None:
    table, size, boot, root = CASES[i]
    seed_path, _ = seed_images[i]
    ours = tmp_path / "ours.img"
    _ours(ours, table, size, boot, root)
    theirs_l, ours_l = layout.read_table(seed_path), layout.read_table(ours)
    assert theirs_l.disk_guid == ours_l.disk_guid
    for a, b in zip(theirs_l.partitions, ours_l.partitions, strict=True):
        if b.role == "root":
            assert str(a.unique_guid).upper() == P2 and str(b.unique_guid).upper() == root
            a = type(a)(**{**a.__dict__, "unique_guid": b.unique_guid})
        assert a == b


LEGACY_SIZES = ["1000M", "2M", "3M", "4G", "1000001KB", "2047G", "1999999999K"]


@need_tools
@pytest.mark.parametrize("size", LEGACY_SIZES)
def test_legacy_geometry_and_mbr_bytes(tmp_path: Path, size: str) -> None:
    n = truncate_bytes(tmp_path / "t", size)
    assert seed_partition(tmp_path / "seed.img", "legacy", n)
    geometry = parted_geometry(tmp_path / "seed.img")
    ours = tmp_path / "ours.img"
    assert cli.main(["partition", str(ours), "--partition-table", "legacy", "--disk-size", size]) == 0
    assert parted_geometry(ours) == geometry
    # the same geometry written by sfdisk, with our (documented) disk signature
    ((num, first, last),) = geometry
    sig = layout.read_table(ours).mbr_signature
    ref = tmp_path / "sfdisk.img"
    subprocess.run(["truncate", "-s", str(n), str(ref)], check=True)
    subprocess.run(["sfdisk", "-q", str(ref)], check=True, text=True,
                   input=f"label: dos\nlabel-id: {sig:#010x}\nstart={first}, size={last - first + 1}, type=83\n")
    with open(ref, "rb") as a, open(ours, "rb") as b:
        assert a.read(512) == b.read(512)


def test_none_is_an_empty_sparse_file(tmp_path: Path) -> None:
    out = tmp_path / "none.img"
    assert cli.main(["partition", str(out), "--partition-table", "none", "--disk-size", "64"]) == 0
    assert os.path.getsize(out) == 64 << 20
    assert os.stat(out).st_blocks == 0
