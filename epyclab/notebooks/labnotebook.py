"""The in-memory notebook: tagged result sets, one of them current."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Union

from epyclab.errors import (
    LabNotebookLockedException,
    PendingResultException,
    ResultsStructureException,
    UnknownResultSetError,
)
from epyclab.experiment import Experiment, ResultsDict
from epyclab.log import logger
from epyclab.notebooks.kinds import check_name
from epyclab.notebooks.resultset import ResultSet, with_results

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LabNotebook"]

_RESULTS = Experiment.RESULTS


class LabNotebook:
    """A collection of tagged result sets, held in memory.

    One result set is *current*: results go there unless a tag says otherwise.
    The set tagged :attr:`DEFAULT_RESULTSET` exists from the start. Subclasses
    (:class:`~epyclab.HDF5LabNotebook`, :class:`~epyclab.JSONLabNotebook`)
    persist it; this one is lost when the program ends.
    """

    DEFAULT_RESULTSET = "epyc.resultset.default"

    def __init__(self, name: str = "", description: str | None = None) -> None:
        self._name = name
        self._description = description if description is not None else f"Notebook {name}".strip()
        self._resultsets: dict[str, ResultSet] = {}
        self._current: str | None = None
        self._locked = False
        self._state_version = 0
        # Whether checkWritable may refuse (a subclass's may; this class's never does): asked per row.
        self._refuses_changes = type(self).checkWritable is not LabNotebook.checkWritable
        self.addResultSet(LabNotebook.DEFAULT_RESULTSET)

    # ---- identity ------------------------------------------------------------

    def name(self) -> str:
        """The notebook's name (for persistent notebooks, its file name)."""
        return self._name

    def description(self) -> str:
        """The free-text description of the notebook."""
        return self._description

    def setDescription(self, d: str) -> None:
        """Change the description."""
        self._check_unlocked()
        self._description = d
        self._state_version += 1

    def isPersistent(self) -> bool:
        """True if the notebook is saved somewhere (False for this in-memory one)."""
        return False

    def commit(self) -> None:
        """Save what changed since the last commit (nothing to do in memory)."""

    def checkWritable(self) -> None:
        """Raise if this notebook refuses changes; an in-memory notebook never does.

        Every change (to the notebook or to one of its result sets) asks this first, so a
        change that could never be saved is refused at once, not later at commit.

        Raises:
            NotebookReadOnlyError: (persistent notebooks) opened read-only, or taken over.
        """

    def open(self) -> "LabNotebook":
        """Make the notebook ready for use (nothing to do in memory); returns the notebook."""
        return self

    def reopenForChanges(self) -> None:
        """Make a notebook that was closed take changes again (nothing to do in memory; see persistent notebooks)."""

    def close(self) -> None:
        """Commit and release the notebook (nothing to release in memory)."""
        self.commit()

    def abandon(self) -> None:
        """Release the notebook without saving changes since the last commit (nothing to release in memory)."""

    def isOpen(self) -> bool:
        """True while the notebook can be used."""
        return True

    def __enter__(self) -> "LabNotebook":
        self.open()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        # Commit even when the block raised: whatever was added is worth keeping.
        self.close()

    # ---- result sets ------------------------------------------------------------

    def _new_resultset(self, description: str | None) -> ResultSet:
        """Create an empty result set (persistent subclasses attach their checks here)."""
        rs = ResultSet(description)
        rs.setNotebook(self)
        return rs

    def addResultSet(self, tag: str, description: str | None = None) -> ResultSet:
        """Create a result set, select it, and return it (error if the tag exists)."""
        self._check_unlocked()
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"a result set tag is a non-empty string, got {tag!r}")
        check_name(tag, "result set tag")
        if tag in self._resultsets:
            raise ResultsStructureException(
                f"the notebook already has a result set tagged {tag!r}; "
                f"select it with select() or use already()"
            )
        rs = self._new_resultset(description)
        self._resultsets[tag] = rs
        self._current = tag
        self._state_version += 1
        return rs

    def deleteResultSet(self, rs: Union[str, ResultSet]) -> None:
        """Delete a result set, given its tag or itself.

        Raises:
            ResultsStructureException: the set is the current one (the next
                ``addResult`` would silently go elsewhere: select another set
                first) or the default set (which always exists).
            UnknownResultSetError: no set has that tag.
        """
        self._check_unlocked()
        tag = rs if isinstance(rs, str) else self.resultSetTag(rs)
        if tag not in self._resultsets:
            raise UnknownResultSetError(tag, self.keys())
        if tag == LabNotebook.DEFAULT_RESULTSET:
            raise ResultsStructureException(
                f"the default result set {tag!r} cannot be deleted; it always exists (delete its "
                f"results by creating the notebook anew, or leave it empty)"
            )
        if tag == self._current:
            raise ResultsStructureException(
                f"result set {tag!r} is the current one and cannot be deleted; select() another "
                f"result set first"
            )
        del self._resultsets[tag]
        self._state_version += 1

    def resultSets(self) -> list[str]:
        """The tags of all result sets."""
        return list(self._resultsets)

    def keys(self) -> list[str]:
        """The tags of all result sets."""
        return list(self._resultsets)

    def resultSet(self, tag: str) -> ResultSet:
        """The result set with this tag."""
        try:
            return self._resultsets[tag]
        except KeyError:
            raise UnknownResultSetError(tag, self.keys()) from None

    def resultSetTag(self, rs: ResultSet) -> str:
        """The tag of a result set of this notebook."""
        for tag, candidate in self._resultsets.items():
            if candidate is rs:
                return tag
        raise KeyError("the result set is not in this notebook")

    def select(self, tag: str) -> ResultSet:
        """Make the result set ``tag`` current and return it.

        Allowed on a read-only notebook: it changes only which set reads default to
        (nothing is saved), so a read-only notebook can read every set.
        """
        rs = self.resultSet(tag)
        if self._current != tag:
            self._current = tag
            self._state_version += 1
        return rs

    def current(self) -> ResultSet:
        """The current result set."""
        assert self._current is not None
        return self._resultsets[self._current]

    def currentTag(self) -> str:
        """The tag of the current result set."""
        assert self._current is not None
        return self._current

    def numberOfResultSets(self) -> int:
        """How many result sets the notebook holds."""
        return len(self._resultsets)

    def __len__(self) -> int:
        return len(self._resultsets)

    def __contains__(self, tag: object) -> bool:
        return tag in self._resultsets

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._resultsets))

    def already(self, tag: str, description: str | None = None) -> bool:
        """Select result set ``tag`` and return True if it exists; else create it and return False."""
        if tag in self._resultsets:
            self.select(tag)
            return True
        self.addResultSet(tag, description)
        return False

    # ---- locking -------------------------------------------------------------------

    def finish(self, commit: bool = True) -> None:
        """Lock every result set and the notebook itself, then commit (unless told not to).

        Raises:
            NotebookReadOnlyError: the notebook refuses changes (see :meth:`checkWritable`).
        """
        self.checkWritable()
        for rs in self._resultsets.values():
            rs.finish()
        self._locked = True
        self._state_version += 1
        if commit:
            self.commit()

    def isLocked(self) -> bool:
        """True once :meth:`finish` has been called."""
        return self._locked

    def assertUnlocked(self) -> None:
        """Raise if the notebook is finished (locked); nothing happens if it is not (as in epyc).

        Raises:
            LabNotebookLockedException: :meth:`finish` was called, naming the notebook.
        """
        if self._locked:
            raise LabNotebookLockedException(
                f"notebook {self._name!r} is finished (locked) and cannot change"
            )

    def _check_unlocked(self) -> None:
        self.checkWritable()
        self.assertUnlocked()

    def _resultset_for(self, tag: str | None) -> ResultSet:
        return self.current() if tag is None else self.resultSet(tag)

    # ---- results --------------------------------------------------------------------

    def addResult(self, results: Union[ResultsDict, list[ResultsDict]], tag: str | None = None) -> None:
        """Add a results dict, or a list of them, to the current (or tagged) result set.

        A results dict whose results are a list (as a repeated experiment
        returns) adds each of those, however deeply nested.

        Raises:
            NotebookReadOnlyError: the notebook refuses changes (read-only, taken over).
            LabNotebookLockedException: the notebook is finished.
            ResultSetLockedException: the result set is finished.
            ResultsStructureException: ``results`` is not a results dict (or a list of them).
            UnstorableValueError: a value no notebook format keeps exactly; nothing is added.
        """
        rc = results  # the argument keeps epyc 1.7's name: addResult(results=...)
        if tag is None and not self._locked and type(rc) is dict and type(rc.get(_RESULTS)) is dict:
            # One row, the common case: this notebook asks itself whether it may change (checkWritable,
            # not called when it is the in-memory one's, which never refuses) and tells the set so.
            # current() inlined (a call costs ~1% of a row); a notebook always has a current set.
            if self._refuses_changes:
                self.checkWritable()
            self._resultsets[self._current].addWritableResult(rc)
            return
        self._check_unlocked()
        rs = self.current() if tag is None else self.resultSet(tag)
        if type(rc) is dict and type(rc.get(Experiment.RESULTS)) is dict:
            rs.addSingleResult(rc)
            return
        # Check the whole structure before storing any of it.
        for leaf in list(_leaves(rc)):
            rs.addSingleResult(leaf)

    def dataframe(self, tag: str | None = None, only_successful: bool = True) -> pd.DataFrame:
        """The results of the current (or tagged) result set as a DataFrame."""
        return self._resultset_for(tag).dataframe(only_successful=only_successful)

    def dataset(self, tag: str | None = None, layout: str | None = None) -> Any:
        """The current (or tagged) result set as an xarray Dataset (see :meth:`ResultSet.dataset`)."""
        return self._resultset_for(tag).dataset(layout)

    def dataframeFor(
        self, params: Mapping[str, Any], tag: str | None = None, only_successful: bool = True
    ) -> pd.DataFrame:
        """The rows matching ``params`` (a list value selects any of its values)."""
        return self._resultset_for(tag).dataframeFor(params, only_successful=only_successful)

    def results(self, tag: str | None = None) -> list[ResultsDict]:
        """Every result of the current (or tagged) result set as a results dict."""
        return self._resultset_for(tag).results()

    def resultsFor(self, params: Mapping[str, Any], tag: str | None = None) -> list[ResultsDict]:
        """The results dicts of the rows matching ``params``."""
        return self._resultset_for(tag).resultsFor(params)

    def numberOfResults(self, tag: str | None = None) -> int:
        """How many results the current (or tagged) result set holds."""
        return self._resultset_for(tag).numberOfResults()

    # ---- pending results -----------------------------------------------------------------

    def addPendingResult(self, params: Mapping[str, Any], jobid: str, tag: str | None = None) -> None:
        """Record a submitted job that will give the result for ``params``.

        An int ``jobid`` (epyc's in-memory notebook takes those) is kept as its text:
        :meth:`pendingResults` gives ``'12'``, and every method taking a job id finds it by ``12`` too.

        Raises:
            PendingResultException: ``jobid`` is already pending in some result set.
            UnstorableValueError: the job id or a parameter cannot be stored.
            LabNotebookLockedException: the notebook is finished.
        """
        self._check_unlocked()
        for other_tag, rs in self._resultsets.items():
            if rs.hasPendingResult(jobid):
                raise PendingResultException(
                    jobid, f"job id {jobid!r} is already pending in result set {other_tag!r}"
                )
        self._resultset_for(tag).addSinglePendingResult(params, jobid)

    def _resultset_pending(self, jobid: str) -> ResultSet:
        for rs in self._resultsets.values():
            if rs.hasPendingResult(jobid):
                return rs
        raise PendingResultException(jobid, f"no result set has a pending result with job id {jobid!r}")

    def resolvePendingResult(self, rc: ResultsDict, jobid: str) -> None:
        """Add the result of a pending job to the result set that holds the job.

        A result whose values the set cannot store (or whose results are named
        like its metadata) is added as a failed result saying why, as a lab
        adds it: a job is always resolved, never left pending for ever by a
        value. Every row is checked before any is added.
        """
        self._check_unlocked()
        rs = self._resultset_pending(jobid)
        leaves = []
        for leaf in _leaves(rc):
            failed = rs.checkResult(leaf)
            if failed is not None:
                logger.warning("job %s: %s; recorded as a failed result", jobid,
                               failed[Experiment.METADATA][Experiment.EXCEPTION])
            leaves.append(leaf if failed is None else failed)
        for leaf in leaves:
            rs.addSingleResult(leaf)
        rs.resolveSinglePendingResult(jobid)

    def cancelPendingResult(self, jobid: str) -> None:
        """Cancel a pending job: it becomes a failed result with a CancelledException."""
        self._check_unlocked()
        self._resultset_pending(jobid).cancelSinglePendingResult(jobid)

    def pendingResultParameters(self, jobid: str) -> dict[str, Any]:
        """The parameters of a pending job, whichever result set holds it."""
        return self._resultset_pending(jobid).pendingResultParameters(jobid)

    def pendingResults(self, tag: str | None = None) -> list[str]:
        """The job ids pending in the current (or tagged) result set."""
        return self._resultset_for(tag).pendingResults()

    def numberOfPendingResults(self, tag: str | None = None) -> int:
        """How many results are pending in the current (or tagged) result set."""
        return self._resultset_for(tag).numberOfPendingResults()

    def allPendingResults(self) -> list[str]:
        """The job ids pending in every result set."""
        return [jobid for rs in self._resultsets.values() for jobid in rs.pendingResults()]

    def numberOfAllPendingResults(self) -> int:
        """How many results are pending across all result sets."""
        return sum(rs.numberOfPendingResults() for rs in self._resultsets.values())

    def ready(self, tag: str | None = None) -> bool:
        """True when the current (or tagged) result set has nothing pending."""
        return self._resultset_for(tag).ready()

    def readyFraction(self, tag: str | None = None) -> float:
        """The fraction of the current (or tagged) result set's jobs that have finished."""
        rs = self._resultset_for(tag)
        done, pending = rs.numberOfResults(), rs.numberOfPendingResults()
        total = done + pending
        return 1.0 if total == 0 else done / total


def _leaves(rc: Union[ResultsDict, list[Any]]) -> Iterator[ResultsDict]:
    """The results dicts to store for ``rc``: lists and nested results flattened."""
    if isinstance(rc, list):
        for item in rc:
            yield from _leaves(item)
        return
    rc = with_results(rc)
    if not Experiment.isResultsDict(rc):
        raise ResultsStructureException(
            "a result to add must be a results dict ({'parameters': ..., 'metadata': ..., "
            f"'results': ...}}) or a list of them; got {type(rc).__name__}"
        )
    res = rc[Experiment.RESULTS]
    if isinstance(res, list):
        for item in res:
            yield from _leaves(item)
    else:
        yield rc
