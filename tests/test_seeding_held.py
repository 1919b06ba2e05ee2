"""The random states held on an experiment are found once per sweep, and again where the experiment changed.

epyclab.seeding.HeldStates keeps what a walk of the experiment found; these
tests show that a sweep stays reproducible when the experiment swaps, adds or
drops a random state between points (the cases the kept walk must notice).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from epyclab import seeding
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab


class Swaps(Experiment):
    """Draws from self.rng, then leaves a fresh unseeded generator (or none) for the next point."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng()

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        v = int(self.rng.integers(0, 2**62))
        x = params["x"]
        if x % 3 == 0:
            self.rng = np.random.default_rng()
        elif x % 3 == 1:
            # Another attribute appears, and the generator moves there.
            self.other, self.rng = self.rng, np.random.default_rng()
        else:
            self.__dict__.pop("other", None)
        return {"v": v}


def sweep(xs: list[int], seed: int) -> dict[int, int]:
    lab = Lab()
    lab["x"] = xs
    lab.runExperiment(Swaps(), progress=False, seed=seed)
    df = lab.notebook().dataframe()
    return dict(zip(df["x"], df["v"]))


def test_a_generator_swapped_between_points_is_seeded_and_the_sweep_repeats() -> None:
    xs = list(range(9))
    a = sweep(xs, 7)
    assert a == sweep(xs, 7)
    assert len(set(a.values())) == len(xs)
    # Each point's value is its own, whatever ran before it on the same object.
    assert {x: v for x, v in sweep(list(reversed(xs)), 7).items()} == a
    assert sweep([4], 7) == {4: a[4]}


def test_the_kept_walk_seeds_what_a_new_walk_would() -> None:
    e, fresh = Swaps(), Swaps()
    held = seeding.HeldStates()
    for seed in (1, 2, 3):
        held.seed(e, seed)
        seeding.seedStreams(fresh, seed, globals_=False)
        assert e.rng.integers(0, 2**62) == fresh.rng.integers(0, 2**62)
    # A generator put inside a new container attribute is found too.
    e.box, fresh.box = [np.random.default_rng()], [np.random.default_rng()]
    held.seed(e, 4)
    seeding.seedStreams(fresh, 4, globals_=False)
    assert e.box[0].integers(0, 2**62) == fresh.box[0].integers(0, 2**62)
    # A generator held twice is keyed by where the walk meets it first: dropping that name moves it.
    e.alias, fresh.alias = e.rng, fresh.rng
    held.seed(e, 5)
    del e.rng, fresh.rng
    held.seed(e, 6)
    seeding.seedStreams(fresh, 6, globals_=False)
    assert e.alias.integers(0, 2**62) == fresh.alias.integers(0, 2**62)
