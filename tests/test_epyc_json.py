"""JSON notebooks written by epyc 1.7 open: every set, attribute, failed row and pending result; the first
write converts the file and keeps the original beside it."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from epyclab import JSONLabNotebook
from epyclab.experiment import Experiment

REPO = Path(__file__).resolve().parent.parent


def _fixture() -> Path:
    """The epyc 1.7.2 JSON fixture, kept in the repository (tests/fixtures/README.md says how it was made)."""
    return REPO / "tests" / "fixtures" / "epyc-1.7.2-notebook.json"


FIXTURE = _fixture()


@pytest.fixture
def epyc_json(tmp_path) -> Path:
    path = tmp_path / "epyc.json"
    shutil.copyfile(FIXTURE, path)
    return path


def test_every_set_attribute_failed_row_and_pending_result_reads(epyc_json):
    nb = JSONLabNotebook(epyc_json, readonly=True)
    assert nb.keys() == [JSONLabNotebook.DEFAULT_RESULTSET, "walks", "repeated", "paths", "pending"]
    assert nb.currentTag() == "walks" and nb.description() == "written by epyc 1.7.2"

    walks = nb.dataframe("walks", only_successful=False)
    assert len(walks) == 12 and len(nb.dataframe("walks")) == 9
    assert set(zip(walks["n"], walks["seed"])) == {(n, s) for n in (5, 10, 13, 20) for s in (1, 2, 3)}
    assert walks["n"].dtype == np.int64 and walks["final"].dtype == np.int64
    assert walks["mean"].dtype == np.float64 and walks["hit"].dtype == bool
    assert walks[Experiment.START_TIME].dtype.kind == "M"
    assert walks[Experiment.START_TIME].iloc[0] == datetime.fromisoformat(
        json.loads(FIXTURE.read_text())["resultsets"]["walks"]["results"][0]["metadata"][Experiment.START_TIME]
    )
    failed = walks[~walks[Experiment.STATUS].astype(bool)]
    assert set(failed["n"]) == {13} and set(failed[Experiment.EXCEPTION]) == {"unlucky n"}
    assert all("ValueError: unlucky n" in tb for tb in failed[Experiment.TRACEBACK])
    rs = nb.resultSet("walks")
    assert rs["note"] == "an attribute on a result set" and rs.description() == "random walks"
    assert rs.parameterNames() == ["n", "seed"] and set(rs.resultNames()) == {"final", "mean", "label", "hit"}

    repeated = nb.dataframe("repeated")
    assert sorted(repeated["epyc.experiment.rep"]) == [0, 1, 2]
    assert set(repeated["epyc.experiment.repetitions"]) == {3}

    paths = nb.dataframe("paths")
    assert sorted(paths["n"]) == [4, 6] and sorted(paths["total"]) == [24.0, 36.0]
    assert all(list(p) == [0.0, 1.0, 2.0, 3.0] for p in paths["path"])

    assert nb.pendingResults("pending") == ["job-1", "job-2"]
    assert nb.pendingResultParameters("job-2") == {"n": 200, "seed": 2}
    assert nb.numberOfResults(JSONLabNotebook.DEFAULT_RESULTSET) == 0


def test_opening_without_a_change_leaves_the_epyc_file_alone(epyc_json):
    before = epyc_json.read_bytes()
    JSONLabNotebook(epyc_json).close()
    assert epyc_json.read_bytes() == before
    assert sorted(p.name for p in epyc_json.parent.iterdir()) == ["epyc.json"]


def test_the_first_write_converts_and_keeps_the_original(epyc_json):
    before = epyc_json.read_bytes()
    nb = JSONLabNotebook(epyc_json)
    nb.resolvePendingResult(
        {Experiment.PARAMETERS: {"n": 100, "seed": 1}, Experiment.METADATA: {Experiment.STATUS: True},
         Experiment.RESULTS: {"final": 7, "mean": 0.5, "label": "walk of 100", "hit": True}},
        "job-1",
    )
    nb.close()
    backup = epyc_json.parent / "epyc.json.epyc1.bak"
    assert backup.read_bytes() == before
    assert json.loads(epyc_json.read_text())["format"] == "epyclab-notebook"
    nb = JSONLabNotebook(epyc_json, readonly=True)
    assert nb.pendingResults("pending") == ["job-2"] and nb.numberOfResults("pending") == 1
    assert len(nb.dataframe("walks", only_successful=False)) == 12
    assert nb.resultSet("walks")["note"] == "an attribute on a result set"
    assert nb.currentTag() == "walks"
