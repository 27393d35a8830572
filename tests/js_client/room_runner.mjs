// Room core runner: reads a JSON array of scenarios on stdin, drives the TypeScript
// ClientRoomSession (js/dist/durasync.mjs) through each scenario's steps and prints, per step,
// what the core did (frames sent, events, outbox, position, graph). One node process for all
// scenarios; tests/js_client/test_room_core.py runs the same steps through the Python
// ClientRoomSession and compares.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const D = await import(join(here, "../../js/dist/durasync.mjs"));
const { encode: mpEncode } = await import(join(here, "../../js/node_modules/@msgpack/msgpack/dist.esm/index.mjs"));

const scenarios = JSON.parse(readFileSync(0, "utf8"));

const b64 = (u8) => Buffer.from(u8).toString("base64");
const fromB64 = (s) => new Uint8Array(Buffer.from(s, "base64"));

function encodeFrame(fmt, frame) {
  return fmt === "json" ? JSON.stringify(frame) : mpEncode(frame);
}

function step(c, fmt, st, committed) {
  const target = () => (st.committed !== undefined ? committed[st.committed] : st.id !== undefined ? st.id : c.unacked()[st.which].id);
  switch (st.do) {
    case "frame":
      return c.receiveData(fmt === "json" ? st.data : fromB64(st.data), st.now);
    case "ack":
      return c.receiveData(encodeFrame(fmt, { mtype: "ack", msgId: target(), serverSeq: st.seq }), st.now);
    case "error":
      return c.receiveData(encodeFrame(fmt, { mtype: "error", msgId: target(), error: "refused", code: st.code }), st.now);
    case "edit":
      return c.edit(st.op, st.now) && null;
    case "commit":
    case "undo":
    case "redo": {
      const before = new Set(c.unacked().map((m) => m.id));
      const msg = c[st.do](st.now);
      for (const m of c.unacked()) if (!before.has(m.id)) committed.push(m.id);
      return msg?.id ?? null;
    }
    case "presence":
      return c.setPresence(st.state);
    case "lost":
      return c.connectionLost();
    case "tick":
      return c.tick(st.now);
    case "raw":
      return c.receiveData(st.data, st.now);
    default:
      throw new Error(`unknown step ${st.do}`);
  }
}

function event(e) {
  if (e.type === "change") return { type: "change", origin: e.origin, keys: e.keys === null ? null : Array.from(e.keys).sort() };
  if (e.type === "presence") return { type: "presence", event: e.event, client: e.client, state: e.state, members: Object.fromEntries(e.members) };
  if (e.type === "room-error") return { type: "error", code: e.code, msgId: e.msgId };
  return { type: e.type, reason: e.reason, policy: e.policy, dropped: e.dropped.map((m) => m.id) };
}

const out = [];
for (const sc of scenarios) {
  const c = new D.ClientRoomSession(sc.client, { format: sc.format, ...(sc.outbox ? { outbox: sc.outbox } : {}) });
  const steps = [];
  const committed = [];
  for (const st of sc.steps) {
    let result = null;
    let error = null;
    try {
      result = step(c, sc.format, st, committed) ?? null;
    } catch (exc) {
      error = `${exc.name}${exc.reason ? `(${exc.reason})` : ""}: ${exc.message}`;
    }
    steps.push({
      result,
      error,
      sent: c.dataToSend().map((d) => (typeof d === "string" ? d : b64(d))),
      events: c.eventsReceived().map(event),
      unacked: c.unacked().map((m) => m.id),
      serverSeq: c.serverSeq,
      epoch: c.epoch,
      connected: c.connected,
      reloads: c.reloads,
      deadline: c.nextDeadline(),
      dump: c.replica.dump({ withMeta: true }),
      presence: Object.fromEntries(c.presence),
    });
  }
  out.push(steps);
}
process.stdout.write(JSON.stringify(out));
