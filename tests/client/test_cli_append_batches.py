"""How ``durasync append`` cuts stdin into POSTs (in process, with a recording producer)."""

from __future__ import annotations

import io
import sys

import pytest

from durasync.client import cli


class RecordingProducer:
    """Stands in for IdempotentProducer: records each POST body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def append(self, data: bytes) -> None:
        self.bodies.append(data)


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))


async def test_ready_lines_go_in_full_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # 100,000 lines all ready at once: 100 POSTs of 1,000 lines, not one hand-over per line.
    _stdin(monkeypatch, b"".join(b"%d\n" % i for i in range(1, 100_001)))
    producer = RecordingProducer()
    assert await cli._append_lines(producer, True, True) == cli.EXIT_OK
    assert len(producer.bodies) == 100
    values = [v for body in producer.bodies for v in body[1:-1].split(b",")]
    assert values == [b"%d" % i for i in range(1, 100_001)]


async def test_batches_stay_under_the_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    line = b"x" * (300 << 10) + b"\n"  # three fit in 1 MiB, four do not
    _stdin(monkeypatch, line * 10)
    producer = RecordingProducer()
    await cli._append_lines(producer, False, True)
    assert [len(b) // len(line) for b in producer.bodies] == [3, 3, 3, 1]
    assert all(len(b) <= cli.MAX_BATCH_BYTES for b in producer.bodies)


async def test_lines_end_at_newline_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _stdin(monkeypatch, b"1\r2\n3\n")  # line 1 is "1\r2": not JSON (not two lines 1 and 2)
    producer = RecordingProducer()
    with pytest.raises(cli.BadLine, match=r"stdin line 1 is not JSON"):
        await cli._append_lines(producer, True, True)
    _stdin(monkeypatch, b"a\rb\nc")
    producer = RecordingProducer()
    await cli._append_lines(producer, False, True)
    assert b"".join(producer.bodies) == b"a\rb\nc"


async def test_an_overlong_line_stops_after_the_lines_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(cli, "READ_CHUNK_BYTES", 256)
    _stdin(monkeypatch, b"1\n2\n" + b"3" * 2000 + b"\n4\n")
    producer = RecordingProducer()
    with pytest.raises(cli.BadLine, match=r"stdin line 3 is longer than 1000 bytes; lines 1-2"):
        await cli._append_lines(producer, True, True)
    assert b"".join(producer.bodies) == b"[1,2]"
