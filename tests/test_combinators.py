"""Combinators: wrapping, repetition and summary statistics."""

from __future__ import annotations

import numpy as np
import pytest

from epyclab.combinators import ExperimentCombinator, RepeatedExperiment, SummaryExperiment
from epyclab.errors import SummaryError
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab


class Sequence(Experiment):
    """Returns the next of a fixed sequence of values at each run; fails where the value is None."""

    def __init__(self, values) -> None:
        super().__init__()
        self.values = list(values)
        self.i = 0

    def do(self, params):
        v = self.values[self.i % len(self.values)]
        self.i += 1
        if v is None:
            raise ValueError(f"no value at run {self.i - 1}")
        return {"v": v, "twice": 2 * v, "label": f"run{self.i}", "flag": True}


class Echo(Experiment):
    def do(self, params):
        return {"y": params["x"] * 10}


DATA = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]

# ---- ExperimentCombinator -----------------------------------------------------------


def test_combinator_returns_the_wrapped_experiment():
    inner = Echo()
    assert ExperimentCombinator(inner).experiment() is inner


def test_combinator_passes_configuration_through():
    inner = Echo()
    c = ExperimentCombinator(inner)
    c.set({"x": 2})
    assert inner.parameters() == {"x": 2}
    c.set({"x": 3})
    assert inner.parameters() == {"x": 3}
    assert c.parameters() == {"x": 3}


def test_combinator_configure_and_deconfigure_reach_the_wrapped_experiment():
    calls = []

    class Watched(Echo):
        def configure(self, params):
            super().configure(params)
            calls.append(("configure", dict(params)))

        def deconfigure(self):
            super().deconfigure()
            calls.append(("deconfigure",))

    c = ExperimentCombinator(Watched())
    c.set({"x": 1})
    c.set({"x": 2})
    assert calls == [("configure", {"x": 1}), ("deconfigure",), ("configure", {"x": 2})]


# ---- RepeatedExperiment -----------------------------------------------------------------


def test_repeated_runs_n_times_with_repetition_metadata():
    rep = RepeatedExperiment(Sequence(DATA), 5)
    assert rep.repetitions() == 5
    rc = rep.set({"x": 1}).run()
    assert rc[Experiment.METADATA][Experiment.STATUS] is True
    runs = rc[Experiment.RESULTS]
    assert isinstance(runs, list) and len(runs) == 5
    assert [r[Experiment.RESULTS]["v"] for r in runs] == DATA[:5]
    assert [r[Experiment.METADATA][RepeatedExperiment.I] for r in runs] == list(range(5))
    assert all(r[Experiment.METADATA][RepeatedExperiment.REPETITIONS] == 5 for r in runs)
    assert all(r[Experiment.PARAMETERS] == {"x": 1} for r in runs)


def test_repeated_keeps_failed_repetitions_as_failed_results():
    rc = RepeatedExperiment(Sequence([1.0, None, 3.0]), 3).set({"x": 1}).run()
    statuses = [r[Experiment.METADATA][Experiment.STATUS] for r in rc[Experiment.RESULTS]]
    assert statuses == [True, False, True]
    failed = rc[Experiment.RESULTS][1]
    assert failed[Experiment.METADATA][RepeatedExperiment.I] == 1
    assert "no value at run 1" in str(failed[Experiment.METADATA][Experiment.EXCEPTION])


@pytest.mark.parametrize("n", [0, -1, 2.5, "3"])
def test_repeated_refuses_a_bad_number_of_repetitions(n):
    with pytest.raises(ValueError, match="repetitions"):
        RepeatedExperiment(Echo(), n)


def test_repeated_in_a_lab_stores_one_row_per_repetition():
    lab = Lab()
    lab["x"] = [1, 2]
    lab.runExperiment(RepeatedExperiment(Echo(), 3), progress=False)
    df = lab.dataframe()
    assert len(df) == 6
    assert sorted(df["x"]) == [1, 1, 1, 2, 2, 2]
    assert (df["y"] == df["x"] * 10).all()
    assert sorted(df[RepeatedExperiment.I]) == [0, 0, 1, 1, 2, 2]
    assert (df[RepeatedExperiment.REPETITIONS] == 3).all()


def test_nested_repetitions_flatten_into_rows():
    lab = Lab()
    lab["x"] = [1]
    lab.runExperiment(RepeatedExperiment(RepeatedExperiment(Echo(), 2), 3), progress=False)
    assert lab.notebook().numberOfResults() == 6
    assert (lab.dataframe()["y"] == 10).all()


# ---- SummaryExperiment ---------------------------------------------------------------------


def _summary_of(values, n=None, **kwargs):
    n = len(values) if n is None else n
    s = SummaryExperiment(RepeatedExperiment(Sequence(values), n), **kwargs)
    return s.set({"x": 1}).run()


def test_summary_statistics_match_numpy():
    rc = _summary_of(DATA)
    res = rc[Experiment.RESULTS]
    data = np.array(DATA)
    assert res["v" + SummaryExperiment.MEAN_SUFFIX] == pytest.approx(np.mean(data))
    assert res["v" + SummaryExperiment.MEDIAN_SUFFIX] == pytest.approx(np.median(data))
    assert res["v" + SummaryExperiment.VARIANCE_SUFFIX] == pytest.approx(np.var(data))
    assert res["v" + SummaryExperiment.MIN_SUFFIX] == 1.0
    assert res["v" + SummaryExperiment.MAX_SUFFIX] == 9.0
    assert res["twice_mean"] == pytest.approx(2 * np.mean(data))


def test_summary_suffixes_are_the_documented_ones():
    assert (SummaryExperiment.MEAN_SUFFIX, SummaryExperiment.MEDIAN_SUFFIX, SummaryExperiment.VARIANCE_SUFFIX,
            SummaryExperiment.MIN_SUFFIX, SummaryExperiment.MAX_SUFFIX) == (
        "_mean", "_median", "_variance", "_min", "_max")


def test_summary_ignores_non_numeric_results():
    res = _summary_of(DATA)[Experiment.RESULTS]
    assert not any(k.startswith(("label", "flag")) for k in res)
    assert set(res) == {f"{k}_{s}" for k in ("v", "twice") for s in ("mean", "median", "variance", "min", "max")}


def test_summary_uses_only_successful_runs_and_counts_them():
    values = [1.0, None, 3.0, None, 8.0]
    rc = _summary_of(values)
    meta, res = rc[Experiment.METADATA], rc[Experiment.RESULTS]
    good = np.array([1.0, 3.0, 8.0])
    assert meta[Experiment.STATUS] is True
    assert meta[SummaryExperiment.UNDERLYING_RESULTS] == 5
    assert meta[SummaryExperiment.UNDERLYING_SUCCESSFUL_RESULTS] == 3
    assert res["v_mean"] == pytest.approx(good.mean())
    assert res["v_variance"] == pytest.approx(good.var())
    assert res["v_median"] == 3.0


def test_summary_restricted_to_named_results():
    res = _summary_of(DATA, summarised_results=["twice"])[Experiment.RESULTS]
    assert set(res) == {"twice_mean", "twice_median", "twice_variance", "twice_min", "twice_max"}
    assert res["twice_max"] == 18.0


def test_summary_when_every_run_failed_is_a_failed_result():
    rc = _summary_of([None, None, None])
    meta = rc[Experiment.METADATA]
    assert meta[Experiment.STATUS] is False
    assert isinstance(meta[Experiment.EXCEPTION], SummaryError)
    assert "all 3 underlying runs failed" in str(meta[Experiment.EXCEPTION])
    assert "no value at run 0" in str(meta[Experiment.EXCEPTION])
    assert meta[SummaryExperiment.UNDERLYING_RESULTS] == 3
    assert meta[SummaryExperiment.UNDERLYING_SUCCESSFUL_RESULTS] == 0
    assert rc[Experiment.RESULTS] == {}


def test_summary_of_a_single_run_has_zero_variance():
    rc = SummaryExperiment(Sequence([4.0])).set({"x": 1}).run()
    res = rc[Experiment.RESULTS]
    assert res["v_mean"] == res["v_median"] == res["v_min"] == res["v_max"] == 4.0
    assert res["v_variance"] == 0.0
    assert rc[Experiment.METADATA][SummaryExperiment.UNDERLYING_RESULTS] == 1


def test_summary_flattens_nested_repetitions():
    rc = SummaryExperiment(RepeatedExperiment(RepeatedExperiment(Sequence(DATA[:6]), 2), 3)).set({"x": 1}).run()
    assert rc[Experiment.METADATA][SummaryExperiment.UNDERLYING_RESULTS] == 6
    assert rc[Experiment.RESULTS]["v_mean"] == pytest.approx(np.mean(DATA[:6]))


def test_an_epyc_style_summarise_names_its_statistics_with_the_name_helpers():
    # epyc's own summarise names its results with _mean(k) and friends; an override written for it runs here.
    class Extremes(SummaryExperiment):
        def summarise(self, results):
            vs = [rc[Experiment.RESULTS]["v"] for rc in results]
            names = [self._mean("v"), self._median("v"), self._variance("v"), self._min("v"), self._max("v")]
            return dict(zip(names, [0, 0, 0, min(vs), max(vs)]))

    rc = Extremes(RepeatedExperiment(Sequence(DATA), 8)).set({"x": 1}).run()
    assert rc[Experiment.RESULTS] == {"v_mean": 0, "v_median": 0, "v_variance": 0,
                                      "v_min": min(DATA), "v_max": max(DATA)}


def test_summarise_is_the_override_point():
    class Range(SummaryExperiment):
        def summarise(self, results):
            vs = [rc[Experiment.RESULTS]["v"] for rc in results]
            return {"spread": max(vs) - min(vs)}

    rc = Range(RepeatedExperiment(Sequence(DATA), 8)).set({"x": 1}).run()
    assert rc[Experiment.RESULTS] == {"spread": 8.0}


def test_summary_in_a_lab_stores_one_row_per_point():
    lab = Lab()
    lab["x"] = [1, 2, 3]
    lab.runExperiment(SummaryExperiment(RepeatedExperiment(Echo(), 4)), progress=False)
    df = lab.dataframe()
    assert len(df) == 3
    assert list(df["y_mean"]) == [10.0, 20.0, 30.0]
    assert (df["y_variance"] == 0.0).all()
    assert (df[SummaryExperiment.UNDERLYING_RESULTS] == 4).all()


def test_summarising_a_result_no_run_produced_fails_naming_it():
    from epyclab.combinators import RepeatedExperiment, SummaryExperiment
    from epyclab.experiment import Experiment

    class Heads(Experiment):
        def do(self, params):
            return {"heads": 3}

    ex = SummaryExperiment(RepeatedExperiment(Heads(), 2), summarised_results=["head"])
    rc = ex.set({}).run()
    assert rc[Experiment.METADATA][Experiment.STATUS] is False
    assert "'head'" in rc[Experiment.METADATA][Experiment.TRACEBACK]
    assert "heads" in str(rc[Experiment.METADATA][Experiment.EXCEPTION])
