"""A sweep's seeder gives each point the seed and the states the per-point functions give, whatever ran between.

epyclab.seeding.SweepSeeder keeps, for one sweep, what the per-point
functions (point_seed, seed_globals, HeldStates) find at every point: the
keyed hash, the layout of the points, numpy's global bit generator, random's
instance, this thread's Philox and their views. User code can change these
between two points (a new global bit generator, random's functions bound to
another instance, a point of other names or value kinds, an attribute set to a
new generator); these tests do that at random and check that every point
still gets what the documented definition gives (pointSeed, global_keys),
and what a fresh experiment running that point alone gets.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab import globalstates, seeding
from epyclab.experiment import Experiment

sweep_seeds = st.integers(0, 2**63 - 1)
names = st.sampled_from(["x", "z", "n", "p%d", "%", "ü", "a b"])
values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.integers(-5, 5).map(np.int64),
    st.floats(allow_nan=True),
    st.integers(-3, 3).map(float),
    st.text(max_size=3),
    st.none(),
)


@settings(max_examples=100)
@given(sweep_seeds, st.lists(st.dictionaries(names, values, max_size=6), min_size=1, max_size=8),
       st.integers(0, 3))
def test_a_seeders_point_seeds_are_point_seed_whatever_the_points_names_and_kinds(
    sweep_seed: int, points: list[dict[str, Any]], repeats: int
) -> None:
    # The first point fixes the layout the seeder keeps; later points of other names, orders or kinds
    # (a bool or numpy.int64 where it had ints) must not take it for theirs.
    points = points + [dict(reversed(list(p.items()))) for p in points[:repeats]]
    seeder = seeding.SweepSeeder(sweep_seed)
    assert [seeder.point_seed(p) for p in points] == [seeding.pointSeed(sweep_seed, p) for p in points]


def test_an_int_points_seed_is_pinned_through_the_seeders_route() -> None:
    # The fast route formats the point's bytes at once; these are canonicalBytes' and the seed point_seed's.
    seeder = seeding.SweepSeeder(123456789)
    for p in ({"x": 17, "z": 42}, {"z": 42, "x": 17}, {"x": -(2**80), "z": 0}):
        assert seeder.point_seed(p) == seeding.pointSeed(123456789, p)
    assert seeding.SweepSeeder(5).point_seed({"p%d": 3}) == seeding.pointSeed(5, {"p%d": 3})
    # Six parameters (past the sizes checked value by value), ints and then a bool among them.
    seeder = seeding.SweepSeeder(5)
    for p in ({k: i for i, k in enumerate("abcdef")}, {**{k: i for i, k in enumerate("abcdef")}, "c": True}):
        assert seeder.point_seed(p) == seeding.pointSeed(5, p)
    assert seeding.SweepSeeder(None).point_seed({"x": 1}) is None


@contextmanager
def restored() -> Iterator[None]:
    """numpy's global bit generator and state, and random's functions and state, put back after the test."""
    bg = np.random.get_bit_generator()
    numpy_state = np.random.get_state(legacy=False)
    bound = {k: getattr(random, k) for k in ("seed", "random", "gauss", "getstate", "setstate")}
    python_state = random.getstate()
    try:
        yield
    finally:
        for k, f in bound.items():
            setattr(random, k, f)
        np.random.set_bit_generator(bg)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _rebind_random() -> None:
    """Make random's functions methods of another instance (as a user replacing random's generator does)."""
    inst = random.Random(1)
    for k in ("seed", "random", "gauss", "getstate", "setstate"):
        setattr(random, k, getattr(inst, k))


_ACTIONS = {
    "nothing": lambda: None,
    "draw": lambda: (np.random.standard_normal(3), random.gauss(0, 1)),
    "numpy.random.seed": lambda: np.random.seed(11),
    "random.seed": lambda: random.seed(12),
    "a new global MT19937": lambda: np.random.set_bit_generator(np.random.MT19937(3)),
    "a global PCG64": lambda: np.random.set_bit_generator(np.random.PCG64(4)),
    "random bound to another instance": _rebind_random,
}
_KINDS = {"MT19937": np.random.MT19937, "PCG64": np.random.PCG64, "none": None}


def _expected(seed: int, kind: type | None) -> tuple[dict[str, Any], Any]:
    """numpy's global state and random's for point seed ``seed``, by the module's definition (global_keys)."""
    numpy_key, python_key = globalstates.global_keys(seed)
    words = np.frombuffer(numpy_key, dtype="<u4")
    bg_type = type(np.random.get_bit_generator()) if kind is None else kind
    if bg_type is np.random.MT19937:
        fresh = {"bit_generator": "MT19937", "state": {"key": words, "pos": 624}}
    else:
        fresh = bg_type(words[:8]).state
    return {**fresh, "has_gauss": 0, "gauss": 0.0}, (3, (*np.frombuffer(python_key, dtype="<u4").tolist(), 624), None)


def _same_numpy_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["bit_generator"] == b["bit_generator"] and a["has_gauss"] == b["has_gauss"]
            and str(a["state"]) == str(b["state"]))


# Where numpy's kept normal cannot be found in place (set_bit_generator drops it), and where nothing can be
# written in place (seed_globals' slow path at every point).
_ROUTES = ["in place", "kept normal by set_bit_generator", "no route"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_ROUTES), st.lists(st.tuples(
    st.sampled_from(sorted(_ACTIONS)), st.sampled_from(sorted(_KINDS)), sweep_seeds, st.booleans()),
    min_size=1, max_size=8))
def test_a_seeders_global_states_are_global_keys_after_whatever_user_code_did_between_points(
    route: str, steps: list[tuple[str, str, int, bool]]
) -> None:
    # The class a point's global bit generator must be can change too (setPointSeed reads it again).
    with restored(), pytest.MonkeyPatch.context() as mp:
        if route != "in place":
            mp.setattr(globalstates, "_kept_normal_view", lambda rs: None)
            mp.setattr(globalstates._numpy_global, "_kept", (None, None))
        if route == "no route":
            mp.setattr(globalstates._Draws, "in_place", lambda self: None)
        _puts_global_keys(steps)


def _puts_global_keys(steps: list[tuple[str, str, int, bool]]) -> None:
    seeder = globalstates.GlobalsSeeder()
    for action, kind_name, seed, in_thread in steps:
        kind = _KINDS[kind_name]
        _ACTIONS[action]()
        # What the definition gives, from the global bit generator user code left.
        numpy_state, python_state = _expected(seed, kind)
        if in_thread:
            # Another thread seeds through its own Philox, not the route's.
            t = threading.Thread(target=seeder.put, args=(seed, kind))
            t.start()
            t.join()
        else:
            seeder.put(seed, kind)
        assert _same_numpy_state(np.random.get_state(legacy=False), numpy_state)
        assert random.getstate() == python_state


class Meddles(Experiment):
    """Draws from numpy's global state, random and self.rng; then does to them what the point says."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng()

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        drawn = [float(np.random.random()), random.random(), float(self.rng.random())]
        what = params["then"]
        if what == "a new self.rng":
            self.rng = np.random.default_rng()
        elif what == "self.rng moved to another attribute":
            self.other, self.rng = self.rng, np.random.default_rng()
        else:
            _ACTIONS[what]()
        return {"drawn": drawn}


@settings(max_examples=40, deadline=None)
@given(sweep_seeds, st.lists(st.tuples(
    st.integers(0, 5), st.sampled_from(sorted(_ACTIONS) + ["a new self.rng", "self.rng moved to another attribute"])),
    min_size=1, max_size=6))
def test_each_point_of_a_seeded_experiment_draws_what_a_fresh_one_running_it_alone_draws(
    sweep_seed: int, points: list[tuple[int, str]]
) -> None:
    with restored():
        _draws_as_alone(sweep_seed, points)


def _draws_as_alone(sweep_seed: int, points: list[tuple[int, str]]) -> None:
    original = np.random.get_bit_generator()
    e = Meddles()
    e.setSweepSeed(sweep_seed)
    drawn = [e.set({"x": x, "then": then}).run(fatal=True)[Experiment.RESULTS]["drawn"] for x, then in points]
    for (x, then), got in zip(points, drawn):
        # A fresh experiment, begun where the sweep began (numpy's global bit generator of the same class).
        np.random.set_bit_generator(original)
        alone = Meddles()
        alone.setSweepSeed(sweep_seed)
        assert alone.set({"x": x, "then": then}).run(fatal=True)[Experiment.RESULTS]["drawn"] == got


def test_an_experiment_pickled_mid_sweep_draws_in_its_copy_what_it_draws_at_home() -> None:
    # A seeder travels as its sweep seed alone (views and a Philox cannot be pickled) and is made afresh
    # where it lands: a worker's copy gives each point what the experiment gives it here.
    import pickle

    with restored():
        e = Meddles()
        e.setSweepSeed(99)
        first = e.set({"x": 1, "then": "draw"}).run(fatal=True)[Experiment.RESULTS]["drawn"]
        copy = pickle.loads(pickle.dumps(e))
        assert copy.sweepSeed() == 99
        for x in (1, 2, 3):
            here = e.set({"x": x, "then": "nothing"}).run(fatal=True)[Experiment.RESULTS]["drawn"]
            there = copy.set({"x": x, "then": "nothing"}).run(fatal=True)[Experiment.RESULTS]["drawn"]
            assert here == there
        # Not the same numbers at every point.
        assert here != first


class LooksEverywhere(Meddles):
    """Meddles, with no attribute kept from the walk for random states: its seeder is walked too."""

    NotRandomState = ()


def test_the_walk_of_an_experiment_that_keeps_no_attribute_from_it_leaves_its_seeders_philox_alone() -> None:
    # The seeder holds a Philox and numpy's global bit generator; a walk that reached them would seed them
    # as held states and change every later point's global keys.
    with restored():
        original = np.random.get_bit_generator()
        e = LooksEverywhere()
        e.setSweepSeed(3)
        drawn = [e.set({"x": x, "then": "nothing"}).run(fatal=True)[Experiment.RESULTS]["drawn"] for x in range(4)]
        for x in range(4):
            np.random.set_bit_generator(original)
            alone = Meddles()
            alone.setSweepSeed(3)
            assert alone.set({"x": x, "then": "nothing"}).run(fatal=True)[Experiment.RESULTS]["drawn"] == drawn[x]


class Holds(Experiment):
    """Holds generators in attributes that the test changes between points."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng()


def _change(e: Experiment, what: str) -> None:
    """Change what ``e`` holds as a user's code between two points might (the same on two experiments)."""
    d = e.__dict__
    if what == "a new rng":
        e.rng = np.random.default_rng()
    elif what == "rng moved to a new attribute":
        e.other, e.rng = getattr(e, "rng", None), np.random.default_rng()
    elif what == "an attribute dropped":
        d.pop("other", None) if "other" in d else d.pop("rng", None)
    elif what == "one dropped and one added (as many names)":
        last = [k for k in d if k not in Experiment.NotRandomState][-1:]
        for k in last:
            d[k + "_"] = d.pop(k)
    elif what == "a generator in a new list":
        e.box = [np.random.default_rng()]
    elif what == "the names reordered":
        for k in [k for k in d if k not in Experiment.NotRandomState]:
            d[k] = d.pop(k)


_CHANGES = ["nothing", "a new rng", "rng moved to a new attribute", "an attribute dropped",
            "one dropped and one added (as many names)", "a generator in a new list", "the names reordered"]


def _draws_of(e: Experiment) -> list[int]:
    """One draw from each random state held on ``e``, in the walk's order."""
    return [int(obj.integers(0, 2**62)) for _, obj in seeding._walk(e)]


@settings(max_examples=60, deadline=None)
@given(sweep_seeds, st.lists(st.tuples(st.sampled_from(_CHANGES), st.integers(0, 2**63 - 1)), min_size=1,
                             max_size=8))
def test_a_seeders_per_point_test_of_the_experiments_attributes_seeds_what_a_new_walk_seeds(
    sweep_seed: int, steps: list[tuple[str, int]]
) -> None:
    # A sweep's seeder walks the experiment again only when its attributes changed since its last walk
    # (HeldStates: names, their order, the objects under them). Whatever changed between points, the states
    # it seeds draw what those of a mirror experiment seeded by a fresh walk (seedStreams) draw.
    with restored():
        e, mirror = Holds(), Holds()
        seeder = seeding.SweepSeeder(sweep_seed)
        for change, seed in steps:
            _change(e, change)
            _change(mirror, change)
            seeder.seed(e, seed, None)
            seeding.seedStreams(mirror, seed, globals_=False)
            assert _draws_of(e) == _draws_of(mirror)
