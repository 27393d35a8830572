"""A fault-injecting TCP proxy for chaos tests (test utility, asyncio, loopback).

Sits between clients and a server and, driven by a *seeded* random source,
cuts connections (TCP reset), stalls them, delays bytes, and refuses new
connections for a while. Everything is bounded: connections
(``max_connections``), chunk sizes (``max_chunk``), delays and stalls (the
plan's maxima); bytes are never buffered beyond one chunk per direction,
since each pipe awaits ``drain()`` before reading more (TCP backpressure
reaches both ends). Byte order within a connection is always preserved:
faults are loss of the connection, never corruption.

Usage::

    async with FaultProxy("127.0.0.1", server_port, seed=1, plan=FaultPlan(cut_rate=0.01)) as proxy:
        client_url = f"ws://127.0.0.1:{proxy.port}/echo"
        proxy.refuse_for(2.0)   # new connections are reset for 2 s
        proxy.cut_all()         # reset every open connection now
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["FaultPlan", "FaultProxy", "ProxyStats"]


@dataclass(slots=True)
class FaultPlan:
    """Per-chunk fault probabilities and bounds (mutable while running).

    Attributes:
        cut_rate: probability that forwarding a chunk resets the connection.
        stall_rate: probability that a chunk is held for ``stall`` seconds.
        stall: stall duration, seconds.
        max_delay: every chunk is delayed uniformly in ``[0, max_delay]`` s.
        max_chunk: largest chunk read/forwarded at once (splits big writes).
    """

    cut_rate: float = 0.0
    stall_rate: float = 0.0
    stall: float = 0.2
    max_delay: float = 0.0
    max_chunk: int = 16 * 1024

    def __post_init__(self) -> None:
        for name in ("cut_rate", "stall_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.stall < 0 or self.max_delay < 0 or self.max_chunk < 1:
            raise ValueError("stall, max_delay >= 0 and max_chunk >= 1 required")


@dataclass(slots=True)
class ProxyStats:
    """What the proxy did (for assertions and chaos reports)."""

    accepted: int = 0
    refused: int = 0
    cut: int = 0
    stalled: int = 0
    bytes_forwarded: int = 0
    accept_times: list[float] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class FaultProxy:
    """TCP proxy ``127.0.0.1:<port>`` -> ``upstream_host:upstream_port`` with faults."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        seed: int = 0,
        plan: FaultPlan | None = None,
        max_connections: int = 1000,
        listen_port: int = 0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.plan = plan or FaultPlan()
        self.rng = random.Random(seed)
        self.max_connections = max_connections
        self.stats = ProxyStats()
        self._listen_port = listen_port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refuse_until = 0.0
        self.port = 0

    async def start(self) -> int:
        """Listen on 127.0.0.1 (free port unless given); return the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening, reset every connection, and wait for the pipes to end."""
        if self._server is not None:
            self._server.close()
        self.cut_all(count=False)
        # Resetting the links ends every pipe; the handlers then return by
        # themselves (cancelling a start_server handler task logs noise).
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def open_connections(self) -> int:
        """Client connections currently proxied."""
        return len(self._links)

    def refuse_for(self, seconds: float) -> None:
        """Reset every new connection for the next ``seconds`` seconds."""
        self._refuse_until = time.monotonic() + seconds

    def cut_all(self, *, count: bool = True) -> int:
        """Reset every open connection now; return how many."""
        n = len(self._links)
        for link in list(self._links):
            link.abort()
        self._links.clear()
        if count:
            self.stats.cut += n
        return n

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        now = time.monotonic()
        if now < self._refuse_until or len(self._links) >= self.max_connections:
            self.stats.refused += 1
            writer.transport.abort()
            return
        self.stats.accepted += 1
        self.stats.accept_times.append(now)
        link = _Link(writer)
        self._links.add(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                link.abort()
                return
            link.upstream = up_writer
            a = asyncio.create_task(self._pipe(reader, up_writer, link))
            b = asyncio.create_task(self._pipe(up_reader, writer, link))
            try:
                await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                a.cancel()
                b.cancel()
                await asyncio.gather(a, b, return_exceptions=True)
                link.abort()
        finally:
            self._links.discard(link)
            self._tasks.discard(task)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                chunk = await src.read(self.plan.max_chunk)
                if not chunk:
                    with contextlib.suppress(OSError):
                        dst.write_eof()
                    return
                plan = self.plan
                if plan.cut_rate and self.rng.random() < plan.cut_rate:
                    self.stats.cut += 1
                    link.abort()
                    return
                wait = self.rng.uniform(0, plan.max_delay) if plan.max_delay else 0.0
                if plan.stall_rate and self.rng.random() < plan.stall_rate:
                    self.stats.stalled += 1
                    wait += plan.stall
                if wait:
                    await asyncio.sleep(wait)
                dst.write(chunk)
                await dst.drain()
                self.stats.bytes_forwarded += len(chunk)
