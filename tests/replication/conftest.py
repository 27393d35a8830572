"""Fixtures of the replication tests: server processes stopped by PID, also on failure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .procs import Serve


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """``serve(name, replicate=..., extra=...)`` starts a server with data in tmp_path/name."""
    started: list[Serve] = []

    def start(name: str, **kwargs: object) -> Serve:
        server = Serve(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()
