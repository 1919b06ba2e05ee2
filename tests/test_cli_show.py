"""`epyclab show` reads only what it prints: no pandas, no cluster tooling, and the right counts.

A user runs ``epyclab show`` to glance at a notebook; it must start at once
(issue 12.6), so it builds no DataFrame. What it prints (result sets, rows,
failed and pending counts) must still be exactly what the notebook holds, for
HDF5 and JSON notebooks, with commits still waiting in the journal, and for
epyc's files; and the DataFrame, when asked for afterwards, is exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from epyclab import Experiment, HDF5LabNotebook, JSONLabNotebook, LabNotebook
from epyclab.cli import main

REPO = Path(__file__).resolve().parent.parent
EPYC_H5 = Path(__file__).resolve().parent / "fixtures" / "epyc-1.7.2-notebook.h5"

# What a glance at a notebook must not pay for (pandas alone is a quarter of a second).
NOT_FOR_SHOW = {"pandas", "ipyparallel", "zmq", "IPython", "dill", "epyclab.clustersetup", "epyclab.labs.clusterlab"}

# Runs the command as the installed script does, then writes the names of the modules it imported.
RUNNER = """
import json, sys
from epyclab.cli import main
try:
    main(sys.argv[2:], prog_name="epyclab")
except SystemExit as e:
    if e.code:
        raise
with open(sys.argv[1], "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def _epyc_json() -> Path:
    """The epyc 1.7.2 JSON fixture, kept in the repository (tests/fixtures/README.md says how it was made)."""
    return REPO / "tests" / "fixtures" / "epyc-1.7.2-notebook.json"


class Walk(Experiment):
    """Fails where asked to, as a user's experiment does."""

    def do(self, params):
        if params["fail"]:
            raise ValueError(f"point {params['i']} fails")
        return {"y": params["i"] * 2.5, "label": f"point {params['i']}"}


def _fill(nb: LabNotebook, shapes: list[tuple[int, int, int]]) -> None:
    """Result sets s0, s1, ... with (rows, failed rows, pending jobs) each; failed rows spread among the rows."""
    e = Walk()
    for k, (rows, failed, pending) in enumerate(shapes):
        tag = f"s{k}"
        nb.addResultSet(tag)
        for i in range(rows):
            # Failed rows at every other place first, so failures and successes interleave.
            fail = (i % 2 == 0 and i // 2 < failed) or (i % 2 == 1 and (rows + 1) // 2 + i // 2 < failed)
            nb.addResult(e.set({"i": i, "fail": fail}).run(), tag=tag)
        for j in range(pending):
            nb.addPendingResult({"i": 100 + j, "fail": False}, f"job-{k}-{j}", tag=tag)


def _counts(output: str) -> tuple[int, dict[str, tuple[int, int, int]]]:
    """The number of result sets and each set's (rows, failed, pending), as ``show`` printed them."""
    blocks = output.strip().split("\n\n")
    total = int(blocks[0].splitlines()[1].split()[0])
    counts = {}
    for block in blocks[1:]:
        lines = block.splitlines()
        tag = lines[0].split(" (")[0]
        numbers = next(line for line in lines if line.startswith("  rows: ")).split()
        counts[tag] = (int(numbers[1]), int(numbers[3]), int(numbers[5]))
    return total, counts


def _show(path: Path) -> str:
    result = CliRunner().invoke(main, ["show", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _modules_of_show(path: Path, tmp: Path) -> tuple[set[str], str]:
    """The modules a fresh ``epyclab show PATH`` process imported, and what it printed."""
    out = tmp / "modules.json"
    done = subprocess.run([sys.executable, "-c", RUNNER, str(out), "show", str(path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text())), done.stdout


SHAPES = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(0, 3)).map(lambda s: (s[0], min(s[1], s[0]), s[2])),
    min_size=1,
    max_size=3,
)


@given(shapes=SHAPES, json_format=st.booleans(), leave_open=st.booleans())
def test_show_prints_the_counts_the_notebook_holds(shapes, json_format, leave_open):
    cls, suffix = (JSONLabNotebook, ".json") if json_format else (HDF5LabNotebook, ".h5")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"nb{suffix}"
        nb = cls(str(path), create=True)
        _fill(nb, shapes)
        if leave_open and not json_format:
            nb.commit()  # in the journal, not yet folded into the file: show must count it all the same
        else:
            nb.close()
        try:
            out = _show(path)
        finally:
            nb.close()
    total, counts = _counts(out)
    assert total == len(shapes) + 1
    expected = {f"s{k}": shape for k, shape in enumerate(shapes)}
    expected[LabNotebook.DEFAULT_RESULTSET] = (0, 0, 0)
    assert counts == expected


def test_show_in_a_fresh_process_imports_neither_pandas_nor_the_cluster_tooling(tmp_path):
    for cls, name in ((HDF5LabNotebook, "small.h5"), (JSONLabNotebook, "small.json")):
        with cls(str(tmp_path / name), create=True) as nb:
            _fill(nb, [(10, 1, 0), (10, 0, 1)])
        modules, printed = _modules_of_show(tmp_path / name, tmp_path)
        assert modules & NOT_FOR_SHOW == set(), name
        assert _counts(printed)[1] == {LabNotebook.DEFAULT_RESULTSET: (0, 0, 0), "s0": (10, 1, 0), "s1": (10, 0, 1)}
    # A notebook a program still writes: its commits wait in the journal, which show replays.
    writer = HDF5LabNotebook(str(tmp_path / "open.h5"), create=True)
    try:
        _fill(writer, [(4, 2, 1)])
        writer.commit()
        modules, printed = _modules_of_show(tmp_path / "open.h5", tmp_path)
    finally:
        writer.close()
    assert modules & NOT_FOR_SHOW == set()
    assert "journal: 1 commit(s) wait" in printed
    assert _counts(printed)[1] == {LabNotebook.DEFAULT_RESULTSET: (0, 0, 0), "s0": (4, 2, 1)}


@pytest.mark.parametrize("fixture", [EPYC_H5, _epyc_json()], ids=["hdf5", "json"])
def test_show_of_an_epyc_file_imports_no_pandas_and_counts_its_failures(fixture, tmp_path):
    copy = tmp_path / fixture.name
    copy.write_bytes(fixture.read_bytes())
    modules, printed = _modules_of_show(copy, tmp_path)
    assert modules & NOT_FOR_SHOW == set()
    # The fixture's content (tests/fixtures/README.md): 12 walks of which 3 failed, 2 pending jobs.
    counts = _counts(printed)[1]
    assert counts["walks"] == (12, 3, 0) and counts["pending"] == (0, 0, 2) and counts["repeated"] == (3, 0, 0)
    assert printed == _show(copy)


# ---- reading lazily stays exact ---------------------------------------------------------------------

ROWS = st.lists(st.sampled_from([True, False, None, "absent"]), max_size=12)


def _row(i: int, status) -> dict:
    meta = {} if status == "absent" else {Experiment.STATUS: status}
    return {"parameters": {"i": i}, "results": {"y": float(i)}, "metadata": meta}


def _failed_in_frame(df) -> int:
    """Failed rows as the DataFrame shows them (the rule ``show`` printed before it stopped building it)."""
    if Experiment.STATUS not in df.columns:
        return 0
    return int((~df[Experiment.STATUS].astype(bool)).sum())


@given(stored=ROWS, added=ROWS, json_format=st.booleans())
def test_failed_rows_counted_without_a_dataframe_match_the_dataframe(stored, added, json_format):
    """Rows with status True, False, None (missing) or no status at all; stored, reloaded, then added to."""
    cls, suffix = (JSONLabNotebook, ".json") if json_format else (HDF5LabNotebook, ".h5")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / f"nb{suffix}")
        with cls(path, create=True) as nb:
            for i, status in enumerate(stored):
                nb.addResult(_row(i, status))
        reread = cls(path, readonly=True).current().dataframe()
        nb = cls(path)
        rs = nb.current()
        before = rs.numberOfFailedResults()  # from the stored rows, before any DataFrame exists
        for i, status in enumerate(added):
            rs.addSingleResult(_row(len(stored) + i, status))
        after = rs.numberOfFailedResults()
        df = rs.dataframe()
        nb.close()
    # A missing status (None, or no status key in a set that has the column) shows as False: failed.
    has_status = any(s != "absent" for s in stored)
    assert before == (sum(s is not True for s in stored) if has_status else 0) == _failed_in_frame(reread)
    assert after == _failed_in_frame(df)
    assert after == rs.numberOfFailedResults()  # and the same once the DataFrame is cached


def test_reading_counts_imports_no_pandas_and_the_dataframe_then_is_exact(tmp_path):
    path = tmp_path / "nb.h5"
    with HDF5LabNotebook(str(path), create=True) as nb:
        _fill(nb, [(6, 2, 1)])
        expected = nb.resultSet("s0").dataframe()
    code = f"""
import json, sys
from epyclab import HDF5LabNotebook
nb = HDF5LabNotebook({str(path)!r}, readonly=True)
rs = nb.resultSet("s0")
counts = [rs.numberOfResults(), rs.numberOfFailedResults(), rs.numberOfPendingResults()]
light = "pandas" not in sys.modules
rs.dataframe().to_pickle({str(tmp_path / "frame.pkl")!r})
print(json.dumps({{"counts": counts, "light": light}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["counts"] == [6, 2, 1]
    assert got["light"]
    pd.testing.assert_frame_equal(pd.read_pickle(tmp_path / "frame.pkl"), expected, check_exact=True)
