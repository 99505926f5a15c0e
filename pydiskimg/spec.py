"""ImageSpec: every parameter of make-disk-image.nix, from flags, a TOML file or Python.

Validation happens here, before any work: sizes are read as the seed reads them, GUIDs strictly,
enums against their allowed values, and the seed's own assertions become clear errors.  Every
error names the field (its TOML key and flag) and the value.

TOML keys are the .nix argument names (``diskSize``, ``partitionTableType``, ...); keys that
make-disk-image.nix does not have use the same camelCase style (``root``, ``output``, ``esp``,
``sourceDateEpoch``...).  :data:`FIELDS` maps each key to its flag and its Python attribute.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import uuid
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

from .errors import UsageError
from .ids import parse_guid

TABLE_TYPES = ("none", "legacy", "legacy+gpt", "efi", "hybrid", "efixbootldr")
FORMATS = ("raw", "qcow2", "qcow2-compressed", "vdi", "vpc")
#: file name suffix per format, as the seed names its outputs (nixos.img, nixos.qcow2, ...)
FORMAT_SUFFIX = {"raw": "img", "qcow2": "qcow2", "qcow2-compressed": "qcow2", "vdi": "vdi", "vpc": "vhd"}

SEED_ROOT_GPUID = "F222513B-DED1-49FA-B591-20CE86A2FE7F"
OVMF_DIR = "/usr/share/OVMF"


@dataclass(init=False)
class ImageSpec:
    """Every input of one image build, validated when it is made.

    ``ImageSpec(root="rootfs", partition_table="efi", disk_size="2G", ...)``: the keywords are
    the ``build`` flags' names in snake_case (:data:`FIELDS` lists them, see
    :class:`ImageSpecFields` for what each accepts); a keyword left out or given as ``None`` takes
    the flag's default.  Strings are read exactly as the command line reads them (``"2G"``,
    ``"auto"``, ``"512M"``, a GUID); an ``int`` size is bytes.  :meth:`from_toml` reads a TOML
    file instead.  Bad input raises :class:`pydiskimg.errors.UsageError` with the command
    line's message, naming the field.

    The attributes hold the values as read: sizes in bytes (``disk_size`` None = auto), GUIDs as
    :class:`uuid.UUID`, paths as given.  ``dataclasses.replace(spec, **changes)`` makes a
    validated copy.
    """

    root: str = ""
    output: str = ""
    name: str = "nixos-disk-image"
    disk_size: int | None = None  # None = auto
    additional_space: int = 512 * 1024 * 1024
    boot_size: str = "256M"  # parted's reading happens in the layout
    contents: list[dict[str, Any]] = field(default_factory=list)
    partition_table: str = "legacy"
    install_bootloader: str | None = None
    touch_efi_vars: bool = False
    ovmf: str = OVMF_DIR
    efi_firmware: str | None = None
    efi_variables: str | None = None
    fs_type: str = "ext4"
    label: str | None = None  # None: "nixos", or "nix-store" when only_nix_store
    config_file: str | None = None
    post_vm: str = ""
    mem_size: int = 1024
    only_nix_store: bool = False
    store_dir: str = "nix/store"
    format: str = "raw"
    deterministic: bool = True
    root_gpuid: uuid.UUID | None = None  # None: the seed's default (or derived from `seed`)
    root_fsuid: uuid.UUID | None = None  # None: root_gpuid
    esp: str | None = None
    xbootldr: str | None = None
    seed: uuid.UUID | None = None
    source_date_epoch: int | None = None
    clamp_mtime: bool = False
    all_root: bool = False
    grub_device: str | None = None
    bootloader_in_appliance: bool = False
    bootloader: str | None = None  # grub or systemd-boot, installed with no VM (pydiskimg.boot)
    kernel_cmdline: str = ""
    grub_dir: str | None = None

    def __init__(self, **fields: Unpack[ImageSpecFields]) -> None:
        _setup(self, {}, "", dict(fields))

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Unpack[ImageSpecFields]) -> ImageSpec:
        """The spec a TOML file describes (keys: the .nix argument names, see :data:`FIELDS`).

        Values read as the seed reads them (a bare integer ``diskSize`` is MiB).  Relative
        paths are relative to the file's folder.  ``overrides`` (keywords as for the
        constructor, relative paths relative to the working directory) win over the file, as
        flags do on the command line.
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise UsageError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"{path}: is a folder; expected a TOML file") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"{path}: not valid TOML: {e}") from None
        for key in raw:
            if key in NIX_ONLY:
                raise UsageError(f"{path}: key {key!r} only makes sense inside Nix: {NIX_ONLY[key]}")
            if key not in FIELDS:
                raise UsageError(f"{path}: unknown key {key!r} (known keys: {', '.join(FIELDS)})")
        spec = cls.__new__(cls)
        _setup(spec, raw, os.path.dirname(os.path.abspath(path)), dict(overrides))
        return spec

    @property
    def effective_label(self) -> str:
        if self.label is not None:
            return self.label
        return "nix-store" if self.only_nix_store else "nixos"

    @property
    def timestamp(self) -> int:
        """Filesystem-level times: SOURCE_DATE_EPOCH, or 0 when unset."""
        return self.source_date_epoch or 0

    @property
    def has_esp(self) -> bool:
        return self.partition_table in ("efi", "hybrid", "efixbootldr")

    @property
    def has_xbootldr(self) -> bool:
        return self.partition_table == "efixbootldr"


_Path = str | os.PathLike[str]


class ImageSpecFields(TypedDict, total=False):
    """The keywords of :class:`ImageSpec` and what each accepts (``None``: the default).

    Every key of :data:`FIELDS` has its attribute name here (a test checks it).
    """

    root: _Path  #: the staged root tree (required)
    output: _Path | None  #: the image file (default NAME/nixos.img, .qcow2, .vdi or .vhd)
    name: str | None
    disk_size: int | str | None  #: bytes, a truncate -s size ("2G"; a bare number is MiB) or "auto"
    additional_space: int | str | None  #: bytes, or as numfmt --from=iec reads it ("512M")
    boot_size: str | None  #: as parted reads it: "256M" = 256 MB
    contents: _Path | list[dict[str, Any]] | None  #: a JSON file or the list of entries
    partition_table: str | None  #: none, legacy, legacy+gpt, efi, hybrid, efixbootldr
    install_bootloader: str | None
    touch_efi_vars: bool | None
    ovmf: _Path | None
    efi_firmware: _Path | None
    efi_variables: _Path | None
    fs_type: str | None
    label: str | None
    config_file: _Path | None
    post_vm: str | None
    mem_size: int | str | None
    only_nix_store: bool | None
    store_dir: str | None
    format: str | None  #: raw, qcow2, qcow2-compressed, vdi, vpc
    deterministic: bool | None
    root_gpuid: uuid.UUID | str | None
    root_fsuid: uuid.UUID | str | None
    esp: _Path | None
    seed: uuid.UUID | str | None
    source_date_epoch: int | str | None  #: default $SOURCE_DATE_EPOCH, else unset (0)
    clamp_mtime: bool | None
    all_root: bool | None
    grub_device: str | None
    bootloader_in_appliance: bool | None
    xbootldr: _Path | None  #: tree copied into XBOOTLDR (efixbootldr)
    bootloader: str | None  #: grub or systemd-boot, installed by pydiskimg with no VM
    kernel_cmdline: str | None
    grub_dir: _Path | None


# key -> (attribute, flag, kind, help).  kind: str, int, bool, size, disksize, guid, list, path
FIELDS: dict[str, tuple[str, str, str, str]] = {
    "root": ("root", "--root", "path", "the staged root tree (folder)"),
    "output": ("output", "-o/--output", "path", "the image file to write"),
    "name": ("name", "--name", "str", "without -o, the image goes to NAME/nixos.img (.qcow2, .vdi, .vhd) as in the seed's $out"),
    "diskSize": ("disk_size", "--disk-size", "disksize", "'auto' or a size as `truncate -s` reads it; a bare integer is MiB"),
    "additionalSpace": ("additional_space", "--additional-space", "size", "room added to an auto-sized disk (binary units)"),
    "bootSize": ("boot_size", "--boot-size", "str", "where the ESP (efixbootldr: XBOOTLDR) ends, as parted reads it (256M = 256 MB, snapped to 1 MiB)"),
    "contents": ("contents", "--contents", "contents", "JSON file (or TOML list) of {source, target, mode, user, group}"),
    "partitionTableType": ("partition_table", "--partition-table", "enum", "none, legacy, legacy+gpt, efi, hybrid or efixbootldr"),
    "installBootLoader": ("install_bootloader", "--install-bootloader", "str", "command run chrooted in the image by libguestfs's appliance"),
    "touchEFIVars": ("touch_efi_vars", "--touch-efi-vars", "bool", "write efi-vars.fd beside the image"),
    "OVMF": ("ovmf", "--ovmf", "path", "OVMF folder (Debian: /usr/share/OVMF)"),
    "efiFirmware": ("efi_firmware", "--efi-firmware", "path", "OVMF code file (default OVMF/OVMF_CODE_4M.fd)"),
    "efiVariables": ("efi_variables", "--efi-variables", "path", "OVMF variables file copied to efi-vars.fd (default OVMF/OVMF_VARS_4M.fd)"),
    "fsType": ("fs_type", "--fs-type", "str", "root filesystem type: ext4"),
    "label": ("label", "--label", "str", "root filesystem label (default nixos, nix-store with onlyNixStore)"),
    "configFile": ("config_file", "--config-file", "path", "copied to /etc/nixos/configuration.nix"),
    "postVM": ("post_vm", "--post-vm", "str", "shell command run at the end with $diskImage and $out set"),
    "memSize": ("mem_size", "--mem-size", "int", "memory (MiB) of the bootloader stage's appliance"),
    "onlyNixStore": ("only_nix_store", "--only-nix-store", "bool", "the image holds only the tree's store folder, at its root"),
    "storeDir": ("store_dir", "--store-dir", "str", "the store folder inside the tree for onlyNixStore (default nix/store)"),
    "format": ("format", "--format", "enum", "raw, qcow2, qcow2-compressed, vdi or vpc"),
    "deterministic": ("deterministic", "--no-deterministic", "bool", "pin identifiers and times (default true)"),
    "rootGPUID": ("root_gpuid", "--root-gpuid", "guid", "GPT unique GUID of the root partition"),
    "rootFSUID": ("root_fsuid", "--root-fsuid", "guid", "root filesystem UUID (default rootGPUID)"),
    "esp": ("esp", "--esp", "path", "tree copied into the ESP (efi, hybrid and efixbootldr)"),
    "xbootldr": ("xbootldr", "--xbootldr", "path", "tree copied into the XBOOTLDR partition (efixbootldr)"),
    "seed": ("seed", "--seed", "guid", "derive every identifier from this UUID as systemd-repart does"),
    "sourceDateEpoch": ("source_date_epoch", "--source-date-epoch", "int", "filesystem times (default $SOURCE_DATE_EPOCH, else 0)"),
    "clampMtime": ("clamp_mtime", "--clamp-mtime", "bool", "clamp file mtimes to sourceDateEpoch"),
    "allRoot": ("all_root", "--all-root", "bool", "make every file owned by root (trees staged by an unprivileged user)"),
    "bootLoaderInAppliance": ("bootloader_in_appliance", "--bootloader-in-appliance", "bool", "run installBootLoader with the appliance's own tools (e.g. extlinux) instead of chrooted in the image"),
    "grubDevice": ("grub_device", "--grub-device", "str", "the seed's boot.loader.grub.device link made during the bootloader stage"),
    "bootLoader": ("bootloader", "--bootloader", "enum", "grub or systemd-boot, installed by pydiskimg itself with no VM (instead of installBootLoader)"),
    "kernelCmdline": ("kernel_cmdline", "--kernel-cmdline", "str", "with bootLoader: added to the generated entries' root=UUID=... ro"),
    "grubDir": ("grub_dir", "--grub-dir", "path", "with bootLoader grub: the GRUB folder holding i386-pc/ and x86_64-efi/ (default: the tree's /usr/lib/grub)"),
}

#: make-disk-image.nix arguments that only make sense inside Nix, and what to do instead
NIX_ONLY = {
    "config": "stage the system into the root tree first (e.g. nixos-install --root DIR), then pass --root DIR",
    "copyChannel": "copy the channel into the root tree before building",
    "additionalPaths": "copy the paths into the root tree's nix/store (nix copy --to DIR) before building",
    "pkgs": "not needed: pydiskimg uses the tools on the PATH",
    "lib": "not needed",
}

BOOTLOADERS = ("grub", "systemd-boot")

_ENUMS = {"partitionTableType": TABLE_TYPES, "format": FORMATS, "bootLoader": BOOTLOADERS}


def _where(key: str) -> str:
    return f"{key} ({FIELDS[key][1]})"


def _convert(key: str, value: Any, base_dir: str) -> Any:
    attr, flag, kind, _ = FIELDS[key]
    where = _where(key)
    if kind in ("str", "enum"):
        if not isinstance(value, str):
            raise UsageError(f"{where}: expected a string, got {value!r}")
        if kind == "enum" and value not in _ENUMS[key]:
            raise UsageError(f"{where}: {value!r} is not one of {', '.join(_ENUMS[key])}")
        return value
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}: expected a path, got {value!r}")
        return os.path.join(base_dir, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, str) and value.lstrip("-").isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{where}: expected an integer, got {value!r}")
        return value
    from . import sizes

    if kind == "size":
        return sizes.parse_iec(str(value), where)
    if kind == "disksize":
        if value == "auto":
            return None
        return sizes.parse_disk_size(str(value), where)
    if kind == "guid":
        return parse_guid(value, where)
    if kind == "contents":
        if isinstance(value, str):
            from .contents import load_contents_json

            path = os.path.join(base_dir, value)
            base_dir, value = os.path.dirname(os.path.abspath(path)), load_contents_json(path)
        if isinstance(value, list):
            # relative sources are relative to the file that lists them
            return [
                {**e, "source": os.path.join(base_dir, e["source"])}
                if isinstance(e, dict) and isinstance(e.get("source"), str) else e
                for e in value
            ]
        raise UsageError(f"{where}: expected a JSON file path or a list, got {value!r}")
    raise AssertionError(kind)


def load(toml_path: str | None = None, overrides: dict[str, Any] | None = None) -> ImageSpec:
    """The command line's spec: SPEC.toml (or none) and the flags' values by TOML key.

    Flags win over the file.  Relative paths in the file are relative to the file's own folder,
    so a spec builds the same image from any working directory; relative paths given as flags
    are relative to the working directory, as in any shell command.
    """
    keywords: dict[str, Any] = {FIELDS[k][0]: v for k, v in (overrides or {}).items() if v is not None}
    if toml_path is None:
        return ImageSpec(**keywords)
    return ImageSpec.from_toml(toml_path, **keywords)


def _setup(spec: ImageSpec, raw: dict[str, Any], base: str, keywords: dict[str, Any]) -> None:
    """Fill ``spec``: defaults, then the TOML file's keys (``raw``, paths relative to ``base``),
    then the keywords; then $SOURCE_DATE_EPOCH if neither gave a time; then validate."""
    for f in dataclasses.fields(ImageSpec):
        factory = f.default_factory
        setattr(spec, f.name, factory() if factory is not dataclasses.MISSING else f.default)
    for key, value in raw.items():
        setattr(spec, FIELDS[key][0], _convert(key, value, base))
    key_of = {attr: key for key, (attr, *_rest) in FIELDS.items()}
    for name, value in keywords.items():
        if name not in key_of:
            raise UsageError(f"ImageSpec: unknown field {name!r} (known fields: {', '.join(key_of)})")
        if value is not None:
            setattr(spec, name, _convert_keyword(key_of[name], value))
    if ("sourceDateEpoch" not in raw and keywords.get("source_date_epoch") is None
            and os.environ.get("SOURCE_DATE_EPOCH")):
        spec.source_date_epoch = _convert("sourceDateEpoch", os.environ["SOURCE_DATE_EPOCH"], "")
    validate(spec)


def _convert_keyword(key: str, value: Any) -> Any:
    """A Python value for ``key``: as :func:`_convert` reads it from the command line, except
    that an ``int`` size is bytes, a :class:`uuid.UUID` is taken as is and paths may be
    :class:`os.PathLike`."""
    kind = FIELDS[key][2]
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if kind in ("size", "disksize") and isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"{_where(key)}: {value} is negative; expected a size in bytes")
        if kind == "disksize" and value % 512:
            raise UsageError(f"{_where(key)}: {value} bytes is not a whole number of 512-byte sectors")
        return value
    if kind == "guid" and isinstance(value, uuid.UUID):
        return value
    return _convert(key, value, "")


def validate(spec: ImageSpec) -> None:
    """The seed's assertions and ours, as one-line errors naming the field."""
    if not spec.root:
        raise UsageError("root (--root): the staged root tree is required")
    if not os.path.isdir(spec.root):
        raise UsageError(f"root (--root): {spec.root}: not a folder")
    if not spec.output:
        # the seed's $out is a folder named `name` holding nixos.<suffix>
        spec.output = os.path.join(spec.name, f"nixos.{FORMAT_SUFFIX[spec.format]}")
    if spec.fs_type != "ext4":
        raise UsageError(f"fsType (--fs-type): {spec.fs_type!r} is not supported: only ext4 is")
    if spec.partition_table not in TABLE_TYPES:
        raise UsageError(f"{_where('partitionTableType')}: {spec.partition_table!r} is not one of {', '.join(TABLE_TYPES)}")
    if spec.touch_efi_vars and spec.partition_table not in ("hybrid", "efi", "efixbootldr", "legacy+gpt"):
        raise UsageError(
            "touchEFIVars (--touch-efi-vars): EFI variables can be used only with a partition "
            f"table of type hybrid, efi, efixbootldr or legacy+gpt, not {spec.partition_table!r}"
        )
    if spec.only_nix_store and (spec.contents or spec.config_file or spec.install_bootloader):
        raise UsageError(
            "onlyNixStore (--only-nix-store): in a store-only image, contents must be empty, no "
            "configFile may be given and no bootloader installed"
        )
    if spec.esp is not None and not spec.has_esp:
        raise UsageError(f"esp (--esp): partition table {spec.partition_table!r} has no ESP (use efi, hybrid or efixbootldr)")
    if spec.esp is not None and not os.path.isdir(spec.esp):
        raise UsageError(f"esp (--esp): {spec.esp}: not a folder")
    if spec.xbootldr is not None and not spec.has_xbootldr:
        raise UsageError(f"xbootldr (--xbootldr): partition table {spec.partition_table!r} has no XBOOTLDR partition (use efixbootldr)")
    if spec.xbootldr is not None and not os.path.isdir(spec.xbootldr):
        raise UsageError(f"xbootldr (--xbootldr): {spec.xbootldr}: not a folder")
    if spec.config_file is not None and not os.path.isfile(spec.config_file):
        raise UsageError(f"configFile (--config-file): {spec.config_file}: not a file")
    if spec.mem_size < 256:
        raise UsageError(f"memSize (--mem-size): {spec.mem_size} MiB is too little for the appliance (>= 256)")
    if spec.source_date_epoch is not None and spec.source_date_epoch < 0:
        raise UsageError(f"sourceDateEpoch (--source-date-epoch): {spec.source_date_epoch} is negative")
    if spec.clamp_mtime and spec.source_date_epoch is None:
        raise UsageError("clampMtime (--clamp-mtime): needs sourceDateEpoch (--source-date-epoch or $SOURCE_DATE_EPOCH)")
    _validate_bootloader(spec)
    for i, entry in enumerate(spec.contents):
        if not isinstance(entry, dict):
            raise UsageError(f"contents[{i}]: expected an object with source and target, got {entry!r}")
        if ("user" in entry) != ("group" in entry):
            raise UsageError(
                f"contents[{i}]: set none of user and group or both at the same time (target {entry.get('target')!r})"
            )


def _validate_bootloader(spec: ImageSpec) -> None:
    """The combinations ``--bootloader`` cannot do, each as one line."""
    b = spec.bootloader
    if b is None:
        if spec.kernel_cmdline:
            raise UsageError(f"{_where('kernelCmdline')}: only used with bootLoader (--bootloader grub|systemd-boot)")
        if spec.grub_dir is not None:
            raise UsageError(f"{_where('grubDir')}: only used with bootLoader (--bootloader) grub")
        return
    where = _where("bootLoader")
    if spec.install_bootloader:
        raise UsageError(
            f"{where}: give either bootLoader (installed by pydiskimg, no VM) or installBootLoader "
            "(--install-bootloader, run in the appliance), not both"
        )
    if spec.bootloader_in_appliance:
        raise UsageError(f"{where}: bootLoaderInAppliance (--bootloader-in-appliance) only applies to installBootLoader")
    if spec.only_nix_store:
        raise UsageError(f"{where}: a store-only image (onlyNixStore) has no /boot to boot from")
    table = spec.partition_table
    if table == "none":
        tables = "efi, hybrid or efixbootldr" if b == "systemd-boot" else "legacy, legacy+gpt, efi or hybrid"
        raise UsageError(f"{where}: {b} needs a partition table ({tables}), not 'none'")
    if b == "grub" and table not in ("legacy", "legacy+gpt", "efi", "hybrid"):
        raise UsageError(f"{where}: grub is installed on legacy, legacy+gpt, efi and hybrid tables, not {table!r}")
    if b == "systemd-boot" and table not in ("efi", "hybrid", "efixbootldr"):
        raise UsageError(
            f"{where}: systemd-boot is a UEFI boot loader and needs an ESP: partition table efi, "
            f"hybrid or efixbootldr, not {table!r} (use grub for BIOS)"
        )
    if spec.grub_dir is not None:
        if b != "grub":
            raise UsageError(f"{_where('grubDir')}: only used with bootLoader grub, not {b}")
        if not os.path.isdir(spec.grub_dir):
            raise UsageError(f"{_where('grubDir')}: {spec.grub_dir}: not a folder")
    if "\n" in spec.kernel_cmdline or "\0" in spec.kernel_cmdline:
        raise UsageError(f"{_where('kernelCmdline')}: {spec.kernel_cmdline!r}: a command line is one line")


def as_dict(spec: ImageSpec) -> dict[str, Any]:
    """The spec as JSON-ready data, for --json summaries and the plan printout."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        out[f.name] = str(v) if isinstance(v, uuid.UUID) else v
    return out
