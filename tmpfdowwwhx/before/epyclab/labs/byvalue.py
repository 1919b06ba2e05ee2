"""Code that travels with the experiment: the user's own modules pickled by value, installed ones by reference.

An experiment's class and helpers often live in the user's own code: a file
beside the script, a notebook's ``__main__``, a package under development
(``pip install -e``). Engines on other machines have never seen those files.
:func:`dumps` pickles with cloudpickle, having registered every such module
with :func:`cloudpickle.register_pickle_by_value`, so the classes and
functions defined there travel inside the bytes; what is installed (the
standard library, site-packages, and epyclab itself, which every worker
has) travels by reference and must be installed on the workers. The bytes are
ordinary pickle data: an engine loads them with :func:`pickle.loads` (it needs
cloudpickle installed, which epyclab requires).

A module is *the user's own* when it was loaded from a ``.py`` file that lies
outside the standard library and every site-packages directory of this
interpreter (see :func:`isUsersOwn`). ``__main__`` (a script, a notebook's
cells) needs no registration: cloudpickle always pickles it by value.
"""

from __future__ import annotations

import site
import sys
import sysconfig
import threading
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

__all__ = ["dumps", "isUsersOwn", "usersModules"]

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


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` with the user's own modules by value and installed ones by reference.

    Raises whatever cloudpickle raises for an object that cannot be pickled
    (an open file, a lock, a socket); the caller names the culprit.
    """
    with _REGISTRY:
        already = set(cloudpickle.cloudpickle.list_registry_pickle_by_value())
        added = [m for m in usersModules() if m.__name__ not in already]
        for module in added:
            cloudpickle.register_pickle_by_value(module)
        try:
            return cloudpickle.dumps(obj)
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)
