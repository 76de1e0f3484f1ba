"""No import cycles.

- Every module imports when it is the first streamlstm module a fresh process imports (a cycle between
  module-level imports fails for some entry point).
- The package's import graph has no cycle even counting imports inside functions: a cycle "broken" by
  a lazy import still fails here.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import streamlstm

PACKAGE = Path(streamlstm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
# streamlstm.__main__ runs the command line when imported.
MODULES = [name for name in FILES if name != "streamlstm.__main__"]

# Imports each module named on the command line first, in a child forked from a process that imported
# them all once and then forgot every streamlstm module: the children share the third-party imports (most
# of the time) and each starts without streamlstm.
_IMPORT_EACH_FIRST = r"""
import importlib, os, subprocess, sys, threading, traceback

for name in sys.argv[1:]:
    importlib.import_module(name)
for name in [name for name in sys.modules if name == "streamlstm" or name.startswith("streamlstm.")]:
    del sys.modules[name]
assert threading.active_count() == 1, "importing streamlstm must not start threads"

failures = []
for name in sys.argv[1:]:
    if not hasattr(os, "fork"):
        done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
        if done.returncode:
            failures.append(f"{name}:\n{done.stderr}")
        continue
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    if os.waitpid(pid, 0)[1]:
        failures.append(f"{name}:\n{message}")
print("\n".join(failures))
sys.exit(1 if failures else 0)
"""


@pytest.mark.slow
def test_every_module_imports_first_in_a_fresh_process() -> None:
    assert "streamlstm.layers.rnn" in MODULES and "streamlstm.demo.plot" in MODULES
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE.parent),
                                                                   os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _IMPORT_EACH_FIRST, *MODULES], capture_output=True, text=True,
                            timeout=600, env=env, cwd=PACKAGE.parent)
    assert result.returncode == 0, f"modules that fail when imported first:\n{result.stdout}{result.stderr}"


def _imported_modules(name: str) -> set[str]:
    """The streamlstm modules ``name`` imports, at module level or inside functions."""
    is_package = FILES[name].name == "__init__.py"
    imported = set()
    for node in ast.walk(ast.parse(FILES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".")[:len(name.split(".")) - node.level + is_package]
                base = ".".join(package + ([base] if base else []))
            # ``from package import name`` imports the submodule where ``name`` is one, else the package.
            imported.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in FILES else base
                            for alias in node.names)
    return {module for module in imported if module in FILES and module != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    # Python runs a package's __init__ before its modules: that implicit import is no edge; a module naming
    # its package (``from streamlstm.layers import LSTM`` in streamlstm.layers.x) is one, and a cycle.
    graph = {name: _imported_modules(name) for name in FILES}
    assert {"streamlstm.layers.serialization", "streamlstm.layers.stacked_rnn_cells"} <= graph["streamlstm.layers.rnn"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
