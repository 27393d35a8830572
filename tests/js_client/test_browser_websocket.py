"""The browser ResilientWebSocket in real headless Chromium against the Python server side
(ReliableHub) through the fault proxy of tests/: no loss and no duplicates across cuts in
stateful mode, buffering in stateless mode, overflow events, heartbeat, and permanent failures
(protocol violation, HTTP 403 refusal learned from the auth probe) that stop and say why.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from client.apps import running
from durasync.endpoints.reliable import ReliableHub
from faultproxy import FaultProxy

from .browser import TOKEN, close_page, open_page, reliable_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = {"initialDelay": 0.05, "maxDelay": 0.3, "minDelay": 0.01, "stableAfter": 0.2}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[int]:
    hub = ReliableHub(resume_ttl=30)
    async with running(reliable_app(hub)) as port:
        yield port


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(server: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", server, seed=3) as p:
        yield p


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, server: int) -> AsyncIterator[Page]:
    base = f"http://127.0.0.1:{server}"
    p = await open_page(browser, f"{base}/page.html", f"{base}/durasync.mjs")
    try:
        yield p
    finally:
        await p.evaluate("() => Promise.all((window.sockets || []).map((w) => w.close(0.5)))")
        await close_page(p)


# Creates window.ws (also kept in window.sockets) and collects its events in window.log.
SETUP = """
async ([url, opts]) => {
  const ws = new D.ResilientWebSocket(url, { options: opts, rng: () => 0.5 });
  window.sockets = (window.sockets || []).concat([ws]);
  window.ws = ws;
  window.log = { got: [], states: [], errors: [], overflows: [], sessions: [] };
  ws.on("message", (e) => window.log.got.push(e.data));
  ws.on("state", (e) => window.log.states.push(e.current));
  ws.on("error", (e) =>
    window.log.errors.push({ reason: e.reason, permanent: e.permanent, code: e.code }));
  ws.on("overflow", (e) => window.log.overflows.push({ reason: e.reason, n: e.dropped.length }));
  ws.on("session", (e) => window.log.sessions.push({ resumed: e.resumed, replayed: e.replayed }));
  try { await ws.connect(); return "connected"; } catch (err) { return String(err); }
}
"""


async def _log(page: Page) -> dict[str, Any]:
    out: dict[str, Any] = await page.evaluate("() => window.log")
    return out


async def test_stateful_no_loss_no_duplicates_across_cuts(page: Page, proxy: FaultProxy) -> None:
    url = f"ws://127.0.0.1:{proxy.port}/echo"
    opts = {
        "reconnect": "stateful",
        "backoff": FAST,
        "session": {"ackEvery": 4, "ackInterval": 0.05},
    }
    assert await page.evaluate(SETUP, [url, opts]) == "connected"
    n = 300
    sent = [f"m{i}" for i in range(n)]
    # the page sends in bursts; the proxy resets every connection between bursts
    for k in range(0, n, 50):
        await page.evaluate("(xs) => { for (const x of xs) window.ws.send(x); }", sent[k : k + 50])
        await page.wait_for_function(f"() => window.log.got.length >= {k + 25}", timeout=20_000)
        proxy.cut_all()
    await page.wait_for_function(f"() => window.log.got.length >= {n}", timeout=30_000)
    log = await _log(page)
    assert log["got"] == sent  # every message exactly once, in order
    assert proxy.stats.cut >= 5
    assert log["states"].count("reconnecting") >= 5
    assert log["sessions"][0]["resumed"] is False
    assert any(s["resumed"] for s in log["sessions"][1:])  # the server kept the session
    assert not any(e["permanent"] for e in log["errors"])
    assert page.errors == []  # type: ignore[attr-defined]


async def test_stateless_buffers_while_disconnected_and_reports_overflow(
    page: Page, proxy: FaultProxy
) -> None:
    url = f"ws://127.0.0.1:{proxy.port}/plain"
    opts = {
        "reconnect": "stateless",
        "backoff": FAST,
        "buffer": {"maxMessages": 3, "policy": "drop_oldest"},
    }
    assert await page.evaluate(SETUP, [url, opts]) == "connected"
    proxy.refuse_for(30)  # every reconnect attempt is reset while this lasts
    proxy.cut_all()
    await page.wait_for_function("() => window.ws.state === 'reconnecting'", timeout=10_000)
    await page.evaluate("() => { for (const x of ['a', 'b', 'c', 'd', 'e']) window.ws.send(x); }")
    proxy.refuse_for(0)
    await page.wait_for_function("() => window.log.got.length >= 3", timeout=20_000)
    log = await _log(page)
    assert log["got"] == ["c", "d", "e"]  # the two oldest were dropped, and said so
    assert log["overflows"] == [{"reason": "count", "n": 1}, {"reason": "count", "n": 1}]


async def test_mode_none_goes_disconnected_on_a_drop(page: Page, proxy: FaultProxy) -> None:
    url = f"ws://127.0.0.1:{proxy.port}/plain"
    assert await page.evaluate(SETUP, [url, {"reconnect": "none"}]) == "connected"
    proxy.cut_all()
    await page.wait_for_function("() => window.ws.state === 'disconnected'", timeout=10_000)
    log = await _log(page)
    assert log["states"] == ["connecting", "connected", "disconnected"]
    assert log["errors"] and not log["errors"][0]["permanent"]


async def test_heartbeat_detects_a_silent_connection(page: Page, proxy: FaultProxy) -> None:
    """Frames stop flowing without any close: the ping/pong heartbeat notices and reconnects."""
    url = f"ws://127.0.0.1:{proxy.port}/echo"
    opts = {"reconnect": "stateful", "backoff": FAST, "pingInterval": 0.2, "pingTimeout": 0.5}
    assert await page.evaluate(SETUP, [url, opts]) == "connected"
    proxy.plan.stall_rate = 1.0
    proxy.plan.stall = 5.0
    await page.wait_for_function(
        "() => window.log.errors.some((e) => e.reason === 'heartbeat timeout')", timeout=10_000
    )
    proxy.plan.stall_rate = 0.0
    await page.wait_for_function("() => window.ws.state === 'connected'", timeout=10_000)
    await page.evaluate("() => window.ws.send('after')")
    await page.wait_for_function("() => window.log.got.includes('after')", timeout=10_000)


async def test_protocol_violation_is_permanent_and_says_why(page: Page, server: int) -> None:
    url = f"ws://127.0.0.1:{server}/garbage"
    await page.evaluate(SETUP, [url, {"reconnect": "stateful", "backoff": FAST}])
    await page.wait_for_function("() => window.ws.state === 'failed'", timeout=10_000)
    log = await _log(page)
    assert log["states"] == ["connecting", "connected", "failed"]  # no retry
    err = log["errors"][-1]
    assert err["permanent"] is True and err["code"] == "seq_gap"
    assert err["reason"].startswith("protocol violation: seq_gap")


async def test_refused_handshake_403_stops_with_the_status(page: Page, server: int) -> None:
    """A browser cannot see the HTTP status of a refused upgrade: the auth probe tells it."""
    base = f"127.0.0.1:{server}"
    opts = {"reconnect": "stateful", "backoff": FAST, "authProbe": f"http://{base}/auth-check"}
    result = await page.evaluate(SETUP, [f"ws://{base}/secure", opts])
    assert "HTTP 401" in result
    log = await _log(page)
    assert log["states"] == ["connecting", "failed"]
    assert log["errors"] == [
        {
            "reason": "authentication rejected (HTTP 401)",
            "permanent": True,
            "code": 401,
        }
    ]
    # with the token (query parameter and probe header) the same endpoint works
    script = SETUP.replace(
        "{ options: opts, rng: () => 0.5 }",
        "{ options: opts, rng: () => 0.5, tokenProvider: async () => " + json.dumps(TOKEN) + " }",
    )
    assert await page.evaluate(script, [f"ws://{base}/secure", opts]) == "connected"
    await page.evaluate("() => window.ws.send('hi')")
    await page.wait_for_function("() => window.log.got.includes('hi')", timeout=10_000)


async def test_close_flushes_and_reports_nothing_lost(page: Page, proxy: FaultProxy) -> None:
    url = f"ws://127.0.0.1:{proxy.port}/echo"
    assert await page.evaluate(SETUP, [url, {"reconnect": "stateful", "backoff": FAST}]) == (
        "connected"
    )
    await page.evaluate(
        "async () => { for (let i = 0; i < 20; i++) window.ws.send('x' + i);"
        " await window.ws.close(5); }"
    )
    log = await _log(page)
    assert log["states"][-1] == "closed"
    assert log["overflows"] == []  # everything acknowledged before the bye
    with pytest.raises(Exception, match="ConnectionNotOpen"):
        await page.evaluate("() => window.ws.send('late')")


async def test_error_frames_surface_with_their_code(page: Page, server: int) -> None:
    """A transient session error frame (busy) is an event and the client retries; a permanent
    one stops it and says why."""
    opts = {"reconnect": "stateful", "backoff": FAST}
    await page.evaluate(
        SETUP.replace(
            "try { await ws.connect();", "try { window.connecting = ws.connect(); await 0;"
        ),
        [f"ws://127.0.0.1:{server}/busy", opts],
    )
    await page.wait_for_function("() => window.log.errors.length >= 2", timeout=10_000)
    log = await _log(page)
    assert log["errors"][0]["code"] == "busy" and log["errors"][0]["permanent"] is False
    assert "reconnecting" in log["states"] and "failed" not in log["states"]
    await page.evaluate("() => window.ws.close(0.1)")
    result = await page.evaluate(SETUP, [f"ws://127.0.0.1:{server}/denied", opts])
    assert "denied" in result
    log = await _log(page)
    assert log["states"] == ["connecting", "failed"]
    assert log["errors"] == [
        {"reason": "handshake rejected: denied: try later", "permanent": True, "code": "denied"}
    ]
