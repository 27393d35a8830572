"""Errors of the sans-I/O protocol layer, and the transient/permanent split.

Hierarchy (split by blame, as in h11):

- :class:`ProtocolError` -- base of everything raised by ``durasync.protocol``.

  - :class:`LocalProtocolError` -- *we* misused an API (a bug on our side).

    - :class:`InvalidTransition` -- a connection-state trigger that the table
      does not allow in the current state.
    - :class:`BufferFull` -- a bounded buffer refused a message (policy
      ``reject``); nothing was enqueued, the caller keeps the message.

  - :class:`RemoteProtocolError` -- the *peer* misbehaved (bad frame, a
    sequence number from the future, an ack for a message never sent).
    Always permanent: retrying with the same peer cannot fix it.

Classification (:func:`classify_http_status`, :func:`classify_close_code`)
is pure: the I/O shells turn exceptions into facts (an HTTP status at the
WebSocket handshake, a close code) and ask here whether to retry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "BufferFull",
    "Classification",
    "ErrorKind",
    "InvalidTransition",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "classify_close_code",
    "classify_http_status",
]


class ProtocolError(Exception):
    """Base class of the protocol layer's errors."""


class LocalProtocolError(ProtocolError):
    """The local side used an API in a way it does not allow (our bug)."""


class InvalidTransition(LocalProtocolError):
    """A state-machine trigger that is not valid in the current state."""


class BufferFull(LocalProtocolError):
    """A bounded buffer with policy ``reject`` refused a message.

    Attributes:
        reason: which bound was hit: ``"count"``, ``"bytes"`` or ``"too_large"``
            (a single message bigger than the whole byte budget).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"buffer full ({reason})")
        self.reason = reason


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the connection must stop (permanent).

    Attributes:
        code: a short machine-readable reason (``"bad_frame"``, ``"seq_gap"``...).
        close_code: the WebSocket close code this implies (1002 protocol error).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = 1002


class ErrorKind(enum.Enum):
    """Whether a failure is worth retrying."""

    TRANSIENT = "transient"
    """Retry after a backoff delay (network, overload, restart)."""
    PERMANENT = "permanent"
    """Stop and report: retrying cannot help (auth rejected, protocol violation)."""


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict on one failure: its kind and a human-readable reason."""

    kind: ErrorKind
    reason: str

    @property
    def permanent(self) -> bool:
        """True when the client must stop reconnecting."""
        return self.kind is ErrorKind.PERMANENT


def classify_http_status(status: int) -> Classification:
    """Classify an HTTP status returned instead of a WebSocket upgrade (or by negotiate).

    401/403 are permanent (credentials were refused; the token provider is
    called again only on an explicit new ``connect()``). 408, 425, 429 and
    5xx are transient (overload, restart, gateway). Any other 4xx is
    permanent: the request itself is wrong (bad URL, bad version) and a
    retry sends the same request.
    """
    if status in (401, 403):
        return Classification(ErrorKind.PERMANENT, f"authentication rejected (HTTP {status})")
    if status in (408, 425, 429) or 500 <= status <= 599:
        return Classification(ErrorKind.TRANSIENT, f"server unavailable (HTTP {status})")
    if 400 <= status <= 499:
        return Classification(ErrorKind.PERMANENT, f"request rejected (HTTP {status})")
    # 1xx/2xx/3xx instead of 101: a proxy or a misconfigured endpoint; may heal.
    return Classification(ErrorKind.TRANSIENT, f"unexpected handshake response (HTTP {status})")


# RFC 6455 §7.4.1 codes that say "the peer found *us* at fault": resending the
# same traffic fails again. 4401/4403 are our application codes for auth
# failures detected after the upgrade (e.g. token expired mid-session is
# *not* one: the server closes with 4001 "reauthenticate", which is transient).
# The rooms protocol (docs/protocol.md) adds 4400 "bad request: fix the URL", sent only for a
# malformed URL (never for a server-side condition), so a retry would fail the same way.
# 4009 "replaced" stays transient on purpose: the server also sends it to a client's live
# connection when one of the client's own abandoned connect attempts reaches the server late,
# and stopping then would strand the client (seen in tests/client/test_chaos.py).
_PERMANENT_CLOSE_CODES = {1002, 1003, 1007, 1008, 1009, 1010, 4400, 4401, 4403}


def classify_close_code(code: int | None) -> Classification:
    """Classify the close code of a connection that ended (None = no close frame).

    Protocol errors, policy violations, our auth close codes (4401/4403) and
    the rooms code 4400 (malformed URL) are permanent; normal closure by the
    server, going away, abnormal closure (1006, no close frame), internal
    error, restart, try-again-later and the other rooms codes are transient.
    """
    if code is None:
        return Classification(ErrorKind.TRANSIENT, "connection lost without a close frame")
    if code in _PERMANENT_CLOSE_CODES:
        return Classification(ErrorKind.PERMANENT, f"closed by peer with code {code}")
    return Classification(ErrorKind.TRANSIENT, f"closed by peer with code {code}")
