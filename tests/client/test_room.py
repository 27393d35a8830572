"""RoomClient end to end against ``durasync serve`` (rooms over WebSocket)."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from durasync.client import ResilientOptions
from durasync.client.room import PresenceEvent, RoomChange, RoomClient
from durasync.protocol import BackoffPolicy
from faultproxy import FaultProxy
from helpers import eventually

from .servers import ServerProc

FAST = ResilientOptions(
    backoff=BackoffPolicy(initial_delay=0.05, max_delay=0.5, min_delay=0.01, stable_after=0.2),
    connect_timeout=5.0,
)
_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProc]:
    proc = ServerProc("durasync")
    try:
        yield proc
    finally:
        proc.stop()


def ws_url(http_url: str) -> str:
    return "ws://" + http_url.split("://", 1)[1]


def room_name(tag: str) -> str:
    return f"r-{tag}-{next(_names)}"


def root(room: RoomClient) -> None:
    room.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "root"}})
    room.commit()


def set_x(room: RoomClient, key: str, value: Any) -> None:
    room.edit({"ot": "number.set", "key": key, "path": "x", "value": value})
    room.commit()


async def journal_ids(http_url: str, room: str) -> list[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.get(f"{http_url}/v1/rooms/{room}/journal", params={"offset": "-1"})
        resp.raise_for_status()
        return [rec["msg"]["id"] for rec in json.loads(resp.content)]


async def test_two_clients_converge_with_events_presence_and_undo(server: ServerProc) -> None:
    name = room_name("converge")
    async with (
        RoomClient(ws_url(server.url), name, client_id="alice", options=FAST) as a,
        RoomClient(ws_url(server.url), name, client_id="bob", options=FAST, fmt="json") as b,
    ):
        changes: list[RoomChange] = []
        presence: list[PresenceEvent] = []
        b.on_change(changes.append)
        b.on_presence(presence.append)
        root(a)
        for i in range(20):
            set_x(a if i % 2 else b, "root", i)
        await a.synced()
        await b.synced()
        await eventually(
            lambda: a.replica.dump() == b.replica.dump() and b.server_seq == a.server_seq
        )
        assert a.graph.nodes["root"].props["x"] == 19
        assert await a.check() and await b.check()  # equal to the server's graph
        assert any("root" in c.keys and c.origin == "remote" for c in changes)
        # Undo/redo are messages too: both sides see them, with the node's key.
        changes.clear()
        assert a.undo() is not None
        await a.synced()
        await eventually(lambda: b.graph.nodes["root"].props["x"] != 19)
        assert a.replica.dump() == b.replica.dump()
        assert any("root" in c.keys for c in changes)
        assert a.redo() is not None
        await a.synced()
        await eventually(lambda: b.graph.nodes["root"].props.get("x") == 19)
        await a.set_presence({"cursor": [1, 2]})
        await eventually(lambda: b.presence.get("alice") == {"cursor": [1, 2]})
        assert presence and presence[-1].client == "alice"
        assert a.unsynced == 0 and b.unsynced == 0


async def test_edits_while_disconnected_sync_on_reconnect_without_duplicates(
    server: ServerProc,
) -> None:
    name = room_name("offline")
    async with FaultProxy("127.0.0.1", server.port, seed=3) as proxy:
        flaky = RoomClient(ws_url(f"http://127.0.0.1:{proxy.port}"), name, options=FAST)
        async with RoomClient(ws_url(server.url), name, options=FAST) as watcher:
            await flaky.join()
            root(flaky)
            await flaky.synced()
            # Sent right before the cut: it may or may not have reached the server.
            set_x(flaky, "root", 1)
            proxy.refuse_for(0.5)
            proxy.cut_all()
            await eventually(lambda: not flaky.connected)
            for v in (2, 3):
                set_x(flaky, "root", v)  # offline: optimistic, queued
            assert flaky.graph.nodes["root"].props["x"] == 3
            assert flaky.unsynced >= 2
            async with asyncio.timeout(15):
                await flaky.synced()
            await eventually(lambda: watcher.graph.nodes.get("root") is not None)
            await eventually(lambda: watcher.graph.nodes["root"].props.get("x") == 3)
            assert flaky.replica.dump() == watcher.replica.dump()
            ids = await journal_ids(server.url, name)
            assert len(ids) == len(set(ids)) == 4  # root + 3 sets, each exactly once
            assert flaky.reloads == 1  # the reconnect resumed (recovered: true)
            await flaky.close()


async def test_resume_after_server_sigkill_loses_nothing_acked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = ServerProc("durasync", data_dir=data)
    port = srv.port
    name = room_name("kill")
    try:
        a = RoomClient(ws_url(srv.url), name, client_id="a", options=FAST)
        b = RoomClient(ws_url(srv.url), name, client_id="b", options=FAST)
        await a.join()
        await b.join()
        root(a)
        await a.synced()
        acked: list[str] = []
        for i in range(30):
            c = a if i % 2 else b
            set_x(c, "root", i)
            c.edit({"ot": "number.set", "key": "root", "path": f"p{i}", "value": i})
            msg = c.commit()
            assert msg is not None
            acked.append(msg.id)
        await a.synced()
        await b.synced()
        # Unacknowledged at the kill: these must arrive after the restart (resent).
        set_x(a, "root", 100)
        set_x(b, "root", 200)
        srv.stop(signal.SIGKILL)
        await eventually(lambda: not a.connected and not b.connected)
        set_x(a, "root", 300)  # while the server is down
        srv = ServerProc("durasync", port=port, data_dir=data)
        async with asyncio.timeout(20):
            await a.synced()
            await b.synced()
        await eventually(
            lambda: a.replica.dump() == b.replica.dump() and a.server_seq == b.server_seq
        )
        ids = await journal_ids(srv.url, name)
        assert len(ids) == len(set(ids))  # no duplicate
        assert set(acked) <= set(ids)  # nothing acknowledged was lost
        assert a.graph.nodes["root"].props["p29"] == 29
        assert await a.check()
        assert a.reloads == 1 and b.reloads == 1  # same store epoch: resumed, no reload
        await a.close()
        await b.close()
    finally:
        srv.stop()


async def test_check_asked_while_the_server_is_down_is_answered_after_it_returns(
    tmp_path: Path,
) -> None:
    # check() used to wait forever when its sync-check went out while offline (dropped).
    data = tmp_path / "data"
    srv = ServerProc("durasync", data_dir=data)
    port = srv.port
    try:
        a = RoomClient(ws_url(srv.url), room_name("check"), client_id="a", options=FAST)
        await a.join()
        root(a)
        await a.synced()
        srv.stop(signal.SIGKILL)
        await eventually(lambda: not a.connected)
        check = asyncio.create_task(a.check())
        # The request is registered and handed to the pump (dropped: the server is down).
        await eventually(lambda: len(a._checks) == 1)
        assert not check.done()
        srv = ServerProc("durasync", port=port, data_dir=data)
        async with asyncio.timeout(20):
            assert await check
        await a.close()
    finally:
        srv.stop()


async def test_new_epoch_reloads_and_keeps_unacked_edits(tmp_path: Path) -> None:
    """A memory server restarted: new epoch -> ``recovered: false`` -> reload; our
    unacknowledged messages are resent into the new room and nothing is reused."""
    srv = ServerProc("durasync")
    port = srv.port
    name = room_name("epoch")
    try:
        a = RoomClient(ws_url(srv.url), name, options=FAST)
        await a.join()
        root(a)
        await a.synced()
        first_epoch = a.epoch
        srv.stop(signal.SIGKILL)
        await eventually(lambda: not a.connected)
        set_x(a, "root", 7)  # offline edit against the lost room
        srv = ServerProc("durasync", port=port)
        async with asyncio.timeout(20):
            await a.synced()
        assert a.epoch != first_epoch and a.reloads == 2
        # The new room has only what was resent: the set (root was lost with the memory store).
        ids = await journal_ids(srv.url, name)
        assert len(ids) == 1
        set_x(a, "root", 8)  # a fresh id, not a reused one
        await a.synced()
        assert len(set(await journal_ids(srv.url, name))) == 2
        await a.close()
    finally:
        srv.stop()


async def test_ids_stay_in_the_clients_namespace_and_a_refused_check_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server accepts only ids ``<client>:<n>`` (also for a client id with ``:``), and
    answers a sync-check it does not compute now (answer budget spent) with ``status: null``:
    ``check()`` asks again after a pause instead of waiting forever."""
    from durasync.protocol.room_client import ClientRoomSession
    from durasync.protocol.room_frames import SyncCheckFrame
    from durasync.rooms.room import RoomSettings
    from durasync.server import ServerSettings, create_app
    from durasync.store.memory import MemoryStore
    from rooms.inprocess import serving

    checks_sent = 0
    original = ClientRoomSession._send

    def counting(self: ClientRoomSession, frame: Any) -> None:
        nonlocal checks_sent
        if isinstance(frame, SyncCheckFrame) and self.connected:
            checks_sent += 1
        original(self, frame)

    monkeypatch.setattr(ClientRoomSession, "_send", counting)
    # One canonical JSON of this small room costs ~100 bytes: after one check the budget is
    # in debt for ~0.2 s, less than the client's pause.
    budget = RoomSettings(sync_bytes_per_second=500.0, sync_bytes_burst=1.0)
    app = create_app(MemoryStore(), ServerSettings(rooms=budget))
    async with serving(app) as url:
        errors: list[Any] = []
        async with RoomClient(ws_url(url), "ids", client_id="team:alice", options=FAST) as a:
            a.on_error(errors.append)
            root(a)
            set_x(a, "root", 1)
            await a.synced()
            assert a.unacked() == [] and errors == []
            assert await a.check()
            set_x(a, "root", 2)
            await a.synced()
            assert await a.check()  # refused once (status null), asked again, answered
            assert checks_sent >= 3  # two checks, and at least one of them asked again
            assert await journal_ids(url, "ids") == ["team:alice:1", "team:alice:2", "team:alice:3"]


async def test_undo_with_uncommitted_edits_sends_them_at_once(server: ServerProc) -> None:
    """undo() commits the edit buffer as its own message and sends it before the undo (no
    reconnect needed for the server and the others to get it)."""
    name = room_name("undo-buffer")
    async with (
        RoomClient(ws_url(server.url), name, client_id="ann", options=FAST) as a,
        RoomClient(ws_url(server.url), name, client_id="ben", options=FAST) as b,
    ):
        root(a)
        set_x(a, "root", 1)
        a.edit({"ot": "number.set", "key": "root", "path": "x", "value": 2})
        a.edit({"ot": "number.set", "key": "root", "path": "y", "value": 5})
        undo = a.undo()  # undoes the buffered edits, now message ann:3
        assert undo is not None and undo.ops[0].targetMsgId == "ann:3"
        await a.synced()
        assert await journal_ids(server.url, name) == ["ann:1", "ann:2", "ann:3", "ann:4"]
        await eventually(lambda: b.server_seq == 4)
        assert b.graph.nodes["root"].props["x"] == 1 and "y" not in b.graph.nodes["root"].props
        assert a.replica.dump() == b.replica.dump()
        assert a.redo() is not None
        await a.synced()
        await eventually(lambda: b.graph.nodes["root"].props.get("y") == 5)
