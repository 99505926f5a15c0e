"""``pydiskimg fat --root DIR -o ESP.img --size SIZE``: a FAT32 image (an ESP) from a folder."""

from __future__ import annotations

import argparse
import json
import sys


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


def run(args: argparse.Namespace) -> int:
    from ..api import make_fat

    geometry = make_fat(args.root, args.output, args.size, label=args.label,
                        volume_id=args.volume_id, source_date_epoch=args.source_date_epoch,
                        hidden_sectors=args.hidden_sectors)
    if args.json:
        json.dump(geometry, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    return 0
