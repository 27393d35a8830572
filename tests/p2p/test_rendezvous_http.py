"""The rendezvous API on a real server (uvicorn on loopback, real HTTP)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import jwt
import pytest

from durasync.namespaces import is_reserved
from durasync.p2p.client import RendezvousClient, RendezvousError
from durasync.p2p.identity import Identity
from durasync.p2p.rendezvous import RendezvousSettings
from durasync.p2p.server import INDEX_PREFIX, USER_PREFIX
from durasync.store import EmbeddedStore, MemoryStore
from helpers import eventually, start_server

from .conftest import client, serve

FQN = "com.example.chat@1.0.0"
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"


async def claim_publish(c: RendezvousClient, name: str = "alice", offers: int = 1, **kw):
    await c.claim(name)
    return await c.publish(name, FQN, [f"{SDP}a=offer:{i}\r\n" for i in range(offers)], **kw)


async def test_claim_publish_discover_by_name_and_uuid(rv, identity) -> None:
    url, _, _ = rv
    async with client(url, identity) as owner, client(url) as anyone:
        assert (await anyone.user("alice"))["available"] is True
        pub = await claim_publish(owner, public=True, metadata={"room": "lab"})
        info = await anyone.user("alice")
        assert info["available"] is False and info["public_key"] == identity.public_key
        by_name = await anyone.discover(username="alice", fqn=FQN)
        by_uuid = await anyone.discover(uuid=pub.uuid)
        assert by_name.uuid == by_uuid.uuid == pub.uuid
        assert by_name.offer_id == pub.offer_ids[0] and by_name.metadata == {"room": "lab"}
        assert [s["fqn"] for s in await anyone.public_services("alice")] == [FQN]
        with pytest.raises(RendezvousError) as err:
            await anyone.discover(username="alice", fqn="com.example.none@1.0.0")
        assert err.value.status == 404


async def test_refresh_keeps_uuid_and_expiry_is_enforced(rv, identity) -> None:
    url, _, clock = rv
    async with client(url, identity) as owner, client(url) as anyone:
        pub = await claim_publish(owner, ttl=5)  # clamped up to 60 s
        assert pub.expires_at == pytest.approx(clock.now + 60)
        clock.now += 50
        expires = await owner.refresh(pub.uuid, ttl=10**9)  # clamped down to 24 h
        assert expires == pytest.approx(clock.now + 86400)
        assert (await anyone.discover(uuid=pub.uuid)).uuid == pub.uuid
        # republishing (a restarted host) keeps the UUID too
        again = await owner.publish("alice", FQN, [SDP])
        assert again.uuid == pub.uuid
        clock.now += 86401
        with pytest.raises(RendezvousError) as err:
            await anyone.discover(uuid=pub.uuid)
        assert err.value.status == 404


async def test_first_answer_wins_under_concurrency(rv, identity) -> None:
    url, _, _ = rv
    async with client(url, identity) as owner:
        pub = await claim_publish(owner, offers=1)
        oid = pub.offer_ids[0]
        clients = [RendezvousClient(url) for _ in range(8)]
        try:
            results = await asyncio.gather(
                *(c.answer(pub.uuid, oid, f"{SDP}a=answer:{i}\r\n") for i, c in enumerate(clients)),
                return_exceptions=True,
            )
        finally:
            for c in clients:
                await c.aclose()
        winners = [r for r in results if isinstance(r, str)]
        losers = [r for r in results if isinstance(r, RendezvousError)]
        assert len(winners) == 1 and len(losers) == 7
        assert {e.status for e in losers} == {409}
        # the answered offer left discovery at once
        found = await RendezvousClient(url).discover(uuid=pub.uuid)
        assert found.offer_id is None
        events = await owner.owner_events("alice", "-1")
        assert [a.offer_id for a in events.answers] == [oid]


async def test_answer_is_pushed_to_a_waiting_owner(rv, identity) -> None:
    url, _, _ = rv
    async with client(url, identity) as owner, client(url) as peer:
        pub = await claim_publish(owner)
        first = await owner.owner_events("alice", "-1")
        assert first.answers == []
        waiting = asyncio.create_task(owner.owner_events("alice", first.next, wait=20))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = time.monotonic()
        await peer.answer(pub.uuid, pub.offer_ids[0], SDP + "a=answer\r\n")
        events = await asyncio.wait_for(waiting, 10)
        assert [a.sdp for a in events.answers] == [SDP + "a=answer\r\n"]
        assert time.monotonic() - started < 10  # woken by the append, not by the 20 s wait


async def test_drain_ends_every_waiting_long_poll_at_once(rv, identity) -> None:
    """``app.state.begin_shutdown()`` ends the rendezvous long-polls and the streams' ones."""
    url, app, _ = rv
    async with client(url, identity) as owner, client(url) as peer:
        pub = await claim_publish(owner)
        oid = pub.offer_ids[0]
        token = await peer.answer(pub.uuid, oid, SDP)  # the pool is empty now
        since = (await owner.owner_events("alice", "-1")).next
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            await http.put("/v1/stream/drain", headers={"Content-Type": "text/plain"})
            waits = [
                owner.owner_events("alice", since, wait=30),
                peer.offerer_candidates(pub.uuid, oid, token, "-1", wait=30),
                peer.discover(uuid=pub.uuid, wait=30),
                http.get("/v1/stream/drain", params={"offset": "now", "live": "long-poll"}),
            ]
            tasks = [asyncio.create_task(w) for w in waits]
            rendezvous, streams = app.state.rendezvous, app.state.streams
            await eventually(lambda: (rendezvous.live_requests, streams.live_requests) == (3, 1))
            assert (await http.get("/healthz")).json()["live"] == 4
            app.state.begin_shutdown()
            events, (cands, _), found, poll = await asyncio.wait_for(asyncio.gather(*tasks), 10)
            assert events.answers == [] and events.candidates == []
            assert cands == [] and found.offer_id is None
            assert poll.status_code == 204
            # Later long-polls do not wait either.
            late = await asyncio.wait_for(owner.owner_events("alice", since, wait=30), 10)
            assert late.answers == []
            assert (await http.get("/healthz")).json()["live"] == 0


async def test_sigterm_ends_a_waiting_rendezvous_long_poll(identity) -> None:
    """``durasync serve`` drains the rendezvous on SIGTERM: the waiting owner gets its (empty)
    answer and the process exits 0, instead of the long-poll holding the graceful shutdown."""
    server = start_server("--port", "0", "--memory")
    try:
        async with (
            client(server.url, identity) as owner,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            await claim_publish(owner)
            since = (await owner.owner_events("alice", "-1")).next
            waiting = asyncio.create_task(owner.owner_events("alice", since, wait=30))
            for _ in range(500):
                if (await http.get("/healthz")).json()["live"] == 1:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the long-poll never started")
            code = await asyncio.to_thread(server.stop)
            assert code == 0, "".join(server.output[-20:])
            events = await asyncio.wait_for(waiting, 10)
            assert events.answers == [] and events.next == since
    finally:
        server.stop()


async def test_candidate_exchange_both_ways(rv, identity) -> None:
    url, _, _ = rv
    async with client(url, identity) as owner, client(url) as peer:
        pub = await claim_publish(owner)
        oid = pub.offer_ids[0]
        token = await peer.answer(pub.uuid, oid, SDP)
        await peer.add_answerer_candidates(
            pub.uuid, oid, token, ["candidate:1 1 udp 1 127.0.0.1 9 typ host"]
        )
        waiting = asyncio.create_task(peer.offerer_candidates(pub.uuid, oid, token, "-1", wait=20))
        await owner.add_offerer_candidates(
            pub.uuid, oid, ["candidate:2 1 udp 1 127.0.0.1 8 typ host"]
        )
        cands, nxt = await asyncio.wait_for(waiting, 10)
        assert cands == ["candidate:2 1 udp 1 127.0.0.1 8 typ host"]
        assert (await peer.offerer_candidates(pub.uuid, oid, token, nxt))[0] == []
        events = await owner.owner_events("alice", "-1")
        assert events.candidates == [(oid, "candidate:1 1 udp 1 127.0.0.1 9 typ host")]
        with pytest.raises(RendezvousError) as err:
            await peer.add_answerer_candidates(pub.uuid, oid, "wrong-token", ["c"])
        assert err.value.status == 403


async def test_refused_requests(rv, identity) -> None:
    url, _, clock = rv
    mallory = Identity.generate()
    async with client(url, identity) as owner, client(url, mallory) as other:
        pub = await claim_publish(owner)
        # another key cannot claim the name, refresh or delete the service
        for call in (other.claim("alice"), other.refresh(pub.uuid), other.unpublish(pub.uuid)):
            with pytest.raises(RendezvousError) as err:
                await call
            assert err.value.status in (401, 403, 409), err.value
        with pytest.raises(RendezvousError) as err:
            await other.publish("alice", FQN, [SDP])
        assert err.value.status == 401 and err.value.code == "BAD_SIGNATURE"
        assert (await RendezvousClient(url).discover(uuid=pub.uuid)).uuid == pub.uuid
        # oversize SDP, bad names, too many offers per request
        with pytest.raises(RendezvousError) as err:
            await owner.publish("alice", FQN, ["x" * (64 * 1024 + 1)])
        assert (err.value.status, err.value.code) == (413, "SDP_TOO_LARGE")
        with pytest.raises(RendezvousError) as err:
            await owner.publish("alice", "nodots@1.0.0", [SDP])
        assert (err.value.status, err.value.code) == (400, "BAD_FQN")
        with pytest.raises(RendezvousError) as err:
            await owner.add_offers(pub.uuid, [SDP] * 11)
        assert err.value.status == 413
        # stale timestamp (the server's clock moved 6 min ahead)
        clock.now += 360
        with pytest.raises(RendezvousError) as err:
            await owner.refresh(pub.uuid)
        assert (err.value.status, err.value.code) == (401, "STALE_TIMESTAMP")
        clock.now -= 360


async def test_replayed_request_and_missing_signature_are_refused(rv, identity) -> None:
    url, _, _ = rv
    async with client(url, identity) as owner:
        pub = await claim_publish(owner)
    path = f"/v1/rendezvous/services/{pub.uuid}/refresh"
    body = b"{}"
    headers = identity.sign_request("POST", path, body)
    async with httpx.AsyncClient(base_url=url) as http:
        first = await http.post(path, content=body, headers=headers)
        assert first.status_code == 200, first.text
        replay = await http.post(path, content=body, headers=headers)
        assert replay.status_code == 401 and replay.json()["error"]["code"] == "REPLAYED_NONCE"
        unsigned = await http.post(path, content=body)
        assert unsigned.status_code == 401
        tampered = await http.post(path, content=b'{"ttl": 99999}', headers=headers)
        assert tampered.status_code == 401 and tampered.json()["error"]["code"] == "BAD_SIGNATURE"
        bad_json = await http.put(
            "/v1/rendezvous/users/alice", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert bad_json.status_code == 400
        huge = await http.put("/v1/rendezvous/users/alice", content=b"x" * (1 << 21))
        assert huge.status_code == 413
        for depth, code in ((100_000, "BAD_JSON"), (20, "METADATA_TOO_DEEP")):
            deep = b'{"metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
            target = f"/v1/rendezvous/users/alice/services/{FQN}"
            r = await http.put(
                target, content=deep, headers=identity.sign_request("PUT", target, deep)
            )
            assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text


async def test_limits_per_user(identity) -> None:
    settings = RendezvousSettings(max_services_per_user=1, max_offers_per_user=2)
    async with serve(MemoryStore(), settings) as (url, _), client(url, identity) as owner:
        await claim_publish(owner, offers=2)
        with pytest.raises(RendezvousError) as err:
            await owner.publish("alice", "com.example.two@1.0.0", [SDP])
        assert (err.value.status, err.value.code) == (429, "TOO_MANY_SERVICES")


async def test_owner_feed_needs_the_owners_signature(rv, identity) -> None:
    url, _, _ = rv
    async with client(url, identity) as owner:
        await claim_publish(owner)
    async with httpx.AsyncClient(base_url=url) as http:
        r = await http.get("/v1/rendezvous/users/alice/events")
        assert r.status_code == 401
    async with client(url, Identity.generate()) as other:
        with pytest.raises(RendezvousError) as err:
            await other.owner_events("alice", "-1")
        assert err.value.status == 401


async def test_rendezvous_logs_are_not_public_streams(rv, identity) -> None:
    """The state lives under the reserved ``__rendezvous/`` namespace of the stream store."""
    url, app, _ = rv
    assert is_reserved(USER_PREFIX) and is_reserved(INDEX_PREFIX)
    async with client(url, identity) as owner:
        pub = await claim_publish(owner)
    store = app.state.store
    assert (await store.head("__rendezvous/u/alice")).message_count >= 2
    async with httpx.AsyncClient(base_url=url) as http:
        for path in ("__rendezvous/u/alice", f"__rendezvous/s/{pub.uuid}"):
            assert (await http.get(f"/v1/stream/{path}?offset=-1")).status_code == 404
            r = await http.post(
                f"/v1/stream/{path}", content=b"{}", headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 404
            assert (await http.delete(f"/v1/stream/{path}")).status_code == 404
    assert (await store.head("__rendezvous/u/alice")).message_count >= 2


async def test_jwt_rights_gate_the_rendezvous(identity) -> None:
    secret = "a-test-secret-that-is-32-bytes-long!"

    def token(**claims) -> str:
        return jwt.encode({"sub": "t", **claims}, secret, algorithm="HS256")

    async with serve(MemoryStore(), auth_secret=secret) as (url, _):
        writer = RendezvousClient(url, identity=identity, token=token(write=["rendezvous/alice"]))
        reader = RendezvousClient(url, token=token(read=["rendezvous/alice"]))
        nobody = RendezvousClient(url, token=token(read=["rendezvous/bob"]))
        try:
            pub = await claim_publish(writer)
            assert (await reader.discover(uuid=pub.uuid)).offer_id is not None
            await reader.answer(pub.uuid, pub.offer_ids[0], SDP)
            with pytest.raises(RendezvousError) as err:
                await nobody.discover(uuid=pub.uuid)
            assert err.value.status == 403
            with pytest.raises(RendezvousError) as err:
                await RendezvousClient(
                    url, identity=identity, token=token(read=["rendezvous/alice"])
                ).refresh(pub.uuid)
            assert err.value.status == 403
            # Not even an admin token reads the rendezvous state through the streams API.
            admin = {"Authorization": f"Bearer {token(admin=True)}"}
            async with httpx.AsyncClient(base_url=url, headers=admin) as http:
                for path in (f"{USER_PREFIX}alice", f"{INDEX_PREFIX}{pub.uuid}"):
                    r = await http.get(f"/v1/stream/{path}", params={"offset": "-1"})
                    assert r.status_code == 404
                assert (await http.get("/v1/rendezvous/users/alice")).status_code == 200
        finally:
            for c in (writer, reader, nobody):
                await c.aclose()


async def test_state_survives_an_embedded_store_restart(tmp_path: Path, identity) -> None:
    data = tmp_path / "data"
    async with serve(EmbeddedStore(data)) as (url, _), client(url, identity) as owner:
        pub = await claim_publish(owner, public=True)
    async with serve(EmbeddedStore(data)) as (url, _), client(url) as anyone:
        info = await anyone.user("alice")
        assert info["available"] is False and info["public_key"] == identity.public_key
        found = await anyone.discover(username="alice", fqn=FQN)
        assert found.uuid == pub.uuid and found.offer_id == pub.offer_ids[0]
        with pytest.raises(RendezvousError) as err:
            await RendezvousClient(url, identity=Identity.generate()).claim("alice")
        assert err.value.status == 409


async def test_sweep_deletes_expired_users_and_compaction_keeps_state(identity) -> None:
    settings = RendezvousSettings(compact_after=8, sweep_interval=3600)
    store = MemoryStore()
    async with serve(store, settings) as (url, app), client(url, identity) as owner:
        svc = app.state.rendezvous
        pub = await claim_publish(owner)
        for _ in range(20):
            await owner.refresh(pub.uuid)
        info = await store.head("__rendezvous/u/alice")
        assert info.message_count < 20  # compacted: snapshot + trim
        svc._cache.clear()  # a cold node folds from the snapshot
        found = await RendezvousClient(url).discover(uuid=pub.uuid)
        assert found.uuid == pub.uuid and found.offer_id == pub.offer_ids[0]
        assert await svc.sweep() == 0
        svc.clock = lambda: time.time() + 366 * 86400
        assert await svc.sweep() >= 1
        assert await store.list_streams("__rendezvous/u/") == []
