"""Wire types of the replication HTTP API between durasync servers (``/v1/replication/...``).

JSON for listings and views, msgpack for framed reads (message bytes travel as they are, with
their boundaries, so a mirror can keep the source's offsets). Every type bounds what a peer
may send: the decoders refuse anything else, and the I/O shells cap counts and sizes.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from durasync.replication.core import Token

__all__ = [
    "API_VERSION",
    "GAP_REASONS",
    "GapBody",
    "GapReason",
    "ServerInfo",
    "StreamEntry",
    "StreamList",
    "StreamRead",
    "gap_body",
]

#: Version of this API; a server answers it at ``GET /v1/replication/server``.
API_VERSION: Final = 1

GapReason = Literal["token_too_old", "token_too_new", "epoch_mismatch", "stream_mismatch"]
GAP_REASONS: Final = ("token_too_old", "token_too_new", "epoch_mismatch", "stream_mismatch")


class ServerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/replication/server``: who the peer is (its store's replication identity)."""

    id: str
    version: int = API_VERSION


class StreamEntry(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One stream in a listing: where it starts and ends and which incarnation it is."""

    path: str
    content_type: str
    epoch: str
    start: str
    tail: str
    closed: bool = False


class StreamList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/replication/streams?prefix=&after=&limit=``: streams sorted by path;
    ``more``: ask again with ``after`` = the last path."""

    server: str
    streams: list[StreamEntry]
    more: bool = False


class StreamRead(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``GET /v1/replication/streams/<path>?offset=...``: messages from ``offset`` with their
    exact bytes (msgpack). ``next`` is the offset after the last entry; the entries occupy
    the source's offsets from ``offset`` on."""

    server: str
    epoch: str
    content_type: str
    start: str
    tail: str
    offset: str
    next: str
    entries: list[bytes]
    up_to_date: bool
    closed: bool


class GapBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The 410 answer for a cursor the source cannot serve (enbox-sync.md §3.1)."""

    error: dict[str, str]
    requested: Token
    oldest_available: Token | None
    latest_available: Token | None
    reason: GapReason


def gap_body(
    reason: GapReason,
    requested: Token,
    oldest: Token | None,
    latest: Token | None,
    message: str,
) -> bytes:
    """The JSON of a 410 gap answer."""
    return msgspec.json.encode(
        GapBody(
            error={"code": "GAP", "message": message},
            requested=requested,
            oldest_available=oldest,
            latest_available=latest,
            reason=reason,
        )
    )
