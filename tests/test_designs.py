"""Designs: turning parameter ranges into the points of a sweep."""

from __future__ import annotations

import pytest

from epyclab.designs import Design, FactorialDesign, PointwiseDesign
from epyclab.errors import DesignException, EpyclabError
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab


class Echo(Experiment):
    def do(self, params):
        return {"y": params["x"]}


def _points(config):
    return [p for _, p in config]


# ---- FactorialDesign -----------------------------------------------------------------


def test_factorial_is_the_cross_product():
    points = _points(FactorialDesign().experiments(None, {"a": [1, 2, 3], "b": ["u", "v"]}))
    assert len(points) == 6
    expected = [{"a": a, "b": b} for a in [1, 2, 3] for b in ["u", "v"]]
    assert sorted(points, key=lambda p: (p["a"], p["b"])) == expected


def test_factorial_order_is_reproducible_first_parameter_slowest():
    params = {"a": [1, 2], "b": ["u", "v", "w"]}
    points = _points(FactorialDesign().experiments(None, params))
    assert [(p["a"], p["b"]) for p in points] == [(a, b) for a in [1, 2] for b in ["u", "v", "w"]]
    assert _points(FactorialDesign().experiments(None, params)) == points


def test_factorial_pairs_every_point_with_the_experiment():
    e = Echo()
    config = FactorialDesign().experiments(e, {"x": [1, 2]})
    assert all(ex is e for ex, _ in config)


def test_factorial_accepts_no_experiment():
    config = FactorialDesign().experiments(None, {"x": [1, 2]})
    assert [ex for ex, _ in config] == [None, None]


def test_factorial_points_are_independent_dicts():
    points = _points(FactorialDesign().experiments(None, {"x": [1, 2], "y": [0]}))
    points[0]["x"] = 99
    assert points[1]["x"] == 2


def test_no_parameters_give_no_points_in_either_design():
    # As in epyc: an empty parameter space has no points, so runExperiment does nothing.
    assert FactorialDesign().experiments(None, {}) == []
    assert PointwiseDesign().experiments(None, {}) == []


def test_factorial_leaves_out_a_parameter_with_an_empty_range_as_epyc_does():
    assert FactorialDesign().experiments(None, {"x": [1, 2], "y": []}) == [(None, {"x": 1}), (None, {"x": 2})]
    assert FactorialDesign().experiments(None, {"y": []}) == []


def test_factorial_of_three_parameters_counts_the_product():
    params = {"a": list(range(4)), "b": list(range(3)), "c": [True, False]}
    points = _points(FactorialDesign().experiments(None, params))
    assert len(points) == 24
    assert len({(p["a"], p["b"], p["c"]) for p in points}) == 24


# ---- PointwiseDesign ---------------------------------------------------------------------


def test_pointwise_takes_the_ith_values_together():
    points = _points(PointwiseDesign().experiments(None, {"a": [1, 2, 3], "b": [10, 20, 30]}))
    assert points == [{"a": 1, "b": 10}, {"a": 2, "b": 20}, {"a": 3, "b": 30}]


def test_pointwise_extends_single_values():
    points = _points(PointwiseDesign().experiments(None, {"a": [1, 2, 3], "c": ["k"], "b": [4, 5, 6]}))
    assert points == [{"a": 1, "c": "k", "b": 4}, {"a": 2, "c": "k", "b": 5}, {"a": 3, "c": "k", "b": 6}]


def test_pointwise_of_single_values_is_one_point():
    assert _points(PointwiseDesign().experiments(None, {"a": [1], "b": [2]})) == [{"a": 1, "b": 2}]


def test_pointwise_pairs_every_point_with_the_experiment():
    e = Echo()
    assert all(ex is e for ex, _ in PointwiseDesign().experiments(e, {"x": [1, 2]}))


def test_pointwise_refuses_ranges_of_different_lengths():
    with pytest.raises(DesignException) as info:
        PointwiseDesign().experiments(None, {"a": [1, 2, 3], "b": [1, 2]})
    message = str(info.value)
    assert "a: 3" in message and "b: 2" in message


def test_design_exception_is_an_epyclab_error():
    assert issubclass(DesignException, EpyclabError)


def test_the_base_design_must_be_subclassed():
    with pytest.raises(NotImplementedError):
        Design().experiments(None, {"x": [1]})


def test_a_custom_design_is_used_by_the_lab():
    class Diagonal(Design):
        def experiments(self, e, params):
            return [(e, {"x": v}) for v in params["x"] if v % 2 == 0]

    lab = Lab(design=Diagonal())
    lab["x"] = range(6)
    assert len(lab) == 3
    lab.runExperiment(Echo(), progress=False)
    assert sorted(lab.dataframe()["y"]) == [0, 2, 4]


def test_a_lab_with_a_pointwise_design_runs_the_paired_points():
    lab = Lab(design=PointwiseDesign())
    lab["x"] = [1, 2, 3]
    lab["z"] = [7, 8, 9]
    assert len(lab) == 3
    lab.runExperiment(Echo(), progress=False)
    df = lab.dataframe()
    assert sorted(zip(df["x"], df["z"])) == [(1, 7), (2, 8), (3, 9)]


def test_a_lab_with_a_pointwise_design_reports_mismatched_ranges():
    lab = Lab(design=PointwiseDesign())
    lab["x"] = [1, 2, 3]
    lab["z"] = [7, 8]
    with pytest.raises(DesignException, match="got x: 3, z: 2$"):
        lab.runExperiment(Echo(), progress=False)
    assert lab.notebook().numberOfResults() == 0
