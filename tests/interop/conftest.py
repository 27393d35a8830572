"""Servers for the interop tests: ours (memory and --data) and the npm reference.

Every test in this package runs against each server kind, so a difference in
behaviour between our server and the reference shows up as a failing test id.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from _peers import ServerProc, start_ours, start_reference  # noqa: E402

SERVER_KINDS = ["ours-memory", "ours-data", "reference-memory", "reference-file"]


@pytest.fixture(scope="module", params=SERVER_KINDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProc]:
    kind: str = request.param
    data = tmp_path_factory.mktemp(kind) if kind in ("ours-data", "reference-file") else None
    if kind.startswith("ours"):
        proc = start_ours(data_dir=data, long_poll_timeout=0.5)
    else:
        proc = start_reference(data_dir=data, long_poll_timeout=0.5)
    try:
        yield proc
    finally:
        code = proc.stop()
        if kind.startswith("ours"):
            # SIGTERM must shut down cleanly.
            assert code == 0, f"{proc.name} exited with {code}:\n" + "\n".join(proc.output[-30:])
