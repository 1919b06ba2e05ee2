"""Checking an HDF5 file's global heap collections before HDF5 reads a variable-length value from them.

HDF5 keeps every variable-length value (text, an array cell, a list) as an object in a
*global heap collection*: a block of the file that starts with the signature ``GCOL``,
a version (1), three reserved bytes and the collection's size in bytes (a "length", 8
bytes in the files h5py writes), followed by its objects. Each object is a header (its
index, 2 bytes; a reference count, 2; reserved, 4; its size in bytes, a length) and its
data, padded to a multiple of 8 bytes; the free space of the collection is the object of
index 0, which comes last and whose size counts its header. The objects tile the
collection: each begins where the one before it ends.

HDF5 (2.0, as h5py 3.16 bundles it) walks a collection's objects by those sizes when it
first reads a value from it. A free-space object whose size is 0 makes it step by 0 bytes
for ever: the process hangs, with no error and no way to interrupt it. :func:`check_global_heaps`
walks every collection of a file the same way, before HDF5 does, and refuses one that
breaks the rules HDF5 relies on: that hang and the family around it, an object whose size
runs past the collection's end, or a free-space object that does not end the collection
exactly (HDF5 steps on by its size into the zeros of the free space, and loops there).

Collections are not aligned and nothing in the file lists them, so they are found by
their signature. Only a header HDF5 would accept (version 1, a size of at least 4096
bytes that ends within the file) is taken for a collection: HDF5 itself refuses any other
with an error, never a hang. The bytes ``GCOL`` may also occur inside a value: a candidate
inside a sound collection is skipped, and one whose objects break the rules is refused
only if the file holds its address followed by an object's index (as a reference to a value
in it does) and it is not within a dataset's data (numbers, which may look like anything);
otherwise it is bytes HDF5 never reads as a collection (a collection it freed, whose bytes
stay in the file until the space is used again, or a value that looks like a header).
A sound lookalike is not trusted to cover what follows it: four numbers of a column can
spell a sound collection of any size, and a damaged collection inside it would go unchecked.
So a candidate that breaks the rules inside a sound one is skipped only if the sound one
is a collection HDF5 reads (the same test: referenced, and not within a dataset's data).
"""

from __future__ import annotations

import mmap
import struct

import h5py
import numpy as np

from epyclab.errors import NotebookFormatError
from epyclab.notebooks.untrusted import READ_ERRORS

__all__ = ["check_global_heaps"]

#: The signature of an HDF5 file's superblock, found at byte 0 or a power of two from 512 on.
_SUPERBLOCK = b"\x89HDF\r\n\x1a\n"
_SIGNATURE = b"GCOL"
_VERSION = 1
#: HDF5 makes no collection smaller (H5HG_MINSIZE), and refuses one that says it is.
_MIN_SIZE = 4096
_ALIGN = 8
_LENGTH_FORMATS = {2: "H", 4: "I", 8: "Q"}

#: A file's bytes: mapped, or read where the file system cannot map files.
Bytes = mmap.mmap | bytes


def check_global_heaps(path: str) -> None:
    """Refuse the HDF5 file at ``path`` if a global heap collection in it is damaged.

    To be called before anything reads a variable-length value of the file with h5py.
    A file that cannot be opened, is not HDF5, or whose superblock cannot be read is left
    to the reader that follows (it says so clearly). Costs one pass over the file's bytes (``bytes.find``
    speed) and a few steps per value kept in a collection.

    Raises:
        NotebookFormatError: naming ``path``, the byte offset of the damaged collection
            and what is wrong with it, and saying to restore the file from a copy.
    """
    try:
        f = open(path, "rb")
    except OSError:
        return  # (unreadable, or gone) the reader that follows says so, as for any notebook
    with f:
        try:
            data: Bytes = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # an empty file, or a file system that cannot map files
            data = f.read()
        try:
            sizes = _superblock_sizes(data)
            if sizes is not None:
                _check_collections(path, data, *sizes)
        finally:
            if isinstance(data, mmap.mmap):
                try:
                    data.close()
                except BufferError:
                    pass  # a numpy view of it is still alive (in a traceback): unmapped when that goes


def _superblock_sizes(data: Bytes) -> tuple[int, int, int] | None:
    """The superblock's byte offset (the base of every address), the size of an address and of a length, if any."""
    at = 0
    while at + 16 <= len(data):
        if data[at:at + 8] == _SUPERBLOCK:
            version = data[at + 8]
            if version in (0, 1):
                address_size, length_size = data[at + 13], data[at + 14]
            elif version in (2, 3):
                address_size, length_size = data[at + 9], data[at + 10]
            else:
                return None
            if address_size not in _LENGTH_FORMATS or length_size not in _LENGTH_FORMATS:
                return None
            return at, address_size, length_size
        at = 512 if at == 0 else at * 2
    return None


def _check_collections(path: str, data: Bytes, base: int, address_size: int, length_size: int) -> None:
    header = struct.Struct(f"<4sB3x{_LENGTH_FORMATS[length_size]}")
    object_header = struct.Struct(f"<HH4x{_LENGTH_FORMATS[length_size]}")
    extents = _DatasetExtents(path, base)
    # The last sound collection, (start, end, whether HDF5 reads it: None until asked). A candidate inside
    # it is a value's bytes if it is a real collection; inside a lookalike, it is checked as any other.
    sound: tuple[int, int, bool | None] = (0, 0, True)
    at = data.find(_SIGNATURE)
    while at >= 0:
        if at + header.size <= len(data):
            _, version, size = header.unpack_from(data, at)
            if version == _VERSION and _MIN_SIZE <= size <= len(data) - at:
                first = at + _aligned(header.size)
                if length_size == 8:
                    problem = _objects_problem_8(data, at, first, at + size)
                else:
                    problem = _objects_problem(data, first, at + size, object_header)
                start, end, real = sound
                inside = at < end
                if inside and problem is not None and real is None:
                    # Asked once per sound candidate, and only when something inside it would be refused.
                    real = _is_collection(data, start, base, address_size, extents)
                    sound = (start, end, real)
                if inside and real:
                    pass  # a value's bytes, in a collection HDF5 reads: it reads them as a value
                elif problem is None:
                    if not inside or real is False:  # (inside a lookalike, a sound one is taken as any other)
                        sound = (at, at + size, None)
                elif _is_collection(data, at, base, address_size, extents):
                    raise NotebookFormatError(
                        f"{path} is damaged: the global heap collection at byte {at} (the block where "
                        f"HDF5 keeps variable-length values: text, lists, array cells) {problem}; HDF5, and "
                        f"so plain h5py, would hang or fail reading a value from it. Restore the file from "
                        f"a copy (epyclab backup makes a consistent one)"
                    )
        start, end, real = sound
        # Within a real sound collection nothing is checked: jump past it (the common case, and fast).
        at = data.find(_SIGNATURE, max(at + 1, end) if real else at + 1)


def _is_collection(data: Bytes, at: int, base: int, address_size: int, extents: _DatasetExtents) -> bool:
    """Whether a candidate at byte ``at`` is a collection HDF5 may read: referenced, and not among a dataset's data."""
    return _referenced(data, at - base, address_size) and not extents.holds(at)


def _objects_problem(data: Bytes, p: int, end: int, object_header: struct.Struct) -> str | None:
    """What is wrong with the objects of a collection, from byte ``p`` to ``end``, or None (HDF5's walk)."""
    hdr = object_header.size
    while end - p >= hdr:  # (a last bit too small for an object is free space without a header)
        index, _, length = object_header.unpack_from(data, p)
        if index == 0:
            # The free space: its size counts its header, and it ends the collection. HDF5 steps on
            # by this size: 0, or a step into the free space's zeros, makes it loop for ever.
            if length != end - p or length % _ALIGN:
                return (f"has a free-space object at byte {p} that says it is {length} bytes long, "
                        f"but the collection's last {end - p} bytes are free")
            return None
        need = hdr + _aligned(length)
        if need > end - p:
            return (f"has object {index} at byte {p} that says it holds {length} bytes, "
                    f"past the collection's end at byte {end}")
        p += need
    return None


#: How many objects a run of objects of one size is first probed for (then twice as many, ...).
_PROBE = 16
#: After a probe that found no run, this many objects (at most) are walked one by one before the next.
_BACKOFF = 64


def _objects_problem_8(data: Bytes, at: int, p: int, end: int) -> str | None:
    """:func:`_objects_problem` for 8-byte lengths (all h5py files), as fast as numpy lets it be.

    A notebook keeps hundreds of thousands of values in collections, and a column's values
    were written together, so most objects follow one of the same size (a column of empty
    texts, of texts of a few characters): such runs are checked a block at a time. Walking
    them one by one in Python would cost about 0.1 s to open a 100,000-row notebook.
    """
    # The collection as 8-byte words from its start (a collection need not be aligned in the file).
    words = np.frombuffer(data, dtype="<u8", count=(end - at) // 8, offset=at)
    size = end - at
    q = p - at  # relative to the collection, a multiple of 8
    backoff = skip = 0
    while size - q >= 16:
        w = q >> 3
        index, length = int(words[w]) & 0xFFFF, int(words[w + 1])
        if index == 0:
            if length != size - q or length % _ALIGN:
                return (f"has a free-space object at byte {at + q} that says it is {length} bytes long, "
                        f"but the collection's last {size - q} bytes are free")
            return None
        need = 16 + ((length + 7) & -8)  # (aligned to 8, inline: this line runs once per value kept)
        if need > size - q:
            return (f"has object {index} at byte {at + q} that says it holds {length} bytes, "
                    f"past the collection's end at byte {end}")
        q += need
        if skip:
            skip -= 1
            continue
        run = _run(words, q >> 3, need, length, size)
        q += run * need
        backoff, skip = (0, 0) if run >= _PROBE else (min(2 * backoff + 1, _BACKOFF),) * 2
    return None


def _run(words: np.ndarray, w: int, need: int, length: int, size: int) -> int:
    """How many objects from word ``w`` on are whole objects of ``need`` bytes (not free space), one after another."""
    step = need >> 3
    low, high = (0, 0) if need == 16 else (_aligned(length) - 7, _aligned(length))
    room = (size - 8 * w) // need  # objects of this size that fit before the collection's end
    run, probe = 0, _PROBE
    while run < room:
        n = min(probe, room - run)
        start = w + run * step
        heads = words[start:start + n * step:step]
        lengths = words[start + 1:start + 1 + n * step:step]
        ok = ((heads & 0xFFFF) != 0) & (lengths >= low) & (lengths <= high)
        if ok.all():
            run += n
            probe *= 2
        else:
            return run + int(ok.argmin())
    return run


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _referenced(data: Bytes, address: int, address_size: int) -> bool:
    """Whether the file holds what reads as a reference to a value in a collection at ``address``.

    A reference is the collection's address followed by the value's index (4 bytes, 1 to 65535).
    """
    if not 0 <= address < 1 << (8 * address_size):
        return False
    pattern = address.to_bytes(address_size, "little")
    at = data.find(pattern)
    while at >= 0:
        index = int.from_bytes(data[at + address_size:at + address_size + 4], "little")
        if 0 < index < 1 << 16:
            return True
        at = data.find(pattern, at + 1)
    return False


class _DatasetExtents:
    """Where the datasets of a file keep their data (listed once, when first asked: only before refusing).

    Lists the datasets' storage with h5py, which reads no variable-length value to do so. If the file
    cannot be listed (it is damaged elsewhere too), no byte is taken to be a dataset's data: a collection
    that breaks the rules is then refused.
    """

    def __init__(self, path: str, base: int) -> None:
        self._path = path
        self._base = base
        self._extents: list[tuple[int, int]] | None = None

    def holds(self, at: int) -> bool:
        """Whether byte ``at`` of the file lies within the data of one of its datasets."""
        if self._extents is None:
            self._extents = self._listed()
        return any(start <= at < start + size for start, size in self._extents)

    def _listed(self) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                found.extend((self._base + start, size) for start, size in _storage(obj.id))

        try:
            # Not locking: the caller holds the file's lock (shared, or exclusive while it restores the file).
            with h5py.File(self._path, "r", locking=False) as f:
                f.visititems(visit)
        except READ_ERRORS:
            return []
        return found


def _storage(dataset: h5py.h5d.DatasetID) -> list[tuple[int, int]]:
    """Where a dataset keeps its data in the file: (address, bytes) of its block or of each of its chunks."""
    layout = dataset.get_create_plist().get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = dataset.get_offset()
        return [] if offset is None else [(offset, dataset.get_storage_size())]
    if layout == h5py.h5d.CHUNKED:
        chunks = (dataset.get_chunk_info(i) for i in range(dataset.get_num_chunks()))
        return [(c.byte_offset, c.size) for c in chunks if c.byte_offset is not None]
    return []  # compact: the data is in the dataset's header
