"""FAT names: long-name validation, 8.3 basis names with numeric tails, VFAT slots and checksum.

Short names follow what mtools (the reference used by the tests) generates, which is the
Microsoft specification's "Basis-Name Generation" and "Numeric-Tail Generation" [MSFAT] with
mtools' reading of two steps:

1. leading dots and spaces are dropped;
2. the extension is what follows the **last** dot, the base what precedes it;
3. of each part the first 8 (base) or 3 (extension) *characters* are kept, then spaces and dots
   are dropped from them (so ``a.b.c.d`` gives ``ABC~1.D`` and ``a b c d e f.txt`` gives
   ``ABCD~1.TXT``; the specification would give ``A~1.D`` and ``ABCDEF~1.TXT``);
4. letters are upper-cased; characters not allowed in a short name become ``_``: control
   characters, ``"*+,/:;<=>?[\\]|`` and, as mtools does, the apostrophe;
5. anything dropped, replaced or cut makes the name *lossy*; a lossy name, or one whose base is a
   DOS device name (CON, AUX, PRN, NUL, COM1-4, LPT1-4), gets the first free numeric tail
   ``~1``, ``~2``, ... ``~10`` ... (the base is cut so that base + tail fit in 8 characters).

Deliberate differences from mtools, all in names mtools handles badly:

* non-ASCII characters become ``_`` (lossy, so they get a tail) instead of an OEM code page
  character: short names are then plain ASCII whatever the code page, and the name survives in
  the long-name entry (mtools stores ``ünïcödé.txt`` as a CP850 short name with no long name);
* an existing ``~digits`` in a name is not reused as a tail (mtools turns ``abcdefg~1.txt`` into
  a corrupt short name);
* within one folder, names that need no tail claim their short names first, then tails are
  assigned in name order, so a generated ``AB~1`` never collides with a file really called
  ``AB~1``.

Every name that is not exactly its own upper-case 8.3 form gets VFAT long-name slots (UTF-16;
upper and lower case are kept there; the short entry's NT case bits are never used).
"""

from __future__ import annotations

import re

from ..errors import UsageError
from .structs import LAST_LONG_ENTRY

#: characters mtools replaces by '_' in short names (the specification allows the apostrophe)
SHORT_ILLEGAL = frozenset(";+=[]',\"*\\<>/?:|")
#: characters a long name cannot hold [MSFAT], besides control characters
LONG_ILLEGAL = frozenset('"*/:<>?\\|')
DEVICE_NAMES = frozenset(
    ["CON", "AUX", "PRN", "NUL"] + [f"COM{i}" for i in range(1, 5)] + [f"LPT{i}" for i in range(1, 5)]
)
_LONG_BAD = re.compile(r'[\x00-\x1f"*/:<>?\\|]')
MAX_LONG_NAME = 255  # UTF-16 code units
CHARS_PER_SLOT = 13
MAX_TAIL = 999999


def decode_name(name: bytes, path: str) -> str:
    """A tree name (bytes) as a valid FAT long name, or :class:`UsageError` naming ``path``."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the name is not valid UTF-8, which FAT long names need") from None
    bad = _LONG_BAD.search(text)
    if bad:
        raise UsageError(
            f"{path}: FAT names cannot hold {bad.group()!r} (control characters and \" * / : < > ? \\ | are not allowed)"
        )
    if text[-1] in ". ":
        raise UsageError(f"{path}: FAT names cannot end with a dot or a space (the FAT drivers strip them)")
    if len(text.encode("utf-16-le")) // 2 > MAX_LONG_NAME:
        raise UsageError(f"{path}: the name is longer than {MAX_LONG_NAME} UTF-16 characters, the FAT limit")
    return text


def fold(name: str) -> str:
    """The case-insensitive key of a long name (FAT folders ignore case)."""
    if name.isascii():
        return name.upper()
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in name)


#: short-name mapping of ASCII: spaces and dots dropped, forbidden characters to '_'
_SHORT_TABLE = {ord(c): "_" for c in SHORT_ILLEGAL} | {i: "_" for i in range(0x20)} | {0x7F: "_", 0x20: None, 0x2E: None}


def _part(src: str, limit: int) -> tuple[str, bool]:
    """The short form of a base or extension and whether it is lossy."""
    head = src[:limit]
    lossy = len(src) > limit
    if not head.isascii():
        head = "".join(c if c.isascii() else "\x01" for c in head)  # becomes '_' below
        lossy = True
    up = head.upper()
    out = up.translate(_SHORT_TABLE)
    return out, lossy or out != up


def basis_name(long: str) -> tuple[str, str, bool]:
    """(base, extension, lossy) of a long name; ``lossy`` means a numeric tail is needed."""
    stripped = long.lstrip(". ")
    lossy = stripped != long
    dot = stripped.rfind(".")
    if dot >= 0:
        base, l1 = _part(stripped[:dot], 8)
        ext, l2 = _part(stripped[dot + 1 :], 3)
    else:
        base, l1 = _part(stripped, 8)
        ext, l2 = "", False
    if not base:  # cannot happen for a valid long name; keep the entry valid anyway
        base, l1 = "_", True
    return base, ext, lossy or l1 or l2 or base in DEVICE_NAMES


def pack_short(base: str, ext: str) -> bytes:
    """The 11-byte DIR_Name of base + extension."""
    return base.encode("ascii").ljust(8, b" ") + ext.encode("ascii").ljust(3, b" ")


def with_tail(base: str, n: int) -> str:
    """``base`` with numeric tail ``~n``, cut so that both fit in 8 characters."""
    tail = f"~{n}"
    return base[: min(len(base), 8 - len(tail))] + tail


def short_display(name11: bytes) -> str:
    """'BASE.EXT' (or 'BASE') of an 11-byte short name."""
    base = name11[:8].rstrip(b" ").decode("latin-1")
    ext = name11[8:].rstrip(b" ").decode("latin-1")
    return f"{base}.{ext}" if ext else base


class ShortNames:
    """Short-name assignment for the entries of one folder."""

    def __init__(self) -> None:
        self.used: set[bytes] = set()
        #: per basis, the first tail number not yet known to be taken (the set only grows)
        self.next_tail: dict[tuple[str, str], int] = {}

    def assign(self, longs: list[str]) -> list[tuple[bytes, bool]]:
        """(DIR_Name, needs long-name slots) for each name, in the given order.

        Names that need no tail are placed first, then tails are handed out in order.
        """
        out: list[tuple[bytes, bool] | None] = [None] * len(longs)
        pending = []
        for i, long in enumerate(longs):
            base, ext, lossy = basis_name(long)
            if lossy:
                pending.append((i, base, ext))
                continue
            name11 = pack_short(base, ext)
            self.used.add(name11)  # duplicates were refused by fold() before
            out[i] = (name11, short_display(name11) != long)
        for i, base, ext in pending:
            for n in range(self.next_tail.get((base, ext), 1), MAX_TAIL + 1):
                name11 = pack_short(with_tail(base, n), ext)
                if name11 not in self.used:
                    break
            else:  # pragma: no cover - a folder holds at most 65536 entries
                raise UsageError(f"{longs[i]}: no free short name")
            self.next_tail[(base, ext)] = n + 1
            self.used.add(name11)
            out[i] = (name11, True)
        return [o for o in out if o is not None]


_ROTATE = bytes(((s & 1) << 7) | (s >> 1) for s in range(256))


def lfn_checksum(name11: bytes) -> int:
    """The VFAT checksum of an 11-byte short name [MSFAT ChkSum()]: rotate right, add."""
    s = 0
    for b in name11:
        s = (_ROTATE[s] + b) & 0xFF
    return s


def lfn_chunks(long: str) -> list[tuple[int, bytes]]:
    """(LDIR_Ord, 26 bytes of UTF-16LE) of each slot, in on-disk order (last slot first)."""
    units = long.encode("utf-16-le")
    n = len(units) // 2
    if n % CHARS_PER_SLOT:
        units += b"\x00\x00"
        n += 1
        pad = -n % CHARS_PER_SLOT
        units += b"\xff\xff" * pad
    count = len(units) // (2 * CHARS_PER_SLOT)
    out = []
    for k in range(count, 0, -1):
        chunk = units[(k - 1) * 26 : k * 26]
        out.append((k | (LAST_LONG_ENTRY if k == count else 0), chunk))
    return out


def lfn_slot_count(long: str) -> int:
    """How many long-name slots a name takes."""
    return -(-(len(long.encode("utf-16-le")) // 2) // CHARS_PER_SLOT)
