"""The whole build, top to bottom: ImageSpec -> Tree -> Plan -> write -> [guest] -> convert.

Each step is a method of :class:`Build` named after what it does; :meth:`Build.run` calls them
in order.  Nothing is written before every plan is made (``--dry-run`` stops there), and every
output lands in a staging folder that is moved into place only when all steps succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import ext4, fat, ids, layout, procs, space
from .contents import apply_contents, mkdir_p
from .errors import DoesNotFitError, OutputError, ToolError, UsageError
from .io import (
    Image,
    check_output_path,
    check_readable,
    check_space,
    commit,
    output_errors,
    output_failure,
)
from .progress import ProgressCallback, ProgressEvent
from .spec import SEED_ROOT_GPUID, ImageSpec, validate
from .tree import Kind, Node, Tree, scan

log = logging.getLogger(__name__)

MiB = 1024 * 1024
BLOCK = 4096


class Progress:
    """Stage lines and a copy bar on stderr (silent when ``quiet``), each stage's time, and
    :class:`ProgressEvent` reports to ``callback``; an exception the callback raises stops
    the build (nothing is left behind)."""

    def __init__(self, quiet: bool = False, stream: Any = None,
                 callback: ProgressCallback | None = None) -> None:
        self.quiet = quiet
        self.callback = callback
        self._stage = ("", "")
        self.stream = stream if stream is not None else sys.stderr
        self.times: dict[str, float] = {}
        self._bar_last = 0.0
        self._bar_start: float | None = None
        self._bar_shown = False
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._held: list[str] = []

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"pydiskimg: {text}", file=self.stream, flush=True)

    def command_line(self, line: str) -> None:
        """A line a command of the build printed (the bootloader stage's), shown as it comes;
        with ``quiet``, held back until :meth:`release_held` (a failure) or dropped."""
        if self.quiet:
            self._held.append(line)
        else:
            print(f"  | {line}", file=self.stream, flush=True)

    def release_held(self) -> None:
        """Show the command lines ``quiet`` held back (the command failed)."""
        for line in self._held:
            print(f"  | {line}", file=self.stream, flush=True)
        self._held.clear()

    @contextlib.contextmanager
    def stage(self, key: str, text: str) -> Iterator[None]:
        self.say(f"{text}...")
        self._stage = (key, text)
        if self.callback is not None:
            self.callback(ProgressEvent(key, text))
        t0 = time.monotonic()
        yield
        self.times[key] = round(time.monotonic() - t0, 3)
        if self.callback is not None:
            self.callback(ProgressEvent(key, text, seconds=self.times[key]))

    def bar(self, done: int, total: int) -> None:
        """File-data copy progress: redrawn in place on a terminal, every ~10 s otherwise."""
        if self.callback is not None and total > 0:
            self.callback(ProgressEvent(*self._stage, done=done, total=total))
        if self.quiet or total <= 0:
            return
        now = time.monotonic()
        if self._bar_start is None or done == 0:
            self._bar_start = now
        # only for copies long enough to wait for: after the first second
        if not self._bar_shown and (done >= total or now - self._bar_start < 1.0):
            return
        step = 0.2 if self._tty else 10.0
        if done < total and self._bar_shown and now - self._bar_last < step:
            return
        self._bar_shown = done < total
        self._bar_last = now
        frac = done / total
        width = 30
        fill = int(frac * width)
        line = f"  [{'#' * fill}{'.' * (width - fill)}] {frac:6.1%} {done / MiB:,.0f}/{total / MiB:,.0f} MiB"
        end = "\r" if self._tty and done < total else "\n"
        print(line, end=end, file=self.stream, flush=True)


@dataclass
class Build:
    """One image build: the spec, the plans made from it, and what was written."""

    spec: ImageSpec
    progress: Progress = field(default_factory=Progress)
    tree: Tree | None = None
    esp_tree: Tree | None = None
    disk_layout: Any = None
    fs_uuid: uuid.UUID | None = None
    esp_volume_id: int | None = None
    ext4_plan: Any = None
    fat_plan: Any = None
    # efixbootldr's XBOOTLDR partition: a second FAT32, labelled BOOT
    xbootldr_tree: Tree | None = None
    xbootldr_volume_id: int | None = None
    xbootldr_plan: Any = None
    xbootldr_offset: int = 0
    disk_size: int = 0
    staging: str = ""
    needed: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    boot_plan: Any = None  # pydiskimg.boot.BootPlan with --bootloader
    boot_workdir: str = ""

    # -- the steps -------------------------------------------------------------------------

    def run(self, dry_run: bool = False) -> dict[str, Any]:
        try:
            return self._run(dry_run)
        finally:
            if self.boot_workdir:
                shutil.rmtree(self.boot_workdir, ignore_errors=True)

    def _run(self, dry_run: bool) -> dict[str, Any]:
        p = self.progress
        self.check_paths(output=not dry_run)
        with p.stage("scan", f"scanning {self.spec.root}"):
            self.scan_trees()
        if self.spec.bootloader:
            with p.stage("bootloader", f"preparing {self.spec.bootloader} (no VM)"):
                self.prepare_bootloader()
        with p.stage("plan", "planning partitions and filesystems"):
            self.plan()
            if self.boot_plan is not None:
                self.boot_plan.check(self.disk_layout)
        self.describe()
        if dry_run:
            return self.summary
        self.needed = self.space_needed()
        check_space(self.spec.output, self.needed)
        out_dir = os.path.dirname(os.path.abspath(self.spec.output))
        made_out_dir = False
        try:
            with output_errors(self.spec.output, self.needed):
                if not os.path.isdir(out_dir):
                    made_out_dir = True
                    os.mkdir(out_dir)  # the default output, NAME/nixos.img: the seed's $out
                self._write_all(out_dir)
        except BaseException:
            if made_out_dir:
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        self.summary["stages"] = dict(p.times)
        p.say(f"wrote {os.path.normpath(self.spec.output)}")
        return self.summary

    def _write_all(self, out_dir: str) -> None:
        p = self.progress
        with self.staged(out_dir):
            raw = os.path.join(self.staging, self.raw_name())
            with p.stage("write", f"writing {self.disk_size / MiB:,.0f} MiB image"):
                self.write_raw(raw)
            if self.spec.install_bootloader:
                with p.stage("guest", "running the bootloader stage in libguestfs's appliance"):
                    try:
                        self.guest_stage(raw)
                    except ToolError:
                        p.release_held()  # --quiet: a failure still shows the command's output
                        raise
            final = os.path.join(self.staging, os.path.basename(self.spec.output))
            if self.spec.format != "raw":
                # the copy's real size is known now, from the raw image's data map
                extra = efi_vars_bytes(self.spec) if self.spec.touch_efi_vars else 0
                check_space(self.spec.output, space.margin(space.converted_bytes(raw, self.spec.format)) + extra,
                            f"the {self.spec.format} copy")
                with p.stage("convert", f"converting to {self.spec.format}"):
                    self.convert(raw, final)
            elif raw != final:
                os.replace(raw, final)
            if self.spec.touch_efi_vars:
                self.efi_vars()
            if self.spec.post_vm:
                with p.stage("postVM", "running postVM"):
                    self.post_vm(final)

    def check_paths(self, output: bool = True) -> None:
        """Before any scan: the sources exist and can be read; the output's folder exists (or
        is the default NAME/ folder, made later) and is writable; the output is not an input."""
        s = self.spec
        check_readable(s.root, "root (--root)", folder=True)
        if s.esp is not None:
            check_readable(s.esp, "esp (--esp)", folder=True)
        if s.xbootldr is not None:
            check_readable(s.xbootldr, "xbootldr (--xbootldr)", folder=True)
        if s.config_file is not None:
            check_readable(s.config_file, "configFile (--config-file)")
        if s.touch_efi_vars:
            efi_vars_source(s)
        inputs: list[str] = [x for x in (s.config_file, s.efi_variables) if x]
        trees = [s.root] + [t for t in (s.esp, s.xbootldr) if t]
        for i, e in enumerate(s.contents):
            src = e.get("source") if isinstance(e, dict) else None
            if isinstance(src, str) and "*" not in src:
                check_readable(src, f"contents[{i}] source", folder=os.path.isdir(src))
                (trees if os.path.isdir(src) else inputs).append(src)
        if output:
            check_output_path(s.output, "output (-o)", inputs=tuple(inputs), trees=tuple(trees),
                              may_create_folder=os.path.dirname(s.output) == s.name)

    def space_needed(self) -> int:
        """Bytes the build writes beside its output, at most at once (see pydiskimg.space):
        the raw image, its converted copy (estimated as big as the raw data; checked again
        from the raw image's data map before converting) and efi-vars.fd."""
        raw = space.table_bytes(self.disk_layout) + space.ext4_bytes(self.ext4_plan)
        for fat_plan in (self.fat_plan, self.xbootldr_plan):
            if fat_plan is not None:
                raw += space.fat_bytes(fat_plan)
        if self.boot_plan is not None and self.boot_plan.core_img is not None:
            raw += space.pages(0, len(self.boot_plan.core_img)) * space.PAGE  # (boot.img: sector 0)
        need = raw
        if self.spec.format not in ("raw", "qcow2-compressed"):
            need += raw
        if self.spec.touch_efi_vars:
            need += efi_vars_bytes(self.spec)
        return space.margin(need)

    def scan_trees(self) -> None:
        s = self.spec
        clamp = s.source_date_epoch if s.clamp_mtime else None
        tree = scan(s.root, all_root=s.all_root, clamp_mtime=clamp, deterministic=s.deterministic)
        if s.only_nix_store:
            tree = self._subtree(tree, s.store_dir)
        else:
            if s.contents:
                apply_contents(tree, s.contents, tree_root=s.root, timestamp=s.timestamp,
                               clamp_mtime=clamp, deterministic=s.deterministic)
            # the seed's VM script always makes /etc/nixos, and copies configFile into it
            nixos = mkdir_p(tree, "/etc/nixos", timestamp_ns=s.timestamp * 10**9, at="root (--root)")
            if s.config_file:
                nixos.entries[b"configuration.nix"] = self._file_node(s.config_file)
        self.tree = tree
        if s.has_esp:
            if s.esp:
                self.esp_tree = scan(s.esp, all_root=True, clamp_mtime=clamp, deterministic=s.deterministic)
            else:
                self.esp_tree = Tree(Node(Kind.DIR, 0o755, mtime_ns=s.timestamp * 10**9))
        if s.has_xbootldr:
            if s.xbootldr:
                self.xbootldr_tree = scan(s.xbootldr, all_root=True, clamp_mtime=clamp, deterministic=s.deterministic)
            else:
                self.xbootldr_tree = Tree(Node(Kind.DIR, 0o755, mtime_ns=s.timestamp * 10**9))

    def prepare_bootloader(self) -> None:
        """--bootloader: GRUB's images made, the loader's files grafted into the trees."""
        from . import boot

        s = self.spec
        assert s.bootloader is not None and self.tree is not None
        self.identifiers()
        self.boot_workdir = tempfile.mkdtemp(prefix="pydiskimg-boot-")
        self.boot_plan = boot.prepare(
            s.bootloader, self.tree, table=s.partition_table, fs_uuid=str(self.fs_uuid),
            cmdline=s.kernel_cmdline, grub_dir=s.grub_dir, workdir=self.boot_workdir,
            timestamp=s.timestamp,
        )
        self.boot_plan.graft(self.tree, self.esp_tree, timestamp=s.timestamp,
                             deterministic=s.deterministic, root_name=s.root, esp_name=s.esp,
                             xbootldr_tree=self.xbootldr_tree, xbootldr_name=s.xbootldr)

    def plan(self) -> None:
        s = self.spec
        if self.fs_uuid is None:  # --bootloader decided it already (a random one only once)
            self.identifiers()
        assert self.tree is not None and self.fs_uuid is not None
        opts = ext4.Ext4Options(
            label=s.effective_label,
            uuid=self.fs_uuid,
            timestamp=s.timestamp,
            deterministic=s.deterministic,
        )
        table = s.partition_table
        # numbering and folder blocks once, for both sizes when auto-sizing
        prep = ext4.prepare(self.tree, opts)
        if s.disk_size is None:
            need = ext4.plan(
                self.tree, None, opts, additional_space=s.additional_space, prepared=prep
            ).size
            if table == "none":
                disk = _round_up(need, MiB)
            else:
                disk = _round_up(layout.min_disk_size(table, s.boot_size, need), MiB)
        else:
            disk = s.disk_size
        self.disk_size = disk
        if table != "none":
            self.disk_layout = self._layout(disk)
            root_off, root_size = self.disk_layout.root_offset, self.disk_layout.root_size
        else:
            root_off, root_size = 0, disk
        try:
            self.ext4_plan = ext4.plan(
                self.tree, root_size - root_size % BLOCK, opts, prepared=prep
            )
        except DoesNotFitError as e:
            if s.disk_size is None or e.needed <= e.given:
                raise
            need_disk = e.needed if table == "none" else layout.min_disk_size(table, s.boot_size, e.needed)
            raise DoesNotFitError("diskSize (--disk-size)", _round_up(need_disk, MiB), disk) from None
        self.root_offset = root_off
        if self.esp_tree is not None:
            esp_off, esp_size = self.disk_layout.esp_offset, self.disk_layout.esp_size
            self.esp_offset = esp_off
            assert self.esp_volume_id is not None
            try:
                self.fat_plan = fat.plan(
                    self.esp_tree,
                    esp_size,
                    fat.FatOptions(label="ESP", volume_id=self.esp_volume_id, timestamp=s.timestamp,
                                   hidden_sectors=esp_off // 512),
                )
            except DoesNotFitError as e:
                if s.has_xbootldr:
                    raise UsageError(
                        f"esp (--esp): the ESP of the efixbootldr layout (8 MiB to 100 MiB) holds "
                        f"{esp_size:,} bytes, its FAT32 filesystem needs {e.needed:,}: put the "
                        f"kernels on XBOOTLDR (--xbootldr) instead"
                    ) from None
                raise UsageError(
                    f"bootSize (--boot-size): the ESP up to {s.boot_size} holds {esp_size:,} bytes, "
                    f"its FAT32 filesystem needs {e.needed:,}: use a bootSize of at least "
                    f"{self._min_boot_size(e.needed)}"
                ) from None
        if self.xbootldr_tree is not None:
            xbl = self.disk_layout.xbootldr
            self.xbootldr_offset = xbl.offset
            assert self.xbootldr_volume_id is not None
            try:
                self.xbootldr_plan = fat.plan(
                    self.xbootldr_tree,
                    xbl.size,
                    fat.FatOptions(label="BOOT", volume_id=self.xbootldr_volume_id, timestamp=s.timestamp,
                                   hidden_sectors=xbl.offset // 512),
                )
            except DoesNotFitError as e:
                raise UsageError(
                    f"bootSize (--boot-size): XBOOTLDR from 100 MiB up to {s.boot_size} holds "
                    f"{xbl.size:,} bytes, its FAT32 filesystem needs {e.needed:,}: use a bootSize of "
                    f"at least {self._min_boot_size(e.needed, 'xbootldr')}"
                ) from None

    def _min_boot_size(self, fat_bytes: int, role: str = "esp") -> str:
        """The smallest whole-MB bootSize whose ESP (or XBOOTLDR) holds ``fat_bytes`` (as parted
        places it)."""
        start = 100 * MiB if role == "xbootldr" else 8 * MiB
        mb = max(1, (start + fat_bytes) // 10**6)
        while True:
            text = f"{mb}M"
            try:
                lay = layout.plan_layout(self.spec.partition_table, self.disk_size + 2 * fat_bytes + 256 * MiB, text)
                p = lay.partition(role)
                if p is not None and p.size >= fat_bytes:
                    return text
            except UsageError:
                pass
            mb += 1

    def identifiers(self) -> None:
        """Root filesystem UUID and ESP volume ID (partition GUIDs are the layout's)."""
        s = self.spec
        if s.root_fsuid is not None:
            self.fs_uuid = s.root_fsuid
        elif not s.deterministic and s.root_gpuid is None:
            self.fs_uuid = uuid.uuid4()
        elif s.seed is not None and s.root_gpuid is None and s.partition_table != "none":
            # systemd-repart: the filesystem UUID comes from its partition's UUID, which does
            # not depend on the disk size: ask a layout of any size that fits
            probe = self._layout(layout.min_fitting_disk(s.partition_table, s.boot_size) + 64 * MiB)
            assert probe.root_guid is not None
            self.fs_uuid = ids.repart_fs_uuid(probe.root_guid)
        elif s.seed is not None and s.root_gpuid is None:
            # no partition table: no partition UUID to derive from, so derive from the seed itself
            self.fs_uuid = ids.hmac_v4(s.seed.bytes, b"file-system-uuid")
        else:
            self.fs_uuid = s.root_gpuid or uuid.UUID(SEED_ROOT_GPUID)

    def _layout(self, disk: int) -> Any:
        s = self.spec
        kwargs: dict[str, Any] = {}
        if not s.deterministic:
            kwargs["disk_guid"] = uuid.uuid4()
        lay = layout.plan_layout(
            s.partition_table,
            disk,
            s.boot_size,
            root_gpuid=s.root_gpuid if (s.root_gpuid or s.seed) else uuid.UUID(SEED_ROOT_GPUID),
            seed=s.seed,
            **kwargs,
        )
        if s.has_esp:
            # the ESP's volume ID is derived from its partition GUID as systemd-repart derives
            # a filesystem UUID: first 4 bytes of HMAC-SHA256(partition UUID, "file-system-uuid")
            assert lay.esp_guid is not None
            self.esp_volume_id = ids.fat_volume_id(ids.repart_fs_uuid(lay.esp_guid))
        if s.has_xbootldr:
            # derived the same way, from XBOOTLDR's partition GUID
            xbl = lay.partition("xbootldr")
            assert xbl is not None and xbl.unique_guid is not None
            self.xbootldr_volume_id = ids.fat_volume_id(ids.repart_fs_uuid(xbl.unique_guid))
        return lay

    def describe(self) -> None:
        s = self.spec
        self.summary = {
            "image": os.path.abspath(s.output),
            "name": s.name,
            "format": s.format,
            "disk_size": self.disk_size,
            "partition_table": s.partition_table,
            "table": self.disk_layout.to_dict() if self.disk_layout is not None else None,
            "root": {
                "offset": self.root_offset,
                "size": self.ext4_plan.size,
                "uuid": str(self.fs_uuid),
                "label": s.effective_label,
                "fs_type": "ext4",
            },
        }
        if self.boot_plan is not None:
            self.summary["bootloader"] = self.boot_plan.describe()
        if self.fat_plan is not None:
            self.summary["esp"] = {
                "offset": self.esp_offset,
                "size": self.disk_layout.esp_size,
                "volume_id": f"{self.esp_volume_id:08X}",
            }
        if self.xbootldr_plan is not None:
            self.summary["xbootldr"] = {
                "offset": self.xbootldr_offset,
                "size": self.disk_layout.xbootldr.size,
                "volume_id": f"{self.xbootldr_volume_id:08X}",
            }
        p = self.progress
        table = s.partition_table if s.partition_table != "none" else "no partition table"
        p.say(f"disk {self.disk_size:,} bytes, {table}; root ext4 {self.ext4_plan.size:,} bytes "
              f"at {self.root_offset:,}, UUID {self.fs_uuid}")
        if self.fat_plan is not None:
            p.say(f"ESP FAT32 {self.disk_layout.esp_size:,} bytes at {self.esp_offset:,}, "
                  f"volume ID {self.esp_volume_id:08X}")
        if self.xbootldr_plan is not None:
            p.say(f"XBOOTLDR FAT32 {self.disk_layout.xbootldr.size:,} bytes at {self.xbootldr_offset:,}, "
                  f"volume ID {self.xbootldr_volume_id:08X}")

    def write_raw(self, path: str) -> None:
        img = Image.create(path, self.disk_size)
        try:
            if self.disk_layout is not None:
                layout.write_table(img, self.disk_layout)
            if self.boot_plan is not None:
                self.boot_plan.write(img, self.disk_layout)
            if self.fat_plan is not None:
                fat.write(self.fat_plan, img.view(self.esp_offset))
            if self.xbootldr_plan is not None:
                fat.write(self.xbootldr_plan, img.view(self.xbootldr_offset))
            ext4.write(self.ext4_plan, img.view(self.root_offset), progress=self.progress.bar)
            img.sync()
        finally:
            img.close()

    def guest_stage(self, raw: str) -> None:
        from . import guestfs

        s = self.spec
        lay = self.disk_layout
        assert s.install_bootloader is not None and self.fs_uuid is not None
        out = guestfs.bootloader_stage(
            raw,
            command=s.install_bootloader,
            root_part=lay.root_number if lay is not None else None,
            root_offset=self.root_offset,
            esp_part=lay.esp_number if (lay is not None and s.has_esp) else None,
            fs_uuid=self.fs_uuid,
            deterministic=s.deterministic,
            timestamp=s.timestamp,
            mem_size=s.mem_size,
            grub_device=s.grub_device,
            in_appliance=s.bootloader_in_appliance,
            progress=self.progress.say,
            xbootldr_part=(lay.partition("xbootldr").number if (lay is not None and s.has_xbootldr) else None),
            output=self.progress.command_line,
            fat_volumes=self._fat_volumes(),
        )
        if out:
            log.info("bootloader stage output:\n%s", out)

    def _fat_volumes(self) -> list[tuple[int, int]]:
        """(byte offset, size) of the image's FAT volumes: the ESP, XBOOTLDR."""
        out = []
        if self.fat_plan is not None:
            out.append((self.esp_offset, self.fat_plan.size))
        if self.xbootldr_plan is not None:
            out.append((self.xbootldr_offset, self.xbootldr_plan.size))
        return out

    def convert(self, raw: str, final: str) -> None:
        from . import qemu

        lay = self.disk_layout
        disk_guid = lay.disk_guid if lay is not None and lay.disk_guid else self.fs_uuid
        assert disk_guid is not None
        try:
            qemu.convert(raw, final, self.spec.format, deterministic=self.spec.deterministic,
                         disk_guid=disk_guid, timestamp=self.spec.timestamp)
        except OutputError as e:  # said of the output, not of the staging copy
            if e.errno is None:
                raise
            raise output_failure(self.spec.output, OSError(e.errno, os.strerror(e.errno)), self.needed) from None
        os.unlink(raw)

    def efi_vars(self) -> None:
        s = self.spec
        src = efi_vars_source(s)
        dst = os.path.join(self.staging, "efi-vars.fd")
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
        self.summary["efi_vars"] = os.path.join(os.path.dirname(os.path.abspath(s.output)), "efi-vars.fd")

    def post_vm(self, final: str) -> None:
        env = dict(os.environ, diskImage=final, out=self.staging)
        # in a session of its own: an interrupt kills the shell and all it started
        r = procs.run(["bash", "-c", self.spec.post_vm], env=env, cwd=self.staging,
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                      text=True)
        if r.stdout and not self.progress.quiet:
            sys.stderr.write(r.stdout)
        if r.returncode != 0:
            last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "no output"
            raise ToolError(f"postVM (--post-vm): exited with status {r.returncode}: {last}")

    # -- helpers ---------------------------------------------------------------------------

    def raw_name(self) -> str:
        base = os.path.basename(self.spec.output)
        return base if self.spec.format == "raw" else f".{base}.raw"

    @contextlib.contextmanager
    def staged(self, out_dir: str) -> Iterator[None]:
        """A staging folder ($out) beside the output; its files move into place on success."""
        self.staging = os.path.join(out_dir, f".{os.path.basename(self.spec.output)}.pydiskimg-{os.getpid()}")
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            os.mkdir(self.staging)  # inside: a signal right after it must not leave the folder
            yield
            moved: list[str] = []
            try:
                with commit():  # a signal during the moves is raised after them: undo them
                    for name in sorted(os.listdir(self.staging)):
                        os.replace(os.path.join(self.staging, name), os.path.join(out_dir, name))
                        moved.append(os.path.join(out_dir, name))
            except BaseException:
                for path in moved:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                raise
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _subtree(self, tree: Tree, path: str) -> Tree:
        node = tree.lookup(path)
        if node is None or node.kind is not Kind.DIR:
            raise UsageError(f"storeDir (--store-dir): {os.path.join(self.spec.root, path)} is not a folder of the tree")
        return Tree(node)

    def _file_node(self, path: str) -> Node:
        st = os.stat(path)
        return Node(Kind.REG, 0o644, mtime_ns=self.spec.timestamp * 10**9, size=st.st_size,
                    source=path if st.st_size else None, origin=path)


def efi_vars_source(s: ImageSpec) -> str:
    src = s.efi_variables or os.path.join(s.ovmf, "OVMF_VARS_4M.fd")
    if not os.path.isfile(src):
        raise UsageError(f"efiVariables (--efi-variables): {src}: no such file (install Debian's ovmf or pass the path)")
    return src


def efi_vars_bytes(s: ImageSpec) -> int:
    return -(-os.path.getsize(efi_vars_source(s)) // space.PAGE) * space.PAGE


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def build(spec: ImageSpec, *, quiet: bool = False, dry_run: bool = False,
          progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Build the image ``spec`` describes; returns the summary (sizes, identifiers, stage times)."""
    from .ext4.plan import no_gc

    validate(spec)  # again: attributes may have been set since the spec was made
    with no_gc():  # the tree and the plans are acyclic: collecting would only walk them
        return Build(spec, Progress(quiet, callback=progress)).run(dry_run=dry_run)
