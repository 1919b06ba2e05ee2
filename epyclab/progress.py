"""The progress bar of a sweep: done, failed and rate, in a console or in Jupyter.

One bar per sweep, drawn by tqdm. In Jupyter with ipywidgets installed it is a
widget; anywhere else (a terminal, or Jupyter without ipywidgets) it is one
line of text redrawn in place. The class is chosen here rather than by
``tqdm.auto``, which warns (``TqdmWarning: IProgress not found``) when it falls
back to text in Jupyter. The bar is drawn only when :class:`Progress` asks
(every ``_REFRESH_SECONDS`` and once at the end), so every redraw shows new
counts and none is printed twice.

While a text bar is on the console, every console logging handler (a
``StreamHandler`` on ``sys.stdout`` or ``sys.stderr``, of any logger, and
Python's last-resort handler, which prints WARNINGs when none is configured)
writes through :meth:`tqdm.external_write_mode`: the bar is cleared, the record
written on a line of its own, the bar redrawn. So replayed log records,
epyclab's own warnings and the user's logging never share the bar's line.
``tqdm.contrib.logging.logging_redirect_tqdm`` is not used: it merges a
logger's console handlers into one without their levels (a console handler at
WARNING on a root logger at DEBUG would start printing DEBUG records), and it
adds a handler to a logger that had none (printing records twice, once there
and once at the root).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from time import monotonic
from typing import Any, TextIO

from epyclab.experiment import Experiment, ResultsDict

__all__ = ["Progress", "show_progress_by_default", "bar_class", "text_bar_shown", "bar_cleared", "note"]

# Redrawing the bar is cheap but not free; a sweep of trivial points would
# spend its time drawing. Refresh at most this often.
_REFRESH_SECONDS = 0.2


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()  # type: ignore[attr-defined]
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _have_widgets() -> bool:
    # find_spec raises ValueError when a module was blocked by sys.modules[name] = None.
    try:
        return sys.modules.get("ipywidgets", True) is not None and importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):
        return False


def bar_class() -> type:
    """The tqdm class a bar uses here: the widget one in Jupyter with ipywidgets, text otherwise."""
    if _in_jupyter() and _have_widgets():
        from tqdm.notebook import tqdm as widget_tqdm

        return widget_tqdm
    from tqdm.std import tqdm as text_tqdm

    return text_tqdm


# The streams of the text bars (not widgets) on the console now, one entry per bar.
_bar_streams: list[TextIO] = []


def text_bar_shown() -> bool:
    """True while a :class:`Progress` draws a text bar on the console (so output must not share its line)."""
    return bool(_bar_streams)


@contextmanager
def bar_cleared(stream: TextIO | None = None) -> Iterator[None]:
    """Around a write of whole lines to the console: the text bars are cleared first and redrawn after.

    ``stream`` is where the write goes; bars drawn there are cleared too. Any
    console stream will do: stdout and stderr share the terminal, although
    tqdm's own ``external_write_mode`` only sees that when they are still
    ``sys.stdout`` and ``sys.stderr`` (not while a run's output is captured).
    """
    from tqdm.std import tqdm as text_tqdm

    with ExitStack() as stack:
        for target in dict.fromkeys([*_bar_streams, *([stream] if stream is not None else [])]):
            stack.enter_context(text_tqdm.external_write_mode(file=target))
        yield


def show_progress_by_default() -> bool:
    """Show a bar when someone is watching: an interactive terminal or a Jupyter notebook."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or _in_jupyter()


class _AroundBar(logging.Handler):
    """Stands in for a console handler while a text bar is shown: clears the bar, lets it write, redraws the bar.

    It has the handler's level; the handler applies its own filters and format.
    """

    def __init__(self, inner: logging.Handler) -> None:
        super().__init__(inner.level)
        self.inner = inner

    def handle(self, record: logging.LogRecord) -> Any:
        with bar_cleared(getattr(self.inner, "stream", None) or sys.stderr):
            return self.inner.handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        self.inner.emit(record)


def _is_console(handler: logging.Handler) -> bool:
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, _AroundBar)
            and handler.stream in (sys.stdout, sys.stderr))


class _ConsoleLogging:
    """Puts every console logging handler behind an :class:`_AroundBar` (see the module's docstring); undoes it."""

    def __init__(self) -> None:
        self._wrapped: list[tuple[logging.Logger, _AroundBar]] = []
        self._last_resort: _AroundBar | None = None
        loggers = [logging.getLogger()] + [
            lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
        ]
        for lg in loggers:
            handlers = list(lg.handlers)
            if not any(_is_console(h) for h in handlers):
                continue
            for i, handler in enumerate(handlers):
                if _is_console(handler):
                    handlers[i] = wrapper = _AroundBar(handler)
                    self._wrapped.append((lg, wrapper))
            # One assignment: another thread logging meanwhile sees the old list or the new one.
            lg.handlers = handlers
        last = logging.lastResort
        if last is not None and not isinstance(last, _AroundBar):
            self._last_resort = logging.lastResort = _AroundBar(last)

    def restore(self) -> None:
        """Put the handlers back (keeping any handler added meanwhile)."""
        for lg, wrapper in self._wrapped:
            lg.handlers = [wrapper.inner if h is wrapper else h for h in lg.handlers]
        self._wrapped = []
        if self._last_resort is not None and logging.lastResort is self._last_resort:
            logging.lastResort = self._last_resort.inner
        self._last_resort = None


# The bars drawn now, innermost last (for note()).
_open: list["Progress"] = []


def note(text: str | None) -> None:
    """Show ``text`` on the bar of the sweep running now (if it has one); None removes it.

    For what the counts cannot say: a point that has run far longer than any
    other (see :class:`~epyclab.labs.transports.scheduler.Sweep`).
    """
    if _open:
        _open[-1].note(text)


class Progress:
    """Counts finished and failed runs and shows them on a tqdm bar (if enabled).

    ``enabled=None`` decides with :func:`show_progress_by_default`.
    """

    def __init__(self, total: int, enabled: bool | None = None, desc: str = "sweep", unit: str = "run") -> None:
        self.done = 0
        self.failed = 0
        self._total = total
        self._shown = 0
        self._last = monotonic()
        self._bar: Any = None
        self._note: str | None = None
        self._logging: _ConsoleLogging | None = None
        # Only runs can fail: a bar of submitted jobs shows no failures.
        self._counts_failures = unit == "run"
        if enabled is None:
            enabled = show_progress_by_default()
        if enabled:
            # mininterval=inf: tqdm never redraws on its own; _refresh and close decide.
            cls = bar_class()
            self._stream = sys.stderr
            self._bar = cls(
                total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=math.inf, file=self._stream
            )
            from tqdm.std import tqdm as text_tqdm

            _open.append(self)
            if cls is text_tqdm:
                # A widget needs none of this: records go to the cell's output, not onto the widget.
                self._logging = _ConsoleLogging()
                _bar_streams.append(self._stream)

    def note(self, text: str | None) -> None:
        """Show ``text`` after the counts (a point that runs far too long, say) until replaced; None removes it."""
        if text == self._note:
            return
        self._note = text
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.refresh()  # at once: a hang is when nothing else redraws the bar
            self._last = monotonic()

    def _postfix(self) -> str:
        counts = f"failed={self.failed}" if self._counts_failures else ""
        return ", ".join(t for t in (counts, self._note) if t)

    def record(self, rc: ResultsDict) -> None:
        """Count one finished results dict (a list of results counts as one run)."""
        self.done += 1
        meta = rc[Experiment.METADATA]
        if not meta.get(Experiment.STATUS, True):
            self.failed += 1
        if self._bar is not None and monotonic() - self._last >= _REFRESH_SECONDS:
            self._refresh()

    def add(self, done: int, failed: int) -> None:
        """Count ``done`` finished runs of which ``failed`` failed."""
        self.done += done
        self.failed += failed
        if self._bar is not None and monotonic() - self._last >= _REFRESH_SECONDS:
            self._refresh()

    def _catch_up(self) -> bool:
        """Give the bar the current counts without drawing it; True if they changed."""
        if self.done == self._shown:
            return False
        self._bar.update(self.done - self._shown)
        self._shown = self.done
        if self._counts_failures or self._note:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
        return True

    def _refresh(self) -> None:
        # The last count is drawn by close() (tqdm draws the final state there, whatever was drawn
        # before): drawing it here too would print the same line twice.
        if self._catch_up() and self.done < self._total:
            self._bar.refresh()
        self._last = monotonic()

    def close(self) -> None:
        """Draw the final counts (once) and release the bar."""
        if self in _open:
            _open.remove(self)
        if self._bar is not None:
            self._catch_up()
            self._bar.close()
            self._bar = None
        if self._logging is not None:
            self._logging.restore()
            self._logging = None
            _bar_streams.remove(self._stream)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
