"""A random stream per point: seeds derived from a sweep seed and the point, and applied before it runs.

Why: an experiment that keeps ``self.rng = numpy.random.default_rng()`` is
pickled to every worker with the same generator state, so workers repeat each
other's random numbers. epyclab therefore gives each point its own seed,
derived (with numpy's :class:`~numpy.random.SeedSequence`) from

- the *sweep seed*, an integer chosen once per sweep (an argument of
  ``runExperiment``, or drawn from numpy's global random state), and
- the point itself: its parameters, hashed canonically (sorted names, values
  encoded by kind, SHA-256; never Python's salted ``hash()``), so the seed does
  not depend on where, when, or in which order the point runs;

and, for repetitions, a child seed per repetition index (:func:`childSeed`).
The point seed is recorded in the row's metadata (:data:`SEED`) and is all that
is needed to run that point again with the same random numbers.

:func:`seedStreams` applies a point seed: numpy's global state, Python's
:mod:`random`, and every numpy ``Generator``, ``RandomState``,
``BitGenerator`` and ``random.Random`` held on the experiment (its attributes,
and inside dicts, lists, tuples and plain objects, down to :data:`MAX_DEPTH`)
get independent streams, each keyed by where it is held (``"rng"``,
``"_experiment.gens[1]"``), so adding an attribute does not change the others.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import random
import types
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "SEED",
    "SWEEP_SEED",
    "MAX_DEPTH",
    "drawSweepSeed",
    "checkSeed",
    "pointSeed",
    "childSeed",
    "canonicalBytes",
    "seedStreams",
    "startSweep",
    "recordSweepSeed",
    "recordedSeed",
]

#: Row metadata: the seed the point ran with (an int in [0, 2**63)).
SEED = "epyclab.experiment.seed"
#: Result set attribute: the sweep seed of the last sweep into the set.
SWEEP_SEED = "epyclab.lab.seed"
#: How far below the experiment random states are looked for (an attribute is depth 1).
MAX_DEPTH = 5
# At most this many objects are looked at, so a huge object graph costs bounded time per point.
_MAX_OBJECTS = 10_000
_MASK63 = (1 << 63) - 1


def drawSweepSeed() -> int:
    """A sweep seed drawn from numpy's global random state (so ``numpy.random.seed(42)`` fixes it)."""
    return int(np.random.randint(0, 2**62, dtype=np.int64))


def checkSeed(seed: Any) -> int:
    """``seed`` as a sweep or point seed: a whole number in [0, 2**63).

    Raises:
        TypeError: if ``seed`` is not a whole number (a bool is refused too).
        ValueError: if it is negative or too large to store.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"a seed is a whole number in [0, 2**63), got {seed!r} ({type(seed).__name__})")
    s = int(seed)
    if not 0 <= s <= _MASK63:
        raise ValueError(f"a seed is a whole number in [0, 2**63), got {s}; take it modulo 2**63")
    return s


def _encode(v: Any, out: list[bytes]) -> None:
    """Append the canonical bytes of ``v``: equal for values a point treats as equal (1, 1.0, numpy.int64(1))."""
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        out.append(b"n;")
    elif isinstance(v, (bool, np.bool_)):
        out.append(b"b%d;" % bool(v))
    elif isinstance(v, numbers.Integral):
        out.append(b"i%d;" % int(v))
    elif isinstance(v, numbers.Real):
        f = float(v)
        # An integral float is the same point as the int (lab['n'] = [1.0] and [1] resume each other).
        out.append(b"i%d;" % int(f) if f.is_integer() else b"f" + f.hex().encode() + b";")
    elif isinstance(v, numbers.Complex):
        c = complex(v)
        out.append(b"c" + c.real.hex().encode() + b"," + c.imag.hex().encode() + b";")
    elif isinstance(v, str):
        data = v.encode("utf-8", "surrogatepass")
        out.append(b"s%d:" % len(data) + data)
    elif isinstance(v, (bytes, bytearray)):
        out.append(b"y%d:" % len(v) + bytes(v))
    elif isinstance(v, np.ndarray):
        _encode(v.tolist(), out)
    elif isinstance(v, (list, tuple)):
        out.append(b"l%d[" % len(v))
        for x in v:
            _encode(x, out)
        out.append(b"]")
    elif isinstance(v, Mapping):
        out.append(b"d%d{" % len(v))
        for k in sorted(v, key=repr):
            _encode(k, out)
            _encode(v[k], out)
        out.append(b"}")
    else:
        # Anything else by its type and repr: stable for the values parameters take (dates, enums).
        text = f"{type(v).__module__}.{type(v).__qualname__}:{v!r}".encode("utf-8", "surrogatepass")
        out.append(b"r%d:" % len(text) + text)


def canonicalBytes(params: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a point: its parameters sorted by name, each value encoded by kind."""
    out: list[bytes] = []
    for k in sorted(params):
        _encode(k, out)
        _encode(params[k], out)
    return b"".join(out)


def _digest(key: int, data: bytes, size: int) -> bytes:
    """``size`` bytes of keyed BLAKE2b of ``data`` under ``key`` (an int in [0, 2**63)).

    A keyed hash is a pseudo-random function: distinct (key, data) give
    independent-looking outputs. It costs about a microsecond, where a
    SeedSequence costs tens: it runs once or twice per point.
    """
    return hashlib.blake2b(data, digest_size=size, key=key.to_bytes(8, "little")).digest()


def _words(data: bytes) -> list[int]:
    """SHA-256 of ``data`` as eight 32-bit words, entropy for a SeedSequence."""
    digest = hashlib.sha256(data).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]


def pointSeed(sweepSeed: int, params: Mapping[str, Any]) -> int:
    """The seed of the point ``params`` in the sweep seeded with ``sweepSeed`` (an int in [0, 2**63))."""
    return int.from_bytes(_digest(checkSeed(sweepSeed), canonicalBytes(params), 8), "little") & _MASK63


def childSeed(seed: int, index: int) -> int:
    """The seed of the ``index``-th repetition of a run seeded with ``seed`` (an int in [0, 2**63))."""
    return int.from_bytes(_digest(checkSeed(seed), b"repetition %d" % int(index), 8), "little") & _MASK63


@lru_cache(maxsize=4096)
def _path_key(where: str) -> tuple[int, ...]:
    return tuple(_words(where.encode("utf-8", "surrogatepass")))


def _sequence(seed: int, where: str) -> np.random.SeedSequence:
    """The seed sequence of the stream held at ``where`` (a path) for a run seeded with ``seed``."""
    return np.random.SeedSequence(seed, spawn_key=_path_key(where))


_RANDOM_STATES = (np.random.Generator, np.random.RandomState, np.random.BitGenerator, random.Random)


def _seed_one(obj: Any, ss: np.random.SeedSequence) -> None:
    """Seed the random state ``obj`` in place from ``ss``."""
    if isinstance(obj, np.random.Generator):
        bg = obj.bit_generator
        bg.state = type(bg)(ss).state
        return True
    if isinstance(obj, np.random.RandomState):
        obj.seed(ss.generate_state(8))
    elif isinstance(obj, np.random.BitGenerator):
        obj.state = type(obj)(ss).state
    elif not isinstance(obj, random.SystemRandom):
        # (A SystemRandom reads the operating system's entropy: it cannot be seeded, nor reproduced.)
        obj.seed(int.from_bytes(ss.generate_state(8).tobytes(), "little"))


# Objects never looked inside: their attributes hold no experiment's random state, or are huge.
_OPAQUE = (str, bytes, bytearray, numbers.Number, np.ndarray, types.ModuleType, type,
           types.FunctionType, types.BuiltinFunctionType, types.MethodType, np.random.SeedSequence)


def _children(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        return [(f"[{k!r}]", v) for k, v in list(obj.items())]
    if isinstance(obj, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(obj)]
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        # An experiment's own bookkeeping (its point, its last results) holds no random state.
        skip = getattr(type(obj), "NotRandomState", ())
        return [(f".{k}", v) for k, v in list(d.items()) if k not in skip]
    return []


def seedStreams(experiment: Any, seed: int, globals_: bool = True, skip: list[Any] | None = None) -> list[Any]:
    """Seed every random state the run of ``experiment`` can draw from, from the point seed ``seed``.

    With ``globals_``, numpy's global state and Python's :mod:`random` are
    seeded. Then every random state held on ``experiment`` (see the module
    docstring) is seeded in place from its own stream, keyed by its path; those
    in ``skip`` (seeded already for this run) are left alone. Returns the random
    states found, ``skip``'s included, for a later call's ``skip``.
    """
    seed = checkSeed(seed)
    if globals_:
        # One keyed hash for both global states: 256 bits each, so no two points' streams coincide.
        digest = _digest(seed, b"global random states", 64)
        np.random.seed(np.frombuffer(digest, dtype=np.uint32, count=8))
        random.seed(int.from_bytes(digest[32:], "little"))
    found: list[Any] = list(skip or ())
    done = {id(o) for o in found}
    looked: set[int] = {id(experiment)}
    stack: list[tuple[str, Any, int]] = [(p, v, 1) for p, v in reversed(_children(experiment))]
    count = 0
    while stack and count < _MAX_OBJECTS:
        path, obj, depth = stack.pop()
        count += 1
        if id(obj) in looked or obj is None or isinstance(obj, _OPAQUE):
            continue
        looked.add(id(obj))
        if isinstance(obj, _RANDOM_STATES):
            if id(obj) not in done:
                _seed_one(obj, _sequence(seed, path))
                found.append(obj)
                done.add(id(obj))
            continue
        if depth < MAX_DEPTH:
            stack.extend((path + p, v, depth + 1) for p, v in reversed(_children(obj)))
    return found


def startSweep(experiment: Any, rs: Any, seed: int | bool | None, resume: bool = False) -> int | None:
    """Give ``experiment`` the sweep seed of a sweep into result set ``rs``; return it (None: unseeded).

    ``seed``: a whole number, ``None`` (draw one from numpy's global random
    state, or with ``resume`` take the one recorded in ``rs`` if there is one) or
    ``False`` (no seeding, as in epyc). Nothing is written to ``rs`` here (it may
    be closed until the sweep opens it): :func:`recordSweepSeed` does that once
    a point is out.

    Raises:
        TypeError, ValueError: for any other ``seed`` (``True`` included), or a
            recorded seed that is not one.
    """
    if seed is False:
        experiment.setSweepSeed(None)
        return None
    if seed is None:
        recorded = rs.getAttribute(SWEEP_SEED) if resume and SWEEP_SEED in rs else None
        try:
            s = drawSweepSeed() if recorded is None else checkSeed(recorded)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"the result set's attribute {SWEEP_SEED!r} = {recorded!r} is not a sweep seed ({exc}); "
                f"resume with runExperiment(e, resume=True, seed=N) giving the sweep's seed"
            ) from exc
    else:
        s = checkSeed(seed)
    experiment.setSweepSeed(s)
    return s


def recordSweepSeed(rs: Any, experiment: Any) -> None:
    """Record ``experiment``'s sweep seed in result set ``rs`` as :data:`SWEEP_SEED` (if it is seeded)."""
    s = experiment.sweepSeed()
    if s is not None and (SWEEP_SEED not in rs or rs.getAttribute(SWEEP_SEED) != s):
        rs.setAttribute(SWEEP_SEED, s)


def recordedSeed(rs: Any) -> int | None:
    """The sweep seed recorded in result set ``rs`` (None if none is)."""
    return checkSeed(rs.getAttribute(SWEEP_SEED)) if SWEEP_SEED in rs else None
