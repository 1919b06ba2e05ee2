"""The file object h5py writes a checkpoint through behaves as a binary file, before and after a failed write.

h5py's file-object driver reads, writes, seeks and truncates through
:class:`~epyclab.notebooks.undo.GuardedFile` (and its subclass UndoFile); if
any call answered differently from a file, h5py would write a broken
notebook. So a random sequence of calls is made on a GuardedFile over a real
file and on a plain unbuffered file holding the same bytes, and every answer
and the final content must agree. Once a write fails (here: the descriptor is
read-only, as a write on a full disk fails), the object goes on in memory,
and must still agree, while the file on disk keeps its old bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from test_undo_log import PAGE, apply, change

from epyclab.notebooks.undo import GuardedFile, recover

offsets = st.integers(0, 40)
calls = st.lists(
    st.one_of(
        st.tuples(st.just("seek"), offsets, st.just(0)),
        st.tuples(st.just("seek"), st.integers(-5, 10), st.sampled_from([1, 2])),
        st.tuples(st.just("seek1"), offsets),  # seek(offset) alone, as h5py calls it
        st.tuples(st.just("read"), st.one_of(st.integers(-3, 30), st.none())),
        st.tuples(st.just("read_all")),
        st.tuples(st.just("readinto"), st.integers(0, 30)),
        # Not an empty write: in memory (after a failure) one past the end extends the content, where a
        # file would not; the change is undone then anyway, and h5py does not write nothing.
        st.tuples(st.just("write"), st.binary(min_size=1, max_size=20)),
        st.tuples(st.just("truncate"), st.one_of(st.none(), offsets)),
        st.tuples(st.just("tell")),
    ),
    max_size=25,
)


def call(f: Any, op: tuple[Any, ...]) -> Any:
    name = op[0]
    if name == "seek":
        # A file may not go before its start: such a seek is not one h5py makes.
        target = {0: op[1], 1: f.tell() + op[1], 2: len_of(f) + op[1]}[op[2]]
        return f.seek(op[1], op[2]) if target >= 0 else None
    if name == "seek1":
        return f.seek(op[1])
    if name == "read":
        return f.read(op[1])
    if name == "read_all":
        return f.read()
    if name == "readinto":
        buf = bytearray(op[1])
        n = f.readinto(buf)
        return n, bytes(buf[:n])
    if name == "write":
        return f.write(op[1])
    if name == "truncate":
        return f.truncate(op[1])
    return f.tell()


def len_of(f: Any) -> int:
    here = f.tell()
    end = f.seek(0, 2)
    f.seek(here)
    return end


def content(f: Any) -> bytes:
    f.seek(0)
    return f.read()


@given(original=st.binary(max_size=30), ops=calls, fail=st.booleans())
def test_a_guarded_file_answers_as_a_file_does_on_disk_and_in_memory(
    tmp_path_factory: Any, original: bytes, ops: list[tuple[Any, ...]], fail: bool
) -> None:
    where = tmp_path_factory.mktemp("g")
    path, plain = where / "f", where / "plain"
    path.write_bytes(original)
    plain.write_bytes(original)
    # A read-only descriptor: the first write (or truncate) fails, and the object goes on in memory.
    fd = os.open(path, os.O_RDONLY if fail else os.O_RDWR)
    try:
        guarded = GuardedFile(str(path), fd)
        model = open(plain, "r+b", buffering=0)  # noqa: SIM115 - closed below
        for op in ops:
            assert call(guarded, op) == call(model, op), op
            assert guarded.tell() == model.tell(), op
        want = content(model)
        model.close()
        assert content(guarded) == want
        changed = any(op[0] in ("write", "truncate") for op in ops)
        assert (guarded.failure is not None) == (fail and changed)
        if fail:
            assert Path(path).read_bytes() == original  # the file on disk was never touched
        else:
            assert Path(path).read_bytes() == want
    finally:
        os.close(fd)


def test_a_read_past_the_end_is_short_and_a_write_past_it_fills_with_zeros(tmp_path: Path) -> None:
    for fail in (False, True):
        path = tmp_path / f"f{fail}"
        path.write_bytes(b"abc")
        fd = os.open(path, os.O_RDONLY if fail else os.O_RDWR)
        try:
            f = GuardedFile(str(path), fd)
            assert f.seek(2) == 2 and f.read(10) == b"c" and f.tell() == 3
            assert f.read(5) == b"" and f.read(-1) == b"" and f.read(None) == b""
            f.seek(5)
            assert f.write(b"XY") == 2 and f.tell() == 7
            assert content(f) == b"abc\0\0XY"
            assert f.truncate(4) == 4 and content(f) == b"abc\0"
        finally:
            os.close(fd)


def test_a_last_record_of_the_right_length_but_zeros_is_not_written_back(tmp_path: Path) -> None:
    # After a crash a file can have its new length with zeros where the data never reached the disk.
    original = b"o" * (2 * PAGE)
    path, undo, f, _ = change(tmp_path, original, [("write", b"1" * 10)])  # page 0 saved, then changed
    log = undo.read_bytes()
    apply(f, ("seek", PAGE, 0))
    apply(f, ("write", b"2"))  # page 1 saved: as if the writer died before changing it
    whole = undo.read_bytes()
    header = 8 + 4 + 4  # offset, length, crc32 of the saved bytes
    zeroed = whole[: len(log) + header] + bytes(len(whole) - len(log) - header)
    path.write_bytes(b"1" * 10 + original[10:])
    undo.write_bytes(zeroed)
    assert recover(str(path), str(undo)) is True
    assert path.read_bytes() == original  # page 0 undone; page 1 never had its zeros written


def test_truncating_beyond_the_end_extends_with_zeros_on_disk_and_in_memory(tmp_path: Path) -> None:
    for fail in (False, True):
        path = tmp_path / f"t{fail}"
        path.write_bytes(b"abc")
        fd = os.open(path, os.O_RDONLY if fail else os.O_RDWR)
        try:
            f = GuardedFile(str(path), fd)
            assert f.truncate(6) == 6 and content(f) == b"abc\0\0\0"
            assert f.truncate(6) == 6 and content(f) == b"abc\0\0\0"
            assert f.truncate(2) == 2 and content(f) == b"ab"
        finally:
            os.close(fd)
