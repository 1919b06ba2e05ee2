"""An append-only file of commit records beside a notebook: what makes a commit cheap and safe.

A commit appends one record (the rows, pending-result changes and state added
since the previous commit) with a single ``write``, then flushes it to the
disk (``fdatasync``): when :meth:`Journal.append` returns, the record survives
a power cut. The notebook file itself is brought up to date less often, at a
*checkpoint*; until then the records are replayed by whoever opens the notebook.

Format version 2 (docs/hdf5-layout.md)::

    header: b"EPYCLABJ" | version 2 (4 bytes) | file id (32 ascii hex) | CRC-32 of the 44 bytes before
    record: sync marker (8 bytes) | payload length (8) | sequence number (8) | file id (16 bytes)
            | CRC-32 of the payload (4) | CRC-32 of the 44 header bytes before it (4) | payload

Damage costs only the records it touches: a reader that meets bytes which are
not an intact record scans forward to the next sync marker that starts one, so
every intact record is found wherever the damage lies (the header too: each
record names its file). Intact records are returned in sequence order, each
sequence number once (a record copied twice or swapped is harmless). An
incomplete last record (a writer killed in the middle of its ``write``: a
commit that never returned) is a *torn tail*; other bytes that are not an
intact record are *damaged*, and are set aside in a file of their own before
the journal is written again (:class:`Journal` does it when it opens one).

Version 1 journals (epyclab before this format: ``b"REC1" | length | CRC-32 |
payload``, no sequence numbers) are still read, with the same resynchronising
scan, and rewritten in version 2 when opened for writing.

Payloads are pickles, read back with an unpickler that only builds the value
types a notebook stores, so a journal cannot make its reader run code.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import uuid
import weakref
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from epyclab.errors import NotebookFormatError
from epyclab.log import logger
from epyclab.notebooks import fileio
from epyclab.notebooks.kinds import journal_globals
from epyclab.notebooks.sidefiles import open_side, read_side

__all__ = [
    "Journal", "JournalScan", "has_records", "read_records", "read_file_id", "read_frames", "decode_frame",
    "frame_seq", "encode_frame", "scan_journal", "write_aside", "describe_damage",
]

_MAGIC = b"EPYCLABJ"
_VERSION = 2
_HEADER = struct.Struct("<8sI32sI")  # magic, version, file id (ascii hex uuid), crc32 of the rest
_FRAME = struct.Struct("<8sQQ16sII")  # sync, payload length, seq, file id, payload crc32, header crc32
_SYNC = b"\xf1EPYCJ\x02\xa7"

# Version 1 (read only).
_HEADER1 = struct.Struct("<8sI32s")
_FRAME1 = struct.Struct("<4sQI")  # tag, payload length, crc32
_TAG1 = b"REC1"

# The globals a journal's pickles may name: those the table of kinds lists for
# the values it stores, and the containers of a record.
# Pickles of protocol 2 and older name the set types; append() writes protocol 5, which builds sets by opcodes.
_SET_TYPES = {("builtins", "set"), ("builtins", "frozenset")}
_ALLOWED = journal_globals() | _SET_TYPES


class _ValuesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a notebook journal may not refer to {module}.{name}")


def _loads(payload: bytes) -> Any:
    return _ValuesUnpickler(io.BytesIO(payload)).load()


def _header(file_id: str) -> bytes:
    head = struct.pack("<8sI32s", _MAGIC, _VERSION, file_id.encode("ascii"))
    return head + struct.pack("<I", zlib.crc32(head))


def _frame(payload: bytes, seq: int, file_id: str) -> bytes:
    head = struct.pack("<8sQQ16sI", _SYNC, len(payload), seq, bytes.fromhex(file_id), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


@dataclass
class _Frame:
    seq: int
    start: int  # of the frame (its header)
    end: int
    payload_start: int
    file_id: str | None  # None in version 1 frames


@dataclass
class JournalScan:
    """What a journal's bytes hold: its intact records, and the byte ranges that are not intact records.

    ``frames`` are raw frames (header included) in sequence order, each sequence
    number once; ``damaged`` are ``(start, end)`` byte ranges that are not intact
    records (a damaged header too); ``torn`` is the incomplete last record, if any.
    """

    version: int
    file_id: str | None
    frames: list[bytes] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    damaged: list[tuple[int, int]] = field(default_factory=list)
    torn: tuple[int, int] | None = None
    duplicates: int = 0
    in_order: bool = True
    size: int = 0
    #: Where the bytes end, without the zeros after them (space a writer made ready for records).
    content_end: int = 0
    #: Where the last damaged range's first non-zero byte is, if that range begins with zeros where the
    #: next record would have begun (stray bytes in the space made ready for records: no record, no commit).
    stray_from: int | None = None

    def clean(self) -> bool:
        """True if the journal needs no rewriting: current version, no damage, no repeats, in order."""
        return self.version == _VERSION and not self.damaged and not self.duplicates and self.in_order

    def missing(self, base_seq: int | None = None) -> list[int]:
        """Sequence numbers up to the last intact record's that no intact record has.

        From ``base_seq + 1`` (the first commit the notebook file lacks) if given, else
        from the first intact record's number.
        """
        have = set(self.seqs)
        first = base_seq + 1 if base_seq is not None else min(have, default=0)
        return [s for s in range(first, max(have, default=0)) if s not in have]


def scan_journal(data: bytes) -> JournalScan:
    """Find every intact record of a journal's bytes, and what is not one.

    Raises:
        NotebookFormatError: the bytes are not a journal at all (no journal header and no intact record;
            bytes that are all zeros are a journal that holds nothing).
    """
    head_ok, version, file_id = _read_header(data)
    if version == 1:
        frames, damaged, torn = _scan(data, _HEADER1.size, _parse1)
    else:
        start = _HEADER.size if head_ok else 0
        frames, damaged, torn = _scan(data, start, _parse2)
        if not head_ok:
            # The header's own bytes are damaged; each record says which file it belongs to.
            ids = [f.file_id for f in frames]
            file_id = max(set(ids), key=ids.count) if ids else None
            if file_id is None and not any(data):
                # Only zeros: a journal emptied (or made) and its header written, then a power cut before
                # they were flushed, where the file's size reached the disk and its bytes did not. Zeros
                # hold no record, so nothing is lost: it is a journal of no file yet, as an empty one is.
                damaged, torn = [], (0, len(data))
            else:
                if file_id is None and sum(a != b for a, b in zip(data[:8].ljust(8, b"\0"), _MAGIC)) > 2:
                    # Not one intact record, and not a journal header with a damaged byte or two.
                    raise NotebookFormatError("is not an epyclab journal")
                if not damaged or damaged[0][0] != 0:
                    damaged.insert(0, (0, min(_HEADER.size, len(data))))
                if len(data) < _HEADER.size:
                    damaged, torn = [], (0, len(data))  # a header torn while it was written: nothing in it
        # A record of another file (copied in) is not this journal's.
        for f in [f for f in frames if f.file_id != file_id]:
            frames.remove(f)
            damaged.append((f.start, f.end))
    scan = JournalScan(version or _VERSION, file_id, size=len(data), torn=torn,
                       content_end=len(data.rstrip(b"\0")))
    by_seq: dict[int, _Frame] = {}
    last = -1
    for f in frames:
        if f.seq in by_seq:
            scan.duplicates += 1
            continue
        scan.in_order = scan.in_order and f.seq > last
        last = max(last, f.seq)
        by_seq[f.seq] = f
    for seq in sorted(by_seq):
        f = by_seq[seq]
        scan.frames.append(data[f.start : f.end])
        scan.seqs.append(seq)
    scan.damaged = _merge(sorted(damaged))
    if scan.damaged and scan.damaged[-1][1] == len(data):
        a = scan.damaged[-1][0]
        header = _FRAME1.size if version == 1 else _FRAME.size
        # A record is written whole at the end of the last one; a header's worth of zeros there means
        # none was (a flipped byte cannot zero a header), so the non-zero bytes after are no commit.
        if a >= _HEADER.size and a + header <= len(data) and not any(data[a : a + header]):
            rest = data[a:]
            scan.stray_from = a + len(rest) - len(rest.lstrip(b"\0"))
    return scan


def _read_header(data: bytes) -> tuple[bool, int | None, str | None]:
    """(header intact, version, file id) of a journal's first bytes."""
    if len(data) >= _HEADER1.size and data.startswith(_MAGIC):
        _, version, fid = _HEADER1.unpack_from(data, 0)
        if version == 1:
            return True, 1, fid.decode("ascii", "replace")
    if len(data) >= _HEADER.size:
        magic, version, fid, crc = _HEADER.unpack_from(data, 0)
        if magic == _MAGIC and crc == zlib.crc32(data[: _HEADER.size - 4]):
            if version != _VERSION:
                raise NotebookFormatError(f"has version {version}; this epyclab reads versions 1 and {_VERSION}")
            return True, _VERSION, fid.decode("ascii")
    return False, None, None


def _parse2(data: bytes, pos: int) -> tuple[str, _Frame | None]:
    """At ``pos``: ("ok", frame), ("torn", None) for an incomplete last record, or ("bad", None).

    A record is written into zeros made ready for it (see :meth:`Journal.append`),
    so a write cut short leaves the start of a record and zeros after it: a header
    whose written part is the sync marker's start, or an intact header whose payload
    ends in zeros (a pickle ends with b"."), with nothing but zeros after. That is a
    torn tail (a commit that never returned); anything else is damage.
    """
    if _only_zeros(data, pos):
        return "torn", None
    head = data[pos : pos + _FRAME.size]
    if len(head) < _FRAME.size or head[:8] != _SYNC or zlib.crc32(head[:-4]) != _FRAME.unpack(head)[5]:
        written = head[:8].rstrip(b"\0")
        torn = _SYNC.startswith(written) and _only_zeros(data, min(len(data), pos + _FRAME.size))
        return ("torn" if torn and head[: len(written)] == written else "bad"), None
    _, length, seq, fid, crc, _ = _FRAME.unpack(head)
    start, end = pos + _FRAME.size, pos + _FRAME.size + length
    if end > len(data):
        return "torn", None
    if zlib.crc32(memoryview(data)[start:end]) != crc:
        return ("torn" if data[end - 1] == 0 and _only_zeros(data, end) else "bad"), None
    return "ok", _Frame(seq, pos, end, start, fid.hex())


def _only_zeros(data: bytes, start: int) -> bool:
    """True if ``data`` holds nothing but zeros from ``start`` on."""
    return data.count(b"\0", start) == len(data) - start


def _parse1(data: bytes, pos: int) -> tuple[str, _Frame | None]:
    rest = len(data) - pos
    if rest < _FRAME1.size:
        return ("torn", None) if _TAG1.startswith(data[pos : pos + 4]) else ("bad", None)
    tag, length, crc = _FRAME1.unpack_from(data, pos)
    start, end = pos + _FRAME1.size, pos + _FRAME1.size + length
    if tag != _TAG1:
        return "bad", None
    if end > len(data):
        return "torn", None
    if zlib.crc32(memoryview(data)[start:end]) != crc:
        return "bad", None
    return "ok", _Frame(-1, pos, end, start, None)


def _scan(data: bytes, pos: int, parse: Any) -> tuple[list[_Frame], list[tuple[int, int]], tuple[int, int] | None]:
    marker = _SYNC if parse is _parse2 else _TAG1
    frames: list[_Frame] = []
    damaged: list[tuple[int, int]] = []
    torn = None
    while pos < len(data):
        what, frame = parse(data, pos)
        if what == "ok":
            assert frame is not None
            if parse is _parse1:
                frame.seq = len(frames)  # version 1 records have no number: their order is the file's
            frames.append(frame)
            pos = frame.end
            continue
        # Not an intact record here: the next one starts at a sync marker that parses.
        nxt = data.find(marker, pos + 1)
        while nxt >= 0 and parse(data, nxt)[0] != "ok":
            nxt = data.find(marker, nxt + 1)
        if nxt < 0:
            if what == "torn":
                torn = (pos, len(data))
            else:
                damaged.append((pos, len(data)))
            break
        damaged.append((pos, nxt))
        pos = nxt
    return frames, damaged, torn


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def encode_frame(payload: bytes, seq: int, file_id: str) -> bytes:
    """A version 2 record frame holding ``payload`` (a pickle) as commit ``seq`` of file ``file_id``."""
    return _frame(payload, seq, file_id)


def frame_seq(frame: bytes) -> int | None:
    """The sequence number a raw frame carries (None for a version 1 frame, which has none)."""
    if frame.startswith(_SYNC):
        return int(_FRAME.unpack_from(frame, 0)[2])
    return None


def _payload(frame: bytes) -> bytes:
    return frame[_FRAME.size :] if frame.startswith(_SYNC) else frame[_FRAME1.size :]


def describe_damage(scan: JournalScan, base_seq: int | None = None) -> str:
    """The damaged byte ranges of a scan and the commits they cost, in words (for a warning).

    ``base_seq``: the last commit the notebook file holds, if known.
    """
    # A last range that runs to the end stops where the zeros made ready for records begin: they are no damage.
    # Stray bytes in those zeros (no record begins there) are named from the first non-zero one.
    def span(a: int, b: int) -> str:
        if b != scan.size:
            return f"{a}-{b}"
        if scan.stray_from is not None:
            a = scan.stray_from
        return f"{a}-{max(a + 1, scan.content_end)}"

    ranges = ", ".join(span(a, b) for a, b in scan.damaged)
    missing = scan.missing(base_seq)
    lost = f"commit(s) {_ranges_text(missing)} among them" if missing else "no commit between intact ones"
    if scan.damaged and scan.damaged[-1][1] == scan.size:
        if scan.stray_from is not None:
            lost += ("; the last bytes lie in the space made ready for later records (zeros) and no record "
                     "begins where the next commit would have, so they held no commit")
        else:
            lost += f"; commits after {max(scan.seqs, default=base_seq or 0)} may be among them too"
    return f"bytes {ranges} of {scan.size} are not intact records ({lost})"


def _ranges_text(numbers: list[int]) -> str:
    return ", ".join(str(n) for n in numbers[:20]) + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")


class Journal:
    """The journal of one notebook, open for appending by its (single) writer.

    Opening a journal never drops an intact record: a torn tail (an incomplete
    last record, a commit that never returned) is cut off; damaged bytes are
    first copied, with the whole journal, to ``<journal>.damaged-<time>-<id>``
    (a warning on the ``epyclab`` logger names ``where``, the byte ranges, the
    commits they cost and ``lost``, the rows those held), then the journal is
    rewritten with its intact records, or with ``frames`` if given: the records
    as the notebook replayed them (renumbered after a missing commit, or with a
    part that cannot be applied cut out, see :mod:`epyclab.notebooks.replay`).
    """

    def __init__(
        self,
        path: str,
        file_id: str,
        where: str | None = None,
        base_seq: int | None = None,
        frames: list[bytes] | None = None,
        lost: str = "",
    ) -> None:
        self._path = path
        self._file_id = file_id
        self._seq = 0
        self._warned = False
        # Never through a link: a planted journal link must not make a commit write elsewhere.
        fd = open_side(path, os.O_RDWR | os.O_CREAT, 0o644)
        fileio.track(fd, path)
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            scan = scan_journal(data) if data else None
        except NotebookFormatError as exc:
            fileio.close(fd)
            raise NotebookFormatError(f"journal {path} {exc}") from None
        except BaseException:
            fileio.close(fd)
            raise
        if scan is not None and scan.damaged:
            _warn_damage(where or path, scan, set_damage_aside(path, data), base_seq, lost)
            self._warned = True
        if scan is not None and frames is not None:
            # The records as the notebook replayed them (renumbered after a missing commit, or cut).
            fileio.close(fd)
            self._file_id = scan.file_id or file_id
            _rewrite(path, self._file_id, frames)
            fd = open_side(path, os.O_RDWR, 0o644)
            fileio.track(fd, path)
            self._fd = fd
            scan.frames = frames
        elif scan is None or (scan.file_id is None and not scan.frames):
            self._fd = fd
            self.reset(file_id)
            fileio.flush(fd)
            fileio.flush_dir(path)  # the journal's name is on the disk before any commit relies on it
        elif scan.clean():
            self._fd = fd
            self._file_id = scan.file_id or file_id
            if scan.torn is not None:
                # A writer killed mid-append left an incomplete record (its commit never returned): cut
                # it off, or the records appended from now on would follow it.
                fileio.truncate(fd, scan.torn[0])
                fileio.flush(fd)
        else:
            fileio.close(fd)
            self._file_id = scan.file_id or file_id
            _rewrite(path, self._file_id, scan.frames)
            fd = open_side(path, os.O_RDWR, 0o644)
            fileio.track(fd, path)
            self._fd = fd
        self._seq = max((frame_seq(f) or 0 for f in scan.frames), default=0) if scan is not None else 0
        #: Where the next record goes; past it the file holds zeros (space made ahead, see append).
        self._end = os.fstat(self._fd).st_size
        self._closer = weakref.finalize(self, os.close, self._fd)
        # Not at exit: the OS closes it then, and closing it earlier (finalizers run in an order
        # no one controls) would pull it from under the notebook's own fold at exit.
        self._closer.atexit = False

    def warned(self) -> bool:
        """True if opening the journal found damaged bytes, set them aside and said so."""
        return self._warned

    def size(self) -> int:
        """The journal's size in bytes (its header and records; not the zeros made ready past them)."""
        return self._end

    def empty(self) -> bool:
        """True if the journal holds no record."""
        return self.size() <= _HEADER.size

    def append(self, record: Any, seq: int | None = None) -> None:
        """Append one record (numbered ``seq``, else the next number) and flush it to the disk.

        When this returns, the record survives the death of this process and a power cut.
        """
        if self.size() < _HEADER.size:
            # A reset that could not write the header (a full disk): without it no record would be read.
            self.reset(self._file_id)
        seq = self._seq + 1 if seq is None else seq
        frame = _frame(pickle.dumps(record, protocol=5), seq, self._file_id)
        start = self._end
        self._make_room(len(frame))
        try:
            fileio.pwrite(self._fd, frame, start)
            fileio.flush(self._fd)
        except BaseException:
            # Interrupted (Ctrl-C): take the torn record back out, or the records
            # appended after it would never be read.
            fileio.pwrite(self._fd, bytes(len(frame)), start)
            raise
        self._end = start + len(frame)
        self._seq = seq

    def _make_room(self, n: int) -> None:
        """Make sure the file has ``n`` bytes of zeros past the records (flushed with the next record).

        Overwriting bytes the file already holds, a commit's flush writes its data
        only, not the file's size as well, which is cheaper than flushing an append
        (by 20% to 10x on ext4, as loaded). So the file is grown ahead, by at least
        1 MiB at a time (a reader takes zeros at the end for no record). On a nearly
        full disk it grows by just what the record needs.

        The space is allocated (``posix_fallocate``: the file system reserves it and
        the bytes read as zeros) rather than written with zeros, which wrote 4 MiB of
        zeros per 20,000 rows and flushed them to the disk with the next record. On
        ext4 a record written there turns its blocks from "unwritten" to written, a
        change of metadata its flush commits; measured on this machine's ext4 that
        flush costs what one over written zeros does (2026-12-07: 0.12-0.23 ms per
        150-byte record either way, 20 rounds interleaved). Where the file system
        cannot allocate, zeros are written as before.

        Raises:
            OSError: the disk is full (the file is as it was).
        """
        have = os.fstat(self._fd).st_size
        if self._end + n <= have:
            return
        for want in (max(self._end + n, have + min(max(have, 1 << 20), 8 << 20)), self._end + n):
            try:
                # Not flushed here: the record's own flush takes the new size (and any zeros) with it.
                if not fileio.allocate(self._fd, have, want - have):
                    fileio.pwrite(self._fd, bytes(want - have), have)
                return
            except OSError:
                fileio.truncate(self._fd, have)  # nothing half made is left behind
                if want == self._end + n:
                    raise

    def reset(self, file_id: str) -> None:
        """Forget every record (they are in the notebook file now) and tie the journal to ``file_id``."""
        fileio.truncate(self._fd, 0)
        self._end = 0
        fileio.pwrite(self._fd, _header(file_id), 0)
        # Not flushed: until the next commit flushes it, a power cut leaves the records, which the
        # file already holds (a reader skips them by their sequence numbers), or nothing.
        self._end = _HEADER.size
        self._file_id = file_id

    def close(self, remove: bool = False, trim: bool = True) -> None:
        """Close the journal, deleting it if ``remove`` (once its records are in the notebook file).

        With ``trim`` the space made ready for records (zeros past the last record) is cut off;
        without, the file is left exactly as it is (a reader takes trailing zeros for no record).
        """
        if self._fd < 0:
            return
        if remove:
            fileio.unlink(self._path)
            fileio.flush_dir(self._path)
        elif trim and os.fstat(self._fd).st_size > self._end:
            fileio.truncate(self._fd, self._end)  # the space made ready for records (zeros) goes
        self._closer()
        self._fd = -1


def _warn_damage(where: str, scan: JournalScan, aside: str, base_seq: int | None, lost: str = "") -> None:
    logger.warning(
        "journal of notebook %s: %s%s; the damaged bytes are left out, and kept (with the whole journal as it was) "
        "in %s. Every intact record is kept",
        where, describe_damage(scan, base_seq), f"; {lost}" if lost else "", aside,
    )


def set_damage_aside(path: str, data: bytes) -> str:
    """Copy a damaged journal's bytes to a new file beside it (never through a link); its path."""
    aside = f"{path}.damaged-{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    _write_new(aside, data)
    return aside


def _write_new(path: str, data: bytes) -> None:
    """Write a new file (which must not exist) and flush it and its name to the disk."""
    fd = open_side(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fileio.track(fd, path)
    try:
        fileio.write(fd, data)
        fileio.flush(fd)
    finally:
        fileio.close(fd)
    fileio.flush_dir(path)


def _rewrite(path: str, file_id: str, frames: list[bytes]) -> None:
    """Replace the journal at ``path`` by one holding ``frames`` (version 2), atomically and durably."""
    tmp = f"{path}.rewrite-{uuid.uuid4().hex[:8]}"
    _write_new(tmp, _framed(file_id, frames))
    fileio.replace(tmp, path)
    fileio.flush_dir(path)


def _framed(file_id: str, frames: list[bytes]) -> bytes:
    """A whole version 2 journal of ``file_id`` holding ``frames`` (of either version)."""
    return _header(file_id) + b"".join(_reframe(f, file_id, i + 1) for i, f in enumerate(frames))


def _reframe(frame: bytes, file_id: str, fallback_seq: int) -> bytes:
    """``frame`` in version 2 for ``file_id`` (a version 1 frame gets the sequence number its record holds)."""
    seq = frame_seq(frame)
    if seq is not None and frame[24:40] == bytes.fromhex(file_id):
        return frame
    payload = _payload(frame)
    if seq is None:
        try:
            record = _loads(payload)
            seq = int(record["seq"]) if isinstance(record, dict) and "seq" in record else fallback_seq
        except (pickle.UnpicklingError, ValueError, TypeError, KeyError, EOFError, AttributeError, IndexError):
            seq = fallback_seq
    return _frame(payload, seq, file_id)


def rewrite_without(path: str, file_id: str, drop: list[bytes], where: str, base_seq: int | None = None) -> None:
    """Rewrite the journal at ``path`` without the frames ``drop`` (its damaged bytes set aside first).

    ``where`` names the notebook in the warning about damaged bytes.

    Raises:
        NotebookSideFileError: ``path`` is a link or not a regular file.
    """
    data = read_side(path)
    scan = scan_journal(data)
    if scan.damaged:
        _warn_damage(where, scan, set_damage_aside(path, data), base_seq)
    dropped = {_payload(f) for f in drop}
    _rewrite(path, file_id, [f for f in scan.frames if _payload(f) not in dropped])


def _scan_path(path: str) -> JournalScan | None:
    try:
        data = read_side(path)
    except FileNotFoundError:
        return None
    if not data:
        return None
    try:
        return scan_journal(data)
    except NotebookFormatError as exc:
        raise NotebookFormatError(f"{path} {exc} (it lies beside a notebook of that name)") from None


def has_records(path: str) -> bool:
    """True if the journal at ``path`` holds anything past its header (read by path, never through a link).

    Raises:
        NotebookSideFileError: ``path`` is a link or not a regular file.
    """
    try:
        head = read_side(path, _HEADER.size + _FRAME.size)
    except FileNotFoundError:
        return False
    # Zeros past the header are space made ready for records, not a record.
    return len(head) > _HEADER.size and any(head[_HEADER.size :])


def read_file_id(path: str) -> str | None:
    """The file id a journal belongs to (None if there is no journal, or it holds nothing of any file).

    Raises:
        NotebookFormatError: the file beside the notebook is not a journal.
    """
    scan = _scan_path(path)
    return None if scan is None else scan.file_id


def read_scan(path: str) -> JournalScan | None:
    """The :class:`JournalScan` of the journal at ``path`` (None if there is none)."""
    return _scan_path(path)


def read_records(path: str) -> Iterator[Any]:
    """The intact records of a journal, in sequence order (a torn or damaged record is skipped)."""
    for frame in read_frames(path):
        yield decode_frame(frame)


def read_frames(path: str) -> list[bytes]:
    """The intact records of a journal as raw frames (framing included), in sequence order."""
    scan = _scan_path(path)
    return [] if scan is None else scan.frames


def decode_frame(frame: bytes) -> Any:
    """The record a raw frame (from :func:`read_frames`) holds.

    Raises:
        pickle.UnpicklingError: the record refers to something a journal may not hold.
    """
    return _loads(_payload(frame))


def write_aside(path: str, file_id: str, frames: list[bytes]) -> None:
    """Write ``frames`` as a journal file of their own at ``path`` (which must not exist).

    The file reads back with :func:`read_records`, as any journal does.
    """
    _write_new(path, _framed(file_id, frames))
