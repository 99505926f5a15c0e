"""Sizes, read exactly as the seed's tools read them.

``make-disk-image.nix`` hands its size parameters to three different programs, and each reads
them its own way; pydiskimg reads each parameter the way the seed's tool does:

* ``diskSize`` goes to ``truncate -s`` (:func:`parse_disk_size`): ``K M G T P E`` (either case
  except ``P E``) are powers of 1024, ``KB MB ...`` (or ``KD``) powers of 1000, ``KiB MiB ...``
  powers of 1024.  A bare integer is MiB, because the seed runs ``truncate -s ${diskSize}M``.
* ``additionalSpace`` (and ``bootSize`` in the seed's auto-size arithmetic) go to
  ``numfmt --from=iec`` (:func:`parse_iec`): ``K M G T P E Z Y`` powers of 1024, decimals
  allowed, rounded away from zero; a bare number is bytes.
* ``bootSize`` goes to ``parted`` as a partition boundary (:func:`parse_boot_size`).  parted reads
  ``256M`` as 256 **MB** (decimal) and, because the unit is not an IEC one, lets the boundary
  move within half a unit to reach the 1 MiB alignment grid: the seed's ESP therefore ends at
  244 MiB, not 256 MiB.  :class:`PartedLocation` keeps what parted needs to reproduce that.

Every parse error is a :class:`~pydiskimg.errors.UsageError` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from .errors import UsageError

KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
SECTOR = 512

_TRUNCATE_RE = re.compile(r"^\s*\+?([0-9]+)(?:([kKmMgGtTPE])(iB|B|D)?)?$")
_TRUNCATE_POWER = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
# off_t is signed 64-bit: truncate refuses anything larger.
_OFF_T_MAX = (1 << 63) - 1


def parse_disk_size(text: str | int, field: str = "diskSize") -> int:
    """Bytes of a disk size written as ``truncate -s`` reads it (a bare integer is MiB).

    ``int`` values are MiB too, as the seed's integer ``diskSize``.  ``"auto"`` is not handled
    here (the build pipeline decides it).
    """
    if isinstance(text, bool):
        raise UsageError(f"{field}: {text!r} is not a size")
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"{field}: {text} is negative; expected a size in MiB")
        return text * MiB
    if not isinstance(text, str):
        raise UsageError(f"{field}: {text!r} is not a size")
    m = _TRUNCATE_RE.match(text)
    if not m:
        raise UsageError(
            f"{field}: {text!r} is not a size: expected an integer with an optional unit "
            f"K, M, G, T, P, E (powers of 1024), KiB/MiB/... (1024) or KB/MB/... (1000), "
            f"as truncate -s reads it; a bare integer is MiB"
        )
    number = int(m.group(1))
    letter, second = m.group(2), m.group(3)
    if letter is None:
        value = number * MiB
    else:
        base = 1000 if second in ("B", "D") else 1024
        value = number * base ** _TRUNCATE_POWER[letter.lower()]
    if value > _OFF_T_MAX:
        raise UsageError(f"{field}: {text!r} is too large ({value} bytes; a file holds at most {_OFF_T_MAX})")
    return value


_IEC_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)([KMGTPEZY])?\s*$")
_IEC_POWER = {s: i + 1 for i, s in enumerate("KMGTPEZY")}


def parse_iec(text: str | int, field: str = "additionalSpace") -> int:
    """Bytes of a size written as ``numfmt --from=iec`` reads it (a bare number is bytes).

    ``K M G T P E Z Y`` (upper case only) are powers of 1024; decimals are allowed and rounded
    away from zero, as numfmt's default ``--round=from-zero`` does.
    """
    if isinstance(text, bool):
        raise UsageError(f"{field}: {text!r} is not a size")
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"{field}: {text} is negative; expected a size in bytes")
        return text
    if not isinstance(text, str):
        raise UsageError(f"{field}: {text!r} is not a size")
    m = _IEC_RE.match(text)
    if not m:
        raise UsageError(
            f"{field}: {text!r} is not a size: expected a number with an optional unit "
            f"K, M, G, T, P, E, Z or Y (powers of 1024), as numfmt --from=iec reads it"
        )
    value = Fraction(m.group(1)) * (1024 ** _IEC_POWER[m.group(2)] if m.group(2) else 1)
    return -(-value.numerator // value.denominator)


# parted's units (libparted/unit.c): the first letter decides, an "i" as second letter makes
# it IEC.  Sizes in bytes.
_PARTED_UNITS: dict[str, tuple[int, bool]] = {
    "s": (SECTOR, False),
    "b": (1, False),
    "k": (1000, False),
    "m": (1000**2, False),
    "g": (1000**3, False),
    "t": (1000**4, False),
    "ki": (KiB, True),
    "mi": (MiB, True),
    "gi": (GiB, True),
    "ti": (TiB, True),
}
_PARTED_RE = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(s|B|kB|KB|k|K|MB|M|GB|G|TB|T|KiB|MiB|GiB|TiB)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PartedLocation:
    """A partition boundary as parted's ``ped_unit_parse`` reads it.

    ``number`` is the value as C's ``%lf`` reads it, ``unit_bytes`` the unit's size; an IEC
    unit (KiB, MiB, GiB, TiB) pins the boundary to the exact sector, any other unit lets it
    move by up to half a unit (the "radius"), which is how ``256M`` lands on the 1 MiB grid.
    """

    text: str
    number: float
    unit_bytes: int
    iec: bool

    @property
    def approx_bytes(self) -> float:
        """The boundary in bytes, before parted snaps it."""
        return self.number * self.unit_bytes

    def sector(self, sector_size: int = SECTOR) -> int:
        """The sector parted computes first: ``(long long)(num * unit_size / sector_size)``."""
        return int(float(self.number) * float(self.unit_bytes) / float(sector_size))

    def radius(self, sector_size: int = SECTOR) -> int:
        """How far (in sectors) parted lets this boundary move; 0 for IEC units."""
        if self.iec:
            return 0
        return max(0, (-(-self.unit_bytes // sector_size)) // 2 - 1)


def parse_boot_size(text: str | PartedLocation, field: str = "bootSize") -> PartedLocation:
    """Read a ``bootSize`` as the seed's parted script does (``256M`` = 256 MB, decimal).

    Accepted: a number (integer or decimal, at least 1) and an optional unit among ``s B kB MB
    GB TB`` (also ``k K M G T``, which parted reads as kB MB GB TB) and ``KiB MiB GiB TiB``; no
    unit means MB, as in parted.  parted's cylinder, percent and CHS forms are refused.
    """
    if isinstance(text, PartedLocation):
        return text
    if not isinstance(text, str):
        raise UsageError(f"{field}: {text!r} is not a size")
    m = _PARTED_RE.match(text)
    if not m:
        raise UsageError(
            f"{field}: {text!r} is not a size: expected a number with an optional unit "
            f"s, B, kB, MB, GB, TB (M = MB, decimal, as parted reads it) or KiB, MiB, GiB, TiB"
        )
    number = float(m.group(1))
    unit = (m.group(2) or "M").lower()
    key = unit[:2] if len(unit) > 1 and unit[1] == "i" else unit[:1]
    unit_bytes, iec = _PARTED_UNITS[key]
    if 0 < number < 1:
        raise UsageError(f"{field}: {text!r}: parted refuses values below 1; use a smaller unit")
    if number == 0:
        raise UsageError(f"{field}: {text!r} is zero; expected a positive size")
    return PartedLocation(text.strip(), number, unit_bytes, iec)


def format_bytes(n: int) -> str:
    """``n`` bytes in a short human form (binary units), for messages."""
    for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n % size else f"{n // size} {unit}"
    return f"{n} B"
