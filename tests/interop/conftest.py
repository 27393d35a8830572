"""Servers for the interop tests: ours (memory and --data) and the npm reference.

Every test in this package runs against each server kind, so a difference in
behaviour between our server and the reference shows up as a failing test id.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_peers() -> object:
    """bench/_peers.py (the benchmarks' server launchers), loaded from its file: bench/ is
    scripts, not a package on the path."""
    spec = importlib.util.spec_from_file_location("_peers", ROOT / "bench" / "_peers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_peers"] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


_peers = _load_peers()
ServerProc = _peers.ServerProc  # type: ignore[attr-defined]
start_ours = _peers.start_ours  # type: ignore[attr-defined]
start_reference = _peers.start_reference  # type: ignore[attr-defined]
JS_DIR = _peers.JS_DIR  # type: ignore[attr-defined]

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
