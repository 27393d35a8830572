"""The rendezvous rules without I/O: a user's log folded record by record, time as an argument."""

from __future__ import annotations

import itertools

import pytest

from durasync.p2p.identity import Identity
from durasync.p2p.rendezvous import (
    Answer,
    Candidates,
    Claim,
    NewOffer,
    Publish,
    Record,
    Refresh,
    RendezvousSettings,
    RequestError,
    Snapshot,
    Unpublish,
    UserLog,
    check_fqn,
    check_username,
    decode_record,
    encode_record,
    service_uuid,
    signing_payload,
    token_hash,
    verify_signature,
)

T0 = 1_800_000_000.0
FQN = "com.example.chat@1.0.0"


class Log:
    """A user log with synthetic offsets; every record goes through encode/decode."""

    def __init__(self, settings: RendezvousSettings | None = None) -> None:
        self.ulog = UserLog("alice", settings or RendezvousSettings())
        self._n = itertools.count()

    def add(self, rec: Record):
        rec = decode_record(encode_record(rec))
        i = next(self._n)
        off, nxt = f"{i:016d}_{0:016d}", f"{i + 1:016d}_{0:016d}"
        return self.ulog.apply(rec, off, nxt)


_nonces = itertools.count()


def signed(cls, key: str, at: float, **kw):
    return cls(at=at, key=key, ts=int(at * 1000), nonce=f"nonce-{next(_nonces):012d}", **kw)


def offers(*ids: str) -> list[NewOffer]:
    return [NewOffer(i, f"v=0 sdp of {i}") for i in ids]


@pytest.fixture
def log() -> Log:
    lg = Log()
    assert lg.add(signed(Claim, "K1", T0, salt="s1")).ok
    return lg


def test_claim_is_one_key_per_name_and_reclaim_extends(log: Log) -> None:
    out = log.add(signed(Claim, "K2", T0 + 1, salt="s2"))
    assert (out.ok, out.status, out.code) == (False, 409, "USERNAME_TAKEN")
    assert log.add(signed(Claim, "K1", T0 + 100, salt="s3")).ok
    assert log.ulog.state is not None and log.ulog.state.salt == "s1"  # same owner: same salt
    view = log.ulog.claim_view(T0 + 100)
    assert view["expires_at"] == pytest.approx(T0 + 100 + 365 * 86400)


def test_expired_name_goes_to_a_new_owner_with_new_uuids(log: Log) -> None:
    log.add(signed(Publish, "K1", T0, fqn=FQN, ttl=60, offers=offers("a" * 32)))
    old_uuid = service_uuid("s1", FQN)
    later = T0 + 365 * 86400 + 1
    assert log.ulog.owner_key(later) is None
    assert log.add(signed(Claim, "K2", later, salt="s2")).ok
    assert log.ulog.owner_key(later) == "K2"
    log.add(signed(Publish, "K2", later, fqn=FQN, ttl=60))
    view = log.ulog.service_by_fqn(FQN, later)
    assert view is not None and view.uuid != old_uuid


def test_publish_discover_refresh_keeps_uuid_and_expiry(log: Log) -> None:
    assert log.add(
        signed(Publish, "K1", T0, fqn=FQN, ttl=60, public=True, offers=offers("a" * 32))
    ).ok
    view = log.ulog.service_by_fqn(FQN, T0 + 1)
    assert view is not None and view.uuid == service_uuid("s1", FQN)
    assert [o.id for o in log.ulog.open_offers(view.uuid, T0 + 1)] == ["a" * 32]
    assert [v.fqn for v in log.ulog.public_services(T0 + 1)] == [FQN]
    assert log.add(signed(Refresh, "K1", T0 + 50, uuid=view.uuid, ttl=60)).ok
    again = log.ulog.service(view.uuid, T0 + 100)
    assert again is not None and again.uuid == view.uuid and again.expires_at == T0 + 110
    # expiry: the service and its offers are gone after the TTL
    assert log.ulog.service(view.uuid, T0 + 110) is None
    assert log.ulog.open_offers(view.uuid, T0 + 111) == []
    out = log.add(signed(Refresh, "K1", T0 + 111, uuid=view.uuid, ttl=60))
    assert (out.ok, out.status) == (False, 404)
    assert log.ulog.state is not None and log.ulog.state.services == {}  # swept
    assert log.ulog.state.offers == {}
    # republish after expiry: the same UUID again
    assert log.add(signed(Publish, "K1", T0 + 200, fqn=FQN, ttl=60)).ok
    svc = log.ulog.service_by_fqn(FQN, T0 + 200)
    assert svc is not None and svc.uuid == view.uuid


def test_private_services_are_not_listed_but_found_by_name(log: Log) -> None:
    log.add(signed(Publish, "K1", T0, fqn=FQN, ttl=60))
    assert log.ulog.public_services(T0) == []
    assert log.ulog.service_by_fqn(FQN, T0) is not None


def test_republish_replaces_open_offers(log: Log) -> None:
    log.add(signed(Publish, "K1", T0, fqn=FQN, ttl=60, offers=offers("a" * 32, "b" * 32)))
    uid = service_uuid("s1", FQN)
    log.add(signed(Publish, "K1", T0 + 1, fqn=FQN, ttl=60, offers=offers("c" * 32)))
    assert [o.id for o in log.ulog.open_offers(uid, T0 + 1)] == ["c" * 32]


def test_first_answer_wins_and_leaves_discovery(log: Log) -> None:
    log.add(signed(Publish, "K1", T0, fqn=FQN, ttl=60, offers=offers("a" * 32, "b" * 32)))
    uid = service_uuid("s1", FQN)
    first = log.add(Answer(at=T0 + 1, uuid=uid, offer_id="a" * 32, sdp="ans1", token_hash="h1"))
    second = log.add(Answer(at=T0 + 1, uuid=uid, offer_id="a" * 32, sdp="ans2", token_hash="h2"))
    assert first.ok and (second.ok, second.status, second.code) == (False, 409, "ALREADY_ANSWERED")
    assert [o.id for o in log.ulog.open_offers(uid, T0 + 2)] == ["b" * 32]
    answers, _ = log.ulog.owner_feed("-1", T0 + 2)
    assert [(a.offer_id, a.sdp) for a in answers] == [("a" * 32, "ans1")]


def test_offer_is_answered_only_through_its_own_service(log: Log) -> None:
    log.add(signed(Publish, "K1", T0, fqn=FQN, ttl=60, offers=offers("a" * 32)))
    log.add(signed(Publish, "K1", T0, fqn="com.example.other@1.0.0", ttl=60))
    other = service_uuid("s1", "com.example.other@1.0.0")
    out = log.add(Answer(at=T0 + 1, uuid=other, offer_id="a" * 32, sdp="x", token_hash="h"))
    assert (out.ok, out.status) == (False, 404)


def test_candidates_both_ways(log: Log) -> None:
    log.add(signed(Publish, "K1", T0, fqn=FQN, ttl=60, offers=offers("a" * 32)))
    uid = service_uuid("s1", FQN)
    log.add(Answer(at=T0 + 1, uuid=uid, offer_id="a" * 32, sdp="ans", token_hash=token_hash("tok")))
    # answerer with the wrong token: refused
    bad = log.add(
        Candidates(at=T0 + 2, offer_id="a" * 32, role="answerer", candidates=["c0"], token_hash="x")
    )
    assert (bad.ok, bad.status) == (False, 403)
    assert log.add(
        Candidates(
            at=T0 + 2,
            offer_id="a" * 32,
            role="answerer",
            candidates=["ac1", "ac2"],
            token_hash=token_hash("tok"),
        )
    ).ok
    assert log.add(
        signed(Candidates, "K1", T0 + 3, offer_id="a" * 32, role="offerer", candidates=["oc1"])
    ).ok
    _, cands = log.ulog.owner_feed("-1", T0 + 3)
    assert [c.candidate for c in cands] == ["ac1", "ac2"]
    mine = log.ulog.answerer_feed("a" * 32, "tok", "-1")
    assert [c.candidate for c in mine] == ["oc1"]
    # 'since' filters what was already seen
    assert log.ulog.answerer_feed("a" * 32, "tok", log.ulog.offset) == []
    with pytest.raises(RequestError) as err:
        log.ulog.answerer_feed("a" * 32, "other", "-1")
    assert err.value.status == 403
    # the answered offer leaves after the grace
    assert log.add(signed(Refresh, "K1", T0 + 59, uuid=uid, ttl=600)).ok
    assert log.ulog.state is not None and "a" * 32 in log.ulog.state.offers
    assert log.add(signed(Refresh, "K1", T0 + 62, uuid=uid, ttl=600)).ok
    assert log.ulog.state is not None and "a" * 32 not in log.ulog.state.offers


def test_refused_wrong_key_stale_timestamp_replayed_nonce(log: Log) -> None:
    log.add(signed(Publish, "K1", T0, fqn=FQN, ttl=60))
    uid = service_uuid("s1", FQN)
    out = log.add(signed(Refresh, "K2", T0 + 1, uuid=uid, ttl=60))
    assert (out.ok, out.status, out.code) == (False, 403, "NOT_OWNER")
    out = log.add(signed(Unpublish, "K2", T0 + 1, uuid=uid))
    assert (out.ok, out.status, out.code) == (False, 403, "NOT_OWNER")
    assert log.ulog.service(uid, T0 + 1) is not None
    stale = Refresh(
        at=T0 + 1, key="K1", ts=int((T0 - 400) * 1000), nonce="n" * 16, uuid=uid, ttl=60
    )
    out = log.add(stale)
    assert (out.ok, out.code) == (False, "STALE_TIMESTAMP")
    rec = Refresh(at=T0 + 2, key="K1", ts=int((T0 + 2) * 1000), nonce="r" * 16, uuid=uid, ttl=60)
    assert log.add(rec).ok
    again = Refresh(at=T0 + 3, key="K1", ts=int((T0 + 2) * 1000), nonce="r" * 16, uuid=uid, ttl=60)
    out = log.add(again)
    assert (out.ok, out.status, out.code) == (False, 401, "REPLAYED_NONCE")


def test_nonces_are_bounded_per_user_and_expire_with_the_window() -> None:
    lg = Log(RendezvousSettings(max_nonces_per_user=3))
    assert lg.add(signed(Claim, "K1", T0, salt="s")).ok
    for i in range(2):
        assert lg.add(signed(Claim, "K1", T0 + i, salt="s")).ok
    out = lg.add(signed(Claim, "K1", T0 + 3, salt="s"))
    assert (out.ok, out.status) == (False, 429)
    assert lg.add(signed(Claim, "K1", T0 + 301, salt="s")).ok  # old ones left the window
    assert lg.ulog.state is not None and len(lg.ulog.state.nonces) <= 3


def test_limits_services_and_offers_per_user() -> None:
    lg = Log(RendezvousSettings(max_services_per_user=2, max_offers_per_user=3))
    lg.add(signed(Claim, "K1", T0, salt="s"))
    assert lg.add(signed(Publish, "K1", T0, fqn="a.b@1.0.0", ttl=60, offers=offers("1" * 32))).ok
    assert lg.add(signed(Publish, "K1", T0, fqn="a.c@1.0.0", ttl=60)).ok
    out = lg.add(signed(Publish, "K1", T0, fqn="a.d@1.0.0", ttl=60))
    assert (out.ok, out.code) == (False, "TOO_MANY_SERVICES")
    out = lg.add(
        signed(
            Publish, "K1", T0, fqn="a.c@1.0.0", ttl=60, offers=offers("2" * 32, "3" * 32, "4" * 32)
        )
    )
    assert (out.ok, out.code) == (False, "TOO_MANY_OFFERS")


def test_snapshot_start_equals_full_fold(log: Log) -> None:
    log.add(signed(Publish, "K1", T0, fqn=FQN, ttl=60, offers=offers("a" * 32)))
    snap = Snapshot(at=T0 + 1, as_of=log.ulog.offset, state=log.ulog.state)
    cold = UserLog("alice", RendezvousSettings())
    cold.start_from(decode_record(encode_record(snap)))  # type: ignore[arg-type]
    assert cold.state == log.ulog.state
    assert cold.state is not log.ulog.state


def test_syntax_checks() -> None:
    for good in ("abc", "a-b.c9", "x" * 32):
        assert check_username(good) == good
    for bad in ("ab", "-abc", "abc-", "ABC", "a b c", "x" * 33, "a/bc"):
        with pytest.raises(RequestError):
            check_username(bad)
    for good in ("com.example.chat@1.0.0", "a.b@0.1.2-rc.1"):
        assert check_fqn(good) == good
    for bad in (
        "chat@1.0.0",
        "com.example.chat",
        "com.example.chat@1.0",
        "Com.x@1.0.0",
        "a.b@01.0.0",
    ):
        with pytest.raises(RequestError) as err:
            check_fqn(bad)
        assert err.value.status == 400


def test_signature_covers_method_target_body_time_and_nonce() -> None:
    ident = Identity.generate()
    payload = signing_payload("POST", "/v1/x?y=1", b"{}", 123, "n" * 16)
    sig = ident.sign(payload)
    assert verify_signature(ident.public_key, sig, payload)
    for other in (
        signing_payload("PUT", "/v1/x?y=1", b"{}", 123, "n" * 16),
        signing_payload("POST", "/v1/x?y=2", b"{}", 123, "n" * 16),
        signing_payload("POST", "/v1/x?y=1", b"{ }", 123, "n" * 16),
        signing_payload("POST", "/v1/x?y=1", b"{}", 124, "n" * 16),
        signing_payload("POST", "/v1/x?y=1", b"{}", 123, "m" * 16),
    ):
        assert not verify_signature(ident.public_key, sig, other)
    assert not verify_signature(Identity.generate().public_key, sig, payload)
    assert not verify_signature("not base64!", sig, payload)
