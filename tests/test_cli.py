"""The ``durasync`` command line: parser, listening line, graceful SIGTERM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from durasync.cli import build_parser, main
from helpers import ServerProcess, start_server


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
        from helpers import free_port

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


# -- secrets and settings from the environment and a config file --------------------------

LONG_SECRET = "an-auth-secret-of-at-least-32-bytes!"


def _serve(argv: list[str], env: dict[str, str] | None = None) -> Any:
    from durasync.cli import resolve_serve_args

    return resolve_serve_args(argv, env or {})


def test_help_says_where_secrets_can_come_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("DURASYNC_AUTH_SECRET", "DURASYNC_REDIS_URL", "--config", "--cors-origin"):
        assert text in out


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "durasync.toml"
    config.write_text(
        f'long-poll-timeout = 5\nauth-secret = "file-{LONG_SECRET}"\nmemory = true\n'
        'cors-origin = ["https://a.example", "https://b.example"]\nroom-rate = 50\n'
    )
    env = {"DURASYNC_AUTH_SECRET": f"env-{LONG_SECRET}"}
    args = _serve(["--config", str(config)], env)
    assert args.long_poll_timeout == 5.0  # file over default
    assert args.auth_secret == f"env-{LONG_SECRET}"  # env over file
    assert args.memory is True and args.redis is None
    assert args.cors_origin == ["https://a.example", "https://b.example"]
    assert args.room_rate == 50.0
    assert args.host == "127.0.0.1"  # default
    args = _serve(
        [
            "--config",
            str(config),
            "--long-poll-timeout",
            "7",
            "--auth-secret",
            f"flag-{LONG_SECRET}",
        ],
        env,
    )
    assert args.long_poll_timeout == 7.0 and args.auth_secret == f"flag-{LONG_SECRET}"
    # No config, no env: the parser's defaults.
    args = _serve([])
    assert (args.auth_secret, args.redis, args.long_poll_timeout) == (None, None, 30.0)


def test_store_choice_follows_the_same_precedence(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('data = "/tmp/from-file"\n')
    env = {"DURASYNC_REDIS_URL": "redis://:pw@127.0.0.1:6399/0"}
    assert _serve(["--config", str(config)]).data == Path("/tmp/from-file")
    args = _serve(["--config", str(config)], env)
    assert args.redis == env["DURASYNC_REDIS_URL"]  # env over file
    args = _serve(["--config", str(config), "--memory"], env)
    assert args.memory is True and args.redis is None  # a store flag over env and file
    args = _serve(["--data", "/tmp/flag"], env)
    assert args.redis is None and args.data == Path("/tmp/flag")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("long-poll-timeout = ", "not valid TOML"),
        ("nope = 1\n", "unknown key 'nope'"),
        ('long-poll-timeout = "soon"\n', "long-poll-timeout"),
        ("long-poll-timeout = -1\n", "long-poll-timeout"),
        ("memory = 1\n", "memory"),
        ('cors-origin = "https://a.example"\n', "cors-origin"),
        ('log-level = "loud"\n', "log-level"),
        ('memory = true\nredis = "redis://127.0.0.1:1/0"\n', "one of"),
        ('auth-secret = "short"\n', "32 bytes"),
        ("config = 'other.toml'\n", "unknown key 'config'"),
    ],
)
def test_bad_config_file_stops_serve_with_one_line(
    tmp_path: Path, content: str, problem: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "durasync", "serve", "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(config) in lines[0] and problem in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and "listening" not in proc.stderr


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "durasync", "serve", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "none.toml" in proc.stderr


@pytest.mark.parametrize("where", ["flag", "env"])
def test_short_auth_secret_is_refused_clearly(where: str) -> None:
    argv = [sys.executable, "-m", "durasync", "serve", "--port", "0", "--memory"]
    env = dict(os.environ)
    if where == "flag":
        argv += ["--auth-secret", "secret"]
    else:
        env["DURASYNC_AUTH_SECRET"] = "secret"
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "at least 32 bytes" in lines[0], proc.stderr
    assert "Warning" not in proc.stderr and "listening" not in proc.stderr


def test_secrets_from_env_and_config_reach_the_server(tmp_path: Path) -> None:
    import jwt

    config = tmp_path / "durasync.toml"
    config.write_text("memory = true\nlong-poll-timeout = 0.5\n")
    env = {"DURASYNC_AUTH_SECRET": LONG_SECRET}
    server = ServerProcess(["--port", "0", "--config", str(config)], env=env)
    try:
        assert server.store_label == "memory"
        assert LONG_SECRET not in " ".join(server.proc.args)  # not visible in ps
        assert httpx.put(f"{server.url}/v1/stream/a").status_code == 401
        token = jwt.encode({"write": ["stream/"]}, LONG_SECRET, algorithm="HS256")
        r = httpx.put(f"{server.url}/v1/stream/a", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 201
    finally:
        assert server.stop() == 0


def test_serve_help_covers_rooms_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "/v1/rooms/<room>" in out and "--room-rate" in out
    assert "Exit status: 0" in out and "3 could not start" in out and "port is in use" in out


def test_unknown_serve_option_shows_serves_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: durasync serve ") and "unrecognized arguments: --bogus" in err


def test_data_path_that_is_a_file_exits_3_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "durasync", "serve", "--port", "0", "--data", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 3  # as documented in serve --help
    assert f"{path}: not a directory" in proc.stderr and "Errno" not in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_websocket_to_a_path_without_endpoint_is_404() -> None:
    import websockets

    server = start_server("--port", "0", "--memory")
    try:
        ws_url = server.url.replace("http://", "ws://")
        for path in ("/v1/stream/x", "/nowhere"):
            with pytest.raises(websockets.InvalidStatus) as exc:
                async with websockets.connect(ws_url + path):
                    pass
            assert exc.value.response.status_code == 404, path
            assert b"NOT_FOUND" in exc.value.response.body
    finally:
        assert server.stop() == 0


def test_shutdown_is_announced() -> None:
    server = start_server("--port", "0", "--memory")
    assert server.stop() == 0
    out = "".join(server.output)
    assert "durasync shutting down (SIGTERM)\n" in out
    assert out.endswith("durasync stopped\n"), out[-500:]
