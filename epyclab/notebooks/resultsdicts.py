"""Results dicts in and out of a result set.

A results dict (``{'parameters': ..., 'metadata': ..., 'results': ...}``) is
what an experiment gives and what epyc's API hands back. Here: the shape epyc
also accepts (a failed run's dict without ``results``), rows of a DataFrame back
into results dicts, and the checks a lab makes before adding (a row whose value
cannot be stored becomes a failed row saying why; a sweep whose parameters
cannot be stored is refused before anything runs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from epyclab.errors import CancelledException, EpyclabError, ResultsStructureException, UnstorableValueError
from epyclab.experiment import Experiment, ResultsDict, failed_result
from epyclab.notebooks.rowbuffer import RowBuffer

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["with_results", "describe", "rows_to_results", "failed_in_place", "check_points"]


def with_results(rc: Any) -> Any:
    """``rc`` with empty results if it is a failed results dict with no ``results`` key (epyc writes those)."""
    if (
        type(rc) is dict
        and Experiment.RESULTS not in rc
        and isinstance(rc.get(Experiment.METADATA), dict)
        and rc[Experiment.METADATA].get(Experiment.STATUS) is False
    ):
        return {**rc, Experiment.RESULTS: {}}
    return rc


def describe(rc: Any) -> str:
    """``rc`` named for a message saying it is not a results dict."""
    if isinstance(rc, dict):
        return f"a dict with keys {sorted(map(str, rc))}"
    return f"a {type(rc).__name__}"


def rows_to_results(
    rows: RowBuffer, df: pd.DataFrame, cancelled: Mapping[str, CancelledException]
) -> list[ResultsDict]:
    """Each row of ``df`` (a frame of ``rows``) as a results dict; failed rows have empty results.

    ``cancelled`` maps the stored text of a cancelled job's exception to the exception,
    given back in its place while the session lasts (as epyc does).
    """
    pnames, rnames, mnames = rows.parameterNames(), rows.resultNames(), rows.metadataNames()
    out = []
    for row in df.to_dict("records"):
        meta = {k: row[k] for k in mnames}
        if cancelled and meta.get(Experiment.EXCEPTION) in cancelled:
            meta[Experiment.EXCEPTION] = cancelled[meta[Experiment.EXCEPTION]]
        ok = bool(meta.get(Experiment.STATUS, True))
        out.append({
            Experiment.PARAMETERS: {k: row[k] for k in pnames},
            Experiment.METADATA: meta,
            Experiment.RESULTS: {k: row[k] for k in rnames} if ok else {},
        })
    return out


def failed_in_place(rows: RowBuffer, rc: ResultsDict) -> ResultsDict | None:
    """None if ``rc`` can be added to ``rows``; else the failed results dict to add in its place.

    The failed row keeps the parameters and the storable metadata, has status
    False and, as its exception, the error naming the key, value and type.
    Nothing is added.
    """
    rc = with_results(rc)
    params, meta = rc.get(Experiment.PARAMETERS, {}), rc.get(Experiment.METADATA, {})
    error: EpyclabError
    try:
        # A results key that is also a metadata key (or a column of another role) is the run's
        # problem as much as an unstorable value is.
        rows.checkRoles(params, rc.get(Experiment.RESULTS) or {}, meta)
        rows.trialCheck()(params, rc.get(Experiment.RESULTS) or {}, meta)
        return None
    except (UnstorableValueError, ResultsStructureException) as exc:
        error = exc
    kept = {}
    for k, v in meta.items():
        if k in (Experiment.STATUS, Experiment.EXCEPTION, Experiment.TRACEBACK):
            continue
        try:
            rows.trialCheck()({}, {}, {k: v})
        except UnstorableValueError:
            continue
        kept[k] = v
    failed = failed_result(dict(params), error)
    failed[Experiment.METADATA] = {**failed[Experiment.METADATA], **kept}
    return failed


# Values whose type and equality say all their column's check needs: one checked in a column needs no
# second look there. Others are checked at every point (equal values can be stored differently:
# (1, 2) == (True, 2), and the second is refused).
_ATOMS = frozenset({int, float, str, bool, type(None)})


def check_points(rows: RowBuffer, points: Sequence[Mapping[str, Any]], where: str) -> None:
    """Refuse points whose parameters ``rows`` cannot store; ``where`` names the result set in the message.

    Each distinct value is checked once in its column (:func:`_check_distinct`: a
    factorial design repeats each value at many points); if that refuses, every
    point is checked in turn, which names the first point that cannot be stored.

    Raises:
        UnstorableValueError: a parameter value cannot be stored (the point, key, value and type named).
        ResultsStructureException: a parameter is named like a result or metadata column.
    """
    try:
        _check_distinct(rows, points)
    except (UnstorableValueError, ResultsStructureException):
        # The check point by point is the reference: it raises naming the point (or, if it finds
        # every point storable, the sweep goes on).
        _check_each(rows, points, where)


def _check_distinct(rows: RowBuffer, points: Sequence[Mapping[str, Any]]) -> None:
    """Check each key set's roles once and each distinct value once in its column (see :data:`_ATOMS`).

    The check is per column, and a value admitted into a column fits it as
    the column widens, so this refuses whatever :func:`_check_each` refuses;
    it does not say which point. Columns are gathered per key set and their
    distinct values found in C; each column's values are checked in the
    points' order.
    """
    trial = rows.trialCheck()
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for params in points:
        keys = tuple(params)
        group = groups.get(keys)
        if group is None:
            group = groups[keys] = []
        group.append(params)
    seen: set[tuple[Any, type, Any]] = set()
    for keys, group in groups.items():
        rows.checkRoles(group[0], {}, {})
        for k in keys:
            column = [p[k] for p in group]
            types = list(map(type, column))
            if _ATOMS.issuperset(types):
                values: Any = dict.fromkeys(zip(types, column))
            else:
                values = [(t, v) for t, v in zip(types, column)]
            for t, v in values:
                if t in _ATOMS:
                    if (k, t, v) in seen:
                        continue
                    seen.add((k, t, v))
                trial({k: v}, {}, {})


def _check_each(rows: RowBuffer, points: Sequence[Mapping[str, Any]], where: str) -> None:
    """Check every point in turn; raise naming the first whose parameters ``rows`` cannot store."""
    trial = rows.trialCheck()
    known: dict[Any, None] = {}
    for n, params in enumerate(points):
        # Most sweeps repeat a few key sets: roles are checked once per key set.
        keys = tuple(params)
        try:
            if keys not in known:
                rows.checkRoles(params, {}, {})
                known[keys] = None
            trial(params, {}, {})
        except (UnstorableValueError, ResultsStructureException) as exc:
            fix = (
                "give the parameter values of one kind (see the table of kinds in docs/hdf5-layout.md), "
                "or run this sweep into a new result set (notebook.addResultSet(tag))"
            )
            raise type(exc)(
                f"{where}: point {n + 1} of {len(points)} ({dict(params)!r}): {exc}. Nothing was run: "
                f"a parameter is kept with every result, failed ones too; {fix}"
            ) from None
