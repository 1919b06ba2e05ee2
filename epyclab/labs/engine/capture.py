"""What a run prints and logs: captured while it runs, stored with its result, replayed on collection.

Every lab runs a point through :mod:`epyclab.labs.engine.worker`, which runs it in a
:class:`Capturing` installed once per sweep (per chunk of points on an
engine). While the run's thread is inside a run:

- what it writes to ``sys.stdout`` and ``sys.stderr`` (``print``, warnings,
  tracebacks it prints) is recorded; with ``tee=True`` (the sequential
  :class:`~epyclab.labs.lab.Lab`, where the user watches the run) it also goes
  on to the console as usual (while a text progress bar is shown, in whole
  lines, the bar cleared first: :func:`epyclab.progress.bar_cleared`),
  without it (engines) only to the record;
- every log record at WARNING or above that reaches the root logger from that
  thread is recorded (with its traceback, if any), by a handler added to the
  root logger for the run. The other handlers see the record as before; where
  none is configured, Python prints WARNINGs to stderr as a last resort: with
  ``tee`` that still happens, without it (engines) it does not.

Other threads' output is left alone. Output written straight to the file
descriptors (a C library, a subprocess) is not seen.

The record travels in the results dict's metadata under :data:`CAPTURE` (a
JSON string, so it crosses any wire and any notebook), capped at
:data:`Limit` bytes, oldest output dropped first. The lab then calls
:func:`settle` on each results dict it receives, which removes :data:`CAPTURE`
and, as the lab's settings say,

- stores the text (stdout, stderr and the log records, in the order they
  happened, each record as ``LEVEL:logger:message``) under :data:`OUTPUT`,
  the last :data:`Limit` bytes of it;
- replays it: stdout to ``sys.stdout`` and stderr to ``sys.stderr``, each
  line prefixed with the point (``[x=3, y=0.5] ``), and each log record to
  the ``epyclab`` logger at its own level, as ``[x=3, y=0.5] logger: message``.

A run that printed and logged nothing gets no :data:`OUTPUT` key.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from epyclab.experiment import Experiment, ResultsDict
from epyclab.log import Logger
from epyclab.progress import bar_cleared, text_bar_shown

__all__ = ["OUTPUT", "CAPTURE", "Limit", "Capturing", "captured", "settle", "point_prefix"]

#: The metadata key of a run's stored output (a str, at most :data:`Limit` bytes of UTF-8).
OUTPUT = "epyclab.experiment.output"
#: The metadata key that carries the captured output from the run to the lab (removed by :func:`settle`).
CAPTURE = "epyclab.experiment.capture"
#: Bytes of output kept per run (the last ones).
Limit = 64 * 1024

_DROPPED = "[... earlier output dropped ...]\n"

# One chunk of output: ("stdout" | "stderr", text) or ("log", levelno, logger name, text).
_Chunk = list[Any]


class _Record:
    """The chunks of output of one run, the oldest dropped once they hold far more than :data:`Limit`."""

    def __init__(self) -> None:
        self.chunks: list[_Chunk] = []
        self.size = 0
        self.dropped = False

    def add(self, chunk: _Chunk) -> None:
        last = self.chunks[-1] if self.chunks else None
        if last is not None and last[0] == chunk[0] != "log":
            # print() writes its arguments and the newline separately: one chunk per stream stretch.
            last[1] += chunk[1]
        else:
            self.chunks.append(chunk)
        self.size += len(chunk[-1])
        # Characters, not bytes, here (cheap); the exact cap in bytes is applied to the text.
        while self.size > 2 * Limit and len(self.chunks) > 1:
            self.size -= len(self.chunks.pop(0)[-1])
            self.dropped = True


class _Stream:
    """Stands in for sys.stdout or sys.stderr while a :class:`Capturing` is installed.

    What the capturing thread writes during a run is recorded (and with
    ``tee`` also written on); everything else (other threads, the lab's own
    writes between runs) goes to the stream it replaced, as do encoding,
    fileno and the rest.
    """

    def __init__(self, name: str, original: TextIO, owner: Capturing) -> None:
        self._name = name
        self._original = original
        self._owner = owner
        #: The start of a line not yet shown (while a text bar is on the console).
        self.unshown = ""

    def write(self, text: str) -> int:
        owner = self._owner
        record = owner.record
        if record is None or threading.get_ident() != owner.thread:
            return self._original.write(text)
        if text:
            record.add([self._name, str(text)])
        if owner.tee:
            self._show(str(text))
        return len(text)

    def _show(self, text: str) -> None:
        """Pass ``text`` on to the console; while a text bar is shown, whole lines only, the bar cleared first."""
        text, self.unshown = self.unshown + text, ""
        if not text_bar_shown():
            self._original.write(text)
            return
        # The bar is redrawn from the start of its line: a part line written now would be overwritten.
        head, newline, self.unshown = text.rpartition("\n")
        if newline:
            with bar_cleared(self._original):
                self._original.write(head + newline)
                self._original.flush()

    def finish(self) -> None:
        """Show what is left of a last line without its newline (ended by one if a bar is shown)."""
        text, self.unshown = self.unshown, ""
        if text:
            self._show(text + ("\n" if text_bar_shown() else ""))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._original.flush()

    def isatty(self) -> bool:
        if self._owner.record is None:
            return bool(self._original.isatty())
        return bool(self._owner.tee and self._original.isatty())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _formatted(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    elif record.exc_text:
        text += "\n" + record.exc_text
    return text


class _Handler(logging.Handler):
    """On the root logger while a :class:`Capturing` is installed: records a run's records at WARNING and above.

    Its presence keeps Python's last-resort handler (which prints WARNINGs to
    stderr when no handler is configured) from firing, so it prints those
    records itself, as that handler would have: always outside a run, and
    during one only with ``tee``.
    """

    def __init__(self, owner: Capturing, stderr: TextIO) -> None:
        super().__init__(logging.WARNING)
        self._owner = owner
        self._stderr = stderr

    def emit(self, record: logging.LogRecord) -> None:
        owner = self._owner
        run = owner.record
        recorded = run is not None and threading.get_ident() == owner.thread
        if recorded:
            run.add(["log", record.levelno, record.name, _formatted(record)])
        if (owner.tee or not recorded) and logging.lastResort is not None and self._alone(record):
            # Clearing a text progress bar on the console while we write (see epyclab.progress).
            with bar_cleared(self._stderr):
                self._stderr.write(logging.lastResort.format(record) + "\n")

    def _alone(self, record: logging.LogRecord) -> bool:
        """True if no other handler saw ``record`` (then the last-resort handler would have printed it)."""
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return False
            if not logger.propagate:
                return True
            logger = logger.parent  # type: ignore[assignment]
        return True


class Capturing:
    """The redirection of output, installed once for many runs: ``with Capturing(tee) as c: c.run(f)``.

    Entering replaces ``sys.stdout``/``sys.stderr`` and adds a handler to the
    root logger; leaving puts them back. Only what the entering thread writes
    or logs inside :meth:`run` is recorded; output between runs passes
    through unchanged. Installing once per sweep (or per chunk of points on an
    engine) rather than per run keeps the per-point cost to a few attribute
    assignments.
    """

    def __init__(self, tee: bool = False) -> None:
        self.tee = tee
        self.thread = threading.get_ident()
        #: The record of the run in progress (None between runs).
        self.record: _Record | None = None
        self._fresh = _Record()

    def __enter__(self) -> Capturing:
        self.thread = threading.get_ident()
        self._stdout, self._stderr = sys.stdout, sys.stderr
        self._handler = _Handler(self, self._stderr)
        self._out = _Stream("stdout", self._stdout, self)
        self._err = _Stream("stderr", self._stderr, self)
        sys.stdout, sys.stderr = self._out, self._err  # type: ignore[assignment]
        logging.getLogger().addHandler(self._handler)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        logging.getLogger().removeHandler(self._handler)
        sys.stdout, sys.stderr = self._stdout, self._stderr
        self.record = None

    def run(self, run: Callable[[], ResultsDict]) -> ResultsDict:
        """``run()``, its output recorded under :data:`CAPTURE` in the results dict it returns (if any).

        An exception from ``run`` propagates (what was recorded is then lost).
        """
        # One body for both: runPoint's (the per-point path), with a stand-in for the experiment.
        return self.runPoint(_Call(run), {})

    def runPoint(self, experiment: Experiment | _Call, point: dict[str, Any]) -> ResultsDict:
        """``experiment.set(point).run()`` as :meth:`run` runs a function: its output recorded in its results dict.

        The same as ``run(lambda: experiment.set(point).run())``, without a function made and called per point.
        """
        # A run that writes nothing (most) leaves its record empty for the next run.
        record = self.record = self._fresh
        try:
            rc = experiment.set(point).run()
        finally:
            self.record = None
            if record.chunks or (self.tee and (self._out.unshown or self._err.unshown)):
                self._ended(record)
        if record.chunks:
            self._keep(rc, record)
        return rc

    def _ended(self, record: _Record) -> None:
        """After a run that wrote something: a fresh record for the next, and a last line shown."""
        if record.chunks:
            self._fresh = _Record()
        if self.tee and (self._out.unshown or self._err.unshown):
            # A last line the run left without its newline is shown now.
            self._out.finish()
            self._err.finish()

    @staticmethod
    def _keep(rc: ResultsDict, record: _Record) -> None:
        """Put what a run wrote in its results dict, under :data:`CAPTURE`."""
        chunks, cut = _capped(record.chunks)
        rc[Experiment.METADATA][CAPTURE] = json.dumps({"chunks": chunks, "dropped": record.dropped or cut})


class _Call:
    """A function in an experiment's place for :meth:`Capturing.runPoint`: ``set()`` is itself, ``run()`` calls it."""

    __slots__ = ("_run",)

    def __init__(self, run: Callable[[], ResultsDict]) -> None:
        self._run = run

    def set(self, point: dict[str, Any]) -> "_Call":
        return self

    def run(self) -> ResultsDict:
        return self._run()


def captured(run: Callable[[], ResultsDict], tee: bool = False) -> ResultsDict:
    """``run()``, its output recorded under :data:`CAPTURE` in the results dict it returns.

    ``tee=True`` lets the output reach the console as it is written, too. An
    exception from ``run`` propagates (what was recorded is then lost; with
    ``tee`` it was shown). For many runs, install a :class:`Capturing` once.
    """
    with Capturing(tee) as capturing:
        return capturing.run(run)


def _capped(chunks: list[_Chunk]) -> tuple[list[_Chunk], bool]:
    """The last chunks whose texts hold at most :data:`Limit` characters (the oldest kept one cut to fit).

    Also whether anything was cut or dropped.
    """
    kept: list[_Chunk] = []
    size = 0
    for chunk in reversed(chunks):
        text = chunk[-1]
        room = Limit - size
        if len(text) > room:
            kept.append([*chunk[:-1], text[len(text) - room:]])
            return list(reversed(kept)), True
        kept.append(chunk)
        size += len(text)
    return list(reversed(kept)), False


def _text(chunks: list[_Chunk], dropped: bool) -> str:
    """The stored text: the output in the order it came, the last :data:`Limit` bytes of it."""
    parts = []
    for chunk in chunks:
        if chunk[0] == "log":
            _, level, name, message = chunk
            parts.append(f"{logging.getLevelName(level)}:{name}:{message}\n")
        else:
            parts.append(chunk[1])
    text = "".join(parts)
    data = text.encode("utf-8", errors="replace")
    if len(data) <= Limit and not dropped:
        return text
    mark = _DROPPED.encode()
    tail = data[-(Limit - len(mark)):]
    # Cutting bytes may split a character: drop the broken start.
    return _DROPPED + tail.decode("utf-8", errors="ignore")


def point_prefix(params: dict[str, Any]) -> str:
    """``[k=v, ...] ``: the point a replayed line came from."""
    return "[" + ", ".join(f"{k}={params[k]!r}" for k in sorted(params)) + "] "


def _replay(chunks: list[_Chunk], prefix: str) -> None:
    log = logging.getLogger(Logger)
    for chunk in chunks:
        if chunk[0] == "log":
            _, level, name, message = chunk
            log.log(level, "%s%s: %s", prefix, name, message)
            continue
        stream = sys.stdout if chunk[0] == "stdout" else sys.stderr
        lines = chunk[1].splitlines()
        if not lines:
            continue
        text = "".join(f"{prefix}{line}\n" for line in lines)
        # A text progress bar on the console is cleared while we write, and redrawn after.
        with bar_cleared(stream):
            stream.write(text)
            stream.flush()


def settle(rc: ResultsDict, store: bool = True, replay: bool = False) -> ResultsDict:
    """Take the captured output out of ``rc``; store it under :data:`OUTPUT` and/or replay it.

    With ``store``, the text goes into the metadata of ``rc`` (and of each
    results dict in its results, if those are a list: they are the rows the
    notebook keeps). With ``replay``, it is written to the console and the
    ``epyclab`` logger, prefixed with the point (see the module's docstring).
    Returns ``rc``. A results dict without captured output is returned as it is.
    """
    meta = rc.get(Experiment.METADATA)
    if not isinstance(meta, dict) or CAPTURE not in meta:
        return rc
    wire = meta.pop(CAPTURE)
    try:
        data = json.loads(wire)
        chunks, dropped = data["chunks"], bool(data["dropped"])
    except (TypeError, ValueError, KeyError) as exc:
        logging.getLogger(Logger).warning("the captured output of a run could not be read (%s); dropped", exc)
        return rc
    if not chunks:
        return rc
    if replay:
        _replay(chunks, point_prefix(rc.get(Experiment.PARAMETERS) or {}))
    if store:
        text = _text(chunks, dropped)
        inner = rc.get(Experiment.RESULTS)
        targets = [meta]
        if isinstance(inner, list):
            targets += [r[Experiment.METADATA] for r in inner if isinstance(r, dict) and Experiment.METADATA in r]
        for m in targets:
            m[OUTPUT] = text
    return rc
