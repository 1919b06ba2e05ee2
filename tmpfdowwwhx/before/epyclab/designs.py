"""Designs turn a parameter space (name -> list of values) into the points to run."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Optional

from epyclab.errors import DesignException

if TYPE_CHECKING:
    from epyclab.experiment import Experiment

__all__ = [
    "Design",
    "FactorialDesign",
    "PointwiseDesign",
    "ExperimentalConfiguration",
]

#: The points of a sweep: pairs of (experiment, point).
ExperimentalConfiguration = list[tuple[Optional["Experiment"], dict[str, Any]]]


class Design:
    """The rule that turns parameter ranges into the points of a sweep.

    Subclasses implement :meth:`experiments`, which must accept ``e=None``
    (used to count points without an experiment at hand).
    """

    def experiments(
        self, e: "Experiment" | None, params: dict[str, list[Any]]
    ) -> ExperimentalConfiguration:
        """Return the experimental configuration: one (experiment, point) pair per point."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement experiments()")


class FactorialDesign(Design):
    """Every combination of the parameter values (the cross product).

    Points come in a fixed order, the first parameter varying slowest, so a
    sweep is reproducible. (epyc shuffled the points; epyclab's parallel labs
    balance load by themselves, so the order is kept.) With no parameters
    there are no points.
    """

    def experiments(
        self, e: "Experiment" | None, params: dict[str, list[Any]]
    ) -> ExperimentalConfiguration:
        names = list(params)
        if not names:
            # No parameters, no points (as in epyc): runExperiment then does nothing.
            return []
        return [
            (e, dict(zip(names, values)))
            for values in itertools.product(*(params[n] for n in names))
        ]


class PointwiseDesign(Design):
    """The i-th values of all parameters together, as for paired samples.

    All ranges must have the same length; a range of a single value is
    repeated to that length. Anything else raises :class:`DesignException`.
    """

    def experiments(
        self, e: "Experiment" | None, params: dict[str, list[Any]]
    ) -> ExperimentalConfiguration:
        lengths = {n: len(r) for n, r in params.items()}
        longer = {n: k for n, k in lengths.items() if k != 1}
        if len(set(longer.values())) > 1:
            described = ", ".join(f"{n}: {k}" for n, k in longer.items())
            raise DesignException(
                f"a pointwise design needs ranges of equal length (or single values); "
                f"got {described}"
            )
        if not params:
            return []
        n_points = next(iter(longer.values()), 1)
        columns = {n: (r * n_points if len(r) == 1 else r) for n, r in params.items()}
        return [(e, {n: columns[n][i] for n in columns}) for i in range(n_points)]
