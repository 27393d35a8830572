"""Property-based bad input: whatever a client sends, the answer is never a 5xx.

Hypothesis throws malformed headers, offsets, bodies, paths, JSON and
producer values at the ASGI app (one app per test, streams pre-created in
each content type). Only 2xx/3xx/4xx may come back, every 4xx carries the
JSON error body, and the server keeps serving valid requests afterwards.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durasync.server import ServerSettings, create_app
from durasync.store import MemoryStore
from durasync.streams.app import StreamSettings

S = "/v1/stream"
STREAMS = {"text": "text/plain", "json": "application/json", "bin": "application/octet-stream"}

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
numberish = st.one_of(
    header_text,
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.sampled_from(["0", "01", "+1", "1.0", "1e3", "-0", " 1", "9007199254740992", ""]),
)
offsets = st.one_of(
    header_text,
    st.sampled_from(
        [
            "-1",
            "now",
            "",
            "0000000000000000_0000000000000000",
            "0000000000000000_0000000000000001",
            "9999999999999999_9999999999999999",
            "0000000000000001_0000000000000000",
            "a,b",
            "%00",
        ]
    ),
)
json_bodies = st.one_of(
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[]", b"[[]]", b"[", b"{}", b"[1,]", b"\xff\xfe", b"  ", b"null"]),
)
paths = st.one_of(
    st.sampled_from(list(STREAMS)),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
    st.sampled_from(
        ["a/../b", "./x", "x//y", "__ds/nope", "__ds", "%2e%2e/x", "text/", "a" * 2000]
    ),
)
optional = st.one_of(st.none(), header_text)

requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]),
        "path": paths,
        "content_type": st.one_of(
            st.none(), header_text, st.sampled_from([*STREAMS.values(), "TEXT/PLAIN"])
        ),
        "body": json_bodies,
        "offset": st.one_of(st.none(), offsets),
        "live": st.one_of(st.none(), st.sampled_from(["long-poll", "sse", "", "x"])),
        "cursor": st.one_of(st.none(), numberish),
        "producer": st.one_of(
            st.none(),
            st.tuples(optional, st.one_of(st.none(), numberish), st.one_of(st.none(), numberish)),
        ),
        "seq": optional,
        "closed": st.one_of(st.none(), st.sampled_from(["true", "TRUE", "false", "", "yes"])),
        "ttl": st.one_of(st.none(), numberish),
        "expires": st.one_of(st.none(), header_text, st.just("2030-02-30T00:00:00Z")),
        "fork": st.one_of(
            st.none(),
            st.tuples(
                paths.map(lambda p: f"{S}/{p}"),
                st.one_of(st.none(), offsets),
                st.one_of(st.none(), numberish),
            ),
        ),
        "if_none_match": optional,
        "content_length_lie": st.booleans(),
    }
)


def build(req: dict[str, Any]) -> tuple[str, str, dict[str, str], dict[str, str], bytes]:
    headers: dict[str, str] = {}
    if req["content_type"] is not None:
        headers["content-type"] = req["content_type"]
    if req["producer"] is not None:
        for name, value in zip(
            ("producer-id", "producer-epoch", "producer-seq"), req["producer"], strict=True
        ):
            if value is not None:
                headers[name] = value
    for name, key in [
        ("stream-seq", "seq"),
        ("stream-closed", "closed"),
        ("stream-ttl", "ttl"),
        ("stream-expires-at", "expires"),
        ("if-none-match", "if_none_match"),
    ]:
        if req[key] is not None:
            headers[name] = req[key]
    if req["fork"] is not None:
        source, fork_offset, sub = req["fork"]
        headers["stream-forked-from"] = source
        if fork_offset is not None:
            headers["stream-fork-offset"] = fork_offset
        if sub is not None:
            headers["stream-fork-sub-offset"] = sub
    params: dict[str, str] = {}
    for key in ("offset", "live", "cursor"):
        if req[key] is not None:
            params[key] = req[key]
    return req["method"], f"{S}/{req['path']}", headers, params, req["body"]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(requests, min_size=1, max_size=4))
def test_no_request_gets_a_5xx(batch: list[dict[str, Any]]) -> None:
    asyncio.run(_run(batch))


async def _run(batch: list[dict[str, Any]]) -> None:
    settings_ = ServerSettings(
        streams=StreamSettings(long_poll_timeout=0.01, sse_max_duration=0.02, max_body_bytes=4096)
    )
    app = create_app(MemoryStore(), settings_)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True, client=("127.0.0.1", 9))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        for name, ctype in STREAMS.items():
            body = b"[1,2]" if ctype == "application/json" else b"seed"
            r = await client.put(f"{S}/{name}", headers={"content-type": ctype}, content=body)
            assert r.status_code == 201
        for req in batch:
            method, url, headers, params, body = build(req)
            send_body = body if method in ("PUT", "POST", "PATCH") else b""
            try:
                r = await client.request(
                    method, url, headers=headers, params=params, content=send_body
                )
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
                continue  # the client refused to build it; nothing reached the server
            assert r.status_code < 500, (method, url, headers, params, body, r.status_code, r.text)
            assert r.headers.get("x-content-type-options") == "nosniff"
            if r.status_code >= 400 and method != "HEAD":
                error = r.json()["error"]
                assert error["code"] and error["message"]
        # Still healthy afterwards.
        r = await client.put(f"{S}/after", headers={"content-type": "text/plain"})
        assert r.status_code in (200, 201)
        r = await client.post(f"{S}/after", headers={"content-type": "text/plain"}, content=b"ok")
        assert r.status_code in (204, 409)  # 409 if the batch closed it


# --------------------------------------------------------------------------
# Targeted hostile input (each was a 500, a silent alias or an unbounded cost).
# --------------------------------------------------------------------------


def _app_with(**stream_settings: Any) -> Any:
    return create_app(
        MemoryStore(),
        ServerSettings(streams=StreamSettings(long_poll_timeout=0.01, **stream_settings)),
    )


async def _with_client(app: Any, body: Any) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 9))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        await body(client)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"1" + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'[{"a":' * (depth // 2) + b"1" + b"}]" * (depth // 2)


nesting = st.tuples(
    st.one_of(st.integers(1, 1200), st.integers(1200, 50_000)),
    st.sampled_from(["array", "object", "mixed"]),
    st.sampled_from(["POST", "PUT"]),
    st.booleans(),  # wrapped in one array level (a batch of one message)
)


@settings(max_examples=40, deadline=None)
@given(case=nesting)
def test_deeply_nested_json_is_a_400_at_every_depth(case: tuple[int, str, str, bool]) -> None:
    depth, kind, method, wrapped = case
    body = _nested(depth, kind)
    if wrapped:
        body = b"[" + body + b"]"

    async def run(client: httpx.AsyncClient) -> None:
        await client.put(f"{S}/j", headers={"content-type": "application/json"})
        path = f"{S}/j" if method == "POST" else f"{S}/new"
        r = await client.request(
            method, path, headers={"content-type": "application/json"}, content=body
        )
        assert r.status_code in (200, 201, 204, 400), (depth, kind, r.status_code, r.text)
        if r.status_code == 400:
            assert r.json()["error"]["code"] == "INVALID_JSON"
            assert "traceback" not in r.text.lower()
        if depth >= 2000:
            assert r.status_code == 400, (depth, kind)

    asyncio.run(_with_client(_app_with(max_body_bytes=1 << 20), run))


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(900, 20_000))
def test_deeply_nested_subscription_bodies_are_a_400(depth: int) -> None:
    async def run(client: httpx.AsyncClient) -> None:
        deep = b"[" * depth + b"]" * depth
        body = b'{"type":"pull-wake","pattern":"a/*","wake_stream":"w","x":' + deep + b"}"
        r = await client.put(f"{S}/__ds/subscriptions/s", content=body)
        assert r.status_code in (201, 400), (depth, r.status_code, r.text)
        r = await client.post(f"{S}/__ds/subscriptions/s/claim", content=b'{"x":' + deep + b"}")
        assert r.status_code < 500, (depth, r.status_code, r.text)

    asyncio.run(_with_client(_app_with(), run))


invalid_utf8 = st.binary(min_size=1, max_size=6).filter(lambda b: not _is_utf8(b))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=40, deadline=None)
@given(raw=invalid_utf8, method=st.sampled_from(["PUT", "POST", "GET", "HEAD", "DELETE"]))
def test_invalid_utf8_in_a_path_is_a_400_not_another_stream(raw: bytes, method: str) -> None:
    encoded = "".join(f"%{b:02X}" for b in raw)

    async def run(client: httpx.AsyncClient) -> None:
        # The stream the replacement characters would alias to exists (unless the lenient
        # decoding gives control characters, which no stream path may hold).
        alias = quote(raw.decode("utf-8", errors="replace"), safe="")
        r = await client.put(f"{S}/x{alias}", headers={"content-type": "text/plain"}, content=b"A")
        aliased = r.status_code == 201
        r = await client.request(
            method, f"{S}/x{encoded}", headers={"content-type": "text/plain"}, content=b"B"
        )
        assert r.status_code == 400, (raw, method, r.status_code, r.text)
        if method != "HEAD":
            assert r.json()["error"]["code"] == "INVALID_PATH"
        if aliased:
            r = await client.get(f"{S}/x{alias}", params={"offset": "-1"})
            assert r.content == b"A"

    asyncio.run(_with_client(_app_with(), run))


async def test_ttl_zero_and_expiry_in_the_past_are_refused() -> None:
    async def run(client: httpx.AsyncClient) -> None:
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
        future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        for headers in (
            {"stream-ttl": "0"},
            {"stream-expires-at": past.isoformat().replace("+00:00", "Z")},
            {"stream-expires-at": "1970-01-01T00:00:00Z"},
        ):
            r = await client.put(f"{S}/t", headers={"content-type": "text/plain", **headers})
            assert r.status_code == 400, (headers, r.status_code)
            assert r.json()["error"]["code"] == "INVALID_HEADER"
            assert "Stream-" in r.json()["error"]["message"]
            assert (await client.head(f"{S}/t")).status_code == 404
        r = await client.put(f"{S}/t1", headers={"stream-ttl": "1"})
        assert r.status_code == 201
        r = await client.put(f"{S}/t2", headers={"stream-expires-at": future.isoformat()})
        assert r.status_code == 201

    await _with_client(_app_with(), run)


async def test_messages_per_json_append_are_capped() -> None:
    cap = 50

    async def run(client: httpx.AsyncClient) -> None:
        json_ct = {"content-type": "application/json"}
        await client.put(f"{S}/j", headers=json_ct)
        at_cap = b"[" + b",".join(b"1" for _ in range(cap)) + b"]"
        r = await client.post(f"{S}/j", headers=json_ct, content=at_cap)
        assert r.status_code == 204
        for over in (cap + 1, cap + 2, 10 * cap, 100_000):
            body = b"[" + b",".join(b"1" for _ in range(over)) + b"]"
            for method, path in (("POST", f"{S}/j"), ("PUT", f"{S}/new")):
                r = await client.request(method, path, headers=json_ct, content=body)
                assert r.status_code == 413, (over, method, r.status_code)
                error = r.json()["error"]
                assert error["code"] == "TOO_MANY_MESSAGES" and str(cap) in error["message"]
        # Many commas inside few messages are fine.
        nested = b"[" + b",".join([b"[" + b",".join(b"1" for _ in range(500)) + b"]"] * 3) + b"]"
        r = await client.post(f"{S}/j", headers=json_ct, content=nested)
        assert r.status_code == 204
        r = await client.get(f"{S}/j", params={"offset": "-1"})
        messages = json.loads(r.content)
        assert len(messages) == cap + 3 and messages[-1] == list(range(1, 2)) * 500

    await _with_client(_app_with(max_append_messages=cap), run)
