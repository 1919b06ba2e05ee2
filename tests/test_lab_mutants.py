"""The sequential Lab's defaults and resume keys, as a user meets them.

- by default a lab commits after every 1000 results (``Lab.CommitEvery``),
  and ``commitEvery=1`` (commit every result) is allowed;
- by default what a run printed is stored with its row, and shown once (as
  it is written), not replayed a second time;
- a sweep of one point records where it ran (provenance) as a longer one does;
- resume recognises a point whatever order its parameters were given in, and
  points holding unhashable values (lists) too.
"""

from __future__ import annotations

from typing import Any

import pytest

from epyclab.combinators import RepeatedExperiment
from epyclab.experiment import Experiment
from epyclab.labs.capture import OUTPUT
from epyclab.labs.lab import Lab, point_key
from epyclab.notebooks.labnotebook import LabNotebook


class Sizes(LabNotebook):
    """Notes how many results the current set held at each commit."""

    def __init__(self) -> None:
        super().__init__("sizes")
        self.at: list[int] = []

    def commit(self) -> None:
        super().commit()
        self.at.append(self.current().numberOfResults())


class Double(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": 2 * params["x"]}


class Echo(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": 0.0 if params["x"] is None else params["x"]}


class Talks(Experiment):
    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        print(f"working on {params['x']}")
        return {"y": params["x"]}


def test_by_default_a_lab_commits_after_every_1000_results() -> None:
    nb = Sizes()
    # A long interval, so only the count decides (the default interval is 5 s of wall time).
    lab = Lab(nb, commitInterval=3600)
    lab["x"] = range(2001)
    lab.runExperiment(Double(), progress=False)
    assert nb.at[:2] == [1000, 2000] and nb.at[-1] == 2001


def test_commit_every_1_commits_every_result_and_0_is_refused() -> None:
    nb = Sizes()
    lab = Lab(nb, commitEvery=1, commitInterval=3600)
    lab["x"] = range(3)
    lab.runExperiment(Double(), progress=False)
    assert nb.at[:3] == [1, 2, 3]
    with pytest.raises(ValueError, match="commitEvery must be at least 1"):
        Lab(LabNotebook(), commitEvery=0)


def test_a_runs_output_is_stored_with_its_row_and_shown_once(capsys: pytest.CaptureFixture[str]) -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [3]
    lab.runExperiment(Talks(), progress=False)
    assert capsys.readouterr().out.count("working on 3") == 1
    assert nb.dataframe()[OUTPUT].tolist() == ["working on 3\n"]


def test_a_sweep_of_one_point_records_its_provenance() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [1]
    lab.runExperiment(Double(), progress=False)
    rs = nb.current()
    assert rs["epyclab.provenance.experiment.class"].endswith("Double")


def test_a_point_key_ignores_the_order_of_parameters_and_takes_lists() -> None:
    assert point_key({"b": 1, "a": [1, 2]}) == point_key({"a": [1, 2], "b": 1.0})
    assert point_key({"a": [1, 2]}) != point_key({"a": [2, 1]})
    assert len({point_key({"a": [1, 2]}), point_key({"a": [1, 2]})}) == 1
    assert point_key({"a": 1, "b": 2}, names=["b"]) == (("b", 2),)


def test_resume_skips_points_with_list_values_done_before() -> None:
    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [1, 2]
    lab["v"] = [[1, 2]]  # one value: the list [1, 2] (unhashable)
    lab.runExperiment(Double(), progress=False)
    lab["x"] = [1, 2, 3]
    lab.runExperiment(Double(), resume=True, progress=False)
    assert sorted(nb.dataframe()["x"].tolist()) == [1, 2, 3]


def test_every_row_of_a_point_carries_its_sweep_and_place() -> None:
    from epyclab.order import POINT, SWEEP

    nb = LabNotebook()
    lab = Lab(nb)
    lab["x"] = [10, 20]
    lab.runExperiment(RepeatedExperiment(Double(), 2), progress=False)  # two rows per point
    df = nb.dataframe()
    assert len(df) == 4
    assert df[SWEEP].nunique() == 1 and df[SWEEP].notna().all()
    assert sorted(zip(df["x"], df[POINT])) == [(10, 0), (10, 0), (20, 1), (20, 1)]


def test_resume_counts_a_none_parameter_done_though_it_reads_back_as_nan(tmp_path) -> None:
    from epyclab import HDF5LabNotebook

    path = str(tmp_path / "nb.h5")
    nb = HDF5LabNotebook(path, create=True)
    lab = Lab(nb)
    lab["x"] = [1.5, None]
    lab.runExperiment(Echo(), progress=False)
    nb.close()
    nb = HDF5LabNotebook(path)
    lab = Lab(nb)
    lab["x"] = [1.5, None, 2.5]
    design = lab.experiments(Echo())
    assert [design[i][1]["x"] for i in lab.unfinishedIndices(design)] == [2.5]
    nb.close()
