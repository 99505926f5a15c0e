"""``pydiskimg diff`` on images that differ in ONE planted way, made with the reference tools
(sgdisk -u, debugfs sif, tune2fs, dd into a block debugfs names, mcopy): the report names
exactly that difference and nothing else."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_audit_images import (  # noqa: F401  (fixtures)
    FAKE_TIME,
    ROOT_GUID,
    Disk,
    audit_trees_fixture,
    debugfs,
    extract,
    gpt_disk_fixture,
    make_gpt_disk,
    mbr_disk_fixture,
    needs_tools,
    run,
)

from pydiskimg.audit.diff import diff_images

pytestmark = needs_tools


def plant(disk: Disk, tmp_path: Path, name: str = "b.img") -> Path:
    out = tmp_path / name
    shutil.copyfile(disk.path, out)
    return out


def texts(a: Path, b: Path) -> list[str]:
    return [d.text() for d in diff_images(str(a), str(b))]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pydiskimg", *args], capture_output=True,
                          text=True, check=False)


def test_identical_copy_exit_0(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    p = cli("diff", str(gpt_disk.path), str(b))
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_partition_guid(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    new = "BBBBBBBB-0000-4000-8000-000000000002"
    run("sgdisk", "-u", f"2:{new}", str(b))
    diffs = diff_images(str(gpt_disk.path), str(b))
    assert [(d.scope, d.item, d.field, d.a, d.b) for d in diffs] == [
        ("partition table", "partition 2", "UniquePartitionGUID", ROOT_GUID, new)]
    p = cli("diff", str(gpt_disk.path), str(b))
    assert p.returncode == 1 and p.stdout.count("\n") == 1 and new in p.stdout


def test_corrupt_gpt_header_crc(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    with open(b, "r+b") as f:
        f.seek(512 + 16)  # HeaderCRC32 of the primary header
        f.write(b"\xde\xad")
    v = subprocess.run(["sgdisk", "-v", str(b)], capture_output=True, text=True, check=False)
    assert "Invalid CRC on main header" in v.stdout + v.stderr  # the reference tool agrees
    out = texts(gpt_disk.path, b)
    assert len(out) == 2, out
    assert out[0].startswith("partition table: image B: invalid: ") and "HeaderCRC32" in out[0]
    assert out[1] == "bytes: 0x210-0x211 (2 bytes): primary GPT header, HeaderCRC32"


def test_file_mode(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    debugfs(b, gpt_disk.root_offset, "sif /etc/passwd mode 0100600", write=True)
    assert texts(gpt_disk.path, b) == ["partition 2 (ext4): /etc/passwd: mode: 0644 -> 0600"]


def test_file_mtime(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    debugfs(b, gpt_disk.root_offset, "sif /bin/tool mtime 20200101", write=True)
    out = texts(gpt_disk.path, b)
    assert len(out) == 1
    assert out[0].startswith("partition 2 (ext4): /bin/tool: mtime: 2020-09-13T12:26:40")
    assert out[0].endswith("-> 2020-01-01T00:00:00.000000000Z")


def test_file_content(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    blk = int(debugfs(b, gpt_disk.root_offset, "bmap /bin/tool 3").split()[-1])
    with open(b, "r+b") as f:
        f.seek(gpt_disk.root_offset + blk * 1024 + 100)
        f.write(b"PLANTED")
    diffs = diff_images(str(gpt_disk.path), str(b))
    assert [(d.item, d.field) for d in diffs] == [("/bin/tool", "content")]
    assert diffs[0].scope == "partition 2 (ext4)"


def test_group_descriptor_field(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    debugfs(b, gpt_disk.root_offset, "set_bg 1 itable_unused 5", write=True)
    out = texts(gpt_disk.path, b)
    assert len(out) == 1 and out[0].startswith(
        "partition 2 (ext4): group 1 descriptor: bg_itable_unused_lo: "), out
    assert out[0].endswith(" -> 5")


def test_uuid_change_accounts_for_every_checksum(gpt_disk: Disk, tmp_path: Path) -> None:
    """tune2fs -U rewrites every metadata checksum; the one difference reported is the UUID."""
    b = plant(gpt_disk, tmp_path)
    new = "11111111-2222-3333-4444-999999999999"
    subprocess.run(["tune2fs", "-U", new, f"{b}?offset={gpt_disk.root_offset}"], check=True,
                   capture_output=True, env=dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME))
    kb = [re.search(r"Lifetime writes:\s+(\d+) kB",
                    run("dumpe2fs", "-h", f"{img}?offset={gpt_disk.root_offset}")).group(1)
          for img in (gpt_disk.path, b)]
    assert texts(gpt_disk.path, b) == [
        f"partition 2 (ext4): superblock: s_uuid: 11111111-2222-3333-4444-555555555555 -> {new}",
        f"partition 2 (ext4): superblock: s_kbytes_written: {kb[0]} -> {kb[1]}"]


def test_mkfs_time_change_is_a_few_lines(tmp_path: Path, audit_trees: tuple[Path, Path]) -> None:
    """E2FSPROGS_FAKE_TIME differs: superblock times, and the same crtime change of every inode
    folded into one line; no byte left unexplained."""
    import test_audit_images as imgs

    out = []
    for t in ("1000000", "2000000"):
        img = tmp_path / f"t{t}.img"
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        env = dict(os.environ, E2FSPROGS_FAKE_TIME=t, LC_ALL="C")
        run("mkfs.ext4", "-q", "-F", "-b", "1024", "-U", imgs.FS_UUID, "-E",
            f"hash_seed={imgs.FS_UUID}", "-d", str(audit_trees[0]), str(img), "16384", env=env)
        out.append(img)
    lines = texts(*out)
    assert lines[:3] == [f"whole disk (ext4): superblock: {f}: 1000000 -> 2000000"
                         for f in ("s_wtime", "s_lastcheck", "s_mkfs_time")]
    assert any(re.match(r"whole disk \(ext4\): \d+ inodes \(/, .*\): crtime: ", x) for x in lines)
    assert len(lines) < 10 and not [x for x in lines if x.startswith("bytes")], lines


def test_superblock_label(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME)
    subprocess.run(["tune2fs", "-L", "newlabel", f"{b}?offset={gpt_disk.root_offset}"],
                   check=True, capture_output=True, env=env)
    assert texts(gpt_disk.path, b) == [
        "partition 2 (ext4): superblock: s_volume_name: '' -> newlabel"]


def test_junk_in_free_space_is_located(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    # a block that dumpe2fs lists as free in the last group
    out = run("dumpe2fs", f"{b}?offset={gpt_disk.root_offset}")
    free = [ln for ln in out.splitlines() if ln.strip().startswith("Free blocks: ")][-1]
    first = int(free.split(":")[1].split("-")[0].split(",")[0])
    with open(b, "r+b") as f:
        f.seek(gpt_disk.root_offset + first * 1024 + 10)
        f.write(b"\x01")
    out2 = texts(gpt_disk.path, b)
    assert out2 == [f"bytes: {gpt_disk.root_offset + first * 1024 + 10:#x}-"
                    f"{gpt_disk.root_offset + first * 1024 + 10:#x} (1 bytes): "
                    f"partition 2, unallocated block {first}"]


def test_xattr_value(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    debugfs(b, gpt_disk.root_offset, "ea_set /etc/hostname user.note bye", write=True)
    assert texts(gpt_disk.path, b) == [
        "partition 2 (ext4): /etc/hostname: xattr user.note: 'hello' -> 'bye'"]


def test_hard_link_added(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    debugfs(b, gpt_disk.root_offset, "ln /etc/passwd /bin/pw2", write=True)
    debugfs(b, gpt_disk.root_offset, "sif /etc/passwd links_count 2", write=True)
    assert texts(gpt_disk.path, b) == [
        "partition 2 (ext4): /bin/pw2: absent -> added",
        "partition 2 (ext4): /etc/passwd: links: 1 -> 2",
    ]


def test_journal_junk_is_the_journal_content(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    blk = int(debugfs(b, gpt_disk.root_offset, "bmap <8> 3").split()[-1])
    with open(b, "r+b") as f:
        f.seek(gpt_disk.root_offset + blk * 1024)
        f.write(b"\x01\x00" * 2000)  # 2000 one-byte ranges over 4 journal blocks
    out = texts(gpt_disk.path, b)
    assert len(out) == 1, out
    assert out[0].startswith("partition 2 (ext4): inode 8 (journal): content: sha256:"), out


def test_inode_field_located_when_unexplained(gpt_disk: Disk, tmp_path: Path) -> None:
    """A byte of i_obso_faddr (never compared as a file attribute by users) is still named."""
    b = plant(gpt_disk, tmp_path)
    debugfs(b, gpt_disk.root_offset, "sif /etc/hostname generation 7", write=True)
    assert texts(gpt_disk.path, b) == ["partition 2 (ext4): /etc/hostname: generation: 0 -> 7"]


def test_file_added_and_allocation(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    src = tmp_path / "nf"
    src.write_bytes(b"new\n" * 1000)
    debugfs(b, gpt_disk.root_offset, f"write {src} /etc/new-file", write=True)
    assert texts(gpt_disk.path, b) == [
        "partition 2 (ext4): superblock: s_kbytes_written: 580 -> 584",
        "partition 2 (ext4): blocks allocated differently (groups 0): "
        "0 blocks in use only in A -> 4 only in B",
        "partition 2 (ext4): inodes allocated differently (groups 0): "
        "0 inodes in use only in A -> 1 only in B",
        "partition 2 (ext4): /etc/new-file: absent -> added",
    ]


def test_file_removed(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    debugfs(b, gpt_disk.root_offset, "rm /many/entry-007", write=True)
    out = texts(gpt_disk.path, b)
    assert "partition 2 (ext4): /many/entry-007: present -> removed" in out
    assert not [t for t in out if t.startswith("bytes")], out


def test_fat_file_content_same_size_same_time(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    src = tmp_path / "loader.conf"
    src.write_bytes(b"timeout 9\n")  # same length as the original
    os.utime(src, (1_600_000_000, 1_600_000_000))
    run("mcopy", "-o", "-m", "-i", f"{b}@@{gpt_disk.esp_offset}", str(src), "::/loader.conf")
    diffs = diff_images(str(gpt_disk.path), str(b))
    assert [(d.scope, d.item, d.field) for d in diffs] == [
        ("partition 1 (FAT)", "/loader.conf", "content")]


def test_fat_attribute(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    run("mattrib", "-i", f"{b}@@{gpt_disk.esp_offset}", "+h", "::/EFI/BOOT/BOOTX64.EFI")
    assert texts(gpt_disk.path, b) == [
        "partition 1 (FAT): /EFI/BOOT/BOOTX64.EFI: attributes: 0x20 -> 0x22"]


def test_fat_slack_byte_is_located(gpt_disk: Disk, tmp_path: Path) -> None:
    """A byte past the end of a file, in its last cluster: not content, named by structure."""
    b = plant(gpt_disk, tmp_path)
    out = run("fsck.fat", "-n", "-v", str(extract(b, gpt_disk.esp_offset, gpt_disk.esp_size,
                                                   tmp_path / "esp")))
    data = int(re.search(r"Data area starts at byte (\d+)", out).group(1))
    csize = int(re.search(r"(\d+) bytes per cluster", out).group(1))
    first = int(run("mshowfat", "-i", f"{b}@@{gpt_disk.esp_offset}",
                    "::/loader.conf").split("<")[1].split("-")[0].split(">")[0])
    at = gpt_disk.esp_offset + data + (first - 2) * csize + csize - 1
    with open(b, "r+b") as f:
        f.seek(at)
        f.write(b"Z")
    assert texts(gpt_disk.path, b) == [
        f"bytes: {at:#x}-{at:#x} (1 bytes): partition 1, file /loader.conf, cluster {first}"]


def test_fat_volume_id(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    with open(b, "r+b") as f:  # BS_VolID at 67 (FAT12/16: 39)
        boot = bytearray(os.pread(f.fileno(), 512, gpt_disk.esp_offset))
        at = 39 if boot[54:57] == b"FAT" else 67
        os.pwrite(f.fileno(), (0x12345678).to_bytes(4, "little"), gpt_disk.esp_offset + at)
    diffs = diff_images(str(gpt_disk.path), str(b))
    assert [(d.item, d.field, d.a, d.b) for d in diffs] == [
        ("boot sector", "BS_VolID", 0xDEADBEEF, 0x12345678)]


def test_qcow2_and_vdi_of_the_same_disk_are_identical(gpt_disk: Disk, tmp_path: Path) -> None:
    q = tmp_path / "d.qcow2"
    v = tmp_path / "d.vdi"
    run("qemu-img", "convert", "-O", "qcow2", str(gpt_disk.path), str(q))
    run("qemu-img", "convert", "-O", "vdi", str(gpt_disk.path), str(v))
    assert diff_images(str(gpt_disk.path), str(q)) == []
    assert diff_images(str(q), str(v)) == []


def test_qcow2_with_a_planted_mode(gpt_disk: Disk, tmp_path: Path) -> None:
    b = plant(gpt_disk, tmp_path)
    debugfs(b, gpt_disk.root_offset, "sif /bin/alias uid 42", write=True)
    q = tmp_path / "b.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", str(b), str(q))
    assert texts(gpt_disk.path, q) == ["partition 2 (ext4): /bin/alias: uid: 0 -> 42"]


def test_mbr_disk_signature_and_json(mbr_disk: Disk, tmp_path: Path) -> None:
    b = plant(mbr_disk, tmp_path)
    subprocess.run(["sfdisk", "-q", "--disk-id", str(b), "0x87654321"], check=True,
                   capture_output=True)
    p = cli("diff", "--json", str(mbr_disk.path), str(b))
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert doc["identical"] is False
    assert [(d["item"], d["field"], d["a"], d["b"]) for d in doc["differences"]] == [
        ("MBR", "UniqueMBRDiskSignature", "0x12345678", "0x87654321")]


def test_mbr_ext4_4k_mode(mbr_disk: Disk, tmp_path: Path) -> None:
    b = plant(mbr_disk, tmp_path)
    debugfs(b, mbr_disk.root_offset, "sif /many/entry-042 mode 0100640", write=True)
    assert texts(mbr_disk.path, b) == ["partition 1 (ext4): /many/entry-042: mode: 0644 -> 0640"]


@pytest.mark.parametrize("bad", ["missing", "not-an-image"])
def test_errors_exit_2(gpt_disk: Disk, tmp_path: Path, bad: str) -> None:
    other = tmp_path / "x"
    if bad == "not-an-image":
        other.write_bytes(b"hello")
    p = cli("diff", str(gpt_disk.path), str(other))
    if bad == "missing":
        assert p.returncode == 2 and p.stderr.startswith("pydiskimg: error: ")
        assert p.stderr.count("\n") == 1
    else:  # a 5-byte file differs from the disk: size, then everything else
        assert p.returncode == 1
        assert "Traceback" not in p.stderr
