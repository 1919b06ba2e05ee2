"""A script's experiment that uses a module global which cannot travel: the error names the global.

Found by a new user: a script that loads a shared library with ctypes at module
level and calls it in ``do()`` got "No single attribute is at fault" (the
library's function pointers cannot be pickled), or, on clean workers, an
unreadable "type object 'PyCFuncPtrType' has no attribute '__mul__'" about
installed packages (a CDLL pickles but cannot be rebuilt). Either way the
message must name the global and the function that reads it, and say where to
create it instead.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading
import types
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epyclab.errors import ExperimentSerializationError
from epyclab.labs.engine.wire import serialize_experiment, unloadable

# Values a script might hold at module level that cannot be pickled at all.
UNPICKLABLE = {
    "ctypes pointer": lambda: ctypes.pointer(ctypes.c_int(3)),
    "lock": threading.Lock,
}

names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: n not in {"self", "p", "helper0", "helper1", "helper2", "helper3", "Experiment", "E"}
    and not n.startswith("helper") and n not in __builtins__  # type: ignore[operator]
)


def _module(name: str, depth: int, value: object, register: bool) -> types.ModuleType:
    """A module, as a script is, whose experiment reads global ``name`` through ``depth`` helper functions."""
    lines = ["from epyclab import Experiment"]
    lines.append(f"def helper0():\n    return {name}")
    for i in range(1, depth + 1):
        lines.append(f"def helper{i}():\n    return helper{i - 1}()")
    lines.append(f"class E(Experiment):\n    def do(self, p):\n        return {{'y': str(helper{depth}())}}")
    module = types.ModuleType(f"script_{uuid.uuid4().hex}")
    module.__dict__[name] = value
    exec("\n".join(lines), module.__dict__)  # the test's own generated code
    if register:
        sys.modules[module.__name__] = module
    return module


@settings(max_examples=30, deadline=None)
@given(name=names, depth=st.integers(0, 3), kind=st.sampled_from(sorted(UNPICKLABLE)), attrs=st.booleans())
def test_a_global_that_cannot_be_pickled_is_named(name: str, depth: int, kind: str, attrs: bool) -> None:
    # Not in sys.modules: cloudpickle packs the class by value, with the globals its code reads, as for __main__.
    module = _module(name, depth, UNPICKLABLE[kind](), register=False)
    e = module.E()
    if attrs:
        e.label = "fine"  # a picklable attribute must not be blamed
    with pytest.raises(ExperimentSerializationError) as info:
        serialize_experiment(e)
    message = str(info.value)
    assert f"global {name} ({type(module.__dict__[name]).__name__}), used by " in message
    assert "helper0" in message and "setUp()" in message
    assert "No single attribute" not in message


@settings(max_examples=20, deadline=None)
@given(name=names, depth=st.integers(0, 3))
def test_a_global_that_cannot_be_rebuilt_is_named_when_the_engine_fails(name: str, depth: int) -> None:
    module = _module(name, depth, ctypes.CDLL(None), register=True)  # a CDLL pickles, but cannot be unpickled
    try:
        error = unloadable(f"{module.__name__}.E", 3, "AttributeError: whatever the engine said")
    finally:
        del sys.modules[module.__name__]
    message = str(error)
    assert "could not be loaded on engine 3: AttributeError: whatever the engine said" in message
    assert f"global {name} (CDLL), used by E." in message and "helper0" in message
    assert "setUp()" in message


def test_an_unknown_class_keeps_the_installed_packages_advice() -> None:
    message = str(unloadable("no_such_module_here.E", 0, "ModuleNotFoundError: No module named 'x'"))
    assert "must be installed on the engines" in message and "global" not in message


SCRIPT = """
import ctypes
from epyclab import Experiment, ParallelLab
lib = ctypes.CDLL(None)
{setup}
def pid():
    return lib.getpid()
class E(Experiment):
    def do(self, p):
        return {{"pid": pid()}}
lab = ParallelLab(cores=2, backend="workers")
lab["x"] = range(4)
try:
    lab.runExperiment(E(), progress=False)
finally:
    lab.shutdown()
"""


@pytest.mark.parametrize("setup", ["", "lib.getpid.restype = ctypes.c_int"], ids=["rebuilt", "pickled"])
def test_a_script_with_a_ctypes_library_is_told_which_global(tmp_path, setup: str) -> None:
    """The user's script, run as a script on clean workers: a CDLL global fails unpacking or packing."""
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT.format(setup=setup))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("epyclab.errors.ExperimentSerializationError"), done.stderr
    assert "global lib (CDLL), used by " in last and "pid" in last, last
