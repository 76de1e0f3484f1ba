"""``Dashboard``: watch, pause, step and reset a :class:`~streamlstm.StreamRuntime` (or a learning
:class:`~streamlstm.StreamTrainer`) fed by a source."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from streamlstm.errors import ArgumentTypeError
from streamlstm.notebook.controls import Controls
from streamlstm.notebook.driver import Driver
from streamlstm.notebook.sources import DEFAULT_BATCH_ROWS, open_feed
from streamlstm.notebook.views import History, Renderer, layer_units, status_html, stream_rows

__all__ = ["Dashboard", "live_dashboards"]

# One live dashboard per key: re-running the cell that makes one stops the one it made before.
_LIVE: dict[str, Dashboard] = {}
_MAX_STREAM_OPTIONS = 500
_KEYS_EVERY_SECONDS = 1.0


def live_dashboards() -> dict[str, Dashboard]:
    """The dashboards not stopped yet, by key (a copy)."""
    return dict(_LIVE)


class Dashboard:
    """A Jupyter widget that feeds ``source`` into ``runtime`` and shows one stream as it goes.

    Given a :class:`~streamlstm.StreamTrainer` in place of the runtime, every batch is learned
    (:meth:`~streamlstm.StreamTrainer.learn`: its prequential outputs are shown) and the status line
    also shows the last batch's loss.

    Controls: Play/Pause, Step (one batch), Reset stream (the selected one), Reset all, speed (batches
    per second), a searchable stream selector and the layer whose ``h`` the heatmap shows. Views: the
    selected stream's inputs and outputs over its recent steps, a heatmap of its ``h``, a status line
    (rows, streams, rows/s, last error) and, for finite sources, a progress bar. Errors (a bad batch,
    a failing source) pause the feed and appear under the plots with their traceback.

    The feed is an asyncio task on the kernel's running loop and compute runs in one worker thread, so
    the kernel stays responsive (see :mod:`streamlstm.notebook.driver`). Outside a running loop,
    nothing happens until ``await dashboard.run(...)``.

    Args:
        runtime (StreamRuntime | StreamTrainer): what the batches are fed to (its columns say which are keys,
            features, ...). Pass ``return_state=True`` to it to see every step's ``h``; otherwise a
            stream with several rows in one batch shows ``h`` only at its last row.
        source: an Arrow/Parquet path, a pyarrow Table, RecordBatch or RecordBatchReader, or an
            iterator or async iterator of record batches (a live feed); see
            :mod:`streamlstm.notebook.sources`.
        key (str, "default"): making a new dashboard with the key of a live one stops the old one, so
            re-running a cell never leaves two feeds behind. Give dashboards that should live side by
            side different keys. A dashboard on the same runtime is stopped too, whatever its key.
        batch_rows (int, 256): rows per batch, for paths and in-memory tables.
        speed (float, 5.0): batches per second while playing (0.5 to 100).
        history (int, 200): steps of the selected stream kept for the plots.
        stream (int | str, None): the stream to show; None = the first key of the first batch.
        layer (int, 0): the LSTM cell whose ``h`` is shown (in model order).
        play (bool, False): start playing at once (inside a running event loop).

    Example:
        >>> import pyarrow as pa, streamlstm as sl
        >>> runtime = sl.StreamRuntime(sl.LSTM(4), key="id", features="x")
        >>> x = pa.FixedSizeListArray.from_arrays(pa.array([0.5] * 6, pa.float32()), 3)
        >>> dash = sl.notebook.Dashboard(runtime, [pa.record_batch({"id": [1, 2], "x": x})], key="doc")
        >>> import asyncio; asyncio.run(dash.run())
        1
        >>> len(runtime), dash.selected
        (2, 1)
        >>> dash.stop()
    """

    def __init__(self, runtime: Any, source: Any, *, key: str = "default", batch_rows: int = DEFAULT_BATCH_ROWS,
                 speed: float = 5.0, history: int = 200, stream: Any = None, layer: int = 0,
                 play: bool = False) -> None:
        from streamlstm.runtime import StreamRuntime
        from streamlstm.train import StreamTrainer

        self.trainer = runtime if isinstance(runtime, StreamTrainer) else None
        if self.trainer is not None:
            runtime = self.trainer.runtime
        if not isinstance(runtime, StreamRuntime):
            raise ArgumentTypeError(f"`runtime` must be a StreamRuntime or a StreamTrainer, got "
                                    f"{type(runtime).__name__}")
        if not isinstance(key, str):
            raise ArgumentTypeError(f"`key` must be a str, got {type(key).__name__}")
        if isinstance(history, bool) or not isinstance(history, int) or history < 2:
            raise ArgumentTypeError(f"`history` must be an integer >= 2, got {history!r}")
        self.key, self.runtime = key, runtime
        self.feed = open_feed(source, batch_rows)
        self.units = layer_units(runtime)
        labels = [f"layer {i}: LSTMCell({units})" for i, units in enumerate(self.units)]
        if not 0 <= layer < max(len(labels), 1):
            raise ArgumentTypeError(f"`layer` must be between 0 and {len(labels) - 1}, got {layer!r}")
        self.controls = Controls(self.feed.description, speed, labels, self.feed.total_rows)
        self.controls.layer.value = layer
        self.history = History(history)
        self.renderer = Renderer()
        self.driver = Driver(self, self.controls.speed.value)
        self.selected: Any = None
        self.layer = layer
        self._known: dict[str, Any] = {}
        self._keys_at = float("-inf")
        self._stats: dict[str, Any] = self._runtime_stats()
        self._rows_read = 0
        self._note: str | None = None
        self._wire()
        for other in list(_LIVE.values()):
            if other.key == key or other.runtime is runtime:
                other.stop(reason=f"replaced by a newer dashboard (key {key!r})")
        _LIVE[key] = self
        if stream is not None:
            self._select(stream)
        self._show_status()
        if self.driver.bind() and play:
            self.driver.post("play", True)

    # -- widget events: every handler only posts a command ------------------------------------------
    def _wire(self) -> None:
        c, post = self.controls, self.driver.post
        c.play.observe(lambda change: c.echo or post("play", change["new"]), "value")
        c.step.on_click(lambda _: post("step"))
        c.reset.on_click(lambda _: post("reset", "stream"))
        c.reset_all.on_click(lambda _: post("reset", "all"))
        c.speed.observe(lambda change: post("speed", change["new"]), "value")
        c.stream.observe(lambda change: c.echo or post("search", change["new"]), "value")
        c.layer.observe(lambda change: c.echo or post("layer", change["new"]), "value")

    def apply(self, command: str, value: Any) -> None:
        """Commands the driver hands back (on the loop thread): ``search``, ``select`` and ``layer``."""
        if command == "search":
            text = str(value).strip()
            self._offer(text)
            if text in self._known:
                self._select(self._known[text])
        elif command == "select":
            self._select(value)
        elif command == "layer":
            self.layer = int(value)
            self.driver.changed()

    def _select(self, key: Any) -> None:
        if key != self.selected:
            self.selected = key
            self.history.clear()
            self._known.setdefault(str(key), key)
            self.driver.changed()
        if self.controls.stream.value != str(key):
            with self.controls.quietly():
                self.controls.stream.value = str(key)

    def _offer(self, text: str) -> None:
        """Offer the known keys containing ``text`` (the browser narrows further as one types)."""
        matches = [name for name in self._known if text in name][:_MAX_STREAM_OPTIONS]
        if list(self.controls.stream.options) != matches:
            self.controls.stream.options = matches

    # -- jobs (run by the driver, one at a time) -----------------------------------------------------
    async def step_job(self) -> bool:
        batch = await self.feed.next(self.driver.in_worker)
        if batch is None:
            return False
        now = time.monotonic()
        want_keys = now - self._keys_at >= _KEYS_EVERY_SECONDS
        if want_keys:
            self._keys_at = now
        key, rows, stats, keys = await self.driver.in_worker(self._feed_batch, batch, self.selected, want_keys)
        self._rows_read += batch.num_rows
        self.driver.count(batch.num_rows)
        self._stats = stats
        if keys is not None:
            self._known = {str(k): k for k in keys}
            self._offer(self.controls.stream.value)
        if self.selected is None and key is not None:
            self._select(key)
        if rows is not None and key == self.selected:
            self.history.add(rows)
        return True

    def _feed_batch(self, batch: pa.RecordBatch, key: Any, want_keys: bool) -> tuple[Any, ...]:
        """In the worker thread: feed, then pull out what the views need (``key`` None: the batch's first)."""
        output = self.runtime.feed(batch) if self.trainer is None else self.trainer.learn(batch)
        if key is None and batch.num_rows:
            key = batch.column(self.runtime.columns.key)[0].as_py()
        rows = None if key is None else stream_rows(self.runtime, batch, output, key)
        keys = self.runtime.keys() if want_keys else None
        return key, rows, self._runtime_stats(), keys

    def _runtime_stats(self) -> dict[str, Any]:
        """The runtime's counters; with a trainer, its ``batches`` and last ``loss`` (for the status line)."""
        stats = self.runtime.stats()
        if self.trainer is not None:
            learned = self.trainer.stats()
            stats.update(rows=learned["rows"], batches=learned["batches"], loss=learned["loss"])
        return stats

    async def reset_job(self, which: str) -> None:
        if which == "all":
            await self.driver.in_worker(self.runtime.reset, None)
        elif self.selected is not None:
            await self.driver.in_worker(self.runtime.reset, [self.selected])
        else:
            return
        self.history.mark_reset()
        whom = "all streams" if which == "all" else repr(self.selected)
        self._note = f"reset {whom} (at step {self.history.step})"
        self._stats = await self.driver.in_worker(self._runtime_stats)

    # -- views ---------------------------------------------------------------------------------------
    async def redraw(self) -> None:
        """Status, progress and the plots (called by the driver at most ~10 times a second)."""
        self._show_status()
        label = f"layer {self.layer}: LSTMCell({self.units[self.layer]})" if self.units else "no LSTM"
        stream = "(none yet)" if self.selected is None else repr(self.selected)
        snapshot = self.history.snapshot(stream, self.layer, label)
        png = await self.driver.in_painter(self.renderer.render, snapshot)
        if not self.driver.stopped:
            self.controls.plot.value = png

    def _show_status(self) -> None:
        d = self.driver
        error = None if d.error is None else f"{type(d.error).__name__}: {d.error}"
        self.controls.status.value = status_html(self._stats, d.rate(), d.state(), error, self._note)
        if self.feed.total_rows is not None:
            self.controls.progress.value = min(self._rows_read, self.controls.progress.max)

    def state_changed(self) -> None:
        """Play/pause, errors and stopping show at once, not at the next redraw."""
        self.controls.show_playing(self.driver.playing)
        self.controls.show_error(self.driver.error_text)
        if self.driver.stopped:
            self.controls.disable()
        self._show_status()

    # -- public API ----------------------------------------------------------------------------------
    @property
    def widget(self) -> Any:
        """The ipywidgets ``VBox`` holding the whole dashboard."""
        return self.controls.box

    @property
    def last_error(self) -> BaseException | None:
        """The last exception raised by the source, the runtime or a drawing (also shown in the dashboard)."""
        return self.driver.error

    @property
    def rows(self) -> int:
        """Rows fed by this dashboard so far."""
        return self.driver.rows

    async def run(self, steps: int | None = None) -> int:
        """Play ``steps`` batches at the current speed (None: until the source ends or Pause is
        clicked), then pause; returns the number of batches fed. An error that stops the feed is shown
        in the dashboard and raised here. The views are up to date when it returns."""
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ArgumentTypeError(f"`steps` must be a non-negative integer or None, got {steps!r}")
        return await self.driver.run(steps)

    def stop(self, reason: str | None = None) -> None:
        """Stop the feed task and its threads for good and grey out the controls (idempotent)."""
        if _LIVE.get(self.key) is self:
            del _LIVE[self.key]
        if reason is not None:
            self._note = reason
        self.driver.stop()
        self._show_status()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return (f"Dashboard(key={self.key!r}, source={self.feed.description!r}, rows={self.rows:,}, "
                f"state={self.driver.state()!r})")
