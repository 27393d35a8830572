"""Differential tests: the JS replica (js/dist/durasync.mjs, in node) and durasync.crdt give
byte-identical canonical JSON on the same histories.

Python-generated multi-session histories (every otype, text, undo/redo; tests/crdt
crdt_histories.py) are delivered to both sides in the same ways -- causal orders with
duplicates in random batches, arbitrary shuffles one by one, server-sequenced batches arriving
out of order -- and through snapshots both ways (a Python snapshot + shuffled tail rebuilt in
JS; a JS snapshot rebuilt in Python). JS-generated histories (JS sessions editing through the
public API: position-based text, undo/redo, stale views) are replayed by Python. All cases run
in one node process (module fixture); each test checks its share of the results.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from durasync.crdt import CRDTValidationError, Message, Replica, Snapshot, format_number
from durasync.crdt.messages import decode_message_obj, message_to_dict

from .jsbuild import REPLAY, ensure_built, run_cases


def _histories() -> Any:
    """tests/crdt/crdt_histories.py, the generator of the Python convergence tests (a module of
    tests/crdt, which is not a package; ``crdt`` would also clash with bench/crdt.py)."""
    mod = sys.modules.get("crdt_histories")
    if mod is None:
        path = Path(__file__).resolve().parents[1] / "crdt" / "crdt_histories.py"
        spec = importlib.util.spec_from_file_location("crdt_histories", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["crdt_histories"] = mod
        spec.loader.exec_module(mod)
    return mod


SEEDS = list(range(12))
OTYPE_SEEDS = list(range(4))
JS_SEEDS = list(range(10))
SAMPLES = Path(__file__).resolve().parents[1] / "crdt" / "samples"


def _dumps(r: Replica) -> dict[str, str]:
    return {"full": r.dump(), "live": r.dump(live=True), "meta": r.dump(with_meta=True)}


def _batches(r: random.Random, n: int) -> list[list[int]]:
    out = []
    i = 0
    while i < n:
        k = r.choice([1, 1, 2, 5, 12])
        out.append(list(range(i, min(n, i + k))))
        i += k
    return out


def _copy(m: dict[str, Any]) -> Message:
    return msgspec.convert(m, Message)


def _python_replay(case: dict[str, Any]) -> dict[str, str]:
    rep = Replica("py", checkpoint_every=case.get("checkpointEvery", 8))
    msgs = case["messages"]
    seqs = case.get("seqs")
    for batch in case["batches"]:
        ms = [_copy(msgs[i]) for i in batch]
        ss = [seqs[i] for i in batch] if seqs else None
        if len(ms) == 1:
            rep.receive(ms[0], ss[0] if ss else None)
        else:
            rep.receive_many(ms, ss)
    return _dumps(rep)


_VALUES: list[Any] = [
    0, 1, -2, 2.5, -0.0, 1e21, 1e-7, 123456789012, True, False, None, "", "x", "#ff0000",
    "#0a0b0c", "+12345", "1_2345", [1, 2, 3], [1.5, -2, 0.25], [0, 0, 0, 1], [1, True, "a"],
    {"a": 1}, {"name": "n", "key": "k", "tag": "t", "children": [], "z": [1]}, "é😀",
    1234567890123.0, -123456789012345.0, [9007199254740991.0, 1e15, 2.0**53],
]  # fmt: skip


def _otype_messages(r: random.Random) -> list[dict[str, Any]]:
    """Every value otype applied over current values of every type (the wrong-type fallbacks,
    half-up blends, Python equality in arrays, merges into "."), each step on a path of its
    own, plus node moves and removes, as one client's sequence of messages."""
    ops: list[dict[str, Any]] = [
        {"ot": "node.insert", "key": "", "path": "children", "value": {"key": "s"}},
        *[
            {"ot": "node.insert", "key": "s", "path": "children", "value": {"key": k, "p": 1}}
            for k in ("a", "b", "c")
        ],
    ]
    setters = ["number.set", "string.set", "boolean.set", "array.set", "object.set"]
    colors = ["#" + "".join(r.choice("0123456789abcdef") for _ in range(6)) for _ in range(8)]
    for it in range(300):
        key = r.choice("abc")
        # a path of its own per step, so that the dump shows every step's result
        path = "." if r.random() < 0.1 else f"p{it}"
        cur = r.choice(_VALUES)
        for ot in setters:  # set a current value of whatever type fits one of the setters
            kind = ot.split(".")[0]
            ok = {
                "number": isinstance(cur, int | float) and not isinstance(cur, bool),
                "string": isinstance(cur, str),
                "boolean": isinstance(cur, bool),
                "array": isinstance(cur, list),
                "object": isinstance(cur, dict),
            }[kind]
            if ok and path != ".":
                ops.append({"ot": ot, "key": key, "path": path, "value": cur})
        fam = r.choice(
            ["number", "vector3", "quaternion", "color", "string", "boolean", "array",
             "object", "node"]
        )  # fmt: skip
        v = r.choice(_VALUES)
        if fam == "number":
            n = v if isinstance(v, int | float) and not isinstance(v, bool) else 3
            ops.append({"ot": f"number.{r.choice(['add', 'multiply', 'min', 'max'])}", "key": key,
                        "path": path, "value": n})  # fmt: skip
        elif fam == "vector3":
            if path != "." and r.random() < 0.7:
                ops.append({"ot": "vector3.set", "key": key, "path": path, "value": [1, -2, 0.5]})
            ot = r.choice(["add", "multiply", "applyQuaternion", "applyEuler"])
            val = [0.5, 0.5, 0.5, 0.5] if ot == "applyQuaternion" else [0.25, -1, 2]
            op = {"ot": f"vector3.{ot}", "key": key, "path": path, "value": val}
            if ot == "applyEuler":
                op["order"] = r.choice(["XYZ", "ZYX", "YZX"])
                op["intrinsic"] = r.random() < 0.5
            ops.append(op)
        elif fam == "quaternion":
            ops.append({"ot": "quaternion.multiply", "key": key, "path": path,
                        "value": [0, 0.6, 0, 0.8]})  # fmt: skip
        elif fam == "color":
            ops.append({"ot": r.choice(["color.blend", "color.set"]), "key": key, "path": path,
                        "value": r.choice(colors)})  # fmt: skip
        elif fam == "string":
            ops.append({"ot": "string.concat", "key": key, "path": path, "value": "y",
                        "separator": r.choice(["", ","])})  # fmt: skip
        elif fam == "boolean":
            ops.append({"ot": f"boolean.{r.choice(['or', 'and'])}", "key": key, "path": path,
                        "value": r.random() < 0.5})  # fmt: skip
        elif fam == "array":
            ot = r.choice(["push", "union", "remove", "move"])
            if ot == "move":
                ops.append({"ot": "array.move", "key": key, "path": path,
                            "from": r.randint(-1, 4), "to": r.randint(-2, 5)})  # fmt: skip
            else:
                val = [v, 1, True] if ot == "union" else v
                ops.append({"ot": f"array.{ot}", "key": key, "path": path, "value": val})
        elif fam == "object":
            val = v if isinstance(v, dict) else {"name": "m", "w": v}
            ops.append({"ot": "object.merge", "key": key, "path": path, "value": val})
        else:
            verb = r.choice(["move", "move", "remove", "insert"])
            if verb == "move":
                ops.append({"ot": "node.move", "key": "s", "path": "children",
                            "value": {"nodeKey": key, "newParent": r.choice("abcs")}})  # fmt: skip
            elif verb == "remove" and r.random() < 0.05:
                ops.append({"ot": "node.remove", "key": "s", "path": "children", "value": key})
            else:
                ops.append({"ot": "node.insert", "key": r.choice("abc"), "path": "children",
                            "value": {"key": key + str(r.randint(0, 3)), "tag": "T"}})  # fmt: skip
    return [
        {"id": f"c:{i}", "client": "c", "lt": i + 1, "ts": i, "clock": {"c": i + 1}, "ops": [op]}
        for i, op in enumerate(ops)
    ]


def _removed_text_messages() -> list[dict[str, Any]]:
    """Text edits racing a node's removal (and the removal's undo): docs/crdt.md says they are
    no-ops after the removal in canonical order."""

    def m(client: str, lt: int, *ops: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"{client}:{lt}", "client": client, "lt": lt, "ts": lt, "clock": {},
                "ops": list(ops)}  # fmt: skip

    ins = {"ot": "node.insert", "path": "children"}
    return [
        m(
            "a",
            1,
            {**ins, "key": "", "value": {"key": "s"}},
            {**ins, "key": "s", "value": {"key": "n"}},
        ),
        m(
            "b",
            2,
            {
                "ot": "text.insert",
                "key": "n",
                "path": "t",
                "id": "b:0",
                "seq": 1,
                "ts": 1,
                "value": [None, "ab"],
            },
        ),
        m("a", 3, {"ot": "node.remove", "key": "s", "path": "children", "value": "n"}),
        m(
            "b",
            4,
            {
                "ot": "text.insert",
                "key": "n",
                "path": "t",
                "id": "b:2",
                "seq": 2,
                "ts": 2,
                "value": ["b:1", "c"],
            },
        ),
        m("c", 5, {"ot": "text.delete", "key": "n", "path": "t", "rm": [["b:0", 1]]}),
        m("c", 6, {"ot": "text.init", "key": "n", "path": "u", "value": "zz"}),
        m("a", 7, {"ot": "meta.undo", "key": "_meta", "path": "_meta", "targetMsgId": "a:3"}),
    ]


def _history_cases(seed: int) -> list[dict[str, Any]]:
    r = random.Random(seed)
    hist = _histories()
    h = hist.generate(r, sessions=2 + seed % 3, steps=70)
    cases: list[dict[str, Any]] = []
    # causal order with duplicates, random batches
    order = [message_to_dict(m) for m in hist.causal_order(r, h, duplicates=0.2)]
    cases.append({"kind": "replay", "messages": order, "batches": _batches(r, len(order))})
    # any order (not causal), one by one, dense checkpoints
    shuffled = [message_to_dict(m) for m in h.messages]
    r.shuffle(shuffled)
    one = [[i] for i in range(len(shuffled))]
    cases.append({"kind": "replay", "messages": shuffled, "batches": one, "checkpointEvery": 1})
    # server-sequenced (a causal order), the sequenced messages arriving shuffled in batches
    seq_order = [message_to_dict(m) for m in hist.causal_order(r, h)]
    seqs = list(range(len(seq_order)))
    idx = list(range(len(seq_order)))
    r.shuffle(idx)
    batches = [idx[i : i + 7] for i in range(0, len(idx), 7)]
    cases.append({"kind": "replay", "messages": seq_order, "seqs": seqs, "batches": batches})
    # a Python snapshot of a prefix + the tail, shuffled, with resends of folded messages
    full = Replica("x")
    full.receive_many([_copy(m) for m in order])
    k = r.randint(0, len(full.messages))
    snap = msgspec.to_builtins(full.snapshot(upto=k))
    tail = [message_to_dict(m) for m in full.messages[k:]]
    r.shuffle(tail)
    tail += [message_to_dict(m) for m in full.messages[: min(k, 3)]]
    cases.append({"kind": "from_snapshot", "snapshot": snap, "tail": tail, "expect": _dumps(full)})
    # a JS snapshot of a prefix, rebuilt by Python
    cases.append({"kind": "snapshot", "messages": order, "upto": k})
    return cases


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    """Every case of this module, run in one node process."""
    cases: list[dict[str, Any]] = []
    index: dict[str, list[int]] = {}
    for seed in SEEDS:
        cs = _history_cases(seed)
        index[f"py{seed}"] = list(range(len(cases), len(cases) + len(cs)))
        cases += cs
    removed = _removed_text_messages()
    index["removed"] = []
    for k, perm in enumerate(itertools.permutations(range(1, len(removed)))):
        if k % 7 == 0:  # 720 orders of the six racing messages: every seventh
            index["removed"].append(len(cases))
            order = [removed[0]] + [removed[i] for i in perm]
            cases.append({"kind": "replay", "messages": order, "batches": [[i] for i in range(7)]})
            index["removed"].append(len(cases))
            cases.append({"kind": "replay", "messages": order[:-1], "batches": [list(range(6))]})
    for seed in OTYPE_SEEDS:
        msgs = _otype_messages(random.Random(seed))
        index[f"otypes{seed}"] = [len(cases)]
        cases.append(
            {
                "kind": "replay",
                "messages": msgs,
                "batches": _batches(random.Random(seed), len(msgs)),
            }
        )
    for seed in JS_SEEDS:
        index[f"js{seed}"] = [len(cases)]
        cases.append({"kind": "generate", "seed": seed + 1, "sessions": 2 + seed % 3, "steps": 80})
    for seed in JS_SEEDS:
        index[f"seq{seed}"] = [len(cases)]
        cases.append(
            {"kind": "sequenced", "seed": 100 + seed, "sessions": 2 + seed % 3, "steps": 150}
        )
    index["protocol"] = [len(cases)]
    cases.append({"kind": "protocol", "backoff": BACKOFF})
    index["format"] = [len(cases)]
    numbers = _numbers()
    cases.append({"kind": "format", "numbers": numbers})
    out = run_cases(cases)
    errors = [o for o in out if isinstance(o, dict) and "error" in o]
    assert not errors, errors[0]["error"]
    return {"cases": cases, "out": out, "index": index, "numbers": numbers}


@pytest.mark.parametrize("seed", SEEDS)
def test_python_histories_give_identical_json(results: dict[str, Any], seed: int) -> None:
    cases = results["cases"]
    out = results["out"]
    i_order, i_shuffled, i_seq, i_snap, i_js_snap = results["index"][f"py{seed}"]
    expected = _python_replay(cases[i_order])
    for i in (i_order, i_shuffled, i_seq):
        assert out[i] == _python_replay(cases[i]), cases[i]["batches"][:3]
        if i != i_seq:  # same message set (the sequenced case orders by serverSeq instead)
            assert out[i] == expected
    # Python snapshot + shuffled tail, rebuilt in JS
    assert out[i_snap] == cases[i_snap]["expect"]
    # JS snapshot, rebuilt in Python (msgspec decodes it as a durasync Snapshot)
    js = out[i_js_snap]
    snap = msgspec.convert(js["snapshot"], Snapshot)
    full = Replica("y")
    full.receive_many([_copy(m) for m in cases[i_js_snap]["messages"]])
    tail = full.messages[cases[i_js_snap]["upto"] :]
    rebuilt = Replica.from_snapshot("z", snap, tail)
    assert js["dump"] == full.dump(with_meta=True) == rebuilt.dump(with_meta=True)
    assert js["compacted"] == js["dump"]


def test_text_edits_on_a_removed_node_agree_in_every_order(results: dict[str, Any]) -> None:
    """With and without the undo of the removal, one by one or in one batch."""
    for i in results["index"]["removed"]:
        case = results["cases"][i]
        assert results["out"][i] == _python_replay(case), [m["id"] for m in case["messages"]]
    texts = {results["out"][i]["full"].count('"t":"ab"') for i in results["index"]["removed"]}
    assert texts == {0, 1}  # "ab" kept after the removal; "bc" once it is undone


@pytest.mark.parametrize("seed", OTYPE_SEEDS)
def test_every_otype_over_every_current_type(results: dict[str, Any], seed: int) -> None:
    (i,) = results["index"][f"otypes{seed}"]
    case = results["cases"][i]
    assert results["out"][i] == _python_replay(case)


@pytest.mark.parametrize("seed", JS_SEEDS)
def test_js_histories_replay_identically_in_python(results: dict[str, Any], seed: int) -> None:
    """JS sessions (local edits, text positions, undo/redo) converge, and Python agrees."""
    (i,) = results["index"][f"js{seed}"]
    js = results["out"][i]
    msgs = [_copy(m) for m in js["messages"]]
    assert len(msgs) > 20
    r = Replica("py")
    r.receive_many(msgs)
    views = js["sessions"]
    assert len(set(views)) == 1, "JS sessions diverged"
    assert views[0] == r.dump(with_meta=True)
    one = Replica("py1")
    for m in reversed([_copy(m) for m in js["messages"]]):
        one.receive(m)
    assert one.dump(with_meta=True) == views[0]


BACKOFF = {"initialDelay": 0.5, "maxDelay": 7, "multiplier": 3, "minDelay": 0.1, "maxAttempts": 6}


def test_protocol_cores_match_python(results: dict[str, Any]) -> None:
    """The TS state table, backoff schedule and buffer policies are the Python ones."""
    from durasync.protocol import Backoff, BackoffPolicy, BufferLimits, OutgoingBuffer
    from durasync.protocol.state import TRANSITIONS

    (i,) = results["index"]["protocol"]
    js = results["out"][i]
    assert js["transitions"] == {
        s.value: {t.value: n.value for t, n in row.items()} for s, row in TRANSITIONS.items()
    }
    b = Backoff(
        BackoffPolicy(initial_delay=0.5, max_delay=7, multiplier=3, min_delay=0.1, max_attempts=6),
        rng=lambda: 0.999,
    )
    py = [b.next_delay() for _ in range(8)]
    assert py[6:] == [None, None]  # max_attempts
    assert js["delays"][6:] == [None, None]
    assert js["delays"][:6] == pytest.approx(py[:6], rel=1e-12)
    buf = OutgoingBuffer(
        BufferLimits(max_messages=3, max_bytes=10, max_age=5, policy="drop_oldest")
    )
    for p, t in [("ab", 0), ("cdé", 1), ("f", 2), ("ghijk", 3)]:
        buf.push(p, t)
    buf.expire(6.5)
    events = [
        {"type": "overflow", "dropped": list(e.dropped), "reason": e.reason}
        for e in buf.events_received()
    ]
    assert js["events"] == events
    assert js["left"] == buf.clear()


@pytest.mark.parametrize("seed", JS_SEEDS)
def test_js_sequenced_clients_converge_with_python(results: dict[str, Any], seed: int) -> None:
    """JS clients of a sequencing server (pending edits, acks, rebases, undo/redo with messages
    in flight) end equal to the server, and Python folds the server's journal the same."""
    (i,) = results["index"][f"seq{seed}"]
    js = results["out"][i]
    assert js["pending"] == [0] * len(js["pending"])
    assert set(js["clients"]) == {js["server"]}
    journal = [_copy(m) for m in js["journal"]]
    assert len(journal) > 20
    r = Replica("py")
    r.receive_many(journal)  # each message carries its serverSeq
    assert r.dump(with_meta=True) == js["server"]


def _numbers() -> list[float | int]:
    """Doubles of every kind, and integers up to 2^53 (docs/crdt.md canonical numbers)."""
    rnd = random.Random(11)
    xs: list[float | int] = [
        0, -0.0, 0.0, 7, -12, 1.0, -3.0, 0.5, 0.1 + 0.2, 1 / 3, 2 / 3, 123456.789, 1e21, 1.5e21,
        1e20, 123456789012345, 123456789012345.5, 1e-6, 1e-7, 1.2345e-7, -2.5e-8, 0.1234567890125,
        1.0000000000005e12, -1e-300, 5e-324, 1e12, 999999999999.5, 2**53 - 1, -(2**53 - 1),
        2**53 - 2, 1765096790123, 1e300, -1.7976931348623157e308, 4.35, 0.000001234567890123,
        2.0**53, 1234567890123.0, -1234567890123.0, 123456789012345.0, 9007199254740991.0,
        -9007199254740991.0, 1e15, 1e12 + 1, 2.0**53 + 2,
    ]  # fmt: skip
    while len(xs) < 4000:
        k = rnd.random()
        if k < 0.35:
            x = struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0]
        elif k < 0.6:
            x = rnd.choice([1, -1]) * 10 ** rnd.uniform(-10, 25)
        elif k < 0.8:
            x = round(rnd.uniform(-1000, 1000), rnd.randint(0, 14))
        elif k < 0.9:
            x = rnd.randint(-(2**53 - 1), 2**53 - 1)  # the ints a message may carry
        else:  # the same values as Python floats: JSON does not tell 2 from 2.0
            x = float(rnd.randint(-(10 ** rnd.randint(1, 16)), 10 ** rnd.randint(1, 16)))
        if isinstance(x, int) or math.isfinite(x):
            xs.append(x)
    return xs


def test_number_formatting_matches_python(results: dict[str, Any]) -> None:
    """Python ints within +-(2^53-1) (docs/crdt.md "Numbers") and every finite double format
    alike (JSON transfers them exactly), integral doubles of 13 to 16 digits included."""
    (i,) = results["index"]["format"]
    got = results["out"][i]
    mismatches = [
        (x, format_number(x), g)
        for x, g in zip(results["numbers"], got, strict=True)
        if format_number(x) != g
    ]
    assert mismatches == []
    assert format_number(1234567890123.0) == format_number(1234567890123) == "1234567890123"


def _node_replay(*args: str) -> subprocess.CompletedProcess[str]:
    ensure_built()
    return subprocess.run(
        ["node", str(REPLAY), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("name", sorted(p.name[: -len(".jsonl")] for p in SAMPLES.glob("*.jsonl")))
@pytest.mark.parametrize(
    ("flags", "suffix"),
    [((), ""), (("--drop-tombstones",), ".live"), (("--order", "canonical"), "")],
)
def test_node_replay_twin_prints_the_expected_bytes(
    name: str, flags: tuple[str, ...], suffix: str
) -> None:
    res = _node_replay(*flags, str(SAMPLES / f"{name}.jsonl"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.encode() == (SAMPLES / f"{name}{suffix}.expected.json").read_bytes()


def test_node_replay_with_meta_and_wrappers_match_python(tmp_path: Path) -> None:
    lines = (SAMPLES / "handwritten-smoke.jsonl").read_text().splitlines()
    wrapped = [
        f'{{"mtype":"{"crdt" if i % 2 else "broadcast"}","msg":{ln}}}' for i, ln in enumerate(lines)
    ]
    f = tmp_path / "w.jsonl"
    f.write_text("# comment\n\n// another\n" + "\n".join(wrapped))
    res = _node_replay("--with-meta", str(f))
    assert res.returncode == 0, res.stderr
    py = subprocess.run(
        [sys.executable, "-m", "durasync.crdt", "replay", "--with-meta", str(f)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert py.returncode == 0, py.stderr
    assert res.stdout == py.stdout


def test_node_replay_bad_input_exits_2_with_line_and_field(tmp_path: Path) -> None:
    src = (SAMPLES / "handwritten-smoke.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join(
            [
                "# comment",
                "",
                src[0],
                json.dumps(
                    {
                        "id": "x",
                        "client": "c",
                        "lt": 1,
                        "ts": 1,
                        "ops": [{"ot": "number.set", "key": "scene", "path": "a", "value": "no"}],
                    }
                ),
            ]
        )
    )
    res = _node_replay(str(bad))
    assert res.returncode == 2
    assert "line 4" in res.stderr and "ops[0].value" in res.stderr
    assert _node_replay(str(tmp_path / "nope.jsonl")).returncode == 2
    (tmp_path / "cut.jsonl").write_text('{"id": "x", "client": "c"\n')
    res = _node_replay(str(tmp_path / "cut.jsonl"))
    assert res.returncode == 2 and "line 1" in res.stderr


def _validation_corpus() -> list[dict[str, Any]]:
    """Messages with one op each: every otype the validators accept on their fast path, with
    good values and with values of the wrong kind, length or size; plus a few message-level
    faults. Each must be accepted or refused alike by both validators."""
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    values: dict[str, list[Any]] = {
        "number.set": [1, 2.5, "x", None, [1], {"a": 1}],
        "number.add": [-3, "1", [1, 2]],
        "number.max": [0.5, None],
        "vector3.set": [[1, 2, 3], [1, 2], [1, 2, "a"], [1, 2, 3, 4], "x", None, [[1], 2, 3]],
        "vector3.add": [[0.1, 0.2, 0.3], [1, 2, None]],
        "vector3.multiply": [[1, 1, 1], [1]],
        "euler.set": [[0, 0, 1], [0, 0], {"x": 1}],
        "euler.add": [[0, 0, 1], [0, "0", 1]],
        "quaternion.set": [[0, 0, 0, 1], [0, 0, 1], [0, 0, 0, "1"]],
        "quaternion.multiply": [[0, 0, 0, 1], [0, 0, 0, 1, 0]],
        "vector3.applyQuaternion": [[0, 0, 0, 1], [0, 0, 1]],
        "string.set": ["hello", "", 5, None, ["a"], "x" * (1 << 20), "x" * ((1 << 20) + 1)],
        "color.set": ["#ff0000", "ff0000", "red", "#12345", "#1234567", 5],
        "color.blend": ["#00ff00", "#00ff0"],
        "boolean.set": [True, False, "true", None, [True]],
        "boolean.or": [True, "x"],
        "node.remove": ["child", 5, None, ["child"]],
        "node.insert": [
            {"key": "n1", "tag": "Mesh", "name": "n1", "children": ["a"], "p": [1, 2, 3]},
            {"key": "n1"},
            "n1",
            {},
            {"key": ""},
            {"key": 5},
            {"key": "n1", "tag": 5},
            {"key": "n1", "name": None},
            {"key": "n1", "children": "a"},
            {"key": "n1", "children": [1]},
            {"key": "n1", "children": None},
            {"key": "n1", "deep": deep},
            {"key": "n1", "big": list(range(100_001))},
            {"key": "n1", "s": "x" * ((1 << 20) + 1)},
        ],
    }
    out: list[dict[str, Any]] = []
    for ot, vs in values.items():
        for v in vs:
            out.append(
                {
                    "id": "c:1",
                    "client": "c",
                    "lt": 1,
                    "ts": 1,
                    "ops": [
                        {"ot": "node.insert", "key": "", "path": "children", "value": {"key": "a"}},
                        {"ot": ot, "key": "a", "path": "p", "value": v},
                    ],
                }
            )
    good = {"ot": "number.set", "key": "a", "path": "p", "value": 1}
    for op in (
        {**good, "key": "k" * 1024},
        {**good, "key": "k" * 1025},
        {**good, "path": "p" * 1025},
        {**good, "separator": ","},
        {"ot": "string.set", "key": "a", "path": "p", "value": "v", "separator": 5},
        {"ot": "nope.set", "key": "a", "path": "p", "value": 1},
        {"key": "a", "path": "p", "value": 1},
        {**good, "ot": 5},
        {**good, "seq": "1"},
    ):
        out.append({"id": "c:1", "client": "c", "lt": 1, "ts": 1, "ops": [op]})
    base = {"id": "c:1", "client": "c", "lt": 1, "ts": 1, "ops": [good]}
    for change in (
        {"id": ""},
        {"id": 5},
        {"client": ""},
        {"lt": -1},
        {"lt": "1"},
        {"ts": None},
        {"ts": "1"},
        {"clock": {"c": -1}},
        {"clock": {"c": "1"}},
        {"clock": []},
        {"ops": {}},
        {"ops": [good] * 10_001},
        {"serverSeq": "1"},
    ):
        out.append({**base, **change})
    return out


def _same_field(py: str, js: str) -> bool:
    # msgspec names a bad entry of a map "clock[...]", the JS decoder "clock.<key>"
    return py == js or (py.endswith("[...]") and js.startswith(py[: -len("[...]")] + "."))


def test_validation_agrees_with_python_on_good_and_bad_ops() -> None:
    """decodeMessage accepts exactly what Python's decoder accepts, and names the same field
    when it refuses (the JS validator takes a fast path for the common ops)."""
    corpus = _validation_corpus()
    (got,) = run_cases([{"kind": "validate", "messages": corpus}])
    assert isinstance(got, list), got
    mismatches = []
    for raw, js in zip(corpus, got, strict=True):
        try:
            decode_message_obj(raw)
            py: dict[str, Any] = {"ok": True}
        except CRDTValidationError as exc:
            py = {"ok": False, "field": exc.field}
        if py["ok"] != js["ok"] or (not py["ok"] and not _same_field(py["field"], js["field"])):
            mismatches.append((json.dumps(raw)[:200], py, js))
    assert mismatches == []
    assert sum(not g["ok"] for g in got) > len(got) // 2  # the corpus is mostly bad ops
