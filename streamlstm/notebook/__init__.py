"""Drive streams from Jupyter: :class:`Dashboard`, a widget that feeds a source into a runtime and
shows one stream's inputs, outputs and hidden state as it goes.

Modules: :mod:`~streamlstm.notebook.sources` (what a dashboard reads), :mod:`~streamlstm.notebook.driver`
(the asyncio task and its worker thread), :mod:`~streamlstm.notebook.controls` (widgets and their CSS
classes), :mod:`~streamlstm.notebook.views` (history and matplotlib drawing) and
:mod:`~streamlstm.notebook.dashboard` (the wiring). matplotlib is imported when the first picture is drawn.
"""

from __future__ import annotations

from streamlstm.notebook.dashboard import Dashboard, live_dashboards

__all__ = ["Dashboard", "live_dashboards"]
