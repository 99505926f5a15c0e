"""``pydiskimg inspect IMAGE [--json]``: the partition table (and, as probes are added, the
filesystems) of an image.  The JSON shape is documented in :mod:`pydiskimg.audit.table`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "inspect",
        help="show an image's partition table (and filesystems)",
        description="Read IMAGE's partition table back, checked (signatures, CRCs, ranges): kind, "
        "disk GUID or MBR signature, and each partition's number, first and last sector, size, "
        "type, GUID, name and flags.",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print JSON (shape: see pydiskimg.audit.table)")
    p.add_argument("--files", action="store_true", help="also list every file of each filesystem (JSON: \"files\")")
    p.set_defaults(func=run)


def _human(d: dict[str, Any]) -> str:
    t = d["table"]
    head = f"{d['image']}: {d['format']}, {d['size']} bytes ({d['size'] // 512} sectors)"
    if t["scheme"] == "gpt":
        head += f"\ntable: GPT ({t['kind']}), disk GUID {t['disk_guid']}"
    elif t["scheme"] == "mbr":
        head += f"\ntable: MBR ({t['kind']}), disk signature {t['mbr_signature']}"
    else:
        head += "\ntable: none"
        if d.get("filesystem"):
            head += f"\nfilesystem: {_fs(d['filesystem'])}"
        return head
    rows = [("#", "first", "last", "sectors", "size", "type", "GUID", "name", "flags")]
    for p in d["partitions"]:
        rows.append((
            str(p["number"]), str(p["first_lba"]), str(p["last_lba"]), str(p["sectors"]),
            _size(p["size"]), p["type_name"] if p["type_name"] != "unknown" else p["type"],
            p["guid"] or "-", p["name"] if p["name"] is not None else "-", ",".join(p["flags"]) or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i < 5 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]
    for p in d["partitions"]:
        if p.get("filesystem"):
            lines.append(f"partition {p['number']}: {_fs(p['filesystem'])}")
    return head + "\n" + "\n".join(lines)


#: the filesystem fields the human form shows (``--json`` has them all)
_FS_KEYS = ("type", "label", "uuid", "volume_id_text", "block_size", "cluster_size", "blocks_count",
            "free_blocks_count", "clusters", "free_clusters", "inodes_count", "free_inodes_count", "error")


def _fs(fs: dict[str, Any]) -> str:
    text = ", ".join(f"{k} {fs[k]}" for k in _FS_KEYS if k in fs)
    for f in fs.get("files", []):
        text += "\n  " + " ".join(f"{k}={v}" for k, v in f.items())
    return text


def _size(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def run(args: argparse.Namespace) -> int:
    from ..api import inspect

    d = inspect(args.image, files=args.files)
    text = json.dumps(d, indent=2) if args.json else _human(d)
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `inspect ... | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    # a filesystem whose files could not be listed is malformed: say so, exit 2
    errors = list(_files_errors(d, "image")) if args.files else []
    for where, msg in errors:
        print(f"pydiskimg: error: {args.image}: {where}: {msg}", file=sys.stderr)
    return 2 if errors else 0


def _files_errors(d: Any, where: str) -> Any:
    if isinstance(d, dict):
        if "files_error" in d:
            yield where, d["files_error"]
        elif "type" in d and "error" in d:  # a filesystem that could not even be opened
            yield where, d["error"]
        for k, v in d.items():
            if k == "partitions" and isinstance(v, list):
                for p in v:
                    yield from _files_errors(p, f"partition {p.get('number', '?')}" if isinstance(p, dict) else where)
            elif isinstance(v, dict):
                yield from _files_errors(v, where)
