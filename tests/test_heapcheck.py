"""Damaged global heap collections (issue 19.2): HDF5 2.0 loops for ever reading a value from a collection
whose free-space object says it is 0 bytes long; epyclab checks every collection before HDF5 reads one.

Every opening here runs in a subprocess under a time and memory limit (tests/test_fuzz_files.py's
OPEN_EACH), so a hang fails the test instead of stopping the suite. The collections and their fields are
found by the test's own reading of the HDF5 format specification ("Global Heap"), not by the module tested.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_files import OPEN_EACH, _written
from test_undo_log import PAGE

from epyclab import HDF5LabNotebook, NotebookFormatError
from epyclab.experiment import Experiment
from epyclab.notebooks.heapcheck import _objects_problem, _objects_problem_8, check_global_heaps

#: Seconds an opening of one small damaged notebook may take, at most, in a loaded CI machine.
TIMEOUT = 120


@dataclass(frozen=True)
class Field:
    """A field of a collection's header or of one of its objects' headers: where it is, how long, what."""

    at: int
    width: int
    what: str


def collections(data: bytes) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Each collection of a file as (offset, size, [(offset, index, size) of each object]), by the format spec:
    "GCOL", version 1, 3 reserved bytes, the size (8 bytes); objects of index (2), reference count (2),
    reserved (4), size (8) and data padded to 8 bytes; index 0, the free space, last."""
    found, at = [], data.find(b"GCOL")
    while at >= 0:
        version, size = data[at + 4], struct.unpack_from("<Q", data, at + 8)[0]
        if version == 1 and 4096 <= size <= len(data) - at and not any(a < at < a + s for a, s, _ in found):
            objects, p = [], at + 16
            while at + size - p >= 16:
                index, length = struct.unpack_from("<H6xQ", data, p)
                objects.append((p, index, length))
                if index == 0:
                    break
                p += 16 + -(-length // 8) * 8
            found.append((at, size, objects))
        at = data.find(b"GCOL", at + 1)
    return found


def fields(data: bytes) -> list[Field]:
    out = []
    for at, _, objects in collections(data):
        out += [Field(at + 4, 1, f"version of collection {at}"), Field(at + 5, 3, f"reserved of collection {at}"),
                Field(at + 8, 8, f"size of collection {at}")]
        for p, index, _ in objects:
            name = f"free space of collection {at}" if index == 0 else f"object {index} of collection {at}"
            out += [Field(p, 2, f"index of {name}"), Field(p + 2, 2, f"reference count of {name}"),
                    Field(p + 4, 4, f"reserved of {name}"), Field(p + 8, 8, f"size of {name}")]
    return out


def open_each(paths: list[str]) -> dict[str, list]:
    """What opening each file read-only (every DataFrame built) and then for writing gave, in one subprocess."""
    proc = subprocess.Popen([sys.executable, "-c", OPEN_EACH, "HDF5LabNotebook", *paths], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:  # the test was stopped (its time limit, ^C): never leave a hung child behind
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("[")]
    started = [line[1] for line in lines if line[0] == "start"]
    assert proc.returncode == 0, (
        f"the process opening {started[-1] if started else paths[0]} ended with {proc.returncode} (-9 after "
        f"{TIMEOUT} s: a hang; another negative code: a crash): {err[-2000:]}"
    )
    return {line[1]: line[2] for line in lines if line[0] == "done"}


def assert_written_or_refused(outcomes: dict[str, list], expected: list[list], what: dict[str, str]) -> dict:
    tally = {"ok": 0, "NotebookFormatError": 0}
    for path, results in outcomes.items():
        for outcome, got in results:
            assert outcome in tally, f"{what[path]}: {got}"
            tally[outcome] += 1
            if outcome == "ok":
                assert got == expected, f"{what[path]} opened as {got}"
            else:
                assert path in got, got
    return tally


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, list[list]]:
    """The fuzz test's notebook (two result sets, text, arrays, lists, pending results), its bytes and rows."""
    path = tmp_path_factory.mktemp("heap") / "original.h5"
    expected = _written(HDF5LabNotebook, path)
    return path, path.read_bytes(), expected


def the_found_flip(data: bytes) -> tuple[bytes, int]:
    """The notebook with the flip the fuzz test found, and the offset of the collection it damages.

    Found by tests/test_fuzz_files.py (seed 24): byte 20675 XOR 35 of this notebook, the low byte of the
    size of the object holding the pending result's job id "job-99" (6 -> 37). HDF5 then walks the
    collection out of step, reaches a free-space object of size 0 in the free space's zeros, and loops.
    """
    at = data.find(b"job-99") - 8
    (collection, _, objects), = [c for c in collections(data) if c[0] < at < c[0] + c[1]]
    assert struct.unpack_from("<Q", data, at)[0] == 6 and at in [p + 8 for p, _, _ in objects]
    damaged = bytearray(data)
    damaged[at] ^= 35
    return bytes(damaged), collection


def test_the_found_hang_is_refused_naming_file_and_collection(notebook: tuple, tmp_path: Path) -> None:
    damaged, collection = the_found_flip(notebook[1])
    path = tmp_path / "flip.h5"
    path.write_bytes(damaged)
    outcomes = open_each([str(path)])
    for outcome, message in outcomes[str(path)]:  # read-only, then for writing
        assert outcome == "NotebookFormatError", message
        assert message.startswith(f"{path} is damaged: the global heap collection at byte {collection} "), message
        assert "free-space object" in message and "Restore the file from a copy" in message, message
    # Nothing was written, moved or added beside it.
    assert path.read_bytes() == damaged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flip.h5"]


def test_a_file_restored_from_its_undo_log_is_checked_before_it_is_verified(notebook: tuple, tmp_path: Path) -> None:
    # A log of zeros: the killed writer never changed the file. Before the log goes, the opener verifies that
    # the file reads, every attribute's value: with this damage, that read would hang.
    damaged, collection = the_found_flip(notebook[1])
    path, undo = tmp_path / "flip.h5", tmp_path / "flip.h5.undo"
    path.write_bytes(damaged)
    undo.write_bytes(bytes(PAGE + 100))
    outcomes = open_each([str(path)])
    for outcome, message in outcomes[str(path)]:
        assert outcome == "NotebookFormatError", message
        assert f"global heap collection at byte {collection} " in message, message
    assert undo.exists() and path.read_bytes() == damaged  # the log is kept, the file as it was


#: Values written over a whole field: the sizes HDF5 relies on (0 is the hang; 8 steps into the zeros).
VALUES = [0, 1, 8, 16, 24, 4096, 2**16 - 1, 2**32, 2**62, 2**64 - 1]


def _damage(data: bytes, field: Field, kind: str, value: int) -> bytes:
    out = bytearray(data)
    if kind == "flip":  # one byte of the field XOR a non-zero value
        out[field.at + value % field.width] ^= value // field.width % 255 + 1
    else:  # the field set to a value (cut to its width)
        out[field.at:field.at + field.width] = (value % 2 ** (8 * field.width)).to_bytes(field.width, "little")
    return bytes(out)


@pytest.mark.timeout(300)
@settings(max_examples=3, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(damages=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["flip", "set"]),
                                  st.one_of(st.sampled_from(VALUES), st.integers(0, 2**64 - 1))),
                        min_size=24, max_size=24))
def test_any_damage_to_a_collection_header_or_object_header_reads_or_is_refused(
        notebook: tuple, tmp_path_factory: pytest.TempPathFactory, damages: list[tuple[int, str, int]]) -> None:
    _, data, expected = notebook
    all_fields = fields(data)
    work = tmp_path_factory.mktemp("damaged")
    paths, what = [], {}
    for n, (choice, kind, value) in enumerate(damages):
        field = all_fields[choice % len(all_fields)]
        path = work / f"d{n:02d}.h5"
        path.write_bytes(_damage(data, field, kind, value))
        paths.append(str(path))
        what[str(path)] = f"{field.what} ({kind} {value})"
    outcomes = open_each(paths)
    assert sorted(outcomes) == sorted(paths)
    assert_written_or_refused(outcomes, expected, what)


@pytest.mark.timeout(600)
def test_every_object_of_every_collection_with_size_or_index_zero_reads_or_is_refused(notebook: tuple,
                                                                                       tmp_path: Path) -> None:
    # The family of the hang, at every object: a size of 0 makes HDF5 step 16 bytes into the object's data
    # (which may be zeros: a free-space object of size 0), an index of 0 makes an object free space that
    # does not end the collection.
    _, data, expected = notebook
    paths, what = [], {}
    for f in fields(data):
        if f.what.startswith(("size of object", "index of object", "size of free space")):
            path = tmp_path / f"z{len(paths):03d}.h5"
            path.write_bytes(_damage(data, f, "set", 0))
            paths.append(str(path))
            what[str(path)] = f"{f.what} set to 0"
    assert len(paths) > 300  # every object of the three collections
    outcomes: dict[str, list] = {}
    for start in range(0, len(paths), 100):
        outcomes.update(open_each(paths[start:start + 100]))
    tally = assert_written_or_refused(outcomes, expected, what)
    assert tally["NotebookFormatError"], tally


def test_values_that_look_like_collections_do_not_make_a_notebook_unopenable(tmp_path: Path) -> None:
    # "GCOL" followed by a header HDF5 would accept, and then zeros (a free-space object of size 0), as the
    # bytes of an array cell (kept in a collection) and of an integer column (kept in a dataset's data, whose
    # address the file holds followed by a small number, as a reference to a value would be).
    fake = int(np.frombuffer(b"GCOL\x01\x00\x00\x00", "<i8")[0])
    path = tmp_path / "lookalike.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        for i in range(60):
            nb.addResult({Experiment.PARAMETERS: {"i": i},
                          Experiment.RESULTS: {"a": np.array([fake, 4096, 0, 0, 0, 0], "<i8"), "t": "GCOL" * i,
                                               "n": [fake, 4096, 0, 0, 0][i % 5], "x": "x" * 200},
                          Experiment.METADATA: {Experiment.STATUS: True}})
    data = path.read_bytes()
    with h5py.File(path, "r") as f:
        column = f["resultsets/epyc.resultset.default/columns/n"].id.get_offset()
    # The lookalikes are there to be mistaken: 60 array cells, and the column's data with room after it.
    assert data.count(b"GCOL\x01\x00\x00\x00" + (4096).to_bytes(8, "little") + bytes(16)) >= 60 + 12
    assert data.startswith(b"GCOL\x01\x00\x00\x00" + (4096).to_bytes(8, "little"), column)
    assert len(data) - column >= 4096
    check_global_heaps(str(path))
    nb = HDF5LabNotebook(path, readonly=True)
    df = nb.dataframe()
    assert len(df) == 60 and list(df["t"]) == ["GCOL" * i for i in range(60)]
    assert list(df["n"]) == [[fake, 4096, 0, 0, 0][i % 5] for i in range(60)]


@settings(max_examples=200)
@given(objects=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 40)), max_size=60),
       flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), max_size=3))
def test_the_fast_walk_finds_what_the_plain_walk_finds(objects: list[tuple[int, int]],
                                                       flips: list[tuple[int, int]]) -> None:
    # _objects_problem_8 checks runs of objects of one size a block at a time; it must agree with the
    # one-object-at-a-time walk on any collection, sound or not.
    body = bytearray(b"GCOL\x01\x00\x00\x00" + (4096).to_bytes(8, "little"))
    for index, length in objects:
        if len(body) + 16 + -(-length // 8) * 8 > 4096 - 16:
            break
        body += struct.pack("<HH4xQ", index, 1, length) + bytes(-(-length // 8) * 8)
    body += struct.pack("<HH4xQ", 0, 0, 4096 - len(body)) + bytes(4096 - len(body) - 16)
    for at, by in flips:
        body[at] ^= by
    data = bytes(7) + bytes(body)  # a collection need not be aligned in the file
    plain = _objects_problem(data, 7 + 16, 7 + 4096, struct.Struct("<HH4xQ"))
    fast = _objects_problem_8(data, 7, 7 + 16, 7 + 4096)
    assert fast == plain
    if not flips:
        assert plain is None or any(index == 0 for index, _ in objects)


def test_a_file_that_is_not_hdf5_is_left_to_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "text.h5"
    path.write_bytes(b"GCOL\x01\x00\x00\x00" + (4096).to_bytes(8, "little") + bytes(5000))
    check_global_heaps(str(path))  # no superblock: the reader says it is not an HDF5 file
    (tmp_path / "empty.h5").write_bytes(b"")
    check_global_heaps(str(tmp_path / "empty.h5"))  # (a file of no bytes cannot be mapped: it is read)
    with pytest.raises(NotebookFormatError, match="not an HDF5 file"):
        HDF5LabNotebook(path, readonly=True)


def test_numbers_that_spell_a_sound_collection_do_not_hide_a_damaged_one(notebook: tuple, tmp_path: Path) -> None:
    # Four numbers of an integer column (in a dataset's data) can spell a sound collection of any size: a
    # header, one object as long as the rest, and a last bit too small for an object. A real collection
    # after them, within that size, is still checked: were it taken as a value inside the lookalike, the
    # flip the fuzz test found would make every opening hang.
    path, data, expected = notebook
    damaged, collection = the_found_flip(data)
    with h5py.File(path, "r") as f:
        column = f["resultsets/second/columns/t"]
        assert column.dtype == np.int64
        at = column.id.get_offset()
    assert at + 32 <= collection
    size = (len(data) - at) // 8 * 8  # reaching over the damaged collection, to the file's end
    fake = b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", size) + struct.pack("<H6xQ", 1, size - 40)
    assert _objects_problem(fake + bytes(size - 32), 16, size, struct.Struct("<HH4xQ")) is None  # it is sound
    spelled, both = bytearray(data), bytearray(damaged)
    spelled[at:at + 32] = both[at:at + 32] = fake
    (tmp_path / "spelled.h5").write_bytes(bytes(spelled))
    (tmp_path / "both.h5").write_bytes(bytes(both))
    what = {str(tmp_path / "spelled.h5"): "numbers spelling a sound collection",
            str(tmp_path / "both.h5"): "those numbers before a damaged collection"}
    outcomes = open_each(list(what))
    assert [o for o, _ in outcomes[str(tmp_path / "spelled.h5")]] == ["ok", "ok"]
    assert_written_or_refused(outcomes, expected, what)
    for outcome, message in outcomes[str(tmp_path / "both.h5")]:
        assert outcome == "NotebookFormatError" and f"collection at byte {collection}" in message, message
