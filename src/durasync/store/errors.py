"""Errors of the log store: one hierarchy, split by blame.

- :class:`StoreError` -- base of every error the store raises.

  - :class:`StoreClientError` -- the request cannot be served as asked (the caller's, or
    its peer's, bad request); the HTTP layer answers with the 4xx each class names.

    - :class:`NoSuchStream` (404), :class:`DataGone` (410), :class:`StreamExists` (409),
      :class:`StreamClosed` (409), :class:`ContentTypeMismatch` (409),
      :class:`SeqConflict` (409), :class:`StaleProducerEpoch` (403),
      :class:`ProducerSeqAhead` (409), :class:`ProducerBadEpochStart` (400),
      :class:`BadOffset` (400).

  - :class:`StoreUnavailable` -- the backend's fault (disk full, Redis down): retryable, 503.

The names differ from the client's (:mod:`durasync.client.errors`): those say what a server
*answered* (``StreamNotFound`` is an HTTP 404), these what the store *found*.
"""

from __future__ import annotations

__all__ = [
    "BadOffset",
    "ContentTypeMismatch",
    "DataGone",
    "NoSuchStream",
    "ProducerBadEpochStart",
    "ProducerSeqAhead",
    "SeqConflict",
    "StaleProducerEpoch",
    "StoreClientError",
    "StoreError",
    "StoreUnavailable",
    "StreamClosed",
    "StreamExists",
    "TailMismatch",
]


class StoreError(Exception):
    """Base of every error the store raises."""


class StoreClientError(StoreError):
    """The request cannot be served as asked; the HTTP layer answers 4xx."""


class NoSuchStream(StoreClientError):
    """No such stream (never created, deleted, or expired)."""


class DataGone(StoreClientError):
    """The stream is soft-deleted, or the offset is below retention (410)."""


class StreamExists(StoreClientError):
    """A create conflicts with an existing stream's config or state (409)."""


class StreamClosed(StoreClientError):
    """Append with data to a closed stream (409). ``tail`` is the final offset."""

    def __init__(self, message: str, *, tail: str) -> None:
        super().__init__(message)
        self.tail = tail


class ContentTypeMismatch(StoreClientError):
    """Append's content type differs from the stream's (409)."""


class SeqConflict(StoreClientError):
    """``Stream-Seq`` is not greater than the last one (409)."""


class StaleProducerEpoch(StoreClientError):
    """Producer epoch below the current one: a zombie writer (403)."""

    def __init__(self, message: str, *, current_epoch: int) -> None:
        super().__init__(message)
        self.current_epoch = current_epoch


class ProducerSeqAhead(StoreClientError):
    """Producer seq skips ahead of last+1 (409)."""

    def __init__(self, message: str, *, expected: int, received: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.received = received


class ProducerBadEpochStart(StoreClientError):
    """A new producer epoch must start at seq 0 (400)."""


class BadOffset(StoreClientError):
    """The offset is malformed or not a message boundary of this stream (400)."""


class TailMismatch(StoreClientError):
    """A replica append (:meth:`LogStore.append_at`) named an offset that is not where the
    stream ends (409). ``tail`` is the stream's actual tail: entries below it are there."""

    def __init__(self, message: str, *, tail: str) -> None:
        super().__init__(message)
        self.tail = tail


class StoreUnavailable(StoreError):
    """The backend cannot serve right now (disk full, Redis down): retry (503)."""
