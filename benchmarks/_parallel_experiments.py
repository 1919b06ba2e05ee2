"""Experiments for benchmarks/parallel.py, in a module so that plain ipyparallel can run them too."""

from __future__ import annotations

from typing import Any

from epyclab.experiment import Experiment


class Trivial(Experiment):
    """Costs next to nothing: measures the machinery, not the work."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": 2 * params["x"]}


def burn(n: int) -> int:
    """Pure-Python CPU work (holds the GIL, so only processes run it in parallel)."""
    s = 0
    for i in range(n):
        s += i * i % 7
    return s


class CpuBound(Experiment):
    """Runs :func:`burn` for ``n`` iterations (calibrated to ~0.25 s by the benchmark)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"s": burn(self.n)}


def double(x: int) -> int:
    """The bare function of the raw ipyparallel floor."""
    return 2 * x
