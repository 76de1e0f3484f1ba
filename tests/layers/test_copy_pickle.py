"""Layers can be deep-copied and pickled (``torch.save(model)``); a copy runs on its own weights."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from layer_helpers import assert_all_close, flatten, random_weights

import streamlstm as sl

FACTORIES = {
    "LSTM": lambda: sl.LSTM(3, return_state=True),
    "LSTM seeded dropout": lambda: sl.LSTM(3, dropout=0.3, recurrent_dropout=0.2, seed=4),
    "RNN(LSTMCell)": lambda: sl.RNN(sl.LSTMCell(3), return_sequences=True),
    "RNN(stacked)": lambda: sl.RNN([sl.LSTMCell(3), sl.LSTMCell(2, activation="relu")], return_state=True),
    "stateful LSTM": lambda: sl.LSTM(3, stateful=True),
}


def built(name: str):
    layer = FACTORIES[name]()
    layer.build((2, None, 2))
    random_weights(layer)
    return layer


@pytest.mark.parametrize("name", FACTORIES)
def test_deepcopy_runs_on_its_own_weights(name) -> None:
    layer = built(name)
    x = torch.randn(2, 4, 2)
    expected = layer(x, training=False)
    if layer.stateful:
        layer.reset_states()
    clone = copy.deepcopy(layer)
    assert_all_close(clone(x, training=False), expected)
    if clone.stateful:
        clone.reset_states()
    with torch.no_grad():
        for param in clone.parameters():
            param.zero_()
    assert not torch.allclose(flatten(clone(x, training=False))[0],
                              flatten(expected)[0])
    if layer.stateful:
        layer.reset_states()
    assert_all_close(layer(x, training=False), expected)  # the original is untouched


@pytest.mark.parametrize("name", FACTORIES)
def test_pickle_and_torch_save_round_trip(name) -> None:
    layer = built(name)
    x = torch.randn(2, 4, 2)
    layer(x, training=True)  # creates the seeded generators and, when stateful, the carries
    for round_trip in (lambda obj: pickle.loads(pickle.dumps(obj)), _torch_round_trip):
        restored = round_trip(layer)
        if layer.stateful:
            assert_all_close(restored.states, layer.states)
        assert_all_close(restored(x, training=False), layer(x, training=False))


def _torch_round_trip(layer):
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)
