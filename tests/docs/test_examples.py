"""Every fenced Python and shell example in README.md and docs/*.md runs as written.

The convention (also in docs/README.md, for everyone writing docs):

- Every fenced block has an info string. A bare fence fails this test, so no example is left
  out by accident.
- Blocks tagged ``python``, ``sh``, ``bash`` or ``shell`` are run; every other tag is not:
  ``text`` for output samples, usage synopses, URLs and diagrams, ``console`` for a transcript
  with prompts, ``toml``/``json``/``ini`` for file contents, ``js``/``html``/``ts`` for the
  browser.
- A ``<!-- docs-test: ... -->`` comment on the last non-blank line before a runnable block
  changes how it runs:

  - ``<!-- docs-test: skip (reason) -->``: not run (it starts its own servers, needs Redis or
    a production host, ...). Give the reason.
  - ``<!-- docs-test: forever (reason) -->``: the example runs until stopped (a live tail).
    The test waits for its first line of output, lets it run a moment longer, then stops it;
    it passes when it printed something and had not failed by then.

How a file's examples run: one ``durasync serve --memory`` on a free loopback port per file;
``127.0.0.1:4437`` and ``localhost:4437`` in the examples are replaced by its address; the
examples run in order (later ones may use what earlier ones created) in one temporary
directory, with this virtualenv's ``bin`` first on ``PATH`` (``durasync``, ``python``).
Python blocks run as ``python block.py``, shell blocks as ``bash -e -o pipefail block.sh``.
Each must exit 0 within :data:`EXAMPLE_TIMEOUT` seconds and print no ``{"error":`` body (curl
exits 0 on HTTP errors). Every process is stopped by its process group at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"python", "sh", "bash", "shell"}
#: Seconds one example may take (a ``forever`` one: to print its first line).
EXAMPLE_TIMEOUT = 60.0
#: A ``forever`` example keeps running this long after its first line before it is stopped.
FOREVER_GRACE = 1.0
DOCUMENTED_ADDRESSES = ("127.0.0.1:4437", "localhost:4437")

_FENCE = re.compile(r"^(\s*)(`{3,})(.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(skip|forever)\b(.*?)-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mode: str  # "run", "skip", "forever"

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def parse(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file (indented fences in lists included)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group(1), m.group(2), m.group(3).strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            text = lines[i]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            i += 1
        i += 1
        mode = "run"
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = _MARKER.match(lines[before]) if before >= 0 else None
        if marker:
            mode = marker.group(1)
        lang = info.split()[0].lower() if info else ""
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", mode))
    return blocks


def test_every_fence_has_an_info_string() -> None:
    bare = [b.where() for path in DOCS for b in parse(path) if not b.lang]
    assert not bare, (
        "fenced blocks without an info string (```python/```sh run; ```text, ```toml, ... "
        f"do not; see tests/docs/test_examples.py): {bare}"
    )


def test_markers_only_on_runnable_blocks() -> None:
    wrong = [
        b.where() for path in DOCS for b in parse(path) if b.mode != "run" and b.lang not in RUN
    ]
    assert not wrong, f"docs-test markers on blocks that never run (drop them): {wrong}"


class Server:
    """``durasync serve --memory --port 0`` for one file's examples."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "durasync", "serve", "--memory", "--port", "0"],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.address = ""
        found = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                m = re.search(r"listening on http://(\S+)", line)
                if m and not found.is_set():
                    self.address = m.group(1)
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(30) or not self.address:
            self.stop()
            raise RuntimeError("durasync serve did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


class Example:
    """One example as a process group; stopped (by its PID's group) whatever happens."""

    def __init__(self, block: Block, cwd: Path, address: str, n: int) -> None:
        code = block.code
        for documented in DOCUMENTED_ADDRESSES:
            code = code.replace(documented, address)
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
        env["PYTHONUNBUFFERED"] = "1"
        if block.lang == "python":
            script = cwd / f"example_{n}.py"
            command = [sys.executable, str(script)]
        else:
            script = cwd / f"example_{n}.sh"
            command = ["bash", "-e", "-o", "pipefail", str(script)]
        script.write_text(code, encoding="utf-8")
        self.out = bytearray()
        self.err = bytearray()
        self.first_line = threading.Event()  # a line on stdout (or its end)
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: pipelines stop with it
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: bytearray) -> None:
        while chunk := stream.read1(65536):
            if len(into) < 1 << 20:  # keep the first MiB
                into.extend(chunk[: (1 << 20) - len(into)])
            if into is self.out and b"\n" in chunk:
                self.first_line.set()
        if into is self.out:
            self.first_line.set()

    def join(self) -> None:
        for reader in self._readers:
            reader.join(5)

    def output(self) -> str:
        out = self.out.decode(errors="replace")[-3000:]
        return f"stdout:\n{out}\nstderr:\n{self.err.decode(errors='replace')[-3000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The group id is the child's PID (start_new_session): the example and its pipeline.
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.join()


def _run(block: Block, cwd: Path, address: str, n: int) -> None:
    example = Example(block, cwd, address, n)
    try:
        if block.mode == "forever":
            example.first_line.wait(EXAMPLE_TIMEOUT)
            deadline = time.monotonic() + FOREVER_GRACE
            while example.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            code = example.proc.poll()
            assert example.out, (
                f"{block.where()}: no output in {EXAMPLE_TIMEOUT} s\n{example.output()}"
            )
            assert code in (None, 0), f"{block.where()}: exit {code}\n{example.output()}"
        else:
            try:
                code = example.proc.wait(EXAMPLE_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"{block.where()}: still running after {EXAMPLE_TIMEOUT} s "
                    f"(mark it <!-- docs-test: forever -->?)\n{example.output()}"
                )
            example.join()
            assert code == 0, f"{block.where()}: exit {code}\n{example.output()}"
        assert b'{"error":' not in example.out, f"{block.where()}: error body\n{example.output()}"
    finally:
        example.stop()


def _runnable(path: Path) -> list[Block]:
    return [b for b in parse(path) if b.lang in RUN and b.mode != "skip"]


WITH_EXAMPLES = [p for p in DOCS if _runnable(p)]


@pytest.mark.parametrize(
    "path", WITH_EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in WITH_EXAMPLES]
)
def test_examples_run(path: Path, server: Server, tmp_path: Path) -> None:
    runnable = _runnable(path)
    work = tmp_path / "work"
    work.mkdir()
    for n, block in enumerate(runnable):
        _run(block, work, server.address, n)
