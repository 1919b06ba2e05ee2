"""A random stream per point: seeds derived from a sweep seed and the point, and applied before it runs.

Why: an experiment that keeps ``self.rng = numpy.random.default_rng()`` is
pickled to every worker with the same generator state, so workers repeat each
other's random numbers. epyclab therefore gives each point its own seed,
derived (a keyed BLAKE2b, :func:`pointSeed`) from

- the *sweep seed*, an integer chosen once per sweep (an argument of
  ``runExperiment``, or drawn from numpy's global random state), and
- the point itself: its parameters, hashed canonically (sorted names, values
  encoded by kind; never Python's salted ``hash()``), so the seed does
  not depend on where, when, or in which order the point runs;

and, for repetitions, a child seed per repetition index (:func:`childSeed`).
The point seed is recorded in the row's metadata (:data:`SEED`) and is all that
is needed to run that point again with the same random numbers.

:func:`seedStreams` applies a point seed: numpy's global state, Python's
:mod:`random`, and every numpy ``Generator``, ``RandomState``,
``BitGenerator`` and ``random.Random`` held on the experiment (its attributes,
and inside dicts, lists, tuples and plain objects, down to :data:`MAX_DEPTH`)
get independent streams. The two global states get keys of their own made
from the point seed (:mod:`epyclab.globalstates`); numpy's global bit generator is
of the class it had where the sweep began (:func:`globalKind`: a user's
``numpy.random.set_bit_generator`` reaches clean worker processes too); each held state a
:class:`~numpy.random.SeedSequence` of the point seed keyed by where it is held
(``"rng"``, ``"_experiment.gens[1]"``), so adding an attribute does not change
the others.
A sweep finds those held on its experiment once (:class:`HeldStates`), and
looks again only where the experiment's attributes changed between points.
An experiment's :class:`SweepSeeder`, made once per sweep, does all of this
per point with what the functions find at each call found once (the keyed
hash, the layout of the points, the global states' route): same seeds, same
states.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import random
import types
from collections.abc import Mapping
from functools import lru_cache
from operator import is_, itemgetter
from typing import Any

import numpy as np

from epyclab.globalstates import GlobalsSeeder, globalKind, seed_globals

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
    "globalKind",
    "HeldStates",
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


@lru_cache(maxsize=1024)
def _name_bytes(name: str) -> bytes:
    """The canonical bytes of a parameter name (names repeat at every point: encoded once)."""
    out: list[bytes] = []
    _encode(name, out)
    return b"".join(out)


def _value_bytes(v: Any) -> bytes:
    """The canonical bytes of one value, as :func:`_encode` gives them, with the common kinds first."""
    t = type(v)
    if t is int:
        return b"i%d;" % v
    if t is float:
        if v != v:
            return b"n;"
        return b"i%d;" % int(v) if v.is_integer() else b"f" + v.hex().encode() + b";"
    if t is str:
        data = v.encode("utf-8", "surrogatepass")
        return b"s%d:" % len(data) + data
    out: list[bytes] = []
    _encode(v, out)
    return b"".join(out)


@lru_cache(maxsize=256)
def _layout(names: tuple[Any, ...]) -> tuple[tuple[str, bytes], ...] | None:
    """Names all ``str``, sorted, each with its canonical bytes; None for other names.

    A sweep's points share one or two name sets, so this runs once per set. Only
    ``str`` names are kept: names of other types can be equal and encode
    differently (``True == 1``), and the cache would take one for the other.
    """
    if not all(type(k) is str for k in names):
        return None
    return tuple((k, _name_bytes(k)) for k in sorted(names))


def canonicalBytes(params: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a point: its parameters sorted by name, each value encoded by kind."""
    out: list[bytes] = []
    append = out.append
    layout = _layout(tuple(params))
    if layout is None:
        for k in sorted(params):
            append(_name_bytes(k) if type(k) is str else _value_bytes(k))
            append(_value_bytes(params[k]))
        return b"".join(out)
    for k, name in layout:
        append(name)
        v = params[k]
        # An int inline: the commonest parameter costs no call.
        append(b"i%d;" % v if type(v) is int else _value_bytes(v))
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
    return point_seed(checkSeed(sweepSeed), params)


@lru_cache(maxsize=16)
def _sweep_hash(sweep_seed: int) -> Any:
    """The keyed BLAKE2b of :func:`point_seed` with its key taken in, copied for each point of the sweep.

    A copy and an update give the digest ``_digest(sweep_seed, data, 8)`` gives,
    without hashing the key block again at every point (a third of the hash's cost).
    """
    return hashlib.blake2b(digest_size=8, key=sweep_seed.to_bytes(8, "little"))


def point_seed(sweep_seed: int, params: Mapping[str, Any]) -> int:
    """:func:`pointSeed` of a sweep seed checked already (an experiment checks it once per sweep)."""
    h = _sweep_hash(sweep_seed).copy()
    h.update(canonicalBytes(params))
    return int.from_bytes(h.digest(), "little") & _MASK63


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
        return
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
# The commonest of them by exact type, told apart by one set lookup before the isinstance chain.
_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes, np.ndarray})


def _children(obj: Any) -> list[tuple[str, Any]]:
    """What ``obj`` holds that may hold a random state: (path step, value) pairs, atoms left out."""
    if isinstance(obj, Mapping):
        items = [(f"[{k!r}]", v) for k, v in list(obj.items()) if type(v) not in _ATOMS]
    elif isinstance(obj, (list, tuple)):
        items = [(f"[{i}]", v) for i, v in enumerate(obj) if type(v) not in _ATOMS]
    else:
        d = getattr(obj, "__dict__", None)
        if not isinstance(d, dict):
            return []
        # An experiment's own bookkeeping (its point, its last results) holds no random state.
        skip = getattr(type(obj), "NotRandomState", ())
        items = [(f".{k}", v) for k, v in list(d.items()) if type(v) not in _ATOMS and k not in skip]
    return items


def _walk(experiment: Any) -> list[tuple[str, Any]]:
    """Every random state held on ``experiment`` (see the module docstring), each with its path, in walk order."""
    found: list[tuple[str, Any]] = []
    looked: set[int] = {id(experiment)}
    stack: list[tuple[str, Any, int]] = [(p, v, 1) for p, v in reversed(_children(experiment))]
    count = 0
    while stack and count < _MAX_OBJECTS:
        path, obj, depth = stack.pop()
        count += 1
        if id(obj) in looked or isinstance(obj, _OPAQUE):
            continue
        looked.add(id(obj))
        if isinstance(obj, _RANDOM_STATES):
            found.append((path, obj))
            continue
        if depth < MAX_DEPTH:
            stack.extend((path + p, v, depth + 1) for p, v in reversed(_children(obj)))
    return found


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
        seed_globals(seed)
    found: list[Any] = list(skip or ())
    done = {id(o) for o in found}
    for path, obj in _walk(experiment):
        if id(obj) not in done:
            _seed_one(obj, _sequence(seed, path))
            found.append(obj)
            done.add(id(obj))
    return found


class HeldStates:
    """The random states held on one experiment, found once and looked for again only when needed.

    Walking an experiment's objects costs microseconds per attribute (up to
    :data:`_MAX_OBJECTS` objects for a large one), at every point of a sweep.
    So the walk's finds are kept, with the experiment's attributes as they were;
    an attribute set to another object since (``setUp`` making ``self.rng``,
    an attribute added or deleted) sends the next :meth:`seed` through a new
    walk. A random state put *inside* a container the experiment already held,
    between two points, is therefore found at the next sweep (labs make a new
    ``HeldStates`` for each).
    """

    def __init__(self) -> None:
        # At the last walk: every attribute name of the experiment (None: walk at every call), the
        # names that are not its bookkeeping, and their objects (kept, not their ids, so that a new
        # object cannot pass for an old one).
        self._keys: tuple[str, ...] | None = None
        self._names: tuple[str, ...] = ()
        self._objects: tuple[Any, ...] = ()
        self._found: list[tuple[str, Any]] = []

    def _refresh(self, experiment: Any) -> None:
        skip = frozenset(getattr(type(experiment), "NotRandomState", ()))
        d = getattr(experiment, "__dict__", None)
        if type(d) is dict:
            self._keys = tuple(d)
            self._names = tuple(k for k in d if k not in skip)
            self._objects = tuple(d[k] for k in self._names)
        else:
            self._keys = None
        self._found = _walk(experiment)

    def seed(self, experiment: Any, seed: int, skip: list[Any] | None = None) -> list[Any]:
        """Seed the random states held on ``experiment`` from the point seed ``seed`` (checked already).

        As :func:`seedStreams` with ``globals_=False``, but the walk is made only
        when the experiment's attributes changed since the last call. Those in
        ``skip`` are left alone; returns the states found, ``skip``'s included.
        """
        # Unchanged since the last walk: the same attribute names in the same order (bookkeeping too; a
        # change of order costs one walk for nothing) and the same objects under the names that are not
        # bookkeeping, compared by identity in C. Written here, not as a method: it runs at every point.
        d = getattr(experiment, "__dict__", None)
        if (type(d) is not dict or tuple(d) != self._keys
                or (self._names and not all(map(is_, map(d.__getitem__, self._names), self._objects)))):
            self._refresh(experiment)
        if not self._found:
            return list(skip) if skip else []
        found: list[Any] = list(skip or ())
        done = {id(o) for o in found}
        for path, obj in self._found:
            if id(obj) not in done:
                _seed_one(obj, _sequence(seed, path))
                found.append(obj)
                done.add(id(obj))
        return found


class _IntLayout:
    """The canonical bytes of points whose parameters are all ``int``, named as the first point of a sweep.

    ``canonicalBytes`` of such a point is its sorted names' bytes, each
    followed by ``b"i%d;"`` of its value: here one bytes ``format`` of the
    whole point, filled from the ``values`` in the names' order, after one
    check that the point has these names (its ``size``, and each name found)
    and one that every value is exactly an ``int`` (``all_ints``: a ``bool`` or
    ``numpy.int64`` is not; those take :func:`canonicalBytes`, which gives the
    same bytes). :meth:`SweepSeeder.point_seed` does this.
    """

    __slots__ = ("size", "values", "all_ints", "format")

    def __init__(self, names: tuple[str, ...]) -> None:
        ordered = sorted(names)
        n = self.size = len(ordered)
        # itemgetter of one name gives the value alone, of several a tuple: always a tuple here.
        self.values = itemgetter(*ordered) if n > 1 else (lambda p, k=ordered[0]: (p[k],))
        ints = (int,) * n
        self.all_ints = _ALL_INTS.get(n) or (lambda v: tuple(map(type, v)) == ints)
        # %-signs in a name are the name's, not the format's.
        self.format = b"".join(_name_bytes(k).replace(b"%", b"%%") + b"i%d;" for k in ordered)


# Whether the values of a point of 1-4 parameters are all exactly int, by a test per value (a third of
# the time of comparing the tuple of their types: these are the sweeps' commonest sizes).
_ALL_INTS = {
    1: lambda v: type(v[0]) is int,
    2: lambda v: type(v[0]) is int and type(v[1]) is int,
    3: lambda v: type(v[0]) is int and type(v[1]) is int and type(v[2]) is int,
    4: lambda v: type(v[0]) is int and type(v[1]) is int and type(v[2]) is int and type(v[3]) is int,
}


class SweepSeeder:
    """What a seeded experiment needs per point, found once per sweep: point seeds, and its streams seeded.

    :meth:`point_seed` is :func:`point_seed` with the sweep's keyed hash and
    the layout of its points kept (:class:`_IntLayout`); :meth:`seed` is
    ``seed_globals`` and :meth:`HeldStates.seed`, with the global states'
    checks made once (:class:`~epyclab.globalstates.GlobalsSeeder`). The seeds
    and states are those of the functions: only their cost differs.

    An experiment keeps one for its sweep (``Experiment.setSweepSeed`` makes
    it). It travels with the experiment as its sweep seed alone: pickled, it is
    made afresh where it lands, so that each process finds its own states.
    """

    __slots__ = ("sweep_seed", "_hash", "_layout", "_globals", "_held")

    def __init__(self, sweep_seed: int | None) -> None:
        """``sweep_seed``: checked already (None: the experiment runs with point seeds it is given only)."""
        self.sweep_seed = sweep_seed
        self._hash = None if sweep_seed is None else _sweep_hash(sweep_seed)
        self._layout: _IntLayout | None = None
        self._globals = GlobalsSeeder()
        self._held = HeldStates()

    def __reduce__(self) -> tuple[Any, ...]:
        return (SweepSeeder, (self.sweep_seed,))

    def point_seed(self, params: Mapping[str, Any]) -> int | None:
        """:func:`point_seed` of this sweep's seed and ``params`` (None if the seeder has no sweep seed)."""
        h = self._hash
        if h is None:
            return None
        layout = self._layout
        # The point's bytes by the layout's format, if it is a point of the layout's names with int values.
        data = None
        if layout is not None and len(params) == layout.size:
            try:
                values = layout.values(params)
            except KeyError:
                pass
            else:
                if layout.all_ints(values):
                    data = layout.format % values
        if data is None:
            data = canonicalBytes(params)
            if layout is None and params and all(type(k) is str for k in params):
                self._layout = _IntLayout(tuple(params))
        h = h.copy()
        h.update(data)
        return int.from_bytes(h.digest(), "little") & _MASK63

    def seed(self, experiment: Any, seed: int, kind: type | None) -> list[Any]:
        """Seed numpy's global state, :mod:`random` and the random states held on ``experiment`` from ``seed``.

        ``kind``: as :func:`seed_globals`'s. Returns the held states seeded, for
        :meth:`seed_held`'s ``skip``.
        """
        self._globals.put(seed, kind)
        return self._held.seed(experiment, seed)

    def seed_held(self, experiment: Any, seed: int, skip: list[Any]) -> list[Any]:
        """Seed the random states held on ``experiment`` that are not in ``skip`` (those ``setUp`` made)."""
        return self._held.seed(experiment, seed, skip)


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
