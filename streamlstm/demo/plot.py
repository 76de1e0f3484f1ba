"""The demo's plot: a few sensor streams over the held-out days, readings against the forecasts made an
hour earlier (the LSTM's, and the last reading's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.demo.data import HORIZON, STEPS_PER_DAY, Dataset

_COLORS = {"reading": "#3b3b3b", "forecast": "#1f77b4", "naive": "#9a9a9a", "anomaly": "#d62728", "outage": "#f2c57c"}


def _pick_sensors(data: Dataset, window: np.ndarray, count: int) -> list[int]:
    """Sensors whose window shows an anomaly and an outage first, then anomalies, then any."""
    anomalies = np.bincount(data.sensor[window & data.anomaly], minlength=data.sensors)
    rows = np.bincount(data.sensor[window], minlength=data.sensors)
    outage = rows < rows.max()
    rank = (anomalies > 0).astype(int) * 2 + outage.astype(int)
    return sorted(np.argsort(-rank, kind="stable")[:count].tolist())


def plot_forecasts(data: Dataset, forecast: np.ndarray, path: str | Path, *, train_fraction: float,
                   count: int = 4) -> bool:
    """Write the PNG; False (nothing written) where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = int(data.steps * train_fraction)
    show_from = max(first, data.steps - 2 * STEPS_PER_DAY)
    window = data.step >= show_from
    sensors = _pick_sensors(data, window, count)
    figure, axes = plt.subplots(len(sensors), 1, figsize=(12, 2.4 * len(sensors) + 0.8), sharex=True)
    for ax, sensor in zip(np.atleast_1d(axes), sensors):
        _plot_sensor(ax, data, forecast, sensor, show_from)
    axes = np.atleast_1d(axes)
    handles = {}
    for ax in axes:  # one legend for all panels: not every panel has an outage or an anomaly
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(0.005, 0.962), ncol=5,
                  fontsize=9, frameon=False)
    ticks = np.arange(show_from - show_from % (STEPS_PER_DAY // 4), data.steps + 1, STEPS_PER_DAY // 4)
    axes[-1].set_xticks(ticks)
    axes[-1].set_xticklabels([f"day {t // STEPS_PER_DAY + 1}\n{(t % STEPS_PER_DAY) // 12:02d}:00" for t in ticks],
                             fontsize=8)
    axes[-1].set_xlim(show_from, data.steps)
    figure.suptitle("streamlstm replay: hour-ahead forecasts of an LSTM, per stream, on held-out data",
                    x=0.01, y=0.99, ha="left", fontsize=12, fontweight="bold")
    figure.tight_layout(rect=(0, 0, 1, 0.945))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _broken(values: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    """``values`` as floats with a NaN (a break in the line) after each index in ``breaks``."""
    return np.insert(values.astype(float), breaks + 1, np.nan)


def _plot_sensor(ax: Any, data: Dataset, forecast: np.ndarray, sensor: int, show_from: int) -> None:
    rows = np.flatnonzero((data.sensor == sensor) & (data.step >= show_from))
    steps, values = data.step[rows], data.value[rows]
    # Break the lines across outages and shade them.
    broken = np.flatnonzero(np.diff(steps) > 1)
    spans = [(steps[i] + 0.5, steps[i + 1] - 0.5) for i in broken]
    if steps[0] > show_from:
        spans.insert(0, (show_from, steps[0] - 0.5))
    for number, (begin, end) in enumerate(spans):
        ax.axvspan(begin, end, color=_COLORS["outage"], alpha=0.45, lw=0, label=None if number else "outage (no rows)")
    ax.plot(_broken(steps, broken), _broken(values, broken), color=_COLORS["reading"], lw=0.9, label="reading")
    # Each forecast is drawn at the reading it predicts, an hour after it was made (none across an outage).
    origin = data.rows_at(np.full(len(rows), sensor), steps - HORIZON)
    made = origin >= 0
    lstm = np.full(len(rows), np.nan)
    lstm[made] = data.value[origin[made]] + forecast[origin[made]] * data.scale[sensor]
    naive = np.where(made, data.value[np.maximum(origin, 0)], np.nan)
    ax.plot(_broken(steps, broken), _broken(naive, broken), color=_COLORS["naive"], lw=1.0, ls="--",
            label="last value, an hour earlier (naive)")
    ax.plot(_broken(steps, broken), _broken(lstm, broken), color=_COLORS["forecast"], lw=1.4, alpha=0.9,
            label="LSTM forecast, made an hour earlier")
    spikes = data.anomaly[rows]
    ax.scatter(steps[spikes], values[spikes], s=36, marker="x", color=_COLORS["anomaly"], zorder=3, lw=1.8,
               label="anomaly")
    ordinary = values[~spikes]
    pad = 0.15 * (ordinary.max() - ordinary.min())
    ax.set_ylim(min(ordinary.min() - pad, values.min() - pad), max(ordinary.max() + pad, values.max() + pad))
    ax.set_ylabel(f"sensor-{sensor:03d}\nreading (°C)", fontsize=9)
    ax.grid(alpha=0.25, lw=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
