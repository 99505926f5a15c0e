"""FAT dates and times: UTC, 2-second steps, 10 ms creation byte, clamping; bulk == scalar."""

from __future__ import annotations

import calendar
import random

from pydiskimg.fat import dates

NS = 1_000_000_000


def test_known_values():
    # 2024-05-17 13:37:43.123456789 UTC
    t = calendar.timegm((2024, 5, 17, 13, 37, 43)) * NS + 123_456_789
    assert dates.fat_datetime(t) == ((2024 - 1980) << 9 | 5 << 5 | 17, 13 << 11 | 37 << 5 | 21, 112)
    assert dates.fat_datetime(0) == (1 << 5 | 1, 0, 0)  # 1970 clamps to 1980-01-01
    assert dates.fat_datetime(-5 * NS) == (1 << 5 | 1, 0, 0)
    end = dates.fat_datetime(10**20)
    assert end == (127 << 9 | 12 << 5 | 31, 23 << 11 | 59 << 5 | 29, 0)
    assert dates.unix_ns(*dates.fat_datetime(t)) == t // 10_000_000 * 10_000_000
    assert dates.unix_ns(0, 0) is None  # month 0


def test_bulk_equals_scalar():
    r = random.Random(3)
    values = [r.randrange(-(1 << 63), 1 << 63) for _ in range(5000)]
    values += [r.randrange(dates.FAT_EPOCH * NS, dates.FAT_END * NS) for _ in range(5000)]
    values += [dates.FAT_EPOCH * NS - 1, dates.FAT_EPOCH * NS, dates.FAT_END * NS + NS - 1, dates.FAT_END * NS + NS,
               951782400 * NS, 4107542400 * NS, 10**25, -(10**25)]
    d, t, c = dates.fat_datetimes(values)
    assert [(int(a), int(b), int(e)) for a, b, e in zip(d, t, c, strict=True)] == [dates.fat_datetime(v) for v in values]
