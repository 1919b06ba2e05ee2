"""Reading JSON notebooks written by epyc 1.x.

epyc's layout: ``{"creator": ..., "version": ..., "description": ...,
"current": <tag>, "locked": bool, "resultsets": {<tag>: {"description": ...,
"locked": bool, "results": [<results dict>, ...], "pending-results": {<jobid>:
<parameters>}, <attribute>: <value>, ...}}}``: results dicts as epyc's
``Experiment.run`` made them, with datetimes as ISO text and exceptions as
text. There is no ``"format"`` key (epyclab's own files have one).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from epyclab.errors import NotebookFormatError
from epyclab.experiment import Experiment
from epyclab.notebooks.stored import StoredNotebook, StoredResults

__all__ = ["VERSION", "is_epyc_json", "read_epyc_json"]

#: The version epyclab records for a notebook read from an epyc JSON file (converted on the first write).
VERSION = "epyc-json"

_TIME_KEYS = {k for k, t in Experiment.StandardMetadataTypes.items() if t is datetime}
_SET_KEYS = {"description", "locked", "results", "pending-results", "types", "pending-types"}


def is_epyc_json(doc: Any) -> bool:
    """True if ``doc`` (a parsed JSON file) looks like an epyc 1.x notebook."""
    return (
        isinstance(doc, dict)
        and "format" not in doc
        and isinstance(doc.get("resultsets"), dict)
        and "current" in doc
    )


def read_epyc_json(doc: dict[str, Any], path: str) -> StoredNotebook:
    """The notebook an epyc 1.x JSON document holds.

    Raises:
        NotebookFormatError: a result set or results dict is not as epyc writes them.
    """
    sets = []
    for tag, s in doc["resultsets"].items():
        if not isinstance(s, dict) or not isinstance(s.get("results", []), list):
            raise NotebookFormatError(f"{path}: result set {tag!r} is not as epyc writes one")
        sets.append(
            StoredResults(
                tag=tag,
                description=str(s.get("description", "")),
                locked=bool(s.get("locked", False)),
                attributes={k: v for k, v in s.items() if k not in _SET_KEYS},
                results=[_results_dict(rc, tag, path) for rc in s.get("results", [])],
                pending=dict(s.get("pending-results", {})),
            )
        )
    return StoredNotebook(
        version=VERSION,
        description=str(doc.get("description", "")),
        locked=bool(doc.get("locked", False)),
        current=doc.get("current"),
        resultsets=sets,
    )


def _results_dict(rc: Any, tag: str, path: str) -> dict[str, Any]:
    if not isinstance(rc, dict) or not isinstance(rc.get(Experiment.PARAMETERS), dict):
        raise NotebookFormatError(f"{path}: a result in result set {tag!r} is not a results dict")
    meta = dict(rc.get(Experiment.METADATA, {}))
    for k in _TIME_KEYS & meta.keys():
        if isinstance(meta[k], str):
            meta[k] = datetime.fromisoformat(meta[k]) if meta[k] else None
    results = rc.get(Experiment.RESULTS) or {}
    return {Experiment.PARAMETERS: rc[Experiment.PARAMETERS], Experiment.METADATA: meta, Experiment.RESULTS: results}
