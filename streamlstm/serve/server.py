"""StreamServer: a StreamRuntime behind Arrow Flight (the protocol is in :mod:`streamlstm.serve.protocol`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.flight as flight

from streamlstm.errors import ConfigError, StreamLSTMError
from streamlstm.serve import protocol
from streamlstm.serve.batcher import MicroBatcher
from streamlstm.serve.put_buffer import PutBuffer
from streamlstm.serve.security import BearerTokenAuth

__all__ = ["StreamServer"]

_SHUTTING_DOWN = "the server is shutting down; the batch was not applied: send it again after the restart"


def check_can_listen(location: str) -> None:
    """Refuse, in one line, a fixed port that something already listens on (gRPC would only log it).

    The probe binds with ``SO_REUSEADDR``, as servers do, so a port in TIME_WAIT is not mistaken for a used one.
    """
    parts = urlsplit(location)
    if not parts.port:
        return
    host = parts.hostname or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, parts.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {location}: unknown host {host!r} ({exc})") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {location}: {exc.strerror or exc} (another server uses the port? "
                              f"pick another --port, or 0 for any free one)") from exc


class _Gate:
    """Counts the batches between being read and being answered; closing it waits for them."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._inside = 0
        self.closed = False

    def enter(self) -> None:
        with self._changed:
            if self.closed:
                raise flight.FlightUnavailableError(_SHUTTING_DOWN, extra_info=protocol.encode_json(
                    {"error": "ServeError", "message": _SHUTTING_DOWN}))
            self._inside += 1

    def leave(self) -> None:
        with self._changed:
            self._inside -= 1
            self._changed.notify_all()

    def close(self, timeout: float) -> bool:
        """Refuse new batches; True once every batch already read is answered (False after ``timeout``)."""
        with self._changed:
            self.closed = True
            return self._changed.wait_for(lambda: self._inside == 0, timeout)


class StreamServer(flight.FlightServerBase):
    """Serve ``runtime`` over Arrow Flight: feed by DoExchange/DoPut, read DoPut outputs by DoGet, actions.

    The server listens as soon as it is constructed (``port`` tells the port when ``location`` asked
    for port 0); :func:`streamlstm.serve.serve` adds checkpoints, signals and the command line.

    Args:
        runtime (StreamRuntime): the runtime every call feeds.
        location (str, "grpc://127.0.0.1:0"): where to listen (``grpc+tls://`` with ``tls``).
        token (str, None): with a token, every call must carry ``authorization: Bearer <token>``.
        tls (tuple[bytes, bytes], None): PEM certificate chain and private key.
        max_delay_ms (float, 2.0): how long a micro-batch waits for other clients' batches.
        max_batch_rows (int, 16384): rows per micro-batch at most.
        put_buffer_rows (int, 1024): ``DoPut`` output rows kept per stream for ``DoGet``; 0 drops them.
        checkpoint (callable, None): ``checkpoint(runtime, version) -> dict`` writing a checkpoint; it is
            called with no batch in progress. Without it the ``checkpoint`` action is refused.
        version (int, 0): the count of state changes so far (a resumed server continues the count).
        start (str, "new"): how the state began, reported by ``stats()["server"]["start"]``: "new",
            "resumed" (from a checkpoint) or "fresh" (``--resume`` found no checkpoint: started empty).
    """

    def __init__(self, runtime: Any, location: str = "grpc://127.0.0.1:0", *, token: str | None = None,
                 tls: tuple[bytes, bytes] | None = None, max_delay_ms: float = 2.0, max_batch_rows: int = 16384,
                 put_buffer_rows: int = 1024, checkpoint: Callable[[Any, int], dict] | None = None,
                 version: int = 0, start: str = "new") -> None:
        if max_delay_ms < 0:
            raise ConfigError(f"`max_delay_ms` must be >= 0, got {max_delay_ms!r}")
        if max_batch_rows < 1:
            raise ConfigError(f"`max_batch_rows` must be a positive integer, got {max_batch_rows!r}")
        if put_buffer_rows < 0:
            raise ConfigError(f"`put_buffer_rows` must be >= 0, got {put_buffer_rows!r}")
        check_can_listen(location)
        super().__init__(location, tls_certificates=[flight.CertKeyPair(*tls)] if tls else None,
                         middleware={"auth": BearerTokenAuth(token)} if token else None)
        self.runtime = runtime
        self.version = version
        self.start = start
        self._state = threading.Lock()  # a fed round, a reset and a checkpoint exclude each other
        self._checkpoint = checkpoint
        self.checkpoints: list[dict] = []
        self.batcher = MicroBatcher(self._feed, max_delay=max_delay_ms / 1000.0, max_batch_rows=max_batch_rows,
                                    coalesce=not _goes_backwards(runtime.model))
        self.outputs = PutBuffer(put_buffer_rows)
        self._gate = _Gate()
        self._started = time.monotonic()
        self._actions: dict[str, Callable[[Any], Any]] = {
            "reset": self._reset, "stats": lambda _: self.stats(), "checkpoint": lambda _: self.checkpoint(),
            "health": lambda _: self.health()}

    # -- state changes ----------------------------------------------------------------------------------
    def _feed(self, batch: Any) -> pa.RecordBatch:
        with self._state:
            output = self.runtime.feed(batch)
            self.version += 1
            return output

    def _reset(self, body: bytes) -> dict:
        keys = protocol.keys_from_json(protocol.decode_json(body, "the reset body"), "the reset body")
        with self._state:
            count = self.runtime.reset(keys)
            self.version += 1
        return {"reset": count}

    def checkpoint(self) -> dict:
        """Write a checkpoint now, between micro-batches; returns what the checkpoint function returned."""
        if self._checkpoint is None:
            raise ConfigError("this server runs without a checkpoint directory (--checkpoint DIR)")
        with self._state:
            written = self._checkpoint(self.runtime, self.version)
        self.checkpoints.append(written)
        return written

    def drain(self, timeout: float = 10.0) -> bool:
        """Refuse new batches (unavailable) and wait until every batch already read is answered."""
        return self._gate.close(timeout)

    # -- reports -------------------------------------------------------------------------------------
    def health(self) -> dict:
        draining = self._gate.closed
        return {"status": "draining" if draining else "ok", "streams": len(self.runtime), "draining": draining}

    def stats(self) -> dict:
        """The runtime's :meth:`~streamlstm.StreamRuntime.stats` and the server's counters under ``server``."""
        result = self.runtime.stats()
        counters = dict(self.batcher.counters)
        rounds = counters["rounds"]
        result["server"] = {
            **counters, "mean_round_rows": counters["rows"] / rounds if rounds else 0.0,
            "mean_round_batches": counters["batches"] / rounds if rounds else 0.0,
            "feeders": self.batcher.feeders, "coalesce": self.batcher.coalesce, "version": self.version,
            "start": self.start,
            "put_buffer_rows": self.outputs.rows, "put_rows_dropped": self.outputs.rows_dropped,
            "checkpoints": len(self.checkpoints), "last_checkpoint": self.checkpoints[-1] if self.checkpoints else None,
            "draining": self._gate.closed, "uptime_seconds": time.monotonic() - self._started}
        return result

    # -- Flight handlers ---------------------------------------------------------------------------------
    def _fed_outputs(self, descriptor: flight.FlightDescriptor, reader: Any) -> Iterator[pa.RecordBatch]:
        """Feed each batch a client writes and yield its output (written by the caller while the drain
        gate is held, so a stopping server answers every batch it has read); ends when the server drains."""
        _check_feed(descriptor)
        self.batcher.add_feeder()
        try:
            for chunk in reader:
                if chunk.data is None:
                    continue
                self._gate.enter()
                try:
                    yield self._submit(chunk.data)
                finally:
                    self._gate.leave()
                if self._gate.closed:  # end the call: the client sees the end of the stream
                    return
        finally:
            self.batcher.remove_feeder()

    def do_exchange(self, context: Any, descriptor: flight.FlightDescriptor, reader: Any, writer: Any) -> None:
        started = False
        for output in self._fed_outputs(descriptor, reader):
            if not started:
                writer.begin(output.schema)
                started = True
            writer.write_batch(output)

    def do_put(self, context: Any, descriptor: flight.FlightDescriptor, reader: Any, writer: Any) -> None:
        for index, output in enumerate(self._fed_outputs(descriptor, reader)):
            self.outputs.add(output)
            writer.write(pa.py_buffer(protocol.encode_json({"batch": index, "rows": output.num_rows})))

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.RecordBatchStream:
        try:
            keys = protocol.keys_from_json(protocol.decode_json(ticket.ticket, "the ticket"), "the ticket")
        except StreamLSTMError as exc:
            raise protocol.encode_error(exc) from exc
        return flight.RecordBatchStream(self.outputs.take(keys))

    def do_action(self, context: Any, action: flight.Action) -> Iterator[bytes]:
        handler = self._actions.get(action.type)
        try:
            if handler is None:
                raise ConfigError(f"unknown action {action.type!r}; the actions are {', '.join(protocol.ACTIONS)}")
            result = handler(action.body.to_pybytes() if action.body is not None else b"")
        except StreamLSTMError as exc:
            raise protocol.encode_error(exc) from exc
        return iter([protocol.encode_json(result)])

    def list_actions(self, context: Any) -> list[tuple[str, str]]:
        return list(protocol.ACTIONS.items())

    def _submit(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        try:
            return self.batcher.submit(batch)
        except Exception as exc:
            raise protocol.encode_error(exc) from exc


def _check_feed(descriptor: flight.FlightDescriptor) -> None:
    if descriptor.descriptor_type != flight.DescriptorType.CMD or descriptor.command != protocol.FEED:
        got = descriptor.command if descriptor.descriptor_type == flight.DescriptorType.CMD else descriptor.path
        raise protocol.encode_error(ConfigError(f"feed calls need the descriptor command {protocol.FEED!r}, "
                                                f"got {got!r}"))


def _goes_backwards(model: Any) -> bool:
    return any(getattr(module, "go_backwards", False) for module in model.modules())
