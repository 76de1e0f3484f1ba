"""The dashboard's widgets and layout, each with a stable CSS class for browser tests.

=================== =========================== ===============================================
CSS class           widget                      does
=================== =========================== ===============================================
``sl-dashboard``    VBox                        the whole dashboard
``sl-play``         ToggleButton                play / pause the feed
``sl-step``         Button                      feed one batch
``sl-reset``        Button                      reset the selected stream's carries
``sl-reset-all``    Button                      reset every stream's carries
``sl-speed``        FloatLogSlider              batches per second while playing
``sl-stream``       Combobox                    the stream to show (type to search)
``sl-layer``        Dropdown                    which LSTM cell's ``h`` the heatmap shows
``sl-plot``         Image                       inputs/outputs and the ``h`` heatmap (PNG)
``sl-progress``     IntProgress                 rows read of a finite source
``sl-status``       HTML                        rows, streams, rows/s, batches, state, last error
``sl-error``        HTML                        the last exception's traceback (hidden if none)
=================== =========================== ===============================================

This module only builds widgets; :mod:`streamlstm.notebook.dashboard` wires their events.
"""

from __future__ import annotations

import contextlib
import html
import threading
from collections.abc import Iterator

import ipywidgets as w

__all__ = ["Controls", "SPEED_RANGE"]

SPEED_RANGE = (0.5, 100.0)   # batches per second
_CSS = """
<style>
.sl-dashboard { border: 1px solid #e0e0e0; border-radius: 6px; padding: 8px 10px; background: #fff; }
.sl-dashboard .sl-title { font-size: 14px; margin-bottom: 4px; }
.sl-dashboard .sl-row { gap: 6px 14px; }
.sl-dashboard .sl-plot img, .sl-dashboard img.sl-plot { max-width: 100%; height: auto; }
.sl-dashboard .sl-error pre { background: #fdecea; color: #611a15; padding: 6px 8px; border-radius: 4px;
  white-space: pre-wrap; font-size: 12px; margin: 4px 0; }
</style>
"""


def _button(description: str, css: str, icon: str, tooltip: str, style: str = "") -> w.Button:
    button = w.Button(description=description, icon=icon, tooltip=tooltip, button_style=style,
                      layout=w.Layout(width="auto"))
    button.add_class(css)
    return button


def _row(children: list[w.Widget]) -> w.HBox:
    row = w.HBox(children, layout=w.Layout(align_items="center", flex_flow="row wrap"))
    row.add_class("sl-row")
    return row


class Controls:
    """Every widget of one dashboard, laid out in :attr:`box`.

    Args:
        title (str): shown above the controls (escaped).
        speed (float): initial batches per second, within :data:`SPEED_RANGE`.
        layers (list[str]): one label per LSTM cell, for the layer selector.
        total_rows (int | None): rows of a finite source (shows the progress bar), None to hide it.
    """

    def __init__(self, title: str, speed: float, layers: list[str], total_rows: int | None) -> None:
        self._quiet = threading.local()
        self.play = w.ToggleButton(value=False, description="Play", icon="play", tooltip="Play / pause the feed",
                                   button_style="success", layout=w.Layout(width="auto"))
        self.play.add_class("sl-play")
        self.step = _button("Step", "sl-step", "step-forward", "Feed one batch")
        self.reset = _button("Reset stream", "sl-reset", "undo", "Zero the selected stream's carries", "warning")
        self.reset_all = _button("Reset all", "sl-reset-all", "refresh", "Zero every stream's carries", "danger")
        low, high = SPEED_RANGE
        self.speed = w.FloatLogSlider(value=min(max(speed, low), high), base=10, min=-0.3, max=2.0, step=0.05,
                                      description="batches/s", readout_format=".1f",
                                      style={"description_width": "initial"}, layout=w.Layout(width="260px"))
        self.speed.add_class("sl-speed")
        self.stream = w.Combobox(value="", options=[], placeholder="type to search streams",
                                 description="stream", ensure_option=False,
                                 style={"description_width": "initial"}, layout=w.Layout(width="230px"))
        self.stream.add_class("sl-stream")
        self.layer = w.Dropdown(options=[(label, i) for i, label in enumerate(layers)] or [("no LSTM", 0)],
                                value=0, description="layer", style={"description_width": "initial"},
                                layout=w.Layout(width="240px"))
        self.layer.add_class("sl-layer")
        self.plot = w.Image(format="png", layout=w.Layout(width="100%", max_width="960px"))
        self.plot.add_class("sl-plot")
        self.progress = w.IntProgress(value=0, min=0, max=max(total_rows or 1, 1), description="rows read",
                                      bar_style="info", style={"description_width": "initial"},
                                      layout=w.Layout(width="420px",
                                                      display="flex" if total_rows is not None else "none"))
        self.progress.add_class("sl-progress")
        self.status = w.HTML(value="")
        self.status.add_class("sl-status")
        self.error = w.HTML(value="", layout=w.Layout(display="none"))
        self.error.add_class("sl-error")
        header = w.HTML(f"{_CSS}<div class='sl-title'><b>streamlstm</b> dashboard &middot; "
                        f"<code>{html.escape(title)}</code></div>")
        buttons = _row([self.play, self.step, self.reset, self.reset_all])
        selectors = _row([self.speed, self.stream, self.layer])
        toolbar = _row([buttons, selectors])
        footer = _row([self.progress, self.status])
        self.box = w.VBox([header, toolbar, self.plot, footer, self.error])
        self.box.add_class("sl-dashboard")

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Set widget values without their handlers posting commands (in this thread only: a user's
        click delivered on another thread meanwhile still counts)."""
        self._quiet.active = True
        try:
            yield
        finally:
            self._quiet.active = False

    @property
    def echo(self) -> bool:
        """True inside :meth:`quietly` in this thread: the change came from the dashboard itself."""
        return getattr(self._quiet, "active", False)

    def show_playing(self, playing: bool) -> None:
        """Make the Play button say what a click will do next."""
        if self.play.value != playing:
            with self.quietly():
                self.play.value = playing
        self.play.description = "Pause" if playing else "Play"
        self.play.icon = "pause" if playing else "play"
        self.play.button_style = "" if playing else "success"

    def show_error(self, text: str | None) -> None:
        """Show a traceback under the plots, or hide the box when ``text`` is None."""
        if text is None:
            self.error.value, self.error.layout.display = "", "none"
        else:
            self.error.value = f"<pre>{html.escape(text)}</pre>"
            self.error.layout.display = "block"

    def disable(self) -> None:
        """Grey out every control (a stopped dashboard)."""
        for widget in (self.play, self.step, self.reset, self.reset_all, self.speed, self.stream, self.layer):
            widget.disabled = True
