"""Structured logs of ``durasync serve`` (durasync/logs.py): ``--log-format json`` gives one
JSON object per stderr line, an access line per request and per WebSocket connection, the
lifecycle lines, and never a token (header or ``?token=``)."""

from __future__ import annotations

import json
import logging
import time

import httpx
import jwt
from websockets.asyncio.client import connect

from durasync.logs import ACCESS_LOGGER, RedactTokens, RequestLog, TextFormatter
from durasync.metrics import Metrics
from helpers import ServerProcess

SECRET = "ops-log-test-secret-0123456789abcdef"


def token(**claims: object) -> str:
    return jwt.encode({"exp": time.time() + 86_400, **claims}, SECRET, algorithm="HS256")


async def test_json_lines_with_access_lines_and_no_token() -> None:
    write = token(sub="w", read=[""], write=[""])
    proc = ServerProcess(
        ["--port", "0", "--memory", "--log-format", "json", "--log-level", "info"],
        env={"DURASYNC_AUTH_SECRET": SECRET},
    )
    try:
        auth = {"authorization": f"Bearer {write}"}
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            r = await client.put(
                "/v1/stream/logs/a", headers={**auth, "content-type": "text/plain"}
            )
            assert r.status_code == 201
            plain = {**auth, "content-type": "text/plain"}
            r = await client.post("/v1/stream/logs/a", content=b"hello", headers=plain)
            assert r.status_code == 204
            r = await client.get("/v1/stream/logs/a?offset=-1", headers=auth)
            assert r.status_code == 200 and r.content == b"hello"
            assert (await client.get("/v1/stream/logs/a")).status_code == 401
            r = await client.get(f"/v1/stream/logs/a?offset=-1&token={write}")
            assert r.status_code == 200
        ws_url = proc.url.replace("http://", "ws://") + f"/v1/rooms/logroom?client=c&token={write}"
        async with connect(ws_url) as ws:
            await ws.recv()  # the state frame: joined
    finally:
        assert proc.stop() == 0
    lines = [line for line in proc.output if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    for r in records:
        assert isinstance(r, dict) and {"ts", "level", "logger", "msg"} <= r.keys()
    events = [r.get("event") for r in records]
    for lifecycle in ("listening", "store_opened", "room_loaded", "shutdown"):
        assert lifecycle in events, lifecycle
    access = [r for r in records if r.get("event") == "access"]
    seen = [(r["method"], r["route"], r["status"]) for r in access]
    assert seen == [
        ("PUT", "/v1/stream/{path}", 201),
        ("POST", "/v1/stream/{path}", 204),
        ("GET", "/v1/stream/{path}", 200),
        ("GET", "/v1/stream/{path}", 401),
        ("GET", "/v1/stream/{path}", 200),
        ("WS", "/v1/rooms/{room}", 1000),
    ]
    for r in access:
        assert isinstance(r["id"], str) and r["id"]
        assert isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0
        assert isinstance(r["bytes"], int)
    assert len({r["id"] for r in access}) == len(access)
    assert access[2]["bytes"] == len(b"hello")
    # The token never shows, neither from the header nor from the query string.
    output = "".join(proc.output)
    assert write not in output
    assert write.split(".")[2] not in output  # not even its signature
    assert SECRET not in output
    assert "logs/a" not in output  # raw paths are not logged either, only route templates


def test_text_format_access_line() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    access = logging.getLogger(ACCESS_LOGGER)
    access.addHandler(handler)
    old_level = access.level
    access.setLevel(logging.INFO)
    try:
        request_log = RequestLog(Metrics(enabled=False))
        request_log.request_done(
            {"method": "GET", "path": "/v1/stream/secret/path", "query_string": b"token=abc"},
            200,
            12,
            0.0015,
        )
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    (record,) = records
    line = TextFormatter().format(record)
    assert "GET /v1/stream/{path} 200" in line
    assert "route=/v1/stream/{path}" in line and "bytes=12" in line and "duration_ms=1.5" in line
    assert "secret" not in line and "abc" not in line


def test_redaction_of_tokens_in_other_libraries_lines() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, "", 0, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:1", "/v1/rooms/r?client=c&token=abc.def.ghi"), None,
    )  # fmt: skip
    RedactTokens().filter(record)
    assert record.getMessage() == (
        '127.0.0.1:1 - "WebSocket /v1/rooms/r?client=c&token=[redacted]" [accepted]'
    )
    record = logging.LogRecord(
        "x", logging.INFO, "", 0, "header Authorization: Bearer abc.def", None, None
    )
    RedactTokens().filter(record)
    assert record.getMessage() == "header Authorization: Bearer [redacted]"
