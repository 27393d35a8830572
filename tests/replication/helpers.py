"""Helpers of the replication tests: in-process servers, conditions, small HTTP clients."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from durasync.replication.config import ReplicationConfig, parse_config
from durasync.rooms import RoomSettings
from durasync.server import ServerSettings, create_app
from durasync.store import LogStore, MemoryStore
from durasync.streams.app import StreamSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    check: Callable[[], Awaitable[bool]], within: float = 20.0, step: float = 0.05
) -> None:
    """Wait until ``await check()`` holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(int(within / step) + 1):
        if await check():
            return
        if loop.time() > deadline:
            break
        await asyncio.sleep(step)
    raise AssertionError(f"condition not reached within {within} s")


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


def _load(relative: str, name: str) -> Any:
    """A module of tests/ by path: names such as ``crdt`` and ``rooms`` may be bench/'s
    modules on sys.path (tests/interop puts bench/ first; tests/rooms/test_e2e.py does the
    same)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: One random valid op of every otype family for a session's replica (tests/crdt).
random_op = _load("crdt/crdt_histories.py", "crdt_histories_for_replication").random_op
#: Serve an app in-process on a free loopback port (tests/rooms/inprocess.py).
serving = _load("rooms/inprocess.py", "rooms_inprocess_for_replication").serving
