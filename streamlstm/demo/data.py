"""The demo's sensor readings: a week (or a few days) of 5-minute temperature readings (°C) from many
sensors.

Daily and weekly cycles, slow drifts (AR(1)), measurement noise, outages (rows simply missing) and
anomalies (spikes), in time order with the sensors interleaved, as they were recorded live.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["HORIZON", "STEPS_PER_DAY", "TRAIN_FRACTION", "Dataset", "make_dataset"]

STEPS_PER_DAY = 288  # 5-minute readings
HORIZON = 12  # the forecast looks an hour (12 readings) ahead
TRAIN_FRACTION = 5 / 7  # the first days train the forecaster (and give each sensor's mean and scale)


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

    def rows_at(self, sensor: np.ndarray, step: np.ndarray) -> np.ndarray:
        """The row of each (sensor, step) reading; -1 where there is none (an outage, or outside the data)."""
        grid = np.full((self.sensors, self.steps), -1)
        grid[self.sensor, self.step] = np.arange(len(self.step))
        inside = (step >= 0) & (step < self.steps)
        return np.where(inside, grid[sensor, np.clip(step, 0, self.steps - 1)], -1)


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
    noise = rng.normal(0, 0.2, (sensors, steps)) * amp / 4
    value = base + amp * (daily + weekly) + drift + noise
    anomaly = rng.random((sensors, steps)) < 0.002
    value = np.where(anomaly, value + rng.choice([-1, 1], value.shape) * rng.uniform(3, 6, value.shape) * amp / 2,
                     value)
    present = np.ones((sensors, steps), bool)
    for s in range(sensors):  # outages: a sensor sends nothing for 30 minutes to 8 hours
        for _ in range(rng.poisson(1.5)):
            start = rng.integers(0, steps)
            present[s, start:start + rng.integers(6, 96)] = False
    train = t < int(steps * TRAIN_FRACTION)
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
