"""The transport registry and the one death policy of ParallelLab and ClusterLab."""

from __future__ import annotations

import pytest
from conftest_parallel import ExitsAt

from epyclab.experiment import Experiment
from epyclab.labs.clusterlab import ClusterLab
from epyclab.labs.parallel import ParallelLab
from epyclab.labs.transports.contract import Settings, makeTransport, transportEntry, transportNames
from epyclab.labs.transports.deaths import RETRIES, DeathPolicy
from epyclab.notebooks.labnotebook import LabNotebook


def test_every_registered_transport_is_named_lazily_and_loads() -> None:
    for name in transportNames():
        entry = transportEntry(name)
        assert ":" in entry.cls
        cls = entry.load()
        for method in ("begin", "submit", "capacity", "engines", "check", "end", "close"):
            assert callable(getattr(cls, method)), (name, method)


def test_an_unknown_transport_is_refused_naming_those_there_are() -> None:
    with pytest.raises(ValueError, match=r"no backend 'nope'; choose one of \[.*'fork'.*'ipyparallel'"):
        makeTransport("nope", Settings(1))


def test_both_labs_share_one_death_policy() -> None:
    assert ParallelLab.Retries == ClusterLab.Retries == RETRIES
    policy = DeathPolicy(RETRIES)
    # A point that kills every worker costs Retries + 1 of them.
    assert [policy.after(d).again for d in range(1, RETRIES + 3)] == [True] * RETRIES + [False, False]
    assert policy.maxDeaths() == RETRIES + 1
    # Deaths from outside do not count, up to a bound that still ends a sweep killed over and over.
    assert policy.after(0, outside=policy.outside_retries).again
    assert not policy.after(0, outside=policy.outside_retries + 1).again


def test_a_lab_with_more_retries_runs_a_poison_point_more_times() -> None:
    lab = ParallelLab(LabNotebook(), cores=1, backend="fork")
    lab.Retries = 2
    lab["x"] = range(3)
    lab.runExperiment(ExitsAt(1), progress=False)
    df = lab.notebook().dataframe(only_successful=False)
    assert df["x"].tolist() == [0, 1, 2]
    assert "died 3 times" in df[Experiment.EXCEPTION].iloc[1]
    assert lab.lastSweep["replaced"] == 3
