"""A random stream per point (epyclab.seeding), on the sequential Lab and on experiments run by hand.

Every lab and transport runs points through :meth:`Experiment.run`, which does the
seeding; tests/test_lab_results_contract.py checks that the same sweep seed gives
the same rows on each lab. Here: the seeds themselves (distinct per point and
repetition, canonical in the values), what gets seeded (global states, random
states held on the experiment however deep, those made in setUp), the sweep seed
(an argument, drawn from numpy's global state, recorded, reused by a resume),
rerunning one row from its recorded seed, and opting out.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab import globalstates, seeding
from epyclab.combinators import RepeatedExperiment, SummaryExperiment
from epyclab.designs import PointwiseDesign
from epyclab.experiment import Experiment
from epyclab.labs.lab import Lab
from epyclab.notebooks.labnotebook import LabNotebook

SEED = Experiment.SEED


class Draws(Experiment):
    """Draws from every kind of random state it can hold, and from the global ones."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng()
        self.legacy = np.random.RandomState()
        self.py = random.Random()
        self.held = {"inner": [np.random.default_rng(), (np.random.Generator(np.random.Philox()),)]}
        self.bits = np.random.SFC64()

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "rng": int(self.rng.integers(0, 2**62)),
            "legacy": int(self.legacy.randint(0, 2**31)),
            "py": self.py.getrandbits(62),
            "deep": int(self.held["inner"][0].integers(0, 2**62)),
            "deeper": int(self.held["inner"][1][0].integers(0, 2**62)),
            "bits": int(self.bits.random_raw()) >> 2,
            "global": float(np.random.random()),
            "random": random.random(),
        }


class MadeInSetUp(Experiment):
    """Makes its generator in setUp, from the operating system's entropy, as numpy's docs suggest."""

    def setUp(self, params: dict[str, Any]) -> None:
        super().setUp(params)
        self.rng = np.random.default_rng()

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"v": int(self.rng.integers(0, 2**62))}


def sweep(values: list[Any], e: Experiment | None = None, nb: LabNotebook | None = None, **kwargs: Any) -> Any:
    lab = Lab(nb if nb is not None else LabNotebook())
    lab["x"] = values
    lab.runExperiment(e if e is not None else Draws(), progress=False, **kwargs)
    return lab.notebook().dataframe()


RESULTS = ["rng", "legacy", "py", "deep", "deeper", "bits", "global", "random"]


def by_x(df: Any) -> dict[Any, tuple[Any, ...]]:
    return {row["x"]: tuple(row[k] for k in RESULTS) + (row[SEED],) for _, row in df.iterrows()}


# ---- the seeds -------------------------------------------------------------------------------

values = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=8), st.booleans(), st.none()
)


@settings(max_examples=100)
@given(st.lists(st.dictionaries(st.sampled_from("abc"), values, min_size=1), min_size=2, max_size=30),
       st.integers(0, 2**63 - 1))
def test_no_two_distinct_points_share_a_seed(points: list[dict[str, Any]], sweep_seed: int) -> None:
    distinct = {seeding.canonicalBytes(p): p for p in points}
    seeds = {seeding.pointSeed(sweep_seed, p) for p in distinct.values()}
    assert len(seeds) == len(distinct)
    children = {seeding.childSeed(s, i) for s in seeds for i in range(3)}
    assert len(children) == 3 * len(seeds)
    assert not children & seeds


def test_a_seed_depends_on_the_values_not_on_their_python_type_or_the_order_of_names() -> None:
    s = seeding.pointSeed(5, {"n": 1, "p": 0.5})
    assert seeding.pointSeed(5, {"p": np.float64(0.5), "n": np.int64(1)}) == s
    assert seeding.pointSeed(5, {"n": 1.0, "p": 0.5}) == s
    assert seeding.pointSeed(5, {"n": 2, "p": 0.5}) != s
    assert seeding.pointSeed(6, {"n": 1, "p": 0.5}) != s
    # A string that looks like a number is another point.
    assert seeding.pointSeed(5, {"n": "1", "p": 0.5}) != s
    assert 0 <= s < 2**63


def test_the_seed_of_a_point_is_fixed_across_releases() -> None:
    # A notebook's recorded seeds must keep meaning the same streams: pin one.
    assert seeding.pointSeed(42, {"x": 3, "y": "a"}) == seeding.pointSeed(42, {"y": "a", "x": 3.0})
    assert seeding.canonicalBytes({"x": 3, "y": "a"}) == b"s1:xi3;s1:ys1:a"


def _reference_bytes(params: dict[Any, Any]) -> bytes:
    """The canonical bytes as the module docstring defines them: names sorted, each name and value encoded."""
    out: list[bytes] = []
    for k in sorted(params):
        seeding._encode(k, out)
        seeding._encode(params[k], out)
    return b"".join(out)


names = st.one_of(st.sampled_from(["a", "b", "x"]), st.sampled_from([True, False, 0, 1, 1.0, 2.5]))


@settings(max_examples=100)
@given(st.lists(st.dictionaries(names, values, min_size=1, max_size=3), min_size=1, max_size=6))
def test_the_canonical_bytes_of_points_in_a_row_are_each_points_own(points: list[dict[Any, Any]]) -> None:
    # Points are encoded one after another, as a sweep does: equal name sets (True == 1) must not
    # lend each other their encoding, and values of every kind take the one encoding.
    for p in points:
        try:
            expected = _reference_bytes(p)
        except TypeError:
            # Names that do not sort (str and numbers mixed) are refused alike.
            with pytest.raises(TypeError):
                seeding.canonicalBytes(p)
            continue
        assert seeding.canonicalBytes(p) == expected


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "3", True])
def test_a_bad_seed_is_refused_naming_it(bad: Any) -> None:
    lab = Lab()
    lab["x"] = [1]
    with pytest.raises((TypeError, ValueError), match="seed"):
        lab.runExperiment(Draws(), progress=False, seed=bad)
    with pytest.raises((TypeError, ValueError), match="seed"):
        Draws().setPointSeed(bad)


# ---- what is seeded ---------------------------------------------------------------------------


def test_every_random_state_held_on_the_experiment_and_the_global_ones_give_each_point_its_own_stream() -> None:
    df = sweep(list(range(12)), seed=3)
    for k in RESULTS:
        assert df[k].nunique() == 12, k
    # The streams of one point differ from each other too (each is keyed by where it is held).
    row = df.iloc[0]
    assert len({row["rng"], row["deep"], row["deeper"]}) == 3
    assert df[SEED].nunique() == 12


@settings(max_examples=50)
@given(st.integers(0, 2**63 - 1))
def test_numpys_global_stream_and_randoms_are_not_one_stream(seed: int) -> None:
    # Both are MT19937 seeded by init_by_array, and draw a float from two outputs the same way: the
    # same key would give the same numbers in both. Each is seeded as it would be alone, too.
    seeding.seedStreams(Experiment(), seed)
    from_numpy = [float(v) for v in np.random.random(4)]
    from_random = [random.random() for _ in range(4)]
    assert from_numpy != from_random
    seeding.seedStreams(Experiment(), seed)
    assert [float(v) for v in np.random.random(4)] == from_numpy
    assert [random.random() for _ in range(4)] == from_random


@settings(max_examples=50)
@given(st.integers(0, 2**63 - 1), st.integers(0, 3))
def test_numpys_global_state_is_set_whole_and_a_normal_kept_from_before_is_dropped(seed: int, before: int) -> None:
    # Whatever drew before (an odd number of normals leaves one kept), a point starts from the state
    # numpy's own set_state makes of its key, and draws what that state draws.
    np.random.standard_normal(before)
    seeding.seedStreams(Experiment(), seed)
    state = np.random.get_state()
    key = np.frombuffer(globalstates.global_keys(seed)[0], dtype="<u4")
    assert state[0] == "MT19937" and (state[1] == key).all() and state[2:] == (624, 0, 0.0)
    drawn = np.random.standard_normal(3).tolist() + np.random.random(3).tolist()
    np.random.standard_normal(1)
    np.random.set_state(("MT19937", key, 624, 0, 0.0))
    assert np.random.standard_normal(3).tolist() + np.random.random(3).tolist() == drawn


def test_another_global_bit_generator_is_seeded_too() -> None:
    # numpy.random.set_bit_generator makes another generator the global one: seeding reaches it.
    original = np.random.get_bit_generator()
    np.random.set_bit_generator(np.random.PCG64())
    try:
        seeding.seedStreams(Experiment(), 7)
        first = np.random.random(3).tolist()
        seeding.seedStreams(Experiment(), 8)
        assert np.random.random(3).tolist() != first
        seeding.seedStreams(Experiment(), 7)
        assert np.random.random(3).tolist() == first
    finally:
        np.random.set_bit_generator(original)
    # And the Mersenne Twister again, once it is back.
    seeding.seedStreams(Experiment(), 7)
    assert (np.random.get_state()[1] == np.frombuffer(globalstates.global_keys(7)[0], dtype="<u4")).all()


@settings(max_examples=30)
@given(st.sampled_from(["PCG64", "PCG64DXSM", "Philox", "SFC64"]), st.integers(0, 2**63 - 1), st.integers(0, 3),
       st.integers(0, 2**63 - 1))
def test_another_global_bit_generator_drops_a_normal_kept_from_the_last_point(
    kind: str, seed: int, before: int, other: int
) -> None:
    # numpy keeps the second deviate of a pair for the next normal() in the global RandomState, not in
    # the bit generator: reseeding only the bit generator let a point's normals depend on what the
    # point before it drew (so on order and chunking), as found from outside with set_bit_generator.
    original = np.random.get_bit_generator()
    np.random.set_bit_generator(getattr(np.random, kind)())
    try:
        seeding.seedStreams(Experiment(), seed)
        alone = np.random.standard_normal(3).tolist() + np.random.random(2).tolist()
        seeding.seedStreams(Experiment(), other)
        np.random.standard_normal(before)
        seeding.seedStreams(Experiment(), seed)
        assert np.random.standard_normal(3).tolist() + np.random.random(2).tolist() == alone
        assert type(np.random.get_bit_generator()).__name__ == kind
    finally:
        np.random.set_bit_generator(original)


class _NeedsArguments(np.random.PCG64):
    """A user's bit generator that cannot be made without arguments (as a clean worker would have to)."""

    def __init__(self, seed: int, label: str) -> None:
        super().__init__(seed)
        self.label = label


def test_a_global_bit_generator_that_needs_arguments_is_left_and_the_point_still_runs_seeded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A clean worker whose global bit generator is not the sweep's makes one of the sweep's kind; one that
    # needs arguments cannot be made there. The point must still run, seeded per point, and the user be told once.
    original = np.random.get_bit_generator()
    try:
        with caplog.at_level(logging.WARNING, logger="epyclab"):
            seeding.seed_globals(7, kind=_NeedsArguments)
            first = np.random.random(3).tolist()
            seeding.seed_globals(7, kind=_NeedsArguments)
            assert np.random.random(3).tolist() == first
        assert type(np.random.get_bit_generator()) is type(original)
        warned = [r for r in caplog.records if "_NeedsArguments" in r.getMessage()]
        assert len(warned) == 1 and "setUp()" in warned[0].getMessage()
    finally:
        np.random.set_bit_generator(original)


def test_the_same_sweep_seed_gives_the_same_rows_and_another_seed_other_rows() -> None:
    a, b, c = sweep(list(range(6)), seed=11), sweep(list(range(6)), seed=11), sweep(list(range(6)), seed=12)
    assert by_x(a) == by_x(b)
    assert all(by_x(a)[x][0] != by_x(c)[x][0] for x in range(6))


@settings(max_examples=25)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=12, unique=True), st.randoms(use_true_random=False),
       st.integers(0, 2**63 - 1))
def test_a_point_gets_the_same_stream_whatever_the_order_and_whatever_other_points_are_swept(
    xs: list[int], rnd: random.Random, s: int
) -> None:
    whole = by_x(sweep(xs, seed=s))
    shuffled = list(xs)
    rnd.shuffle(shuffled)
    part = shuffled[: max(1, len(xs) // 2)] + [1000]
    assert {x: v for x, v in by_x(sweep(shuffled, seed=s)).items()} == whole
    sub = by_x(sweep(part, seed=s))
    assert {x: sub[x] for x in part if x != 1000} == {x: whole[x] for x in part if x != 1000}


def test_a_generator_made_in_setUp_is_seeded_too() -> None:
    a, b = sweep([1, 2, 3], MadeInSetUp(), seed=5), sweep([1, 2, 3], MadeInSetUp(), seed=5)
    assert list(a["v"]) == list(b["v"])
    assert a["v"].nunique() == 3


def test_a_system_random_is_left_alone_and_an_experiment_with_cycles_and_depth_is_walked_in_bounded_time() -> None:
    e = Draws()
    e.sysrand = random.SystemRandom()
    e.loop = {"me": e, "list": []}
    e.loop["list"].append(e.loop)
    deep: Any = np.random.default_rng(0)
    for _ in range(seeding.MAX_DEPTH + 3):
        deep = [deep]
    e.deep = deep
    before = deep
    for _ in range(seeding.MAX_DEPTH + 3):
        before = before[0]
    state = dict(before.bit_generator.state)
    found = seeding.seedStreams(e, 1)
    assert e.sysrand in found and e.rng in found
    # Below the depth limit nothing is touched.
    assert before.bit_generator.state == state


# ---- the sweep seed ---------------------------------------------------------------------------


def test_without_a_seed_the_sweep_seed_comes_from_numpys_global_state_and_is_recorded() -> None:
    np.random.seed(42)
    nb1 = LabNotebook()
    a = sweep([1, 2, 3], nb=nb1)
    np.random.seed(42)
    nb2 = LabNotebook()
    b = sweep([1, 2, 3], nb=nb2)
    assert by_x(a) == by_x(b)
    recorded = nb1.current()[seeding.SWEEP_SEED]
    assert recorded == nb2.current()[seeding.SWEEP_SEED]
    assert by_x(sweep([1, 2, 3], seed=recorded)) == by_x(a)
    # Unseeded by the user, two sweeps draw two seeds.
    assert by_x(sweep([1, 2, 3])) != by_x(sweep([1, 2, 3]))


def test_a_resume_without_a_seed_goes_on_with_the_recorded_one(tmp_path: Any) -> None:
    from epyclab.notebooks.hdf5 import HDF5LabNotebook

    whole = by_x(sweep(list(range(8)), seed=99))
    fn = str(tmp_path / "nb.h5")
    with HDF5LabNotebook(fn, create=True) as nb:
        sweep(list(range(4)), nb=nb, seed=99)
    with HDF5LabNotebook(fn) as nb:
        lab = Lab(nb)
        lab["x"] = list(range(8))
        lab.runExperiment(Draws(), progress=False, resume=True)
        assert by_x(nb.dataframe()) == whole
        assert nb.current()[seeding.SWEEP_SEED] == 99


def test_rerunning_a_rows_point_with_its_recorded_seed_reproduces_it() -> None:
    df = sweep([0.5, 1.5, 2.5], seed=8)
    row = df.iloc[1]
    e = Draws()
    e.setPointSeed(int(row[SEED]))
    rc = e.set({"x": row["x"]}).run()
    assert rc["metadata"][SEED] == row[SEED]
    assert tuple(rc["results"][k] for k in RESULTS) == tuple(row[k] for k in RESULTS)


def test_seed_false_restores_epycs_behaviour() -> None:
    e = Draws()
    expected = np.random.default_rng(0)
    e.rng = np.random.default_rng(0)
    df = sweep([1, 2, 3], e, seed=False)
    assert SEED not in df.columns
    assert seeding.SWEEP_SEED not in LabNotebook().current()
    # The generator goes on from where it was, as it did in epyc.
    assert list(df["rng"]) == [int(expected.integers(0, 2**62)) for _ in range(3)]
    # An experiment run by hand, outside any lab, is not seeded either.
    assert SEED not in Draws().set({"x": 1}).run()["metadata"]


# ---- repetitions and summaries ----------------------------------------------------------------


def test_each_repetition_has_its_own_stream_and_its_row_reruns_from_its_seed() -> None:
    df = sweep([1, 2], RepeatedExperiment(Draws(), 4), seed=21)
    assert len(df) == 8
    for k in RESULTS:
        assert df[k].nunique() == 8, k
    row = df.iloc[5]
    e = Draws()
    e.setPointSeed(int(row[SEED]))
    rc = e.set({"x": row["x"]}).run()
    assert tuple(rc["results"][k] for k in RESULTS) == tuple(row[k] for k in RESULTS)
    # Nested repetitions are distinct streams too.
    nested = sweep([1], RepeatedExperiment(RepeatedExperiment(Draws(), 3), 2), seed=21)
    assert nested["rng"].nunique() == 6


def test_a_summary_row_reruns_from_its_seed_and_a_seed_does_not_outlive_its_sweep() -> None:
    e = SummaryExperiment(RepeatedExperiment(Draws(), 5))
    df = sweep([1, 2, 3], e, seed=4)
    assert df["rng_mean"].nunique() == 3
    again = SummaryExperiment(RepeatedExperiment(Draws(), 5))
    again.setPointSeed(int(df.iloc[2][SEED]))
    rc = again.set({"x": 3}).run()
    assert rc["results"]["rng_mean"] == df.iloc[2]["rng_mean"]
    # The same objects swept again unseeded: the inner experiments no longer keep the old seeds.
    unseeded = sweep([1, 2, 3], e, seed=False)
    assert unseeded["rng_mean"].nunique() == 3


def test_pointwise_designs_are_seeded_per_point() -> None:
    lab = Lab(LabNotebook(), design=PointwiseDesign())
    lab["x"] = [1, 2, 3]
    lab["y"] = ["a", "b", "c"]
    lab.runExperiment(Draws(), progress=False, seed=2)
    df = lab.notebook().dataframe()
    assert df["rng"].nunique() == 3
    assert list(df[SEED]) == [seeding.pointSeed(2, {"x": x, "y": y}) for x, y in zip([1, 2, 3], "abc")]


def test_a_damaged_recorded_sweep_seed_stops_a_resume_naming_it() -> None:
    nb = LabNotebook()
    sweep([1, 2], nb=nb, seed=4)
    nb.current()[seeding.SWEEP_SEED] = "four"
    lab = Lab(nb)
    lab["x"] = [1, 2, 3]
    with pytest.raises(ValueError, match="'epyclab.lab.seed' = 'four' is not a sweep seed.*seed=N"):
        lab.runExperiment(Draws(), progress=False, resume=True)
    assert nb.numberOfResults() == 2
    lab.runExperiment(Draws(), progress=False, resume=True, seed=4)
    assert by_x(nb.dataframe()) == by_x(sweep([1, 2, 3], seed=4))


class _DrawsGlobals(Experiment):
    """Draws from numpy's and Python's global random states."""

    def do(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"a": float(np.random.random()), "b": random.random()}


def _after_a_sweep(make: Any, seed: Any) -> tuple[float, float]:
    """What a script draws from the global states after a sweep of 6 points, from a start fixed by it."""
    np.random.seed(42)
    random.seed(7)
    lab = make()
    lab["x"] = range(6)
    lab.runExperiment(_DrawsGlobals(), seed=seed)
    return float(np.random.random()), random.random()


@pytest.mark.parametrize("seed", [None, 1234], ids=["drawn sweep seed", "given sweep seed"])
def test_a_script_draws_on_after_a_sweep_from_where_it_was_whichever_lab_ran_it(seed: Any) -> None:
    # Points run in this process seed the global states before each point; the caller's states are put back
    # after the sweep (as they are after the drawing of the sweep seed, when it is drawn), so what a script
    # draws next does not depend on whether the points ran here or in other processes (a new user's find).
    from epyclab.labs.parallel import ParallelLab

    here = _after_a_sweep(lambda: Lab(LabNotebook()), seed)
    elsewhere = _after_a_sweep(lambda: ParallelLab(LabNotebook(), cores=2), seed)
    np.random.seed(42)
    random.seed(7)
    if seed is None:
        seeding.drawSweepSeed()
    assert here == elsewhere == (float(np.random.random()), random.random())


def test_an_unseeded_sweep_leaves_the_global_states_where_its_points_took_them() -> None:
    # seed=False is epyc's behaviour: points draw on from the caller's states, which stay where they got to.
    after = _after_a_sweep(lambda: Lab(LabNotebook()), False)
    np.random.seed(42)
    random.seed(7)
    for _ in range(6):
        np.random.random(), random.random()
    assert after == (float(np.random.random()), random.random())
