"""Dashboard widget logic without a frontend: clicks and values through the widgets' Python API."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from notebook_helpers import STREAMS, batch, endless, from_thread, make_runtime, until

import streamlstm as sl
from streamlstm.errors import ArgumentTypeError

Dashboard = sl.notebook.Dashboard


def test_step_click_feeds_one_batch_and_updates_the_views():
    async def scenario():
        runtime = make_runtime()
        dash = Dashboard(runtime, endless(), key="step")
        dash.controls.step.click()
        await until(lambda: runtime.stats()["batches"] == 1, what="one batch")
        await from_thread(dash.controls.step.click)
        await until(lambda: runtime.stats()["batches"] == 2, what="a second batch")
        await dash.driver.flush()
        await until(lambda: len(dash.controls.plot.value) > 1000, what="a picture")
        return runtime, dash

    runtime, dash = asyncio.run(scenario())
    assert dash.selected == "a" and len(dash.history) == 2
    assert runtime.stats()["rows"] == 2 * len(STREAMS) == dash.rows
    assert dash.controls.plot.value[:4] == b"\x89PNG"
    assert "<span class='sl-rows'>8</span>" in dash.controls.status.value
    assert not dash.driver.playing and dash.last_error is None


def test_history_holds_the_selected_streams_inputs_outputs_and_h():
    async def scenario():
        runtime = make_runtime()
        dash = Dashboard(runtime, endless(), key="history", stream="c", speed=100)
        assert await dash.run(steps=6) == 6
        return runtime, dash

    runtime, dash = asyncio.run(scenario())
    snap = dash.history.snapshot("'c'", 0, "layer 0")
    expected_x = np.concatenate([batch(step).column("x").flatten().to_numpy().reshape(-1, 3)[2:3]
                                 for step in range(6)])
    np.testing.assert_allclose(snap.x, expected_x)
    reference = make_runtime()
    outputs = [reference.feed(batch(step)).column("output").flatten().to_numpy().reshape(-1, 2)[2]
               for step in range(6)]
    np.testing.assert_allclose(snap.y, np.stack(outputs), atol=1e-6)
    np.testing.assert_allclose(snap.h[-1], runtime.state("c")[0][0], atol=1e-6)
    assert list(snap.steps) == [1, 2, 3, 4, 5, 6] and np.isfinite(snap.h).all()


def test_several_rows_per_batch_show_h_at_the_last_row_or_every_row_with_return_state():
    async def scenario(runtime):
        dash = Dashboard(runtime, endless(rows_per_key=3), key="rows", speed=100)
        await dash.run(steps=2)
        return dash.history.snapshot("'a'", 0, "layer 0")

    sparse = asyncio.run(scenario(make_runtime()))
    assert sparse.h.shape == (6, 5) and np.isnan(sparse.h[[0, 1, 3, 4]]).all() and np.isfinite(sparse.h[[2, 5]]).all()
    dense = asyncio.run(scenario(make_runtime(return_state=True)))
    assert np.isfinite(dense.h).all()
    np.testing.assert_allclose(dense.h[[2, 5]], sparse.h[[2, 5]], atol=1e-5)


def test_reset_selected_stream_and_all_from_another_thread():
    async def scenario():
        runtime = make_runtime()
        dash = Dashboard(runtime, endless(), key="reset", stream="b", speed=100)
        await dash.run(steps=3)
        before_a = runtime.state("a")[0][0].copy()
        await from_thread(dash.controls.reset.click)
        await until(lambda: not runtime.state("b")[0][0].any(), what="stream b reset")
        np.testing.assert_array_equal(runtime.state("a")[0][0], before_a)
        assert len(dash.history._resets) == 1  # noqa: SLF001 (what the heatmap draws as reset lines)
        await from_thread(dash.controls.reset_all.click)
        await until(lambda: not any(runtime.state(k)[0][0].any() for k in STREAMS), what="all streams reset")
        await dash.driver.flush()
        return dash

    dash = asyncio.run(scenario())
    assert dash.history.snapshot("'b'", 0, "").resets == [3.5, 3.5]


def test_play_and_pause_from_another_thread_and_speed_paces_the_feed():
    async def scenario():
        runtime = make_runtime()
        dash = Dashboard(runtime, endless(), key="play", speed=5)
        await from_thread(lambda: setattr(dash.controls.speed, "value", 20.0))
        await until(lambda: dash.driver.speed == 20.0, what="the new speed")
        await from_thread(lambda: setattr(dash.controls.play, "value", True))
        await until(lambda: runtime.stats()["batches"] >= 5, what="playing")
        assert dash.controls.play.description == "Pause"
        started = asyncio.get_running_loop().time()
        await until(lambda: runtime.stats()["batches"] >= 10, what="more batches")
        elapsed = asyncio.get_running_loop().time() - started
        await from_thread(lambda: setattr(dash.controls.play, "value", False))
        await until(lambda: not dash.driver.playing, what="paused")
        await asyncio.sleep(0.1)
        paused_at = runtime.stats()["batches"]
        await asyncio.sleep(0.3)
        return runtime, dash, elapsed, paused_at

    runtime, dash, elapsed, paused_at = asyncio.run(scenario())
    assert elapsed >= 4 / 20 * 0.8, "20 batches/s must not run 5 batches faster than ~0.2 s"
    assert runtime.stats()["batches"] == paused_at, "a paused dashboard feeds nothing"
    assert dash.controls.play.description == "Play" and dash.driver.state() == "paused"


def test_stream_selector_searches_and_selects_from_another_thread():
    async def scenario():
        runtime = make_runtime()
        keys = [f"sensor-{i}" for i in range(12)]
        dash = Dashboard(runtime, endless(keys), key="select", speed=100)
        await dash.run(steps=2)
        assert dash.selected == "sensor-0"
        await from_thread(lambda: setattr(dash.controls.stream, "value", "sensor-1"))
        await until(lambda: list(dash.controls.stream.options) == ["sensor-1", "sensor-10", "sensor-11"],
                    what="options narrowed to the typed text")
        assert dash.selected == "sensor-1", "an exact key selects it at once"
        await from_thread(lambda: setattr(dash.controls.stream, "value", "sensor-11"))
        await until(lambda: dash.selected == "sensor-11", what="selection")
        assert len(dash.history) == 0, "a new selection starts an empty history"
        await dash.run(steps=3)
        return dash

    dash = asyncio.run(scenario())
    snap = dash.history.snapshot("'sensor-11'", 0, "")
    assert len(snap.steps) == 3
    assert snap.x[:, 1] == pytest.approx(np.cos(0.1 * np.arange(2, 5)) + 11, abs=1e-5)


def test_layer_selector_switches_the_heatmap_to_another_cell():
    async def scenario():
        runtime = make_runtime(units=(4, 7))
        dash = Dashboard(runtime, endless(), key="layer", speed=100)
        assert [label for label, _ in dash.controls.layer.options] == ["layer 0: LSTMCell(4)",
                                                                        "layer 1: LSTMCell(7)"]
        await dash.run(steps=3)
        await from_thread(lambda: setattr(dash.controls.layer, "value", 1))
        await until(lambda: dash.layer == 1, what="layer 1")
        await dash.driver.flush()
        return runtime, dash

    runtime, dash = asyncio.run(scenario())
    snap = dash.history.snapshot("'a'", dash.layer, "")
    assert snap.h.shape == (3, 7)
    np.testing.assert_allclose(snap.h[-1], runtime.state("a")[1][0], atol=1e-6)


def test_redraws_are_throttled_whatever_the_feed_rate():
    async def scenario():
        dash = Dashboard(make_runtime(), endless(), key="throttle", speed=100)
        calls, redraw = [], dash.redraw

        async def counted():
            calls.append(asyncio.get_running_loop().time())
            await redraw()

        dash.redraw = counted
        for _ in range(40):
            dash.controls.step.click()
        await until(lambda: dash.rows == 40 * len(STREAMS), what="40 batches")
        await dash.driver.flush()
        return calls

    calls = asyncio.run(scenario())
    gaps = np.diff(calls)
    assert len(calls) >= 1 and (gaps >= 0.099).all(), f"redraws closer than 0.1 s: {gaps}"


def test_errors_appear_in_the_dashboard_and_run_raises_them():
    def source():
        yield batch(0)
        yield batch(1).drop_columns(["x"])
        yield batch(2)

    async def scenario():
        runtime = make_runtime()
        dash = Dashboard(runtime, source(), key="errors", speed=100)
        with pytest.raises(sl.errors.StreamLSTMError, match="'x'"):
            await dash.run()
        assert not dash.driver.playing and dash.controls.play.value is False
        assert dash.controls.error.layout.display == "block" and "Traceback" in dash.controls.error.value
        assert "sl-last-error" in dash.controls.status.value and "'x'" in dash.controls.status.value
        assert await dash.run() == 1
        return runtime, dash

    runtime, dash = asyncio.run(scenario())
    assert runtime.stats()["batches"] == 2
    assert dash.controls.error.layout.display == "none", "the traceback hides after a good batch"
    assert dash.last_error is not None and "'x'" in dash.controls.status.value, "the last error stays in the status"
    assert dash.driver.state() == "source finished"


def test_remaking_a_dashboard_with_the_same_key_or_runtime_stops_the_old_one():
    async def scenario():
        runtime = make_runtime()
        first = Dashboard(runtime, endless(), key="cell", speed=100, play=True)
        await until(lambda: first.rows > 0, what="the first dashboard playing")
        second = Dashboard(make_runtime(), endless(), key="cell")
        third = Dashboard(runtime, endless(), key="other")
        await asyncio.sleep(0.05)
        rows = runtime.stats()["rows"]
        await asyncio.sleep(0.2)
        return runtime, rows, first, second, third

    runtime, rows, first, second, third = asyncio.run(scenario())
    assert first.driver.stopped and first.driver._task.done() and first.controls.play.disabled  # noqa: SLF001
    assert "replaced by a newer dashboard" in first.controls.status.value
    assert runtime.stats()["rows"] == rows, "the old task feeds nothing more"
    assert sl.notebook.live_dashboards() == {"cell": second, "other": third}


def test_stop_ends_the_task_and_threads_and_ignores_later_clicks():
    before, threads = set(threading.enumerate()), []

    async def scenario():
        dash = Dashboard(make_runtime(), endless(), key="stop", speed=100, play=True)
        await until(lambda: dash.rows > 0, what="playing")
        threads.extend(t for t in set(threading.enumerate()) - before if t.name.startswith("streamlstm-dashboard"))
        await from_thread(dash.stop)
        await until(lambda: dash.driver._task.done(), what="the task to end")  # noqa: SLF001 (the asyncio task)
        dash.controls.step.click()
        await asyncio.sleep(0.1)
        return dash

    dash = asyncio.run(scenario())
    rows = dash.rows
    assert dash.driver.state() == "stopped" and dash.driver.worker._shutdown  # noqa: SLF001 (executor shut down)
    assert threads, "the dashboard ran its feed thread"
    for thread in threads:  # a drawing or batch already running finishes first; then the thread exits
        thread.join(timeout=30)
    assert not [t.name for t in threads if t.is_alive()]
    assert dash.rows == rows
    with pytest.raises(RuntimeError, match="stopped"):
        asyncio.run(dash.run(steps=1))


def test_without_a_running_loop_a_click_shows_an_error_and_run_works():
    dash = Dashboard(make_runtime(), endless(), key="no-loop", speed=100)
    dash.controls.step.click()
    assert "no running asyncio event loop" in dash.controls.status.value
    assert asyncio.run(dash.run(steps=2)) == 2


def test_bad_arguments_name_the_argument():
    with pytest.raises(ArgumentTypeError, match="`runtime` must be a StreamRuntime"):
        Dashboard(sl.LSTM(3), [])
    with pytest.raises(ArgumentTypeError, match="`layer` must be between 0 and 0"):
        Dashboard(make_runtime(), [], layer=2)
    with pytest.raises(ArgumentTypeError, match="`source` must be"):
        Dashboard(make_runtime(), 42)
    with pytest.raises(ArgumentTypeError, match="`steps`"):
        asyncio.run(Dashboard(make_runtime(), [], key="steps").run(steps=-1))


def test_rich_displays_of_the_runtime_layers_and_dashboard():
    runtime = make_runtime(units=(4, 3))
    runtime.feed(batch(0))
    html = runtime._repr_html_()
    for text in ("streams</th><td style='text-align:left'>4 (capacity", "LSTM(4) -&gt; LSTM(3) -&gt; Linear",
                 "cpu", "MiB of stream state", "4 in 1 batches"):
        assert text in html
    assert repr(runtime).startswith("StreamRuntime(key='id', features='x')\n  streams: 4")
    assert repr(sl.LSTM(8, return_sequences=True, go_backwards=True)) == \
        "LSTM(8, return_sequences=True, go_backwards=True)"
    assert repr(sl.LSTMCell(4, dropout=0.1)) == "LSTMCell(4, dropout=0.1)"
    dash = Dashboard(runtime, [], key="display")
    bundle = dash._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == dash.widget.model_id
    assert repr(dash) == "Dashboard(key='display', source='<list>', rows=0, state='paused')"


def test_a_failing_command_is_shown_not_lost():
    async def scenario():
        dash = Dashboard(make_runtime(), endless(), key="bad-command")

        def broken(command, value):
            raise KeyError("no such stream")

        dash.apply = broken
        await from_thread(lambda: setattr(dash.controls.layer, "value", 0) or dash.driver.post("search", "zz"))
        await until(lambda: dash.last_error is not None, what="the error")
        return dash

    dash = asyncio.run(scenario())
    assert "KeyError" in dash.controls.status.value and dash.controls.error.layout.display == "block"
