"""The docstring examples of the layers package run (also collected by ``--doctest-modules``), and the
public classes keep one."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamlstm.layers

MODULES = [info.name for info in pkgutil.iter_modules(streamlstm.layers.__path__, "streamlstm.layers.")]


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


@pytest.mark.parametrize("cls", [streamlstm.LSTM, streamlstm.LSTMCell, streamlstm.StackedRNNCells])
def test_public_layers_have_an_example(cls: type) -> None:
    assert "Example:" in cls.__doc__ and ">>>" in cls.__doc__
