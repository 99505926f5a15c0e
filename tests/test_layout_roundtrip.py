"""Property tests: any valid layout written, then read back, is equal (both ways); and the
reference tools (sgdisk -v, sfdisk --verify) accept what was written."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pydiskimg import layout
from pydiskimg.io import Image
from pydiskimg.layout import DiskLayout, Partition, classify, infer_role

TYPES = [layout.ESP_TYPE, layout.BIOS_BOOT_TYPE, layout.LINUX_FS_TYPE, *layout.ROOT_TYPES,
         uuid.UUID("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F")]
uuids = st.builds(lambda i: uuid.UUID(int=i), st.integers(0, (1 << 128) - 1))
# GPT names: NUL-terminated, at most 36 UTF-16 code units, no lone surrogates
names = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=36).filter(
    lambda s: len(s.encode("utf-16-le")) <= 72)


@st.composite
def intervals(draw, lo: int, hi: int, max_n: int) -> list[tuple[int, int]]:
    n = draw(st.integers(0, min(max_n, (hi - lo + 1) // 2)))
    points = sorted(draw(st.lists(st.integers(lo, hi), min_size=2 * n, max_size=2 * n, unique=True)))
    return [(points[2 * i], points[2 * i + 1]) for i in range(n)]


@st.composite
def gpt_layouts(draw) -> DiskLayout:
    sectors = draw(st.one_of(st.integers(68, 100_000), st.integers(68, 1 << 34)))
    disk_bytes = sectors * 512 + draw(st.integers(0, 511))
    spans = draw(intervals(34, sectors - 34, 6))
    numbers = draw(st.lists(st.integers(1, 128), min_size=len(spans), max_size=len(spans), unique=True))
    parts = []
    for (first, last), num in zip(spans, numbers, strict=True):
        t = draw(st.one_of(st.sampled_from(TYPES), uuids.filter(lambda u: u.int != 0)))
        parts.append(Partition(num, first, last, infer_role(t), t, draw(uuids), draw(names),
                               draw(st.integers(0, (1 << 64) - 1))))
    parts.sort(key=lambda p: p.number)
    return DiskLayout(classify("gpt", tuple(parts)), disk_bytes, draw(uuids), None, tuple(parts))


@st.composite
def mbr_layouts(draw) -> DiskLayout:
    sectors = draw(st.one_of(st.integers(2, 100_000), st.integers(2, 1 << 32)))
    spans = draw(intervals(1, sectors - 1, 4))
    numbers = draw(st.lists(st.integers(1, 4), min_size=len(spans), max_size=len(spans), unique=True))
    parts = []
    for (first, last), num in zip(spans, numbers, strict=True):
        t = draw(st.integers(1, 255).filter(lambda x: x != 0xEE))
        parts.append(Partition(num, first, last, infer_role(mbr_type=t), mbr_type=t, bootable=draw(st.booleans())))
    parts.sort(key=lambda p: p.number)
    return DiskLayout("legacy", sectors * 512, None, draw(st.integers(0, (1 << 32) - 1)), tuple(parts))


def _roundtrip(lay: DiskLayout) -> DiskLayout:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rt.img"
        img = Image.create(path, lay.disk_bytes)
        layout.write_table(img, lay)
        img.close()
        return layout.read_table(path)


@settings(max_examples=60, deadline=None)
@given(lay=st.one_of(gpt_layouts(), mbr_layouts()))
def test_write_read_roundtrip(lay: DiskLayout) -> None:
    back = _roundtrip(lay)
    assert back == lay and lay == back


def test_roundtrip_check_fails_on_a_one_byte_change() -> None:
    """The comparison above is not vacuous: change one byte of a name."""
    lay = layout.plan_layout("efi", 1000 << 20)
    back = _roundtrip(lay)
    renamed = tuple(Partition(**{**p.__dict__, "name": p.name.replace("E", "F")}) for p in lay.partitions)
    assert back != DiskLayout(lay.table, lay.disk_bytes, lay.disk_guid, None, renamed)


need = pytest.mark.skipif(not (shutil.which("sgdisk") and shutil.which("sfdisk")), reason="gdisk and fdisk are needed (CI installs them)")


@need
@settings(max_examples=25, deadline=None)
@given(lay=gpt_layouts())
def test_reference_tools_accept_random_gpt(lay: DiskLayout) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.img"
        img = Image.create(path, lay.disk_bytes)
        layout.write_table(img, lay)
        img.close()
        v = subprocess.run(["sgdisk", "-v", str(path)], capture_output=True, text=True)
        assert v.returncode == 0 and "No problems found" in v.stdout, v.stdout
        s = subprocess.run(["sfdisk", "--verify", str(path)], capture_output=True, text=True)
        assert s.returncode == 0 and "No errors detected" in s.stdout, s.stdout + s.stderr


@need
@settings(max_examples=25, deadline=None)
@given(lay=mbr_layouts())
def test_reference_tools_accept_random_mbr(lay: DiskLayout) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.img"
        img = Image.create(path, lay.disk_bytes)
        layout.write_table(img, lay)
        img.close()
        s = subprocess.run(["sfdisk", "--verify", str(path)], capture_output=True, text=True)
        assert s.returncode == 0 and "No errors detected" in s.stdout, s.stdout + s.stderr


@settings(max_examples=60, deadline=None)
@given(table=st.sampled_from(["legacy", "legacy+gpt", "efi", "hybrid", "efixbootldr"]),
       extra=st.integers(0, 1 << 40), boot_mb=st.integers(9, 4000),
       seed=st.one_of(st.none(), uuids))
def test_planned_layouts_roundtrip(table: str, extra: int, boot_mb: int, seed: uuid.UUID | None) -> None:
    boot = f"{max(boot_mb, 106) if table == 'efixbootldr' else boot_mb}M"  # XBOOTLDR starts at 100 MiB
    disk = layout.min_fitting_disk(table, boot) + extra
    if table == "legacy":
        disk = min(disk, layout._max_legacy_sectors() * 512)
    lay = layout.plan_layout(table, disk, boot, seed=seed)
    back = _roundtrip(lay)
    assert back.partitions == lay.partitions and back.table == table
    assert back.disk_guid == lay.disk_guid and back.mbr_signature == lay.mbr_signature
