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
