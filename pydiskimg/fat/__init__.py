"""FAT32 for EFI system partitions: a writer from a tree, and a reader (FAT12/16/32) for inspect.

Writing always makes FAT32 (the UEFI specification's file system for a system partition), with
the geometry ``mkfs.fat -F 32`` picks for the same size (:mod:`.geometry`), short names as
mtools makes them (:mod:`.names`), long names for everything else, and no randomness or clock:

* the volume ID is :attr:`FatOptions.volume_id` (the build pipeline derives it from the ESP's
  partition UUID as systemd-repart derives a filesystem UUID: see ``pydiskimg.ids``);
* file and folder times are the tree's mtimes written as **UTC** (FAT has no time zone);
  creation and access times are derived from the mtime; dates before 1980 clamp to
  1980-01-01 00:00:00 and after 2107 to 2107-12-31 23:59:58 (:mod:`.dates`);
* the volume label entry carries :attr:`FatOptions.timestamp` (``SOURCE_DATE_EPOCH``).

An empty tree gives, byte for byte, the image ``mkfs.fat -F 32 --invariant -n LABEL`` makes
(volume ID 0x1234ABCD, time 1426325213), except the boot code (offsets 90..509 of sectors 0
and 6): mkfs.fat's message printer is replaced by an own 5-byte stub (INT 18h, halt).
"""

from __future__ import annotations

from dataclasses import dataclass

from .read import FatEntry, read_info, read_tree
from .write import FatPlan, make_fat, min_size, plan, write

#: the volume ID mkfs.fat --invariant uses; pipelines pass a derived one
DEFAULT_VOLUME_ID = 0x1234ABCD


@dataclass(frozen=True)
class FatOptions:
    """Options of a FAT32 volume.

    ``label``: up to 11 printable ASCII characters, upper-cased (``""`` for none);
    ``volume_id``: 32-bit serial number; ``timestamp``: seconds since the epoch for what the
    writer creates itself (the label entry); ``hidden_sectors``: BPB_HiddSec, the partition's
    start LBA when the volume sits in a partition (firmware ignores it).
    """

    label: str = "ESP"
    volume_id: int = DEFAULT_VOLUME_ID
    timestamp: int = 0
    hidden_sectors: int = 0


__all__ = [
    "DEFAULT_VOLUME_ID",
    "FatEntry",
    "FatOptions",
    "FatPlan",
    "make_fat",
    "min_size",
    "plan",
    "read_info",
    "read_tree",
    "write",
]
