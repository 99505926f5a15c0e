"""Format conversion through qemu-img, judged by qemu-img itself (check, info, convert back)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import time
import uuid

import pytest

from pydiskimg import qemu, qemu_structs
from pydiskimg.errors import ToolError, UsageError
from pydiskimg.ids import hmac_v4

DISK_GUID = uuid.UUID("97FD5997-F390-0B4A-A3F8-D106C1723AEA")
EPOCH = 1_700_000_000
FORMATS = ["raw", "qcow2", "qcow2-compressed", "vdi", "vpc"]
QEMU_NAME = {
    "raw": "raw",
    "qcow2": "qcow2",
    "qcow2-compressed": "qcow2",
    "vdi": "vdi",
    "vpc": "vpc",
}


def sha256(path: os.PathLike[str] | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> str:
    """9 MiB sparse raw image: an MBR-ish first sector, compressible and random data, a hole,
    data in the very last sector (so a size rounding would show)."""
    path = tmp_path_factory.mktemp("raw") / "disk.raw"
    size = 9 * 1024 * 1024
    rnd = hashlib.shake_256(b"pydiskimg-qemu-test").digest(3 * 1024 * 1024)
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(b"\xeb\x63\x90" + bytes(507) + b"\x55\xaa")
        f.seek(1024 * 1024)
        f.write(b"pydiskimg " * 100_000)  # ~1 MB compressible
        f.seek(4 * 1024 * 1024 + 4096)
        f.write(rnd)
        f.seek(size - 512)
        f.write(b"\xa5" * 512)
    return str(path)


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True)


def assert_qemu_accepts(path: str, fmt: str, raw: str) -> None:
    """The reference verdict: qemu-img check (vpc: opens cleanly, since qemu-img has no check for
    it), qemu-img info's format and virtual size, and convert-back to identical raw bytes."""
    qfmt = QEMU_NAME[fmt]
    if qfmt != "raw":
        chk = qemu_img("check", "-f", qfmt, path)
        if qfmt == "vpc":
            assert chk.returncode == 63, chk  # "This image format does not support checks"
        else:
            assert chk.returncode == 0, chk.stdout + chk.stderr
            assert "No errors were found on the image." in chk.stdout
    inf = qemu_img("info", "--output=json", path)
    assert inf.returncode == 0 and inf.stderr == "", inf.stderr
    data = json.loads(inf.stdout)
    assert data["format"] == qfmt
    assert data["virtual-size"] == os.path.getsize(raw)
    back = path + ".back.raw"
    conv = qemu_img("convert", "-f", qfmt, "-O", "raw", path, back)
    assert conv.returncode == 0, conv.stderr
    try:
        assert sha256(back) == sha256(raw)
    finally:
        os.unlink(back)


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_accepted_by_qemu_img(raw: str, tmp_path, fmt: str) -> None:
    out = str(tmp_path / f"disk.{fmt}")
    qemu.convert(raw, out, fmt, deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    assert_qemu_accepts(out, fmt, raw)
    assert os.listdir(tmp_path) == [f"disk.{fmt}"]  # no temporary left behind
    # our wrapper agrees with the reference verdict
    qemu.check(out, fmt)
    qemu.compare(raw, out, fmt)


@pytest.mark.parametrize("fmt", ["qcow2-compressed"])
def test_compressed_is_compressed(raw: str, tmp_path, fmt: str) -> None:
    out = str(tmp_path / "c.qcow2")
    plain = str(tmp_path / "p.qcow2")
    qemu.convert(raw, out, fmt, deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    qemu.convert(raw, plain, "qcow2", deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    chk = qemu_img("check", "--output=json", out)
    assert json.loads(chk.stdout)["compressed-clusters"] > 0
    assert os.path.getsize(out) < os.path.getsize(plain)


def test_deterministic_twice_identical(raw: str, tmp_path) -> None:
    """Same raw, same GUID and epoch, two runs a clock-second apart, another cwd and umask."""
    first = tmp_path / "a"
    second = tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for fmt in FORMATS:
        qemu.convert(
            raw, first / fmt, fmt, deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH
        )
    time.sleep(1.1)  # vpc's timestamp has one-second resolution
    old_cwd, old_umask = os.getcwd(), os.umask(0o077)
    try:
        os.chdir(second)
        for fmt in FORMATS:
            qemu.convert(raw, fmt, fmt, deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    finally:
        os.chdir(old_cwd)
        os.umask(old_umask)
    for fmt in FORMATS:
        assert sha256(first / fmt) == sha256(second / fmt), fmt
        assert os.stat(first / fmt).st_mode & 0o777 == os.stat(second / fmt).st_mode & 0o777


@pytest.mark.parametrize("fmt", ["vdi", "vpc"])
def test_plain_qemu_img_is_not_deterministic(raw: str, tmp_path, fmt: str) -> None:
    """Why pinning exists: without it two conversions differ (random UUIDs, the clock)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    qemu.convert(raw, a, fmt, deterministic=False, disk_guid=DISK_GUID, timestamp=EPOCH)
    qemu.convert(raw, b, fmt, deterministic=False, disk_guid=DISK_GUID, timestamp=EPOCH)
    assert sha256(a) != sha256(b)
    assert_qemu_accepts(a, fmt, raw)


def test_other_guid_other_bytes(raw: str, tmp_path) -> None:
    a, b = str(tmp_path / "a.vdi"), str(tmp_path / "b.vdi")
    qemu.convert(raw, a, "vdi", deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    qemu.convert(raw, b, "vdi", deterministic=True, disk_guid=uuid.UUID(int=1), timestamp=EPOCH)
    assert sha256(a) != sha256(b)


def test_vdi_pinned_fields(raw: str, tmp_path) -> None:
    """Offsets from QEMU's VdiHeader (block/vdi.c); UUIDs in IPRT (little-endian) order."""
    out = str(tmp_path / "d.vdi")
    qemu.convert(raw, out, "vdi", deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    with open(out, "rb") as f:
        hdr = f.read(512)
    assert struct.unpack_from("<I", hdr, 0x40)[0] == 0xBEDA107F
    assert hdr[0x188:0x198] == hmac_v4(DISK_GUID.bytes, b"vdi-image-uuid").bytes_le
    assert hdr[0x198:0x1A8] == hmac_v4(DISK_GUID.bytes, b"vdi-last-snap-uuid").bytes_le
    assert hdr[0x1A8:0x1C8] == bytes(32)  # link and parent stay null


@pytest.mark.parametrize(
    ("epoch", "expected"), [(EPOCH, EPOCH - 946684800), (0, 0), (2**40, 2**32 - 1)]
)
def test_vpc_pinned_fields(raw: str, tmp_path, epoch: int, expected: int) -> None:
    """Footer layout from the VHD specification; checksum recomputed independently here."""
    out = str(tmp_path / "d.vpc")
    qemu.convert(raw, out, "vpc", deterministic=True, disk_guid=DISK_GUID, timestamp=epoch)
    size = os.path.getsize(out)
    with open(out, "rb") as f:
        head = f.read(512)
        f.seek(size - 512)
        tail = f.read(512)
    assert head == tail
    assert tail[:8] == b"conectix"
    assert struct.unpack_from(">I", tail, 0x18)[0] == expected
    assert tail[0x44:0x54] == hmac_v4(DISK_GUID.bytes, b"vpc-unique-id").bytes
    zeroed = tail[:0x40] + bytes(4) + tail[0x44:]
    assert struct.unpack_from(">I", tail, 0x40)[0] == (~sum(zeroed)) & 0xFFFFFFFF
    assert qemu_img("info", out).returncode == 0


def test_struct_sizes_and_offsets() -> None:
    """Sizes and the offsets of the pinned fields, from block/vdi.c and the VHD specification."""
    assert qemu_structs.VdiHeader.sizeof() == 512
    assert qemu_structs.VhdFooter.sizeof() == 512
    assert qemu_structs.VhdDynDiskHeader.sizeof() == 1024

    def offset(st, name: str) -> int:
        off = 0
        for sub in st.subcons:
            if sub.name == name:
                return off
            off += sub.sizeof()
        raise KeyError(name)

    assert offset(qemu_structs.VdiHeader, "disk_size") == 0x170
    assert offset(qemu_structs.VdiHeader, "uuid_image") == 0x188
    assert offset(qemu_structs.VdiHeader, "uuid_last_snap") == 0x198
    assert offset(qemu_structs.VhdFooter, "timestamp") == 0x18
    assert offset(qemu_structs.VhdFooter, "checksum") == 0x40
    assert offset(qemu_structs.VhdFooter, "uuid") == 0x44
    assert offset(qemu_structs.VhdDynDiskHeader, "checksum") == 0x24
    assert offset(qemu_structs.VhdDynDiskHeader, "parent_locator") == 0x240


def test_check_reports_corruption(raw: str, tmp_path) -> None:
    vpc = str(tmp_path / "bad.vpc")
    qemu.convert(raw, vpc, "vpc", deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    with open(vpc, "r+b") as f:
        f.seek(0x44)
        f.write(b"\x00")  # unique id changed, checksum now wrong
    assert qemu_img("info", vpc).returncode != 0  # the reference agrees it is broken
    with pytest.raises(ToolError) as e:
        qemu.check(vpc, "vpc")
    assert "\n" not in str(e.value) and "checksum" in str(e.value)

    vdi = str(tmp_path / "bad.vdi")
    qemu.convert(raw, vdi, "vdi", deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    with open(vdi, "r+b") as f:
        f.seek(0x184)
        f.write(struct.pack("<I", 1))  # blocks_allocated wrong
    assert qemu_img("check", vdi).returncode != 0
    with pytest.raises(ToolError) as e:
        qemu.check(vdi, "vdi")
    assert "\n" not in str(e.value)


def test_qemu_img_failure_is_one_line_and_leaves_nothing(tmp_path) -> None:
    """A real qemu-img failure: vpc cannot hold more than 2040 GiB."""
    huge = tmp_path / "huge.raw"
    with open(huge, "wb") as f:
        f.truncate(3 << 40)
    out = tmp_path / "huge.vpc"
    with pytest.raises(ToolError) as e:
        qemu.convert(huge, out, "vpc", deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    msg = str(e.value)
    assert "\n" not in msg and "2040 GiB" in msg and "qemu-img" in msg
    assert sorted(os.listdir(tmp_path)) == ["huge.raw"]


def test_qemu_img_missing(raw: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not qemu.qemu_img_available()
    out = tmp_path / "x.qcow2"
    with pytest.raises(ToolError) as e:
        qemu.convert(raw, out, "qcow2", deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    assert "qemu-img" in str(e.value) and "qemu-utils" in str(e.value)
    assert "\n" not in str(e.value)
    assert not out.exists()


def test_interrupted_qemu_img_leaves_nothing(raw: str, tmp_path, monkeypatch) -> None:
    """A qemu-img that dies mid-way (a stub on the PATH) leaves no output, not even partial."""
    stub = tmp_path / "bin" / "qemu-img"
    stub.parent.mkdir()
    stub.write_text(
        '#!/bin/sh\nfor last; do :; done\necho partial > "$last"\n'
        'echo "qemu-img: $last: Killed by signal" >&2\nexit 137\n'
    )
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}:{os.environ['PATH']}")
    out = tmp_path / "x.vdi"
    with pytest.raises(ToolError, match="exit 137.*Killed by signal"):
        qemu.convert(raw, out, "vdi", deterministic=True, disk_guid=DISK_GUID, timestamp=EPOCH)
    assert sorted(os.listdir(tmp_path)) == ["bin"]


def test_unknown_format(raw: str, tmp_path) -> None:
    with pytest.raises(UsageError, match="vmdk"):
        qemu.convert(
            raw, tmp_path / "x", "vmdk", deterministic=True, disk_guid=DISK_GUID, timestamp=0
        )
