"""Random trees (Hypothesis): fsck.fat -n silent, mtools reads back every name, byte and time."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from fatcheck import assert_fsck_silent, digest, mdir, mtools_extract
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydiskimg import fat
from pydiskimg.fat.names import fold
from pydiskimg.tree import scan

# letters of both cases, digits, spaces, dots and the characters short names must replace;
# non-ASCII from the BMP (mtools mishandles surrogate pairs, see test_fat_names)
ALPHABET = st.sampled_from(list("abcXYZ019 .~+,;=[]'-_") + ["é", "Ü", "ß", "日", "Ω"])


def valid(name: str) -> bool:
    return name not in (".", "..") and name[-1] not in ". " and name.strip(". ") != ""


NAMES = st.text(ALPHABET, min_size=1, max_size=40).filter(valid)


@st.composite
def trees(draw, depth: int = 0):
    """{name: bytes | subtree}, names unique once case is ignored (FAT folders ignore case)."""
    n = draw(st.integers(0, 12 if depth == 0 else 6))
    out: dict[str, object] = {}
    seen: set[str] = set()
    for _ in range(n):
        name = draw(NAMES)
        if fold(name) in seen:
            continue
        seen.add(fold(name))
        if depth < 3 and draw(st.booleans()) and draw(st.booleans()):
            out[name] = draw(trees(depth + 1))
        else:
            size = draw(st.sampled_from([0, 1, 511, 512, 513, 4096, 5000]))
            out[name] = draw(st.binary(min_size=size, max_size=size)) if size < 600 else os.urandom(size)
    return out


def materialize(root: Path, tree: dict, when: list[int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, v in tree.items():
        p = root / name
        if isinstance(v, dict):
            materialize(p, v, when)
        else:
            p.write_bytes(v)
        t = when[len(name) % len(when)]
        os.utime(p, (t, t))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(trees(), st.lists(st.integers(315532800, 4_000_000_000), min_size=1, max_size=4))
def test_random_trees(tree, when):
    d = Path(tempfile.mkdtemp(prefix="fatrand"))
    try:
        src = d / "src"
        materialize(src, tree, when)
        img = d / "esp.img"
        fat.make_fat(scan(src), img, 33 << 20, fat.FatOptions())
        assert_fsck_silent(img)
        names = {p for p in mdir(img)}
        expect = {"/" + str(p.relative_to(src)) for p in src.rglob("*")}
        assert names == expect
        out = mtools_extract(img, d / "out")
        assert digest(out, mtimes=True) == digest(src, mtimes=True)
    finally:
        shutil.rmtree(d)
