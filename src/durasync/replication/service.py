"""The replication service of one server: its links, their events, the operator's controls.

One :class:`ReplicationService` per server (``create_app`` builds it; ``serve --replicate
FILE`` gives it links). It

- runs a :class:`~durasync.replication.link.LinkRunner` per configured link and replaces
  them on :meth:`reload` (SIGHUP): a link whose identity ``(name, remote, scope_id)`` and
  settings did not change keeps running untouched; a changed one is stopped and its
  successor starts with its own (possibly fresh) ledger;
- publishes every link's events on one :class:`~durasync.replication.events.EventBus`;
- answers which streams are read-only mirrors (:meth:`mirror_reason`; the streams API refuses
  writes to them with 403 ``READ_ONLY_MIRROR`` naming the source);
- serves the peer API other servers' links use (``/v1/replication/...``, see
  :mod:`durasync.replication.api`), also when it has no links itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random as _random
import time
from collections.abc import Callable
from typing import Any

import httpx

from durasync.replication.config import ReplicationConfig
from durasync.replication.events import EventBus
from durasync.replication.ledger import server_identity
from durasync.replication.link import LinkRunner
from durasync.replication.rooms import RoomIndexes, RoomPort
from durasync.store.base import LogStore, StreamConfig
from durasync.store.errors import DataGone, NoSuchStream

__all__ = ["ReplicationService", "UnknownLink"]


def _mark_path(room: str) -> str:
    return f"__rooms/{room}/replicated"


class UnknownLink(KeyError):
    """No configured link has that name."""


class ReplicationService:
    """See the module docstring. ``clock`` and ``random`` are injected for tests;
    ``transport`` (httpx) lets tests route a link's requests."""

    def __init__(
        self,
        store: LogStore,
        config: ReplicationConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        transport: httpx.AsyncBaseTransport | None = None,
        max_wait: float = 30.0,
    ) -> None:
        self.store = store
        self.config = config or ReplicationConfig()
        self.clock = clock
        self.random = random
        self.transport = transport
        #: Longest wait of a live framed read (peer API).
        self.max_wait = max_wait
        self.events = EventBus(limit=self.config.settings.event_queue)
        self.runners: dict[str, LinkRunner] = {}
        self.server_id = ""
        self._identity_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self.closing = asyncio.Event()
        self.started = False
        #: The rooms layer (replicated rooms; None: rooms are not served).
        self.rooms: RoomPort | None = None
        #: Message-id indexes of rooms (reconciliation, dedupe of relayed messages).
        self.room_indexes = RoomIndexes(store)
        #: Rooms known to carry the replication mark.
        self._marked: set[str] = set()

    async def identity(self) -> str:
        """This server's replication identity (read or created in the store on first use)."""
        if not self.server_id:
            async with self._identity_lock:
                if not self.server_id:
                    self.server_id = await server_identity(self.store)
        return self.server_id

    async def start(self) -> None:
        """Start the configured links (the store is open)."""
        self.started = True
        if self.config.links:
            await self.identity()
        for link in self.config.links:
            self._start_runner(link.name)

    def _start_runner(self, name: str) -> None:
        link = self.config.link(name)
        assert link is not None
        runner = LinkRunner(self, link, self.config.settings, transport=self.transport)
        self.runners[name] = runner
        runner.start()

    async def reload(self, config: ReplicationConfig) -> dict[str, list[str]]:
        """Apply a new configuration; returns the link names ``started``, ``stopped`` and
        ``kept``. Writes already refused or accepted are not affected; mirrors of a prefix
        that left the configuration become ordinary (writable) local streams."""
        async with self._reload_lock:
            old = self.config
            kept: list[str] = []
            stopped: list[str] = []
            for name, runner in list(self.runners.items()):
                new = config.link(name)
                if (
                    new is not None
                    and new.link_id == runner.config.link_id
                    and new.token == runner.config.token
                    and config.settings == old.settings
                ):
                    kept.append(name)
                    continue
                await runner.stop()
                del self.runners[name]
                stopped.append(name)
            self.config = config
            started: list[str] = []
            if self.started:
                if config.links:
                    await self.identity()
                for link in config.links:
                    if link.name not in self.runners:
                        self._start_runner(link.name)
                        started.append(link.name)
            return {"started": started, "stopped": stopped, "kept": kept}

    def begin_shutdown(self) -> None:
        """End the peer API's live reads and the event streams now (the server is draining:
        open responses would hold its graceful shutdown until their timeouts). The links
        run on until :meth:`aclose`."""
        self.closing.set()
        self.events.close()

    async def aclose(self) -> None:
        self.begin_shutdown()
        runners = list(self.runners.values())
        self.runners.clear()
        for runner in runners:
            with contextlib.suppress(Exception):
                await runner.stop()

    # -- views and controls ------------------------------------------------------------

    def replicates_room(self, room: str) -> bool:
        """Whether a link of this server replicates ``room``."""
        return any(link.replicates_room(room) for link in self.config.links)

    async def room_replicated(self, room: str) -> bool:
        """Whether ``room`` takes part in replication, here or at another server's initiative:
        a link of ours covers it, or it carries the mark (``__rooms/<room>/replicated``) that
        replication leaves on every room it touches. Such a room folds in Lamport order, for
        good (unmarking would change its graph again)."""
        if room in self._marked:
            return True
        if self.replicates_room(room):
            await self.mark_room(room)
            return True
        try:
            await self.store.head(_mark_path(room))
        except (NoSuchStream, DataGone):
            return False
        self._marked.add(room)
        return True

    async def mark_room(self, room: str) -> None:
        """Mark ``room`` replicated (durable, idempotent); a loaded room is reloaded in
        Lamport order at once (before it snapshots or trims anything more)."""
        if room in self._marked:
            return
        await self.store.create(_mark_path(room), StreamConfig())
        self._marked.add(room)
        if self.rooms is not None:
            await self.rooms.reload(room)

    def mirror_reason(self, path: str) -> str | None:
        """Why local writes to ``path`` are refused (it is a read-only mirror), or None."""
        link = self.config.mirror_of(path)
        if link is None:
            return None
        return (
            f"stream {path!r} is a read-only mirror of {link.remote}/v1/stream/{path} "
            f"(replication link {link.name!r}); write to the source"
        )

    def links_view(self) -> list[dict[str, Any]]:
        return [
            self.runners[link.name].view()
            for link in self.config.links
            if link.name in self.runners
        ]

    def links_summary(self) -> list[dict[str, Any]]:
        """Every running link's :meth:`LinkRunner.summary` (name, remote, status,
        connectivity, lag, dead letters, counters), in configuration order; no token, no
        stream path or room name. Reads in-memory state only (for scrapes and the
        inspector)."""
        return [
            self.runners[link.name].summary()
            for link in self.config.links
            if link.name in self.runners
        ]

    def _runner(self, name: str) -> LinkRunner:
        runner = self.runners.get(name)
        if runner is None:
            raise UnknownLink(name)
        return runner

    async def pause(self, name: str) -> None:
        """Pause a link: every task of it stops until :meth:`resume` (kept across restarts).

        Raises:
            UnknownLink: no such link.
        """
        runner = self._runner(name)
        await runner.loaded.wait()
        await runner.pause()

    async def resume(self, name: str) -> None:
        """Resume a paused link (it starts over from ``initializing``).

        Raises:
            UnknownLink: no such link.
        """
        runner = self._runner(name)
        await runner.loaded.wait()
        await runner.resume()

    async def retry_dead_letters(self, name: str) -> int:
        """Clear a link's dead letters and retry what they held; returns how many.

        Raises:
            UnknownLink: no such link.
        """
        runner = self._runner(name)
        await runner.loaded.wait()
        return await runner.retry_dead_letters()

    def dead_letters(self, name: str) -> list[Any]:
        """A link's dead letters (oldest first).

        Raises:
            UnknownLink: no such link.
        """
        return list(self._runner(name).ledger.state.dead.values())
