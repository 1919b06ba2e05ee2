"""``epyclab report``: one self-contained HTML page to look at a notebook instead of reading tables.

For each result set the page shows how far it is (points done, failed,
pending), how long points take (a histogram), which exceptions failed how many
points (with an example traceback), the provenance and attributes recorded with
it, and plots of each numeric result against the swept parameters: lines for
one parameter, a heat map for two, small multiples beyond.

The page needs no network: styles are inline, and plots are PNG images drawn by
matplotlib (an optional extra, the ``report`` extra) and embedded
as base64. Rooms: :mod:`~epyclab.report.facts` (what is counted, from the
result set), :mod:`~epyclab.report.plots` (the figures),
:mod:`~epyclab.report.page` (the HTML).
"""

from __future__ import annotations

from epyclab.report.page import renderNotebook

__all__ = ["renderNotebook"]
