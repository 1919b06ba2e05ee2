"""The two global random states a point draws from are set whole, in place, to what the documented slow path makes.

epyclab.globalstates writes each point's keys into numpy's global Mersenne
Twister and into Python's random in place (ctypes) and draws the keys from a
Philox whose counter it writes in place too. These tests compare every route
with what numpy's and Python's public setters make of the same key material
(global_keys, built with numpy's public Philox constructor), whatever the
states held before: a user relies on a point drawing the same numbers
wherever, and after whatever, it runs.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab import globalstates

seeds = st.integers(0, 2**63 - 1)


def _words(key: bytes) -> list[int]:
    return np.frombuffer(key, dtype="<u4").tolist()


def _draws() -> tuple[list[float], list[float]]:
    """What a point would draw: normals and uniforms from numpy's global state, gauss and random from Python's."""
    return (np.random.standard_normal(3).tolist() + np.random.random(2).tolist(),
            [random.gauss(0, 1), random.random(), random.gauss(0, 1)])


@settings(max_examples=100)
@given(seeds, st.integers(0, 3), st.integers(0, 3))
def test_the_states_written_in_place_are_those_the_public_setters_make_of_the_keys(
    seed: int, normals: int, gausses: int
) -> None:
    # Draws before the point leave normals kept in both states (an odd number of them does).
    np.random.standard_normal(normals)
    for _ in range(gausses):
        random.gauss(0, 1)
    globalstates.seed_globals(seed)
    numpy_key, python_key = globalstates.global_keys(seed)
    state = np.random.get_state()
    assert state[0] == "MT19937" and state[1].tolist() == _words(numpy_key) and state[2:] == (624, 0, 0.0)
    assert random.getstate() == (3, (*_words(python_key), 624), None)
    drawn = _draws()
    # The slow path, from other states: the same numbers.
    np.random.standard_normal(1)
    random.gauss(0, 1)
    np.random.set_state(("MT19937", np.frombuffer(numpy_key, dtype="<u4"), 624, 0, 0.0))
    random.setstate((3, (*_words(python_key), 624), None))
    assert _draws() == drawn


@settings(max_examples=50)
@given(st.lists(seeds, min_size=2, max_size=6, unique=True))
def test_keys_are_each_seeds_own_whatever_came_before(order: list[int]) -> None:
    # The Philox's counter is rewritten per point: a seed's keys do not depend on the seeds before it.
    made = {s: globalstates.global_keys(s) for s in order}
    draws = globalstates._draws()
    for s in order + order[::-1]:
        keys = draws.keys(s).tobytes()
        assert keys == made[s][0] + made[s][1]
    # Distinct seeds, distinct keys; and numpy's key is never Python's.
    assert len({k for pair in made.values() for k in pair}) == 2 * len(order)


def test_the_keys_are_philox_in_counter_mode_as_documented() -> None:
    # Block b of seed s is the Philox4x64-10 of counter (b, 0, s, 0) under the fixed key, b from 1.
    seed = 12345
    numpy_key, python_key = globalstates.global_keys(seed)
    raw = np.frombuffer(numpy_key + python_key, dtype="<u8")
    bg = np.random.Philox(counter=[0, 0, seed, 0], key=np.frombuffer(b"epyclab:globals:", dtype="<u8"))
    assert raw.tolist() == bg.random_raw(624).tolist()
    assert bg.state["state"]["counter"].tolist() == [156, 0, seed, 0]


def test_threads_seeding_at_once_each_get_their_seeds_keys() -> None:
    # Each thread draws from a Philox of its own: two points seeded at once do not mix their keys.
    expected = {s: b"".join(globalstates.global_keys(s)) for s in range(8)}
    wrong: list[Any] = []

    def seed_many(first: int) -> None:
        for i in range(300):
            s = (first + i) % 8
            if globalstates._draws().keys(s).tobytes() != expected[s]:
                wrong.append(s)

    threads = [threading.Thread(target=seed_many, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@settings(max_examples=20)
@given(st.sampled_from(["PCG64", "SFC64", "Philox", "MT19937"]), seeds)
def test_a_foreign_global_bit_generator_is_seeded_from_numpys_key_and_the_mersenne_twister_again_after(
    kind: str, seed: int
) -> None:
    # numpy.random.set_bit_generator makes another generator the global one (a new MT19937 one too: its
    # in-place views are made afresh); seed_globals gives it what numpy.random.seed(first 8 key words) would.
    original = np.random.get_bit_generator()
    try:
        np.random.set_bit_generator(getattr(np.random, kind)())
        np.random.standard_normal(1)
        globalstates.seed_globals(seed)
        numpy_key, python_key = globalstates.global_keys(seed)
        drawn = np.random.standard_normal(3).tolist() + np.random.random(2).tolist()
        fresh = getattr(np.random, kind)(np.frombuffer(numpy_key, dtype="<u4", count=8))
        if kind == "MT19937":
            # A global MT19937 is always set whole to the key, whichever object it is.
            fresh.state = {"bit_generator": "MT19937", "state": {"key": np.frombuffer(numpy_key, dtype="<u4"),
                                                                 "pos": 624}}
        alone = np.random.RandomState(fresh)
        assert alone.standard_normal(3).tolist() + alone.random_sample(2).tolist() == drawn
        assert random.getstate() == (3, (*_words(python_key), 624), None)
    finally:
        np.random.set_bit_generator(original)
    globalstates.seed_globals(seed)
    assert np.random.get_state()[1].tolist() == _words(globalstates.global_keys(seed)[0])


def test_without_a_random_instance_to_write_random_is_set_through_setstate(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where random's functions are not methods of a CPython _random.Random (PyPy, or seed() replaced),
    # setstate sets the same state.
    seed = 99
    python_key = globalstates.global_keys(seed)[1]
    monkeypatch.setattr(random, "seed", lambda *args, **kwargs: None)
    random.gauss(0, 1)
    globalstates.seed_globals(seed)
    assert random.getstate() == (3, (*_words(python_key), 624), None)


def test_a_system_random_is_never_written_in_place() -> None:
    # It has no state of its own to write (it reads the operating system's entropy).
    assert globalstates._random_view(random.SystemRandom()) is None
    assert globalstates._random_view(object()) is None
