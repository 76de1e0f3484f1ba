"""StreamTrainer: Keras ``stateful=True`` training (truncated BPTT) on the carries of a StreamRuntime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.arrow import as_record_batch, as_tensor, fixed_list
from streamlstm.errors import ArgumentTypeError, ConfigError, SchemaError, StreamError
from streamlstm.layers.base import Layer, apply_constraints
from streamlstm.runtime import StreamRuntime
from streamlstm.runtime.model_plan import build_plan
from streamlstm.runtime.placement import Placement, Stamp
from streamlstm.runtime.schema import BatchParser, ParsedBatch, key_kind
from streamlstm.runtime.segments import plan_rows
from streamlstm.runtime.store import StreamStore
from streamlstm.runtime.times import check_times, keep_rows
from streamlstm.train.forward import TrainOutcome, forward
from streamlstm.train.losses import resolve_loss
from streamlstm.train.persist import read_trainer, write_trainer
from streamlstm.train.targets import parse_targets

__all__ = ["StreamTrainer"]

OptimizerArg = torch.optim.Optimizer | Callable[[Any], torch.optim.Optimizer]
COUNTERS = ("batches", "rows", "loss_rows", "updates", "dropped_late")


class StreamTrainer:
    """Train a recurrent model on many interleaved streams, each like a Keras ``stateful=True`` model.

    Every :meth:`learn` call is one truncation window of truncated backpropagation through time: each
    stream in the batch runs from its carries, with gradients, through all of its rows in the batch;
    the loss is the mean of the per-row loss over the rows that count (real rows with a target), then
    ``loss.backward()``, optional gradient clipping, ``optimizer.step()`` (and the layers' constraints),
    ``optimizer.zero_grad()``; the final carries are committed detached, so the next window starts
    from them without gradients. Keras's weight regularization penalties and the layers' activity
    penalties (see :mod:`streamlstm.train.forward`) are added to the loss.

    When every batch holds one window of K rows for each of the same n streams, this is exactly
    ``model.fit(x, y, batch_size=n, shuffle=False)`` on a Keras ``stateful=True`` model: the weights
    after each call equal Keras's after each batch (float32 rounding; with SGD, with or without
    momentum. torch's Adam places epsilon differently from Keras's, so Adam steps differ slightly).

    Args:
        model: a model :class:`~streamlstm.StreamRuntime` accepts (a streamlstm LSTM/RNN, a
            ``torch.nn.Sequential`` of such layers and per-step modules, a model from ``load_keras``).
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters, or a callable taking the
            parameters and returning one (``lambda p: torch.optim.SGD(p, lr=0.1)``).
        loss (str | callable, "mse"): ``"mse"``, ``"mae"``, ``"huber"``, ``"binary_crossentropy"``
            (see :mod:`streamlstm.train.losses`) or ``loss(predictions, targets) -> [rows]``.
        key, features, mask, reset, end, time: the columns, with the rules of :class:`~streamlstm.StreamRuntime`
            (``time``: strictly increasing per stream across rows and batches, learned and served alike:
            the trainer and ``trainer.runtime`` keep one time order per stream).
        late (str, "raise"): as for :class:`~streamlstm.StreamRuntime`: "raise" rejects a batch with a
            row at or before its stream's last time (nothing changes); "drop" leaves such rows out
            (output and loss null, counted in ``stats()["dropped_late"]``).
        target (str | list[str], "y"): a ``FixedSizeList<float>[out_dim]`` column, or numeric columns;
            a null target row counts for the state but not for the loss.
        clip_grad_norm (float, None): clip the gradients' total norm to this before each step.
        device (str | torch.device, None): where the model, carries and compute live.

    ``trainer.runtime`` is a :class:`~streamlstm.StreamRuntime` over the same model and the same
    carries: ``trainer.runtime.feed(batch)`` predicts from where training left each stream (without
    advancing training); ``learn`` holds the runtime's lock, so learning and serving exclude each other.
    The trainer's batches are counted in :meth:`stats`, not in ``trainer.runtime.stats()``; the streams
    it learns are stamped with the runtime's ``clock`` (its ``idle_ttl`` and LRU see them as used).

    Example:
        >>> import numpy as np, pyarrow as pa, torch, streamlstm as sl
        >>> model = torch.nn.Sequential(sl.LSTM(4, return_sequences=True), torch.nn.Linear(4, 1))
        >>> trainer = sl.StreamTrainer(model, lambda p: torch.optim.SGD(p, lr=0.1), key="id", features="x",
        ...                            target="y")
        >>> x = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(6, np.float32)), 3)
        >>> y = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(2, np.float32)), 1)
        >>> out = trainer.learn(pa.record_batch({"id": [7, 8], "x": x, "y": y}))
        >>> out.schema.names, trainer.stats()["updates"]
        (['id', 'output', 'loss'], 1)
    """

    def __init__(self, model: torch.nn.Module, optimizer: OptimizerArg, loss: str | Callable = "mse", *,
                 key: str = "stream_id", features: str | list[str] = "x", target: str | list[str] = "y",
                 mask: str | None = None, reset: str | None = None, end: str | None = None, time: str | None = None,
                 late: str = "raise", clip_grad_norm: float | None = None, device: Any = None) -> None:
        runtime = StreamRuntime(model, key=key, features=features, mask=mask, reset=reset, end=end, time=time,
                                late=late, device=device)
        self._setup(runtime, optimizer, loss, target, clip_grad_norm)

    def _setup(self, runtime: StreamRuntime, optimizer: OptimizerArg, loss: str | Callable,
               target: str | list[str], clip_grad_norm: float | None) -> None:
        self.runtime = runtime
        self.columns = runtime.columns
        self.target = _target(target, self.columns)
        self.loss_name = loss if isinstance(loss, str) else None
        self._loss = resolve_loss(loss)
        if clip_grad_norm is not None and (isinstance(clip_grad_norm, bool) or not clip_grad_norm > 0):
            raise ConfigError(f"`clip_grad_norm` must be a positive number or None, got {clip_grad_norm!r}")
        self.clip_grad_norm = None if clip_grad_norm is None else float(clip_grad_norm)
        self._plan = build_plan(runtime.model)   # rebuilt once the model is built (see _ready)
        self._make_optimizer = optimizer if not isinstance(optimizer, torch.optim.Optimizer) else None
        self.optimizer: torch.optim.Optimizer | None = None
        if self._plan.output_dim is not None:
            self.optimizer = _optimizer(optimizer, runtime.model)
        elif self._make_optimizer is None:
            raise ConfigError("the model is not built yet, so it has no parameters for `optimizer`: build it "
                              "(e.g. layer.build((None, None, F))) or pass a callable such as "
                              "`lambda p: torch.optim.SGD(p, lr=0.1)`")
        self._parser = BatchParser(self.columns)
        self._lock = runtime.lock   # learn and the runtime's feed exclude each other
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_loss: float | None = None

    @classmethod
    def restore(cls, runtime: StreamRuntime, optimizer: OptimizerArg, loss: str | Callable,
                target: str | list[str], clip_grad_norm: float | None = None) -> StreamTrainer:
        """A trainer over an existing runtime's model and carries (e.g. one from ``load_runtime``); the
        other arguments are as for the constructor."""
        if not isinstance(runtime, StreamRuntime):
            raise ArgumentTypeError(f"`runtime` must be a StreamRuntime, got {type(runtime).__name__}")
        trainer = cls.__new__(cls)
        trainer._setup(runtime, optimizer, loss, target, clip_grad_norm)  # noqa: SLF001 (its own class, not built yet)
        return trainer

    def save(self, path: Any) -> None:
        """Write the model, the optimizer's state, every stream's carries and the counters to ``path``
        atomically (:mod:`streamlstm.train.persist`; the file is also a runtime file)."""
        with self._lock:
            write_trainer(self, path)

    @classmethod
    def load(cls, path: Any, optimizer: Callable[[Any], torch.optim.Optimizer], *, loss: str | Callable | None = None,
             device: Any = None) -> StreamTrainer:
        """Read a trainer written by :meth:`save`. ``optimizer`` builds the optimizer from the loaded
        model's parameters (the same class and settings as when saved); ``loss`` is needed again only
        when it was a callable. Continues exactly where the saved trainer stopped."""
        return read_trainer(cls, path, optimizer, loss, device)

    @property
    def model(self) -> torch.nn.Module:
        return self.runtime.model

    def config(self) -> dict[str, Any]:
        """The trainer's own settings (the runtime's are in ``trainer.runtime.config()``), JSON-ready."""
        return {"target": self.target if isinstance(self.target, str) else list(self.target),
                "loss": self.loss_name, "clip_grad_norm": self.clip_grad_norm}

    def stats(self) -> dict[str, Any]:
        """``batches``, ``rows``, ``loss_rows`` (rows that counted for the loss), ``updates``
        (optimizer steps), ``dropped_late`` (late rows left out), ``loss`` (the last batch's) and
        ``streams``."""
        with self._lock:
            return dict(self.counters, loss=self.last_loss, streams=len(self.runtime))

    # -- learning ------------------------------------------------------------------------------------
    def learn(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """One truncation window over the streams in ``batch`` (see the class docstring); all or nothing.

        Returns one row per input row, in input order: the key column, the time column when configured,
        ``output`` (``FixedSizeList<float32>[out_dim]``, computed before the update: prequential; null
        for a late row dropped) and ``loss`` (float32, the row's loss; null where the row does not count)."""
        with self._lock:
            record_batch = as_record_batch(batch)
            if record_batch is None:
                raise SchemaError(f"`batch` must be a pyarrow.RecordBatch or pyarrow.Table, got "
                                  f"{type(batch).__name__}")
            parsed = self._parser.parse(record_batch, width=self._plan.input_dim, expected_key_kind=self._key_kind(),
                                        time_type=self.runtime.time_type, allow_nonfinite=False)
            store = self._ready(parsed.x.shape[1])   # an empty batch still tells the input width
            if parsed.num_rows == 0:
                return self._output(parsed, np.zeros((0, self._plan.output_dim), np.float32), None, None, None)
            y, counts = parse_targets(record_batch, self.target, self._plan.output_dim, parsed.keys)
            if parsed.mask is not None:
                counts = counts & parsed.mask
            return self._learn(parsed, store, y, counts)

    def _ready(self, input_dim: int) -> StreamStore:
        """The runtime's store, building the model (and then the plan and the optimizer) on first use."""
        store = self.runtime.shared_store(input_dim)
        if self.optimizer is None:
            self._plan = build_plan(self.model)
            self._plan.ensure_built(input_dim, store.slabs.device)
            self.optimizer = _optimizer(self._make_optimizer, self.model)
        return store

    def _key_kind(self) -> str | None:
        store = self.runtime.shared_store(self._plan.input_dim) if self._plan.input_dim is not None else None
        return None if store is None else store.key_kind

    def _learn(self, full: ParsedBatch, store: StreamStore, y: np.ndarray, counts: np.ndarray) -> pa.RecordBatch:
        kind = key_kind(full.keys.type)
        lookup = store.lookup(full.keys, kind)
        kept = None if full.time is None else check_times(full, lookup, store, self.runtime.late, self.columns.time)
        parsed = full
        if kept is not None:   # late="drop": the late rows are left out
            parsed, y, counts = keep_rows(full, kept), y[kept], counts[kept]
            if parsed.num_rows == 0:
                self._count(full, 0, 0, None)
                return self._output(full, np.zeros((0, self._plan.output_dim), np.float32), None, None, kept)
            lookup = store.lookup(parsed.keys, kind)
        row_plans = {back: plan_rows(lookup.group, lookup.distinct, parsed.reset, parsed.end, back, lookup.first_row)
                     for back in {stage.go_backwards for stage in self._plan.recurrent}}
        rows = next(iter(row_plans.values()))
        placement = Placement(parsed.keys, kind, lookup, rows.key_rows, lookup.slots[rows.key_rows],
                              rows.key_released)
        device, dtype = store.slabs.device, store.dtype
        x = as_tensor(parsed.x).to(device=device, dtype=dtype)
        mask = None if parsed.mask is None or parsed.mask.all() else torch.from_numpy(parsed.mask).to(device)
        model, training = self.model, self.model.training
        self.optimizer.zero_grad(set_to_none=True)
        model.train()
        try:
            outcome = forward(self._plan, store, row_plans, placement.key_slots, x, mask)
            row_loss, loss = self._losses(outcome, y, counts, device, dtype)
            outputs = outcome.outputs.detach().cpu().numpy().astype(np.float32, copy=False)
            if loss is not None:
                self._step(loss)
        finally:
            model.train(training)
            self.optimizer.zero_grad(set_to_none=True)
        self._commit(store, placement, outcome, rows.key_last_row, parsed)
        self._count(full, parsed.num_rows, int(counts.sum()), loss)
        return self._output(full, outputs, row_loss, counts, kept)

    def _count(self, full: ParsedBatch, computed: int, loss_rows: int, loss: torch.Tensor | None) -> None:
        counters = self.counters
        counters["batches"] += 1
        counters["rows"] += full.num_rows
        counters["dropped_late"] += full.num_rows - computed
        counters["loss_rows"] += loss_rows
        counters["updates"] += loss is not None
        self.last_loss = None if loss is None else float(loss.detach())

    def _losses(self, outcome: TrainOutcome, y: np.ndarray, counts: np.ndarray, device: torch.device,
                dtype: torch.dtype) -> tuple[np.ndarray | None, torch.Tensor | None]:
        """Per-row losses (numpy, for the output) and the batch loss (None when no row counts)."""
        if not counts.any():
            return None, None
        chosen = torch.as_tensor(np.flatnonzero(counts), device=device)
        predictions = outcome.outputs.index_select(0, chosen)
        targets = torch.as_tensor(y[counts], device=device, dtype=dtype)
        per_row = self._loss(predictions, targets)
        if tuple(per_row.shape) != (len(chosen),):
            raise ConfigError(f"`loss` must return one value per row, shape ({len(chosen)},), got "
                              f"{tuple(per_row.shape)}")
        loss = per_row.mean()
        penalties = [p for layer in self.model.modules() if isinstance(layer, Layer) for p in layer.weight_penalties()]
        penalties += outcome.penalties
        if penalties:
            loss = loss + torch.stack([p.to(loss.dtype) for p in penalties]).sum()
        if not bool(torch.isfinite(loss)):
            raise StreamError(f"the batch's loss is not finite ({float(loss.detach())}); no weight or carry "
                              f"was changed")
        return per_row.detach().cpu().numpy().astype(np.float32), loss

    def _step(self, loss: torch.Tensor) -> None:
        loss.backward()
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        apply_constraints(self.model)

    def _commit(self, store: StreamStore, placement: Placement, outcome: TrainOutcome, last_rows: np.ndarray,
                parsed: ParsedBatch) -> None:
        if parsed.reset is not None and parsed.reset.any():
            # The runtime keeps plans that know has_output is True for their streams; zeroing the
            # reset streams (overwritten by the commit below) tells it they are out of date.
            slots = placement.lookup.slots[parsed.reset]
            store.zero(np.unique(slots[slots >= 0]))
        runtime = self.runtime
        if parsed.time_column is not None:   # before the times are stored (float times need a float store)
            runtime.set_time_type(parsed.time_column.type)
        # The stamps of the runtime's clock, its row and batch numbers (LRU and idle_ttl see a learned
        # stream as used at the runtime's latest batch); the trainer's rows are counted in its own stats.
        counters = runtime.counters
        stamp = Stamp(last_rows, counters["rows"], counters["batches"], runtime.clock(),
                      None if parsed.time is None else parsed.time[last_rows])
        store.commit(placement, outcome.finals, list(outcome.has_output), stamp)

    def _output(self, full: ParsedBatch, outputs: np.ndarray, row_loss: np.ndarray | None,
                counts: np.ndarray | None, kept: np.ndarray | None) -> pa.RecordBatch:
        """The output batch of ``full``'s rows; ``outputs``, ``row_loss`` and ``counts`` are of the rows
        computed (``kept``, None: all), ``row_loss`` of the rows where ``counts``."""
        width = outputs.shape[1]
        losses, scored = np.zeros(len(outputs), np.float32), np.zeros(len(outputs), bool)
        if row_loss is not None:
            losses[counts], scored = row_loss, counts
        if kept is None:
            output = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(outputs).reshape(-1)), width)
        else:
            output = fixed_list(_spread(outputs, kept), kept)
            losses, scored = _spread(losses, kept), _spread(scored, kept)
        loss = pa.array(losses, pa.float32(), mask=~scored)
        columns, names = [full.keys], [self.columns.key]
        if self.columns.time is not None:
            columns.append(full.time_column)
            names.append(self.columns.time)
        return pa.RecordBatch.from_arrays([*columns, output, loss], names=[*names, "output", "loss"])

    def __repr__(self) -> str:
        stats = self.stats()
        return (f"StreamTrainer(key={self.columns.key!r}, features={self.columns.features!r}, "
                f"target={self.target!r}, loss={self.loss_name or 'custom'!r}, batches={stats['batches']}, "
                f"updates={stats['updates']}, streams={stats['streams']}, loss={stats['loss']})")


def _spread(values: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``values`` of the kept rows placed at their rows among all (zeros elsewhere)."""
    every = np.zeros((len(kept), *values.shape[1:]), values.dtype)
    every[kept] = values
    return every


def _target(target: Any, columns: Any) -> str | tuple[str, ...]:
    if isinstance(target, str):
        names: tuple[str, ...] = (target,)
    elif isinstance(target, (list, tuple)) and target and all(isinstance(t, str) for t in target):
        names = tuple(target)
    else:
        raise ArgumentTypeError(f"`target` must be a column name or a non-empty list of names, got {target!r}")
    features = (columns.features,) if isinstance(columns.features, str) else columns.features
    used = {columns.key, *features, columns.mask, columns.reset, columns.end, columns.time, "output", "loss"}
    clash = [name for name in names if name in used]
    if clash or len(set(names)) != len(names):
        raise ConfigError(f"`target` columns must be distinct from each other, the other columns, 'output' and "
                          f"'loss', got {list(names)}")
    return target if isinstance(target, str) else names


def _optimizer(optimizer: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    if not isinstance(optimizer, torch.optim.Optimizer):
        if not callable(optimizer):
            raise ArgumentTypeError(f"`optimizer` must be a torch.optim.Optimizer or a callable taking the "
                                    f"model's parameters, got {type(optimizer).__name__}")
        optimizer = optimizer(model.parameters())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ArgumentTypeError(f"`optimizer(parameters)` must return a torch.optim.Optimizer, got "
                                    f"{type(optimizer).__name__}")
    return optimizer
