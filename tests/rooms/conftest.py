"""Fixtures of the rooms tests: real ``durasync serve`` subprocesses and a WebSocket test client.

Every e2e test talks to a real server on loopback through real ``websockets`` clients; waits
are bounded (``asyncio.timeout``), never bare sleeps for synchronisation.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect

from helpers import ServerProcess, start_server

_ids = itertools.count()


def unique_room(prefix: str = "r") -> str:
    return f"{prefix}{next(_ids)}"


@pytest.fixture(scope="module")
def room_server() -> Iterator[ServerProcess]:
    """One memory-store server for a test module (rooms are unique per test)."""
    server = start_server("--port", "0", "--memory", "--room-presence-timeout", "1")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def ws_url(server: ServerProcess, room: str, client: str, **params: Any) -> str:
    base = server.url.replace("http://", "ws://")
    query = "&".join(f"{k}={v}" for k, v in {"client": client, **params}.items() if v is not None)
    return f"{base}/v1/rooms/{room}?{query}"


class RoomConn:
    """A WebSocket room connection that decodes frames and keeps them by kind."""

    def __init__(self, ws: ClientConnection, fmt: str) -> None:
        self.ws = ws
        self.fmt = fmt
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(
        cls, server: ServerProcess, room: str, client: str, *, fmt: str = "msgpack", **params: Any
    ) -> RoomConn:
        ws = await connect(
            ws_url(server, room, client, format=fmt if fmt != "msgpack" else None, **params),
            max_size=None,
        )
        return cls(ws, fmt)

    async def send(self, frame: dict[str, Any]) -> None:
        if self.fmt == "json":
            await self.ws.send(msgspec.json.encode(frame).decode())
        else:
            await self.ws.send(msgspec.msgpack.encode(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        frame: dict[str, Any] = (
            msgspec.json.decode(raw) if isinstance(raw, str) else msgspec.msgpack.decode(raw)
        )
        self.frames.append(frame)
        return frame

    async def recv_kind(self, mtype: str, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The next frame of ``mtype`` (others are kept in ``frames``)."""
        async with asyncio.timeout(timeout):
            while True:
                f = await self.recv(timeout)
                if f["mtype"] == mtype:
                    return f

    async def close(self) -> None:
        await self.ws.close()
