"""The output streams of the local cluster's engines: what is written to their file descriptors stays there.

ipykernel's ``OutStream`` (an engine's ``sys.stdout`` and ``sys.stderr``)
normally also redirects file descriptors 1 and 2 into a pipe that a thread
reads and forwards. A write below Python (a C library's message, a crash
report) then sits in that pipe until the thread runs; an engine that dies at
once (``os._exit``, a segfault) takes it along. The local cluster gives its
engines this stream instead (``--IPEngine.out_stream_factory``): the
descriptors stay the engine's output file, so such words reach it at once and
are kept in the clusters' log (see :func:`epyclab.labs.transports.localclusterlog.keep_outputs`).
What ``do()`` prints through Python is captured per run either way.

Imported by the engines only.
"""

from __future__ import annotations

from typing import Any

from ipykernel.iostream import OutStream

__all__ = ["UnwatchedOutStream"]


class UnwatchedOutStream(OutStream):
    """ipykernel's ``OutStream`` without the redirection of the file descriptor beneath it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["watchfd"] = False
        super().__init__(*args, **kwargs)
