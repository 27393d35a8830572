"""``serve --replicate``, SIGHUP reload and ``durasync links`` with real processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .helpers import eventually
from .procs import Serve
from .test_e2e_streams import write_links

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durasync", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[links]]\nname = 'x'\nremote = 'http://127.0.0.1:1'\n", "at least one of"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_replicate_file_stops_serve_with_one_line(
    tmp_path: Path, text: str, needle: str
) -> None:
    conf = tmp_path / "links.toml"
    conf.write_text(text)
    done = run_cli("serve", "--memory", "--port", "0", "--replicate", str(conf))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(conf) in lines[0]
    missing = run_cli("serve", "--memory", "--port", "0", "--replicate", str(tmp_path / "none"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


async def test_sighup_reloads_links_and_a_bad_file_keeps_them(
    serve: Callable[..., Serve], tmp_path: Path
) -> None:
    source = serve("source")
    conf = write_links(tmp_path / "edge.toml", {"name": "a", "remote": source.url, "pull": ["a/"]})
    edge = serve("edge", replicate=conf)
    async with httpx.AsyncClient(timeout=10) as http:
        for p in ("a/1", "b/1"):
            await http.put(source.base + p, headers={"Content-Type": "text/plain"})
            await http.post(source.base + p, content=b"x", headers={"Content-Type": "text/plain"})

        async def names() -> list[str]:
            r = await http.get(edge.url + "/v1/replication/links")
            return [link["name"] for link in r.json()["links"]]

        async def exists(path: str) -> bool:
            return (await http.head(edge.base + path)).status_code == 200

        await eventually(lambda: exists("a/1"))
        assert await names() == ["a"]
        write_links(
            conf,
            {"name": "a", "remote": source.url, "pull": ["a/"]},
            {"name": "b", "remote": source.url, "pull": ["b/"]},
        )
        edge.signal(signal.SIGHUP)
        await eventually(lambda: exists("b/1"))
        assert await names() == ["a", "b"]
        conf.write_text("[[links]]\nbroken")
        edge.signal(signal.SIGHUP)
        await eventually(lambda: _logged(edge, "SIGHUP"))
        assert await names() == ["a", "b"]  # the running links stay
        # The CLI: table, pause, resume.
        table = await asyncio.to_thread(run_cli, "links", edge.url)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].split()[:2] == ["NAME", "STATUS"]
        assert {line.split()[0] for line in lines[1:]} == {"a", "b"}
        paused = await asyncio.to_thread(run_cli, "links", "pause", "b", edge.url)
        assert paused.returncode == 0 and "paused" in paused.stdout
        table = await asyncio.to_thread(run_cli, "links", edge.url)
        assert any(line.split()[:2] == ["b", "paused"] for line in table.stdout.splitlines())
        resumed = await asyncio.to_thread(run_cli, "links", "resume", "b", edge.url)
        assert resumed.returncode == 0
        unknown = await asyncio.to_thread(run_cli, "links", "pause", "zz", edge.url)
        assert unknown.returncode == 1 and "404" in unknown.stderr
        dead = await asyncio.to_thread(run_cli, "links", "dead", "a", edge.url)
        assert dead.returncode == 0 and "no dead letters" in dead.stdout


async def _logged(server: Serve, needle: str) -> bool:
    return any(needle in line for line in server.output)


def test_links_cli_usage_errors() -> None:
    assert run_cli("links", "pause").returncode == 2
    assert run_cli("links", "ftp://x").returncode == 2
    unreachable = run_cli("links", "http://127.0.0.1:9", "--timeout", "2")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


async def test_sigterm_ends_open_peer_reads_and_event_streams_at_once(
    serve: Callable[..., Serve],
) -> None:
    server = serve("s")
    async with httpx.AsyncClient(timeout=30) as http:
        await http.put(server.base + "a", headers={"Content-Type": "text/plain"})
        async with (
            http.stream("GET", server.url + "/v1/replication/events") as events,
            http.stream(
                "GET",
                server.url + "/v1/replication/streams/a",
                params={"offset": "-1", "live": "stream", "wait": "30"},
            ) as frames,
        ):
            assert events.status_code == 200 and frames.status_code == 200
            server.signal(signal.SIGTERM)
            # Both responses end (cleanly) instead of holding the graceful shutdown.
            async for _ in events.aiter_bytes():
                pass
            async for _ in frames.aiter_bytes():
                pass
    assert server.proc is not None
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    assert "graceful shutdown exceeded" not in server.log()
