"""``epyclab copy`` in this process (click's runner), quick enough to run against every planted bug.

How ``NOTEBOOK:TAG`` is split (a tag may hold colons, a file name too: the
split is after the first prefix that is an existing file), what a dry run
says, and which copies are refused (a tag named twice, a tag the destination
has) with the destination left as it was. tests/test_cli_copy.py runs the
same command as a real subprocess.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from test_cli_notebooks import digest

from epyclab import HDF5LabNotebook, LabNotebook
from epyclab.cli import _split, main

# Parts of names: no "/" (a path), no NUL; colons wanted.
parts = st.text(alphabet="ab:.", min_size=1, max_size=6)


@given(name=parts.filter(lambda s: s not in (".", "..") and not s.startswith(":")), tag=parts)
def test_a_spec_splits_after_the_existing_file_whatever_colons_tag_and_name_hold(tmp_path_factory, name, tag):
    where = tmp_path_factory.mktemp("split")
    path = where / name
    path.write_bytes(b"")
    # No shorter prefix of "<path>:<tag>" ending before a colon may be another existing file.
    spec = f"{path}:{tag}"
    earlier = [spec[:i] for i, c in enumerate(spec) if c == ":" and i < len(str(path)) and Path(spec[:i]).is_file()]
    if earlier:
        return
    assert _split(spec) == (str(path), tag)


@given(path=parts.filter(lambda s: not s.startswith(":") and not s.endswith(":")), tag=parts)
def test_a_spec_of_a_file_not_there_splits_at_its_last_colon(tmp_path_factory, path, tag):
    where = tmp_path_factory.mktemp("missing")
    spec = f"{where}/{path}:{tag}"
    head, _, last = spec.rpartition(":")
    if not last:
        with pytest.raises(click.BadParameter):
            _split(spec)
        return
    assert _split(spec) == (head, last)


@pytest.mark.parametrize("spec", ["nocolon", ":tag", "{nb}:", "{missing}:"])
def test_a_spec_without_a_notebook_or_a_tag_is_refused(tmp_path: Path, spec: str) -> None:
    nb = tmp_path / "nb.h5"
    nb.write_bytes(b"")
    with pytest.raises(click.BadParameter, match="is not NOTEBOOK:TAG"):
        _split(spec.format(nb=nb, missing=tmp_path / "missing.h5"))


def notebook(path: Path, *tags: str) -> Path:
    with HDF5LabNotebook(str(path), create=True) as nb:
        for i, tag in enumerate(tags):
            nb.addResultSet(tag)
            for x in range(i + 1):
                nb.addResult({"parameters": {"x": x}, "metadata": {}, "results": {"y": x * x}})
        nb.select(LabNotebook.DEFAULT_RESULTSET)
    return path


def test_a_dry_run_says_what_it_would_copy_and_changes_nothing(tmp_path: Path) -> None:
    src = notebook(tmp_path / "src.h5", "a", "b")
    dest = notebook(tmp_path / "dest.h5", "mine")
    before = digest(dest)
    done = CliRunner().invoke(main, ["copy", "--dry-run", f"{src}:b", str(dest)])
    assert done.exit_code == 0, done.output
    assert done.output == f"would copy {src}:b -> {dest} (2 row(s), 0 pending)\n"
    assert digest(dest) == before
    done = CliRunner().invoke(main, ["copy", f"{src}:b", str(dest)])
    assert done.exit_code == 0, done.output
    assert done.output == f"copied {src}:b -> {dest} (2 row(s), 0 pending)\n"


def test_a_set_is_added_to_an_existing_destination_keeping_its_current_set(tmp_path: Path) -> None:
    src = notebook(tmp_path / "src.h5", "a", "b")
    dest = notebook(tmp_path / "dest.h5", "mine")
    with HDF5LabNotebook(str(dest)) as nb:
        nb.select("mine")
    done = CliRunner().invoke(main, ["copy", f"{src}:a", f"{src}:b", str(dest)])
    assert done.exit_code == 0, done.output
    nb = HDF5LabNotebook(str(dest), readonly=True)
    assert nb.keys() == [LabNotebook.DEFAULT_RESULTSET, "mine", "a", "b"]
    assert nb.currentTag() == "mine"
    assert nb.resultSet("b").dataframe()["y"].tolist() == [0, 1]


def test_a_tag_named_twice_or_already_in_the_destination_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    one = notebook(tmp_path / "one.h5", "x")
    two = notebook(tmp_path / "two.h5", "x", "y")
    dest = notebook(tmp_path / "dest.h5", "y")
    before = digest(dest)
    done = CliRunner().invoke(main, ["copy", f"{one}:x", f"{two}:x", str(tmp_path / "new.h5")])
    assert done.exit_code == 1 and "['x'] are named more than once" in done.output
    assert not (tmp_path / "new.h5").exists()
    done = CliRunner().invoke(main, ["copy", f"{two}:x", f"{two}:y", str(dest)])
    assert done.exit_code == 1 and "already has result set(s) ['y']" in done.output
    assert digest(dest) == before
    # Three times is as wrong as twice; a tag once is fine.
    done = CliRunner().invoke(main, ["copy", f"{one}:x", f"{two}:x", f"{one}:x", str(dest)])
    assert done.exit_code == 1 and "['x'] are named more than once" in done.output
    assert CliRunner().invoke(main, ["copy", f"{one}:x", str(dest)]).exit_code == 0


def test_a_new_destination_on_another_file_system_than_the_working_directory(tmp_path, monkeypatch) -> None:
    # The new file is made beside its final name (then linked there): from a working directory on
    # another file system (a tmpfs here) the link would fail if it were made there.
    src = notebook(tmp_path / "src.h5", "a")
    monkeypatch.chdir("/dev/shm")
    before = sorted(os.listdir("/dev/shm"))
    done = CliRunner().invoke(main, ["copy", f"{src}:a", str(tmp_path / "new.h5")])
    assert done.exit_code == 0, done.output
    nb = HDF5LabNotebook(str(tmp_path / "new.h5"), readonly=True)
    assert nb.description() == "Notebook new.h5"
    assert nb.resultSet("a").dataframe()["y"].tolist() == [0]
    assert sorted(os.listdir("/dev/shm")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.h5", "src.h5"]  # no temporary file left


def test_an_empty_default_set_is_filled_and_a_full_one_is_not_replaced(tmp_path: Path) -> None:
    src = tmp_path / "src.h5"
    with HDF5LabNotebook(str(src), create=True) as nb:
        nb.addResult({"parameters": {"x": 1}, "metadata": {}, "results": {"y": 1}})
    empty = notebook(tmp_path / "empty.h5", "mine")
    done = CliRunner().invoke(main, ["copy", f"{src}:{LabNotebook.DEFAULT_RESULTSET}", str(empty)])
    assert done.exit_code == 0, done.output
    assert HDF5LabNotebook(str(empty), readonly=True).resultSet(LabNotebook.DEFAULT_RESULTSET).numberOfResults() == 1
    # Now it holds a row: copying a default set into it again is a clash.
    before = digest(empty)
    done = CliRunner().invoke(main, ["copy", f"{src}:{LabNotebook.DEFAULT_RESULTSET}", str(empty)])
    assert done.exit_code == 1 and "already has result set(s)" in done.output
    assert digest(empty) == before



@pytest.mark.parametrize("holds", ["a pending result", "an attribute"])
def test_a_default_set_holding_anything_is_not_replaced(tmp_path: Path, holds: str) -> None:
    src = tmp_path / "src.h5"
    with HDF5LabNotebook(str(src), create=True) as nb:
        nb.addResult({"parameters": {"x": 1}, "metadata": {}, "results": {"y": 1}})
    dest = tmp_path / "dest.h5"
    with HDF5LabNotebook(str(dest), create=True) as nb:
        if holds == "a pending result":
            nb.addPendingResult({"x": 2}, "job-2")
        else:
            nb.current()["note"] = "mine"
    before = digest(dest)
    done = CliRunner().invoke(main, ["copy", f"{src}:{LabNotebook.DEFAULT_RESULTSET}", str(dest)])
    assert done.exit_code == 1 and "already has result set(s)" in done.output
    assert digest(dest) == before


def test_missing_cells_stay_missing_in_the_copy(tmp_path: Path) -> None:
    src = tmp_path / "src.h5"
    when = datetime(2026, 11, 30, 3, 40)
    with HDF5LabNotebook(str(src), create=True) as nb:
        nb.addResultSet("s")
        for i, (n, t) in enumerate([(1, when), (None, None), (3, when)]):
            nb.addResult({"parameters": {"i": i}, "metadata": {}, "results": {"n": n, "t": t}})
    done = CliRunner().invoke(main, ["copy", f"{src}:s", str(tmp_path / "dest.h5")])
    assert done.exit_code == 0, done.output
    rs = HDF5LabNotebook(str(tmp_path / "dest.h5"), readonly=True).resultSet("s")
    # An int's missing cell was copied as 0, its fill, before (then a float joining the column showed 0.0).
    assert rs.missingMask("n").tolist() == [False, True, False]
    df = rs.dataframe()
    assert df["t"].isna().tolist() == [False, True, False]
    assert df["n"].iloc[[0, 2]].tolist() == [1, 3] and df["t"].iloc[[0, 2]].tolist() == [when, when]


def test_every_tag_named_twice_is_named_in_the_refusal(tmp_path: Path) -> None:
    one = notebook(tmp_path / "one.h5", "x", "y")
    two = notebook(tmp_path / "two.h5", "x", "y")
    done = CliRunner().invoke(main, ["copy", f"{one}:x", f"{two}:x", f"{one}:y", f"{two}:y", str(tmp_path / "n.h5")])
    assert done.exit_code == 1 and "['x', 'y'] are named more than once" in done.output, done.output
    assert not (tmp_path / "n.h5").exists()


def test_copying_into_a_read_only_destination_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    src = notebook(tmp_path / "src.h5", "a")
    dest = notebook(tmp_path / "dest.h5", "b")
    dest.chmod(0o444)
    before = digest(dest)
    done = CliRunner().invoke(main, ["copy", f"{src}:a", str(dest)])
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit)  # a clean error, no traceback
    # The refusal names the file and the fix; the file is not opened, so no read-only warning comes first.
    assert done.output.startswith(f"Error: cannot open {dest}: notebook {dest} is a read-only file"), done.output
    assert f"chmod u+w {dest}" in done.output
    assert digest(dest) == before
