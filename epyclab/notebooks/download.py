"""Notebooks named by an http(s) URL: downloaded to a temporary file, opened read-only (as epyc does).

A notebook shared on the web (a data repository, a group's server) is read
with ``HDF5LabNotebook("https://.../results.h5")``. The file is downloaded
into a temporary directory of its own (the notebook keeps side files such as
locks beside its file) and removed when the notebook object goes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from epyclab.errors import NotebookIOError

__all__ = ["is_url", "download", "DownloadTimeout"]

logger = logging.getLogger("epyclab.notebooks")

#: Seconds a download may wait for the server (to connect, or between two reads).
DownloadTimeout = 60.0

# Read in blocks: a notebook may be larger than memory allows to hold twice.
_BLOCK = 1 << 20


def is_url(name: object) -> bool:
    """True if ``name`` is an http or https URL (a string naming no local file)."""
    return isinstance(name, str) and name.split(":", 1)[0].lower() in ("http", "https") and "://" in name


def download(url: str) -> tuple[str, str]:
    """Download ``url`` into a new temporary directory; return ``(file path, directory)``.

    The caller removes the directory when done with the file.

    Raises:
        NotebookIOError: the server could not be reached, refused the request or sent
            an incomplete file; nothing is left on disk.
    """
    # Here, not at the top: urllib.request costs every notebook import a few milliseconds.
    import http.client
    import urllib.error
    import urllib.request

    name = os.path.basename(urllib.parse.urlsplit(url).path) or "notebook.h5"
    directory = tempfile.mkdtemp(prefix="epyclab-download-")
    path = os.path.join(directory, name)
    try:
        with urllib.request.urlopen(url, timeout=DownloadTimeout) as response, open(path, "wb") as out:
            expected = response.headers.get("Content-Length")
            shutil.copyfileobj(response, out, _BLOCK)
            got = out.tell()
        if expected is not None and expected.isdigit() and int(expected) != got:
            raise NotebookIOError(
                f"downloading notebook {url} stopped after {got} of {expected} bytes; try again, or "
                f"download the file yourself and open it by its path"
            )
    except urllib.error.HTTPError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise NotebookIOError(
            f"cannot download notebook {url}: the server answered {exc.code} {exc.reason}; check the URL"
        ) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, NotebookIOError):
            raise
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise NotebookIOError(
            f"cannot download notebook {url}: {why}; check the URL and the network, or download the "
            f"file yourself and open it by its path"
        ) from None
    logger.info("notebook %s downloaded to %s (%d bytes), opened read-only", url, path, got)
    return path, directory
