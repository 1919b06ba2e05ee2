"""Mutation testing of the modules where a bug loses data: does a planted bug fail a test?

For each target module below, every mutant that mutmut (2.x) makes of the
chosen code (an operator, comparison, constant, keyword, string, or an
assignment replaced by ``None``; one at a time) is written into a private copy
of the working tree, and the target's own fast subset of the tests is run
against it. A mutant is *killed* when a test fails (or the run times out, or
the module no longer imports); it *survives* when every test passes. The score
is killed / mutants. Each surviving mutant must be listed in ``REASONS`` with a
one-line reason (an equivalent mutant, or the test that now kills it);
the script exits 1 below ``--target`` percent or with a survivor left unexplained.

Not mutated, by design: lines inside a logger call or inside the message of a
raised exception (the tests check the parts of a message a user acts on, the
culprit and the fix, not every character), docstrings, and type annotations;
and lines marked ``# pragma: no mutate: why`` (mutmut's own mark, for a line
whose every mutant is equivalent), each listed on the page with its reason.

To be quick each mutant runs in a child forked from a parent that has already
imported the heavy third-party libraries (never epyclab), so a mutant costs
its tests, not an interpreter start; and only the tests that ran the mutated
line in an unmutated run (traced), or all of the target's tests for a line
run at import time or in no test of that process (a subprocess may run it), quickest first; a test that
started a process runs for every mutant (the process may run the line). Subprocesses the tests start import
the copy too (PYTHONPATH). Hypothesis runs its "mutation" examples without shrinking. Nothing is changed in
the working tree except ``benchmarks/mutation-results.json`` and ``docs/mutation.md``.

    nice -n 10 python benchmarks/mutation.py [--module journal ...] [--survivors] [--jobs 1] [--no-write] [--list]

``--module NAME`` (repeatable) runs only those targets and merges their results
into the saved ones, so one module can be run again after it changes;
``--survivors`` tests again only the mutants that survived the saved run (when
the module's source is unchanged: adding tests cannot revive a killed mutant).
"""

from __future__ import annotations

import argparse
import ast
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = ROOT / "benchmarks" / "mutation-results.json"
MUTATION_MD = ROOT / "docs" / "mutation.md"


@dataclass(frozen=True)
class Target:
    """One module (or the named functions/classes of it) and the tests that must catch its mutants."""

    name: str
    path: str
    tests: tuple[str, ...]
    scope: tuple[str, ...] = ()  # qualified names ("Sweep._collect", "Collector"); empty: the whole module
    why: str = ""
    # Whether a test that starts a process may run the module there (then that test runs for every mutant,
    # since the trace sees only this process); False where none can.
    subprocesses: bool = True


TARGETS: list[Target] = [
    Target(
        "journal",
        "epyclab/notebooks/journal.py",
        ("tests/test_journal_records.py", "tests/test_journal_mutants.py"),
        why="a commit that returned must survive a crash; a torn tail must not hide the records before it",
    ),
    Target(
        "undo",
        "epyclab/notebooks/undo.py",
        ("tests/test_undo_log.py", "tests/test_undo_mutants.py"),
        why="a checkpoint killed half-way must be rolled back to the file as it was",
    ),
    Target(
        "locks",
        "epyclab/notebooks/locks.py",
        ("tests/test_notebook_locks.py", "tests/test_locks_mutants.py"),
        why="two writers on one file corrupt it",
    ),
    Target(
        "kinds",
        "epyclab/notebooks/kinds.py",
        ("tests/test_kinds_mutants.py",),
        # The functions that decide a column's dtype and how a cell is stored and read back; the rest of
        # the module (1100 lines, 667 mutants) is the kinds' documentation table and one-line accessors.
        scope=(
            "_dtype_problem", "state_of_value", "admit", "promote", "int_span", "mantissa", "join_ints",
            "NumberKind.state", "NumberKind.widen", "IntKind.state", "IntKind.admit",
            "DatetimeKind.state", "DatetimeKind.admit", "DatetimeKind.widen",
            "CellKind.widen", "CellKind.to_storage", "CellKind.from_storage",
            "DatetimeKind.to_storage", "DatetimeKind.from_storage", "DatetimeKind.typed_state", "DatetimeKind.cast",
            "ArrayKind.elements", "ListKind.elements",
        ),
        why="a value stored as the wrong kind is lost or changed on reload",
    ),
    Target(
        "lab",
        "epyclab/labs/lab.py",
        ("tests/test_lab_commit_loop.py", "tests/test_lab.py", "tests/test_lab_mutants.py",
         "tests/test_create_with.py"),
        why="resume and the commit loop decide which finished runs reach the notebook",
    ),
    Target(
        "parallel-chunks",
        "epyclab/labs/transports/scheduler.py",
        ("tests/test_chunk_sizes.py", "tests/test_parallel_units.py"),
        scope=("ChunkSizer",),
        why="a chunk too large for its time budget holds points back; one of 0 points never ends",
    ),
    Target(
        "parallel-retry",
        "epyclab/labs/transports/scheduler.py",
        # First the fork backend's copies, whose deaths are seen at once: a poison point anywhere, a copy
        # that dies once, points that all kill their copies. Then a 2-engine local ipyparallel cluster whose
        # engines die under chosen points (reported 5 s later): points alone in their tasks, and a point
        # in a chunk of several.
        ("tests/test_parallel_fork.py::test_each_death_of_a_point_alone_in_its_chunk_is_one_resubmission",
         "tests/test_parallel_fork.py::test_every_chunk_split_by_a_death_is_counted",
         "tests/test_parallel_fork.py::test_a_chunk_of_two_points_whose_copy_dies_is_split_and_only_the_poison_point_fails",
         "tests/test_parallel_fork.py::test_a_poison_point_anywhere_in_40_on_2_copies_is_one_failed_row",
         "tests/test_parallel_fork.py::test_a_copy_that_dies_once_is_replaced_and_every_point_succeeds",
         "tests/test_parallel_fork.py::test_points_that_all_kill_their_copies_end_as_failed_rows_without_a_hang",
         "tests/test_parallel_retry_mutants.py"),
        scope=("Sweep._engine_died",),
        why="a point whose engine died must be run again, and one that kills every engine fails alone",
    ),
    Target(
        "cluster-jobs",
        "epyclab/labs/remote/jobs.py",
        ("tests/test_job_ids.py", "tests/test_jobs_mutants.py"),
        why="job ids and task states decide which pending result a reply fills",
    ),
    Target(
        "cluster-collect",
        "epyclab/labs/remote/collect.py",
        # The decisions on the hub's own records, without a controller (under a second), then the ones that
        # ask a real controller (2 engines, about 5 s to start, per mutant that reaches them);
        # test_cluster_lab.py and the fault tests (engines and controllers killed: minutes) are left to the suite.
        ("tests/test_collect_decisions.py", "tests/test_collect_mutants.py"),
        # The job policy: what each task state becomes (result, failed row, resubmission or not). How a
        # resubmission renames the pending points (_resubmit_here, _rename) is reached only when engines
        # die or the controller restarts: tests/test_cluster_lab_faults.py and test_cluster_restart.py
        # (minutes each), not this subset.
        scope=(
            "Collector._past_grace", "Collector._apply", "Collector._resolve", "Collector._fail",
            "Collector._recover", "Collector._resubmit", "_succeeded", "Collector.act",
        ),
        why="a task reported lost, moved or culled must end as a result or a failed row, never pending forever",
        # collect.py runs only in the test process: the controller and engines never import it.
        subprocesses=False,
    ),
    Target(
        "cli-copy",
        "epyclab/cli.py",
        ("tests/test_cli_copy_mutants.py", "tests/test_copy_reads_sources_only.py", "tests/test_cli_notebooks.py",
         "-k", "copy"),
        scope=("_opened", "_split", "_resultset", "copy", "_typed_rows", "_replaceable", "_fill", "_pending", "_attrs"),
        why="copying result sets between notebooks must neither drop nor change a row",
    ),
]

_GAP = "not killed (a gap in the tests, not an equivalent mutant): "
_ADDED = "killed (checked by hand on this mutant) by a test changed after this run: tests/"
_MKSTEMP = 'fd, tmp = tempfile.mkstemp(prefix=f"{}", suffix=target.suffix, dir=target.parent or Path("{}"))'
_ONE_CHAR = "equivalent: a one-character code (dtype kind or byte order, never 'X') is in the padded string exactly "\
    "when it is in the original"
_FIT_EDGES = _ADDED + "test_jobs_mutants.py::test_fitting_at_the_edges"
_OWN_GRACE = _GAP + "a task this process submitted that the hub does not know (lost with a restarted or culling " \
    "controller) is reached only by the fault tests, not this subset"
_TASK_FAILED = _GAP + "a task that fails on the engine for another reason than the experiment (whose failures " \
    "are results) is not produced by this subset"
_TASK_MOVED = _GAP + "a task another process resubmitted (the hub's record says where it moved) is not produced " \
    "by this subset"
_POLL = _GAP + "how often a waiting reader tries the lock again (timing, which tests do not assert: a slower " \
    "poll only takes the lock later, a faster one costs CPU)"
_OWN_BOUND = "equivalent: at the bounds of the column's own dtype the widening below finds that same dtype and span"
_QUICK_DATE = "equivalent: the quick path for a date the column holds as it is; without it widen() gives an equal state"
_PROTOCOL_5_SETS = "equivalent: journals are written with pickle protocol 5, which builds sets with its own opcodes"

# Surviving mutants that are equivalent (no behaviour differs), keyed by
# (target, original line, mutated line), stripped; each with its one-line reason.
REASONS: dict[tuple[str, ...], str] = {  # (target, original[, mutated])
    ("undo", "self.failure: OSError | None = None", "self.failure: OSError & None = None"):
        "equivalent: an annotation, never evaluated (from __future__ import annotations)",
    ("undo", "self._memory: bytearray | None = None", "self._memory: bytearray & None = None"):
        "equivalent: an annotation, never evaluated (from __future__ import annotations)",
    (
        "undo",
        "def seek(self, offset: int, whence: int = 0) -> int:",
        "def seek(self, offset: int, whence: int = 1) -> int:",
    ):
        "killed by tests/test_undo_log.py::test_seek_without_whence_is_from_the_start, added after this run "
        "(checked by hand on this mutant)",
    ("journal", "if end < self.size():", "if end <= self.size():"):
        "equivalent: cutting a file to its own size changes nothing",
    ("journal", "if self.size() < _HEADER.size:", "if self.size() <= _HEADER.size:"):
        _ADDED + "test_journal_records.py::test_reopening_an_empty_journal_keeps_its_file_id (now appends)",
    ("undo", "def read(self, n: int = -1) -> bytes:", "def read(self, n: int = +1) -> bytes:"):
        _ADDED + "test_undo_log.py::test_seek_without_whence_is_from_the_start (now reads to the end)",
    ("parallel-chunks", "self.total = max(0, int(total))", "self.total = max(1, int(total))"):
        "equivalent: a total of 0 or 1 gives the same largest chunk (1), and nothing else reads total",
    ("journal", "self._fd = -1", "self._fd = -2"): "equivalent: any negative descriptor means 'closed'",
    ("cli-copy", _MKSTEMP.format(".{target.name}.", "."), _MKSTEMP.format("XX.{target.name}.XX", ".")):
        "equivalent: the temporary file's name, which is linked to the destination's name and removed before the "
        "command ends",
    ("cli-copy", _MKSTEMP.format(".{target.name}.", "."), _MKSTEMP.format(".{target.name}.", "XX.XX")):
        "equivalent: a Path is never false (Path('new.h5').parent is Path('.')), so the fallback is never used",
    ("cli-copy", "with _opened(tmp, write=True, create=True) as d:",
     "with _opened(tmp, write=False, create=True) as d:"):
        "equivalent: a notebook opened to be created is opened for writing whatever write says",
    ("cli-copy", "Path(tmp).unlink(missing_ok=True)", "Path(tmp).unlink(missing_ok=False)"):
        "equivalent in practice: the temporary name is missing only if making the notebook there failed before "
        "creating the file, which no destination here does (an unknown suffix is made as the default format)",
    ("cli-copy", "cells[k] = None if (missing[k][i] or v is pd.NA or v is pd.NaT) else v",
     "cells[k] = None if (missing[k][i] or v is pd.NA and v is pd.NaT) else v"):
        "equivalent: no column of a notebook's frame holds pd.NA, and a NaT added as it is is a missing datetime too",
    ("cli-copy", "cells[k] = None if (missing[k][i] or v is pd.NA or v is pd.NaT) else v",
     "cells[k] = None if (missing[k][i] and v is pd.NA or v is pd.NaT) else v"):
        "equivalent: no column of a notebook's frame holds pd.NA (the mask alone makes a cell None)",
    ("parallel-retry", "if len(chunk.points) > 1:", "if len(chunk.points) > 2:"):
        _GAP + "it takes an engine's death in a chunk of exactly 2 points; chunk sizes follow measured times, "
        "so no test here makes one on purpose",
    ("parallel-retry", "self.resubmitted += 1", "self.resubmitted = 1"):
        _GAP + "for chunks of several points the count in lastSweep depends on how many tasks ipyparallel had "
        "queued on the engine that died, so tests assert it only as at least 1 (exactly, for single points)",
    ("parallel-retry", "self.resubmitted += 1", "self.resubmitted += 2"):
        _GAP + "for chunks of several points the count in lastSweep depends on how many tasks ipyparallel had "
        "queued on the engine that died, so tests assert it only as at least 1 (exactly, for single points)",
    ("locks", 'return struct.pack("hh4xqqi4x", kind, os.SEEK_SET, _WRITER_BYTE, 1, 0)',
     'return struct.pack("hh4xqqi4x", kind, os.SEEK_SET, _WRITER_BYTE, 2, 0)'):
        "equivalent: every writer locks from the same byte, and nothing else locks the byte after it",
    ("locks", 'info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))',
     'info = json.loads(os.pread(fd, 4097, 0).decode("utf-8"))'):
        "equivalent: a note is far shorter than 4096 bytes (the command line in it is cut at 200 characters)",
    ("locks", "if told == 0 or (told == 1 and not exclusive and now - start >= self.QuietWait):",
     "if told == 0 or (told == 1 and not exclusive and now - start > self.QuietWait):"):
        "equivalent in practice: the monotonic clock is never read at exactly the end of the quiet wait",
    ("locks", "if pid > 0 and pid not in pids:", "if pid >= 0 and pid not in pids:"):
        "equivalent in practice: no FLOCK line of /proc/locks names process 0 (a lock whose process this one "
        "cannot see, in another pid namespace, is not listed at all; one whose process ended keeps its pid)",
    ("locks", 'return f"process {pid} ({command[:120]})" if command else f"process {pid}"',
     'return f"process {pid} ({command[:120]})" if command else f"XXprocess {pid}XX"'):
        _GAP + "a holder whose command line reads empty (a process caught as it ends) is not produced by this "
        "subset; one that has ended is (test_locks_mutants.py::test_a_holder_that_ended_leaving_its_lock_to_a_"
        "child_is_named_by_its_pid)",
    ("locks", "Timeout = 60.0", "Timeout = 61.0"):
        _GAP + "telling the documented 60 s from 61 s takes a reader waiting a minute, too slow for this subset",
    ("kinds", 'return f"its dtype {dtype.str} is byte-swapped; convert it with .astype({dtype.newbyteorder(\'=\').str!r})"',  # noqa: E501
     'return f"XXits dtype {dtype.str} is byte-swapped; convert it with .astype({dtype.newbyteorder(\'=\').str!r})XX"'):
        _ADDED + "test_kinds_mutants.py::test_a_refused_dtype_is_told_how_to_convert_it (now exact)",
    ("kinds", 'return f"its dtype is {dtype}, which no notebook format keeps exactly; convert it to float64 or complex128"',  # noqa: E501
     'return f"XXits dtype is {dtype}, which no notebook format keeps exactly; convert it to float64 or complex128XX"'):
        _ADDED + "test_kinds_mutants.py::test_a_refused_dtype_is_told_how_to_convert_it (now exact)",
    ("kinds", 'f"its dtype is {dtype}; only bool, int8..int64, uint8..uint64, float16/32/64 and complex64/128 "',
     'f"XXits dtype is {dtype}; only bool, int8..int64, uint8..uint64, float16/32/64 and complex64/128 XX"'):
        _ADDED + "test_kinds_mutants.py::test_a_refused_dtype_is_told_how_to_convert_it (now exact)",
    ("kinds", 'f"can be stored (store a timedelta as a float of seconds, text as str)"',
     'f"XXcan be stored (store a timedelta as a float of seconds, text as str)XX"'):
        _ADDED + "test_kinds_mutants.py::test_a_refused_dtype_is_told_how_to_convert_it (now exact)",
    ("undo", "def read(self, n: int = -1) -> bytes:", "def read(self, n: int = -2) -> bytes:"):
        "equivalent: any negative size means 'to the end', as for a file",
    ("undo", "n = max(0, self._size() - self._pos)", "n = max(1, self._size() - self._pos)"):
        "equivalent: this is the read to the end; asking for one byte at (or past) the end still reads nothing",
    ("undo", "n = max(0, self._size() - self._pos)", "n = max(0, self._size() + self._pos)"):
        "equivalent: this is the read to the end; asking for more than is left still reads only what is left",
    ("undo", "if end > len(self._memory):", "if end >= len(self._memory):"):
        "equivalent: at end == len the content is extended by nothing",
    ("undo", "if size < len(self._memory):", "if size <= len(self._memory):"):
        "equivalent: at size == len the content is cut by nothing",
    ("undo", "self._memory.extend(bytes(size - len(self._memory)))",
     "self._memory.extend(bytes(size + len(self._memory)))"):
        _ADDED + "test_undo_mutants.py::test_truncating_beyond_the_end_extends_with_zeros_on_disk_and_in_memory",
    ("undo", "if len(data) < length or zlib.crc32(data) != crc:", "if len(data) < length and zlib.crc32(data) != crc:"):
        _ADDED + "test_undo_mutants.py::test_a_last_record_of_the_right_length_but_zeros_is_not_written_back",
    ("undo", "view, offset = view[n:], offset + n", "view, offset = view[n:], offset - n"):
        _GAP + "reached only when pwrite writes part of a buffer (a disk filling up mid-write), which the "
        "tests in this subset do not produce",
    ("kinds", "return 0", "return 1"):
        "equivalent: a column that is not int keeps no int exactly by itself; its span is only compared with a "
        "float's mantissa bits (11 and up), which 0 and 1 never exceed, and key() leaves it out",
    ("locks", "delay = 0.002", "delay = 1.002"): _POLL,
    ("locks", "delay = min(delay * 2, 0.05)", "delay = min(delay / 2, 0.05)"): _POLL,
    ("locks", "delay = min(delay * 2, 0.05)", "delay = min(delay * 3, 0.05)"): _POLL,
    ("locks", "delay = min(delay * 2, 0.05)", "delay = min(delay * 2, 1.05)"): _POLL,
    ("locks", "if time.monotonic() >= deadline:", "if time.monotonic() > deadline:"):
        "equivalent in practice: the monotonic clock is never read twice at exactly the deadline",
    ("cluster-jobs", 'tasks = -(-int(points) // max(1, int(size)))',
     'tasks = -(-int(points) / max(1, int(size)))'): _FIT_EDGES,
    ("cluster-jobs", 'tasks = -(-int(points) // max(1, int(size)))',
     'tasks = -(-int(points) // max(2, int(size)))'): _FIT_EDGES,
    ("cluster-jobs", 'if tasks <= free:',
     'if tasks < free:'): _FIT_EDGES,
    ("cluster-jobs", '"start a controller with a durable task store instead: `epyclab cluster init PROFILE` and "',
     '"XXstart a controller with a durable task store instead: `epyclab cluster init PROFILE` and XX"'): _FIT_EDGES,
    ("cluster-jobs", '"`epyclab cluster start PROFILE` (SQLite, kept over restarts, never culled), or by hand "',
     '"XX`epyclab cluster start PROFILE` (SQLite, kept over restarts, never culled), or by hand XX"'): _FIT_EDGES,
    ("cluster-jobs", '"`ipcontroller --reuse --restore --IPController.db_class=epyclab.clustersetup.taskstore.TaskStore`"',  # noqa: E501
     '"XX`ipcontroller --reuse --restore --IPController.db_class=epyclab.clustersetup.taskstore.TaskStore`XX"'): _FIT_EDGES,  # noqa: E501
    ("cluster-jobs", 'told = f"if its c.DictDB.record_limit is not {limit}, give it to the lab as ClusterLab(..., hubRecordLimit=N)"',  # noqa: E501
     'told = f"XXif its c.DictDB.record_limit is not {limit}, give it to the lab as ClusterLab(..., hubRecordLimit=N)XX"'): _FIT_EDGES,  # noqa: E501
    ("cluster-jobs", 'if free < 1:',
     'if free <= 1:'): _FIT_EDGES,
    ("cluster-jobs", 'if free < 1:',
     'if free < 2:'): _FIT_EDGES,
    ("cluster-jobs", 'needed = -(-int(points) // free)',
     'needed = -(-int(points) / free)'): _FIT_EDGES,
    ("lab", "if df is not None and set(names) <= set(df.columns):", "if df is not None and set(names) < set(df.columns):"):  # noqa: E501
        "equivalent: a stored frame always has metadata columns besides the parameters",
    ("lab", "ok = df[Experiment.STATUS].astype(bool).tolist() if Experiment.STATUS in df.columns else [True] * len(df)"):  # noqa: E501
        "equivalent: a stored frame always has the status column, so the fallback is never used",
    ("cli-copy", "continue  # refused below, before anything is written",
     "break  # refused below, before anything is written"):
        _ADDED + "test_cli_copy_mutants.py::test_every_tag_named_twice_is_named_in_the_refusal",
    ("locks", "QuietWait = 1.0"): _GAP + "when a waiting reader's message goes from INFO to WARNING (timing, which "
    "tests do not assert)",
    ("kinds", "if info.min <= v <= info.max:", "if info.min < v <= info.max:"): _OWN_BOUND,
    ("kinds", "if info.min <= v <= info.max:", "if info.min <= v < info.max:"): _OWN_BOUND,
    ("kinds", "return state if span <= state.span else replace(state, span=span)",
     "return state if span < state.span else replace(state, span=span)"):
        "equivalent: at an equal span the new state equals the old one, and states are compared by value "
        "(rowcheck); being the same object only saves work",
    ("kinds", "out[:] = [None] * len(stored.data)", "out[:] = None"):
        "equivalent: numpy puts None in every cell of the object array either way",
    ("kinds", "and not getattr(v, \"nanosecond\", 0):"): _QUICK_DATE,
    ("kinds", "if v.tzinfo is None and state.fits_ns and state.dtype is self._US and NS_MIN <= v <= NS_MAX \\"):
        _QUICK_DATE,
    ("cluster-collect", "self._where = None", 'self._where = ""'):
        "equivalent: an empty text holds no job id either, so the map of jobs to sets is made afresh as for None",
    ("cluster-collect", "return bool(rc[Experiment.METADATA].get(Experiment.STATUS, True))",
     "return bool(rc[Experiment.METADATA].get(Experiment.STATUS, False))"):
        "equivalent in practice: every results dict epyclab's worker or epyc makes has a status; the count it "
        "feeds is the progress bar's",
    ("cluster-collect", "if state is TaskState.DIED and key is not None and len(refs) > 1:",
     "if state is TaskState.DIED and key is not None and len(refs) >= 1:"):
        "equivalent: a task of one point runs again as one task either way (one point per task)",
    ("cluster-collect", "exc = ob.error"): _TASK_FAILED,
    ("cluster-collect", "assert exc is not None"): _TASK_FAILED,
    ("cluster-collect", 'self._fail(msg_id, refs, exc, getattr(exc, "traceback", "") or "", tally)'): _TASK_FAILED,
    ("cluster-collect", "assert ob.moved_to is not None"): _TASK_MOVED,
    ("cluster-collect", "self._rename(refs, ob.moved_to, keep_index=True)"): _TASK_MOVED,
    ("cluster-collect", "own = self.tasks.get(msg_id)", "own = None"): _OWN_GRACE,
    ("cluster-collect", "return now - own.submitted > self.grace", "return now + own.submitted > self.grace"): _OWN_GRACE,  # noqa: E501
    ("cluster-collect", "return now - own.submitted > self.grace", "return now - own.submitted >= self.grace"):
        "equivalent in practice: the monotonic clock is never read at exactly the end of the grace",
    ("cluster-collect", "return isinstance(stamp, (int, float)) and time.time() - float(stamp) > self.grace",
     "return isinstance(stamp, (int, float)) and time.time() - float(stamp) >= self.grace"):
        "equivalent in practice: the clock is never read at exactly the end of the grace",
    ("cluster-collect", "if now - first > self.grace:", "if now - first >= self.grace:"):
        "equivalent in practice: the monotonic clock is never read at exactly the end of the grace",
    ("cluster-collect", "return True", "return False"):
        _GAP + "a job of another process first seen missing by this one fails after 20 s of this process's own "
        "watching; waiting 20 s is too slow for this subset (the notebook's submission time is tested)",
    ("locks", "_WRITER_BYTE = 2**62", "_WRITER_BYTE = 2*62"):
        "equivalent on Linux: HDF5 and DataLock lock with flock(), which never meets an OFD byte lock, so any "
        "byte every writer agrees on does (2**62 guards against an HDF5 built to lock with fcntl)",
    ("journal", "return len(read_side(path, _HEADER.size + 1)) > _HEADER.size",
     "return len(read_side(path, _HEADER.size + 2)) > _HEADER.size"):
        "equivalent: one byte past the header is all the question needs; reading two answers it the same",
    ("journal", "while pos + _FRAME.size <= len(data):", "while pos + _FRAME.size < len(data):"):
        "equivalent: only a frame with an empty payload could end exactly there, and a pickle is never empty",
    ("undo", "while pos + _RECORD.size <= len(log):", "while pos + _RECORD.size < len(log):"):
        "equivalent: only an empty record could end exactly there, and restoring nothing changes nothing",
    ("undo", "self._undo = open_side(undo_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)",
     "self._undo = open_side(undo_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL & os.O_APPEND, 0o644)"):
        "equivalent under the writer lock: an unfinished log is refused before (test_a_change_is_refused_while_an_"
        "earlier_one_is_unfinished), and this one descriptor writes the new log in order, so bytes land the same",
}  # fmt: skip

# Every mutant of one line sharing one reason, keyed by (target, original line), stripped.
REASONS_BY_LINE: dict[tuple[str, str], str] = {
    ("cluster-jobs", "@dataclass(frozen=True)"): "equivalent: nothing changes a JobRef; frozen only guards against it",
    ("locks", "self._finalizer.atexit = False"): "equivalent in practice (not proven): as for the journal's (the "
    "fold at exit, a newer finalizer, releases the lock first, and this finalizer then does nothing)",
    ("locks", "self._inode_finalizer.atexit = False"): "equivalent in practice (not proven): as for the journal's "
    "(the fold at exit, a newer finalizer, releases the lock first, and this finalizer then does nothing)",
    ("journal", "self._file_id = file_id"):
        _ADDED + "test_journal_mutants.py::test_a_commit_after_a_reset_that_found_the_disk_full_is_kept",
    ("journal", "self._closer.atexit = False"): "equivalent in practice (not proven): the fold of a notebook "
    "left open is a weakref finalizer too, made after its journal's, and finalizers run at exit newest first, so "
    "the fold comes first; tests/test_fold_at_exit.py and test_crash_safety.py pass with this mutant (checked by "
    "hand); None is as false as False",
    ("lab", "tag = nb.currentTag()"): "equivalent: a pending result given no tag goes to the current set too, "
    "and nothing selects another set while runExperiment submits",

    ("journal", '_ALLOWED = journal_globals() | {("builtins", "set"), ("builtins", "frozenset")}'): _PROTOCOL_5_SETS,
}

# Whole functions whose survivors share one reason, keyed by (target, qualified name).
REASONS_BY_FUNCTION: dict[tuple[str, str], str] = {
}

# Notes on earlier runs, kept on the page (a list of Markdown lines, ending with an empty one).
HISTORY: list[str] = [
    "## Earlier runs",
    "",
    "- Before 2026-11-30: 76.6% (294 of 384 mutants killed), every run but ChunkSizer's cut short; kinds and",
    "  the ClusterLab job policy not run; parallel-retry mutated only ChunkSizer (now parallel-chunks).",
    "- 2026-11-30, 03:03-03:45 UTC, the first full runs, before the tests written for their survivors",
    "  (tests/test_*_mutants.py) were in each subset (some were, in a first version): parallel-chunks 42/44,",
    "  journal 74/92, undo 113/136, locks 82/119, cluster-jobs 96/152, cli-copy 64/80, parallel-retry 15/19.",
    "- The table above: the runs of 2026-11-30 03:03-04:28 UTC on branch `mutation`, main merged at 03:56 and",
    "  04:11. On the code as merged at 04:11: lab (04:03; main has not changed lab.py since), cli-copy and locks",
    "  (04:13-04:21); journal, undo, cluster-jobs and cluster-collect's files main has not changed. Not on the",
    "  latest code: kinds (stopped at 60 of 177 mutants when main changed it), parallel-chunks and, unless its",
    "  row is dated after 04:11, parallel-retry (scheduler.py changed on main at 04:11); cluster-collect was cut",
    "  short at the deadline. Those need `--module kinds`, `--module parallel-chunks`, `--module parallel-retry`,",
    "  `--module cluster-collect`. In the last 40 minutes two or three targets ran side by side (see the load",
    "  averages), against the one-at-a-time default.",
    "- 2026-11-30, second sitting (branch `mutkinds`): kinds, cluster-collect, cluster-jobs and cli-copy run",
    "  again in full on their final code (their rows above). kinds' subset is now test_kinds_mutants.py alone",
    "  (tables of every edge value instead of 10 hypothesis draws; with test_kinds.py too, 7.3 min at load 5.6);",
    "  cluster-collect's starts with the job policy's decisions on hub records without a controller",
    "  (test_collect_decisions.py), then resubmission on a real one; jobs.py's lines that can only give",
    "  equivalent mutants are marked `# pragma: no mutate` (listed below, with why).",
    "- 2026-11-30, second sitting, branch `mutlocks`: locks (60.2%, 118/196 before), lab (81.6%, 120/147),",
    "  journal (89.1%, 82/92) and undo (91.2%, 124/136) run again in full, one at a time, on their code merged",
    "  with main at 06:33 UTC, after tests were added for their survivors (tests/test_locks_mutants.py,",
    "  tests/test_lab_mutants.py) and lines whose every mutant is equivalent were marked `# pragma: no mutate`",
    "  (listed below). locks.py now keeps 'not held' as None (a -1 sentinel made -2 and +1 equivalent mutants).",
    "",
]

# Third-party modules the parent imports once, so that a forked child only imports epyclab.
PREWARM = (
    "numpy", "pandas", "h5py", "dill", "cloudpickle", "tqdm", "click", "click.testing", "psutil",
    "ipyparallel", "zmq", "hypothesis", "hypothesis.strategies", "pytest", "_pytest.python",
)  # fmt: skip

_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


@dataclass
class Outcome:
    """What became of one mutant."""

    line: int  # 1-based
    original: str
    mutated: str
    status: str  # "killed", "timeout", "survived"
    seconds: float


@dataclass
class Report:
    """One target's run."""

    target: str
    path: str
    tests: list[str]
    scope: list[str]
    baseline: float
    outcomes: list[Outcome] = field(default_factory=list)
    total: int = 0  # mutants made; the outcomes may be fewer while the run goes on
    load: str = ""  # the load average when the run started
    sha: str = ""  # source_hash() of the module mutated
    when: str = ""  # when the run was made
    retested: int = 0  # with --survivors: the mutants tested again
    wall: float = 0.0  # seconds the run took, baseline included

    @property
    def killed(self) -> int:
        return sum(o.status != "survived" for o in self.outcomes)


# ---- which lines to mutate --------------------------------------------------------------------------


def scope_lines(source: str, scope: tuple[str, ...]) -> set[int] | None:
    """The 1-based lines of the named functions/classes (``Class.method`` allowed); None for all."""
    if not scope:
        return None
    tree = ast.parse(source)
    found: dict[str, ast.AST] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                found[name] = child
                visit(child, name + ".")

    visit(tree, "")
    missing = [s for s in scope if s not in found]
    if missing:
        raise SystemExit(f"scope names not found: {missing}; fix TARGETS in {__file__}")
    lines: set[int] = set()
    for name in scope:
        node = found[name]
        lines.update(range(node.lineno, node.end_lineno + 1))  # type: ignore[attr-defined]
    return lines


def excluded_lines(source: str) -> set[int]:
    """Lines inside logger calls and inside the exception built by a ``raise`` (see the module docstring)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        spans: list[ast.AST] = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _LOG_METHODS:
            if isinstance(node.func.value, ast.Name) and node.func.value.id in {"logger", "log", "_log"}:
                spans.append(node)
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            spans += [*node.exc.args, *(k.value for k in node.exc.keywords)]
        for span in spans:
            lines.update(range(span.lineno, span.end_lineno + 1))  # type: ignore[attr-defined]
    return lines


def mutants(path: Path, scope: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Every mutant of ``path`` within ``scope``: (1-based line, original line, whole mutated source)."""
    from mutmut import Context, list_mutations, mutate

    source = path.read_text()
    wanted = scope_lines(source, scope)
    skip = excluded_lines(source)
    out = []
    for mid in list_mutations(Context(source=source, filename=str(path))):
        line = mid.line_number + 1
        if (wanted is not None and line not in wanted) or line in skip:
            continue
        mutated, count = mutate(Context(source=source, mutation_id=mid, filename=str(path)))
        assert count == 1, mid
        out.append((line, mid.line, mutated))
    return out


# ---- running tests against a mutant -----------------------------------------------------------------


def make_copy(workdir: Path) -> None:
    """The working tree's files (tracked and new, as they are now) in ``workdir``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, workdir / name)


class _LineRecorder:
    """A pytest plugin that notes which test ran each line of one file ("" for lines run at import)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.current = ""
        self.hits: dict[int, set[str]] = {}
        self.seconds: dict[str, float] = {}  # each test's setup, call and teardown
        self.spawned: set[str] = set()  # the tests that started a process (it may run the module)

    def _local(self, frame, event, arg):  # noqa: ANN001, ANN202 - sys.settrace's signature
        if event == "line":
            self.hits.setdefault(frame.f_lineno, set()).add(self.current)
        return self._local

    def _global(self, frame, event, arg):  # noqa: ANN001, ANN202
        if frame.f_code.co_filename == self.filename:
            self.hits.setdefault(frame.f_lineno, set()).add(self.current)
            return self._local
        return None

    def start(self) -> None:
        import threading

        sys.settrace(self._global)
        threading.settrace(self._global)
        # Note the tests that start processes (only in this forked child: the parent never sees it).
        popen = subprocess.Popen.__init__

        def noting(popen_self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            self.spawned.add(self.current)
            return popen(popen_self, *args, **kwargs)

        subprocess.Popen.__init__ = noting  # type: ignore[method-assign]

    def pytest_runtest_protocol(self, item, nextitem):  # noqa: ANN001, ANN201
        self.current = item.nodeid

    def pytest_runtest_logfinish(self, nodeid, location):  # noqa: ANN001, ANN201
        self.current = "(between tests)"

    def pytest_runtest_logreport(self, report):  # noqa: ANN001, ANN201
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration


def run_tests(
    workdir: Path, tests: tuple[str, ...], timeout: float, record: str | None = None
) -> tuple[str, float, dict[int, list[str]], dict[str, float]]:
    """Run ``tests`` in a forked child in ``workdir``: ('passed'|'failed'|'timeout', seconds, lines, durations).

    With ``record`` (a path under ``workdir``), ``lines`` maps each line of that
    file run in this process to the tests that ran it ("" for import time), and
    ``durations`` each test's node id to its seconds.
    """
    started = time.monotonic()
    out = workdir / ".mutation-lines.json"
    out.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the child: its own process group, so a timeout kills what it started too
        code = 3
        try:
            os.setpgid(0, 0)
            os.chdir(workdir)
            sys.path.insert(0, str(workdir))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            plugins = []
            if record is not None:
                recorder = _LineRecorder(str(workdir / record))
                recorder.start()
                plugins.append(recorder)
            args = ["-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
            code = int(pytest.main(args, plugins=plugins))
            if record is not None:
                sys.settrace(None)
                hits = {n: sorted(t) for n, t in recorder.hits.items()}
                spawned = sorted(t for t in recorder.spawned if t.startswith("tests/"))
                out.write_text(json.dumps({"lines": hits, "seconds": recorder.seconds, "spawned": spawned}))
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            seconds = time.monotonic() - started
            code = os.waitstatus_to_exitcode(status)
            traced = json.loads(out.read_text()) if out.exists() else {"lines": {}, "seconds": {}, "spawned": []}
            lines = {int(n): t for n, t in traced["lines"].items()}
            # A test that started a process counts as running every line (the process may run any).
            traced["seconds"][""] = traced["spawned"]
            return ("passed" if code == 0 else "failed"), seconds, lines, traced["seconds"]
        if time.monotonic() - started > timeout:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started, {}, {}
        time.sleep(0.02)


def save(reports: list[Report], write: bool = True) -> dict[str, dict]:
    """Merge ``reports`` into benchmarks/mutation-results.json and rewrite docs/mutation.md (under a lock:
    runs of other targets may save at the same time); return every target's latest results."""
    with open(RESULTS_JSON.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
        for r in reports:
            results[r.target] = _as_dict(r)
        results = {t.name: results[t.name] for t in TARGETS if t.name in results}
        if write:
            RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
            MUTATION_MD.write_text(render(results))
    return results


def run_target(
    target: Target, workdir: Path, log: bool = True, write: bool = True, previous: dict | None = None
) -> Report:
    """Every mutant of ``target``, tested in ``workdir`` (the file is restored afterwards).

    With ``previous`` (this target's saved results, made from the same source and scope), only the
    mutants that survived there are tested again; the others keep their outcome (adding tests cannot
    bring a killed mutant back).
    """
    started = time.monotonic()
    path = workdir / target.path
    original = path.read_text()
    status, baseline, lines, durations = run_tests(workdir, target.tests, timeout=900, record=target.path)
    if status != "passed":
        raise SystemExit(f"{target.name}: the tests {list(target.tests)} fail without a mutant; fix them first")
    report = Report(target.name, target.path, list(target.tests), list(target.scope), round(baseline, 2))
    report.load = "{:.1f}, {:.1f}, {:.1f}".format(*os.getloadavg())
    report.sha = source_hash(original)
    report.when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    kept = {}
    if previous is not None:
        kept = {(o["line"], o["original"], o["mutated"]): o for o in previous["outcomes"] if o["status"] != "survived"}
        report.when = f"{previous.get('when', '?')}; survivors re-tested {report.when}"
    # A mutant that makes the tests hang (a loop that never ends) is killed by the timeout.
    timeout = 3 * baseline + 15
    found = mutants(path, target.scope)
    report.total = len(found)
    try:
        for i, (line, before, source) in enumerate(found, 1):
            after = source.split("\n")[line - 1]
            old = kept.get((line, before.strip(), after.strip()))
            if old is not None:
                report.outcomes.append(Outcome(**old))
                continue
            path.write_text(source)
            chosen = _tests_for(line, lines, target.tests, durations, target.subprocesses)
            result, seconds, _, _ = run_tests(workdir, chosen, timeout)
            status = {"failed": "killed", "passed": "survived", "timeout": "timeout"}[result]
            report.outcomes.append(Outcome(line, before.strip(), after.strip(), status, round(seconds, 2)))
            report.retested += previous is not None
            if i % 10 == 0:
                report.wall = round(time.monotonic() - started, 1)
                save([report], write)  # a run cut short still shows what it found
            if log:
                mark = {"killed": ".", "timeout": "T", "survived": "S"}[status]
                print(mark, end="" if i % 80 else f" {i}/{len(found)}\n", flush=True)
    finally:
        path.write_text(original)
    report.wall = round(time.monotonic() - started, 1)
    if log:
        print()
    return report


def source_hash(text: str) -> str:
    """A short fingerprint of a module's source, so saved results are known to belong to it."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tests_for(
    line: int, lines: dict[int, list[str]], tests: tuple[str, ...], durations: dict, subprocesses: bool = True
) -> tuple[str, ...]:
    """The tests that ran ``line`` in the baseline, quickest first (the first failure ends the run), then
    (with ``subprocesses``) those that started a process, which may run it there; all of ``tests`` if it
    ran at import time, or in no test of this process (a subprocess may run it), or between tests.

    ``durations`` maps node ids to seconds, and "" to the tests that started a process.
    """
    ran = lines.get(line, [])
    if not ran or any(not t.startswith("tests/") for t in ran):
        return tests
    quick = sorted(ran, key=lambda t: (durations.get(t, 0.0), t))
    spawned = [t for t in durations.get("", []) if t not in ran] if subprocesses else []
    return tuple(quick + sorted(spawned, key=lambda t: (durations.get(t, 0.0), t)))


# ---- the report ----------------------------------------------------------------------------------------


def _function_at(path: str, line: int) -> str:
    """The qualified name of the innermost function or class of ``path`` holding ``line`` ("" at module level)."""
    best, best_size = "", None

    def visit(node: ast.AST, prefix: str) -> None:
        nonlocal best, best_size
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                if first <= line <= child.end_lineno:  # type: ignore[operator]
                    size = child.end_lineno - first  # type: ignore[operator]
                    if best_size is None or size < best_size:
                        best, best_size = name, size
                visit(child, name + ".")

    visit(ast.parse((ROOT / path).read_text()), "")
    return best


# A membership test of a one-character code (a dtype's kind or byte order) in a string mutmut padded with XX.
_ONE_CHAR_IN = re.compile(r'(\.kind|\.byteorder) (not )?in "XX([^"]*)XX"')

# An annotated assignment whose annotation is a union: ``name: A | None = value``.
_ANNOTATED = re.compile(r"^[\w.]+\s*:\s*[^=]*\|[^=]*=")


def reason(target: str, o: dict, path: str = "") -> str | None:
    """Why a surviving mutant survives, if known: its own entry, or its function's."""
    own = (REASONS.get((target, o["original"], o["mutated"])) or REASONS.get((target, o["original"]))
           or REASONS_BY_LINE.get((target, o["original"])))
    if not own and _ANNOTATED.match(o["original"]) and o["original"].replace(" | ", " & ") == o["mutated"]:
        own = "equivalent: only the annotation changed, and annotations are never evaluated here"
    one_char = _ONE_CHAR_IN.search(o["mutated"])
    if not own and one_char and o["mutated"].replace(f'"XX{one_char[3]}XX"', f'"{one_char[3]}"') == o["original"]:
        own = _ONE_CHAR
    if own or not path:
        return own
    return REASONS_BY_FUNCTION.get((target, _function_at(path, o["line"])))


_NO_MUTATE = re.compile(r"#\s*pragma:\s*no mutate:?\s*(.*)$")


def unmutated(path: str, scope: list[str] | tuple[str, ...]) -> list[tuple[int, str, str]]:
    """The lines of ``path`` (within ``scope``) that mutmut skips for their ``# pragma: no mutate``:
    (1-based line, code, why)."""
    source = (ROOT / path).read_text()
    wanted = scope_lines(source, tuple(scope))
    out = []
    for n, text in enumerate(source.splitlines(), 1):
        mark = _NO_MUTATE.search(text)
        if mark and (wanted is None or n in wanted):
            out.append((n, text[: mark.start()].strip(), mark[1].strip() or "**no reason given**"))
    return out


def _equivalent(name: str, r: dict) -> int:
    """How many of a target's survivors are explained as equivalent mutants."""
    return sum(
        1 for o in r["outcomes"]
        if o["status"] == "survived" and (reason(name, o, r["path"]) or "").startswith("equivalent")
        and "not proven" not in (reason(name, o, r["path"]) or "")
    )


def render(results: dict[str, dict]) -> str:
    """docs/mutation.md from every target's latest run."""
    total = sum(len(r["outcomes"]) for r in results.values())
    killed = sum(sum(o["status"] != "survived" for o in r["outcomes"]) for r in results.values())
    lines = [
        "# Mutation testing",
        "",
        "Written by `benchmarks/mutation.py`; run it again (`nice -n 10 python benchmarks/mutation.py`)",
        "when one of these modules changes. Each mutant is one small planted bug (mutmut's operators,",
        "comparisons, constants, keywords, strings, assignments to `None`) in the named module, tested",
        "with that module's own fast subset of the tests. *Killed* means a test failed (or timed out);",
        "every surviving mutant is listed below with why it survives. Lines inside logger calls and",
        "inside the message of a raised exception are not mutated. `--module NAME` runs one target and",
        "merges its results into the saved ones (`benchmarks/mutation-results.json`); `--survivors` tests",
        "again only the mutants that survived a saved run of the same source, after tests were added.",
        "",
        "| module | code mutated | tests | mutants | killed | survived | score | without equivalents | run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        n = len(r["outcomes"])
        k = sum(o["status"] != "survived" for o in r["outcomes"])
        scope = ", ".join(f"`{s}`" for s in r["scope"]) or "all"
        tests = ", ".join(f"`{t.removeprefix('tests/')}`" for t in r["tests"])
        run = sum(o["seconds"] for o in r["outcomes"])
        made = r.get("total", n)
        count = f"{n}" if n == made else f"{n} of {made} (cut short)"
        eq = _equivalent(name, r)
        lines.append(
            f"| `{r['path']}` ({name}) | {scope} | {tests} | {count} | {k} | {n - k} | "
            f"{100 * k / max(n, 1):.1f}% | {100 * k / max(n - eq, 1):.1f}% ({eq} equivalent) | "
            f"{run / 60:.1f} min, load {r.get('load', '?')}, {r.get('when', '?')} |"
        )
    missing = [f"{t.name} (`{t.path}`)" for t in TARGETS if t.name not in results]
    minutes = sum(o["seconds"] for r in results.values() for o in r["outcomes"]) / 60
    equivalent = sum(_equivalent(name, r) for name, r in results.items())
    lines += [
        f"| **all** | | | {total} | {killed} | {total - killed} | **{100 * killed / max(total, 1):.1f}%** | "
        f"**{100 * killed / max(total - equivalent, 1):.1f}%** ({equivalent} equivalent) | |",
        "",
        "*Without equivalents*: killed / (mutants - survivors whose reason below says *equivalent*, except those",
        "marked *not proven*), the usual mutation score; a survivor killed by hand by a test added after its run",
        "still counts as a survivor.",
        "",
        f"Not run yet: {', '.join(missing)}." if missing else "Every target was run.",
        "",
        f"The mutants' tests take {minutes:.0f} min in all, one target at a time (`--jobs 1`); the *run* column is"
        " each target's sum of its mutants' test runs, the load average at its start, and when it ran (for a"
        " `--survivors` re-run: when the full run was made, and when its survivors were tested again against"
        " the tests added since). A target runs again in full when its source changes (`--module NAME`).",
        "",
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, mutmut 2, under `nice -n 10`; the load average (1, 5, 15 min)"
        " at the start of each target's run is in its row: the machine was shared.",
        "",
        "## What each target guards",
        "",
        *[f"- {t.name} (`{t.path}`{', ' + ', '.join(t.scope) if t.scope else ''}): {t.why}." for t in TARGETS],
        "",
        *HISTORY,
        "## Not mutated, and why",
        "",
        "Lines marked `# pragma: no mutate` in the source, because every mutant of the line is equivalent (they",
        "are left out of the counts above):",
        "",
    ]
    skipped = [
        f"- {name}, `{r['path']}` line {n}: `{code}`: {why}"
        for name, r in results.items() for n, code, why in unmutated(r["path"], r["scope"])
    ]
    lines += [*(skipped or ["None."]), "", "## Surviving mutants", ""]
    any_left = False
    for name, r in results.items():
        for o in r["outcomes"]:
            if o["status"] == "survived":
                any_left = True
                why = reason(name, o, r["path"]) or "**no reason recorded yet**"
                lines.append(f"- {name}, `{r['path']}` line {o['line']}: `{o['original']}` → `{o['mutated']}`: {why}")
    if not any_left:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", choices=[t.name for t in TARGETS], help="only these targets")
    parser.add_argument("--jobs", type=int, default=1, help="targets run side by side (default 1)")
    parser.add_argument(
        "--survivors", action="store_true",
        help="test again only the mutants that survived the saved run of each target (after adding tests); "
        "a target whose source or scope changed since is run in full",
    )  # fmt: skip
    parser.add_argument("--target", type=float, default=90.0, help="the least score in percent (default 90)")
    parser.add_argument("--no-write", action="store_true", help="print the report, write nothing")
    parser.add_argument("--list", action="store_true", help="count the mutants of each target and stop")
    parser.add_argument("--report", action="store_true", help="rewrite docs/mutation.md from the saved results")
    args = parser.parse_args()
    chosen = [t for t in TARGETS if not args.module or t.name in args.module]
    saved = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    previous: dict[str, dict] = {}
    if args.survivors:
        for t in chosen:
            old = saved.get(t.name)
            same = old is not None and old.get("sha") == source_hash((ROOT / t.path).read_text())
            if same and old["scope"] == list(t.scope) and len(old["outcomes"]) == old.get("total"):
                previous[t.name] = old
            else:
                print(f"[{t.name}] no complete saved run of this source and scope: running every mutant")
    if args.report:
        MUTATION_MD.write_text(render(save([], write=False)))
        return 0
    if args.list:
        for t in chosen:
            print(f"{t.name:16} {len(mutants(ROOT / t.path, t.scope)):5} mutants  {t.path}")
        return 0

    load = "{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())
    print(f"load average: {load}", flush=True)
    os.environ.update(PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="mutation-quick")
    os.environ.pop("CI", None)
    for name in PREWARM:
        __import__(name)
    _register_quick_profile()
    assert "epyclab" not in sys.modules, "the parent must not import epyclab: the children import the mutants"

    reports: list[Report] = []
    with tempfile.TemporaryDirectory(prefix="epyclab-mutation-") as tmp:
        # One copy per job; a job forks a worker that takes targets one by one.
        queue = list(chosen)
        workers: dict[int, Path] = {}
        outputs: dict[int, Path] = {}
        for j in range(max(1, min(args.jobs, len(queue)))):
            workdir = Path(tmp) / f"copy{j}"
            make_copy(workdir)
            mine = queue[j :: max(1, min(args.jobs, len(queue)))]
            out = Path(tmp) / f"result{j}.json"
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.environ["PYTHONPATH"] = str(workdir)
                    done = []
                    for t in mine:
                        started = time.monotonic()
                        print(f"[{t.name}] {len(mutants(workdir / t.path, t.scope))} mutants", flush=True)
                        rep = run_target(t, workdir, write=not args.no_write, previous=previous.get(t.name))
                        print(f"[{t.name}] {rep.killed}/{len(rep.outcomes)} killed in "
                              f"{(time.monotonic() - started) / 60:.1f} min", flush=True)  # fmt: skip
                        done.append(rep)
                    out.write_text(json.dumps([_as_dict(r) for r in done]))
                    code = 0
                finally:
                    os._exit(code)
            workers[pid] = workdir
            outputs[pid] = out
        failed = False
        for pid in workers:
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0 or not outputs[pid].exists():
                failed = True
                continue
            reports += [_from_dict(d) for d in json.loads(outputs[pid].read_text())]
        if failed:
            print("a worker failed; nothing written", file=sys.stderr)
            return 1

    results = save(reports, write=not args.no_write)
    print(render(results))
    total = sum(len(r["outcomes"]) for r in results.values())
    killed = sum(sum(o["status"] != "survived" for o in r["outcomes"]) for r in results.values())
    unexplained = [
        (n, o["line"])
        for n, r in results.items()
        for o in r["outcomes"]
        if o["status"] == "survived" and not reason(n, o, r["path"])
    ]
    score = 100 * killed / max(total, 1)
    if score < args.target or unexplained:
        print(f"score {score:.1f}% (target {args.target}%); survivors without a reason: {unexplained}", file=sys.stderr)
        return 1
    return 0


def _register_quick_profile() -> None:
    """tests/conftest.py's "mutation" profile without shrinking: a mutant is killed by the first failing
    example, and shrinking it (seconds per failure, most of a killed mutant's time) tells nothing more.
    Registered in the parent, so every forked child has it when conftest.py loads the profile named in
    HYPOTHESIS_PROFILE."""
    from hypothesis import HealthCheck, Phase, settings

    settings.register_profile(
        "mutation-quick",
        derandomize=True,
        max_examples=10,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _as_dict(r: Report) -> dict:
    d = dict(r.__dict__)
    d["outcomes"] = [o.__dict__ for o in r.outcomes]
    return d


def _from_dict(d: dict) -> Report:
    return Report(**{**d, "outcomes": [Outcome(**o) for o in d["outcomes"]]})


if __name__ == "__main__":
    sys.exit(main())
