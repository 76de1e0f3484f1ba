"""Every Python block of the README runs as written, top to bottom in one namespace (as a reader pasting
them into one notebook would), in an empty directory; top-level ``await`` is allowed, as in a notebook.

The README's shell blocks (``make ...``, ``streamlstm replay/serve``) are covered by the CLI tests, and a
block that starts with ``# tf.keras`` is other software's code, shown for comparison.
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_OTHER_SOFTWARE = "# tf.keras"


def python_blocks(text: str) -> list[str]:
    return [block for block in _BLOCK.findall(text) if not block.startswith(_OTHER_SOFTWARE)]


def run_block(source: str, namespace: dict, name: str) -> None:
    code = compile(source, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, namespace)   # noqa: S307 - the README's own code; a coroutine when it awaits
    if asyncio.iscoroutine(result):
        asyncio.run(result)


def test_the_readme_has_python_blocks() -> None:
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 6
    assert any("StreamRuntime(" in block and "pa.record_batch(" in block for block in blocks)


def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("ipywidgets")
    pytest.importorskip("h5py")
    ray = pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    if ray.is_initialized():
        ray.shutdown()   # the README's ray.init() starts its own local instance, as for a new reader
    namespace: dict = {"__name__": "readme"}
    try:
        for index, block in enumerate(python_blocks(README.read_text())):
            try:
                run_block(block, namespace, f"README.md python block {index}")
            except Exception as exc:
                raise AssertionError(f"README python block {index} fails:\n{block}") from exc
    finally:
        ray.shutdown()
    # The blocks did what they say (not only ran): a few of their results.
    assert namespace["out"] is not None and namespace["y"].shape == (2, 4)
    assert namespace["rt"].state("sensor-17")[0][0].shape == (32,)
    assert (tmp_path / "copy.keras").exists() and (tmp_path / "state.arrow").exists()
