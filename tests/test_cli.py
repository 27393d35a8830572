"""The ``durasync`` command line: parser, listening line, graceful SIGTERM."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from durasync.cli import build_parser, main
from streams.serverproc import start_server


def test_help_lists_serve_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in [
        "--host",
        "--port",
        "--data",
        "--memory",
        "--long-poll-timeout",
        "--auth-secret",
        "--max-body-bytes",
        "--log-level",
    ]:
        assert option in out


def test_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.memory) == ("127.0.0.1", 4437, False)
    assert args.data == Path("./durasync-data")
    assert args.long_poll_timeout == 30.0


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "70000"],
        ["serve", "--long-poll-timeout", "0"],
        ["serve", "--long-poll-timeout", "nan"],
        ["serve", "--max-body-bytes", "-5"],
        ["serve", "--memory", "--data", "x"],
        ["serve", "--log-level", "loud"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


def test_listening_line_memory_and_sigterm() -> None:
    server = start_server("--port", "0", "--memory")
    try:
        assert server.store_label == "memory"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        assert not server.url.endswith(":0")
        lines = [line for line in server.output if "listening" in line]
        assert lines == [f"durasync listening on {server.url} (store: memory)\n"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        assert server.stop() == 0


def test_listening_line_embedded(tmp_path: Path) -> None:
    data = tmp_path / "store"
    server = start_server("--port", "0", "--data", str(data), "--auth-secret", "s" * 32)
    try:
        assert server.store_label == f"embedded at {data.resolve()}"
        r = httpx.get(f"{server.url}/v1/stream/x")
        assert r.status_code == 401
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("second", ["redis", "locked"])
def test_store_that_cannot_open_is_one_clear_line(tmp_path: Path, second: str) -> None:
    first = None
    if second == "redis":
        # Nothing listens on a port we just bound and released: Redis is "down".
        from redisproc import free_port

        store_args = ["--redis", f"redis://127.0.0.1:{free_port()}/0"]
    else:
        data = tmp_path / "store"
        first = start_server("--port", "0", "--data", str(data))
        store_args = ["--data", str(data)]
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "durasync", "serve", "--port", "0", *store_args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode != 0
        assert "cannot open the store" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert "listening" not in proc.stderr
    finally:
        if first is not None:
            assert first.stop() == 0


def test_port_in_use_fails_without_listening_line() -> None:
    first = start_server("--port", "0", "--memory")
    try:
        port = first.url.rsplit(":", 1)[1]
        proc = subprocess.run(
            [sys.executable, "-m", "durasync", "serve", "--memory", "--port", port],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode != 0
        assert "listening" not in proc.stderr
    finally:
        assert first.stop() == 0


@pytest.mark.parametrize(("flags", "negotiated"), [((), False), (("--ws-compression",), True)])
def test_ws_compression_off_by_default(flags: tuple[str, ...], negotiated: bool) -> None:
    """permessage-deflate is offered to clients only with --ws-compression (bench/README.md)."""
    from websockets.sync.client import connect

    server = start_server("--port", "0", "--memory", *flags)
    try:
        url = server.url.replace("http://", "ws://", 1) + "/v1/rooms/r?client=a&format=json"
        with connect(url, compression="deflate", open_timeout=10) as ws:
            assert '"mtype":"state"' in str(ws.recv(timeout=10))
            ext = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            assert ("permessage-deflate" in ext) is negotiated
    finally:
        assert server.stop() == 0
