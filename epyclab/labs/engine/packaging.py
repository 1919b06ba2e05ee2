"""Code travels as code: the user's own modules go by reference, with their source, so workers rebuild them.

An experiment's class and helpers often live in the user's own code: a file
beside the script, a package under development (``pip install -e``). A
worker on this machine (a forked copy, a clean local worker, a local engine)
can import those files; an engine on another machine may never have seen
them. :func:`dumps` therefore pickles with cloudpickle *by reference* (a
class is its module and name, as pickle does) and sends, beside the pickle,
the *source* of each of the user's own modules. The worker (:func:`loads`)
imports a module from its own disk when it can (the client's import
directories are added to its ``sys.path``), and otherwise from the source that
came along, through an import hook placed last. Either way the module runs on
the worker, so its state (a shared library loaded with ctypes, an open
database, a model read at import) is rebuilt there, never pickled.

What is installed (the standard library, site-packages, and epyclab itself,
which every worker has) goes by reference and must be installed on the
workers. A user's module whose source cannot be read any more (its file was
deleted) travels by value as cloudpickle does it (its classes and functions
inside the bytes), as does ``__main__`` (a script, a notebook's cells).

A module is *the user's own* when it was loaded from a ``.py`` file that lies
outside the standard library and every site-packages directory of this
interpreter (see :func:`isUsersOwn`).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import pickle
import site
import sys
import sysconfig
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

__all__ = ["dumps", "loads", "isUsersOwn", "usersModules"]

# The first item of the tuple that carries sources beside the pickle.
_SHIPPED = "epyclab.code/1"

# Packages every engine has installed, whatever their files' location (epyclab in development mode).
_ALWAYS_BY_REFERENCE = ("epyclab",)
# cloudpickle's registry is process-wide: one pickling at a time changes it.
_REGISTRY = threading.Lock()


@lru_cache(maxsize=1)
def _installed_roots() -> tuple[Path, ...]:
    """Directories whose modules are installed, not the user's: stdlib and every site-packages."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(getattr(site, "getsitepackages", lambda: [])())
    user_site = getattr(site, "getusersitepackages", lambda: None)()
    if isinstance(user_site, str):
        roots.add(user_site)
    roots.update(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages"))
    return tuple(sorted({Path(r).resolve() for r in roots if r}))


def isUsersOwn(module: ModuleType) -> bool:
    """True if ``module`` is the user's own code (see the module docstring), so it must travel by value."""
    name = getattr(module, "__name__", "")
    if name == "__main__" or name.split(".", 1)[0] in _ALWAYS_BY_REFERENCE:
        return False
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return False  # built-in, frozen, a namespace package or an extension module: never by value
    return _outside_installed(file)


@lru_cache(maxsize=8192)
def _outside_installed(file: str) -> bool:
    # Cached by path: each sweep asks about every loaded module, and resolving ~1,000 paths costs ~0.3 s.
    try:
        where = Path(file).resolve()
    except OSError:
        return False
    return not any(where.is_relative_to(root) for root in _installed_roots())


def usersModules(modules: Iterable[ModuleType] | None = None) -> list[ModuleType]:
    """The user's own modules among ``modules`` (default: every module loaded in this process)."""
    candidates = list(sys.modules.values()) if modules is None else list(modules)
    return [m for m in candidates if isinstance(m, ModuleType) and isUsersOwn(m)]


@lru_cache(maxsize=1024)
def _read(file: str, mtime_ns: int) -> str:
    with open(file, encoding="utf-8") as f:
        return f.read()


def _source(module: ModuleType) -> tuple[str, bool, str] | None:
    """``(source, is_package, file)`` of one of the user's modules, or None if its file cannot be read."""
    file = module.__file__
    assert isinstance(file, str)
    try:
        return _read(file, os.stat(file).st_mtime_ns), hasattr(module, "__path__"), file
    except (OSError, UnicodeDecodeError):
        return None


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` for a worker: the user's modules by reference with their source (see the module docstring).

    Raises whatever cloudpickle raises for an object that cannot be pickled
    (an open file, a lock, a socket); the caller names the culprit.
    """
    sources: dict[str, tuple[str, bool, str]] = {}
    unreadable = []
    for module in usersModules():
        found = _source(module)
        if found is None:
            unreadable.append(module)
        else:
            sources[module.__name__] = found
    with _REGISTRY:
        already = set(cloudpickle.cloudpickle.list_registry_pickle_by_value())
        added = [m for m in unreadable if m.__name__ not in already]
        for module in added:
            cloudpickle.register_pickle_by_value(module)
        try:
            body = cloudpickle.dumps(obj)
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)
    if not sources:
        return body
    return pickle.dumps((_SHIPPED, sources, body), protocol=pickle.HIGHEST_PROTOCOL)


class _SourceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports the user's modules from the source sent with an experiment, when the worker has no file for them."""

    def __init__(self) -> None:
        self.sources: dict[str, tuple[str, bool, str]] = {}

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        found = self.sources.get(name)
        if found is None:
            return None
        # Under its own file name (in tracebacks and __file__), though the file is not on this machine.
        return importlib.util.spec_from_file_location(name, found[2], loader=self,
                                                      submodule_search_locations=[] if found[1] else None)

    def create_module(self, spec: Any) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        source, _, file = self.sources[module.__name__]
        exec(compile(source, file, "exec"), module.__dict__)  # the user's own code, sent to run here


_finder = _SourceFinder()


def loads(blob: bytes) -> Any:
    """The object :func:`dumps` pickled; the user's modules are imported here (from disk, else from their source)."""
    obj = pickle.loads(blob)
    if isinstance(obj, tuple) and len(obj) == 3 and obj[0] == _SHIPPED:
        _, sources, body = obj
        _finder.sources.update(sources)
        if _finder not in sys.meta_path:
            # Last: a module the worker can import from its own files is imported from them.
            sys.meta_path.append(_finder)
        return pickle.loads(body)
    return obj
