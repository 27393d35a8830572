"""The TypeScript room core (``ClientRoomSession`` in js/src/protocol/room.ts) against the Python
one (durasync.protocol.room_client): the same scripted session -- join from a snapshot, local
edits with position-based text, undo with uncommitted edits, redo, acks (also of resends),
refusals, rate-limited resends on their timer, presence, pings, a cut with offline edits, a
resume (``recovered: true``) and a reload into a new epoch -- fed to both cores in both
formats. After every step both must have written the same frames and hold the same outbox,
position, presence and canonical graph. Then what only the TS core has: the bounded outbox
(policy ``reject`` and ``drop_oldest``, and the ``sync`` that recovers a dropped message the
server had), presence sent again after a ``RATE_LIMITED`` without message id, and bad frames.
One node process runs every scenario.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from durasync.crdt import Message, Replica
from durasync.protocol.errors import RemoteProtocolError
from durasync.protocol.room_client import ClientRoomSession, PresenceEvent, RoomError
from durasync.protocol.room_frames import (
    AckFrame,
    BroadcastFrame,
    PingFrame,
    PresenceFrame,
    RoomErrorFrame,
    ServerFrame,
    StateFrame,
    decode_client_frame,
    encode_frame,
)

from .jsbuild import ensure_built

NOW = 1_700_000_000.0
RUNNER = Path(__file__).parent / "room_runner.mjs"


def _run_js(scenarios: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    ensure_built()
    res = subprocess.run(
        ["node", str(RUNNER)],
        input=json.dumps(scenarios),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    out: list[list[dict[str, Any]]] = json.loads(res.stdout)
    return out


def _wire(frame: ServerFrame, fmt: str) -> str:
    data = encode_frame(frame, fmt)  # type: ignore[arg-type]
    return data.decode() if fmt == "json" else base64.b64encode(data).decode()


def _decode(data: str, fmt: str) -> Any:
    """A client frame as the server reads it (the same frame whatever the encoder's choices:
    ``1.0`` vs ``1``, omitted defaults)."""
    raw: bytes | str = data if fmt == "json" else base64.b64decode(data)
    return msgspec.to_builtins(decode_client_frame(raw, fmt))  # type: ignore[arg-type]


# -- the scripted session -------------------------------------------------------------------


class Server:
    """Another member "b" and the room's journal, to build the server's frames. Seqs the
    scripted client's messages get are reserved (``None``) until their message is known."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.b = Replica("b")
        self.journal: list[Message | None] = []

    def b_edit(self, *ops: dict[str, Any]) -> Message:
        for op in ops:
            self.b.edit(op, NOW * 1000)
        msg = self.b.commit(NOW * 1000)
        assert msg is not None
        return self.sequence(msg)

    def sequence(self, msg: Message) -> Message:
        m = msgspec.structs.replace(msg, serverSeq=len(self.journal) + 1)
        self.journal.append(m)
        return m

    def reserve(self) -> int:
        self.journal.append(None)
        return len(self.journal)

    def _messages(self, lo: int) -> list[Message]:
        out = self.journal[lo:]
        assert all(m is not None for m in out), "a reserved seq in a state"
        return out  # type: ignore[return-value]

    def state(self, *, upto: int | None, since: int | None, epoch: str) -> str:
        """A full state (snapshot of the first ``upto`` + the rest) or a resume from ``since``."""
        if since is not None:
            frame = StateFrame(
                snapshot=None,
                journal=self._messages(since),
                serverSeq=len(self.journal),
                epoch=epoch,
                recovered=True,
            )
        else:
            msgs = self._messages(0)
            r = Replica("srv")
            r.receive_many(msgs, [m.serverSeq for m in msgs])
            frame = StateFrame(
                snapshot=r.snapshot(upto=upto),
                journal=msgs[upto:],
                serverSeq=len(self.journal),
                epoch=epoch,
                recovered=False,
            )
        return _wire(frame, self.fmt)

    def frame(self, frame: ServerFrame) -> str:
        return _wire(frame, self.fmt)


def _ins(parent: str, key: str, **props: Any) -> dict[str, Any]:
    return {"ot": "node.insert", "key": parent, "path": "children", "value": {"key": key, **props}}


def _script(fmt: str) -> list[dict[str, Any]]:
    """The session; ``committed: k`` names the k-th message the client committed."""
    srv = Server(fmt)
    srv.b_edit(_ins("", "scene"))
    srv.b_edit(_ins("scene", "s1", tag="shape"), {"ot": "color.set", "key": "s1",
               "path": "color", "value": "#336699"})  # fmt: skip
    srv.b_edit(_ins("scene", "note"), {"ot": "text.insert", "key": "note", "path": "text",
               "position": 0, "value": "hello"})  # fmt: skip
    srv.b_edit({"ot": "vector3.set", "key": "s1", "path": "position", "value": [1, 2, 0]})
    srv.b_edit({"ot": "number.set", "key": "s1", "path": "size", "value": 3})
    t = NOW
    steps: list[dict[str, Any]] = []

    def add(do: str, **kw: Any) -> None:
        nonlocal t
        t += 0.25
        steps.append({"do": do, "now": t, **kw})

    add("frame", data=srv.state(upto=3, since=None, epoch="E1"))
    add("frame", data=srv.frame(PresenceFrame(event="sync", members={"b": {"name": "b"}})))
    add("edit", op=_ins("scene", "a1", tag="shape"))
    add("edit", op={"ot": "vector3.set", "key": "a1", "path": "position", "value": [0.5, -1, 0]})
    add("edit", op={"ot": "vector3.set", "key": "a1", "path": "position", "value": [0.75, -1, 0]})
    add("commit")  # m0
    add("edit", op={"ot": "text.insert", "key": "note", "path": "text", "position": 5,
                    "value": " wörld😀"})  # fmt: skip
    add("edit", op={"ot": "text.replace", "key": "note", "path": "text", "position": 0,
                    "length": 1, "value": "H"})  # fmt: skip
    add("commit")  # m1
    add("edit", op={"ot": "text.delete", "key": "note", "path": "text", "position": 6, "length": 2})
    add("edit", op={"ot": "number.add", "key": "a1", "path": "n", "value": 2})
    add("edit", op={"ot": "number.add", "key": "a1", "path": "n", "value": 3})
    add("undo")  # m2 (the buffer goes out first) and m3 (its undo)
    add("redo")  # m4
    add("commit")  # nothing buffered: no message
    add("ack", committed=0, seq=srv.reserve())  # 6
    color = srv.b_edit({"ot": "color.set", "key": "a1", "path": "color", "value": "#aa0000"})
    add("frame", data=srv.frame(BroadcastFrame(color, 7)))
    add("ack", committed=1, seq=srv.reserve())  # 8
    add("ack", committed=2, seq=srv.reserve())  # 9
    add("ack", committed=0, seq=6)  # the ack of a resend: the position stays
    add("edit", op={"ot": "boolean.set", "key": "s1", "path": "flag", "value": True})
    add("commit")  # m5
    add("error", committed=5, code="FORBIDDEN")  # refused: dropped with its effect
    add("edit", op={"ot": "string.set", "key": "s1", "path": "label", "value": "x"})
    add("commit")  # m6
    add("error", committed=6, code="RATE_LIMITED")  # resent after the pause
    add("tick")
    steps[-1]["now"] = t - 0.1  # not due yet
    add("tick")
    add("frame", data=srv.frame(PingFrame(ts=1)))
    add("presence", state={"cursor": [1, 2], "name": "a"})
    add("frame", data=srv.frame(PresenceFrame(event="join", client="c", state={"n": 1})))
    add("frame", data=srv.frame(PresenceFrame(event="update", client="c", state={"n": 2})))
    add("frame", data=srv.frame(PresenceFrame(event="leave", client="b", reason="expired")))
    add("frame", data=srv.frame(RoomErrorFrame(msgId=None, error="bad", code="MALFORMED_FRAME")))
    # a cut: the undo m3 reached the server (its ack was lost); offline edits wait
    add("lost")
    add("edit", op={"ot": "number.set", "key": "s1", "path": "size", "value": 7})
    add("commit")  # m7
    add("presence", state={"cursor": [3, 4], "name": "a"})
    add("edit", op={"ot": "text.insert", "key": "note", "path": "text", "position": 0,
                    "value": ">"})  # fmt: skip
    add("commit")  # m8
    srv.b_edit({"ot": "number.add", "key": "s1", "path": "size", "value": 1})  # 10
    m3_seq = srv.reserve()  # 11
    # the resume needs m3 itself: run the Python core this far to learn it
    probe = ClientRoomSession("a", fmt=fmt)  # type: ignore[arg-type]
    committed: list[str] = []
    for st in steps:
        _py_step(probe, fmt, st, committed)
    srv.journal[m3_seq - 1] = msgspec.structs.replace(
        next(m for m in probe.unacked() if m.id == committed[3]), serverSeq=m3_seq
    )
    add("frame", data=srv.state(upto=None, since=9, epoch="E1"))  # resends m3 m4 m6 m7 m8
    add("ack", committed=3, seq=m3_seq)
    for k in (4, 6, 7, 8):
        add("ack", committed=k, seq=srv.reserve())
    # the store was replaced: a new epoch, a full state without our last edits
    add("lost")
    add("edit", op={"ot": "vector3.set", "key": "a1", "path": "position", "value": [9, 9, 9]})
    add("commit")  # m9
    add("edit", op={"ot": "number.set", "key": "s1", "path": "z", "value": 1})  # uncommitted
    fresh = Server(fmt)
    fresh.b_edit(_ins("", "scene"))
    fresh.b_edit(_ins("scene", "a1", tag="shape"))
    add("frame", data=fresh.state(upto=1, since=None, epoch="E2"))  # m10 = the buffer
    add("ack", committed=9, seq=3)
    add("ack", which=0, seq=4)
    return steps


# -- the Python side ------------------------------------------------------------------------


def _py_step(c: ClientRoomSession, fmt: str, st: dict[str, Any], committed: list[str]) -> Any:
    now = st["now"]
    do = st["do"]

    def target() -> str:
        if "committed" in st:
            return committed[st["committed"]]
        return st.get("id") or c.unacked()[st["which"]].id

    def data(frame: ServerFrame) -> bytes | str:
        raw = encode_frame(frame, fmt)  # type: ignore[arg-type]
        return raw.decode() if fmt == "json" else raw

    if do == "frame":
        c.receive_data(st["data"] if fmt == "json" else base64.b64decode(st["data"]), now)
    elif do == "ack":
        c.receive_data(data(AckFrame(target(), st["seq"])), now)
    elif do == "error":
        c.receive_data(data(RoomErrorFrame(msgId=target(), error="refused", code=st["code"])), now)
    elif do == "edit":
        c.edit(st["op"], now)
    elif do in ("commit", "undo", "redo"):
        before = [m.id for m in c.unacked()]
        msg = getattr(c, do)(now)
        committed += [m.id for m in c.unacked() if m.id not in before]
        return msg.id if msg is not None else None
    elif do == "presence":
        c.send_presence(st["state"])
    elif do == "lost":
        c.connection_lost()
    elif do == "tick":
        c.tick(now)
    else:
        raise AssertionError(do)
    return None


def _py_event(e: Any) -> dict[str, Any] | None:
    if isinstance(e, PresenceEvent):
        return {"type": "presence", "event": e.event, "client": e.client, "state": e.state,
                "members": dict(e.members)}  # fmt: skip
    if isinstance(e, RoomError):
        return {"type": "error", "code": e.code, "msgId": e.msg_id}
    return None  # RoomChange: the two cores report changes at different granularity


def _run_py(fmt: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    c = ClientRoomSession("a", fmt=fmt)  # type: ignore[arg-type]
    out = []
    committed: list[str] = []
    for st in steps:
        result = _py_step(c, fmt, st, committed)
        sent = [d if isinstance(d, str) else base64.b64encode(d).decode() for d in c.data_to_send()]
        events = [e for e in map(_py_event, c.events_received()) if e is not None]
        out.append(
            {
                "result": result,
                "sent": [_decode(d, fmt) for d in sent],
                "events": events,
                "unacked": [m.id for m in c.unacked()],
                "serverSeq": c.server_seq,
                "epoch": c.epoch,
                "connected": c.connected,
                "reloads": c.reloads,
                "deadline": c.next_deadline(),
                "dump": c.replica.dump(with_meta=True),
                "presence": dict(c.presence),
            }
        )
    return out


def _comparable(js: dict[str, Any], fmt: str) -> dict[str, Any]:
    out = dict(js)
    out["sent"] = [_decode(d, fmt) for d in js["sent"]]
    out["events"] = [e for e in js["events"] if e["type"] in ("presence", "error")]
    del out["error"]
    return out


# -- TS-only scenarios ----------------------------------------------------------------------


def _bounded(fmt: str, policy: str) -> dict[str, Any]:
    srv = Server(fmt)
    srv.b_edit(_ins("", "scene"))
    t = NOW
    steps: list[dict[str, Any]] = [{"do": "frame", "now": t, "data": srv.state(
        upto=0, since=None, epoch="E1")}]  # fmt: skip
    for i in range(4):
        steps.append({"do": "edit", "now": t, "op": _ins("scene", f"n{i}")})
        steps.append({"do": "commit", "now": t})
    return {"client": "a", "format": fmt, "outbox": {"maxMessages": 3, "policy": policy},
            "steps": steps}  # fmt: skip


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    scenarios: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    scripts: dict[str, list[dict[str, Any]]] = {}
    for fmt in ("json", "msgpack"):
        scripts[fmt] = _script(fmt)
        index[f"diff-{fmt}"] = len(scenarios)
        scenarios.append({"client": "a", "format": fmt, "steps": scripts[fmt]})
    for policy in ("reject", "drop_oldest"):
        index[policy] = len(scenarios)
        scenarios.append(_bounded("msgpack", policy))
    # drop_oldest, and the server had the dropped message: its ack asks for a resync
    sc = _bounded("json", "drop_oldest")
    index["resync"] = len(scenarios)
    sc["steps"] += [{"do": "ack", "id": "a:2", "seq": 2, "now": NOW}]
    scenarios.append(sc)
    # a RATE_LIMITED without message id sends the presence state again after the pause
    srv = Server("json")
    index["presence-retry"] = len(scenarios)
    scenarios.append({"client": "a", "format": "json", "steps": [
        {"do": "frame", "now": NOW, "data": srv.state(upto=0, since=None, epoch="E")},
        {"do": "presence", "now": NOW, "state": {"x": 1}},
        {"do": "frame", "now": NOW, "data": srv.frame(RoomErrorFrame(msgId=None, error="slow down",
                                                                 code="RATE_LIMITED"))},
        {"do": "tick", "now": NOW + 0.6},
    ]})  # fmt: skip
    index["bad"] = len(scenarios)
    scenarios.append({"client": "a", "format": "json", "steps": [
        {"do": "frame", "now": NOW, "data": srv.state(upto=0, since=None, epoch="E")},
        {"do": "raw", "now": NOW, "data": "{not json"},
        {"do": "raw", "now": NOW, "data": '{"mtype":"from-the-future"}'},
        {"do": "raw", "now": NOW, "data": '{"mtype":"ack","msgId":"a:1","serverSeq":-1}'},
        {"do": "raw", "now": NOW, "data": '{"mtype":"broadcast","serverSeq":3,'
                                          '"msg":{"id":"b:1","client":"b","lt":1,"ts":1,'
                                          '"ops":[{"ot":"nope","key":"k","path":"p"}]}}'},
        {"do": "raw", "now": NOW, "data": '{"mtype":"state","snapshot":null,"journal":[{}],'
                                          '"serverSeq":1,"epoch":"E","recovered":true}'},
    ]})  # fmt: skip
    return {"out": _run_js(scenarios), "index": index, "scripts": scripts}


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_the_ts_core_does_what_the_python_core_does(runs: dict[str, Any], fmt: str) -> None:
    steps = runs["scripts"][fmt]
    py = _run_py(fmt, steps)
    js = runs["out"][runs["index"][f"diff-{fmt}"]]
    assert len(js) == len(py) == len(steps)
    for k, (p, j) in enumerate(zip(py, js, strict=True)):
        assert j["error"] is None, (k, steps[k]["do"], j["error"])
        assert _comparable(j, fmt) == p, (k, steps[k]["do"])
    # the script went where it should: reloads, resends, a final clean state
    assert py[-1]["unacked"] == [] and py[-1]["epoch"] == "E2" and py[-1]["reloads"] == 2
    sent = [f["mtype"] for s in py for f in s["sent"]]
    assert sent.count("heartbeat") == 1 and "presence" in sent
    undo = next(k for k, s in enumerate(steps) if s["do"] == "undo")
    assert [[o["ot"] for o in f["msg"]["ops"]] for f in py[undo]["sent"]] == [
        ["text.delete", "number.add"],
        ["meta.undo"],
    ]
    resume = next(k for k, s in enumerate(py) if s["reloads"] == 1 and s["serverSeq"] == 11)
    assert [f["mtype"] for f in py[resume]["sent"]] == ["crdt"] * 5 + ["presence"]
    assert '"text":">Hello rld😀"' in py[resume + 5]["dump"]  # acked: the text as typed


def test_outbox_reject_refuses_and_changes_nothing(runs: dict[str, Any]) -> None:
    steps = runs["out"][runs["index"]["reject"]]
    # three messages fit; the fourth edit is refused before it applies
    assert steps[-3]["unacked"] == ["a:2", "a:3", "a:4"]
    refused = steps[-2]
    assert refused["error"].startswith("BufferFull(count)")
    assert refused["events"] == [{"type": "overflow", "reason": "count", "policy": "reject",
                                  "dropped": []}]  # fmt: skip
    assert refused["dump"] == steps[-3]["dump"] and refused["sent"] == []
    assert '"n3"' not in refused["dump"]
    assert steps[-1]["result"] is None and steps[-1]["unacked"] == ["a:2", "a:3", "a:4"]


def test_outbox_drop_oldest_drops_with_the_effect_and_says_so(runs: dict[str, Any]) -> None:
    steps = runs["out"][runs["index"]["drop_oldest"]]
    last = steps[-1]
    assert last["error"] is None and last["unacked"] == ["a:3", "a:4", "a:5"]
    overflow = [e for e in last["events"] if e["type"] == "overflow"]
    assert overflow == [{"type": "overflow", "reason": "count", "policy": "drop_oldest",
                         "dropped": ["a:2"]}]  # fmt: skip
    assert '"n0"' not in last["dump"] and '"n3"' in last["dump"]  # a:2 inserted n0
    assert len(last["sent"]) == 1  # the new message went out


def test_an_ack_of_a_dropped_message_asks_for_what_was_missed(runs: dict[str, Any]) -> None:
    last = runs["out"][runs["index"]["resync"]][-1]
    assert [json.loads(d) for d in last["sent"]] == [{"mtype": "sync", "since": 1, "epoch": "E1"}]
    assert last["serverSeq"] == 2


def test_presence_is_sent_again_after_an_anonymous_rate_limit(runs: dict[str, Any]) -> None:
    steps = runs["out"][runs["index"]["presence-retry"]]
    assert steps[2]["deadline"] == pytest.approx(NOW + 0.5)
    assert [json.loads(d) for d in steps[3]["sent"]] == [{"mtype": "presence", "state": {"x": 1}}]


def test_bad_frames_raise_and_change_nothing(runs: dict[str, Any]) -> None:
    steps = runs["out"][runs["index"]["bad"]]
    for s in steps[1:]:
        assert s["error"].startswith("RemoteProtocolError: bad_frame"), s["error"]
        assert s["dump"] == steps[0]["dump"] and s["serverSeq"] == 0 and s["connected"]
    assert "ops[0].ot" in steps[4]["error"] and "state.journal[0]" in steps[5]["error"]
    # the Python core refuses the same frames
    c = ClientRoomSession("a", fmt="json")
    for s in [
        '{"mtype":"from-the-future"}',
        '{"mtype":"ack","msgId":"a:1","serverSeq":"x"}',
    ]:
        with pytest.raises(RemoteProtocolError):
            c.receive_data(s, NOW)
