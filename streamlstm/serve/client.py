"""``streamlstm.flight.Client``: the Python client of ``streamlstm serve``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from streamlstm.arrow import as_record_batch
from streamlstm.errors import ArgumentTypeError, ServeError
from streamlstm.serve import protocol

__all__ = ["Client"]

_FEED = flight.FlightDescriptor.for_command(protocol.FEED)


class Client:
    """Feed record batches to a ``streamlstm serve`` server and call its actions.

    Args:
        uri (str): the server's location, e.g. ``"grpc://127.0.0.1:8815"`` or ``"grpc+tls://host:8815"``
            (``"host:port"`` means ``grpc://host:port``).
        token (str, None): the bearer token, when the server runs with ``--token-file``.
        tls_root_certs (bytes | str | Path, None): PEM certificates to trust (e.g. a self-signed server
            certificate), as bytes or a file path; default: the system's.
        timeout (float, None): seconds per call.

    :meth:`feed` keeps one ``DoExchange`` call open and sends one batch at a time; a failed batch
    raises the server's error (``StreamError``, ``SchemaError``, ... with the runtime's message), changed
    nothing on the server, and the next :meth:`feed` opens a new call. One client serves one thread at a
    time (calls are serialized); use one client per thread to feed concurrently.

    Raises:
        StreamError, SchemaError, ConfigError: the server refused a batch or a request.
        UnauthenticatedError: missing or wrong token.
        ServeError: the server is unreachable or shutting down (the batch was not applied then).

    Example:
        >>> import streamlstm as sl
        >>> client = sl.flight.Client("grpc://127.0.0.1:8815")  # doctest: +SKIP
        >>> out = client.feed(batch)                             # doctest: +SKIP
    """

    def __init__(self, uri: str, token: str | None = None, *, tls_root_certs: bytes | str | os.PathLike | None = None,
                 timeout: float | None = None) -> None:
        if not isinstance(uri, str):
            raise ArgumentTypeError(f"`uri` must be a str such as 'grpc://127.0.0.1:8815', got {type(uri).__name__}")
        self.uri = uri if "://" in uri else f"grpc://{uri}"
        if isinstance(tls_root_certs, (str, os.PathLike)):
            tls_root_certs = Path(tls_root_certs).read_bytes()
        try:
            self._client = flight.FlightClient(self.uri, tls_root_certs=tls_root_certs)
        except (pa.ArrowException, OSError) as exc:
            raise ServeError(f"cannot connect to {self.uri}: {exc}") from exc
        headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
        self._options = flight.FlightCallOptions(headers=headers, timeout=timeout)
        self._lock = threading.Lock()
        self._open: tuple[pa.Schema, Any, Any] | None = None

    # -- feeding -------------------------------------------------------------------------------------
    def feed(self, batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
        """Feed one batch; returns the runtime's output rows for it (key, time, ``output``), in row order."""
        batch = _one_batch(batch)
        with self._lock:
            try:
                if self._open is None or not self._open[0].equals(batch.schema):
                    self._end_exchange()
                    writer, reader = self._client.do_exchange(_FEED, self._options)
                    writer.begin(batch.schema)
                    self._open = (batch.schema, writer, reader)
                _, writer, reader = self._open
                writer.write_batch(batch)
                return _next_output(reader)
            except pa.ArrowException as exc:
                self._end_exchange()
                raise _error(exc) from exc
            except BaseException:
                self._end_exchange()
                raise

    def exchange(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """Feed ``batches`` (one schema) in one ``DoExchange`` call; yields each batch's output in turn.

        A refused batch raises its error from the iterator: the outputs yielded before it were applied,
        it and the batches after it were not.
        """
        writer = reader = None
        try:
            for batch in batches:
                batch = _one_batch(batch)
                if writer is None:
                    writer, reader = self._client.do_exchange(_FEED, self._options)
                    writer.begin(batch.schema)
                writer.write_batch(batch)
                yield _next_output(reader)
            if writer is not None:
                writer.done_writing()
        except pa.ArrowException as exc:
            raise _error(exc) from exc
        finally:
            _close(writer)

    def put(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Feed ``batches`` (one schema) fire-and-forget with ``DoPut``; returns the rows applied.

        The outputs stay on the server for :meth:`get` (bounded per stream, see ``--put-buffer-rows``).
        """
        writer = acks = None
        try:
            for batch in batches:
                batch = _one_batch(batch)
                if writer is None:
                    writer, acks = self._client.do_put(_FEED, batch.schema, self._options)
                writer.write_batch(batch)
            if writer is None:
                return 0
            writer.done_writing()
            rows = 0
            while (ack := acks.read()) is not None:
                rows += protocol.decode_json(ack.to_pybytes(), "a DoPut acknowledgement")["rows"]
            writer.close()
            writer = None
            return rows
        except pa.ArrowException as exc:
            raise _error(exc) from exc
        finally:
            _close(writer)

    def get(self, keys: Iterable[Any] | None = None) -> pa.Table:
        """Take the buffered ``DoPut`` outputs of ``keys`` (every stream when None) from the server."""
        ticket = flight.Ticket(protocol.encode_json({"keys": None if keys is None else list(keys)}))
        try:
            return self._client.do_get(ticket, self._options).read_all()
        except pa.ArrowException as exc:
            raise _error(exc) from exc

    # -- actions -------------------------------------------------------------------------------------
    def reset(self, keys: Iterable[Any] | None = None) -> int:
        """Zero the carries of ``keys`` (every stream when None) on the server; returns the number of
        streams reset (the server's ``{"reset": n}``: held streams only, an unknown key resets nothing)."""
        body = b"" if keys is None else protocol.encode_json({"keys": list(keys)})
        return int(self._action("reset", body)["reset"])

    def stats(self) -> dict[str, Any]:
        """The server's runtime counters (rows, batches, streams, ...) and its own under ``server``."""
        return self._action("stats")

    def checkpoint(self) -> dict[str, Any]:
        """Make the server write a checkpoint now; returns its path, rows and version."""
        return self._action("checkpoint")

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "streams": n, "draining": False}`` from a live server."""
        return self._action("health")

    def _action(self, name: str, body: bytes = b"") -> Any:
        try:
            results = list(self._client.do_action(flight.Action(name, body), self._options))
        except pa.ArrowException as exc:
            raise _error(exc) from exc
        return protocol.decode_json(results[0].body.to_pybytes(), f"the {name} answer") if results else None

    # -- lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        """End the open exchange and the connection."""
        with self._lock:
            self._end_exchange()
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.uri!r})"

    def _end_exchange(self) -> None:
        if self._open is not None:
            _, writer, _ = self._open
            self._open = None
            try:
                writer.done_writing()
            except pa.ArrowException:
                pass
            _close(writer)


def _one_batch(batch: Any) -> pa.RecordBatch:
    record_batch = as_record_batch(batch)
    if record_batch is not None:
        return record_batch
    raise ArgumentTypeError(f"`batch` must be a pyarrow RecordBatch or Table, got {type(batch).__name__}")


def _next_output(reader: Any) -> pa.RecordBatch:
    try:
        return reader.read_chunk().data
    except StopIteration as exc:
        raise ServeError("the server ended the call (it is shutting down); the batch was not applied: send it "
                         "again after the restart") from exc


def _error(exc: pa.ArrowException) -> BaseException:
    if isinstance(exc, flight.FlightError):
        return protocol.decode_error(exc)
    return ServeError(f"Flight call failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}")


def _close(writer: Any) -> None:
    if writer is None:
        return
    try:
        writer.close()
    except (pa.ArrowException, OSError):
        pass  # the call already failed; its error was raised to the caller
