"""Damage to a journal costs only the damaged commits (issue 19.1).

A real writer process commits 19 times to three result sets (rows, a column
that commit 7 makes, a column whose ints a later float widens, pending jobs
added and resolved two commits later, attributes) and is killed before it
folds its journal. Its journal's bytes are then damaged the ways disks, copies
and syncs damage files: bits flipped, bytes cut off or inserted, at any offset;
whole records swapped or duplicated. Opening the notebook (to read; to write
while a reader holds the file, so it cannot fold, and commit; to write again;
to read) must never fail, never show a wrong or duplicated row, and
show every commit whose bytes are intact: a commit after a damaged one is
replayed after the gap, and only the damaged commit's rows, pending changes and
attribute changes are missing (what the writer logged is the model).

CI cost: 60 examples of about 0.2 s each (four openings of a small notebook).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab import HDF5LabNotebook
from epyclab.notebooks.journal import decode_frame, frame_seq, read_frames

# A record's header: a byte flipped this far past the last record's end leaves a header's worth of zeros before it.
_FRAME_SIZE = 48

TAGS = ["a", "b", "c"]
COLUMNS = ["c", "j", "y", "z", "k"]

WRITER = """
import json, sys, time
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook(sys.argv[1], create=True)
for t in ("a", "b", "c"):
    nb.addResultSet(t, description=f"set {t}")
nb.commit()
log = [{"rows": {}, "added": {}, "removed": {}, "attrs": {t: {} for t in ("a", "b", "c")}}]
for c in range(1, 19):
    rows, added, removed = {}, {}, {}
    for k, t in enumerate(("a", "b", "c")):
        if t == "a" or (c + k) % 3 != 0:
            for j in range(1 + (c + k) % 2):
                res = {"y": c * 100.0 + k * 10 + j}
                if t == "a" and c >= 6:
                    res["z"] = c / 4  # a column commit 7 (c = 6) makes
                if t == "b":
                    res["k"] = c if c < 9 else c + 0.5  # ints, then floats widen the column
                nb.addResult({"parameters": {"c": c, "j": j}, "metadata": {}, "results": res}, tag=t)
                rows.setdefault(t, []).append({"c": c, "j": j, **res})
    if c % 2 == 1:
        nb.addPendingResult({"c": c, "j": 9}, f"job{c}", tag="c")
        added["c"] = [f"job{c}"]
        if c >= 3:  # resolved two commits after it was added: a row, and the job no longer pending
            nb.resolvePendingResult({"parameters": {"c": c - 2, "j": 9}, "metadata": {},
                                     "results": {"y": (c - 2) * 100.0 + 29}}, f"job{c - 2}")
            rows.setdefault("c", []).append({"c": c - 2, "j": 9, "y": (c - 2) * 100.0 + 29})
            removed["c"] = [f"job{c - 2}"]
    if c % 5 == 0:
        nb.resultSet("c")["n"] = c
        nb.resultSet("a")["last"] = f"commit {c}"
    nb.commit()
    log.append({"rows": rows, "added": added, "removed": removed,
                "attrs": {t: nb.resultSet(t).attributes() for t in ("a", "b", "c")}})
print(json.dumps(log), flush=True)
time.sleep(120)
"""


def _killed_writer(path: Path, script: str, *args: str) -> list:
    """Run a writer that commits, prints its log as JSON and waits; SIGKILL it (nothing folded). Its log."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), *args], stdout=subprocess.PIPE, text=True)
    try:
        log = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    return log


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, list[bytes], list]:
    """A notebook whose 19 commits are all in its journal (the writer was killed): its dir, journal, records, log."""
    base = tmp_path_factory.mktemp("written")
    log = _killed_writer(base / "nb.h5", WRITER)
    # Without the zeros the writer made ready past its records (each record ends with a pickle's STOP, b".").
    journal = (base / "nb.h5.journal").read_bytes().rstrip(b"\0")
    frames = read_frames(str(base / "nb.h5.journal"))
    assert [frame_seq(f) for f in frames] == list(range(1, 20))
    assert b"".join(frames) == journal[len(journal) - sum(map(len, frames)) :]
    with h5py.File(base / "nb.h5", "r") as f:
        assert list(f["resultsets"]) == []  # every commit is in the journal only
    return base, journal, frames, log


def _model(frames: list[bytes], log: list, damaged: bytes) -> dict[str, dict]:
    """What each result set must show: the rows, pending jobs and attributes of the commits whose bytes are intact."""
    intact = [seq for seq, f in enumerate(frames, 1) if f in damaged]
    if not intact:
        return {}
    out = {t: {"rows": [], "pending": set()} for t in TAGS}
    for seq in intact:
        entry = log[seq - 1]
        for t in TAGS:
            out[t]["rows"] += entry["rows"].get(t, [])
            out[t]["pending"] -= set(entry["removed"].get(t, []))
            out[t]["pending"] |= set(entry["added"].get(t, []))
    for t in TAGS:
        # Every record names every result set's attributes (the file holds none of them yet).
        out[t]["attrs"] = log[intact[-1] - 1]["attrs"][t]
    return out


def _shown(nb: HDF5LabNotebook) -> dict[str, dict]:
    out = {}
    for t in TAGS:
        if t not in nb.resultSets():
            continue
        df = nb.dataframe(t, only_successful=False)
        rows = []
        for rec in df.to_dict("records") if len(df) else []:
            rows.append({k: rec[k] for k in COLUMNS if k in rec and not _missing(rec[k])})
        rs = nb.resultSet(t)
        out[t] = {"rows": rows, "pending": set(nb.pendingResults(t)), "attrs": rs.attributes()}
    return out


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                                        min_size=1, max_size=3)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("swap"), st.integers(0, 18), st.integers(0, 18)),
    st.tuples(st.just("duplicate"), st.integers(0, 18), st.integers(0, 19)),
)


def _damage(journal: bytes, frames: list[bytes], how: tuple) -> bytes:
    head = journal[: len(journal) - sum(map(len, frames))]
    kind = how[0]
    if kind == "flip":
        data = bytearray(journal)
        for where, bit in how[1]:
            data[int(where * len(data))] ^= 1 << bit
        return bytes(data)
    if kind == "truncate":
        return journal[: int(how[1] * len(journal))]
    if kind == "insert":
        at = int(how[1] * len(journal))
        return journal[:at] + how[2] + journal[at:]
    order = list(frames)
    if kind == "swap":
        i, j = how[1], how[2]
        order[i], order[j] = order[j], order[i]
    else:
        order.insert(how[2], frames[how[1]])
    return head + b"".join(order)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=damage)
def test_damage_costs_only_the_damaged_commits(written, tmp_path_factory, how) -> None:
    base, journal, frames, log = written
    work = tmp_path_factory.mktemp("damaged")
    shutil.copyfile(base / "nb.h5", work / "nb.h5")
    damaged = _damage(journal, frames, how)
    (work / "nb.h5.journal").write_bytes(damaged)
    want = _model(frames, log, damaged)
    path = work / "nb.h5"
    # A reader sees it all and changes nothing.
    assert _shown(HDF5LabNotebook(path, readonly=True)) == want
    assert (work / "nb.h5.journal").read_bytes() == damaged
    if want:
        # A writer that cannot fold (a reader holds the file) keeps the records it replayed in the
        # journal, numbered as it holds them, and its own commit follows them.
        with h5py.File(path, "r"):
            nb = HDF5LabNotebook(path)
            assert _shown(nb) == want
            nb.addResult({"parameters": {"c": 99, "j": 0}, "metadata": {}, "results": {"y": 9999.0}}, tag="a")
            nb.commit()
            nb.abandon()  # as if killed
        want["a"]["rows"].append({"c": 99, "j": 0, "y": 9999.0})
    # A writer sees the same, sets damage aside and folds; a reader then sees the file alone.
    with HDF5LabNotebook(path) as nb:
        assert _shown(nb) == want
    assert _shown(HDF5LabNotebook(path, readonly=True)) == want
    # Nothing intact is set aside; the damaged bytes are kept beside the notebook as they were.
    assert glob.glob(f"{path}.journal.unfolded-*") == []
    damaged_copies = [Path(a).read_bytes() for a in glob.glob(f"{path}.journal.damaged-*")]
    assert damaged_copies == [] or damaged_copies == [damaged]



@pytest.mark.parametrize("seq", [7, 4, 10, 6, 1])
def test_a_damaged_commit_that_others_seem_to_build_on_costs_only_itself(written, tmp_path, seq) -> None:
    # seq 7 makes column z, 4 adds job3 (resolved by 6), 10 widens k to floats, 6 sets attributes,
    # 1 makes the three result sets: the commits after each still replay whole.
    base, journal, frames, log = written
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    frame = frames[seq - 1]
    at = journal.index(frame)
    data = bytearray(journal)
    data[at + len(frame) - 3] ^= 0x20
    (tmp_path / "nb.h5.journal").write_bytes(bytes(data))
    want = _model(frames, log, bytes(data))
    assert sum(len(w["rows"]) for w in want.values()) > 60  # every other commit's rows
    with HDF5LabNotebook(tmp_path / "nb.h5") as nb:
        assert _shown(nb) == want
        assert [nb.resultSet(t).description() for t in TAGS] == ["set a", "set b", "set c"]
    assert _shown(HDF5LabNotebook(tmp_path / "nb.h5", readonly=True)) == want
    assert glob.glob(f"{tmp_path}/nb.h5.journal.unfolded-*") == []

ONE_SET_WRITER = """
import json, sys, time
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook(sys.argv[1], create=True)
nb.addResultSet("s")
for i in range(int(sys.argv[2])):
    nb.addResult({"parameters": {"i": i}, "metadata": {}, "results": {"y": i + 0.5}})
    nb.commit()
print("[]", flush=True)
time.sleep(120)
"""


def test_one_flipped_byte_costs_one_row_of_many_commits(tmp_path, caplog) -> None:
    # As a new user found: one row per commit, one set, one byte flipped in a commit half way.
    path = tmp_path / "nb.h5"
    _killed_writer(path, ONE_SET_WRITER, "300")
    journal = f"{path}.journal"
    frames = read_frames(journal)
    k = 150  # the commit holding row i = 149 (the set was made by commit 1, with row 0)
    (lost,) = [f for f in frames if frame_seq(f) == k]
    data = bytearray(Path(journal).read_bytes())
    at = bytes(data).index(lost)
    data[at + len(lost) // 2] ^= 0x10
    Path(journal).write_bytes(bytes(data))
    gone = decode_frame(lost)["rows"][0][3]["y"]
    want = [i + 0.5 for i in range(300) if i + 0.5 not in gone]
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        assert HDF5LabNotebook(path, readonly=True).dataframe("s")["y"].tolist() == want
    assert "1 row(s) of result set 's'" in caplog.text and str(path) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        nb = HDF5LabNotebook(path)
    assert nb.dataframe("s")["y"].tolist() == want
    nb.close()
    # The warning names the notebook, the byte range, the commit and the one row it held.
    (aside,) = glob.glob(f"{journal}.damaged-*")
    assert Path(aside).read_bytes() == bytes(data)
    assert str(path) in caplog.text and f"bytes {at}-{at + len(lost)} " in caplog.text and aside in caplog.text
    # Counted as the rows were added, said so (dataframe() shows them in design order), with what to do.
    assert ("1 row(s) of result set 's' (the 150th row added to it, counted in the order rows were added, "
            "not dataframe()'s; commit 150)") in caplog.text
    assert "resume=True" in caplog.text and "the damaged bytes are left out" in caplog.text
    assert glob.glob(f"{journal}.unfolded-*") == []
    with h5py.File(path, "r") as f:
        assert f["resultsets/s"].attrs["rows"] == 299  # folded: the file alone holds every intact commit


def test_commits_after_a_gap_and_after_reopening_stay_in_order(written, tmp_path, caplog) -> None:
    # A writer bridges a gap but cannot fold (a reader holds the file): its records, renumbered, stay in the
    # journal, and its own commits follow them. Opened again, every row is there once, in order.
    base, journal, frames, log = written
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    data = bytearray(journal)
    start = len(journal) - sum(len(f) for f in frames[4:])  # the fifth commit
    data[start + len(frames[4]) // 2] ^= 0x01
    (tmp_path / "nb.h5.journal").write_bytes(bytes(data))
    path = tmp_path / "nb.h5"
    want = _model(frames, log, bytes(data))
    with h5py.File(path, "r"):  # a plain reader: the writer's fold at opening waits for no one
        nb = HDF5LabNotebook(path)
        assert _shown(nb) == want
        new = {"c": 99, "j": 0, "y": 9999.0, "z": 1.5}
        nb.addResult({"parameters": {"c": 99, "j": 0}, "metadata": {}, "results": {"y": 9999.0, "z": 1.5}}, tag="a")
        nb.commit()
        assert len(read_frames(f"{path}.journal")) > 1  # not folded: the journal holds them all
        assert _shown(HDF5LabNotebook(path, readonly=True))["a"]["rows"] == [*want["a"]["rows"], new]
        nb.abandon()  # as if killed: the journal stays as it is
    with caplog.at_level(logging.WARNING, logger="epyclab"), HDF5LabNotebook(path) as nb:
        assert _shown(nb)["a"]["rows"] == [*want["a"]["rows"], new]
        assert _shown(nb)["b"] == want["b"]
    assert "unfolded" not in caplog.text


def test_a_journal_of_the_previous_release_still_replays(tmp_path) -> None:
    # Version 1 framing (b"REC1" | length | CRC-32 | payload), as epyclab before this format wrote it.
    import pickle
    import struct
    import zlib

    with HDF5LabNotebook(tmp_path / "nb.h5", create=True) as nb:
        nb.addResult({"parameters": {"i": 0}, "metadata": {}, "results": {"y": 0.5}})
    # Commits recorded by a current writer, then framed the old way.
    ref = tmp_path / "w"
    ref.mkdir()
    shutil.copyfile(tmp_path / "nb.h5", ref / "nb.h5")
    nb = HDF5LabNotebook(ref / "nb.h5")
    nb.addResult({"parameters": {"i": 1}, "metadata": {}, "results": {"y": 1.5}})
    nb.commit()
    nb.addResult({"parameters": {"i": 2}, "metadata": {}, "results": {"y": 2.5}})
    nb.commit()
    new_frames = read_frames(str(ref / "nb.h5.journal"))
    head = (ref / "nb.h5.journal").read_bytes()[:44]  # magic, version, file id (the old header had no CRC)
    nb.abandon()
    old = struct.pack("<8sI32s", b"EPYCLABJ", 1, head[12:44])
    for f in new_frames:
        payload = pickle.dumps(decode_frame(f), protocol=5)
        old += struct.pack("<4sQI", b"REC1", len(payload), zlib.crc32(payload)) + payload
    (tmp_path / "nb.h5.journal").write_bytes(old)
    assert HDF5LabNotebook(tmp_path / "nb.h5", readonly=True).dataframe()["y"].tolist() == [0.5, 1.5, 2.5]
    with HDF5LabNotebook(tmp_path / "nb.h5") as nb:
        assert nb.dataframe()["y"].tolist() == [0.5, 1.5, 2.5]
        nb.addResult({"parameters": {"i": 3}, "metadata": {}, "results": {"y": 3.5}})
    assert HDF5LabNotebook(tmp_path / "nb.h5", readonly=True).dataframe()["y"].tolist() == [0.5, 1.5, 2.5, 3.5]


@pytest.mark.parametrize("cut", [0, 5, 30, 47, 48, 60, -1])
def test_what_a_killed_writer_leaves_is_no_damage(written, tmp_path, caplog, cut) -> None:
    # A record written into the zeros made ready for it, cut short anywhere (in its header, in its
    # payload), and the zeros after it: a commit that never returned. Nothing set aside, no warning.
    base, journal, frames, log = written
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    (tmp_path / "nb.h5.journal").write_bytes(journal + frames[-1][:cut] + bytes(5000))
    path = tmp_path / "nb.h5"
    with caplog.at_level(logging.WARNING, logger="epyclab"), HDF5LabNotebook(path) as nb:
        assert _shown(nb) == _model(frames, log, journal)
    assert caplog.text == "" and glob.glob(f"{path}.journal.*") == []


def test_a_flipped_byte_in_the_last_record_before_the_zeros_is_damage(written, tmp_path, caplog) -> None:
    # Unlike a cut, a complete last record with a flipped byte is a commit that returned: set aside, said.
    base, journal, frames, log = written
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    data = bytearray(journal + bytes(5000))
    data[len(journal) - 10] ^= 0x04
    (tmp_path / "nb.h5.journal").write_bytes(bytes(data))
    path = tmp_path / "nb.h5"
    with caplog.at_level(logging.WARNING, logger="epyclab"), HDF5LabNotebook(path) as nb:
        assert _shown(nb) == _model(frames, log, bytes(data))
    (aside,) = glob.glob(f"{path}.journal.damaged-*")
    assert Path(aside).read_bytes() == bytes(data) and "commits after 18 may be among them" in caplog.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=_FRAME_SIZE, max_value=4999), bit=st.integers(min_value=0, max_value=7))
def test_a_flipped_byte_in_the_zeros_after_the_last_record_costs_nothing_and_says_so(written, tmp_path_factory,
                                                                                    caplog, offset, bit) -> None:
    # As a new user found: one byte flipped in the space made ready for records (a journal is mostly that)
    # was reported as hundreds of KB of damage that "may" hold later commits. No record begins where the next
    # commit would have, so none is there: every row shown, the warning names that byte alone and says so.
    base, journal, frames, log = written
    tmp_path = tmp_path_factory.mktemp("stray")
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    data = bytearray(journal + bytes(5000))
    at = len(journal) + offset
    data[at] ^= 1 << bit
    (tmp_path / "nb.h5.journal").write_bytes(bytes(data))
    path = tmp_path / "nb.h5"
    caplog.clear()  # one test function, many examples
    with caplog.at_level(logging.WARNING, logger="epyclab"), HDF5LabNotebook(path) as nb:
        assert _shown(nb) == _model(frames, log, bytes(data))
    said = caplog.text
    (aside,) = glob.glob(f"{path}.journal.damaged-*")
    assert Path(aside).read_bytes() == bytes(data)
    assert f"bytes {at}-{at + 1} of {len(data)} " in said and "they held no commit" in said
    assert "may be among them" not in said and "missing commits" not in said


def test_a_warning_about_many_set_aside_commits_stays_one_short_line(written) -> None:
    # Seen: one flipped byte early in a journal of 1,187 commits gave a warning of about 30 KB listing each.
    from epyclab.notebooks.hdf5 import _describe_frames

    _, _, frames, _ = written
    few = _describe_frames(frames[:3])
    assert few.count("commit ") == 3
    many = _describe_frames(frames * 80)  # 1,520 records
    rows = 80 * sum(len(cols["y"]) for f in frames for _, _, _, cols in decode_frame(f)["rows"])
    pending = 80 * sum(len(a) + len(r) for f in frames for _, a, r in decode_frame(f)["pending"])
    assert many == f"commits 1 to 19: {len(frames) * 80} record(s), {rows} row(s), {pending} pending-result change(s)"



DTYPE_WRITER = """
import sys, time
import numpy as np
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook(sys.argv[1], create=True)
for i in range(3):
    nb.addResult({"parameters": {"i": i}, "metadata": {}, "results": {"y": i}})
    nb.commit()
nb.current().setDtype(np.dtype([("y", np.float64)]))
nb.commit()  # nothing but the declared dtype changed: it is a commit all the same
nb.addResult({"parameters": {"i": 3}, "metadata": {}, "results": {"y": 3}})
nb.commit()
print("[]", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("damaged", [None, 4])
def test_a_committed_set_dtype_survives_a_killed_writer(tmp_path, damaged) -> None:
    # setDtype widened y to float, and was committed; the writer was killed before any checkpoint.
    path = tmp_path / "nb.h5"
    _killed_writer(path, DTYPE_WRITER)
    want = [0.0, 1.0, 2.0, 3.0]
    if damaged is not None:  # the commit of the declared dtype damaged: only that is lost
        frames = read_frames(f"{path}.journal")
        (frame,) = [f for f in frames if frame_seq(f) == damaged]
        assert decode_frame(frame)["dtypes"]
        data = bytearray(Path(f"{path}.journal").read_bytes())
        data[bytes(data).index(frame) + len(frame) - 2] ^= 0x08
        Path(f"{path}.journal").write_bytes(bytes(data))
    df = HDF5LabNotebook(path, readonly=True).dataframe()
    assert df["y"].tolist() == want and df["y"].dtype == ("float64" if damaged is None else "int64")
    with HDF5LabNotebook(path) as nb:
        assert str(nb.dataframe()["y"].dtype) == ("float64" if damaged is None else "int64")
    assert HDF5LabNotebook(path, readonly=True).dataframe()["y"].tolist() == want
