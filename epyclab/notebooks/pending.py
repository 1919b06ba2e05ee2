"""A result set's pending results: jobs submitted whose results have not come yet.

Each is its job id (text) and the parameters of its point. A counter changes at
every change, so a persistent notebook can tell cheaply whether there is
anything to save. Locks and the failed row a cancelled job leaves are the
:class:`~epyclab.notebooks.resultset.ResultSet`'s business; this part only keeps
the jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from epyclab.errors import PendingResultException, UnstorableValueError
from epyclab.notebooks.frames import is_value_list
from epyclab.notebooks.kinds import NotStorable, check_name, state_of_value
from epyclab.notebooks.rowcheck import value_message

__all__ = ["PendingResults", "job_text"]


def job_text(jobid: Any) -> Any:
    """The job id as kept: an int (epyc's in-memory notebook takes those) as its text, anything else as given.

    A job id is kept as text in every format; an int given by code written for epyc
    becomes ``str(jobid)``, and finds its job again when given as the same int later.
    """
    if isinstance(jobid, (int, np.integer)) and not isinstance(jobid, (bool, np.bool_)):
        return str(int(jobid))
    return jobid


class PendingResults:
    """Job id -> parameters of every pending result, in the order they were added."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}
        self._version = 0

    def add(self, params: Mapping[str, Any], jobid: str) -> None:
        """Record a job for ``params`` (an int ``jobid`` is kept as its text: :func:`job_text`).

        Raises:
            PendingResultException: ``jobid`` is already pending here.
            UnstorableValueError: the job id, a parameter name or a parameter value cannot be stored.
        """
        jobid = job_text(jobid)
        if jobid in self._jobs:
            raise PendingResultException(jobid, f"job id {jobid!r} is already pending in this result set")
        check_name(jobid, "job id")
        for k, v in params.items():
            check_name(k, "parameter name")
            try:
                state_of_value(v)
            except NotStorable as exc:
                raise UnstorableValueError(value_message("parameter", k, v, str(exc))) from None
        self._jobs[jobid] = dict(params)
        self._version += 1

    def remove(self, jobid: str) -> None:
        """Forget a pending job.

        Raises:
            PendingResultException: ``jobid`` is not pending here.
        """
        jobid = job_text(jobid)
        if jobid not in self._jobs:
            raise PendingResultException(jobid)
        del self._jobs[jobid]
        self._version += 1

    def parameters(self, jobid: str) -> dict[str, Any]:
        """The parameters of a pending job.

        Raises:
            PendingResultException: ``jobid`` is not pending here.
        """
        try:
            return self._jobs[job_text(jobid)]
        except KeyError:
            raise PendingResultException(jobid) from None

    def __contains__(self, jobid: object) -> bool:
        return job_text(jobid) in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def jobs(self) -> list[str]:
        """The job ids, in the order they were added."""
        return list(self._jobs)

    def items(self) -> dict[str, dict[str, Any]]:
        """Job id -> parameters (a copy of the mapping; the parameter dicts are shared)."""
        return dict(self._jobs)

    def parameterNames(self) -> list[str]:
        """Every parameter name of a pending job, each once, in the order first seen."""
        names: dict[str, None] = {}
        for params in self._jobs.values():
            names.update(dict.fromkeys(params))
        return list(names)

    def values(self, name: str) -> list[Any]:
        """The values parameter ``name`` takes in the pending jobs that have it."""
        return [params[name] for params in self._jobs.values() if name in params]

    def jobsFor(self, params: Mapping[str, Any]) -> list[str]:
        """The job ids pending for points matching ``params`` (a list value selects any of its values)."""
        return [
            jobid
            for jobid, p in self._jobs.items()
            if all(k in p and (p[k] in v if is_value_list(v) else p[k] == v) for k, v in params.items())
        ]

    def version(self) -> int:
        """A counter that changes whenever a job is added or removed."""
        return self._version

    def load(self, jobs: Mapping[str, Mapping[str, Any]]) -> None:
        """Make ``jobs`` (as a file recorded them) the pending results, unchecked."""
        self._jobs = {j: dict(p) for j, p in jobs.items()}

    def apply(self, added: Mapping[str, Mapping[str, Any]], removed: Iterable[str]) -> None:
        """Replay a recorded change (jobs added and removed), unchecked."""
        for jobid in removed:
            self._jobs.pop(jobid, None)
        for jobid, params in added.items():
            self._jobs[jobid] = dict(params)
        self._version += 1
