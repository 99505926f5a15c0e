"""Deterministic identifiers: strict GUID parsing and systemd-repart's HMAC-SHA256 derivation.

UUIDs are handled as :class:`uuid.UUID` (RFC, big-endian byte order); GPT stores them
mixed-endian (``.bytes_le``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

from .errors import UsageError

_GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")


def parse_guid(value: str, field: str) -> uuid.UUID:
    """Parse a strict 8-4-4-4-12 hex GUID; ``field`` names the option for the error message."""
    if not isinstance(value, str) or not _GUID_RE.match(value):
        raise UsageError(
            f"{field}: {value!r} is not a GUID: expected 8-4-4-4-12 hexadecimal digits "
            f"(36 characters), got {len(value) if isinstance(value, str) else type(value).__name__}"
            f"{' characters' if isinstance(value, str) else ''}"
        )
    return uuid.UUID(value)


def hmac_v4(key: bytes, msg: bytes) -> uuid.UUID:
    """systemd's v4 UUID from HMAC-SHA256(key, msg): first 16 bytes, version and variant set."""
    b = bytearray(hmac.new(key, msg, hashlib.sha256).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(b))


# -- The seed's fixed identifiers ---------------------------------------------------------------

#: The disk GUID the seed's sgdisk line really writes.  The seed passes the malformed 35-character
#: ``97FD5997-D90B-4AA3-8D16-C1723AEA73C``; sgdisk reads it as this value, which every image
#: the seed builds carries.
SEED_DISK_GUID = uuid.UUID("97FD5997-F390-0B4A-A3F8-D106C1723AEA")
#: The seed's ``--partition-guid=1:`` value (the ESP in ``efi``/``hybrid``; the BIOS boot
#: partition in ``legacy+gpt``).
SEED_PART1_GUID = uuid.UUID("1C06F03B-704E-4657-B9CD-681A087A2FDC")
#: The seed's ``--partition-guid=2:`` value (the BIOS boot partition in ``hybrid``).
SEED_PART2_GUID = uuid.UUID("970C694F-AFD0-4B99-B750-CDB7A329AB6F")
#: The seed's default ``rootGPUID`` (also its default ``rootFSUID``).
SEED_ROOT_GPUID = uuid.UUID("F222513B-DED1-49FA-B591-20CE86A2FE7F")


# -- systemd-repart's derivation from a seed (src/partition/repart.c) ---------------------------


def _as_uuid(value: uuid.UUID | str, field: str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else parse_guid(value, field)


def repart_partition_uuid(seed: uuid.UUID | str, type_uuid: uuid.UUID | str, k: int = 0) -> uuid.UUID:
    """The UUID systemd-repart gives the ``k``-th (from 0) partition of type ``type_uuid``.

    ``v4(HMAC-SHA256(key = seed bytes, msg = type UUID bytes))`` for the first partition of a
    type (``k == 0``); ``msg = type bytes || le64(k)`` for the later ones.  Bytes in RFC
    (big-endian) order.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    s = _as_uuid(seed, "seed")
    t = _as_uuid(type_uuid, "type")
    msg = t.bytes if k == 0 else t.bytes + k.to_bytes(8, "little")
    return hmac_v4(s.bytes, msg)


def repart_disk_uuid(seed: uuid.UUID | str) -> uuid.UUID:
    """The disk GUID systemd-repart derives: ``v4(HMAC-SHA256(seed, "disk-uuid"))``."""
    return hmac_v4(_as_uuid(seed, "seed").bytes, b"disk-uuid")


def repart_fs_uuid(part_uuid: uuid.UUID | str) -> uuid.UUID:
    """A filesystem UUID from its partition's UUID, as systemd-repart derives it.

    ``v4(HMAC-SHA256(key = partition UUID bytes, msg = "file-system-uuid"))``.
    """
    return hmac_v4(_as_uuid(part_uuid, "partition UUID").bytes, b"file-system-uuid")


def fat_volume_id(fs_uuid: uuid.UUID | str) -> int:
    """A FAT volume ID from a filesystem UUID: its first 4 bytes, big-endian.

    systemd's mkfs helper formats ``uuid.bytes[0] << 24 | ... | uuid.bytes[3]`` as the
    ``mkfs.vfat -i`` argument, so the volume ID reads as the UUID's first 8 hex digits.
    """
    return int.from_bytes(_as_uuid(fs_uuid, "filesystem UUID").bytes[:4], "big")


def mbr_signature(disk_guid: uuid.UUID | str) -> int:
    """pydiskimg's deterministic MBR disk signature (the seed leaves it random).

    ``sig = le32(HMAC-SHA256(key = disk GUID bytes (RFC order), msg = "mbr-disk-signature")[0:4])``,
    and 1 if that is 0 (0 means "no signature" to some tools).  ``disk_guid`` is the layout's disk
    GUID: the seed's default, ``--disk-guid``, or systemd-repart's derivation from ``--seed``.
    """
    key = _as_uuid(disk_guid, "disk GUID").bytes
    sig = int.from_bytes(hmac.new(key, b"mbr-disk-signature", hashlib.sha256).digest()[:4], "little")
    return sig or 1
