"""Identifiers: systemd-repart's derivation (vector from DESIGN.md, checked with systemd-repart),
the seed's defaults as sgdisk writes them, the documented MBR signature."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pydiskimg import ids, layout

SEED = "0867da16-f251-457d-a9e8-c31f9a3c220b"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"


def test_systemd_repart_vector() -> None:
    assert str(ids.repart_partition_uuid(SEED, ESP)) == "dac4058a-2fc0-4808-a7ef-b8b4501c00ce"
    assert str(ids.repart_partition_uuid(SEED, ROOT_X86_64)) == "57bd1ad1-c688-450a-ba37-d1792ec72fbb"
    assert str(ids.repart_disk_uuid(SEED)) == "b581fef7-24ed-4f31-990b-099ec86bba03"


def test_later_partitions_of_a_type_use_the_counter() -> None:
    s, t = uuid.UUID(SEED), uuid.UUID(ESP)
    b = bytearray(hmac.new(s.bytes, t.bytes + (1).to_bytes(8, "little"), hashlib.sha256).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    assert ids.repart_partition_uuid(s, t, 1) == uuid.UUID(bytes=bytes(b))
    assert ids.repart_partition_uuid(s, t, 1) != ids.repart_partition_uuid(s, t, 0)


def test_fs_uuid_and_fat_volume_id() -> None:
    part = uuid.UUID("dac4058a-2fc0-4808-a7ef-b8b4501c00ce")
    fs = ids.repart_fs_uuid(part)
    assert fs == ids.hmac_v4(part.bytes, b"file-system-uuid")
    assert fs.version == 4
    assert ids.fat_volume_id(fs) == int(fs.hex[:8], 16)


def test_mbr_signature_formula() -> None:
    g = ids.SEED_DISK_GUID
    want = int.from_bytes(hmac.new(g.bytes, b"mbr-disk-signature", hashlib.sha256).digest()[:4], "little")
    assert ids.mbr_signature(g) == want == 0x37251638
    assert layout.plan_layout("legacy", 1000 << 20).mbr_signature == want


@pytest.mark.skipif(not shutil.which("sgdisk"), reason="sgdisk is needed (CI installs it)")
def test_seed_disk_guid_is_what_sgdisk_makes_of_the_seeds_string(tmp_path: Path) -> None:
    img = tmp_path / "d.img"
    subprocess.run(["truncate", "-s", "10M", str(img)], check=True)
    subprocess.run(["sgdisk", "-o", "--disk-guid=97FD5997-D90B-4AA3-8D16-C1723AEA73C", str(img)], check=True, capture_output=True)
    out = subprocess.run(["sgdisk", "-p", str(img)], check=True, capture_output=True, text=True).stdout
    assert f"Disk identifier (GUID): {str(ids.SEED_DISK_GUID).upper()}" in out


def test_seed_derivation_in_layouts() -> None:
    s = uuid.UUID(SEED)
    lay = layout.plan_layout("hybrid", 1000 << 20, seed=s)
    assert lay.disk_guid == ids.repart_disk_uuid(s)
    esp, bios, root = lay.partitions
    assert esp.unique_guid == uuid.UUID("dac4058a-2fc0-4808-a7ef-b8b4501c00ce")
    assert bios.unique_guid == ids.repart_partition_uuid(s, layout.BIOS_BOOT_TYPE)
    assert root.unique_guid == ids.repart_partition_uuid(s, layout.LINUX_FS_TYPE)
    # explicit values win over the seed
    r = uuid.UUID("12345678-9abc-4def-8123-456789abcdef")
    lay2 = layout.plan_layout("efi", 1000 << 20, seed=s, root_gpuid=r, disk_guid=uuid.UUID(int=5))
    assert lay2.root_guid == r and lay2.disk_guid == uuid.UUID(int=5)


def test_defaults_are_the_seeds() -> None:
    lay = layout.plan_layout("legacy+gpt", 1000 << 20)
    assert lay.disk_guid == ids.SEED_DISK_GUID
    assert [p.unique_guid for p in lay.partitions] == [ids.SEED_PART1_GUID, ids.SEED_ROOT_GPUID]


@pytest.mark.parametrize("bad", ["97FD5997-D90B-4AA3-8D16-C1723AEA73C", "97FD5997D90B4AA38D16C1723AEA73CF",
                                 "{97FD5997-F390-0B4A-A3F8-D106C1723AEA}", "97FD5997-F390-0B4A-A3F8-D106C1723AEG", ""])
def test_malformed_guids_are_refused(bad: str) -> None:
    from pydiskimg.errors import UsageError

    with pytest.raises(UsageError, match="rootGPUID"):
        ids.parse_guid(bad, "rootGPUID")
