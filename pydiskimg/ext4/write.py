"""Write a planned ext4 filesystem: superblock and backups, group descriptors and backups, the
resize inode's blocks, bitmaps, inode tables with checksums, the journal superblock,
directories, extent tree and xattr blocks, then file data moved by the kernel.

The target range must read as zeros (a fresh sparse image): nothing is written where the
filesystem holds zeros -- unused inode table slots, unused bitmaps of uninitialised groups,
the journal's log blocks, holes of sparse files.  Metadata goes out in a handful of large
writes (adjacent blocks are coalesced).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..errors import SourceError
from ..io import Image, open_source
from . import geometry as geo
from .csum import bitmap_csum, gdt_csum, inode_table_csums, superblock_csum
from .plan import BS, JOURNAL_INO, Ext4Plan, FileCopy
from .structs import GROUP_DESC_DTYPE, ext4_super_block, journal_superblock_t

log = logging.getLogger(__name__)

BG_INODE_UNINIT = 0x1
BG_BLOCK_UNINIT = 0x2
BG_INODE_ZEROED = 0x4

COMPAT = 0x4 | 0x8 | 0x10 | 0x20  # has_journal ext_attr resize_inode dir_index
INCOMPAT = 0x2 | 0x40 | 0x80 | 0x200  # filetype extent 64bit flex_bg
RO_COMPAT = 0x1 | 0x2 | 0x8 | 0x20 | 0x40 | 0x400  # sparse_super large_file huge_file
# dir_nlink extra_isize metadata_csum


class _Writer:
    """Collects (block, bytes) and writes runs of adjacent blocks with one pwrite each."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.items: list[tuple[int, bytes]] = []

    def add(self, block: int, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self.items.append((block * BS + offset, bytes(data)))

    def flush(self) -> None:
        self.items.sort(key=lambda t: t[0])
        run_start = -1
        parts: list[bytes] = []
        run_end = -1
        for off, data in self.items:
            if off == run_end:
                parts.append(data)
                run_end += len(data)
                continue
            if parts:
                self.image.write(run_start, b"".join(parts))
            run_start, run_end, parts = off, off + len(data), [data]
        if parts:
            self.image.write(run_start, b"".join(parts))
        self.items = []


def _block_bitmap(plan: Ext4Plan) -> np.ndarray:
    """All block bitmaps, ``groups * bpg / 8`` bytes; bits past the end set (padding)."""
    p = plan.params
    nbits = p.groups * p.bpg
    bits = np.zeros(nbits // 8, dtype=np.uint8)

    def set_range(a: int, b: int) -> None:
        if a >= b:
            return
        fa, fb = -(-a // 8), b // 8
        if fa <= fb:
            bits[fa:fb] = 0xFF
            for i in range(a, min(fa * 8, b)):
                bits[i >> 3] |= 1 << (i & 7)
            for i in range(max(fb * 8, a), b):
                bits[i >> 3] |= 1 << (i & 7)
        else:
            for i in range(a, b):
                bits[i >> 3] |= 1 << (i & 7)

    for s, e in zip(plan.used.starts, plan.used.ends, strict=False):
        set_range(s, e)
    set_range(p.blocks, nbits)
    return bits


def write(
    plan: Ext4Plan, image: Image, progress: Callable[[int, int], None] | None = None
) -> None:
    """Write the planned filesystem at offset 0 of ``image`` (a view of the partition).

    ``progress(bytes_done, bytes_total)`` is called while file data is copied.  Raises
    :class:`~pydiskimg.errors.SourceError` when a source file cannot be read, vanished or
    changed size since it was scanned.
    """
    # the file data first, in threads: reading many small files overlaps the metadata below
    # (disjoint blocks of the image)
    with ThreadPoolExecutor(COPY_THREADS) as ex:
        futures = _start_copies(plan, image, ex)
        try:
            _write_metadata(plan, image)
            _wait_copies(futures, plan.copy_bytes, progress)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _write_metadata(plan: Ext4Plan, image: Image) -> None:
    p = plan.params
    lay = plan.layout
    seed = plan.csum_seed
    opts = plan.options
    w = _Writer(image)
    now = plan.timestamp if opts.deterministic else int(time.time())

    # ---- bitmaps and group descriptors ----
    ipg = p.inodes_per_group
    bpg = p.bpg
    bits = _block_bitmap(plan)
    gd = np.zeros(p.groups, dtype=GROUP_DESC_DTYPE)
    per_super = 1 + p.desc_blocks + p.reserved_gdt
    bb_nbytes = bpg // 8
    ib_nbytes = ipg // 8
    free_blocks_total = 0
    free_inodes_total = 0
    used_counts = np.unpackbits(bits.reshape(p.groups, bb_nbytes), axis=1, bitorder="little").sum(
        axis=1
    )
    last = p.groups - 1
    for g in range(p.groups):
        gstart = g * bpg
        gend = min(gstart + bpg, p.blocks)
        pad = gstart + bpg - gend
        used_g = int(used_counts[g]) - pad
        own = per_super if geo.has_super(g) else 0
        free_b = (gend - gstart) - used_g
        flags = BG_INODE_ZEROED
        first_ino = g * ipg + 1
        n_used_inodes = max(0, min(plan.max_ino - first_ino + 1, ipg))
        if g != last and used_g == own:
            flags |= BG_BLOCK_UNINIT
            bcs = 0
        else:
            bm = bits[g * bb_nbytes : (g + 1) * bb_nbytes]
            bcs = bitmap_csum(seed, bm.tobytes())
            blk = bm.tobytes() + b"\xff" * (BS - bb_nbytes)
            w.add(int(lay.block_bitmap[g]), blk)
        if n_used_inodes == 0:
            flags |= BG_INODE_UNINIT
            ics = 0
        else:
            ib = np.zeros(ib_nbytes, dtype=np.uint8)
            full = n_used_inodes // 8
            ib[:full] = 0xFF
            if n_used_inodes % 8:
                ib[full] = (1 << (n_used_inodes % 8)) - 1
            ics = bitmap_csum(seed, ib.tobytes())
            w.add(int(lay.inode_bitmap[g]), ib.tobytes() + b"\xff" * (BS - ib_nbytes))
        free_i = ipg - n_used_inodes
        free_blocks_total += free_b
        free_inodes_total += free_i
        d = gd[g]
        d["bg_block_bitmap_lo"] = int(lay.block_bitmap[g]) & 0xFFFFFFFF
        d["bg_block_bitmap_hi"] = int(lay.block_bitmap[g]) >> 32
        d["bg_inode_bitmap_lo"] = int(lay.inode_bitmap[g]) & 0xFFFFFFFF
        d["bg_inode_bitmap_hi"] = int(lay.inode_bitmap[g]) >> 32
        d["bg_inode_table_lo"] = int(lay.inode_table[g]) & 0xFFFFFFFF
        d["bg_inode_table_hi"] = int(lay.inode_table[g]) >> 32
        d["bg_free_blocks_count_lo"] = free_b & 0xFFFF
        d["bg_free_blocks_count_hi"] = free_b >> 16
        d["bg_free_inodes_count_lo"] = free_i & 0xFFFF
        d["bg_free_inodes_count_hi"] = free_i >> 16
        nd = int(plan.dirs_per_group[g])
        d["bg_used_dirs_count_lo"] = nd & 0xFFFF
        d["bg_used_dirs_count_hi"] = nd >> 16
        d["bg_flags"] = flags
        d["bg_block_bitmap_csum_lo"] = bcs & 0xFFFF
        d["bg_block_bitmap_csum_hi"] = bcs >> 16
        d["bg_inode_bitmap_csum_lo"] = ics & 0xFFFF
        d["bg_inode_bitmap_csum_hi"] = ics >> 16
        unused = ipg - n_used_inodes
        d["bg_itable_unused_lo"] = unused & 0xFFFF
        d["bg_itable_unused_hi"] = unused >> 16
        gd[g] = d
    gdraw = gd.view(np.uint8).reshape(p.groups, 64)
    for g in range(p.groups):
        c = gdt_csum(seed, g, gdraw[g].tobytes())
        gd["bg_checksum"][g] = c
    gdt_bytes = gd.tobytes()
    gdt_bytes += b"\0" * (p.desc_blocks * BS - len(gdt_bytes))

    # ---- inode table ----
    itab = plan.inodes
    n = plan.max_ino
    raw = itab.view(np.uint8).reshape(n, 256)
    for g in range(p.groups):
        a = g * ipg
        if a >= n:
            break
        b = min(n, a + ipg)
        part = itab[a:b]
        inos = np.arange(a + 1, b + 1, dtype=np.uint32)
        cs = inode_table_csums(seed, inos, np.zeros(b - a, dtype=np.uint32), part)
        part["l_i_checksum_lo"] = cs & 0xFFFF
        part["i_checksum_hi"] = np.where(part["i_extra_isize"] >= 4, cs >> 16, 0)
        # leave all-zero slots unwritten at the end of the table
        image.write(int(lay.inode_table[g]) * BS, raw[a:b].data)

    # ---- superblock ----
    sb = _superblock(plan, free_blocks_total, free_inodes_total, now)
    prim = ext4_super_block.build(sb)
    prim = prim[:0x3FC] + superblock_csum(prim).to_bytes(4, "little")
    w.add(0, prim, 1024)
    w.add(1, gdt_bytes)
    for g in geo.backup_groups(p.groups):
        sb2 = dict(sb)
        sb2["s_block_group_nr"] = g
        sb2["s_state"] = 0  # closefs.c writes backups with the VALID bit cleared
        b2 = ext4_super_block.build(sb2)
        b2 = b2[:0x3FC] + superblock_csum(b2).to_bytes(4, "little")
        w.add(g * bpg, b2)
        w.add(g * bpg + 1, gdt_bytes)

    # ---- journal superblock ----
    if p.journal_blocks:
        w.add(plan.journal_runs[0][1], journal_superblock(p.journal_blocks, opts.uuid.bytes))

    # ---- directories, extent trees, xattr blocks, resize inode blocks, slow symlinks ----
    for blk_nr, data in plan.blocks:
        w.add(blk_nr, data)
    w.flush()


def journal_superblock(maxlen: int, uuid: bytes, block_size: int = BS) -> bytes:
    """The superblock of an empty internal journal of ``maxlen`` blocks of ``block_size`` bytes
    (the filesystem's), as mke2fs writes it (version 2, no transaction, sequence 1, one user:
    the filesystem ``uuid``)."""
    return bytes(journal_superblock_t.build(
        dict(
            h_magic=0xC03B3998, h_blocktype=4, h_sequence=0, s_blocksize=block_size,
            s_maxlen=maxlen, s_first=1, s_sequence=1, s_start=0, s_errno=0,
            s_feature_compat=0, s_feature_incompat=0, s_feature_ro_compat=0,
            s_uuid=uuid, s_nr_users=1, s_dynsuper=0, s_max_transaction=0,
            s_max_trans_data=0, s_checksum_type=0, s_padding2=b"\0" * 3,
            s_num_fc_blks=0, s_head=0, s_padding=[0] * 40, s_checksum=0,
            s_users=b"\0" * 768,
        )
    ))


def _superblock(plan: Ext4Plan, free_blocks: int, free_inodes: int, now: int) -> dict:
    p = plan.params
    opts = plan.options
    jb = [0] * 17
    itab = plan.inodes
    if p.journal_blocks:
        jblk = np.frombuffer(itab[JOURNAL_INO - 1]["i_block"].tobytes(), dtype="<u4")
        jb[:15] = [int(x) for x in jblk]
        jsize = p.journal_blocks * BS
        jb[15] = jsize >> 32
        jb[16] = jsize & 0xFFFFFFFF
    compat = COMPAT if p.journal_blocks else COMPAT & ~0x4
    t = now & 0xFFFFFFFF
    thi = (now >> 32) & 0xFF
    return dict(
        s_inodes_count=p.inodes_count,
        s_blocks_count_lo=p.blocks & 0xFFFFFFFF,
        s_r_blocks_count_lo=p.r_blocks & 0xFFFFFFFF,
        s_free_blocks_count_lo=free_blocks & 0xFFFFFFFF,
        s_free_inodes_count=free_inodes,
        s_first_data_block=0,
        s_log_block_size=geo.LOG_BLOCK_SIZE,
        s_log_cluster_size=geo.LOG_BLOCK_SIZE,
        s_blocks_per_group=p.bpg,
        s_clusters_per_group=p.bpg,
        s_inodes_per_group=p.inodes_per_group,
        s_mtime=0,
        s_wtime=t,
        s_mnt_count=0,
        s_max_mnt_count=-1,
        s_magic=0xEF53,
        s_state=1,
        s_errors=1,
        s_minor_rev_level=0,
        s_lastcheck=t,
        s_checkinterval=0,
        s_creator_os=0,
        s_rev_level=1,
        s_def_resuid=0,
        s_def_resgid=0,
        s_first_ino=11,
        s_inode_size=256,
        s_block_group_nr=0,
        s_feature_compat=compat,
        s_feature_incompat=INCOMPAT,
        s_feature_ro_compat=RO_COMPAT,
        s_uuid=opts.uuid.bytes,
        s_volume_name=opts.label_bytes().ljust(16, b"\0"),
        s_last_mounted=b"\0" * 64,
        s_algorithm_usage_bitmap=0,
        s_prealloc_blocks=0,
        s_prealloc_dir_blocks=0,
        s_reserved_gdt_blocks=p.reserved_gdt,
        s_journal_uuid=b"\0" * 16,
        s_journal_inum=JOURNAL_INO if p.journal_blocks else 0,
        s_journal_dev=0,
        s_last_orphan=0,
        s_hash_seed=list(plan.hash_seed_words),
        s_def_hash_version=1,
        s_jnl_backup_type=1 if p.journal_blocks else 0,
        s_desc_size=64,
        s_default_mount_opts=0x0C,
        s_first_meta_bg=0,
        s_mkfs_time=t,
        s_jnl_blocks=jb,
        s_blocks_count_hi=p.blocks >> 32,
        s_r_blocks_count_hi=p.r_blocks >> 32,
        s_free_blocks_hi=free_blocks >> 32,
        s_min_extra_isize=32,
        s_want_extra_isize=32,
        s_flags=1,
        s_raid_stride=0,
        s_mmp_update_interval=0,
        s_mmp_block=0,
        s_raid_stripe_width=0,
        s_log_groups_per_flex=geo.LOG_GROUPS_PER_FLEX,
        s_checksum_type=1,
        s_encryption_level=0,
        s_reserved_pad=0,
        s_kbytes_written=(p.blocks - free_blocks) * (BS // 1024),
        s_snapshot_inum=0,
        s_snapshot_id=0,
        s_snapshot_r_blocks_count=0,
        s_snapshot_list=0,
        s_error_count=0,
        s_first_error_time=0,
        s_first_error_ino=0,
        s_first_error_block=0,
        s_first_error_func=b"\0" * 32,
        s_first_error_line=0,
        s_last_error_time=0,
        s_last_error_ino=0,
        s_last_error_line=0,
        s_last_error_block=0,
        s_last_error_func=b"\0" * 32,
        s_mount_opts=b"\0" * 64,
        s_usr_quota_inum=0,
        s_grp_quota_inum=0,
        s_overhead_clusters=plan.overhead,
        s_backup_bgs=[0, 0],
        s_encrypt_algos=b"\0" * 4,
        s_encrypt_pw_salt=b"\0" * 16,
        s_lpf_ino=0,
        s_prj_quota_inum=0,
        s_checksum_seed=0,
        s_wtime_hi=thi,
        s_mtime_hi=0,
        s_mkfs_time_hi=thi,
        s_lastcheck_hi=thi,
        s_first_error_time_hi=0,
        s_last_error_time_hi=0,
        s_first_error_errcode=0,
        s_last_error_errcode=0,
        s_encoding=0,
        s_encoding_flags=0,
        s_orphan_file_inum=0,
        s_reserved=[0] * 94,
        s_checksum=0,
    )


#: copy_file_range releases the GIL, so copies overlap; more threads than cores only add
#: contention (measured on 2 cores: 2 threads 1.10 s, 4 threads 1.56 s for 50k files)
COPY_THREADS = max(1, min(4, os.cpu_count() or 1))
_BATCH_BYTES = 64 << 20
_BATCH_FILES = 256


def _copy_one(fc: FileCopy, image: Image) -> int:
    fd = open_source(fc.source)
    try:
        st = os.fstat(fd)
        if st.st_size != fc.size:
            raise SourceError(
                f"{fc.source}: size changed from {fc.size} to {st.st_size} bytes since "
                f"it was scanned"
            )
        done = 0
        for src, dst, ln in fc.pieces:
            # a read failure is a SourceError; a write failure (disk full...) an OSError
            got = image.copy_from(fd, src, dst, ln, src_name=fc.source)
            if got != ln:
                raise SourceError(
                    f"{fc.source}: shrank while being copied (read {src + got} of "
                    f"{fc.size} bytes)"
                )
            done += ln
        return done
    finally:
        os.close(fd)


#: files up to this size are gathered: read into one buffer per run of consecutive blocks and
#: written with one pwrite, instead of one copy_file_range each (tens of thousands of small
#: files are most of a root tree; per-file kernel round trips then dominate)
_GATHER_MAX_FILE = 256 << 10
_GATHER_MAX_RUN = 8 << 20
_BLOCK = 4096


def _gather_run(run: list[FileCopy], image: Image) -> int:
    """Read the small files of ``run`` (consecutive in the image) and write them at once."""
    return _gather([fc.source for fc in run], [fc.pieces[0][1] for fc in run],
                   [fc.size for fc in run], image)


def _copy_batch(batch: list[FileCopy], image: Image) -> int:
    """Copy a batch: small dense files gathered into runs, the rest kernel-side."""
    done = 0
    run: list[FileCopy] = []
    run_end = -1
    for fc in batch:
        # dense (one piece covering the whole file: no hole anywhere, trailing ones included)
        small = (
            fc.size <= _GATHER_MAX_FILE
            and len(fc.pieces) == 1
            and fc.pieces[0][0] == 0
            and fc.pieces[0][2] == fc.size
        )
        if small:
            dst = fc.pieces[0][1]
            if run and (dst != run_end or dst + fc.size - run[0].pieces[0][1] > _GATHER_MAX_RUN):
                done += _gather_run(run, image)
                run = []
            run.append(fc)
            run_end = dst + -(-fc.size // _BLOCK) * _BLOCK
        else:
            if run:
                done += _gather_run(run, image)
                run = []
            done += _copy_one(fc, image)
    if run:
        done += _gather_run(run, image)
    return done


def _dense_batches(plan: Ext4Plan) -> list[tuple[int, int]]:
    """Index ranges of the dense copies: at most _BATCH_FILES files or about _BATCH_BYTES."""
    sizes = plan.copy_size
    n = len(sizes)
    cum = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    a = 0
    while a < n:
        by_bytes = int(np.searchsorted(cum, cum[a] + _BATCH_BYTES, side="left"))
        b = max(a + 1, min(n, a + _BATCH_FILES, by_bytes))
        out.append((a, b))
        a = b
    return out


def _copy_dense(plan: Ext4Plan, a: int, b: int, image: Image) -> int:
    """Copy dense files a..b-1 (consecutive small ones gathered into one write)."""
    srcs = plan.copy_src[a:b]
    dsts = plan.copy_dst[a:b].tolist()
    sizes = plan.copy_size[a:b].tolist()
    done = 0
    i = 0
    m = len(srcs)
    while i < m:
        size = sizes[i]
        if size > _GATHER_MAX_FILE:
            done += _copy_one(FileCopy(0, srcs[i], size, [(0, dsts[i], size)]), image)
            i += 1
            continue
        # a run of small files, each starting where the previous one's blocks end
        start = dsts[i]
        j = i + 1
        end = start + -(-size // _BLOCK) * _BLOCK
        while (
            j < m
            and dsts[j] == end
            and sizes[j] <= _GATHER_MAX_FILE
            and dsts[j] + sizes[j] - start <= _GATHER_MAX_RUN
        ):
            end += -(-sizes[j] // _BLOCK) * _BLOCK
            j += 1
        done += _gather(srcs[i:j], dsts[i:j], sizes[i:j], image)
        i = j
    return done


def _gather(srcs: list[str], dsts: list[int], sizes: list[int], image: Image) -> int:
    """Read small files into one buffer laid out as in the image, and write it at once."""
    start = dsts[0]
    buf = bytearray(dsts[-1] + sizes[-1] - start)
    view = memoryview(buf)
    spare = bytearray(1)  # one byte more than planned tells a file that grew
    for src, dst, size in zip(srcs, dsts, sizes, strict=True):
        fd = open_source(src)
        try:
            off = dst - start
            got = os.readv(fd, [view[off : off + size], spare])
            while got < size:  # short reads: not on local filesystems, but allowed
                more = os.preadv(fd, [view[off + got : off + size], spare], got)
                if not more:
                    break
                got += more
        except OSError as e:
            raise SourceError(f"{src}: cannot read: {e.strerror}") from None
        finally:
            os.close(fd)
        if got != size:
            raise SourceError(
                f"{src}: size changed from {size} to "
                f"{got if got < size else 'more than ' + str(size)} bytes since it was scanned"
            )
    view.release()
    image.write(start, buf)
    return sum(sizes)


def _start_copies(plan: Ext4Plan, image: Image, ex: ThreadPoolExecutor) -> list[Future[int]]:
    """Queue every file's data copy: batches of files in inode order (writes stay mostly
    sequential), dense ones from the plan's columns, the others (holes, several extents)
    from their piece lists."""
    futures = [ex.submit(_copy_dense, plan, a, b, image) for a, b in _dense_batches(plan)]
    batches: list[list[FileCopy]] = []
    cur: list[FileCopy] = []
    cur_bytes = 0
    for fc in plan.copies:
        cur.append(fc)
        cur_bytes += fc.size
        if cur_bytes >= _BATCH_BYTES or len(cur) >= _BATCH_FILES:
            batches.append(cur)
            cur, cur_bytes = [], 0
    if cur:
        batches.append(cur)
    futures += [ex.submit(_copy_batch, b, image) for b in batches]
    return futures


def _wait_copies(
    futures: list[Future[int]], total: int, progress: Callable[[int, int], None] | None
) -> None:
    done = 0
    for f in futures:
        done += f.result()
        if progress is not None:
            progress(done, total)
