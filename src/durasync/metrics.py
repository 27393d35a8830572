"""Prometheus metrics of one durasync server (``GET /metrics``; docs/operations.md).

:class:`Metrics` owns a :class:`prometheus_client.CollectorRegistry` of its own (two apps in
one process never share counters) and hands the layers **pre-bound children**: a counter
increment on a hot path is one method call on an object that exists already, never a label
lookup. Labels whose values depend on traffic (route, status class, error code) are resolved
through small dictionaries filled on first use and bounded:

- ``route`` is a route *template* (``/v1/stream/{path}``, ``/v1/rooms/{room}``), never a
  stream path or room name; the set is the app's route table plus ``unmatched``;
- ``status`` is a status class (``2xx`` ... ``5xx``, or ``none`` when no response started);
- ``code`` is an error code of the server's fixed vocabulary (``NOT_FOUND``,
  ``RATE_LIMITED``, ...); a value that is not upper-case ``A-Z_`` of at most 40 characters,
  or beyond :data:`MAX_ERROR_CODES` distinct values, counts as ``OTHER``.

``Metrics(enabled=False)`` gives the same attributes bound to no-op children and no
registry: layers call them unconditionally and a server with metrics off pays one empty
method call per event.

Gauges of things the server already counts (rooms loaded, members, open live reads) are read
when scraped (``set_function``): they cost nothing between scrapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["MAX_ERROR_CODES", "Metrics", "status_class"]

#: Distinct error codes counted under their own label (more count as ``OTHER``).
MAX_ERROR_CODES: Final = 64
_CODE_RE: Final = re.compile(r"[A-Z][A-Z0-9_]{0,39}")

#: Store commit latency buckets, in seconds (an fsync or a Redis round trip).
COMMIT_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
#: Group-commit batch sizes (operations per transaction).
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: Room snapshot durations, in seconds.
SNAPSHOT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class _Noop:
    """Stands for every child when metrics are off."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


_NOOP: Final = _Noop()


def status_class(status: int) -> str:
    """``2xx`` for 200-299 and so on; ``none`` for 0 (no response was started)."""
    if 100 <= status < 600:
        return f"{status // 100}xx"
    return "none"


class Metrics:
    """Every metric of one server; see the module docstring and docs/operations.md."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._requests: dict[tuple[str, int], Counter] = {}
        self._errors: dict[tuple[str, str], Counter] = {}
        if not enabled:
            self.registry = None
            self._bind_noop()
            return
        from prometheus_client import CollectorRegistry
        from prometheus_client import Counter as PCounter
        from prometheus_client import Gauge as PGauge
        from prometheus_client import Histogram as PHistogram

        self.registry = registry = CollectorRegistry(auto_describe=False)
        ns = "durasync"
        self._http_requests = PCounter(
            "http_requests",
            "HTTP requests answered, by route template and status class",
            ["route", "status"],
            namespace=ns,
            registry=registry,
        )
        self._error_counter = PCounter(
            "errors",
            "Error answers and error frames sent, by layer and error code",
            ["layer", "code"],
            namespace=ns,
            registry=registry,
        )
        self.appends: Counter = PCounter(
            "stream_appends", "Accepted stream appends (POST)", namespace=ns, registry=registry
        )
        self.appended_messages: Counter = PCounter(
            "stream_appended_messages",
            "Messages in accepted stream appends",
            namespace=ns,
            registry=registry,
        )
        self.appended_bytes: Counter = PCounter(
            "stream_appended_bytes",
            "Request body bytes of accepted stream appends",
            namespace=ns,
            registry=registry,
        )
        self.streams_created: Counter = PCounter(
            "streams_created", "Streams created (PUT)", namespace=ns, registry=registry
        )
        self.streams_deleted: Counter = PCounter(
            "streams_deleted", "Streams deleted (DELETE)", namespace=ns, registry=registry
        )
        self.commit_seconds: Histogram = PHistogram(
            "store_commit_seconds",
            "Store commit latency: one group commit with its fsync (embedded), one append "
            "round trip (redis)",
            buckets=COMMIT_BUCKETS,
            namespace=ns,
            registry=registry,
        )
        self.commit_batch: Histogram = PHistogram(
            "store_commit_batch_size",
            "Operations per group commit (embedded store)",
            buckets=BATCH_BUCKETS,
            namespace=ns,
            registry=registry,
        )
        self.store_unavailable: Counter = PCounter(
            "store_unavailable_events",
            "Times the shared store (Redis) was lost",
            namespace=ns,
            registry=registry,
        )
        self._store_up = PGauge(
            "store_available",
            "1 while the store is reachable (always 1 for local stores)",
            namespace=ns,
            registry=registry,
        )
        self._store_up.set(1)
        self._long_polls = PGauge(
            "open_long_polls", "Long-poll GETs waiting", namespace=ns, registry=registry
        )
        self._sse = PGauge(
            "open_sse_streams", "SSE responses open", namespace=ns, registry=registry
        )
        self.websockets: Gauge = PGauge(
            "open_websockets", "WebSocket connections open", namespace=ns, registry=registry
        )
        self._rooms_loaded = PGauge(
            "rooms_loaded", "Rooms loaded on this node", namespace=ns, registry=registry
        )
        self._room_members = PGauge(
            "room_members",
            "Room members (connections) on this node",
            namespace=ns,
            registry=registry,
        )
        self.room_messages: Counter = PCounter(
            "room_messages_sequenced",
            "CRDT messages sequenced into room journals",
            namespace=ns,
            registry=registry,
        )
        self.room_frames_relayed: Counter = PCounter(
            "room_frames_relayed",
            "Frames queued to room members by broadcasts (one per member reached)",
            namespace=ns,
            registry=registry,
        )
        self.room_slow_consumers: Counter = PCounter(
            "room_slow_consumer_disconnects",
            "Members dropped because their send queue overflowed (4008)",
            namespace=ns,
            registry=registry,
        )
        self.room_rate_limited: Counter = PCounter(
            "room_rate_limited_frames",
            "Client frames refused with RATE_LIMITED",
            namespace=ns,
            registry=registry,
        )
        self.room_snapshot_seconds: Histogram = PHistogram(
            "room_snapshot_seconds",
            "Time to build and store one room snapshot",
            buckets=SNAPSHOT_BUCKETS,
            namespace=ns,
            registry=registry,
        )

    def _bind_noop(self) -> None:
        self.appends = self.appended_messages = self.appended_bytes = _NOOP
        self.streams_created = self.streams_deleted = _NOOP
        self.commit_seconds = self.commit_batch = _NOOP
        self.store_unavailable = _NOOP
        self.websockets = _NOOP
        self.room_messages = self.room_frames_relayed = _NOOP
        self.room_slow_consumers = self.room_rate_limited = _NOOP
        self.room_snapshot_seconds = _NOOP

    # -- labelled counters, bound on first use --------------------------------------------

    def request(self, route: str, status: int) -> None:
        """Count one answered HTTP request (``route``: a route template)."""
        key = (route, status // 100)
        child = self._requests.get(key)
        if child is None:
            if not self.enabled:
                return
            child = self._http_requests.labels(route, status_class(status))
            self._requests[key] = child
        child.inc()

    def error(self, layer: str, code: str) -> None:
        """Count one error answer or frame (``layer``: ``streams``, ``rooms``, ``http``)."""
        key = (layer, code)
        child = self._errors.get(key)
        if child is None:
            if not self.enabled:
                return
            if len(self._errors) >= MAX_ERROR_CODES or not _CODE_RE.fullmatch(code):
                key = (layer, "OTHER")
                child = self._errors.get(key)
            if child is None:
                child = self._error_counter.labels(layer, key[1])
                self._errors[key] = child
        child.inc()

    # -- scrape-time gauges and store hooks -------------------------------------------------

    def watch_rooms(self, loaded: Callable[[], float], members: Callable[[], float]) -> None:
        """Read the number of loaded rooms and of members when scraped."""
        if self.enabled:
            self._rooms_loaded.set_function(loaded)
            self._room_members.set_function(members)

    def watch_streams(self, long_polls: Callable[[], float], sse: Callable[[], float]) -> None:
        """Read the numbers of open long-polls and SSE responses when scraped."""
        if self.enabled:
            self._long_polls.set_function(long_polls)
            self._sse.set_function(sse)

    def commit(self, seconds: float, operations: int | None) -> None:
        """A store commit took ``seconds``; ``operations``: the batch size if it batched.
        Safe to call from the store's writer thread."""
        self.commit_seconds.observe(seconds)
        if operations is not None:
            self.commit_batch.observe(operations)

    def availability(self, available: bool) -> None:
        """The shared store was lost (``False``) or regained (``True``)."""
        if not self.enabled:
            return
        self._store_up.set(1 if available else 0)
        if not available:
            self.store_unavailable.inc()

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type.

        Raises:
            RuntimeError: metrics are off.
        """
        if self.registry is None:
            raise RuntimeError("metrics are off")
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
