"""Every notebook under ``notebooks/`` runs top to bottom in a real kernel, well under two minutes.

The kernel is this interpreter: jupyter_client starts the ``python3`` kernel spec with
``sys.executable``, so the notebooks see the streamlstm under test.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[browser]' (nbclient runs the notebooks)")
nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[browser]'")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
LIMIT_SECONDS = 120


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_notebooks_are_what_the_build_script_writes(capsys):
    assert _builder().main(["--check"]) == 0, capsys.readouterr().out


def test_every_notebook_is_built_and_none_has_outputs():
    names = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(_builder().NOTEBOOKS), "notebooks/ and build_notebooks.py disagree"
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells), f"{name} is committed with outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_builder().NOTEBOOKS))
def test_notebook_runs_in_a_kernel(name, tmp_path):
    """... and leaves nothing behind in the temporary directory (the kernel's TMPDIR is a fresh one)."""
    path = NOTEBOOKS / name
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=LIMIT_SECONDS, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.monotonic()
    try:
        client.execute(env={**os.environ, "TMPDIR": str(tmp_path)})
    except Exception as exc:  # noqa: BLE001 - CellExecutionError, CellTimeoutError, DeadKernelError
        pytest.fail(f"notebook {path} failed: {type(exc).__name__}: {exc}", pytrace=False)
    seconds = time.monotonic() - started
    assert seconds < LIMIT_SECONDS, f"notebook {path} took {seconds:.0f} s (limit {LIMIT_SECONDS} s)"
    last = next(cell for cell in reversed(notebook.cells) if cell.cell_type == "code")
    kinds = {key for output in last.outputs for key in output.get("data", {})}
    assert kinds & {"image/png", "text/html"}, f"the last cell of {path} shows nothing worth looking at: {kinds}"
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"notebook {path}: {errors[0]}"
    left = sorted(entry.name for entry in tmp_path.iterdir() if entry.name.startswith("streamlstm"))
    assert not left, f"notebook {path} left {left} in the temporary directory"
