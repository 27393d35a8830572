"""Errors of the Durable Streams HTTP layer: each is the peer's bad request (a 4xx).

- :class:`StreamsError` -- base of the layer's errors.

  - :class:`RequestRefused` -- a request that breaks the protocol (parsing, validation, a
    refused operation); carries the HTTP status, a stable machine code and extra headers.
  - :class:`SubscriptionError` -- a request the subscription API (``__ds``) refuses; its
    ``code`` maps to a status through :data:`ERROR_STATUS`.

The store's own errors (:mod:`durasync.store.errors`) are mapped to statuses by the app;
a failure of the server itself is never one of these.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_STATUS", "RequestRefused", "StreamsError", "SubscriptionError"]


class StreamsError(Exception):
    """Base of the errors the streams layer raises for a peer's request."""


class RequestRefused(StreamsError):
    """A request that breaks the protocol; the peer's fault (4xx).

    ``headers`` are extra response headers (e.g. ``Producer-Epoch`` on 403).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


#: HTTP status of every error code the API answers with.
ERROR_STATUS: dict[str, int] = {
    "INVALID_REQUEST": 400,
    "WEBHOOK_URL_REJECTED": 400,
    "TOKEN_INVALID": 401,
    "TOKEN_EXPIRED": 401,
    "SUBSCRIPTION_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "SUBSCRIPTION_ALREADY_EXISTS": 409,
    "FENCED": 409,
    "ALREADY_CLAIMED": 409,
    "NO_PENDING_WORK": 409,
    "INVALID_OFFSET": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "LIMIT_EXCEEDED": 429,
}


class SubscriptionError(StreamsError):
    """A request the subscription API refuses; ``code`` maps to a status.

    ``extra`` fields are merged into the ``error`` object of the response
    (for example ``current_holder`` of ``ALREADY_CLAIMED``).
    """

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    @property
    def status(self) -> int:
        return ERROR_STATUS.get(self.code, 400)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}
