"""``/js/durasync.mjs``: served from the package (``durasync/static``), 404 with the fix when
the bundle was not built, conditional GET, HEAD, CORS."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from durasync import browser_bundle
from durasync.server import create_app
from durasync.store.memory import MemoryStore


def _client() -> httpx.AsyncClient:
    app = create_app(MemoryStore())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_unbuilt_bundle_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(browser_bundle, "BUNDLE_DIR", tmp_path)
    async with _client() as c:
        r = await c.get("/js/durasync.mjs")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "BUNDLE_NOT_BUILT"
    assert "make js-build" in r.json()["error"]["message"]


async def test_bundle_served_with_etag_head_and_cors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "durasync.mjs").write_text("export const x = 1;\n")
    monkeypatch.setattr(browser_bundle, "BUNDLE_DIR", tmp_path)
    async with _client() as c:
        r = await c.get("/js/durasync.mjs", headers={"Origin": "http://elsewhere"})
        assert r.status_code == 200 and r.text == "export const x = 1;\n"
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["cache-control"] == "no-cache"
        same = await c.get("/js/durasync.mjs", headers={"If-None-Match": r.headers["etag"]})
        assert same.status_code == 304 and same.content == b""
        head = await c.head("/js/durasync.mjs")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(r.content))
        for bad in ("/js/../server.py", "/js/x.js", "/js/durasync.mjs.map"):
            assert (await c.get(bad)).status_code == 404
