"""``pydiskimg partition``: bad input gives one line naming the option, exit 2, no output file;
good input gives a sparse image holding only the table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pydiskimg import cli, layout

BAD = [
    (["--partition-table", "gpt", "--disk-size", "1G"], "--partition-table", "none, legacy"),
    (["--partition-table", "efi", "--disk-size", "100M"], "--disk-size", "at least 256999936 bytes"),
    (["--partition-table", "legacy", "--disk-size", "1"], "--disk-size", "at least"),
    (["--partition-table", "legacy+gpt", "--disk-size", "2M"], "--disk-size", "at least"),
    (["--partition-table", "hybrid", "--disk-size", "1G", "--boot-size", "8M"], "--boot-size", "at least '9M'"),
    (["--partition-table", "efi", "--disk-size", "1Q"], "--disk-size", "not a size"),
    (["--partition-table", "efi", "--disk-size", "1G", "--boot-size", "256X"], "--boot-size", "not a size"),
    (["--partition-table", "efi", "--disk-size", "1G", "--root-gpuid", "97FD5997-D90B-4AA3-8D16-C1723AEA73C"], "--root-gpuid", "35 characters"),
    (["--partition-table", "efi", "--disk-size", "1G", "--seed", "not-a-uuid"], "--seed", "not a GUID"),
    (["--partition-table", "efi", "--disk-size", "1G", "--disk-guid", "97FD5997-D90B-4AA3-8D16-C1723AEA73C"], "--disk-guid", "35 characters"),
    (["--partition-table", "legacy", "--disk-size", "3T"], "--disk-size", "too large for the legacy"),
]


@pytest.mark.parametrize(("args", "option", "words"), BAD, ids=[" ".join(a[1::2]) for a, _, _ in BAD])
def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], option: str, words: str) -> None:
    out = tmp_path / "disk.img"
    assert cli.main(["partition", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pydiskimg: error: ") and err.count("\n") == 1
    assert option in err and words in err
    assert os.listdir(tmp_path) == []  # no output, no temporary left behind


def test_bad_input_leaves_an_existing_file_alone(tmp_path: Path) -> None:
    out = tmp_path / "disk.img"
    out.write_bytes(b"precious")
    assert cli.main(["partition", str(out), "--partition-table", "efi", "--disk-size", "10M"]) == 2
    assert out.read_bytes() == b"precious" and os.listdir(tmp_path) == ["disk.img"]


def test_subprocess_exit_status_and_no_traceback(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pydiskimg", "partition", str(tmp_path / "x.img"),
                        "--partition-table", "efi", "--disk-size", "1G", "--root-gpuid",
                        "97FD5997-D90B-4AA3-8D16-C1723AEA73C"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "x.img").exists()


def test_missing_required_option(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pydiskimg", "partition", str(tmp_path / "x.img"), "--disk-size", "1G"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--partition-table" in r.stderr and "Traceback" not in r.stderr


def test_good_image_is_sparse_and_replaced(tmp_path: Path) -> None:
    out = tmp_path / "disk.img"
    out.write_bytes(b"old")
    assert cli.main(["partition", str(out), "--partition-table", "hybrid", "--disk-size", "8G", "--seed",
                     "0867da16-f251-457d-a9e8-c31f9a3c220b"]) == 0
    assert os.path.getsize(out) == 8 << 30
    assert os.stat(out).st_blocks * 512 <= 256 << 10
    lay = layout.read_table(out)
    assert str(lay.partitions[0].unique_guid) == "dac4058a-2fc0-4808-a7ef-b8b4501c00ce"
    assert os.listdir(tmp_path) == ["disk.img"]


def test_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    for p in (a, b):
        assert cli.main(["partition", str(p), "--partition-table", "efi", "--disk-size", "300"]) == 0
    def data(p: Path) -> list[bytes]:  # every data extent's bytes (the rest are holes)
        fd = os.open(p, os.O_RDONLY)
        out, off, size = [], 0, os.path.getsize(p)
        try:
            while off < size:
                try:
                    start = os.lseek(fd, off, os.SEEK_DATA)
                except OSError:
                    break
                end = os.lseek(fd, start, os.SEEK_HOLE)
                out.append(start.to_bytes(8, "little") + os.pread(fd, end - start, start))
                off = end
        finally:
            os.close(fd)
        return out

    assert os.path.getsize(a) == os.path.getsize(b)
    assert data(a) == data(b) and len(data(a)) >= 2


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert cli.main(["partition", str(tmp_path / "a.img"), "--partition-table", "legacy", "--disk-size", "300", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "legacy" and d["mbr_signature"] == "0x37251638"
    assert d["partitions"][0]["first_lba"] == 2048
