"""`epyclab copy` only reads its sources: a source another writer has open copies all the same, unchanged."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from click.testing import CliRunner

from epyclab import HDF5LabNotebook
from epyclab.cli import main
from epyclab.experiment import Experiment


def test_a_source_open_for_writing_is_copied_and_left_as_it_was(tmp_path: Path) -> None:
    src, dest = tmp_path / "src.h5", tmp_path / "dest.h5"
    now = datetime(2026, 11, 30, 1, 13)
    writer = HDF5LabNotebook(str(src), create=True)
    try:
        writer.addResultSet("a")
        for x in range(3):
            meta = {Experiment.STATUS: True, Experiment.START_TIME: now, Experiment.END_TIME: now,
                    Experiment.ELAPSED_TIME: 0.0, Experiment.EXCEPTION: None, Experiment.TRACEBACK: ""}
            writer.addResult({Experiment.PARAMETERS: {"x": x}, Experiment.METADATA: meta,
                              Experiment.RESULTS: {"y": x * x}})  # fmt: skip
        writer.commit()
        before = hashlib.sha256(src.read_bytes()).hexdigest()
        done = CliRunner().invoke(main, ["copy", f"{src}:a", str(dest)])
        assert done.exit_code == 0, done.output
        assert done.output == f"copied {src}:a -> {dest} (3 row(s), 0 pending)\n"
        assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    finally:
        writer.close()
    with HDF5LabNotebook(str(dest), readonly=True) as copied:
        assert sorted(copied.dataframe("a")["y"]) == [0, 1, 4]
