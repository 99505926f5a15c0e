"""``pydiskimg fat --root DIR -o ESP.img --size SIZE``: a FAT32 image (an ESP) from a folder."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import UsageError
from ..sizes import MiB, parse_disk_size
from . import source_date_epoch


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "fat",
        help="make a FAT32 image (an EFI system partition) from a folder",
        description="Write a FAT32 filesystem image of --size bytes holding the folder --root "
        "(regular files and folders only), as mkfs.vfat -F 32 + mcopy -s would, but "
        "deterministically: fixed volume ID, times in UTC, long names kept.",
    )
    p.add_argument("--root", required=True, metavar="DIR", help="the folder to store")
    p.add_argument("-o", "--output", required=True, metavar="ESP.img", help="the image file to write")
    p.add_argument(
        "--size",
        required=True,
        metavar="SIZE",
        help="image size as truncate -s reads it (K M G: powers of 1024; KB MB GB: of 1000; "
        "a bare integer is MiB), or 'auto' for the smallest FAT32 that holds the tree, rounded up to a MiB",
    )
    p.add_argument("--label", default="ESP", help="volume label, up to 11 characters, upper-cased (default ESP; '' for none)")
    p.add_argument("--volume-id", metavar="HEX", help="volume serial number, 8 hex digits (default 1234ABCD)")
    p.add_argument(
        "--source-date-epoch",
        metavar="N",
        help="time of the volume label entry, in seconds (default $SOURCE_DATE_EPOCH, else 0)",
    )
    p.add_argument("--hidden-sectors", type=int, default=0, metavar="LBA",
                   help="BPB_HiddSec: the partition's first sector when the image goes into a partition")
    p.add_argument("--json", action="store_true", help="print the volume's geometry as JSON on stdout")
    p.set_defaults(func=run)


def _volume_id(text: str) -> int:
    t = text.strip()
    if t.lower().startswith("0x"):
        t = t[2:]
    t = t.replace("-", "")
    if not t or len(t) > 8 or any(c not in "0123456789abcdefABCDEF" for c in t):
        raise UsageError(f"--volume-id: {text!r} is not a volume ID: expected up to 8 hex digits (like 1234ABCD or 1234-ABCD)")
    return int(t, 16)


def run(args: argparse.Namespace) -> int:
    from .. import fat
    from ..tree import scan

    opts = fat.FatOptions(
        label=args.label,
        volume_id=_volume_id(args.volume_id) if args.volume_id is not None else fat.DEFAULT_VOLUME_ID,
        timestamp=source_date_epoch(args.source_date_epoch),
        hidden_sectors=args.hidden_sectors,
    )
    if args.hidden_sectors < 0 or args.hidden_sectors > 0xFFFFFFFF:
        raise UsageError(f"--hidden-sectors: {args.hidden_sectors} is not a 32-bit sector number")
    if not os.path.isdir(args.root):
        raise UsageError(f"--root: {args.root} is not a folder")
    tree = scan(args.root, all_root=True)
    if args.size.strip().lower() == "auto":
        size = -(-fat.min_size(tree, opts) // MiB) * MiB
    else:
        size = parse_disk_size(args.size, "--size")
    plan = fat.make_fat(tree, args.output, size, opts)
    if args.json:
        json.dump(plan.describe(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0
