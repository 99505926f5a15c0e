"""Directory hashes against debugfs ``dx_hash`` (e2fsprogs' ext2fs_dirhash) for every algorithm,
both signedness variants, random names (UTF-8 and bytes >= 0x80), a real seed and the zero
seed; the numpy path against the scalar one."""

from __future__ import annotations

import random
import re
import struct
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ext4_records_tools import HASH_SEED, debugfs, mkfs, needs_e2fsprogs

from pydiskimg.errors import UsageError
from pydiskimg.ext4.dirhash import dx_hash, dx_hash_many

#: bytes debugfs' command parser passes through unchanged in a bare word
_SAFE = bytes(b for b in range(0x21, 0x100) if b not in b"\"'\\/#")
_ZERO = "00000000-0000-0000-0000-000000000000"


def _random_names(rng: random.Random, n: int) -> list[bytes]:
    names: set[bytes] = set()
    words = ["straße", "ü", "日本語", "ß", "naïve", "☃", "file", "lib", ".so", "-x"]
    while len(names) < n:
        kind = rng.random()
        if kind < 0.3:
            ln = rng.choice([1, 2, 3, 4, 5, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200, 255])
            name = bytes(rng.choice(_SAFE) for _ in range(ln))
        elif kind < 0.6:
            name = "".join(rng.choice(words) for _ in range(rng.randint(1, 12))).encode()
        else:
            name = bytes(rng.choice(_SAFE) for _ in range(rng.randint(1, 80)))
        name = name[:255]
        if name.startswith(b"-"):
            name = b"x" + name[:254]
        names.add(name)
    return sorted(names)


def _seed_words(u: str) -> tuple[int, int, int, int]:
    return struct.unpack("<4I", uuid.UUID(u).bytes)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def blank_img(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mkfs(None, tmp_path_factory.mktemp("dxhash") / "blank.img", "8M")


def _debugfs_hashes(img: Path, names: list[bytes], alg: int, seed: str) -> list[tuple[int, int]]:
    cmds = [b"dx_hash -h HASHALG_%d -s %s " % (alg, seed.encode()) + n for n in names]
    out = debugfs(img, *cmds)
    got = [
        (int(m.group(1), 16), int(m.group(2), 16))
        for m in re.finditer(rb"^Hash of .* is (0x[0-9a-f]+) \(minor (0x[0-9a-f]+)\)$", out, re.M)
    ]
    assert len(got) == len(names)
    return got


@needs_e2fsprogs
@pytest.mark.parametrize("version", [0, 1, 2])
@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize("seed", [HASH_SEED, _ZERO])
def test_against_debugfs(blank_img: Path, version: int, unsigned: bool, seed: str) -> None:
    rng = random.Random(version * 10 + unsigned + (seed == _ZERO) * 100)
    names = _random_names(rng, 250)
    # e2fsprogs numbers the unsigned variants 3, 4, 5
    expected = _debugfs_hashes(blank_img, names, version + 3 * unsigned, seed)
    words = _seed_words(seed)
    major, minor = dx_hash_many(names, version, words, unsigned)
    for i, (name, (em, en)) in enumerate(zip(names, expected, strict=True)):
        if em == 0xFFFFFFFE:  # e2fsprogs skips the kernel's EOF adjustment
            em = 0xFFFFFFFC
        assert dx_hash(name, version, words, unsigned) == (em, en), name
        assert (int(major[i]), int(minor[i])) == (em, en), name


@needs_e2fsprogs
def test_signedness_matters(blank_img: Path) -> None:
    """Negative control: names with bytes >= 0x80 hash differently in the other variant."""
    names = [f"äöü-{i}" for i in range(50)]
    enc = [n.encode() for n in names]
    expected = _debugfs_hashes(blank_img, enc, 1, HASH_SEED)
    words = _seed_words(HASH_SEED)
    wrong = sum(dx_hash(n, 1, words, True) != e for n, e in zip(enc, expected, strict=True))
    assert wrong >= 45


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.binary(min_size=0, max_size=255), min_size=1, max_size=40),
    version=st.sampled_from([0, 1, 2]),
    unsigned=st.booleans(),
    seed=st.tuples(*[st.integers(0, 0xFFFFFFFF)] * 4),
)
def test_many_equals_one(
    names: list[bytes], version: int, unsigned: bool, seed: tuple[int, int, int, int]
) -> None:
    major, minor = dx_hash_many(names, version, seed, unsigned)
    assert major.dtype == np.uint32 and minor.dtype == np.uint32
    for i, n in enumerate(names):
        assert (int(major[i]), int(minor[i])) == dx_hash(n, version, seed, unsigned)


def test_empty_and_bad_version() -> None:
    m, n = dx_hash_many([], 1, (0, 0, 0, 0), False)
    assert len(m) == len(n) == 0
    with pytest.raises(UsageError):
        dx_hash(b"x", 3, (0, 0, 0, 0), False)
    with pytest.raises(UsageError):
        dx_hash_many([b"x"], 7, (0, 0, 0, 0), False)
