"""The one module that touches aiortc: a small typed surface over RTCPeerConnection.

Everything else in :mod:`durasync.p2p` sees :class:`PeerLink` (one peer connection) and
:class:`DataChannel` (one RTCDataChannel) with plain callbacks; aiortc's event emitter and its
loosely typed corners stay here.

Facts this module is built on (measured with aiortc 1.16): candidates are inside the SDP after
``setLocalDescription`` (no trickle from aiortc, but trickled candidates from browsers are
accepted); there is no ICE restart (a new connection is a new :class:`PeerLink`); a peer whose
network vanishes is noticed by aiortc only after ~30 s, hence the heartbeat in the layers above.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

__all__ = ["CONTROL_LABEL", "DataChannel", "PeerLink", "limit_host_addresses"]

#: Label of the channel the offerer creates with its offer (heartbeat and hello).
CONTROL_LABEL = "durasync-control"

_original_host_addresses = aioice.ice.get_host_addresses


def limit_host_addresses(addresses: Sequence[str] | None) -> None:
    """Gather host ICE candidates only on ``addresses`` (e.g. ``["127.0.0.1"]``); ``None``
    restores aioice's default (every interface address except loopback). Process-wide."""
    if addresses is None:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    chosen = list(addresses)

    def pinned(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = pinned


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


class DataChannel:
    """One RTCDataChannel. Callbacks (set as attributes) run on the event loop."""

    def __init__(self, channel: RTCDataChannel, link: PeerLink | None = None) -> None:
        self._dc = channel
        self._link = link
        self.on_open: Callable[[], None] = _noop
        self.on_message: Callable[[str | bytes], None] = _noop
        self.on_close: Callable[[], None] = _noop
        self.on_buffered_low: Callable[[], None] = _noop
        # Callbacks are looked up at event time: owners replace them as links move.
        channel.on("open", self._opened)
        channel.on("message", self._message)
        channel.on("close", self._closed)
        channel.on("bufferedamountlow", self._low)

    def _opened(self) -> None:
        self.on_open()

    def _message(self, data: str | bytes) -> None:
        if self._link is not None:
            self._link.last_activity = time.monotonic()
        self.on_message(data)

    def _closed(self) -> None:
        self.on_close()

    def _low(self) -> None:
        self.on_buffered_low()

    @property
    def label(self) -> str:
        return str(self._dc.label)

    @property
    def protocol(self) -> str:
        return str(self._dc.protocol)

    @property
    def is_open(self) -> bool:
        return bool(self._dc.readyState == "open")

    @property
    def is_closed(self) -> bool:
        return self._dc.readyState in ("closing", "closed")

    @property
    def buffered_amount(self) -> int:
        return int(self._dc.bufferedAmount)

    def set_low_threshold(self, amount: int) -> None:
        self._dc.bufferedAmountLowThreshold = amount

    def send(self, data: str | bytes) -> None:
        """Queue ``data``; raises on a channel that is not open."""
        self._dc.send(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._dc.close()


class PeerLink:
    """One RTCPeerConnection (no ICE restart: reconnecting means a new link).

    ``on_channel`` gets the channels the remote opens; ``on_dead`` fires once when the
    connection failed or closed.
    """

    def __init__(self, ice_servers: Sequence[str] = ()) -> None:
        servers = [RTCIceServer(urls=url) for url in ice_servers]
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.control: DataChannel | None = None
        self.on_channel: Callable[[DataChannel], None] = _noop
        self.on_dead: Callable[[], None] = _noop
        self.connected = asyncio.Event()
        self.control_ready = asyncio.Event()
        """Set once :attr:`control` exists (offerer: at once; answerer: when it arrives)."""
        self.dead = False
        self.last_activity = time.monotonic()
        """When anything last arrived on any of this link's channels (liveness)."""
        self._pc.on("datachannel", self._remote_channel)
        self._pc.on("connectionstatechange", self._state_changed)

    @property
    def state(self) -> str:
        return str(self._pc.connectionState)

    def _remote_channel(self, channel: RTCDataChannel) -> None:
        wrapped = DataChannel(channel, self)
        if wrapped.label == CONTROL_LABEL and self.control is None:
            self.control = wrapped
            self.control_ready.set()
            if channel.readyState == "open":
                asyncio.get_running_loop().call_soon(wrapped._opened)
        self.on_channel(wrapped)

    def _state_changed(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self._mark_dead()

    def _mark_dead(self) -> None:
        if not self.dead:
            self.dead = True
            self.on_dead()

    async def make_offer(self) -> str:
        """Offerer: create the control channel and the offer; returns the SDP (with candidates)."""
        self.control = DataChannel(self._pc.createDataChannel(CONTROL_LABEL), self)
        self.control_ready.set()
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return str(self._pc.localDescription.sdp)

    async def make_answer(self, offer_sdp: str) -> str:
        """Answerer: take the offer and return the answer SDP (with candidates)."""
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return str(self._pc.localDescription.sdp)

    async def accept_answer(self, answer_sdp: str) -> None:
        """Offerer: the answer arrived."""
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    async def add_remote_candidate(self, candidate: str) -> None:
        """A trickled candidate line (``candidate:...``, as browsers send) from the remote."""
        text = candidate.removeprefix("a=").removeprefix("candidate:")
        if not text.strip():
            return
        parsed = candidate_from_sdp(text)
        parsed.sdpMid = "0"
        parsed.sdpMLineIndex = 0
        await self._pc.addIceCandidate(parsed)

    def remote_candidate_types(self) -> list[str]:
        """Types (``host``, ``srflx``, ``prflx``...) of the known remote candidates."""
        sctp = self._pc.sctp
        if sctp is None:
            return []
        return [c.type for c in sctp.transport.transport.getRemoteCandidates()]

    def create_channel(self, label: str, protocol: str) -> DataChannel:
        return DataChannel(self._pc.createDataChannel(label, protocol=protocol), self)

    async def close(self) -> None:
        """Close gracefully (the remote sees it at once). Idempotent."""
        with contextlib.suppress(Exception):
            await self._pc.close()
        self._mark_dead()

    def blackhole(self) -> None:
        """Drop every packet from now on, both ways, without telling anyone: what a lost
        network looks like to both ends (for tests and drills). Heartbeats notice it."""
        for transceiver in self._ice_transports():
            connection = getattr(transceiver, "_connection", None)
            for protocol in list(getattr(connection, "_protocols", [])):
                protocol.datagram_received = _noop
                protocol.send_stun = _noop
                protocol.send_data = _async_noop

    def _ice_transports(self) -> list[Any]:
        sctp = self._pc.sctp
        if sctp is None:
            return []
        return [sctp.transport.transport]


async def _async_noop(*args: Any, **kwargs: Any) -> None:
    return None
