"""Subcommands: each module provides ``register(subparsers)``; shared option readers live here."""

from __future__ import annotations

import os

from ..errors import UsageError


def source_date_epoch(text: str | None) -> int:
    """``--source-date-epoch``, else ``$SOURCE_DATE_EPOCH``, else 0; seconds in 0..2^32-1."""
    source = "--source-date-epoch"
    if text is None:
        text = os.environ.get("SOURCE_DATE_EPOCH")
        source = "SOURCE_DATE_EPOCH"
        if text is None:
            return 0
    try:
        v = int(text)
    except ValueError:
        raise UsageError(f"{source}: {text!r} is not an integer number of seconds") from None
    if not 0 <= v < 1 << 32:
        raise UsageError(f"{source}: {v} is out of range (0 to 2^32-1 seconds)")
    return v
