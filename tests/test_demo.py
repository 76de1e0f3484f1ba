"""The demo does a fixed amount of seeded work: its printed numbers are the same on every run (only the
times differ), and its printout says how to reach the ``streamlstm`` command."""

from __future__ import annotations

import re

import pytest

from streamlstm.demo import run_forecast_demo

_TIMES = re.compile(r"trained [0-9.]+ s|[0-9.]+ s, [0-9,]+ rows/s")


def _printout(out_dir) -> list[str]:
    lines: list[str] = []
    run_forecast_demo(out_dir, size="small", print_fn=lines.append)
    return [_TIMES.sub("<time>", line).replace(str(out_dir), "<out>") for line in lines]


@pytest.mark.slow
def test_the_demo_prints_the_same_numbers_on_every_run(tmp_path) -> None:
    first, second = _printout(tmp_path / "a"), _printout(tmp_path / "b")
    assert first == second
    text = "\n".join(first)
    assert "(8 epochs, loss" in text and "LSTM forecaster" in text
    assert ". .venv/bin/activate" in text
