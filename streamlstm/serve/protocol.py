"""The wire protocol of ``streamlstm serve``: what any Arrow Flight client sends and receives.

This module is the one place the protocol is written down; the server, the Python client and the
README section all follow it.

================ ==================================== ===================================================
call             request                              response
================ ==================================== ===================================================
``DoExchange``   descriptor command ``feed``; write   exactly one output batch per input batch, in order:
                 record batches (one schema per call) the runtime's rows for it (key, time when
                                                      configured, ``output``), same row order
``DoPut``        descriptor command ``feed``; write   one ``app_metadata`` message per applied batch:
                 record batches                       JSON ``{"batch": i, "rows": n}``; the output rows are
                                                      kept for ``DoGet`` (see below) or dropped
``DoGet``        ticket: JSON ``{"keys": [k, ...]}``  the buffered ``DoPut`` output rows of those streams
                 or ``{"keys": null}`` (every stream) (each stream's rows in arrival order, streams in
                                                      ticket order), removed from the buffer as returned
``DoAction``     ``reset``: body empty (every stream) JSON ``{"reset": n}``: n streams reset (held ones;
                 or JSON ``{"keys": [k, ...]}``       an unknown key resets nothing)
                 ``stats``: body empty                JSON: the runtime's counters (rows, batches,
                                                      streams, ...) and ``server`` (rounds, rows per round,
                                                      errors, feeders, put buffer, checkpoints)
                 ``checkpoint``: body empty           JSON ``{"path": ..., "rows": n, "version": v}``
                 ``health``: body empty               JSON ``{"status": "ok", "streams": n, "draining": b}``
================ ==================================== ===================================================

Every response body of an action is one ``Result`` holding UTF-8 JSON. Keys are JSON integers or
strings, as the runtime's key column holds them.

Errors. A batch the runtime refuses (bad schema, NaN, out-of-order time, ...), an unknown action or a
bad payload ends the call with a Flight *server error* (gRPC status UNKNOWN) whose message is the
runtime's message; its ``extra_info`` (the Flight status detail bytes) is JSON ``{"error": <class>,
"message": <text>}`` with the streamlstm exception class (``StreamError``, ``SchemaError``,
``ConfigError``, ...). The failed batch changed no state; batches before it in the same call were
applied; batches after it were not read. The client connection stays usable: open a new call. A server
that is shutting down answers *unavailable* (the batch was not applied; send it again after the
restart); a missing or wrong token answers *unauthenticated*.

Authentication: with ``--token-file`` every call carries the header ``authorization: Bearer <token>``.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.flight as flight

from streamlstm import errors

__all__ = [
    "ACTIONS",
    "FEED",
    "decode_error",
    "decode_json",
    "encode_error",
    "encode_json",
    "keys_from_json",
]

#: The descriptor command of ``DoExchange`` and ``DoPut`` calls that feed record batches.
FEED = b"feed"

#: Action name -> one-line description (what ``ListActions`` answers).
ACTIONS: dict[str, str] = {
    "reset": 'zero the carries of streams: body {"keys": [...]} or empty for every stream',
    "stats": "the runtime's and the server's counters, as JSON",
    "checkpoint": "write a checkpoint now (needs --checkpoint DIR); answers its path, rows and version",
    "health": 'liveness: {"status": "ok", "streams": n, "draining": false}',
}

# The exception classes an error's extra_info may name; anything else comes back as ServeError.
_ERRORS: dict[str, type[errors.StreamLSTMError]] = {
    cls.__name__: cls
    for cls in (errors.StreamError, errors.SchemaError, errors.ConfigError, errors.ArgumentTypeError,
                errors.StateError, errors.ShapeError, errors.CheckpointError, errors.ServeError)
}


def encode_json(value: Any) -> bytes:
    """UTF-8 JSON of ``value`` (numpy scalars become Python numbers)."""
    return json.dumps(value, default=_plain).encode()


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def decode_json(body: bytes | None, what: str) -> Any:
    """The JSON value of a request body (``None`` when empty); ConfigError naming ``what`` if malformed."""
    if body is None or not bytes(body).strip():
        return None
    try:
        return json.loads(bytes(body))
    except ValueError as exc:
        raise errors.ConfigError(f"{what} must be UTF-8 JSON, got {bytes(body)[:60]!r}") from exc


def keys_from_json(value: Any, what: str) -> list[Any] | None:
    """The ``keys`` of a ``{"keys": [...]}`` payload: a list of ints or strings, or None for every stream."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"keys"}:
        raise errors.ConfigError(f'{what} must be {{"keys": [...]}} or {{"keys": null}}, got {value!r:.80}')
    keys = value.get("keys")
    if keys is None:
        return None
    if not isinstance(keys, list) or not all(isinstance(k, (int, str)) and not isinstance(k, bool) for k in keys):
        raise errors.ConfigError(f"{what} keys must be a list of integers or strings, got {keys!r:.80}")
    return keys


def encode_error(exc: BaseException) -> flight.FlightServerError:
    """The Flight error a handler raises for ``exc``: its message, and its class in ``extra_info``."""
    name = type(exc).__name__ if isinstance(exc, errors.StreamLSTMError) else "ServeError"
    message = str(exc) if isinstance(exc, errors.StreamLSTMError) else f"{type(exc).__name__}: {exc}"
    return flight.FlightServerError(message, extra_info=encode_json({"error": name, "message": message}))


def decode_error(exc: flight.FlightError) -> errors.StreamLSTMError:
    """The streamlstm exception a client raises (``from exc``) for a Flight error from the server."""
    detail: dict[str, Any] = {}
    try:
        detail = json.loads(exc.extra_info or b"{}")
    except ValueError:
        pass
    message = detail.get("message") if isinstance(detail, dict) else None
    if message is not None:
        return _ERRORS.get(detail.get("error"), errors.ServeError)(message)
    if isinstance(exc, flight.FlightUnauthenticatedError):
        return errors.UnauthenticatedError(f"the server refused the call: {_first_line(exc)}")
    if isinstance(exc, flight.FlightUnavailableError):
        return errors.ServeError(f"the server is unavailable (shutting down or unreachable); the batch "
                                 f"was not applied: {_first_line(exc)}")
    return errors.ServeError(f"Flight call failed: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.split(". Detail:")[0].splitlines()[0] if text else type(exc).__name__
