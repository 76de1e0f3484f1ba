"""The demo does a fixed amount of seeded work: its printed numbers are the same on every run (only the
times differ), its LSTM clearly beats the naive forecasts, and its printout says how to reach the
``streamlstm`` command."""

from __future__ import annotations

import re

import pytest

from streamlstm.demo import run_forecast_demo

_TIMES = re.compile(r"trained [0-9.]+ s|[0-9.]+ s, [0-9,]+ rows/s")


def _printout(out_dir) -> list[str]:
    lines: list[str] = []
    run_forecast_demo(out_dir, size="small", print_fn=lines.append)
    return [_TIMES.sub("<time>", line).replace(str(out_dir), "<out>") for line in lines]


@pytest.fixture(scope="module")
def printout(tmp_path_factory) -> list[str]:
    return _printout(tmp_path_factory.mktemp("demo"))


def _printed_mae(lines: list[str], label: str) -> float:
    """The MAE column of the error table's row that starts with ``label``."""
    rows = [line.split() for line in lines if line.strip().startswith(label)]
    assert len(rows) == 1, f"one table row {label!r} expected in:\n" + "\n".join(lines)
    return float(rows[0][len(label.split())])


@pytest.mark.slow
def test_the_demo_prints_the_same_numbers_on_every_run(printout, tmp_path) -> None:
    assert printout == _printout(tmp_path)
    text = "\n".join(printout)
    assert "(8 epochs, loss" in text and "LSTM forecaster" in text
    assert ". .venv/bin/activate" in text


@pytest.mark.slow
def test_the_lstm_clearly_beats_the_last_value_and_yesterday(printout) -> None:
    lstm = _printed_mae(printout, "LSTM forecaster")
    assert lstm < 0.7 * _printed_mae(printout, "last value (naive)")
    assert lstm < 0.7 * _printed_mae(printout, "same time yesterday (naive)")
