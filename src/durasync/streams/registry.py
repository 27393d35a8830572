"""The ``__registry__`` stream: one JSON event per stream created or deleted.

``durasync serve --registry-stream`` keeps a JSON stream at ``__registry__`` that any client
allowed to read streams can read (and tail) with the Durable Streams protocol, to discover
streams. Its first segment starts with ``__``, so it belongs to the server
(:mod:`durasync.namespaces`); it is declared *publicly readable*: GET and HEAD work like on any
stream, every write answers 403 ``READ_ONLY``.

Events follow the reference server's registry (Durable Streams State Protocol change events,
collection type ``stream``, key = the stream path)::

    {"type": "stream", "key": "a/b", "value": {"path": "a/b",
     "contentType": "application/json", "createdAt": 1765108800123},
     "headers": {"operation": "insert"}}
    {"type": "stream", "key": "a/b", "headers": {"operation": "delete"}}

Which events: streams created by a ``PUT`` that created them (201) and deleted by a ``DELETE``
(204) through the public streams API. The node that answered the request appends the event,
so with several nodes on Redis each creation is one event, not one per node. Server-internal
streams (rooms, subscriptions) are not listed. The event is appended before the client's
answer is sent; if that append fails (store down) the create or delete still stands and the
failure is logged: the registry is a discovery aid, not a transaction log of the streams.

Size: one event per create or delete, kept like any stream's messages (no TTL).
"""

from __future__ import annotations

import logging
from typing import Final

import msgspec

from durasync.store.base import LogStore, StreamConfig, StreamInfo

__all__ = ["REGISTRY_PATH", "StreamRegistry"]

#: The registry's stream path (under the streams prefix: ``/v1/stream/__registry__``).
REGISTRY_PATH: Final = "__registry__"

log = logging.getLogger("durasync.streams.registry")


class _Value(msgspec.Struct, rename="camel"):
    path: str
    content_type: str
    created_at: int


class _Insert(msgspec.Struct):
    key: str
    value: _Value
    headers: dict[str, str]
    type: str = "stream"


class _Delete(msgspec.Struct):
    key: str
    headers: dict[str, str]
    type: str = "stream"


class StreamRegistry:
    """Appends registry events to ``__registry__`` in ``store`` (see the module docstring).

    :meth:`open` creates the stream if it is missing (idempotent on every node);
    :meth:`created` and :meth:`deleted` are the ``on_stream_created`` /
    ``on_stream_deleted`` hooks of :func:`durasync.server.create_app`.
    """

    def __init__(self, store: LogStore) -> None:
        self.store = store

    async def open(self) -> None:
        """Create the registry stream unless it exists (several nodes may race: one wins).

        Raises:
            StoreError: the store failed.
        """
        await self.store.create(REGISTRY_PATH, StreamConfig(content_type="application/json"))

    async def created(self, path: str, info: StreamInfo) -> None:
        """Append the ``insert`` event of a stream just created."""
        event = _Insert(
            key=path,
            value=_Value(
                path=path,
                content_type=info.config.content_type or "application/octet-stream",
                created_at=int(info.created_at * 1000),
            ),
            headers={"operation": "insert"},
        )
        await self._append(msgspec.json.encode(event))

    async def deleted(self, path: str) -> None:
        """Append the ``delete`` event of a stream just deleted."""
        await self._append(msgspec.json.encode(_Delete(key=path, headers={"operation": "delete"})))

    async def _append(self, event: bytes) -> None:
        await self.store.append(REGISTRY_PATH, [event], content_type="application/json")
