"""The browser StreamClient in real headless Chromium against ``durasync serve`` (a subprocess),
through the fault proxy of tests/: tails over SSE and long-poll deliver every item exactly once
across cuts, the idempotent producer never duplicates on retries, offsets persist in
localStorage; the page imports the bundle from the server's ``/js/durasync.mjs`` (another
origin: CORS), and the official ``@durable-streams/client`` in a page tails a durasync stream.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from client.apps import running
from client.servers import ServerProc
from durasync.client.streams import StreamClient
from durasync.endpoints.reliable import ReliableHub
from faultproxy import FaultPlan, FaultProxy

from .browser import close_page, open_page, reliable_app
from .jsbuild import JS, ensure_built

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
DS_CLIENT = ROOT / "tests" / "js" / "node_modules" / "@durable-streams" / "client"
RETRY = {"initialDelay": 0.05, "maxDelay": 0.3, "minDelay": 0.01}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def durasync() -> AsyncIterator[ServerProc]:
    ensure_built()
    srv = ServerProc("durasync")
    try:
        yield srv
    finally:
        srv.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page_origin() -> AsyncIterator[str]:
    """A loopback origin other than the durasync server's: every call from the page is CORS."""
    async with running(reliable_app(ReliableHub())) as port:
        yield f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture(loop_scope="module")
async def proxy(durasync: ServerProc) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", durasync.port, seed=5) as p:
        yield p


@pytest_asyncio.fixture(loop_scope="module")
async def http(durasync: ServerProc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=durasync.base, timeout=10) as c:
        yield c


def _ds_client_bundle() -> str:
    """@durable-streams/client (tests/js, npm) bundled into one ES module by esbuild."""
    res = subprocess.run(
        [
            str(JS / "node_modules" / ".bin" / "esbuild"),
            str(DS_CLIENT / "dist" / "index.js"),
            "--bundle",
            "--format=esm",
            "--platform=browser",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return res.stdout


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, durasync: ServerProc, page_origin: str) -> AsyncIterator[Page]:
    p = await open_page(
        browser,
        f"{page_origin}/page.html",
        f"{durasync.url}/js/durasync.mjs",
        extra={"/mod/ds-client.mjs": _ds_client_bundle()},
    )
    try:
        yield p
    finally:
        await p.evaluate("() => (window.stops || []).forEach((c) => c.abort())")
        await close_page(p)


async def _create(http: httpx.AsyncClient, name: str) -> None:
    r = await http.put(name, headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 201), r.text


TAIL = """
async ([base, name, live, key, retry]) => {
  const client = new D.StreamClient(base, { retry, timeout: 5, liveTimeout: 5 });
  const ctl = new AbortController();
  window.stops = (window.stops || []).concat([ctl]);
  window.tails = window.tails || {};
  const got = (window.tails[live + name] = []);
  (async () => {
    const opts = { live, signal: ctl.signal, storageKey: key || undefined };
    for await (const batch of client.tail(name, opts)) got.push(...batch.json());
    got.push("END");
  })().catch((err) => got.push("ERROR " + err));
}
"""


async def test_bundle_is_served_with_cors_and_caching(durasync: ServerProc, page: Page) -> None:
    assert await page.evaluate("() => typeof D.Replica === 'function'")
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{durasync.url}/js/durasync.mjs", headers={"Origin": "http://x"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/javascript")
        assert r.headers["access-control-allow-origin"] == "*"
        etag = r.headers["etag"]
        again = await c.get(f"{durasync.url}/js/durasync.mjs", headers={"If-None-Match": etag})
        assert again.status_code == 304
        head = await c.head(f"{durasync.url}/js/durasync.mjs")
        assert head.status_code == 200 and int(head.headers["content-length"]) == len(r.content)
        missing = await c.get(f"{durasync.url}/js/other.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("live", ["sse", "long-poll"])
async def test_tail_delivers_everything_once_across_cuts(
    page: Page, proxy: FaultProxy, http: httpx.AsyncClient, live: str
) -> None:
    name = f"tail-{live}"
    await _create(http, name)
    base = f"http://127.0.0.1:{proxy.port}/v1/stream/"
    await page.evaluate(TAIL, [base, name, live, None, RETRY])
    n = 0
    for k in range(8):
        items = [{"i": n + j} for j in range(25)]
        r = await http.post(
            name, content=json.dumps(items), headers={"Content-Type": "application/json"}
        )
        assert r.status_code in (200, 204)
        n += len(items)
        await page.wait_for_function(
            f"() => window.tails[{json.dumps(live + name)}].length >= {n - 10}", timeout=20_000
        )
        if k % 2 == 0:
            proxy.cut_all()
    r = await http.post(
        name,
        content='[{"end":true}]',
        headers={"Content-Type": "application/json", "Stream-Closed": "true"},
    )
    assert r.status_code in (200, 204)
    await page.wait_for_function(
        f"() => window.tails[{json.dumps(live + name)}].at(-1) === 'END'", timeout=20_000
    )
    got = await page.evaluate(f"() => window.tails[{json.dumps(live + name)}]")
    assert got == [{"i": i} for i in range(n)] + [{"end": True}, "END"]
    assert proxy.stats.cut >= 4


async def test_producer_never_duplicates_on_retries(
    page: Page, proxy: FaultProxy, http: httpx.AsyncClient
) -> None:
    name = "producer"
    await _create(http, name)
    proxy.plan = FaultPlan(cut_rate=0.15, max_chunk=256)  # cuts requests and responses alike
    base = f"http://127.0.0.1:{proxy.port}/v1/stream/"
    result = await page.evaluate(
        """async ([base, name, retry]) => {
          const c = new D.StreamClient(base, { retry, timeout: 3, maxRetries: 0 });
          const p = c.producer(name, { contentType: "application/json" });
          let duplicates = 0;
          for (let i = 0; i < 60; i++) {
            const r = await p.append(JSON.stringify([{ i }]));
            if (r.duplicate) duplicates++;
          }
          return { duplicates, seq: p.seq };
        }""",
        [base, name, RETRY],
    )
    proxy.plan = FaultPlan()
    r = await http.get(name, params={"offset": "-1"})
    assert r.json() == [{"i": i} for i in range(60)]  # exactly once each, in order
    assert result["seq"] == 60
    assert proxy.stats.cut > 0


async def test_tail_offset_persists_in_local_storage(page: Page, http: httpx.AsyncClient) -> None:
    name = "stored"
    await _create(http, name)
    await http.post(name, content='[{"a":1},{"a":2}]', headers={"Content-Type": "application/json"})
    script = """async ([name]) => {
      const c = new D.StreamClient(window.base);
      const got = [];
      const opts = { storageKey: "k-" + name, stopAtUpToDate: true };
      for await (const b of c.tail(name, opts)) got.push(...b.json());
      return [got, localStorage.getItem("k-" + name)];
    }"""
    await page.evaluate("(b) => { window.base = b; }", str(http.base_url))
    got, stored = await page.evaluate(script, [name])
    assert got == [{"a": 1}, {"a": 2}] and stored
    await http.post(name, content='[{"a":3}]', headers={"Content-Type": "application/json"})
    got, stored2 = await page.evaluate(script, [name])
    assert got == [{"a": 3}] and stored2 != stored  # resumed after what was finished


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_official_ds_client_tails_a_stream_python_appends_to(
    page: Page, http: httpx.AsyncClient, live: str
) -> None:
    """The official client (another origin: every request is CORS) tails while the Python
    StreamClient appends through its idempotent producer."""
    name = f"official-{live}"
    async with StreamClient(str(http.base_url)) as py:
        await py.create(name, content_type="application/json")
        producer = py.producer(name, content_type="application/json")
        await producer.append('[{"n":0}]')
        await page.evaluate(
            """async ([url, live]) => {
              const { stream } = await import("/mod/ds-client.mjs");
              window.official = [];
              const res = await stream({ url, offset: "-1", live });
              window.officialRes = res;
              res.subscribeJson((batch) => { window.official.push(...batch.items); });
            }""",
            [f"{http.base_url}{name}", live],
        )
        for i in range(1, 6):
            await producer.append(json.dumps([{"n": i}]))
            await page.wait_for_function(f"() => window.official.length >= {i + 1}", timeout=20_000)
    assert await page.evaluate("() => window.official") == [{"n": i} for i in range(6)]
    await page.evaluate("() => window.officialRes.cancel()")
    assert [e for e in page.errors if "official" in e] == []  # type: ignore[attr-defined]
