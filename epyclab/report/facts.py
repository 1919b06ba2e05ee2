"""What a report says about one result set: counts, times, failures grouped by exception, attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from epyclab.experiment import Experiment
from epyclab.notebooks.reruns import exceptionName

__all__ = ["Failure", "Facts", "factsOf", "PROVENANCE"]

#: Attribute prefix of provenance (see :mod:`epyclab.labs.provenance`).
PROVENANCE = "epyclab.provenance."
# Points listed under one failure group at most.
_POINTS_SHOWN = 10


@dataclass
class Failure:
    """The failed rows of one exception type."""

    name: str
    count: int
    example: str
    traceback: str
    points: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Facts:
    """What a report shows about a result set, besides its plots."""

    tag: str
    description: str
    locked: bool
    done: int
    failed: int
    pending: int
    parameters: list[str]
    swept: list[str]
    results: list[str]
    numeric: list[str]
    times: np.ndarray
    failures: list[Failure]
    provenance: dict[str, Any]
    attributes: dict[str, Any]
    frame: Any = None
    #: Stored rows a rerun replaced (kept in the file, not counted above).
    replaced: int = 0


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def factsOf(tag: str, rs: Any) -> Facts:
    """The facts of result set ``rs`` (tagged ``tag``), from its current view (reruns shown as their result)."""
    df = rs.dataframe(only_successful=False)
    params = [p for p in rs.parameterNames() if p in df.columns]
    ok = df[Experiment.STATUS].astype(bool).to_numpy() if Experiment.STATUS in df.columns else np.ones(len(df), bool)
    swept = [p for p in params if df[p].nunique(dropna=False) > 1]
    pending = rs.pendingItems()
    for job in pending.values():
        # A parameter that varies only among pending points is swept too.
        for p in params:
            if p not in swept and len(df) and job.get(p) != df[p].iloc[0]:
                swept.append(p)
    results = [r for r in rs.resultNames() if r in df.columns]
    good = df[ok]
    numeric = [r for r in results if df[r].dtype.kind in "iuf" and len(good) and np.isfinite(
        good[r].to_numpy(dtype=float)).any()]
    times = (df[Experiment.ELAPSED_TIME].to_numpy(dtype=float) if Experiment.ELAPSED_TIME in df.columns
             else np.array([], dtype=float))
    failures: dict[str, Failure] = {}
    bad = df[~ok]
    excs = bad[Experiment.EXCEPTION].tolist() if Experiment.EXCEPTION in bad.columns else [""] * len(bad)
    traces = bad[Experiment.TRACEBACK].tolist() if Experiment.TRACEBACK in bad.columns else [""] * len(bad)
    for i, (exc, trace) in enumerate(zip(excs, traces)):
        name = exceptionName(exc) or "(no exception recorded)"
        f = failures.get(name)
        if f is None:
            f = failures[name] = Failure(name, 0, str(exc or ""), str(trace or ""))
        f.count += 1
        if len(f.points) < _POINTS_SHOWN:
            f.points.append({p: _plain(bad[p].iloc[i]) for p in params})
    attributes = rs.attributes()
    provenance = {k[len(PROVENANCE):]: v for k, v in attributes.items() if k.startswith(PROVENANCE)}
    others = {k: v for k, v in attributes.items()
              if not k.startswith(PROVENANCE) and not k.startswith("epyclab.rerun.")}
    return Facts(
        tag=tag, description=rs.description(), locked=rs.isLocked(), done=int(ok.sum()),
        failed=int((~ok).sum()), pending=len(pending), parameters=params, swept=swept, results=results,
        numeric=numeric, times=times, failures=sorted(failures.values(), key=lambda f: -f.count),
        provenance=provenance, attributes=others, frame=df[ok].reset_index(drop=True),
        replaced=rs.numberOfResults() - len(df),
    )
