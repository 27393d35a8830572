"""Reserved subscription APIs (DS §9): pure rules and the ASGI service.

The service is driven in-process through httpx's ASGI transport; webhook
receivers are httpx mock transports, so no sockets are opened here. The
end-to-end path over real sockets is covered by the conformance suite.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from durasync.store.base import (
    AppendResult,
    CreateResult,
    LogStore,
    Producer,
    ReadResult,
    StreamConfig,
    StreamInfo,
)
from durasync.store.errors import NoSuchStream
from durasync.streams.errors import SubscriptionError
from durasync.streams.subscriptions import MAX_BODY, SubscriptionService
from durasync.streams.subscriptions_core import (
    AckItem,
    Subscription,
    WakeInput,
    WebhookSigner,
    b64url,
    compare_offsets,
    glob_literal_prefix,
    glob_match,
    make_token,
    parse_create,
    parse_streams,
    retry_delay,
    validate_webhook_url,
    verify_token,
)

# --------------------------------------------------------------------------
# Pure rules.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("events/*", "events/a", True),
        ("events/*", "events/a/b", False),
        ("events/*", "events", False),
        ("events/**", "events", True),
        ("events/**", "events/a/b/c", True),
        ("**/x", "x", True),
        ("**/x", "a/b/x", True),
        ("**/x", "a/b/y", False),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/b/d", False),
        ("/events/*/", "events/a", True),
        ("lit%2Aeral", "lit*eral", True),
        ("lit%2Aeral", "litXeral", False),
        ("**", "anything/at/all", True),
    ],
)
def test_glob_match(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


def test_glob_match_is_polynomial_on_hostile_patterns() -> None:
    pattern = "/".join(["**"] * 40) + "/nope"
    path = "/".join(["a"] * 200)
    assert glob_match(pattern, path) is False  # returns promptly (DP, no backtracking)


def test_glob_literal_prefix() -> None:
    assert glob_literal_prefix("events/*") == "events/"
    assert glob_literal_prefix("a/b/**/c") == "a/b/"
    assert glob_literal_prefix("*/x") == ""


def test_compare_offsets_puts_minus_one_first() -> None:
    assert compare_offsets("-1", "0000") < 0
    assert compare_offsets("0001", "-1") > 0
    assert compare_offsets("0001", "0002") < 0
    assert compare_offsets("0002", "0002") == 0


def _create(**fields: Any) -> bytes:
    return msgspec.json.encode(fields)


def test_parse_create_validates_and_normalizes() -> None:
    cfg = parse_create(_create(type="webhook", pattern="/events/*/", webhook={"url": "https://x"}))
    assert cfg.pattern == "events/*"
    assert cfg.lease_ttl_ms == 30_000
    assert cfg.webhook_url == "https://x"
    with pytest.raises(SubscriptionError, match="pattern or streams") as e:
        parse_create(_create(type="webhook", webhook={"url": "https://x"}))
    assert e.value.status == 400
    for ttl in (999, 600_001, 1.5, "1000"):
        with pytest.raises(SubscriptionError) as e:
            parse_create(_create(type="pull-wake", pattern="a", wake_stream="w", lease_ttl_ms=ttl))
        assert e.value.code == "INVALID_REQUEST"
    for bad in (
        b"[]",
        b"not json",
        _create(type="other", pattern="a"),
        _create(type="webhook", pattern="a"),
        _create(type="pull-wake", pattern="a"),
        _create(type="pull-wake", streams=[1], wake_stream="w"),
        _create(type="pull-wake", streams=["../x"], wake_stream="w"),
        _create(type="pull-wake", streams=["__ds/x"], wake_stream="w"),
    ):
        with pytest.raises(SubscriptionError) as e:
            parse_create(bad)
        assert e.value.code == "INVALID_REQUEST", bad


def test_config_hash_ignores_stream_order_but_not_config() -> None:
    a = parse_create(_create(type="pull-wake", streams=["a", "b"], wake_stream="w"))
    b = parse_create(_create(type="pull-wake", streams=["b", "a", "a"], wake_stream="w"))
    c = parse_create(
        _create(type="pull-wake", streams=["a", "b"], wake_stream="w", lease_ttl_ms=2000)
    )
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != c.config_hash()


def test_parse_streams() -> None:
    assert parse_streams(b'{"streams": ["/a/b/"]}') == ["a/b"]
    for bad in (b'{"streams": []}', b'{"streams": [""]}', b"{}", b'{"streams": "a"}'):
        with pytest.raises(SubscriptionError):
            parse_streams(bad)


@pytest.mark.parametrize(
    ("url", "loopback", "ok"),
    [
        ("https://hooks.example.com/x", False, True),
        ("https://93.184.216.34/x", False, True),
        ("http://hooks.example.com/x", False, False),
        ("http://10.0.0.1/hook", True, False),
        ("http://127.0.0.1:9/hook", True, True),
        ("http://localhost:9/hook", True, True),
        ("http://[::1]:9/hook", True, True),
        ("http://127.0.0.1:9/hook", False, False),
        ("https://10.1.2.3/x", True, False),
        ("https://192.168.1.1/x", False, False),
        ("https://169.254.169.254/latest", False, False),
        ("https://[fe80::1]/x", False, False),
        ("https://localhost/x", True, False),
        ("ftp://example.com/x", False, False),
        ("https://user:pw@example.com/x", False, False),
        ("https://example.com:99999/x", False, False),
        ("not a url", False, False),
    ],
)
def test_validate_webhook_url(url: str, loopback: bool, ok: bool) -> None:
    if ok:
        validate_webhook_url(url, allow_loopback_http=loopback)
    else:
        with pytest.raises(SubscriptionError) as e:
            validate_webhook_url(url, allow_loopback_http=loopback)
        assert e.value.code == "WEBHOOK_URL_REJECTED"
        assert e.value.status == 400


def _verify(signer_jwks: dict[str, Any], header: str, body: bytes) -> bool:
    m = re.fullmatch(r"t=(\d+),kid=([^,]+),ed25519=([A-Za-z0-9_-]+)", header)
    assert m is not None, header
    ts, kid, sig = m.groups()
    key = next(k for k in signer_jwks["keys"] if k["kid"] == kid)
    assert (key["kty"], key["crv"], key["alg"]) == ("OKP", "Ed25519", "EdDSA")
    pub = Ed25519PublicKey.from_public_bytes(_b64d(key["x"]))
    try:
        pub.verify(_b64d(sig), f"{ts}.".encode() + body)
    except InvalidSignature:
        return False
    return True


def _b64d(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_signer_signs_verifiably_and_kid_is_a_thumbprint() -> None:
    signer = WebhookSigner()
    header = signer.sign(b'{"a":1}', 1_700_000_000.9)
    assert header.startswith("t=1700000000,kid=ds_")
    assert _verify(signer.jwks(), header, b'{"a":1}')
    assert not _verify(signer.jwks(), header, b'{"a":2}')
    assert WebhookSigner().kid != signer.kid
    assert signer.kid == "ds_" + signer.kid[3:] and len(signer.kid) == 3 + 43
    assert b64url(b"\xff\xff") == "__8"


def test_retry_delay_schedule() -> None:
    assert retry_delay(1, 0.5) == pytest.approx(1.0)
    assert retry_delay(2, 0.5) == pytest.approx(2.0)
    assert retry_delay(7, 0.5) == pytest.approx(60.0)
    assert retry_delay(10_000, 0.5) == pytest.approx(60.0)
    assert retry_delay(1, 0.0) == pytest.approx(0.8)
    assert retry_delay(1, 0.999999) == pytest.approx(1.2, abs=1e-5)
    assert retry_delay(30, 0.0) == pytest.approx(48.0)


def test_tokens() -> None:
    key = b"k" * 32
    tok = make_token(key, "s1", 7, 1000.0)
    assert verify_token(key, tok, "s1", 1000.0) == 7
    for bad_key, sub, now, code in (
        (b"x" * 32, "s1", 1000.0, "TOKEN_INVALID"),
        (key, "s2", 1000.0, "TOKEN_INVALID"),
        (key, "s1", 1000.0 + 3601, "TOKEN_EXPIRED"),
    ):
        with pytest.raises(SubscriptionError) as e:
            verify_token(bad_key, tok, sub, now)
        assert e.value.code == code
        assert e.value.status == 401
    with pytest.raises(SubscriptionError):
        verify_token(key, "garbage", "s1", 1000.0)
    forged = jwt.encode({"sub": "subscription:s1", "gen": "7", "exp": 2000}, key, "HS256")
    with pytest.raises(SubscriptionError):
        verify_token(key, forged, "s1", 1000.0)


def _sub(kind: str = "pull-wake", lease: int = 1000) -> Subscription:
    extra: dict[str, Any] = (
        {"wake_stream": "w"} if kind == "pull-wake" else {"webhook": {"url": "https://h"}}
    )
    cfg = parse_create(_create(type=kind, pattern="e/*", lease_ttl_ms=lease, **extra))
    return Subscription(id="s", config=cfg, config_hash=cfg.config_hash(), created_at="t")


def _ids() -> Callable[[], str]:
    n = iter(range(1000))
    return lambda: f"w{next(n)}"


def test_state_machine_pull_wake_fencing_and_acks() -> None:
    sub = _sub()
    ids = _ids()
    assert sub.maybe_wake(0.0, ids) is None  # nothing pending
    with pytest.raises(SubscriptionError) as e:
        sub.claim("a", 0.0, ids)
    assert e.value.code == "NO_PENDING_WORK"
    assert sub.matches("e/x") and not sub.matches("f/x")
    sub.on_append("e/x", "0005")
    assert sub.links["e/x"].acked_offset == "-1" and sub.has_pending
    wake = sub.maybe_wake(0.0, ids)
    assert wake is not None and wake.generation == 1 and wake.snapshot == {"e/x": "0005"}
    assert sub.maybe_wake(0.0, ids) is None  # one outstanding wake at a time
    sub.claim("a", 0.0, ids)
    with pytest.raises(SubscriptionError) as e:
        sub.claim("b", 0.0, ids)
    assert e.value.code == "ALREADY_CLAIMED" and e.value.extra["current_holder"] == "a"
    req = WakeInput(wake_id=wake.wake_id, generation=1, acks=[AckItem(offset="0006", stream="e/x")])
    with pytest.raises(SubscriptionError) as e:
        sub.ack(1, req, 0.0)
    assert e.value.code == "INVALID_OFFSET"  # beyond the tail
    for acks in ([AckItem(offset="-1", stream="e/x")], [AckItem(offset="0001", stream="nope")]):
        with pytest.raises(SubscriptionError):
            sub.ack(1, WakeInput(wake_id=wake.wake_id, generation=1, acks=acks), 0.0)
    with pytest.raises(SubscriptionError) as e:  # stale token generation
        sub.ack(0, WakeInput(wake_id=wake.wake_id, generation=1), 0.0)
    assert e.value.code == "FENCED"
    with pytest.raises(SubscriptionError) as e:  # wrong wake id
        sub.ack(1, WakeInput(wake_id="other", generation=1), 0.0)
    assert e.value.code == "FENCED"
    sub.ack(1, WakeInput(wake_id=wake.wake_id, generation=1, acks=[AckItem("0003", "e/x")]), 0.5)
    assert sub.links["e/x"].acked_offset == "0003" and sub.lease_deadline == 1.5
    with pytest.raises(SubscriptionError) as e:  # regression
        sub.apply_acks([AckItem("0002", "e/x")])
    assert e.value.code == "INVALID_OFFSET"
    sub.ack(
        1,
        WakeInput(wake_id=wake.wake_id, generation=1, acks=[AckItem("0005", "e/x")], done=True),
        0.6,
    )
    assert sub.wake is None and not sub.has_pending
    with pytest.raises(SubscriptionError) as e:  # replay of the finished wake
        sub.ack(1, WakeInput(wake_id=wake.wake_id, generation=1, done=True), 0.7)
    assert e.value.code == "FENCED"


def test_state_machine_lease_expiry_fences_old_holder() -> None:
    sub = _sub(lease=1000)
    ids = _ids()
    sub.on_append("e/x", "0005")
    w1 = sub.claim("a", 10.0, ids)
    assert not sub.lease_expired(10.9)
    assert sub.lease_expired(11.0) and sub.wake is None
    w2 = sub.claim("b", 11.0, ids)
    assert w2.generation == w1.generation + 1
    with pytest.raises(SubscriptionError) as e:
        sub.check_fence(w1.generation, WakeInput(wake_id=w1.wake_id, generation=w1.generation))
    assert e.value.code == "FENCED"


def test_state_machine_webhook_auto_ack_only_for_current_wake() -> None:
    sub = _sub("webhook", lease=1000)
    ids = _ids()
    sub.on_append("e/x", "0002")
    w1 = sub.maybe_wake(0.0, ids)
    assert w1 is not None and sub.lease_deadline == 1.0
    with pytest.raises(SubscriptionError):
        sub.claim("a", 0.0, ids)  # webhooks have no claim
    sub.on_append("e/x", "0003")  # arrives after the snapshot
    assert not sub.auto_ack("stale")
    assert sub.auto_ack(w1.wake_id)
    assert sub.links["e/x"].acked_offset == "0002" and sub.has_pending
    w2 = sub.maybe_wake(0.0, ids)
    assert w2 is not None and w2.generation == 2


def test_links_explicit_and_glob() -> None:
    sub = _sub()
    sub.link("m/a", "explicit", "0001")
    assert sub.links["m/a"].acked_offset == "0001" and not sub.has_pending
    sub.link("m/a", "glob", "0002")
    assert sub.links["m/a"].link_type == "explicit"
    assert sub.links["m/a"].tail_offset == "0002"
    sub.unlink_explicit("m/a")
    assert sub.links["m/a"].link_type == "glob"
    sub.unlink_explicit("m/a")  # glob links stay until the stream goes
    assert "m/a" in sub.links
    sub.link("m/b", "explicit", "-1")
    sub.unlink_explicit("m/b")
    assert "m/b" not in sub.links


# --------------------------------------------------------------------------
# The service over ASGI.
# --------------------------------------------------------------------------


class FakeStore(LogStore):
    """Just enough of a store for the subscription service (head/list/append)."""

    name = "fake"

    def __init__(self) -> None:
        self.streams: dict[str, list[bytes]] = {}

    def tail(self, path: str) -> str:
        return f"{len(self.streams[path]):016d}"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(
        self,
        path: str,
        config: StreamConfig,
        *,
        initial: Sequence[bytes] = (),
        closed: bool = False,
        now: float | None = None,
    ) -> CreateResult:
        self.streams[path] = list(initial)
        return CreateResult(created=True, info=await self.head(path))

    async def append(
        self,
        path: str,
        messages: Sequence[bytes],
        *,
        content_type: str | None = None,
        producer: Producer | None = None,
        stream_seq: str | None = None,
        close: bool = False,
        now: float | None = None,
    ) -> AppendResult:
        if path not in self.streams:
            raise NoSuchStream(path)
        self.streams[path].extend(messages)
        return AppendResult(status="appended", offsets=[], tail=self.tail(path), closed=False)

    async def append_at(
        self,
        path: str,
        offset: str,
        messages: Sequence[bytes],
        *,
        close: bool = False,
        now: float | None = None,
    ) -> AppendResult:
        raise NotImplementedError

    async def read(
        self,
        path: str,
        offset: str = "-1",
        *,
        max_bytes: int = 1 << 20,
        max_messages: int = 10_000,
        now: float | None = None,
    ) -> ReadResult:
        raise NotImplementedError

    async def wait_for(self, path: str, offset: str, timeout: float) -> bool:  # noqa: ASYNC109
        raise NotImplementedError

    async def head(self, path: str, *, now: float | None = None) -> StreamInfo:
        if path not in self.streams:
            raise NoSuchStream(path)
        return StreamInfo(path=path, config=StreamConfig(), tail=self.tail(path), start=f"{0:016d}")

    async def delete(self, path: str) -> None:
        del self.streams[path]

    async def list_streams(self, prefix: str = "", *, limit: int = 1000) -> list[StreamInfo]:
        return [await self.head(p) for p in sorted(self.streams) if p.startswith(prefix)][:limit]

    async def trim(self, path: str, below: str) -> int:
        raise NotImplementedError


class Receiver:
    """A webhook receiver behind an httpx mock transport."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.replies: list[httpx.Response] = []
        self.arrived = asyncio.Event()

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.arrived.set()
        if self.replies:
            return self.replies.pop(0)
        return httpx.Response(200, json={})

    async def wait(self, n: int, limit: float = 5.0) -> httpx.Request:
        async with asyncio.timeout(limit):
            while len(self.requests) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests[n - 1]


BASE = "http://127.0.0.1:4437"
HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
async def env() -> AsyncIterator[
    tuple[SubscriptionService, FakeStore, Receiver, httpx.AsyncClient]
]:
    store = FakeStore()
    receiver = Receiver()
    svc = SubscriptionService(
        store, transport=httpx.MockTransport(receiver.handler), rand=lambda: 0.0
    )
    await svc.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=svc), base_url=BASE) as client:
        yield svc, store, receiver, client
    await svc.aclose()


def _url(sub_id: str, rest: str = "") -> str:
    return f"/v1/stream/__ds/subscriptions/{sub_id}{rest}"


async def test_create_confirm_conflict_get_delete(env: Any) -> None:
    svc, _store, _rx, client = env
    body = {
        "type": "webhook",
        "pattern": "events/*",
        "webhook": {"url": HOOK},
        "lease_ttl_ms": 1000,
    }
    r = await client.put(_url("s1"), json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["webhook"]["signing"]["jwks_url"] == f"{BASE}/v1/stream/__ds/jwks.json"
    assert created["webhook"]["signing"]["kid"].startswith("ds_")
    assert "webhook_secret" not in created
    assert (await client.put(_url("s1"), json=body)).status_code == 200
    r = await client.put(_url("s1"), json={**body, "lease_ttl_ms": 2000})
    assert r.status_code == 409 and r.json()["error"]["code"] == "SUBSCRIPTION_ALREADY_EXISTS"
    r = await client.get(_url("s1"))
    assert r.status_code == 200 and r.json()["id"] == "s1" and r.json()["type"] == "webhook"
    jwks = await client.get("/v1/stream/__ds/jwks.json")
    assert jwks.headers["content-type"].startswith("application/jwk-set+json")
    assert jwks.json()["keys"][0]["kid"] == created["webhook"]["signing"]["kid"]
    assert (await client.delete(_url("s1"))).status_code == 204
    r = await client.get(_url("s1"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "SUBSCRIPTION_NOT_FOUND"
    assert svc._subs == {}


async def test_bad_requests_get_4xx(env: Any) -> None:
    _svc, _store, _rx, client = env
    r = await client.put(
        _url("s"),
        json={"type": "webhook", "pattern": "a/*", "webhook": {"url": "http://10.0.0.1/h"}},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "WEBHOOK_URL_REJECTED"
    r = await client.put(_url("s"), content=b"{nope")
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_REQUEST"
    r = await client.put(_url("s"), content=b"x" * (MAX_BODY + 1))
    assert r.status_code == 413
    assert (await client.post(_url("s"))).status_code == 405
    assert (await client.get("/v1/stream/__ds/other")).status_code == 404
    assert (await client.get("/v1/stream/__ds")).status_code == 404
    assert (await client.get(_url("s", "/nope"))).status_code == 404
    assert (await client.post("/v1/stream/__ds/jwks.json")).status_code == 405
    r = await client.post(_url("missing", "/claim"), json={"worker": "w"})
    assert r.status_code == 404
    await client.put(_url("p"), json={"type": "pull-wake", "pattern": "a/*", "wake_stream": "w"})
    r = await client.post(_url("p", "/ack"), json={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "TOKEN_INVALID"
    r = await client.post(_url("p", "/ack"), json={}, headers={"authorization": "Bearer x.y.z"})
    assert r.status_code == 401
    r = await client.post(_url("p", "/claim"), json={"worker": ""})
    assert r.status_code == 400
    r = await client.post(_url("p", "/claim"), json={"worker": "w"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "NO_PENDING_WORK"
    r = await client.post(_url("p", "/callback"), json={}, headers={"authorization": "Bearer x"})
    assert r.status_code == 400  # callback is for webhooks


async def test_http_webhook_to_loopback_needs_loopback_server() -> None:
    svc = SubscriptionService(FakeStore(), allow_loopback_webhooks=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=svc), base_url=BASE) as client:
        r = await client.put(
            _url("s"), json={"type": "webhook", "pattern": "a/*", "webhook": {"url": HOOK}}
        )
    assert r.status_code == 400 and r.json()["error"]["code"] == "WEBHOOK_URL_REJECTED"
    await svc.aclose()


async def test_webhook_delivery_signed_and_done_auto_acks(env: Any) -> None:
    svc, _store, rx, client = env
    rx.replies.append(httpx.Response(200, json={"done": True}))
    r = await client.put(
        _url("s"), json={"type": "webhook", "pattern": "events/*", "webhook": {"url": HOOK}}
    )
    assert r.status_code == 201
    await svc.notify_append("other/x", "0000000000000001")  # not matched
    await svc.notify_append("events/a", "0000000000000003")
    req = await rx.wait(1)
    body = msgspec.json.decode(req.content)
    assert _verify(svc.signer.jwks(), req.headers["webhook-signature"], req.content)
    assert body["subscription_id"] == "s" and body["generation"] == 1
    assert body["callback_url"] == f"{BASE}/v1/stream/__ds/subscriptions/s/callback"
    assert body["streams"] == [
        {
            "path": "events/a",
            "link_type": "glob",
            "acked_offset": "-1",
            "tail_offset": "0000000000000003",
            "has_pending": True,
        }
    ]
    async with asyncio.timeout(5):
        while True:
            streams = (await client.get(_url("s"))).json()["streams"]
            if streams[0]["acked_offset"] == "0000000000000003":
                break
            await asyncio.sleep(0.01)
    # A later append wakes again with a new generation.
    await svc.notify_append("events/a", "0000000000000004")
    body2 = msgspec.json.decode((await rx.wait(2)).content)
    assert body2["generation"] == 2 and body2["wake_id"] != body["wake_id"]


async def test_webhook_callback_acks_then_fences(env: Any) -> None:
    svc, _store, rx, client = env
    await client.put(
        _url("s"),
        json={
            "type": "webhook",
            "pattern": "events/*",
            "webhook": {"url": HOOK},
            "lease_ttl_ms": 5000,
        },
    )
    await svc.notify_append("events/a", "0000000000000002")
    body = msgspec.json.decode((await rx.wait(1)).content)
    auth = {"authorization": f"Bearer {body['callback_token']}"}
    ack = {
        "wake_id": body["wake_id"],
        "generation": body["generation"],
        "acks": [{"stream": "events/a", "offset": "0000000000000002"}],
        "done": True,
    }
    r = await client.post(body["callback_url"], json=ack, headers=auth)
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}
    r = await client.post(body["callback_url"], json=ack, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "FENCED"


async def test_webhook_retries_after_failure(env: Any) -> None:
    svc, _store, rx, client = env
    rx.replies.append(httpx.Response(503))
    await client.put(
        _url("s"), json={"type": "webhook", "pattern": "e/*", "webhook": {"url": HOOK}}
    )
    await svc.notify_append("e/a", "0000000000000001")
    first = msgspec.json.decode((await rx.wait(1)).content)
    assert (await client.get(_url("s"))).json()["status"] == "failed"
    # rand=0 -> first retry after 0.8 s (1 s - 20 %).
    second = msgspec.json.decode((await rx.wait(2, limit=3)).content)
    assert second["wake_id"] == first["wake_id"]
    assert (await client.get(_url("s"))).json()["status"] == "active"


async def test_lease_expiry_starts_next_generation(env: Any) -> None:
    svc, _store, rx, client = env
    await client.put(
        _url("s"),
        json={"type": "webhook", "pattern": "e/*", "webhook": {"url": HOOK}, "lease_ttl_ms": 1000},
    )
    await svc.notify_append("e/a", "0000000000000001")
    first = msgspec.json.decode((await rx.wait(1)).content)
    second = msgspec.json.decode((await rx.wait(2, limit=4)).content)  # nobody acked
    assert second["generation"] == first["generation"] + 1
    auth = {"authorization": f"Bearer {first['callback_token']}"}
    stale = {"wake_id": first["wake_id"], "generation": first["generation"], "done": True}
    r = await client.post(first["callback_url"], json=stale, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "FENCED"


async def test_explicit_streams_add_remove(env: Any) -> None:
    _svc, store, _rx, client = env
    await store.create("manual/a", StreamConfig(), initial=[b"1", b"2"])
    r = await client.put(
        _url("s"), json={"type": "webhook", "streams": ["manual/a"], "webhook": {"url": HOOK}}
    )
    assert r.status_code == 201
    assert r.json()["streams"] == [
        {"path": "manual/a", "link_type": "explicit", "acked_offset": store.tail("manual/a")}
    ]
    assert (
        await client.post(_url("s", "/streams"), json={"streams": ["manual/b"]})
    ).status_code == 204
    assert (await client.post(_url("s", "/streams"), json={"streams": []})).status_code == 400
    paths = [s["path"] for s in (await client.get(_url("s"))).json()["streams"]]
    assert paths == ["manual/a", "manual/b"]
    assert (await client.delete(_url("s", "/streams/manual%2Fb"))).status_code == 204
    paths = [s["path"] for s in (await client.get(_url("s"))).json()["streams"]]
    assert paths == ["manual/a"]
    assert (await client.delete(_url("nope", "/streams/x"))).status_code == 404


async def test_pattern_links_existing_streams_at_their_tail(env: Any) -> None:
    _svc, store, _rx, client = env
    await store.create("events/old", StreamConfig(), initial=[b"1"])
    await store.create("other/x", StreamConfig(), initial=[b"1"])
    r = await client.put(
        _url("s"), json={"type": "pull-wake", "pattern": "events/*", "wake_stream": "w"}
    )
    assert r.json()["streams"] == [
        {"path": "events/old", "link_type": "glob", "acked_offset": store.tail("events/old")}
    ]


async def test_pull_wake_claim_ack_release(env: Any) -> None:
    svc, store, _rx, client = env
    await store.create("wake", StreamConfig(content_type="application/json"))
    r = await client.put(
        _url("p"),
        json={
            "type": "pull-wake",
            "pattern": "events/*",
            "wake_stream": "wake",
            "lease_ttl_ms": 5000,
        },
    )
    assert r.status_code == 201
    await svc.notify_append("events/a", "0000000000000001")
    for _ in range(500):  # bounded wait for the background write
        if store.streams["wake"]:
            break
        await asyncio.sleep(0.01)
    event = msgspec.json.decode(store.streams["wake"][0])
    assert event["type"] == "wake" and event["subscription_id"] == "p"
    assert event["stream"] == "events/a" and event["generation"] == 1

    claim = await client.post(_url("p", "/claim"), json={"worker": "w1"})
    assert claim.status_code == 200
    c = claim.json()
    assert c["lease_ttl_ms"] == 5000 and c["generation"] == 1
    busy = await client.post(_url("p", "/claim"), json={"worker": "w2"})
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "ALREADY_CLAIMED"
    assert busy.json()["error"]["current_holder"] == "w1"
    auth = {"authorization": f"Bearer {c['token']}"}
    heartbeat = {"wake_id": c["wake_id"], "generation": 1}
    r = await client.post(_url("p", "/ack"), json=heartbeat, headers=auth)
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}
    # Work arriving during the lease is picked up by the next wake at done.
    await svc.notify_append("events/a", "0000000000000002")
    done = {
        **heartbeat,
        "acks": [{"stream": "events/a", "offset": "0000000000000001"}],
        "done": True,
    }
    r = await client.post(_url("p", "/ack"), json=done, headers=auth)
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": True}
    c2 = (await client.post(_url("p", "/claim"), json={"worker": "w2"})).json()
    assert c2["generation"] == 2
    r = await client.post(
        _url("p", "/release"),
        json={"wake_id": c["wake_id"], "generation": 1},
        headers={"authorization": f"Bearer {c2['token']}"},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "FENCED"
    r = await client.post(
        _url("p", "/release"),
        json={"wake_id": c2["wake_id"], "generation": 2},
        headers={"authorization": f"Bearer {c2['token']}"},
    )
    assert r.status_code == 204
    # Released with work still pending: a new wake is ready to claim.
    c3 = await client.post(_url("p", "/claim"), json={"worker": "w3"})
    assert c3.status_code == 200 and c3.json()["generation"] == 3


async def test_notify_delete_unlinks(env: Any) -> None:
    svc, _store, _rx, client = env
    await client.put(_url("p"), json={"type": "pull-wake", "pattern": "e/*", "wake_stream": "w"})
    await svc.notify_append("e/a", "0000000000000001")
    assert [s["path"] for s in (await client.get(_url("p"))).json()["streams"]] == ["e/a"]
    await svc.notify_delete("e/a")
    assert (await client.get(_url("p"))).json()["streams"] == []


async def test_delivery_queue_is_bounded() -> None:
    never = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await never.wait()
        return httpx.Response(200)

    svc = SubscriptionService(
        FakeStore(), transport=httpx.MockTransport(slow), delivery_workers=1, max_queue=2
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=svc), base_url=BASE) as client:
        for i in range(6):
            await client.put(
                _url(f"s{i}"), json={"type": "webhook", "pattern": "e/*", "webhook": {"url": HOOK}}
            )
        await svc.notify_append("e/a", "0000000000000001")  # six wakes, queue of two
    assert svc._queue.qsize() <= 2
    await svc.aclose()


async def test_wants_appends_follows_the_subscriptions(env: Any) -> None:
    # The streams layer skips notify_append while this is False, so it must
    # turn True as soon as a subscription exists and False once closed.
    svc, _store, _rx, client = env
    assert svc.wants_appends() is False
    r = await client.put(
        _url("s"), json={"type": "webhook", "pattern": "events/*", "webhook": {"url": HOOK}}
    )
    assert r.status_code == 201
    assert svc.wants_appends() is True
    await svc.aclose()
    assert svc.wants_appends() is False
