"""The report's HTML: one page, every text escaped, styles inline, images as base64 PNG (no network)."""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime
from typing import Any

import numpy as np

from epyclab.report.facts import Facts, factsOf
from epyclab.report.plots import histogram, requireMatplotlib, resultPlot

__all__ = ["renderNotebook", "MAX_RESULT_PLOTS"]

#: Result plots per result set at most (the rest are named).
MAX_RESULT_PLOTS = 24

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-top: 1em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 0.2em 0.6em;
text-align: left; vertical-align: top; }
.counts td { font-size: 1.2em; text-align: right; } .ok { color: #2a7d2a; } .failed { color: #b22; }
.pending { color: #a67c00; } pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; max-height: 20em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; } figcaption { font-size: 0.85em; color: #555;
max-width: 36em; } .note { color: #666; font-size: 0.9em; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(rows: list[tuple[Any, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _section(f: Facts, current: bool) -> str:
    out = [f'<h2 id="{_e(f.tag)}">{_e(f.tag)}{" (current)" if current else ""}{" (locked)" if f.locked else ""}</h2>',
           f"<p>{_e(f.description)}</p>"]
    total = f.done + f.failed + f.pending
    out.append('<table class="counts"><tr><th>done</th><th>failed</th><th>pending</th><th>total</th></tr>'
               f'<tr><td class="ok">{f.done}</td><td class="failed">{f.failed}</td>'
               f'<td class="pending">{f.pending}</td><td>{total}</td></tr></table>')
    if f.replaced:
        out.append(f'<p class="note">{f.replaced} earlier row(s) were replaced by reruns of failed points: kept '
                   f"in the file, and in each new row's epyclab.rerun.history</p>")
    if f.parameters:
        out.append(f"<p>parameters: {_e(', '.join(f.parameters))}; swept: {_e(', '.join(f.swept) or 'none')}; "
                   f"results: {_e(', '.join(f.results) or 'none')}</p>")
    if len(f.times):
        t = f.times
        out.append("<h3>Time per point</h3>")
        out.append(f'<p class="note">{len(t)} run(s): median {_seconds(float(np.nanmedian(t)))}, '
                   f"longest {_seconds(float(np.nanmax(t)))}, total {_seconds(float(np.nansum(t)))}</p>")
        out.append(f"<figure>{_img(histogram(t), 'histogram of time per point')}</figure>")
    if f.failures:
        out.append("<h3>Failures</h3>")
        for fail in f.failures:
            out.append(f"<h4>{_e(fail.name)}: {fail.count} point(s)</h4>")
            out.append(f"<p>example: <code>{_e(fail.example)}</code></p>")
            if fail.points:
                more = f" (first {len(fail.points)})" if fail.count > len(fail.points) else ""
                out.append(f"<p>points{more}: " + "; ".join(
                    _e(json.dumps(p, default=str)) for p in fail.points) + "</p>")
            if fail.traceback:
                out.append(f"<pre>{_e(fail.traceback)}</pre>")
    if f.numeric and len(f.frame):
        out.append("<h3>Results</h3>")
        for name in f.numeric[:MAX_RESULT_PLOTS]:
            png, caption = resultPlot(f.frame, name, f.swept)
            out.append(f"<figure>{_img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>")
        if len(f.numeric) > MAX_RESULT_PLOTS:
            out.append(f'<p class="note">not plotted: {_e(", ".join(f.numeric[MAX_RESULT_PLOTS:]))}</p>')
    elif f.results:
        out.append('<p class="note">no numeric result with a successful run to plot</p>')
    if f.provenance:
        out.append("<h3>Provenance</h3>" + _table(sorted(f.provenance.items())))
    if f.attributes:
        out.append("<h3>Attributes</h3>" + _table(sorted(f.attributes.items())))
    return "\n".join(out)


def _seconds(s: float) -> str:
    if s != s:
        return "-"
    if s < 1:
        return f"{s * 1000:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def renderNotebook(nb: Any, source: str) -> str:
    """The report of notebook ``nb`` (read from ``source``, named in the title) as one HTML page.

    Raises:
        OptionalDependencyError: matplotlib is not installed.
    """
    requireMatplotlib()
    tags = list(nb.resultSets())
    sections = [_section(factsOf(tag, nb.resultSet(tag)), tag == nb.currentTag()) for tag in tags]
    contents = "".join(f'<li><a href="#{_e(t)}">{_e(t)}</a></li>' for t in tags)
    when = datetime.now().isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>epyclab report: {_e(source)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{_e(source)}</h1><p>{_e(nb.description())}</p>"
        f'<p class="note">{len(tags)} result set(s); report made {_e(when)}</p><ul>{contents}</ul>\n'
        + "\n".join(sections) + "\n</body></html>\n"
    )
