"""Durable peers end to end on loopback: a real server process, a host process, and
connecting peers in the test process (host candidates pinned to 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durasync.p2p import ConnectionOptions, ConnectionState, DurableConnection
from durasync.p2p.rtc import limit_host_addresses
from helpers import ServerProcess, start_server

FQN = "com.example.chat@1.0.0"
PEER = Path(__file__).with_name("peer_proc.py")
OPTIONS = ConnectionOptions(
    heartbeat_interval=0.25,
    heartbeat_timeout=1.5,
    reconnect_backoff_base=0.2,
    reconnect_backoff_max=2.0,
    connection_timeout=10,
)


class Host:
    """``peer_proc.py`` in its own process; its JSON events are collected by a thread."""

    def __init__(self, url: str, key: Path, *, pool: int = 2, user: str = "alice") -> None:
        self.args = [sys.executable, str(PEER), url, user, FQN, str(key), str(pool)]
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.uuid = self.wait_for("published")["uuid"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait_for(self, ev: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"host sent no {ev!r}; stderr: {self.stderr()}")
            try:
                item = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"host exited: {self.stderr()}") from None
                continue
            self.seen.append(item)
            if item["ev"] == ev:
                return item

    def messages(self, n: int, timeout: float = 30.0) -> list[str]:
        """The first ``n`` messages the host received (waiting for them)."""
        while len(got := [e["data"] for e in self.seen if e["ev"] == "msg"]) < n:
            self.wait_for("msg", timeout)
        return got

    def drain(self) -> None:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            if sig == signal.SIGTERM:
                with_stdin = self.proc.stdin
                if with_stdin is not None:
                    try:
                        with_stdin.write("quit\n")
                        with_stdin.flush()
                    except OSError:
                        pass
                try:
                    self.proc.wait(10)
                    return
                except subprocess.TimeoutExpired:
                    pass
            self.proc.send_signal(sig if sig != signal.SIGTERM else signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = start_server("--port", "0", "--memory")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def loopback_candidates() -> Iterator[None]:
    limit_host_addresses(["127.0.0.1"])
    yield
    limit_host_addresses(None)


_users = iter(f"user{i}" for i in range(1000))


@pytest.fixture
def host_factory(tmp_path: Path, server: ServerProcess) -> Iterator[Any]:
    hosts: list[Host] = []

    def make(*, pool: int = 2, user: str | None = None, key: Path | None = None) -> Host:
        h = Host(server.url, key or tmp_path / "host.key", pool=pool, user=user or next(_users))
        hosts.append(h)
        return h

    yield make
    for h in hosts:
        h.stop(signal.SIGKILL)


async def test_connect_by_name_and_by_uuid(server: ServerProcess, host_factory) -> None:
    host = host_factory(pool=1)
    user = host.args[3]
    by_name = DurableConnection(server.url, username=user, service_fqn=FQN, options=OPTIONS)
    by_uuid = DurableConnection(server.url, uuid=host.uuid, options=OPTIONS)
    try:
        for conn, text in ((by_name, "by name"), (by_uuid, "by uuid")):
            channel = conn.create_channel("chat")
            async with asyncio.timeout(30):
                await conn.connect()
                await channel.write(text)
                assert await channel.receive() == text
            assert conn.service_uuid == host.uuid
    finally:
        await by_name.close(1.0)
        await by_uuid.close(1.0)
    assert host.messages(2) == ["by name", "by uuid"]


async def test_2000_each_way_exactly_once_in_order_across_kills(
    server: ServerProcess, host_factory
) -> None:
    host = host_factory(pool=2)
    conn = DurableConnection(server.url, uuid=host.uuid, options=OPTIONS)
    events: list[tuple[str, tuple[Any, ...]]] = []
    for name in ("state", "connected", "disconnected", "reconnecting", "failed"):
        conn.on(name, lambda *a, name=name: events.append((name, a)))
    channel = conn.create_channel("chat")
    n = 2000
    kills_at = (300, 900, 1500)
    got: list[str] = []
    try:
        async with asyncio.timeout(100):
            await conn.connect()

            async def read() -> None:
                async for message in channel:
                    assert isinstance(message, str)
                    got.append(message)
                    if len(got) in kills_at:
                        host.command("kill")  # the host's peer connection dies silently
                    if len(got) == n:
                        return

            reader = asyncio.create_task(read())
            for i in range(n):
                await channel.write(f"m{i}")
            await reader
            await channel.drained()
    finally:
        await conn.close(2.0)
    expected = [f"m{i}" for i in range(n)]
    assert got == expected  # client side: every echo once, in order
    host.drain()
    assert host.messages(n) == expected  # host side too: once each, in order
    # per kill: connected -> reconnecting, disconnected, reconnecting(n, 10, delay), connected
    reconnects = [a for name, a in events if name == "reconnecting"]
    assert conn.connections >= len(kills_at) + 1
    assert len([1 for name, _ in events if name == "disconnected"]) >= len(kills_at)
    for attempt, max_attempts, delay in reconnects:
        cap = min(0.2 * 2 ** (attempt - 1), 2.0)
        assert max_attempts == 10
        assert 0.8 * cap - 1e-9 <= delay <= 1.2 * cap + 1e-9, (attempt, delay)
    states = [a[0] for name, a in events if name == "state"]
    assert states[0] == "connected" and "reconnecting" in states
    assert all(s in ("connected", "reconnecting", "closed") for s in states)
    assert not [a for name, a in events if name == "failed" and a[1]]


async def test_host_sigkilled_and_restarted_keeps_uuid_and_client_reconnects(
    server: ServerProcess, host_factory, tmp_path: Path
) -> None:
    host = host_factory(pool=1, user="restarts", key=tmp_path / "restarts.key")
    conn = DurableConnection(server.url, uuid=host.uuid, options=OPTIONS)
    channel = conn.create_channel("chat")
    opened: list[bool] = []
    channel.on("open", opened.append)
    try:
        async with asyncio.timeout(60):
            await conn.connect()
            await channel.write("before")
            assert await channel.receive() == "before"
            await channel.drained()  # the host acknowledged it: nothing to replay
            host.stop(signal.SIGKILL)
            await conn.wait_for_state(ConnectionState.RECONNECTING)
            again = host_factory(pool=1, user="restarts", key=tmp_path / "restarts.key")
            assert again.uuid == host.uuid
            await conn.wait_for_state(ConnectionState.CONNECTED)
            await channel.write("after")
            assert await channel.receive() == "after"
        # the restarted host had lost the session: the channel says so, once
        assert opened[0] is True and opened.count(False) == 1 and opened[-1] is False
    finally:
        await conn.close(1.0)


async def test_five_connections_race_for_a_pool_of_two(server: ServerProcess, host_factory) -> None:
    host = host_factory(pool=2)
    conns = [DurableConnection(server.url, uuid=host.uuid, options=OPTIONS) for _ in range(5)]
    channels = [c.create_channel("chat") for c in conns]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.connect() for c in conns))
            for i, ch in enumerate(channels):
                await ch.write(f"hello {i}")
            for i, ch in enumerate(channels):
                assert await ch.receive() == f"hello {i}"
    finally:
        await asyncio.gather(*(c.close(1.0) for c in conns))
    deadline = time.monotonic() + 10
    while len({e["id"] for e in host.seen if e["ev"] == "connection"}) < 5:
        assert time.monotonic() < deadline, host.seen
        host.wait_for("connection", timeout=10)
