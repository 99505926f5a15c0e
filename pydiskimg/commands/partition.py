"""``pydiskimg partition IMAGE --partition-table T --disk-size SIZE [...]``.

The seed's ``truncate`` + ``parted`` + ``sgdisk`` step on its own: a sparse file of the disk size
holding only the partition table, exactly as the seed's commands would write it.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "partition",
        help="create a sparse disk image holding only the seed's partition table",
        description="Create IMAGE, a sparse file of --disk-size bytes holding only the partition "
        "table the seed's parted + sgdisk commands write for --partition-table. --disk-size is "
        "read as truncate -s reads it (a bare integer is MiB); --boot-size as the seed's parted "
        "script reads it: 256M is 256 MB (decimal), snapped to the 1 MiB grid, so the default ESP "
        "ends at 244 MiB.",
    )
    p.add_argument("image", metavar="IMAGE", help="the image file to create (replaced atomically)")
    p.add_argument("--partition-table", required=True, metavar="T",
                   help="none, legacy, legacy+gpt, efi, hybrid or efixbootldr [partitionTableType]")
    p.add_argument("--disk-size", required=True, metavar="SIZE", help="disk size, as truncate -s reads it; a bare integer is MiB [diskSize]")
    p.add_argument("--boot-size", default="256M", metavar="SIZE",
                   help="end of the ESP (efixbootldr: of XBOOTLDR), as parted reads it (256M = 256 MB) [bootSize, default 256M]")
    p.add_argument("--root-gpuid", metavar="GUID", help="root partition GUID [rootGPUID, default F222513B-DED1-49FA-B591-20CE86A2FE7F]")
    p.add_argument("--disk-guid", metavar="GUID", help="GPT disk GUID (default: the seed's, 97FD5997-F390-0B4A-A3F8-D106C1723AEA); legacy: the MBR disk signature is derived from it")
    p.add_argument("--seed", metavar="UUID", help="derive every identifier from UUID as systemd-repart does")
    p.add_argument("--json", action="store_true", help="print the layout written, as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import make_partition_table

    lay = make_partition_table(args.image, args.partition_table, args.disk_size,
                               boot_size=args.boot_size, root_gpuid=args.root_gpuid,
                               disk_guid=args.disk_guid, seed=args.seed)
    if args.json:
        json.dump(lay, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0
