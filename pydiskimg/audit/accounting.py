"""What the parts of ``diff`` share: a :class:`Difference`, byte :class:`Ranges` and the
accounting context :class:`Ctx` that collects the differences and the bytes they explain.

:mod:`pydiskimg.audit.diff` (tables, residual bytes), :mod:`pydiskimg.audit.fsdiff` (ext4) and
:mod:`pydiskimg.audit.fatdiff` (FAT) all import this module and none of them imports another
back, so the audit package has no import cycle.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Difference:
    """One explained difference."""

    scope: str  # "image", "partition table", "partition 2 (ext4)"
    item: str  # "superblock", "/etc/passwd", "group 3 descriptor", "bytes 0x..-0x.."
    field: str | None = None  # "mode", "s_wtime"
    a: Any = None
    b: Any = None

    def text(self) -> str:
        head = f"{self.scope}: {self.item}"
        if self.field:
            head += f": {self.field}"
        if self.a is None and self.b is None:
            return head
        if self.field in ("unreadable", "invalid") and self.a is None:
            return f"{head}: {self.b}"
        return f"{head}: {_show(self.a)} -> {_show(self.b)}"

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "item": self.item, "field": self.field,
                "a": _jsonable(self.a), "b": _jsonable(self.b), "text": self.text()}


def _show(v: Any) -> str:
    if v is None:
        return "(none)"
    if v == "":
        return "''"
    if isinstance(v, bytes):
        if len(v) > 48:
            return f"<{len(v)} bytes>"
        return v.hex() if any(c < 32 or c > 126 for c in v) else repr(v.decode())
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (int, str, bool, float)) or v is None:
        return v
    return str(v)


# -- byte ranges ---------------------------------------------------------------------------------
class Ranges:
    """Sorted, disjoint [start, end) byte ranges."""

    def __init__(self, items: list[tuple[int, int]] | None = None) -> None:
        self.items: list[tuple[int, int]] = sorted(items or [])
        self._starts = [a for a, _ in self.items]

    def __bool__(self) -> bool:
        return bool(self.items)

    def total(self) -> int:
        return sum(b - a for a, b in self.items)

    def intersect(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of the ranges inside [start, end)."""
        out = []
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        while i < len(self.items):
            a, b = self.items[i]
            if a >= end:
                break
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                out.append((lo, hi))
            i += 1
        return out

    def any_in(self, start: int, end: int) -> bool:
        return bool(self.intersect(start, end))

    def subtract(self, cover: list[tuple[int, int]]) -> Ranges:
        cover = _merge(sorted(cover), 0)
        out = []
        j = 0
        for a, b in self.items:
            pos = a
            while j < len(cover) and cover[j][1] <= pos:
                j += 1
            k = j
            while k < len(cover) and cover[k][0] < b:
                ca, cb = cover[k]
                if ca > pos:
                    out.append((pos, ca))
                pos = max(pos, cb)
                k += 1
            if pos < b:
                out.append((pos, b))
        return Ranges(out)


def _merge(items: list[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in items:
        if out and a <= out[-1][1] + gap:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


# -- the accounting context ------------------------------------------------------------------------
@dataclass
class Ctx:
    """Differences found so far and the byte ranges they account for (absolute offsets)."""

    diffs: list[Difference] = field(default_factory=list)
    explained: list[tuple[int, int]] = field(default_factory=list)
    #: per scope, a function naming the structure at an absolute offset: (label, end of struct)
    locators: list[tuple[int, int, str, Any]] = field(default_factory=list)

    def add(self, *args: Any, **kw: Any) -> Difference:
        d = Difference(*args, **kw)
        self.diffs.append(d)
        return d
