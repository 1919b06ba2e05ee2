"""Rerunning failed points: which rows to rerun, and which rows a rerun replaces.

Storage is append-only (a crash must never lose a row, and the journal only
appends), so a rerun never overwrites the failed row in the file. Instead:

1. :func:`startRerun` picks the failed rows of a result set's current view (all,
   or those whose exception is of a given type, or whose parameters match a
   filter) and records, as a result set attribute ``epyclab.rerun.NNNN`` (JSON),
   which stored rows are being rerun and from which stored row the new results
   will come. It returns the points to run, each with its position in the
   design of the sweep that first ran it.
2. A lab runs them as a sweep (any lab: the rows arrive whenever they arrive),
   marking each new row with that position (``epyclab.lab.point``), so a
   point keeps its design position however often it is rerun.
3. :func:`currentOrder` builds the *current view* that ``ResultSet.dataframe()``
   shows: each replaced row is shown as its replacement, in the old row's place,
   and the replacement carries :data:`HISTORY`, the earlier attempts (exception,
   traceback, seed, times, host) as JSON. The old rows stay in the file and in
   ``ResultSet.storedFrame()``.

A rerun's unit is a point: when one repetition of a :class:`RepeatedExperiment`
failed, the point is rerun whole (every repetition, each with its own seed) and
its new rows replace the point's rows of that sweep, repetition by repetition.
Points rerun with the sweep seed recorded in the result set, so repetitions that
succeeded come out the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from epyclab.experiment import Experiment
from epyclab.log import logger
from epyclab.order import POINT, SWEEP, in_design_order

__all__ = ["HISTORY", "PREFIX", "REP", "currentOrder", "currentView", "hasReruns", "startRerun", "exceptionName"]

#: Result set attributes recording reruns: ``PREFIX + "0001"`` and so on, JSON text.
PREFIX = "epyclab.rerun."
#: A column of the current view: the earlier attempts of a row that replaced others (JSON text, '' if none).
HISTORY = "epyclab.rerun.history"
#: RepeatedExperiment's repetition index (epyc's metadata key).
REP = "epyc.experiment.rep"
# A traceback kept in a history is cut to its last this many characters.
_TRACEBACK_CAP = 4000


def hasReruns(attributes: Mapping[str, Any]) -> bool:
    """True if the result set with these attributes has recorded a rerun."""
    return any(k.startswith(PREFIX) for k in attributes)


def _records(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rerun records, oldest first; one that is not a record (damaged, or set by hand) is passed over."""
    keys = sorted((k for k in attributes if k.startswith(PREFIX)), key=lambda k: (len(k), k))
    records = []
    for k in keys:
        try:
            record = json.loads(attributes[k])
            start = record["start"]
            groups = record["groups"]
            ok = isinstance(start, int) and all(isinstance(g, list) and all(isinstance(r, int) for r in g)
                                                for g in groups)
        except (TypeError, ValueError, KeyError):
            ok = False
        if not ok:
            # Nothing read from a file is trusted: the rows are shown as stored, and the user told why.
            logger.warning("result set attribute %r is not a rerun record (%.80r); rows it names are shown as "
                           "stored. Remove the attribute if it was set by hand", k, attributes[k])
            continue
        records.append(record)
    return records


def _key(values: Sequence[Any]) -> tuple[Any, ...]:
    # Equal for equal values (1 == 1.0 == numpy.int64(1)); a missing cell (NaN) equals another.
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and v != v):
            out.append(None)
            continue
        try:
            hash(v)
        except TypeError:
            v = repr(v)
        out.append(v)
    return tuple(out)


def _replacements(df: Any, attributes: Mapping[str, Any], params: Sequence[str]) -> dict[int, int]:
    """Stored row -> the stored row that replaced it, from the rerun records."""
    names = [p for p in params if p in df.columns]
    keys = list(zip(*(df[p].tolist() for p in names))) if names else [()] * len(df)
    reps = df[REP].tolist() if REP in df.columns else None
    replaced: dict[int, int] = {}
    for record in _records(attributes):
        start = int(record["start"])
        free: dict[tuple[Any, ...], list[int]] = {}
        for j in range(start, len(df)):
            free.setdefault(_key(keys[j]), []).append(j)
        for group in record["groups"]:
            group = [r for r in group if 0 <= r < len(df)]
            if not group:
                continue
            candidates = free.get(_key(keys[group[0]]), [])
            for r in group:
                match = next((j for j in candidates if reps is None or reps[j] == reps[r]), None)
                if match is None:
                    continue  # not come back yet (pending on a cluster, or the rerun was stopped)
                candidates.remove(match)
                replaced[r] = match
    return replaced


def currentOrder(
    df: Any, attributes: Mapping[str, Any], params: Sequence[str]
) -> tuple[list[int], dict[int, list[int]]]:
    """The stored rows of the current view in its order, and for each shown replacement the rows it replaced.

    ``df`` is the stored frame (rows in the order they were added); rows of a
    sweep come in the design's order, and a replacement takes the place of the
    row it replaced.
    """
    ordered = in_design_order(df.assign(**{"\x00row": range(len(df))}))["\x00row"].tolist()
    if not hasReruns(attributes):
        return ordered, {}
    replaced = _replacements(df, attributes, params)
    replacing = set(replaced.values())
    shown: list[int] = []
    earlier: dict[int, list[int]] = {}
    for r in ordered:
        if r in replacing:
            continue
        chain = [r]
        while chain[-1] in replaced:
            chain.append(replaced[chain[-1]])
        shown.append(chain[-1])
        if len(chain) > 1:
            earlier[chain[-1]] = chain[:-1]
    return shown, earlier


def _attempt(row: Mapping[str, Any], r: int) -> dict[str, Any]:
    def text(k: str) -> Any:
        v = row.get(k)
        if v is None or (isinstance(v, float) and v != v):
            return None
        if hasattr(v, "isoformat"):
            return v.isoformat()
        return v.item() if hasattr(v, "item") else v

    trace = text(Experiment.TRACEBACK) or ""
    return {
        "row": r,
        "status": bool(row.get(Experiment.STATUS, True)),
        "exception": text(Experiment.EXCEPTION) or "",
        "traceback": trace[-_TRACEBACK_CAP:],
        "seed": text(Experiment.SEED),
        "start": text(Experiment.START_TIME),
        "end": text(Experiment.END_TIME),
        "host": text(Experiment.HOST),
    }


def currentView(df: Any, attributes: Mapping[str, Any], params: Sequence[str]) -> Any:
    """The current view of stored frame ``df``: in design order, replaced rows shown as their replacements.

    With reruns recorded, the view has a :data:`HISTORY` column. ``df`` is
    returned as it is when nothing needs reordering.
    """
    if not hasReruns(attributes):
        return in_design_order(df)
    shown, earlier = currentOrder(df, attributes, params)
    view = df.iloc[shown].reset_index(drop=True)
    history = []
    for r in shown:
        rows = earlier.get(r)
        history.append("" if not rows else json.dumps([_attempt(df.iloc[o].to_dict(), o) for o in rows]))
    return view.assign(**{HISTORY: history})


def exceptionName(text: Any) -> str:
    """The exception type's name in a stored exception text (``"ValueError: bad n"`` -> ``"ValueError"``)."""
    return str(text or "").split(":", 1)[0].strip()


def _names(exception: Any) -> set[str]:
    """The type names a filter by ``exception`` accepts (a class accepts its subclasses too)."""
    items = exception if isinstance(exception, (tuple, list, set, frozenset)) else (exception,)
    names: set[str] = set()
    for e in items:
        if isinstance(e, str):
            names.add(e)
        elif isinstance(e, type) and issubclass(e, BaseException):
            todo = [e]
            while todo:
                c = todo.pop()
                names.add(c.__name__)
                todo.extend(c.__subclasses__())
        else:
            raise TypeError(
                f"exception= takes an exception class, its name, or a tuple of them; got {e!r}"
            )
    return names


def _matches(point: Mapping[str, Any], where: Mapping[str, Any] | Callable[[dict[str, Any]], Any]) -> bool:
    if callable(where):
        return bool(where(dict(point)))
    for k, v in where.items():
        if k not in point:
            raise KeyError(f"where= names {k!r}, which is not a parameter of this result set "
                           f"(parameters: {sorted(point)})")
        if isinstance(v, (list, tuple, set, frozenset, range)):
            if not any(point[k] == x for x in v):
                return False
        elif point[k] != v:
            return False
    return True


def startRerun(
    rs: Any,
    exception: Any = None,
    where: Mapping[str, Any] | Callable[[dict[str, Any]], Any] | None = None,
) -> list[tuple[dict[str, Any], int | None]]:
    """Record a rerun of the failed rows of result set ``rs``; return the points to run (one per point).

    Each point comes with its position in its sweep's design (the failed
    row's ``epyclab.lab.point``), or None for a row without one (added by
    hand, read from an epyc file).

    ``exception`` keeps only rows that failed with that exception type (a
    class, which takes its subclasses too, a type name, or a tuple of them);
    ``where`` keeps only rows whose parameters match (a dict of values, a list
    value matching any of its values, or a function of the point's parameters).
    Nothing is recorded when no row is left.

    Raises:
        TypeError: ``exception`` is none of those.
        KeyError: ``where`` names a parameter the result set does not have.
        ResultSetLockedException, NotebookReadOnlyError: ``rs`` cannot change.
    """
    if rs.numberOfResults() == 0:
        return []
    names = _names(exception) if exception is not None else None
    params = rs.parameterNames()
    stored = rs.storedFrame()
    attributes = rs.attributes()
    shown, _ = currentOrder(stored, attributes, params)
    status = stored[Experiment.STATUS].astype(bool).tolist() if Experiment.STATUS in stored.columns else None
    if status is None:
        return []
    excs = stored[Experiment.EXCEPTION].tolist() if Experiment.EXCEPTION in stored.columns else [""] * len(stored)
    missing = {p: rs.missingMask(p) for p in params}
    columns = {p: stored[p].tolist() for p in params}

    def point(r: int) -> dict[str, Any]:
        return {p: (None if missing[p][r] else _plain(columns[p][r])) for p in params}

    marks = None
    if SWEEP in stored.columns and POINT in stored.columns:
        marks = list(zip(stored[SWEEP].tolist(), stored[POINT].tolist()))
    groups: list[list[int]] = []
    points: list[tuple[dict[str, Any], int | None]] = []
    seen: set[Any] = set()
    for r in shown:
        if status[r]:
            continue
        if names is not None and exceptionName(excs[r]) not in names:
            continue
        p = point(r)
        if where is not None and not _matches(p, where):
            continue
        mark = marks[r] if marks is not None and marks[r][0] not in ("", None) else None
        ident = ("mark", mark) if mark is not None else ("row", r)
        if ident in seen:
            continue
        seen.add(ident)
        # The point's other rows of the same sweep (its other repetitions) are rerun with it.
        group = [o for o in shown if marks is not None and mark is not None and marks[o] == mark] or [r]
        groups.append(sorted(group))
        points.append((p, None if mark is None else _position(mark[1])))
    if not points:
        return []
    n = sum(1 for k in attributes if k.startswith(PREFIX)) + 1
    rs.setAttribute(f"{PREFIX}{n:04d}", json.dumps({"start": rs.numberOfResults(), "groups": groups}))
    return points


def _position(v: Any) -> int | None:
    """A stored design position as an int; None for a missing cell or one that is not a position."""
    try:
        position = int(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return position if position == v and position >= 0 else None


def _plain(v: Any) -> Any:
    """A parameter value as the user gave it: numpy scalars as Python numbers."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) and getattr(v, "ndim", 1) == 0 else v
