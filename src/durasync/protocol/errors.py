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

  - :class:`FrameError` -- the *peer* sent a room frame that is refused with an ``error``
    frame; the connection goes on.
  - :class:`JoinRefused` -- a room join refused (the peer's request, its rights, or the
    room's state): close with the code it carries.
  - :class:`RegistryFull` -- the server holds as many resumable sessions as it may
    (overload, transient).

Classification (:func:`classify_http_status`, :func:`classify_close_code`)
is pure: the I/O shells turn exceptions into facts (an HTTP status at the
WebSocket handshake, a close code) and ask here whether to retry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from durasync.protocol.closecodes import PERMANENT_CLOSE_CODES, CloseCode

__all__ = [
    "BufferFull",
    "Classification",
    "ErrorKind",
    "FrameError",
    "InvalidTransition",
    "JoinRefused",
    "LocalProtocolError",
    "ProtocolError",
    "RegistryFull",
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
        close_code: the WebSocket close code this implies
            (:attr:`~durasync.protocol.closecodes.CloseCode.PROTOCOL_ERROR`).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = CloseCode.PROTOCOL_ERROR


class FrameError(ProtocolError):
    """The *peer* sent a room frame that cannot be accepted: answer with an ``error`` frame.

    The connection goes on (unlike :class:`RemoteProtocolError`). ``code`` is stable;
    ``msg_id`` names the refused message when known.
    """

    def __init__(self, code: str, message: str, *, msg_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id


class JoinRefused(ProtocolError):
    """A join the server refuses: close the WebSocket with ``code`` and ``reason``."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(f"{int(code)}: {reason}")
        self.code = code
        self.reason = reason


class RegistryFull(ProtocolError):
    """The server holds ``max_sessions`` attached sessions; try again later (transient)."""


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


def classify_close_code(code: int | None) -> Classification:
    """Classify the close code of a connection that ended (None = no close frame).

    The codes of :data:`~durasync.protocol.closecodes.PERMANENT_CLOSE_CODES` (protocol
    errors, policy violations, our auth codes 4401/4403 and the rooms code 4400, malformed
    URL) are permanent; normal closure by the server, going away, abnormal closure (1006, no
    close frame), internal error, restart, try-again-later and the other rooms codes are
    transient (docs/protocol.md "Close codes").
    """
    if code is None:
        return Classification(ErrorKind.TRANSIENT, "connection lost without a close frame")
    if code in PERMANENT_CLOSE_CODES:
        return Classification(ErrorKind.PERMANENT, f"closed by peer with code {code}")
    return Classification(ErrorKind.TRANSIENT, f"closed by peer with code {code}")
