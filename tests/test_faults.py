"""Fault injection: a full disk (from the start, or filling up after the pre-flight check),
sources that change between scan and copy, an unreadable source for an unprivileged user,
SIGINT/SIGTERM at random moments.  Each expects exactly one line on stderr, the right exit
status, no traceback and nothing left behind.

Full disks are real: a small tmpfs mounted for the test (as root), filled by another file.  To
fill it (or change a source) *after* pydiskimg checked the space and scanned the tree but before
it writes, the test stops the process with SIGSTOP as soon as its staging entry appears beside
the output, acts, then lets it continue with SIGCONT.  Expected space figures come from the
kernel (statvfs of the mount), not from pydiskimg.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs and setpriv need root")

MiB = 1 << 20
PY = [sys.executable, "-m", "pydiskimg"]


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root tree: /etc/passwd, some small files, one 24 MiB file, one 1 MiB file."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    for i in range(50):
        (root / "etc" / f"small{i}.conf").write_bytes(_data(1000 + i, i))
    (root / "big.bin").write_bytes(_data(24 * MiB, 1))
    (root / "medium.bin").write_bytes(_data(MiB, 2))
    return root


@contextlib.contextmanager
def tmpfs(size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes, unmounted and removed afterwards whatever happens."""
    d = Path(tempfile.mkdtemp(prefix="pydiskimg-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        if subprocess.run(["umount", str(d)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], check=False)
        d.rmdir()


def available(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bfree * st.f_frsize  # the tests run as root


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s filesystem with one file; return it."""
    path = folder / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):
            os.posix_fallocate(fd, 0, available(folder))
        pos = os.fstat(fd).st_size
        for chunk in (MiB, 4096):
            block = b"\x01" * chunk
            while True:
                try:
                    os.pwrite(fd, block, pos)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
                pos += chunk
    finally:
        os.close(fd)
    assert available(folder) == 0
    return path


def one_line(r: subprocess.CompletedProcess[str] | subprocess.Popen[str], stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _idle() -> None:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def start(args: list[str], cwd: Path | None = None, idle: bool = False) -> subprocess.Popen[str]:
    """pydiskimg in a process of its own; ``idle``: at SCHED_IDLE, so that on a busy machine
    the test (polling for the moment to stop it) is never the one left waiting for a CPU."""
    return subprocess.Popen([*PY, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_idle if idle else None)


def stop_when(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str) -> None:
    """Poll until ``ready()``, then SIGSTOP the process (and its children)."""
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"finished before {what}: {proc.communicate()}")
        time.sleep(0.0005)
    for pid in [proc.pid, *children(proc.pid)]:
        os.kill(pid, signal.SIGSTOP)


def cont(proc: subprocess.Popen[str]) -> None:
    for pid in [*children(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def staging_in(folder: Path) -> Callable[[], bool]:
    """True once pydiskimg made its staging folder or temporary file in ``folder``."""
    return lambda: any(".pydiskimg-" in n for n in os.listdir(folder))


# -- a disk too small from the start: the pre-flight check ------------------------------------


COMMANDS = {
    "build-raw": lambda root, out: ["build", "-q", "--root", str(root), "-o", str(out / "disk.img"),
                                    "--partition-table", "efi"],
    "build-qcow2": lambda root, out: ["build", "-q", "--root", str(root), "-o", str(out / "disk.qcow2"),
                                      "--format", "qcow2"],
    "ext4": lambda root, out: ["ext4", "-q", "--root", str(root), "-o", str(out / "fs.img")],
    "fat": lambda root, out: ["fat", "-q", "--root", str(root), "-o", str(out / "esp.img"), "--size", "auto"],
}


@needs_root
@pytest.mark.parametrize("command", list(COMMANDS))
def test_too_small_from_the_start(tree: Path, command: str) -> None:
    with tmpfs(8 * MiB) as mnt:
        avail = available(mnt)
        r = subprocess.run([*PY, *COMMANDS[command](tree, mnt)], capture_output=True, text=True)
        line = one_line(r, r.stderr)
        assert r.returncode == 2
        assert line.startswith("pydiskimg: error: ")
        assert f"not enough free space in {mnt}" in line and f"{avail:,} available" in line, line
        needed = int(line.split(": ")[-1].split(" bytes needed")[0].replace(",", ""))
        assert needed > 25 * MiB  # the tree's data alone is 25 MiB
        assert os.listdir(mnt) == [], "output left behind"


@needs_root
def test_partition_and_split_too_small(tree: Path, tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    subprocess.run([*PY, "build", "-q", "--root", str(tree), "-o", str(img), "--partition-table", "efi"],
                   check=True)
    with tmpfs(8 * MiB) as mnt:
        fill(mnt)
        r = subprocess.run([*PY, "partition", "-q", str(mnt / "p.img"), "--partition-table", "efi",
                            "--disk-size", "1G"], capture_output=True, text=True)
        assert r.returncode == 2 and f"not enough free space in {mnt}" in one_line(r, r.stderr)
        (mnt / "filler").unlink()
        r = subprocess.run([*PY, "split", "-q", str(img), str(mnt / "parts")], capture_output=True, text=True)
        line = one_line(r, r.stderr)
        assert r.returncode == 2 and f"not enough free space in {mnt / 'parts'}" in line, line
        assert os.listdir(mnt) == [], "output left behind"


# -- the disk fills up after the pre-flight check passed ----------------------------------------


@needs_root
@pytest.mark.parametrize("command", list(COMMANDS))
def test_space_runs_out_after_the_check(tree: Path, command: str) -> None:
    """Another file takes the free space right after the check: the write itself hits ENOSPC."""
    with tmpfs(160 * MiB) as mnt:
        p = start(COMMANDS[command](tree, mnt), idle=True)
        stop_when(p, staging_in(mnt), "the write")
        filler = fill(mnt)
        cont(p)
        _, err = p.communicate(timeout=300)
        line = one_line(p, err)
        assert p.returncode == 2
        assert "cannot write: No space left on device" in line and f"(in {mnt}: " in line, line
        assert "bytes available" in line
        assert os.listdir(mnt) == [filler.name], "output left behind"


@needs_root
def test_space_runs_out_in_the_middle_of_the_data(tree: Path) -> None:
    """The raw image is partly written (some MiB of file data on disk) when the disk fills."""
    with tmpfs(160 * MiB) as mnt:
        p = start(COMMANDS["build-raw"](tree, mnt), idle=True)

        def some_data() -> bool:
            for d in os.listdir(mnt):
                if ".pydiskimg-" in d and os.path.isdir(mnt / d):
                    for f in os.listdir(mnt / d):
                        with contextlib.suppress(OSError):
                            if os.stat(mnt / d / f).st_blocks * 512 >= 2 * MiB:
                                return True
            return False

        stop_when(p, some_data, "2 MiB were written")
        filler = fill(mnt)
        cont(p)
        _, err = p.communicate(timeout=300)
        line = one_line(p, err)
        assert p.returncode == 2 and "No space left on device" in line, line
        assert os.listdir(mnt) == [filler.name], "output left behind"


@needs_root
def test_space_runs_out_during_the_qcow2_conversion(tree: Path) -> None:
    """qemu-img's copy is being written when the disk fills (the raw image is complete)."""
    with tmpfs(160 * MiB) as mnt:
        p = start(COMMANDS["build-qcow2"](tree, mnt), idle=True)

        def converting() -> bool:
            for d in os.listdir(mnt):
                if ".pydiskimg-" in d and os.path.isdir(mnt / d):
                    with contextlib.suppress(OSError):
                        if any(f.endswith(".tmp") for f in os.listdir(mnt / d)):
                            return True
            return False

        stop_when(p, converting, "the conversion")
        assert children(p.pid), "qemu-img is not running"
        filler = fill(mnt)
        cont(p)
        _, err = p.communicate(timeout=300)
        line = one_line(p, err)
        assert p.returncode == 2, err
        assert "disk.qcow2: cannot write: No space left on device" in line and f"(in {mnt}: " in line, line
        assert os.listdir(mnt) == [filler.name], "output left behind"


@needs_root
def test_read_only_output_folder(tree: Path) -> None:
    with tmpfs(64 * MiB) as mnt:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        for command in COMMANDS:
            r = subprocess.run([*PY, *COMMANDS[command](tree, mnt)], capture_output=True, text=True)
            line = one_line(r, r.stderr)
            assert r.returncode == 2 and f"cannot write in folder {mnt}: read-only filesystem" in line, line


# -- sources that change between scan and copy -------------------------------------------------


CHANGES = {
    "vanishes": (lambda f: f.unlink(), "cannot read: No such file or directory"),
    "shrinks": (lambda f: os.truncate(f, f.stat().st_size // 2), "size changed from"),
    "grows": (lambda f: f.open("ab").write(b"more"), "size changed from"),
}


@pytest.mark.parametrize("which", ["big.bin", "etc/small7.conf"])
@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("command", ["build-raw", "ext4"])
def test_source_changes_between_scan_and_copy(tree: Path, tmp_path: Path, command: str, change: str,
                                              which: str) -> None:
    """The change lands after the scan and before the copy: one line naming the file.  (A
    change after the file was copied is not seen: the image holds the file as it was read,
    whole.  If the copy won the race, the image must then be complete and the test retries.)"""
    out = tmp_path / "out"
    out.mkdir()
    original = (tree / which).read_bytes()
    act, message = CHANGES[change]
    for _attempt in range(5):
        (tree / which).write_bytes(original)
        p = start(COMMANDS[command](tree, out), idle=True)
        stop_when(p, staging_in(out), "the write")
        act(tree / which)
        cont(p)
        _, err = p.communicate(timeout=300)
        if p.returncode == 0:  # copied before the change: a whole image, then try again
            assert err == "" and len(os.listdir(out)) == 1
            for n in os.listdir(out):
                os.unlink(out / n)
            continue
        line = one_line(p, err)
        assert p.returncode == 2
        assert line.startswith(f"pydiskimg: error: {tree / which}: {message}"), line
        assert os.listdir(out) == [], "output left behind"
        return
    pytest.fail("the copy was always done before the change")


# -- an unprivileged user and an unreadable source ---------------------------------------------


def _world_readable_copy(base: Path) -> dict[str, str]:
    """pydiskimg (and, when the venv is out of reach for `nobody`, its dependencies) copied
    under ``base``; returns the environment that imports them from there."""
    import pydiskimg

    lib = base / "lib"
    shutil.copytree(Path(pydiskimg.__file__).parent, lib / "pydiskimg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lib), "LC_ALL": "C"}
    probe = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
             "import numpy, construct, crcmod, crc32c"]
    if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        import construct
        import crc32c
        import crcmod
        import numpy

        for mod in (numpy, construct, crcmod, crc32c):
            top = Path(mod.__file__)
            top = top.parent if top.name == "__init__.py" else top
            shutil.copytree(top, lib / top.name) if top.is_dir() else shutil.copy(top, lib)
            libs = top.parent / f"{top.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, lib / libs.name)
    for dirpath, dirnames, filenames in os.walk(base):
        for n in dirnames:
            os.chmod(os.path.join(dirpath, n), 0o755)
        for n in filenames:
            p = os.path.join(dirpath, n)
            os.chmod(p, os.stat(p).st_mode | 0o444)
    r = subprocess.run(probe[:-1] + ["import pydiskimg.cli, numpy, construct, crcmod, crc32c"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"nobody cannot run {sys.executable} with pydiskimg: {r.stderr}"
    return env


@needs_root
def test_unreadable_sources_as_an_unprivileged_user() -> None:
    base = Path(tempfile.mkdtemp(prefix="pydiskimg-nobody-"))
    try:
        os.chmod(base, 0o755)
        env = _world_readable_copy(base)
        root = base / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        (root / "secret").write_bytes(b"top secret\n")
        (root / "hidden").mkdir()
        (root / "hidden" / "f").write_text("x\n")
        out = base / "out"
        out.mkdir()
        nobody = pwd.getpwnam("nobody")
        os.chown(out, nobody.pw_uid, nobody.pw_gid)
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                os.chmod(os.path.join(dirpath, n), 0o755 if n in dirnames else 0o644)
        os.chmod(root, 0o755)
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *PY]

        def run(*args: str) -> str:
            r = subprocess.run([*as_nobody, *args], env=env, capture_output=True, text=True, cwd=base)
            assert r.returncode == 2, r.stderr
            assert os.listdir(out) == [], "output left behind"
            return one_line(r, r.stderr)

        build = ("build", "-q", "--root", str(root), "-o", str(out / "disk.img"))
        os.chmod(root / "secret", 0o000)
        assert run(*build) == f"pydiskimg: error: {root / 'secret'}: cannot read: permission denied"
        os.chmod(root / "secret", 0o644)
        os.chmod(root / "hidden", 0o000)
        line = run(*build)
        assert line.startswith(f"pydiskimg: error: {root / 'hidden'}: cannot read") and "permission denied" in line
        os.chmod(root / "hidden", 0o755)
        os.chmod(root, 0o700)  # the root folder itself: refused before any scan
        assert run(*build) == f"pydiskimg: error: root (--root): {root}: cannot read: permission denied"
        assert run("ext4", "-q", "--root", str(root), "-o", str(out / "fs.img")) == \
            f"pydiskimg: error: --root: {root}: cannot read: permission denied"
        os.chmod(root, 0o755)
        esp = base / "esp"
        esp.mkdir(mode=0o700)  # root's own: nobody cannot list it
        assert run(*build, "--partition-table", "efi", "--esp", str(esp)) == \
            f"pydiskimg: error: esp (--esp): {esp}: cannot read: permission denied"
        # an output folder nobody may write in
        assert run("build", "-q", "--root", str(root), "-o", str(base / "disk.img")) == \
            f"pydiskimg: error: output (-o): cannot write in folder {base}: permission denied"
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- SIGINT and SIGTERM at random moments of a build --------------------------------------------


def _handlers_installed(pid: int) -> bool:
    """True once the process catches SIGTERM (pydiskimg's main installed its handlers)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    except OSError:
        pass
    return False


def test_signals_at_random_moments(tree: Path, tmp_path: Path) -> None:
    for i in range(200):  # more files: a longer scan and plan
        (tree / "etc" / f"more{i}").write_bytes(_data(5000, 100 + i))
    out = tmp_path / "out"
    out.mkdir()
    args = ["build", "-q", "--root", str(tree), "-o", str(out / "disk.img"), "--partition-table", "efi"]
    t0 = time.monotonic()
    subprocess.run([*PY, *args], check=True)
    duration = time.monotonic() - t0
    reference = (out / "disk.img").read_bytes()
    (out / "disk.img").unlink()
    rng = random.Random(12)
    interrupted = 0
    for trial in range(10):
        sig = (signal.SIGINT, signal.SIGTERM)[trial % 2]
        p = start(args)
        while not _handlers_installed(p.pid) and p.poll() is None:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, duration * 0.9))
        p.send_signal(sig)
        _, err = p.communicate(timeout=300)
        if p.returncode == 0:  # it finished first: then the image is whole
            assert err == "" and (out / "disk.img").read_bytes() == reference
            (out / "disk.img").unlink()
            continue
        interrupted += 1
        assert p.returncode == 128 + sig, (sig, p.returncode, err)
        word = "interrupted" if sig == signal.SIGINT else "terminated"
        assert one_line(p, err) == f"pydiskimg: {word} by {sig.name}: stopped, nothing written"
        assert os.listdir(out) == [], f"left behind after {sig.name} (trial {trial})"
    assert interrupted >= 5


# -- the staging folder for postVM, the efi-vars copy -------------------------------------------


@needs_root
def test_post_vm_fills_the_disk(tree: Path) -> None:
    """postVM runs in the staging folder ($out) beside the output: a full disk there fails the
    command, which fails the build with its last line; nothing is kept."""
    with tmpfs(96 * MiB) as mnt:
        r = subprocess.run([*PY, *COMMANDS["build-raw"](tree, mnt),
                            "--post-vm", 'head -c 200M /dev/zero > "$out/extra"'],
                           capture_output=True, text=True)
        line = one_line(r, r.stderr)
        assert r.returncode == 2
        assert line.startswith("pydiskimg: error: postVM (--post-vm): exited with status 1: ")
        assert "No space left on device" in line
        assert os.listdir(mnt) == [], "output left behind"


@needs_root
def test_space_runs_out_during_the_efi_vars_copy(tree: Path, tmp_path: Path) -> None:
    """The image is converted and in the staging folder; the disk fills while efi-vars.fd (a
    large variables file here) is copied beside it."""
    vars_fd = tmp_path / "VARS.fd"
    vars_fd.write_bytes(_data(48 * MiB, 3))
    with tmpfs(256 * MiB) as mnt:
        for _attempt in range(5):
            p = start([*COMMANDS["build-qcow2"](tree, mnt), "--partition-table", "efi", "--touch-efi-vars",
                       "--efi-variables", str(vars_fd)], idle=True)

            def converted() -> bool:
                return any(os.path.exists(mnt / d / "disk.qcow2") for d in os.listdir(mnt) if ".pydiskimg-" in d)

            stop_when(p, converted, "the conversion's end")
            filler = fill(mnt)
            cont(p)
            _, err = p.communicate(timeout=300)
            if p.returncode == 0:  # the copy was done first: a whole output, try again
                assert err == ""
                for n in os.listdir(mnt):
                    os.unlink(mnt / n)
                continue
            line = one_line(p, err)
            assert p.returncode == 2
            assert "disk.qcow2: cannot write: No space left on device" in line and f"(in {mnt}: " in line, line
            assert os.listdir(mnt) == [filler.name], "output left behind"
            return
        pytest.fail("efi-vars.fd was always copied before the disk filled")


# -- EIO, EROFS, EDQUOT: no small filesystem gives them on demand; the write calls fail -----------


@pytest.mark.parametrize(("code", "where"), [(errno.EIO, "fsync"), (errno.EROFS, "pwrite"),
                                             (errno.EDQUOT, "pwrite")])
def test_other_write_errors_are_one_line(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         code: int, where: str) -> None:
    from pydiskimg import api
    from pydiskimg.errors import OutputError

    real = getattr(os, where)
    out = tmp_path / "out"
    out.mkdir()
    calls = {"n": 0}

    def failing(fd: int, *args: object) -> object:
        calls["n"] += 1
        if calls["n"] > (0 if where == "fsync" else 5):
            raise OSError(code, os.strerror(code))
        return real(fd, *args)

    monkeypatch.setattr(os, where, failing)
    with pytest.raises(OutputError) as e:
        api.make_ext4(tree, out / "fs.img")
    monkeypatch.undo()
    text = str(e.value)
    assert text.startswith(f"{out / 'fs.img'}: cannot write: {os.strerror(code)}") and "\n" not in text
    if code == errno.EDQUOT:
        assert f"(in {out}: " in text and "bytes available" in text
    assert os.listdir(out) == [], "output left behind"


def test_library_calls_leave_the_signal_state_alone(tree: Path, tmp_path: Path) -> None:
    """Outside the CLI (the Python API) nothing stays installed or latched: a later SIGTERM
    still ends the caller, a later SIGINT still raises KeyboardInterrupt."""
    import pydiskimg
    from pydiskimg.io import signals

    term, intr = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    for i in range(2):
        pydiskimg.make_ext4(tree, tmp_path / f"fs{i}.img")
        pydiskimg.build(pydiskimg.ImageSpec(root=str(tree), output=str(tmp_path / f"disk{i}.img")), quiet=True)
        assert signal.getsignal(signal.SIGTERM) is term and signal.getsignal(signal.SIGINT) is intr
        assert not signals.done and not signals.stopping and signals.held is None
