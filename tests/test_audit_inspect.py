"""``inspect`` filesystem probes and ``--files`` listings agree with dumpe2fs -h, fsck.fat -v,
minfo, debugfs and the source trees."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_audit_images import (  # noqa: F401  (fixtures)
    FS_UUID,
    Disk,
    audit_trees_fixture,
    debugfs,
    extract,
    gpt_disk_fixture,
    mbr_disk_fixture,
    needs_tools,
    run,
)

from pydiskimg.audit import ext4 as audit_ext4
from pydiskimg.audit import fat as audit_fat
from pydiskimg.audit.source import open_image

pytestmark = needs_tools


def dumpe2fs_h(image: Path, offset: int) -> dict[str, str]:
    out = run("dumpe2fs", "-h", f"{image}?offset={offset}",
              env=dict(os.environ, TZ="UTC", LC_ALL="C"))
    d = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            d[k.strip()] = v.strip()
    return d


@pytest.mark.parametrize("which", ["gpt", "mbr"])
def test_ext4_info_matches_dumpe2fs(which: str, request: pytest.FixtureRequest) -> None:
    disk: Disk = request.getfixturevalue(f"{which}_disk")
    ref = dumpe2fs_h(disk.path, disk.root_offset)
    with open_image(disk.path) as s:
        info = audit_ext4.probe(s, disk.root_offset, disk.root_size)
    assert info is not None
    assert info["uuid"] == ref["Filesystem UUID"] == FS_UUID
    assert " ".join(info["features"]) == ref["Filesystem features"]
    for key, name in (("inodes_count", "Inode count"), ("blocks_count", "Block count"),
                      ("reserved_blocks_count", "Reserved block count"),
                      ("free_blocks_count", "Free blocks"), ("free_inodes_count", "Free inodes"),
                      ("first_data_block", "First block"), ("block_size", "Block size"),
                      ("blocks_per_group", "Blocks per group"),
                      ("inodes_per_group", "Inodes per group"), ("inode_size", "Inode size"),
                      ("reserved_gdt_blocks", "Reserved GDT blocks"),
                      ("mount_count", "Mount count"), ("max_mount_count", "Maximum mount count")):
        assert info[key] == int(ref.get(name, "0")), key
    assert info["hash_seed"] == ref["Directory Hash Seed"]
    assert info["default_hash_version"] == ref["Default directory hash"]
    assert (info["label"] or "<none>") == ref["Filesystem volume name"]
    assert info["journal"]["blocks"] == int(ref["Total journal blocks"])
    assert info["journal"]["inode"] == int(ref["Journal inode"])
    assert f"{info['checksum']:#010x}" == ref["Checksum"]
    import time

    assert time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(info["mkfs_time"])) == \
        ref["Filesystem created"]


def test_fat_info_matches_fsck_fat_and_minfo(gpt_disk: Disk, tmp_path: Path) -> None:
    esp = extract(gpt_disk.path, gpt_disk.esp_offset, gpt_disk.esp_size, tmp_path / "esp")
    v = run("fsck.fat", "-n", "-v", str(esp))
    m = run("minfo", "-i", str(esp), "::")
    with open_image(gpt_disk.path) as s:
        info = audit_fat.probe(s, gpt_disk.esp_offset, gpt_disk.esp_size)
    assert info is not None
    assert f"{info['cluster_size']} bytes per cluster" in v
    assert re.search(rf"\b{info['clusters']} data clusters", v)
    assert f"{info['fats']} FATs, {info['type'][3:]} bit entries" in v
    assert f"{info['total_sectors']} sectors total" in v
    assert f"serial number: {info['volume_id']:08X}" in m
    assert f"reserved (boot) sectors: {info['reserved_sectors']}" in m
    assert info["label"] == "ESP"


def test_ext4_files_match_the_tree_and_debugfs(gpt_disk: Disk) -> None:
    with open_image(gpt_disk.path) as s:
        files = {f["path"]: f for f in audit_ext4.ext4_files(s, gpt_disk.root_offset,
                                                           gpt_disk.root_size)}
    tree = gpt_disk.tree
    expect = {"/"}
    for dirpath, dirnames, filenames in os.walk(tree):
        for n in dirnames + filenames:
            expect.add("/" + os.path.relpath(os.path.join(dirpath, n), tree))
    assert set(files) == expect | {"/lost+found"}
    for p in expect - {"/"}:
        st = os.lstat(tree / p[1:])
        f = files[p]
        assert f["mode"] == f"{stat.S_IMODE(st.st_mode):04o}", p
        if not stat.S_ISDIR(st.st_mode):
            assert f["size"] == st.st_size, p
        assert f["mtime_ns"] == st.st_mtime_ns // 10**9 * 10**9, p  # mke2fs keeps seconds
        if stat.S_ISREG(st.st_mode):
            assert f["sha256"] == hashlib.sha256((tree / p[1:]).read_bytes()).hexdigest()
            assert f["xattrs"] == sorted(os.listxattr(tree / p[1:]))
        if stat.S_ISLNK(st.st_mode):
            assert f["target"] == os.readlink(tree / p[1:])
    stat_out = run("debugfs", "-R", "stat /etc/hostname",
                   f"{gpt_disk.path}?offset={gpt_disk.root_offset}")
    assert f"Inode: {files['/etc/hostname']['inode']} " in stat_out


def test_fat_files_match_the_tree(gpt_disk: Disk) -> None:
    with open_image(gpt_disk.path) as s:
        files = {f["path"]: f for f in audit_fat.fat_files(s, gpt_disk.esp_offset,
                                                         gpt_disk.esp_size)}
    esp = gpt_disk.esp_tree
    for dirpath, _dirnames, filenames in os.walk(esp):
        for n in filenames:
            full = Path(dirpath) / n
            f = files["/" + str(full.relative_to(esp))]
            assert f["sha256"] == hashlib.sha256(full.read_bytes()).hexdigest()
            assert f["size"] == full.stat().st_size


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pydiskimg", *args], capture_output=True,
                          text=True, check=False)


@pytest.mark.parametrize("fmt,opts", [("qcow2", ("-c",)), ("vdi", ()), ("vpc", ())])
def test_inspect_json_same_for_every_format(gpt_disk: Disk, tmp_path: Path, fmt: str,
                                            opts: tuple[str, ...]) -> None:
    import json

    img = tmp_path / f"d.{fmt}"
    run("qemu-img", "convert", *opts, "-O", fmt, str(gpt_disk.path), str(img))
    raw = _cli("inspect", "--json", str(gpt_disk.path))
    other = _cli("inspect", "--json", str(img))
    assert raw.returncode == 0 and other.returncode == 0, other.stderr
    a, b = json.loads(raw.stdout), json.loads(other.stdout)
    for d in (a, b):
        del d["image"], d["format"], d["size"]
        d["table"].pop("disk_bytes", None)
        d["table"].pop("disk_sectors", None)
    assert a == b
    fs = [p["filesystem"]["type"] for p in a["partitions"]]
    assert fs == ["FAT12", "ext4"]


def test_inspect_files_cli_lists_both_filesystems(gpt_disk: Disk) -> None:
    import json

    p = _cli("inspect", "--files", "--json", str(gpt_disk.path))
    assert p.returncode == 0, p.stderr
    esp, root = (q["filesystem"] for q in json.loads(p.stdout)["partitions"])
    assert {f["path"] for f in esp["files"]} >= {"/EFI/BOOT/BOOTX64.EFI", "/loader.conf"}
    files = {f["path"]: f for f in root["files"]}
    assert files["/etc/hostname"]["xattrs"] == ["user.note"]
    assert files["/bin/alias"]["target"] == "tool"


def test_inspect_files_on_a_corrupt_ext4_is_a_clear_message(gpt_disk: Disk, tmp_path: Path) -> None:
    import json
    import shutil

    bad = tmp_path / "bad.img"
    shutil.copyfile(gpt_disk.path, bad)
    # the first extent of /many (i_block word 5: ee_start_lo) far past the end of the
    # filesystem; debugfs keeps the inode checksum valid
    debugfs(bad, gpt_disk.root_offset, f"sif /many block[5] {1 << 30}", write=True)
    p = _cli("inspect", "--files", "--json", str(bad))
    # the report is still printed (the table and what could be read), the error is one line
    # on stderr naming the partition, and the exit status says the image is malformed
    assert p.returncode == 2 and "Traceback" not in p.stderr
    root = json.loads(p.stdout)["partitions"][1]["filesystem"]
    assert "outside the filesystem" in root["files_error"]
    assert p.stderr.count("\n") == 1 and "partition 2" in p.stderr and "outside the filesystem" in p.stderr
