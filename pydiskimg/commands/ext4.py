"""``pydiskimg ext4 --root DIR -o FS.img``: an ext4 filesystem image from a folder."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import UsageError
from . import source_date_epoch


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
    from .. import ext4
    from ..ids import parse_guid
    from ..sizes import parse_disk_size, parse_iec

    ts = source_date_epoch(args.source_date_epoch)
    size = None if args.size == "auto" else parse_disk_size(args.size, "--size")
    extra = parse_iec(args.additional_space, "--additional-space")
    if size is not None and extra:
        raise UsageError("--additional-space: only meaningful with --size auto")
    opts = ext4.Ext4Options(
        label=args.label,
        uuid=parse_guid(args.uuid, "--uuid") if args.uuid else ext4.DEFAULT_UUID,
        hash_seed=parse_guid(args.hash_seed, "--hash-seed") if args.hash_seed else None,
        timestamp=ts,
        deterministic=not args.no_deterministic,
    )
    opts.label_bytes()  # validate before scanning
    if not os.path.isdir(args.root):
        raise UsageError(f"--root: {args.root} is not a folder")
    from ..ext4.plan import no_gc

    with no_gc():
        return _build(args, opts, ts, size, extra)


def _build(args: argparse.Namespace, opts: object, ts: int, size: int | None, extra: int) -> int:
    from .. import ext4
    from ..tree import scan

    clamp = ts if args.clamp_mtime else None
    tree = scan(args.root, all_root=args.all_root, clamp_mtime=clamp,
                deterministic=not args.no_deterministic)
    if args.contents:
        from ..contents import apply_contents, load_contents_json

        entries = load_contents_json(args.contents)
        apply_contents(
            tree, entries, tree_root=args.root, timestamp=ts,
            base_dir=os.path.dirname(os.path.abspath(args.contents)),
            clamp_mtime=clamp, deterministic=not args.no_deterministic,
        )
    p = ext4.make_filesystem(tree, args.output, size, opts, extra)  # type: ignore[arg-type]
    if args.json:
        g = p.params
        json.dump(
            {
                "size": p.size,
                "blocks": g.blocks,
                "block_size": 4096,
                "groups": g.groups,
                "inodes": g.inodes_count,
                "inodes_per_group": g.inodes_per_group,
                "reserved_gdt_blocks": g.reserved_gdt,
                "journal_blocks": g.journal_blocks,
                "used_inodes": p.max_ino,
            },
            sys.stdout,
        )
        print()
    return 0
