"""``inspect --json`` agrees with ``sfdisk --json`` and ``parted -m unit s print``, on images
written by pydiskimg and on images written by the seed's own commands (one check function for
both, pycdlib's pattern); ``sgdisk -v`` and ``sfdisk --verify`` are clean on every table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from test_layout_seedref import need_tools, seed_partition

from pydiskimg import cli

MiB = 1 << 20
MATRIX = [(t, s) for t in ("legacy", "legacy+gpt", "efi", "hybrid", "efixbootldr") for s in ("1000M", "3M", "246M", "4097M", "2T", "1000001KB")] + [(t, "3221225473K") for t in ("legacy+gpt", "efi", "hybrid", "efixbootldr")]
MATRIX = [(t, s) for t, s in MATRIX if not (t in ("efi", "hybrid", "efixbootldr") and s == "3M")]


def _inspect(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert cli.main(["inspect", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def check_table(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """inspect --json against sfdisk --json and parted -m, plus sgdisk -v / sfdisk --verify."""
    d = _inspect(path, capsys)
    sf = json.loads(subprocess.run(["sfdisk", "--json", str(path)], check=True, capture_output=True, text=True).stdout)["partitiontable"]
    scheme = d["table"]["scheme"]
    assert sf["label"] == {"gpt": "gpt", "mbr": "dos"}[scheme]
    assert len(sf["partitions"]) == len(d["partitions"])
    sf_parts = {int(p["node"].rsplit("img", 1)[1]): p for p in sf["partitions"]}
    for p in d["partitions"]:
        s = sf_parts[p["number"]]
        assert (s["start"], s["size"]) == (p["first_lba"], p["sectors"])
        if scheme == "gpt":
            assert s["type"] == p["type"] and s["uuid"] == p["guid"] and s.get("name", "") == p["name"]
        else:
            assert int(s["type"], 16) == int(p["type"], 16)
            assert s.get("bootable", False) == ("boot" in p["flags"])
    if scheme == "gpt":
        assert sf["id"] == d["table"]["disk_guid"]
        assert (sf["firstlba"], sf["lastlba"]) == (34, d["table"]["disk_sectors"] - 34)
        v = subprocess.run(["sgdisk", "-v", str(path)], capture_output=True, text=True)
        assert v.returncode == 0 and "No problems found" in v.stdout
    else:
        assert int(sf["id"], 16) == int(d["table"]["mbr_signature"], 16)
    ver = subprocess.run(["sfdisk", "--verify", str(path)], capture_output=True, text=True)
    assert ver.returncode == 0 and "No errors detected" in ver.stdout
    out = subprocess.run(["parted", "-m", "-s", str(path), "unit", "s", "print"], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    disk = lines[1].rstrip(";").split(":")
    assert int(disk[1].rstrip("s")) == d["size"] // 512 and disk[5] == {"gpt": "gpt", "mbr": "msdos"}[scheme]
    parted = {}
    for line in lines[2:]:
        f = line.rstrip(";").split(":")
        parted[int(f[0])] = f
    for p in d["partitions"]:
        f = parted[p["number"]]
        assert [int(x.rstrip("s")) for x in f[1:4]] == [p["first_lba"], p["last_lba"], p["sectors"]]
        if scheme == "gpt":
            assert f[5] == p["name"]
            assert sorted(x for x in f[6].split(", ") if x) == sorted(p["flags"])
    return d


@need_tools
@pytest.mark.parametrize(("table", "size"), MATRIX)
def test_inspect_agrees_on_our_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, size: str) -> None:
    path = tmp_path / "ours.img"
    assert cli.main(["partition", str(path), "--partition-table", table, "--disk-size", size]) == 0
    d = check_table(path, capsys)
    assert d["table"]["kind"] == table


@need_tools
@pytest.mark.parametrize("table", ["legacy", "efi", "hybrid", "efixbootldr"])
def test_inspect_agrees_on_the_seeds_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str) -> None:
    path = tmp_path / "seed.img"
    assert seed_partition(path, table, 1000 * MiB, sgdisk=table != "legacy")
    d = check_table(path, capsys)
    assert d["table"]["kind"] == table


def test_inspect_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.img"
    assert cli.main(["partition", str(path), "--partition-table", "efi", "--disk-size", "1000"]) == 0
    d = _inspect(path, capsys)
    assert set(d) == {"image", "format", "size", "table", "partitions", "filesystem"}
    assert d["format"] == "raw" and d["size"] == 1000 * MiB
    assert d["table"]["disk_guid"] == "97FD5997-F390-0B4A-A3F8-D106C1723AEA"
    keys = {"number", "first_lba", "last_lba", "sectors", "offset", "size", "role", "type", "type_name",
            "guid", "name", "attributes", "flags", "filesystem"}
    assert all(set(p) == keys for p in d["partitions"])
    assert [p["role"] for p in d["partitions"]] == ["esp", "root"]
    # and the human form names every partition
    capsys.readouterr()
    assert cli.main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1C06F03B-704E-4657-B9CD-681A087A2FDC" in out and "primary" in out


def test_probe_hook_fills_filesystem(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pydiskimg.audit import table as audit_table

    path = tmp_path / "x.img"
    assert cli.main(["partition", str(path), "--partition-table", "hybrid", "--disk-size", "300"]) == 0
    with open(path, "r+b") as f:
        f.seek(16384 * 512)
        f.write(b"MAGIC")
    seen = []

    def probe(src, offset, size):  # type: ignore[no-untyped-def]
        seen.append((offset, size))
        return {"type": "magic"} if src.read(offset, 5) == b"MAGIC" else None

    monkeypatch.setattr(audit_table, "_PROBES", [("magic", probe)])
    monkeypatch.setattr(audit_table, "_loaded", True)
    d = _inspect(path, capsys)
    assert [p["filesystem"] for p in d["partitions"]] == [{"type": "magic"}, None, None]
    assert len(seen) == 3


def test_lister_hook_adds_files(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from pydiskimg.audit import table as audit_table

    path = tmp_path / "x.img"
    assert cli.main(["partition", str(path), "--partition-table", "efi", "--disk-size", "300"]) == 0
    monkeypatch.setattr(audit_table, "_PROBES", [("magic", lambda src, off, size: {"type": "magic"} if off == 16384 * 512 else None)])
    monkeypatch.setattr(audit_table, "_LISTERS", {"magic": lambda src, off, size: [{"path": "/a", "size": 1}]})
    monkeypatch.setattr(audit_table, "_loaded", True)
    capsys.readouterr()
    assert cli.main(["inspect", "--json", "--files", str(path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["partitions"][0]["filesystem"] == {"type": "magic", "files": [{"path": "/a", "size": 1}]}
    assert d["partitions"][1]["filesystem"] is None
    assert cli.main(["inspect", "--json", str(path)]) == 0
    assert "files" not in json.loads(capsys.readouterr().out)["partitions"][0]["filesystem"]
