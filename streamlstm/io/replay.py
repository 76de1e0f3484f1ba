"""Replay recorded Arrow data through a model, stream by stream, exactly as it would have run live.

Three entry points share one set of options:

- :func:`replay` yields the output record batches (an iterator: memory stays flat);
- :func:`replay_table` collects them into a ``pyarrow.Table``;
- :func:`replay_to_file` writes them to an Arrow IPC or Parquet file, optionally checkpointed and
  resumable after a crash (what ``streamlstm replay`` runs).

Options (keyword-only; the ``streamlstm replay`` flags of the same names mean the same):

    key (str, "stream_id"), features (str | list[str], "x"), mask, reset, end, time (str, None),
    mode (str, "auto"), device (str, None): as for :class:`streamlstm.StreamRuntime`.
    batch_rows (int, 65536): rows per batch fed to the runtime. Batches are cut at fixed row
        positions of the input, so any run (and any resumed run) feeds the very same batches.
    progress (bool, None): show a ``tqdm.auto`` bar (rows, rows/s, streams, ETA when the input's
        length is known); None = when standard error is a terminal or in a notebook.
    shards (int, None): replay on a :class:`streamlstm.ShardedRuntime` of this many Ray actors (each
        owning a range of key groups); the driver reads and cuts the batches, and the outputs come back
        in input order, row for row what one runtime gives. Checkpoints are runtime files either way; a
        lost shard is restarted from the last one (without ``checkpoint``, a lost shard is an error:
        the driver keeps no copy of the input).
    ray_address (str, None): the Ray cluster for ``shards`` ("auto": the one ``ray start`` runs here);
        None starts a local Ray.
    cpus_per_shard (float, 1.0): CPUs Ray reserves for each shard actor.

``source`` is any input :func:`streamlstm.io.sources.open_source` accepts; ``model`` is a torch
module (see :class:`streamlstm.StreamRuntime`) or the path of a file written by
:func:`streamlstm.save_model` (or a Keras ``.keras``/``.h5`` file, read by ``load_keras``).
Every output row follows its input row: the key, the time when configured, and ``output``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from streamlstm.errors import ConfigError, FileError, KerasImportError, SourceError, StreamError, StreamLSTMError
from streamlstm.io.checkpoint import Checkpoint, CheckpointRecord
from streamlstm.io.checksum import fingerprint as file_fingerprint
from streamlstm.io.paths import require_directory
from streamlstm.io.runtime_file import load_runtime
from streamlstm.io.sinks import FileSink, ResumableArrowSink, output_format, partial_path
from streamlstm.io.sources import Source, open_source
from streamlstm.runtime import StreamRuntime

__all__ = ["DEFAULT_BATCH_ROWS", "ReplaySummary", "replay", "replay_table", "replay_to_file"]

DEFAULT_BATCH_ROWS = 65536


@dataclass
class ReplaySummary:
    """What a :func:`replay_to_file` run did: ``rows`` and ``seconds`` of this run (after
    ``resumed_at`` rows a checkpoint already held), ``streams`` seen in all, and the ``output`` file;
    ``fresh_start`` when ``resume`` found no checkpoint and the run started from the first row."""

    rows: int
    streams: int
    seconds: float
    output: Path
    resumed_at: int = 0
    fresh_start: bool = False

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        resumed = f" (resumed at row {self.resumed_at:,})" if self.resumed_at else ""
        if self.fresh_start:
            resumed = " (--resume: no checkpoint yet, started from the first row)"
        return (f"replayed {self.rows:,} rows of {self.streams:,} streams in {self.seconds:.2f} s "
                f"({self.rows_per_second:,.0f} rows/s){resumed} -> {self.output}")


def load_model_file(path: str | os.PathLike, device: Any = None) -> torch.nn.Module:
    """A model from a file :func:`streamlstm.load_model` reads: a :func:`streamlstm.save_model` file or
    a Keras ``.keras``/``.h5`` file (whose import errors pass through unchanged)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"model file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    from streamlstm.io.model_file import load_model

    try:
        return load_model(path, device=device)
    except (KerasImportError, FileError):  # they name the file already
        raise
    except StreamLSTMError as exc:
        raise SourceError(f"model file {path} cannot be read: {exc}") from exc
    except (pa.ArrowInvalid, OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"model file {path} is not a streamlstm model file (written by save_model): "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from exc


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


class _Replay:
    """One prepared replay: the source opened, the model loaded, the runtime built, nothing read yet."""

    def __init__(self, source: Any, model: Any, *, key: str = "stream_id", features: str | list[str] = "x",
                 mask: str | None = None, reset: str | None = None, end: str | None = None,
                 time: str | None = None, mode: str = "auto", batch_rows: int = DEFAULT_BATCH_ROWS,
                 device: Any = None, progress: bool | None = None, shards: int | None = None,
                 ray_address: str | None = None, cpus_per_shard: float = 1.0, recover: bool = False) -> None:
        if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
            raise ConfigError(f"`batch_rows` must be a positive integer, got {batch_rows!r}")
        self.source: Source = open_source(source)
        feature_columns = [features] if isinstance(features, str) else list(features)
        self.columns = [key, *feature_columns, *(c for c in (mask, reset, end, time) if c is not None)]
        self.source.require_columns(self.columns)
        self.model_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
        self.model = load_model_file(model, device) if self.model_path is not None else model
        self.options = {"key": key, "features": features, "mask": mask, "reset": reset, "end": end,
                        "time": time, "mode": mode}
        self.batch_rows, self.device = batch_rows, device
        self.cluster = None if shards is None else {"shards": shards, "address": ray_address,
                                                    "num_cpus": cpus_per_shard, "recover": recover}
        self.runtime = self._runtime(self.model)
        self.progress = (sys.stderr.isatty() or _in_notebook()) if progress is None else bool(progress)

    def _runtime(self, model: Any) -> Any:
        if self.cluster is None:
            return StreamRuntime(model, device=self.device, **self.options)
        from streamlstm.cluster import ShardedRuntime

        return ShardedRuntime(model, device=self.device, **self.cluster, **self.options)

    def resume_from(self, path: Path) -> None:
        """Continue from a runtime file of a checkpoint (on as many shards as this replay runs)."""
        if self.cluster is None:
            self.runtime = load_runtime(path, device=self.device)
            return
        from streamlstm.cluster import ShardedRuntime

        self.runtime.close()
        self.runtime = ShardedRuntime.load(path, device=self.device, **self.cluster)

    def outputs(self, start_row: int = 0) -> Iterator[tuple[int, pa.RecordBatch]]:
        """``(input rows, output batch)`` per batch from ``start_row`` on, with the progress bar."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.source.total_rows, initial=start_row, unit=" rows", unit_scale=True,
                   disable=not self.progress, dynamic_ncols=True, desc="replay", leave=False)
        try:
            with torch.inference_mode():
                batches = self.source.batches(self.batch_rows, start_row=start_row, columns=self.columns)
                feeds = iter(self.runtime.feed_many(batches) if self.cluster is not None
                             else map(self.runtime.feed, batches))
                row = start_row   # the first input row of the batch being fed
                while True:
                    try:
                        out = next(feeds)
                    except StopIteration:
                        break
                    except StreamError as exc:
                        raise self._at_input_row(exc, row) from exc
                    row += out.num_rows   # one output row per input row
                    yield out.num_rows, out
                    if self.progress:
                        bar.update(out.num_rows)
                        bar.set_postfix(streams=f"{self.streams:,}", refresh=False)
        finally:
            bar.close()

    def _at_input_row(self, exc: StreamError, first_row: int) -> StreamError:
        """``exc`` (a batch starting at input row ``first_row`` was refused) naming the input row instead."""
        if exc.row is None:
            return exc
        where = self.source.where(first_row + exc.row)
        return type(exc)(str(exc).replace(f"row {exc.row}", where, 1), row=first_row + exc.row)

    @property
    def streams(self) -> int:
        return int(self.runtime.stats()["streams_created"])

    def checkpointed(self, path: Path) -> None:
        """A sharded runtime restarts lost shards from ``path`` on and forgets the batches before it."""
        if self.cluster is not None:
            self.runtime.checkpointed(path)

    def close(self) -> None:
        """End the shard actors of a sharded replay (nothing to do for one runtime)."""
        if self.cluster is not None:
            self.runtime.close()

    def empty_output(self) -> pa.Schema:
        """The output schema, from feeding the runtime an empty batch (for inputs without rows)."""
        schema = pa.schema([self.source.schema.field(name) for name in self.columns])
        empty = pa.RecordBatch.from_pylist([], schema=schema)
        return self.runtime.feed(empty).schema

    def fingerprint(self, out: Path, format: str) -> dict[str, Any]:
        """The options that decide the output: a resumed run must match them exactly."""
        files = [[os.path.abspath(f), *file_fingerprint(f)] for f in self.source.files]
        described = self.source.description
        return {"input": described if described.startswith(("<", "-")) else os.path.abspath(described),
                "input_files": files, "input_rows": self.source.total_rows, "model": self._model_digest(),
                **self.options, "batch_rows": self.batch_rows, "output": os.path.abspath(out), "format": format}

    def _model_digest(self) -> str | None:
        if self.model_path is not None:
            return hashlib.sha256(self.model_path.read_bytes()).hexdigest()
        from streamlstm.io.model_file import model_to_bytes

        try:
            return hashlib.sha256(model_to_bytes(self.model)).hexdigest()
        except StreamLSTMError:  # a module save_model cannot describe: not checked on resume
            return None


def replay(source: Any, model: Any, **options: Any) -> Iterator[pa.RecordBatch]:
    """Replay ``source`` through ``model``; yields one output batch per input batch (see the module docstring).

    The input is opened, the model loaded and the columns checked before this returns, so a missing
    file or column raises here, not at the first ``next()``.

    Example:
        >>> import pyarrow as pa, streamlstm as sl
        >>> x = pa.FixedSizeListArray.from_arrays(pa.array([0.5] * 12, pa.float32()), 2)
        >>> table = pa.table({"stream_id": [1, 2, 1, 2, 1, 2], "x": x})
        >>> out = sl.replay_table(table, sl.LSTM(3), batch_rows=4)
        >>> out.num_rows, out.schema.names
        (6, ['stream_id', 'output'])
    """
    job = _Replay(source, model, **options)
    return _closing(job)


def _closing(job: _Replay) -> Iterator[pa.RecordBatch]:
    try:
        yield from (out for _, out in job.outputs())
    finally:
        job.close()


def replay_table(source: Any, model: Any, **options: Any) -> pa.Table:
    """:func:`replay` collected into one ``pyarrow.Table`` (for data that fits in memory)."""
    job = _Replay(source, model, **options)
    try:
        batches = [out for _, out in job.outputs()]
        return pa.Table.from_batches(batches) if batches else job.empty_output().empty_table()
    finally:
        job.close()


def replay_to_file(source: Any, model: Any, out: str | os.PathLike, *, format: str | None = None,
                   checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 10, resume: bool = False,
                   **options: Any) -> ReplaySummary:
    """Replay ``source`` through ``model`` into the file ``out``; returns a :class:`ReplaySummary`.

    Args:
        out (str | Path): the output file, written as ``out.partial`` and renamed when complete.
        format (str, None): "arrow" (IPC file) or "parquet"; None = from the extension of ``out``.
        checkpoint (str | Path, None): a directory for checkpoints (see :mod:`streamlstm.io.checkpoint`).
        checkpoint_every (int, 10): batches between checkpoints.
        resume (bool, False): continue from the checkpoint in ``checkpoint`` (start from the first row
            when there is none). Without it an existing checkpoint is an error.
        **options: as for :func:`replay`.

    Raises:
        SourceError, SchemaError, StreamError, CheckpointError: bad input, options or checkpoint; no
            output file is left behind (a committed checkpoint is kept, to resume from).
    """
    out = Path(out)
    fmt = output_format(out, format)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ConfigError(f"`checkpoint_every` must be a positive integer, got {checkpoint_every!r}")
    if resume and checkpoint is None:
        raise ConfigError("`resume` needs the `checkpoint` directory of the run to resume (--checkpoint DIR)")
    if out.is_dir() or partial_path(out).is_dir():
        raise SourceError(f"output {out if out.is_dir() else partial_path(out)} is a directory; name a file")
    require_directory(out, "output")
    # Without checkpoints a lost shard cannot be restarted anyway: keep no log of the input in memory.
    job = _Replay(source, model, recover=checkpoint is not None, **options)
    try:
        _check_not_overwriting(job, out)
    except BaseException:
        job.close()
        raise
    started = _time.perf_counter()
    try:
        if checkpoint is None:
            rows, resumed_at = _write_direct(job, out, fmt), 0
        else:
            store = Checkpoint(checkpoint, job.fingerprint(out, fmt), resume=resume)
            rows, resumed_at = _write_checkpointed(job, out, fmt, store, checkpoint_every)
        return ReplaySummary(rows, job.streams, _time.perf_counter() - started, out, resumed_at,
                             fresh_start=resume and resumed_at == 0)
    except OSError as exc:  # disk full, permissions, a file vanishing: nothing half-written stays (see sinks)
        where = exc.filename if exc.filename else out
        raise SourceError(f"cannot write {where}: {exc.strerror or exc}") from exc
    finally:
        job.close()


def _check_not_overwriting(job: _Replay, out: Path) -> None:
    """Refuse an output (or its ``.partial``) that is an input file or the model file."""
    inputs = {os.path.realpath(f) for f in job.source.files}
    if job.model_path is not None:
        inputs.add(os.path.realpath(job.model_path))
    for target in (out, partial_path(out)):
        if os.path.realpath(target) in inputs:
            raise SourceError(f"output {target} is one of the inputs (or the model file); writing it would "
                              f"destroy it: name another --out")


def _write_direct(job: _Replay, out: Path, fmt: str) -> int:
    sink = FileSink(out, fmt)
    try:
        for _, batch in job.outputs():
            sink.write(batch)
        sink.finish(job.empty_output() if sink.rows == 0 else None)
    except BaseException:
        sink.abort()
        raise
    return sink.rows


def _write_checkpointed(job: _Replay, out: Path, fmt: str, checkpoint: Checkpoint, every: int) -> tuple[int, int]:
    sink = ResumableArrowSink(out) if fmt == "arrow" else checkpoint.parts
    try:
        record = checkpoint.open()
        if record is None:
            record, resumed_at = CheckpointRecord(), 0
        else:
            if record.done and _finished(out, fmt, record.output_rows):
                checkpoint.clear()   # killed after the final rename, before this: the output is complete
                return 0, record.input_rows
            job.resume_from(checkpoint.state_path(record))
            resumed_at = record.input_rows
        sink.resume(record)
        if not record.done:
            for input_rows, batch in job.outputs(record.input_rows):
                sink.write(batch)
                record.input_rows += input_rows
                record.output_rows += batch.num_rows
                record.batches += 1
                if record.batches % every == 0:
                    sink.sync(record)
                    record = checkpoint.commit(job.runtime, record)
                    job.checkpointed(checkpoint.state_path(record))
            record.done = True
            sink.sync(record)
            record = checkpoint.commit(job.runtime, record)
        sink.finish(out, fmt, job.empty_output() if record.output_rows == 0 else None)
    except BaseException:
        sink.abort(keep=checkpoint.committed)
        checkpoint.abandon()
        raise
    checkpoint.clear()
    return record.input_rows - resumed_at, resumed_at


def _finished(out: Path, fmt: str, rows: int) -> bool:
    """Whether ``out`` is the complete output of a run whose checkpoint counts ``rows`` output rows and
    no ``.partial`` file remains (the run was stopped between the final rename and clearing its checkpoint)."""
    if partial_path(out).exists() or not out.is_file():
        return False
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(out).metadata.num_rows == rows
        with pa.memory_map(str(out)) as handle:
            reader = pa.ipc.open_file(handle)
            return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches)) == rows
    except (pa.ArrowException, OSError):
        return False
