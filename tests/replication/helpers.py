"""Helpers of the replication tests: in-process servers, conditions, small HTTP clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.applications import Starlette

import helpers as shared
from crdt import crdt_histories
from durasync.replication.config import ReplicationConfig, parse_config
from durasync.rooms import RoomSettings
from durasync.server import ServerSettings, create_app
from durasync.store import LogStore, MemoryStore
from durasync.streams.app import StreamSettings
from rooms import inprocess

__all__ = [
    "Progress",
    "app_with",
    "eventually",
    "fast_settings",
    "links",
    "random_op",
    "serving",
]

#: Short timers so the tests run in seconds.
FAST = {
    "discover-interval": 0.2,
    "request-timeout": 3.0,
    "live-wait": 1.0,
    "repair-delays": [0.1, 0.2, 0.3],
    "poll-min": 0.5,
    "poll-jitter": 0.2,
    "push-retry-delays": [0.0, 0.05, 0.1, 0.2],
}


def fast_settings() -> dict[str, Any]:
    return dict(FAST)


def links(*items: dict[str, Any], **settings: Any) -> ReplicationConfig:
    replication = fast_settings()
    replication.update({k.replace("_", "-"): v for k, v in settings.items()})
    return parse_config({"replication": replication, "links": list(items)})


def app_with(
    store: LogStore | None = None,
    replication: ReplicationConfig | None = None,
    rooms: RoomSettings | None = None,
) -> Starlette:
    settings = ServerSettings(
        streams=StreamSettings(long_poll_timeout=1.0),
        replication=replication,
        rooms=rooms or RoomSettings(),
    )
    return create_app(store or MemoryStore(), settings)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    timeout: float = 20.0,  # noqa: ASYNC109 - the bound of a polled condition
) -> None:
    """:func:`helpers.eventually` with the longer bound replication between servers needs."""
    await shared.eventually(check, timeout)


class Progress:
    """A counter tasks can wait on (``await progress.reach(n)``)."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = asyncio.Condition()

    async def add(self, n: int = 1) -> None:
        async with self._changed:
            self.value += n
            self._changed.notify_all()

    async def reach(self, n: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.value >= n)


async def read_all(client: httpx.AsyncClient, url: str, offset: str = "-1") -> tuple[bytes, str]:
    """Catch-up read to the tail: the bytes and the final offset."""
    out = b""
    while True:
        r = await client.get(url, params={"offset": offset})
        assert r.status_code == 200, (r.status_code, r.text)
        out += r.content
        offset = r.headers["stream-next-offset"]
        if r.headers.get("stream-up-to-date") == "true":
            return out, offset


#: One random valid op of every otype family for a session's replica (tests/crdt).
random_op = crdt_histories.random_op
#: Serve an app in-process on a free loopback port (tests/rooms/inprocess.py).
serving = inprocess.serving
