"""Reserved subscription APIs of Durable Streams (DS §9): webhook and pull-wake.

Served under ``{stream-root}/__ds/``; the streams app routes every request
whose path starts with ``/v1/stream/__ds/`` here first.

This first version only fixes the contract the streams layer codes against;
every request answers 501 until the service is built.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

from durasync.store.base import LogStore

__all__ = ["SubscriptionService"]


class SubscriptionService:
    """Subscriptions over the streams of one store.

    ``notify_append`` is called by the streams layer after every successful
    append or close; it never blocks and never raises.
    """

    def __init__(self, store: LogStore, *, stream_prefix: str = "/v1/stream") -> None:
        self.store = store
        self.stream_prefix = stream_prefix.rstrip("/")

    async def start(self) -> None:
        """Start background work (delivery workers, lease timers)."""

    async def aclose(self) -> None:
        """Stop background work; pending deliveries are dropped."""

    async def notify_append(self, path: str, tail: str) -> None:
        """Record that ``path`` (without the stream prefix) now ends at ``tail``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry for ``{stream_prefix}/__ds/...`` requests."""
        body: Any = b'{"error":{"code":"NOT_IMPLEMENTED","message":"subscriptions not built yet"}}'
        await send(
            {
                "type": "http.response.start",
                "status": 501,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
