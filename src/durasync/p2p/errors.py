"""Errors of the peer-to-peer layer, split by blame.

- :class:`P2PError` -- base of the layer's errors.

  - :class:`RequestError` -- a rendezvous request (or record) from a *peer* is refused; the
    server answers with its ``status`` (sans-I/O rules, :mod:`durasync.p2p.rendezvous`).
  - :class:`RendezvousError` -- the rendezvous server refused *our* request or could not be
    reached (client side; ``transient`` says whether a retry may help).
  - :class:`PeerConnectionFailed` -- a durable connection reached ``failed``.
  - :class:`ChannelClosedError` -- a send on a closed channel (our misuse).
  - :class:`InsecureKeyFile` -- a key file others can read (local configuration).
"""

from __future__ import annotations

__all__ = [
    "ChannelClosedError",
    "InsecureKeyFile",
    "P2PError",
    "PeerConnectionFailed",
    "RendezvousError",
    "RequestError",
]


class P2PError(Exception):
    """Base of the errors the p2p layer raises."""


class RequestError(P2PError):
    """A request (or record) is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class RendezvousError(P2PError):
    """The server refused a request (``status`` 4xx/5xx) or could not be reached (0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def transient(self) -> bool:
        """True when retrying the same request later may succeed (network, 5xx, 429, 503)."""
        return self.status == 0 or self.status in (408, 425, 429) or self.status >= 500


class PeerConnectionFailed(P2PError):
    """The connection reached ``failed``: attempts exhausted or refused for good."""


class ChannelClosedError(P2PError):
    """The channel is closed (or closing): nothing more can be sent."""


class InsecureKeyFile(P2PError):
    """A key file is readable by group or others (fix: ``chmod 600 FILE``)."""
