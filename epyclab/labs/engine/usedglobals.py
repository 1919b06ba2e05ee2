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
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["unpicklable_globals"]


def _names(code: types.CodeType) -> Iterator[str]:
    """The global names ``code`` and the code nested in it (lambdas, comprehensions, inner functions) read."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _functions(cls: type) -> Iterator[types.FunctionType]:
    """The plain functions of ``cls`` and of its bases that travel with it by value (not object's, not installed)."""
    for klass in cls.__mro__:
        if klass is object:
            continue
        for value in vars(klass).values():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            elif isinstance(value, property):
                value = value.fget
            if isinstance(value, types.FunctionType):
                yield value


def unpicklable_globals(
    cls: type, dumps: Callable[[Any], bytes], limit: int = 200
) -> list[tuple[str, str, str, BaseException]]:
    """The module globals read by ``cls``'s code (and the module functions it calls) that ``dumps`` refuses.

    Follows calls into module-level functions of the same modules (a helper
    calling a helper), at most ``limit`` functions, each once. Modules and
    classes are not followed: they travel by reference or are reported by
    their own attributes.

    Returns:
        ``(global name, function that reads it, type name of its value, the error)``
        for each global that cannot be pickled, in the order found, each once.
    """
    todo = list(_functions(cls))
    seen_functions: set[int] = set()
    seen_names: set[tuple[int, str]] = set()
    found = []
    while todo and len(seen_functions) < limit:
        fn = todo.pop(0)
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
                todo.append(value)
                continue
            try:
                dumps(value)
            except Exception as exc:  # whatever pickling raises is the reason to report
                found.append((name, fn.__qualname__, type(value).__name__, exc))
    return found
