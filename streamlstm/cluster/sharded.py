"""ShardedRuntime: one StreamRuntime per Ray actor, each owning a range of key groups.

A batch is cut by the key group of each row (:class:`~streamlstm.cluster.layout.BatchSplit`); every
shard with rows prepares its part (:meth:`StreamRuntime.prepare`: parse, check, compute, change
nothing); if every shard prepared, every shard commits, else every shard aborts and the error is raised.
The outputs are put back in input order, so :meth:`ShardedRuntime.feed` returns exactly what
:meth:`StreamRuntime.feed` would for the same batch.

Fault recovery: the driver keeps the batches fed since the last checkpoint (:meth:`save`, or the
start). A shard found dead (its actor gone: ``ray.kill``, a crashed process or node) is started again
from the last checkpoint, fed its part of every logged batch, and the interrupted call is retried, so
outputs and state equal those of an uninterrupted run. Not covered: the driver's own death (resume
from the last checkpoint with :meth:`load`, as replay does), and a fault while a checkpoint is written
(the previous checkpoint stays valid: the manifest is written last).
"""

from __future__ import annotations

import time as _time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from streamlstm.arrow import as_record_batch
from streamlstm.cluster.layout import BatchSplit, ShardLayout
from streamlstm.cluster.manifest import MODEL_FILE, Manifest, read_manifest, shard_file_name, write_manifest
from streamlstm.cluster.ray_support import start_ray
from streamlstm.cluster.shard import Shard
from streamlstm.errors import ConfigError, StateError, StreamLSTMError
from streamlstm.io.model_file import load_model, model_to_bytes, save_model
from streamlstm.io.runtime_file import load_runtime
from streamlstm.runtime import StreamRuntime
from streamlstm.runtime.key_groups import key_group
from streamlstm.runtime.report import COUNTERS

__all__ = ["ShardedRuntime"]

_EVICTION = ("idle_ttl", "max_streams", "on_evict", "clock")


class _ShardsDied(Exception):
    def __init__(self, shards: set[int]) -> None:
        super().__init__(shards)
        self.shards = shards


@dataclass
class _Flight:
    """One batch on its way through the shards: cut, its prepares sent (``refs``)."""

    batch: Any
    split: BatchSplit
    problem: StreamLSTMError | None = None   # the key column could not be hashed: shard 0 names the error
    refs: dict[int, Any] = field(default_factory=dict)


@dataclass
class _RecoveryPoint:
    """Where a restarted shard starts from: shard files of the same layout (``own``), or files of
    another layout from which it takes its key groups."""

    paths: list[str]
    own: bool
    counters: list[dict] = field(default_factory=list)   # each shard's counters at the point (not own)


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
        _check_cpus(self._ray, shards, num_cpus)
        self._actor = self._ray.remote(Shard).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self._threads = threads_per_shard
        self._shards = [self._spawn() for _ in range(shards)]
        self._log: list[Any] = []
        self._recover_shards = bool(recover)
        self._recovery: _RecoveryPoint | None = None
        self._commits: dict[int, Any] = {}
        self._base = dict.fromkeys(COUNTERS, 0)                          # counts no shard holds (a rescale)
        self._carried = [dict.fromkeys(COUNTERS, 0) for _ in range(shards)]   # a shard's counts before a restart
        self._batches = 0
        self._seconds = 0.0
        self.restarts = 0

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
        return list(self._shards)

    # -- calling the shards ----------------------------------------------------------------------
    def _gather(self, refs: dict[int, Any]) -> dict[int, Any]:
        """Every result; shards whose actor died are recovered after the others answered, then the
        caller is told to try again."""
        errors = self._ray.exceptions.RayActorError
        results, dead = {}, set()
        for shard, ref in refs.items():
            try:
                results[shard] = self._ray.get(ref)
            except errors:
                dead.add(shard)
        if dead:
            raise _ShardsDied(dead)
        return results

    def _ask(self, method: str, args_of: dict[int, tuple] | None = None) -> dict[int, Any]:
        """``method`` on every shard (or on the shards of ``args_of``, with those arguments), in order
        after any feed in flight; a dead shard is recovered and the call repeated."""
        while True:
            try:
                self._settle()
                calls = args_of if args_of is not None else dict.fromkeys(range(self.shards), ())
                return self._gather({i: getattr(self._shards[i], method).remote(*a) for i, a in calls.items()})
            except _ShardsDied as died:
                self._recover(died.shards)

    def _settle(self) -> None:
        """Wait for the commits sent (a shard lost meanwhile is recovered: the log holds its batch)."""
        refs, self._commits = self._commits, {}
        try:
            self._gather(refs)
        except _ShardsDied as died:
            self._recover(died.shards)

    def _recover(self, dead: set[int]) -> None:
        """Start each dead shard again: from the last checkpoint, then its part of every logged batch."""
        if not self._recover_shards:
            raise StateError(f"shard(s) {sorted(dead)} of this ShardedRuntime died and it keeps no log to restart "
                             f"them from (recover=False); load the last checkpoint instead")
        for shard in sorted(dead):
            self._ray.kill(self._shards[shard], no_restart=True)
            actor = self._spawn()
            point = self._recovery
            if point is not None:
                own = point.own
                self._ray.get(actor.restore.remote([point.paths[shard]] if own else point.paths,
                                                   None if own else self._layout.groups_of(shard)))
                if not own:   # a fresh runtime counts from zero: carry the shard's counts at the point
                    self._carried[shard] = dict(point.counters[shard])
            for batch in self._log:
                part = BatchSplit.of(batch, self.columns.key, self._layout).parts.get(shard)
                if part is not None:
                    self._ray.get(actor.feed.remote(part))
            self._shards[shard] = actor
            self.restarts += 1

    # -- feeding ---------------------------------------------------------------------------------
    def feed(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """Advance every stream in ``batch``; returns what :meth:`StreamRuntime.feed` would. All or
        nothing across shards: a batch bad on any shard changes no shard (the runtime's error is raised)."""
        return next(iter(self.feed_many([batch])))

    def feed_many(self, batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterator[pa.RecordBatch]:
        """:meth:`feed` each batch in turn, yielding the outputs in order, pipelined: a batch is cut and
        sent while the shards compute the one before. A bad batch raises (the ones before it are fed,
        the ones after it are not)."""
        flight = None
        for batch in batches:
            ahead = self._cut(batch)
            if flight is None:
                self._send(ahead)
            else:
                output = self._land(flight)
                self._send(ahead)
                yield output
            flight = ahead
        if flight is not None:
            output = self._land(flight)
            self._settle()
            yield output

    def _cut(self, batch: Any) -> _Flight:
        record = as_record_batch(batch)
        whole = BatchSplit(0, {0: np.empty(0, np.int64)}, {0: batch})
        if record is None:
            return _Flight(batch, whole)   # shard 0 raises the runtime's error for it
        try:
            return _Flight(record, BatchSplit.of(record, self.columns.key, self._layout))
        except (StreamLSTMError, KeyError) as exc:   # a missing or bad key column: shard 0 names it
            rows = np.arange(record.num_rows)
            problem = exc if isinstance(exc, StreamLSTMError) else ConfigError(str(exc))
            return _Flight(record, BatchSplit(record.num_rows, {0: rows}, {0: record}), problem)

    def _send(self, flight: _Flight) -> None:
        flight.refs = {i: self._shards[i].prepare.remote(part, flight.split.rows[i])
                       for i, part in flight.split.parts.items()}

    def _land(self, flight: _Flight) -> pa.RecordBatch:
        """Wait for the prepares of ``flight``; commit on every shard or abort on every shard."""
        started = _time.perf_counter()
        while True:
            try:
                self._settle()
                results = self._gather(flight.refs)
                break
            except _ShardsDied as died:
                self._recover(died.shards)
                self._send(flight)
        errors = [r for r in results.values() if isinstance(r, tuple)]
        if errors or flight.problem is not None:
            self._ask("abort", dict.fromkeys(results, ()))
            # An error without a row (a schema error) comes before row errors; then the first row.
            raise min(errors, key=lambda e: (e[1] >= 0, e[1]))[0] if errors else flight.problem
        if self._recover_shards:
            self._log.append(flight.batch)   # before the commits: a shard lost during one replays this batch
        self._commits = {i: self._shards[i].commit.remote() for i in results}
        self._batches += 1
        output = flight.split.assemble(results)
        self._seconds += _time.perf_counter() - started
        return output

    # -- streams ---------------------------------------------------------------------------------
    def _shard_of(self, key: Any) -> int:
        return int(self._layout.shard_of_group()[key_group(key, self.key_groups)])

    def __len__(self) -> int:
        return sum(self._ask("size").values())

    def __contains__(self, key: Any) -> bool:
        shard = self._shard_of(key)
        return self._ask("contains", {shard: (key,)})[shard]

    def keys(self) -> list[Any]:
        """The keys held, shard by shard (each in its runtime's slot order)."""
        return [key for shard, keys in sorted(self._ask("keys").items()) for key in keys]

    def state(self, key: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """The stream's ``[(h, c), ...]`` (see :meth:`StreamRuntime.state`), from the shard that holds it."""
        shard = self._shard_of(key)
        return self._ask("state", {shard: (key,)})[shard]

    def reset(self, keys: Iterable[Any] | None = None) -> None:
        """As :meth:`StreamRuntime.reset`: zero ``keys`` (all streams when None)."""
        if keys is None:
            self._ask("reset", dict.fromkeys(range(self.shards), (None,)))
            return
        keys = list(keys)
        by_shard: dict[int, tuple] = {}
        for key in keys:
            by_shard.setdefault(self._shard_of(key), ([],))[0].append(key)
        self._ask("reset", by_shard)

    def stats(self) -> dict[str, Any]:
        """The totals, keyed as :meth:`StreamRuntime.stats` (``batches`` = batches fed to this runtime,
        ``rows_per_second`` over the driver's time), and under ``shards`` each shard's own stats."""
        shards = [s for _, s in sorted(self._ask("stats").items())]
        total: dict[str, Any] = {name: self._uncounted(name) + sum(s[name] for s in shards) for name in COUNTERS}
        total["batches"] = self._batches
        for name in ("streams", "capacity", "state_bytes", "busy_seconds"):
            total[name] = sum(s[name] for s in shards)
        total["evictions"] = 0
        total["rows_per_second"] = total["rows"] / self._seconds if self._seconds else 0.0
        total["shards"] = shards
        return total

    def _uncounted(self, name: str) -> int:
        """What the shards' runtimes do not count of counter ``name`` (carried over rescales and restarts)."""
        return self._base[name] + sum(c[name] for c in self._carried)

    def export_streams(self, key_groups: Iterable[int] | None = None) -> pa.Table:
        """As :meth:`StreamRuntime.export_streams` (all streams, or those of ``key_groups``)."""
        groups = None if key_groups is None else list(key_groups)
        tables = [t for _, t in sorted(self._ask("export_streams", dict.fromkeys(range(self.shards),
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
        self._settle()
        save_model(self.model, directory / MODEL_FILE)
        files = [shard_file_name(i, self.shards, self._batches) for i in range(self.shards)]
        self._ask("save", {i: (str(directory / name),) for i, name in enumerate(files)})
        totals = self.stats()
        write_manifest(directory, Manifest(self.key_groups, self.shard_ranges(), files, self._batches,
                                           self.config(), {n: totals[n] for n in COUNTERS},
                                           {n: self._uncounted(n) for n in COUNTERS}))
        self._recovery = _RecoveryPoint([str(directory / name) for name in files], own=True)
        self._log.clear()
        return directory

    def checkpointed(self, path: str | Path) -> None:
        """Note that ``path``, a :func:`streamlstm.save_runtime` file of this runtime written at the current
        batch boundary, is a checkpoint: a restarted shard starts from it, and the driver's log restarts
        here (what replay and serve checkpoints call)."""
        counters = [{n: s[n] + self._carried[i][n] for n in COUNTERS} for i, s in sorted(self._ask("stats").items())]
        self._recovery = _RecoveryPoint([str(path)], own=False, counters=counters)
        self._log.clear()

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
        self._ask("restore", args)
        self._base = dict(manifest.base) if own else dict(manifest.counters)
        self._batches = int(manifest.batches)
        self._recovery = _RecoveryPoint(paths, own, [dict.fromkeys(COUNTERS, 0)] * self.shards)
        self._log.clear()

    def close(self) -> None:
        """End the shard actors (the Ray connection stays). After ``ray.shutdown()`` the actors are gone
        already, and this only forgets them."""
        shards, self._shards = self._shards, []
        if not self._ray.is_initialized():
            return
        for actor in shards:
            try:
                self._ray.kill(actor, no_restart=True)
            except self._ray.exceptions.ActorHandleNotFoundError:
                return   # the handles belong to an earlier Ray session, which took the actors with it

    def __repr__(self) -> str:
        return (f"ShardedRuntime(shards={self.shards}, key_groups={self.key_groups}, "
                f"key={self.columns.key!r}, features={self.columns.features!r})")


# How long CPUs that just-killed actors held may take to show as free again in Ray's resource view.
FREE_CPU_WAIT_SECONDS = 10.0


def _check_cpus(ray: Any, shards: int, num_cpus: float) -> None:
    """Refuse shards Ray could never schedule: it would wait for free CPUs forever (e.g. while another
    ShardedRuntime's actors hold them). Polls Ray's resource view for a few seconds first, since
    actors killed just before release their CPUs a moment later."""
    needed = shards * num_cpus
    total = ray.cluster_resources().get("CPU", 0)
    if needed > total:
        raise ConfigError(f"{shards} shards x num_cpus={num_cpus} need {needed:g} CPUs but the Ray cluster has "
                          f"{total:g}; use fewer shards or a smaller num_cpus")
    deadline = _time.monotonic() + FREE_CPU_WAIT_SECONDS
    while (free := ray.available_resources().get("CPU", 0)) < needed - 1e-9:
        if _time.monotonic() > deadline:
            raise ConfigError(f"{shards} shards x num_cpus={num_cpus} need {needed:g} CPUs but only {free:g} of "
                              f"the Ray cluster's {total:g} are free: other actors hold the rest (another "
                              f"ShardedRuntime? close() it first), or pass a smaller num_cpus")
        _time.sleep(0.05)
