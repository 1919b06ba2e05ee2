"""Code travels as code: a worker that cannot import the user's module gets its source and imports that.

The user's helper module (beside the script) holds a ctypes handle made at
import, which cannot be pickled. A real second process that has no access to
the script's directory loads the experiment: the helper arrives as source and
runs there, so the handle is made on that side; nothing of the module's state
was pickled.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HELPER = """
import ctypes

_libc = ctypes.CDLL(None)  # a handle made at import: ctypes objects holding pointers do not pickle
IMPORTED_HERE = True


def work(n):
    return _libc.abs(-n)
"""

MODEL = """
import helper
from epyclab import Experiment


class Model(Experiment):
    def do(self, params):
        return {"y": helper.work(params["x"]), "helper_from": helper.__file__}
"""

PACK = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import model
from epyclab.labs.engine.packaging import dumps
Path(sys.argv[2]).write_bytes(dumps(model.Model()))
"""

UNPACK = """
import json, sys
from pathlib import Path
from epyclab.labs.engine.packaging import loads
assert not any("project" in p for p in sys.path)
e = loads(Path(sys.argv[1]).read_bytes())
rc = e.set({"x": 7}).run()
import helper
print(json.dumps({"results": rc["results"], "handle": type(helper._libc).__name__, "here": helper.IMPORTED_HERE}))
"""


def test_a_helper_holding_a_ctypes_handle_travels_as_source_and_is_imported_on_the_worker(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "helper.py").write_text(textwrap.dedent(HELPER))
    (project / "model.py").write_text(textwrap.dedent(MODEL))
    blob = tmp_path / "blob"
    subprocess.run([sys.executable, "-c", PACK, str(project), str(blob)], check=True, cwd=tmp_path, timeout=120)
    # The worker's side: another process, elsewhere, that cannot import the project's files.
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", UNPACK, str(blob)], cwd=elsewhere, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["results"]["y"] == 7
    assert got["results"]["helper_from"] == str(project / "helper.py")  # its source, run under its own name
    assert got["handle"] == "CDLL" and got["here"] is True
