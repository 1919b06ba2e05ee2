"""Damage to a journal costs only the damaged records (issue 19.1).

A real writer process commits 14 times to three result sets and is killed
before it folds its journal. Its journal's bytes are then damaged the ways
disks, copies and syncs damage files: bits flipped, bytes cut off or inserted,
at any offset; whole records swapped or duplicated. Opening the notebook (to
read, then to write, then again) must never fail, never show a wrong row, and
show every commit whose bytes are intact, except one that builds on rows a
damaged commit held (its rows would land at the wrong row numbers): that one
is set aside in a file beside the notebook, never lost.

CI cost: 60 examples of about 0.15 s each (three openings of a small notebook).
"""

from __future__ import annotations

import glob
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab import HDF5LabNotebook
from epyclab.notebooks.journal import decode_frame, read_frames, read_records

TAGS = ["a", "b", "c"]

WRITER = """
import sys, time
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook(sys.argv[1], create=True)
for t in ("a", "b", "c"):
    nb.addResultSet(t, description=f"set {t}")
nb.commit()
for c in range(1, 15):
    for k, t in enumerate(("a", "b", "c")):
        if (c + k) % 3 != 0:  # each commit adds rows to two of the three sets
            for j in range(1 + (c + k) % 2):
                nb.addResult({"parameters": {"c": c, "j": j}, "metadata": {}, "results": {"y": c * 100.0 + k * 10 + j}},
                             tag=t)
    nb.commit()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, list[bytes]]:
    """A notebook whose 15 commits are all in its journal (the writer was killed): its dir, journal, records."""
    base = tmp_path_factory.mktemp("written")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(base / "nb.h5")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    # Without the zeros the writer made ready past its records (each record ends with a pickle's STOP, b".").
    journal = (base / "nb.h5.journal").read_bytes().rstrip(b"\0")
    frames = read_frames(str(base / "nb.h5.journal"))
    assert len(frames) == 15 and b"".join(frames) == journal[len(journal) - sum(map(len, frames)) :]
    return base, journal, frames


def _rows(frame: bytes, uids: dict[str, str]) -> dict[str, list[float]]:
    """The y values a record adds, by tag."""
    record = decode_frame(frame)
    return {uids[uid]: list(cols["y"]) for uid, _, _, cols in record["rows"]}


def _expected(frames: list[bytes], damaged: bytes) -> dict[str, list[float]]:
    """What each result set must hold: the rows of every intact commit all of whose sets' earlier commits are there."""
    return _model(frames, damaged)[0]


def _model(frames: list[bytes], damaged: bytes) -> tuple[dict[str, list[float]], list[bytes]]:
    """The rows each set must hold, and the intact records that build on a missing one (set aside)."""
    first = decode_frame(frames[0])
    uids = {uid: tag for uid, tag, *_ in first["state"]["sets"]}
    have: dict[str, list[float]] = {t: [] for t in TAGS}
    complete = {t: True for t in TAGS}  # no commit of this set is missing so far
    aside = []
    for frame in frames:
        rows = _rows(frame, uids)
        if frame in damaged and all(complete[t] for t in rows):
            for t, ys in rows.items():
                have[t] += ys
        else:
            if frame in damaged:
                aside.append(frame)
            for t in rows:
                complete[t] = False
    return have, aside


def _ys(nb: HDF5LabNotebook) -> dict[str, list[float]]:
    out = {}
    for t in TAGS:
        if t in nb.resultSets() and nb.resultSet(t).numberOfResults():
            out[t] = nb.dataframe(t, only_successful=False)["y"].tolist()
        else:
            out[t] = []
    return out


damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                                        min_size=1, max_size=3)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("swap"), st.integers(0, 14), st.integers(0, 14)),
    st.tuples(st.just("duplicate"), st.integers(0, 14), st.integers(0, 15)),
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
def test_damage_costs_only_the_damaged_records(written, tmp_path_factory, how) -> None:
    base, journal, frames = written
    work = tmp_path_factory.mktemp("damaged")
    shutil.copyfile(base / "nb.h5", work / "nb.h5")
    damaged = _damage(journal, frames, how)
    (work / "nb.h5.journal").write_bytes(damaged)
    want, aside = _model(frames, damaged)
    path = work / "nb.h5"
    # A reader sees it all and changes nothing; a writer sees the same, sets damage aside and folds.
    assert _ys(HDF5LabNotebook(path, readonly=True)) == want
    assert (work / "nb.h5.journal").read_bytes() == damaged
    with HDF5LabNotebook(path) as nb:
        assert _ys(nb) == want
    assert _ys(HDF5LabNotebook(path, readonly=True)) == want
    # Whatever was left out is beside the notebook: the damaged bytes as they were, records that could not be placed.
    kept = {f for a in glob.glob(f"{path}.journal.unfolded-*") for f in read_frames(a)}
    damaged_copies = [Path(a).read_bytes() for a in glob.glob(f"{path}.journal.damaged-*")]
    assert set(aside) <= kept
    assert damaged_copies == [] or damaged_copies == [damaged]


def _rows_all(frame: bytes) -> list[list[float]]:
    return [list(cols["y"]) for _, _, _, cols in decode_frame(frame)["rows"]]


def test_one_flipped_byte_in_the_first_record_costs_that_record_only(written, tmp_path, caplog) -> None:
    # The case the issue found: one byte of the first commit's record flipped; 14 intact commits follow.
    base, journal, frames = written
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    start = len(journal) - sum(map(len, frames))
    data = bytearray(journal)
    data[start + len(frames[0]) // 2] ^= 0x10
    (tmp_path / "nb.h5.journal").write_bytes(bytes(data))
    path = tmp_path / "nb.h5"
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        nb = HDF5LabNotebook(path)
    want = _expected(frames, bytes(data))
    assert _ys(nb) == want and sum(map(len, want.values())) == sum(len(ys) for f in frames for ys in _rows_all(f))
    assert [nb.resultSet(t).description() for t in TAGS] == ["set a", "set b", "set c"]
    nb.close()
    (aside,) = glob.glob(f"{path}.journal.damaged-*")
    assert Path(aside).read_bytes() == bytes(data)
    # The warning names the notebook, the byte range and what it cost.
    assert str(path) in caplog.text and f"bytes {start}-{start + len(frames[0])}" in caplog.text
    assert "commit(s) 1 among them" in caplog.text and aside in caplog.text


def test_a_damaged_commit_sets_aside_the_later_commits_of_its_set_only(written, tmp_path, caplog) -> None:
    base, journal, frames = written
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    start = len(journal) - sum(len(f) for f in frames[3:])  # the fourth commit
    data = bytearray(journal)
    data[start + len(frames[3]) - 1] ^= 0x01
    (tmp_path / "nb.h5.journal").write_bytes(bytes(data))
    path = tmp_path / "nb.h5"
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        nb = HDF5LabNotebook(path)
    want = _expected(frames, bytes(data))
    assert _ys(nb) == want
    nb.close()
    # The later commits of the damaged commit's sets are kept aside, readable, with their rows.
    (unfolded,) = glob.glob(f"{path}.journal.unfolded-*")
    later = [r["seq"] for r in read_records(unfolded)]
    assert later and min(later) > 4
    assert "an earlier commit is missing" in caplog.text
    # Opening again finds nothing more to set aside, and commits go on.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="epyclab"), HDF5LabNotebook(path) as nb:
        assert _ys(nb) == want
        nb.addResult({"parameters": {"c": 99, "j": 0}, "metadata": {}, "results": {"y": 9999.0}}, tag="a")
    assert caplog.text == ""
    assert HDF5LabNotebook(path, readonly=True).dataframe("a")["y"].tolist() == [*want["a"], 9999.0]


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
    base, journal, frames = written
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    (tmp_path / "nb.h5.journal").write_bytes(journal + frames[-1][:cut] + bytes(5000))
    path = tmp_path / "nb.h5"
    with caplog.at_level(logging.WARNING, logger="epyclab"), HDF5LabNotebook(path) as nb:
        assert _ys(nb) == _expected(frames, journal)
    assert caplog.text == "" and glob.glob(f"{path}.journal.*") == []


def test_a_flipped_byte_in_the_last_record_before_the_zeros_is_damage(written, tmp_path, caplog) -> None:
    # Unlike a cut, a complete last record with a flipped byte is a commit that returned: set aside, said.
    base, journal, frames = written
    shutil.copyfile(base / "nb.h5", tmp_path / "nb.h5")
    data = bytearray(journal + bytes(5000))
    data[len(journal) - 10] ^= 0x04
    (tmp_path / "nb.h5.journal").write_bytes(bytes(data))
    path = tmp_path / "nb.h5"
    with caplog.at_level(logging.WARNING, logger="epyclab"), HDF5LabNotebook(path) as nb:
        assert _ys(nb) == _expected(frames, bytes(data))
    (aside,) = glob.glob(f"{path}.journal.damaged-*")
    assert Path(aside).read_bytes() == bytes(data) and "commits after 14 may be among them" in caplog.text


def test_a_warning_about_many_set_aside_commits_stays_one_short_line(written) -> None:
    # Seen: one flipped byte early in a journal of 1,187 commits gave a warning of about 30 KB listing each.
    from epyclab.notebooks.hdf5 import _describe_frames

    _, _, frames = written
    few = _describe_frames(frames[:3])
    assert few.count("commit ") == 3
    many = _describe_frames(frames * 80)  # 1,200 records
    seqs = sorted(decode_frame(f)["seq"] for f in frames)
    rows = 80 * sum(len(r) for f in frames for r in _rows_all(f))
    assert many.startswith(f"commits {seqs[0]} to {seqs[-1]}: {len(frames) * 80} record(s), {rows} row(s)")
    assert len(many) < 200
