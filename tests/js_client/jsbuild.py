"""The JS package for the tests: built (js/dist) before use, node found, or a clear failure."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "js"
DIST = JS / "dist"
BUNDLE = DIST / "durasync.mjs"
REPLAY = DIST / "replay.mjs"


def ensure_built() -> None:
    """Build js/dist when it is missing or older than a source file (node js/build.mjs).

    Raises AssertionError with the fix when node or the npm packages are missing: these tests
    are part of ``make test``, which installs and builds first.
    """
    assert shutil.which("node"), "node is required (see README: make test installs the rest)"
    sources = [*JS.glob("src/**/*.ts"), JS / "build.mjs", JS / "package-lock.json"]
    newest = max(p.stat().st_mtime for p in sources)
    if BUNDLE.exists() and REPLAY.exists() and BUNDLE.stat().st_mtime >= newest:
        return
    assert (JS / "node_modules" / "esbuild").exists(), "run `make js-build` (npm ci in js/ first)"
    subprocess.run(["node", str(JS / "build.mjs")], check=True, timeout=120)


def run_cases(cases: list[dict[str, Any]], timeout: float = 120) -> list[Any]:
    """Run a batch of cases through tests/js_client/crdt_runner.mjs (one node process)."""
    ensure_built()
    res = subprocess.run(
        ["node", str(Path(__file__).parent / "crdt_runner.mjs")],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    out: list[Any] = json.loads(res.stdout)
    assert len(out) == len(cases)
    return out
