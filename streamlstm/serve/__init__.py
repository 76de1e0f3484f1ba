"""Serving live streams over Arrow Flight: ``streamlstm serve`` and its Python client.

Modules, by concept:

- :mod:`~streamlstm.serve.protocol`: the wire protocol (descriptor command, actions, JSON payloads,
  errors), written down once;
- :mod:`~streamlstm.serve.batcher`: micro-batching of concurrent clients' batches into one ``feed``;
- :mod:`~streamlstm.serve.put_buffer`: the bounded per-stream outputs of ``DoPut`` producers;
- :mod:`~streamlstm.serve.server`: :class:`StreamServer`, the Flight handlers;
- :mod:`~streamlstm.serve.security`: bearer-token middleware and TLS files;
- :mod:`~streamlstm.serve.checkpoints`: checkpoints of a server (the replay checkpoint machinery);
- :mod:`~streamlstm.serve.service`: :func:`serve`, the lifecycle behind the command line;
- :mod:`~streamlstm.serve.client`: :class:`Client` (public as ``streamlstm.flight.Client``).
"""

from __future__ import annotations

import importlib
from typing import Any

from streamlstm.serve.client import Client

__all__ = ["Client", "StreamServer", "serve"]

# The server side (runtime, checkpoints, model files) loads on first use, so that a program that only
# talks to a server imports the client and the protocol alone.
_SERVER_SIDE = {"StreamServer": "streamlstm.serve.server", "serve": "streamlstm.serve.service"}


def __getattr__(name: str) -> Any:
    if name in _SERVER_SIDE:
        return getattr(importlib.import_module(_SERVER_SIDE[name]), name)
    raise AttributeError(f"module 'streamlstm.serve' has no attribute {name!r}")
