"""Provenance of a result set: what produced its results, recorded by the first run into it.

:func:`recordFirstRun` stores, as attributes of the result set (so they are
saved with it in HDF5 and JSON notebooks), when the set has none yet:

- ``epyclab.provenance.python``, ``.platform``: this interpreter and machine;
- ``.epyclab``, ``.numpy``, ``.pandas``: the versions of those packages;
- ``.experiment.class``, ``.experiment.module``: the experiment's class and
  the file (or module name) it was defined in. Through combinators
  (``SummaryExperiment(RepeatedExperiment(MyExperiment(), 10))``) this is the
  innermost experiment, the user's own code (:func:`epyclab.combinators.innermost`),
  not epyclab's wrapper; each row's ``epyc.experiment`` metadata names the whole nesting;
- ``.git.commit``, ``.git.dirty``: the commit of the git work tree holding
  that file (or the current directory, for a class defined in Jupyter) and
  whether a tracked file has uncommitted changes (untracked files do not
  count, as for ``git describe --dirty``); absent when there is no work tree;
- ``.engines``: for labs whose points run on engines, each distinct engine
  environment (Python, platform, package versions) with how many engines have
  it, as JSON text; ``.engines.differ`` names what differs from this process,
  and a warning says so, since results may then depend on where they ran.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from epyclab.combinators import innermost
from epyclab.log import logger

__all__ = ["PREFIX", "GitQuery", "environment", "recordFirstRun", "gitState", "startGitQuery"]

#: Every provenance attribute's name starts with this.
PREFIX = "epyclab.provenance."
_PACKAGES = ("epyclab", "numpy", "pandas")


def environment() -> dict[str, str]:
    """This process's Python, platform and package versions (engines run it too, by reference)."""
    return dict(_environment())


@lru_cache(maxsize=1)
def _environment() -> tuple[tuple[str, str], ...]:
    # Once per process: reading the packages' metadata costs ~80 ms, at every sweep otherwise.
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "(not installed)"
    return tuple(found.items())


class GitQuery:
    """``git rev-parse HEAD`` and ``git status`` in ``directory``, started at once and read when needed.

    A sweep starts them before its first point and reads them once that point
    is out, so the tens of milliseconds git takes pass while points run. They
    are processes, not a thread: a thread would make forking the user's
    process unsafe (see :func:`epyclab.labs.transports.cleanworkers.fork_safe`).
    :meth:`close` stops whichever is still running (a sweep that ended early).

    They run with ``GIT_OPTIONAL_LOCKS=0`` (git's setting for tools that query a
    repository in the background, as editors do): ``git status`` otherwise
    refreshes the index and writes it back under ``.git/index.lock``, and a
    ``git status`` stopped then (by :meth:`close`, or by the sweep's process
    being killed) left that lock in the user's repository, where their next
    ``git commit`` failed ("Unable to create '.git/index.lock': File exists").
    Without the optional write, stopping git at any moment leaves the
    repository as it was.
    """

    #: Seconds git may take before it is stopped and the state left out.
    Timeout = 30.0

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._procs = [self._start("rev-parse", "HEAD"), self._start("status", "--porcelain", "--untracked-files=no")]

    def _start(self, *argv: str) -> subprocess.Popen[str] | None:
        try:
            return subprocess.Popen(["git", "-C", str(self._directory), *argv], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                                    env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        except OSError as error:
            logger.debug("git in %s: %s", self._directory, error)
            return None

    def _read(self, proc: subprocess.Popen[str] | None) -> str | None:
        if proc is None:
            return None
        try:
            out, _ = proc.communicate(timeout=self.Timeout)
        except subprocess.TimeoutExpired as error:
            logger.debug("git in %s: %s", self._directory, error)
            proc.kill()
            proc.communicate()
            return None
        return out.strip() if proc.returncode == 0 else None

    def result(self) -> tuple[str, bool] | None:
        """The commit checked out and whether the work tree is dirty; None if ``directory`` is in none."""
        commit, status = self._read(self._procs[0]), self._read(self._procs[1])
        if not commit:
            return None
        return commit, bool(status)

    def close(self) -> None:
        """Stop the git processes still running, and reap them."""
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.communicate()


def gitState(directory: Path) -> tuple[str, bool] | None:
    """The commit checked out in the git work tree holding ``directory``, and whether it is dirty; None if none."""
    query = GitQuery(directory)
    try:
        return query.result()
    finally:
        query.close()


def startGitQuery(rs: Any, experiment: Any) -> GitQuery | None:
    """The git query :func:`recordFirstRun` will need for ``experiment``, started now; None if ``rs`` needs none."""
    if f"{PREFIX}python" in rs:
        return None
    return GitQuery(_source_directory(type(innermost(experiment)))[1])


def _source_directory(cls: type) -> tuple[str, Path]:
    """Where the experiment class was defined: (its module's file or name, the directory to ask git about)."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        return file, Path(file).resolve().parent
    return cls.__module__, Path.cwd()


def recordFirstRun(
    rs: Any, experiment: Any, engines: Callable[[], Sequence[dict[str, str]]] | None = None,
    git: GitQuery | None = None,
) -> bool:
    """Record provenance in result set ``rs`` if it has none yet (see the module docstring); True if recorded.

    ``experiment`` is the one the sweep runs; provenance names the experiment
    at the bottom of its combinators, if it has any.

    ``engines`` returns the environment (:func:`environment`) of each engine
    that will run points; it is asked only on the first run. ``git``: the
    query :func:`startGitQuery` started for this run (else git is asked now).
    """
    if f"{PREFIX}python" in rs:
        return False
    here = environment()
    attributes: dict[str, Any] = {f"{PREFIX}{k}": v for k, v in here.items()}
    cls = type(innermost(experiment))
    where, directory = _source_directory(cls)
    attributes[f"{PREFIX}experiment.class"] = f"{cls.__module__}.{cls.__qualname__}"
    attributes[f"{PREFIX}experiment.module"] = where
    state = gitState(directory) if git is None else git.result()
    if state is not None:
        attributes[f"{PREFIX}git.commit"], attributes[f"{PREFIX}git.dirty"] = state
    if engines is not None:
        seen = [dict(e) for e in engines()]
        if seen:
            kinds = Counter(json.dumps(e, sort_keys=True) for e in seen)
            attributes[f"{PREFIX}engines"] = json.dumps(
                [{"engines": n, **json.loads(k)} for k, n in sorted(kinds.items())], sort_keys=True
            )
            differ = sorted({
                f"{key}: {e.get(key)} on engines, {value} here"
                for e in seen for key, value in here.items()
                if key != "platform" and e.get(key) != value
            })
            if differ:
                attributes[f"{PREFIX}engines.differ"] = "; ".join(differ)
                logger.warning(
                    "the engines' environment differs from this process's (%s): results may depend on where "
                    "they ran; install the same versions on the workers (`epyclab cluster sync`)",
                    "; ".join(differ),
                )
    for key, value in attributes.items():
        rs[key] = value
    return True
