"""A model of what GNU parted 3.5 does with the seed's ``parted --script`` lines.

Pure integer arithmetic, no I/O.  parted places a partition in several steps, reproduced here
step for step so the result matches parted at any disk size (the tests run parted itself):

1. ``ped_unit_parse``: a location such as ``256M`` becomes a sector,
   ``(long long)(num * unit / 512)``, counted from the end when negative, plus a *range* around
   it: ±(ceil(unit / 512) / 2 − 1) sectors, or exactly the sector for IEC units (KiB, MiB, ...).
2. ``_adjust_end_if_iec``: an end given in ``kiB/MiB/GiB/...`` (parted checks the letter
   case-sensitively in ``"kMGTPEZY"``, so ``1024KiB`` does *not* qualify) moves back one sector.
3. ``snap_to_boundaries``: each end may snap to a neighbouring partition or free-space boundary
   inside its range.
4. The constraint solver: the user's ranges, intersected with the device's optimal alignment
   (start ≡ 0, end ≡ 2047 mod 2048 sectors: 1 MiB), the free space around the partition and the
   label's usable area (GPT: sectors 34 … N − 34; msdos: 1 … N − 1), solved for the start then
   the end nearest to the requested ones (``ped_constraint_solve_nearest``).
5. If that has no solution, parted retries without alignment or ranges and, in script mode,
   keeps the result only if it still lies inside the user's ranges (hybrid's BIOS boot
   partition at sector 34 is placed this way), otherwise the command fails.

Sources: parted v3.5 ``parted/parted.c`` (do_mkpart, snap_to_boundaries),
``libparted/unit.c``, ``libparted/cs/{constraint,natmath}.c``, ``libparted/disk.c``,
``libparted/labels/{gpt,dos}.c``, ``libparted/device.c``.  Written from reading them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LLONG_MAX = (1 << 63) - 1
UINT32_MAX = (1 << 32) - 1
SECTOR = 512
#: PED_DEFAULT_ALIGNMENT / sector size: the 1 MiB grid
GRAIN = 1048576 // SECTOR


class PartedFailure(Exception):
    """The parted script would fail (parted prints an error and exits 1)."""


# -- C arithmetic -------------------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _cmod(a: int, b: int) -> int:
    """C remainder (sign of the dividend)."""
    return a - b * _cdiv(a, b)


def _abs_mod(a: int, b: int) -> int:
    """natmath.c abs_mod: ``a % b + b`` when a < 0 (so a multiple of b gives b, not 0)."""
    return _cmod(a, b) + b if a < 0 else _cmod(a, b)


def _round_down_to(sector: int, grain: int) -> int:
    return sector - _abs_mod(sector, grain)


def _round_up_to(sector: int, grain: int) -> int:
    if _cmod(sector, grain):
        return _round_down_to(sector, grain) + grain
    return sector


# -- alignments and geometries ------------------------------------------------------------------

Geom = tuple[int, int]  # (start, end), inclusive


@dataclass(frozen=True)
class Align:
    offset: int
    grain: int

    @staticmethod
    def new(offset: int, grain: int) -> Align:
        return Align(_abs_mod(offset, grain) if grain else offset, grain)


ANY = Align(0, 1)


def _ext_euclid(a: int, b: int) -> tuple[int, int, int]:
    if b == 0:
        return a, 1, 0
    g, x, y = _ext_euclid(b, _cmod(a, b))
    return g, y, x - _cdiv(a, b) * y


def _align_intersect(a: Align | None, b: Align | None) -> Align | None:
    if a is None or b is None:
        return None
    if a.grain < b.grain:
        a, b = b, a
    if a.grain == 0 and b.grain == 0:
        return a if a.offset == b.offset else None
    g, x, y = _ext_euclid(a.grain, b.grain)
    delta = _cdiv(b.offset - a.offset, g)
    new_offset = a.offset + x * delta * a.grain
    new_grain = _cdiv(a.grain * b.grain, g)
    if new_offset != b.offset - y * delta * b.grain:
        return None
    return Align.new(new_offset, new_grain)


def _inside(g: Geom, s: int) -> bool:
    return g[0] <= s <= g[1]


def _geom_intersect(a: Geom | None, b: Geom | None) -> Geom | None:
    if a is None or b is None:
        return None
    s, e = max(a[0], b[0]), min(a[1], b[1])
    return None if s > e else (s, e)


def _is_aligned(al: Align, g: Geom | None, s: int) -> bool:
    if g is not None and not _inside(g, s):
        return False
    if al.grain:
        return _cmod(s - al.offset, al.grain) == 0
    return s == al.offset


def _closest_inside(al: Align, g: Geom, s: int) -> int:
    if not al.grain:
        return s if _is_aligned(al, g, s) and _inside(g, s) else -1
    if s < g[0]:
        s += _round_up_to(g[0] - s, al.grain)
    if s > g[1]:
        s -= _round_up_to(s - g[1], al.grain)
    return s if _inside(g, s) else -1


def _align_up(al: Align, g: Geom | None, s: int) -> int:
    r = al.offset if not al.grain else _round_up_to(s - al.offset, al.grain) + al.offset
    return _closest_inside(al, g, r) if g is not None else r


def _align_down(al: Align, g: Geom | None, s: int) -> int:
    r = al.offset if not al.grain else _round_down_to(s - al.offset, al.grain) + al.offset
    return _closest_inside(al, g, r) if g is not None else r


def _align_nearest(al: Align, g: Geom | None, s: int) -> int:
    a, b = _align_up(al, g, s), _align_down(al, g, s)
    if a == -1:
        return b
    if b == -1:
        return a
    return a if abs(s - a) < abs(s - b) else b


@dataclass(frozen=True)
class Constraint:
    start_align: Align
    end_align: Align
    start_range: Geom
    end_range: Geom
    min_size: int
    max_size: int

    @staticmethod
    def from_max(g: Geom) -> Constraint:
        return Constraint(ANY, ANY, g, g, 1, g[1] - g[0] + 1)


def _intersect(a: Constraint | None, b: Constraint | None) -> Constraint | None:
    if a is None or b is None:
        return None
    sa = _align_intersect(a.start_align, b.start_align)
    ea = _align_intersect(a.end_align, b.end_align)
    sr = _geom_intersect(a.start_range, b.start_range)
    er = _geom_intersect(a.end_range, b.end_range)
    if sa is None or ea is None or sr is None or er is None:
        return None
    return Constraint(sa, ea, sr, er, max(a.min_size, b.min_size), min(a.max_size, b.max_size))


def _solve_nearest(c: Constraint | None, g: Geom, length: int) -> Geom | None:
    if c is None:
        return None
    # _constraint_get_canonical_start_range
    if c.min_size > c.max_size:
        return None
    first_end = _align_down(c.end_align, c.end_range, c.end_range[0])
    last_end = _align_up(c.end_align, c.end_range, c.end_range[1])
    if first_end == -1 or last_end == -1 or first_end > last_end or last_end < c.min_size:
        return None
    min_start = max(first_end - c.max_size + 1, 0)
    max_start = last_end - c.min_size + 1
    if max_start < 0:
        return None
    start_range = _geom_intersect((min_start, max_start), c.start_range)
    if start_range is None:
        return None
    start = _align_nearest(c.start_align, start_range, g[0])
    if start == -1:
        return None
    # _constraint_get_end_range
    if start + c.min_size - 1 > length - 1:
        return None
    end_range = _geom_intersect(
        (start + c.min_size - 1, min(start + c.max_size - 1, length - 1)), c.end_range
    )
    if end_range is None:
        return None
    end = _align_nearest(c.end_align, end_range, g[1])
    if end == -1:
        return None
    return (start, end)


# -- locations as parted reads them -------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A location word of a parted script: number, unit size in bytes, IEC unit or not."""

    text: str
    number: float
    unit_bytes: int
    iec: bool


def _clip(s: int, length: int) -> int:
    return 0 if s < 0 else (length - 1 if s > length - 1 else s)


def parse_location(loc: Location, length: int) -> tuple[int, Geom]:
    """ped_unit_parse_custom: (sector, range) or PartedFailure."""
    radius = 0 if loc.iec else max(0, -(-loc.unit_bytes // SECTOR) // 2 - 1)
    sector = int(float(loc.number) * float(loc.unit_bytes) / float(SECTOR))
    if loc.text.lstrip().startswith("-"):
        sector += length
    start, end = _clip(sector - radius, length), _clip(sector + radius, length)
    if sector - end > radius or start - sector > radius:
        raise PartedFailure(f"the location {loc.text} is outside of the device")
    return _clip(sector, length), (start, end)


def _ends_with_iec_unit(text: str) -> bool:
    t = text.rstrip(" \t")
    return len(t) >= 4 and t[-3] in "kMGTPEZY" and t[-2:].lower() == "ib"


# -- the disk -----------------------------------------------------------------------------------


@dataclass
class Part:
    num: int
    start: int
    end: int
    name: str = ""
    flags: set[str] = field(default_factory=set)


class Disk:
    """A fresh label (``mklabel gpt`` or ``mklabel msdos``) on a device of ``length`` sectors."""

    def __init__(self, label: str, length: int) -> None:
        if length <= 0:
            raise PartedFailure("the device is so small that it cannot possibly store a partition table")
        if label == "gpt" and length - 34 < 34:
            raise PartedFailure("device is too small for GPT")
        self.label = label
        self.length = length
        self.parts: list[Part] = []

    # regions: metadata, partitions and free space, as parted's partition list outside update mode
    def _regions(self) -> list[Geom]:
        n = self.length
        used: list[Geom] = [(p.start, p.end) for p in self.parts]
        if self.label == "gpt":
            used += [(0, 33), (n - 33, n - 1)]
        else:
            # add_startend_metadata with cylinder alignment off (parted turns it off for
            # optimal alignment): sectors 0 .. min(31, first partition - 1); no end metadata.
            init_end = 32 - 1 if not self.parts else min(32 - 1, min(p.start for p in self.parts) - 1)
            if 0 < init_end <= n:
                used.append((0, init_end))
        used.sort()
        out: list[Geom] = []
        last_end = -1
        for g in used:
            if g[0] > last_end + 1:
                out.append((last_end + 1, g[0] - 1))
            out.append(g)
            last_end = g[1]
        if last_end < n - 1:
            out.append((last_end + 1, n - 1))
        return out

    def _by_sector(self, s: int) -> Geom:
        for g in self._regions():
            if _inside(g, s):
                return g
        raise PartedFailure(f"no region holds sector {s}")  # parted would crash

    def _snap(self, g: Geom, start_range: Geom, end_range: Geom) -> Geom:
        still, up, down = 1, 2, 4
        start, end = g
        start_allow = end_allow = still | up | down
        start_part = self._by_sector(start)
        end_part = self._by_sector(end)
        adjacent = start_part[1] + 1 == end_part[0]
        if start_part == end_part:
            start_allow &= ~up
            end_allow &= ~down

        def prefer(s: int, what: int, rng: Geom, allow: int, part: Geom) -> tuple[int, int, int]:
            if not allow & (up | down):
                return still, 0, allow
            up_dist = down_dist = -1
            if allow & up:
                new = part[1] + 1 + what
                if _inside(rng, new):
                    up_dist = new - s
                else:
                    allow &= ~up
            if allow & down:
                new = part[0] + what
                if _inside(rng, new):
                    down_dist = s - new
                else:
                    allow &= ~down
            move = still
            if allow & up and allow & down:
                if down_dist < up_dist or (down_dist == up_dist and what == 0):
                    move = down
                elif up_dist < down_dist or (down_dist == up_dist and what == -1):
                    move = up
            elif allow & up:
                move = up
            elif allow & down:
                move = down
            dist = down_dist if move == down else (up_dist if move == up else 0)
            return move, dist, allow

        start_want, start_dist, start_allow = prefer(start, 0, start_range, start_allow, start_part)
        end_want, end_dist, end_allow = prefer(end, -1, end_range, end_allow, end_part)
        if adjacent and start_want == up and end_want == down:
            if end_dist < start_dist:
                start_allow &= ~up
                start_want, start_dist, start_allow = prefer(start, 0, start_range, start_allow, start_part)
            else:
                end_allow &= ~down
                end_want, end_dist, end_allow = prefer(end, -1, end_range, end_allow, end_part)
        if start_want == down:
            start = start_part[0]
        elif start_want == up:
            start = start_part[1] + 1
        if end_want == down:
            end = end_part[0] - 1
        elif end_want == up:
            end = end_part[1]
        if not (_inside(start_range, start) and _inside(end_range, end) and start <= end):
            raise PartedFailure("snap_to_boundaries assertion")  # parted would abort
        return (start, end)

    def _overlap_constraint(self, g: Geom) -> Constraint | None:
        min_start, max_end = 0, LLONG_MAX - 1
        parts = sorted(self.parts, key=lambda p: p.start)
        i = 0
        while i < len(parts) and (parts[i].start < g[0] or min_start >= parts[i].start):
            min_start = parts[i].end + 1
            i += 1
        if i < len(parts):
            max_end = parts[i].start - 1
        if min_start >= max_end:
            return None
        return Constraint.from_max((min_start, max_end))

    def _next_number(self) -> int:
        used = {p.num for p in self.parts}
        limit = 128 if self.label == "gpt" else 4
        for i in range(1, limit + 1):
            if i not in used:
                return i
        raise PartedFailure("too many primary partitions")

    def _add(self, g: Geom, constraint: Constraint) -> tuple[bool, Geom]:
        """ped_disk_add_partition; returns (ok, geometry) — the geometry may move even on failure."""
        constraints = _intersect(self._overlap_constraint(g), constraint)
        if constraints is None:
            return False, g  # "Can't have overlapping partitions."
        n = self.length
        if self.label == "gpt":
            internal = Constraint.from_max((34, n - 34))
        else:
            internal = Constraint.from_max((1, n - 1))
        sol = _solve_nearest(_intersect(constraints, internal), g, n)
        if sol is None:
            return False, g  # "Unable to satisfy all constraints on the partition."
        g = sol
        if g[1] >= n:
            return False, g
        if self.label == "msdos" and (g[1] - g[0] + 1 > UINT32_MAX or g[0] > UINT32_MAX):
            return False, g  # exceeds the msdos-partition-table-imposed maximum
        return True, g

    def mkpart(self, name: str, start_loc: Location, end_loc: Location) -> Part:
        """do_mkpart in script mode with optimal alignment; PartedFailure if parted fails."""
        n = self.length
        start, range_start = parse_location(start_loc, n)
        end, range_end = parse_location(end_loc, n)
        if start != end and _ends_with_iec_unit(end_loc.text):
            end -= 1
            range_end = (range_end[0] - 1, range_end[1] - 1)
        if end - start + 1 < 1:
            raise PartedFailure(f"can't have the end before the start (start sector={start} length={end - start + 1})")
        g = self._snap((start, end), range_start, range_end)
        user = Constraint(ANY, ANY, range_start, range_end, 1, n)
        dev = Constraint(Align.new(0, GRAIN), Align.new(-1, GRAIN), (0, n - 1), (0, n - 1), 1, n)
        final = _intersect(user, dev)
        if final is None:
            raise PartedFailure("no solution within the alignment constraints")
        num = self._next_number()
        ok, g = self._add(g, final)
        if not ok:
            ok, g = self._add(g, Constraint(ANY, ANY, (0, n - 1), (0, n - 1), 1, n))
            if not ok:
                raise PartedFailure("unable to satisfy all constraints on the partition")
            if not (_inside(range_start, g[0]) and _inside(range_end, g[1])):
                raise PartedFailure(
                    f"you requested a partition from sector {start} to {end}; the closest "
                    f"location parted can manage is {g[0]} to {g[1]}"
                )
        part = Part(num, g[0], g[1], name)
        self.parts.append(part)
        return part

    def align_check(self, num: int) -> None:
        """``align-check optimal N``: in script mode an unaligned start fails the script."""
        for p in self.parts:
            if p.num == num:
                if p.start % GRAIN:
                    raise PartedFailure(f"partition {num} is not aligned: {p.start}s % {GRAIN}s != 0s")
                return
        raise PartedFailure(f"partition {num} does not exist")
