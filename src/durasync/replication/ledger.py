"""The durable ledger of replication links, kept in the local store (any backend).

Everything replication remembers lives in streams of the server's reserved namespace
(``__replication/...``, unreachable through the public streams API), so the memory, embedded
and Redis backends all work and "the log is the truth" holds here too:

- ``__replication/server``: the server's identity, ``{"id": ...}``. The first valid record
  wins; a store without one gets a random id. A replaced or wiped store gets a new id, so
  tokens minted against the old one are never trusted (they belong to another stream domain).
- ``__replication/links/<link_id>``: one log per link (``link_id`` hashes
  ``(name, remote, scope_id)``, :func:`~durasync.replication.config.link_id`). Its records
  (JSON) are deltas: the link's identity, its status, ``needs_reconcile``, per log and
  direction a :class:`~durasync.replication.core.Checkpoint`, dead letters added and
  cleared. Loading replays them; every ``compact_every`` records the whole state is written
  as one ``state`` record and the log is trimmed behind it.

Durability. :meth:`LinkLedger.flush` returns once the records are durable (the store's
append). Changes are buffered between flushes (bounded: a flush is forced beyond
``max_buffered`` records): checkpoints may therefore lag the data, never lead it, since the
replicators take their resume points from the data itself (a mirror's own tail or
``Stream-Seq``, the remote's producer epoch, message ids) and only *report* checkpoints here.
Status changes, dead letters and ``needs_reconcile`` are flushed before they are reported.

One writer per link: the link's runner. With a Redis store shared by several nodes, run
``--replicate`` on one node (docs/replication.md).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from durasync.replication.config import LinkConfig
from durasync.replication.core import Checkpoint, DeadLetter, LinkStatus
from durasync.store.base import OFFSET_START, LogStore, StreamConfig
from durasync.store.errors import NoSuchStream

__all__ = [
    "LEDGER_PREFIX",
    "SERVER_PATH",
    "CheckpointKey",
    "LinkLedger",
    "LinkState",
    "ledger_path",
    "server_identity",
]

log = logging.getLogger("durasync.replication")

LEDGER_PREFIX = "__replication/"
SERVER_PATH = "__replication/server"
_JSON = StreamConfig(content_type="application/json")

Direction = Literal["pull", "push"]
UnitKind = Literal["stream", "room"]
#: ``(direction, kind, key)``: key is the stream path or room name.
CheckpointKey = tuple[Direction, UnitKind, str]

#: Dead letters kept per link; beyond it the oldest are dropped (and counted).
MAX_DEAD_LETTERS = 10_000


def ledger_path(link_id: str) -> str:
    return f"{LEDGER_PREFIX}links/{link_id}"


class _ServerRecord(msgspec.Struct):
    id: str


async def server_identity(store: LogStore) -> str:
    """This store's replication identity (created on first use; the first record wins)."""
    try:
        result = await store.read(SERVER_PATH, OFFSET_START, max_messages=16)
        entries = result.entries
    except NoSuchStream:
        await store.create(SERVER_PATH, _JSON)
        entries = []
    for entry in entries:
        try:
            record = msgspec.json.decode(entry.data, type=_ServerRecord)
        except msgspec.DecodeError:
            continue
        if 8 <= len(record.id) <= 64:
            return record.id
    await store.append(SERVER_PATH, [msgspec.json.encode(_ServerRecord(secrets.token_hex(12)))])
    return await server_identity(store)


# ------------------------------------------------------------------------------ records


class _Identity(msgspec.Struct, tag="link"):
    name: str
    remote: str
    scope: dict[str, list[str]]
    scope_id: str


class _Status(msgspec.Struct, tag="status"):
    status: LinkStatus
    needs_reconcile: bool
    at: float


class _Cp(msgspec.Struct, tag="cp"):
    dir: Direction
    kind: UnitKind
    key: str
    cp: Checkpoint | None
    #: Per-log facts a replicator keeps with its checkpoint (e.g. the source stream's
    #: domain for a mirror, the producer of a push); None: the entry was removed.
    info: dict[str, Any] | None = None


class _DeadAdd(msgspec.Struct, tag="dl"):
    letter: DeadLetter


class _DeadClear(msgspec.Struct, tag="dl-clear"):
    ids: list[str]


class _Entry(msgspec.Struct):
    dir: Direction
    kind: UnitKind
    key: str
    cp: Checkpoint | None
    info: dict[str, Any] | None


class _State(msgspec.Struct, tag="state"):
    status: LinkStatus
    needs_reconcile: bool
    at: float
    entries: list[_Entry]
    dead: list[DeadLetter]
    dead_dropped: int


_Record = _Identity | _Status | _Cp | _DeadAdd | _DeadClear | _State
_decoder = msgspec.json.Decoder(_Record)
_encoder = msgspec.json.Encoder()


class LinkState(msgspec.Struct, kw_only=True):
    """A link's durable state as loaded (and kept current) by its ledger."""

    status: LinkStatus = "initializing"
    needs_reconcile: bool = False
    last_activity: float = 0.0
    checkpoints: dict[CheckpointKey, Checkpoint] = {}
    info: dict[CheckpointKey, dict[str, Any]] = {}
    dead: dict[str, DeadLetter] = {}
    dead_dropped: int = 0


class LinkLedger:
    """The durable state of one link (see the module docstring).

    ``clock`` gives ``last_activity`` times. Call :meth:`load` once before anything else.
    """

    def __init__(
        self,
        store: LogStore,
        link: LinkConfig,
        *,
        clock: Callable[[], float] = time.time,
        compact_every: int = 1000,
        max_buffered: int = 512,
    ) -> None:
        self.store = store
        self.link = link
        self.path = ledger_path(link.link_id)
        self._clock = clock
        self._compact_every = compact_every
        self._max_buffered = max_buffered
        self.state = LinkState()
        self._buffer: list[bytes] = []
        #: Checkpoints moved since the last flush (written then, newest state only).
        self._dirty: dict[CheckpointKey, Checkpoint] = {}
        self._since_compact = 0
        self._lock = asyncio.Lock()
        #: Records skipped while loading (undecodable): logged, never fatal.
        self.skipped = 0

    # -- loading -----------------------------------------------------------------------

    async def load(self) -> LinkState:
        """Create the ledger stream if needed and replay it.

        Raises:
            StoreError: the store failed (the caller retries).
        """
        created = await self.store.create(self.path, _JSON)
        if created.created:
            identity = _Identity(
                name=self.link.name,
                remote=self.link.remote,
                scope=self.link.scope,
                scope_id=self.link.scope_id,
            )
            await self.store.append(self.path, [_encoder.encode(identity)])
        state = LinkState()
        offset = OFFSET_START
        count = 0
        while True:
            result = await self.store.read(self.path, offset, max_messages=4096)
            for entry in result.entries:
                count += 1
                try:
                    record = _decoder.decode(entry.data)
                except msgspec.DecodeError as exc:
                    self.skipped += 1
                    log.error("replication ledger %s: skipped a bad record: %s", self.path, exc)
                    continue
                _apply(state, record)
            if result.up_to_date or not result.entries:
                break
            offset = result.next_offset
        self.state = state
        self._since_compact = count
        return state

    # -- changes -----------------------------------------------------------------------

    def _add(self, record: _Record) -> None:
        _apply(self.state, record)
        self._buffer.append(_encoder.encode(record))

    def checkpoint(self, key: CheckpointKey) -> Checkpoint:
        """The checkpoint of one log (created empty, not yet recorded)."""
        cp = self.state.checkpoints.get(key)
        if cp is None:
            cp = self.state.checkpoints[key] = Checkpoint()
        return cp

    def info(self, key: CheckpointKey) -> dict[str, Any]:
        return dict(self.state.info.get(key, {}))

    def record_checkpoint(
        self, key: CheckpointKey, cp: Checkpoint, info: dict[str, Any] | None = None
    ) -> None:
        """Record ``cp`` (and optionally new ``info``) of one log.

        A checkpoint alone is coalesced: the next flush writes one record per log with its
        newest state, however often it moved meanwhile. New ``info`` is written in order with
        everything else (it says which source a checkpoint belongs to).
        """
        if info is None:
            self.state.checkpoints[key] = cp
            self._dirty[key] = cp
            return
        self._dirty.pop(key, None)
        self._add(_Cp(dir=key[0], kind=key[1], key=key[2], cp=cp, info=dict(info)))

    def forget(self, key: CheckpointKey) -> None:
        """Drop one log's checkpoint and info (its stream was deleted or left the scope)."""
        self._dirty.pop(key, None)
        if key in self.state.checkpoints or key in self.state.info:
            self._add(_Cp(dir=key[0], kind=key[1], key=key[2], cp=None, info=None))

    def set_status(self, status: LinkStatus) -> None:
        needs = self.state.needs_reconcile
        self._add(_Status(status=status, needs_reconcile=needs, at=self._clock()))

    def set_needs_reconcile(self, value: bool) -> None:
        if self.state.needs_reconcile != value:
            self._add(_Status(status=self.state.status, needs_reconcile=value, at=self._clock()))

    def add_dead_letter(self, letter: DeadLetter) -> None:
        self._add(_DeadAdd(letter=letter))

    def clear_dead_letters(self, ids: list[str]) -> None:
        present = [i for i in ids if i in self.state.dead]
        if present:
            self._add(_DeadClear(ids=present))

    @property
    def pending(self) -> int:
        """Records (and moved checkpoints) buffered and not yet durable."""
        return len(self._buffer) + len(self._dirty)

    @property
    def must_flush(self) -> bool:
        return self.pending >= self._max_buffered

    async def flush(self) -> None:
        """Make every buffered record durable (then maybe compact).

        Raises:
            StoreError: the append failed; the records stay buffered for the next flush.
        """
        async with self._lock:
            if self._dirty:
                dirty, self._dirty = self._dirty, {}
                for key, cp in dirty.items():
                    info = self.state.info.get(key)
                    self._buffer.append(
                        _encoder.encode(_Cp(dir=key[0], kind=key[1], key=key[2], cp=cp, info=info))
                    )
            if not self._buffer:
                return
            batch = list(self._buffer)
            self.state.last_activity = self._clock()
            await self.store.append(self.path, batch)
            # Records buffered during the append stay for the next flush.
            del self._buffer[: len(batch)]
            self._since_compact += len(batch)
            if self._since_compact >= self._compact_every:
                await self._compact()

    async def _compact(self) -> None:
        s = self.state
        keys = set(s.checkpoints) | set(s.info)
        snapshot = _State(
            status=s.status,
            needs_reconcile=s.needs_reconcile,
            at=self._clock(),
            entries=[
                _Entry(dir=k[0], kind=k[1], key=k[2], cp=s.checkpoints.get(k), info=s.info.get(k))
                for k in sorted(keys)
            ],
            dead=list(s.dead.values()),
            dead_dropped=s.dead_dropped,
        )
        identity = _Identity(
            name=self.link.name,
            remote=self.link.remote,
            scope=self.link.scope,
            scope_id=self.link.scope_id,
        )
        result = await self.store.append(
            self.path, [_encoder.encode(identity), _encoder.encode(snapshot)]
        )
        await self.store.trim(self.path, result.offsets[0])
        self._since_compact = 2


def _apply(state: LinkState, record: _Record) -> None:
    if isinstance(record, _Status):
        state.status = record.status
        state.needs_reconcile = record.needs_reconcile
        state.last_activity = max(state.last_activity, record.at)
    elif isinstance(record, _Cp):
        key: CheckpointKey = (record.dir, record.kind, record.key)
        if record.cp is None and record.info is None:
            state.checkpoints.pop(key, None)
            state.info.pop(key, None)
        else:
            if record.cp is not None:
                state.checkpoints[key] = record.cp
            if record.info is not None:
                state.info[key] = record.info
    elif isinstance(record, _DeadAdd):
        state.dead[record.letter.id] = record.letter
        while len(state.dead) > MAX_DEAD_LETTERS:
            del state.dead[next(iter(state.dead))]
            state.dead_dropped += 1
    elif isinstance(record, _DeadClear):
        for dead_id in record.ids:
            state.dead.pop(dead_id, None)
    elif isinstance(record, _State):
        state.status = record.status
        state.needs_reconcile = record.needs_reconcile
        state.last_activity = max(state.last_activity, record.at)
        state.checkpoints = {}
        state.info = {}
        for e in record.entries:
            k: CheckpointKey = (e.dir, e.kind, e.key)
            if e.cp is not None:
                state.checkpoints[k] = e.cp
            if e.info is not None:
                state.info[k] = e.info
        state.dead = {d.id: d for d in record.dead}
        state.dead_dropped = record.dead_dropped
    # _Identity: nothing to apply (it is there for people reading the store).
