"""The sequential lab: a parameter space, a design, a notebook, and the sweep."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, nullcontext
from dataclasses import dataclass
from itertools import product
from time import monotonic
from typing import Any, Callable, Union

from epyclab import globalstates, seeding
from epyclab.designs import Design, ExperimentalConfiguration, FactorialDesign
from epyclab.errors import NotebookReadOnlyError, ResultsStructureException, UnstorableValueError
from epyclab.experiment import Experiment, ResultsDict, exception_text
from epyclab.labs import provenance
from epyclab.labs.engine import capture, worker
from epyclab.labs.interrupts import CtrlCGate, SweepTally, interruptedNote
from epyclab.log import logger
from epyclab.notebooks.labnotebook import LabNotebook
from epyclab.order import POINT, SWEEP, stamp
from epyclab.progress import Progress

_METADATA, _RESULTS, _CAPTURE = Experiment.METADATA, Experiment.RESULTS, capture.CAPTURE

__all__ = ["Lab", "Committer", "Submitted", "SweepMarks", "point_key", "unstorable_result"]


@dataclass(frozen=True)
class Submitted:
    """A point handed to a cluster, whose result is collected later under ``jobid``."""

    point: dict[str, Any]
    jobid: str


#: What a lab's dispatch hook hands back for a point: its results dict, or a submission record.
Outcome = Union[ResultsDict, Submitted]


class SweepMarks:
    """The marks that keep one sweep's rows in the design's order (see :mod:`epyclab.order`).

    ``indices[i]`` is the design position of the sweep's ``i``-th point (they
    differ when ``resume=True`` dropped points).
    """

    def __init__(self, indices: list[int]) -> None:
        self.id = uuid.uuid4().hex[:16]
        self._indices = indices

    def positions(self) -> list[int]:
        """The design position of each of the sweep's points (the list itself: do not change it)."""
        return self._indices

    def mark(self, i: int) -> dict[str, Any]:
        """The metadata values of the ``i``-th point of the sweep."""
        return {SWEEP: self.id, POINT: self._indices[i]}

    def stamp(self, rc: ResultsDict, i: int) -> None:
        """Put the ``i``-th point's marks in ``rc`` (and in every results dict nested in it)."""
        if type(rc[_RESULTS]) is dict:
            # One row (the common case): two assignments.
            meta = rc[_METADATA]
            meta[SWEEP] = self.id
            meta[POINT] = self._indices[i]
            return
        stamp(rc, self.mark(i))


def unstorable_result(rc: ResultsDict, exc: BaseException) -> ResultsDict:
    """``rc`` as a failed run: its parameters and metadata, no results, ``exc`` as the exception."""
    meta = dict(rc[Experiment.METADATA])
    meta[Experiment.STATUS] = False
    meta[Experiment.EXCEPTION] = exc
    meta[Experiment.TRACEBACK] = ""
    return {Experiment.PARAMETERS: dict(rc[Experiment.PARAMETERS]), Experiment.METADATA: meta,
            Experiment.RESULTS: {}}


class Committer:
    """Commits a notebook every ``every`` results or ``interval`` seconds, whichever comes first.

    With a ``gate``, Ctrl-C is held while a commit is written (see :class:`~epyclab.labs.interrupts.CtrlCGate`).
    """

    def __init__(self, notebook: LabNotebook, every: int, interval: float, gate: CtrlCGate | None = None) -> None:
        self._notebook = notebook
        self._gate = gate
        self._every = max(1, int(every))
        self._interval = float(interval)
        self._since = 0
        self._last = monotonic()

    def added(self, n: int = 1) -> None:
        """Count ``n`` results added; commit if one of the limits is reached."""
        self._since += n
        if self._since >= self._every or monotonic() - self._last >= self._interval:
            self.commit()

    def commit(self) -> None:
        """Commit now."""
        if self._gate is None:
            self._notebook.commit()
        else:
            with self._gate.held():
                self._notebook.commit()
        self._since = 0
        self._last = monotonic()


def point_key(point: Mapping[str, Any], names: Iterable[str] | None = None) -> tuple[Any, ...]:
    """A hashable key for a point, equal for equal values (1 == 1.0 == numpy.int64(1))."""
    keys = sorted(point) if names is None else names
    return tuple((k, _hashable(point[k])) for k in keys)


def _hashable(v: Any) -> Any:
    # A missing cell (None) reads back as NaN in a float column: both are the same "no value" key.
    if v is None or (isinstance(v, float) and v != v):
        return None
    try:
        hash(v)
    except TypeError:
        return repr(v)
    return v


class Lab:
    """Runs an experiment at every point of a parameter space and keeps the results.

    Parameters are set like dict entries: ``lab['x'] = range(10)``. A string or
    any other non-iterable value is a single value. :meth:`runExperiment` runs
    the points given by the design (a :class:`FactorialDesign` unless told
    otherwise) and adds each results dict to the notebook's current result set,
    committing every ``commitEvery`` results or ``commitInterval`` seconds.
    """

    #: Commit after this many results by default.
    CommitEvery = 1000
    #: ...or after this many seconds, whichever comes first.
    CommitInterval = 5.0
    #: Store what each run printed and logged with its result (metadata ``epyclab.experiment.output``,
    #: see :mod:`epyclab.labs.engine.capture`); set False on the class or on one lab to keep rows lean.
    StoreOutput = True
    #: Replay it to the console and the ``epyclab`` logger, prefixed with the point, when results
    #: come back from engines (ParallelLab, ClusterLab). A sequential Lab shows output as it is written.
    ReplayOutput = True
    #: Seconds a point may run before it is a failed result with a TimeoutError (None: no limit); the
    #: default of ``runExperiment(e, timeout=...)``, for code that cannot pass arguments.
    Timeout: float | None = None
    # Whether this lab's runs happen elsewhere, so that their output must be replayed here.
    _runs_elsewhere = False
    # Whether runExperiment only submits the points, to be collected later (as ClusterLab does).
    _submits = False

    def __init__(
        self,
        notebook: LabNotebook | None = None,
        design: Design | None = None,
        commitEvery: int | None = None,
        commitInterval: float | None = None,
    ) -> None:
        self._notebook = notebook if notebook is not None else LabNotebook()
        self._design = design if design is not None else FactorialDesign()
        self._parameters: dict[str, list[Any]] = {}
        # The time limit of the sweep that runs (see runExperiment).
        self._limit: float | None = None
        self._commit_every = commitEvery if commitEvery is not None else self.CommitEvery
        self._commit_interval = commitInterval if commitInterval is not None else self.CommitInterval
        if self._commit_every < 1 or self._commit_interval < 0:
            raise ValueError(
                f"commitEvery must be at least 1 and commitInterval at least 0 "
                f"(got {self._commit_every!r} and {self._commit_interval!r})"
            )

    # ---- the pieces ---------------------------------------------------------

    def notebook(self) -> LabNotebook:
        """The notebook results go to."""
        return self._notebook

    def design(self) -> Design:
        """The design that turns the parameter space into points."""
        return self._design

    def open(self) -> None:
        """Make the lab ready (opens the notebook)."""
        self._notebook.open()

    def close(self) -> None:
        """Release the lab's resources (commits and closes the notebook)."""
        self._notebook.close()

    def updateResults(self) -> int:
        """Collect results that arrived since the last call; a sequential lab has none."""
        return 0

    def recreate(self) -> tuple[str, dict[str, Any]]:
        """The class name and keyword arguments that make an equivalent lab (notebook aside)."""
        cls = type(self)
        return (f"{cls.__module__}.{cls.__qualname__}", {"design": self._design})

    # ---- the parameter space -----------------------------------------------------

    def addParameter(self, k: str, r: Any) -> None:
        """Set parameter ``k`` to range ``r`` (a single value if ``r`` is a string or not iterable)."""
        if not isinstance(k, str):
            raise TypeError(f"parameter names are strings, got {k!r}")
        if isinstance(r, (str, bytes)) or not isinstance(r, Iterable):
            self._parameters[k] = [r]
        else:
            self._parameters[k] = list(r)

    def __setitem__(self, k: str, r: Any) -> None:
        self.addParameter(k, r)

    def __getitem__(self, k: str) -> list[Any]:
        return self._parameters[k]

    def deleteParameter(self, k: str) -> None:
        """Remove parameter ``k`` (nothing happens if there is none)."""
        self._parameters.pop(k, None)

    def __delitem__(self, k: str) -> None:
        self.deleteParameter(k)

    def deleteAllParameters(self) -> None:
        """Remove every parameter."""
        self._parameters = {}

    def parameters(self) -> list[str]:
        """The parameter names."""
        return list(self._parameters)

    def __contains__(self, k: object) -> bool:
        return k in self._parameters

    def __len__(self) -> int:
        return len(self.experiments(None))

    def experiments(self, e: Experiment | None) -> ExperimentalConfiguration:
        """The experimental configuration: (experiment, point) for every point of the design."""
        return self._design.experiments(e, self._parameters)

    # ---- running ------------------------------------------------------------------

    def runExperiment(
        self,
        e: Experiment,
        resume: bool = False,
        progress: bool | None = None,
        seed: int | bool | None = None,
        timeout: float | None = None,
    ) -> None:
        """Run ``e`` at every point and add the results to the current result set.

        The template of every lab: the design gives the points, ``resume=True``
        drops those that already have a successful (or a pending) result in
        the current result set, so a killed sweep can be re-run to completion;
        the lab's dispatch hook (:meth:`_dispatch`) runs or submits the rest,
        and this loop adds what it hands back, advances the progress bar and
        commits (every ``commitEvery`` results or ``commitInterval`` seconds,
        and when the sweep ends, however it ends). ``progress`` shows a
        progress bar (True), hides it (False) or shows it when a terminal or
        Jupyter is watching (None).

        A results value that no notebook format can store makes that point a
        failed result (its parameters and metadata kept); the sweep goes on.

        ``seed`` is the sweep seed (see :mod:`epyclab.seeding`; a bad one raises
        TypeError or ValueError): each point's random streams are seeded from it
        and the point, wherever the point runs, and the point's seed is recorded
        in its row and the sweep seed in the result set's attributes. None draws
        one from numpy's global random state (with ``resume=True``: takes the one
        recorded in the result set, so the resumed sweep goes on with it);
        ``False`` leaves random states alone, as epyc did.

        ``timeout`` (default :attr:`Timeout`): seconds each point may run. A
        point still running then is a failed result with a TimeoutError that
        names the point and the limit, and the sweep goes on. In a sequential
        Lab the point is interrupted where its Python code is (run the sweep
        from the main thread); a C call that never returns to Python can only
        be stopped by a ParallelLab, which replaces the worker stuck in it.

        Raises:
            ValueError: ``timeout`` is not a positive number of seconds.
            KeyboardInterrupt: Ctrl-C (SIGINT) stopped the sweep. It is taken
                between points, never halfway through storing one; the
                results that finished are committed and every process the
                lab started is stopped first. Its message is one line: how
                many points are done (or submitted) and saved in which file,
                and how to go on (``runExperiment(e, resume=True)``; for a
                ClusterLab, ``wait()`` collects). Its traceback ends at this
                call (its one epyclab line is the ``raise``).
        """
        limit = self.Timeout if timeout is None else timeout
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0):
            raise ValueError(f"a point's time limit is a positive number of seconds, not {limit!r}")
        self._limit = None if limit is None else float(limit)
        nb = self._notebook
        tally = SweepTally(notebook=nb.name(), persistent=nb.isPersistent())
        try:
            self._sweep(e, resume, progress, tally, seed)
        except KeyboardInterrupt:
            note = interruptedNote(tally, self._submits, LabNotebook.DEFAULT_RESULTSET)
            logger.info("%s", note)
            # Ctrl-C: what finished is saved, the processes are stopped; the message says where and what next.
            raise KeyboardInterrupt(note) from None

    def _sweep(
        self, e: Experiment, resume: bool, progress: bool | None, tally: SweepTally, seed: int | bool | None
    ) -> None:
        """The body of :meth:`runExperiment`, counting what it has done in ``tally``."""
        # Before the design is asked for its points (the experiment of every point is e): it travels seeded.
        seeded = seeding.startSweep(e, self._notebook.current(), seed, resume) is not None
        # Seeded, the caller's random states are kept from after the sweep seed was drawn (when not given): a
        # script draws on after the sweep from there, whichever lab ran the points (points run in this
        # process seed both before each point). Unseeded (seed=False), points draw on from the caller's
        # states, as in epyc, and leave them where they got to.
        with globalstates.keptGlobals() if seeded else nullcontext():
            self._sweep_points(e, resume, progress, tally)

    def _sweep_points(self, e: Experiment, resume: bool, progress: bool | None, tally: SweepTally) -> None:
        """The sweep of :meth:`_sweep` once its seed is set: runs the design's points and stores their results."""
        design = self.experiments(e)
        indices = list(range(len(design)))
        if resume:
            indices = self.unfinishedIndices(design)
            logger.info("resuming: %d of %d points already done or pending", len(design) - len(indices), len(design))
        points = [design[i] for i in indices] if resume else design
        # A rerun's points keep the positions they had in the design of the sweep that first ran them.
        positions = self._design.positions() if isinstance(self._design, _Points) else None
        sweep = SweepMarks(indices if positions is None else [positions[i] for i in indices])
        nb = self._notebook
        tally.tag = nb.currentTag()
        gate = CtrlCGate()
        committer = Committer(nb, self._commit_every, self._commit_interval, gate)
        if not points:
            committer.commit()
            return
        # A notebook closed since (a `with nb.open():` block that ended) is opened again, as epyc's
        # reopened its file to commit; a set that still cannot take the results (read-only
        # notebook, taken over, finished) is refused before any point runs.
        nb.reopenForChanges()
        tag = nb.currentTag()
        nb.current().checkChangeable()
        nb.current().checkParameters([p for _, p in points])
        tally.total = len(points)
        # Exits in reverse: commit what finished (Ctrl-C held), put SIGINT's handler back, close the
        # bar, then end the dispatch (which may stop processes: slow, so it comes after the results are
        # safe, and a second Ctrl-C can cut it short).
        # Git is asked for the provenance now, and answers while the first points run.
        git = provenance.startGitQuery(nb.current(), e)
        outcomes = self._dispatch(points, sweep)
        desc, unit = self._progress_label()
        with closing(outcomes), Progress(len(points), progress, desc=desc, unit=unit) as bar, gate, \
                _CommitOnExit(committer, tally), _closing(git):
            # Names looked up once for the sweep, not once per point.
            add, settle, record, added, stamp = self._add, self._settle, bar.record, committer.added, sweep.stamp
            add_row, refused = nb.addResult, self._refused
            let_through, hold = gate.open, gate.close
            sweep_id, positions = sweep.id, sweep.positions()
            first = True
            # Ctrl-C acts at once while a point runs or its result is awaited...
            let_through()
            for i, outcome in outcomes:
                # ...and waits while its result is stored.
                hold()
                if first:
                    # Once the first point is out: an experiment the dispatch
                    # refuses (it cannot travel) sends nothing to any engine.
                    seeding.recordSweepSeed(nb.current(), e)
                    provenance.recordFirstRun(nb.current(), e, self.engineEnvironments, git)
                    first = False
                if type(outcome) is dict:
                    meta = outcome[_METADATA]
                    if type(outcome[_RESULTS]) is dict:
                        # One row, the common case: stamp() and _add() written out (two calls fewer per point).
                        meta[SWEEP] = sweep_id
                        meta[POINT] = positions[i]
                        if _CAPTURE in meta:
                            outcome = settle(outcome)
                        try:
                            add_row(outcome)
                        except (UnstorableValueError, ResultsStructureException) as exc:
                            refused(outcome, exc)
                    else:
                        stamp(outcome, i)
                        if _CAPTURE in meta:
                            outcome = settle(outcome)
                        add(outcome)
                    record(outcome)
                elif isinstance(outcome, Submitted):
                    nb.addPendingResult(outcome.point, outcome.jobid, tag)
                    bar.add(1, 0)
                else:
                    stamp(outcome, i)
                    add(settle(outcome))
                    record(outcome)
                tally.points += 1
                added()
                let_through()

    def _progress_label(self) -> tuple[str, str]:
        """The progress bar's description and unit for a sweep: this lab's name, and runs."""
        return type(self).__name__, "run"

    def engineEnvironments(self) -> list[dict[str, str]]:
        """The environment of each engine that runs points (see :mod:`epyclab.labs.provenance`); none here."""
        return []

    def _dispatch(self, points: ExperimentalConfiguration, sweep: "SweepMarks") -> Iterator[tuple[int, Outcome]]:
        """The hook each lab implements: run (or submit) ``points``; yield ``(position, outcome)`` pairs.

        ``position`` indexes ``points``; every position is yielded exactly once,
        in any order. An outcome is a results dict (a failure is a failed
        results dict, never an exception) or a :class:`Submitted` record for a
        point whose result will be collected later. ``sweep`` carries the
        marks that put rows in the design's order (see :class:`SweepMarks`);
        the loop stamps the results dicts yielded here, so only a lab whose
        results reach the notebook another way needs it. The sequential lab
        runs each point here, in this process.
        """
        # The output capture is installed once for the sweep; between runs (while the loop adds
        # results) output passes through it untouched.
        with capture.Capturing(tee=True) as capturing:
            limit = self._limit
            if limit is not None:
                for i, (ex, p) in enumerate(points):
                    yield i, worker.run(ex, p, capturing, limit)
                return
            # Without a time limit worker.run is capturing.runPoint: called here, a call less per point.
            run = capturing.runPoint
            for i, (ex, p) in enumerate(points):
                yield i, run(ex, p)

    def _settle(self, rc: ResultsDict) -> ResultsDict:
        """Store and replay a run's captured output as :attr:`StoreOutput` and :attr:`ReplayOutput` say."""
        return capture.settle(rc, store=self.StoreOutput, replay=self._runs_elsewhere and self.ReplayOutput)

    def _committing(self, committer: Committer) -> "_CommitOnExit":
        """A context that commits when the block ends, however it ends (for loops that collect later)."""
        return _CommitOnExit(committer)

    def _add(self, rc: ResultsDict) -> None:
        """Add one results dict; a value no format can store makes that run a failed result instead."""
        if type(rc.get(_RESULTS)) is not list:
            try:
                self._notebook.addResult(rc)
            except (UnstorableValueError, ResultsStructureException) as exc:
                self._refused(rc, exc)
            return
        # Repetitions: each is a row of its own, and fails on its own.
        for leaf in rc[Experiment.RESULTS]:
            self._add(leaf)

    def _refused(self, rc: ResultsDict, exc: BaseException) -> None:
        """Add ``rc``, which the notebook refused with ``exc``, as a failed result naming why."""
        # The run's values (or its results' names) are the problem: the row is refused whole
        # before anything is added, and the point is recorded as failed, naming why.
        logger.warning("point %r: %s; recorded as a failed result", rc[Experiment.PARAMETERS], exc)
        self._notebook.addResult(unstorable_result(rc, exc))

    def unfinishedIndices(self, points: ExperimentalConfiguration) -> list[int]:
        """The positions in ``points`` of those with no successful and no pending result in the current set."""
        rs = self._notebook.current()
        if not points:
            return []
        names = sorted(points[0][1])
        done: set[tuple[Any, ...]] = set()
        df = rs.storedFrame() if rs.numberOfResults() else None
        # Results without one of the point's parameters cannot be that point.
        if df is not None and set(names) <= set(df.columns):
            ok = df[Experiment.STATUS].astype(bool).tolist() if Experiment.STATUS in df.columns else [True] * len(df)
            columns = []
            for n in names:
                # A missing cell (a None parameter) reads as the column's fill (0, '', NaN): it is None again here.
                values = df[n].tolist()
                columns.append([None if gone else v for v, gone in zip(values, rs.missingMask(n))])
            for success, values in zip(ok, zip(*columns)):
                if not success:
                    continue
                if "" not in values:
                    done.add(tuple((n, _hashable(v)) for n, v in zip(names, values)))
                    continue
                # A file keeps no mark of a missing str cell: reopened, it reads as ''. Such a cell
                # stands for None as well as for '' (a None point then counts as done if '' is).
                choices = [(v, None) if v == "" else (v,) for v in values]
                for combo in product(*choices):
                    done.add(tuple((n, _hashable(v)) for n, v in zip(names, combo)))
        for jobid in rs.pendingResults():
            params = rs.pendingResultParameters(jobid)
            if all(n in params for n in names):
                done.add(point_key(params, names))
        return [i for i, (_, p) in enumerate(points) if point_key(p, sorted(p)) not in done]

    def unfinishedPoints(self, points: ExperimentalConfiguration) -> ExperimentalConfiguration:
        """The points that have no successful and no pending result in the current result set."""
        return [points[i] for i in self.unfinishedIndices(points)]

    def rerunFailed(
        self,
        e: Experiment,
        exception: Any = None,
        where: Mapping[str, Any] | Callable[[dict[str, Any]], Any] | None = None,
        progress: bool | None = None,
        seed: int | bool | None = None,
    ) -> int:
        """Run ``e`` again at the points whose rows in the current result set failed; return how many.

        ``exception`` reruns only rows that failed with that exception type (a
        class, which takes its subclasses, a type name, or a tuple of them);
        ``where`` only rows whose parameters match (a dict of values, a list
        matching any of its values, or a function of the point's parameters).
        Each new row replaces the failed one in ``dataframe()``, in its place,
        and keeps the earlier attempts in its ``epyclab.rerun.history`` (JSON);
        the failed rows stay stored (see :mod:`epyclab.notebooks.reruns`). A
        point that fails again is a failed row again, which a later call reruns.
        Points rerun with the sweep seed recorded in the result set (``seed``
        as in :meth:`runExperiment`). On a ClusterLab the rows replace the failed
        ones as they are collected. Missing points are run by ``runExperiment(e, resume=True)``.

        Raises:
            TypeError: ``exception`` is not an exception class or name.
            KeyError: ``where`` names a parameter the result set does not have.
        """
        rs = self._notebook.current()
        points = rs.recordRerun(exception, where)
        logger.info("rerunning %d failed point(s)", len(points))
        if not points:
            return 0
        if seed is None:
            seed = seeding.recordedSeed(rs)
        # The failed points are the design of this sweep (the lab's own parameters are left as they are).
        design, self._design = self._design, _Points(points)
        try:
            self.runExperiment(e, progress=progress, seed=seed)
        finally:
            self._design = design
        return len(points)

    # ---- result sets -------------------------------------------------------------------

    def createWith(
        self,
        tag: str,
        f: Callable[["Lab"], Any],
        description: str | None = None,
        propagate: bool = True,
        delete: bool = True,
        finish: bool = False,
        deleteAllParameters: bool = True,
    ) -> bool:
        """Create result set ``tag`` by calling ``f(lab)``, unless it already exists.

        If the set exists it is selected and True is returned. Otherwise it is
        created and selected, the parameters are cleared (unless
        ``deleteAllParameters=False``) and ``f(self)`` is called. If ``f``
        raises, the partial result set is deleted (unless ``delete=False``),
        the previously current set is selected again, and the exception is
        re-raised (or False returned with ``propagate=False``). With
        ``finish=True`` the set is locked once ``f`` succeeds.
        """
        nb = self._notebook
        if tag in nb:
            nb.select(tag)
            return True
        previous = nb.currentTag()
        nb.addResultSet(tag, description)
        if deleteAllParameters:
            self.deleteAllParameters()
        try:
            f(self)
        except Exception as exc:
            if propagate:
                # The caller gets the exception, traceback and all: once is enough (as epyc, at INFO).
                logger.info("creating result set %r failed: %s", tag, exception_text(exc))
            else:
                # Returned as False: this log is the only place the cause is told.
                logger.warning("creating result set %r failed", tag, exc_info=True)
            # The set to go back to may be gone (f deleted it): then the default set, which always exists.
            nb.select(previous if previous in nb else nb.DEFAULT_RESULTSET)
            if delete:
                nb.deleteResultSet(tag)
            nb.commit()
            if propagate:
                raise
            return False
        if finish:
            nb.current().finish()
        nb.commit()
        return True

    # ---- reading results ------------------------------------------------------------------

    def dataframe(self, only_successful: bool = True) -> Any:
        """The current result set as a DataFrame (after collecting new results)."""
        self.updateResults()
        return self._notebook.dataframe(only_successful=only_successful)

    def results(self) -> list[ResultsDict]:
        """The current result set's results dicts (after collecting new results)."""
        self.updateResults()
        return self._notebook.results()

    def ready(self, tag: str | None = None) -> bool:
        """True when the result set has nothing pending (after collecting new results)."""
        self.updateResults()
        return self._notebook.ready(tag)

    def readyFraction(self, tag: str | None = None) -> float:
        """The fraction of the result set's jobs that have finished (after collecting)."""
        self.updateResults()
        return self._notebook.readyFraction(tag)


class _Points(Design):
    """A design of given points, whatever the parameter space (the points :meth:`Lab.rerunFailed` reruns).

    Each point comes with its position in the design of the sweep that first ran it (None if unknown).
    """

    def __init__(self, points: list[tuple[dict[str, Any], int | None]]) -> None:
        self._points = [p for p, _ in points]
        self._positions = [where for _, where in points]

    def experiments(self, e: Experiment | None, params: Mapping[str, Any]) -> ExperimentalConfiguration:
        return [(e, dict(p)) for p in self._points]

    def positions(self) -> list[int]:
        """The design position of each point: the one it first had, else its place among these points."""
        return [i if where is None else where for i, where in enumerate(self._positions)]


def _closing(thing: Any) -> Any:
    """``closing(thing)``, or nothing to close if ``thing`` is None."""
    return closing(thing) if thing is not None else nullcontext()


class _CommitOnExit:
    """Commits when a sweep ends, however it ends; a failing commit never hides the first error.

    A failed commit is logged (another error is on its way) and marked in ``tally``, if given.
    """

    def __init__(self, committer: Committer, tally: SweepTally | None = None) -> None:
        self._committer = committer
        self._tally = tally

    def __enter__(self) -> Committer:
        return self._committer

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._committer.commit()
            return
        if isinstance(exc, NotebookReadOnlyError):
            # The notebook refuses every save (read-only, closed, taken over): a commit would only
            # fail again for the reason being raised, so the user sees that one error alone.
            return
        try:
            self._committer.commit()
        except Exception:
            if self._tally is not None:
                self._tally.commit_failed = True
            logger.exception("could not commit the results that finished before %s", exc_type.__name__)
