"""What may not travel to another process: attributes bound to the process that made them.

An experiment sent to engines is serialized, and some objects serialize
without error yet do harm on the other side: a serializer that re-opens a file held open
for writing in mode ``'w'`` on the engine, truncating it; a lock, a thread or a
database connection arrives as a copy that shares nothing with the original.
So before anything runs, :func:`refuse_process_bound` walks the experiment's
attributes (into containers, plain objects and the experiments a combinator
wraps) and refuses the first such object it finds, naming the attribute.
"""

from __future__ import annotations

import io
import mmap
import socket
import sqlite3
import subprocess
import threading
import types
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

from epyclab.errors import ExperimentSerializationError

__all__ = ["refuse_process_bound", "process_bound_attributes"]

# (type, what a user calls it, what to do instead).
_OPEN = "open it in setUp() and close it in tearDown() (on the engine), and keep only its path or address here"
_BOUND: list[tuple[tuple[type, ...], str, str]] = [
    ((io.IOBase,), "an open file", _OPEN),
    ((socket.socket,), "a socket", _OPEN),
    ((mmap.mmap,), "a memory map", _OPEN),
    ((sqlite3.Connection, sqlite3.Cursor), "a database connection", _OPEN),
    ((subprocess.Popen,), "a running subprocess", "start it in setUp() on the engine"),
    ((threading.Thread,), "a thread", "start it in setUp() on the engine"),
    ((Executor,), "an executor (a pool of threads or processes)", "make it in setUp() on the engine"),
    (
        (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Semaphore,
         threading.Event),
        "a lock",
        "make it in configure() or setUp(); engines share no lock with this process",
    ),
    (
        (types.GeneratorType, types.AsyncGeneratorType, types.CoroutineType),
        "a generator",
        "keep what makes it (a list, a range, a function) and create the generator in do()",
    ),
]

# Deep enough for an experiment wrapped by two combinators holding a helper object.
_MAX_DEPTH = 6


def _what(value: Any) -> tuple[str, str] | None:
    if isinstance(value, (io.StringIO, io.BytesIO)):
        return None  # in memory: it travels as its contents
    for kinds, name, fix in _BOUND:
        if isinstance(value, kinds):
            return name, fix
    module = type(value).__module__ or ""
    # Other databases' DB-API connections and multiprocessing's locks, by where their class lives.
    if module.startswith(("psycopg", "pymysql", "MySQLdb", "mysql.connector")) and hasattr(value, "cursor"):
        return "a database connection", _OPEN
    if module.startswith("multiprocessing.synchronize"):
        return "a lock", "make it in configure() or setUp(); engines share no lock with this process"
    return None


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    """The named parts of ``value`` worth walking into: items of containers, attributes of plain objects."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"[{k!r}]", v
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, v in enumerate(value):
            yield f"[{i}]", v
    elif isinstance(value, (str, bytes, int, float, complex, bool, type, types.ModuleType, types.FunctionType)):
        return
    elif _pickled_by_its_state(value):
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            for k, v in attrs.items():
                yield f".{k}", v
        for slot in getattr(type(value), "__slots__", ()):
            if isinstance(slot, str) and slot != "__dict__" and hasattr(value, slot):
                yield f".{slot}", getattr(value, slot)


def _pickled_by_its_state(value: Any) -> bool:
    """True if ``value`` travels as its attributes (no pickling of its own, as a logger or an array has)."""
    cls = type(value)
    return (
        cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and getattr(cls, "__getstate__", object.__getstate__) is object.__getstate__
    )


def process_bound_attributes(obj: Any, path: str = "self") -> list[tuple[str, str, str]]:
    """Every process-bound object reachable from ``obj``: ``(attribute path, what it is, what to do)``."""
    found: list[tuple[str, str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[str, Any, int]] = [(path, obj, 0)]
    while stack:
        where, value, depth = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        what = _what(value)
        if what is not None:
            found.append((where, *what))
            continue  # the object itself is the culprit; what it holds does not matter
        if depth >= _MAX_DEPTH:
            continue
        children = list(_children(value))
        stack.extend((f"{where}{name}", v, depth + 1) for name, v in reversed(children))
    return found


def refuse_process_bound(experiment: Any) -> None:
    """Raise ExperimentSerializationError if ``experiment`` holds a process-bound object.

    Raises:
        ExperimentSerializationError: naming the attribute (e.g. ``self.log``),
            what it is (an open file, a lock, a socket, a thread, a database
            connection, a generator) and what to do instead.
    """
    found = process_bound_attributes(experiment)
    if not found:
        return
    cls = type(experiment).__qualname__
    what = "; ".join(f"attribute {p} is {name} ({fix})" for p, name, fix in found)
    raise ExperimentSerializationError(
        f"experiment {cls} cannot be sent to the engines: {what}. Such an object belongs to this "
        f"process and would not work (or would do harm, e.g. truncate a file) in another one"
    )
