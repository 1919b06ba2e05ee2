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

Tracebacks point at the user's code wherever it runs. Code that travels by
value keeps its file name (cloudpickle would replace it by
``<dynamic-code>``), and the lines of every file it came from travel with it
(a script's, or a notebook cell's, which IPython keeps in :mod:`linecache`):
the worker puts them in its own :mod:`linecache` under the same name, so a
failed row's traceback names the script's file and line and shows the line,
as on a forked copy. A module imported from the source that came along
shows its lines the same way (its loader gives :mod:`linecache` its source).

A module is *the user's own* when it was loaded from a ``.py`` file that lies
outside the standard library and every site-packages directory of this
interpreter (see :func:`isUsersOwn`).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import io
import linecache
import marshal
import os
import pickle
import site
import socket
import sys
import sysconfig
import threading
import types
from collections import ChainMap
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from epyclab.errors import ModuleSourceImportError

__all__ = ["dumps", "loads", "isUsersOwn", "usersModules"]

# The first item of the tuple that carries sources (of modules, and lines for linecache) beside the pickle.
_SHIPPED = "epyclab.code/2"

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


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, but code that travels by value keeps its file name, which it records."""

    def __init__(self, file: io.BytesIO) -> None:
        self.files: set[str] = set()
        # pickle's per-instance dispatch table: this one entry first, cloudpickle's (and copyreg's) behind it. Set
        # before the pickler's __init__, which is where the C pickler reads it.
        self.dispatch_table = ChainMap({types.CodeType: self._code}, cloudpickle.Pickler.dispatch_table)
        super().__init__(file)

    def _code(self, code: types.CodeType) -> Any:
        # marshal keeps every field of a code object (its nested ones too), its file name included: what a .pyc
        # holds. cloudpickle's own reduction (for a code object marshal refuses: constants made by hand) does not.
        try:
            data = marshal.dumps(code)
        except ValueError:
            return cloudpickle.Pickler.dispatch_table[types.CodeType](code)
        self.files.add(code.co_filename)
        return marshal.loads, (data,)


def _pickle(obj: Any) -> tuple[bytes, set[str]]:
    """``obj`` pickled by cloudpickle (see :class:`_Pickler`), and the files of the code it took by value."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    pickler.dump(obj)
    return buffer.getvalue(), pickler.files


def _lines(files: Iterable[str]) -> dict[str, list[str]]:
    """The lines of each file, as :mod:`linecache` has them here (a notebook cell's too); files without any left out."""
    found = {}
    for file in files:
        if not (file.startswith("<") and file.endswith(">")):  # "<string>", "<stdin>": no lines anywhere
            lines = linecache.getlines(file)
            if lines:
                found[file] = lines
    return found


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
            body, files = _pickle(obj)
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)
    lines = _lines(files)
    if not sources and not lines:
        return body
    return pickle.dumps((_SHIPPED, sources, lines, body), protocol=pickle.HIGHEST_PROTOCOL)


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
        try:
            exec(compile(source, file, "exec"), module.__dict__)  # the user's own code, sent to run here
        except ModuleSourceImportError:
            raise  # a module it imports failed: that one is named already
        except Exception as exc:
            # Its own error would not say which module failed (a ctypes OSError names only the library), nor that
            # it failed on this worker only: the client imported it.
            raise ModuleSourceImportError(
                f"module {module.__name__} ({file}, sent here as source) failed when imported on this worker "
                f"({socket.gethostname()}): {type(exc).__name__}: {exc}. It imports on the client: make what it "
                f"loads at import (a shared library, a data file, a package) available on the workers at the path "
                f"it uses, or load it inside the function that needs it", name=module.__name__, path=file,
            ) from exc

    def get_source(self, name: str) -> str | None:
        """The source of module ``name`` that came along (importlib's InspectLoader: linecache asks it)."""
        found = self.sources.get(name)
        return found[0] if found is not None else None


_finder = _SourceFinder()


def loads(blob: bytes) -> Any:
    """The object :func:`dumps` pickled; the user's modules are imported here (from disk, else from their source)."""
    obj = pickle.loads(blob)
    if isinstance(obj, tuple) and len(obj) == 4 and obj[0] == _SHIPPED:
        _, sources, lines, body = obj
        for file, text in lines.items():
            # mtime None: linecache.checkcache keeps the entry (as IPython does for its cells), even where a file of
            # that name differs or is missing here; the lines are those of the code that came.
            linecache.cache[file] = (sum(map(len, text)), None, list(text), file)
        _finder.sources.update(sources)
        if _finder not in sys.meta_path:
            # Last: a module the worker can import from its own files is imported from them.
            sys.meta_path.append(_finder)
        return pickle.loads(body)
    return obj
