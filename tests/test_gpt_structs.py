"""Every on-disk structure's field offsets and sizes, from the UEFI specification's tables,
and the numpy entry dtype against its construct declaration."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from pydiskimg.gpt.structs import GPT_ENTRY_DTYPE, GPTHeader, GPTPartitionEntry
from pydiskimg.gpt.write import build_entry_array
from pydiskimg.layout import Partition
from pydiskimg.mbr.structs import MBR, MBRPartitionRecord


def layout_of(struct) -> list[tuple[str, int, int]]:
    out, off = [], 0
    for sc in struct.subcons:
        if sc.name is None:  # padding
            off += sc.sizeof()
            continue
        n = sc.sizeof()
        out.append((sc.name, off, n))
        off += n
    return out


# (structure, [(field, offset, size)], total) — UEFI 2.x Tables 5-1, 5-2, 5-5, 5-6
SPEC = [
    (GPTHeader, [
        ("Signature", 0, 8), ("Revision", 8, 4), ("HeaderSize", 12, 4), ("HeaderCRC32", 16, 4),
        ("Reserved", 20, 4), ("MyLBA", 24, 8), ("AlternateLBA", 32, 8), ("FirstUsableLBA", 40, 8),
        ("LastUsableLBA", 48, 8), ("DiskGUID", 56, 16), ("PartitionEntryLBA", 72, 8),
        ("NumberOfPartitionEntries", 80, 4), ("SizeOfPartitionEntry", 84, 4),
        ("PartitionEntryArrayCRC32", 88, 4),
    ], 92),
    (GPTPartitionEntry, [
        ("PartitionTypeGUID", 0, 16), ("UniquePartitionGUID", 16, 16), ("StartingLBA", 32, 8),
        ("EndingLBA", 40, 8), ("Attributes", 48, 8), ("PartitionName", 56, 72),
    ], 128),
    (MBR, [
        ("BootCode", 0, 440), ("UniqueMBRDiskSignature", 440, 4), ("Unknown", 444, 2),
        ("PartitionRecord", 446, 64), ("Signature", 510, 2),
    ], 512),
    (MBRPartitionRecord, [
        ("BootIndicator", 0, 1), ("StartingCHS", 1, 3), ("OSType", 4, 1), ("EndingCHS", 5, 3),
        ("StartingLBA", 8, 4), ("SizeInLBA", 12, 4),
    ], 16),
]


@pytest.mark.parametrize(("struct", "fields", "total"), SPEC, ids=["GPTHeader", "GPTPartitionEntry", "MBR", "MBRPartitionRecord"])
def test_field_offsets_and_sizes_follow_the_spec(struct, fields, total) -> None:
    assert layout_of(struct) == fields
    assert struct.sizeof() == total


def test_entry_dtype_matches_declaration() -> None:
    assert GPT_ENTRY_DTYPE.itemsize == GPTPartitionEntry.sizeof() == 128
    for name, off, size in layout_of(GPTPartitionEntry):
        assert GPT_ENTRY_DTYPE.fields[name][1] == off
        assert GPT_ENTRY_DTYPE.fields[name][0].itemsize == size


def test_numpy_row_is_byte_identical_to_construct_row() -> None:
    p = Partition(3, 499712, 2045951, "root", uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
                  uuid.UUID("F222513B-DED1-49FA-B591-20CE86A2FE7F"), "primary ñ 𝄞", 0x8000000000000005)
    row = GPTPartitionEntry.build({
        "PartitionTypeGUID": p.type_guid.bytes_le,
        "UniquePartitionGUID": p.unique_guid.bytes_le,
        "StartingLBA": p.first_lba,
        "EndingLBA": p.last_lba,
        "Attributes": p.attributes,
        "PartitionName": p.name.encode("utf-16-le").ljust(72, b"\0"),
    })
    array = build_entry_array([p])
    assert array[2 * 128 : 3 * 128] == row
    assert array[: 2 * 128] == bytes(256) and array[3 * 128 :] == bytes(125 * 128)
    # and parsing the row with the dtype gives the fields back
    parsed = np.frombuffer(row, dtype=GPT_ENTRY_DTYPE)[0]
    assert int(parsed["StartingLBA"]) == p.first_lba and int(parsed["Attributes"]) == p.attributes


def test_a_one_byte_change_is_seen() -> None:
    """The comparison above can fail: flip one byte of the name."""
    p = Partition(1, 34, 100, "root", uuid.UUID(int=1), uuid.UUID(int=2), "a")
    q = Partition(1, 34, 100, "root", uuid.UUID(int=1), uuid.UUID(int=2), "b")
    assert build_entry_array([p]) != build_entry_array([q])


def test_well_known_type_guids_on_disk() -> None:
    """FORMATS.md C: on-disk (mixed-endian) bytes checked against sgdisk."""
    assert uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B").bytes_le.hex() == "28732ac11ff8d211ba4b00a0c93ec93b"
    assert uuid.UUID("21686148-6449-6E6F-744E-656564454649").bytes_le == b"Hah!IdontNeedEFI"
