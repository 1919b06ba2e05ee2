"""Deterministic tests of the journal's two guards a user's rows depend on.

* A writer killed in the middle of appending a record leaves a torn last record.
  At every position that record can be cut, the notebook keeps every commit that
  returned, and accepts new ones (which must be readable, not lost behind the torn
  bytes).
* A journal left beside a name by another file (a notebook restored or copied
  over an older one) is never replayed into the file now bearing that name.
"""

from __future__ import annotations

import glob
import logging
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from test_unfoldable_journal import killed_writer

from epyclab import HDF5LabNotebook
from epyclab.notebooks.journal import read_frames


def _ys(path: Path, readonly: bool = True) -> list[float]:
    return HDF5LabNotebook(path, readonly=readonly).dataframe(only_successful=False)["y"].tolist()


def test_every_cut_of_the_last_record_keeps_every_returned_commit_and_accepts_new_ones(tmp_path):
    # Real journal bytes: a writer commits three rows, one record each, and is killed.
    ref = tmp_path / "ref"
    ref.mkdir()
    killed_writer(ref / "nb.h5", 1.0, 2.0, 3.0)
    # Without the zeros a writer makes ready past its records (a reader takes them for no record).
    journal = (ref / "nb.h5.journal").read_bytes().rstrip(b"\0")
    frames = read_frames(str(ref / "nb.h5.journal"))
    assert len(frames) == 3
    whole = len(journal) - len(frames[-1])  # the journal of the two commits that returned
    # The same two commits folded into the file (the journal then holds its header only).
    folded = tmp_path / "folded"
    folded.mkdir()
    shutil.copyfile(ref / "nb.h5", folded / "nb.h5")
    (folded / "nb.h5.journal").write_bytes(journal[:whole])
    HDF5LabNotebook(folded / "nb.h5").close()
    header = len(journal) - sum(len(f) for f in frames)
    work = tmp_path / "work"
    for base, kept in ((ref, whole), (folded, header)):
        for cut in range(1, len(frames[-1])):
            # The third commit's write was interrupted after `cut` bytes: it never returned.
            _torn_case(work, base, journal[:kept] + frames[-1][:cut], cut)


def _torn_case(work: Path, base: Path, journal: bytes, cut: int) -> None:
    """One notebook whose journal is ``journal``: the returned commits are kept, a new one is readable."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    shutil.copyfile(base / "nb.h5", work / "nb.h5")
    (work / "nb.h5.journal").write_bytes(journal)
    path = work / "nb.h5"
    assert _ys(path) == [1.0, 2.0], cut
    nb = HDF5LabNotebook(path)
    assert nb.numberOfResults() == 2, cut
    nb.addResult({"parameters": {"i": 9}, "metadata": {}, "results": {"y": 9.0}})
    nb.commit()
    # A reader sees the new commit while the writer still has it in its journal only.
    assert _ys(path) == [1.0, 2.0, 9.0], cut
    nb.close()
    assert _ys(path) == [1.0, 2.0, 9.0], cut


def test_a_torn_tail_left_by_a_writer_killed_mid_append_is_cut_when_the_journal_is_reopened(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    killed_writer(ref / "nb.h5", 1.0, 2.0)
    frames = read_frames(str(ref / "nb.h5.journal"))
    path = tmp_path / "nb.h5"
    shutil.copyfile(ref / "nb.h5", path)
    data = (ref / "nb.h5.journal").read_bytes().rstrip(b"\0")  # records end with a pickle's STOP, b"."
    # The first commit returned; the second was cut in its length field.
    (tmp_path / "nb.h5.journal").write_bytes(data[: len(data) - len(frames[-1]) + 6])
    # A writer that only opens and commits nothing changes nothing, and loses nothing.
    HDF5LabNotebook(path).close()
    assert _ys(path) == [1.0]


def test_a_journal_from_another_file_is_never_replayed(tmp_path, caplog):
    path = tmp_path / "nb.h5"
    killed_writer(path, 1.0, 2.0)  # its rows wait in nb.h5.journal
    journal = (tmp_path / "nb.h5.journal").read_bytes()
    # The user restores another notebook under the same name; the old journal stays beside it.
    other = tmp_path / "other.h5"
    with HDF5LabNotebook(other, create=True) as nb:
        nb.addResult({"parameters": {"i": 0}, "metadata": {}, "results": {"y": 42.0}})
    shutil.copyfile(other, path)
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        assert _ys(path) == [42.0]
    assert "belongs to another notebook file" in caplog.text
    assert (tmp_path / "nb.h5.journal").read_bytes() == journal  # a reader moves nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        nb = HDF5LabNotebook(path)
    assert nb.dataframe(only_successful=False)["y"].tolist() == [42.0]
    (aside,) = glob.glob(f"{path}.journal.orphaned-*")
    assert Path(aside).read_bytes() == journal and aside in caplog.text
    nb.addResult({"parameters": {"i": 1}, "metadata": {}, "results": {"y": 43.0}})
    nb.close()
    assert _ys(path) == [42.0, 43.0]


@settings(max_examples=25, deadline=None)
@given(size=st.one_of(st.integers(1, 200), st.integers(200, 1 << 21)), readonly_first=st.booleans())
def test_a_journal_of_zeros_holds_nothing_and_costs_nothing(size, readonly_first):
    # A power cut after a checkpoint emptied the journal and wrote its header, before anything flushed
    # them, can leave a journal whose size reached the disk but not its bytes: zeros (as XFS and ext4
    # with data=writeback show them). Zeros hold no record: the notebook opens as the file holds it,
    # for reading and for writing, and new commits go on; it is never refused as "not a journal".
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nb.h5"
        with HDF5LabNotebook(path, create=True) as nb:
            for y in (1.0, 2.0, 3.0):
                nb.addResult({"parameters": {"x": y}, "results": {"y": y}, "metadata": {}})
        Path(f"{path}.journal").write_bytes(bytes(size))
        if readonly_first:
            assert _ys(path) == [1.0, 2.0, 3.0]
        nb = HDF5LabNotebook(path)
        assert nb.dataframe()["y"].tolist() == [1.0, 2.0, 3.0]
        nb.addResult({"parameters": {"x": 4.0}, "results": {"y": 4.0}, "metadata": {}})
        nb.commit()
        assert _ys(path) == [1.0, 2.0, 3.0, 4.0]  # a reader meanwhile: the commit is in the journal
        nb.close()
        assert _ys(path) == [1.0, 2.0, 3.0, 4.0]
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["nb.h5"]


def test_a_damaged_last_record_is_reported_as_its_own_bytes_not_the_space_made_ready(tmp_path, caplog):
    # A writer makes the journal ready 1 MiB at a time (zeros). A flipped byte in the last record damages
    # that record only: the warning's byte range ends where the record does, not at the zeros' end.
    path = tmp_path / "nb.h5"
    killed_writer(path, 1.0, 2.0, 3.0)
    journal = Path(f"{path}.journal")
    data = bytearray(journal.read_bytes())
    frames = read_frames(str(journal))
    end = len(bytes(data).rstrip(b"\0"))
    assert len(data) - end > 100_000  # the space made ready is there
    start = end - len(frames[-1])
    data[end - 5] ^= 0x01  # inside the last record's payload
    journal.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="epyclab"):
        assert _ys(path) == [1.0, 2.0]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert f"bytes {start}-{end} of {len(data)} are not intact records" in said, said
    assert "commits after" in said  # the last commit's number is not known: it may be among them
