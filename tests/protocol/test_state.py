from __future__ import annotations

import itertools

import pytest

from durasync.protocol import (
    ConnectionState,
    ConnectionStateMachine,
    InvalidTransition,
    StateChanged,
    Trigger,
)
from durasync.protocol.state import TRANSITIONS

S = ConnectionState
T = Trigger

EXPECTED = {
    (S.DISCONNECTED, T.CONNECT): S.CONNECTING,
    (S.DISCONNECTED, T.CLOSE): S.CLOSED,
    (S.CONNECTING, T.OPENED): S.CONNECTED,
    (S.CONNECTING, T.RETRY): S.RECONNECTING,
    (S.CONNECTING, T.DROP): S.DISCONNECTED,
    (S.CONNECTING, T.FAIL): S.FAILED,
    (S.CONNECTING, T.CLOSE): S.CLOSED,
    (S.CONNECTED, T.RETRY): S.RECONNECTING,
    (S.CONNECTED, T.DROP): S.DISCONNECTED,
    (S.CONNECTED, T.FAIL): S.FAILED,
    (S.CONNECTED, T.CLOSE): S.CLOSED,
    (S.RECONNECTING, T.OPENED): S.CONNECTED,
    (S.RECONNECTING, T.FAIL): S.FAILED,
    (S.RECONNECTING, T.CLOSE): S.CLOSED,
    (S.FAILED, T.CONNECT): S.CONNECTING,
    (S.FAILED, T.CLOSE): S.CLOSED,
}


def machine_in(state: ConnectionState) -> ConnectionStateMachine:
    m = ConnectionStateMachine()
    m.state = state
    return m


@pytest.mark.parametrize(("state", "trigger"), list(itertools.product(S, T)))
def test_every_state_trigger_pair(state: ConnectionState, trigger: Trigger) -> None:
    m = machine_in(state)
    expected = EXPECTED.get((state, trigger))
    if expected is None:
        assert not m.can(trigger)
        with pytest.raises(InvalidTransition):
            m.fire(trigger)
        assert m.state is state  # unchanged after an invalid trigger
    else:
        assert m.can(trigger)
        assert m.fire(trigger) == StateChanged(state, expected)
        assert m.state is expected


def test_table_matches_expected_exactly() -> None:
    table = {(s, t): n for s, row in TRANSITIONS.items() for t, n in row.items()}
    assert table == EXPECTED
    assert all(s is not n for (s, _), n in table.items())  # no self-transitions


def test_typical_life() -> None:
    m = ConnectionStateMachine()
    assert m.state is S.DISCONNECTED
    path = [T.CONNECT, T.OPENED, T.RETRY, T.OPENED, T.CLOSE]
    changes = [m.fire(t) for t in path]
    assert [c.current for c in changes] == [
        S.CONNECTING,
        S.CONNECTED,
        S.RECONNECTING,
        S.CONNECTED,
        S.CLOSED,
    ]
    assert all(a.current is b.previous for a, b in itertools.pairwise(changes))


def test_closed_is_terminal() -> None:
    m = machine_in(S.CLOSED)
    for t in T:
        with pytest.raises(InvalidTransition):
            m.fire(t)


def test_docs_table_matches_code() -> None:
    """docs/client.md lists exactly the transitions of TRANSITIONS."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "client.md").read_text()
    block = doc.split("<!-- transitions:begin -->")[1].split("<!-- transitions:end -->")[0]
    rows = [
        tuple(cell.strip() for cell in line.strip().strip("|").split("|"))
        for line in block.strip().splitlines()[2:]
    ]
    expected = [
        (s.value, t.value, n.value) for s, row in TRANSITIONS.items() for t, n in row.items()
    ]
    assert rows == expected
