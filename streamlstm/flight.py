"""Arrow Flight for streamlstm: :class:`Client` of a ``streamlstm serve`` server, the in-process
:class:`StreamServer`, and :func:`serve` (what the command runs). The protocol any Flight client can
speak is documented in :mod:`streamlstm.serve.protocol`.

Example:
    >>> import streamlstm as sl
    >>> sl.flight.Client  # doctest: +ELLIPSIS
    <class 'streamlstm.serve.client.Client'>
"""

from __future__ import annotations

from streamlstm.serve import Client, StreamServer, serve
from streamlstm.serve.protocol import ACTIONS, FEED

__all__ = ["ACTIONS", "FEED", "Client", "StreamServer", "serve"]
