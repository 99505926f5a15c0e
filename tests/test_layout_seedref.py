"""The reference: the seed's own parted (+ sgdisk) lines, run on sparse files.

This module holds the helpers other test modules import (``seed_partition``,
``parted_geometry``) and tests the layout planner's geometry against parted itself over many
disk sizes: whole MiB and not, not even whole sectors, the smallest size each layout fits,
over 2 TiB, and boot sizes that are not whole MiB.  Expected values come from parted only.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pydiskimg import layout
from pydiskimg.errors import DoesNotFitError, UsageError

MiB = 1 << 20
TiB = 1 << 40

# the seed's constants, verbatim (the disk GUID is the seed's malformed 35-character one)
SEED_DISK_GUID_ARG = "97FD5997-D90B-4AA3-8D16-C1723AEA73C"
P1 = "1C06F03B-704E-4657-B9CD-681A087A2FDC"
P2 = "970C694F-AFD0-4B99-B750-CDB7A329AB6F"
ROOT = "F222513B-DED1-49FA-B591-20CE86A2FE7F"

GPT_TABLES = ("legacy+gpt", "efi", "hybrid", "efixbootldr")
TABLES = ("legacy",) + GPT_TABLES

need_tools = pytest.mark.skipif(
    not (shutil.which("parted") and shutil.which("sgdisk") and shutil.which("sfdisk")),
    reason="parted, sgdisk and sfdisk are needed (CI installs them)",
)


def parted_script(table: str, boot: str) -> list[str]:
    """The arguments after ``parted --script $diskImage --`` in the seed's partitionDiskScript."""
    return {
        "legacy": ["mklabel", "msdos", "mkpart", "primary", "ext4", "1MiB", "-1"],
        "legacy+gpt": ["mklabel", "gpt", "mkpart", "no-fs", "1MB", "2MB", "set", "1", "bios_grub", "on",
                       "align-check", "optimal", "1", "mkpart", "primary", "ext4", "2MB", "-1",
                       "align-check", "optimal", "2", "print"],
        "efi": ["mklabel", "gpt", "mkpart", "ESP", "fat32", "8MiB", boot, "set", "1", "boot", "on",
                "mkpart", "primary", "ext4", boot, "-1"],
        "hybrid": ["mklabel", "gpt", "mkpart", "ESP", "fat32", "8MiB", boot, "set", "1", "boot", "on",
                   "mkpart", "no-fs", "0", "1024KiB", "set", "2", "bios_grub", "on",
                   "mkpart", "primary", "ext4", boot, "-1"],
        # current nixpkgs' sixth layout (its lines, as quoted in issue 14)
        "efixbootldr": ["mklabel", "gpt", "mkpart", "ESP", "fat32", "8MiB", "100MiB", "set", "1", "boot", "on",
                        "mkpart", "BOOT", "fat32", "100MiB", boot, "set", "2", "bls_boot", "on",
                        "mkpart", "ROOT", "ext4", boot, "-1"],
    }[table]


def sgdisk_args(table: str, root_gpuid: str) -> list[str]:
    """The seed's deterministic sgdisk line (without the image)."""
    guids = {
        "legacy+gpt": [f"--partition-guid=1:{P1}", f"--partition-guid=2:{P2}", f"--partition-guid=3:{root_gpuid}"],
        "efi": [f"--partition-guid=1:{P1}", f"--partition-guid=2:{root_gpuid}"],
        "hybrid": [f"--partition-guid=1:{P1}", f"--partition-guid=2:{P2}", f"--partition-guid=3:{root_gpuid}"],
        "efixbootldr": [f"--partition-guid=1:{P1}", f"--partition-guid=2:{P2}", f"--partition-guid=3:{root_gpuid}"],
    }[table]
    return ["sgdisk", f"--disk-guid={SEED_DISK_GUID_ARG}", *guids]


def seed_partition(path: str | Path, table: str, disk_bytes: int, boot: str = "256M",
                   root_gpuid: str = ROOT, sgdisk: bool = True) -> bool:
    """truncate + the seed's parted script (+ its sgdisk line for GPT tables) on ``path``.

    Returns False when parted fails (the seed's build would stop there).
    """
    path = str(path)
    if os.path.exists(path):
        os.unlink(path)
    subprocess.run(["truncate", "-s", str(disk_bytes), path], check=True)
    r = subprocess.run(["parted", "--script", path, "--", *parted_script(table, boot)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return False
    if sgdisk and table != "legacy":
        subprocess.run([*sgdisk_args(table, root_gpuid), path], check=True, capture_output=True)
    return True


def parted_geometry(path: str | Path) -> list[tuple[int, int, int]]:
    """(number, first, last) of each partition, from ``parted -m unit s print``."""
    out = subprocess.run(["parted", "-m", "-s", str(path), "unit", "s", "print"],
                         check=True, capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines()[2:]:
        f = line.rstrip(";").split(":")
        rows.append((int(f[0]), int(f[1].rstrip("s")), int(f[2].rstrip("s"))))
    return sorted(rows)


def planned_geometry(table: str, disk_bytes: int, boot: str = "256M") -> list[tuple[int, int, int]] | None:
    """Our plan as (number, first, last), or None when we refuse the size as too small."""
    try:
        lay = layout.plan_layout(table, disk_bytes, boot)
    except (DoesNotFitError, UsageError):  # too small, or too large for an MBR
        return None
    return sorted((p.number, p.first_lba, p.last_lba) for p in lay.partitions)


def _parted_result(args: tuple[str, str, int, str]) -> list[tuple[int, int, int]] | None:
    """One parted process: truncate, the seed's script, then ``unit s print`` (machine form)."""
    folder, table, size, boot = args
    path = os.path.join(folder, f"{table}-{size}-{boot}.img")
    try:
        subprocess.run(["truncate", "-s", str(size), path], check=True)
        r = subprocess.run(["parted", "-m", "--script", path, "--", *parted_script(table, boot), "unit", "s", "print"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return None
        lines = r.stdout.splitlines()
        last = max(i for i, line in enumerate(lines) if line == "BYT;")
        rows = []
        for line in lines[last + 2:]:
            f = line.rstrip(";").split(":")
            rows.append((int(f[0]), int(f[1].rstrip("s")), int(f[2].rstrip("s"))))
        return sorted(rows)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def compare_with_parted(tmp_path: Path, cases: list[tuple[str, int, str]]) -> None:
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(_parted_result, [(str(tmp_path), t, s, b) for t, s, b in cases]))
    bad = []
    for (table, size, boot), want in zip(cases, results, strict=True):
        got = planned_geometry(table, size, boot)
        if got != want:
            bad.append(f"{table} {size} bytes bootSize {boot}: parted {want}, pydiskimg {got}")
    assert not bad, "\n".join(bad)


# -- the DESIGN.md table (measured with parted) --------------------------------------------------

DESIGN_1000MIB = {
    "legacy": [(1, 2048, 2048 + 2043904 - 1)],
    "legacy+gpt": [(1, 2048, 4095), (2, 4096, 4096 + 2041856 - 1)],
    "efi": [(1, 16384, 16384 + 483328 - 1), (2, 499712, 499712 + 1546240 - 1)],
    "hybrid": [(1, 16384, 16384 + 483328 - 1), (2, 34, 34 + 2015 - 1), (3, 499712, 499712 + 1546240 - 1)],
    "efixbootldr": [(1, 16384, 16384 + 188416 - 1), (2, 204800, 204800 + 294912 - 1), (3, 499712, 499712 + 1546240 - 1)],
}


@pytest.mark.parametrize("table", TABLES)
def test_design_table_1000mib(table: str) -> None:
    assert planned_geometry(table, 1000 * MiB) == DESIGN_1000MIB[table]


@need_tools
@pytest.mark.parametrize("table", TABLES)
def test_design_table_is_what_parted_makes(tmp_path: Path, table: str) -> None:
    assert seed_partition(tmp_path / "d.img", table, 1000 * MiB, sgdisk=False)
    assert parted_geometry(tmp_path / "d.img") == DESIGN_1000MIB[table]


# -- sweeps over disk sizes ---------------------------------------------------------------------


def _sizes(table: str, rng: random.Random) -> list[int]:
    m = layout.min_fitting_disk(table)
    sizes = {
        m, m - 512, m + 512, m - 1, m + 1,  # the threshold, in and out, and not whole sectors
        1000 * MiB, 1000 * MiB + 512, 1000 * MiB - 512, 1000 * MiB + 1000, 1001000000,
        -(-m // MiB) * MiB, -(-m // MiB) * MiB + MiB,  # smallest whole MiB that fits
        2 * TiB, 2 * TiB + 17 * 512, 3 * TiB + 5 * MiB + 1234,  # over 2 TiB (legacy: parted fails)
        4 * MiB, 70 * 512, 67 * 512, 1, 0,  # far too small
    }
    if table == "legacy":  # the largest disk the msdos script can partition, and one sector more
        big = layout._max_legacy_sectors() * 512
        sizes |= {big, big + 512, big + 511}
    for _ in range(8):
        sizes.add(rng.randrange(m, 64 * 1024 * MiB) // 512 * 512)
    for _ in range(5):
        sizes.add(rng.randrange(m - 4 * MiB, m + 8 * MiB))
    for _ in range(4):
        sizes.add(rng.randrange(m // MiB, 4096) * MiB)
    return sorted(s for s in sizes if s >= 0)


@need_tools
@pytest.mark.parametrize("table", TABLES)
def test_geometry_matches_parted_over_many_sizes(tmp_path: Path, table: str) -> None:
    rng = random.Random(f"sizes-{table}")
    compare_with_parted(tmp_path, [(table, s, "256M") for s in _sizes(table, rng)])


BOOT_SIZES = ["256M", "100M", "512M", "1G", "300MiB", "255MiB", "333333kB", "9M", "250000000B",
              "600000s", "1.5G", "129MiB", "100kiB", "64M", "1024M", "200mib", "200MIB", "300m"]


# efixbootldr's XBOOTLDR starts at 100MiB: boot sizes around there (parted fails below 100 MiB,
# places unaligned ends for 105M, aligned ones from 106M; plain sectors collide with the root)
XBOOTLDR_BOOT_SIZES = ["100MiB", "101MiB", "104M", "105M", "106M", "104858kB", "204801s", "205000s",
                       "206848s", "100.5MiB", "107.3M", "2T"]


@need_tools
@pytest.mark.parametrize("table", ["efi", "hybrid", "efixbootldr"])
def test_boot_sizes_match_parted(tmp_path: Path, table: str) -> None:
    rng = random.Random(f"boot-{table}")
    cases = []
    for boot in BOOT_SIZES + (XBOOTLDR_BOOT_SIZES if table == "efixbootldr" else []):
        try:
            m = layout.min_fitting_disk(table, boot)
        except UsageError:
            cases.append((table, 2048 * MiB, boot))  # parted must fail too
            continue
        for s in (m, m - 512, m + rng.randrange(1, 1 << 30)):
            cases.append((table, s, boot))
    compare_with_parted(tmp_path, cases)


@pytest.mark.parametrize("table", TABLES)
def test_fits_is_monotonic_past_the_minimum(table: str) -> None:
    """min_fitting_disk relies on it: every size above the minimum fits (checked densely)."""
    m = layout.min_fitting_disk(table) // 512
    for sectors in list(range(m, m + 300)) + list(range(m + 300, m + 10 ** 7, 49999)):
        assert planned_geometry(table, sectors * 512) is not None, sectors
    assert planned_geometry(table, (m - 1) * 512) is None


@pytest.mark.parametrize("table", TABLES)
def test_reserved_space_and_min_disk_size(table: str) -> None:
    reserved = layout.reserved_space(table)
    first = -(-layout.min_fitting_disk(table) // MiB)
    big = 2 * 1024 * 1024 - 7 if table == "legacy" else 3 * 1024 * 1024 + 7  # MBR: under 2 TiB
    for mib in list(range(first + 1, first + 40)) + [1000, 4096, big]:
        lay = layout.plan_layout(table, mib * MiB)
        assert mib * MiB - lay.root_size == reserved, mib
    for need in (1, MiB - 1, MiB, MiB + 1, 100 * MiB + 12345, 10**10):
        disk = layout.min_disk_size(table, "256M", need)
        assert disk % MiB == 0
        assert layout.plan_layout(table, disk).root_size >= need
        smaller = disk - MiB
        if smaller >= layout.min_fitting_disk(table):
            assert layout.plan_layout(table, smaller).root_size < need


def test_too_small_says_the_minimum() -> None:
    m = layout.min_fitting_disk("efi")
    with pytest.raises(DoesNotFitError) as ei:
        layout.plan_layout("efi", m - 512)
    assert ei.value.needed == m
    assert str(m) in str(ei.value) and "diskSize" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_boot_size_too_small_says_the_minimum() -> None:
    with pytest.raises(UsageError, match=r"bootSize.*'8M'.*at least '9M'"):
        layout.plan_layout("efi", 1000 * MiB, "8M")
    # and 9M really is the smallest whole MB parted accepts (checked against parted below)
    layout.plan_layout("efi", 1000 * MiB, "9M")


def test_efixbootldr_boot_size_up_to_100mib_is_one_line() -> None:
    for boot in ("100MiB", "100M", "104857600B", "204800s", "64M"):
        with pytest.raises(UsageError, match=r"^bootSize \(--boot-size\): .*efixbootldr.*more than 100 MiB") as ei:
            layout.plan_layout("efixbootldr", 1000 * MiB, boot)
        assert "\n" not in str(ei.value)


@need_tools
def test_efixbootldr_boot_size_limit_agrees_with_parted(tmp_path: Path) -> None:
    # parted itself fails at 100 MiB and below, and succeeds just above
    for boot in ("100MiB", "100M", "104857600B", "204800s"):
        assert not seed_partition(tmp_path / "a.img", "efixbootldr", 1000 * MiB, boot, sgdisk=False), boot
    assert seed_partition(tmp_path / "b.img", "efixbootldr", 1000 * MiB, "101MiB", sgdisk=False)
    assert planned_geometry("efixbootldr", 1000 * MiB, "101MiB") == parted_geometry(tmp_path / "b.img")


@need_tools
def test_boot_size_minimum_agrees_with_parted(tmp_path: Path) -> None:
    assert not seed_partition(tmp_path / "a.img", "efi", 1000 * MiB, "8M", sgdisk=False)
    assert seed_partition(tmp_path / "b.img", "efi", 1000 * MiB, "9M", sgdisk=False)
