"""Reference images for the audit tests (inspect, diff, split, fuzz), made by the reference
tools only: sgdisk / sfdisk for tables, mkfs.ext4 -d (with ``-E offset=``) and mkfs.vfat +
mcopy for filesystems.  Other test modules import the fixtures from here.

The tests in this module check the images themselves with the reference checkers, so a broken
fixture shows up here rather than as a puzzling diff elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

TOOLS = ("sgdisk", "sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "debugfs", "dumpe2fs",
         "e2fsck", "fsck.fat", "qemu-img")
_missing = [t for t in TOOLS if shutil.which(t) is None]
if _missing and os.environ.get("CI"):
    raise RuntimeError(f"reference tools missing in CI: {_missing}")
needs_tools = pytest.mark.skipif(bool(_missing), reason=f"missing tools: {_missing}")

MiB = 1 << 20
FS_UUID = "11111111-2222-3333-4444-555555555555"
DISK_GUID = "0F0F0F0F-1111-2222-3333-444444444444"
ESP_GUID = "AAAAAAAA-0000-4000-8000-000000000001"
ROOT_GUID = "AAAAAAAA-0000-4000-8000-000000000002"
T = 1_600_000_000  # fixed mtimes (seconds)
FAKE_TIME = "1000000"


def run(*cmd: str, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if p.returncode not in ok:
        raise AssertionError(f"{' '.join(cmd)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p.stdout


def make_tree(root: Path) -> Path:
    """A small tree: files, a folder, a symlink, an xattr, a 300 KB file, a 70-entry folder."""
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "hostname").write_bytes(b"audit\n")
    os.setxattr(root / "etc" / "hostname", "user.note", b"hello")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(bytes(range(256)) * 1200)
    os.chmod(root / "bin" / "tool", 0o755)
    os.symlink("tool", root / "bin" / "alias")
    os.symlink("x" * 80, root / "bin" / "long-link")
    (root / "many").mkdir()
    for i in range(70):
        (root / "many" / f"entry-{i:03d}").write_bytes(b"%d\n" % i)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            os.utime(os.path.join(dirpath, n), (T, T), follow_symlinks=False)
    os.utime(root, (T, T))
    return root


def make_esp_tree(root: Path) -> Path:
    (root / "EFI" / "BOOT").mkdir(parents=True)
    (root / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"MZ" + bytes(5000))
    (root / "loader.conf").write_bytes(b"timeout 3\n")
    for p in (root / "EFI" / "BOOT" / "BOOTX64.EFI", root / "loader.conf",
              root / "EFI" / "BOOT", root / "EFI"):
        os.utime(p, (T, T))
    return root


def mkfs_ext4(image: Path, tree: Path, offset: int, size: int, block: int = 1024,
              extra: tuple[str, ...] = ()) -> None:
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME, LC_ALL="C")
    run("mkfs.ext4", "-q", "-F", "-b", str(block), "-U", FS_UUID, *extra,
        "-E", f"hash_seed={FS_UUID},offset={offset}", "-d", str(tree), str(image),
        str(size // block), env=env)


@dataclass
class Disk:
    path: Path
    esp_offset: int
    esp_size: int
    root_offset: int
    root_size: int
    tree: Path
    esp_tree: Path


def make_gpt_disk(path: Path, tree: Path, esp_tree: Path, size: int = 24 * MiB) -> Disk:
    """GPT: partition 1 a FAT ESP (4 MiB), partition 2 ext4 to the end."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    run("sgdisk", "-U", DISK_GUID, "-n", "1:2048:+4M", "-t", "1:EF00", "-u", f"1:{ESP_GUID}",
        "-c", "1:ESP", "-n", "2:0:0", "-t", "2:8300", "-u", f"2:{ROOT_GUID}", "-c", "2:primary",
        str(path))
    esp_off, esp_size = 2048 * 512, 4 * MiB
    root_first = 2048 + 8192
    root_last = size // 512 - 34
    root_off, root_size = root_first * 512, (root_last - root_first + 1) * 512
    run("mkfs.vfat", "-i", "DEADBEEF", "-n", "ESP", "--offset", "2048", str(path),
        str(esp_size // 1024))
    run("mcopy", "-s", "-p", "-m", "-i", f"{path}@@{esp_off}",
        *[str(esp_tree / n) for n in sorted(os.listdir(esp_tree))], "::/")
    mkfs_ext4(path, tree, root_off, root_size)
    return Disk(path, esp_off, esp_size, root_off, root_size, tree, esp_tree)


def make_mbr_disk(path: Path, tree: Path, size: int = 16 * MiB) -> Disk:
    """MBR (sfdisk): partition 1 ext4 (4K blocks) from 1 MiB, 8 MiB; partition 2 empty 0x83."""
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    script = "label: dos\nlabel-id: 0x12345678\n2048,16384,83,*\n18432,,83\n"
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True,
                   capture_output=True)
    mkfs_ext4(path, tree, 2048 * 512, 8 * MiB, block=4096)
    return Disk(path, 0, 0, 2048 * 512, 8 * MiB, tree, tree)


def debugfs(image: Path, offset: int, cmd: str, write: bool = False) -> str:
    args = ["debugfs"] + (["-w"] if write else []) + ["-R", cmd, f"{image}?offset={offset}"]
    return run(*args, env=dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME))


# Several test modules import these fixtures; pytest then keeps one instance per module, so
# the built images are cached here to be made once per session.
_CACHE: dict[str, object] = {}


@pytest.fixture(scope="session", name="audit_trees")
def audit_trees_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if "trees" not in _CACHE:
        base = tmp_path_factory.mktemp("audit-trees")
        _CACHE["trees"] = (make_tree(base / "root"), make_esp_tree(base / "esp"))
    return _CACHE["trees"]  # type: ignore[return-value]


@pytest.fixture(scope="session", name="gpt_disk")
def gpt_disk_fixture(tmp_path_factory: pytest.TempPathFactory,
                     audit_trees: tuple[Path, Path]) -> Disk:
    """A GPT disk image (FAT ESP + ext4 root) made by sgdisk, mkfs.vfat, mcopy, mkfs.ext4.
    Read-only: copy it before planting a change."""
    if _missing:
        pytest.skip(f"missing tools: {_missing}")
    tree, esp = audit_trees
    if "gpt" not in _CACHE:
        _CACHE["gpt"] = make_gpt_disk(tmp_path_factory.mktemp("gpt") / "disk.img", tree, esp)
    return _CACHE["gpt"]  # type: ignore[return-value]


@pytest.fixture(scope="session", name="mbr_disk")
def mbr_disk_fixture(tmp_path_factory: pytest.TempPathFactory, audit_trees: tuple[Path, Path]) -> Disk:
    if _missing:
        pytest.skip(f"missing tools: {_missing}")
    if "mbr" not in _CACHE:
        _CACHE["mbr"] = make_mbr_disk(tmp_path_factory.mktemp("mbr") / "disk.img", audit_trees[0])
    return _CACHE["mbr"]  # type: ignore[return-value]


# -- the fixtures are what the reference checkers accept -------------------------------------------
def extract(image: Path, offset: int, size: int, out: Path) -> Path:
    """``dd`` the byte range out (the reference way to cut a partition)."""
    run("dd", f"if={image}", f"of={out}", "bs=512", f"skip={offset // 512}",
        f"count={size // 512}", "status=none")
    return out


@needs_tools
def test_gpt_disk_is_clean(gpt_disk: Disk, tmp_path: Path) -> None:
    out = run("sgdisk", "-v", str(gpt_disk.path))
    assert "No problems found" in out
    run("e2fsck", "-fn", f"{gpt_disk.path}?offset={gpt_disk.root_offset}")
    esp = extract(gpt_disk.path, gpt_disk.esp_offset, gpt_disk.esp_size, tmp_path / "esp")
    assert run("fsck.fat", "-n", str(esp)).count("\n") <= 2


@needs_tools
def test_mbr_disk_is_clean(mbr_disk: Disk) -> None:
    run("sfdisk", "--verify", str(mbr_disk.path))
    run("e2fsck", "-fn", f"{mbr_disk.path}?offset={mbr_disk.root_offset}")
