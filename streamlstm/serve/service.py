"""``serve``: load a model, build or resume the runtime, listen, checkpoint, and stop cleanly on a signal.

Lifecycle. The server prints one line, ``streamlstm serve: listening on <location> (<n> streams)``,
once it accepts calls. With a checkpoint directory it checkpoints every ``checkpoint_every`` seconds
when the state changed. On SIGTERM or SIGINT it stops reading new batches (calls answer
*unavailable*: the batch was not applied), answers every batch already read, writes a final
checkpoint, closes the calls and returns 0; ``--resume`` then continues every stream exactly where it
stopped. After ``kill -9`` the state is that of the last checkpoint (see
:mod:`streamlstm.serve.checkpoints`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time as _time
from pathlib import Path
from typing import Any

import pyarrow as pa

from streamlstm.errors import ConfigError, ServeError, SourceError, StreamLSTMError
from streamlstm.serve.checkpoints import ServerCheckpoints
from streamlstm.serve.security import read_tls, read_token
from streamlstm.serve.server import StreamServer

__all__ = ["serve"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DRAIN_SECONDS = 10.0     # longest wait for batches already read to be answered
_SHUTDOWN_SECONDS = 2.0   # longest wait for clients that keep a call open without sending


def serve(model: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8815, key: str = "stream_id",
          features: str | list[str] = "x", mask: str | None = None, reset: str | None = None,
          end: str | None = None, time: str | None = None, mode: str = "auto", device: Any = None,
          checkpoint: str | os.PathLike | None = None, checkpoint_every: float = 60.0, resume: bool = False,
          max_delay_ms: float = 2.0, max_batch_rows: int = 16384, put_buffer_rows: int = 1024,
          token_file: str | os.PathLike | None = None, tls_cert: str | os.PathLike | None = None,
          tls_key: str | os.PathLike | None = None, shards: int | None = None, ray_address: str | None = None,
          cpus_per_shard: float = 1.0, stop: threading.Event | None = None) -> int:
    """Serve ``model`` over Arrow Flight until SIGTERM/SIGINT (or ``stop`` is set); returns 0.

    Args:
        model (str | Path): a model file (:func:`streamlstm.save_model`, or a Keras file).
        host (str, "127.0.0.1"), port (int, 8815): where to listen; port 0 picks a free port.
        key, features, mask, reset, end, time, mode, device: as for :class:`streamlstm.StreamRuntime`.
        checkpoint (str | Path, None): checkpoint directory (see :mod:`streamlstm.serve.checkpoints`).
        checkpoint_every (float, 60.0): seconds between checkpoints when the state changed; 0 = only
            on stop and on the ``checkpoint`` action.
        resume (bool, False): continue from the checkpoint in ``checkpoint`` (start empty if none).
        max_delay_ms, max_batch_rows, put_buffer_rows: see :class:`~streamlstm.serve.StreamServer`.
        token_file (str | Path, None): a file holding the bearer token every call must carry.
        tls_cert, tls_key (str | Path, None): PEM certificate chain and private key: serve TLS.
        shards (int, None): serve a :class:`streamlstm.ShardedRuntime` of this many Ray actors: each
            micro-batch is cut by key group and fed to every shard, all or nothing, with the outputs
            and errors of one runtime; checkpoints stay runtime files (resumable on any shard count).
        ray_address (str, None): the Ray cluster for ``shards`` (None: a local Ray).
        cpus_per_shard (float, 1.0): CPUs Ray reserves for each shard actor.
        stop (threading.Event, None): stop when set (also without signals, e.g. off the main thread).

    Raises:
        ConfigError, CheckpointError, SourceError: bad options, checkpoint or model file.
    """
    if checkpoint_every < 0:
        raise ConfigError(f"`checkpoint_every` must be >= 0 seconds, got {checkpoint_every!r}")
    if resume and checkpoint is None:
        raise ConfigError("`resume` needs the checkpoint directory of the server to resume (--checkpoint DIR)")
    token = read_token(token_file) if token_file is not None else None
    tls = read_tls(tls_cert, tls_key)
    options = {"key": key, "features": features, "mask": mask, "reset": reset, "end": end, "time": time,
               "mode": mode}
    store = None
    state = None
    if checkpoint is not None:
        store = ServerCheckpoints(checkpoint, _model_file(model), options, resume=resume)
        state = store.open()
    # Without checkpoints a lost shard cannot be restarted from one: keep no log of every batch served.
    cluster = None if shards is None else {"shards": shards, "address": ray_address, "num_cpus": cpus_per_shard,
                                           "device": device, "recover": checkpoint is not None}
    runtime = _runtime(state, model, device, options, cluster)
    scheme = "grpc+tls" if tls else "grpc"
    start = "resumed" if state is not None else "fresh" if resume else "new"
    try:
        server = StreamServer(runtime, f"{scheme}://{host}:{port}", token=token, tls=tls, max_delay_ms=max_delay_ms,
                              max_batch_rows=max_batch_rows, put_buffer_rows=put_buffer_rows,
                              checkpoint=_checkpoint_function(store, shards is not None),
                              version=store.version if store is not None else 0, start=start)
    except (pa.ArrowException, OSError) as exc:  # port taken, address not local, TLS refused by gRPC
        if shards is not None:
            runtime.close()
        lines = str(exc).strip().splitlines()
        raise ServeError(f"cannot listen on {scheme}://{host}:{port}: {lines[0] if lines else exc!r}") from exc
    stop = stop if stop is not None else threading.Event()
    # The handlers stay until the process is done: a second SIGINT/SIGTERM while stopping is ignored
    # (the stop is already under way, bounded by _DRAIN_SECONDS + _SHUTDOWN_SECONDS).
    restore = _on_signals(stop)
    failed = True
    try:
        notes = {"new": "", "resumed": ", resumed",
                 "fresh": f", --resume: no checkpoint in {checkpoint} yet, starting fresh"}
        print(f"streamlstm serve: listening on {scheme}://{host}:{server.port} ({len(runtime):,} streams"
              f"{notes[start]})", flush=True)
        _run_until(stop, server, store, checkpoint_every)
        failed = False
    finally:
        try:
            _shut_down(server, 1 if failed else 0, runtime if shards is not None else None)
        finally:
            restore()
    return 0


def _checkpoint_function(store: ServerCheckpoints | None, sharded: bool) -> Any:
    """What the server calls to checkpoint; a sharded runtime also restarts lost shards from it."""
    if store is None or not sharded:
        return None if store is None else store.commit

    def commit(runtime: Any, version: int) -> dict[str, Any]:
        written = store.commit(runtime, version)
        runtime.checkpointed(written["path"])
        return written
    return commit


def _runtime(state: Path | None, model: Any, device: Any, options: dict[str, Any],
             cluster: dict[str, Any] | None) -> Any:
    """The runtime to serve: resumed from the checkpoint's runtime file or new; sharded with ``shards``."""
    from streamlstm.io.replay import load_model_file
    from streamlstm.io.runtime_file import load_runtime
    from streamlstm.runtime import StreamRuntime

    if cluster is None:
        return load_runtime(state, device=device) if state is not None else \
            StreamRuntime(load_model_file(model, device), device=device, **options)
    from streamlstm.cluster import ShardedRuntime

    return ShardedRuntime.load(state, **cluster) if state is not None else \
        ShardedRuntime(load_model_file(model, device), **cluster, **options)


def _model_file(model: str | os.PathLike) -> Path:
    path = Path(model)
    if not path.is_file():
        raise SourceError(f"model file {path} {'is a directory' if path.is_dir() else 'does not exist'}")
    return path


def _on_signals(stop: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _STOP_SIGNALS}
    return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]


def _run_until(stop: threading.Event, server: StreamServer, store: ServerCheckpoints | None, every: float) -> None:
    # The main thread waits in short slices so that signal handlers run promptly.
    due = None if store is None or every <= 0 else _time.monotonic() + every
    while not stop.wait(0.2):
        if due is not None and _time.monotonic() >= due:
            due = _time.monotonic() + every
            if server.version != store.committed_version:
                try:
                    server.checkpoint()
                except (StreamLSTMError, OSError) as exc:  # keep serving; the next attempt may succeed
                    print(f"streamlstm serve: warning: checkpoint failed: {exc}", file=sys.stderr, flush=True)
    print("streamlstm serve: stopping (answering the batches already read, then a final checkpoint)", flush=True)
    server.drain(_DRAIN_SECONDS)
    if store is not None and server.version != store.committed_version:
        server.checkpoint()


def _shut_down(server: StreamServer, code: int, sharded: Any = None) -> None:
    if sharded is not None:   # every batch read was answered and checkpointed: the shard actors can go
        sharded.close()
    closer = threading.Thread(target=server.shutdown, name="flight-shutdown", daemon=True)
    closer.start()
    closer.join(_SHUTDOWN_SECONDS)
    if closer.is_alive():
        # A client holds a call open without sending: the checkpoint is written and every batch read
        # was answered, so end the process now rather than let interpreter shutdown race gRPC threads.
        print("streamlstm serve: stopped (calls still open were closed)", flush=True)
        sys.stderr.flush()
        os._exit(code)
    print("streamlstm serve: stopped", flush=True)
