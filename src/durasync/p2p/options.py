"""Tunables of the p2p peers, with rondevu 0.9's defaults where it has one (docs/p2p.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from durasync.protocol import SessionLimits

__all__ = ["ChannelOptions", "ConnectionOptions", "ServiceOptions"]


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """Per-channel bounds (both sides).

    Attributes:
        max_queue_size: messages waiting while the channel is detached (``send``), oldest
            dropped beyond it with ``queue-overflow``.
        max_message_age: seconds a waiting message may wait before it is dropped (same event).
        max_queue_bytes: bytes waiting while detached (same policy).
        high_water_mark: stop writing to the data channel above this ``bufferedAmount``...
        low_water_mark: ...and resume (emitting ``buffered-amount-low``) below this.
        session: the reliable session's replay window and ack coalescing. Both sides must
            use the same window (a receiver holds at most the sender's window unread).
        inbox_size: received messages held for a reader before the session stops
            acknowledging (end-to-end backpressure).
    """

    max_queue_size: int = 1000
    max_message_age: float = 60.0
    max_queue_bytes: int = 16 << 20
    high_water_mark: int = 128 << 10
    low_water_mark: int = 32 << 10
    session: SessionLimits = field(default_factory=lambda: SessionLimits(ack_every=32))
    inbox_size: int = 1024

    def __post_init__(self) -> None:
        if self.max_queue_size < 1 or self.max_message_age <= 0 or self.inbox_size < 1:
            raise ValueError("max_queue_size, inbox_size >= 1 and max_message_age > 0")
        if not 0 <= self.low_water_mark < self.high_water_mark:
            raise ValueError("need 0 <= low_water_mark < high_water_mark")


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """Connecting-side tunables (seed defaults: 10 attempts, 1 s -> 30 s ±20 %, 30 s timeout).

    Attributes:
        max_reconnect_attempts: consecutive failed attempts before ``failed`` (0: never).
        reconnect_backoff_base / reconnect_backoff_max / reconnect_jitter: the schedule
            ``min(base * 2**n, max)`` ± ``jitter``.
        connection_timeout: bound on one attempt (discovery, answer, ICE, DTLS, channel open).
        heartbeat_interval: a heartbeat goes out this often on the control channel...
        heartbeat_timeout: ...and a peer silent this long is dead (aiortc alone needs ~30 s).
        ice_servers: STUN/TURN URLs (``stun:host:port``); empty: host candidates only.
        channel: defaults of the channels this connection creates.
        token: bearer token for a rendezvous server started with ``--auth-secret``.
    """

    max_reconnect_attempts: int = 10
    reconnect_backoff_base: float = 1.0
    reconnect_backoff_max: float = 30.0
    reconnect_jitter: float = 0.2
    connection_timeout: float = 30.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    ice_servers: tuple[str, ...] = ()
    channel: ChannelOptions = field(default_factory=ChannelOptions)
    token: str | None = None

    def __post_init__(self) -> None:
        if self.connection_timeout <= 0 or self.heartbeat_interval <= 0:
            raise ValueError("connection_timeout and heartbeat_interval must be > 0")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must exceed heartbeat_interval")


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Host-side tunables.

    Attributes:
        is_public: listed in the username's public services.
        metadata: JSON object shown by discovery (at most 4 KiB).
        ttl: service TTL in seconds (None: the server's default, 60 s; clamped to
            [60 s, 24 h] by the server).
        ttl_refresh_margin: refresh when this fraction of the TTL is left (0.2: at 80 %).
        pool_size: open offers kept; one is made again as soon as one is taken.
        session_resume_ttl: how long a client's sessions wait for it to reconnect.
        max_sessions: sessions kept at once (attached or waiting).
        connection: heartbeat, timeouts, ICE servers and channel bounds (as for clients).
    """

    is_public: bool = False
    metadata: dict[str, object] = field(default_factory=dict)
    ttl: float | None = None
    ttl_refresh_margin: float = 0.2
    pool_size: int = 1
    session_resume_ttl: float = 300.0
    max_sessions: int = 1000
    connection: ConnectionOptions = field(default_factory=ConnectionOptions)

    def __post_init__(self) -> None:
        if not 0 < self.ttl_refresh_margin < 1:
            raise ValueError("ttl_refresh_margin must be in (0, 1)")
        if not 1 <= self.pool_size <= 10:
            raise ValueError("pool_size must be 1..10")
