"""Process-bound attributes are refused before anything runs, naming the attribute (issue 12.5)."""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab.combinators import RepeatedExperiment, SummaryExperiment
from epyclab.errors import ExperimentSerializationError
from epyclab.experiment import Experiment
from epyclab.labs.engine.processbound import process_bound_attributes, refuse_process_bound
from epyclab.labs.engine.wire import package
from epyclab.labs.parallel import ParallelLab


class Holds(Experiment):
    """An experiment with whatever attributes a test gives it."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__()
        for k, v in attrs.items():
            setattr(self, k, v)

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"y": 1}


class Helper:
    """A plain object an experiment may hold (walked into)."""

    def __init__(self, thing: Any) -> None:
        self.thing = thing


def _gen() -> Iterator[int]:
    yield 1


@pytest.fixture
def makers(tmp_path: Path) -> Iterator[dict[str, Callable[[], Any]]]:
    made: list[Any] = []

    def keep(x: Any) -> Any:
        made.append(x)
        return x

    yield {
        "an open file": lambda: keep(open(tmp_path / "log.txt", "w")),
        "a socket": lambda: keep(socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
        "a lock": threading.Lock,
        "a database connection": lambda: keep(sqlite3.connect(str(tmp_path / "db.sqlite"))),
        "a generator": _gen,
        "a thread": lambda: threading.Thread(target=lambda: None),
    }
    for x in made:
        x.close()


@pytest.mark.parametrize(
    "kind", ["an open file", "a socket", "a lock", "a database connection", "a generator", "a thread"]
)
@pytest.mark.parametrize("where", ["attribute", "in a list", "in a helper object", "in a combinator"])
def test_a_process_bound_attribute_is_refused_naming_it(makers: dict[str, Any], kind: str, where: str) -> None:
    thing = makers[kind]()
    if where == "attribute":
        e: Experiment = Holds(handle=thing)
        path = "self.handle"
    elif where == "in a list":
        e = Holds(handles=[1, "two", thing])
        path = "self.handles[2]"
    elif where == "in a helper object":
        e = Holds(helper=Helper(thing))
        path = "self.helper.thing"
    else:
        e = SummaryExperiment(RepeatedExperiment(Holds(handle=thing), 3))
        path = "self._experiment._experiment.handle"
    with pytest.raises(ExperimentSerializationError) as info:
        package([(e, {"x": 1})])
    message = str(info.value)
    assert f"attribute {path} is {kind}" in message
    assert "setUp()" in message or "do()" in message


@pytest.mark.parametrize("backend", ["fork", "ipyparallel"])
def test_a_file_open_for_writing_is_refused_before_any_process_starts_and_is_not_truncated(
    tmp_path: Path, backend: str
) -> None:
    log = tmp_path / "results.log"
    log.write_text("kept\n")
    f = open(log, "a")
    try:
        lab = ParallelLab(profile_dir=str(tmp_path / "profile"), backend=backend)
        lab["x"] = range(4)
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        with pytest.raises(ExperimentSerializationError, match=r"attribute self\.log is an open file"):
            lab.runExperiment(Holds(log=f), progress=False)
        assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
        assert lab.notebook().numberOfResults() == 0
    finally:
        f.close()
    assert log.read_text() == "kept\n"


@settings(max_examples=60)
@given(st.recursive(
    st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none(), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)),
    max_leaves=20,
))
def test_plain_values_are_never_refused(value: Any) -> None:
    e = Holds(data=value, array=np.arange(3), logger=logging.getLogger("epyclab.test"))
    refuse_process_bound(e)
    assert process_bound_attributes(e) == []
