"""One link at run time: its status machine, ledger, remote, and one unit per stream or room.

The runner's main loop (one task per link):

1. loads the ledger (a paused link stays paused across restarts);
2. identifies the remote (``GET /v1/replication/server``): a durasync server gives exact
   mirrors and room replication, any other Durable Streams server the plain protocol;
3. every ``discover_interval``: lists the remote's streams under the pull prefixes and the
   local ones under the push prefixes (and the rooms), starting a unit for each new one and
   checking the ones that went away; after the first complete round the link is ``live``;
4. runs the repair the status machine asks for (units that met a gap are repaired together,
   then restarted), and the periodic integrity reconcile.

Units run as their own tasks and report through the runner: checkpoints (flushed to the ledger
in the background, then announced as ``checkpoint:*-advance``), gaps (``gap:detected``, the link
goes ``repairing``), dead letters, connectivity (every request's contact). Teardown (pause,
reload, shutdown) stops every task of the link; the machine's generation counter makes any
straggler stop at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import httpx
import msgspec

from durasync.namespaces import is_reserved
from durasync.protocol.room_rules import room_name_problem
from durasync.replication.config import LinkConfig, ReplicationSettings
from durasync.replication.core import (
    Checkpoint,
    DeadLetter,
    LinkMachine,
    MachineEvent,
    Outcome,
)
from durasync.replication.events import Event
from durasync.replication.ledger import CheckpointKey, LinkLedger
from durasync.replication.remote import Remote, RemoteError
from durasync.replication.rooms import ROOM_PREFIX, RoomList, RoomSync
from durasync.replication.streams import StreamMirror, StreamPush, _Unit
from durasync.replication.wire import GapBody
from durasync.store.base import LogStore
from durasync.store.errors import StoreError

if TYPE_CHECKING:
    from durasync.replication.service import ReplicationService

__all__ = ["LinkRunner"]

log = logging.getLogger("durasync.replication")

#: Seconds between ledger flushes (checkpoints are reported after they are durable).
FLUSH_INTERVAL = 0.1
#: Streams a link handles (mirrored plus forwarded); more are left out with a warning.
MAX_UNITS = 10_000


class LinkRunner:
    """Runs one configured link (see the module docstring)."""

    def __init__(
        self,
        service: ReplicationService,
        config: LinkConfig,
        settings: ReplicationSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.name = config.name
        self.settings = settings
        self.store: LogStore = service.store
        self.clock: Callable[[], float] = service.clock
        self.server_id = service.server_id
        self.machine = LinkMachine(
            repair_delays=settings.repair_delays,
            poll_min=settings.poll_min,
            poll_jitter=settings.poll_jitter,
            random=service.random,
        )
        self.ledger = LinkLedger(self.store, config, clock=self.clock)
        self.remote = Remote(
            config.remote,
            token=config.token,
            settings=settings,
            on_contact=self._contact,
            clock=self.clock,
            transport=transport,
        )
        #: The remote's replication identity (None: not durasync, or not known yet).
        self.remote_id: str | None = None
        self.identified = False
        self.connectivity: Literal["online", "offline", "unknown"] = "unknown"
        self.units: dict[CheckpointKey, _Unit | RoomSync] = {}
        self.stopping = False
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._resumed = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._advanced: dict[tuple[str, str], Checkpoint] = {}
        self._exhausted = 0
        self._next_discover = 0.0
        self._next_reconcile: float | None = None
        self.last_error: str | None = None
        self.loaded = asyncio.Event()
        #: Messages this runner moved: ``pulled`` (applied here from the remote) and
        #: ``pushed`` (accepted by the remote), streams and rooms together. Plain ints added
        #: once per batch on the event loop; read when ``/metrics`` is scraped.
        self.moved: dict[Literal["pulled", "pushed"], int] = {"pulled": 0, "pushed": 0}
        #: Gaps met by this runner's units, and units whose repair succeeded.
        self.gaps_detected = 0
        self.gaps_repaired = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._main = asyncio.get_running_loop().create_task(self._run(), name=f"link {self.name}")

    async def stop(self) -> None:
        """Stop every task of the link and flush its ledger (best effort)."""
        self.stopping = True
        self._stop.set()
        self.machine.restart()
        tasks = [u.task for u in self.units.values() if u.task is not None]
        for t in (self._main, self._flusher, *tasks):
            if t is not None:
                t.cancel()
        for t in (self._main, self._flusher, *tasks):
            if t is not None:
                with contextlib.suppress(BaseException):
                    await t
        with contextlib.suppress(StoreError):
            await self.ledger.flush()
        await self.remote.aclose()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the link stops."""
        if seconds <= 0 or self.stopping:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    # -- events --------------------------------------------------------------------------

    def emit(self, type_: str, **fields: Any) -> None:
        self.service.events.publish(
            Event(
                type=type_,
                link=self.name,
                remote=self.config.remote,
                at=self.clock(),
                fields=fields,
            )
        )

    def _machine_events(self, events: list[MachineEvent]) -> None:
        for ev in events:
            if ev.type == "link:status-change":
                self.ledger.set_status(ev.fields["to"])
            self.emit(ev.type, **ev.fields)

    def _contact(self, ok: bool) -> None:
        state: Literal["online", "offline"] = "online" if ok else "offline"
        if state != self.connectivity:
            before, self.connectivity = self.connectivity, state
            self.emit("link:connectivity-change", **{"from": before, "to": state})

    def count_moved(self, direction: Literal["pulled", "pushed"], messages: int) -> None:
        """``messages`` were applied here (``pulled``) or accepted by the remote
        (``pushed``)."""
        if messages > 0:
            self.moved[direction] += messages

    def advanced(self, direction: str, key: str, cp: Checkpoint) -> None:
        """A unit's checkpoint moved; announced once the ledger flushed it."""
        self._advanced[(direction, key)] = cp

    def gap(self, unit: _Unit | RoomSync, reason: str, body: GapBody | None) -> None:
        """A unit met a gap: it waits for the link's repair."""
        unit.repair_reason = reason
        self.gaps_detected += 1
        fields: dict[str, Any] = {"reason": reason, "kind": unit.kind, "key": unit.path}
        if body is not None:
            fields["requested"] = body.requested
            fields["oldestAvailable"] = body.oldest_available
            fields["latestAvailable"] = body.latest_available
        self.emit("gap:detected", **fields)
        self._machine_events(self.machine.trouble(self.clock(), reason))
        self._wake.set()

    def dead_letter(
        self, kind: Literal["stream", "room"], key: str, item: str, status: int, error: str
    ) -> None:
        letter = DeadLetter(
            id=secrets.token_hex(8),
            link=self.name,
            kind=kind,
            key=key,
            item=item,
            status=status,
            error=error[:1000],
            at=self.clock(),
        )
        self.ledger.add_dead_letter(letter)
        self.emit(
            "dead-letter:added",
            id=letter.id,
            kind=kind,
            key=key,
            item=item,
            status=status,
            error=letter.error,
        )
        self._wake.set()

    async def needs_reconcile(self, reason: str) -> None:
        self._exhausted += 1
        if not self.ledger.state.needs_reconcile:
            self.ledger.set_needs_reconcile(True)
            with contextlib.suppress(StoreError):
                await self.ledger.flush()
            self.emit("reconcile:needed", reason=reason)

    async def reconciled(self) -> None:
        self._exhausted = max(0, self._exhausted - 1)
        if self._exhausted == 0 and self.ledger.state.needs_reconcile:
            self.ledger.set_needs_reconcile(False)
            with contextlib.suppress(StoreError):
                await self.ledger.flush()
            self.emit("reconcile:completed")

    # -- operator ------------------------------------------------------------------------

    async def pause(self) -> None:
        events = self.machine.pause()
        if events:
            self._machine_events(events)
            await self._stop_units()
            await self.ledger.flush()
            self._wake.set()

    async def resume(self) -> None:
        events = self.machine.resume()
        if events:
            self._machine_events(events)
            await self.ledger.flush()
            self._next_discover = 0.0
            self._resumed.set()
            self._wake.set()

    async def retry_dead_letters(self) -> int:
        """Clear the dead letters and unpark what they held; returns how many."""
        ids = list(self.ledger.state.dead)
        self.ledger.clear_dead_letters(ids)
        await self.ledger.flush()
        for unit in self.units.values():
            if isinstance(unit, StreamPush) and unit.parked:
                await unit.retry()
                self._spawn(unit)
        self._wake.set()
        return len(ids)

    # -- the main loop -------------------------------------------------------------------

    async def _run(self) -> None:
        while not self.stopping:
            try:
                await self.ledger.load()
                break
            except StoreError as exc:
                log.warning("link %s: cannot load its ledger: %s", self.name, exc)
                await self.sleep(1.0)
        if self.ledger.state.status == "paused":
            self.machine.status = "paused"
        self.loaded.set()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        while not self.stopping:
            if self.machine.status == "paused":
                self._resumed.clear()
                stop = asyncio.ensure_future(self._stop.wait())
                resumed = asyncio.ensure_future(self._resumed.wait())
                try:
                    await asyncio.wait({stop, resumed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                    resumed.cancel()
                continue
            try:
                await self._round()
            except (RemoteError, StoreError) as exc:
                self.last_error = str(exc)
                log.info("link %s: %s", self.name, exc)
                await self.sleep(min(self.settings.discover_interval, 1.0))
                continue
            except Exception:
                log.exception("link %s failed a round", self.name)
                await self.sleep(1.0)
                continue
            await self._idle()

    async def _round(self) -> None:
        now = self.clock()
        if not self.identified:
            info = await self.remote.server_info()
            self.remote_id = info.id if info is not None else None
            self.identified = True
        if now >= self._next_discover:
            await self._discover()
            self._next_discover = self.clock() + self.settings.discover_interval
            self.last_error = None
            if self.machine.status == "initializing":
                self._machine_events(self.machine.opened())
                self._next_reconcile = self.clock() + self.settings.reconcile_interval
        if self.machine.due(self.clock()):
            await self._repair()
        if (
            self.machine.status == "live"
            and self._next_reconcile is not None
            and self.clock() >= self._next_reconcile
        ):
            await self._reconcile()
            self._next_reconcile = self.clock() + self.settings.reconcile_interval

    async def _idle(self) -> None:
        now = self.clock()
        deadlines = [self._next_discover]
        delay = self.machine.delay(now)
        if delay is not None:
            deadlines.append(now + delay)
        if self._next_reconcile is not None and self.machine.status == "live":
            deadlines.append(self._next_reconcile)
        wait = max(0.0, min(deadlines) - now)
        self._wake.clear()
        if wait <= 0:
            await asyncio.sleep(0)
            return
        waker = asyncio.ensure_future(self._wake.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({waker, stop}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            stop.cancel()

    # -- units ---------------------------------------------------------------------------

    def _spawn(self, unit: _Unit | RoomSync) -> None:
        if self.stopping or self.machine.status == "paused":
            return
        if unit.task is not None and not unit.task.done():
            return
        unit.done = False
        unit.task = asyncio.get_running_loop().create_task(
            self._guard(unit), name=f"link {self.name} {unit.direction} {unit.path}"
        )

    async def _guard(self, unit: _Unit | RoomSync) -> None:
        generation = self.machine.generation
        try:
            await unit.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("link %s: %s of %s failed", self.name, unit.direction, unit.path)
            if generation == self.machine.generation and not self.stopping:
                self.gap(unit, "apply_failed", None)

    async def _stop_units(self) -> None:
        tasks = [u.task for u in self.units.values() if u.task is not None and not u.task.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    def _unit(
        self, key: CheckpointKey, make: Callable[[], _Unit | RoomSync]
    ) -> _Unit | RoomSync | None:
        unit = self.units.get(key)
        if unit is None:
            if len(self.units) >= MAX_UNITS:
                log.warning(
                    "link %s: more than %d streams; %s left out", self.name, MAX_UNITS, key[2]
                )
                return None
            unit = self.units[key] = make()
        return unit

    async def _discover(self) -> None:
        await self._discover_pull()
        await self._discover_push()
        await self._discover_rooms()

    async def _discover_rooms(self) -> None:
        """Every room under a ``rooms`` prefix, here or at the remote, gets a unit (rooms
        need a durasync remote and a server that serves rooms)."""
        port = self.service.rooms
        if not self.config.rooms or port is None or self.remote_id is None:
            return
        names: set[str] = set()
        for prefix in self.config.rooms:
            resp = await self.remote.request(
                "GET",
                f"{self.remote.base}/v1/replication/rooms",
                params={"prefix": prefix},
                what=f"list rooms {prefix!r}",
            )
            if resp.status_code != 200:
                raise self.remote.fail(resp, f"list rooms {prefix!r}")
            try:
                listing = msgspec.json.decode(resp.content, type=RoomList)
            except msgspec.DecodeError as exc:
                raise self.remote.fail(resp, f"list rooms: {exc}") from None
            # A remote's listing is input: only valid room names under the prefix.
            names.update(
                h.room
                for h in listing.rooms
                if h.room.startswith(prefix) and room_name_problem(h.room) is None
            )
            for info in await self.store.list_streams(ROOM_PREFIX + prefix, limit=MAX_UNITS):
                parts = info.path.split("/")
                if len(parts) == 3 and parts[2] == "meta" and parts[1].startswith(prefix):
                    names.add(parts[1])
        for name in sorted(names):
            unit = self._unit(("pull", "room", name), partial(RoomSync, self, name, port))
            if unit is not None and unit.repair_reason is None:
                self._spawn(unit)

    async def _discover_pull(self) -> None:
        if not self.config.pull:
            return
        if self.remote_id is None:
            # A plain Durable Streams server cannot list: each pull entry names one stream.
            for path in self.config.pull:
                if not path or is_reserved(path):
                    continue
                unit = self._unit(("pull", "stream", path), partial(StreamMirror, self, path, None))
                if unit is not None and unit.repair_reason is None:
                    self._spawn(unit)
            return
        listed: set[str] = set()
        for prefix in self.config.pull:
            after = ""
            while True:
                page = await self.remote.list_streams(prefix, after=after, limit=1000)
                if page.server != self.remote_id:
                    # The remote's store was replaced: every mirror is of a dead domain.
                    self.identified = False
                    raise RemoteError(
                        Outcome(
                            kind="transient", detail="the remote's replication identity changed"
                        ),
                        "list",
                    )
                for entry in page.streams:
                    if is_reserved(entry.path) or not self.config.pulls(entry.path):
                        continue
                    listed.add(entry.path)
                    unit = self._unit(
                        ("pull", "stream", entry.path),
                        partial(StreamMirror, self, entry.path, entry),
                    )
                    if not isinstance(unit, StreamMirror):
                        continue
                    unit.entry = entry
                    info = self.ledger.info(unit.key)
                    if info.get("epoch") not in (None, entry.epoch) and unit.repair_reason is None:
                        unit.repair_reason = "epoch_mismatch"
                        self.gap(unit, "epoch_mismatch", None)
                        continue
                    if unit.repair_reason is None and (not unit.done or not self._closed_ok(unit)):
                        self._spawn(unit)
                if not page.more or not page.streams:
                    break
                after = page.streams[-1].path
        # Mirrors the listing no longer shows: their unit confirms the deletion (404) or
        # finds the stream again.
        for key in [k for k in self.ledger.state.info if k[0] == "pull" and k[1] == "stream"]:
            if key[2] not in listed and self.config.pulls(key[2]):
                unit = self._unit(key, partial(StreamMirror, self, key[2], None))
                if isinstance(unit, StreamMirror) and unit.repair_reason is None:
                    unit.entry = None
                    self._spawn(unit)

    @staticmethod
    def _closed_ok(unit: StreamMirror) -> bool:
        """A finished mirror (its source closed) stays finished while the listing agrees."""
        entry = unit.entry
        return entry is not None and entry.closed

    async def _discover_push(self) -> None:
        seen: set[str] = set()
        for prefix in self.config.push:
            for info in await self.store.list_streams(prefix, limit=MAX_UNITS):
                path = info.path
                if is_reserved(path) or not self.config.pushes(path):
                    continue
                seen.add(path)
                unit = self._unit(("push", "stream", path), partial(StreamPush, self, path))
                if isinstance(unit, StreamPush) and not unit.parked:
                    facts = self.ledger.info(unit.key)
                    if unit.done and facts.get("closed"):
                        continue
                    self._spawn(unit)
        for key in [k for k in self.ledger.state.info if k[0] == "push" and k[1] == "stream"]:
            if key[2] not in seen:
                unit = self.units.pop(key, None)
                if unit is not None and unit.task is not None:
                    unit.task.cancel()
                self.ledger.forget(key)

    # -- repair and reconcile --------------------------------------------------------------

    async def _repair(self) -> None:
        self._machine_events(self.machine.repair_started(self.clock()))
        await self.ledger.flush()
        broken = [u for u in self.units.values() if u.repair_reason is not None]
        try:
            for unit in broken:
                if unit.task is not None and not unit.task.done():
                    unit.task.cancel()
                    with contextlib.suppress(BaseException):
                        await unit.task
                await unit.repair()
        except (RemoteError, StoreError) as exc:
            self._machine_events(self.machine.repair_failed(self.clock(), str(exc)))
            await self.ledger.flush()
            return
        self._machine_events(self.machine.repair_succeeded())
        self.gaps_repaired += len(broken)
        await self.ledger.flush()
        self._next_discover = 0.0
        for unit in broken:
            self._spawn(unit)

    async def _reconcile(self) -> None:
        """The periodic integrity check of a live link: every forward re-probes the remote
        (its producer epoch says what the remote holds), every room is reconciled with the
        remote's (hash tree: only differing buckets are compared, only missing messages
        move), and discovery runs again."""
        fetched = pushed = 0
        failed: str | None = None
        for unit in list(self.units.values()):
            if isinstance(unit, StreamPush):
                unit.reset_probe()
            elif isinstance(unit, RoomSync) and unit.repair_reason is None:
                try:
                    got, sent = await unit.reconcile(reset_cursors=False)
                except (RemoteError, StoreError) as exc:
                    failed = str(exc)
                    continue
                fetched += got
                pushed += sent
        self._next_discover = 0.0
        if failed is not None:
            await self.needs_reconcile(f"reconcile failed: {failed}")
            self._exhausted = max(0, self._exhausted - 1)
            return
        if self.ledger.state.needs_reconcile and self._exhausted == 0:
            self.ledger.set_needs_reconcile(False)
            await self.ledger.flush()
        self.emit("reconcile:completed", fetched=fetched, pushed=pushed)

    async def _flush_loop(self) -> None:
        while not self.stopping:
            await self.sleep(FLUSH_INTERVAL)
            if not self.ledger.pending:
                continue
            advanced, self._advanced = self._advanced, {}
            try:
                await self.ledger.flush()
            except StoreError as exc:
                log.warning("link %s: ledger flush failed: %s", self.name, exc)
                advanced.update(self._advanced)
                self._advanced = advanced
                continue
            for (direction, key), cp in advanced.items():
                token = cp.applied
                if token is None:
                    continue
                self.emit(
                    f"checkpoint:{direction}-advance",
                    key=key,
                    position=token.position,
                    ref=token.ref,
                    epoch=token.epoch,
                )

    # -- views ---------------------------------------------------------------------------

    def lag(self) -> tuple[int, float]:
        """``(messages, seconds)`` behind: entries (stream messages, room journal records)
        the units know they have not copied yet, and the age of the oldest backlog (0 when
        none is behind). Known from what the units last saw of both sides, no request:
        a unit learns of new data at the remote with its next read, so a disconnected
        link's lag is what it was when it lost contact, and ``connectivity`` says so."""
        now = self.clock()
        messages = 0
        oldest: float | None = None
        for unit in list(self.units.values()):
            messages += unit.behind
            since = unit.behind_since
            if since is not None and (oldest is None or since < oldest):
                oldest = since
        return messages, (max(0.0, now - oldest) if oldest is not None else 0.0)

    def summary(self) -> dict[str, Any]:
        """What operators watch (metrics, the inspector): name, remote, status,
        connectivity, lag, dead letters and this runner's counters. Never the token (the
        remote URL cannot carry credentials: the configuration refuses them)."""
        messages, seconds = self.lag()
        return {
            "name": self.name,
            "remote": self.config.remote,
            "status": self.machine.status,
            "connectivity": self.connectivity,
            "lag": {"messages": messages, "seconds": seconds},
            "deadLetters": len(self.ledger.state.dead),
            "needsReconcile": self.ledger.state.needs_reconcile,
            "pulledMessages": self.moved["pulled"],
            "pushedMessages": self.moved["pushed"],
            "gapsDetected": self.gaps_detected,
            "gapsRepaired": self.gaps_repaired,
        }

    def view(self) -> dict[str, Any]:
        """The link as ``GET /v1/replication/links`` shows it."""
        lag_messages, lag_seconds = self.lag()
        checkpoints: list[dict[str, Any]] = []
        for (direction, kind, key), cp in sorted(self.ledger.state.checkpoints.items()):
            checkpoints.append(
                {
                    "direction": direction,
                    "kind": kind,
                    "key": key,
                    "received": cp.received,
                    "applied": cp.applied,
                }
            )
        return {
            "name": self.name,
            "remote": self.config.remote,
            "scopeId": self.config.scope_id,
            "scope": self.config.scope,
            "status": self.machine.status,
            "connectivity": self.connectivity,
            "mode": "unknown"
            if not self.identified
            else ("durasync" if self.remote_id is not None else "plain"),
            "needsReconcile": self.ledger.state.needs_reconcile,
            "lastActivity": self.ledger.state.last_activity,
            "lag": {"messages": lag_messages, "seconds": lag_seconds},
            "deadLetters": len(self.ledger.state.dead),
            "repairReason": self.machine.reason,
            "lastError": self.last_error,
            "checkpoints": checkpoints,
        }
