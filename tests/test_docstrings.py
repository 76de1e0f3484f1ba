"""Every docstring example in the package runs, and the public layers keep one.

Run here rather than by ``--doctest-modules``, which would also import each ``tests/*/conftest.py`` as a
module named ``conftest`` and trip over their shared basename.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamlstm

# streamlstm.__main__ runs the command line when imported.
MODULES = [info.name for info in pkgutil.walk_packages(streamlstm.__path__, "streamlstm.")
           if info.name != "streamlstm.__main__"]


def test_the_package_has_examples() -> None:
    attempted = sum(doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False,
                                    report=False).attempted for name in MODULES)
    assert attempted >= 10


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see above)"


@pytest.mark.parametrize("cls", [streamlstm.LSTM, streamlstm.LSTMCell, streamlstm.StackedRNNCells])
def test_public_layers_have_an_example(cls: type) -> None:
    assert "Example:" in cls.__doc__ and ">>>" in cls.__doc__
