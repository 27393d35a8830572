"""The inspector page (``/inspect/``, durasync/inspector/) in headless Chromium, against a real
``durasync serve --auth-secret``: without a token it shows nothing; a token that reads
everything sees a stream the test created and a message appended after the page loaded, a
room's members and graph; a token limited to a prefix sees only that prefix.

Debian's chromium driven by Playwright (``browser_contexts`` of tests/conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import jwt
import msgspec
import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, expect
from websockets.asyncio.client import connect

from browsers import watch_errors
from helpers import ServerProcess, free_port
from rooms.test_e2e import msg

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Tokens made at import time must outlive a whole `make test` run: valid for a day.
SECRET = "inspector-test-secret-0123456789abcdef"
TIMEOUT_MS = 15_000


def token(**claims: object) -> str:
    return jwt.encode({"exp": time.time() + 86_400, **claims}, SECRET, algorithm="HS256")


ALL = token(sub="ops", read=[""], write=[""])
TEAM_A = token(sub="a", read=["stream/team-a/"])
#: The bearer token of the server's replication link (to a port nothing listens on).
LINK_TOKEN = "link-token-never-shown-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    links = tmp_path_factory.mktemp("inspector") / "links.toml"
    links.write_text(
        f'[[links]]\nname = "to-cloud"\nremote = "http://127.0.0.1:{free_port()}"\n'
        f'token = "{LINK_TOKEN}"\npull = ["mirrored/"]\n'
    )
    proc = ServerProcess(
        ["--port", "0", "--memory", "--long-poll-timeout", "5", "--replicate", str(links)],
        env={"DURASYNC_AUTH_SECRET": SECRET},
    )
    try:
        yield proc
    finally:
        assert proc.stop() == 0, "".join(proc.output[-30:])


@pytest_asyncio.fixture(loop_scope="module")
async def page(
    browser_contexts: Callable[..., Awaitable[BrowserContext]], server: ServerProcess
) -> AsyncIterator[Page]:
    context = await browser_contexts()
    p = await context.new_page()
    errors = watch_errors(p)
    await p.goto(server.url + "/inspect/")
    yield p
    # 401s of the no-token phase are the page's expected answers, not errors of the page.
    assert not [e for e in errors if "401" not in e], errors


async def use_token(page: Page, value: str) -> None:
    await page.fill("#token", value)
    await page.click("#use-token")


def put(server: ServerProcess, path: str, body: bytes = b"") -> None:
    r = httpx.put(
        f"{server.url}/v1/stream/{path}",
        content=body,
        headers={"authorization": f"Bearer {ALL}", "content-type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 201, r.text


def post(server: ServerProcess, path: str, body: bytes) -> None:
    r = httpx.post(
        f"{server.url}/v1/stream/{path}",
        content=body,
        headers={"authorization": f"Bearer {ALL}", "content-type": "application/json"},
        timeout=5,
    )
    assert r.status_code == 204, r.text


async def test_streams_and_a_live_tail(page: Page, server: ServerProcess) -> None:
    put(server, "team-a/orders", b'[{"n": 1}]')
    put(server, "team-b/secret", b'[{"hidden": true}]')
    rows = page.locator("#streams tbody tr")
    # No token: the server answers 401 and the page shows nothing.
    await expect(page.locator("#status")).to_contain_text("token", timeout=TIMEOUT_MS)
    await expect(rows).to_have_count(0)
    assert await page.locator("#node").text_content() == ""

    await use_token(page, ALL)
    await expect(page.locator("#streams tbody tr[data-path='team-a/orders']")).to_have_count(
        1, timeout=TIMEOUT_MS
    )
    row = page.locator("#streams tbody tr[data-path='team-b/secret']")
    await expect(row).to_have_count(1)
    await expect(page.locator("#node")).to_contain_text("store memory")

    await page.click("#streams tbody tr[data-path='team-a/orders']")
    tail = page.locator("#tail")
    await expect(tail).to_contain_text('{"n":1}', timeout=TIMEOUT_MS)
    # Appended after the page loaded and started tailing: arrives through the long-poll.
    post(server, "team-a/orders", b'{"n": 2, "late": "yes"}')
    await expect(tail).to_contain_text('{"n":2,"late":"yes"}', timeout=TIMEOUT_MS)
    count_cell = page.locator("#streams tbody tr[data-path='team-a/orders'] td").nth(2)
    await expect(count_cell).to_have_text("2", timeout=TIMEOUT_MS)

    # A token limited to team-a/ sees only that prefix.
    await use_token(page, TEAM_A)
    await expect(page.locator("#streams tbody tr[data-path='team-a/orders']")).to_have_count(
        1, timeout=TIMEOUT_MS
    )
    await expect(page.locator("#streams tbody tr[data-path='team-b/secret']")).to_have_count(0)
    paths = await page.locator("#streams tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.path)"
    )
    assert paths and all(p.startswith("team-a/") for p in paths)


async def test_a_room_with_members_and_graph(page: Page, server: ServerProcess) -> None:
    base = server.url.replace("http://", "ws://") + "/v1/rooms/inspected"
    async with (
        connect(f"{base}?client=alice&token={ALL}") as alice,
        connect(f"{base}?client=bob&token={ALL}") as bob,
    ):
        await alice.recv()  # state
        await bob.recv()
        op = {
            "ot": "node.insert",
            "key": "",
            "path": "children",
            "value": {"key": "cube-1", "tag": "Mesh", "name": "the cube"},
        }
        await alice.send(msgspec.msgpack.encode({"mtype": "crdt", "msg": msg("alice", 1, [op])}))
        while msgspec.msgpack.decode(await alice.recv())["mtype"] != "ack":
            pass

        await use_token(page, ALL)
        await page.click("#rooms tbody tr[data-room='inspected']", timeout=TIMEOUT_MS)
        info = page.locator("#room-info")
        await expect(info).to_contain_text("serverSeq 1", timeout=TIMEOUT_MS)
        await expect(info).to_contain_text("alice")
        await expect(info).to_contain_text("bob")
        await expect(page.locator("#room-graph")).to_contain_text(
            "cube-1 <Mesh> the cube", timeout=TIMEOUT_MS
        )
        await expect(page.locator("#journal")).to_contain_text("cube-1", timeout=TIMEOUT_MS)

        # Without rights on rooms (a streams-only token) the room is not listed.
        await use_token(page, TEAM_A)
        await expect(page.locator("#rooms tbody tr")).to_have_count(0, timeout=TIMEOUT_MS)


async def test_the_replication_links_without_their_token(page: Page) -> None:
    await use_token(page, ALL)
    row = page.locator("#links tbody tr")
    await expect(row).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(row.locator("td").nth(0)).to_have_text("to-cloud")
    await expect(row.locator("td").nth(1)).to_contain_text("http://127.0.0.1:")
    # Nothing listens at the remote: the link never gets past initializing.
    await expect(row.locator("td").nth(2)).to_have_text("initializing")
    await expect(row.locator("td").nth(3)).to_have_text("offline", timeout=TIMEOUT_MS)
    assert LINK_TOKEN not in await page.content()
