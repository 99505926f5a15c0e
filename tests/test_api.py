"""The Python API (issue 13) against the command line, the reference tools and mypy.

``tests/api_consumer.py`` uses only the documented API; what it writes is compared byte for
byte with what ``python -m pydiskimg`` writes for the same inputs, and its JSON results with
the commands' ``--json``.  Bad values must raise :class:`pydiskimg.Error` with the command
line's message and leave nothing behind.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import pydiskimg
from pydiskimg.spec import FIELDS, ImageSpecFields

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
ROOT, ESP = EXAMPLES / "rootfs", EXAMPLES / "esp"
GUID = "12345678-1234-4234-8234-123456789ABC"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    return env


def cli(*args: str | Path, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "pydiskimg", *map(str, args)], capture_output=True,
                       text=True, env=_env())
    assert r.returncode in ok, r.stderr
    return r


def cli_json(*args: str | Path, ok: tuple[int, ...] = (0,)) -> Any:
    return json.loads(cli(*args, "--json", ok=ok).stdout)


def _same_build_report(api: dict[str, Any], cli_doc: dict[str, Any]) -> None:
    """Equal, but for the image path (api-X vs cli-X) and the stage times' values."""
    a, c = dict(api), dict(cli_doc)
    assert a.pop("image").replace("/api-", "/cli-") == c.pop("image")
    assert sorted(a.pop("stages", {})) == sorted(c.pop("stages", {}))
    assert a == c


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    w = tmp_path_factory.mktemp("api")
    r = subprocess.run([sys.executable, str(REPO / "tests" / "api_consumer.py"), str(w), str(EXAMPLES)],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    return w, json.loads((w / "api.json").read_text())


def test_build_same_bytes_and_report_as_cli(work: tuple[Path, dict[str, Any]]) -> None:
    w, out = work
    doc = cli_json("build", "--root", ROOT, "-o", w / "cli-efi.img", "--partition-table", "efi",
                   "--esp", ESP, "--contents", EXAMPLES / "contents.json", "--disk-size", "128M",
                   "--boot-size", "64M", "--source-date-epoch", "1700000000", "--clamp-mtime",
                   "--all-root", "-q")
    assert filecmp.cmp(w / "api-efi.img", w / "cli-efi.img", shallow=False)
    _same_build_report(out["efi"], doc)

    legacy = ["build", "--root", ROOT, "-o", w / "cli-legacy.qcow2", "--format", "qcow2",
              "--additional-space", "8388608", "--root-gpuid", GUID, "--source-date-epoch",
              "1700000000", "--all-root", "-q"]
    doc = cli_json(*legacy)
    assert filecmp.cmp(w / "api-legacy.qcow2", w / "cli-legacy.qcow2", shallow=False)
    _same_build_report(out["legacy"], doc)
    os.unlink(w / "cli-legacy.qcow2")
    doc = cli_json(*legacy, "--dry-run")
    assert not (w / "cli-legacy.qcow2").exists()
    _same_build_report(out["dry_run"], doc)

    doc = cli_json("build", EXAMPLES / "demo.toml", "-o", w / "cli-toml.img", "--all-root", "-q")
    assert filecmp.cmp(w / "api-toml.img", w / "cli-toml.img", shallow=False)
    _same_build_report(out["toml"], doc)


def test_build_result_matches_sfdisk(work: tuple[Path, dict[str, Any]]) -> None:
    """BuildResult's partitions as sfdisk reads them from the image."""
    w, out = work
    sf = json.loads(subprocess.run(["sfdisk", "--json", str(w / "api-efi.img")], capture_output=True,
                                   text=True, check=True).stdout)["partitiontable"]
    got = [[p["start"] * 512, p["size"] * 512, p["type"], p["uuid"]] for p in sf["partitions"]]
    assert got == [[off, size, typ, guid] for _n, off, size, typ, guid in out["efi_partitions"]]
    blkid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", "--offset",
                            str(out["efi"]["root"]["offset"]), str(w / "api-efi.img")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert blkid == out["efi_root_uuid"]


def test_progress_events(work: tuple[Path, dict[str, Any]]) -> None:
    _w, out = work
    events, stages = out["events"], out["efi"]["stages"]
    assert sorted(e[0] for e in events if e[3] is not None) == sorted(stages)  # one end per stage
    for stage, seconds in stages.items():
        mine = [e for e in events if e[0] == stage]
        assert mine[0] == [stage, 0, 0, None] and mine[-1] == [stage, 0, 0, seconds]
    copies = [e for e in events if e[0] == "write" and e[2] > 0]
    assert copies, "no copy progress reported"
    done = [e[1] for e in copies]
    assert done == sorted(done) and done[-1] == copies[-1][2]


def test_inspect_and_diff_as_cli(work: tuple[Path, dict[str, Any]]) -> None:
    w, out = work
    assert out["inspect"] == cli_json("inspect", w / "api-efi.img")
    assert out["inspect_files"] == cli_json("inspect", w / "api-legacy.qcow2", "--files")
    assert out["diff_same"] == cli_json("diff", w / "api-efi.img", w / "api-efi.img")
    assert out["diff_same"]["identical"] is True and out["diff_same"]["differences"] == []
    other = cli_json("diff", w / "api-efi.img", w / "api-toml.img", ok=(1,))
    assert out["diff_other"] == other and other["identical"] is False
    assert out["diff_lines"] == cli("diff", w / "api-efi.img", w / "api-toml.img", ok=(1,)).stdout.splitlines()


def test_split_as_cli(work: tuple[Path, dict[str, Any]]) -> None:
    w, out = work
    doc = cli_json("split", w / "api-efi.img", w / "cli-split")
    assert out["split"] == doc
    names = sorted(os.listdir(w / "api-split"))
    assert names == sorted(os.listdir(w / "cli-split")) and "part2.img" in names
    for n in names:
        if n != "manifest.json":
            assert filecmp.cmp(w / "api-split" / n, w / "cli-split" / n, shallow=False), n


def test_format_entry_points_as_cli(work: tuple[Path, dict[str, Any]]) -> None:
    w, out = work
    doc = cli_json("ext4", "--root", ROOT, "-o", w / "cli-ext4.img", "--size", "auto",
                   "--additional-space", "1M", "--label", "data", "--contents",
                   EXAMPLES / "contents.json", "--all-root", "--source-date-epoch", "86400")
    assert filecmp.cmp(w / "api-ext4.img", w / "cli-ext4.img", shallow=False)
    assert out["ext4"] == doc
    doc = cli_json("fat", "--root", ESP, "-o", w / "cli-fat.img", "--size", "40M", "--label", "EFI",
                   "--volume-id", "DEAD-BEEF")
    assert filecmp.cmp(w / "api-fat.img", w / "cli-fat.img", shallow=False)
    assert out["fat"] == doc
    doc = cli_json("partition", w / "cli-table.img", "--partition-table", "hybrid", "--disk-size",
                   "300M", "--boot-size", "100M")
    assert filecmp.cmp(w / "api-table.img", w / "cli-table.img", shallow=False)
    assert out["table"] == doc


#: (ImageSpec keywords, the same as flags, text the message must hold)
BAD_SPECS: list[tuple[dict[str, Any], list[str], str]] = [
    ({"disk_size": "12Q"}, ["--disk-size", "12Q"], "diskSize (--disk-size)"),
    ({"partition_table": "gpt"}, ["--partition-table", "gpt"], "partitionTableType (--partition-table)"),
    ({"root_gpuid": "97FD5997-D90B-4AA3-8D16-C1723AEA73C"},
     ["--root-gpuid", "97FD5997-D90B-4AA3-8D16-C1723AEA73C"], "rootGPUID (--root-gpuid)"),
    ({"format": "iso"}, ["--format", "iso"], "format (--format)"),
    ({"esp": str(ESP)}, ["--esp", str(ESP)], "esp (--esp)"),
    ({"mem_size": "lots"}, ["--mem-size", "lots"], "memSize (--mem-size)"),
    ({"additional_space": "5X"}, ["--additional-space", "5X"], "additionalSpace (--additional-space)"),
    ({"source_date_epoch": "-5"}, ["--source-date-epoch", "-5"], "sourceDateEpoch (--source-date-epoch)"),
    ({"contents": str(EXAMPLES / "nope.json")}, ["--contents", str(EXAMPLES / "nope.json")], "nope.json"),
]


@pytest.mark.parametrize(("kw", "flags", "names"), BAD_SPECS, ids=[b[2].split(" ")[0] for b in BAD_SPECS])
def test_bad_value_raises_the_cli_message(kw: dict[str, Any], flags: list[str], names: str,
                                          tmp_path: Path) -> None:
    with pytest.raises(pydiskimg.Error) as e:
        pydiskimg.ImageSpec(root=ROOT, output=tmp_path / "x.img", **kw)
    assert names in str(e.value) and "\n" not in str(e.value)
    r = cli("build", "--root", ROOT, "-o", tmp_path / "x.img", *flags, ok=(2,))
    assert r.stderr == f"pydiskimg: error: {e.value}\n"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("kw", "flags", "names"), [
    ({"disk_size": "2M"}, ["--disk-size", "2M"], "diskSize (--disk-size)"),
    ({"partition_table": "efi", "boot_size": "0"}, ["--partition-table", "efi", "--boot-size", "0"],
     "bootSize (--boot-size)"),
    ({"partition_table": "efi", "boot_size": "9M"}, ["--partition-table", "efi", "--boot-size", "9M"],
     "bootSize (--boot-size)"),
], ids=["too-small", "boot-zero", "esp-too-small"])
def test_bad_value_found_while_building_leaves_nothing(kw: dict[str, Any], flags: list[str], names: str,
                                                       tmp_path: Path) -> None:
    spec = pydiskimg.ImageSpec(root=ROOT, output=tmp_path / "x.img", **kw)
    with pytest.raises(pydiskimg.UsageError) as e:
        pydiskimg.build(spec)
    assert names in str(e.value)
    assert os.listdir(tmp_path) == []
    r = cli("build", "--root", ROOT, "-o", tmp_path / "x.img", *flags, ok=(2,))
    assert r.stderr.endswith(f"pydiskimg: error: {e.value}\n")
    assert os.listdir(tmp_path) == []


def test_python_only_checks(tmp_path: Path) -> None:
    with pytest.raises(pydiskimg.UsageError, match=r"diskSize \(--disk-size\): 1001 bytes"):
        pydiskimg.ImageSpec(root=ROOT, disk_size=1001)
    with pytest.raises(pydiskimg.UsageError, match="unknown field 'disk_sise'"):
        pydiskimg.ImageSpec(root=ROOT, disk_sise="1G")  # type: ignore[call-arg]
    with pytest.raises(pydiskimg.UsageError, match="expected an ImageSpec"):
        pydiskimg.build({"root": str(ROOT)})  # type: ignore[arg-type]
    # an int size is bytes, a string is read as the command line reads it (bare number: MiB)
    assert pydiskimg.ImageSpec(root=ROOT, disk_size=64 << 20).disk_size == 64 << 20
    assert pydiskimg.ImageSpec(root=ROOT, disk_size="64").disk_size == 64 << 20
    assert pydiskimg.ImageSpec(root=ROOT, additional_space="1.5K").additional_space == 1536


def test_progress_callback_raising_stops_and_leaves_nothing(tmp_path: Path) -> None:
    class Stop(Exception):
        pass

    def stop(e: pydiskimg.ProgressEvent) -> None:
        if e.stage == "write" and e.seconds is None:
            raise Stop

    out = tmp_path / "out"
    out.mkdir()
    spec = pydiskimg.ImageSpec(root=ROOT, output=out / "x.img", partition_table="efi", esp=ESP)
    with pytest.raises(Stop):
        pydiskimg.build(spec, progress=stop)
    assert os.listdir(out) == []


def test_environment_epoch_does_not_override_an_explicit_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "5")
    assert pydiskimg.ImageSpec(root=ROOT).source_date_epoch == 5
    assert pydiskimg.ImageSpec(root=ROOT, source_date_epoch=7).source_date_epoch == 7


def test_every_flag_is_a_typed_keyword() -> None:
    """ImageSpecFields (what mypy checks a consumer's keywords against) has every FIELDS entry."""
    attrs = {attr for attr, _flag, _kind, _help in FIELDS.values()}
    missing = attrs - set(ImageSpecFields.__optional_keys__)
    assert not missing, f"add these keywords to ImageSpecFields in pydiskimg/spec.py: {sorted(missing)}"
    assert set(ImageSpecFields.__optional_keys__) == attrs
    # each keyword is its flag's name in snake_case (a --no-X flag: the keyword X)
    for attr, flag, _kind, _help in FIELDS.values():
        name = flag.split("/")[-1].removeprefix("--").removeprefix("no-").replace("-", "_")
        assert name == attr, (flag, attr)


def test_import_is_cheap() -> None:
    code = ("import sys, pydiskimg; assert pydiskimg.Error and pydiskimg.ImageSpec; "
            "heavy = [m for m in ('numpy', 'construct', 'pydiskimg.pipeline', 'pydiskimg.ext4') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


_STRICT_PUBLIC = """\
[mypy]
strict = True
# pydiskimg's internals are checked by tests/test_lint.py with the project's own settings; here,
# as for an installed package, only the consumer and the public modules are checked strictly
[mypy-pydiskimg.*]
ignore_errors = True
[mypy-pydiskimg]
ignore_errors = False
[mypy-pydiskimg.api]
ignore_errors = False
[mypy-pydiskimg.spec]
ignore_errors = False
[mypy-pydiskimg.progress]
ignore_errors = False
[mypy-pydiskimg.errors]
ignore_errors = False
"""


def _mypy(tmp_path: Path, target: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "mypy.ini"
    cfg.write_text(_STRICT_PUBLIC)
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg),
                           "--cache-dir", str(tmp_path / "cache"), str(target)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(REPO)})


def test_consumer_type_checks(tmp_path: Path) -> None:
    r = _mypy(tmp_path, REPO / "tests" / "api_consumer.py")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_catches_a_wrong_consumer(tmp_path: Path) -> None:
    bad = tmp_path / "bad_consumer.py"
    bad.write_text(textwrap.dedent("""\
        import pydiskimg

        spec = pydiskimg.ImageSpec(root="r", disk_sise="1G")
        spec2 = pydiskimg.ImageSpec(root="r", disk_size=1.5)
        result = pydiskimg.build(spec, quite=True)
        path: int = result.output
        same: str = pydiskimg.diff("a", "b").identical
        """))
    r = _mypy(tmp_path, bad)
    assert r.returncode == 1
    for line, what in ((3, "disk_sise"), (4, "disk_size"), (5, "quite"), (6, "str"), (7, "bool")):
        assert any(f"bad_consumer.py:{line}:" in x and what in x for x in r.stdout.splitlines()), (line, r.stdout)


def test_readme_python_api_examples_run(tmp_path: Path) -> None:
    """The README's "Python API" code blocks, run as written (from a copy of the repo's examples)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("\n", 1)[1] for b in section.split("```")[1::2] if b.startswith("python")]
    assert len(blocks) >= 2
    shutil.copytree(EXAMPLES, tmp_path / "examples", symlinks=True)
    for code in blocks:
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                           env=_env())
        assert r.returncode == 0, code + r.stderr
    assert (tmp_path / "disk.img").stat().st_size > 0


def test_efixbootldr_as_cli(tmp_path: Path) -> None:
    """A keyword another flag added (xbootldr) works through ImageSpec, BuildResult names it."""
    r = pydiskimg.build(pydiskimg.ImageSpec(root=ROOT, output=tmp_path / "api-x.img", esp=ESP,
                                            xbootldr=ESP / "loader", partition_table="efixbootldr"))
    doc = cli_json("build", "--root", ROOT, "-o", tmp_path / "cli-x.img", "--esp", ESP, "--xbootldr",
                   ESP / "loader", "--partition-table", "efixbootldr", "-q")
    assert filecmp.cmp(tmp_path / "api-x.img", tmp_path / "cli-x.img", shallow=False)
    _same_build_report(r.to_json(), doc)
    assert r.xbootldr is not None and r.xbootldr.offset == doc["xbootldr"]["offset"] == 100 << 20
    assert [p.role for p in r.partitions if p.offset == r.xbootldr.offset] == ["xbootldr"]
