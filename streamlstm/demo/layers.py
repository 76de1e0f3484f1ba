"""``streamlstm demo``, part one: a short showcase of the layers, with shapes and timings."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from streamlstm.layers import LSTM, RNN, LSTMCell, force_generic


def _timed(fn: Callable[[], object], repeats: int = 20) -> tuple[object, float]:
    """The result of ``fn()`` and its median time in ms (inference: no autograd graph)."""
    with torch.no_grad():
        result = fn()
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return result, sorted(samples)[len(samples) // 2] * 1e3


def _shapes(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    return "[" + ", ".join(_shapes(v) for v in value) + "]"


def run_layers_demo(print_fn: Callable[[str], None] = print) -> None:
    """The Keras documentation examples, run on PyTorch, then masks and the fused path."""
    torch.manual_seed(0)
    inputs = torch.randn(32, 10, 8)
    print_fn("streamlstm layers: tf.keras semantics on PyTorch\n")

    cell = LSTMCell(4)

    def cell_loop():
        state = cell.get_initial_state(batch_size=32)
        for t in range(inputs.shape[1]):
            output, state = cell(inputs[:, t], state)
        return output

    rows = [("LSTMCell(4), one step at a time", *_timed(cell_loop))]
    rows.append(("RNN(LSTMCell(4))", *_timed(lambda: RNN(cell)(inputs))))
    rnn = RNN(cell, return_sequences=True, return_state=True)
    rows.append(("RNN(LSTMCell(4), return_sequences, return_state)", *_timed(lambda: rnn(inputs))))
    lstm = LSTM(4)
    lstm.build((None, None, 8))
    mask = torch.rand(32, 10) > 0.2
    rows.append(("LSTM(4)", *_timed(lambda: lstm(inputs))))
    rows.append(("LSTM(4) with a 20%-holes mask (fused path)", *_timed(lambda: lstm(inputs, mask=mask))))
    width = max(len(name) for name, _, _ in rows)
    shape_width = max(len(_shapes(result)) for _, result, _ in rows)
    print_fn(f"{'call':<{width}}  {'output shapes':<{shape_width}}  ms/call")
    for name, result, ms in rows:
        print_fn(f"{name:<{width}}  {_shapes(result):<{shape_width}}  {ms:7.3f}")
    with torch.no_grad():
        fused = lstm(inputs, mask=mask)
        with force_generic():
            generic = lstm(inputs, mask=mask)
    print_fn(f"\nfused vs generic loop, max |difference|: {float((fused - generic).abs().max()):.2e}")
