"""ShardedRuntime: one StreamRuntime per Ray actor, each owning a range of key groups.

A batch is cut by the key group of each row (:class:`~streamlstm.cluster.layout.Splitter`), every
shard with rows prepares its part (:meth:`StreamRuntime.prepare`: parse, check, compute, change
nothing), and the outputs are put back in input order, so :meth:`ShardedRuntime.feed` returns exactly
what :meth:`StreamRuntime.feed` would for the same batch.

The feed protocol: one round trip per batch
-------------------------------------------
All or nothing across shards needs every shard to prepare before any commits. The commit does not
cost a call of its own: it travels with the shard's next call.

1. Batch ``k`` is sent: shard ``i`` gets ``step(k, part_i, *verdicts)``. The step first *settles* the
   feed the shard holds prepared from its previous batch ``j < k`` (commit when every verdict is
   PREPARED, drop otherwise), then prepares ``part_i`` and keeps it pending. It returns two objects:
   a tiny *status* (PREPARED, or the error and its row) and the output.
2. The verdicts are the Ray object refs of the statuses that every shard of batch ``j`` returned.
   Ray resolves them before the step runs, so a shard commits batch ``j`` only once every shard of
   ``j`` has prepared it, without the driver deciding anything: batch ``k + 1`` can be sent before
   batch ``k`` has been awaited (``feed_many`` keeps two batches in flight: the shards compute one
   while the driver cuts the next and reassembles the last).
3. The driver *lands* batch ``k`` (one ``ray.get`` of its statuses and outputs). All PREPARED: the
   output goes to the caller, and the batch joins the driver's log. So an output is returned only
   for a batch that every one of its shards prepared, and every such batch is committed by its
   shards' next calls. Before a query, ``reset``, ``save`` or ``close`` (and on :meth:`flush`) the
   driver sends the owed verdicts of the landed batches first (``settle``), so those calls see every
   batch whose output was returned, and none still in flight (e.g. a read between two outputs of
   ``feed_many``, as replay's checkpoints do, or a read from another thread: one feed runs at a
   time, and reads from other threads wait for its current send or land).
4. A bad batch (an error status on any shard) is committed nowhere: the verdicts of later calls
   drop it. The driver then *rewinds* every shard to the batches landed (``settle_to(landed)``:
   commit the pending feed if its batch landed, drop it otherwise, which also drops a batch sent
   behind the bad one) and raises the runtime's error, with row numbers of the whole batch. A batch
   sent by a ``feed_many`` whose iteration stopped before its output was taken is dropped the same
   way when the next feed starts.

Fault recovery: the driver keeps the batches landed since the last checkpoint (:meth:`save`, or the
start). A shard found dead (its actor gone: ``ray.kill``, a crashed process or node; a call whose
verdicts depend on a dead shard fails too) triggers the rewind: live shards settle to the landed
batches, and a dead one is started again from the last checkpoint and fed its part of every logged
batch; the batches in flight are sent again. Outputs and state equal those of an uninterrupted run.
Not covered: the driver's own death (resume from the last checkpoint with :meth:`load`, as replay
does), and a fault while a checkpoint is written (the previous checkpoint stays valid: the manifest
is written last).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.arrow import as_record_batch
from streamlstm.cluster.group import Flight, RecoveryPoint, ShardGroup
from streamlstm.cluster.layout import BatchSplit, ShardLayout, Splitter
from streamlstm.cluster.manifest import MODEL_FILE, Manifest, read_manifest, shard_file_name, write_manifest
from streamlstm.cluster.ray_support import check_cpus, start_ray
from streamlstm.cluster.shard import Shard
from streamlstm.errors import ConfigError, StreamLSTMError
from streamlstm.io.model_file import load_model, model_to_bytes, save_model
from streamlstm.io.runtime_file import load_runtime
from streamlstm.runtime import StreamRuntime
from streamlstm.runtime.key_groups import key_group
from streamlstm.runtime.report import COUNTERS

__all__ = ["ShardedRuntime"]

_EVICTION = ("idle_ttl", "max_streams", "on_evict", "clock")


class ShardedRuntime:
    """A :class:`~streamlstm.StreamRuntime` spread over Ray actors by key group; same outputs, same state.

    Args:
        model: as for :class:`~streamlstm.StreamRuntime`, built (``input_shape`` given, or called once), and
            one :func:`streamlstm.save_model` can describe: it travels to the actors as a model file.
        shards (int, 2): actors, each holding a StreamRuntime over a contiguous range of key groups.
        key_groups (int, 128): G, fixed for the life of the state; at most G shards.
        threads_per_shard (int, 1): ``torch.set_num_threads`` in each actor.
        num_cpus (float, 1): CPUs Ray reserves per actor (fractions allowed).
        num_gpus (float, 0): GPUs per actor; with GPUs, ``device`` defaults to "cuda".
        address (str, None): the Ray cluster to join ("auto": the one ``ray start`` runs here); None
            starts a local Ray unless one is connected already.
        recover (bool, True): keep the batches fed since the last checkpoint, to restart a lost shard;
            False keeps none (a lost shard is then an error), e.g. for a replay without checkpoints.
        **runtime_options: the other :class:`~streamlstm.StreamRuntime` arguments (key, features,
            mask, reset, end, time, mode, device, late, allow_nonfinite, return_state, capacity).
            Eviction (``idle_ttl``, ``max_streams``, ``on_evict``) is per runtime and is refused here.

    Example (not run by the docstring tests: it starts Ray; tests/cluster runs the same calls):
        >>> import pyarrow as pa, streamlstm as sl
        >>> sharded = sl.ShardedRuntime(sl.LSTM(4, input_shape=(None, 3)), shards=2, key="id")  # doctest: +SKIP
        >>> x = pa.FixedSizeListArray.from_arrays(pa.array([0.1] * 9, pa.float32()), 3)
        >>> out = sharded.feed(pa.record_batch({"id": [7, 8, 9], "x": x}))  # doctest: +SKIP
        >>> out.num_rows, len(sharded)  # doctest: +SKIP
        (3, 3)
    """

    def __init__(self, model: torch.nn.Module, shards: int = 2, key_groups: int = 128, *,
                 threads_per_shard: int = 1, num_cpus: float = 1, num_gpus: float = 0, address: str | None = None,
                 recover: bool = True, **runtime_options: Any) -> None:
        refused = sorted(name for name in _EVICTION if runtime_options.get(name) is not None)
        if refused:
            raise ConfigError(f"ShardedRuntime does not evict streams: {', '.join(refused)} must be None "
                              f"(eviction is per runtime)")
        if isinstance(threads_per_shard, bool) or not isinstance(threads_per_shard, int) or threads_per_shard < 1:
            raise ConfigError(f"`threads_per_shard` must be a positive integer, got {threads_per_shard!r}")
        if not model.state_dict():
            raise ConfigError("`model` must be built (its weights made) before it is sharded, so that every shard "
                              "gets the same weights: pass input_shape=(None, features) to its first layer")
        if num_gpus and runtime_options.get("device") is None:
            runtime_options["device"] = "cuda"
        # A local runtime without streams checks the options (with its own errors) and owns the config.
        self._local = StreamRuntime(model, key_groups=key_groups, **runtime_options)
        self._layout = ShardLayout(key_groups, shards)
        self._device = runtime_options.get("device")
        self._options = {k: v for k, v in self._local.config().items() if k not in _EVICTION}
        self._model_bytes = model_to_bytes(model)
        self._ray = start_ray(address)
        check_cpus(self._ray, shards, num_cpus)
        self._actor = self._ray.remote(Shard).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._threads = threads_per_shard
        self._splitter = Splitter(self.columns.key, self._layout)
        self._group = ShardGroup(self._ray, self._spawn, shards, self._splitter, bool(recover))
        self._base = dict.fromkeys(COUNTERS, 0)   # counts no shard holds (carried over a rescale)

    def _spawn(self) -> Any:
        return self._actor.remote(self._model_bytes, self._options, self._threads, self._device)

    # -- configuration ---------------------------------------------------------------------------
    @property
    def shards(self) -> int:
        return self._layout.shards

    @property
    def key_groups(self) -> int:
        return self._layout.groups

    @property
    def model(self) -> torch.nn.Module:
        return self._local.model

    @property
    def columns(self) -> Any:
        return self._local.columns

    def config(self) -> dict[str, Any]:
        """:meth:`StreamRuntime.config` of every shard."""
        return self._local.config()

    def shard_ranges(self) -> list[tuple[int, int]]:
        """``(first, stop)`` key groups of each shard."""
        return self._layout.ranges()

    def shard_actors(self) -> list[Any]:
        """The Ray actor handles, one per shard (e.g. to ``ray.kill`` one in a test)."""
        return list(self._group.actors)

    @property
    def restarts(self) -> int:
        """Shard actors restarted after they died."""
        return self._group.restarts

    # -- feeding ---------------------------------------------------------------------------------
    def feed(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """Advance every stream in ``batch``; returns what :meth:`StreamRuntime.feed` would. All or
        nothing across shards: a batch bad on any shard changes no shard (the runtime's error is raised).
        One round trip: the shards' commits travel with their next call (see the module docstring)."""
        return next(iter(self.feed_many([batch])))

    def feed_many(self, batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[pa.RecordBatch]:
        """:meth:`feed` each batch in turn, yielding the outputs in order, pipelined: the next batch is
        cut and sent before the one before it is awaited, and that one is put back together while the
        shards compute. A bad batch raises (the ones before it are fed, the ones after it are not); a
        batch whose output was not taken (the iteration stopped early) is not applied."""
        group = self._group
        group.discard()
        cuts = map(self._cut, batches)
        for flight in itertools.islice(cuts, 1):
            group.send(flight)
        for flight in cuts:
            group.send(flight)
            yield self._assemble(*group.land())
        while group.window:
            yield self._assemble(*group.land())

    def flush(self) -> None:
        """Commit on every shard the feeds whose outputs were returned (they are otherwise committed by
        each shard's next call; queries, ``save`` and ``close`` flush first)."""
        self._group.flush()

    def _cut(self, batch: Any) -> Flight:
        record = as_record_batch(batch)
        if record is None:
            return Flight(batch, BatchSplit.whole(batch))   # shard 0 raises the runtime's error for it
        try:
            return Flight(record, self._splitter.split(record))
        except (StreamLSTMError, KeyError) as exc:   # a missing or bad key column: shard 0 names it
            problem = exc if isinstance(exc, StreamLSTMError) else ConfigError(str(exc))
            return Flight(record, BatchSplit.whole(record), problem)

    @staticmethod
    def _assemble(flight: Flight, outputs: dict[int, pa.RecordBatch]) -> pa.RecordBatch:
        return flight.split.assemble(outputs)

    # -- streams ---------------------------------------------------------------------------------
    def _shard_of(self, key: Any) -> int:
        return int(self._layout.shard_of_group()[key_group(key, self.key_groups)])

    def __len__(self) -> int:
        return sum(self._group.ask("size").values())

    def __contains__(self, key: Any) -> bool:
        shard = self._shard_of(key)
        return self._group.ask("contains", {shard: (key,)})[shard]

    def keys(self) -> list[Any]:
        """The keys held, shard by shard (each in its runtime's slot order)."""
        return [key for shard, keys in sorted(self._group.ask("keys").items()) for key in keys]

    def state(self, key: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """The stream's ``[(h, c), ...]`` (see :meth:`StreamRuntime.state`), from the shard that holds it."""
        shard = self._shard_of(key)
        return self._group.ask("state", {shard: (key,)})[shard]

    def reset(self, keys: Iterable[Any] | None = None) -> int:
        """As :meth:`StreamRuntime.reset`: zero ``keys`` (all streams when None); the streams reset."""
        by_shard: dict[int, tuple] = {}
        if keys is None:
            by_shard = dict.fromkeys(range(self.shards), (None,))
        for key in [] if keys is None else list(keys):
            by_shard.setdefault(self._shard_of(key), ([],))[0].append(key)
        return sum(self._group.ask("reset", by_shard).values())

    def stats(self) -> dict[str, Any]:
        """The totals, keyed as :meth:`StreamRuntime.stats` (``batches`` = batches fed to this runtime,
        ``rows_per_second`` over the driver's time), and under ``shards`` each shard's own stats."""
        shards = [s for _, s in sorted(self._group.ask("stats").items())]
        total: dict[str, Any] = {name: self._uncounted(name) + sum(s[name] for s in shards) for name in COUNTERS}
        total["batches"] = self._group.batches
        for name in ("streams", "capacity", "state_bytes", "busy_seconds"):
            total[name] = sum(s[name] for s in shards)
        total["evictions"] = 0
        total["rows_per_second"] = total["rows"] / self._group.seconds if self._group.seconds else 0.0
        total["shards"] = shards
        return total

    def _uncounted(self, name: str) -> int:
        """What the shards' runtimes do not count of counter ``name`` (carried over rescales and restarts)."""
        return self._base[name] + sum(c[name] for c in self._group.carried)

    def export_streams(self, key_groups: Iterable[int] | None = None) -> pa.Table:
        """As :meth:`StreamRuntime.export_streams` (all streams, or those of ``key_groups``)."""
        groups = None if key_groups is None else list(key_groups)
        tables = [t for _, t in sorted(self._group.ask("export_streams", dict.fromkeys(range(self.shards),
                                                                                (groups,))).items())]
        held = [t for t in tables if "key_group" in t.column_names]   # a shard that never fed has only "key"
        return pa.concat_tables(held) if held else tables[0]

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`StreamRuntime.state_dict`, for every shard together: ``streamlstm.save_runtime`` of
        a sharded runtime writes a StreamRuntime file (:meth:`load` reads it back on any number of shards)."""
        totals = self.stats()
        streams = self.export_streams()
        kind = None if not streams.num_rows else ("int" if pa.types.is_integer(streams.schema.field("key").type)
                                                  else "str")
        return {"version": 1, "config": self.config(), "model": self.model.state_dict(), "streams": streams,
                "counters": {name: int(totals[name]) for name in COUNTERS}, "busy_seconds": totals["busy_seconds"],
                "key_kind": kind}

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write one consistent checkpoint to ``directory`` (layout in :mod:`streamlstm.cluster.manifest`):
        every shard at the same batch boundary, the manifest last. The driver's log restarts here."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self.model, directory / MODEL_FILE)
        files = [shard_file_name(i, self.shards, self._group.batches) for i in range(self.shards)]
        self._group.ask("save", {i: (str(directory / name),) for i, name in enumerate(files)})
        totals = self.stats()
        write_manifest(directory, Manifest(self.key_groups, self.shard_ranges(), files, self._group.batches,
                                           self.config(), {n: totals[n] for n in COUNTERS},
                                           {n: self._uncounted(n) for n in COUNTERS}))
        self._group.checkpoint(RecoveryPoint([str(directory / name) for name in files], own=True))
        return directory

    def checkpointed(self, path: str | Path) -> None:
        """Note that ``path``, a :func:`streamlstm.save_runtime` file of this runtime written at the current
        batch boundary, is a checkpoint: a restarted shard starts from it, and the driver's log restarts
        here (what replay and serve checkpoints call)."""
        carried = self._group.carried
        counters = [{n: s[n] + carried[i][n] for n in COUNTERS} for i, s in sorted(self._group.ask("stats").items())]
        self._group.checkpoint(RecoveryPoint([str(path)], own=False, counters=counters))

    @classmethod
    def load(cls, path: str | Path, shards: int | None = None, **options: Any) -> ShardedRuntime:
        """A sharded runtime from a checkpoint directory (:meth:`save`) or a :func:`streamlstm.save_runtime`
        file, on ``shards`` actors (None: as saved; a file: 2). Whole key groups move between shards.
        ``options``: threads_per_shard, num_cpus, num_gpus, address, device."""
        path = Path(path)
        if path.is_dir():
            manifest = read_manifest(path)
            model, config, paths = load_model(path / MODEL_FILE, device=options.get("device")), manifest.config, \
                manifest.paths(path)
        else:
            saved = load_runtime(path, device=options.get("device"))
            state = saved.state_dict()
            model, config, paths = saved.model, saved.config(), [str(path)]
            # One shard that owns every key group: its own file holds the counters (base zero).
            manifest = Manifest(saved.key_groups, [(0, saved.key_groups)], [path.name], state["counters"]["batches"],
                                config, state["counters"], dict.fromkeys(COUNTERS, 0))
            shards = 2 if shards is None else shards
        shards = len(paths) if shards is None else shards
        settings = {k: v for k, v in config.items() if k not in _EVICTION}
        runtime = cls(model, shards=shards, **{"key_groups": manifest.key_groups, **settings, **options})
        runtime._resume(manifest, paths)   # noqa: SLF001 (the class restores its own new instance)
        return runtime

    def _resume(self, manifest: Manifest, paths: list[str]) -> None:
        own = manifest.ranges == self.shard_ranges() and manifest.key_groups == self.key_groups
        args = {i: ([paths[i]], None) if own else (paths, self._layout.groups_of(i)) for i in range(self.shards)}
        self._group.ask("restore", args)
        self._base = dict(manifest.base) if own else dict(manifest.counters)
        self._group.batches = int(manifest.batches)
        self._group.checkpoint(RecoveryPoint(paths, own, [dict.fromkeys(COUNTERS, 0)] * self.shards))

    def close(self) -> None:
        """Commit the feeds returned, then end the shard actors (the Ray connection stays). After
        ``ray.shutdown()`` the actors are gone already, and this only forgets them."""
        self._group.close()

    def __repr__(self) -> str:
        return (f"ShardedRuntime(shards={self.shards}, key_groups={self.key_groups}, "
                f"key={self.columns.key!r}, features={self.columns.features!r})")

