"""Keras-exact recurrent layers as torch Modules, and the registries they resolve names through."""

from __future__ import annotations

from streamlstm.layers import activations, constraints, initializers, regularizers
from streamlstm.layers.base import Layer, apply_constraints, constrain_after_step
from streamlstm.layers.fused import fused_lstm
from streamlstm.layers.lstm import LSTM, force_generic
from streamlstm.layers.lstm_cell import LSTMCell
from streamlstm.layers.rnn import RNN
from streamlstm.layers.serialization import deserialize, serialize
from streamlstm.layers.stacked_rnn_cells import StackedRNNCells

__all__ = [
    "LSTM",
    "LSTMCell",
    "Layer",
    "RNN",
    "StackedRNNCells",
    "activations",
    "apply_constraints",
    "constrain_after_step",
    "constraints",
    "deserialize",
    "force_generic",
    "fused_lstm",
    "initializers",
    "regularizers",
    "serialize",
]
