"""The progress bar of a sweep: done, failed and rate, in a console or in Jupyter."""

from __future__ import annotations

import sys
from time import monotonic
from typing import Any

from epyclab.experiment import Experiment, ResultsDict

__all__ = ["Progress", "show_progress_by_default"]

# Redrawing the bar is cheap but not free; a sweep of trivial points would
# spend its time drawing. Refresh at most this often.
_REFRESH_SECONDS = 0.2


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()  # type: ignore[attr-defined]
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


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
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="run", dynamic_ncols=True)

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

    def _refresh(self) -> None:
        self._bar.update(self.done - self._shown)
        self._shown = self.done
        self._bar.set_postfix(failed=self.failed, refresh=True)
        self._last = monotonic()

    def close(self) -> None:
        """Draw the final counts and release the bar."""
        if self._bar is not None:
            self._refresh()
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
