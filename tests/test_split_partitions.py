"""``pydiskimg split``: every output equals ``dd`` of the same sectors; sparse; manifest agrees
with sfdisk --json; qcow2 input gives the same files; bad input exits 2."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from test_audit_images import (  # noqa: F401  (fixtures)
    Disk,
    audit_trees_fixture,
    extract,
    gpt_disk_fixture,
    mbr_disk_fixture,
    needs_tools,
    run,
)

pytestmark = needs_tools


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pydiskimg", *args], capture_output=True,
                          text=True, check=False)


def _dd_all(image: Path, tmp: Path) -> dict[str, bytes]:
    """What the seed's fdisk + dd recipe cuts, per file name, using sfdisk --json."""
    t = json.loads(run("sfdisk", "--json", str(image)))["partitiontable"]
    out = {}
    for i, p in enumerate(t["partitions"], start=1):
        n = int(p["node"].rsplit("img", 1)[1]) if "node" in p else i
        out[f"part{n}.img"] = extract(image, p["start"] * 512, p["size"] * 512,
                                      tmp / f"dd{n}").read_bytes()
    out["mbr.bin"] = extract(image, 0, 512, tmp / "dd-mbr").read_bytes()
    if t["label"] == "gpt":
        sectors = os.path.getsize(image) // 512
        out["gpt-primary.bin"] = extract(image, 512, 33 * 512, tmp / "dd-p").read_bytes()
        out["gpt-backup.bin"] = extract(image, (sectors - 33) * 512, 33 * 512,
                                        tmp / "dd-b").read_bytes()
    return out


def test_gpt_split_equals_dd(gpt_disk: Disk, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = cli("split", str(gpt_disk.path), str(out))
    assert p.returncode == 0, p.stderr
    expected = _dd_all(gpt_disk.path, tmp_path)
    names = sorted(os.listdir(out))
    assert names == sorted([*expected, "manifest.json"])
    for name, data in expected.items():
        assert (out / name).read_bytes() == data, name
    m = json.loads((out / "manifest.json").read_text())
    t = json.loads(run("sfdisk", "--json", str(gpt_disk.path)))["partitiontable"]
    assert m["table"] == "gpt" and m["disk_guid"] == t["id"]
    parts = [f for f in m["files"] if f["file"].startswith("part")]
    assert [(f["first_lba"], f["last_lba"] - f["first_lba"] + 1, f["type"], f["guid"], f["name"])
            for f in parts] == [(p["start"], p["size"], p["type"], p["uuid"], p["name"])
                                for p in t["partitions"]]
    for f in m["files"]:
        assert f["sha256"] == hashlib.sha256(expected[f["file"]]).hexdigest()
    # sparse: the mostly empty ext4 partition does not occupy its full size
    st = os.stat(out / "part2.img")
    assert st.st_blocks * 512 < st.st_size


def test_mbr_split_equals_dd(mbr_disk: Disk, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("split", str(mbr_disk.path), str(out)).returncode == 0
    expected = _dd_all(mbr_disk.path, tmp_path)
    assert sorted(os.listdir(out)) == sorted([*expected, "manifest.json"])
    for name, data in expected.items():
        assert (out / name).read_bytes() == data, name
    m = json.loads((out / "manifest.json").read_text())
    assert m["table"] == "mbr" and m["disk_signature"] == "0x12345678"
    assert [f.get("bootable") for f in m["files"] if f["file"].startswith("part")] == [True, False]


def test_split_of_qcow2_equals_split_of_raw(gpt_disk: Disk, tmp_path: Path) -> None:
    q = tmp_path / "d.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", str(gpt_disk.path), str(q))
    assert cli("split", str(gpt_disk.path), str(tmp_path / "r")).returncode == 0
    assert cli("split", str(q), str(tmp_path / "q")).returncode == 0
    for name in os.listdir(tmp_path / "r"):
        if name != "manifest.json":
            assert (tmp_path / "r" / name).read_bytes() == (tmp_path / "q" / name).read_bytes()
    assert not [n for n in os.listdir(tmp_path) if "pydiskimg" in n]


def test_split_refuses_nonempty_dir_and_no_table(gpt_disk: Disk, tmp_path: Path) -> None:
    d = tmp_path / "full"
    d.mkdir()
    (d / "x").write_bytes(b"")
    p = cli("split", str(gpt_disk.path), str(d))
    assert p.returncode == 2 and p.stderr.startswith("pydiskimg: error: ") and "not empty" in p.stderr
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    p = cli("split", str(blank), str(tmp_path / "o2"))
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
