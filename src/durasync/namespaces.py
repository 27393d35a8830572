"""Who owns which stream paths: the one rule every layer asks.

**Every stream path whose first segment starts with ``__`` belongs to the server.** Layers keep
their internal state there: ``__ds/`` (subscription records, DS §9), ``__rooms/<room>/``
(journal, snapshot, meta), and later rendezvous, replication and registry streams. Clients
never reach them through the public streams API (``/v1/stream/...``): every method answers 404
there, for every token and for loopback clients without auth, as if the stream did not exist.
A layer serves its own reserved data through its own routes and authorization (a room's journal
through ``GET /v1/rooms/{room}/journal`` under ``room/<name>`` rights).

The exceptions are deliberate and listed here:

- the ``__ds/...`` subscription control routes, which the subscription service answers itself
  before the streams app sees the path (DS §9);
- reserved paths the server declares *publicly readable* (:class:`ReservedAccess`): readable
  like any stream, never writable through the public API: `__registry__` when the server runs
  with `--registry-stream` (durasync.streams.registry).

Pure: no I/O, importable by every layer (store, streams, rooms, p2p, replication).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["RESERVED_MARK", "ReservedAccess", "first_segment", "is_reserved"]

#: A stream path whose first segment starts with this belongs to the server.
RESERVED_MARK: Final = "__"


def first_segment(path: str) -> str:
    """The first ``/``-separated segment of ``path`` (leading slashes ignored)."""
    return path.lstrip("/").split("/", 1)[0]


def is_reserved(path: str) -> bool:
    """True iff ``path`` (a stream path, with or without a leading ``/``) belongs to the server.

    The test is on the first segment only: ``__rooms/a/journal``, ``__ds``, ``__x__/y`` are
    reserved; ``a/__b`` and ``_a`` are not. Callers pass the decoded path they will use as the
    store key, so percent-encoding cannot hide the mark.
    """
    return path.lstrip("/").startswith(RESERVED_MARK)


class ReservedAccess:
    """What the public streams API may do with reserved paths: nothing, except reading the
    paths declared publicly readable (exact paths, e.g. a future ``__registry__`` stream).

    Immutable after construction. ``readable(path)`` is True only for a declared path;
    ``hidden(path)`` is True for every other reserved path (answer 404 for it).
    """

    __slots__ = ("public_read",)

    def __init__(self, public_read: Iterable[str] = ()) -> None:
        paths = frozenset(p.strip("/") for p in public_read)
        for path in paths:
            if not is_reserved(path):
                raise ValueError(
                    f"{path!r} is not a reserved path (its first segment must start with '__')"
                )
        #: Reserved paths anyone allowed to read streams may read (never write).
        self.public_read: frozenset[str] = paths

    def hidden(self, path: str) -> bool:
        """True iff ``path`` is reserved and not declared publicly readable."""
        return is_reserved(path) and path.strip("/") not in self.public_read

    def readable(self, path: str) -> bool:
        """True iff ``path`` is a reserved path declared publicly readable."""
        return path.strip("/") in self.public_read
