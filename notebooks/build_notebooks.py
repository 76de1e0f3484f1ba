"""Write the example notebooks from the cell sources below, without outputs (so diffs stay readable).

Run ``.venv/bin/python notebooks/build_notebooks.py`` after editing a cell here; never edit the
``.ipynb`` files by hand. ``tests/notebook/test_notebooks.py`` executes every notebook in a real kernel
and checks that the committed files match this script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
Cell = tuple[str, str]   # ("md" | "code", source)


def md(text: str) -> Cell:
    return ("md", text.strip("\n"))


def code(text: str) -> Cell:
    return ("code", text.strip("\n"))


def scratch_setup(name: str, *extra_imports: str) -> Cell:
    """The first code cell of a notebook that writes files: imports, seeds, one torch thread, and a
    scratch directory ``streamlstm-<name>-...`` that the notebook's last cell removes."""
    imports = "\n".join(sorted(["import tempfile", *extra_imports]))
    return code(f"""
{imports}
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

import streamlstm as sl

torch.manual_seed(0)
torch.set_num_threads(1)   # small tensors: one thread is fastest, above all on a shared machine
rng = np.random.default_rng(0)
scratch = tempfile.TemporaryDirectory(prefix="streamlstm-{name}-")   # removed by the last cell (or at exit)
workdir = Path(scratch.name)
""")


LAYERS_QUICKSTART: list[Cell] = [
    md("""
# streamlstm layers: a quickstart

streamlstm's layers are PyTorch modules with the arguments, weights and numbers of `tf.keras.layers`:
`LSTMCell`, `RNN`, `StackedRNNCells` and `LSTM`. This notebook runs the examples of the Keras
documentation, then masks, `go_backwards` and `stateful`, and shows why the numbers are Keras' own.
"""),
    code("""
import numpy as np
import torch

import streamlstm as sl

torch.manual_seed(0)
np.random.seed(0)
"""),
    md("""
## One step at a time: the `LSTMCell` for-loop

A cell computes one time step: `output, states = cell(x_t, states)`, and its output *is* the new
`h`. Looping over time by hand is exactly what `RNN` does for you.
"""),
    code("""
inputs = np.random.random((32, 10, 8)).astype("float32")   # [batch, time, features]

cell = sl.LSTMCell(4)
states = cell.get_initial_state(batch_size=32)              # [h, c], zeros
for t in range(inputs.shape[1]):
    output, states = cell(torch.from_numpy(inputs[:, t]), states)
print(cell)
print("output:", tuple(output.shape), "| output is h:", output is states[0])
"""),
    md("""
## `RNN(LSTMCell(4))`, as in the Keras docs

The same cell wrapped in `RNN` gives the same numbers as the loop. With `return_sequences=True,
return_state=True` it returns every step's output and the final memory (`h`) and carry (`c`) states.
"""),
    code("""
rnn = sl.RNN(cell)                      # the very same cell, so the same weights
print(rnn)
print("equal to the loop:", torch.allclose(rnn(inputs), output, atol=1e-6))

rnn = sl.RNN(sl.LSTMCell(4), return_sequences=True, return_state=True)
whole_sequence_output, final_memory_state, final_carry_state = rnn(inputs)
print([tuple(t.shape) for t in (whole_sequence_output, final_memory_state, final_carry_state)])
"""),
    md("""
## `LSTM` with a mask

`LSTM(units)` is `RNN(LSTMCell(units))` with a fast path: PyTorch's fused kernel for any mask.
A masked step (False) keeps the states and repeats the previous output, zeros before the first real
step, exactly as Keras masks.
"""),
    code("""
lstm = sl.LSTM(4, return_sequences=True)
x = torch.randn(2, 5, 3)
mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], dtype=torch.bool)
out = lstm(x, mask=mask)
print(lstm, "ran the", lstm.last_path, "path")
print("masked steps repeat the previous output:",
      torch.equal(out[0, 3], out[0, 2]), torch.equal(out[0, 4], out[0, 2]), torch.equal(out[1, 1], out[1, 0]))
"""),
    md("""
## `go_backwards`

The sequence is read last step first, and outputs come back in processing order: `outputs[:, 0]`
belongs to the last input step. Same weights, reversed input, same numbers.
"""),
    code("""
backwards = sl.LSTM(4, return_sequences=True, go_backwards=True)
backwards.build(x.shape)
backwards.set_weights(lstm.get_weights())          # Keras layout: kernel, recurrent_kernel, bias
print(backwards)
print("go_backwards == forwards on the flipped input:", torch.allclose(backwards(x), lstm(x.flip(1)), atol=1e-6))
"""),
    md("""
## `stateful=True`

The final states of one call are the initial states of the next (per batch row), so a long sequence
fed in pieces gives the numbers of one call on the whole. `reset_states()` starts again from zeros.
This per-batch-row state is the limit of Keras' `stateful=True` that `StreamRuntime` removes: there,
state follows a stream *key*, however the rows are batched.
"""),
    code("""
stateful = sl.LSTM(4, stateful=True)
long = torch.randn(2, 12, 3)
stateful(long[:, :5])
pieces = stateful(long[:, 5:])                       # continues where the first call stopped

whole = sl.LSTM(4)
whole.build(long.shape)
whole.set_weights(stateful.get_weights())
print(stateful)
print("two stateful calls == one call on the whole:", torch.allclose(pieces, whole(long), atol=1e-6))
stateful.reset_states()
"""),
    md("""
## Parity with `tf.keras`, explained

Why the numbers match Keras (and the tests that hold us to it):

* **Same math, same gate order.** `z = x @ kernel + h @ recurrent_kernel + bias`, split into
  `i, f, c~, o`; `c' = σ(f)·c + σ(i)·tanh(c~)`, `h' = σ(o)·tanh(c')`, with Keras' activations
  (including Keras 2's `hard_sigmoid`), initializers (`glorot_uniform`, `orthogonal`,
  `unit_forget_bias`), masks, dropout and `stateful` rules.
* **Same weights.** `get_weights()` / `set_weights()` use Keras' layout: `kernel` (input_dim, 4u),
  `recurrent_kernel` (u, 4u), `bias` (4u,), so weights move between the two unchanged;
  `sl.load_keras` reads `.keras` and `.h5` files, `sl.save_keras` writes them.
* **Checked against TensorFlow.** `tests/layers/test_keras_parity.py` compares every layer against
  golden outputs recorded from `tf.keras` (masks, `go_backwards`, `stateful`, stacked cells, dropout
  off), and `tests/keras_import/` loads real Keras 2 and 3 model files.

The cell below replays Keras' equations in plain numpy from `get_weights()`, and runs
`torch.nn.LSTM` with the same numbers (`weight_ih = kernel.T`, `weight_hh = recurrent_kernel.T`).
"""),
    code("""
def keras_lstm_numpy(x, kernel, recurrent_kernel, bias):
    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    h = c = np.zeros((x.shape[0], recurrent_kernel.shape[0]), np.float32)
    outputs = []
    for t in range(x.shape[1]):
        i, f, g, o = np.split(x[:, t] @ kernel + h @ recurrent_kernel + bias, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1)

kernel, recurrent_kernel, bias = lstm.get_weights()
reference = keras_lstm_numpy(x.numpy(), kernel, recurrent_kernel, bias)
print("numpy Keras equations:", np.allclose(lstm(x).detach().numpy(), reference, atol=1e-5))

torch_lstm = torch.nn.LSTM(3, 4, batch_first=True)
with torch.no_grad():
    torch_lstm.weight_ih_l0.copy_(torch.from_numpy(kernel.T))
    torch_lstm.weight_hh_l0.copy_(torch.from_numpy(recurrent_kernel.T))
    torch_lstm.bias_ih_l0.copy_(torch.from_numpy(bias))
    torch_lstm.bias_hh_l0.zero_()
print("torch.nn.LSTM with the same numbers:", torch.allclose(torch_lstm(x)[0], lstm(x), atol=1e-6))
"""),
    md("""
## Something to look at

An `LSTM(8)` reading a noisy sine, with a gap of masked steps: during the gap the states hold and the
output repeats; afterwards the units pick up where they left off.
"""),
    code("""
import matplotlib.pyplot as plt

t = np.arange(120)
signal = (np.sin(t / 8) + 0.1 * np.random.randn(len(t))).astype("float32")
gap = (t >= 50) & (t < 70)
layer = sl.LSTM(8, return_sequences=True)
h = layer(torch.from_numpy(signal)[None, :, None], mask=torch.from_numpy(~gap)[None]).detach()[0]

fig, ((top, spare), (bottom, bar)) = plt.subplots(2, 2, figsize=(9, 5), sharex="col", height_ratios=[1, 1.4],
                                                  width_ratios=[40, 1], layout="constrained")
spare.axis("off")   # the right column holds the colorbar, so both plots keep the same width
top.plot(t, signal, color="#4c72b0", label="input")
top.axvspan(50, 70, color="#dddddd", label="masked steps")
top.legend(loc="upper right", frameon=False)
top.set_title("a noisy sine with a gap")
image = bottom.imshow(h.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, origin="lower",
                      extent=(-0.5, len(t) - 0.5, -0.5, 7.5))
bottom.set_title("h of LSTM(8): held during the gap")
bottom.set_xlabel("step")
bottom.set_ylabel("unit")
fig.colorbar(image, cax=bar)
plt.show()
"""),
]

REPLAY: list[Cell] = [
    md("""
# Replaying Arrow files

Recorded data (a day of sensor readings, many sensors interleaved) replays through a trained model
stream by stream, exactly as it would have run live. This notebook writes such a file, trains a tiny
forecaster, replays the file with a progress bar and plots the forecasts.
`streamlstm replay INPUT --model MODEL --out OUTPUT` does the same from a shell, resumably.
"""),
    scratch_setup("replay", "import time"),
    md("""
## A recorded file: 40 sensors, 600 readings each, interleaved in time order

Each row is one reading: the sensor's key, its time, and the features `x` the model reads (the
reading and the time of day as sine/cosine, a day being 48 steps). The target is the next reading.
"""),
    code("""
SENSORS, STEPS = 40, 600
t = np.arange(STEPS)
phase = rng.uniform(0, 2 * np.pi, (SENSORS, 1))
level = rng.uniform(-1, 1, (SENSORS, 1))
reading = level + np.sin(2 * np.pi * t / 48 + phase) + 0.03 * rng.standard_normal((SENSORS, STEPS))
hour = np.broadcast_to(2 * np.pi * (t % 48) / 48, (SENSORS, STEPS))
features = np.stack([reading, np.sin(hour), np.cos(hour)], axis=-1).astype(np.float32)   # [S, T, 3]

step, sensor = np.divmod(np.arange(SENSORS * STEPS), SENSORS)    # time order, sensors interleaved
table = pa.table({
    "sensor": pa.array([f"sensor-{s:02d}" for s in sensor]),
    "time": pa.array(step, pa.int64()),
    "x": pa.FixedSizeListArray.from_arrays(pa.array(features[sensor, step].reshape(-1)), 3),
})
path = workdir / "readings.arrow"
with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
    writer.write_table(table, max_chunksize=4000)
print(f"{table.num_rows:,} rows of {SENSORS} sensors -> {path}")
table.slice(0, 3).to_pylist()
"""),
    md("""
## A tiny forecaster, trained for a few seconds

`LSTM(16) -> Linear(1)` predicts the change to the next reading (so an output of zero is the naive
forecast). It trains like any PyTorch module, on the first 400 steps of every sensor cut into
sequences of 50, and is saved with `sl.save_model` so a replay can name its file.
"""),
    code("""
model = torch.nn.Sequential(sl.LSTM(16, return_sequences=True), torch.nn.Linear(16, 1))
inputs = torch.from_numpy(features[:, :400]).reshape(SENSORS * 8, 50, 3)
change = (reading[:, 1:401] - reading[:, :400]).astype(np.float32)
targets = torch.from_numpy(change).reshape(SENSORS * 8, 50, 1)
optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
started = time.perf_counter()
for _ in range(120):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    optimizer.step()
print(f"training loss {loss.item():.4f} after {time.perf_counter() - started:.1f} s")
model_path = workdir / "forecaster.slm"
sl.save_model(model, model_path)
print(model)
"""),
    md("""
## Replay, with a progress bar

`sl.replay_table` reads the file in batches of `batch_rows` rows (memory-mapped, never the whole file
at once), feeds each to a `StreamRuntime` (one LSTM state per sensor) and returns one output row per
input row, in input order. `sl.replay` yields the batches instead; `sl.replay_to_file` writes them,
checkpointed and resumable.
"""),
    code("""
started = time.perf_counter()
forecasts = sl.replay_table(path, model_path, key="sensor", features="x", time="time", batch_rows=2000,
                            progress=True)
seconds = time.perf_counter() - started
print(f"replayed {forecasts.num_rows:,} rows in {seconds:.2f} s ({forecasts.num_rows / seconds:,.0f} rows/s)")
print(forecasts.schema)
"""),
    md("""
## How good are the forecasts?

Against the naive forecast (the next reading equals this one), over the last 200 steps, which the
model never trained on. Then a plot of three sensors.
"""),
    code("""
import matplotlib.pyplot as plt

current = table.column("x").combine_chunks().flatten().to_numpy()[::3]    # the reading, x[0]
predicted_change = forecasts.column("output").combine_chunks().flatten().to_numpy()
predicted = np.zeros((SENSORS, STEPS), np.float32)   # the forecast of the next reading, made at each step
predicted[sensor, step] = current + predicted_change
held_out = slice(400, STEPS - 1)
model_rmse = np.sqrt(np.mean((predicted[:, held_out] - reading[:, 401:]) ** 2))
naive_rmse = np.sqrt(np.mean((reading[:, held_out] - reading[:, 401:]) ** 2))
print(f"held-out RMSE: LSTM {model_rmse:.3f}, naive {naive_rmse:.3f}")

shown = slice(300, STEPS)
fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True, layout="constrained")
for ax, s in zip(axes, (0, 7, 21)):
    ax.plot(t[shown], reading[s, shown], color="#4c72b0", linewidth=1.2, marker=".", markersize=3,
            label="reading")
    ax.plot(t[shown], np.roll(predicted[s], 1)[shown], color="#dd8452", linewidth=1.5,
            label="forecast made one step before")
    ax.axvspan(400, STEPS, color="#f2f2f2", zorder=0)
    ax.set_ylabel(f"sensor-{s:02d}")
axes[0].legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=2, frameon=False)
fig.suptitle("replayed forecasts (shaded: steps never trained on)")
axes[-1].set_xlabel("time step")
plt.show()
scratch.cleanup()   # the recorded file, the model: nothing is left behind
"""),
]

LIVE_DASHBOARD: list[Cell] = [
    md("""
# A live dashboard

`sl.notebook.Dashboard` feeds a source into a `StreamRuntime` and shows one stream as it goes: its
inputs and outputs, and a heatmap of its hidden state `h`. Play, pause, step, reset a stream (or all)
and pick the stream and layer to watch; the kernel stays free while it plays.

The source here is a simulated live feed: an async generator that yields a batch with one reading of
each of 12 sensors every 20 ms, as a network feed would.
"""),
    code("""
import asyncio

import numpy as np
import pyarrow as pa
import torch

import streamlstm as sl

torch.manual_seed(0)
torch.set_num_threads(1)   # tiny batches: one thread is fastest and leaves the other cores to the kernel
"""),
    code("""
class Sensors:
    \"\"\"Simulated sensors: a cycle each, a slow shared trend, noise and rare spikes.\"\"\"

    def __init__(self, count=12, seed=0):
        self.rng = np.random.default_rng(seed)
        self.keys = [f"sensor-{i:02d}" for i in range(count)]
        self.phase = self.rng.uniform(0, 2 * np.pi, count)
        self.step = 0

    def read(self):
        \"\"\"The next reading of every sensor: features [count, 2] (the value and the trend).\"\"\"
        value = np.sin(self.step / 8 + self.phase) + 0.1 * self.rng.standard_normal(len(self.keys))
        value += (self.rng.random(len(self.keys)) < 0.01) * 3.0
        trend = np.full(len(self.keys), np.cos(self.step / 60))
        self.step += 1
        return np.stack([value + 0.5 * trend, trend], axis=1).astype(np.float32)


async def live_feed(sensors, period=0.02):
    \"\"\"One record batch per `period` seconds, one row per sensor, as a network feed would send.\"\"\"
    while True:
        await asyncio.sleep(period)            # waiting for data, without blocking the kernel
        x = sensors.read()
        yield pa.record_batch({"sensor": sensors.keys,
                               "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 2)})
"""),
    md("""
A small forecaster of the next reading, trained for a few seconds on recorded readings of other
sensors, then wrapped in a `StreamRuntime`: one state per sensor, fed batch by batch.
"""),
    code("""
model = torch.nn.Sequential(sl.LSTM(24, return_sequences=True), sl.LSTM(12, return_sequences=True),
                            torch.nn.Linear(12, 1))
recorded = Sensors(count=32, seed=1)
history = np.stack([recorded.read() for _ in range(551)], axis=1)          # [32, 551, 2]
inputs = torch.from_numpy(history[:, :550]).reshape(32 * 11, 50, 2)
targets = torch.from_numpy(history[:, 1:, :1]).reshape(32 * 11, 50, 1)   # the next value
optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
for _ in range(60):
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(inputs), targets)
    loss.backward()
    optimizer.step()
print(f"training loss {loss.item():.4f}")

runtime = sl.StreamRuntime(model, key="sensor", features="x")
runtime
"""),
    md("""
Re-running the next cell replaces the dashboard (the old feed stops). Its status line counts rows,
streams and rows/s, and shows the last error, if any.
"""),
    code("""
dash = sl.notebook.Dashboard(runtime, live_feed(Sensors()), key="live", speed=20, stream="sensor-03")
dash
"""),
    md("""
A bounded run, so the notebook finishes unattended: 80 batches at 20 batches/s. Afterwards, click
**Play** to keep going, **Step** for one batch, **Reset stream** to zero `sensor-03`'s state and watch
it recover, or pick another stream and layer.
"""),
    code("""
fed = await dash.run(steps=80)
print(f"fed {fed} batches; {dash!r}")
"""),
    code("""
runtime
"""),
]

TRAIN_ON_STREAMS: list[Cell] = [
    md("""
# Training on streams

Keras trains recurrent models on long series with `stateful=True`: cut every series into windows of
K steps, make sample `i` of each batch continue sample `i` of the batch before, and `fit` with
`shuffle=False`, so the carries flow from batch to batch without gradients (truncated
backpropagation through time). `sl.fit_streams` does exactly that on keyed Arrow rows, with no
reshaping into dense tensors, and `sl.StreamTrainer` keeps learning on a live feed from the very
carries it serves predictions from.

This notebook trains a forecaster on a recorded file with `fit_streams`, then keeps learning live
while the sensors change, with the dashboard showing the loss.
"""),
    scratch_setup("train"),
    md("""
## A recorded file: 48 sensors of different lengths, interleaved in time order

Features `x`: the reading and the time of day as sine/cosine (a day is 48 steps). Target `y`: the
change to the next reading (so predicting zero is the naive forecast). Sensors joined at different
times, so the streams have different lengths.
"""),
    code("""
SENSORS, STEPS, DAY = 48, 480, 48


def readings(sensors, steps, period, seed):
    r = np.random.default_rng(seed)
    t = np.arange(steps + 1)
    phase, level = r.uniform(0, 2 * np.pi, (sensors, 1)), r.uniform(-1, 1, (sensors, 1))
    value = level + np.sin(2 * np.pi * t / period + phase) + 0.03 * r.standard_normal((sensors, steps + 1))
    hour = np.broadcast_to(2 * np.pi * (t % DAY) / DAY, value.shape)
    x = np.stack([value, np.sin(hour), np.cos(hour)], axis=-1)[:, :-1].astype(np.float32)
    y = np.diff(value, axis=1)[..., None].astype(np.float32)
    return x, y


x, y = readings(SENSORS, STEPS, period=DAY, seed=1)
start = rng.integers(0, 200, SENSORS)                     # sensor s joined at step start[s]
step, sensor = np.divmod(np.arange(SENSORS * STEPS), SENSORS)
present = step >= start[sensor]
step, sensor = step[present], sensor[present]
table = pa.table({
    "sensor": pa.array([f"sensor-{s:02d}" for s in sensor]),
    "x": pa.FixedSizeListArray.from_arrays(pa.array(x[sensor, step].reshape(-1)), 3),
    "y": pa.FixedSizeListArray.from_arrays(pa.array(y[sensor, step].reshape(-1)), 1),
})
path = workdir / "readings.arrow"
with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
    writer.write_table(table, max_chunksize=4000)
print(f"{table.num_rows:,} rows of {SENSORS} sensors -> {path}")
"""),
    md("""
## `fit_streams`: Keras's stateful recipe, on the file

Batch `b` of an epoch holds rows `b*K .. b*K+K-1` of every sensor long enough (sensors that ended
drop out), each sensor continuing from its own carries; carries restart at each epoch. In Keras this
is `model.reset_states()` then `model.fit(x, y, batch_size=n_sensors, shuffle=False)` on a
`stateful=True` model, after arranging the windows by hand. `streamlstm train readings.arrow --model
M --out M2 --key sensor --window 24 --epochs 4` does the same from a shell.
"""),
    code("""
model = torch.nn.Sequential(sl.LSTM(16, return_sequences=True), torch.nn.Linear(16, 1))
fit_losses = []
trainer = sl.fit_streams(model, path, key="sensor", features="x", target="y", window=24, epochs=4,
                         optimizer="adam", lr=0.01, progress=True,
                         on_batch=lambda epoch, batch, loss: fit_losses.append(loss))
print(f"{len(fit_losses)} batches; loss {fit_losses[0]:.4f} -> {fit_losses[-1]:.4f}")
trainer
"""),
    md("""
`trainer.runtime` serves predictions from the same carries: each sensor continues from where
training left it. `sl.save_model(trainer.model, ...)` writes the model for `streamlstm replay` or
`streamlstm serve`; `trainer.save(...)` keeps the optimizer's state and every carry as well, to
resume training exactly.
"""),
    code("""
sl.save_model(trainer.model, workdir / "forecaster.slm")
trainer.save(workdir / "trainer.slt")
trainer = sl.StreamTrainer.load(workdir / "trainer.slt", lambda p: torch.optim.Adam(p, lr=0.01))
print(trainer)
print("sensor-05's carries:", [np.round(h[:4], 3) for h, c in trainer.runtime.state("sensor-05")])
"""),
    md("""
## Keep learning live, while the sensors change

The live feed sends one reading of 16 sensors per batch, and the sensors' cycles are now faster
than in the recording: the forecaster has to adapt. With a trainer in place of a runtime, the
dashboard learns from every batch (test-then-train: each shown forecast is made before the update)
and its status line shows the loss.
"""),
    code("""
LIVE = 16
live_x, live_y = readings(LIVE, 400, period=32, seed=2)
live_keys = [f"sensor-{s:02d}" for s in range(LIVE)]
live_losses = []


def live_feed(windows=25, rows=8):
    \"\"\"Batches of `rows` readings of every live sensor; records the loss of the batch before.\"\"\"
    for w in range(windows):
        if trainer.last_loss is not None and w:
            live_losses.append(trainer.last_loss)
        t = slice(w * rows, (w + 1) * rows)
        yield pa.record_batch({
            "sensor": pa.array(np.repeat(live_keys, rows)),
            "x": pa.FixedSizeListArray.from_arrays(pa.array(live_x[:, t].reshape(-1)), 3),
            "y": pa.FixedSizeListArray.from_arrays(pa.array(live_y[:, t].reshape(-1)), 1),
        })


trainer.runtime.reset()
dash = sl.notebook.Dashboard(trainer, live_feed(), key="train", speed=50, stream="sensor-03")
dash
"""),
    code("""
fed = await dash.run()
live_losses.append(trainer.last_loss)
print(f"learned {fed} live batches; loss {live_losses[0]:.4f} -> {live_losses[-1]:.4f}")
"""),
    code("""
import matplotlib.pyplot as plt

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
left.plot(fit_losses, color="#4c72b0")
left.set(title="fit_streams on the file", xlabel="batch", ylabel="loss (mse)", yscale="log")
right.plot(live_losses, color="#dd8452", marker=".")
right.set(title="learning live (faster cycles)", xlabel="live batch", yscale="log")
plt.show()
scratch.cleanup()   # the recorded file, the model and the trainer: nothing is left behind
"""),
]

NOTEBOOKS = {
    "01_layers_quickstart.ipynb": LAYERS_QUICKSTART,
    "02_replay_arrow_files.ipynb": REPLAY,
    "03_live_dashboard.ipynb": LIVE_DASHBOARD,
    "04_train_on_streams.ipynb": TRAIN_ON_STREAMS,
}


def build(cells: list[Cell]) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for index, (kind, source) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        cell["id"] = f"cell-{index:02d}"    # stable ids: rebuilding changes nothing
        notebook.cells.append(cell)
    return notebook


def render(cells: list[Cell]) -> str:
    return nbformat.writes(build(cells)) + "\n"


def main(argv: list[str]) -> int:
    """Write the notebooks; with ``--check``, only say whether the files are up to date."""
    stale = []
    for name, cells in NOTEBOOKS.items():
        path, text = HERE / name, render(cells)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run notebooks/build_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
