"""Every FAT structure: field offsets and sizes from the specification, numpy dtypes equal to
the construct declarations, round trips that notice a one-byte change."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pydiskimg.fat.structs import (
    DIRENT_DTYPE,
    LFN_DTYPE,
    BootSector16,
    BootSector32,
    DirEntry,
    FSInfo,
    LfnEntry,
)


def offsets(st):
    out, off = {}, 0
    for sc in st.subcons:
        out[sc.name] = (off, sc.sizeof())
        off += sc.sizeof()
    return out, off


# [MSFAT] "Boot Sector and BPB" and "FAT32 Structure Starting at Offset 36"
BPB32 = {
    "BS_jmpBoot": (0, 3), "BS_OEMName": (3, 8), "BPB_BytsPerSec": (11, 2), "BPB_SecPerClus": (13, 1),
    "BPB_RsvdSecCnt": (14, 2), "BPB_NumFATs": (16, 1), "BPB_RootEntCnt": (17, 2), "BPB_TotSec16": (19, 2),
    "BPB_Media": (21, 1), "BPB_FATSz16": (22, 2), "BPB_SecPerTrk": (24, 2), "BPB_NumHeads": (26, 2),
    "BPB_HiddSec": (28, 4), "BPB_TotSec32": (32, 4), "BPB_FATSz32": (36, 4), "BPB_ExtFlags": (40, 2),
    "BPB_FSVer": (42, 2), "BPB_RootClus": (44, 4), "BPB_FSInfo": (48, 2), "BPB_BkBootSec": (50, 2),
    "BPB_Reserved": (52, 12), "BS_DrvNum": (64, 1), "BS_Reserved1": (65, 1), "BS_BootSig": (66, 1),
    "BS_VolID": (67, 4), "BS_VolLab": (71, 11), "BS_FilSysType": (82, 8), "BS_BootCode": (90, 420),
    "Signature_word": (510, 2),
}
BPB16_TAIL = {
    "BS_DrvNum": (36, 1), "BS_Reserved1": (37, 1), "BS_BootSig": (38, 1), "BS_VolID": (39, 4),
    "BS_VolLab": (43, 11), "BS_FilSysType": (54, 8), "BS_BootCode": (62, 448), "Signature_word": (510, 2),
}
FSINFO = {
    "FSI_LeadSig": (0, 4), "FSI_Reserved1": (4, 480), "FSI_StrucSig": (484, 4), "FSI_Free_Count": (488, 4),
    "FSI_Nxt_Free": (492, 4), "FSI_Reserved2": (496, 12), "FSI_TrailSig": (508, 4),
}
DIRENT = {
    "DIR_Name": (0, 11), "DIR_Attr": (11, 1), "DIR_NTRes": (12, 1), "DIR_CrtTimeTenth": (13, 1),
    "DIR_CrtTime": (14, 2), "DIR_CrtDate": (16, 2), "DIR_LstAccDate": (18, 2), "DIR_FstClusHI": (20, 2),
    "DIR_WrtTime": (22, 2), "DIR_WrtDate": (24, 2), "DIR_FstClusLO": (26, 2), "DIR_FileSize": (28, 4),
}
LFN = {
    "LDIR_Ord": (0, 1), "LDIR_Name1": (1, 10), "LDIR_Attr": (11, 1), "LDIR_Type": (12, 1),
    "LDIR_Chksum": (13, 1), "LDIR_Name2": (14, 12), "LDIR_FstClusLO": (26, 2), "LDIR_Name3": (28, 4),
}


@pytest.mark.parametrize(
    "st,table,size",
    [
        (BootSector32, BPB32, 512),
        (BootSector16, {**{k: v for k, v in BPB32.items() if v[0] < 36}, **BPB16_TAIL}, 512),
        (FSInfo, FSINFO, 512),
        (DirEntry, DIRENT, 32),
        (LfnEntry, LFN, 32),
    ],
    ids=["boot32", "boot16", "fsinfo", "dirent", "lfn"],
)
def test_offsets_and_sizes(st, table, size):
    got, total = offsets(st)
    assert got == table
    assert total == size == st.sizeof()


@pytest.mark.parametrize("st,dtype", [(DirEntry, DIRENT_DTYPE), (LfnEntry, LFN_DTYPE)], ids=["dirent", "lfn"])
def test_dtype_matches_declaration(st, dtype):
    assert dtype.itemsize == st.sizeof()
    assert list(dtype.names) == [sc.name for sc in st.subcons]
    rng = np.random.default_rng(7)
    for _ in range(20):
        raw = rng.integers(0, 256, st.sizeof(), dtype=np.uint8).tobytes()
        row = np.frombuffer(raw, dtype=dtype)[0]
        parsed = st.parse(raw)
        for name in dtype.names:
            v = row[name]
            want = parsed[name]
            if isinstance(want, bytes):
                assert bytes(v) == want, name
            else:
                assert int(v) == want, name
        # and build(parse) gives the same bytes as the numpy row
        assert st.build(parsed) == row.tobytes() == raw


def roundtrip(st, raw: bytes) -> None:
    """parse then build gives the bytes back, and build then parse gives the values back."""
    parsed = st.parse(raw)
    assert st.build(parsed) == raw
    again = st.parse(st.build(parsed))
    assert {k: v for k, v in again.items() if not k.startswith("_")} == {
        k: v for k, v in parsed.items() if not k.startswith("_")
    }


@pytest.mark.parametrize("st", [BootSector32, BootSector16, FSInfo, DirEntry, LfnEntry], ids=lambda s: str(s.sizeof()))
def test_roundtrip_notices_one_byte(st):
    raw = os.urandom(st.sizeof())
    roundtrip(st, raw)
    # the comparison is real: flip one byte anywhere and the parsed values differ
    for pos in (0, st.sizeof() // 2, st.sizeof() - 1):
        changed = bytearray(raw)
        changed[pos] ^= 0x01
        assert st.parse(bytes(changed)) != st.parse(raw)
