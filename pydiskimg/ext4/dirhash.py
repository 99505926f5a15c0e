"""ext4 directory-index (htree) name hashes: legacy, half_md4 and tea, signed or unsigned.

Follows the kernel's ``fs/ext4/hash.c`` (and e2fsprogs ``lib/ext2fs/dirhash.c``, which computes
the same values): names are packed into 32-bit words by ``str2hashbuf`` where every byte is a
*signed* char unless the filesystem has the unsigned-hash flag; an all-zero seed means the MD4
constants; the major hash has bit 0 cleared, and the kernel maps the EOF marker 0xFFFFFFFE to
0xFFFFFFFC.

:func:`dx_hash` hashes one name in pure Python; :func:`dx_hash_many` hashes many names at once
with numpy (the path :mod:`.dirent` uses), and a test checks both against debugfs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UsageError

LEGACY = 0
HALF_MD4 = 1
TEA = 2

_M = 0xFFFFFFFF
_DEFAULT_SEED = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_K2 = 0o13240474631
_K3 = 0o15666365641
_DELTA = 0x9E3779B9
#: The kernel's EXT4_HTREE_EOF_32BIT << 1 and its replacement.
_EOF = 0xFFFFFFFE
_EOF_REPL = 0xFFFFFFFC


def _seed(seed_words: Sequence[int]) -> list[int]:
    if len(seed_words) != 4:
        raise UsageError(f"htree hash seed: expected 4 words, got {len(seed_words)}")
    if any(w & _M for w in seed_words):
        return [w & _M for w in seed_words]
    return list(_DEFAULT_SEED)


def _str2hashbuf(msg: bytes, num: int, unsigned: bool) -> list[int]:
    """Pack ``msg`` (the rest of the name from the current chunk on) into ``num`` words."""
    ln = len(msg)
    pad = (ln | (ln << 8)) & 0xFFFF
    pad |= pad << 16
    pad &= _M
    val = pad
    out: list[int] = []
    n = min(ln, num * 4)
    for i in range(n):
        c = msg[i]
        if not unsigned and c >= 0x80:
            c -= 0x100
        val = (c + (val << 8)) & _M
        if i % 4 == 3:
            out.append(val)
            val = pad
    if len(out) < num:
        out.append(val)
    while len(out) < num:
        out.append(pad)
    return out


def _rotl(x: int, s: int) -> int:
    return ((x << s) | (x >> (32 - s))) & _M


def _half_md4(buf: list[int], inp: list[int]) -> None:
    a, b, c, d = buf

    def f(x: int, y: int, z: int) -> int:
        return z ^ (x & (y ^ z))

    def g(x: int, y: int, z: int) -> int:
        return ((x & y) + ((x ^ y) & z)) & _M

    def h(x: int, y: int, z: int) -> int:
        return x ^ y ^ z

    # round 1
    a = _rotl((a + f(b, c, d) + inp[0]) & _M, 3)
    d = _rotl((d + f(a, b, c) + inp[1]) & _M, 7)
    c = _rotl((c + f(d, a, b) + inp[2]) & _M, 11)
    b = _rotl((b + f(c, d, a) + inp[3]) & _M, 19)
    a = _rotl((a + f(b, c, d) + inp[4]) & _M, 3)
    d = _rotl((d + f(a, b, c) + inp[5]) & _M, 7)
    c = _rotl((c + f(d, a, b) + inp[6]) & _M, 11)
    b = _rotl((b + f(c, d, a) + inp[7]) & _M, 19)
    # round 2
    a = _rotl((a + g(b, c, d) + inp[1] + _K2) & _M, 3)
    d = _rotl((d + g(a, b, c) + inp[3] + _K2) & _M, 5)
    c = _rotl((c + g(d, a, b) + inp[5] + _K2) & _M, 9)
    b = _rotl((b + g(c, d, a) + inp[7] + _K2) & _M, 13)
    a = _rotl((a + g(b, c, d) + inp[0] + _K2) & _M, 3)
    d = _rotl((d + g(a, b, c) + inp[2] + _K2) & _M, 5)
    c = _rotl((c + g(d, a, b) + inp[4] + _K2) & _M, 9)
    b = _rotl((b + g(c, d, a) + inp[6] + _K2) & _M, 13)
    # round 3
    a = _rotl((a + h(b, c, d) + inp[3] + _K3) & _M, 3)
    d = _rotl((d + h(a, b, c) + inp[7] + _K3) & _M, 9)
    c = _rotl((c + h(d, a, b) + inp[2] + _K3) & _M, 11)
    b = _rotl((b + h(c, d, a) + inp[6] + _K3) & _M, 15)
    a = _rotl((a + h(b, c, d) + inp[1] + _K3) & _M, 3)
    d = _rotl((d + h(a, b, c) + inp[5] + _K3) & _M, 9)
    c = _rotl((c + h(d, a, b) + inp[0] + _K3) & _M, 11)
    b = _rotl((b + h(c, d, a) + inp[4] + _K3) & _M, 15)
    buf[0] = (buf[0] + a) & _M
    buf[1] = (buf[1] + b) & _M
    buf[2] = (buf[2] + c) & _M
    buf[3] = (buf[3] + d) & _M


def _tea(buf: list[int], inp: list[int]) -> None:
    s = 0
    b0, b1 = buf[0], buf[1]
    a, b, c, d = inp
    for _ in range(16):
        s = (s + _DELTA) & _M
        b0 = (b0 + ((((b1 << 4) + a) & _M) ^ ((b1 + s) & _M) ^ ((b1 >> 5) + b))) & _M
        b1 = (b1 + ((((b0 << 4) + c) & _M) ^ ((b0 + s) & _M) ^ ((b0 >> 5) + d))) & _M
    buf[0] = (buf[0] + b0) & _M
    buf[1] = (buf[1] + b1) & _M


def _legacy(name: bytes, unsigned: bool) -> int:
    h0, h1 = 0x12A3FE2D, 0x37ABE8F9
    for c in name:
        if not unsigned and c >= 0x80:
            c -= 0x100
        h = (h1 + (h0 ^ ((c * 7152373) & _M))) & _M
        if h & 0x80000000:
            h = (h - 0x7FFFFFFF) & _M
        h1, h0 = h0, h
    return (h0 << 1) & _M


def dx_hash(
    name: bytes, version: int, seed_words: Sequence[int], unsigned: bool
) -> tuple[int, int]:
    """(major, minor) hash of one name as the kernel computes it for htree placement.

    ``version`` is the dx_root ``hash_version`` (0 legacy, 1 half_md4, 2 tea);
    ``unsigned`` is the superblock's EXT2_FLAGS_UNSIGNED_HASH; ``seed_words`` the four
    little-endian u32s of ``s_hash_seed``.
    """
    if version == LEGACY:
        major, minor = _legacy(name, unsigned), 0
    elif version == HALF_MD4:
        buf = _seed(seed_words)
        p = 0
        while len(name) - p > 0:
            _half_md4(buf, _str2hashbuf(name[p:], 8, unsigned))
            p += 32
        major, minor = buf[1], buf[2]
    elif version == TEA:
        buf = _seed(seed_words)
        p = 0
        while len(name) - p > 0:
            _tea(buf, _str2hashbuf(name[p:], 4, unsigned))
            p += 16
        major, minor = buf[0], buf[1]
    else:
        raise UsageError(f"htree hash_version {version} is not supported (0, 1 or 2)")
    major &= ~1 & _M
    if major == _EOF:
        major = _EOF_REPL
    return major, minor


# --- numpy version ----------------------------------------------------------------------


def _pack_words(sub: np.ndarray, lens: np.ndarray, nwords: int, unsigned: bool) -> np.ndarray:
    """Vectorised ``str2hashbuf`` for one chunk of many names.

    ``sub`` holds the chunk's bytes, uint8 (n, 4*nwords), zero past each name's end; ``lens``
    the remaining lengths (> 0) from the chunk start.  Returns uint32 (n, nwords).
    """
    n = len(lens)
    c = sub.view(np.int8) if not unsigned else sub
    c = c.astype(np.int64).reshape(n, nwords, 4)
    s4 = (c[:, :, 0] << 24) + (c[:, :, 1] << 16) + (c[:, :, 2] << 8) + c[:, :, 3]
    m = np.clip(lens[:, None] - 4 * np.arange(nwords, dtype=np.int64)[None, :], 0, 4)
    ln8 = lens & 0xFF
    pad = ln8 | (ln8 << 8)
    pad = pad | (pad << 16)
    # m full bytes after the pad word shifted in: (pad << 8m) + bytes, where the bytes are
    # s4 >> 8(4-m) exactly (the low bytes past the name are zero)
    words = (pad[:, None] << (8 * m)) + (s4 >> (8 * (4 - m)))
    return (words & _M).astype(np.uint32)


def _rotl_np(x: np.ndarray, s: int) -> np.ndarray:
    return (x << np.uint32(s)) | (x >> np.uint32(32 - s))


def _half_md4_np(buf: list[np.ndarray], w: np.ndarray) -> None:
    a, b, c, d = buf
    inp = [w[:, i] for i in range(8)]
    k2 = np.uint32(_K2)
    k3 = np.uint32(_K3)

    def f(x, y, z):  # type: ignore[no-untyped-def]
        return z ^ (x & (y ^ z))

    def g(x, y, z):  # type: ignore[no-untyped-def]
        return (x & y) + ((x ^ y) & z)

    def h(x, y, z):  # type: ignore[no-untyped-def]
        return x ^ y ^ z

    for i, s in zip((0, 1, 2, 3, 4, 5, 6, 7), (3, 7, 11, 19) * 2, strict=True):
        if i % 4 == 0:
            a = _rotl_np(a + f(b, c, d) + inp[i], s)
        elif i % 4 == 1:
            d = _rotl_np(d + f(a, b, c) + inp[i], s)
        elif i % 4 == 2:
            c = _rotl_np(c + f(d, a, b) + inp[i], s)
        else:
            b = _rotl_np(b + f(c, d, a) + inp[i], s)
    for j, (i, s) in enumerate(zip((1, 3, 5, 7, 0, 2, 4, 6), (3, 5, 9, 13) * 2, strict=True)):
        if j % 4 == 0:
            a = _rotl_np(a + g(b, c, d) + inp[i] + k2, s)
        elif j % 4 == 1:
            d = _rotl_np(d + g(a, b, c) + inp[i] + k2, s)
        elif j % 4 == 2:
            c = _rotl_np(c + g(d, a, b) + inp[i] + k2, s)
        else:
            b = _rotl_np(b + g(c, d, a) + inp[i] + k2, s)
    for j, (i, s) in enumerate(zip((3, 7, 2, 6, 1, 5, 0, 4), (3, 9, 11, 15) * 2, strict=True)):
        if j % 4 == 0:
            a = _rotl_np(a + h(b, c, d) + inp[i] + k3, s)
        elif j % 4 == 1:
            d = _rotl_np(d + h(a, b, c) + inp[i] + k3, s)
        elif j % 4 == 2:
            c = _rotl_np(c + h(d, a, b) + inp[i] + k3, s)
        else:
            b = _rotl_np(b + h(c, d, a) + inp[i] + k3, s)
    buf[0] = buf[0] + a
    buf[1] = buf[1] + b
    buf[2] = buf[2] + c
    buf[3] = buf[3] + d


def _tea_np(buf: list[np.ndarray], w: np.ndarray) -> None:
    b0, b1 = buf[0].copy(), buf[1].copy()
    a, b, c, d = (w[:, i] for i in range(4))
    s = np.uint32(0)
    four = np.uint32(4)
    five = np.uint32(5)
    for _ in range(16):
        s = np.uint32((int(s) + _DELTA) & _M)
        b0 = b0 + (((b1 << four) + a) ^ (b1 + s) ^ ((b1 >> five) + b))
        b1 = b1 + (((b0 << four) + c) ^ (b0 + s) ^ ((b0 >> five) + d))
    buf[0] = buf[0] + b0
    buf[1] = buf[1] + b1


def dx_hash_many(
    names: Sequence[bytes], version: int, seed_words: Sequence[int], unsigned: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(major, minor) hashes of many names at once, as ``uint32`` arrays; same values as
    :func:`dx_hash` name by name."""
    n = len(names)
    if n == 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
    if version == LEGACY:
        hs = [_legacy(nm, unsigned) for nm in names]
        major = np.array(hs, dtype=np.uint32)
        minor = np.zeros(n, np.uint32)
    elif version in (HALF_MD4, TEA):
        seed = _seed(seed_words)
        lens = np.fromiter(map(len, names), dtype=np.int64, count=n)
        chunk, nwords, fn = (32, 8, _half_md4_np) if version == HALF_MD4 else (16, 4, _tea_np)
        buf = [np.full(n, s, dtype=np.uint32) for s in seed]
        with np.errstate(over="ignore"):
            k = 0
            while True:
                rem = lens - k * chunk
                live = rem > 0
                nlive = int(np.count_nonzero(live))
                if nlive == 0:
                    break
                a, b = k * chunk, (k + 1) * chunk
                if nlive == n:
                    part = [x[a:b].ljust(chunk, b"\0") for x in names]
                    sub = np.frombuffer(b"".join(part), dtype=np.uint8).reshape(n, chunk)
                    fn(buf, _pack_words(sub, rem, nwords, unsigned))
                else:
                    sel = np.nonzero(live)[0]
                    part = [names[i][a:b].ljust(chunk, b"\0") for i in sel.tolist()]
                    sub = np.frombuffer(b"".join(part), dtype=np.uint8).reshape(nlive, chunk)
                    bsub = [x[sel] for x in buf]
                    fn(bsub, _pack_words(sub, rem[sel], nwords, unsigned))
                    for x, y in zip(buf, bsub, strict=True):
                        x[sel] = y
                k += 1
        if version == HALF_MD4:
            major, minor = buf[1], buf[2]
        else:
            major, minor = buf[0], buf[1]
    else:
        raise UsageError(f"htree hash_version {version} is not supported (0, 1 or 2)")
    major = major & np.uint32(0xFFFFFFFE)
    major[major == np.uint32(_EOF)] = np.uint32(_EOF_REPL)
    return major, minor.astype(np.uint32)
