"""``fit_streams``: Keras's stateful training recipe over a recorded multi-stream file.

The Keras recipe it replaces: cut every series into consecutive windows of K steps, arrange them so
that sample ``i`` of batch ``b + 1`` continues sample ``i`` of batch ``b``, build a ``stateful=True``
model for ``batch_input_shape=(n_streams, K, F)``, then per epoch ``model.reset_states()`` and
``model.fit(x, y, batch_size=n_streams, shuffle=False, epochs=1)``. Here the rows stay keyed Arrow
rows: batch ``b`` of an epoch holds window ``b`` (rows ``b*K .. b*K + K - 1``) of every stream long enough;
streams that end early simply drop out of later batches, and streams of any lengths mix. Carries
restart from zeros at each epoch start (every stream is forgotten, its last time too) and at
``reset``/``end`` rows. With a ``time`` column each stream's rows are taken in time order (a stable
sort of the rows by time, so a key cut by ``end`` rows has its lives in time order too) and the
trainer checks that times increase strictly per stream, as the runtime does.

Each batch is one :meth:`StreamTrainer.learn <streamlstm.StreamTrainer.learn>`: with equal-length
streams whose length is a multiple of K this is exactly the Keras recipe above (weights equal after
every batch; see the trainer). With ``checkpoint`` the trainer is saved every ``checkpoint_every``
batches and at the end of each epoch (atomically); ``resume`` continues from the last checkpoint exactly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from streamlstm.errors import CheckpointError, ConfigError, SchemaError
from streamlstm.io.model_file import write_atomic
from streamlstm.io.sources import open_source
from streamlstm.train.trainer import StreamTrainer

__all__ = ["Windows", "fit_streams"]


class Windows:
    """A table's rows arranged as Keras stateful batches: batch ``b`` holds window ``b`` of every stream
    (stream by stream, each stream's rows in input order)."""

    def __init__(self, table: pa.Table, key: str, window: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"`window` must be a positive integer, got {window!r}")
        self.window = window
        codes = _key_codes(table.column(key))
        pos = np.zeros(len(codes), np.int64)
        by_key = np.argsort(codes, kind="stable")
        if len(codes):
            first = np.r_[True, codes[by_key][1:] != codes[by_key][:-1]]
            start = np.maximum.accumulate(np.where(first, np.arange(len(codes)), 0))
            pos[by_key] = np.arange(len(codes)) - start
        number = pos // window
        order = np.lexsort((pos, codes, number))
        self.table = table.take(pa.array(order)).combine_chunks()
        self.bounds = np.searchsorted(number[order], np.arange(int(number.max(initial=-1)) + 2))

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.bounds) - 1

    def batch(self, index: int) -> pa.RecordBatch:
        lo, hi = int(self.bounds[index]), int(self.bounds[index + 1])
        return self.table.slice(lo, hi - lo).to_batches(max_chunksize=hi - lo)[0]


def _key_codes(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary.take(array.indices)
    if array.null_count:
        raise SchemaError("the key column has nulls; nulls are not allowed")
    if pa.types.is_integer(array.type):
        return array.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return pc.dictionary_encode(array).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _optimizer_arg(optimizer: Any, lr: float | None) -> Any:
    if isinstance(optimizer, str):
        makers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
        if optimizer not in makers:
            raise ConfigError(f"`optimizer` must be 'sgd', 'adam', an optimizer or a callable, got {optimizer!r}")
        rate = 0.01 if lr is None else lr   # Keras's SGD default; Adam's is 0.001
        rate = 0.001 if lr is None and optimizer == "adam" else rate
        return lambda params: makers[optimizer](params, lr=rate)
    if lr is not None:
        raise ConfigError("`lr` is for optimizer='sgd' or 'adam'; set the learning rate on your optimizer")
    return optimizer


class _Checkpoint:
    """``trainer.slt`` (the trainer after its last completed batch) and ``run.json`` (what is trained
    on, to refuse resuming a different run) in one directory."""

    def __init__(self, directory: Any, run: dict[str, Any], resume: bool) -> None:
        self.dir = Path(directory)
        self.trainer_path, self.run_path, self.run = self.dir / "trainer.slt", self.dir / "run.json", run
        if self.trainer_path.exists() and not resume:
            raise CheckpointError(f"checkpoint directory {str(self.dir)!r} already holds a run; pass resume=True "
                                  f"(--resume) to continue it or choose another directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        if resume and self.trainer_path.exists():
            saved = json.loads(self.run_path.read_text())
            if saved != run:
                raise CheckpointError(f"the checkpoint in {str(self.dir)!r} is of another run: {saved} != {run}")
        write_atomic(self.run_path, json.dumps(run).encode())

    def load(self, optimizer: Any, loss: Any, device: Any) -> StreamTrainer | None:
        if not self.trainer_path.exists():
            return None
        return StreamTrainer.load(self.trainer_path, optimizer, loss=None if isinstance(loss, str) else loss,
                                  device=device)


def fit_streams(model: torch.nn.Module, source: Any, *, key: str = "stream_id", features: str | list[str] = "x",
                target: str | list[str] = "y", window: int = 32, epochs: int = 1, optimizer: Any = "sgd",
                lr: float | None = None, loss: str | Callable = "mse", mask: str | None = None,
                reset: str | None = None, end: str | None = None, time: str | None = None,
                clip_grad_norm: float | None = None,
                device: Any = None, progress: bool | None = None, checkpoint: Any = None,
                checkpoint_every: int = 50, resume: bool = False,
                on_batch: Callable[[int, int, float | None], None] | None = None) -> StreamTrainer:
    """Train ``model`` on every stream of ``source`` with truncated BPTT over windows of ``window``
    rows (see the module docstring); returns the :class:`StreamTrainer` (its ``model`` is trained).

    Args:
        model: as for :class:`StreamTrainer`.
        source: what :func:`streamlstm.replay` reads (an Arrow/Parquet file, a directory or glob of them,
            a Table, ...); it is read whole.
        key, features, target, mask, reset, end, loss, clip_grad_norm, device: as for :class:`StreamTrainer`.
        time (str, None): a time column: each stream's rows in time order, strictly increasing (see the
            module docstring); ``late`` is "raise", so a repeated time stops the run with its error.
        window (int, 32): rows per stream per batch (Keras's timesteps K).
        epochs (int, 1): passes over the data; carries restart from zeros at each.
        optimizer ("sgd" | "adam" | Optimizer | callable, "sgd"): a name (with ``lr``, default 0.01 for
            SGD and 0.001 for Adam, as Keras), or as for :class:`StreamTrainer` (a callable when resuming).
        progress (bool, None): a tqdm bar with the running loss (default: on a terminal or in a notebook).
        checkpoint (path, None), checkpoint_every (int, 50), resume (bool, False): see the module docstring.
        on_batch (callable, None): ``on_batch(epoch, batch, loss)`` after each batch (``loss`` None when
            no row of the batch counted), e.g. to record the loss curve.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"`epochs` must be a positive integer, got {epochs!r}")
    opened = open_source(source)
    names = [key, *([features] if isinstance(features, str) else features),
             *([target] if isinstance(target, str) else target),
             *(c for c in (mask, reset, end, time) if c is not None)]
    opened.require_columns(names)
    schema = pa.schema([opened.schema.field(name) for name in names])
    table = pa.Table.from_batches(list(opened.read(0, names)), schema=schema)
    if time is not None:   # Arrow's sort is stable: rows of equal times keep their order (and are refused)
        table = table.sort_by([(time, "ascending")])
    windows = Windows(table, key, window)
    optimizer = _optimizer_arg(optimizer, lr)
    saver, trainer = None, None
    if checkpoint is not None:
        run = {"input": opened.description, "rows": table.num_rows, "window": window, "epochs": epochs}
        saver = _Checkpoint(checkpoint, run, resume)
        if resume:
            trainer = saver.load(optimizer, loss, device)
    if trainer is None:
        trainer = StreamTrainer(model, optimizer, loss, key=key, features=features, target=target, mask=mask,
                                reset=reset, end=end, time=time, clip_grad_norm=clip_grad_norm, device=device)
    for epoch, index in _progress(trainer, windows, epochs, progress):
        if index == 0:
            trainer.runtime.forget()
        trainer.learn(windows.batch(index))
        if on_batch is not None:
            on_batch(epoch, index, trainer.last_loss)
        last = index == len(windows) - 1
        if saver is not None and (last or trainer.stats()["batches"] % checkpoint_every == 0):
            trainer.save(saver.trainer_path)
    return trainer


def _progress(trainer: StreamTrainer, windows: Windows, epochs: int,
              progress: bool | None) -> Iterator[tuple[int, int]]:
    """``(epoch, batch index)`` from where ``trainer`` is (its batches so far are this run's), with a
    tqdm bar showing the running loss (mean of the epoch's batch losses so far)."""
    from tqdm.auto import tqdm

    per_epoch = len(windows)
    done = trainer.stats()["batches"]
    show = (sys.stderr.isatty() or "ipykernel" in sys.modules) if progress is None else bool(progress)
    bar = tqdm(total=per_epoch * epochs, initial=done, unit=" batches", disable=not show, dynamic_ncols=True,
               desc="train", leave=False)
    losses: list[float] = []
    try:
        for step in range(done, per_epoch * epochs):
            epoch, index = divmod(step, per_epoch)
            if index == 0:
                losses = []
            yield epoch, index
            if trainer.last_loss is not None:
                losses.append(trainer.last_loss)
            if show:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses):.4g}" if losses else "-", refresh=False)
    finally:
        bar.close()
