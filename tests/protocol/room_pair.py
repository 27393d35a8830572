"""Room harness: client cores (:class:`ClientRoomSession`) and server sessions
(:class:`ServerRoomSession`) joined by a fake network that can drop, duplicate and cut, around
one in-memory room, with a fake clock (h11's ConnectionPair, with faults).

:class:`FakeRoom` does what ``durasync.rooms.room.Room`` does for one node, without a store:
it dedupes by id and sequences (:class:`~durasync.rooms.core.Sequencer`), plans resumes
(:func:`~durasync.rooms.core.plan_resume`), folds the graph, caches the checksum per
serverSeq, acks the sender and broadcasts to the others. Frames written by either side wait in
a per-link queue until a test delivers them; ``cut()`` loses what is in flight, like a TCP
reset.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from durasync.crdt import Message, Replica, Snapshot
from durasync.crdt.canonical import digest
from durasync.protocol.room_client import ClientRoomEvent, ClientRoomSession
from durasync.protocol.room_frames import (
    AckFrame,
    BroadcastFrame,
    Format,
    PresenceFrame,
    ServerFrame,
    StateFrame,
    decode_server_frame,
    encode_frame,
)
from durasync.protocol.room_server import (
    Active,
    Close,
    Commit,
    PresenceSet,
    RoomRules,
    ServerRoomSession,
    StateWanted,
    parse_join,
)
from durasync.rooms.core import CounterCeiling, DedupeWindow, Sequencer, plan_resume

ROOM = "board"


class FakeRoom:
    """One room on one node, in memory (a :class:`~durasync.protocol.room_server.RoomView`)."""

    def __init__(self, epoch: str = "E1") -> None:
        self.epoch = epoch
        self.failed = False
        self.sequencer = Sequencer(0, DedupeWindow(10_000))
        self.counters = CounterCeiling()
        self.replica = Replica("server")
        #: Every sequenced message, serverSeq = index + 1.
        self.journal: list[Message] = []
        #: The snapshot a full state starts from, and the serverSeq it folds up to.
        self.snapshot = Snapshot()
        self.snapshot_seq = 0
        self.checksums_built = 0
        self._checksum: tuple[int, str] | None = None

    @property
    def last_seq(self) -> int:
        return self.sequencer.last_seq

    @property
    def counter_high(self) -> int:
        return self.counters.high

    def sync_status(self, *, compute: bool) -> tuple[str | None, int, int]:
        seq = self.last_seq
        if self._checksum is not None and self._checksum[0] == seq:
            return self._checksum[1], seq, 0
        if not compute:
            return None, seq, 0
        text = self.replica.dump(live=True)
        self.checksums_built += 1
        self._checksum = (seq, digest(text))
        return self._checksum[1], seq, len(text)

    def sequence(self, msg: Message) -> tuple[int, bool]:
        """``(serverSeq, duplicate)`` of ``msg`` after journaling it (or recognising it)."""
        plan = self.sequencer.plan([msg])
        if plan.duplicates:
            return plan.duplicates[0][1], True
        self.sequencer.commit(plan)
        seq = plan.accepted[0][1]
        msg.serverSeq = seq
        self.counters.note(msg)
        self.journal.append(msg)
        self.replica.receive(msg, seq, validate=False)
        return seq, False

    def trim(self, upto: int) -> None:
        """Snapshot the first ``upto`` messages and forget them (the resume window shrinks)."""
        rep = Replica("server")
        rep.receive_many(self.journal[:upto], [m.serverSeq for m in self.journal[:upto]])
        self.snapshot = rep.snapshot()
        self.snapshot_seq = upto

    def state(self, client: str, since: int | None, epoch: str | None) -> StateFrame:
        plan = plan_resume(
            since=since,
            epoch=epoch,
            room_epoch=self.epoch,
            first_available=self.snapshot_seq + 1,
            last_seq=self.last_seq,
        )
        if plan.kind == "recover":
            assert since is not None
            return StateFrame(
                snapshot=None,
                journal=self.journal[since:],
                serverSeq=self.last_seq,
                epoch=self.epoch,
                recovered=True,
            )
        snapshot = msgspec.structs.replace(self.snapshot, seen=self.sequencer.dedupe.ids_of(client))
        return StateFrame(
            snapshot=snapshot,
            journal=self.journal[self.snapshot_seq :],
            serverSeq=self.last_seq,
            epoch=self.epoch,
            recovered=False,
        )


class Link:
    """One member: a client core, its server session while connected, and the two queues."""

    def __init__(
        self,
        pair: RoomPair,
        client_id: str,
        *,
        fmt: Format,
        can_write: bool,
        url_client: str | None,
    ) -> None:
        self.pair = pair
        self.client = ClientRoomSession(client_id, fmt=fmt)
        self.can_write = can_write
        #: The ``client=`` of the URL when it differs from the core's id (a misbehaving peer).
        self.url_client = url_client
        self.server: ServerRoomSession | None = None
        self.to_server: deque[bytes | str] = deque()
        self.to_client: deque[bytes] = deque()
        self.events: list[ClientRoomEvent] = []
        self.closes: list[Close] = []
        #: Every frame the server sent this member, decoded.
        self.received: list[ServerFrame] = []

    @property
    def connected(self) -> bool:
        return self.server is not None

    # -- network ------------------------------------------------------------------------

    def connect(self) -> None:
        """Open a connection: the join URL is parsed, the state queued (not delivered)."""
        assert self.server is None
        params = self.client.join_params()
        if self.url_client is not None:
            params["client"] = self.url_client
        join = parse_join(ROOM, params)
        room = self.pair.room
        self.server = ServerRoomSession(
            join, room, can_write=self.can_write, rules=self.pair.rules, now=self.pair.now
        )
        self.send_frame(room.state(join.client, join.since, join.epoch))

    def cut(self) -> None:
        """TCP reset: everything in flight is lost; both sides notice."""
        self.to_server.clear()
        self.to_client.clear()
        self.server = None
        self.client.connection_lost()
        self.collect()

    def send_frame(self, frame: ServerFrame) -> None:
        """Queue a server frame for this member (in its format)."""
        assert self.server is not None
        self.to_client.append(encode_frame(frame, self.server.fmt))

    def send_raw(self, data: bytes | str) -> None:
        """Queue a client message that the client core did not write (a hostile peer)."""
        self.to_server.append(data)

    def collect(self) -> None:
        self.to_server.extend(self.client.data_to_send())
        self.events.extend(self.client.events_received())

    def deliver_to_server(self, n: int | None = None, *, duplicate: bool = False) -> None:
        self.collect()
        for _ in range(len(self.to_server) if n is None else n):
            data = self.to_server.popleft()
            for _ in range(2 if duplicate else 1):
                if self.server is None:
                    return
                self.server.receive_data(data, self.pair.now)
                self.pair.act(self)

    def deliver_to_client(self, n: int | None = None, *, duplicate: bool = False) -> None:
        for _ in range(len(self.to_client) if n is None else n):
            data = self.to_client.popleft()
            self.received.append(decode_server_frame(self._as_sent(data)))
            for _ in range(2 if duplicate else 1):
                self.client.receive_data(self._as_sent(data), self.pair.now)
        self.collect()

    def drop_to_client(self, n: int = 1) -> None:
        for _ in range(n):
            self.to_client.popleft()

    def _binary(self) -> bool:
        return self.client.fmt == "msgpack"

    def _as_sent(self, data: bytes) -> bytes | str:
        # JSON frames travel as text messages.
        return data if self._binary() else data.decode()

    # -- views --------------------------------------------------------------------------

    def events_of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


class RoomPair:
    """Members of one :class:`FakeRoom` (the name stays from h11's two-endpoint harness)."""

    def __init__(self, rules: RoomRules | None = None, *, epoch: str = "E1") -> None:
        self.rules = rules or RoomRules()
        self.room = FakeRoom(epoch)
        self.links: list[Link] = []
        self.presence: dict[str, Any] = {}
        #: Wall-clock seconds, as the client cores expect (message ts = now * 1000).
        self.now = 1_700_000_000.0

    def add(
        self,
        client_id: str,
        *,
        fmt: Format = "msgpack",
        can_write: bool = True,
        url_client: str | None = None,
        connect: bool = True,
    ) -> Link:
        link = Link(self, client_id, fmt=fmt, can_write=can_write, url_client=url_client)
        self.links.append(link)
        if connect:
            link.connect()
        return link

    def act(self, link: Link) -> None:
        """Do what ``link``'s server session asks (what ``rooms/service.py`` does)."""
        session = link.server
        assert session is not None
        link.to_client.extend(session.data_to_send())
        for ev in session.events_received():
            if isinstance(ev, Active):
                continue
            if isinstance(ev, Commit):
                seq, duplicate = self.room.sequence(ev.msg)
                link.send_frame(AckFrame(ev.msg.id, seq))
                if not duplicate:
                    self._send_others(link, BroadcastFrame(ev.msg, seq))
            elif isinstance(ev, PresenceSet):
                self.presence[session.client] = ev.state
                self._send_others(
                    link, PresenceFrame(event="update", client=session.client, state=ev.state)
                )
            elif isinstance(ev, StateWanted):
                state = self.room.state(session.client, ev.since, ev.epoch)
                data = encode_frame(state, session.fmt)
                if ev.charge:
                    session.charge_answer(len(data), self.now)
                link.to_client.append(data)
            else:
                link.closes.append(ev)
                link.cut()
                return

    def _send_others(self, sender: Link, frame: ServerFrame) -> None:
        for other in self.links:
            if other is not sender and other.server is not None:
                other.send_frame(frame)

    def reset_room(self, epoch: str) -> None:
        """The room's store was replaced: a new, empty incarnation with a new epoch."""
        self.room = FakeRoom(epoch)

    # -- time and settling ----------------------------------------------------------------

    def advance(self, dt: float) -> None:
        self.now += dt
        for link in self.links:
            link.client.tick(self.now)
            link.collect()

    def settle(self, max_rounds: int = 200) -> None:
        """Deliver everything both ways, and let retries come due, until quiet."""
        for _ in range(max_rounds):
            for link in self.links:
                link.collect()
            if not any(link.to_server or link.to_client for link in self.links):
                deadlines = [
                    d for link in self.links if (d := link.client.next_deadline()) is not None
                ]
                if not deadlines:
                    return
                self.advance(max(0.0, min(deadlines) - self.now))
                continue
            for link in self.links:
                link.deliver_to_server()
                link.deliver_to_client()
        raise AssertionError("room pair did not settle")


def ids(msgs: list[Message]) -> list[str]:
    return [m.id for m in msgs]


def set_op(key: str, value: Any, path: str = "x") -> dict[str, Any]:
    return {"ot": "number.set", "key": key, "path": path, "value": value}


def insert_op(key: str) -> dict[str, Any]:
    return {"ot": "node.insert", "key": "", "path": "children", "value": {"key": key}}
