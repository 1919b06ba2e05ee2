"""The progress bar of a sweep: done, failed and rate, in a console or in Jupyter.

One bar per sweep, drawn by tqdm. In Jupyter with ipywidgets installed it is a
widget; anywhere else (a terminal, or Jupyter without ipywidgets) it is one
line of text redrawn in place. The class is chosen here rather than by
``tqdm.auto``, which warns (``TqdmWarning: IProgress not found``) when it falls
back to text in Jupyter. The bar is drawn only when :class:`Progress` asks
(every ``_REFRESH_SECONDS`` and once at the end), so every redraw shows new
counts and none is printed twice.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from time import monotonic
from typing import Any

from epyclab.experiment import Experiment, ResultsDict

__all__ = ["Progress", "show_progress_by_default", "bar_class"]

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


def show_progress_by_default() -> bool:
    """Show a bar when someone is watching: an interactive terminal or a Jupyter notebook."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or _in_jupyter()


class Progress:
    """Counts finished and failed runs and shows them on a tqdm bar (if enabled).

    ``enabled=None`` decides with :func:`show_progress_by_default`.
    """

    def __init__(self, total: int, enabled: bool | None = None, desc: str = "sweep") -> None:
        self.done = 0
        self.failed = 0
        self._shown = 0
        self._last = monotonic()
        self._bar: Any = None
        if enabled is None:
            enabled = show_progress_by_default()
        if enabled:
            # mininterval=inf: tqdm never redraws on its own; _refresh and close decide.
            self._bar = bar_class()(
                total=total, desc=desc, unit="run", dynamic_ncols=True, mininterval=math.inf, file=sys.stderr
            )

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
        self._bar.set_postfix(failed=self.failed, refresh=False)
        return True

    def _refresh(self) -> None:
        if self._catch_up():
            self._bar.refresh()
        self._last = monotonic()

    def close(self) -> None:
        """Draw the final counts (once) and release the bar."""
        if self._bar is not None:
            self._catch_up()
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
