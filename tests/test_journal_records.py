"""The commit journal on its own (epyclab/notebooks/journal.py), on real files: what a reader gets back.

A record appended is read back equal and in order; a torn or damaged last
record is skipped and cut off by the next writer, keeping every record before
it; the header ties the journal to one notebook file and is checked; a journal
cannot make its reader build anything but stored values.
"""

from __future__ import annotations

import errno
import os
import pickle
import struct
import subprocess
import sys
import zlib
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from epyclab.errors import NotebookFormatError
from epyclab.notebooks.columns import MISSING
from epyclab.notebooks.journal import (
    Journal,
    decode_frame,
    encode_frame,
    read_file_id,
    read_frames,
    read_records,
    write_aside,
)

FILE_ID = "0123456789abcdef0123456789abcdef"
OTHER_ID = "fedcba9876543210fedcba9876543210"
HEADER = 8 + 4 + 32 + 4  # magic, version, file id, crc32
FRAME = 8 + 8 + 8 + 16 + 4 + 4  # sync, length, seq, file id, payload crc32, header crc32

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


def make(path: Path, records: list[object], file_id: str = FILE_ID) -> Journal:
    journal = Journal(str(path), file_id)
    for r in records:
        journal.append(r)
    return journal


@given(records=st.lists(values, max_size=6))
def test_records_come_back_equal_and_in_order(tmp_path_factory: pytest.TempPathFactory, records: list[object]) -> None:
    path = tmp_path_factory.mktemp("j") / "nb.h5.journal"
    journal = make(path, records)
    assert journal.empty() == (not records)
    journal.close()
    assert list(read_records(str(path))) == records
    assert read_file_id(str(path)) == FILE_ID


def test_stored_value_types_round_trip(tmp_path: Path) -> None:
    record = {
        "when": datetime(2026, 11, 29, 23, 59, 1, 5),
        "stamp": pd.Timestamp("2026-11-29 23:59:01.000001"),
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "objects": np.array(["a", "bc"], dtype=object),
        "i8": np.int8(-3),
        "day": np.datetime64("2026-11-29"),
        "dtype": np.dtype("<f4"),
        "dtype class": type(np.dtype("f8")),
        "c": complex(1, 2),
        "s": {1, 2},
        "f": frozenset({"x"}),
        "missing": MISSING,
    }
    make(tmp_path / "j", [record]).close()
    [back] = read_records(str(tmp_path / "j"))
    assert back.keys() == record.keys()
    assert back["a"].dtype == np.float32 and (back["a"] == record["a"]).all()
    assert back["objects"].dtype == object and back["objects"].tolist() == ["a", "bc"]
    assert back["i8"].dtype == np.int8 and back["i8"] == -3
    assert back["missing"] is MISSING
    same = ("when", "stamp", "day", "dtype", "dtype class", "c", "s", "f")
    assert {k: back[k] for k in same} == {k: record[k] for k in same}


def test_a_value_no_notebook_stores_is_refused_in_a_journal(tmp_path: Path) -> None:
    # timedelta is no kind of the table of kinds: a journal never holds one, so reading one is refused.
    make(tmp_path / "j", [{"took": timedelta(seconds=1.5)}]).close()
    with pytest.raises(pickle.UnpicklingError, match="datetime.timedelta"):
        list(read_records(str(tmp_path / "j")))


def test_a_new_journal_has_only_its_header(tmp_path: Path) -> None:
    journal = make(tmp_path / "j", [])
    assert journal.size() == HEADER
    assert journal.empty()
    journal.append("x")
    assert not journal.empty()
    assert journal.size() == HEADER + FRAME + len(pickle.dumps("x", protocol=5))
    journal.close()


@pytest.mark.parametrize("records", [["a"], ["a", {"b": [1, 2, 3]}, "c" * 100]])
def test_every_cut_of_the_last_record_keeps_the_records_before_and_takes_new_ones(
    tmp_path: Path, records: list[object]
) -> None:
    path = tmp_path / "j"
    make(path, records).close()
    whole = path.read_bytes()
    last = FRAME + len(pickle.dumps(records[-1], protocol=5))
    for cut in range(len(whole) - last, len(whole)):
        path.write_bytes(whole[:cut])
        assert list(read_records(str(path))) == records[:-1], cut
        journal = Journal(str(path), FILE_ID)  # a new writer cuts the torn tail off
        assert journal.size() == len(whole) - last, cut
        journal.append("new")
        journal.close()
        assert list(read_records(str(path))) == [*records[:-1], "new"], cut


@pytest.mark.parametrize("where", ["sync", "length", "seq", "crc", "payload"])
def test_a_damaged_last_record_is_skipped_and_set_aside(tmp_path: Path, where: str) -> None:
    path = tmp_path / "j"
    make(path, ["kept", "damaged"]).close()
    data = bytearray(path.read_bytes())
    start = len(data) - FRAME - len(pickle.dumps("damaged", protocol=5))
    offset = {"sync": 0, "length": 8, "seq": 16, "crc": 40, "payload": FRAME + 2}[where]
    data[start + offset] ^= 0x01
    path.write_bytes(bytes(data))
    assert list(read_records(str(path))) == ["kept"]
    Journal(str(path), FILE_ID).close()
    assert path.stat().st_size == start
    # Damage is not a torn append: the bytes are kept beside the journal, as they were.
    (aside,) = tmp_path.glob("j.damaged-*")
    assert aside.read_bytes() == bytes(data)


def test_a_record_longer_than_the_file_is_torn(tmp_path: Path) -> None:
    path = tmp_path / "j"
    make(path, ["kept"]).close()
    payload = pickle.dumps("lost", protocol=5)
    frame = encode_frame(payload + b".", 2, FILE_ID)[:-1]  # says one byte more than the file holds
    with open(path, "ab") as f:
        f.write(frame)
    assert list(read_records(str(path))) == ["kept"]


def test_reset_forgets_the_records_and_takes_the_new_file_id(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = make(path, ["a", "b"])
    journal.reset(OTHER_ID)
    assert journal.empty() and journal.size() == HEADER
    journal.append("c")
    journal.close()
    assert list(read_records(str(path))) == ["c"]
    assert read_file_id(str(path)) == OTHER_ID


def test_reopening_an_empty_journal_keeps_its_file_id(tmp_path: Path) -> None:
    path = tmp_path / "j"
    make(path, []).close()
    journal = Journal(str(path), OTHER_ID)
    journal.append("first")
    journal.close()
    assert read_file_id(str(path)) == FILE_ID
    assert list(read_records(str(path))) == ["first"]


def test_reopening_keeps_the_records_and_the_file_id(tmp_path: Path) -> None:
    path = tmp_path / "j"
    make(path, ["a"]).close()
    journal = Journal(str(path), OTHER_ID)  # the id is the file's, not the opener's
    journal.append("b")
    journal.close()
    assert list(read_records(str(path))) == ["a", "b"]
    assert read_file_id(str(path)) == FILE_ID


def test_a_journal_shorter_than_its_header_is_started_again(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b"EPYCLABJ\x01")
    assert read_file_id(str(path)) is None
    Journal(str(path), FILE_ID).close()
    assert read_file_id(str(path)) == FILE_ID
    assert path.stat().st_size == HEADER


def test_close_removes_the_file_only_when_asked(tmp_path: Path) -> None:
    kept, removed = tmp_path / "kept", tmp_path / "removed"
    make(kept, ["a"]).close()
    assert list(read_records(str(kept))) == ["a"]
    journal = make(removed, ["a"])
    journal.close(remove=True)
    assert not removed.exists()
    journal.close(remove=True)  # a second close does nothing, and does not fail


def test_a_missing_journal_has_no_records_and_no_file_id(tmp_path: Path) -> None:
    assert list(read_records(str(tmp_path / "none"))) == []
    assert read_file_id(str(tmp_path / "none")) is None


def test_a_file_that_is_not_a_journal_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nb.h5.journal"
    path.write_bytes(b"NOTAJRNL" + bytes(36))
    with pytest.raises(NotebookFormatError, match="is not an epyclab journal") as err:
        read_file_id(str(path))
    assert str(path) in str(err.value)


def test_a_journal_of_another_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    head = struct.pack("<8sI32s", b"EPYCLABJ", 3, FILE_ID.encode())
    path.write_bytes(head + struct.pack("<I", zlib.crc32(head)))
    with pytest.raises(NotebookFormatError, match="has version 3; this epyclab reads versions 1 and 2"):
        read_file_id(str(path))


def test_the_journal_file_is_not_world_writable(tmp_path: Path) -> None:
    path = tmp_path / "j"
    old = os.umask(0)
    try:
        make(path, []).close()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def test_a_journal_cannot_make_its_reader_run_code(tmp_path: Path) -> None:
    path = tmp_path / "j"
    make(path, ["fine", Evil()]).close()
    records = read_records(str(path))
    assert next(records) == "fine"
    with pytest.raises(pickle.UnpicklingError, match="may not refer to posix.system"):
        next(records)


def _global(module: str, name: str) -> bytes:
    """A pickle (protocol 2) of the global ``module.name``, as a hostile journal could hold."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."


@pytest.mark.parametrize("module, name", [("os", "system"), ("os", "PathDType"), ("builtins", "eval")])
def test_only_the_stored_value_types_may_be_named(tmp_path: Path, module: str, name: str) -> None:
    path = tmp_path / "j"
    make(path, []).close()
    payload = _global(module, name)
    with open(path, "ab") as f:
        f.write(encode_frame(payload, 1, FILE_ID))
    with pytest.raises(pickle.UnpicklingError, match=f"^a notebook journal may not refer to {module}.{name}$"):
        list(read_records(str(path)))


WRITE_TOO_LARGE = """
import resource, signal, sys
from epyclab.notebooks.journal import Journal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
journal = Journal(sys.argv[1], "0123456789abcdef0123456789abcdef")
journal.append("kept")
size = journal.size()
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1000, resource.RLIM_INFINITY))
try:
    journal.append("x" * (4 << 20))  # more than the space made ready: the file must grow past the limit
except OSError as exc:
    print(exc.errno, size, journal.size())
"""


def test_an_append_that_fails_half_way_takes_its_torn_record_back_out(tmp_path: Path) -> None:
    # A file size limit makes the kernel write part of the record, then refuse the rest (as a full disk does).
    path = tmp_path / "j"
    done = subprocess.run(
        [sys.executable, "-c", WRITE_TOO_LARGE, str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    errno_, before, after = map(int, done.stdout.split())
    assert errno_ == errno.EFBIG
    assert after == before
    assert list(read_records(str(path))) == ["kept"]
    journal = Journal(str(path), FILE_ID)
    journal.append("next")
    journal.close()
    assert list(read_records(str(path))) == ["kept", "next"]


def test_frames_set_aside_read_back_as_a_journal_of_their_own(tmp_path: Path) -> None:
    path, aside = tmp_path / "j", tmp_path / "aside"
    make(path, ["a", {"b": 2}, "torn"]).close()
    data = path.read_bytes()
    path.write_bytes(data[:-1])  # the last record torn
    frames = read_frames(str(path))
    assert [decode_frame(f) for f in frames] == ["a", {"b": 2}]
    assert b"".join(frames) == data[HEADER : HEADER + sum(map(len, frames))]
    write_aside(str(aside), OTHER_ID, frames)
    assert list(read_records(str(aside))) == ["a", {"b": 2}]
    assert read_file_id(str(aside)) == OTHER_ID
    with pytest.raises(FileExistsError):
        write_aside(str(aside), OTHER_ID, frames)  # never over another file
    assert read_frames(str(tmp_path / "none")) == []
