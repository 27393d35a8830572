"""Hash-tree bucket reconciliation of id sets, on random sets (pure, no sockets)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durasync.replication.reconcile import (
    MAX_QUERIES,
    BucketAnswer,
    BucketQuery,
    IdSet,
    Reconciler,
    answer_queries,
    id_key,
)


def run(
    local: set[str], remote: set[str], *, leaf_size: int = 64, max_ids: int = 10_000
) -> Reconciler:
    rec = Reconciler(IdSet(local))
    peer = IdSet(remote)
    for _ in range(100):
        asked = rec.queries()
        if not asked:
            break
        rec.receive(answer_queries(peer, asked, leaf_size=leaf_size, max_ids=max_ids), asked)
    assert rec.done
    return rec


def ids(rng: random.Random, n: int, tag: str) -> set[str]:
    return {f"{tag}{rng.randrange(10**9)}:{i}" for i in range(n)}


@pytest.mark.parametrize("seed", range(8))
def test_random_sets_find_exactly_the_differences(seed: int) -> None:
    rng = random.Random(seed)
    common = ids(rng, rng.randrange(0, 5000), "c")
    a_only = ids(rng, rng.randrange(0, 300), "a")
    b_only = ids(rng, rng.randrange(0, 300), "b")
    rec = run(common | a_only, common | b_only, leaf_size=rng.choice([1, 8, 64]))
    assert rec.only_local == a_only
    assert rec.only_remote == b_only


@settings(max_examples=150, deadline=None)
@given(
    st.sets(st.text(min_size=1, max_size=12), max_size=200),
    st.sets(st.text(min_size=1, max_size=12), max_size=200),
)
def test_any_two_sets(a: set[str], b: set[str]) -> None:
    rec = run(a, b, leaf_size=4)
    assert rec.only_local == a - b
    assert rec.only_remote == b - a


def test_equal_sets_take_one_round_and_list_no_ids() -> None:
    rng = random.Random(1)
    same = ids(rng, 20_000, "x")
    rec = run(same, set(same))
    assert rec.rounds == 1 and rec.ids_received == 0
    assert not rec.only_local and not rec.only_remote


def test_a_few_differences_transfer_far_fewer_ids_than_the_set() -> None:
    rng = random.Random(2)
    common = ids(rng, 50_000, "c")
    extra = ids(rng, 5, "r")
    rec = run(common, common | extra, leaf_size=64)
    assert rec.only_remote == extra and not rec.only_local
    # only the leaves holding a difference were listed: 5 buckets of ~50000/65536*256...
    assert rec.ids_received < 5 * 200
    assert rec.rounds <= 3


def test_an_empty_side_gets_the_ids_in_big_buckets_without_descending() -> None:
    rng = random.Random(3)
    remote = ids(rng, 30_000, "r")
    rec = run(set(), remote)
    assert rec.only_remote == remote
    assert rec.rounds == 2  # the root's children, then their ids


def test_bogus_answers_are_ignored_and_unanswered_buckets_asked_again() -> None:
    local = IdSet(["a:1", "a:2"])
    rec = Reconciler(local)
    asked = rec.queries()
    # an id that does not hash into the bucket it is listed under is dropped
    foreign = next(f"x:{i}" for i in range(1000) if not id_key(f"x:{i}").hex().startswith("00"))
    rec.receive([BucketAnswer(prefix="", count=1, ids=["a:1"])], asked)
    assert rec.only_local == {"a:2"} and rec.done
    rec2 = Reconciler(IdSet(["a:1"]))
    asked = rec2.queries()
    rec2.receive([BucketAnswer(prefix="zz", count=1, ids=[foreign])], asked)
    assert not rec2.done  # "" was not answered: asked again
    assert rec2.queries() == [BucketQuery("")]
    rec3 = Reconciler(IdSet())
    q = [BucketQuery("00")]
    rec3.receive([BucketAnswer(prefix="00", count=1, ids=[foreign])], q)
    assert rec3.only_remote == set()


def test_responder_bounds() -> None:
    peer = IdSet(["a"])
    with pytest.raises(ValueError):
        answer_queries(peer, [BucketQuery("")] * (MAX_QUERIES + 1))
    with pytest.raises(ValueError):
        answer_queries(peer, [BucketQuery("xyz")])
    with pytest.raises(ValueError):
        answer_queries(peer, [BucketQuery("0" * 65)])
    big = IdSet(f"i{i}" for i in range(500))
    (answer,) = answer_queries(big, [BucketQuery("", want_ids=True)], leaf_size=8, max_ids=100)
    assert answer.ids is None and answer.children is not None  # too many ids: children


def test_idset_incremental_matches_rebuilt() -> None:
    rng = random.Random(5)
    s = IdSet()
    truth: set[str] = set()
    for _ in range(2000):
        x = f"m{rng.randrange(500)}"
        if rng.random() < 0.7:
            assert s.add(x) == (x not in truth)
            truth.add(x)
        else:
            s.discard(x)
            truth.discard(x)
    fresh = IdSet(truth)
    assert len(s) == len(truth)
    assert s.children("", 2) == fresh.children("", 2)
    assert s.summary("") == fresh.summary("")
    assert all(x in s for x in truth)
