"""``pydiskimg build [SPEC.toml] [flags]``: the whole image, as make-disk-image.nix makes it."""

from __future__ import annotations

import argparse
import json
import sys

from ..spec import _ENUMS, FIELDS, NIX_ONLY, load

_BOOL_FLAGS = {"touchEFIVars", "onlyNixStore", "clampMtime", "allRoot", "bootLoaderInAppliance"}


#: metavars that the kind of a field does not tell
_METAVARS = {"root": "DIR", "esp": "DIR", "xbootldr": "DIR", "OVMF": "DIR", "storeDir": "DIR",
             "grubDir": "DIR", "bootSize": "SIZE", "installBootLoader": "CMD", "postVM": "CMD",
             "name": "NAME", "label": "LABEL", "fsType": "TYPE", "grubDevice": "DEVICE",
             "kernelCmdline": "ARGS"}
_KIND_METAVARS = {"path": "FILE", "size": "SIZE", "disksize": "SIZE", "guid": "UUID", "int": "N",
                  "contents": "FILE"}


def _metavar(key: str, kind: str) -> str:
    if kind == "enum":
        return "{" + ",".join(_ENUMS[key]) + "}"
    return _METAVARS.get(key) or _KIND_METAVARS.get(kind) or "VALUE"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    nix_only = "; ".join(f"{k}: {v}" for k, v in NIX_ONLY.items())
    p = sub.add_parser(
        "build",
        help="build a whole disk image (partition table, ESP, ext4 root, format)",
        description="Build a disk image from a staged root tree, as NixOS's make-disk-image.nix "
        "does, with no root, no LKL and no VM (except the optional bootloader stage). "
        "Flags override the keys of SPEC.toml.",
        epilog=f"Arguments that only make sense inside Nix: {nix_only}.",
    )
    p.add_argument("spec_file", nargs="?", metavar="SPEC.toml", help="a TOML file of make-disk-image.nix arguments")
    for key, (_attr, flag, kind, help_text) in FIELDS.items():
        names = flag.split("/")
        if key == "deterministic":
            p.add_argument("--no-deterministic", dest=key, action="store_const", const=False,
                           help="do not pin identifiers and times (the seed's deterministic = false)")
        elif key in _BOOL_FLAGS:
            p.add_argument(*names, dest=key, action="store_const", const=True, help=f"{help_text} [{key}]")
        else:
            p.add_argument(*names, dest=key, metavar=_metavar(key, kind),
                           help=f"{help_text} [{key}]")
    p.add_argument("--dry-run", action="store_true", help="print the plan and write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import build

    overrides = {key: getattr(args, key) for key in FIELDS}
    spec = load(args.spec_file, overrides)  # = ImageSpec(**flags) or ImageSpec.from_toml(...)
    result = build(spec, quiet=args.quiet, dry_run=args.dry_run)
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0
