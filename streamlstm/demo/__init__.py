"""``streamlstm demo`` (``make demo``): the layers showcase, then the sensor forecasting showcase.

Modules, each importing only those after it: :mod:`~streamlstm.demo.forecast` (train, replay, score),
:mod:`~streamlstm.demo.plot` (the PNG), :mod:`~streamlstm.demo.data` (the generated readings);
:mod:`~streamlstm.demo.layers` stands alone.
"""

from __future__ import annotations

from streamlstm.demo.forecast import run_forecast_demo
from streamlstm.demo.layers import run_layers_demo

__all__ = ["run_forecast_demo", "run_layers_demo"]
