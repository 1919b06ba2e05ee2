"""The undo log on its own (epyclab/notebooks/undo.py), on real files: a change is all there, or not at all.

:class:`UndoFile` behaves as the file object h5py writes through (checked
against a plain ``io.FileIO`` doing the same operations); committed, the change is
the file; rolled back, or recovered after its writer died, the file is byte
for byte what it was, whatever the writes and cuts were.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epyclab.errors import NotebookFormatError
from epyclab.notebooks.undo import UndoFile, recover

PAGE = 4096
HEAD = 8 + 8 + 4 + 4  # magic, original size, its crc32, crc32 of the header

# Operations on a file of a few pages, as h5py does them: (name, arguments).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("seek"), st.integers(0, 4 * PAGE), st.just(0)),
        st.tuples(st.just("seek"), st.integers(-100, 100), st.just(1)),
        st.tuples(st.just("seek"), st.integers(-2 * PAGE, 100), st.just(2)),
        st.tuples(st.just("write"), st.binary(min_size=1, max_size=2 * PAGE + 10)),
        st.tuples(st.just("read"), st.integers(-1, PAGE + 10)),
        st.tuples(st.just("readinto"), st.integers(0, PAGE + 10)),
        st.tuples(st.just("truncate"), st.integers(0, 4 * PAGE)),
        st.tuples(st.just("truncate-here")),
    ),
    max_size=12,
)
originals = st.binary(min_size=0, max_size=3 * PAGE + 100)


def apply(f: object, op: tuple) -> object:
    """Do ``op`` on the file object ``f``; return what the call returned."""
    name, *args = op
    if name == "seek":
        offset, whence = args
        if whence == 1:
            offset = max(offset, -f.tell())  # never before the start: BytesIO refuses that
        if whence == 2:
            offset = max(offset, -f.seek(0, 2))  # (the seek happens again just below)
        return f.seek(offset, whence)
    if name == "write":
        return f.write(args[0])
    if name == "read":
        return f.read(args[0])
    if name == "readinto":
        buffer = bytearray(args[0])
        n = f.readinto(buffer)
        return n, bytes(buffer[:n])
    if name == "truncate":
        return f.truncate(args[0])
    return f.truncate()


def change(tmp: Path, original: bytes, operations: list[tuple]) -> tuple[Path, Path, UndoFile, io.FileIO]:
    """``operations`` done through an UndoFile on ``tmp/nb.h5``, and on a plain file (the model) alike."""
    path, undo, plain = tmp / "nb.h5", tmp / "nb.h5.undo", tmp / "plain"
    path.write_bytes(original)
    plain.write_bytes(original)
    f, model = UndoFile(str(path), str(undo)), io.FileIO(plain, "r+")
    for op in operations:
        assert apply(f, op) == apply(model, op), op
        assert f.tell() == model.tell(), op
    return path, undo, f, model


@given(original=originals, operations=ops)
def test_committed_the_change_is_the_file(tmp_path_factory: pytest.TempPathFactory, original, operations) -> None:
    path, undo, f, model = change(tmp_path_factory.mktemp("c"), original, operations)
    f.flush()
    assert f.readable() and f.writable() and f.seekable()
    f.commit()
    model.close()
    assert path.read_bytes() == (path.parent / "plain").read_bytes()
    assert not undo.exists()
    assert recover(str(path), str(undo)) is False


@given(original=originals, operations=ops)
def test_rolled_back_the_file_is_as_it_was(tmp_path_factory: pytest.TempPathFactory, original, operations) -> None:
    path, undo, f, _ = change(tmp_path_factory.mktemp("r"), original, operations)
    f.rollback()
    assert path.read_bytes() == original
    assert not undo.exists()


@given(original=originals, operations=ops)
def test_a_writer_that_died_is_undone_by_the_next_opener(
    tmp_path_factory: pytest.TempPathFactory, original, operations
) -> None:
    # Everything the dead writer wrote went to the kernel: the file and its log are as it left them.
    path, undo, _, _ = change(tmp_path_factory.mktemp("d"), original, operations)
    assert recover(str(path), str(undo)) is True
    assert path.read_bytes() == original
    assert not undo.exists()


def test_each_original_page_is_saved_once_and_new_bytes_not_at_all(tmp_path: Path) -> None:
    original = bytes(range(256)) * 40  # 10240 bytes: pages 0, 1 and part of 2
    path, undo, f, _ = change(tmp_path, original, [("seek", 10, 0), ("write", b"x" * 10)])
    one_page = undo.stat().st_size
    assert one_page == HEAD + 16 + PAGE  # header, one record's frame, the page
    apply(f, ("seek", 20, 0))
    apply(f, ("write", b"y"))  # the same page again: nothing more saved
    assert undo.stat().st_size == one_page
    apply(f, ("seek", len(original), 0))
    apply(f, ("write", b"z" * PAGE))  # past the original end: nothing to save
    assert undo.stat().st_size == one_page
    apply(f, ("seek", PAGE - 1, 0))
    apply(f, ("write", b"ab"))  # straddles pages 0 and 1: only page 1 is new
    assert undo.stat().st_size == one_page + 16 + PAGE
    apply(f, ("truncate", PAGE * 2 + 5))  # cuts the partial page 2 (10240 - 8192 bytes) short
    assert undo.stat().st_size == one_page + 16 + PAGE + 16 + (len(original) - 2 * PAGE)
    f.rollback()
    assert path.read_bytes() == original


def test_pages_saved_apart_are_separate_records(tmp_path: Path) -> None:
    original = bytes(4 * PAGE)
    path, undo, f, _ = change(tmp_path, original, [("seek", 0, 0), ("write", b"a" * (3 * PAGE))])
    assert undo.stat().st_size == HEAD + 16 + 3 * PAGE  # three consecutive pages, one record
    f.rollback()
    _, undo2, f2, _ = change(tmp_path, original, [("truncate", 0)])
    assert undo2.stat().st_size == HEAD + 16 + 4 * PAGE
    f2.rollback()
    # Page 1 saved first; then a write over pages 0 to 2 saves 0 and 2, which are not consecutive: two records.
    _, undo3, f3, _ = change(tmp_path, original, [("seek", PAGE, 0), ("write", b"b")])
    apply(f3, ("seek", 0, 0))
    apply(f3, ("write", b"c" * (3 * PAGE)))
    assert undo3.stat().st_size == HEAD + 3 * (16 + PAGE)
    f3.rollback()
    assert path.read_bytes() == original


def test_a_torn_last_record_is_left_alone_and_the_rest_undone(tmp_path: Path) -> None:
    original = b"o" * (2 * PAGE)
    path, undo, f, _ = change(tmp_path, original, [("write", b"1" * 10)])  # page 0 saved, then changed
    log = undo.read_bytes()
    apply(f, ("seek", PAGE, 0))
    apply(f, ("write", b"2"))  # page 1 saved: as if the writer died before changing it
    torn = undo.read_bytes()
    # Every cut of the record's header and of the first bytes of its page, then every 61st byte of the page
    # and its last bytes: a cut anywhere in the page is the same short read.
    head = len(log) + 64
    for cut in [*range(len(log), head), *range(head, len(torn) - 2, 61), len(torn) - 2, len(torn) - 1]:
        path.write_bytes(b"1" * 10 + original[10:])
        undo.write_bytes(torn[:cut])
        assert recover(str(path), str(undo)) is True
        assert path.read_bytes() == original, cut


def test_a_log_without_its_whole_header_changed_nothing_and_goes(tmp_path: Path) -> None:
    path, undo = tmp_path / "nb.h5", tmp_path / "nb.h5.undo"
    path.write_bytes(b"after")
    undo.write_bytes(b"EPYCLABU\x00")
    assert recover(str(path), str(undo)) is True
    assert path.read_bytes() == b"after"
    assert not undo.exists()


def test_the_original_length_is_restored(tmp_path: Path) -> None:
    path, undo = tmp_path / "nb.h5", tmp_path / "nb.h5.undo"
    path.write_bytes(b"0123456789")
    undo.write_bytes(struct.pack("<8sQ", b"EPYCLABU", 4))
    assert recover(str(path), str(undo)) is True
    assert path.read_bytes() == b"0123"


def test_a_file_that_is_not_an_undo_log_is_named_and_kept(tmp_path: Path) -> None:
    path, undo = tmp_path / "nb.h5", tmp_path / "nb.h5.undo"
    path.write_bytes(b"data")
    undo.write_bytes(b"SOMETHIN" + bytes(8))
    with pytest.raises(NotebookFormatError, match="is not an epyclab undo log; move it away to open") as err:
        recover(str(path), str(undo))
    assert str(undo) in str(err.value) and str(path) in str(err.value)
    assert undo.exists() and path.read_bytes() == b"data"


def test_a_change_is_refused_while_an_earlier_one_is_unfinished(tmp_path: Path) -> None:
    path, undo, f, _ = change(tmp_path, b"data", [("write", b"DA")])
    with pytest.raises(NotebookFormatError, match="was not finished; recover it first"):
        UndoFile(str(path), str(undo))
    f.rollback()
    assert path.read_bytes() == b"data"


def test_the_log_is_not_world_writable(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        _, undo, f, _ = change(tmp_path, b"data", [])
        assert undo.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    f.commit()


def test_seek_without_whence_is_from_the_start(tmp_path: Path) -> None:
    # h5py's file-object driver calls seek(offset) alone.
    path, undo, f, _ = change(tmp_path, b"0123456789", [("seek", 4, 0)])
    assert f.seek(2) == 2 and f.read(3) == b"234"
    assert f.read() == b"56789"  # read() without a size reads to the end
    f.commit()


def test_a_log_of_the_previous_release_is_still_undone(tmp_path: Path) -> None:
    # Version 1: b"EPYCLABU" | original size, then records of offset | length | CRC-32 of the bytes | bytes.
    path, undo = tmp_path / "nb.h5", tmp_path / "nb.h5.undo"
    original = b"a" * PAGE + b"b" * 100
    path.write_bytes(b"X" * PAGE + b"b" * 100 + b"appended")
    page = original[:PAGE]
    undo.write_bytes(struct.pack("<8sQ", b"EPYCLABU", len(original))
                     + struct.pack("<QII", 0, PAGE, zlib.crc32(page)) + page)
    assert recover(str(path), str(undo)) is True
    assert path.read_bytes() == original and not undo.exists()


def test_a_log_whose_sizes_do_not_fit_is_refused_and_kept(tmp_path: Path) -> None:
    # A version 1 header has no checksum: an original size past everything saved is damage, not a size.
    path, undo = tmp_path / "nb.h5", tmp_path / "nb.h5.undo"
    path.write_bytes(b"data")
    undo.write_bytes(struct.pack("<8sQ", b"EPYCLABU", 2**50))
    with pytest.raises(NotebookFormatError, match="does not fit the pages it saved") as err:
        recover(str(path), str(undo))
    assert str(undo) in str(err.value) and "move" in str(err.value)
    assert path.read_bytes() == b"data" and undo.exists()


@given(original=originals, operations=ops, lost=st.integers(0, 3 * PAGE))
def test_a_log_whose_header_never_reached_the_disk_changed_nothing_and_goes(
    tmp_path_factory: pytest.TempPathFactory, original, operations, lost
) -> None:
    # A power cut before the log's flush returned: the file was not touched yet (it is written only after
    # that flush), and the log's first page, its header, may read as zeros (its size reached the disk, its
    # bytes did not), with ``lost`` more bytes after it. Nothing was changed: the log goes, the file stays.
    path, undo, _, _ = change(tmp_path_factory.mktemp("z"), original, operations)
    log = undo.read_bytes()
    cut = min(len(log), HEAD + lost)
    undo.write_bytes(bytes(cut) + log[cut:] if log else bytes(HEAD + lost))
    assert recover(str(path), str(undo)) is True
    assert path.read_bytes() == original
    assert not undo.exists()


def test_a_notebook_whose_undo_log_is_zeros_opens_with_its_rows(tmp_path: Path) -> None:
    from epyclab import HDF5LabNotebook

    path = tmp_path / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addResult({"parameters": {"x": 1}, "results": {"y": 2.0}, "metadata": {}})
    for readonly in (True, False):
        Path(f"{path}.undo").write_bytes(bytes(PAGE + 100))
        with HDF5LabNotebook(path, readonly=readonly) as nb:
            assert nb.dataframe()["y"].tolist() == [2.0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.h5"]


def test_a_zeros_log_beside_a_file_that_does_not_read_is_kept(tmp_path: Path) -> None:
    # The zeros say the file was not touched; should it not read as a notebook anyway, the log is not
    # removed on that say-so alone.
    path, undo = tmp_path / "nb.h5", tmp_path / "nb.h5.undo"
    path.write_bytes(b"not hdf5")
    undo.write_bytes(bytes(HEAD))

    def verify(p: str) -> None:
        raise NotebookFormatError(f"{p} does not read")

    with pytest.raises(NotebookFormatError, match="does not read") as err:
        recover(str(path), str(undo), verify)
    assert str(undo) in str(err.value)
    assert undo.exists() and path.read_bytes() == b"not hdf5"
