"""The CRC-32 of a notebook file, kept up to date by its writer so that a checkpoint does not read the whole file.

Each checkpoint's undo log names the CRC-32 of the file as it was
(:mod:`epyclab.notebooks.undo`), so that a restore is known to be exact. Read
afresh, that costs a read of the whole file per checkpoint: a notebook of
1,000,000 rows (about 300 MB) would read 300 MB every 20,000 rows.
:class:`FileCrc` keeps the CRC-32 of every :attr:`FileCrc.Block` bytes of the
file instead; after a change only the blocks it touched are read again, and
the file's CRC-32 is put together from the blocks' (:func:`crc32_combine`, the
GF(2) arithmetic of zlib's ``crc32_combine``, which Python's :mod:`zlib` does
not offer).

The blocks are trusted only while the file is as the writer left it: its
device, inode, size, modification and change times are compared first, and
anything else reads the whole file again.
"""

from __future__ import annotations

import os
import zlib

__all__ = ["FileCrc", "crc32_combine"]

# CRC-32 (the polynomial zlib uses, bits reversed); x^0 is the top bit in this representation.
_POLY = 0xEDB88320
_ONE = 1 << 31


def _multiply(a: int, b: int) -> int:
    """``a * b`` modulo the CRC-32 polynomial (both polynomials in the reflected representation)."""
    product = 0
    bit = _ONE
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers() -> list[int]:
    """x^(2^k) modulo the polynomial, for k = 0..63."""
    out = [_ONE >> 1]  # x^1
    for _ in range(63):
        out.append(_multiply(out[-1], out[-1]))
    return out


_X2K = _powers()


def _shift(n: int) -> int:
    """x^(8n) modulo the polynomial: what appending ``n`` zero bytes multiplies a CRC's register by."""
    result, k, bits = _ONE, 3, n
    while bits:
        if bits & 1:
            result = _multiply(_X2K[k & 63], result)
        bits >>= 1
        k += 1
    return result


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc1 = zlib.crc32(a)``, ``crc2 = zlib.crc32(b)`` and ``len2 = len(b)``."""
    return _multiply(_shift(len2), crc1) ^ crc2


def _tables(factor: int) -> tuple[list[int], ...]:
    """Multiplying by ``factor`` as four byte tables (it is linear): ~30 times faster than :func:`_multiply`."""
    return tuple([_multiply(factor, b << (8 * k)) for b in range(256)] for k in range(4))


class FileCrc:
    """The CRC-32 of one file that only its holder changes, kept in blocks (see the module's docstring).

    :meth:`crc` gives the CRC-32 of the file's first ``size`` bytes (its whole
    content, as the undo log wants it); :meth:`changed` says which byte ranges a
    change wrote, once it is in the file; :meth:`forget` drops what is kept.
    """

    #: Bytes per block: a change reads again this much around each place it wrote.
    Block = 1 << 14

    def __init__(self) -> None:
        self._blocks: list[int] = []
        #: Blocks changed since they were read: read when the CRC is next wanted (often never: at close).
        self._stale: set[int] = set()
        self._size = 0
        #: (device, inode, size, mtime, ctime) of the file the blocks describe; None: nothing kept.
        self._signature: tuple[int, ...] | None = None
        self._shift_block = _tables(_shift(self.Block))

    @staticmethod
    def _stat(fd: int) -> tuple[int, ...]:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def forget(self) -> None:
        """Drop what is kept: the next :meth:`crc` reads the whole file."""
        self._signature = None
        self._blocks = []
        self._stale = set()
        self._size = 0

    def crc(self, fd: int) -> int:
        """The CRC-32 of the whole file open as ``fd`` (read whole unless kept for it as it is now)."""
        signature = self._stat(fd)
        if signature != self._signature:
            self._size = signature[2]
            self._blocks = [0] * self._count()
            self._stale = set(range(self._count()))
            self._signature = signature
        try:
            stale = sorted(self._stale)
            while stale:
                # Consecutive blocks (up to 64 of them) in one read.
                n = 1
                while n < min(len(stale), 64) and stale[n] == stale[0] + n:
                    n += 1
                self._blocks[stale[0] : stale[0] + n] = self._read_blocks(fd, stale[0], n)
                del stale[:n]
        except BaseException:
            self.forget()
            raise
        self._stale = set()
        return self._combined()

    def changed(self, fd: int, ranges: list[tuple[int, int]]) -> None:
        """Note that the file open as ``fd`` changed in ``ranges`` (byte ranges) and has its size now.

        Call after the change was written, only if the blocks were kept for the file as it was
        before it (:meth:`crc` was the last call); anything else forgets them.
        """
        if self._signature is None:
            return
        try:
            signature = self._stat(fd)
            old_count = self._count()
            self._size = signature[2]
            count = self._count()
            touched = {i for a, b in ranges if b > a for i in range(a // self.Block, (b - 1) // self.Block + 1)}
            # The last block (maybe partial) of the shorter of the two sizes, and every block past it, anew.
            touched.update(range(max(0, min(old_count, count) - 1), count))
            del self._blocks[count:]
            self._blocks.extend([0] * (count - len(self._blocks)))
            self._stale = {t for t in self._stale | touched if t < count}
            self._signature = signature
        except OSError:
            self.forget()

    def _count(self) -> int:
        return -(-self._size // self.Block)

    def _read_blocks(self, fd: int, first: int, n: int) -> list[int]:
        """The CRC-32s of the ``n`` blocks from block ``first`` on, read from the file."""
        start = first * self.Block
        want = min(n * self.Block, self._size - start)
        data = memoryview(os.pread(fd, want, start))
        if len(data) != want:
            raise OSError(f"short read of {want} bytes at {start}")
        return [zlib.crc32(data[k : k + self.Block]) for k in range(0, want, self.Block)]

    def _combined(self) -> int:
        t0, t1, t2, t3 = self._shift_block
        full = self._size // self.Block
        crc = 0
        for block in self._blocks[:full]:
            crc = t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24] ^ block
        if full < len(self._blocks):
            crc = crc32_combine(crc, self._blocks[full], self._size - full * self.Block)
        return crc
