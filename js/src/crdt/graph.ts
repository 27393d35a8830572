/**
 * The scene graph and the apply rule of every otype: a port of `durasync.crdt.graph` with the
 * same semantics (docs/crdt.md "Otypes" and "Deviations from the reference").
 *
 * A flat `nodes` map `key -> SceneNode`; the tree exists through `children` key lists plus a
 * `parent` pointer with its own LWW stamp. Properties are keyed by the full path string.
 * Values are never mutated in place (every op stores a new value), which lets checkpoints share
 * nodes copy-on-write: a node records the write epoch of the graph that created or cloned it
 * and is cloned before the first write of any other epoch.
 */

import type { Json, Op, Message } from "./messages.js";
import { cmpStr, strLt } from "./strings.js";
import { TextDoc } from "./text.js";

/** The value of a text property (rendered from `SceneGraph.texts`). */
export const TEXT: unique symbol = Symbol("TEXT");
export type PropValue = Json | typeof TEXT;

/** An LWW stamp `[lt, client]`. */
export type Stamp = [number, string];

let nextEpoch = 1;

/** One scene node. Treat values as immutable; change them only through ops. */
export class SceneNode {
  key: string;
  tag: string;
  name: string;
  children: string[];
  props: Map<string, PropValue>;
  lww: Map<string, Stamp>;
  createdAt: number;
  deletedAt: number | null;
  parent: string | null;
  pstamp: Stamp | null;
  /** children known to be sorted by (createdAt, key) with every child present */
  csorted: boolean;
  epoch: number;

  constructor(key: string, init: Partial<Omit<SceneNode, "key" | "clone" | "deleted">> = {}) {
    this.key = key;
    this.tag = init.tag ?? "";
    this.name = init.name ?? "";
    this.children = init.children ?? [];
    this.props = init.props ?? new Map();
    this.lww = init.lww ?? new Map();
    this.createdAt = init.createdAt ?? 0;
    this.deletedAt = init.deletedAt ?? null;
    this.parent = init.parent ?? null;
    this.pstamp = init.pstamp ?? null;
    this.csorted = init.csorted ?? this.children.length === 0;
    this.epoch = init.epoch ?? 0;
  }

  /** Whether the node is tombstoned. */
  get deleted(): boolean {
    return this.deletedAt !== null;
  }

  clone(epoch = 0): SceneNode {
    return new SceneNode(this.key, {
      tag: this.tag,
      name: this.name,
      children: this.children.slice(),
      props: new Map(this.props),
      lww: new Map(this.lww),
      createdAt: this.createdAt,
      deletedAt: this.deletedAt,
      parent: this.parent,
      pstamp: this.pstamp,
      csorted: this.csorted,
      epoch,
    });
  }
}

/** A frozen copy of a graph's node table (nodes shared copy-on-write). */
export interface Checkpoint {
  nodes: Map<string, SceneNode>;
  rootKey: string;
}

/** The key of a text doc: `key + "\u0000" + path`. */
export function textKey(key: string, path: string): string {
  return key + "\u0000" + path;
}

/** `[key, path]` of a text doc key. */
export function splitTextKey(k: string): [string, string] {
  const i = k.indexOf("\u0000");
  return [k.slice(0, i), k.slice(i + 1)];
}

/** Flat nodes + text docs. Apply messages with `applyMessage`. */
export class SceneGraph {
  nodes = new Map<string, SceneNode>();
  rootKey = "";
  /** Text docs by `textKey(key, path)`; they live outside checkpoints. */
  texts = new Map<string, TextDoc>();
  /** Write epoch: nodes of this epoch are this graph's own, mutable in place. */
  epoch = nextEpoch++;
  /** Text docs that saw an op naming a char id they do not hold. */
  missingRefs = new Set<string>();

  checkpoint(): Checkpoint {
    this.epoch = nextEpoch++;
    return { nodes: new Map(this.nodes), rootKey: this.rootKey };
  }

  restore(cp: Checkpoint): void {
    this.nodes = new Map(cp.nodes);
    this.rootKey = cp.rootKey;
    this.epoch = nextEpoch++;
  }

  /** Treat every current node as shared (cloned before its next write). */
  shareNodes(): void {
    this.epoch = nextEpoch++;
  }

  /** The node `key` made safe to mutate, or null if missing. */
  writable(key: string): SceneNode | null {
    let n = this.nodes.get(key);
    if (n === undefined) return null;
    if (n.epoch !== this.epoch) {
      n = n.clone(this.epoch);
      this.nodes.set(key, n);
    }
    return n;
  }

  /** The writable node `key` if it exists and is not tombstoned. */
  live(key: string): SceneNode | null {
    let n = this.nodes.get(key);
    if (n === undefined || n.deletedAt !== null) return null;
    if (n.epoch !== this.epoch) {
      n = n.clone(this.epoch);
      this.nodes.set(key, n);
    }
    return n;
  }

  /** Apply every non-meta op of a validated message in order (never throws). */
  applyMessage(msg: Message): void {
    const lt = msg.lt;
    const client = msg.client;
    const ts = msg.ts ?? 0;
    for (const op of msg.ops) {
      const fn = HANDLERS.get(op.ot);
      if (fn !== undefined) fn(this, op, lt, client, ts);
    }
  }

  /** Apply validated ops with the given stamp (local edits). */
  applyOps(ops: Iterable<Op>, lt: number, client: string, ts: number): void {
    for (const op of ops) {
      const fn = HANDLERS.get(op.ot);
      if (fn !== undefined) fn(this, op, lt, client, ts);
    }
  }

  /** The visible value of property `path` of node `key` (text rendered), or undefined. */
  get(key: string, path: string): Json | undefined {
    const n = this.nodes.get(key);
    if (n === undefined) return undefined;
    const v = n.props.get(path);
    if (v === TEXT) {
      const d = this.texts.get(textKey(key, path));
      return d !== undefined ? d.text() : "";
    }
    return v;
  }
}

export type Handler = (g: SceneGraph, op: Op, lt: number, client: string, ts: number) => void;

// -- helpers ------------------------------------------------------------------------------

function num(v: unknown, dflt: number): number {
  return typeof v === "number" ? v : dflt;
}

function vec(v: unknown, n: number): number[] | null {
  if (Array.isArray(v) && v.length === n) {
    for (const x of v) if (typeof x !== "number") return null;
    return v as number[];
  }
  return null;
}

function copyValue(v: unknown): Json {
  if (Array.isArray(v)) return v.slice() as Json;
  if (v !== null && typeof v === "object") return { ...(v as Record<string, Json>) };
  return v as Json;
}

/** Python `==` on JSON values: 1 == 1.0 == true, dicts equal whatever their key order. */
export function pyEq(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  const ta = typeof a;
  const tb = typeof b;
  if ((ta === "number" || ta === "boolean") && (tb === "number" || tb === "boolean")) {
    return Number(a) === Number(b);
  }
  if (a === null || b === null || ta !== "object" || tb !== "object") return false;
  const aa = Array.isArray(a);
  if (aa !== Array.isArray(b)) return false;
  if (aa) {
    const x = a as unknown[];
    const y = b as unknown[];
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (!pyEq(x[i], y[i])) return false;
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  const kx = Object.keys(x);
  if (kx.length !== Object.keys(y).length) return false;
  for (const k of kx) {
    if (!Object.prototype.hasOwnProperty.call(y, k) || !pyEq(x[k], y[k])) return false;
  }
  return true;
}

/** Stamp `[lt, client]` beats `st` (reference §3 LWW rule). */
function wins(lt: number, client: string, st: Stamp | null | undefined): boolean {
  return st == null || lt > st[0] || (lt === st[0] && strLt(st[1], client));
}

// -- handlers -----------------------------------------------------------------------------

const set: Handler = (g, op, lt, client) => {
  const key = op.key;
  let n = g.nodes.get(key);
  if (n === undefined || n.deletedAt !== null) return;
  const path = op.path;
  if (wins(lt, client, n.lww.get(path))) {
    if (n.epoch !== g.epoch) {
      n = n.clone(g.epoch);
      g.nodes.set(key, n);
    }
    n.props.set(path, copyValue(op.value));
    n.lww.set(path, [lt, client]);
  }
};

const numberAdd: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n !== null) n.props.set(op.path, num(n.props.get(op.path), 0) + (op.value as number));
};

const numberMultiply: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n !== null) n.props.set(op.path, num(n.props.get(op.path), 1) * (op.value as number));
};

const numberMin: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n !== null) {
    const c = num(n.props.get(op.path), Infinity);
    const v = op.value as number;
    n.props.set(op.path, v < c ? v : c);
  }
};

const numberMax: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n !== null) {
    const c = num(n.props.get(op.path), -Infinity);
    const v = op.value as number;
    n.props.set(op.path, v > c ? v : c);
  }
};

const vector3Add: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const v = op.value as number[];
  const c = vec(n.props.get(op.path), 3);
  n.props.set(
    op.path,
    c === null ? [v[0] as number, v[1] as number, v[2] as number] : [(c[0] as number) + (v[0] as number), (c[1] as number) + (v[1] as number), (c[2] as number) + (v[2] as number)],
  );
};

const vector3Multiply: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const v = op.value as number[];
  const c = vec(n.props.get(op.path), 3);
  n.props.set(
    op.path,
    c === null ? [v[0] as number, v[1] as number, v[2] as number] : [(c[0] as number) * (v[0] as number), (c[1] as number) * (v[1] as number), (c[2] as number) * (v[2] as number)],
  );
};

/** q · v · q⁻¹ for a unit quaternion q = [x, y, z, w]. */
export function rotate(v: number[], q: number[]): number[] {
  const vx = v[0] as number, vy = v[1] as number, vz = v[2] as number;
  const qx = q[0] as number, qy = q[1] as number, qz = q[2] as number, qw = q[3] as number;
  const ix = qw * vx + qy * vz - qz * vy;
  const iy = qw * vy + qz * vx - qx * vz;
  const iz = qw * vz + qx * vy - qy * vx;
  const iw = -qx * vx - qy * vy - qz * vz;
  return [
    ix * qw + iw * -qx + iy * -qz - iz * -qy,
    iy * qw + iw * -qy + iz * -qx - ix * -qz,
    iz * qw + iw * -qz + ix * -qy - iy * -qx,
  ];
}

/** three.js `Quaternion.setFromEuler` for the six orders. */
export function quatFromEuler(x: number, y: number, z: number, order: string): number[] {
  const c1 = Math.cos(x / 2), s1 = Math.sin(x / 2);
  const c2 = Math.cos(y / 2), s2 = Math.sin(y / 2);
  const c3 = Math.cos(z / 2), s3 = Math.sin(z / 2);
  const a = s1 * c2 * c3, b = c1 * s2 * s3, c = c1 * s2 * c3, d = s1 * c2 * s3;
  const e = c1 * c2 * s3, f = s1 * s2 * c3, h = c1 * c2 * c3, k = s1 * s2 * s3;
  switch (order) {
    case "XYZ": return [a + b, c - d, e + f, h - k];
    case "YXZ": return [a + b, c - d, e - f, h + k];
    case "ZXY": return [a - b, c + d, e + f, h - k];
    case "ZYX": return [a - b, c + d, e - f, h + k];
    case "YZX": return [a + b, c + d, e - f, h - k];
    default: return [a - b, c - d, e + f, h + k]; // XZY
  }
}

const vector3ApplyQuaternion: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n !== null) n.props.set(op.path, rotate(vec(n.props.get(op.path), 3) ?? [0, 0, 0], op.value as number[]));
};

const vector3ApplyEuler: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  let order = op.order !== undefined ? op.order : "XYZ";
  if (op.intrinsic === false) order = order.split("").reverse().join("");
  const v = op.value as number[];
  const q = quatFromEuler(v[0] as number, v[1] as number, v[2] as number, order);
  n.props.set(op.path, rotate(vec(n.props.get(op.path), 3) ?? [0, 0, 0], q));
};

/** Hamilton product a ⊗ b in xyzw order. */
export function quatMul(a: number[], b: number[]): number[] {
  const ax = a[0] as number, ay = a[1] as number, az = a[2] as number, aw = a[3] as number;
  const bx = b[0] as number, by = b[1] as number, bz = b[2] as number, bw = b[3] as number;
  return [
    aw * bx + ax * bw + ay * bz - az * by,
    aw * by - ax * bz + ay * bw + az * bx,
    aw * bz + ax * by - ay * bx + az * bw,
    aw * bw - ax * bx - ay * by - az * bz,
  ];
}

const quaternionMultiply: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n !== null) n.props.set(op.path, quatMul(vec(n.props.get(op.path), 4) ?? [0, 0, 0, 1], op.value as number[]));
};

const PY_HEX = /^([+-]?)([0-9a-fA-F]+(?:_[0-9a-fA-F]+)*)$/;

/** Python `int(h, 16)` of a 6-character `h` (sign, underscores, outer spaces allowed). */
function hexRgb(s: string): [number, number, number] | null {
  const h = s.startsWith("#") ? s.slice(1) : s;
  if (h.length !== 6) return null;
  const m = PY_HEX.exec(h.trim());
  if (m === null) return null;
  const x = parseInt((m[2] as string).replace(/_/g, ""), 16) * (m[1] === "-" ? -1 : 1);
  return [(x >> 16) & 255, (x >> 8) & 255, x & 255];
}

function hex2(x: number): string {
  return x.toString(16).padStart(2, "0");
}

const colorBlend: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const cur = n.props.get(op.path);
  const b = hexRgb(op.value as string) as [number, number, number];
  const a = (typeof cur === "string" ? hexRgb(cur) : null) ?? b;
  // half-up (JS Math.round), i.e. floor((x + y) / 2 + 0.5)
  const r = (a[0] + b[0] + 1) >> 1, gg = (a[1] + b[1] + 1) >> 1, bb = (a[2] + b[2] + 1) >> 1;
  n.props.set(op.path, `#${hex2(r)}${hex2(gg)}${hex2(bb)}`);
};

const stringConcat: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  let cur: PropValue | undefined = n.props.get(op.path);
  if (cur === TEXT) {
    const d = g.texts.get(textKey(op.key, op.path));
    cur = d !== undefined ? d.text() : "";
  }
  const sep = op.separator !== undefined ? op.separator : "";
  n.props.set(op.path, typeof cur === "string" && cur ? `${cur}${sep}${op.value as string}` : (op.value as string));
};

const booleanOr: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const cur = n.props.get(op.path);
  n.props.set(op.path, (typeof cur === "boolean" ? cur : false) || (op.value as boolean));
};

const booleanAnd: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const cur = n.props.get(op.path);
  n.props.set(op.path, (typeof cur === "boolean" ? cur : true) && (op.value as boolean));
};

function arrayCur(n: SceneNode, path: string): Json[] {
  const cur = n.props.get(path);
  return Array.isArray(cur) ? cur : [];
}

const arrayPush: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n !== null) n.props.set(op.path, [...arrayCur(n, op.path), op.value as Json]);
};

const arrayUnion: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const merged = arrayCur(n, op.path).slice();
  for (const x of op.value as Json[]) if (!merged.some((y) => pyEq(y, x))) merged.push(x);
  n.props.set(op.path, merged);
};

const arrayRemove: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const v = op.value;
  n.props.set(op.path, arrayCur(n, op.path).filter((x) => !pyEq(x, v)));
};

const arrayMove: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const arr = arrayCur(n, op.path).slice();
  const src = op.from as number;
  const dst = op.to as number;
  if (src >= 0 && src < arr.length) {
    const [x] = arr.splice(src, 1);
    arr.splice(Math.max(0, Math.min(dst, arr.length)), 0, x as Json);
    n.props.set(op.path, arr);
  }
};

const MERGE_SKIP = new Set(["key", "tag", "children", "_crdt"]);

const objectMerge: Handler = (g, op) => {
  const n = g.live(op.key);
  if (n === null) return;
  const path = op.path;
  const v = op.value as Record<string, Json>;
  if (path === "." || path === "") {
    for (const k of Object.keys(v)) if (!MERGE_SKIP.has(k)) n.props.set(k, v[k] as Json);
  } else {
    const cur = n.props.get(path);
    const base = cur !== null && typeof cur === "object" && !Array.isArray(cur) ? cur : {};
    n.props.set(path, { ...(base as Record<string, Json>), ...v });
  }
};

function childOrder(nodes: Map<string, SceneNode>, state: { ok: boolean }): (a: string, b: string) => number {
  return (a, b) => {
    const ma = nodes.get(a);
    const mb = nodes.get(b);
    if (ma === undefined || mb === undefined) state.ok = false;
    const ca = ma === undefined ? 0 : ma.createdAt;
    const cb = mb === undefined ? 0 : mb.createdAt;
    return ca < cb ? -1 : ca > cb ? 1 : cmpStr(a, b);
  };
}

/** Re-sort `parent.children` by (createdAt, key); missing children count as 0. */
function resort(nodes: Map<string, SceneNode>, parent: SceneNode): void {
  const state = { ok: true };
  for (const k of parent.children) if (!nodes.has(k)) state.ok = false;
  parent.children.sort(childOrder(nodes, state));
  parent.csorted = state.ok;
}

/** Append `childKey` to `parent.children` keeping the order (createdAt, key). */
function attach(g: SceneGraph, parent: SceneNode, childKey: string): void {
  const ch = parent.children;
  const nodes = g.nodes;
  if (parent.csorted) {
    if (ch.length === 0) {
      ch.push(childKey);
      return;
    }
    const last = nodes.get(ch[ch.length - 1] as string);
    const c = nodes.get(childKey) as SceneNode;
    if (last !== undefined && (last.createdAt < c.createdAt || (last.createdAt === c.createdAt && cmpStr(last.key, childKey) <= 0))) {
      ch.push(childKey);
      return;
    }
  }
  ch.push(childKey);
  resort(nodes, parent);
}

const nodeInsert: Handler = (g, op, lt, client, ts) => {
  const v = op.value as Record<string, Json>;
  const nk = v["key"] as string;
  const nodes = g.nodes;
  if (nodes.has(nk)) return; // idempotent, even over a tombstone
  const pk = op.key;
  const parent = pk ? g.writable(pk) : null;
  const props = new Map<string, PropValue>();
  for (const k of Object.keys(v)) {
    if (k !== "key" && k !== "tag" && k !== "name" && k !== "children") props.set(k, v[k] as Json);
  }
  const ch = v["children"];
  const children = Array.isArray(ch) && ch.length > 0 ? (ch.slice() as string[]) : [];
  const n = new SceneNode(nk, {
    tag: typeof v["tag"] === "string" ? v["tag"] : "",
    name: typeof v["name"] === "string" ? v["name"] : "",
    children,
    props,
    createdAt: ts,
    parent: parent !== null ? pk : null,
    pstamp: [lt, client],
    csorted: children.length === 0,
    epoch: g.epoch,
  });
  nodes.set(nk, n);
  if (!g.rootKey) g.rootKey = nk;
  if (parent !== null) {
    if (parent.children.includes(nk)) return;
    attach(g, parent, nk);
  }
};

function unlist(g: SceneGraph, parentKey: string | null, child: string): void {
  if (parentKey === null) return;
  const p = g.nodes.get(parentKey);
  if (p !== undefined && p.children.includes(child)) {
    const w = g.writable(parentKey) as SceneNode;
    w.children = w.children.filter((k) => k !== child);
  }
}

const nodeRemove: Handler = (g, op, _lt, _client, ts) => {
  const ck = op.value as string;
  const n = g.writable(ck);
  if (n === null) return;
  n.deletedAt = ts;
  unlist(g, op.key, ck);
  if (n.parent !== op.key) unlist(g, n.parent, ck);
};

const nodeMove: Handler = (g, op, lt, client) => {
  const v = op.value as Record<string, Json>;
  const nk = v["nodeKey"] as string;
  const npKey = v["newParent"] as string;
  const n0 = g.nodes.get(nk);
  const newp0 = g.nodes.get(npKey);
  if (n0 === undefined || n0.deletedAt !== null || newp0 === undefined) return;
  if (!wins(lt, client, n0.pstamp)) return; // parent pointer is LWW
  let cur: string | null = npKey;
  let hops = 0;
  while (cur !== null && hops <= g.nodes.size) {
    if (cur === nk) return; // would create a cycle
    const p = g.nodes.get(cur);
    cur = p !== undefined ? p.parent : null;
    hops++;
  }
  const n = g.writable(nk) as SceneNode;
  const old = n.parent;
  n.pstamp = [lt, client];
  if (old === npKey && newp0.children.includes(nk)) return;
  unlist(g, old, nk);
  if (op.key !== old) unlist(g, op.key, nk);
  n.parent = npKey;
  const newp = g.writable(npKey) as SceneNode;
  if (!newp.children.includes(nk)) attach(g, newp, nk);
};

// -- text ---------------------------------------------------------------------------------

function checkRefs(g: SceneGraph, d: TextDoc, op: Op, anchor: unknown): void {
  if (op.id !== undefined && !d.has(op.id) && anchor !== null && !d.has(anchor)) {
    g.missingRefs.add(textKey(op.key, op.path));
  }
}

function checkRm(g: SceneGraph, d: TextDoc, op: Op): void {
  for (const r of op.rm ?? []) {
    if (!d.has(r[0])) {
      g.missingRefs.add(textKey(op.key, op.path));
      return;
    }
  }
}

/** Integrate a text op into its doc without touching node properties (rope rebuilds). */
export function applyTextOnly(g: SceneGraph, op: Op, client: string, ts: number): void {
  const ot = op.ot;
  const k = textKey(op.key, op.path);
  if (ot === "text.init") {
    const d = g.texts.get(k);
    const v = typeof op.value === "string" ? op.value : "";
    if (d === undefined) g.texts.set(k, v ? TextDoc.initial(client, v, ts) : new TextDoc(client));
    else if (v) d.applyInsert(`${client}:0`, null, v, 1, ts);
    return;
  }
  if (ot === "text.delete") {
    const d0 = g.texts.get(k);
    if (d0 === undefined) {
      if (op.rm !== undefined && op.rm.length > 0) g.missingRefs.add(k);
      return;
    }
    checkRm(g, d0, op);
    d0.applyDelete(op.rm ?? []);
    return;
  }
  let d = g.texts.get(k);
  if (d === undefined) {
    d = new TextDoc(client);
    g.texts.set(k, d);
  }
  const [anchor, content] = op.value as [string | null, string];
  if (ot === "text.insert") {
    checkRefs(g, d, op, anchor);
    d.applyInsert(op.id as string, anchor, content, op.seq as number, op.ts as number);
  } else {
    checkRm(g, d, op);
    checkRefs(g, d, op, anchor);
    d.applyReplace(op.rm ?? [], op.id !== undefined ? op.id : null, anchor, content, op.seq as number, op.ts as number);
  }
}

/** Every text otype: a no-op on a missing or tombstoned node; else integrate and mark. */
const textOp: Handler = (g, op, _lt, client, ts) => {
  const n = g.nodes.get(op.key);
  if (n === undefined || n.deletedAt !== null) return;
  applyTextOnly(g, op, client, ts);
  if (g.texts.has(textKey(op.key, op.path)) && n.props.get(op.path) !== TEXT) {
    (g.live(op.key) as SceneNode).props.set(op.path, TEXT);
  }
};

/** The apply rule of every otype but the meta ones (handled by the replica). */
export const HANDLERS: ReadonlyMap<string, Handler> = new Map<string, Handler>([
  ["number.set", set],
  ["number.add", numberAdd],
  ["number.multiply", numberMultiply],
  ["number.min", numberMin],
  ["number.max", numberMax],
  ["vector3.set", set],
  ["vector3.add", vector3Add],
  ["vector3.multiply", vector3Multiply],
  ["vector3.applyQuaternion", vector3ApplyQuaternion],
  ["vector3.applyEuler", vector3ApplyEuler],
  ["euler.set", set],
  ["euler.add", vector3Add],
  ["quaternion.set", set],
  ["quaternion.multiply", quaternionMultiply],
  ["color.set", set],
  ["color.blend", colorBlend],
  ["string.set", set],
  ["string.concat", stringConcat],
  ["boolean.set", set],
  ["boolean.or", booleanOr],
  ["boolean.and", booleanAnd],
  ["array.set", set],
  ["array.push", arrayPush],
  ["array.union", arrayUnion],
  ["array.remove", arrayRemove],
  ["array.move", arrayMove],
  ["object.set", set],
  ["object.merge", objectMerge],
  ["node.insert", nodeInsert],
  ["node.remove", nodeRemove],
  ["node.move", nodeMove],
  ["text.init", textOp],
  ["text.insert", textOp],
  ["text.delete", textOp],
  ["text.replace", textOp],
]);

/** The one handler of every text otype. */
export const TEXT_HANDLER = textOp;
