"""``serve --replicate`` (a bad file; SIGHUP reload and SIGTERM with real processes) and
``durasync links`` (its main, against a real server)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from durasync.cli import main

from .helpers import eventually
from .procs import Serve
from .test_e2e_streams import write_links

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[links]]\nname = 'x'\nremote = 'http://127.0.0.1:1'\n", "at least one of"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_replicate_file_stops_serve_with_one_line(
    tmp_path: Path, text: str, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process (the console script's main): serve stops before it binds anything.
    conf = tmp_path / "links.toml"
    conf.write_text(text)
    assert main(["serve", "--memory", "--port", "0", "--replicate", str(conf)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(conf) in lines[0]
    missing = tmp_path / "none"
    assert main(["serve", "--memory", "--port", "0", "--replicate", str(missing)]) == 2
    assert "cannot read" in capsys.readouterr().err


async def test_sighup_reloads_links_and_a_bad_file_keeps_them(
    serve: Callable[..., Serve], tmp_path: Path, capsys: pytest.CaptureFixture[str]
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
        # The CLI (its main, in a thread: it blocks on HTTP): table, pause, resume.

        async def cli(*args: str) -> tuple[int, str, str]:
            code = await asyncio.to_thread(main, ["links", *args])
            out, err = capsys.readouterr()
            return code, out, err

        code, out, err = await cli(edge.url)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:2] == ["NAME", "STATUS"]
        assert {line.split()[0] for line in lines[1:]} == {"a", "b"}
        code, out, _ = await cli("pause", "b", edge.url)
        assert code == 0 and "paused" in out
        r = await http.get(edge.url + "/v1/replication/links")
        assert {link["name"]: link["status"] for link in r.json()["links"]}["b"] == "paused"
        code, _, _ = await cli("resume", "b", edge.url)
        assert code == 0
        code, _, err = await cli("pause", "zz", edge.url)
        assert code == 1 and "404" in err
        code, out, _ = await cli("dead", "a", edge.url)
        assert code == 0 and "no dead letters" in out


async def _logged(server: Serve, needle: str) -> bool:
    return any(needle in line for line in server.output)


def test_links_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["links", "pause"]) == 2
    assert main(["links", "ftp://x"]) == 2
    assert main(["links", "http://127.0.0.1:9", "--timeout", "2"]) == 1
    assert "cannot reach" in capsys.readouterr().err


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
