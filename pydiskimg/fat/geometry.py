"""FAT32 geometry: from a size in bytes to every sector position, as ``mkfs.fat -F 32`` picks them.

Pure functions, no I/O.  The arithmetic follows dosfstools 4.2 ``mkfs.fat.c``
(``establish_params`` and ``setup_tables``) for a regular file (no device geometry):

* CHS geometry for the BPB: up to 256 MiB the SD-card recommendation (heads 2/4/8/16,
  32 sectors per track), above it LBA-assist translation (63 sectors per track, 16..255 heads);
* the total sector count is rounded down to a whole track ("needed by DOS and mtools");
* cluster size by Microsoft's ``format`` table: <= 260 MiB 512 B, <= 8 GiB 4 KiB, <= 16 GiB
  8 KiB, <= 32 GiB 16 KiB, else 32 KiB;
* 32 reserved sectors rounded up to a whole cluster, 2 FATs, the FAT sized exactly
  (``(clusters + 2) * 4`` bytes rounded up to a whole sector, then to a whole cluster), so the
  data area starts on a cluster boundary.

One deliberate difference: ``mkfs.fat -F 32`` still formats a FAT32 with fewer than 65525
clusters (with a warning); such a volume is FAT16 by the specification's type rule and some
drivers read it so.  pydiskimg refuses it (:class:`~pydiskimg.errors.DoesNotFitError` naming
the smallest size that works, about 32.5 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DoesNotFitError, UsageError
from .structs import MAX_CLUST_32, MIN_CLUST_32, SECTOR

NUM_FATS = 2
RESERVED_SECTORS = 32
MAX_SECTORS = 0xFFFFFFFF  # BPB_TotSec32 is 32 bits: mkfs.fat leaves the rest unused
#: (upper bound in 512-byte sectors inclusive, sectors per cluster): Microsoft's format table
CLUSTER_TABLE = (
    (260 * 1024 * 2, 1),
    (8 * 1024 * 1024 * 2, 8),
    (16 * 1024 * 1024 * 2, 16),
    (32 * 1024 * 1024 * 2, 32),
)
BIGGEST_CLUSTER = 64


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _align(n: int, to: int) -> int:
    return _cdiv(n, to) * to


@dataclass(frozen=True)
class Geometry:
    """Positions of a FAT32 volume, in 512-byte sectors unless said otherwise."""

    size: int  #: bytes the volume was planned for (the partition size)
    total_sectors: int  #: BPB_TotSec32 (rounded down to a whole track, as mkfs.fat)
    sectors_per_cluster: int
    reserved_sectors: int
    fat_sectors: int  #: BPB_FATSz32, per copy
    clusters: int  #: data clusters, numbered 2 .. clusters + 1
    sectors_per_track: int
    heads: int
    hidden_sectors: int = 0
    num_fats: int = NUM_FATS

    @property
    def cluster_bytes(self) -> int:
        return self.sectors_per_cluster * SECTOR

    @property
    def fat_offset(self) -> int:
        """Byte offset of the first FAT."""
        return self.reserved_sectors * SECTOR

    @property
    def data_offset(self) -> int:
        """Byte offset of cluster 2."""
        return (self.reserved_sectors + self.num_fats * self.fat_sectors) * SECTOR

    def cluster_offset(self, cluster: int) -> int:
        """Byte offset of a data cluster (2 is the first)."""
        return self.data_offset + (cluster - 2) * self.cluster_bytes


def chs_geometry(sectors: int) -> tuple[int, int]:
    """(sectors per track, heads) that mkfs.fat derives for a file of ``sectors`` sectors."""
    if sectors <= 524288:
        heads = 2 if sectors <= 32768 else 4 if sectors <= 65536 else 8 if sectors <= 262144 else 16
        return (16 if sectors <= 4096 else 32), heads
    for h in (16, 32, 64, 128):
        if sectors <= h * 63 * 1024:
            return 63, h
    return 63, 255


def cluster_size_for(sectors: int) -> int:
    """Sectors per cluster from Microsoft's table, for a volume of ``sectors`` sectors."""
    for limit, spc in CLUSTER_TABLE:
        if sectors <= limit:
            return spc
    return BIGGEST_CLUSTER


def fat32_geometry(size: int, hidden_sectors: int = 0, *, what: str = "FAT32 volume") -> Geometry:
    """The FAT32 geometry ``mkfs.fat -F 32`` gives a volume of ``size`` bytes.

    Raises :class:`DoesNotFitError` when the volume would have fewer than 65525 clusters.
    """
    if size < 0:
        raise UsageError(f"{what}: size {size} is negative")
    if not 0 <= hidden_sectors <= 0xFFFFFFFF:
        raise UsageError(f"{what}: hidden sectors {hidden_sectors} do not fit in 32 bits")
    g = _geometry(size // SECTOR)
    if g is None or g[3] < MIN_CLUST_32:
        raise DoesNotFitError(f"{what} (FAT32 needs at least {MIN_CLUST_32} clusters)", min_fat32_size(), size)
    spt, heads = chs_geometry(size // SECTOR)
    total, spc, reserved, clusters, fat_len = g[0], g[1], g[2], g[3], g[4]
    return Geometry(size, total, spc, reserved, fat_len, clusters, spt, heads, hidden_sectors)


def _geometry(device_sectors: int) -> tuple[int, int, int, int, int] | None:
    """(total sectors, sectors/cluster, reserved, clusters, FAT sectors) or None (too small)."""
    spt, _ = chs_geometry(device_sectors)
    num = min(device_sectors, MAX_SECTORS)
    num -= num % spt
    spc = cluster_size_for(device_sectors)
    while spc <= 128:
        reserved = _align(RESERVED_SECTORS, spc)
        fatdata = num - reserved
        if fatdata <= 0:
            return None
        # dosfstools: estimate, size the FAT for it, then recount with the real FAT size
        clust = (fatdata * SECTOR + NUM_FATS * 8) // (spc * SECTOR + NUM_FATS * 4)
        fat_len = _align(_cdiv((clust + 2) * 4, SECTOR), spc)
        clust = (fatdata - NUM_FATS * fat_len) // spc
        maxclust = min(fat_len * SECTOR // 4, MAX_CLUST_32)
        if 0 < clust <= maxclust:
            return num, spc, reserved, clust, fat_len
        if clust <= 0:
            return None
        spc <<= 1
    return None


def min_fat32_size() -> int:
    """The smallest size in bytes (a multiple of 512) that holds a FAT32 of 65525 clusters."""
    lo, hi = 1, CLUSTER_TABLE[0][0]  # at 512-byte clusters; always reached below 260 MiB
    while lo < hi:
        mid = (lo + hi) // 2
        g = _geometry(mid)
        if g is not None and g[3] >= MIN_CLUST_32:
            hi = mid
        else:
            lo = mid + 1
    return lo * SECTOR


def geometry_fits(size: int, clusters_needed: int) -> bool:
    """Whether a volume of ``size`` bytes is a valid FAT32 with ``clusters_needed`` clusters."""
    g = _geometry(size // SECTOR)
    return g is not None and g[3] >= max(MIN_CLUST_32, clusters_needed)


def regions() -> list[tuple[int, int, int]]:
    """(first sector count, last sector count, sectors per cluster) of each cluster-size region."""
    out = []
    lo = 1
    for limit, spc in CLUSTER_TABLE:
        out.append((lo, limit, spc))
        lo = limit + 1
    out.append((lo, MAX_SECTORS, BIGGEST_CLUSTER))
    return out
