"""Prometheus metrics of one durasync server (``GET /metrics``; docs/operations.md).

:class:`Metrics` owns a :class:`prometheus_client.CollectorRegistry` of its own (two apps in
one process never share counters) and hands the layers **pre-bound children**: a counter
increment on a hot path is one method call on an object that exists already (a plain attribute
add, no lock: every caller runs on the event loop), never a label lookup. The library turns
them into the exposition when scraped (a collector); histograms fed by a store's writer
thread are the library's own thread-safe histograms. Labels whose values depend on traffic
(route, status class, error code) are resolved through small dictionaries filled on first use
and bounded:

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
when scraped: they cost nothing between scrapes. So are the replication links' families
(``durasync_replication_*``): status, connectivity, lag, messages moved, dead letters and
gaps of every link, read from the replication service's in-memory state when scraped. Their
only label besides a fixed vocabulary (``status``, ``direction``) is ``link``, a link name
from the operator's configuration file (at most 64 links, names of at most 64 characters).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Final, Protocol, get_args

from durasync.replication.core import LinkStatus

__all__ = ["LINK_STATUSES", "MAX_ERROR_CODES", "Metrics", "status_class"]

#: Distinct error codes counted under their own label (more count as ``OTHER``).
MAX_ERROR_CODES: Final = 64
_CODE_RE: Final = re.compile(r"[A-Z][A-Z0-9_]{0,39}")

#: Every status a replication link can be in (one ``status`` label value each).
LINK_STATUSES: Final[tuple[str, ...]] = get_args(LinkStatus)

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


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class _Noop:
    """Stands for every child when metrics are off."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


_NOOP: Final = _Noop()


class _Count:
    """A counter or gauge value incremented on the event loop's thread only: a plain
    attribute add (prometheus_client's own children take a lock and check their state on
    every call, ~10x the cost). Exported when scraped by :class:`_Collector`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


def status_class(status: int) -> str:
    """``2xx`` for 200-299 and so on; ``none`` for 0 (no response was started)."""
    if 100 <= status < 600:
        return f"{status // 100}xx"
    return "none"


#: Plain counters: (attribute, metric name without ``durasync_`` and ``_total``, help).
_COUNTERS: Final = (
    ("appends", "stream_appends", "Accepted stream appends (POST that wrote data)"),
    ("appended_messages", "stream_appended_messages", "Messages in accepted stream appends"),
    ("appended_bytes", "stream_appended_bytes", "Request body bytes of accepted appends"),
    ("streams_created", "streams_created", "Streams created (PUT answered 201)"),
    ("streams_deleted", "streams_deleted", "Streams deleted (DELETE answered 204)"),
    ("store_unavailable", "store_unavailable_events", "Times the shared store (Redis) was lost"),
    ("room_messages", "room_messages_sequenced", "CRDT messages sequenced into room journals"),
    (
        "room_frames_relayed",
        "room_frames_relayed",
        "Frames queued to room members by broadcasts (one per member reached)",
    ),
    (
        "room_slow_consumers",
        "room_slow_consumer_disconnects",
        "Members dropped because their send queue overflowed (4008)",
    ),
    ("room_rate_limited", "room_rate_limited_frames", "Client frames refused with RATE_LIMITED"),
)


class Metrics:
    """Every metric of one server; see the module docstring and docs/operations.md.

    Counters and gauges changed on the event loop are plain values (:class:`_Count`) that a
    collector exports when scraped; histograms fed from a store's writer thread are
    prometheus_client's own (thread-safe) histograms.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._requests: dict[tuple[str, int], _Count] = {}
        self._errors: dict[tuple[str, str], _Count] = {}
        self._gauge_fns: dict[str, Callable[[], float]] = {}
        self._links_fn: Callable[[], list[dict[str, Any]]] | None = None
        self.store_up = 1
        self.appends: Counter
        self.appended_messages: Counter
        self.appended_bytes: Counter
        self.streams_created: Counter
        self.streams_deleted: Counter
        self.store_unavailable: Counter
        self.room_messages: Counter
        self.room_frames_relayed: Counter
        self.room_slow_consumers: Counter
        self.room_rate_limited: Counter
        self.websockets: Gauge
        self.commit_seconds: Histogram
        self.commit_batch: Histogram
        self.room_snapshot_seconds: Histogram
        if not enabled:
            self.registry = None
            for attribute, _, _ in _COUNTERS:
                setattr(self, attribute, _NOOP)
            self.websockets = _NOOP
            self.commit_seconds = self.commit_batch = self.room_snapshot_seconds = _NOOP
            return
        from prometheus_client import CollectorRegistry
        from prometheus_client import Histogram as PHistogram

        self.registry = registry = CollectorRegistry(auto_describe=False)
        for attribute, _, _ in _COUNTERS:
            setattr(self, attribute, _Count())
        self._websockets = _Count()
        self.websockets = self._websockets
        registry.register(_Collector(self))
        ns = "durasync"
        self.commit_seconds = PHistogram(
            "store_commit_seconds",
            "Store commit latency: one group commit with its fsync (embedded), one append "
            "round trip (redis)",
            buckets=COMMIT_BUCKETS,
            namespace=ns,
            registry=registry,
        )
        self.commit_batch = PHistogram(
            "store_commit_batch_size",
            "Operations per group commit (embedded store)",
            buckets=BATCH_BUCKETS,
            namespace=ns,
            registry=registry,
        )
        self.room_snapshot_seconds = PHistogram(
            "room_snapshot_seconds",
            "Time to build and store one room snapshot",
            buckets=SNAPSHOT_BUCKETS,
            namespace=ns,
            registry=registry,
        )

    # -- labelled counters, bound on first use --------------------------------------------

    def request(self, route: str, status: int) -> None:
        """Count one answered HTTP request (``route``: a route template)."""
        key = (route, status // 100)
        child = self._requests.get(key)
        if child is None:
            if not self.enabled:
                return
            child = self._requests[key] = _Count()
        child.value += 1

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
                child = self._errors[key] = _Count()
        child.value += 1

    # -- scrape-time gauges and store hooks -------------------------------------------------

    def watch_rooms(self, loaded: Callable[[], float], members: Callable[[], float]) -> None:
        """Read the number of loaded rooms and of members when scraped."""
        self._gauge_fns["rooms_loaded"] = loaded
        self._gauge_fns["room_members"] = members

    def watch_streams(self, long_polls: Callable[[], float], sse: Callable[[], float]) -> None:
        """Read the numbers of open long-polls and SSE responses when scraped."""
        self._gauge_fns["open_long_polls"] = long_polls
        self._gauge_fns["open_sse_streams"] = sse

    def watch_replication(self, links: Callable[[], list[dict[str, Any]]]) -> None:
        """Read the replication links when scraped: ``links()`` returns one summary per
        link (:meth:`durasync.replication.service.ReplicationService.links_summary`)."""
        self._links_fn = links

    def commit(self, seconds: float, operations: int | None) -> None:
        """A store commit took ``seconds``; ``operations``: the batch size if it batched.
        Safe to call from the store's writer thread."""
        self.commit_seconds.observe(seconds)
        if operations is not None:
            self.commit_batch.observe(operations)

    def availability(self, available: bool) -> None:
        """The shared store was lost (``False``) or regained (``True``)."""
        self.store_up = 1 if available else 0
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


#: Gauges read when scraped: (key in ``Metrics._gauge_fns``, help).
_GAUGES: Final = (
    ("open_long_polls", "Long-poll GETs waiting"),
    ("open_sse_streams", "SSE responses open"),
    ("rooms_loaded", "Rooms loaded on this node"),
    ("room_members", "Room members (connections) on this node"),
)


class _Collector:
    """Exports the plain counters and gauges of a :class:`Metrics` when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self.metrics
        requests = CounterMetricFamily(
            "durasync_http_requests",
            "HTTP requests answered, by route template and status class",
            labels=["route", "status"],
        )
        for (route, klass), child in list(m._requests.items()):
            requests.add_metric([route, status_class(klass * 100)], child.value)
        yield requests
        errors = CounterMetricFamily(
            "durasync_errors",
            "Error answers and error frames sent, by layer and error code",
            labels=["layer", "code"],
        )
        for (layer, code), child in list(m._errors.items()):
            errors.add_metric([layer, code], child.value)
        yield errors
        for attribute, name, documentation in _COUNTERS:
            count = getattr(m, attribute)
            yield CounterMetricFamily("durasync_" + name, documentation, value=count.value)
        yield GaugeMetricFamily(
            "durasync_store_available",
            "1 while the store is reachable (always 1 for local stores)",
            value=m.store_up,
        )
        yield GaugeMetricFamily(
            "durasync_open_websockets", "WebSocket connections open", value=m._websockets.value
        )
        for key, documentation in _GAUGES:
            fn = m._gauge_fns.get(key)
            yield GaugeMetricFamily("durasync_" + key, documentation, value=fn() if fn else 0)
        if m._links_fn is not None:
            yield from _link_families(m._links_fn())


def _link_families(links: list[dict[str, Any]]) -> Iterator[Any]:
    """The ``durasync_replication_*`` families of the links' summaries (docs/operations.md)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    status = GaugeMetricFamily(
        "durasync_replication_link_status",
        "1 for the replication link's current status, 0 for the others",
        labels=["link", "status"],
    )
    connected = GaugeMetricFamily(
        "durasync_replication_link_connected",
        "1 while the link's last request reached the remote, 0 otherwise (unknown: none yet)",
        labels=["link"],
    )
    lag_messages = GaugeMetricFamily(
        "durasync_replication_lag_messages",
        "Messages (stream entries, room journal records) the link knows it has not copied",
        labels=["link"],
    )
    lag_seconds = GaugeMetricFamily(
        "durasync_replication_lag_seconds",
        "Age of the link's oldest known backlog in seconds (0: nothing known to be behind)",
        labels=["link"],
    )
    moved = CounterMetricFamily(
        "durasync_replication_messages",
        "Messages moved by the link: pulled (applied here) and pushed (accepted by the remote)",
        labels=["link", "direction"],
    )
    dead = GaugeMetricFamily(
        "durasync_replication_dead_letters",
        "Dead letters the link holds (refused for good, waiting for the operator)",
        labels=["link"],
    )
    detected = CounterMetricFamily(
        "durasync_replication_gaps_detected",
        "Gaps the link met (a stream or room it could not continue from its checkpoint)",
        labels=["link"],
    )
    repaired = CounterMetricFamily(
        "durasync_replication_gaps_repaired",
        "Streams and rooms whose repair after a gap succeeded",
        labels=["link"],
    )
    for link in links:
        name = str(link["name"])
        for state in LINK_STATUSES:
            status.add_metric([name, state], 1.0 if link["status"] == state else 0.0)
        connected.add_metric([name], 1.0 if link["connectivity"] == "online" else 0.0)
        lag_messages.add_metric([name], link["lag"]["messages"])
        lag_seconds.add_metric([name], link["lag"]["seconds"])
        moved.add_metric([name, "pulled"], link["pulledMessages"])
        moved.add_metric([name, "pushed"], link["pushedMessages"])
        dead.add_metric([name], link["deadLetters"])
        detected.add_metric([name], link["gapsDetected"])
        repaired.add_metric([name], link["gapsRepaired"])
    yield from (status, connected, lag_messages, lag_seconds, moved, dead, detected, repaired)
