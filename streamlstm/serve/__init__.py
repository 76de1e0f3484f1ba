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

from streamlstm.serve.client import Client
from streamlstm.serve.server import StreamServer
from streamlstm.serve.service import serve

__all__ = ["Client", "StreamServer", "serve"]
