"""``epyclab export``: every cell reads back exactly; the file is never overwritten unasked; ``-`` is stdout.

The property test generates notebooks of every kind of column (with the kinds
tests' strategies), exports them, parses the CSV back with Python's csv module
and :func:`~epyclab.notebooks.csvcells.parseCell`, and compares each cell with
the stored one exactly: same type, dtype, shape, every element (NaN is NaN, the
sign of a zero is kept). The user's cases run through the installed command.
"""

from __future__ import annotations

import csv
import io
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kinds_property import CELLS, EDGE_NUMBERS, VALUES, arrays_of_every_dtype, numpy_scalars, rows, timestamps_ns

from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, LabNotebook, UnstorableValueError
from epyclab.cli import main
from epyclab.notebooks.csvcells import cellText, parseCell

EPYCLAB = str(Path(sys.executable).with_name("epyclab"))


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed ``epyclab`` command, as a user runs it."""
    return subprocess.run([EPYCLAB, *args], capture_output=True, text=True, timeout=120, env=env)


def read_back(text: str, like: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """The header and the parsed cells of CSV ``text``, each cell parsed by the dtype of ``like``'s column."""
    csv.field_size_limit(sys.maxsize)  # an array of many elements is one long field
    lines = list(csv.reader(io.StringIO(text)))
    header, body = lines[0], lines[1:]
    return header, [[parseCell(t, like[name].dtype) for name, t in zip(header, line)] for line in body]


def _same_number(x: Any, y: Any) -> bool:
    """Exactly equal: NaN is NaN, and a zero keeps its sign."""
    if isinstance(y, (complex, np.complexfloating)):
        return _same_number(x.real, y.real) and _same_number(x.imag, y.imag)
    if isinstance(y, (float, np.floating)):
        return (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y))
    return x == y


def assert_same_cell(x: Any, y: Any, what: Any) -> None:
    """``x`` is ``y``: same type all the way down, same dtype and shape, every element exactly."""
    assert type(x) is type(y), (what, x, y)
    if isinstance(y, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape, (what, x, y)
        assert all(_same_number(a, b) for a, b in zip(x.reshape(-1).tolist(), y.reshape(-1).tolist())), (what, x, y)
    elif isinstance(y, (list, tuple)):
        assert len(x) == len(y), (what, x, y)
        for a, b in zip(x, y):
            assert_same_cell(a, b, what)
    elif isinstance(y, (np.generic, float, complex)) and not isinstance(y, (np.datetime64, np.str_)):
        assert _same_number(x, y), (what, x, y)
    elif y is pd.NaT:
        assert x is pd.NaT, (what, x)
    else:
        assert x == y, (what, x, y)


def assert_reads_back(text: str, want: pd.DataFrame) -> None:
    header, cells = read_back(text, want)
    assert header == list(want.columns)
    assert len(cells) == len(want)
    for name in want.columns:
        stored = want[name].to_numpy() if want[name].dtype.kind in "biufcM" else want[name].array
        for i, y in enumerate(stored):
            if isinstance(y, np.datetime64):
                y = pd.NaT if np.isnat(y) else pd.Timestamp(y)
            assert_same_cell(cells[i][header.index(name)], y, (name, i))


def _export_checked(data: list[dict], cls: Any, d: Path) -> None:
    src = d / ("nb.h5" if cls is HDF5LabNotebook else "nb.json")
    with cls(src, create=True) as nb:
        nb.addResultSet("swept")
        for rc in data:
            try:
                nb.addResult(rc)
            except UnstorableValueError:
                continue  # refused at addResult, as it must be: not a row
    out = d / "out.csv"
    result = CliRunner().invoke(main, ["export", f"{src}:swept", str(out), "--force"])
    assert result.exit_code == 0, result.output
    want = cls(src, readonly=True).dataframe("swept", only_successful=False)
    assert_reads_back(out.read_text(encoding="utf-8"), want)


_PROFILE = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FORMATS = st.sampled_from([HDF5LabNotebook, JSONLabNotebook])


@_PROFILE
@given(data=st.lists(rows(), min_size=1, max_size=6), cls=FORMATS)
def test_every_kind_of_column_reads_back_exactly(data, cls, tmp_path_factory):
    _export_checked(data, cls, tmp_path_factory.mktemp("export"))


@_PROFILE
@given(data=st.lists(rows(st.one_of(st.none(), numpy_scalars(), arrays_of_every_dtype(), EDGE_NUMBERS)),
                     min_size=1, max_size=6), cls=FORMATS)
def test_numbers_and_arrays_of_every_dtype_read_back_exactly(data, cls, tmp_path_factory):
    _export_checked(data, cls, tmp_path_factory.mktemp("export"))


@_PROFILE
@given(data=st.lists(rows(CELLS), min_size=1, max_size=6), cls=FORMATS)
def test_array_list_and_tuple_cells_read_back_exactly(data, cls, tmp_path_factory):
    _export_checked(data, cls, tmp_path_factory.mktemp("export"))


@_PROFILE
@given(data=st.lists(rows(st.one_of(st.none(), st.just(pd.NaT), timestamps_ns(), st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)))), min_size=1, max_size=6),
       cls=FORMATS)
def test_datetimes_read_back_at_full_precision(data, cls, tmp_path_factory):
    _export_checked(data, cls, tmp_path_factory.mktemp("export"))


@given(value=VALUES)
def test_a_cell_text_is_never_code(value):
    # Whatever a cell holds, its text parses back through the literal reader, never by evaluation.
    if isinstance(value, (np.ndarray, list, tuple)) and LabNotebook().current().checkResult(
            {Experiment.PARAMETERS: {}, Experiment.METADATA: {}, Experiment.RESULTS: {"v": value}}) is None:
        got = parseCell(cellText(value), np.dtype(object))
        assert np.shape(got) == np.shape(value)


def test_the_users_cells_read_back_in_full_through_the_command(tmp_path):
    src = tmp_path / "nb.h5"
    with HDF5LabNotebook(src, create=True) as nb:
        nb.addResult({Experiment.PARAMETERS: {"x": 1}, Experiment.METADATA: {},
                      Experiment.RESULTS: {"big": np.arange(2000) / 3, "small": np.array([1 / 3, 2e-10]),
                                           "listed": [1 / 3, 2e-10], "z": 1 / 3 + 2e-10j}})
    out = tmp_path / "out.csv"
    done = run("export", str(src), str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    assert "..." not in text
    want = HDF5LabNotebook(src, readonly=True).dataframe()
    assert_reads_back(text, want)
    _, cells = read_back(text, want)
    row = dict(zip(list(want.columns), cells[0]))
    assert row["big"].tolist() == (np.arange(2000) / 3).tolist()
    assert row["small"].tolist() == [1 / 3, 2e-10] and row["listed"] == [1 / 3, 2e-10]
    assert pd.read_csv(out)["x"].tolist() == [1]


def test_an_existing_file_is_refused_unless_forced(tmp_path):
    src = tmp_path / "nb.h5"
    with HDF5LabNotebook(src, create=True) as nb:
        nb.addResult({Experiment.PARAMETERS: {"x": 1}, Experiment.METADATA: {}, Experiment.RESULTS: {"y": 0.5}})
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    done = run("export", str(src), str(out))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{out} exists" in done.stderr and "--force" in done.stderr
    assert out.read_text() == "precious\n"
    done = run("export", str(src), str(out), "--dry-run")
    assert done.returncode == 1 and out.read_text() == "precious\n"
    done = run("export", str(src), str(out), "--force")
    assert done.returncode == 0, done.stderr
    assert pd.read_csv(out)["y"].tolist() == [0.5]


def test_dash_writes_to_stdout(tmp_path):
    src = tmp_path / "nb.h5"
    with HDF5LabNotebook(src, create=True) as nb:
        nb.addResult({Experiment.PARAMETERS: {"x": 1}, Experiment.METADATA: {},
                      Experiment.RESULTS: {"y": 0.1, "a": np.arange(3, dtype=np.int8)}})
    done = subprocess.run([EPYCLAB, "export", str(src), "-"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["nb.h5"]  # no file named '-'
    assert_reads_back(done.stdout, HDF5LabNotebook(src, readonly=True).dataframe())
    assert done.stdout.startswith("x,")  # nothing but the CSV on stdout


def test_an_empty_result_set_writes_its_header(tmp_path):
    src = tmp_path / "nb.h5"
    with HDF5LabNotebook(src, create=True) as nb:
        nb.addResult({Experiment.PARAMETERS: {"x": 1}, Experiment.METADATA: {Experiment.STATUS: False},
                      Experiment.RESULTS: {}})
        nb.addResultSet("empty")
        nb.addResult({Experiment.PARAMETERS: {"x": 1, "k": 2}, Experiment.METADATA: {},
                      Experiment.RESULTS: {"y": 3.0}})
        nb.addResultSet("waiting")
        nb.addPendingResult({"x": 2, "k": 3}, "job-1")  # its parameters are known, no row yet
    out = tmp_path / "out.csv"
    # Only failed rows, left out: the header of the set's columns, no row.
    done = run("export", f"{src}:{LabNotebook.DEFAULT_RESULTSET}", str(out), "--only-successful")
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0].split(",")[0] == "x" and len(lines) == 1
    # A set with no row at all: the header of its parameters, read by pandas as an empty frame.
    done = run("export", f"{src}:waiting", str(out), "--force")
    assert done.returncode == 0, done.stderr
    assert "wrote 0 row(s)" in done.stdout
    got = pd.read_csv(out)
    assert got.empty and list(got.columns) == ["x", "k"]


def test_the_docs_recipe_reads_every_cell_back(tmp_path):
    # docs/cli.md's Python block, run as a reader would, on a notebook of its file names.
    page = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    blocks = [b.split("```", 1)[0] for b in page.split("```python\n")[1:]]
    (block,) = [b for b in blocks if "parseCell" in b]
    with HDF5LabNotebook(tmp_path / "study.h5", create=True) as nb:
        for i in range(3):
            nb.addResult({Experiment.PARAMETERS: {"x": i}, Experiment.METADATA: {},
                          Experiment.RESULTS: {"y": i / 3, "v": np.arange(2000) / (i + 3), "z": [i / 7]}})
    done = run("export", str(tmp_path / "study.h5"), str(tmp_path / "study.csv"))
    assert done.returncode == 0, done.stderr
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(block, "docs/cli.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    want = HDF5LabNotebook(tmp_path / "study.h5", readonly=True).dataframe()
    assert namespace["header"] == list(want.columns)
    for i, row in enumerate(namespace["cells"]):
        for name, got in zip(namespace["header"], row):
            y = want[name].to_numpy()[i] if want[name].dtype.kind in "biufcM" else want[name].array[i]
            if isinstance(y, np.datetime64):
                y = pd.Timestamp(y)
            assert_same_cell(got, y, name)


def test_stdout_that_cannot_be_written_is_a_clean_error(tmp_path):
    src = tmp_path / "nb.h5"
    with HDF5LabNotebook(src, create=True) as nb:
        nb.addResult({Experiment.PARAMETERS: {"x": 1}, Experiment.METADATA: {}, Experiment.RESULTS: {"y": 0.5}})
    with open("/dev/full", "w") as full:
        done = subprocess.run([EPYCLAB, "export", str(src), "-"], stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot write to stdout: No space left on device" in done.stderr


def test_a_file_appearing_while_exporting_is_not_overwritten(tmp_path):
    # Without --force the CSV is linked into place, which fails if someone made the file meanwhile.
    import click

    from epyclab.cli import _write_new

    target = tmp_path / "out.csv"

    def write(f):
        target.write_text("theirs\n")  # another program, between the check and the rename
        f.write("ours\n")

    with pytest.raises(click.ClickException, match="appeared while exporting"):
        _write_new(str(target), write)
    assert target.read_text() == "theirs\n"
    assert os.listdir(tmp_path) == ["out.csv"]  # no temporary file left
