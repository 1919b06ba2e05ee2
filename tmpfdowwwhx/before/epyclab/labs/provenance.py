"""Provenance of a result set: what produced its results, recorded by the first run into it.

:func:`recordFirstRun` stores, as attributes of the result set (so they are
saved with it in HDF5 and JSON notebooks), when the set has none yet:

- ``epyclab.provenance.python``, ``.platform``: this interpreter and machine;
- ``.epyclab``, ``.numpy``, ``.pandas``: the versions of those packages;
- ``.experiment.class``, ``.experiment.module``: the experiment's class and
  the file (or ``__main__``) it was defined in;
- ``.git.commit``, ``.git.dirty``: the commit of the git work tree holding the
  experiment's source file (or the current directory, for a notebook) and
  whether it has uncommitted changes; absent when there is no work tree;
- ``.engines``: for labs whose points run on engines, each distinct engine
  environment (Python, platform, package versions) with how many engines have
  it, as JSON text; ``.engines.differ`` names what differs from this process,
  and a warning says so, since results may then depend on where they ran.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from epyclab.log import logger

__all__ = ["PREFIX", "environment", "recordFirstRun", "gitState"]

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


def gitState(directory: Path) -> tuple[str, bool] | None:
    """The commit checked out in the git work tree holding ``directory``, and whether it is dirty; None if none."""
    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(directory), *argv], capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            logger.debug("git in %s: %s", directory, error)
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


def _source_directory(cls: type) -> tuple[str, Path]:
    """Where the experiment class was defined: (its module's file or name, the directory to ask git about)."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        return file, Path(file).resolve().parent
    return cls.__module__, Path.cwd()


def recordFirstRun(
    rs: Any, experiment: Any, engines: Callable[[], Sequence[dict[str, str]]] | None = None
) -> bool:
    """Record provenance in result set ``rs`` if it has none yet (see the module docstring); True if recorded.

    ``engines`` returns the environment (:func:`environment`) of each engine
    that will run points; it is asked only on the first run.
    """
    if f"{PREFIX}python" in rs:
        return False
    here = environment()
    attributes: dict[str, Any] = {f"{PREFIX}{k}": v for k, v in here.items()}
    cls = type(experiment)
    where, directory = _source_directory(cls)
    attributes[f"{PREFIX}experiment.class"] = f"{cls.__module__}.{cls.__qualname__}"
    attributes[f"{PREFIX}experiment.module"] = where
    git = gitState(directory)
    if git is not None:
        attributes[f"{PREFIX}git.commit"], attributes[f"{PREFIX}git.dirty"] = git
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
