"""Experiments that wrap other experiments: repetition and summary statistics."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from epyclab import seeding
from epyclab.errors import SummaryError
from epyclab.experiment import Experiment, ExperimentalParameters, ResultsDict

__all__ = [
    "ExperimentCombinator",
    "RepeatedExperiment",
    "SummaryExperiment",
    "flatten_results",
    "innermost",
]


def flatten_results(rc: ResultsDict) -> list[ResultsDict]:
    """Return the leaf results dicts of ``rc``, however deeply its results nest."""
    res = rc[Experiment.RESULTS]
    if isinstance(res, list):
        return [leaf for inner in res for leaf in flatten_results(inner)]
    return [rc]


def innermost(ex: Experiment) -> Experiment:
    """The experiment that does the work: ``ex`` itself, or the one at the bottom of its combinators.

    Follows :meth:`ExperimentCombinator.experiment` through any nesting
    (``SummaryExperiment(RepeatedExperiment(MyExperiment(), 10))`` gives the
    ``MyExperiment``); provenance names this one, since it is the user's code.
    """
    while isinstance(ex, ExperimentCombinator):
        ex = ex.experiment()
    return ex


class ExperimentCombinator(Experiment):
    """An experiment that runs another one; configuration passes through to it."""

    def __init__(self, ex: Experiment) -> None:
        super().__init__()
        self._experiment = ex

    def experiment(self) -> Experiment:
        """The wrapped experiment."""
        return self._experiment

    def configure(self, params: Mapping[str, Any]) -> None:
        super().configure(params)
        self._experiment.set(params)

    def deconfigure(self) -> None:
        # The wrapped experiment deconfigures itself when set() moves it on.
        super().deconfigure()

    def _seedWrapped(self, seed: int | None) -> None:
        # The wrapped experiment runs with this run's seed, so the row's recorded seed reruns it all.
        self._experiment.setPointSeed(seed)

    def _classname(self) -> str:
        # Name the experiment doing the work, not only the wrapper, so results of
        # different wrapped experiments stay distinguishable in a notebook.
        inner = self.experiment()
        name = inner._classname() if isinstance(inner, ExperimentCombinator) else _name_of(type(inner))
        return f"{super()._classname()}({name})"


class RepeatedExperiment(ExperimentCombinator):
    """Run an experiment N times at the same point.

    The results are the list of the N underlying results dicts, each with the
    metadata :attr:`REPETITIONS` (N) and :attr:`I` (its index, from 0).
    """

    REPETITIONS = "epyc.experiment.repetitions"
    I = "epyc.experiment.rep"  # noqa: E741 (the name is epyc's)

    def __init__(self, ex: Experiment, N: int) -> None:
        if not isinstance(N, numbers.Integral) or N < 1:
            raise ValueError(f"RepeatedExperiment needs a positive whole number of repetitions, got {N!r}")
        super().__init__(ex)
        self._repetitions = int(N)

    def repetitions(self) -> int:
        """The number of repetitions."""
        return self._repetitions

    def do(self, params: ExperimentalParameters) -> list[ResultsDict]:
        ex = self.experiment()
        seed = self.pointSeed()
        out = []
        for i in range(self._repetitions):
            # Each repetition its own stream, a child of the point's: its row records it.
            ex.setPointSeed(None if seed is None else seeding.childSeed(seed, i))
            rc = ex.run()
            rc[Experiment.METADATA][RepeatedExperiment.REPETITIONS] = self._repetitions
            rc[Experiment.METADATA][RepeatedExperiment.I] = i
            out.append(rc)
        return out


class SummaryExperiment(ExperimentCombinator):
    """Run an experiment and reduce its (repeated) results to summary statistics.

    For each numeric result ``k`` of the successful underlying runs the results
    are ``k_mean``, ``k_median``, ``k_variance`` (population variance, as
    ``numpy.var``), ``k_min`` and ``k_max``. ``summarised_results`` restricts
    the summary to the named results. The metadata records how many underlying
    results there were and how many succeeded. If none succeeded, the summary
    run fails, with the first underlying exception in its message.
    """

    UNDERLYING_RESULTS = "epyc.summaryexperiment.repetitions"
    UNDERLYING_SUCCESSFUL_RESULTS = "epyc.summaryexperiment.successful_repetitions"

    MEAN_SUFFIX = "_mean"
    MEDIAN_SUFFIX = "_median"
    VARIANCE_SUFFIX = "_variance"
    MIN_SUFFIX = "_min"
    MAX_SUFFIX = "_max"

    def __init__(self, ex: Experiment, summarised_results: list[str] | None = None) -> None:
        super().__init__(ex)
        self._summarised = None if summarised_results is None else list(summarised_results)
        self._counts = (0, 0)

    def do(self, params: ExperimentalParameters) -> dict[str, Any]:
        leaves = flatten_results(self.experiment().run())
        good = [rc for rc in leaves if rc[Experiment.METADATA].get(Experiment.STATUS, False)]
        self._counts = (len(leaves), len(good))
        if not good:
            first = next(iter(leaves), None)
            why = "" if first is None else f": {first[Experiment.METADATA].get(Experiment.EXCEPTION)}"
            raise SummaryError(f"all {len(leaves)} underlying runs failed{why}")
        return self.summarise(good)

    def summarise(self, results: list[ResultsDict]) -> dict[str, Any]:
        """Return the summary statistics of a list of successful results dicts (override point)."""
        names = self._summarised
        if names is None:
            names = []
            for rc in results:
                for k, v in rc[Experiment.RESULTS].items():
                    if k not in names and _is_number(v):
                        names.append(k)
        summary: dict[str, Any] = {}
        for k in names:
            values = np.array(
                [rc[Experiment.RESULTS][k] for rc in results if _is_number(rc[Experiment.RESULTS].get(k))],
                dtype=float,
            )
            if len(values) == 0:
                if self._summarised is not None:
                    # A name the user asked for that no run produced is most
                    # likely a typo: say so rather than leave it out silently.
                    available = sorted({n for rc in results for n in rc[Experiment.RESULTS]})
                    raise SummaryError(
                        f"summarised result {k!r} has no numeric value in any successful run "
                        f"(results are: {available})"
                    )
                continue
            summary[self._mean(k)] = float(np.mean(values))
            summary[self._median(k)] = float(np.median(values))
            summary[self._variance(k)] = float(np.var(values))
            summary[self._min(k)] = float(np.min(values))
            summary[self._max(k)] = float(np.max(values))
        return summary

    # The summary names of result k, as epyc names them (a summarise() written for epyc calls these).

    def _mean(self, k: str) -> str:
        return k + self.MEAN_SUFFIX

    def _median(self, k: str) -> str:
        return k + self.MEDIAN_SUFFIX

    def _variance(self, k: str) -> str:
        return k + self.VARIANCE_SUFFIX

    def _min(self, k: str) -> str:
        return k + self.MIN_SUFFIX

    def _max(self, k: str) -> str:
        return k + self.MAX_SUFFIX

    def report(self, params: ExperimentalParameters, meta: dict[str, Any], res: Any) -> ResultsDict:
        rc = super().report(params, meta, res)
        total, good = self._counts
        rc[Experiment.METADATA][SummaryExperiment.UNDERLYING_RESULTS] = total
        rc[Experiment.METADATA][SummaryExperiment.UNDERLYING_SUCCESSFUL_RESULTS] = good
        self._counts = (0, 0)
        return rc


def _name_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
