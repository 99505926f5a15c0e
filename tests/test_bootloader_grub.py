"""`--bootloader grub|systemd-boot` without booting: boot.img and core.img against GRUB's own
grub-bios-setup, the generated configurations, the kernel order against dpkg, and every
combination that cannot work refused in one line before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import bootkit
import distrokit
import fatcheck
import novmkit
import pytest
from conftest import IS_ROOT

EPOCH = "1700000000"
FS_UUID = "f222513b-ded1-49fa-b591-20ce86a2fe7f"  # the seed's default rootFSUID


@pytest.fixture(scope="module")
def debian() -> Path:
    """The Debian test tree: its GRUB modules, grub-bios-setup and systemd-boot are the inputs
    and the oracle.  Building it needs root and Debian's mirror; grub-mkimage must be on the
    host (grub-common)."""
    if shutil.which("grub-mkimage") is None:
        pytest.skip("needs grub-mkimage (Debian's grub-common)")
    try:
        return distrokit.debian_tree()
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"the Debian test tree cannot be built here: {e}")


def run(*cmd: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


def debugfs_cat(img: Path, offset: int, path: str) -> bytes:
    r = subprocess.run(["debugfs", "-R", f"cat {path}", f"{img}?offset={offset}"], capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def partitions(img: Path) -> dict[int, dict]:
    table = bootkit.sfdisk_json(img)
    return {int(p["node"][len(str(img)):]): p for p in table["partitions"]}


# -- boot.img and core.img: byte-identical to grub-bios-setup -----------------------------------


@pytest.mark.skipif(not IS_ROOT, reason="grub-bios-setup needs a private mount namespace (root)")
@pytest.mark.parametrize("table", ["legacy", "legacy+gpt", "hybrid"])
def test_mbr_and_core_img_are_what_grub_bios_setup_writes(tmp_path: Path, debian: Path, table: str) -> None:
    """pydiskimg's image, and the same image with the boot code and the embedding area wiped
    and then given to grub-bios-setup --no-rs-codes (with the core.img and boot.img the image
    holds): the two are byte-identical.  The disk signature and partition records are kept."""
    root = novmkit.kernel_tree(tmp_path / "root")
    img = tmp_path / "disk.img"
    r = novmkit.build("--root", root, "-o", img, "--partition-table", table, "--bootloader", "grub",
                      "--grub-dir", debian / "usr/lib/grub", "--source-date-epoch", EPOCH, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    parts = partitions(img)
    root_part = next(p for p in parts.values() if p["size"] == max(q["size"] for q in parts.values()))
    grubdir = tmp_path / "grubdir"
    grubdir.mkdir()
    core = debugfs_cat(img, root_part["start"] * 512, "/boot/grub/i386-pc/core.img")
    (grubdir / "core.img").write_bytes(core)
    shutil.copyfile(debian / "usr/lib/grub/i386-pc/boot.img", grubdir / "boot.img")
    assert debugfs_cat(img, root_part["start"] * 512, "/boot/grub/i386-pc/boot.img") == (grubdir / "boot.img").read_bytes()
    # the embedding area: the post-MBR gap, or the BIOS boot partition as sfdisk reads it
    if table == "legacy":
        first, count = 1, min(p["start"] for p in parts.values()) - 1
    else:
        bios = next(p for p in parts.values() if p["type"] == "21686148-6449-6E6F-744E-656564454649")
        first, count = bios["start"], bios["size"]
    core_sectors = -(-len(core) // 512)
    assert summary["bootloader"]["core_img_sectors"] == core_sectors
    assert core_sectors <= count
    ref = tmp_path / "ref.img"
    shutil.copyfile(img, ref)
    with open(ref, "r+b") as f:
        f.seek(0)
        f.write(bytes(440))
        f.seek(first * 512)
        f.write(bytes(count * 512))
    before = bootkit.sfdisk_json(ref)
    g = novmkit.grub_bios_setup(debian, grubdir, ref, "--no-rs-codes")
    assert g.returncode == 0, g.stderr
    assert bootkit.sfdisk_json(ref) == before
    cmp = run("cmp", "-l", img, ref)
    assert cmp.returncode == 0, f"differs from grub-bios-setup at (offset, ours, grub's):\n{cmp.stdout[:2000]}"


def test_patch_fields_at_grubs_offsets() -> None:
    """The fields, read at the offsets of GRUB's boot.h / offsets.h, on a synthetic sector."""
    from pydiskimg.boot import grub

    boot_img = bytes(range(256)) * 2
    sector0 = bytes([0xAB]) * 512
    out = grub.patch_boot_img(boot_img, sector0, 2048)
    assert out[0x03:0x5A] == sector0[0x03:0x5A]  # BPB kept from the disk
    assert int.from_bytes(out[0x5C:0x64], "little") == 2048  # KERNEL_SECTOR
    assert out[0x64] == 0xFF and out[0x66:0x68] == b"\x90\x90"  # BOOT_DRIVE, DRIVE_CHECK
    assert out[0x1B8:0x1FE] == sector0[0x1B8:0x1FE]  # signature + partition records
    assert out[:3] == boot_img[:3] and out[0x1FE:] == boot_img[0x1FE:]
    core = bytearray(3 * 512 + 100)
    core[512 + 0x14] = 0x10  # a no-Reed-Solomon length: not a version mismatch
    core[500:512] = (2).to_bytes(8, "little") + (3).to_bytes(2, "little") + (0x820).to_bytes(2, "little")
    patched = grub.patch_core_img(bytes(core), 34)
    assert len(patched) == 4 * 512
    assert int.from_bytes(patched[500:508], "little") == 35
    assert int.from_bytes(patched[508:510], "little") == 3
    assert int.from_bytes(patched[510:512], "little") == 0x820
    assert patched[488:500] == bytes(12)  # the terminator


def test_core_img_too_big_for_the_gap_is_refused() -> None:
    from pydiskimg import layout
    from pydiskimg.boot import grub
    from pydiskimg.errors import UsageError

    lay = layout.plan_layout("hybrid", 1000 * 2**20, "256M")
    area = grub.embedding_area(lay)
    assert (area.first_sector, area.sectors) == (34, 2015)  # DESIGN.md: hybrid BIOS boot 34, 2015
    grub.check_fits(area, bytes(888 * 512))
    with pytest.raises(UsageError, match="889 sectors, GRUB loads at most 888"):
        grub.check_fits(area, bytes(888 * 512 + 1))
    lay = layout.plan_layout("legacy", 1000 * 2**20, "256M")
    assert grub.embedding_area(lay).sectors == 2047
    small = grub.EmbeddingArea(34, 60, "a small BIOS boot partition")
    grub.check_fits(small, bytes(60 * 512))
    with pytest.raises(UsageError, match="needs 61 sectors.*holds 60"):
        grub.check_fits(small, bytes(60 * 512 + 1))


# -- grub.cfg, loader entries, kernel order ----------------------------------------------------


VERSIONS = ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-10-rt-amd64", "5.10.0-28-amd64",
            "6.1.0-10~bpo11+1-amd64", "6.10.0-1-amd64", "6.1.0-rc7-amd64", "1:4.19.0-1-amd64",
            "6.1.0-10+b1-amd64", "6.1.0-10a-amd64", "6.1.0-010-amd64"]


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg")
def test_version_order_is_dpkgs() -> None:
    from pydiskimg.boot.kernels import compare_versions

    for a in VERSIONS:
        for b in VERSIONS:
            ours = compare_versions(a, b)
            for op, ok in (("lt", ours < 0), ("eq", ours == 0), ("gt", ours > 0)):
                ref = run("dpkg", "--compare-versions", a, op, b).returncode == 0
                assert ref == ok, f"{a} {op} {b}: dpkg says {ref}"


def test_generated_grub_cfg_and_kernel_order(tmp_path: Path, debian: Path) -> None:
    versions = ("5.10.0-28-amd64", "6.1.0-10-amd64", "6.1.0-9-amd64")
    root = novmkit.kernel_tree(tmp_path / "root", versions)
    (root / "boot" / "initrd.img-6.1.0-9-amd64").unlink()
    (root / "boot" / "initramfs-6.1.0-9-amd64.img").write_bytes(b"x")
    img = tmp_path / "disk.img"
    r = novmkit.build("--root", root, "-o", img, "--partition-table", "legacy", "--bootloader", "grub",
                      "--grub-dir", debian / "usr/lib/grub", "--kernel-cmdline", "console=ttyS0 quiet",
                      "--source-date-epoch", EPOCH)
    assert r.returncode == 0, r.stderr
    start = partitions(img)[1]["start"] * 512
    cfg = debugfs_cat(img, start, "/boot/grub/grub.cfg").decode()
    linux = [ln.split() for ln in cfg.splitlines() if ln.strip().startswith("linux")]
    newest_first = sorted(versions, key=lambda v: [run("dpkg", "--compare-versions", v, "lt", w).returncode
                                                   for w in versions].count(0))
    assert [ln[1] for ln in linux] == [f"/boot/vmlinuz-{v}" for v in newest_first]
    assert all(ln[2:] == [f"root=UUID={FS_UUID}", "ro", "console=ttyS0", "quiet"] for ln in linux)
    initrds = [ln.split()[1] for ln in cfg.splitlines() if ln.strip().startswith("initrd")]
    assert initrds == ["/boot/initrd.img-6.1.0-10-amd64", "/boot/initramfs-6.1.0-9-amd64.img",
                       "/boot/initrd.img-5.10.0-28-amd64"]
    assert "set timeout=0" in cfg
    # the modules grub-install would copy, byte for byte
    mods = run("debugfs", "-R", "ls -l /boot/grub/i386-pc", f"{img}?offset={start}").stdout
    for name in ("normal.mod", "linux.mod", "ext2.mod", "command.lst", "moddep.lst"):
        assert name in mods
        assert debugfs_cat(img, start, f"/boot/grub/i386-pc/{name}") == (debian / "usr/lib/grub/i386-pc" / name).read_bytes()
    fsck = run("e2fsck", "-fn", f"{img}?offset={start}")
    assert fsck.returncode == 0, fsck.stdout


def test_the_trees_own_grub_cfg_is_kept(tmp_path: Path, debian: Path) -> None:
    root = novmkit.kernel_tree(tmp_path / "root")
    (root / "boot" / "grub").mkdir()
    (root / "boot" / "grub" / "grub.cfg").write_text("# the distribution's own\n")
    img = tmp_path / "disk.img"
    r = novmkit.build("--root", root, "-o", img, "--partition-table", "legacy+gpt", "--bootloader", "grub",
                      "--grub-dir", debian / "usr/lib/grub", "--source-date-epoch", EPOCH, "-q")
    assert r.returncode == 0, r.stderr
    assert debugfs_cat(img, partitions(img)[2]["start"] * 512, "/boot/grub/grub.cfg") == b"# the distribution's own\n"


@pytest.mark.parametrize("table", ["efi", "efixbootldr"])
def test_systemd_boot_files_on_the_esp(tmp_path: Path, debian: Path, table: str) -> None:
    """The loader on the ESP; entries and kernels next to it (efi), or on the XBOOTLDR
    partition (efixbootldr, partition 2), as bootctl + kernel-install lay them out."""
    root = novmkit.kernel_tree(tmp_path / "root", ("6.1.0-9-amd64", "6.1.0-10-amd64"))
    efi = root / "usr/lib/systemd/boot/efi"
    efi.mkdir(parents=True)
    shutil.copyfile(debian / "usr/lib/systemd/boot/efi/systemd-bootx64.efi", efi / "systemd-bootx64.efi")
    img = tmp_path / "disk.img"
    r = novmkit.build("--root", root, "-o", img, "--partition-table", table, "--bootloader", "systemd-boot",
                      "--kernel-cmdline", "console=ttyS0", "--source-date-epoch", EPOCH)
    assert r.returncode == 0, r.stderr
    esp = partitions(img)[1]["start"] * 512
    boot = partitions(img)[2 if table == "efixbootldr" else 1]["start"] * 512

    def mtype(path: str) -> bytes:
        at = f"{img}@@{esp if path.startswith(('/EFI', '/loader/loader.conf')) else boot}"
        m = subprocess.run(["mtype", "-i", at, f"::{path}"], capture_output=True)
        assert m.returncode == 0, (path, m.stderr)
        return m.stdout

    if table == "efixbootldr":  # nothing of the entries on the ESP
        ls = subprocess.run(["mdir", "-i", f"{img}@@{esp}", "-/", "-b", "::/"], capture_output=True, text=True).stdout
        assert "testos" not in ls and "entries" not in ls, ls

    loader = (efi / "systemd-bootx64.efi").read_bytes()
    assert mtype("/EFI/BOOT/BOOTX64.EFI") == loader
    assert mtype("/EFI/systemd/systemd-bootx64.efi") == loader
    assert b"timeout 0" in mtype("/loader/loader.conf")
    entry = mtype("/loader/entries/testos-6.1.0-10-amd64.conf").decode()
    keys = dict(ln.split(None, 1) for ln in entry.splitlines())
    assert keys["linux"] == "/testos/6.1.0-10-amd64/linux"
    assert keys["initrd"] == "/testos/6.1.0-10-amd64/initrd.img-6.1.0-10-amd64"
    assert keys["options"] == f"root=UUID={FS_UUID} ro console=ttyS0"
    assert keys["version"] == "6.1.0-10-amd64" and keys["title"] == "Test OS 1"
    assert mtype("/testos/6.1.0-10-amd64/linux") == b"kernel 6.1.0-10-amd64"
    assert mtype("/testos/6.1.0-9-amd64/initrd.img-6.1.0-9-amd64") == b"initrd 6.1.0-9-amd64"
    for number in (1, 2) if table == "efixbootldr" else (1,):
        part = tmp_path / f"part{number}.img"
        p = partitions(img)[number]
        dd = run("dd", f"if={img}", f"of={part}", "bs=512", f"skip={p['start']}", f"count={p['size']}",
                 "conv=sparse", "status=none")
        assert dd.returncode == 0, dd.stderr
        fatcheck.assert_fsck_silent(part)


# -- errors: one line, before anything is written -----------------------------------------------


def _error_cases(debian: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    empty = tmp / "empty-grub"
    (empty / "i386-pc").mkdir(parents=True)
    half = tmp / "bios-only-grub"
    half.mkdir()
    (half / "i386-pc").symlink_to(debian / "usr/lib/grub/i386-pc")
    esp = tmp / "esp-with-loader"
    (esp / "EFI" / "BOOT").mkdir(parents=True)
    (esp / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(b"someone else's")
    gd = str(debian / "usr/lib/grub")
    return [
        ("grub on none", ["--partition-table", "none", "--bootloader", "grub"], "partition table"),
        ("systemd-boot on legacy", ["--partition-table", "legacy", "--bootloader", "systemd-boot"], "systemd-boot"),
        ("systemd-boot on legacy+gpt", ["--partition-table", "legacy+gpt", "--bootloader", "systemd-boot"], "systemd-boot"),
        ("both ways", ["--bootloader", "grub", "--install-bootloader", "true"], "installBootLoader"),
        ("in-appliance", ["--bootloader", "grub", "--bootloader-in-appliance"], "bootLoaderInAppliance"),
        ("store only", ["--bootloader", "grub", "--only-nix-store"], "onlyNixStore"),
        ("cmdline alone", ["--kernel-cmdline", "quiet"], "kernelCmdline"),
        ("grub-dir alone", ["--grub-dir", gd], "grubDir"),
        ("grub-dir with systemd-boot", ["--partition-table", "efi", "--bootloader", "systemd-boot", "--grub-dir", gd], "grubDir"),
        ("grub-dir missing", ["--bootloader", "grub", "--grub-dir", str(tmp / "nowhere")], "grubDir"),
        ("no modules", ["--bootloader", "grub", "--grub-dir", str(empty)], "kernel.img"),
        ("no efi modules", ["--partition-table", "hybrid", "--bootloader", "grub", "--grub-dir", str(half)], "x86_64-efi/ lacks kernel.img"),
        ("no systemd-boot", ["--partition-table", "efi", "--bootloader", "systemd-boot"], "systemd-bootx64.efi"),
        ("esp has a loader", ["--partition-table", "efi", "--bootloader", "grub", "--grub-dir", gd, "--esp", str(esp)], "BOOTX64.EFI"),
        ("grub cmdline syntax", ["--bootloader", "grub", "--grub-dir", gd, "--kernel-cmdline", "a=$b"], "kernelCmdline"),
        ("unknown loader", ["--bootloader", "lilo"], "bootLoader"),
        ("abbreviation", ["--bootl", "grub"], "--bootl"),
    ]


def test_impossible_combinations_are_one_line_before_writing(tmp_path: Path, debian: Path) -> None:
    root = novmkit.kernel_tree(tmp_path / "root")
    bare = tmp_path / "bare"
    (bare / "boot").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    cases = _error_cases(debian, tmp_path)
    cases.append(("no kernel", ["--root", str(bare), "--bootloader", "grub", "--grub-dir", str(debian / "usr/lib/grub")], "no kernel"))
    for name, args, needle in cases:
        if "--root" not in args:
            args = ["--root", str(root), *args]
        r = novmkit.build(*args, "-q", "-o", out / "x.img", "--source-date-epoch", EPOCH)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (name, r.stderr)
        assert len(lines) == 1 and "Traceback" not in r.stderr, (name, r.stderr)
        assert lines[0].startswith("pydiskimg: error:") and needle in lines[0], (name, lines[0])
        assert os.listdir(out) == [], (name, os.listdir(out))


def test_bootloader_is_not_an_abbreviation_of_bootloader_in_appliance(tmp_path: Path) -> None:
    from pydiskimg.cli import make_parser

    args = make_parser("build").parse_args(["build", "--root", "r", "--bootloader", "grub"])
    assert args.bootLoader == "grub" and args.bootLoaderInAppliance is None and args.spec_file is None


def test_toml_keys(tmp_path: Path, debian: Path) -> None:
    from pydiskimg import spec

    root = novmkit.kernel_tree(tmp_path / "root")
    toml = tmp_path / "image.toml"
    toml.write_text(f'root = "root"\npartitionTableType = "hybrid"\nbootLoader = "grub"\n'
                    f'kernelCmdline = "console=ttyS0"\ngrubDir = "{debian}/usr/lib/grub"\n')
    s = spec.load(str(toml))
    assert (s.bootloader, s.kernel_cmdline, s.grub_dir, s.root) == (
        "grub", "console=ttyS0", f"{debian}/usr/lib/grub", str(root))
    assert uuid.UUID(FS_UUID)
