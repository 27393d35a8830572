"""The control channel of a peer connection: who is connecting, and is the peer alive.

The offerer (host) creates the control channel with every offer. Over it the connecting side
sends ``{"t":"hello","connection":ID}`` once (ID stays the same across that client's
reconnects), and both sides send ``{"t":"hb"}`` every ``interval`` seconds. A side that hears
nothing for ``timeout`` seconds declares the peer connection dead (aiortc itself notices a
vanished peer only after ~30 s, and has no ``disconnected`` state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable

import msgspec

from durasync.p2p.rtc import PeerLink

log = logging.getLogger("durasync.p2p")

__all__ = ["Control"]

_HB = '{"t":"hb"}'
_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")


class _Msg(msgspec.Struct, frozen=True):
    t: str
    connection: str | None = None


_decode = msgspec.json.Decoder(_Msg)


class Control:
    """Heartbeat and hello on ``link.control`` (which must exist). ``clock`` must be
    :func:`time.monotonic` (the link stamps its activity with it)."""

    def __init__(
        self,
        link: PeerLink,
        *,
        interval: float,
        timeout: float,
        on_dead: Callable[[], None],
        on_hello: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert link.control is not None
        self.link = link
        self.channel = link.control
        self.interval = interval
        self.timeout = timeout
        self.on_dead = on_dead
        self._on_hello = on_hello
        self._clock = clock
        self.last_heard = clock()
        self.opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dead = False
        self.channel.on_message = self._message
        self.channel.on_open = self.opened.set
        self.channel.on_close = self._closed
        if self.channel.is_open:
            self.opened.set()

    def start(self, hello: str | None = None) -> None:
        """Begin heartbeats (after sending ``hello`` when given)."""
        self.last_heard = self._clock()
        if hello is not None:
            self._send(msgspec.json.encode({"t": "hello", "connection": hello}).decode())
        self._task = asyncio.get_running_loop().create_task(self._beat())

    def stop(self) -> None:
        self._dead = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _send(self, text: str) -> None:
        with contextlib.suppress(Exception):
            if self.channel.is_open:
                self.channel.send(text)

    def _message(self, data: str | bytes) -> None:
        self.last_heard = self._clock()
        if len(data) > 1024 or self._on_hello is None:
            return
        try:
            msg = _decode.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if msg.t == "hello" and msg.connection and _ID_RE.fullmatch(msg.connection):
            hello, self._on_hello = self._on_hello, None
            hello(msg.connection)

    async def _beat(self) -> None:
        while not self._dead:
            self._send(_HB)
            await asyncio.sleep(self.interval)
            # Anything received on any channel of the link proves the peer alive: under load
            # a heartbeat can queue behind data on the shared SCTP association.
            silent = self._clock() - max(self.last_heard, self.link.last_activity)
            if silent > self.timeout:
                log.info("peer silent for %.1f s: peer connection declared dead", silent)
                self._declare_dead()
                return

    def _closed(self) -> None:
        log.info("control channel closed: peer connection declared dead")
        self._declare_dead()

    def _declare_dead(self) -> None:
        if self._dead:
            return
        self.stop()
        self.on_dead()
