"""The module globals an experiment's code uses that cannot travel with it.

A class defined in a script (``__main__``) or a notebook travels by value:
cloudpickle packs its methods, the module-level functions they call and every
module global they read. A global holding something that cannot be pickled (a
shared library loaded with ctypes, an open file, a lock, a database
connection) makes the whole experiment unsendable, although no attribute of
the experiment holds it. :func:`unpicklable_globals` names those globals and
the function that reads each, so the error can say what to move where: into a
module beside the script (a module a worker can import is imported there, and
its state rebuilt), or into ``setUp()``.
"""

from __future__ import annotations

import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from epyclab.experiment import exception_text

__all__ = ["unpicklable_globals", "describe_globals"]


def _names(code: types.CodeType) -> Iterator[str]:
    """The global names ``code`` and the code nested in it (lambdas, comprehensions, inner functions) read."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _travels_by_value(module: str | None) -> bool:
    """False for epyclab's own code and the builtins: installed code travels by reference, not with its globals."""
    return (module or "").split(".")[0] not in ("epyclab", "builtins")


def _functions(cls: type) -> Iterator[tuple[types.FunctionType, str]]:
    """The plain functions of ``cls`` and of its bases that travel with it by value, each with its ``Class.name``."""
    for klass in cls.__mro__:
        if klass is object or not _travels_by_value(klass.__module__):
            continue
        for attr, value in vars(klass).items():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            if isinstance(value, types.FunctionType):
                yield value, f"{klass.__qualname__}.{attr}"


def unpicklable_globals(
    cls: type, dumps: Callable[[Any], bytes], limit: int = 200
) -> list[tuple[str, str, str, BaseException]]:
    """The module globals read by ``cls``'s code (and the module functions it calls) that ``dumps`` refuses.

    Follows calls into module-level functions (a helper calling a helper, to
    any depth), nearest first, at most ``limit`` functions, each once.
    Modules and classes are not followed: they travel by reference or are
    reported by their own attributes; nor is epyclab's own code.

    Returns:
        ``(global name, the way from the method to the function that reads it
        (``"E.do -> helper"``), type name of its value, the error)`` for each
        global that cannot be pickled, in the order found, each once.
    """
    todo = deque(_functions(cls))
    seen_functions: set[int] = set()
    seen_names: set[tuple[int, str]] = set()
    found = []
    while todo and len(seen_functions) < limit:
        fn, via = todo.popleft()
        if id(fn) in seen_functions:
            continue
        seen_functions.add(id(fn))
        scope = fn.__globals__
        for name in _names(fn.__code__):
            if name not in scope or (id(scope), name) in seen_names:
                continue
            seen_names.add((id(scope), name))
            value = scope[name]
            if isinstance(value, (types.ModuleType, type)):
                continue
            if isinstance(value, types.FunctionType):
                if _travels_by_value(value.__module__):
                    todo.append((value, f"{via} -> {name}"))
                continue
            try:
                dumps(value)
            except Exception as exc:  # whatever pickling raises is the reason to report
                found.append((name, via, type(value).__name__, exc))
    return found


def describe_globals(used: list[tuple[str, str, str, BaseException]]) -> str:
    """``used`` (as :func:`unpicklable_globals` gives it) as one clause per global, for an error message."""
    return "; ".join(f"global {name} ({t}), used by {via}: {exception_text(x)}" for name, via, t, x in used)
