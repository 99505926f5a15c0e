"""Sizes read as the seed's tools read them: truncate -s (diskSize), numfmt --from=iec
(additionalSpace), parted (bootSize).  Expected values come from the tools themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pydiskimg.errors import UsageError
from pydiskimg.sizes import parse_boot_size, parse_disk_size, parse_iec

TRUNCATE_OK = ["1K", "1k", "1KB", "1KiB", "1kB", "1KD", "1m", "1M", "1MB", "1MiB", "3g", "2G", "2GB",
               "1t", "1T", "1TB", "17", "0K", "1000001KB", "3221225473K", "+5K", " 7M"]
TRUNCATE_BAD = ["1.5G", "1b", "1B", "1c", "12Mi", "1Kib", "-1M", "1 G", "G", "", "1GiBx", "0x10M"]


@pytest.mark.skipif(not shutil.which("truncate"), reason="coreutils truncate")
@pytest.mark.parametrize("text", TRUNCATE_OK)
def test_disk_size_as_truncate_reads_it(tmp_path: Path, text: str) -> None:
    f = tmp_path / "t"
    # a bare integer is MiB, as the seed runs truncate -s ${diskSize}M
    arg = text + "M" if text.strip().lstrip("+").isdigit() else text
    subprocess.run(["truncate", "-s", arg, str(f)], check=True)
    assert parse_disk_size(text, "diskSize") == os.path.getsize(f)


@pytest.mark.parametrize("text", TRUNCATE_BAD)
def test_disk_size_errors_name_the_field(text: str) -> None:
    with pytest.raises(UsageError, match=r"^diskSize \(--disk-size\): "):
        parse_disk_size(text, "diskSize (--disk-size)")


@pytest.mark.skipif(not shutil.which("truncate"), reason="coreutils truncate")
@pytest.mark.parametrize("text", ["1.5G", "1b", "12Mi", "-1M", "1Kib"])
def test_truncate_refuses_them_too(tmp_path: Path, text: str) -> None:
    r = subprocess.run(["truncate", "-s", text, str(tmp_path / "t")], capture_output=True)
    assert r.returncode != 0 or text == "-1M"  # truncate -s -1M shrinks an existing file; refused here


def test_disk_size_int_is_mib_and_huge_is_refused() -> None:
    assert parse_disk_size(1000) == 1000 << 20
    with pytest.raises(UsageError, match="too large"):
        parse_disk_size("9E")


IEC_OK = ["1K", "1.5K", "1.1K", "1M", "256M", "512M", "1G", "0.5M", "5", "1.0000001K", "3T", "0", ".5K", " 2K", "7.0K"]
IEC_BAD = ["1k", "1KB", "1KiB", "1Ki", "1m", "-1K", "1 K", "K", "1e3", "", "7.K"]


@pytest.mark.skipif(not shutil.which("numfmt"), reason="coreutils numfmt")
@pytest.mark.parametrize("text", IEC_OK)
def test_iec_as_numfmt_reads_it(text: str) -> None:
    out = subprocess.run(["numfmt", "--from=iec", text], check=True, capture_output=True, text=True).stdout
    assert parse_iec(text, "additionalSpace") == int(out)


@pytest.mark.skipif(not shutil.which("numfmt"), reason="coreutils numfmt")
@pytest.mark.parametrize("text", IEC_BAD)
def test_iec_errors(text: str) -> None:
    with pytest.raises(UsageError, match=r"^additionalSpace: "):
        parse_iec(text, "additionalSpace")
    if text not in ("-1K", ""):  # numfmt reads negatives; we refuse them
        r = subprocess.run(["numfmt", "--from=iec", text], capture_output=True, text=True)
        assert r.returncode != 0 or not r.stdout.strip().isdigit()  # "1 K": numfmt leaves " K" as is


@pytest.mark.parametrize(("text", "sector", "radius", "iec"), [
    ("256M", 500000, 976, False),  # 256 MB, within ±976 sectors: lands on 244 MiB
    ("100M", 195312, 976, False),
    ("256MiB", 524288, 0, True),
    ("1G", 1953125, 976561, False),
    ("600000s", 600000, 0, False),
    ("250000000B", 488281, 0, False),
    ("333333kB", 651041, 0, False),
    ("129", 251953, 976, False),  # no unit: MB
])
def test_boot_size_as_parted_reads_it(text: str, sector: int, radius: int, iec: bool) -> None:
    loc = parse_boot_size(text)
    assert (loc.sector(), loc.radius(), loc.iec) == (sector, radius, iec)


@pytest.mark.parametrize("text", ["256X", "0.5M", "0", "1cyl", "10%", "256 M", "-5M", "M"])
def test_boot_size_errors(text: str) -> None:
    with pytest.raises(UsageError, match=r"^bootSize"):
        parse_boot_size(text)
