"""The client connection state machine, as a table.

Rules (h11 ``_state.py`` style):

1. Everything that changes the connection state lives in :data:`TRANSITIONS`;
   the I/O shell only fires triggers and never assigns a state itself.
2. A trigger that the table does not list for the current state raises
   :class:`~durasync.protocol.errors.InvalidTransition`: a bug in the shell,
   never something a peer can cause.
3. Self-transitions do not exist; every successful trigger yields exactly one
   :class:`StateChanged` (previous, current).

Theory of operation::

    disconnected --connect--> connecting --opened--> connected
    connecting --retry--> reconnecting        (first attempt failed, transient)
    connected --retry--> reconnecting         (connection lost, will retry)
    reconnecting --opened--> connected
    connecting|connected --drop--> disconnected   (lost, reconnect mode "none")
    connecting|connected|reconnecting --fail--> failed  (permanent error or gave up)
    disconnected|failed --connect--> connecting        (explicit user connect())
    any state except closed --close--> closed          (terminal)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from durasync.protocol.errors import InvalidTransition

__all__ = ["TRANSITIONS", "ConnectionState", "ConnectionStateMachine", "StateChanged", "Trigger"]


class ConnectionState(enum.Enum):
    """Where a resilient connection is in its life."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    CLOSED = "closed"


class Trigger(enum.Enum):
    """What happened (fired by the I/O shell)."""

    CONNECT = "connect"
    OPENED = "opened"
    RETRY = "retry"
    DROP = "drop"
    FAIL = "fail"
    CLOSE = "close"


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The one state-change event: ``previous`` -> ``current``."""

    previous: ConnectionState
    current: ConnectionState


_S = ConnectionState
_T = Trigger

TRANSITIONS: dict[ConnectionState, dict[Trigger, ConnectionState]] = {
    _S.DISCONNECTED: {_T.CONNECT: _S.CONNECTING, _T.CLOSE: _S.CLOSED},
    _S.CONNECTING: {
        _T.OPENED: _S.CONNECTED,
        _T.RETRY: _S.RECONNECTING,
        _T.DROP: _S.DISCONNECTED,
        _T.FAIL: _S.FAILED,
        _T.CLOSE: _S.CLOSED,
    },
    _S.CONNECTED: {
        _T.RETRY: _S.RECONNECTING,
        _T.DROP: _S.DISCONNECTED,
        _T.FAIL: _S.FAILED,
        _T.CLOSE: _S.CLOSED,
    },
    _S.RECONNECTING: {_T.OPENED: _S.CONNECTED, _T.FAIL: _S.FAILED, _T.CLOSE: _S.CLOSED},
    _S.FAILED: {_T.CONNECT: _S.CONNECTING, _T.CLOSE: _S.CLOSED},
    _S.CLOSED: {},
}
"""``TRANSITIONS[state][trigger] -> next state``; absent = invalid."""


class ConnectionStateMachine:
    """Applies :data:`TRANSITIONS`; starts in ``disconnected``."""

    def __init__(self) -> None:
        self.state = ConnectionState.DISCONNECTED

    def can(self, trigger: Trigger) -> bool:
        """True if ``trigger`` is valid in the current state."""
        return trigger in TRANSITIONS[self.state]

    def fire(self, trigger: Trigger) -> StateChanged:
        """Apply ``trigger`` and return the resulting change.

        Raises:
            InvalidTransition: the table has no entry for (state, trigger);
                the state is left unchanged.
        """
        try:
            nxt = TRANSITIONS[self.state][trigger]
        except KeyError:
            raise InvalidTransition(
                f"trigger {trigger.value!r} is invalid in state {self.state.value!r}"
            ) from None
        change = StateChanged(self.state, nxt)
        self.state = nxt
        return change
