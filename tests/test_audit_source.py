"""The image source: every format reads back the raw bytes (qemu-img made the conversions)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from test_audit_images import (  # noqa: F401  (fixtures)
    Disk,
    audit_trees_fixture,
    gpt_disk_fixture,
    needs_tools,
    run,
)

from pydiskimg.audit.source import open_image
from pydiskimg.errors import Error

pytestmark = needs_tools


@pytest.mark.parametrize("fmt,opts", [("raw", ()), ("qcow2", ()), ("qcow2", ("-c",)),
                                      ("vdi", ()), ("vpc", ()),
                                      ("vpc", ("-o", "subformat=fixed"))])
def test_formats_read_back_raw(gpt_disk: Disk, tmp_path: Path, fmt: str, opts: tuple[str, ...]) -> None:
    img = tmp_path / f"d.{fmt}"
    run("qemu-img", "convert", *opts[:1] if opts[:1] == ("-c",) else (), "-O", fmt,
        *(opts if opts[:1] == ("-o",) else ()), str(gpt_disk.path), str(img))
    raw = gpt_disk.path.read_bytes()
    def mine() -> set[str]:
        return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("pydiskimg-audit-")}

    before = mine()
    with open_image(img) as s:
        assert s.format == {"vpc": "vhd-fixed" if opts else "vpc"}.get(fmt, fmt)
        data = s.read(0, len(raw))
        assert data == raw
        assert s.read(s.size - 1, 10) == bytes(1)
        # every byte outside the data ranges is zero
        import numpy as np

        zero = np.frombuffer(raw, dtype=np.uint8).copy()
        for off, n in s.data_ranges(0, len(raw)):
            zero[off:off + n] = 0
        assert not zero.any()
    assert mine() <= before  # the temporary conversion (compressed qcow2) is gone


def test_backing_file_refused(gpt_disk: Disk, tmp_path: Path) -> None:
    top = tmp_path / "top.qcow2"
    run("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", str(gpt_disk.path), str(top))
    with pytest.raises(Error, match="backing file"):
        open_image(top)


def test_bad_qcow2_is_one_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + bytes(100))
    with pytest.raises(Error) as e:
        open_image(bad)
    assert "\n" not in str(e.value)
