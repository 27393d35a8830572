// Differential CRDT runner: reads a JSON array of cases on stdin, runs each with the JS replica
// (js/dist/durasync.mjs) and prints a JSON array of results. One node process per batch of
// cases (tests/js_client/test_crdt_differential.py drives it).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const D = await import(join(here, "../../js/dist/durasync.mjs"));

const cases = JSON.parse(readFileSync(0, "utf8"));

function dumps(r) {
  return { full: r.dump(), live: r.dump({ live: true }), meta: r.dump({ withMeta: true }) };
}

function clone(x) {
  return JSON.parse(JSON.stringify(x));
}

// Deterministic PRNG (mulberry32) for the JS-generated histories.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// A causally consistent history made by JS sessions editing through the public API (stale
// views, every otype, position-based text edits, undo/redo, pending messages acked later).
function makeOps(seed) {
  const r = rng(seed);
  const pick = (a) => a[Math.floor(r() * a.length)];
  const int = (lo, hi) => lo + Math.floor(r() * (hi - lo + 1));
  const numv = () => (r() < 0.5 ? int(-5, 5) : Math.round((r() * 6 - 3) * 1000) / 1000);
  const vec = (n) => Array.from({ length: n }, numv);
  const quat = () => {
    const q = vec(4).map((x) => x + 0.01);
    const s = Math.hypot(...q);
    return q.map((x) => x / s);
  };
  const color = () => "#" + Array.from({ length: 6 }, () => pick("0123456789abcdef")).join("");
  const SCALARS = [0, 1, 2, "a", "b", true, null, 1.5, "é😀"];
  let counter = 0;
  const randomOp = (rep, sid) => {
    const g = rep.graph;
    const keys = Array.from(g.nodes.keys()).sort();
    const live = keys.filter((k) => !g.nodes.get(k).deleted);
    const key = live.length ? pick(live) : keys.length ? pick(keys) : "scene";
    const path = pick(["p", "q", "ü"]);
    let fam = pick(["node", "number", "vector3", "euler", "quaternion", "color", "string", "boolean", "array", "object", "text", "text", "text"]);
    if (!keys.length) fam = "number";
    if (fam === "node") {
      const verb = pick(["insert", "insert", "insert", "remove", "move", "move"]);
      if (verb === "insert") return { ot: "node.insert", key, path: "children", value: { key: `${sid}${++counter}`, tag: pick(["Mesh", "Group"]), p: numv() } };
      if (verb === "remove") {
        const child = pick(keys.filter((k) => k !== "scene").length ? keys.filter((k) => k !== "scene") : keys);
        return { ot: "node.remove", key: g.nodes.get(child).parent ?? "", path: "children", value: child };
      }
      const child = pick(keys);
      return { ot: "node.move", key: g.nodes.get(child).parent ?? "", path: "children", value: { nodeKey: child, newParent: pick(keys) } };
    }
    if (fam === "number") return { ot: `number.${pick(["set", "add", "multiply", "min", "max"])}`, key, path, value: numv() };
    if (fam === "vector3") {
      const verb = pick(["set", "add", "multiply", "applyQuaternion", "applyEuler"]);
      if (verb === "applyQuaternion") return { ot: "vector3.applyQuaternion", key, path, value: quat() };
      if (verb === "applyEuler") {
        const o = { ot: "vector3.applyEuler", key, path, value: vec(3) };
        if (r() < 0.5) o.order = pick(["XYZ", "YXZ", "ZXY", "ZYX", "YZX", "XZY"]);
        if (r() < 0.3) o.intrinsic = r() < 0.5;
        return o;
      }
      return { ot: `vector3.${verb}`, key, path, value: vec(3) };
    }
    if (fam === "euler") return { ot: `euler.${pick(["set", "add"])}`, key, path, value: vec(3) };
    if (fam === "quaternion") return { ot: `quaternion.${pick(["set", "multiply"])}`, key, path, value: quat() };
    if (fam === "color") return { ot: `color.${pick(["set", "blend"])}`, key, path, value: color() };
    if (fam === "string") {
      const o = { ot: `string.${pick(["set", "concat"])}`, key, path, value: pick(["x", "yz", "", "😀"]) };
      if (o.ot === "string.concat" && r() < 0.5) o.separator = ",";
      return o;
    }
    if (fam === "boolean") return { ot: `boolean.${pick(["set", "or", "and"])}`, key, path, value: r() < 0.5 };
    if (fam === "array") {
      const verb = pick(["set", "push", "union", "remove", "move"]);
      if (verb === "set" || verb === "union") return { ot: `array.${verb}`, key, path, value: SCALARS.filter(() => r() < 0.3) };
      if (verb === "move") return { ot: "array.move", key, path, from: int(0, 3), to: int(0, 3) };
      return { ot: `array.${verb}`, key, path, value: pick(SCALARS) };
    }
    if (fam === "object") {
      const verb = pick(["set", "merge", "merge"]);
      const value = {};
      for (let i = int(1, 2); i > 0; i--) {
        Object.defineProperty(value, pick(["a", "b", "c", "__proto__"]), { value: pick(SCALARS), enumerable: true, writable: true, configurable: true });
      }
      return { ot: `object.${verb}`, key, path: verb === "merge" && r() < 0.3 ? "." : path, value };
    }
    const tkey = pick(["n0", "n1"]);
    const node = g.nodes.get(tkey);
    if (node === undefined || node.deleted) return { ot: "number.add", key: tkey, path, value: 1 };
    const doc = g.texts.get(D.textKey(tkey, "t"));
    const n = doc === undefined ? 0 : doc.length;
    const verb = pick(["init", "insert", "insert", "insert", "insert", "delete", "replace"]);
    if (verb === "init" || (doc === undefined && r() < 0.3)) return { ot: "text.init", key: tkey, path: "t" };
    if (verb === "insert" || n === 0) return { ot: "text.insert", key: tkey, path: "t", position: int(0, n), value: [null, pick(["a", "bc", "xyz", "é", "😀!"])] };
    const pos = int(0, n - 1);
    const length = int(1, Math.min(3, n - pos));
    if (verb === "delete") return { ot: "text.delete", key: tkey, path: "t", position: pos, length };
    return { ot: "text.replace", key: tkey, path: "t", position: pos, length, value: [null, "R"] };
  };
  return { r, pick, int, randomOp };
}

function generate(seed, nSessions, steps) {
  const { r, pick, int, randomOp } = makeOps(seed);
  const sids = Array.from({ length: nSessions }, (_, i) => String.fromCharCode(97 + i));
  const reps = new Map(sids.map((s) => [s, new D.Replica(s)]));
  const have = new Map(sids.map((s) => [s, new Set()]));
  const deps = new Map();
  const messages = [];
  const record = (sid, m) => {
    if (m === null) return;
    deps.set(m.id, new Set(have.get(sid)));
    have.get(sid).add(m.id);
    messages.push(clone(m));
  };
  const a = reps.get("a");
  a.edit({ ot: "node.insert", key: "", path: "children", value: { key: "scene", tag: "Scene" } }, 1);
  for (let i = 0; i < 3; i++) a.edit({ ot: "node.insert", key: "scene", path: "children", value: { key: `n${i}`, tag: "Mesh" } }, 1);
  record("a", a.commit(1));
  let ts = 1;
  for (let s = 0; s < steps; s++) {
    ts += int(0, 2);
    const sid = pick(sids);
    const rep = reps.get(sid);
    const k = r();
    if (k < 0.45) {
      const h = have.get(sid);
      const ready = messages.filter((m) => !h.has(m.id) && [...deps.get(m.id)].every((d) => h.has(d)));
      for (const m of ready) {
        if (r() < 0.6) continue;
        if ([...deps.get(m.id)].every((d) => h.has(d))) {
          rep.receive(clone(m));
          h.add(m.id);
        }
      }
      continue;
    }
    if (k < 0.55) {
      record(sid, r() < 0.6 ? rep.undo(ts) : rep.redo(ts));
      continue;
    }
    for (let i = int(1, 3); i > 0; i--) rep.edit(randomOp(rep, sid), ts);
    record(sid, rep.commit(ts));
  }
  // deliver everything to every session, causally
  for (const [sid, rep] of reps) {
    const h = have.get(sid);
    for (;;) {
      const ready = messages.filter((m) => !h.has(m.id) && [...deps.get(m.id)].every((d) => h.has(d)));
      if (!ready.length) break;
      for (const m of ready) {
        rep.receive(clone(m));
        h.add(m.id);
      }
    }
  }
  const views = sids.map((s) => reps.get(s).dump({ withMeta: true }));
  return { messages, sessions: views };
}

// Clients of a sequencing server (Replica({sequenced: true})): they edit, commit, undo and redo
// with messages in flight; the server sequences what reaches it, acks the sender and
// broadcasts to the others; every queue is delivered at random moments, in order.
function sequenced(seed, nClients, steps) {
  const { r, pick, int, randomOp } = makeOps(seed);
  const sids = Array.from({ length: nClients }, (_, i) => String.fromCharCode(97 + i));
  const clients = new Map(sids.map((s) => [s, new D.Replica(s, { sequenced: true })]));
  const server = new D.Replica("server");
  const journal = [];
  const toServer = new Map(sids.map((s) => [s, []]));
  const toClient = new Map(sids.map((s) => [s, []]));
  const send = (sid, m) => m !== null && toServer.get(sid).push(clone(m));
  const serve = (sid) => {
    const m = toServer.get(sid).shift();
    if (m === undefined) return;
    if (server.has(m.id)) return;
    const seq = journal.length;
    server.receive(D.decodeMessage(clone(m)), seq);
    journal.push({ ...m, serverSeq: seq });
    for (const other of sids) toClient.get(other).push(other === sid ? { ack: m.id, seq } : { msg: m, seq });
  };
  const deliver = (sid) => {
    const item = toClient.get(sid).shift();
    if (item === undefined) return;
    const c = clients.get(sid);
    if (item.ack !== undefined) c.ack(item.ack, item.seq);
    else c.receive(D.decodeMessage(clone(item.msg)), item.seq);
  };
  const a = clients.get("a");
  a.edit({ ot: "node.insert", key: "", path: "children", value: { key: "scene", tag: "Scene" } }, 1);
  for (let i = 0; i < 3; i++) a.edit({ ot: "node.insert", key: "scene", path: "children", value: { key: `n${i}`, tag: "Mesh" } }, 1);
  send("a", a.commit(1));
  let ts = 1;
  for (let s = 0; s < steps; s++) {
    ts += int(0, 2);
    const sid = pick(sids);
    const c = clients.get(sid);
    const k = r();
    if (k < 0.25) serve(sid);
    else if (k < 0.5) for (let i = int(1, 4); i > 0; i--) deliver(sid);
    else if (k < 0.6) {
      send(sid, c.commit(ts)); // undo() would commit the buffer itself, unsent
      send(sid, r() < 0.6 ? c.undo(ts) : c.redo(ts));
    } else {
      for (let i = int(1, 3); i > 0; i--) c.edit(randomOp(c, sid), ts);
      if (r() < 0.8) send(sid, c.commit(ts));
    }
  }
  for (const sid of sids) send(sid, clients.get(sid).commit(ts));
  for (const sid of sids) while (toServer.get(sid).length) serve(sid);
  for (const sid of sids) while (toClient.get(sid).length) deliver(sid);
  return {
    journal,
    server: server.dump({ withMeta: true }),
    clients: sids.map((s) => clients.get(s).dump({ withMeta: true })),
    pending: sids.map((s) => clients.get(s).pendingCount),
  };
}

const out = [];
for (const c of cases) {
  try {
    if (c.kind === "format") {
      out.push(c.numbers.map((x) => D.formatNumber(x)));
    } else if (c.kind === "replay") {
      // receive the messages in the given batches (each a list of indices), with serverSeqs
      const r = new D.Replica("js", { checkpointEvery: c.checkpointEvery ?? 8 });
      const msgs = c.messages.map((m) => D.decodeMessage(clone(m)));
      for (const batch of c.batches) {
        const ms = batch.map((i) => msgs[i]);
        const seqs = c.seqs ? batch.map((i) => c.seqs[i]) : null;
        if (ms.length === 1) r.receive(ms[0], seqs ? seqs[0] : null, { validate: false });
        else r.receiveMany(ms, seqs, { validate: false });
      }
      out.push(dumps(r));
    } else if (c.kind === "from_snapshot") {
      const r = D.Replica.fromSnapshot("js", clone(c.snapshot), c.tail.map((m) => D.decodeMessage(clone(m))));
      out.push(dumps(r));
    } else if (c.kind === "snapshot") {
      const r = new D.Replica("js");
      r.receiveMany(c.messages.map((m) => D.decodeMessage(clone(m))));
      const snap = r.snapshot(c.upto);
      const compacted = new D.Replica("js2");
      compacted.receiveMany(c.messages.map((m) => D.decodeMessage(clone(m))));
      compacted.compact(c.upto);
      out.push({ snapshot: snap, dump: r.dump({ withMeta: true }), compacted: compacted.dump({ withMeta: true }) });
    } else if (c.kind === "protocol") {
      // the sans-I/O cores: state table, backoff schedule, buffer policies
      const b = new D.Backoff(D.backoffPolicy(c.backoff), () => 0.999);
      const delays = [];
      for (let i = 0; i < 8; i++) delays.push(b.nextDelay());
      const buf = new D.OutgoingBuffer({ maxMessages: 3, maxBytes: 10, maxAge: 5, policy: "drop_oldest" });
      for (const [p, t] of [["ab", 0], ["cdé", 1], ["f", 2], ["ghijk", 3]]) buf.push(p, t);
      buf.expire(6.5);
      out.push({ transitions: D.TRANSITIONS, delays, events: buf.drainEvents(), left: buf.clear() });
    } else if (c.kind === "sequenced") {
      out.push(sequenced(c.seed, c.sessions, c.steps));
    } else if (c.kind === "validate") {
      // decodeMessage on each raw message: accepted, or the field and reason it was refused for
      out.push(
        c.messages.map((m) => {
          try {
            D.decodeMessage(m);
            return { ok: true };
          } catch (e) {
            if (!(e instanceof D.CRDTValidationError)) throw e;
            return { ok: false, field: e.field, detail: e.detail };
          }
        }),
      );
    } else if (c.kind === "generate") {
      out.push(generate(c.seed, c.sessions, c.steps));
    } else {
      out.push({ error: `unknown case kind ${c.kind}` });
    }
  } catch (exc) {
    out.push({ error: String(exc && exc.stack ? exc.stack : exc) });
  }
}
process.stdout.write(JSON.stringify(out));
