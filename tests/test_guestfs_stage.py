"""The bootloader stage in libguestfs's appliance (slow: each launch is ~30-60 s under TCG).

Images are assembled with the reference tools (parted, mkfs.ext4 -d, mkfs.vfat, mcopy), so these
tests judge the stage alone; the results are read back with debugfs, dumpe2fs, e2fsck -fn,
mtools and fsck.fat -n.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import bootkit
import pytest

from pydiskimg import guestfs
from pydiskimg.errors import ToolError

FS_UUID = uuid.UUID("f222513b-ded1-49fa-b591-20ce86a2fe7f")
EPOCH = 1_700_000_000


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True)


def partition_offsets(image: Path) -> dict[int, int]:
    table = bootkit.sfdisk_json(image)
    return {int(p["node"][len(str(image)) :]): p["start"] * 512 for p in table["partitions"]}


def small_tree(dest: Path, *, with_shell: bool = True) -> Path:
    if with_shell:
        bootkit.make_root_tree(dest)
    else:
        for d in ("etc", "dev", "proc", "sys"):
            (dest / d).mkdir(parents=True, exist_ok=True)
        (dest / "etc" / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    return dest


def efi_image(tmp_path: Path, *, with_shell: bool = True) -> tuple[Path, dict[int, int]]:
    root = small_tree(tmp_path / "root", with_shell=with_shell)
    esp = tmp_path / "esp"
    (esp / "EFI").mkdir(parents=True)
    (esp / "EFI" / "keep.txt").write_text("from the build\n")
    img = bootkit.ref_image(
        tmp_path / "disk.img", table="efi", root_tree=root, esp_tree=esp, size_mib=300
    )
    offsets = partition_offsets(img)
    r = run("tune2fs", "-U", str(FS_UUID), f"{img}?offset={offsets[2]}")
    assert r.returncode == 0, r.stderr
    return img, offsets


@pytest.mark.slow
def test_chroot_command_on_efi_layout(tmp_path: Path) -> None:
    img, offsets = efi_image(tmp_path)
    root_at = f"{img}?offset={offsets[2]}"
    messages: list[str] = []
    command = (
        "echo to-root > /etc/from-guest\n"
        "echo to-esp > /boot/from-guest.txt\n"
        "ls /boot/EFI\n"
        "readlink /dev/vda\n"
        'echo "$DISK"\n'
        'dd if="$DISK" bs=8 skip=64 count=1 2>/dev/null; echo\n'
        "echo on-stderr >&2\n"
    )
    out = guestfs.bootloader_stage(
        img,
        command=command,
        root_part=2,
        root_offset=offsets[2],
        esp_part=1,
        fs_uuid=FS_UUID,
        deterministic=True,
        timestamp=EPOCH,
        grub_device="/dev/vda",
        progress=messages.append,
    )
    # the GRUB link and $DISK name the image's disk as the appliance's kernel does (sda or sdb:
    # the appliance's own disk is sometimes first), and that device holds this image's GPT
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 5 and lines[0] == "keep.txt" and lines[4] == "on-stderr", out
    link, disk, signature = lines[1:4]
    assert link == disk and disk.startswith("/dev/sd"), out
    assert signature == "EFI PART", out
    assert any("starting the appliance" in m for m in messages)
    assert any("appliance up" in m for m in messages)
    # the root: what CMD wrote, machine-id removed, UUID and times pinned, e2fsck silent
    cat = run("debugfs", "-R", "cat /etc/from-guest", root_at)
    assert cat.stdout == "to-root\n"
    gone = run("debugfs", "-R", "stat /etc/machine-id", root_at)
    assert "File not found" in gone.stderr
    info = run("dumpe2fs", "-h", root_at).stdout
    assert f"Filesystem UUID:          {FS_UUID}" in info
    assert "Last checked:             Tue Nov 14 22:13:20 2023" in info
    assert "Mount count:              0" in info
    fsck = run("e2fsck", "-fn", root_at)
    assert fsck.returncode == 0, fsck.stdout
    # the ESP: mounted at /boot, so the file is there; fsck.fat -n has nothing to say
    esp_at = f"{img}@@{offsets[1]}"
    typed = run("mtype", "-i", esp_at, "::/from-guest.txt")
    assert typed.stdout == "to-esp\n", typed.stderr
    typed = run("mtype", "-i", esp_at, "::/EFI/keep.txt")
    assert typed.stdout == "from the build\n"
    esp = tmp_path / "esp.part"
    run(
        "dd",
        f"if={img}",
        f"of={esp}",
        "bs=1M",
        f"skip={offsets[1] >> 20}",
        f"count={(offsets[2] - offsets[1]) >> 20}",
        "status=none",
    )
    fat = run("fsck.fat", "-n", str(esp))
    assert fat.returncode == 0, fat.stdout
    assert [ln for ln in fat.stdout.splitlines()[1:] if not ln.startswith(str(esp))] == [], (
        fat.stdout
    )


@pytest.mark.slow
def test_failing_command_reports_its_output(tmp_path: Path) -> None:
    img, offsets = efi_image(tmp_path)
    with pytest.raises(ToolError) as e:
        guestfs.run_in_guest(
            img, root_part=2, esp_part=1, command="echo first-line; echo second-line >&2; exit 3"
        )
    msg = str(e.value)
    assert "\n" not in msg
    assert "exit status 3" in msg and "first-line" in msg and "second-line" in msg


@pytest.mark.slow
def test_image_without_shell_is_a_clear_error(tmp_path: Path) -> None:
    img, _ = efi_image(tmp_path, with_shell=False)
    with pytest.raises(ToolError, match="has no /bin/sh.*in the appliance"):
        guestfs.run_in_guest(img, root_part=2, esp_part=1, command="true")


@pytest.mark.slow
def test_build_with_failing_bootloader_leaves_nothing(tmp_path: Path) -> None:
    """Through the CLI: exit status 2, one error line with the command's own output, no image
    and no temporary file left in the output folder.  With --quiet, the command's lines still
    show, since it failed, and nothing else but the error does."""
    root = small_tree(tmp_path / "root")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pydiskimg",
            "build",
            "--root",
            str(root),
            "-o",
            str(out_dir / "disk.img"),
            "--partition-table",
            "legacy",
            "--format",
            "qcow2",
            "--install-bootloader",
            "echo visible-to-the-user; echo on-stderr >&2; exit 3",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("pydiskimg: error:")]
    assert len(errors) == 1, r.stderr
    assert "visible-to-the-user" in errors[0] and "exit status 3" in errors[0]
    assert r.stderr.splitlines() == ["  | visible-to-the-user", "  | on-stderr", errors[0]]
    assert "Traceback" not in r.stderr
    assert list(out_dir.iterdir()) == []
