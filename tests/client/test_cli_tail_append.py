"""``durasync tail`` / ``durasync append`` as subprocesses against a real ``durasync serve``.

Every process a test starts (servers, ``tail``, ``append``) is registered and stopped by its PID
in a fixture's teardown, whatever the test did; children start with SIGINT at its default, so
the Ctrl-C tests do not depend on a parent shell that ignores SIGINT (a background job).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from faultproxy import FaultPlan, FaultProxy

from .servers import ServerProc

CLI = [sys.executable, "-m", "durasync"]
_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProc]:
    proc = ServerProc("durasync")
    try:
        yield proc
    finally:
        proc.stop()


#: CLI processes started by the running test; the autouse fixture below stops them.
_children: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def _stop_children() -> AsyncIterator[None]:
    """Kill (by PID) and reap every CLI process the test started and left running."""
    _children.clear()
    try:
        yield
    finally:
        for proc in _children:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        _children.clear()


@pytest.fixture
def servers() -> Iterator[Callable[..., ServerProc]]:
    """Starts ``durasync serve`` processes (ServerProc's arguments); all stopped at teardown."""
    started: list[ServerProc] = []

    def start(**kwargs: object) -> ServerProc:
        proc = ServerProc("durasync", **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop(signal.SIGKILL)


def _default_sigint() -> None:
    # In the child before exec: a parent that ignores SIGINT (a shell's background job) must
    # not make the CLI ignore it too, or the Ctrl-C tests would test the shell.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def _spawn(*args: str, stdin: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_ENV,
        preexec_fn=_default_sigint,
    )
    _children.append(proc)
    return proc


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


_n = iter(range(10**6))


def url(server: ServerProc, tag: str) -> str:
    return f"{server.base}cli-{tag}-{next(_n)}"


async def run(
    *args: str, stdin: bytes | None = None, limit: float = 30.0
) -> tuple[int, bytes, str]:
    """Run the CLI to completion: (exit code, stdout, stderr)."""
    proc = await _spawn(
        *args, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL
    )
    async with asyncio.timeout(limit):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


class Tail:
    """A running ``durasync tail``; collects stdout lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str) -> Tail:
        return cls(await _spawn("tail", *args, stdin=asyncio.subprocess.DEVNULL))

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line)
            self._changed.set()
        self._changed.set()

    async def wait_lines(self, n: int, limit: float = 20.0) -> list[bytes]:
        async with asyncio.timeout(limit):
            while len(self.lines) < n:
                self._changed.clear()
                if self.proc.returncode is not None and self._reader.done():
                    break
                await self._changed.wait()
        assert len(self.lines) >= n, (self.lines, await self.stderr())
        return self.lines

    async def stderr(self) -> str:
        if self.proc.returncode is None:
            return ""
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode()

    async def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: returns (exit code, stderr). A tail that does not exit is killed by the
        fixture."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            await self.proc.wait()
            await self._reader
        assert self.proc.returncode is not None
        return self.proc.returncode, await self.stderr()


# -- append + tail to the end ---------------------------------------------------------


async def test_append_data_and_stdin_lines_then_tail(server: ServerProc) -> None:
    u = url(server, "text")
    rc, _, err = await run("append", u, "--create", "--content-type", "text/plain", "one\n")
    assert rc == 0 and re.fullmatch(r"appended 1 message \(4 bytes\) in \d+\.\d\d s\n", err)
    rc, _, err = await run("append", u, stdin=b"two\nthree\n\nfour")
    assert rc == 0 and re.fullmatch(r"appended 4 messages \(15 bytes\) in \d+\.\d\d s\n", err)
    rc, out, err = await run("tail", u, "--until-up-to-date")
    assert (rc, err) == (0, "")
    assert out == b"one\ntwo\nthree\n\nfour"


async def test_json_stream_one_message_per_line(server: ServerProc) -> None:
    u = url(server, "json")
    ct = ["--content-type", "application/json"]
    assert (await run("append", u, "--create", *ct, "[1, 2]"))[0] == 0  # one message: the array
    lines = b'{"a": 1}\n\n"x"\n' + b"".join(b'{"i": %d}\n' % i for i in range(2500))
    rc, _, err = await run("append", u, "--quiet", stdin=lines)
    assert (rc, err) == (0, "")  # --quiet: no summary line
    rc, out, _ = await run("tail", u, "--until-up-to-date", "--json")
    assert rc == 0
    got = out.decode().splitlines()
    assert got[:3] == ["[1,2]", '{"a":1}', '"x"']
    assert [json.loads(x)["i"] for x in got[3:]] == list(range(2500))


async def test_binary_stream_raw_to_pipe_and_json_base64(server: ServerProc) -> None:
    u = url(server, "bin")
    blob = bytes(range(256)) * 4  # no trailing newline: a single "line"
    rc, _, err = await run("append", u, "--create", stdin=blob)
    assert rc == 0 and err.startswith("appended 5 messages (1024 bytes)")  # 4 b"\n" in blob
    rc, out, _ = await run("tail", u, "--until-up-to-date")
    assert rc == 0 and out == blob  # unchanged bytes when stdout is a pipe
    rc, out, _ = await run("tail", u, "--until-up-to-date", "--json")
    docs = [json.loads(x) for x in out.decode().splitlines()]
    import base64

    assert b"".join(base64.b64decode(d["base64"]) for d in docs) == blob
    assert docs[0]["offset"] == "-1"


# -- errors ---------------------------------------------------------------------------


async def test_usage_and_failure_exit_codes(server: ServerProc) -> None:
    rc, _, err = await run("tail", "ftp://example/x")
    assert rc == 2 and "not an http(s) stream URL" in err
    rc, _, err = await run("append", server.url + "/")
    assert rc == 2 and "names no stream" in err
    rc, _, err = await run("tail", url(server, "missing"), "--until-up-to-date")
    assert rc == 1 and "stream not found" in err and "Traceback" not in err
    rc, _, err = await run("append", url(server, "missing"), "x")
    assert rc == 1 and "use --create" in err
    u = url(server, "badjson")
    await run("append", u, "--create", "--content-type", "application/json", "1")
    rc, _, err = await run("append", u, stdin=b"2\nnot json\n")
    assert rc == 1 and "line 2 is not JSON" in err and "Traceback" not in err
    rc, _, err = await run("append", u, "not json")
    assert rc == 1 and err.startswith("durasync append: DATA is not JSON: "), err
    rc, _, err = await run("append", u, "--content-type", "text/plain", "x")
    assert rc == 1 and "409" in err  # the server's content-type check, reported
    rc, out, _ = await run("tail", "--help")
    assert rc == 0 and b"--checkpoint" in out


async def test_bad_line_in_the_middle_says_what_was_appended(server: ServerProc) -> None:
    u = url(server, "badmiddle")
    await run("append", u, "--create", "--content-type", "application/json")
    good = b"".join(b"%d\n" % i for i in range(1, 2501))  # lines 1-2500, over two POSTs
    rc, _, err = await run("append", u, stdin=good + b"{oops\n2502\n")
    assert rc == 1
    assert "stdin line 2501 is not JSON" in err, err
    assert "lines 1-2500 were appended, line 2501 and after were not" in err, err
    rc, out, _ = await run("tail", u, "--until-up-to-date")
    assert out == good  # exactly the lines the message names
    rc, _, err = await run("append", u, stdin=b"[\n")
    assert rc == 1 and "stdin line 1 is not JSON" in err and "nothing was appended" in err


async def test_append_to_a_server_that_is_down_names_the_url() -> None:
    down = f"http://127.0.0.1:{closed_port()}/v1/stream/x"
    rc, _, err = await run("append", down, "x", limit=60)
    assert rc == 1
    assert err.startswith(f"durasync append: cannot reach {down}: ConnectError"), err


# -- live tail ------------------------------------------------------------------------


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_tail_prints_live_messages_and_ctrl_c_exits_cleanly(
    server: ServerProc, live: str
) -> None:
    u = url(server, "live")
    await run("append", u, "--create", "--content-type", "application/json", '"first"')
    tail = await Tail.start(u, "--live", live)
    await tail.wait_lines(1)
    for i in range(3):
        assert (await run("append", u, json.dumps({"n": i})))[0] == 0
        await tail.wait_lines(2 + i)
    rc, err = await tail.interrupt()
    assert tail.lines == [b'"first"\n', b'{"n":0}\n', b'{"n":1}\n', b'{"n":2}\n']
    assert rc == 130 and "Traceback" not in err


async def test_checkpoint_resumes_where_the_last_run_stopped(
    server: ServerProc, tmp_path: Path
) -> None:
    u = url(server, "ckpt")
    ckpt = tmp_path / "offset.json"
    await run("append", u, "--create", stdin=b"a\nb\n")
    tail = await Tail.start(u, "--checkpoint", str(ckpt))
    await tail.wait_lines(1)
    await run("append", u, "c\n")
    await tail.wait_lines(2)
    rc, _ = await tail.interrupt()
    assert rc == 130
    assert b"".join(tail.lines) == b"a\nb\nc\n"
    await run("append", u, stdin=b"d\ne\n")
    rc, out, _ = await run("tail", u, "--checkpoint", str(ckpt), "--until-up-to-date")
    assert rc == 0 and out == b"d\ne\n"  # nothing printed twice
    assert json.loads(ckpt.read_text())["offset"]


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_tail_survives_server_kill_and_restart(
    tmp_path: Path, live: str, servers: Callable[..., ServerProc]
) -> None:
    data = tmp_path / "data"
    srv = servers(data_dir=data)
    port = srv.port
    u = f"{srv.base}restart"
    assert (await run("append", u, "--create", stdin=b"0\n1\n"))[0] == 0
    tail = await Tail.start(u, "--live", live)
    await tail.wait_lines(2)
    srv.stop(signal.SIGKILL)
    # The tail keeps retrying while the server is gone, then resumes.
    srv = servers(port=port, data_dir=data)
    assert (await run("append", u, stdin=b"2\n3\n"))[0] == 0
    await tail.wait_lines(4, limit=30)
    assert tail.proc.returncode is None
    rc, err = await tail.interrupt()
    assert tail.lines == [b"0\n", b"1\n", b"2\n", b"3\n"]
    assert rc == 130
    # Each retry while the server was down said so, with the URL and the reason.
    assert f"cannot reach {u}" in err and "retrying in" in err, err


async def test_ctrl_c_works_when_the_parent_ignores_sigint(server: ServerProc) -> None:
    """A shell's background job ignores SIGINT and its children inherit that; the tests'
    children must still get Ctrl-C (their SIGINT is reset before exec)."""
    u = url(server, "sigign")
    await run("append", u, "--create", stdin=b"a\n")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        tail = await Tail.start(u)
    finally:
        signal.signal(signal.SIGINT, previous)
    await tail.wait_lines(1)
    rc, _ = await tail.interrupt()
    assert rc == 130


async def test_tail_reports_retries_and_gives_up() -> None:
    down = f"http://127.0.0.1:{closed_port()}/v1/stream/nothing-here"
    rc, out, err = await run("tail", down, "--give-up-after", "1")
    assert rc == 1 and out == b""
    lines = err.splitlines()
    assert all(f"cannot reach {down}: ConnectError" in line for line in lines), err
    assert "retrying in" in lines[0] and "retrying" not in lines[-1]
    # --until-up-to-date gives up on its own (after 30 s by default); 0 = forever.
    rc, _, err = await run("tail", down, "--until-up-to-date", "--give-up-after", "0.5")
    assert rc == 1 and "cannot reach" in err


# -- append through faults ------------------------------------------------------------


async def test_append_through_fault_proxy_never_duplicates(server: ServerProc) -> None:
    """Cuts and stalls between ``append`` and the server: retries reuse the
    producer's (id, epoch, seq), so every line lands exactly once, in order."""
    plan = FaultPlan(cut_rate=0.02, stall_rate=0.02, stall=0.05, max_chunk=4096)
    name = f"cli-chaos-{next(_n)}"
    lines = [f"line {i:05d} ".encode() + b"x" * (i % 50) + b"\n" for i in range(20000)]
    direct = server.base + name
    rc, _, _ = await run("append", direct, "--create", "--content-type", "text/plain")
    assert rc == 0  # no DATA and an empty stdin: creates the stream, appends nothing
    async with FaultProxy("127.0.0.1", server.port, seed=5, plan=plan) as proxy:
        flaky = f"http://127.0.0.1:{proxy.port}/v1/stream/{name}"
        rc, _, err = await run("append", flaky, "--quiet", stdin=b"".join(lines), limit=60)
        assert (rc, err) == (0, "")
        assert proxy.stats.cut > 0
    rc, out, _ = await run("tail", direct, "--until-up-to-date")
    assert rc == 0
    assert out == b"".join(lines)


async def _wait_stream_bytes(u: str, n: int, limit: float = 20.0) -> None:
    """Wait until the (byte) stream at ``u`` holds at least ``n`` bytes."""
    import httpx

    async with httpx.AsyncClient() as client, asyncio.timeout(limit):
        while True:
            resp = await client.get(u, params={"offset": "-1"})
            if len(resp.content) >= n:
                return
            await asyncio.sleep(0.05)


async def test_progress_bar_on_a_terminal_only_for_long_inputs(server: ServerProc) -> None:
    u = url(server, "progress")
    assert (await run("append", u, "--create"))[0] == 0
    master, slave = pty.openpty()
    shown = bytearray()

    def drain_terminal() -> None:
        # Read the terminal concurrently: a full pty buffer would block the child.
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=drain_terminal, daemon=True)
    reader.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "append",
            u,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=slave,
            env={**_ENV, "TERM": "xterm", "COLUMNS": "120"},
        )
        os.close(slave)
        slave = -1
        assert proc.stdin is not None
        proc.stdin.write(b"x\n" * 3000)
        await proc.stdin.drain()
        # Once the first part is appended (append reads whatever is ready, so a slow start
        # could otherwise see the whole input at once), a slow producer on stdin: the input
        # lasts longer than the bar's delay. Not a synchronisation wait.
        await _wait_stream_bytes(u, 6000)
        await asyncio.sleep(1.0)
        proc.stdin.write(b"y\n" * 3000)
        proc.stdin.close()
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
        await asyncio.to_thread(reader.join, 5)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    text = bytes(shown).decode(errors="replace")
    assert "appending" in text  # the bar was drawn on the terminal
    assert "appended 6000 messages (12000 bytes) in" in text
    rc, out, _ = await run("tail", u, "--until-up-to-date")
    assert rc == 0
    assert out == b"x\n" * 3000 + b"y\n" * 3000
