"""What importing the sans-I/O cores loads, checked in a fresh interpreter.

``durasync.protocol`` (every public name and every module) is pure: it may load the standard
library, msgspec (with what msgspec itself loads) and ``durasync.crdt``, nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys

_LOADED = """
import importlib, json, pkgutil, sys
import {first}
before = set(sys.modules)
package = importlib.import_module({package!r})
for name in getattr(package, "__all__", []):
    getattr(package, name)
for info in pkgutil.walk_packages(package.__path__, {package!r} + "."):
    importlib.import_module(info.name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded(package: str, *, after: str = "sys") -> list[str]:
    """Modules that importing ``package`` (all its names and modules) adds to a fresh
    interpreter that imported ``after`` first."""
    code = _LOADED.format(package=package, first=after)
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    names: list[str] = json.loads(out)
    return names


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def test_protocol_loads_only_the_standard_library_msgspec_and_crdt() -> None:
    extra = [
        m
        for m in loaded("durasync.protocol", after="msgspec")
        if top(m) not in sys.stdlib_module_names
        and m != "durasync"
        and not m.startswith(("durasync.protocol", "durasync.crdt"))
    ]
    assert extra == []
