"""Peer-to-peer: the rendezvous service and durable WebRTC peers (docs/p2p.md).

- :mod:`durasync.p2p.rendezvous` -- the rendezvous rules, sans-I/O (records, fold, queries);
- :mod:`durasync.p2p.server` -- the rendezvous service inside ``durasync serve``;
- :mod:`durasync.p2p.client` -- an HTTP client of the rendezvous API;
- :mod:`durasync.p2p.identity` -- Ed25519 identities (key files with mode 0600), signing;
- :class:`DurableService`, :class:`DurableConnection`, :class:`DurableChannel` -- aiortc
  peers (install the extra: ``pip install 'durasync[p2p]'``).

The peers are imported on first use (PEP 562), so the server never imports aiortc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durasync.p2p.channel import ChannelState, DurableChannel
    from durasync.p2p.client import RendezvousClient
    from durasync.p2p.connection import ConnectionState, DurableConnection
    from durasync.p2p.errors import RendezvousError
    from durasync.p2p.host import DurableService
    from durasync.p2p.identity import Identity
    from durasync.p2p.options import ChannelOptions, ConnectionOptions, ServiceOptions

_WHERE = {
    "ChannelOptions": "durasync.p2p.options",
    "ChannelState": "durasync.p2p.channel",
    "ConnectionOptions": "durasync.p2p.options",
    "ConnectionState": "durasync.p2p.connection",
    "DurableChannel": "durasync.p2p.channel",
    "DurableConnection": "durasync.p2p.connection",
    "DurableService": "durasync.p2p.host",
    "Identity": "durasync.p2p.identity",
    "RendezvousClient": "durasync.p2p.client",
    "RendezvousError": "durasync.p2p.errors",
    "ServiceOptions": "durasync.p2p.options",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


__all__ = [
    "ChannelOptions",
    "ChannelState",
    "ConnectionOptions",
    "ConnectionState",
    "DurableChannel",
    "DurableConnection",
    "DurableService",
    "Identity",
    "RendezvousClient",
    "RendezvousError",
    "ServiceOptions",
]
