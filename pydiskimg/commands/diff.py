"""``pydiskimg diff A B [--json]``: explain every difference between two disk images.

Exit status: 0 identical, 1 different, 2 error.  See :mod:`pydiskimg.audit.diff` for the method.

Text output: one line per difference, ``SCOPE: ITEM[: FIELD][: A -> B]``, for example::

    partition table: partition 2: UniquePartitionGUID: F222513B-... -> 12345678-...
    partition 2 (ext4): superblock: s_wtime: 0 -> 1700000000
    partition 2 (ext4): /etc/passwd: mode: 0644 -> 0600
    partition 2 (ext4): blocks allocated differently (groups 0, 3): 2 blocks in use only in A -> 5 only in B
    bytes: 0x9451e7e-0x9451e7f (2 bytes): partition 2, group 0 inode table, inode 219 (/etc/passwd), i_obso_faddr

``--json`` prints ``{"a": PATH, "b": PATH, "identical": BOOL, "differences": [...]}`` where each
difference is ``{"scope", "item", "field", "a", "b", "text"}`` (bytes values as hex strings,
``field``/``a``/``b`` null when they do not apply).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "diff", help="explain the differences between two images",
        description="Compare two disk images (raw, qcow2, vdi, vpc) and explain every "
                    "difference at the highest level that accounts for it: partition-table "
                    "fields, filesystem fields, files by path, allocation, then any remaining "
                    "byte ranges with the structure they fall in. Exit status: 0 identical, "
                    "1 different, 2 error.")
    p.add_argument("a", metavar="A", help="first image")
    p.add_argument("b", metavar="B", help="second image")
    p.add_argument("--json", action="store_true", help="print a JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..api import diff

    result = diff(args.a, args.b)
    try:
        if args.json:
            json.dump(result.to_json(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            for line in result.lines():
                print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # diff A B | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0 if result.identical else 1
