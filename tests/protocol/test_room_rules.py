"""Unit tests of the rules that bound one room member (pure functions and budgets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durasync.crdt import Message, Op
from durasync.protocol.room_rules import (
    ByteBudget,
    RateLimiter,
    client_problem,
    counter_problem,
    id_owner,
    message_counters_max,
    namespace_problem,
    room_name_problem,
)


def test_rate_limiter() -> None:
    r = RateLimiter(rate=2, burst=2, now=0)
    assert r.allow(0) and r.allow(0) and not r.allow(0)
    assert r.allow(0.5) and not r.allow(0.5)


# -- room names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", ".", "..", "...", "a/b", "a\x00b", "a\nb", "x" * 129, "caf\u00e9", "a b", "%2e"]
)
def test_path_like_room_names_are_refused(name: str) -> None:
    assert room_name_problem(name) is not None


@pytest.mark.parametrize("name", ["a", "a.b", ".a", "a..", "__x", "A-Z_0~9", "x" * 128])
def test_ordinary_room_names_are_accepted(name: str) -> None:
    assert room_name_problem(name) is None


@pytest.mark.parametrize("client", ["", "a b", "x" * 129, "a/b", "caf\u00e9"])
def test_bad_client_ids_are_refused(client: str) -> None:
    assert client_problem(client) is not None


# -- id namespaces ----------------------------------------------------------------------------

CLIENTS = st.from_regex(r"[A-Za-z0-9._~:@-]{1,12}", fullmatch=True)
SUFFIX = st.from_regex(r"[A-Za-z0-9._~:@-]{0,6}", fullmatch=True)


def _msg(client: str, mid: str, *ops: Op) -> Message:
    return Message(id=mid, client=client, lt=1, ts=1, ops=list(ops))


@settings(max_examples=500, deadline=None)
@given(owner=CLIENTS, sender=CLIENTS, suffix=SUFFIX)
def test_an_id_belongs_to_at_most_one_client(owner: str, sender: str, suffix: str) -> None:
    mid = f"{owner}:{suffix}"
    ok = namespace_problem(_msg(sender, mid), sender) is None
    # Accepted exactly when the sender is the id's one owner (everything before the last ':',
    # with a non-empty suffix after it): two senders can never both use one id.
    assert ok == (id_owner(mid) == sender)
    if ok:
        assert mid.rpartition(":")[0] == sender and suffix and ":" not in suffix


def test_namespace_rule_codes() -> None:
    assert namespace_problem(_msg("a", "a:1"), "a") is None
    assert namespace_problem(_msg("a:b", "a:b:1"), "a:b") is None
    assert namespace_problem(_msg("a", "a:1"), "b") == (
        "WRONG_CLIENT",
        "msg.client must equal the connection's client",
    )
    for bad in ("victim:1", "a", "a:", "a:b:1", ":1", "a:1:"):
        problem = namespace_problem(_msg("a", bad), "a")
        assert problem is not None and problem[0] == "FOREIGN_ID", bad
    text = Op(ot="text.insert", key="t", path="b", id="victim:5", value=[None, "x"], seq=1, ts=1)
    problem = namespace_problem(_msg("a", "a:1", text), "a")
    assert problem is not None and problem[0] == "FOREIGN_ID" and "ops[0].id" in problem[1]
    text.id = "a:5"
    assert namespace_problem(_msg("a", "a:1", text), "a") is None
    undo = Op(ot="meta.undo", key="_meta", path="_meta", targetMsgId="victim:3")
    problem = namespace_problem(_msg("a", "a:2", undo), "a")
    assert problem is not None and "targetMsgId" in problem[1]
    undo.targetMsgId = "a:1"
    assert namespace_problem(_msg("a", "a:2", undo), "a") is None


# -- counters ceiling ---------------------------------------------------------------------


def test_counter_ceiling_bounds_every_lamport_like_counter() -> None:
    def problem(m: Message, high: int = 50) -> str | None:
        return counter_problem(m, high, 100)

    assert problem(Message(id="a:150", client="a", lt=150, ts=1)) is None
    assert problem(Message(id="a:151", client="a", lt=151, ts=1)) is not None
    assert problem(Message(id="a:1", client="a", lt=1, ts=1, clock={"v": 151})) is not None
    text = Op(ot="text.insert", key="t", path="b", id="a:1", value=[None, "x"], seq=151, ts=1)
    assert problem(Message(id="a:1", client="a", lt=1, ts=1, ops=[text])) is not None
    assert message_counters_max(Message(id="a:1", client="a", lt=1, ts=1, clock={"v": 140})) == 140
    assert problem(Message(id="a:240", client="a", lt=240, ts=1), high=140) is None


# -- byte budget ------------------------------------------------------------------------------


def test_byte_budget_allows_one_answer_into_debt_then_waits_for_the_refill() -> None:
    b = ByteBudget(rate=100.0, burst=1000.0, now=0.0)
    assert b.available(0.0)
    b.charge(5000, 0.0)  # one answer larger than the burst is possible ...
    assert not b.available(0.0)
    assert not b.available(39.0)  # ... then nothing until the debt is repaid
    assert b.available(40.5)
    b.charge(10, 40.5)
    assert b.available(1000.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 10_000)), max_size=60))
def test_byte_budget_total_is_bounded(steps: list[tuple[float, int]]) -> None:
    rate, burst = 100.0, 1000.0
    b = ByteBudget(rate, burst, 0.0)
    now = 0.0
    total = 0
    largest = 0
    for dt, cost in steps:
        now += dt
        if b.available(now):
            b.charge(cost, now)
            total += cost
            largest = max(largest, cost)
    assert total <= burst + rate * now + largest
