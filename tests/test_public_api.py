"""The public surface is what ``streamlstm/__init__.py`` exports: sorted, importable, documented."""

from __future__ import annotations

import streamlstm as sl


def test_all_is_sorted_and_unique():
    assert list(sl.__all__) == sorted(set(sl.__all__))


def test_every_exported_name_exists_and_is_documented():
    for name in sl.__all__:
        obj = getattr(sl, name)
        if callable(obj) or isinstance(obj, type):
            assert (obj.__doc__ or "").strip(), f"streamlstm.{name} has no docstring"


def test_layers_are_torch_modules():
    import torch

    for cls in (sl.LSTM, sl.RNN, sl.LSTMCell, sl.StackedRNNCells):
        assert issubclass(cls, torch.nn.Module)


def test_every_public_error_is_importable_from_the_package():
    from streamlstm import errors

    for name in errors.__all__:
        assert getattr(sl, name) is getattr(errors, name)
        assert name in sl.__all__
