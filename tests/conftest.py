"""Fixtures shared by the whole suite. Keep them generic: topic fixtures live in their test files."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import pytest

from epyclab.experiment import Experiment, ResultsDict
from epyclab.notebooks.labnotebook import LabNotebook

MakeResults = Callable[..., ResultsDict]


@pytest.fixture
def nb() -> LabNotebook:
    """A fresh in-memory notebook."""
    return LabNotebook("test")


@pytest.fixture
def make_rc() -> MakeResults:
    """A factory of results dicts, as an experiment's run would produce them.

    ``make_rc({'x': 1}, {'y': 2})`` is a successful run; ``ok=False`` a failed
    one (results empty, a ValueError recorded); extra keywords are metadata.
    """

    def make(params: dict[str, Any], results: Any = None, ok: bool = True, **meta: Any) -> ResultsDict:
        now = datetime.now()
        metadata = {
            Experiment.STATUS: ok,
            Experiment.START_TIME: now,
            Experiment.END_TIME: now,
            Experiment.ELAPSED_TIME: 0.0,
            Experiment.EXCEPTION: None if ok else ValueError("it failed"),
            Experiment.TRACEBACK: "",
        }
        metadata.update(meta)
        return {
            Experiment.PARAMETERS: dict(params),
            Experiment.METADATA: metadata,
            Experiment.RESULTS: ({} if results is None else results) if ok else {},
        }

    return make
