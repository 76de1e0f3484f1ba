"""What the dashboard shows: the selected stream's recent steps, drawn with matplotlib into a PNG.

:class:`History` keeps the selected stream's last ``size`` steps (inputs, outputs and every layer's
``h``); :func:`stream_rows` pulls that stream's rows out of a fed batch (in the worker thread);
:class:`Renderer` draws a :class:`Snapshot` (a copy, so drawing never races the feed) into PNG bytes in
its own thread. matplotlib is imported only when the first picture is drawn.

A step's ``h`` is exact when the runtime was built with ``return_state=True`` (one column per row) or
when the stream has one row per batch (a live feed); otherwise only the last row of each batch has it
(the state after the batch) and the others show as gaps.
"""

from __future__ import annotations

import html
import io
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamlstm.arrow import fixed_list_to_numpy

__all__ = ["History", "Renderer", "Snapshot", "StreamRows", "status_html", "stream_rows"]

# Lines beyond these are left out of the line plot (a legend of 32 inputs helps nobody).
MAX_INPUT_LINES = 6
MAX_OUTPUT_LINES = 4


@dataclass
class StreamRows:
    """One batch's rows of the selected stream: inputs ``x`` [k, F], outputs ``y`` [k, O] and per
    layer ``h`` [k, units] (NaN rows where the batch did not tell)."""

    x: np.ndarray
    y: np.ndarray
    h: list[np.ndarray]


def _take_fixed(column: pa.Array, rows: np.ndarray) -> np.ndarray:
    return fixed_list_to_numpy(column.take(pa.array(rows))).astype(np.float32)   # a writable copy


def _matching_rows(keys: pa.Array, key: Any) -> np.ndarray:
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if pa.types.is_dictionary(keys.type):
        keys = keys.dictionary_decode()
    try:
        value = pa.scalar(key, keys.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return np.empty(0, np.int64)
    equal = pc.fill_null(pc.equal(keys, value), False)
    return np.flatnonzero(equal.to_numpy(zero_copy_only=False))


def stream_rows(runtime: Any, batch: pa.RecordBatch, output: pa.RecordBatch, key: Any) -> StreamRows | None:
    """The rows of stream ``key`` in a batch the runtime has just fed, or None if it has none."""
    columns = runtime.columns
    rows = _matching_rows(batch.column(columns.key), key)
    if not len(rows):
        return None
    if isinstance(columns.features, str):
        x = _take_fixed(batch.column(columns.features), rows)
    else:
        x = np.stack([batch.column(name).take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.float32)
                      for name in columns.features], axis=1)
    y = _take_fixed(output.column("output"), rows)
    units = layer_units(runtime)
    h = [np.full((len(rows), size), np.nan, np.float32) for size in units]
    if "h_0" in output.schema.names:
        for i in range(len(units)):
            h[i] = _take_fixed(output.column(f"h_{i}"), rows)
    elif key in runtime:
        for i, (state, _) in enumerate(runtime.state(key)):
            h[i][-1] = state
    return StreamRows(x, y, h)


def layer_units(runtime: Any) -> list[int]:
    """Units of each LSTM cell of the runtime's model, in the order of ``runtime.state(key)``."""
    from streamlstm.layers import LSTMCell

    return [module.units for module in runtime.model.modules() if isinstance(module, LSTMCell)]


@dataclass
class Snapshot:
    """A copy of the history to draw: ``steps`` [n], ``x`` [n, F], ``y`` [n, O], ``h`` [n, units]
    (the chosen layer), reset marks (step positions) and labels."""

    stream: str
    layer: str
    steps: np.ndarray
    x: np.ndarray
    y: np.ndarray
    h: np.ndarray
    resets: list[float] = field(default_factory=list)


class History:
    """The selected stream's last ``size`` steps. Used on the event loop thread only."""

    def __init__(self, size: int = 200) -> None:
        self.size = size
        self.clear()

    def clear(self) -> None:
        self.step = 0
        self._steps: deque[int] = deque(maxlen=self.size)
        self._x: deque[np.ndarray] = deque(maxlen=self.size)
        self._y: deque[np.ndarray] = deque(maxlen=self.size)
        self._h: deque[list[np.ndarray]] = deque(maxlen=self.size)
        self._resets: deque[float] = deque(maxlen=64)

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, rows: StreamRows) -> None:
        for i in range(len(rows.x)):
            self.step += 1
            self._steps.append(self.step)
            self._x.append(rows.x[i])
            self._y.append(rows.y[i])
            self._h.append([layer[i] for layer in rows.h])

    def mark_reset(self) -> None:
        self._resets.append(self.step + 0.5)

    def last_output(self) -> np.ndarray | None:
        return self._y[-1] if self._y else None

    def snapshot(self, stream: str, layer: int, layer_label: str) -> Snapshot:
        n = len(self._steps)
        steps = np.array(self._steps, np.int64)
        x = np.array(self._x, np.float32) if n else np.zeros((0, 0), np.float32)
        y = np.array(self._y, np.float32) if n else np.zeros((0, 0), np.float32)
        h = np.array([entry[layer] for entry in self._h], np.float32) if n and layer < len(self._h[0]) \
            else np.zeros((0, 0), np.float32)
        first = steps[0] - 0.5 if n else 0.0
        resets = [r for r in self._resets if r >= first]
        return Snapshot(stream, layer_label, steps, x, y, h, resets)


class Renderer:
    """Draws snapshots into PNG bytes with one reused matplotlib figure (call from one thread)."""

    def __init__(self, width: float = 9.6, height: float = 5.4, dpi: int = 100) -> None:
        self.size, self.dpi = (width, height), dpi
        self._figure: Any = None
        self._axes: Any = None

    def _make_figure(self) -> tuple[Any, Any]:
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:
            raise ImportError("the dashboard draws with matplotlib: pip install 'streamlstm[notebook]'") from exc

        figure = Figure(figsize=self.size, dpi=self.dpi)
        # Fixed positions (a layout engine would double the drawing time); a thin column on the right
        # holds the colorbar, so both plots keep the same x extent.
        axes = figure.subplots(2, 2, sharex="col", width_ratios=[60, 1],
                               gridspec_kw={"left": 0.06, "right": 0.95, "top": 0.92, "bottom": 0.1,
                                            "hspace": 0.28, "wspace": 0.02})
        axes[0, 1].axis("off")
        return figure, axes

    def render(self, snap: Snapshot) -> bytes:
        if self._figure is None:
            self._figure, self._axes = self._make_figure()
        figure, axes = self._figure, self._axes
        lines, heat, bar_axes = axes[0, 0], axes[1, 0], axes[1, 1]
        for plot in (lines, heat, bar_axes):
            plot.clear()
        _draw_lines(lines, snap)
        image = _draw_heatmap(heat, snap)
        if image is not None:
            bar_axes.axis("on")
            figure.colorbar(image, cax=bar_axes).ax.tick_params(labelsize=8)
        else:
            bar_axes.axis("off")
        if lines.get_legend_handles_labels()[0]:
                lines.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=8, fontsize=8, frameon=False,
                         handlelength=1.5, columnspacing=1.0, borderaxespad=0.1)
        for plot in (lines, heat):
            for step in snap.resets:
                plot.axvline(step, color="#d62728", linestyle="--", linewidth=1.2)
        for step in snap.resets:
            lines.annotate("reset", (step, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -10),
                           textcoords="offset points", color="#d62728", fontsize=8)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", facecolor="white")
        return buffer.getvalue()


_INPUT_COLORS = ["#4c72b0", "#55a868", "#8172b2", "#64b5cd", "#8c8c8c", "#ccb974"]
_OUTPUT_COLORS = ["#dd8452", "#c44e52", "#937860", "#da8bc3"]


def _style(axes: Any) -> None:
    axes.grid(True, color="#e6e6e6", linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    axes.tick_params(labelsize=8)


def _draw_lines(axes: Any, snap: Snapshot) -> None:
    _style(axes)
    axes.set_title(f"stream {snap.stream}: inputs and outputs over its last {len(snap.steps)} steps",
                   fontsize=10, loc="left")
    if not len(snap.steps):
        axes.text(0.5, 0.5, f"waiting for rows of stream {snap.stream}", ha="center", va="center",
                  transform=axes.transAxes, color="#777777")
        axes.set_xticks([])
        axes.set_yticks([])
        return
    for i in range(min(snap.x.shape[1], MAX_INPUT_LINES)):
        axes.plot(snap.steps, snap.x[:, i], color=_INPUT_COLORS[i % len(_INPUT_COLORS)], linewidth=1.0,
                  alpha=0.75, label=f"x[{i}]")
    for i in range(min(snap.y.shape[1], MAX_OUTPUT_LINES)):
        axes.plot(snap.steps, snap.y[:, i], color=_OUTPUT_COLORS[i % len(_OUTPUT_COLORS)], linewidth=2.2,
                  label=f"output[{i}]")


def _draw_heatmap(axes: Any, snap: Snapshot) -> Any:
    axes.set_title(f"hidden state h, {snap.layer}", fontsize=10, loc="left")
    axes.tick_params(labelsize=8)
    axes.set_xlabel("step of the stream", fontsize=9)
    axes.set_ylabel("unit", fontsize=9)
    if not len(snap.steps) or not snap.h.size:
        axes.set_yticks([])
        return None
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#f0f0f0")
    finite = np.abs(snap.h[np.isfinite(snap.h)])
    # Symmetric around zero and scaled to what is on screen: an untrained model's small h still shows.
    bound = max(float(finite.max()), 1e-3) if finite.size else 1.0
    first, last = snap.steps[0] - 0.5, snap.steps[-1] + 0.5
    return axes.imshow(np.ma.masked_invalid(snap.h.T), aspect="auto", origin="lower", cmap=cmap,
                       vmin=-bound, vmax=bound, interpolation="nearest",
                       extent=(first, last, -0.5, snap.h.shape[1] - 0.5))


def status_html(stats: dict[str, Any], rate: float, state: str, error: str | None, note: str | None = None) -> str:
    """The status line: rows, streams, rows/s, batches, the driver's state and the last error."""
    parts = [
        f"<b>rows</b> <span class='sl-rows'>{stats.get('rows', 0):,}</span>",
        f"<b>streams</b> {stats.get('streams', 0):,}",
        f"<b>rows/s</b> {rate:,.0f}",
        f"<b>batches</b> {stats.get('batches', 0):,}",
        f"<span class='sl-state'>{html.escape(state)}</span>",
    ]
    if stats.get("loss") is not None:   # a StreamTrainer's last batch
        parts.insert(4, f"<b>loss</b> <span class='sl-loss'>{stats['loss']:.4g}</span>")
    shown = "none" if error is None else html.escape(error, quote=False)
    color = "#777777" if error is None else "#c62828"
    parts.append(f"<b>last error</b> <span class='sl-last-error' style='color:{color}'>{shown}</span>")
    if note:
        parts.append(f"<i>{html.escape(note, quote=False)}</i>")
    return "<span style='font-family:monospace;font-size:12px'>" + " &middot; ".join(parts) + "</span>"
