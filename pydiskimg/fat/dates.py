"""FAT dates and times.

FAT stores local time with no zone.  pydiskimg writes **UTC**, so an image does not depend on
the machine's zone: ``date = (year - 1980) << 9 | month << 5 | day``,
``time = hour << 11 | minute << 5 | second / 2`` (2-second steps, rounded down), plus a
creation-time byte in 10 ms units (0..199) for the odd second and the fraction, as Linux writes it.
Times outside what FAT can hold are clamped: before 1980-01-01 00:00:00 to that instant, after
2107-12-31 23:59:58 to that instant.
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Sequence

import numpy as np

FAT_EPOCH = calendar.timegm((1980, 1, 1, 0, 0, 0))
FAT_END = calendar.timegm((2107, 12, 31, 23, 59, 58))
_NS = 1_000_000_000


def fat_datetime(ns: int) -> tuple[int, int, int]:
    """(date, time, 10 ms units) of a time in nanoseconds since the epoch, in UTC, clamped."""
    sec, frac = divmod(ns, _NS)
    if sec < FAT_EPOCH:
        sec, frac = FAT_EPOCH, 0
    elif sec > FAT_END:
        sec, frac = FAT_END, 0
    t = datetime.datetime.fromtimestamp(sec, datetime.UTC)
    date = (t.year - 1980) << 9 | t.month << 5 | t.day
    time = t.hour << 11 | t.minute << 5 | t.second // 2
    cs = (t.second & 1) * 100 + frac // 10_000_000
    return date, time, cs


def unix_ns(date: int, time: int, cs: int = 0) -> int | None:
    """Nanoseconds since the epoch of a FAT date/time read as UTC, or None if it is invalid."""
    year, month, day = 1980 + (date >> 9), (date >> 5) & 15, date & 31
    hour, minute, sec2 = time >> 11, (time >> 5) & 63, time & 31
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        return None
    if hour > 23 or minute > 59 or sec2 > 29 or cs > 199:
        return None
    sec = calendar.timegm((year, month, day, hour, minute, sec2 * 2))
    return sec * _NS + cs * 10_000_000


def fat_datetimes(ns: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`fat_datetime` of many times at once (int64 nanoseconds) -> (date, time, cs) arrays."""
    try:
        arr = np.asarray(ns, dtype=np.int64)
    except OverflowError:  # beyond int64: clamp first (FAT's range is far inside it)
        lo, hi = FAT_EPOCH * _NS - 1, (FAT_END + 1) * _NS
        arr = np.array([min(max(int(x), lo), hi) for x in ns], dtype=np.int64)
    sec = arr // _NS
    frac = arr % _NS
    low, high = sec < FAT_EPOCH, sec > FAT_END
    sec = np.clip(sec, FAT_EPOCH, FAT_END)
    frac = np.where(low | high, 0, frac)
    days = (sec // 86400).astype("datetime64[D]")
    years = days.astype("datetime64[Y]")
    months = days.astype("datetime64[M]")
    y = years.astype(np.int64) + 1970
    m = (months - years).astype(np.int64) + 1
    d = (days - months).astype(np.int64) + 1
    sod = sec % 86400
    hh, mm, ss = sod // 3600, sod // 60 % 60, sod % 60
    date = (y - 1980) << 9 | m << 5 | d
    time = hh << 11 | mm << 5 | ss // 2
    cs = (ss & 1) * 100 + frac // 10_000_000
    return date, time, cs
