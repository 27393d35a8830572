"""What importing the clients loads, checked in a fresh interpreter.

``durasync.client`` (every public name and every module) may load its transport libraries but
no server part: not Starlette, uvicorn, sqlite3 or redis, and no ``durasync.rooms``,
``durasync.streams`` or ``durasync.store`` module.
"""

from __future__ import annotations

from protocol.test_imports import loaded, top


def test_client_loads_no_server_part() -> None:
    names = loaded("durasync.client")
    assert "durasync.client.room" in names and "durasync.protocol.room_client" in names
    server = [
        m
        for m in names
        if top(m) in ("starlette", "uvicorn", "sqlite3", "_sqlite3", "redis")
        or m.startswith(("durasync.rooms", "durasync.streams", "durasync.store"))
    ]
    assert server == []
