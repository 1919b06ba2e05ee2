"""Results of every kind a persistent notebook must round-trip, shared by the HDF5 and JSON tests."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from epyclab.experiment import Experiment

T0 = datetime(2024, 2, 29, 12, 30, 15, 123456)

#: One value per kind the issue lists, each under its own result key.
VALUES: dict[str, list[Any]] = {
    "text": ["", "plain", "ünïcødé ☃ 中文 🙂", "x" * 100_000, "line\nbreak\ttab"],
    "int": [0, -1, 2**62, -(2**63), 7],
    "float": [0.0, -1.5, 1e300, math.inf, -math.inf],
    "nan": [math.nan, 1.0, math.nan, 2.5, math.nan],
    "complex": [1 + 2j, -0.5j, complex(math.inf, 1), 0j, 3 + 0j],
    "bool": [True, False, True, True, False],
    "when": [T0 + timedelta(microseconds=i) for i in range(5)],
    "vector": [np.arange(3.0), np.linspace(0, 1, 7), np.array([]), np.array([1e-300]), np.full(2, np.nan)],
    "matrix": [np.arange(6).reshape(2, 3), np.eye(2, dtype=int), np.zeros((0, 4), dtype=int),
               np.arange(24).reshape(2, 3, 4), np.array(5)],
    "numbers": [[1.0, 2.0], [], [0.5], [1e10, -1e10, 3.0], [2.0]],
    "ints": [[1, 2, 3], [4], [], [5, 6], [7, 8, 9, 10]],
    "f32": [np.float32(1.5), np.float32(-2.25), np.float32(0), np.float32(1e-3), np.float32(7)],
    "i8": [np.int8(1), np.int8(-128), np.int8(127), np.int8(0), np.int8(3)],
}


def results_dict(i: int, ok: bool = True, **results: Any) -> dict[str, Any]:
    """A results dict as an experiment's run produces it (standard metadata included)."""
    start = T0 + timedelta(seconds=i)
    return {
        Experiment.PARAMETERS: {"n": i, "name": f"point-{i}"},
        Experiment.METADATA: {
            Experiment.EXPERIMENT: "tests.Walk",
            Experiment.START_TIME: start,
            Experiment.END_TIME: start + timedelta(milliseconds=3),
            Experiment.ELAPSED_TIME: 0.003,
            Experiment.SETUP_TIME: 0.0,
            Experiment.EXPERIMENT_TIME: 0.003,
            Experiment.TEARDOWN_TIME: 0.0,
            Experiment.STATUS: ok,
            Experiment.EXCEPTION: None if ok else ValueError(f"unlucky {i} ✗"),
            Experiment.TRACEBACK: "" if ok else "Traceback (most recent call last):\n  ...\nValueError",
        },
        Experiment.RESULTS: results if ok else {},
    }


def every_kind_rows() -> list[dict[str, Any]]:
    """Rows holding every kind, with a failed run and rows lacking some keys."""
    rows = []
    for i in range(5):
        res = {k: v[i] for k, v in VALUES.items()}
        if i == 2:
            # Keys missing from a row: their cells read as the column's missing value.
            for k in ("text", "int", "complex", "when", "vector", "numbers", "bool"):
                del res[k]
        rows.append(results_dict(i, **res))
    rows.append(results_dict(5, ok=False))
    return rows


def late_key_rows(n: int = 1000) -> list[dict[str, Any]]:
    """``n`` rows, then rows that bring a new key (of several kinds)."""
    rows = [results_dict(i, y=float(i)) for i in range(n)]
    rows += [
        results_dict(n, y=1.0, late=3, late_text="arrived", late_time=T0),
        results_dict(n + 1, y=2.0, late=4, late_text="again", late_time=T0),
        results_dict(n + 2, y=3.0),
    ]
    return rows


def snapshot(nb: Any) -> dict[str, Any]:
    """Everything a notebook holds that must survive a round trip, in comparable form."""
    out: dict[str, Any] = {
        "description": nb.description(),
        "locked": nb.isLocked(),
        "current": nb.currentTag(),
        "tags": nb.keys(),
        "sets": {},
    }
    for tag in nb.keys():
        rs = nb.resultSet(tag)
        out["sets"][tag] = {
            "frame": rs.dataframe(),
            "description": rs.description(),
            "locked": rs.isLocked(),
            "attributes": {k: (type(rs[k]).__name__, rs[k]) for k in rs.keys()},
            "pending": {j: rs.pendingResultParameters(j) for j in rs.pendingResults()},
            "roles": (rs.parameterNames(), rs.resultNames(), rs.metadataNames()),
        }
    return out


def assert_same_snapshot(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Fail, naming the difference, unless two snapshots hold the same notebook."""
    import pandas.testing

    assert after["tags"] == before["tags"]
    for key in ("description", "locked", "current"):
        assert after[key] == before[key], key
    for tag, b in before["sets"].items():
        a = after["sets"][tag]
        pandas.testing.assert_frame_equal(a["frame"], b["frame"], obj=f"result set {tag!r}")
        _assert_same_cells(a["frame"], b["frame"])
        for key in ("description", "locked", "attributes", "pending", "roles"):
            assert a[key] == b[key], f"{tag}: {key}"


def _assert_same_cells(a: Any, b: Any) -> None:
    """assert_frame_equal compares array cells by value only: compare their dtype and type too."""
    for name in b.columns:
        if b[name].dtype != object:
            continue
        for x, y in zip(a[name], b[name]):
            assert type(x) is type(y), (name, x, y)
            if isinstance(y, np.ndarray):
                assert x.dtype == y.dtype and x.shape == y.shape, (name, x, y)
