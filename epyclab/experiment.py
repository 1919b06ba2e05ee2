"""The experiment model: one class with a lifecycle that a lab runs at each point.

A user subclasses :class:`Experiment` and writes :meth:`Experiment.do`. The lab
calls :meth:`Experiment.set` with a point of the parameter space and then
:meth:`Experiment.run`, which calls ``setUp``, ``do`` and ``tearDown``, times
each phase, and turns any failure into data (a results dict whose status is
False) rather than an exception that would stop a sweep.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Mapping
from datetime import datetime
from time import perf_counter
from typing import Any, Union

from epyclab import seeding
from epyclab.errors import ResultsStructureException

__all__ = [
    "Experiment",
    "ResultsDict",
    "ExperimentalParameters",
    "exception_text",
    "failed_result",
]

#: A point of the parameter space: parameter name to value.
ExperimentalParameters = dict[str, Any]

#: ``{'parameters': {...}, 'metadata': {...}, 'results': {...} or [ResultsDict, ...]}``.
ResultsDict = dict[str, Any]

# The host name cannot change while a process runs, and looking it up costs a
# system call: do it once.
_HOST = socket.gethostname()
# The process id is asked once, and again in a forked child (engines may fork).
_PID = os.getpid()


def _forked() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def exception_text(exc: BaseException) -> str:
    """Return the one-line text that notebooks store for an exception.

    The form is that of the last line of a traceback, ``"ValueError: bad n"``,
    so the type survives being stored as text.
    """
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _well_formed(rc: Any) -> bool:
    """True if ``rc`` is a results dict whose nested results lists hold only results dicts."""
    if not Experiment.isResultsDict(rc):
        return False
    res = rc[Experiment.RESULTS]
    return isinstance(res, dict) or all(_well_formed(r) for r in res)


class Experiment:
    """A computational experiment, run by a lab at each point of a parameter space.

    Subclass it and override :meth:`do` (and, if needed, :meth:`setUp`,
    :meth:`tearDown`, :meth:`configure`, :meth:`deconfigure`). ``do`` returns a
    dict of results, or a list of results dicts (as combinators do).
    """

    # The three parts of a results dict.
    PARAMETERS = "parameters"
    METADATA = "metadata"
    RESULTS = "results"

    # Standard metadata keys. The values keep epyc's namespace so that epyc
    # notebooks and code that indexes by these strings go on working.
    EXPERIMENT = "epyc.experiment.classname"
    START_TIME = "epyc.experiment.start_time"
    END_TIME = "epyc.experiment.end_time"
    ELAPSED_TIME = "epyc.experiment.elapsed_time"
    SETUP_TIME = "epyc.experiment.setup_time"
    EXPERIMENT_TIME = "epyc.experiment.experiment_time"
    TEARDOWN_TIME = "epyc.experiment.teardown_time"
    STATUS = "epyc.experiment.status"
    EXCEPTION = "epyc.experiment.exception"
    TRACEBACK = "epyc.experiment.traceback"

    # epyclab's own standard metadata: where the run happened.
    HOST = "epyclab.experiment.host"
    PID = "epyclab.experiment.pid"
    #: The seed the run's random streams were seeded from (see :mod:`epyclab.seeding`); absent when unseeded.
    SEED = seeding.SEED

    StandardMetadataTypes: dict[str, type] = {
        EXPERIMENT: str,
        START_TIME: datetime,
        END_TIME: datetime,
        ELAPSED_TIME: float,
        SETUP_TIME: float,
        EXPERIMENT_TIME: float,
        TEARDOWN_TIME: float,
        STATUS: bool,
        EXCEPTION: str,
        TRACEBACK: str,
        HOST: str,
        PID: int,
    }
    StandardMetadata: set[str] = set(StandardMetadataTypes)

    # The result names of the last run, known to be strings (so the next run's need no new check).
    _named: tuple[str, ...] = ()

    #: Attributes in which :mod:`epyclab.seeding` never looks for random states (the point, the last results).
    NotRandomState: tuple[str, ...] = (
        "_parameters", "_results", "_named", "_configured", "_sweep_seed", "_fixed_seed", "_point_seed", "_held",
        "_global_kind", "_seeder",
    )

    # Seeding (see epyclab.seeding): class defaults, so experiments unpickled from before it still run.
    _sweep_seed: int | None = None
    _fixed_seed: int | None = None
    _point_seed: int | None = None
    # The class of numpy's global bit generator where the sweep was begun (see seeding.globalKind).
    _global_kind: type | None = None
    # What seeds each point of the sweep, made once per sweep (see seeding.SweepSeeder). (An experiment
    # pickled before it existed may hold a "_held" of its own: never looked at.)
    _seeder: seeding.SweepSeeder | None = None

    def __init__(self) -> None:
        self._parameters: ExperimentalParameters = {}
        self._configured = False
        self._results: ResultsDict | None = None

    # ---- random streams --------------------------------------------------------

    def setSweepSeed(self, seed: int | None) -> None:
        """Seed each later run from ``seed`` and its point (labs call this before a sweep; None: no seeding).

        Each run then derives its point's seed (:func:`epyclab.seeding.pointSeed`),
        records it in the metadata as :attr:`SEED`, and seeds numpy's global
        state, :mod:`random` and the random states held on the experiment from
        it before ``setUp``. Clears a seed set by :meth:`setPointSeed`. The class
        of numpy's global bit generator here and now (numpy's MT19937 unless
        ``numpy.random.set_bit_generator`` chose another) is the one each run
        draws from, wherever it runs.

        Raises:
            TypeError, ValueError: if ``seed`` is not a whole number in [0, 2**63).
        """
        self._sweep_seed = None if seed is None else seeding.checkSeed(seed)
        self._fixed_seed = None
        # Points draw from the kind of global bit generator the user's process has now, wherever they run.
        self._global_kind = None if seed is None else seeding.globalKind()
        # A new sweep finds the global states and looks for the experiment's random states afresh.
        self._seeder = None if seed is None else seeding.SweepSeeder(self._sweep_seed)

    def sweepSeed(self) -> int | None:
        """The sweep seed set by :meth:`setSweepSeed`, or None."""
        return self._sweep_seed

    def setPointSeed(self, seed: int | None) -> None:
        """Run every later point with this seed (a row's :attr:`SEED`, to run that row again); None undoes it.

        Raises:
            TypeError, ValueError: if ``seed`` is not a whole number in [0, 2**63).
        """
        self._fixed_seed = None if seed is None else seeding.checkSeed(seed)
        if seed is not None:
            self._global_kind = seeding.globalKind()

    def pointSeed(self) -> int | None:
        """The seed of the run in progress (or of the last run), or None if it was not seeded."""
        return self._point_seed

    def _seed_for(self, params: Mapping[str, Any]) -> int | None:
        """The seed of the run at ``params`` (None: unseeded); where there is one, ``self._seeder`` is set too."""
        seeder = self._seeder
        if seeder is None:
            if self._fixed_seed is None and self._sweep_seed is None:
                return None
            # Given a point seed only, or unpickled from before seeders.
            seeder = self._seeder = seeding.SweepSeeder(self._sweep_seed)
        if self._fixed_seed is not None:
            return self._fixed_seed
        return seeder.point_seed(params)

    def _seedWrapped(self, seed: int | None) -> None:
        """Hand the run's seed to the experiments this one runs (combinators override this)."""

    # ---- configuration -------------------------------------------------

    def set(self, params: Mapping[str, Any]) -> "Experiment":
        """Move the experiment to a new point: deconfigure the old one, configure the new.

        Returns the experiment, so ``e.set(p).run()`` reads naturally.
        """
        cls = type(self)
        if cls.configure is _CONFIGURE and cls.deconfigure is _DECONFIGURE:
            # Neither overridden (most experiments): what the two do, without their two calls per point.
            self._parameters = dict(params)
        else:
            if self._configured:
                self.deconfigure()
            self.configure(params)
        self._configured = True
        return self

    def configure(self, params: Mapping[str, Any]) -> None:
        """Take on the parameters of a point (override point; call super)."""
        self._parameters = dict(params)

    def deconfigure(self) -> None:
        """Undo :meth:`configure` before moving to another point (override point; call super)."""
        self._parameters = {}

    # ---- the lifecycle ---------------------------------------------------

    def setUp(self, params: ExperimentalParameters) -> None:
        """Prepare a run at ``params`` (override point; call super)."""
        self._results = None

    def tearDown(self) -> None:
        """Clean up after a run, also after a failed ``do`` (override point; call super)."""

    def do(self, params: ExperimentalParameters) -> Union[dict[str, Any], list[ResultsDict]]:
        """Run the experiment at ``params`` and return its results (override this)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must override do(params) and return a dict of results"
        )

    def run(self, fatal: bool = False) -> ResultsDict:
        """Run the experiment at the current point and return its results dict.

        ``setUp``, ``do`` and ``tearDown`` are timed separately. An exception in
        any of them is recorded (status False, exception, traceback) and the
        results are left empty; ``tearDown`` runs whenever ``setUp`` succeeded.
        A successful run's exception and traceback are ``''`` (epyc's run() has no such keys;
        its notebooks show ``''``, as epyclab's do).
        With ``fatal=True`` the exception is re-raised after being recorded.
        """
        params = self._parameters
        cls = type(self)
        status = True
        failure: BaseException | None = None
        trace = ""
        res: Any = {}
        setup_time = experiment_time = teardown_time = 0.0
        start = datetime.now()
        t0 = perf_counter()
        seed = self._point_seed = self._seed_for(params)
        seeded: list[Any] = []
        try:
            if seed is not None:
                # Before setUp, so that what it draws is reproducible too (_seed_for made the seeder).
                seeded = self._seeder.seed(self, seed, self._global_kind)
            # Also when unseeded: a seed left from an earlier sweep must not stay on a wrapped experiment.
            self._seedWrapped(seed)
            if cls.setUp is _SETUP:
                self._results = None  # setUp's own work, without its call per point (the common case)
            else:
                self.setUp(params)
        except Exception as exc:
            failure, trace = exc, traceback.format_exc()
            t1 = t2 = t3 = perf_counter()
        else:
            t1 = perf_counter()
            try:
                if seed is not None and cls.setUp is not _SETUP:
                    # Random states that setUp made (self.rng = default_rng()) are seeded too.
                    self._seeder.seed_held(self, seed, seeded)
                res = self.do(params)
                # The result names of the last run again, none a parameter (_checked's common case,
                # tested here to save its call per point): checked already.
                if type(res) is not dict or tuple(res) != self._named or not res.keys().isdisjoint(params):
                    res = self._checked(res, params)
            except Exception as exc:
                failure, trace = exc, traceback.format_exc()
                res = {}
            t2 = t3 = perf_counter()
            # The default tearDown does nothing: not called, it takes no time (a call and a clock read less).
            if cls.tearDown is not _TEARDOWN:
                try:
                    self.tearDown()
                except Exception as exc:
                    # A failed do is the more useful story; keep it if there was one.
                    if failure is None:
                        failure, trace = exc, traceback.format_exc()
                        res = {}
                t3 = perf_counter()
            setup_time, experiment_time, teardown_time = t1 - t0, t2 - t1, t3 - t2
        if failure is not None:
            status = False
        named = _NAMED[0]
        if named[0] is cls:
            classname = named[1]
        else:
            classname = self._classname()
            if cls._classname is _CLASSNAME:
                # Remembered for the next run (the class's name is the same; an override may not be).
                _NAMED[0] = (cls, classname)
        # The keys as module globals: a class attribute costs a lookup more, on every run.
        meta = {
            _EXPERIMENT: classname,
            _START_TIME: start,
            _END_TIME: datetime.now(),
            _ELAPSED_TIME: t3 - t0,
            _SETUP_TIME: setup_time,
            _EXPERIMENT_TIME: experiment_time,
            _TEARDOWN_TIME: teardown_time,
            _STATUS: status,
            # A success's are '', as epyc's notebooks show them (epyc's run() leaves them out): the
            # columns are text from the first row, so every sweep has them, all successes too.
            _EXCEPTION: "" if failure is None else failure,
            _TRACEBACK: trace,
            _HOSTNAME: _HOST,
            _PROCESS: _PID,
        }
        if seed is not None:
            meta[_SEED] = seed
        if cls.report is _REPORT:
            # report()'s own results dict, without its call per point (the common case).
            self._results = {_PARAMETERS_: dict(params), _METADATA_: meta, _RESULTS_: res}
        else:
            self._results = self.report(params, meta, res)
        if failure is not None and fatal:
            raise failure
        return self._results

    def _classname(self) -> str:
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}"

    def _checked(self, res: Any, params: Mapping[str, Any]) -> Any:
        """Check what ``do`` returned, naming the experiment class when it is wrong."""
        if res is None:
            # As in epyc: a do() that returns nothing ran successfully and has no results.
            return {}
        if isinstance(res, dict):
            clash = [k for k in res if k in params]
            if clash:
                raise ResultsStructureException(
                    f"{self._classname()}.do() returned result(s) {clash} with the same "
                    f"name as a parameter; rename the result(s)"
                )
            unnamed = [k for k in res if not isinstance(k, str)]
            if unnamed:
                # Caught here, the run fails; caught by the notebook, the sweep would stop.
                raise ResultsStructureException(
                    f"{self._classname()}.do() returned result name(s) {unnamed!r} that are "
                    f"not strings; name every result with a string"
                )
            self._named = tuple(res)
            return res
        if isinstance(res, list) and all(_well_formed(r) for r in res):
            return res
        what = type(res).__name__
        if isinstance(res, list):
            what = "a list whose items are not all results dicts"
        raise ResultsStructureException(
            f"{self._classname()}.do() returned {what}; it must return a dict of "
            f"results, or a list of results dicts"
        )

    def report(
        self, params: ExperimentalParameters, meta: dict[str, Any], res: Any
    ) -> ResultsDict:
        """Assemble the results dict of a run (override to add metadata; call super)."""
        return {
            Experiment.PARAMETERS: dict(params),
            Experiment.METADATA: meta,
            Experiment.RESULTS: res,
        }

    # ---- results dicts and access to the last run ------------------------

    @staticmethod
    def resultsdict() -> ResultsDict:
        """Return an empty, well-formed results dict."""
        return {Experiment.PARAMETERS: {}, Experiment.METADATA: {}, Experiment.RESULTS: {}}

    @staticmethod
    def isResultsDict(rc: Any) -> bool:
        """True if ``rc`` has the shape of a results dict."""
        return (
            isinstance(rc, dict)
            and isinstance(rc.get(Experiment.PARAMETERS), dict)
            and isinstance(rc.get(Experiment.METADATA), dict)
            and isinstance(rc.get(Experiment.RESULTS), (dict, list))
        )

    def results(self) -> ResultsDict | None:
        """The results dict of the last run, or None before any run."""
        return self._results

    def success(self) -> bool:
        """True if the last run succeeded (False before any run)."""
        return self._results is not None and bool(
            self._results[Experiment.METADATA].get(Experiment.STATUS, False)
        )

    def failed(self) -> bool:
        """True if the last run failed (False before any run)."""
        return self._results is not None and not self.success()

    def experimentalResults(self) -> Any:
        """The results part of the last run's results dict, or None before any run."""
        return None if self._results is None else self._results[Experiment.RESULTS]

    def metadata(self) -> dict[str, Any] | None:
        """The metadata of the last run, or None before any run."""
        return None if self._results is None else self._results[Experiment.METADATA]

    def parameters(self) -> ExperimentalParameters:
        """The parameters of the current point."""
        return self._parameters

    def __getitem__(self, k: str) -> Any:
        """A result value of the last run."""
        res = self.experimentalResults()
        if not isinstance(res, dict):
            raise KeyError(k)
        return res[k]


_EXPERIMENT, _START_TIME, _END_TIME = Experiment.EXPERIMENT, Experiment.START_TIME, Experiment.END_TIME
_ELAPSED_TIME, _SETUP_TIME = Experiment.ELAPSED_TIME, Experiment.SETUP_TIME
_EXPERIMENT_TIME, _TEARDOWN_TIME = Experiment.EXPERIMENT_TIME, Experiment.TEARDOWN_TIME
_STATUS, _EXCEPTION, _TRACEBACK = Experiment.STATUS, Experiment.EXCEPTION, Experiment.TRACEBACK
_HOSTNAME, _PROCESS, _SEED = Experiment.HOST, Experiment.PID, Experiment.SEED
# The base class's override points: a run skips the call of one that a subclass did not override.
_CONFIGURE, _DECONFIGURE = Experiment.configure, Experiment.deconfigure
_SETUP, _TEARDOWN, _CLASSNAME = Experiment.setUp, Experiment.tearDown, Experiment._classname
_REPORT = Experiment.report
_PARAMETERS_, _METADATA_, _RESULTS_ = Experiment.PARAMETERS, Experiment.METADATA, Experiment.RESULTS
# The last class whose run named it, and its name ((class, name) in one item, replaced whole: thread-safe).
_NAMED: list[tuple[type | None, str]] = [(None, "")]


def failed_result(
    point: dict[str, Any], exc: BaseException | str, trace: str = "", classname: str = ""
) -> ResultsDict:
    """A results dict recording that the run at ``point`` failed with ``exc``.

    Used where :meth:`Experiment.run` cannot record the failure itself: the
    experiment's ``configure`` raised, its results could not be sent back, or
    the engine running it died.
    """
    now = datetime.now()
    meta: dict[str, Any] = {
        Experiment.EXPERIMENT: classname,
        Experiment.START_TIME: now,
        Experiment.END_TIME: now,
        Experiment.ELAPSED_TIME: 0.0,
        Experiment.SETUP_TIME: 0.0,
        Experiment.EXPERIMENT_TIME: 0.0,
        Experiment.TEARDOWN_TIME: 0.0,
        Experiment.STATUS: False,
        Experiment.EXCEPTION: exc,
        Experiment.TRACEBACK: trace,
        Experiment.HOST: _HOST,
        Experiment.PID: os.getpid(),
    }
    return {Experiment.PARAMETERS: dict(point), Experiment.METADATA: meta, Experiment.RESULTS: {}}
