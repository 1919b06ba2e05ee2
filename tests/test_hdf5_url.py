"""An HDF5 notebook named by an http(s) URL is downloaded and opened read-only, as in epyc (issue 18.6).

Served by a real HTTP server on 127.0.0.1, started and stopped by each test.
"""

from __future__ import annotations

import gc
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from epyclab import Experiment, HDF5LabNotebook
from epyclab.errors import NotebookIOError, NotebookReadOnlyError


def rc(i: int) -> dict:
    return {Experiment.PARAMETERS: {"i": i}, Experiment.METADATA: {Experiment.STATUS: True},
            Experiment.RESULTS: {"y": i * 0.5}}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        pass


class _Truncating(_Quiet):
    """Promises more bytes than it sends, then closes: a download cut short."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"\x89HDF\r\n")
        self.close_connection = True


@contextmanager
def serving(directory: Path, handler: type = _Quiet) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free loopback port; yield the base URL; stop the server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_a_notebook_named_by_a_url_is_downloaded_and_read(tmp_path):
    nb = HDF5LabNotebook(tmp_path / "shared.h5", create=True, description="shared results")
    nb.addResultSet("first")
    nb.addResult([rc(1), rc(2)])
    nb.addResultSet("second")
    nb.addResult(rc(3))
    nb.finish()
    nb.close()
    with serving(tmp_path) as base:
        remote = HDF5LabNotebook(f"{base}/shared.h5")
        with remote.open() as opened:
            assert {"first", "second"} <= set(opened.resultSets()) and opened.currentTag() == "second"
            assert opened.isLocked() and opened.description() == "shared results"
            assert opened.dataframe("first")["y"].tolist() == [0.5, 1.0]
            assert opened.dataframe("second")["i"].tolist() == [3]
    downloaded = Path(remote.name())
    assert downloaded.exists() and downloaded.parent != tmp_path
    del remote, opened
    gc.collect()
    assert not downloaded.parent.exists()  # the temporary copy goes with the notebook object


def test_a_downloaded_notebook_refuses_changes(tmp_path):
    with HDF5LabNotebook(tmp_path / "shared.h5", create=True) as nb:
        nb.addResult(rc(1))
    with serving(tmp_path) as base:
        remote = HDF5LabNotebook(f"{base}/shared.h5")
    with pytest.raises(NotebookReadOnlyError):
        remote.addResult(rc(2))
    assert remote.numberOfResults() == 1
    assert HDF5LabNotebook(tmp_path / "shared.h5", readonly=True).numberOfResults() == 1


def test_a_missing_notebook_says_what_the_server_answered(tmp_path):
    with serving(tmp_path) as base:
        with pytest.raises(NotebookIOError, match=r"nothere\.h5.*404"):
            HDF5LabNotebook(f"{base}/nothere.h5")


def test_a_download_cut_short_is_refused_and_leaves_nothing(tmp_path):
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    with serving(tmp_path, _Truncating) as base:
        with pytest.raises(NotebookIOError, match="shared.h5"):
            HDF5LabNotebook(f"{base}/shared.h5")
    after = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    assert not {n for n in after - before if n.startswith("epyclab-download-")}


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    with serving(tmp_path) as base:
        pass  # the server is stopped: its port refuses connections
    with pytest.raises(NotebookIOError, match="cannot download notebook"):
        HDF5LabNotebook(f"{base}/shared.h5")


def test_creating_a_notebook_at_a_url_is_refused():
    with pytest.raises(NotebookReadOnlyError, match="only read"):
        HDF5LabNotebook("https://example.org/results.h5", create=True)
