from __future__ import annotations

import random

import pytest

from durasync.protocol import (
    BufferFull,
    FrameCodec,
    LocalProtocolError,
    MessageReceived,
    PeerClosed,
    PeerError,
    RegistryFull,
    ReliableSession,
    RemoteProtocolError,
    Role,
    SessionLimits,
    SessionOpened,
    SessionRegistry,
)
from durasync.protocol.frames import Ack, Hello, Msg, Welcome

from .pair import Pair

ENCODINGS = ["json", "msgpack"]


@pytest.fixture(params=ENCODINGS)
def pair(request: pytest.FixtureRequest) -> Pair:
    return Pair(encoding=request.param)


def test_first_connection_opens_a_new_session(pair: Pair) -> None:
    pair.connect()
    assert pair.opened("client") == [SessionOpened("s1", False, 0)]
    assert pair.opened("server") == [SessionOpened("s1", False, 0)]
    assert pair.client.session_id == "s1"


def test_messages_get_consecutive_seqs_both_ways(pair: Pair) -> None:
    pair.connect()
    assert [pair.client.send_message(f"c{i}") for i in range(3)] == [1, 2, 3]
    assert pair.server is not None
    assert pair.server.send_message(b"\x00bin") == 1
    pair.settle()
    assert pair.server_got() == ["c0", "c1", "c2"]
    assert pair.client_got() == [b"\x00bin"]
    seqs = [e.seq for e in pair.server_events if isinstance(e, MessageReceived)]
    assert seqs == [1, 2, 3]


def test_acks_are_coalesced_by_count() -> None:
    p = Pair(limits=SessionLimits(ack_every=4, ack_interval=10))
    p.connect()
    for i in range(9):
        p.client.send_message(str(i))
    p.collect()
    p.deliver_to_server()
    acks = [f for f in map(p.client.codec.decode, p.to_client) if isinstance(f, Ack)]
    assert [a.seq for a in acks] == [4, 8]  # one ack per 4 messages, latest wins
    p.deliver_to_client()
    assert p.client.unacked == 1  # message 9 still waits for its ack


def test_acks_are_coalesced_by_time() -> None:
    p = Pair(limits=SessionLimits(ack_every=100, ack_interval=0.5))
    p.connect()
    p.client.send_message("a")
    p.collect()
    p.now = 10.0
    p.deliver_to_server()
    assert p.server is not None
    assert p.server.next_deadline() == 10.5
    p.advance(0.49)
    p.collect()
    assert not p.to_client
    p.advance(0.01)
    p.collect()
    assert [p.client.codec.decode(f) for f in p.to_client] == [Ack(seq=1)]
    assert p.server.next_deadline() is None
    p.deliver_to_client()
    assert p.client.unacked == 0


def test_duplicates_in_flight_are_dropped(pair: Pair) -> None:
    pair.connect()
    for i in range(5):
        pair.client.send_message(f"m{i}")
    pair.collect()
    pair.deliver_to_server(duplicate=True)
    assert pair.server_got() == [f"m{i}" for i in range(5)]
    assert pair.server is not None and pair.server.duplicates_dropped == 5


def test_reorder_within_a_connection_is_a_violation(pair: Pair) -> None:
    pair.connect()
    pair.client.send_message("a")
    pair.client.send_message("b")
    pair.collect()
    pair.to_server.rotate(1)  # b before a
    with pytest.raises(RemoteProtocolError) as ei:
        pair.deliver_to_server(1)
    assert ei.value.code == "seq_gap" and ei.value.close_code == 1002


def test_cut_then_resume_replays_only_unacked_in_order(pair: Pair) -> None:
    pair.connect()
    assert pair.server is not None
    for i in range(10):
        pair.client.send_message(f"c{i}")
        pair.server.send_message(f"s{i}")
    pair.collect()
    # Half of each direction arrives, then the connection dies.
    pair.deliver_to_server(5)
    pair.deliver_to_client(3)
    pair.cut()
    for i in range(10, 13):  # sent while disconnected: buffered, not emitted
        pair.client.send_message(f"c{i}")
        pair.server.send_message(f"s{i}")
    pair.collect()
    assert not pair.to_server and not pair.to_client
    pair.connect()
    assert pair.opened("client")[-1] == SessionOpened("s1", True, 8)  # 13 - 5 seen
    assert pair.opened("server")[-1] == SessionOpened("s1", True, 10)  # 13 - 3 seen
    pair.settle()
    assert pair.server_got() == [f"c{i}" for i in range(13)]
    assert pair.client_got() == [f"s{i}" for i in range(13)]
    assert pair.client.unacked == 0 and pair.server.unacked == 0
    assert len(pair.registry) == 1


def test_cut_after_delivery_before_ack_drops_duplicates(pair: Pair) -> None:
    pair.connect()
    for i in range(4):
        pair.client.send_message(i.to_bytes(1, "big"))
    pair.collect()
    pair.deliver_to_server()  # delivered...
    pair.to_client.clear()  # ...but the acks are lost
    pair.cut()
    assert pair.client.unacked == 4
    pair.connect()  # welcome.last_seen = 4: nothing to replay
    assert pair.opened("client")[-1].replayed == 0
    pair.settle()
    assert pair.server_got() == [bytes([i]) for i in range(4)]
    assert pair.client.unacked == 0


def test_replay_duplicates_arriving_late_are_dropped() -> None:
    """A replayed copy and a delayed original both arrive: delivered once."""
    p = Pair()
    p.connect()
    p.client.send_message("x")
    p.collect()
    stale = list(p.to_server)
    p.cut()
    p.connect()
    p.settle()
    assert p.server is not None
    for frame in stale:  # the old copy shows up after the replay
        p.server.receive_data(frame, p.now)
    p.collect()
    assert p.server_got() == ["x"]
    assert p.server.duplicates_dropped == 1


def test_server_lost_session_starts_fresh_and_reports(pair: Pair) -> None:
    pair.connect()
    pair.client.send_message("a")
    pair.settle()
    pair.client.send_message("b")  # never delivered
    pair.collect()
    pair.cut()
    # The server restarted: a brand-new registry with no sessions.
    fresh = Pair(encoding=pair.client.codec.encoding)
    fresh.client = pair.client
    fresh.registry._new_id = lambda: "s-new"
    fresh.connect()
    opened = fresh.opened("client")[-1]
    assert opened == SessionOpened("s-new", False, 1, previous_session="s1")
    fresh.settle()
    assert fresh.server_got() == ["b"]  # renumbered from 1, not lost
    assert fresh.client.last_sent == 1


def test_expired_session_is_not_resumed() -> None:
    p = Pair(resume_ttl=5)
    p.connect()
    p.cut()
    p.now += 5
    p.connect()
    assert p.opened("client")[-1].resumed is False
    assert p.client.session_id == "s2"
    assert len(p.registry) == 1


def test_replay_buffer_is_bounded() -> None:
    p = Pair(limits=SessionLimits(max_unacked_messages=3, max_unacked_bytes=100))
    p.connect()
    for i in range(3):
        p.client.send_message(str(i))
    assert not p.client.has_room("x")
    with pytest.raises(BufferFull) as ei:
        p.client.send_message("x")
    assert ei.value.reason == "replay"
    p.settle()  # acks free the window
    assert p.client.has_room("x")
    with pytest.raises(BufferFull) as ei:
        p.client.send_message("y" * 101)
    assert ei.value.reason == "too_large"


def test_ack_from_the_future_is_a_violation(pair: Pair) -> None:
    pair.connect()
    codec = pair.client.codec
    with pytest.raises(RemoteProtocolError) as ei:
        pair.client.receive_data(codec.encode(Ack(seq=1)), 0)
    assert ei.value.code == "ack_from_future"


def test_hello_claiming_unsent_messages_is_a_violation() -> None:
    p = Pair()
    p.connect()
    p.cut()
    codec = p.client.codec
    with pytest.raises(RemoteProtocolError):
        p.registry.open(codec.encode(Hello(session="s1", last_seen=7)), 0)


@pytest.mark.parametrize(
    "first",
    [Msg(seq=1, text="x"), Ack(seq=0), Welcome(session="z")],
)
def test_first_frame_must_be_hello(first: object) -> None:
    reg = SessionRegistry(new_id=lambda: "s")
    with pytest.raises(RemoteProtocolError):
        reg.open(FrameCodec().encode(first), 0)  # type: ignore[arg-type]


def test_unsupported_version_and_garbage_are_violations() -> None:
    reg = SessionRegistry(new_id=lambda: "s")
    with pytest.raises(RemoteProtocolError) as ei:
        reg.open(FrameCodec().encode(Hello(v=2)), 0)
    assert ei.value.code == "unsupported_version"
    junks: list[str | bytes] = ['{"t":"nope"}', "not json", '{"t":"msg","seq":-1,"text":"a"}']
    junks.append(b"\xc1")
    for junk in junks:
        with pytest.raises(RemoteProtocolError) as ei:
            reg.open(junk, 0)
        assert ei.value.code == "bad_frame"
    with pytest.raises(RemoteProtocolError):
        FrameCodec("msgpack").decode("text on msgpack")
    with pytest.raises(RemoteProtocolError):
        FrameCodec().decode('{"t":"msg","seq":1}')  # neither text nor data
    with pytest.raises(RemoteProtocolError):
        FrameCodec().decode('{"t":"msg","seq":1,"text":"a","data":"AA=="}')


def test_client_rejects_data_before_welcome() -> None:
    c = ReliableSession(Role.CLIENT)
    c.connection_made()
    with pytest.raises(RemoteProtocolError) as ei:
        c.receive_data(c.codec.encode(Msg(seq=1, text="x")), 0)
    assert ei.value.code == "unexpected_frame"


def test_client_rejects_resume_of_a_session_it_never_had() -> None:
    c = ReliableSession(Role.CLIENT)
    c.connection_made()
    with pytest.raises(RemoteProtocolError) as ei:
        c.receive_data(c.codec.encode(Welcome(session="zz", resumed=True)), 0)
    assert ei.value.code == "bad_resume"


def test_hello_mid_session_is_a_violation(pair: Pair) -> None:
    pair.connect()
    assert pair.server is not None
    with pytest.raises(RemoteProtocolError):
        pair.server.receive_data(pair.client.codec.encode(Hello()), 0)


def test_bye_ends_the_session_and_frees_the_registry(pair: Pair) -> None:
    pair.connect()
    pair.client.send_message("last")
    pair.client.send_bye()
    pair.settle()
    assert pair.server_got() == ["last"]
    assert any(isinstance(e, PeerClosed) for e in pair.server_events)
    assert pair.server is not None and pair.server.closed
    pair.cut()
    assert len(pair.registry) == 0
    with pytest.raises(LocalProtocolError):
        pair.client.send_message("after bye")


def test_error_frame_becomes_an_event(pair: Pair) -> None:
    pair.connect()
    assert pair.server is not None
    pair.server.send_error("busy", "try later", permanent=False)
    pair.settle()
    assert PeerError("busy", "try later", False) in pair.client_events


def test_registry_full_evicts_detached_then_refuses() -> None:
    ids = iter(["a", "b", "c", "d"])
    reg = SessionRegistry(new_id=lambda: next(ids), max_sessions=2)
    hello = FrameCodec().encode(Hello())
    a = reg.open(hello, 0)
    reg.open(hello, 0)
    reg.detach(a, 1)
    reg.open(hello, 2)  # evicts detached "a"
    assert reg.get("a") is None and len(reg) == 2
    with pytest.raises(RegistryFull):
        reg.open(hello, 3)


def test_superseding_attach_bumps_generation() -> None:
    p = Pair()
    p.connect()
    assert p.server is not None
    gen = p.server.generation
    # The client reconnects before the server noticed the old transport died.
    p.client.connection_lost()
    p.connected = False
    p.connect()
    assert p.server.generation == gen + 1
    assert p.opened("server")[-1].resumed is True


@pytest.mark.parametrize("seed", range(25))
def test_random_faults_never_lose_duplicate_or_reorder(seed: int) -> None:
    """Seeded chaos: random sends both ways, partial delivery, duplicated
    frames, held-back (delayed) frames, timers, and cuts; at the end both
    sides received exactly what the other sent, in order."""
    rng = random.Random(seed)
    p = Pair(
        encoding=rng.choice(ENCODINGS),
        limits=SessionLimits(max_unacked_messages=50, ack_every=rng.randint(1, 8)),
    )
    p.connect()
    sent_c: list[str] = []
    sent_s: list[str] = []
    for _step in range(300):
        op = rng.random()
        if op < 0.3:
            m = f"c{len(sent_c)}"
            if p.client.has_room(m):
                p.client.send_message(m)
                sent_c.append(m)
        elif op < 0.5 and p.server is not None:
            m = f"s{len(sent_s)}"
            if p.server.has_room(m):
                p.server.send_message(m)
                sent_s.append(m)
        elif op < 0.8 and p.connected:
            p.collect()
            p.deliver_to_server(rng.randint(0, len(p.to_server)), duplicate=rng.random() < 0.2)
            p.deliver_to_client(rng.randint(0, len(p.to_client)), duplicate=rng.random() < 0.2)
        elif op < 0.9:
            p.advance(rng.random())
            p.collect()
        elif p.connected:
            p.cut()
        else:
            p.connect()
    if not p.connected:
        p.connect()
    p.settle()
    assert p.server_got() == sent_c
    assert p.client_got() == sent_s
    assert p.client.unacked == 0
    assert p.server is not None and p.server.unacked == 0


def test_ping_is_answered_with_pong_and_touches_no_sequence(pair: Pair) -> None:
    """The heartbeat of peers without WebSocket pings (browsers): ping -> pong with its id."""
    from durasync.protocol.frames import Ping, Pong

    pair.connect()
    server = pair.server
    assert server is not None
    codec = FrameCodec(pair.registry.codec.encoding)
    server.receive_data(codec.encode(Ping(id=7)), 0.0)
    assert [codec.decode(f) for f in server.data_to_send()] == [Pong(id=7)]
    assert server.events_received() == []
    pair.client.receive_data(codec.encode(Pong(id=7)), 0.0)
    assert pair.client.events_received() == [] and pair.client.data_to_send() == []
    assert (server.last_received, server.last_sent) == (0, 0)
