"""A commit that returned survives a power cut at any moment, and a damaged undo log never bricks a notebook.

Real commits and checkpoints of a real notebook are recorded through the
notebook's own file layer (epyclab/notebooks/fileio.py): every write, cut,
flush, creation, rename and removal, in order. The files are then rebuilt as a
cut at every point of that sequence leaves them (tests/disk_model.py): a power
cut keeps only what was flushed, a killed process every write. Each cut state
opens, with every commit that had returned and nothing else but the commit in
flight (issue 19.6).

The same recording gives a real undo log beside a half-changed file (the moment
before a checkpoint removes its log); damaged at any offset, it either restores
the file exactly or is refused with NotebookFormatError naming the log (issue 19.1).

CI cost: about 2 x 400 openings of a small notebook (~2 x 15 s), and 50 examples of ~0.1 s.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from disk_model import DiskModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epyclab import HDF5LabNotebook
from epyclab.errors import NotebookFormatError
from epyclab.notebooks import fileio


def _row(i: int, k: Any) -> dict[str, Any]:
    return {"parameters": {"i": i}, "metadata": {}, "results": {"y": i + 0.5, "k": k}}


def _contents(nb: HDF5LabNotebook) -> dict[str, list[float]]:
    return {
        t: nb.dataframe(t, only_successful=False)["y"].tolist() if nb.resultSet(t).numberOfResults() else []
        for t in nb.resultSets()
    }


def _record(d: Path) -> DiskModel:
    """Commits (some folded at checkpoints, one widening a column), a checkpoint() and a close, recorded."""
    path = d / "nb.h5"
    with HDF5LabNotebook(path, create=True) as nb:
        nb.addResultSet("first")
        nb.addResult(_row(0, 0))
    model = DiskModel(d)
    committed: dict[str, list[float]] = {"first": [0.5]}
    with fileio.recording(model.record):
        nb = HDF5LabNotebook(path)
        nb.CheckpointRows = 5  # a checkpoint every few commits
        model.mark(dict(committed))
        i = 1
        for c in range(12):
            tag = "first" if c % 3 else "second"
            if tag not in nb.resultSets():
                nb.addResultSet(tag, description="made in the run")
            for _ in range(1 + c % 2):
                nb.addResult(_row(i, 1.5 if c == 7 else i), tag=tag)  # commit 7 widens k from int to float
                committed[tag] = [*committed.get(tag, []), i + 0.5]
                i += 1
            nb.commit()
            model.mark({t: list(ys) for t, ys in committed.items()})
            if c == 9:
                nb.checkpoint()
        nb.close()
        model.mark({t: list(ys) for t, ys in committed.items()})
    ops = [op for op, _, _ in model.events]
    assert ops.count("flush") > 20 and "flush_dir" in ops and "unlink" in ops  # journals, undo logs, folds
    return model


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> DiskModel:
    """The recorded run; its journal grows ahead by allocating (posix_fallocate), as on this disk."""
    model = _record(tmp_path_factory.mktemp("nb"))
    assert "allocate" in [op for op, _, _ in model.events]
    return model


@pytest.fixture(scope="module")
def recorded_zeros(tmp_path_factory: pytest.TempPathFactory) -> DiskModel:
    """The same run on a file system that cannot allocate without writing: the journal grows by zeros written."""
    def cannot(fd: int, offset: int, length: int) -> None:
        # Stands in for a file system without fallocate (e.g. some network ones), which this machine lacks.
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "posix_fallocate", cannot)
        model = _record(tmp_path_factory.mktemp("nbz"))
    zeros = [e for e in model.events if e[0] == "write" and e[1].endswith(".journal") and not any(e[2][1])]
    assert len(zeros) >= 2  # the room made ahead was written as zeros
    return model


def _open_state(files: dict[str, bytes], where: Path) -> dict[str, list[float]]:
    where.mkdir()
    for name, data in files.items():
        (where / name).write_bytes(data)
    return _contents(HDF5LabNotebook(where / "nb.h5", readonly=True))


@pytest.mark.parametrize("run", ["recorded", "recorded_zeros"])
def test_every_commit_that_returned_is_there_after_a_cut_at_any_point(
    run: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    recorded: DiskModel = request.getfixturevalue(run)
    marks = [(i, e[2][0]) for i, e in enumerate(recorded.events) if e[0] == "mark"]
    seen: dict[str, dict[str, list[float]]] = {}
    n = 0
    for cut in range(marks[0][0] + 1, len(recorded.events) + 1):
        returned = [m for i, m in marks if i < cut][-1]  # the last commit that returned before the cut
        later = [m for i, m in marks if i >= cut]
        in_flight = later[0] if later else returned
        for model in ("flushed", "kept"):
            files = recorded.state(cut, model)
            key = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
            if key not in seen:
                n += 1
                seen[key] = _open_state(files, tmp_path / f"s{n}")
            got = {t: ys for t, ys in seen[key].items() if ys}
            want = [{t: ys for t, ys in m.items() if ys} for m in (returned, in_flight)]
            assert got in want, (cut, model, recorded.events[cut - 1][:2] if cut else None)
    assert n > 20  # many distinct states were opened


def test_a_writer_opens_each_power_cut_state_and_goes_on(recorded: DiskModel, tmp_path: Path) -> None:
    # Every fifth cut: the next run opens it for writing (undoing, replaying, folding) and commits.
    marks = [(i, e[2][0]) for i, e in enumerate(recorded.events) if e[0] == "mark"]
    for cut in range(marks[0][0] + 1, len(recorded.events) + 1, 5):
        returned = {t: ys for t, ys in [m for i, m in marks if i < cut][-1].items() if ys}
        where = tmp_path / f"w{cut}"
        where.mkdir()
        for name, data in recorded.state(cut, "flushed").items():
            (where / name).write_bytes(data)
        with HDF5LabNotebook(where / "nb.h5") as nb:
            got = {t: ys for t, ys in _contents(nb).items() if ys}
            assert all(got[t][: len(ys)] == ys for t, ys in returned.items()), cut
            nb.addResult(_row(100, 100), tag="first")
        assert _contents(HDF5LabNotebook(where / "nb.h5", readonly=True))["first"][-1] == 100.5


def _half_checkpoint(recorded: DiskModel) -> tuple[dict[str, bytes], dict[str, list[float]]]:
    """The files at the last moment of a checkpoint before its undo log goes (the file changed), and the rows."""
    events = recorded.events
    cut = max(i for i, (op, path, _) in enumerate(events) if op == "unlink" and path.endswith(".undo"))
    files = recorded.state(cut, "kept")
    assert "nb.h5.undo" in files
    rows = [e[2][0] for e in events[:cut] if e[0] == "mark"][-1]
    return files, {t: ys for t, ys in rows.items() if ys}


damage = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=20)),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=damage)
def test_a_damaged_undo_log_restores_exactly_or_is_refused_naming_it(recorded, tmp_path_factory, how) -> None:
    files, rows = _half_checkpoint(recorded)
    log = files["nb.h5.undo"]
    at = int(how[1] * len(log))
    if how[0] == "flip":
        log = log[:at] + bytes([log[at] ^ (1 << how[2])]) + log[at + 1 :]
    elif how[0] == "truncate":
        log = log[:at]
    else:
        log = log[:at] + how[2] + log[at:]
    where = tmp_path_factory.mktemp("undo")
    files = {**files, "nb.h5.undo": log}
    for name, data in files.items():
        (where / name).write_bytes(data)
    try:
        got = _contents(HDF5LabNotebook(where / "nb.h5"))
    except NotebookFormatError as exc:
        # Refused: the log is kept where it was, and the message names it and what to do.
        assert str(where / "nb.h5.undo") in str(exc) and "move" in str(exc)
        assert (where / "nb.h5.undo").read_bytes() == log
        return
    # Opened: as of its last good state, with every commit that had returned.
    assert {t: ys for t, ys in got.items() if ys} == rows
    assert not (where / "nb.h5.undo").exists()


def test_a_log_whose_restore_does_not_match_the_original_is_kept(recorded, tmp_path) -> None:
    files, _ = _half_checkpoint(recorded)
    log = bytearray(files["nb.h5.undo"])
    log[40] ^= 0xFF  # in the first saved page's bytes: that page cannot be put back
    for name, data in {**files, "nb.h5.undo": bytes(log)}.items():
        (tmp_path / name).write_bytes(data)
    for readonly in (True, False):
        with pytest.raises(NotebookFormatError, match="could not be restored to what it was; the log is kept"):
            HDF5LabNotebook(tmp_path / "nb.h5", readonly=readonly)
        assert (tmp_path / "nb.h5.undo").read_bytes() == bytes(log)


def test_the_cut_model_catches_a_commit_that_was_not_flushed(tmp_path: Path, monkeypatch) -> None:
    # The same run without the journal's flush: a cut after commit() returned loses it. (The model sees
    # through the file layer only; this shows it would see a missing flush.)
    d = tmp_path / "nb"
    d.mkdir()
    with HDF5LabNotebook(d / "nb.h5", create=True) as nb:
        nb.addResultSet("first")
    model = DiskModel(d)
    monkeypatch.setattr("epyclab.notebooks.journal.fileio.flush", lambda fd: None)
    with fileio.recording(model.record):
        nb = HDF5LabNotebook(d / "nb.h5")
        nb.addResult(_row(1, 1), tag="first")
        nb.commit()
        model.mark(None)
        cut = len(model.events)
        nb.abandon()
    assert _contents(HDF5LabNotebook(d / "nb.h5", readonly=True))["first"] == [1.5]  # a killed process keeps it
    where = tmp_path / "cut"
    assert _open_state(model.state(cut, "flushed"), where).get("first", []) == []  # a power cut does not
