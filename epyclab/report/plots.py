"""The report's figures, drawn by matplotlib without pyplot (no global state, no display) as PNG bytes.

- :func:`histogram`: time per point.
- :func:`resultPlot`: a numeric result against the swept parameters: a line
  (mean over repetitions, every run as a dot) for one parameter, a heat map
  (mean per cell) for two, and small multiples beyond: one panel per value of
  the third and later parameters, the first on the x axis and one line per
  value of the second.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from epyclab.errors import OptionalDependencyError

__all__ = ["histogram", "resultPlot", "requireMatplotlib", "MAX_PANELS"]

#: Small multiples drawn at most (the rest are named under the figure).
MAX_PANELS = 12
_DPI = 80


def requireMatplotlib() -> Any:
    """Import matplotlib's figure and Agg canvas, or say how to install matplotlib.

    Raises:
        OptionalDependencyError: matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise OptionalDependencyError(
            "epyclab report draws its plots with matplotlib, which is not installed: pip install matplotlib "
            "(or the extra: pip install -e '.[report]' in epyclab's checkout)"
        ) from exc
    return Figure, FigureCanvasAgg


def _png(fig: Any) -> bytes:
    _, canvas_class = requireMatplotlib()
    canvas_class(fig)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI, bbox_inches="tight")
    return out.getvalue()


def histogram(times: np.ndarray) -> bytes:
    """A histogram of the time per point (seconds)."""
    figure_class, _ = requireMatplotlib()
    fig = figure_class(figsize=(5, 2.6))
    ax = fig.add_subplot()
    t = times[np.isfinite(times)]
    # In the unit a person reads at a glance: ms, s, min or h.
    longest = float(t.max()) if len(t) else 0.0
    scale, unit = next(((f, u) for f, u in ((3600.0, "h"), (60.0, "min"), (1.0, "s")) if longest >= 2 * f),
                       (1e-3, "ms"))
    ax.hist(t / scale, bins=min(40, max(5, int(math.sqrt(len(t))) + 1)), color="#4c72b0")
    ax.set_xlabel(f"time per point ({unit})")
    ax.set_ylabel("points")
    return _png(fig)


def _levels(values: list[Any]) -> list[Any]:
    """The distinct values in order (sorted when they are all numbers, else as first seen)."""
    seen = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in seen):
        return sorted(seen)
    return seen


def _numeric(levels: list[Any]) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in levels)


def _means(df: Any, by: list[str], name: str) -> dict[tuple[Any, ...], float]:
    out: dict[tuple[Any, ...], float] = {}
    groups: dict[tuple[Any, ...], list[float]] = {}
    for key, v in zip(zip(*(df[p].tolist() for p in by)), df[name].to_numpy(dtype=float)):
        if np.isfinite(v):
            groups.setdefault(key, []).append(float(v))
    for key, vs in groups.items():
        out[key] = float(np.mean(vs))
    return out


def _line(ax: Any, df: Any, x: str, name: str, label: str | None = None, dots: bool = True) -> None:
    levels = _levels(df[x].tolist())
    means = _means(df, [x], name)
    numeric = _numeric(levels)
    xs = levels if numeric else list(range(len(levels)))
    ys = [means.get((v,), np.nan) for v in levels]
    (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=label)
    if dots:
        px = df[x].tolist() if numeric else [levels.index(v) for v in df[x].tolist()]
        ax.plot(px, df[name].to_numpy(dtype=float), linestyle="none", marker=".", alpha=0.35,
                color=line.get_color())
    if not numeric:
        ax.set_xticks(xs, [str(v) for v in levels], rotation=45, ha="right")


def resultPlot(df: Any, name: str, swept: list[str]) -> tuple[bytes, str]:
    """The figure of result ``name`` against ``swept`` (successful rows of ``df``), and a caption."""
    figure_class, _ = requireMatplotlib()
    if not swept:
        fig = figure_class(figsize=(4, 2.6))
        ax = fig.add_subplot()
        ax.hist(df[name].to_numpy(dtype=float), bins=20, color="#55a868")
        ax.set_xlabel(name)
        ax.set_ylabel("runs")
        return _png(fig), f"{name} over {len(df)} run(s) (no parameter is swept)"
    if len(swept) == 1:
        fig = figure_class(figsize=(5, 3))
        ax = fig.add_subplot()
        _line(ax, df, swept[0], name)
        ax.set_xlabel(swept[0])
        ax.set_ylabel(name)
        return _png(fig), f"{name} against {swept[0]} (line: mean over runs; dots: each run)"
    if len(swept) == 2:
        x, y = swept
        xl, yl = _levels(df[x].tolist()), _levels(df[y].tolist())
        means = _means(df, [y, x], name)
        grid = np.array([[means.get((b, a), np.nan) for a in xl] for b in yl], dtype=float)
        fig = figure_class(figsize=(5.5, 3.8))
        ax = fig.add_subplot()
        image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", origin="lower", cmap="viridis")
        ax.set_xticks(range(len(xl)), [_short(v) for v in xl], rotation=45, ha="right")
        ax.set_yticks(range(len(yl)), [_short(v) for v in yl])
        _thin_ticks(ax, len(xl), len(yl))
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        fig.colorbar(image, ax=ax, label=name)
        return _png(fig), f"{name} (mean per cell) over {x} and {y}; blank cells have no successful run"
    x, hue, rest = swept[0], swept[1], swept[2:]
    panels = list(dict.fromkeys(zip(*(df[p].tolist() for p in rest))))
    shown = panels[:MAX_PANELS]
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = figure_class(figsize=(3.4 * cols, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    hues = _levels(df[hue].tolist())
    for k, key in enumerate(shown):
        ax = axes[k // cols][k % cols]
        sub = df[np.logical_and.reduce([df[p] == v for p, v in zip(rest, key)])]
        for h in hues[:8]:
            part = sub[sub[hue] == h]
            if len(part):
                _line(ax, part, x, name, label=f"{hue}={_short(h)}", dots=False)
        ax.set_title(", ".join(f"{p}={_short(v)}" for p, v in zip(rest, key)), fontsize=8)
        ax.set_xlabel(x)
        ax.set_ylabel(name)
    for k in range(len(shown), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    axes[0][0].legend(fontsize=7)
    caption = f"{name} against {x}, one line per {hue}, one panel per {', '.join(rest)} (means over runs)"
    if len(hues) > 8:
        caption += f"; the first 8 of {len(hues)} values of {hue}"
    if len(panels) > len(shown):
        caption += f"; the first {len(shown)} of {len(panels)} panels"
    return _png(fig), caption


def _short(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    text = str(v)
    return text if len(text) <= 12 else text[:11] + "…"


def _thin_ticks(ax: Any, nx: int, ny: int) -> None:
    """Keep at most about 15 tick labels per axis, so long sweeps stay legible."""
    for n, axis in ((nx, ax.xaxis), (ny, ax.yaxis)):
        if n > 15:
            step = math.ceil(n / 15)
            for i, label in enumerate(axis.get_ticklabels()):
                label.set_visible(i % step == 0)
