"""Whole images from `pydiskimg build`, judged by the reference tools.

For every table type x {a small tree, the torture tree} x a `contents` list with modes and
owners: sgdisk -v / sfdisk --verify clean, e2fsck -fn silent on the root partition, fsck.fat -n
silent on the ESP, and both trees read back (debugfs, mtools) equal to their sources, owners
from `contents` resolved by name.  The expected root tree is a real folder made by the seed's
own steps: `cp -a` of the source, the seed's rsync loop for `contents`, `chown -R` for owners.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import T_NS, _write, build_small_tree, set_tree_mtimes
from ext4check import assert_fsck_clean, assert_tree_matches
from fatcheck import assert_fsck_silent, digest, mtools_extract
from imgcheck import assert_table_clean, extract, partitions, qemu_img_check, sha256, to_raw
from test_contents_graft import run_seed_loop

SDE = 1_700_000_100
TABLES = ["none", "legacy", "legacy+gpt", "efi", "hybrid"]
ROOT_INDEX = {"legacy": 0, "legacy+gpt": 1, "efi": 1, "hybrid": 2}


def pydiskimg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pydiskimg", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def grafts(tmp_path: Path) -> tuple[list[dict[str, str]], Path]:
    """A contents list: a file with a mode, a folder owned by a name, a glob into a new folder."""
    s = tmp_path / "grafts"
    (s / "site" / "sub").mkdir(parents=True)
    _write(s / "motd", b"built by pydiskimg\n", 0o600)
    _write(s / "site" / "index.html", b"<p>hi</p>\n")
    _write(s / "site" / "sub" / "data", b"d" * 9000, 0o640)
    (s / "keys").mkdir()
    _write(s / "keys" / "a.pub", b"ssh-ed25519 A\n")
    _write(s / "keys" / "b.pub", b"ssh-ed25519 B\n")
    set_tree_mtimes(s, T_NS - 10**9)
    entries = [
        {"source": str(s / "motd"), "target": "/etc/motd", "mode": "644"},
        {"source": str(s / "site"), "target": "/srv/site", "mode": "750", "user": "www", "group": "www"},
        {"source": str(s / "keys") + "/*", "target": "/home/alice/.ssh", "mode": "600",
         "user": "alice", "group": "users"},
    ]
    return entries, s


def add_accounts(root: Path) -> None:
    """The tree's own passwd/group, through which contents owners resolve."""
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "passwd").write_bytes(
        b"root:x:0:0::/root:/bin/sh\nalice:x:1000:100::/home/alice:/bin/sh\nwww:x:54321:54322::/srv:/bin/false\n")
    (root / "etc" / "group").write_bytes(b"root:x:0:\nusers:x:100:alice\nwww:x:54322:\n")


def expected_root(src: Path, entries: list[dict[str, str]], dest: Path) -> Path:
    """The seed's own steps on a real folder: cp -a, its rsync loop, mkdir -p /etc/nixos, chown -R."""
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    before = {p for p in _walk(dest)}
    r = run_seed_loop(dest, entries)
    assert r.returncode == 0, r.stdout + r.stderr
    (dest / "etc" / "nixos").mkdir(parents=True, exist_ok=True)
    users = {ln.split(":")[0]: int(ln.split(":")[2]) for ln in (dest / "etc/passwd").read_text().splitlines()}
    groups = {ln.split(":")[0]: int(ln.split(":")[2]) for ln in (dest / "etc/group").read_text().splitlines()}
    for e in entries:
        if "user" in e:
            t = dest / e["target"].lstrip("/")
            subprocess.run(["chown", "-h", "-R", f"{users[e['user']]}:{groups[e['group']]}", str(t)], check=True)
    # folder times: folders the steps created get SOURCE_DATE_EPOCH (pydiskimg's rule); folders
    # that existed keep their source mtime (the seed's copy would stamp the build time there)
    for p in _walk(dest):
        full = dest / p
        if full.is_dir() and not full.is_symlink():
            if p in before:
                st = os.lstat(src / p)
                os.utime(full, ns=(st.st_atime_ns, st.st_mtime_ns))
            elif not any(str(full).startswith(str(dest / e["target"].lstrip("/"))) and
                         not e["source"].endswith("*") for e in entries):
                os.utime(full, ns=(SDE * 10**9, SDE * 10**9))
    st = os.lstat(src)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    return dest


def _walk(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def make_esp(root: Path) -> Path:
    for rel, data in {
        "EFI/BOOT/BOOTX64.EFI": b"MZ" + os.urandom(50_000),
        "loader/loader.conf": b"default demo.conf\n",
        "loader/entries/demo.conf": b"title demo\n",
        "This is a very long file name.txt": b"long name\n",
        "Long Directory Name/MixedCase.Txt": b"mixed\n",
        "a.b.c.d": b"dots\n",
    }.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@pytest.mark.parametrize("tree", ["small", "torture"])
@pytest.mark.parametrize("table", TABLES)
def test_image_read_back_by_reference_tools(tmp_path: Path, table: str, tree: str, torture_tree: Path,
                                            grafts: tuple[list[dict[str, str]], Path]) -> None:
    entries, _ = grafts
    if tree == "small":
        src = build_small_tree(tmp_path / "small")
    else:
        src = tmp_path / "torture"
        subprocess.run(["cp", "-a", str(torture_tree), str(src)], check=True)
    add_accounts(src)
    st = os.lstat(src)
    set_tree_mtimes(src / "etc", T_NS)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    contents = tmp_path / "contents.json"
    contents.write_text(json.dumps(entries))
    img = tmp_path / "disk.img"
    args = ["build", "--root", str(src), "-o", str(img), "--partition-table", table, "--contents", str(contents),
            "--additional-space", "8M", "--boot-size", "64M", "--source-date-epoch", str(SDE), "--json", "--quiet"]
    esp = None
    if table in ("efi", "hybrid"):
        esp = make_esp(tmp_path / "esp")
        args += ["--esp", str(esp)]
    r = pydiskimg(*args)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)

    if table == "none":
        root_off = 0
    else:
        assert_table_clean(img, table)
        parts = partitions(img)
        root_off = parts[ROOT_INDEX[table]][0]
        assert summary["root"]["offset"] == root_off
    assert_fsck_clean(img, root_off)
    expected = expected_root(src, entries, tmp_path / "expected")
    assert_tree_matches(img, expected, root_off)

    if esp is not None:
        esp_off, esp_size = parts[0]
        fat = extract(img, esp_off, esp_size, tmp_path / "esp.img")
        assert_fsck_silent(fat)
        assert digest(mtools_extract(fat, tmp_path / "esp-back")) == digest(esp)


@pytest.mark.parametrize("fmt", ["qcow2", "qcow2-compressed", "vdi", "vpc"])
def test_formats_check_and_convert_back(tmp_path: Path, fmt: str) -> None:
    src = build_small_tree(tmp_path / "small")
    esp = make_esp(tmp_path / "esp")
    common = ["--root", str(src), "--esp", str(esp), "--partition-table", "efi", "--boot-size", "48M",
              "--additional-space", "4M", "--quiet"]
    assert pydiskimg("build", *common, "-o", str(tmp_path / "disk.img")).returncode == 0
    out = tmp_path / f"disk.{fmt}"
    r = pydiskimg("build", *common, "-o", str(out), "--format", fmt)
    assert r.returncode == 0, r.stderr
    qemu_img_check(out, fmt)
    back = to_raw(out, fmt, tmp_path / "back.img")
    assert sha256(back) == sha256(tmp_path / "disk.img")


def test_auto_size_is_exact_plus_additional_space(tmp_path: Path) -> None:
    """diskSize auto: what the filesystem needs + additionalSpace + the table's room, to a MiB."""
    src = build_small_tree(tmp_path / "small")
    img = tmp_path / "disk.img"
    r = pydiskimg("build", "--root", str(src), "-o", str(img), "--partition-table", "legacy",
                  "--additional-space", "64M", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    size = img.stat().st_size
    assert size % (1 << 20) == 0
    (start, psize), = partitions(img)
    # the filesystem has at least additionalSpace free beyond what the tree needs
    out = subprocess.run(["dumpe2fs", "-h", f"{img}?offset={start}"], capture_output=True, text=True).stdout
    fields = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
    free = int(fields["Free blocks"]) * int(fields["Block size"])
    assert free >= 64 << 20
    # and not much more: within one MiB of rounding plus the 5% reserve of what was added
    assert free <= (64 << 20) + (1 << 20) + int(fields["Reserved block count"]) * 4096 + (4 << 20)


def test_post_vm_and_efi_vars(tmp_path: Path) -> None:
    src = build_small_tree(tmp_path / "small")
    ovmf_vars = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
    assert ovmf_vars.exists(), "Debian's ovmf must be installed"
    r = pydiskimg("build", "--root", str(src), "-o", str(tmp_path / "disk.qcow2"), "--format", "qcow2",
                  "--partition-table", "efi", "--boot-size", "48M", "--touch-efi-vars", "--quiet",
                  "--post-vm", 'echo "$diskImage" > "$out/seen"; qemu-img info "$diskImage" > /dev/null')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "efi-vars.fd").read_bytes() == ovmf_vars.read_bytes()
    assert oct((tmp_path / "efi-vars.fd").stat().st_mode & 0o777) == "0o644"
    assert (tmp_path / "seen").read_text().strip().endswith("disk.qcow2")
    assert sorted(os.listdir(tmp_path)) == ["disk.qcow2", "efi-vars.fd", "seen", "small"]


def test_only_nix_store_and_config_file(tmp_path: Path) -> None:
    src = build_small_tree(tmp_path / "small")
    store = src / "nix" / "store" / "abc-hello"
    store.mkdir(parents=True)
    _write(store / "hello", b"hi\n", 0o555)
    img = tmp_path / "store.img"
    r = pydiskimg("build", "--root", str(src), "-o", str(img), "--partition-table", "none",
                  "--only-nix-store", "--quiet")
    assert r.returncode == 0, r.stderr
    assert_fsck_clean(img)
    ls = subprocess.run(["debugfs", "-R", "ls -p /", str(img)], capture_output=True, text=True).stdout
    names = {ln.split("/")[5] for ln in ls.splitlines() if ln.startswith("/")}
    assert names == {".", "..", "lost+found", "abc-hello"}
    label = subprocess.run(["e2label", str(img)], capture_output=True, text=True).stdout.strip()
    assert label == "nix-store"

    conf = tmp_path / "configuration.nix"
    conf.write_text("{ ... }: { }\n")
    img2 = tmp_path / "conf.img"
    r = pydiskimg("build", "--root", str(src), "-o", str(img2), "--partition-table", "none",
                  "--config-file", str(conf), "--quiet")
    assert r.returncode == 0, r.stderr
    cat = subprocess.run(["debugfs", "-R", "cat /etc/nixos/configuration.nix", str(img2)],
                         capture_output=True, text=True).stdout
    assert cat == "{ ... }: { }\n"


def test_default_output_is_name_slash_nixos_img(tmp_path: Path) -> None:
    src = build_small_tree(tmp_path / "small")
    r = pydiskimg("build", "--root", str(src), "--name", "my-image", "--format", "vpc", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "my-image" / "nixos.vhd").is_file()


def test_seed_derives_identifiers_like_systemd_repart(tmp_path: Path) -> None:
    """--seed: the ESP's GUID and the disk GUID are systemd-repart's (vector in DESIGN.md)."""
    src = build_small_tree(tmp_path / "small")
    img = tmp_path / "disk.img"
    r = pydiskimg("build", "--root", str(src), "-o", str(img), "--partition-table", "efi", "--boot-size", "48M",
                  "--seed", "0867da16-f251-457d-a9e8-c31f9a3c220b", "--quiet")
    assert r.returncode == 0, r.stderr
    t = json.loads(subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True).stdout)
    t = t["partitiontable"]
    assert t["id"].lower() == "b581fef7-24ed-4f31-990b-099ec86bba03"
    assert t["partitions"][0]["uuid"].lower() == "dac4058a-2fc0-4808-a7ef-b8b4501c00ce"


def test_demo_spec_builds(tmp_path: Path) -> None:
    """The README's demo: examples/demo.toml builds an efi image that the tools accept."""
    repo = Path(__file__).resolve().parent.parent
    work = tmp_path / "examples"
    shutil.copytree(repo / "examples", work, symlinks=True)
    r = pydiskimg("build", str(work / "demo.toml"), "--quiet")
    assert r.returncode == 0, r.stderr
    img = tmp_path / "demo.img"
    assert_table_clean(img, "efi")
    parts = partitions(img)
    assert_fsck_clean(img, parts[1][0])
    r = pydiskimg("inspect", str(img))
    assert r.returncode == 0 and "ESP" in r.stdout, r.stdout + r.stderr
