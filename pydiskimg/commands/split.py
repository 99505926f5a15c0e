"""``pydiskimg split IMAGE DIR``: every partition to its own sparse file, plus the table areas
(mbr.bin, gpt-primary.bin, gpt-backup.bin) and a manifest.json describing them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "split", help="write each partition and table area of an image to its own file",
        description="Split a disk image (raw, qcow2, vdi, vpc) into partN.img for every "
                    "partition (sparse), mbr.bin, gpt-primary.bin and gpt-backup.bin for the "
                    "table areas, and manifest.json (offsets, sizes, GUIDs, sha256). DIR must "
                    "not exist or be empty.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--no-hash", action="store_true", help="leave sha256 out of the manifest")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import split

    m = split(args.image, args.dir, hashes=not args.no_hash)
    if args.json:
        json.dump(m, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for f in m["files"]:
            print(f"{f['file']}: {f['what']}, {f['size']} bytes at {f['offset']}")
    return 0
