"""Backends under test: every LogStore implementation runs the same contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durasync.store import EmbeddedStore, LogStore, MemoryStore

BACKENDS = ["memory", "embedded"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogStore]:
    backend: LogStore = (
        MemoryStore() if request.param == "memory" else EmbeddedStore(tmp_path / "data")
    )
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
