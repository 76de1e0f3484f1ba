"""``streamlstm demo``, part two: forecast 200 interleaved sensor streams, replayed from an Arrow file.

1. Generate a week of 5-minute readings from 200 sensors: daily and weekly cycles, slow drifts (AR(1)),
   measurement noise, outages (rows simply missing) and anomalies (spikes), written time-ordered, as
   they were recorded live, to ``sensors.arrow``.
2. Train a small LSTM forecaster (``LSTM(32) -> Linear(1)``: next reading from this one) on the first
   five days, carrying state chunk to chunk as the runtime will; save it with ``save_model``.
3. Replay the whole file through the :class:`~streamlstm.StreamRuntime` with :func:`replay_to_file`
   (what ``streamlstm replay`` runs) into ``forecasts.arrow``.
4. Score the last two days against the naive forecast (the last reading), flag readings far from
   their forecast as anomalies, and plot a few streams to ``forecasts.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

STEPS_PER_DAY = 288  # 5-minute readings
_SIZES = {"full": {"sensors": 200, "days": 7, "epochs": 5, "seconds": 10.0},
          "small": {"sensors": 24, "days": 3, "epochs": 8, "seconds": 3.0}}
_TRAIN_FRACTION = 5 / 7
_FLAG_SIGMAS = 4.0
_TRAIN_SENSORS = 64
_LR = 3e-2
_CHUNK = 16  # truncated backpropagation through time: steps per update


@dataclass
class Dataset:
    """The generated readings, in file (time) order, with what the demo needs to score them."""

    table: pa.Table
    sensor: np.ndarray      # [rows] sensor index
    step: np.ndarray        # [rows] 5-minute step
    value: np.ndarray       # [rows] raw reading
    anomaly: np.ndarray     # [rows] bool, ground truth
    mean: np.ndarray        # [sensors] of the training days, for the features
    scale: np.ndarray       # [sensors]
    sensors: int
    steps: int


def make_dataset(sensors: int, days: int, seed: int = 0) -> Dataset:
    """Readings of ``sensors`` sensors over ``days`` days (see the module docstring)."""
    rng = np.random.default_rng(seed)
    steps = days * STEPS_PER_DAY
    t = np.arange(steps)
    base, amp = rng.uniform(12, 28, (sensors, 1)), rng.uniform(2, 7, (sensors, 1))
    phase = rng.uniform(-0.6, 0.6, (sensors, 1))
    daily = np.sin(2 * np.pi * t / STEPS_PER_DAY - np.pi / 2 + phase)
    weekly = 0.3 * np.sin(2 * np.pi * t / (7 * STEPS_PER_DAY) + 3 * phase)
    drift = np.zeros((sensors, steps))
    shocks = rng.normal(0, 0.08, (sensors, steps)) * amp / 4
    for i in range(1, steps):  # slow AR(1) drift: what the last reading knows and a mean does not
        drift[:, i] = 0.97 * drift[:, i - 1] + shocks[:, i]
    noise = rng.normal(0, 0.35, (sensors, steps)) * amp / 4
    value = base + amp * (daily + weekly) + drift + noise
    anomaly = rng.random((sensors, steps)) < 0.002
    value = np.where(anomaly, value + rng.choice([-1, 1], value.shape) * rng.uniform(3, 6, value.shape) * amp / 2,
                     value)
    present = np.ones((sensors, steps), bool)
    for s in range(sensors):  # outages: a sensor sends nothing for 30 minutes to 8 hours
        for _ in range(rng.poisson(1.5)):
            start = rng.integers(0, steps)
            present[s, start:start + rng.integers(6, 96)] = False
    train = t < int(steps * _TRAIN_FRACTION)
    clean = present & ~anomaly & train
    mean = np.array([value[s, clean[s]].mean() for s in range(sensors)])
    scale = np.array([value[s, clean[s]].std() for s in range(sensors)])
    step_idx, sensor_idx = np.nonzero(present.T)  # time-ordered, sensors interleaved, as recorded live
    return Dataset(_table(sensor_idx, step_idx, value, anomaly, present, mean, scale), sensor_idx, step_idx,
                   value[sensor_idx, step_idx], anomaly[sensor_idx, step_idx], mean, scale, sensors, steps)


def _table(sensor: np.ndarray, step: np.ndarray, value: np.ndarray, anomaly: np.ndarray, present: np.ndarray,
           mean: np.ndarray, scale: np.ndarray) -> pa.Table:
    reading = value[sensor, step]
    # Steps missed before each reading (an outage): the step of the sensor's previous reading.
    last_seen = np.maximum.accumulate(np.where(present, np.arange(present.shape[1]), -1), axis=1)
    previous = np.concatenate([np.full((present.shape[0], 1), -1), last_seen[:, :-1]], axis=1)
    missed = np.where(previous[sensor, step] >= 0, step - previous[sensor, step] - 1, 0)
    day_angle = 2 * np.pi * (step % STEPS_PER_DAY) / STEPS_PER_DAY
    features = np.stack([(reading - mean[sensor]) / scale[sensor], np.sin(day_angle), np.cos(day_angle),
                         np.log1p(missed) / 4], axis=1).astype(np.float32)
    start = np.datetime64("2024-03-04T00:00:00", "s")
    return pa.table({
        "sensor": pa.array([f"sensor-{s:03d}" for s in sensor]).dictionary_encode(),
        "time": pa.array(start + step.astype("timedelta64[s]") * 300, pa.timestamp("s")),
        "value": pa.array(reading.astype(np.float32)),
        "anomaly": pa.array(anomaly[sensor, step]),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()), features.shape[1]),
    })


def _sequences(data: Dataset, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sensor, its rows in order, right-padded with -1: [sensors, longest]."""
    order = rows[np.argsort(data.sensor[rows], kind="stable")]
    counts = np.bincount(data.sensor[order], minlength=data.sensors)
    grid = np.full((data.sensors, counts.max()), -1)
    position = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    grid[data.sensor[order], position] = order
    return grid, counts


def train_forecaster(data: Dataset, epochs: int, max_seconds: float, seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """``LSTM(32) -> Linear(1)`` trained on the training days: truncated BPTT, state carried along.

    The output is the change to the next reading (in the sensor's standard units), so a model that
    outputs zeros is the naive forecast and the LSTM learns only what the last reading misses.
    """
    import streamlstm as sl

    torch.manual_seed(seed)
    x_all = np.stack(data.table["x"].to_numpy(zero_copy_only=False))
    grid, counts = _sequences(data, np.flatnonzero(data.step < int(data.steps * _TRAIN_FRACTION)))
    # Every sensor equally long (no padding, no mask: the fastest kernel); a sample of sensors is enough.
    grid = grid[:_TRAIN_SENSORS, :counts[:_TRAIN_SENSORS].min()]
    x = torch.from_numpy(x_all[grid])
    target = torch.from_numpy(x_all[grid[:, 1:], 0] - x_all[grid[:, :-1], 0])
    usable = torch.from_numpy(~data.anomaly[grid[:, 1:]] & ~data.anomaly[grid[:, :-1]])
    trainer = sl.LSTM(32, return_sequences=True, return_state=True, seed=seed)
    trainer.build((None, None, x.shape[-1]))
    head = torch.nn.Linear(32, 1)
    optimizer = torch.optim.Adam([*trainer.parameters(), *head.parameters()], lr=_LR)
    started, losses = time.perf_counter(), []
    for _ in range(epochs):
        state, epoch_loss = None, []
        for begin in range(0, x.shape[1] - 1, _CHUNK):
            part = slice(begin, min(begin + _CHUNK, x.shape[1] - 1))
            out, h, c = trainer(x[:, part], initial_state=state)
            error = (head(out).squeeze(-1) - target[:, part]) ** 2
            loss = error[usable[:, part]].mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            state = [h.detach(), c.detach()]
            epoch_loss.append(loss.item())
        losses.append(float(np.mean(epoch_loss)))
        if time.perf_counter() - started > max_seconds:
            break
    model = torch.nn.Sequential(sl.LSTM(32, return_sequences=True), torch.nn.Linear(32, 1))
    model[0].build((None, None, x.shape[-1]))
    model[0].load_state_dict(trainer.state_dict())
    model[1].load_state_dict(head.state_dict())
    return model.eval(), {"epochs": len(losses), "seconds": time.perf_counter() - started, "loss": losses[-1]}


def score(data: Dataset, forecast: np.ndarray) -> dict:
    """Errors of the next-reading forecasts on the held-out days, against the last reading; anomalies
    flagged where a reading is more than ``_FLAG_SIGMAS`` residual deviations from its forecast (a
    reading right after a flagged one is not flagged: its forecast started from the spike)."""
    grid, _ = _sequences(data, np.arange(len(data.value)))
    current, following = grid[:, :-1].ravel(), grid[:, 1:].ravel()
    keep = (current >= 0) & (following >= 0)
    current, following = current[keep], following[keep]
    held_out = data.step[following] >= int(data.steps * _TRAIN_FRACTION)
    scale = data.scale[data.sensor[current]]
    residual = data.value[following] - (data.value[current] + forecast[current] * scale)
    naive = data.value[following] - data.value[current]
    clean = held_out & ~data.anomaly[following] & ~data.anomaly[current]
    surprise = np.zeros(len(data.value))
    surprise[following] = residual / scale
    sigma = surprise[following[~held_out & ~data.anomaly[following] & ~data.anomaly[current]]].std()
    far = np.abs(surprise) > _FLAG_SIGMAS * sigma
    flagged = held_out & far[following] & ~far[current]
    truth = held_out & data.anomaly[following]
    return {"mae": np.abs(residual[clean]).mean(), "rmse": np.sqrt((residual[clean] ** 2).mean()),
            "naive_mae": np.abs(naive[clean]).mean(), "naive_rmse": np.sqrt((naive[clean] ** 2).mean()),
            "scored": int(clean.sum()), "anomalies": int(truth.sum()), "caught": int((flagged & truth).sum()),
            "false_alarms": int((flagged & ~truth).sum())}


def run_forecast_demo(out_dir: str | Path = "demo_output", size: str = "full",
                      print_fn: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the showcase (see the module docstring); returns the paths it wrote."""
    import streamlstm as sl
    from streamlstm.demo_plot import plot_forecasts
    from streamlstm.io.replay import replay_to_file

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
    model, trained = train_forecaster(data, settings["epochs"], settings["seconds"])
    sl.save_model(model, paths["model"])
    summary = replay_to_file(paths["data"], paths["model"], paths["forecasts"], key="sensor", time="time")
    with pa.memory_map(str(paths["forecasts"])) as source:
        forecasts = pa.ipc.open_file(source).read_all()
    forecast = forecasts["output"].combine_chunks().flatten().to_numpy()
    scores = score(data, forecast)
    plotted = plot_forecasts(data, forecast, paths["plot"], train_fraction=_TRAIN_FRACTION)
    rows = [("data", paths["data"], f"{data.table.num_rows:,} rows, {data.sensors} sensors, {settings['days']} days "
             f"of 5-minute readings, {missing:,} missed in outages, {int(data.anomaly.sum())} anomalies"),
            ("model", paths["model"], f"LSTM(32) -> Linear(1), trained {trained['seconds']:.1f} s on CPU "
             f"({trained['epochs']} epochs, loss {trained['loss']:.3f})"),
            ("replay", paths["forecasts"], f"{summary.rows:,} rows, {summary.streams} streams, "
             f"{summary.seconds:.2f} s, {summary.rows_per_second:,.0f} rows/s")]
    width = max(len(str(path)) for _, path, _ in rows)
    for name, path, text in rows:
        print_fn(f"{name:<8}{str(path):<{width}}  {text}")
    print_fn(f"\n  same replay from the shell: streamlstm replay {paths['data']} --model {paths['model']} "
             f"--out {paths['forecasts']} --key sensor --time time")
    print_fn(f"\nnext-reading forecast error over the last {settings['days'] * (1 - _TRAIN_FRACTION):.2g} "
             f"days, held out from training ({scores['scored']:,} readings, anomalies excluded)")
    print_fn(f"  {'':<22}{'MAE':>8}{'RMSE':>8}")
    print_fn(f"  {'LSTM forecaster':<22}{scores['mae']:8.3f}{scores['rmse']:8.3f}")
    print_fn(f"  {'last value (naive)':<22}{scores['naive_mae']:8.3f}{scores['naive_rmse']:8.3f}")
    gain = 1 - scores["mae"] / scores["naive_mae"]
    print_fn(f"  {'error reduction':<22}{gain:8.0%}{1 - scores['rmse'] / scores['naive_rmse']:8.0%}")
    print_fn(f"anomalies (|reading - forecast| > {_FLAG_SIGMAS:g} sigma): {scores['caught']} of "
             f"{scores['anomalies']} caught, {scores['false_alarms']} false alarms")
    print_fn(f"plot    {paths['plot'] if plotted else 'skipped: ' + plotted_reason()}")
    return paths


def plotted_reason() -> str:
    return "matplotlib is not installed (pip install 'streamlstm[demo]')"
