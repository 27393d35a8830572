"""Two-endpoint harness: a client ReliableSession and a server SessionRegistry
joined by a fake network that can drop, duplicate, delay and cut (h11's
ConnectionPair, with faults).

Frames written by one side go into an in-flight queue; tests choose when and
how they arrive. ``cut()`` loses everything in flight, like a TCP reset.
"""

from __future__ import annotations

import itertools
from collections import deque

from durasync.protocol import (
    FrameCodec,
    MessageReceived,
    Payload,
    ReliableSession,
    Role,
    SessionEvent,
    SessionLimits,
    SessionOpened,
    SessionRegistry,
)


class Pair:
    def __init__(
        self,
        *,
        encoding: str = "json",
        limits: SessionLimits | None = None,
        resume_ttl: float = 60.0,
    ) -> None:
        codec = FrameCodec(encoding)  # type: ignore[arg-type]
        ids = (f"s{i}" for i in itertools.count(1))
        self.registry = SessionRegistry(
            new_id=lambda: next(ids), codec=codec, limits=limits, resume_ttl=resume_ttl
        )
        self.client = ReliableSession(Role.CLIENT, codec=codec, limits=limits)
        self.server: ReliableSession | None = None
        self.to_server: deque[str | bytes] = deque()
        self.to_client: deque[str | bytes] = deque()
        self.client_events: list[SessionEvent] = []
        self.server_events: list[SessionEvent] = []
        self.connected = False
        self.now = 0.0

    # -- views ---------------------------------------------------------------
    def client_got(self) -> list[Payload]:
        return [e.payload for e in self.client_events if isinstance(e, MessageReceived)]

    def server_got(self) -> list[Payload]:
        return [e.payload for e in self.server_events if isinstance(e, MessageReceived)]

    def opened(self, side: str = "client") -> list[SessionOpened]:
        evs = self.client_events if side == "client" else self.server_events
        return [e for e in evs if isinstance(e, SessionOpened)]

    # -- network -------------------------------------------------------------
    def collect(self) -> None:
        """Move what both sides want to send into the in-flight queues."""
        self.to_server.extend(self.client.data_to_send())
        if self.server is not None:
            self.to_client.extend(self.server.data_to_send())
        self.client_events.extend(self.client.events_received())
        if self.server is not None:
            self.server_events.extend(self.server.events_received())

    def connect(self) -> None:
        """Open a transport and run the hello/welcome handshake to completion."""
        assert not self.connected
        self.client.connection_made()
        hello = self.client.data_to_send()
        assert len(hello) == 1
        self.server = self.registry.open(hello[0], self.now)
        self.connected = True
        self.collect()
        # Deliver the welcome (first frame from the server) now.
        self.deliver_to_client(1)

    def cut(self) -> None:
        """TCP reset: everything in flight is lost; both sides notice."""
        self.to_server.clear()
        self.to_client.clear()
        self.client.connection_lost()
        if self.server is not None:
            self.registry.detach(self.server, self.now)
        self.connected = False
        self.collect()

    def deliver_to_server(self, n: int | None = None, *, duplicate: bool = False) -> None:
        assert self.server is not None
        for _ in range(len(self.to_server) if n is None else n):
            frame = self.to_server.popleft()
            self.server.receive_data(frame, self.now)
            if duplicate:
                self.server.receive_data(frame, self.now)
        self.collect()

    def deliver_to_client(self, n: int | None = None, *, duplicate: bool = False) -> None:
        for _ in range(len(self.to_client) if n is None else n):
            frame = self.to_client.popleft()
            self.client.receive_data(frame, self.now)
            if duplicate:
                self.client.receive_data(frame, self.now)
        self.collect()

    def settle(self, max_rounds: int = 100) -> None:
        """Deliver everything both ways (and fire timers) until quiet."""
        for _ in range(max_rounds):
            self.collect()
            if not self.to_server and not self.to_client:
                self.advance(1.0)
                self.collect()
                if not self.to_server and not self.to_client:
                    return
            self.deliver_to_server()
            self.deliver_to_client()
        raise AssertionError("pair did not settle")

    def advance(self, dt: float) -> None:
        self.now += dt
        self.client.tick(self.now)
        if self.server is not None and self.connected:
            self.server.tick(self.now)
