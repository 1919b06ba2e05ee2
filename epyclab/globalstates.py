"""Seeding the two global random states a point can draw from: numpy's and Python's :mod:`random`.

Both are Mersenne Twisters: 624 32-bit key words and the position of the next
word (624: the next draw twists the whole key first), 2.5 KB each, and each
point needs new ones. A point's keys are one draw of 4,992 bytes from a
Philox4x64-10 (numpy's counter-based bit generator) under a fixed key, in
counter mode: block ``b`` of the point seeded ``s`` is the Philox of the
256-bit counter ``(b, 0, s, 0)`` (``b`` = 1 to 156). The first 2,496 bytes,
as 624 little-endian words, are numpy's key; the next 2,496 Python's
(:func:`global_keys`). Under one key Philox is a permutation of counters, so
distinct point seeds give distinct blocks: two points share these streams only
if they share the point seed (probability at most n**2 / 2**64 for n points of
a sweep, 5e-12 for 10,000), and within a point numpy's and Python's keys differ.

Each state is set to ``(key, position 624)`` with its kept normal deviate
dropped, which is what ``numpy.random.set_state(("MT19937", key, 624, 0, 0.0))``
and ``random.setstate((3, (*key, 624), None))`` make of it. Those copy the
words one by one (30 and 3 us); here the key is written in place,
through numpy's public ctypes interface (``state_address``) for its generator
and at the documented offset of CPython's ``_random.Random`` object
(``PyObject_HEAD; int index; uint32_t state[624]``) for Python's, and the
Philox counter likewise. Each layout is checked once, read-only, against the
state the object reports (``.state``, ``getstate()``), and the route is then
checked to give what the slow path gives; where a check fails (another numpy,
PyPy, a big-endian machine) every point takes the slow path, which gives the
same numbers.

numpy's global bit generator is of the class it had where the sweep began
(:func:`globalKind`): a user's ``numpy.random.set_bit_generator`` reaches clean
worker processes too.

:func:`seed_globals` finds its route at each call; a sweep's points go
through a :class:`GlobalsSeeder`, which finds it once, with the normal deviate
numpy keeps between draws dropped in place too (:func:`_kept_normal_view`),
and checks per point by identity only what user code can change.
"""

from __future__ import annotations

import ctypes
import random
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from epyclab.log import logger

__all__ = ["globalKind", "keptGlobals"]

_MT_WORDS = 624
_MT_KEY_BYTES = 4 * _MT_WORDS
# The Philox key of these draws (fixed; the point seed is in the counter): "epyclab global states".
_PHILOX_KEY = np.frombuffer(b"epyclab:globals:", dtype="<u8").astype(np.uint64)
# 64-bit words drawn per point: numpy's key, then Python's.
_RAW_WORDS = 2 * _MT_KEY_BYTES // 8
# Philox's counter is 4 64-bit words; the point seed is the third.
_SEED_WORD = 2


def _counter(seed: int) -> np.ndarray:
    return np.array([0, 0, seed, 0], dtype=np.uint64)


def global_keys(seed: int) -> tuple[bytes, bytes]:
    """The keys of numpy's global state and Python's :mod:`random` for point seed ``seed``: 2,496 bytes each.

    Each is 624 little-endian 32-bit words (see the module docstring). This is
    the definition, made through numpy's public constructor; :func:`seed_globals`
    writes the same bytes faster.
    """
    raw = np.random.Philox(counter=_counter(seed), key=_PHILOX_KEY).random_raw(_RAW_WORDS)
    data = raw.astype("<u8").tobytes()
    return data[:_MT_KEY_BYTES], data[_MT_KEY_BYTES:]


class _PhiloxState(ctypes.Structure):
    """numpy's ``philox_state`` (numpy/random/src/philox/philox.h), up to the buffer position."""

    _fields_ = [
        ("ctr", ctypes.POINTER(ctypes.c_uint64 * 4)),
        ("key", ctypes.POINTER(ctypes.c_uint64 * 2)),
        ("buffer_pos", ctypes.c_int),
    ]


class _Draws:
    """One thread's Philox of :func:`global_keys`, its counter set in place for each point.

    Made once per thread (a Philox and its counter are not shared: two threads
    seeding at once would mix their draws). ``keys(seed)`` is a view of the
    4,992 bytes :func:`global_keys` gives, valid until the next call.
    """

    def __init__(self) -> None:
        self._bg = np.random.Philox(counter=_counter(0), key=_PHILOX_KEY)
        st = _located(self._bg)
        # The counter's words and the buffer position in place, as memoryviews (a slot set costs less than
        # a ctypes one) over the Philox object's own memory: the ctypes objects keep it, this keeps them.
        self._in_place: tuple[memoryview, memoryview] | None = None
        if st is not None:
            pos = ctypes.c_int.from_address(ctypes.addressof(st) + _PhiloxState.buffer_pos.offset)
            self._held = (st, pos)
            self._in_place = (memoryview(st.ctr.contents).cast("B").cast("Q"), memoryview(pos).cast("B").cast("i"))
            if not self._agrees():
                self._in_place = None
        if self._in_place is None:
            logger.debug("the Philox state is not laid out as expected here: the global keys take the slow path")

    def _agrees(self) -> bool:
        """True if the route in place gives what :func:`global_keys` gives (two seeds, one after the other)."""
        for seed in (0x0123456789ABCDEF, (1 << 63) - 1):
            a, b = global_keys(seed)
            if self.keys(seed).tobytes() != a + b:
                return False
        return True

    def in_place(self) -> tuple[memoryview, memoryview, Any] | None:
        """The counter's words, the buffer position and the bound ``random_raw`` (None: no route in place).

        For :class:`GlobalsSeeder`, which sets them as :meth:`keys` does, without a call per point.
        """
        return None if self._in_place is None else (*self._in_place, self._bg.random_raw)

    def keys(self, seed: int) -> memoryview:
        """The 4,992 bytes of both keys for point seed ``seed`` (numpy's first), native order (little-endian)."""
        in_place = self._in_place
        if in_place is None:
            a, b = global_keys(seed)
            return memoryview(a + b)
        ctr, pos = in_place
        # Block 1 is the first drawn: Philox counts up before each block, and a full buffer makes it draw.
        ctr[0] = 0
        ctr[_SEED_WORD] = seed
        pos[0] = 4
        return memoryview(self._bg.random_raw(_RAW_WORDS)).cast("B")


def _located(bg: Any) -> _PhiloxState | None:
    """``bg``'s state in place, if it reads (read-only) what ``bg.state`` says it is; else None."""
    if sys.byteorder != "little":
        return None
    try:
        st = _PhiloxState.from_address(bg.ctypes.state_address)
        # numpy keeps the counter and key in the Philox object itself: anything else is not read at all.
        start, end = id(bg), id(bg) + type(bg).__basicsize__
        spans = [(ctypes.cast(p, ctypes.c_void_p).value or 0, size) for p, size in ((st.ctr, 32), (st.key, 16))]
        if not all(start <= p and p + size <= end for p, size in spans):
            return None
        state = bg.state
        ctr, key = list(st.ctr.contents), list(st.key.contents)
    except (AttributeError, TypeError, ValueError):
        return None
    if (ctr != [int(v) for v in state["state"]["counter"]] or key != [int(v) for v in state["state"]["key"]]
            or st.buffer_pos != state["buffer_pos"]):
        return None
    return st


_threads = threading.local()


def _draws() -> _Draws:
    d = getattr(_threads, "draws", None)
    if d is None:
        d = _threads.draws = _Draws()
    return d


class _NumpyGlobalState:
    """Puts a key into numpy's global Mersenne Twister: in place where that is checked to work, else by set_state.

    ``numpy.random.set_state`` copies the 624 words one at a time in Python
    (30 us); ``numpy.random.seed(array)`` runs ``init_by_array`` after checking
    the array in Python (7 us, more in a sweep). The global bit generator's
    state can instead be written in place, through its public ctypes interface
    (``state_address``), in a fraction of a microsecond. That relies on the
    layout of numpy's MT19937 state (the key words, then the position), so it is
    checked once per global bit generator: the bytes there must be the key and
    position ``bg.state`` gives; if they are not (another layout, a big-endian
    machine), every point goes through ``set_state``, which gives
    the same state. Either way the state is what
    ``set_state(("MT19937", key, 624, 0, 0.0))`` makes it, so the numbers do not
    depend on the route.

    The normal deviate numpy's global ``RandomState`` keeps between draws (not
    in the bit generator) is dropped by ``numpy.random.set_bit_generator`` of
    the generator it has already (0.2 us), where that is checked once to drop
    it, else by ``numpy.random.seed(0)`` (1.4 us, its state then replaced).
    """

    def __init__(self) -> None:
        # The global bit generator the views were made for and its views (None: use set_state), in
        # one tuple: replaced whole, a thread never pairs a view with another generator, and the
        # generator it holds cannot be freed while its view is in use.
        self._viewed: tuple[Any, _MTViews | None] = (None, None)
        # numpy's global RandomState and the view of its kept normal deviate (see kept_normal), likewise.
        self._kept: tuple[Any, memoryview | None] = (None, None)

    def kept_normal(self) -> memoryview | None:
        """A view of the kept normal deviate of numpy's global ``RandomState`` (made once; None: no route)."""
        rs = getattr(np.random.set_state, "__self__", None)
        kept = self._kept
        if kept[0] is not rs:
            kept = self._kept = (rs, _kept_normal_view(rs) if isinstance(rs, np.random.RandomState) else None)
        return kept[1]

    def views(self, bg: Any) -> _MTViews | None:
        """The checked views of ``bg`` (numpy's global bit generator), made once per generator; None: no route."""
        viewed = self._viewed
        if viewed[0] is not bg:
            viewed = self._viewed = (bg, _checked_views(bg) if type(bg) is np.random.MT19937 else None)
        return viewed[1]

    def put(self, key: memoryview | bytes) -> None:
        """Make numpy's global state ``("MT19937", key as 624 words, 624, 0, 0.0)``."""
        # numpy < 1.25 has no get_bit_generator (nor set_bit_generator: its global one is MT19937).
        bg = _get_bit_generator() if _get_bit_generator is not None else None
        views = self.views(bg)
        if views is not None:
            if views.resets:
                np.random.set_bit_generator(bg)
                views.pos[0] = _MT_WORDS
            else:
                # Also sets the position to 624; the key written next replaces its key.
                np.random.seed(0)
            views.key[:] = key
        elif bg is None or type(bg) is np.random.MT19937:
            np.random.set_state(("MT19937", np.frombuffer(key, dtype="<u4"), _MT_WORDS, 0, 0.0))
        else:
            # The user made another generator the global one (numpy.random.set_bit_generator): it
            # gets the state numpy.random.seed(first 8 key words) gives it, set through set_state,
            # because seed() reseeds only the bit generator and keeps the normal deviate the global
            # RandomState holds from the last point's draws (numpy 1.25-2.x), which would leak.
            fresh = type(bg)(np.frombuffer(key, dtype="<u4", count=8)).state
            np.random.set_state({**fresh, "has_gauss": 0, "gauss": 0.0})


_get_bit_generator = getattr(np.random, "get_bit_generator", None)


class _MTViews:
    """Writable views of an MT19937's key words and position; whether set_bit_generator drops a kept normal."""

    __slots__ = ("key", "pos", "resets")

    def __init__(self, key: memoryview, pos: memoryview, resets: bool) -> None:
        self.key, self.pos, self.resets = key, pos, resets


def _checked_views(bg: Any) -> _MTViews | None:
    """Views of MT19937 ``bg``'s key words and position, if they are where it looks (else None).

    Looked at, not written: the views are used only if they read what
    ``bg.state`` says the key and position are, byte for byte.
    """
    if sys.byteorder != "little":
        return None
    try:
        view = memoryview((ctypes.c_uint8 * (_MT_KEY_BYTES + 4)).from_address(bg.ctypes.state_address)).cast("B")
    except (AttributeError, TypeError, ValueError):
        return None
    state = bg.state["state"]
    expected = state["key"].astype("<u4").tobytes() + int(state["pos"]).to_bytes(4, sys.byteorder)
    if view.tobytes() != expected:
        logger.debug("numpy's MT19937 state is not laid out as expected: numpy.random.set_state seeds each point")
        return None
    return _MTViews(view[:_MT_KEY_BYTES], view[_MT_KEY_BYTES:].cast("i"), _set_drops_normal(bg))


def _set_drops_normal(bg: Any) -> bool:
    """True if ``numpy.random.set_bit_generator(bg)`` (``bg`` the global one) drops a normal kept by the global state.

    numpy's ``set_bit_generator`` resets the kept normal (numpy 1.25-2.x) but
    does not say so, so it is tried here, once, the global state put back after.
    """
    if _get_bit_generator is None or _get_bit_generator() is not bg:
        return False
    saved = np.random.get_state()
    try:
        np.random.set_state((*saved[:3], 1, 0.5))
        np.random.set_bit_generator(bg)
        after = np.random.get_state()
        return _get_bit_generator() is bg and after[3] == 0 and after[2] == saved[2]
    finally:
        np.random.set_state(saved)


# A normal deviate no draw gives exactly, to find where numpy's global RandomState keeps one.
_PROBE = 0.1234567890123
# The kept normal dropped: the flag (a C int), the padding after it and the value (a double), all zero.
_NO_KEPT_NORMAL = bytes(16)


def _kept_normal_view(rs: Any) -> memoryview | None:
    """A writable view of where ``rs`` (numpy's global RandomState) keeps a normal deviate, if found; else None.

    numpy keeps it in the object as ``int has_gauss`` and ``double gauss``, 8
    bytes apart (``aug_bitgen_t``), and drops it only through
    ``set_bit_generator``, ``seed`` or ``set_state`` (0.2-1.4 us). Here the two
    are looked for once, read-only, in the object's memory while ``set_state``
    says they are ``(1, probe)`` and then ``(0, 0.0)``; then a drop written
    through the view must be what ``get_state`` reports. The state is put back
    either way.
    """
    if sys.implementation.name != "cpython" or sys.byteorder != "little":
        return None
    import struct

    size = type(rs).__basicsize__
    saved = np.random.get_state()
    try:
        np.random.set_state((*saved[:3], 1, _PROBE))
        mem = ctypes.string_at(id(rs), size)
        probe = struct.pack("<d", _PROBE)
        at = mem.find(probe)
        if at < 8 or mem.find(probe, at + 1) != -1 or mem[at - 8:at] != b"\x01" + bytes(7):
            return None
        np.random.set_state((*saved[:3], 0, 0.0))
        if ctypes.string_at(id(rs) + at - 8, 16) != _NO_KEPT_NORMAL:
            return None
        view = memoryview((ctypes.c_uint8 * 16).from_address(id(rs) + at - 8)).cast("B")
        np.random.set_state((*saved[:3], 1, _PROBE))
        view[:] = _NO_KEPT_NORMAL
        after = np.random.get_state()
        if after[3:] != (0, 0.0) or after[2] != saved[2] or not np.array_equal(after[1], saved[1]):
            return None
        return view
    except (AttributeError, TypeError, ValueError):
        return None
    finally:
        np.random.set_state(saved)


class _PythonGlobalState:
    """Puts a key into the Mersenne Twister behind :mod:`random`'s functions: in place if checked, else by setstate.

    ``random.setstate`` takes the key as a tuple of 625 ints (3 us);
    ``random.seed`` runs ``init_by_array`` (4 us). CPython's ``_random.Random``
    object is ``PyObject_HEAD; int index; uint32_t state[624]``, so the key and
    the index can be written in place. That is checked once per instance,
    read-only: the bytes after the object's header must be the index and key
    ``getstate()`` gives. Elsewhere (PyPy, another layout) every point goes
    through ``setstate``; either way the state is ``(3, (*key, 624), None)``.
    """

    def __init__(self) -> None:
        # As for numpy's: the instance and its view in one tuple, the instance kept alive by it.
        self._viewed: tuple[Any, memoryview | None] = (None, None)

    def view(self, inst: Any) -> memoryview | None:
        """The checked view of ``inst``'s index and key, made once per instance; None: no route in place."""
        viewed = self._viewed
        if viewed[0] is not inst:
            viewed = self._viewed = (inst, _random_view(inst))
        return viewed[1]

    def put(self, key: memoryview | bytes) -> None:
        """Make :mod:`random`'s state ``(3, (*key as 624 words, 624), None)``."""
        # The instance the module's functions are bound to (random.seed is its bound method).
        inst = getattr(random.seed, "__self__", None)
        view = self.view(inst)
        if view is None:
            random.setstate((3, (*np.frombuffer(key, dtype="<u4").tolist(), _MT_WORDS), None))
            return
        view[:4] = _INDEX
        view[4:] = key
        # What random.seed and setstate do too: a normal kept from the last point's gauss() is dropped.
        inst.gauss_next = None


# The index 624 as the C int before the key (native order: the view is used only where that is little-endian).
_INDEX = _MT_WORDS.to_bytes(4, "little")


def _random_view(inst: Any) -> memoryview | None:
    """A writable view of ``inst``'s index and key (2,500 bytes), if they are where it looks (else None)."""
    if (sys.implementation.name != "cpython" or sys.byteorder != "little" or not isinstance(inst, random.Random)
            or isinstance(inst, random.SystemRandom)):
        logger.debug("random's state cannot be written in place here: random.setstate seeds each point")
        return None
    import _random

    head = object.__basicsize__
    if _random.Random.__basicsize__ < head + 4 + _MT_KEY_BYTES:
        logger.debug("_random.Random is not laid out as expected: random.setstate seeds each point")
        return None
    view = memoryview((ctypes.c_uint8 * (4 + _MT_KEY_BYTES)).from_address(id(inst) + head)).cast("B")
    version, internal, _ = inst.getstate()
    words = np.array(internal[:_MT_WORDS], dtype="<u4").tobytes()
    if version != 3 or len(internal) != _MT_WORDS + 1 or view.tobytes() != internal[-1].to_bytes(4, "little") + words:
        logger.debug("random's state is not laid out as expected: random.setstate seeds each point")
        return None
    return view


_numpy_global = _NumpyGlobalState()
_python_global = _PythonGlobalState()


def globalKind() -> type | None:
    """The class of numpy's global bit generator here (None on a numpy without ``get_bit_generator``).

    A lab reads it when a sweep begins (:meth:`Experiment.setSweepSeed`), and
    each point's :func:`seed_globals` makes the global one of that class again
    wherever the point runs, so that a user's ``numpy.random.set_bit_generator``
    reaches clean worker processes too.
    """
    return type(_get_bit_generator()) if _get_bit_generator is not None else None


_unbuildable: set[type] = set()


def _make_global(kind: type) -> None:
    """Make a new ``kind()`` numpy's global bit generator; if ``kind`` needs arguments, say so once and leave it."""
    if kind in _unbuildable:
        return
    try:
        made = kind()
    except Exception as exc:  # a user's BitGenerator subclass may need arguments: its points still run, seeded
        _unbuildable.add(kind)
        logger.warning(
            "numpy's global bit generator was a %s where the sweep began, but this process cannot make one "
            "without arguments (%s); its points draw from numpy's global %s here, seeded per point as always. "
            "To get the same numbers everywhere, use a bit generator numpy can make with no arguments, or call "
            "numpy.random.set_bit_generator in the experiment's setUp()",
            kind.__qualname__, exc, type(_get_bit_generator()).__name__,
        )
        return
    np.random.set_bit_generator(made)


def seed_globals(seed: int, kind: type | None = None) -> None:
    """Seed numpy's global random state and Python's :mod:`random` from the point seed ``seed`` (checked already).

    ``kind``: the class numpy's global bit generator must be (from
    :func:`globalKind` where the sweep began); if this process's is another
    (a fresh worker has MT19937), a new one of ``kind`` is made the global one
    (``numpy.random.set_bit_generator``) before it is seeded. None: leave it.

    Each state gets its key of :func:`global_keys` (see the module docstring);
    another global bit generator than MT19937 gets the state
    ``numpy.random.seed`` makes of the first 8 words of numpy's key.
    """
    if kind is not None and _get_bit_generator is not None and type(_get_bit_generator()) is not kind:
        _make_global(kind)
    keys = _draws().keys(seed)
    _numpy_global.put(keys[:_MT_KEY_BYTES])
    _python_global.put(keys[_MT_KEY_BYTES:])


# The 64-bit words of numpy's key (and of Python's) in a draw of global_keys.
_KEY_WORDS = _MT_KEY_BYTES // 8
# The format of a uint64 array's buffer here ("L" or "Q"): a view cast to it takes a draw's words as they are.
_U64_FORMAT = memoryview(np.zeros(1, dtype=np.uint64)).format
# What GlobalsSeeder's route was made for before its first point: nothing user code can hold.
_NOT_YET = object()
_get_ident = threading.get_ident
_set_bit_generator = getattr(np.random, "set_bit_generator", None)
_np_seed = np.random.seed


class GlobalsSeeder:
    """:func:`seed_globals` for the points of one sweep: the same states, its checks made once, not per point.

    ``seed_globals`` finds, at every point, this thread's Philox, numpy's global
    bit generator and its views, and :mod:`random`'s instance and its view,
    each behind a call and a check. A seeder finds them once (:meth:`_prepare`)
    and keeps them in one tuple, its *route*; per point it checks by identity
    only what user code can change between two points: numpy's global bit
    generator (``numpy.random.set_bit_generator``), the instance :mod:`random`'s
    functions are bound to, the class the sweep wants the global bit generator
    to be, and the thread (the Philox is this thread's). A change makes it find
    them again; where no route in place is checked to work, every point goes
    through ``seed_globals``. Either way the states are those ``seed_globals``
    makes (:func:`global_keys`).
    """

    __slots__ = ("_bg", "_rseed", "_kind", "_thread", "_route")

    def __init__(self) -> None:
        # What the route was made for: numpy's global bit generator, random.seed (the bound method,
        # kept: while it is held, no other object can take its id), the sweep's class, the thread.
        self._bg: Any = _NOT_YET
        self._rseed: Any = _NOT_YET
        self._kind: Any = _NOT_YET
        self._thread = 0
        self._route: tuple[Any, ...] | None = None

    def put(self, seed: int, kind: type | None = None) -> None:
        """``seed_globals(seed, kind)``: numpy's global state and :mod:`random`'s keyed by point seed ``seed``."""
        if (self._bg is not _global_bg() or self._rseed is not random.seed or self._kind is not kind
                or self._thread != _get_ident()):
            self._prepare(kind)
        route = self._route
        if route is None:
            seed_globals(seed, kind)
            return
        ctr, pos, raw, kept, resets, bg, np_pos, np_key, py_index, py_key, inst = route
        # As _Draws.keys: block 1 is drawn first.
        ctr[0] = 0
        ctr[_SEED_WORD] = seed
        pos[0] = 4
        # The draw's 624 words as they are (no cast to bytes): the keys' views take them as words.
        words = memoryview(raw(_RAW_WORDS))
        # As _NumpyGlobalState.put and _PythonGlobalState.put, the kept normal dropped in place if it can be.
        if kept is not None:
            kept[:] = _NO_KEPT_NORMAL
            np_pos[0] = _MT_WORDS
        elif resets:
            _set_bit_generator(bg)
            np_pos[0] = _MT_WORDS
        else:
            _np_seed(0)
        np_key[:] = words[:_KEY_WORDS]
        py_index[0] = _MT_WORDS
        py_key[:] = words[_KEY_WORDS:]
        inst.gauss_next = None

    def _prepare(self, kind: type | None) -> None:
        """Find the route for numpy's global bit generator, :mod:`random`'s instance and this thread now."""
        if kind is not None and _get_bit_generator is not None and type(_get_bit_generator()) is not kind:
            _make_global(kind)
        bg = _global_bg()
        inst = getattr(random.seed, "__self__", None)
        self._bg, self._rseed, self._kind, self._thread = bg, random.seed, kind, _get_ident()
        self._route = None
        # No route where seed_globals would take its slow path for either state (seed_globals then sets both).
        views = _numpy_global.views(bg) if bg is not None else None
        py_view = _python_global.view(inst)
        draws = _draws().in_place()
        if views is None or py_view is None or draws is None:
            return
        # The keys' views as 64-bit words in the format of the draw's buffer (numpy's for uint64 here), and
        # random's index as a C int: a draw is copied in without a cast to bytes and slices of it.
        words = _U64_FORMAT
        try:
            np_key, py_index, py_key = views.key.cast(words), py_view[:4].cast("i"), py_view[4:].cast(words)
        except (TypeError, ValueError):
            return
        self._route = (*draws, _numpy_global.kept_normal(), views.resets, bg, views.pos, np_key, py_index, py_key,
                       inst)


def _no_bit_generator() -> None:
    """numpy's global bit generator on a numpy without ``get_bit_generator``: none to tell apart."""
    return None


# numpy's global bit generator, by a call of numpy's own where it has one (a call fewer per point).
_global_bg = _get_bit_generator if _get_bit_generator is not None else _no_bit_generator


@contextmanager
def keptGlobals() -> Iterator[None]:
    """numpy's global random state and :mod:`random`'s, put back as they were when the block ends.

    A sweep seeds both before each point it runs in this process; the caller's
    script then draws on from where it was, not from where the last point's
    seeding left it, so that what it draws after a sweep does not depend on
    which lab ran the sweep (a lab whose points all run elsewhere leaves the
    states alone anyway). numpy's global bit generator itself is put back too,
    if a point's seeding made another one global.
    """
    bg = _get_bit_generator() if _get_bit_generator is not None else None
    numpy_state = np.random.get_state(legacy=False)
    python_state = random.getstate()
    try:
        yield
    finally:
        if bg is not None and _get_bit_generator() is not bg:
            np.random.set_bit_generator(bg)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
