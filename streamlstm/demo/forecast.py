"""``streamlstm demo``, part two: forecast 200 interleaved sensor streams, replayed from an Arrow file.

1. Generate a week of 5-minute readings from 200 sensors (:mod:`streamlstm.demo.data`): daily and weekly
   cycles, slow drifts (AR(1)), measurement noise, outages (rows simply missing) and anomalies (spikes),
   written time-ordered, as they were recorded live, to ``sensors.arrow``.
2. Train a small LSTM forecaster (``LSTM(32) -> Linear(1)``: the reading an hour ahead, from this one) on
   the first five days, carrying state chunk to chunk as the runtime will; save it with ``save_model``.
   An hour ahead the daily cycle has moved on, so the last reading is a poor forecast; the LSTM must
   remember each sensor's level, swing and phase in its state.
3. Replay the whole file through the :class:`~streamlstm.StreamRuntime` with :func:`replay_to_file`
   (what ``streamlstm replay`` runs) into ``forecasts.arrow``.
4. Score the last two days against two naive forecasts (the last reading; the reading a day earlier),
   flag readings far from their forecast as anomalies, and plot a few streams to ``forecasts.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from streamlstm.demo.data import HORIZON, STEPS_PER_DAY, TRAIN_FRACTION, Dataset, make_dataset
from streamlstm.demo.plot import plot_forecasts
from streamlstm.io import save_model
from streamlstm.io.replay import replay_to_file
from streamlstm.layers import LSTM

# A fixed amount of work with fixed seeds, on one torch thread: the printed numbers are the same on every
# machine (only the times vary), where a time budget trained a loaded machine for fewer epochs.
_SIZES = {"full": {"sensors": 200, "days": 7, "epochs": 10},
          "small": {"sensors": 24, "days": 3, "epochs": 8}}
_FLAG_SIGMAS = 4.0
_TRAIN_SENSORS = 64
_LR = 1e-2
_CHUNK = 16  # truncated backpropagation through time: steps per update


def _sequences(data: Dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sensor, its rows in order, right-padded with -1: [sensors, longest]."""
    order = rows[np.argsort(data.sensor[rows], kind="stable")]
    counts = np.bincount(data.sensor[order], minlength=data.sensors)
    grid = np.full((data.sensors, counts.max()), -1)
    position = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    grid[data.sensor[order], position] = order
    return grid, counts


def train_forecaster(data: Dataset, epochs: int, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """``LSTM(32) -> Linear(1)`` trained on the training days for ``epochs`` epochs: truncated BPTT,
    state carried along; seeded and on one torch thread, so the weights are the same on every run.

    The output is the change from this reading to the one ``HORIZON`` steps (an hour) later, in the
    sensor's standard units: a model that outputs zeros is the last-value forecast, and the LSTM learns
    what it misses (where the sensor's daily cycle goes next).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a reduction order that does not depend on the machine's core count
    try:
        return _train(data, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _targets(data: Dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the change to the reading ``HORIZON`` steps later (standard units) and whether it
    is usable for training (that reading exists, is in the training days, and neither is an anomaly)."""
    later = data.rows_at(data.sensor[rows], data.step[rows] + HORIZON)
    scale = data.scale[data.sensor[rows]]
    change = (data.value[np.maximum(later, 0)] - data.value[rows]) / scale
    usable = ((later >= 0) & (data.step[np.maximum(later, 0)] < int(data.steps * TRAIN_FRACTION))
              & ~data.anomaly[rows] & ~data.anomaly[np.maximum(later, 0)])
    return np.where(usable, change, 0).astype(np.float32), usable


def _train(data: Dataset, epochs: int, seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    x_all = np.stack(data.table["x"].to_numpy(zero_copy_only=False))
    grid, counts = _sequences(data, np.flatnonzero(data.step < int(data.steps * TRAIN_FRACTION)))
    # Every sensor equally long (no padding, no mask: the fastest kernel); a sample of sensors is enough.
    grid = grid[:_TRAIN_SENSORS, :counts[:_TRAIN_SENSORS].min()]
    x = torch.from_numpy(x_all[grid])
    change, usable = _targets(data, grid.ravel())
    target, usable = torch.from_numpy(change.reshape(grid.shape)), torch.from_numpy(usable.reshape(grid.shape))
    trainer = LSTM(32, return_sequences=True, return_state=True, seed=seed)
    trainer.build((None, None, x.shape[-1]))
    head = torch.nn.Linear(32, 1)
    optimizer = torch.optim.Adam([*trainer.parameters(), *head.parameters()], lr=_LR)
    started, losses = time.perf_counter(), []
    for _ in range(epochs):
        state, epoch_loss = None, []
        for begin in range(0, x.shape[1], _CHUNK):
            part = slice(begin, begin + _CHUNK)
            out, h, c = trainer(x[:, part], initial_state=state)
            error = (head(out).squeeze(-1) - target[:, part]) ** 2
            loss = error[usable[:, part]].sum() / usable[:, part].sum().clamp(min=1)  # the last chunks: none
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state = [h.detach(), c.detach()]
            epoch_loss.append(loss.item())
        losses.append(float(np.mean(epoch_loss)))
    model = torch.nn.Sequential(LSTM(32, return_sequences=True), torch.nn.Linear(32, 1))
    model[0].build((None, None, x.shape[-1]))
    model[0].load_state_dict(trainer.state_dict())
    model[1].load_state_dict(head.state_dict())
    return model.eval(), {"epochs": len(losses), "seconds": time.perf_counter() - started, "loss": losses[-1]}


def score(data: Dataset, forecast: np.ndarray) -> dict:
    """Errors of the hour-ahead forecasts on the held-out days, against two naive forecasts: the last
    reading, and the reading a day before the forecast one (the daily cycle, but yesterday's level).
    Scored where all three exist and none is an anomaly.

    Anomalies are flagged where a reading is more than ``_FLAG_SIGMAS`` residual deviations from the
    forecast made an hour earlier (not where that forecast started from a flagged reading: a spike)."""
    origin = np.arange(len(data.value))
    target = data.rows_at(data.sensor, data.step + HORIZON)
    origin, target = origin[target >= 0], target[target >= 0]
    yesterday = data.rows_at(data.sensor[target], data.step[target] - STEPS_PER_DAY)
    held_out = data.step[target] >= int(data.steps * TRAIN_FRACTION)
    scale = data.scale[data.sensor[origin]]
    residual = data.value[target] - (data.value[origin] + forecast[origin] * scale)
    naive = data.value[target] - data.value[origin]
    daily = data.value[target] - data.value[np.maximum(yesterday, 0)]
    spikes = data.anomaly[target] | data.anomaly[origin]
    clean = held_out & (yesterday >= 0) & ~spikes & ~data.anomaly[np.maximum(yesterday, 0)]
    surprise = np.zeros(len(data.value))
    surprise[target] = residual / scale
    sigma = surprise[target[~held_out & ~spikes]].std()
    far = np.abs(surprise) > _FLAG_SIGMAS * sigma
    flagged = held_out & far[target] & ~far[origin]
    truth = held_out & data.anomaly[target]
    return {"mae": np.abs(residual[clean]).mean(), "rmse": np.sqrt((residual[clean] ** 2).mean()),
            "naive_mae": np.abs(naive[clean]).mean(), "naive_rmse": np.sqrt((naive[clean] ** 2).mean()),
            "daily_mae": np.abs(daily[clean]).mean(), "daily_rmse": np.sqrt((daily[clean] ** 2).mean()),
            "scored": int(clean.sum()), "anomalies": int(truth.sum()), "caught": int((flagged & truth).sum()),
            "false_alarms": int((flagged & ~truth).sum())}


def run_forecast_demo(out_dir: str | Path = "demo_output", size: str = "full",
                      print_fn: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the showcase (see the module docstring); returns the paths it wrote."""
    settings = _SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / file for name, file in (("data", "sensors.arrow"), ("model", "forecaster.slm"),
                                                ("forecasts", "forecasts.arrow"), ("plot", "forecasts.png"))}
    print_fn(f"streamlstm replay: forecasting {settings['sensors']} interleaved sensor streams\n")
    data = make_dataset(settings["sensors"], settings["days"])
    with pa.ipc.new_file(paths["data"], data.table.schema) as writer:
        writer.write_table(data.table, max_chunksize=8192)
    missing = data.sensors * data.steps - data.table.num_rows
    model, trained = train_forecaster(data, settings["epochs"])
    save_model(model, paths["model"])
    summary = replay_to_file(paths["data"], paths["model"], paths["forecasts"], key="sensor", time="time")
    with pa.memory_map(str(paths["forecasts"])) as source:
        forecasts = pa.ipc.open_file(source).read_all()
    forecast = forecasts["output"].combine_chunks().flatten().to_numpy()
    scores = score(data, forecast)
    plotted = plot_forecasts(data, forecast, paths["plot"], train_fraction=TRAIN_FRACTION)
    rows = [("data", paths["data"], f"{data.table.num_rows:,} rows, {data.sensors} sensors, {settings['days']} days "
             f"of 5-minute readings, {missing:,} missed in outages, {int(data.anomaly.sum())} anomalies"),
            ("model", paths["model"], f"LSTM(32) -> Linear(1), trained {trained['seconds']:.1f} s on CPU "
             f"({trained['epochs']} epochs, loss {trained['loss']:.3f})"),
            ("replay", paths["forecasts"], f"{summary.rows:,} rows, {summary.streams} streams, "
             f"{summary.seconds:.2f} s, {summary.rows_per_second:,.0f} rows/s")]
    width = max(len(str(path)) for _, path, _ in rows)
    for name, path, text in rows:
        print_fn(f"{name:<8}{str(path):<{width}}  {text}")
    print_fn(f"\n  same replay from the shell (after `. .venv/bin/activate`, or call .venv/bin/streamlstm):\n"
             f"  streamlstm replay {paths['data']} --model {paths['model']} --out {paths['forecasts']} "
             f"--key sensor --time time")
    print_fn(f"\nhour-ahead forecast error (°C) over the last {settings['days'] * (1 - TRAIN_FRACTION):.2g} "
             f"days, held out from training ({scores['scored']:,} readings, anomalies excluded)")
    print_fn(f"  {'':<34}{'MAE':>8}{'RMSE':>8}{'LSTM MAE':>11}")
    for label, name in (("LSTM forecaster", ""), ("last value (naive)", "naive_"),
                        ("same time yesterday (naive)", "daily_")):
        ratio = scores["mae"] / scores[f"{name}mae"]
        print_fn(f"  {label:<34}{scores[f'{name}mae']:8.3f}{scores[f'{name}rmse']:8.3f}"
                 f"{'' if not name else f'{ratio:10.2f}x'}")
    print_fn(f"anomalies (|reading - its forecast| > {_FLAG_SIGMAS:g} sigma): {scores['caught']} of "
             f"{scores['anomalies']} caught, {scores['false_alarms']} false alarms")
    print_fn(f"plot    {paths['plot'] if plotted else 'skipped: ' + plotted_reason()}")
    return paths


def plotted_reason() -> str:
    return "matplotlib is not installed (pip install 'streamlstm[demo]')"
