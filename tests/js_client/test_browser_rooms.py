"""The browser RoomClient and the demo in real headless Chromium against ``durasync serve``.

- Two demo pages in one room drag shapes (one each, then the same one) and type into the
  shared note at once, recolour, delete and undo through the page's UI: both end with the
  server's graph (``GET /v1/rooms/{room}``), byte for byte.
- A demo page taken offline (``context.set_offline``) keeps editing and shows "offline" with
  its unsynced edits; back online, it converges and each of its edits is journaled once.
- The server SIGKILLed and restarted (embedded store, same data dir and port) while two pages
  edit without pause: they reconnect and converge, no acknowledged edit is lost, none doubled.
- A page and a Python ``RoomClient`` in one room converge (and see each other's presence).
- Refusals: HTTP 401/403 learned through the auth probe, close code 4400 stop reconnecting
  and say why; ``error`` frames (``FORBIDDEN`` for a read-only member) surface with their code.
- The demo loads without console errors and shows a member's cursor; a screenshot is saved.

One browser for the module; every page's context and every server is closed by a fixture.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page

from browsers import watch_errors
from client.servers import ServerProc
from durasync.client import ResilientOptions
from durasync.client.room import RoomClient as PyRoomClient
from durasync.protocol import BackoffPolicy
from helpers import ServerProcess, eventually

from .jsbuild import ensure_built

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAST = {"initialDelay": 0.05, "maxDelay": 0.5, "minDelay": 0.01, "stableAfter": 0.5}
SECRET = "browser-rooms-test-secret-0123456789"
_rooms = iter(range(1_000_000))


def room_name(tag: str) -> str:
    return f"br-{tag}-{next(_rooms)}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[ServerProc]:
    ensure_built()
    srv = ServerProc("durasync")
    try:
        yield srv
    finally:
        srv.stop()


async def demo_page(ctx: BrowserContext, url: str, room: str, name: str) -> Page:
    """The demo at ``/demo/?room=...``, joined; console errors in ``page.errors``."""
    page = await ctx.new_page()
    watch_errors(page)
    await page.goto(f"{url}/demo/?room={room}&name={name}")
    await page.evaluate("() => window.demo.ready")
    return page


# An API page: window.rc, a RoomClient, and window.log of its events.
SETUP = """
async ([url, room, opts]) => {
  const D = await import(url + "/js/durasync.mjs");
  window.D = D;
  const rc = new D.RoomClient(url, room, opts);
  window.rc = rc;
  window.log = { states: [], errors: [], presence: [], committed: [] };
  rc.on("state", (e) => window.log.states.push(e.current));
  rc.on("error", (e) => window.log.errors.push({
    source: e.source, code: e.code, message: e.message, msgId: e.msgId, permanent: e.permanent,
  }));
  rc.on("presence", (e) => window.log.presence.push({ event: e.event, client: e.client }));
  try { await rc.join(); return "joined"; } catch (err) { return String(err); }
}
"""


async def api_page(ctx: BrowserContext, url: str, room: str, opts: dict[str, Any]) -> Page:
    page = await ctx.new_page()
    watch_errors(page)
    # a page of the server's origin; the browser's favicon request would log a 404
    await page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    await page.goto(f"{url}/healthz")
    result = await page.evaluate(SETUP, [url, room, opts])
    page.join_result = result  # type: ignore[attr-defined]
    return page


async def room_view(url: str, room: str) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{url}/v1/rooms/{room}")
        r.raise_for_status()
        return int(r.headers["room-server-seq"]), r.text


async def journal_ids(url: str, room: str) -> list[str]:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{url}/v1/rooms/{room}/journal", params={"offset": "-1"})
        r.raise_for_status()
        return [rec["msg"]["id"] for rec in json.loads(r.content)]


# Commit what is buffered and wait until the outbox is empty (at most 20 s, then say why).
SYNCED = """
async () => {
  const c = CLIENT;
  c.commit();
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(
    `not synced within 20 s: ${c.unsynced} unsynced, state ${c.state}`)), 20000); });
  try { await Promise.race([c.synced(), late]); } finally { clearTimeout(timer); }
}
"""


async def converge(url: str, room: str, pages: list[tuple[Page, str]]) -> str:
    """Wait until every page committed and synced everything and holds the server's sequence;
    return the server's canonical JSON after checking that every page prints exactly it."""
    for page, client in pages:
        await page.evaluate(SYNCED.replace("CLIENT", client))
    seq, body = await room_view(url, room)
    for page, client in pages:
        await page.wait_for_function(f"() => {client}.serverSeq >= {seq}", timeout=20_000)
    assert (await room_view(url, room))[0] == seq  # nobody edits any more
    for page, client in pages:
        assert await page.evaluate(f"() => {client}.dump()") == body
    return body


async def center(page: Page, key: str) -> tuple[float, float]:
    box = await page.locator(f'g.shape[data-key="{key}"]').bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


async def shape_keys(page: Page) -> list[str]:
    keys: list[str] = await page.evaluate("() => window.demo.shapes().map((s) => s.key)")
    return keys


# -- the demo, two people --------------------------------------------------------------------


async def test_two_demo_pages_drag_and_type_at_once_and_converge(
    browser_contexts: Callable[[], Awaitable[BrowserContext]], server: ServerProc
) -> None:
    room = room_name("demo")
    a = await demo_page(await browser_contexts(), server.url, room, "ann")
    b = await demo_page(await browser_contexts(), server.url, room, "bob")
    await a.click("#add")
    await a.click("#add")
    await b.click("#add")
    for p in (a, b):
        await p.wait_for_function("() => window.demo.shapes().length === 3", timeout=10_000)
    s0, s1, s2 = await shape_keys(a)
    assert await shape_keys(b) == [s0, s1, s2]
    before = {s["key"]: s["pos"] for s in await a.evaluate("() => window.demo.shapes()")}

    # concurrent drags: ann drags s0 and bob drags s2, then both drag s1 at once
    for pairs in ([(a, s0, (250, 250)), (b, s2, (700, 450))], [(a, s1, (400, 600)),
                                                               (b, s1, (900, 200))]):  # fmt: skip
        starts = []
        for page, key, _ in pairs:
            x, y = await center(page, key)
            starts.append((x, y))
            await page.mouse.move(x, y)
            await page.mouse.down()
        for step in range(1, 9):  # the two drags interleave, step by step
            for (page, _, (tx, ty)), (x, y) in zip(pairs, starts, strict=True):
                await page.mouse.move(x + (tx - x) * step / 8, y + (ty - y) * step / 8)
        for page, _, _ in pairs:
            await page.mouse.up()

    # concurrent typing into the shared note: ann at the start, bob at the end
    await a.click("#note")
    await a.keyboard.press("Control+Home")
    await b.click("#note")
    await b.keyboard.press("Control+End")
    for x, y in zip("alpha ", "beta😀😀", strict=True):
        await a.keyboard.type(x)
        await b.keyboard.type(y)

    # recolour, delete, undo through the page
    await a.locator(f'g.shape[data-key="{s2}"]').click()
    await a.locator(".swatch").nth(4).click()  # #8b4fd8
    await b.locator(f'g.shape[data-key="{s0}"]').click()
    await b.click("#delete")
    await a.locator(f'g.shape[data-key="{s1}"]').click()
    colour = await a.evaluate(f"() => window.demo.shapes().find((s) => s.key === '{s1}').color")
    swatch = 1 if colour != "#e0503b" else 2
    await a.locator(".swatch").nth(swatch).click()  # #e0503b or #2fa66a
    await a.wait_for_function(
        f"() => window.demo.shapes().find((s) => s.key === '{s1}').color !== '{colour}'"
    )
    await a.click("#undo")  # takes back ann's last change: s1's colour

    body = await converge(server.url, room, [(a, "window.demo.client"), (b, "window.demo.client")])
    after = {s["key"]: s for s in await a.evaluate("() => window.demo.shapes()")}
    assert set(after) == {s1, s2}  # s0 deleted
    assert after[s2]["color"] == "#8b4fd8" and after[s1]["color"] == colour
    assert after[s1]["pos"] != before[s1] and after[s2]["pos"] != before[s2]
    text = json.loads(body)["nodes"]["note"]["props"]["text"]
    assert sorted(text) == sorted("alpha beta😀😀")
    assert _subsequence("alpha ", text) and _subsequence("beta😀😀", text)
    for p in (a, b):
        assert await p.evaluate("() => document.getElementById('note').value") == text
        assert await p.get_attribute("#status", "data-state") == "connected"
        assert p.errors == []  # type: ignore[attr-defined]


def _subsequence(part: str, whole: str) -> bool:
    it = iter(whole)
    return all(c in it for c in part)


async def test_the_demo_loads_clean_shows_cursors_and_a_screenshot_is_saved(
    browser_contexts: Callable[[], Awaitable[BrowserContext]], server: ServerProc, tmp_path: Path
) -> None:
    room = room_name("look")
    a = await demo_page(await browser_contexts(), server.url, room, "ann")
    b = await demo_page(await browser_contexts(), server.url, room, "bob")
    for _ in range(3):
        await a.click("#add")
    await a.fill("#note", "Shared note: everyone types here.")
    await b.mouse.move(520, 420)
    await b.mouse.move(540, 430)
    await a.wait_for_selector("g.cursor text:text('bob')", timeout=10_000)
    await a.wait_for_function("() => window.demo.shapes().length === 3")
    await a.evaluate("() => window.demo.idle()")
    assert await a.text_content("#status") == "live"
    assert await a.text_content("#room") == room
    assert "bob" in (await a.text_content("#members") or "")
    shot = tmp_path / "demo.png"  # (look at it: the scene, the note, bob's cursor, "live")
    await a.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    for p in (a, b):
        assert p.errors == []  # type: ignore[attr-defined]
    # the page, its files and the bundle are served with validators
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for path in ("/demo/", "/demo/demo.js", "/demo/demo.css", "/js/durasync.mjs"):
            r = await http.get(path)
            assert r.status_code == 200 and r.headers["etag"], path
        r = await http.get("/demo?room=x")
        assert r.status_code == 308 and r.headers["location"] == "/demo/?room=x"
        assert (await http.get("/demo/secret.py")).status_code == 404


# -- offline ---------------------------------------------------------------------------------


async def test_a_page_offline_keeps_editing_and_converges_when_back(
    browser_contexts: Callable[[], Awaitable[BrowserContext]], server: ServerProc
) -> None:
    room = room_name("offline")
    ctx_a = await browser_contexts()
    a = await demo_page(ctx_a, server.url, room, "ann")
    b = await demo_page(await browser_contexts(), server.url, room, "bob")
    await a.click("#add")
    await converge(server.url, room, [(a, "window.demo.client"), (b, "window.demo.client")])

    await ctx_a.set_offline(True)
    await a.wait_for_selector('#status[data-state="offline"]', timeout=10_000)
    (first,) = await shape_keys(a)
    x, y = await center(a, first)
    await a.mouse.move(x, y)
    await a.mouse.down()
    await a.mouse.move(x + 200, y + 100, steps=4)
    await a.mouse.up()
    await a.click("#add")
    await a.click("#note")
    await a.keyboard.type("written offline")
    await a.click("#add")  # the note's edits are committed on blur
    status = await a.text_content("#status")
    offline_ids: list[str] = await a.evaluate("() => window.demo.client.unacked().map((m) => m.id)")
    assert len(offline_ids) >= 4 and status == f"offline · {len(offline_ids)} unsynced edits"
    offline_keys = set(await shape_keys(a)) - {first}
    # meanwhile bob edits too, and the server has none of ann's offline edits
    await b.click("#add")
    await b.click("#note")
    await b.keyboard.type("bob online. ")
    await b.evaluate("() => window.demo.idle()")
    _, body = await room_view(server.url, room)
    assert not any(k in body for k in offline_keys) and "offline" not in body
    assert await a.get_attribute("#status", "data-state") == "offline"

    await ctx_a.set_offline(False)
    await a.wait_for_selector('#status[data-state="connected"]', timeout=15_000)
    body = await converge(server.url, room, [(a, "window.demo.client"), (b, "window.demo.client")])
    assert all(k in body for k in offline_keys)
    text = json.loads(body)["nodes"]["note"]["props"]["text"]
    assert "written offline" in text and "bob online. " in text
    ids = await journal_ids(server.url, room)
    assert len(ids) == len(set(ids))  # nothing doubled
    assert set(offline_ids) <= set(ids)  # nothing lost
    assert await a.text_content("#status") == "live"
    # offline, the client made no attempt (none failed in the console)
    assert a.errors == [] and b.errors == []  # type: ignore[attr-defined]


# -- server crash ----------------------------------------------------------------------------


EDIT_LOOP = """
([me, every]) => {
  window.stopEditing = false;
  const rc = window.rc;
  const tick = () => {
    if (window.stopEditing) return;
    try {
      rc.edit({ ot: "number.add", key: me, path: "n", value: 1 });
      const k = window.log.committed.length;
      if (k % 5 === 0) rc.insertText("root", "t", 0, me);
      const m = rc.commit();
      window.log.committed.push(m.id);
    } catch (err) {
      window.log.errors.push({ source: "loop", message: String(err) });
    }
    setTimeout(tick, every);
  };
  tick();
}
"""


async def test_server_sigkill_and_restart_loses_no_acknowledged_edit(
    browser_contexts: Callable[[], Awaitable[BrowserContext]], tmp_path: Path
) -> None:
    ensure_built()
    data = tmp_path / "data"
    srv = ServerProc("durasync", data_dir=data)
    port = srv.port
    try:
        room = room_name("crash")
        opts = {"backoff": FAST, "heartbeatInterval": 1, "heartbeatTimeout": 3}
        pages = []
        for me, fmt in (("a", "msgpack"), ("b", "json")):
            page = await api_page(
                await browser_contexts(), srv.url, room, {**opts, "clientId": me, "format": fmt}
            )
            assert page.join_result == "joined"  # type: ignore[attr-defined]
            pages.append(page)
        a, b = pages
        await a.evaluate(  # one message per insert: two in one buffer would share a slot
            "() => { for (const k of ['root', 'a', 'b']) { rc.edit({ ot: 'node.insert',"
            " key: k === 'root' ? '' : 'root', path: 'children', value: { key: k } });"
            " rc.commit(); } return rc.synced(); }"
        )
        await b.wait_for_function("() => rc.replica.graph.nodes.has('b')")
        for page, me in ((a, "a"), (b, "b")):
            await page.evaluate(EDIT_LOOP, [me, 15])
        for page in pages:  # some of each page's edits are acknowledged, some in flight
            await page.wait_for_function("() => window.log.committed.length - rc.unsynced >= 20")
        srv.stop(signal.SIGKILL)
        acked: list[str] = []
        for page in pages:
            acked += await page.evaluate(
                "() => { const un = new Set(rc.unacked().map((m) => m.id));"
                " return window.log.committed.filter((id) => !un.has(id)); }"
            )
        for page in pages:  # edits go on while the server is down
            await page.wait_for_function("() => rc.state === 'reconnecting'", timeout=10_000)
            n = await page.evaluate("() => window.log.committed.length")
            await page.wait_for_function(f"() => window.log.committed.length >= {n + 10}")
        srv = ServerProc("durasync", port=port, data_dir=data)
        for page in pages:
            await page.wait_for_function("() => rc.state === 'connected'", timeout=20_000)
            n = await page.evaluate("() => window.log.committed.length")
            await page.wait_for_function(f"() => window.log.committed.length >= {n + 10}")
            await page.evaluate("() => { window.stopEditing = true; }")
        body = await converge(srv.url, room, [(a, "rc"), (b, "rc")])
        ids = await journal_ids(srv.url, room)
        assert len(ids) == len(set(ids))  # none doubled
        committed: list[str] = []
        for page in pages:
            committed += await page.evaluate("() => window.log.committed")
        assert len(acked) >= 40 and set(acked) <= set(ids)  # no acknowledged edit lost
        assert set(ids) == {*committed, *ids[:3]}  # and every edit arrived (+ the inserts)
        graph = json.loads(body)["nodes"]
        for me in ("a", "b"):  # every +1 applied exactly once
            assert graph[me]["props"]["n"] == sum(1 for i in committed if i.startswith(me + ":"))
        for page in pages:
            states = await page.evaluate("() => window.log.states")
            assert "reconnecting" in states and states[-1] == "connected"
            assert not [e for e in await page.evaluate("() => window.log.errors") if e.get(
                "permanent") or e["source"] != "connection"]  # fmt: skip
    finally:
        srv.stop()


# -- a page and a Python client --------------------------------------------------------------


async def test_a_page_and_a_python_room_client_converge(
    browser_contexts: Callable[[], Awaitable[BrowserContext]], server: ServerProc
) -> None:
    room = room_name("mixed")
    page = await api_page(
        await browser_contexts(), server.url, room, {"backoff": FAST, "clientId": "web"}
    )
    assert page.join_result == "joined"  # type: ignore[attr-defined]
    options = ResilientOptions(
        backoff=BackoffPolicy(initial_delay=0.05, max_delay=0.5, min_delay=0.01)
    )
    ws = "ws://" + server.url.split("://", 1)[1]
    async with PyRoomClient(ws, room, client_id="py", fmt="json", options=options) as py:
        py.edit({"ot": "node.insert", "key": "", "path": "children", "value": {"key": "root"}})
        py.edit({"ot": "text.init", "key": "root", "path": "t", "value": "|"})
        py.commit()
        await py.synced()
        await page.wait_for_function("() => rc.text('root', 't') === '|'")
        await page.evaluate(EDIT_LOOP.replace('key: me, path: "n"', 'key: "root", path: me'),
                            ["web", 10])  # fmt: skip
        for i in range(40):
            py.edit({"ot": "number.add", "key": "root", "path": "py", "value": 1})
            if i % 4 == 0:
                end = len(py.graph.texts[("root", "t")].text())
                py.edit({"ot": "text.insert", "key": "root", "path": "t", "position": end,
                         "value": "p"})  # fmt: skip
            py.commit()
            await asyncio.sleep(0.01)  # pacing the writer, not waiting for a result
        await page.evaluate("() => { window.stopEditing = true; }")
        await py.set_presence({"name": "python"})
        await page.evaluate("() => rc.setPresence({ name: 'web' })")
        await page.wait_for_function(
            "() => rc.presence.get('py') && rc.presence.get('py').name === 'python'"
        )
        await py.synced()
        body = await converge(server.url, room, [(page, "rc")])
        seq, _ = await room_view(server.url, room)
        await eventually(lambda: (py.server_seq or 0) >= seq, 20)
        assert py.replica.dump() == body
        graph = json.loads(body)["nodes"]["root"]["props"]
        n_web = await page.evaluate("() => window.log.committed.length")
        assert graph["py"] == 40 and graph["web"] == n_web
        assert graph["t"].count("p") == 10 and graph["t"].count("web") == (n_web + 4) // 5
        await eventually(lambda: py.presence.get("web") == {"name": "web"}, 10)
    assert page.errors == []  # type: ignore[attr-defined]


# -- refusals --------------------------------------------------------------------------------


def token(**claims: Any) -> str:
    return jwt.encode({"exp": time.time() + 3600, **claims}, SECRET, algorithm="HS256")


async def test_refusals_stop_or_surface_with_their_code(
    browser_contexts: Callable[[], Awaitable[BrowserContext]],
) -> None:
    ensure_built()
    srv = ServerProcess(["--port", "0", "--memory", "--auth-secret", SECRET])
    try:
        room = room_name("auth")
        ctx = await browser_contexts()
        # no token: HTTP 401 on the upgrade, which the page learns from the auth probe
        page = await api_page(ctx, srv.url, room, {"backoff": FAST})
        assert re.search(r"ConnectionFailed: authentication rejected \(HTTP 401\)",
                         page.join_result)  # type: ignore[attr-defined]  # fmt: skip
        log = await page.evaluate("() => window.log")
        assert log["states"] == ["connecting", "failed"]
        assert log["errors"][-1]["permanent"] is True and log["errors"][-1]["code"] == 401
        # a token for another room: 403
        other = token(read=["room/elsewhere"], write=["room/elsewhere"])
        page = await api_page(ctx, srv.url, room, {"backoff": FAST, "token": other})
        assert "authentication rejected (HTTP 403)" in page.join_result  # type: ignore[attr-defined]
        # a malformed client id: the server closes with 4400, the client stops
        page = await api_page(
            ctx,
            srv.url,
            room,
            {"backoff": FAST, "token": token(write=["room/"]), "clientId": "not ok!"},
        )
        assert "code 4400" in page.join_result  # type: ignore[attr-defined]
        assert await page.evaluate("() => rc.state") == "failed"
        # a writer makes the room; a read-only member's edits come back as FORBIDDEN errors
        writer = await api_page(ctx, srv.url, room, {"token": token(write=["room/"])})
        await writer.evaluate(
            "() => { rc.edit({ ot: 'node.insert', key: '', path: 'children',"
            " value: { key: 'r' } }); rc.commit(); return rc.synced(); }"
        )
        reader = await api_page(
            ctx, srv.url, room, {"token": token(read=[f"room/{room}"]), "clientId": "ro"}
        )
        assert reader.join_result == "joined"  # type: ignore[attr-defined]
        await reader.evaluate(
            "() => { rc.edit({ ot: 'number.set', key: 'r', path: 'x', value: 1 }); rc.commit(); }"
        )
        await reader.wait_for_function("() => window.log.errors.length > 0")
        err = (await reader.evaluate("() => window.log.errors"))[0]
        assert err["source"] == "server" and err["code"] == "FORBIDDEN"
        assert err["msgId"].startswith("ro:") and err["permanent"] is False
        assert await reader.evaluate("() => [rc.unsynced, rc.state, rc.dump()]") == [
            0,
            "connected",
            await writer.evaluate("() => rc.dump()"),
        ]
    finally:
        srv.stop()
