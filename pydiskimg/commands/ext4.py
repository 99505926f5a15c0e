"""``pydiskimg ext4 --root DIR -o FS.img``: an ext4 filesystem image from a folder."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "ext4",
        help="make an ext4 filesystem image from a folder",
        description="Write an ext4 filesystem holding the folder --root, as mkfs.ext4 -b 4096 "
        "makes it on Debian 12 (same features and geometry), deterministically: fixed UUID, "
        "hash seed and journal UUID, times from SOURCE_DATE_EPOCH, every file's mtime to the "
        "nanosecond, no root needed for owners, devices or xattrs.",
    )
    p.add_argument("--root", required=True, metavar="DIR", help="the folder to store")
    p.add_argument("-o", "--output", required=True, metavar="FS.img", help="the image file to write")
    p.add_argument(
        "--size",
        default="auto",
        metavar="auto|SIZE",
        help="filesystem size as truncate -s reads it (K M G: powers of 1024; KB MB GB: of "
        "1000; a bare integer is MiB), or 'auto' (default): the smallest filesystem that holds "
        "the tree with the 5%% root reserve free",
    )
    p.add_argument(
        "--additional-space",
        default="0",
        metavar="SIZE",
        help="with --size auto, this much more free space (numfmt --from=iec: K M G ...)",
    )
    p.add_argument("--label", default="", help="volume label, at most 16 bytes")
    p.add_argument("--uuid", metavar="UUID", help="filesystem UUID (default: the seed's rootFSUID)")
    p.add_argument("--hash-seed", metavar="UUID", help="htree hash seed (default: derived from the UUID)")
    p.add_argument("--contents", metavar="FILE.json",
                   help="a JSON list of {source, target, mode, user, group} entries to graft in")
    p.add_argument("--source-date-epoch", metavar="N",
                   help="filesystem times in seconds (default $SOURCE_DATE_EPOCH, else 0)")
    p.add_argument("--clamp-mtime", action="store_true",
                   help="clamp file mtimes to SOURCE_DATE_EPOCH")
    p.add_argument("--all-root", action="store_true",
                   help="make every file owned by 0:0 (trees staged by an unprivileged user)")
    p.add_argument("--no-deterministic", action="store_true",
                   help="keep source atimes/ctimes and use the clock for filesystem times")
    p.add_argument("--json", action="store_true", help="print the filesystem's geometry as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import make_ext4

    geometry = make_ext4(
        args.root, args.output, size=args.size, additional_space=args.additional_space,
        label=args.label, uuid=args.uuid or None, hash_seed=args.hash_seed or None,
        contents=args.contents, source_date_epoch=args.source_date_epoch,
        clamp_mtime=args.clamp_mtime, all_root=args.all_root,
        deterministic=not args.no_deterministic,
    )
    if args.json:
        json.dump(geometry, sys.stdout)
        print()
    return 0
