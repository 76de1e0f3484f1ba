"""What a dashboard reads: Arrow files (with a progress bar), readers, iterators and live async feeds."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest
from notebook_helpers import STREAMS, batch, make_runtime

import streamlstm as sl
from streamlstm.errors import SourceError
from streamlstm.notebook.sources import open_feed

Dashboard = sl.notebook.Dashboard


def _table(batches: int) -> pa.Table:
    return pa.Table.from_batches([batch(step) for step in range(batches)])


def test_an_arrow_file_plays_to_the_end_with_a_progress_bar(tmp_path):
    path = tmp_path / "rows.arrow"
    table = _table(10)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)

    async def scenario():
        runtime = make_runtime()
        dash = Dashboard(runtime, path, key="file", batch_rows=8, speed=100)
        assert dash.controls.progress.layout.display == "flex" and dash.controls.progress.max == 40
        fed = await dash.run()
        return runtime, dash, fed

    runtime, dash, fed = asyncio.run(scenario())
    assert fed == 5 and runtime.stats()["rows"] == 40 and runtime.stats()["batches"] == 5
    assert dash.controls.progress.value == 40
    assert dash.driver.state() == "source finished" and "source finished" in dash.controls.status.value
    dash.controls.play.value = True   # Play on a finished source stays off
    assert asyncio.run(dash.run()) == 0 and not dash.driver.playing


def test_a_record_batch_reader_has_no_progress_bar():
    table = _table(3)

    async def scenario():
        dash = Dashboard(make_runtime(), pa.RecordBatchReader.from_batches(table.schema, table.to_batches()),
                         key="reader", speed=100)
        assert dash.controls.progress.layout.display == "none"
        return await dash.run()

    assert asyncio.run(scenario()) == 3


def test_a_live_async_feed_is_awaited_on_the_loop_and_stays_responsive():
    arrived = []

    async def live():
        for step in range(100):
            await asyncio.sleep(0.01)   # waiting for data never blocks the loop
            arrived.append(step)
            yield batch(step)

    async def scenario():
        runtime = make_runtime()
        dash = Dashboard(runtime, live(), key="live", speed=100)
        assert await dash.run(steps=5) == 5
        assert dash.driver.state() == "paused" and len(arrived) == 5
        return runtime

    runtime = asyncio.run(scenario())
    assert runtime.stats()["rows"] == 5 * len(STREAMS)


def test_tables_from_an_iterator_are_fed_as_batches():
    async def scenario():
        runtime = make_runtime()
        dash = Dashboard(runtime, iter([_table(2), _table(1)]), key="tables", speed=100)
        return await dash.run(), runtime

    fed, runtime = asyncio.run(scenario())
    assert fed == 2 and runtime.stats()["rows"] == 3 * len(STREAMS)


def test_a_source_yielding_something_else_is_an_error_in_the_dashboard():
    async def scenario():
        dash = Dashboard(make_runtime(), iter([{"id": 1}]), key="junk", speed=100)
        with pytest.raises(SourceError, match="must yield pyarrow RecordBatches or Tables, got dict"):
            await dash.run()
        return dash

    dash = asyncio.run(scenario())
    assert "SourceError" in dash.controls.status.value


def test_open_feed_errors():
    with pytest.raises(SourceError, match="does not exist"):
        open_feed("/nonexistent/file.arrow")
    with pytest.raises(sl.errors.ArgumentTypeError, match="`batch_rows` must be a positive integer, got 0"):
        open_feed([], batch_rows=0)
