/**
 * A replica of a room's scene graph: a port of `durasync.crdt.Replica` with the same
 * convergence rule, so a JS replica and a Python one holding the same messages have
 * byte-identical canonical JSON (docs/crdt.md "Convergence rule").
 *
 *     visible = fold(base snapshot, confirmed messages in canonical order, skipping excluded)
 *               + own committed-but-unconfirmed messages + the edit buffer
 *
 * The canonical order is `serverSeq` for sequenced messages, then `(lt, client, id)`. A
 * message that sorts after everything folded is applied in place; one that lands earlier
 * restores the nearest checkpoint and replays the suffix. Undo/redo exclude a message from the
 * fold (the last meta naming it in canonical order decides; own pending metas count newest).
 * Text ops integrate into per-(key, path) docs while their node is live; docs that may be out
 * of date (non-causal arrival, exclusion flips, node life changes) are rebuilt in canonical
 * order.
 *
 * Driving it from a room client: `receive(msg, serverSeq)` for `broadcast` frames and
 * `state` journals (`receiveMany`), `ack(id, serverSeq)` / `reject(id)` for own messages,
 * `edit(op, ts)` + `commit(ts)` for local edits (the returned message goes on the wire),
 * `undo(ts)` / `redo(ts)`, `unacked()` to resend after a reconnect, `Replica.fromSnapshot`
 * for a `state` with `recovered: false`, and `onChange` for the node keys that changed.
 */

import { canonicalJson } from "./canonical.js";
import {
  HANDLERS,
  SceneGraph,
  SceneNode,
  TEXT,
  applyTextOnly,
  quatMul,
  splitTextKey,
  textKey,
  type Checkpoint,
  type PropValue,
  type Stamp,
} from "./graph.js";
import {
  ADDITIVE_OTYPES,
  CRDTUsageError,
  CRDTValidationError,
  DEFAULT_LIMITS,
  META_OTYPES,
  TEXT_OTYPES,
  decodeOp,
  validateMessage,
  validateOp,
  type Json,
  type Limits,
  type Message,
  type Op,
} from "./messages.js";
import { cmpStr, cpLen, isDigits, rpartition } from "./strings.js";
import { TextDoc, TextOpError, type RawText } from "./text.js";

type SortKey = [number, number, string, string];

/** The canonical position of a confirmed message. */
export function sortKey(m: Message): SortKey {
  if (m.serverSeq !== undefined && m.serverSeq !== null) return [0, m.serverSeq, "", m.id];
  return [1, m.lt, m.client, m.id];
}

function cmpKey(a: SortKey, b: SortKey): number {
  return a[0] - b[0] || a[1] - b[1] || cmpStr(a[2], b[2]) || cmpStr(a[3], b[3]);
}

function seqOf(m: Message): number | null {
  return m.serverSeq === undefined ? null : m.serverSeq;
}

const SNAPSHOT_VERSION = 1;
const MAX_CHECKPOINTS = 40;

/** Serialised node: `[key, tag, name, children, props, textPaths, lww, createdAt, deletedAt, parent, pstamp]`. */
export type NodeState = [
  string,
  string,
  string,
  string[],
  Record<string, Json>,
  string[],
  [string, number, string][],
  number,
  number | null,
  string | null,
  [number, string] | null,
];

/**
 * A folded prefix of the journal, in the shape of `durasync.crdt.Snapshot` (JSON or msgpack):
 * the graph, its text docs (lossless), clocks, the folded ids (dedupe) and the highest
 * `serverSeq`. Missing fields take their defaults (the Python encoder omits defaults).
 */
export interface Snapshot {
  version?: number;
  root_key?: string;
  nodes?: NodeState[];
  texts?: [string, string, RawText][];
  lt?: number;
  clock?: Record<string, number>;
  seen?: string[];
  seq?: number;
  burnt?: [string, string, string, number][];
}

/** What changed in the visible graph: node keys (null = anything may have changed). */
export interface ReplicaChange {
  keys: Set<string> | null;
  source: "remote" | "local";
}

interface Meta {
  key: SortKey;
  undo: boolean;
}

function metasOf(m: Message): [string, boolean][] {
  let out: [string, boolean][] | null = null;
  for (const op of m.ops) {
    if (META_OTYPES.has(op.ot)) (out ??= []).push([op.targetMsgId as string, op.ot === "meta.undo"]);
  }
  return out ?? [];
}

function textsOf(m: Message): Set<string> {
  const out = new Set<string>();
  for (const op of m.ops) if (TEXT_OTYPES.has(op.ot)) out.add(textKey(op.key, op.path));
  return out;
}

function hasText(m: Message): boolean {
  for (const op of m.ops) if (TEXT_OTYPES.has(op.ot)) return true;
  return false;
}

/** `[agent, next id number]` of the chars a text op creates, or null. */
function textIdsUsed(op: Op, client: string): [string, number] | null {
  if (op.ot === "text.init") {
    const v = op.value;
    return typeof v === "string" && v ? [client, cpLen(v)] : null;
  }
  if (op.ot === "text.delete" || typeof op.id !== "string") return null;
  const [agent, sep, num] = rpartition(op.id, ":");
  const v = op.value;
  if (!sep || !isDigits(num) || !Array.isArray(v) || v.length !== 2) return null;
  const content = v[1];
  return typeof content === "string" ? [agent, Number(num) + cpLen(content)] : null;
}

function* textIdsOf(m: Message): Generator<[string, string, string, number]> {
  for (const op of m.ops) {
    if (TEXT_OTYPES.has(op.ot)) {
      const used = textIdsUsed(op, m.client);
      if (used !== null) yield [op.key, op.path, used[0], used[1]];
    }
  }
}

/** Keys of the nodes `m` inserts or removes (whose life a text op depends on). */
function lifecycleKeys(m: Message): Set<string> {
  const out = new Set<string>();
  for (const op of m.ops) {
    if (op.ot === "node.remove") out.add(op.value as string);
    else if (op.ot === "node.insert") out.add((op.value as Record<string, Json>)["key"] as string);
  }
  return out;
}

/** Node keys an op may change (null: a move, whose effects can cascade). */
function touched(ops: Iterable<Op>, into: Set<string>): boolean {
  for (const op of ops) {
    into.add(op.key);
    if (op.ot === "node.insert") into.add((op.value as Record<string, Json>)["key"] as string);
    else if (op.ot === "node.remove") into.add(op.value as string);
    else if (op.ot === "node.move") return false;
  }
  return true;
}

/** Whether watched nodes are live while ops are replayed in fold order. */
class NodeLife {
  private state = new Map<string, boolean>();
  constructor(
    base: Map<string, SceneNode>,
    private watch: Set<string>,
  ) {
    for (const k of watch) {
      const n = base.get(k);
      if (n !== undefined) this.state.set(k, n.deletedAt === null);
    }
  }
  step(op: Op): void {
    if (op.ot === "node.insert") {
      const k = (op.value as Record<string, Json>)["key"] as string;
      if (this.watch.has(k) && !this.state.has(k)) this.state.set(k, true);
    } else if (op.ot === "node.remove" && this.state.has(op.value as string)) {
      this.state.set(op.value as string, false);
    }
  }
  live(key: string): boolean {
    return this.state.get(key) ?? false;
  }
}

function encodeNode(n: SceneNode): NodeState {
  const props: Record<string, Json> = {};
  const textPaths: string[] = [];
  for (const [p, v] of n.props) {
    if (v === TEXT) textPaths.push(p);
    else Object.defineProperty(props, p, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return [
    n.key,
    n.tag,
    n.name,
    n.children.slice(),
    props,
    textPaths,
    Array.from(n.lww, ([p, st]) => [p, st[0], st[1]] as [string, number, string]),
    n.createdAt,
    n.deletedAt,
    n.parent,
    n.pstamp,
  ];
}

function decodeNode(s: NodeState): SceneNode {
  const [key, tag, name, children, props, textPaths, lww, createdAt, deletedAt, parent, pstamp] = s;
  const pm = new Map<string, PropValue>(Object.entries(props));
  for (const p of textPaths) pm.set(p, TEXT);
  return new SceneNode(key, {
    tag,
    name,
    children: children.slice(),
    props: pm,
    lww: new Map(lww.map(([p, lt, c]) => [p, [lt, c] as Stamp])),
    createdAt,
    deletedAt,
    parent,
    pstamp: pstamp === null ? null : [pstamp[0], pstamp[1]],
    csorted: false,
  });
}

function mergeAdditive(ot: string, a: Json, b: Json): Json {
  if (ot === "number.add") return (a as number) + (b as number);
  if (ot === "number.multiply") return (a as number) * (b as number);
  const x = a as number[];
  const y = b as number[];
  if (ot === "vector3.add") return [(x[0] as number) + (y[0] as number), (x[1] as number) + (y[1] as number), (x[2] as number) + (y[2] as number)];
  return quatMul(x, y); // quaternion.multiply: (cur ⊗ a) ⊗ b == cur ⊗ (a ⊗ b)
}

export interface ReplicaOptions {
  /** A client of a sequencing server: own commits stay pending until acked. */
  sequenced?: boolean;
  limits?: Limits;
  snapshot?: Snapshot;
  /** Folded messages between two checkpoints (re-fold cost vs. clone cost). */
  checkpointEvery?: number;
}

/** One participant's copy of a room graph (see the module docs). */
export class Replica {
  readonly sessionId: string;
  readonly sequenced: boolean;
  readonly limits: Limits;
  lt = 0;
  clock: Record<string, number> = {};
  private _g = new SceneGraph();
  private _msgs: Message[] = [];
  private _keys: SortKey[] = [];
  private _byId = new Map<string, Message>();
  private _textKeys = new Map<string, Set<string>>();
  private _seen = new Set<string>();
  private _seq = -1;
  private _pending: Message[] = [];
  private _pendingIds = new Map<string, Message>();
  private _buffer = new Map<string, Op>();
  private _bufferTs = 0;
  private _textSlot = 0;
  private _textHwm = new Map<string, number>();
  private _metas = new Map<string, Map<string, Meta>>();
  private _excluded = new Set<string>();
  private _unresolved = new Set<string>();
  private _baseTexts = new Map<string, RawText>();
  private _baseBurnt = new Map<string, number>();
  private _baseLt = 0;
  private _baseClock: Record<string, number> = {};
  private _cps: [number, Checkpoint][];
  private _folded = 0;
  private _tip: Checkpoint | null = null;
  private _cpEvery: number;
  private _oooRecent = 0;
  private _listeners = new Set<(c: ReplicaChange) => void>();

  constructor(sessionId: string, opts: ReplicaOptions = {}) {
    this.sessionId = sessionId;
    this.sequenced = opts.sequenced ?? false;
    this.limits = opts.limits ?? DEFAULT_LIMITS;
    this._cpEvery = Math.max(1, opts.checkpointEvery ?? 8);
    if (opts.snapshot !== undefined) this._loadSnapshot(opts.snapshot);
    this._cps = [[0, this._g.checkpoint()]];
  }

  // -- reading ------------------------------------------------------------------------------

  /** The visible graph (fold + pending + buffer). Read-only for callers. */
  get graph(): SceneGraph {
    return this._g;
  }

  /** Canonical JSON of the visible graph. */
  dump(opts: { live?: boolean; withMeta?: boolean } = {}): string {
    return canonicalJson(this._g, opts);
  }

  /** Whether the message is known (confirmed, folded into the snapshot, or pending). */
  has(msgId: string): boolean {
    return this._byId.has(msgId) || this._seen.has(msgId) || this._pendingIds.has(msgId);
  }

  /** Confirmed journal tail (after the snapshot) in canonical order. */
  get messages(): Message[] {
    return this._msgs.slice();
  }

  /** Own committed messages not yet confirmed, in commit order (resend after a reconnect). */
  unacked(): Message[] {
    return this._pending.slice();
  }

  /** Ops in the edit buffer (not committed yet). */
  get bufferSize(): number {
    return this._buffer.size;
  }

  get pendingCount(): number {
    return this._pending.length;
  }

  /** The highest `serverSeq` confirmed (-1 if none). */
  get serverSeq(): number {
    let s = this._seq;
    for (let i = this._msgs.length - 1; i >= 0; i--) {
      const q = seqOf(this._msgs[i] as Message);
      if (q !== null) {
        s = Math.max(s, q);
        break;
      }
    }
    return s;
  }

  isExcluded(msgId: string): boolean {
    return this._excluded.has(msgId);
  }

  /** Call `cb` after every change of the visible graph; returns an unsubscribe function. */
  onChange(cb: (c: ReplicaChange) => void): () => void {
    this._listeners.add(cb);
    return () => this._listeners.delete(cb);
  }

  private _emit(keys: Set<string> | null, source: "remote" | "local"): void {
    if (this._listeners.size === 0) return;
    const ev = { keys, source };
    for (const cb of this._listeners) cb(ev);
  }

  private _emitFor(msgs: Iterable<Message>, source: "remote" | "local", extra: Iterable<string> = []): void {
    if (this._listeners.size === 0) return;
    const keys = new Set<string>(extra);
    for (const m of msgs) {
      if (!touched(m.ops, keys)) {
        this._emit(null, source);
        return;
      }
    }
    this._emit(keys, source);
  }

  // -- receiving ----------------------------------------------------------------------------

  /**
   * Take a confirmed message (remote, or own echoed back); false if a duplicate.
   * `serverSeq` (or `msg.serverSeq`) places it in the server's order. Throws
   * `CRDTValidationError` for a malformed message, before changing anything.
   */
  receive(msg: Message, serverSeq: number | null = null, opts: { validate?: boolean } = {}): boolean {
    return this.receiveMany([msg], serverSeq === null ? null : [serverSeq], opts) === 1;
  }

  /** Take many confirmed messages with one re-fold (joins, catch-up); returns # new. */
  receiveMany(msgs: readonly Message[], serverSeqs: readonly (number | null)[] | null = null, opts: { validate?: boolean } = {}): number {
    const n = msgs.length;
    if (serverSeqs !== null && serverSeqs.length !== n) throw new CRDTUsageError("serverSeqs must match msgs in length");
    if (opts.validate ?? true) {
      msgs.forEach((m, i) => {
        try {
          validateMessage(m, this.limits);
        } catch (exc) {
          if (exc instanceof CRDTValidationError) {
            throw new CRDTValidationError(n > 1 ? `msgs[${i}].${exc.field}` : exc.field, exc.detail);
          }
          throw exc;
        }
      });
    }
    const start = this._foldInOrder(msgs, serverSeqs);
    if (start > 0 && this._listeners.size > 0) this._emitFor(msgs.slice(0, start), "remote");
    if (start === n) return start;
    let added = start;
    let low: number | null = null;
    const fast: Message[] = [];
    const fresh: Message[] = [];
    const flipped = new Set<string>();
    const lifecycle = new Set<string>();
    const changed: Message[] = [];
    for (let i = start; i < n; i++) {
      let m = msgs[i] as Message;
      const sq = serverSeqs === null || serverSeqs[i] === null ? seqOf(m) : (serverSeqs[i] as number);
      const mid = m.id;
      const stored = this._byId.get(mid);
      if (stored !== undefined) {
        if (sq !== null && seqOf(stored) === null) {
          const pos = this._reposition(stored, sq);
          low = low === null ? pos : Math.min(low, pos);
          for (const k of lifecycleKeys(stored)) lifecycle.add(k);
          changed.push(stored);
        }
        continue;
      }
      if (this._seen.has(mid)) continue;
      m.serverSeq = sq;
      const own = this._pendingIds.get(mid);
      if (own !== undefined) {
        this._pendingIds.delete(mid);
        this._pending.splice(this._pending.indexOf(own), 1);
        if (own.ops !== m.ops) {
          own.serverSeq = sq;
          m = own;
        }
        for (const [target] of metasOf(m)) {
          this._metas.get(target)?.delete(mid);
          flipped.add(target);
        }
      }
      added++;
      this._noteClock(m);
      fresh.push(m);
      changed.push(m);
      const key = sortKey(m);
      const keys = this._keyList();
      const p = this._bisectRight(keys, key);
      keys.splice(p, 0, key);
      this._msgs.splice(p, 0, m);
      this._byId.set(mid, m);
      if (hasText(m)) {
        this._textKeys.set(mid, textsOf(m));
        this._noteTextIds(m);
      }
      for (const [target, undo] of metasOf(m)) {
        this._metaMap(target).set(mid, { key, undo });
        flipped.add(target);
      }
      if (low === null && p === this._msgs.length - 1 && p === this._folded + fast.length) {
        fast.push(m);
      } else {
        if (p < this._msgs.length - 1) for (const k of lifecycleKeys(m)) lifecycle.add(k);
        low = low === null ? p : Math.min(low, p);
        if (fast.length > 0) {
          low = Math.min(low, this._folded);
          fast.length = 0;
        }
      }
    }
    if (added === start && low === null && flipped.size === 0) return added;
    const flippedMsgs = this._afterChange(low, fast, flipped, { fresh, lifecycle });
    this._emitFor([...changed, ...flippedMsgs], "remote");
    return added;
  }

  /** Fold the longest prefix of `batch` that sorts after everything folded so far. */
  private _foldInOrder(batch: readonly Message[], seqs: readonly (number | null)[] | null): number {
    if (this._folded !== this._msgs.length || this._unresolved.size > 0) return 0;
    let i = 0;
    while (i < batch.length) {
      const s = seqs === null ? null : (seqs[i] as number | null);
      if (!this._takeInOrder(batch[i] as Message, s)) break;
      i++;
    }
    if (i > 0) this._afterInOrder(batch.slice(0, i));
    return i;
  }

  private _takeInOrder(m: Message, s: number | null): boolean {
    const mid = m.id;
    if (this._byId.has(mid) || this._seen.has(mid) || this._pendingIds.has(mid)) return false;
    if (s === null) s = seqOf(m);
    const msgs = this._msgs;
    const last = msgs[msgs.length - 1];
    if (last !== undefined) {
      const ls = seqOf(last);
      if (s !== null) {
        if (ls === null || s <= ls) return false;
      } else if (ls === null && cmpKey([1, m.lt, m.client, mid], sortKey(last)) <= 0) {
        return false;
      }
    }
    let texts: Set<string> | null = null;
    for (const op of m.ops) {
      if (META_OTYPES.has(op.ot)) return false;
      if (TEXT_OTYPES.has(op.ot)) (texts ??= new Set()).add(textKey(op.key, op.path));
    }
    const g = this._g;
    if (this._tip !== null) {
      g.restore(this._tip);
      this._tip = null;
    }
    m.serverSeq = s;
    msgs.push(m);
    this._byId.set(mid, m);
    if (texts !== null) {
      this._textKeys.set(mid, texts);
      this._noteTextIds(m);
    }
    this._noteClock(m);
    if (!this._excluded.has(mid)) g.applyMessage(m);
    this._folded++;
    this._maybeCheckpoint();
    return true;
  }

  private _afterInOrder(taken: readonly Message[]): void {
    let rebuild: Set<string> | null = null;
    if (this._pending.length > 0 || this._buffer.size > 0) {
      this._applyOverlay();
      rebuild = this._removedUnderOverlay(taken);
    }
    const g = this._g;
    if (g.missingRefs.size > 0) {
      rebuild ??= new Set();
      for (const k of g.missingRefs) rebuild.add(k);
      g.missingRefs = new Set();
    }
    if (rebuild !== null && rebuild.size > 0) this._rebuildTexts(rebuild);
  }

  /** The server persisted our message `msgId` at `serverSeq`: confirm it. */
  ack(msgId: string, serverSeq: number | null = null): boolean {
    const m = this._pendingIds.get(msgId);
    if (m === undefined) {
      const stored = this._byId.get(msgId);
      if (stored !== undefined && serverSeq !== null && seqOf(stored) === null) {
        const pos = this._reposition(stored, serverSeq);
        this._afterChange(pos, [], new Set(), { lifecycle: lifecycleKeys(stored) });
        this._emitFor([stored], "remote");
      }
      return false;
    }
    this.receiveMany([m], [serverSeq], { validate: false });
    return true;
  }

  /** The server refused our pending message: drop it (and its optimistic effect). */
  reject(msgId: string): boolean {
    const m = this._pendingIds.get(msgId);
    if (m === undefined) return false;
    this._pendingIds.delete(msgId);
    this._pending.splice(this._pending.indexOf(m), 1);
    const flipped = new Set<string>();
    for (const [target] of metasOf(m)) {
      this._metas.get(target)?.delete(m.id);
      flipped.add(target);
    }
    const fl = this._afterChange(null, [], flipped, { extraTexts: textsOf(m), lifecycle: lifecycleKeys(m) });
    this._emitFor([m, ...fl], "local");
    return true;
  }

  // -- local edits --------------------------------------------------------------------------

  /**
   * Buffer a local op and apply it optimistically; returns the (wire-form) op buffered.
   * Additive ops of the same otype on one `key:path` merge; other ops replace the slot; text
   * ops each keep their own slot. Position-based text edits (`position`/`length`, positions
   * in code points) are translated into the wire form. Throws `CRDTValidationError` for a
   * malformed op or a position-based text edit of a missing/removed node (nothing changes).
   */
  edit(input: Op | Record<string, unknown>, ts: number): Op {
    let op = decodeLocalOp(input);
    validateOp(op, "op", this.limits, true);
    if (META_OTYPES.has(op.ot)) throw new CRDTValidationError("op.ot", "use undo()/redo() for meta ops");
    if (TEXT_OTYPES.has(op.ot)) op = this._localText(op, ts);
    if (this._tip === null) this._tip = this._g.checkpoint();
    this._bufferTs = ts;
    const keys = new Set<string>();
    const simple = touched([op], keys);
    if (TEXT_OTYPES.has(op.ot)) {
      this._textSlot++;
      this._buffer.set(`\u0000text:${this._textSlot}`, op);
      this._g.applyOps([op], this.lt + 1, this.sessionId, ts);
    } else {
      const slot = `${op.key}:${op.path}`;
      const old = this._buffer.get(slot);
      if (old === undefined) {
        this._buffer.set(slot, op);
        this._g.applyOps([op], this.lt + 1, this.sessionId, ts);
      } else {
        if (old.ot === op.ot && ADDITIVE_OTYPES.has(op.ot)) op = { ...old, value: mergeAdditive(op.ot, old.value as Json, op.value as Json) };
        this._buffer.set(slot, op);
        this._rebase();
      }
    }
    this._emit(simple ? keys : null, "local");
    return op;
  }

  private _localText(op: Op, ts: number): Op {
    if (op.ot === "text.init" || op.position === undefined) return op;
    const n = this._g.nodes.get(op.key);
    if (n === undefined || n.deletedAt !== null) throw new CRDTValidationError("op.key", `node ${JSON.stringify(op.key)} is missing or removed`);
    const k = textKey(op.key, op.path);
    let d = this._g.texts.get(k);
    if (d === undefined) {
      d = new TextDoc(this.sessionId);
      this._g.texts.set(k, d);
    }
    const v = op.value;
    const content = Array.isArray(v) ? v[1] : v;
    const hwm = this._textHwm.get(k);
    if (hwm !== undefined) d.reserve(this.sessionId, hwm);
    try {
      if (op.ot === "text.insert") {
        const ins = d.localInsert(op.position, content as string, ts, this.sessionId);
        this._textHwm.set(k, d.clock);
        return { ot: op.ot, key: op.key, path: op.path, id: ins.id, value: [ins.anchor, ins.content], seq: ins.seq, ts: ins.ts };
      }
      const length = op.length ?? 0;
      if (op.ot === "text.delete") {
        return { ot: op.ot, key: op.key, path: op.path, rm: d.localDelete(op.position, length) };
      }
      const rep = d.localReplace(op.position, length, content as string, ts, this.sessionId);
      this._textHwm.set(k, d.clock);
      if (rep.insert === null) return { ot: "text.delete", key: op.key, path: op.path, rm: rep.rm };
      const ins = rep.insert;
      return { ot: op.ot, key: op.key, path: op.path, rm: rep.rm, id: ins.id, value: [ins.anchor, ins.content], seq: ins.seq, ts: ins.ts };
    } catch (exc) {
      if (exc instanceof TextOpError) throw new CRDTValidationError(`op.${exc.field}`, exc.message);
      throw exc;
    }
  }

  /** Turn the edit buffer into a message (null if empty) and return it for sending. */
  commit(ts: number | null = null): Message | null {
    if (this._buffer.size === 0) return null;
    const ops = Array.from(this._buffer.values());
    if (ts === null) ts = this._bufferTs;
    const msg = this._newMessage(ops, ts);
    this._buffer.clear();
    this._commitMessage(msg, ts !== this._bufferTs);
    return msg;
  }

  /** Drop the edit buffer and its optimistic effect. */
  cancel(): void {
    if (this._buffer.size === 0) return;
    const ops = Array.from(this._buffer.values());
    const texts = new Set<string>();
    for (const o of ops) if (TEXT_OTYPES.has(o.ot)) texts.add(textKey(o.key, o.path));
    this._buffer.clear();
    this._afterChange(null, [], new Set(), { extraTexts: texts });
    const keys = new Set<string>();
    this._emit(touched(ops, keys) ? keys : null, "local");
  }

  /** Undo our newest effective message (committing the buffer first); null if nothing. */
  undo(ts: number): Message | null {
    if (this._buffer.size > 0) this.commit(ts);
    const target = this._ownTarget(false);
    return target === null ? null : this._metaMessage("meta.undo", target, ts);
  }

  /** Redo our newest undone message; null if nothing is undone. */
  redo(ts: number): Message | null {
    const target = this._ownTarget(true);
    return target === null ? null : this._metaMessage("meta.redo", target, ts);
  }

  // -- snapshots ----------------------------------------------------------------------------

  /** Snapshot of the base + the first `upto` confirmed messages (default: all). */
  snapshot(upto: number | null = null): Snapshot {
    const total = this._msgs.length;
    const n = upto === null ? total : Math.max(0, Math.min(upto, total));
    return this._snapshotOf(this._foldPrefix(n), n);
  }

  /** Fold the first `upto` confirmed messages into the base snapshot; keeps the tail. */
  compact(upto: number | null = null): Snapshot {
    const snap = this.snapshot(upto);
    const n = upto === null ? this._msgs.length : Math.max(0, Math.min(upto, this._msgs.length));
    const tail = this._msgs.slice(n);
    const pending = this._pending;
    const buffer = this._buffer;
    this._resetFrom(snap);
    const allTexts = new Set<string>(this._g.texts.keys());
    for (const m of tail) {
      this._msgs.push(m);
      this._byId.set(m.id, m);
      for (const [target, undo] of metasOf(m)) this._metaMap(target).set(m.id, { key: sortKey(m), undo });
      if (hasText(m)) {
        const t = textsOf(m);
        this._textKeys.set(m.id, t);
        for (const k of t) allTexts.add(k);
      }
    }
    this._pending = pending;
    this._pendingIds = new Map(pending.map((m) => [m.id, m]));
    for (const m of pending) {
      for (const [target, undo] of metasOf(m)) this._metaMap(target).set(m.id, { key: [2, m.lt, m.client, m.id], undo });
    }
    this._buffer = buffer;
    this._excluded = new Set(Array.from(this._metas.keys()).filter((t) => this._status(t)));
    this._refold(0);
    this._rebuildTexts(allTexts);
    return snap;
  }

  /** A replica rebuilt from a snapshot (e.g. a `state` frame's) plus the confirmed tail. */
  static fromSnapshot(sessionId: string, snapshot: Snapshot, tail: readonly Message[] = [], opts: Omit<ReplicaOptions, "snapshot"> = {}): Replica {
    const r = new Replica(sessionId, { ...opts, snapshot });
    r.receiveMany(tail);
    return r;
  }

  // -- internals ----------------------------------------------------------------------------

  private _metaMap(target: string): Map<string, Meta> {
    let m = this._metas.get(target);
    if (m === undefined) this._metas.set(target, (m = new Map()));
    return m;
  }

  private _loadSnapshot(snap: Snapshot): void {
    const version = snap.version ?? SNAPSHOT_VERSION;
    if (version !== SNAPSHOT_VERSION) throw new CRDTUsageError(`unsupported snapshot version ${version}`);
    const g = this._g;
    g.nodes = new Map((snap.nodes ?? []).map((s) => [s[0], decodeNode(s)]));
    g.rootKey = snap.root_key ?? "";
    g.shareNodes();
    g.texts = new Map();
    this._baseTexts = new Map();
    for (const [k, p, raw] of snap.texts ?? []) {
      try {
        g.texts.set(textKey(k, p), TextDoc.fromSnapshot(raw));
      } catch (exc) {
        if (exc instanceof TextOpError) throw new CRDTValidationError(`texts.${exc.field}`, exc.message);
        throw exc;
      }
      this._baseTexts.set(textKey(k, p), raw);
    }
    this._baseBurnt = new Map();
    for (const [k, p, a, c] of snap.burnt ?? []) {
      this._baseBurnt.set(JSON.stringify([k, p, a]), c);
      const tk = textKey(k, p);
      if (a === this.sessionId && c > (this._textHwm.get(tk) ?? 0)) this._textHwm.set(tk, c);
    }
    this._seen = new Set(snap.seen ?? []);
    this._seq = snap.seq ?? -1;
    this._baseLt = snap.lt ?? 0;
    this._baseClock = { ...(snap.clock ?? {}) };
    this.lt = Math.max(this.lt, this._baseLt);
    for (const [c, v] of Object.entries(this._baseClock)) if (v > (this.clock[c] ?? 0)) this.clock[c] = v;
  }

  private _resetFrom(snap: Snapshot): void {
    const lt = this.lt;
    const clock = this.clock;
    this._g = new SceneGraph();
    this._msgs = [];
    this._keys = [];
    this._byId = new Map();
    this._textKeys = new Map();
    this._metas = new Map();
    this._unresolved = new Set();
    this._loadSnapshot(snap);
    this.lt = Math.max(lt, this.lt);
    this.clock = clock;
    this._cps = [[0, this._g.checkpoint()]];
    this._folded = 0;
    this._tip = null;
  }

  private _noteClock(m: Message): void {
    if (m.lt > this.lt) this.lt = m.lt;
    const c = m.clock[m.client];
    if (c !== undefined && c > (this.clock[m.client] ?? 0)) this.clock[m.client] = c;
  }

  private _noteTextIds(m: Message): void {
    for (const [key, path, agent, nxt] of textIdsOf(m)) {
      const k = textKey(key, path);
      if (agent === this.sessionId && nxt > (this._textHwm.get(k) ?? 0)) this._textHwm.set(k, nxt);
    }
  }

  private _keyList(): SortKey[] {
    const keys = this._keys;
    for (let k = keys.length; k < this._msgs.length; k++) keys.push(sortKey(this._msgs[k] as Message));
    return keys;
  }

  private _bisectLeft(keys: SortKey[], key: SortKey): number {
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cmpKey(keys[mid] as SortKey, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private _bisectRight(keys: SortKey[], key: SortKey): number {
    let lo = 0;
    let hi = keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cmpKey(key, keys[mid] as SortKey) < 0) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  private _position(m: Message): number {
    return this._bisectLeft(this._keyList(), sortKey(m));
  }

  private _reposition(m: Message, seq: number): number {
    const keys = this._keyList();
    const old = this._bisectLeft(keys, sortKey(m));
    keys.splice(old, 1);
    this._msgs.splice(old, 1);
    m.serverSeq = seq;
    const key = sortKey(m);
    const p = this._bisectRight(keys, key);
    keys.splice(p, 0, key);
    this._msgs.splice(p, 0, m);
    for (const [target, undo] of metasOf(m)) this._metaMap(target).set(m.id, { key, undo });
    return Math.min(old, p);
  }

  private _status(target: string): boolean {
    const metas = this._metas.get(target);
    if (metas === undefined || metas.size === 0) return false;
    let best: Meta | null = null;
    for (const m of metas.values()) {
      if (best === null || cmpKey(m.key, best.key) > 0 || (cmpKey(m.key, best.key) === 0 && m.undo && !best.undo)) best = m;
    }
    return (best as Meta).undo;
  }

  /** Bring the visible graph up to date; returns the messages whose exclusion flipped. */
  private _afterChange(
    low: number | null,
    fast: Message[],
    flipped: Set<string>,
    opts: { fresh?: Message[]; extraTexts?: Iterable<string>; lifecycle?: Iterable<string> } = {},
  ): Message[] {
    const rebuild = new Set<string>(opts.extraTexts ?? []);
    const life = new Set<string>(opts.lifecycle ?? []);
    const flippedMsgs: Message[] = [];
    for (const target of flipped) {
      const now = this._status(target);
      if (now === this._excluded.has(target)) continue;
      if (now) this._excluded.add(target);
      else this._excluded.delete(target);
      const stored = this._byId.get(target);
      if (stored !== undefined) {
        flippedMsgs.push(stored);
        for (const k of this._textKeys.get(target) ?? []) rebuild.add(k);
        for (const k of lifecycleKeys(stored)) life.add(k);
        const pos = this._position(stored);
        if (pos < this._folded) {
          low = low === null ? pos : Math.min(low, pos);
          fast = [];
        }
      } else {
        const pm = this._pendingIds.get(target);
        if (pm !== undefined) {
          flippedMsgs.push(pm);
          for (const k of textsOf(pm)) rebuild.add(k);
          for (const k of lifecycleKeys(pm)) life.add(k);
        }
      }
    }
    if (low !== null) {
      this._refold(low);
    } else {
      if (this._tip !== null) {
        this._g.restore(this._tip);
        this._tip = null;
      }
      for (const m of fast) this._foldOne(m);
      this._applyOverlay();
    }
    const fresh = opts.fresh ?? [];
    if (this._unresolved.size > 0) {
      for (const m of fresh) for (const k of this._textKeys.get(m.id) ?? []) if (this._unresolved.has(k)) rebuild.add(k);
    }
    if (life.size > 0) for (const k of this._docsOf(life)) rebuild.add(k);
    if (fresh.length > 0 && (this._pending.length > 0 || this._buffer.size > 0)) {
      for (const k of this._removedUnderOverlay(fresh)) rebuild.add(k);
    }
    const g = this._g;
    if (g.missingRefs.size > 0) {
      for (const k of g.missingRefs) rebuild.add(k);
      g.missingRefs = new Set();
    }
    if (rebuild.size > 0) this._rebuildTexts(rebuild);
    return flippedMsgs;
  }

  private _foldOne(m: Message): void {
    if (!this._excluded.has(m.id)) this._g.applyMessage(m);
    this._folded++;
    this._maybeCheckpoint();
  }

  private _maybeCheckpoint(): void {
    let every = this._cpEvery;
    if (this._oooRecent > 0) {
      this._oooRecent--;
    } else {
      const sparse = this._g.nodes.size << 3;
      if (sparse > every) every = sparse;
    }
    const cps = this._cps;
    if (this._folded - (cps[cps.length - 1] as [number, Checkpoint])[0] >= every) {
      cps.push([this._folded, this._g.checkpoint()]);
      if (cps.length > MAX_CHECKPOINTS) {
        // thin the older half, keep the base and the recent ones
        const keep: [number, Checkpoint][] = [cps[0] as [number, Checkpoint]];
        for (let i = 1; i < cps.length; i++) if (i >= MAX_CHECKPOINTS / 2 || (i - 1) % 2 === 1) keep.push(cps[i] as [number, Checkpoint]);
        this._cps = keep;
      }
    }
  }

  private _refold(low: number): void {
    this._oooRecent = 4096;
    const cps = this._cps;
    let i = cps.length - 1;
    while ((cps[i] as [number, Checkpoint])[0] > low) i--;
    cps.length = i + 1;
    const [pos, cp] = cps[i] as [number, Checkpoint];
    this._g.restore(cp);
    this._tip = null;
    this._folded = pos;
    for (let j = pos; j < this._msgs.length; j++) this._foldOne(this._msgs[j] as Message);
    this._applyOverlay();
  }

  private _applyOverlay(): void {
    if (this._pending.length === 0 && this._buffer.size === 0) {
      this._tip = null;
      return;
    }
    this._tip = this._g.checkpoint();
    const g = this._g;
    for (const m of this._pending) if (!this._excluded.has(m.id)) g.applyMessage(m);
    if (this._buffer.size > 0) g.applyOps(this._buffer.values(), this.lt + 1, this.sessionId, this._bufferTs);
  }

  private _rebase(): void {
    if (this._tip !== null) {
      this._g.restore(this._tip);
      this._tip = null;
    }
    this._applyOverlay();
  }

  private _docsOf(keys: Set<string>): Set<string> {
    const out = new Set<string>();
    if (keys.size === 0) return out;
    for (const k of this._g.texts.keys()) if (keys.has(splitTextKey(k)[0])) out.add(k);
    return out;
  }

  /** Docs of nodes that own pending/buffered text ops edit and that `folded` removes. */
  private _removedUnderOverlay(folded: Iterable<Message>): Set<string> {
    const edited = new Set<string>();
    for (const m of this._pending) {
      if (!this._excluded.has(m.id)) for (const op of m.ops) if (TEXT_OTYPES.has(op.ot)) edited.add(op.key);
    }
    for (const op of this._buffer.values()) if (TEXT_OTYPES.has(op.ot)) edited.add(op.key);
    if (edited.size === 0) return new Set();
    const hit = new Set<string>();
    for (const m of folded) for (const op of m.ops) if (op.ot === "node.remove" && edited.has(op.value as string)) hit.add(op.value as string);
    return this._docsOf(hit);
  }

  /** Rebuild text docs from the snapshot's docs + every included op, canonical order. */
  private _rebuildTexts(targets: Set<string>): void {
    if (targets.size === 0) return;
    const scratch = new SceneGraph();
    for (const k of targets) {
      const raw = this._baseTexts.get(k);
      if (raw !== undefined) scratch.texts.set(k, TextDoc.fromSnapshot(raw));
    }
    const life = new NodeLife((this._cps[0] as [number, Checkpoint])[1].nodes, new Set(Array.from(targets, (k) => splitTextKey(k)[0])));
    const feed = (ops: Iterable<Op>, client: string, ts: number): void => {
      for (const op of ops) {
        if (TEXT_OTYPES.has(op.ot)) {
          if (targets.has(textKey(op.key, op.path)) && life.live(op.key)) applyTextOnly(scratch, op, client, ts);
        } else if (op.ot === "node.insert" || op.ot === "node.remove") {
          life.step(op);
        }
      }
    };
    for (const m of this._msgs) if (!this._excluded.has(m.id)) feed(m.ops, m.client, m.ts ?? 0);
    for (const m of this._pending) if (!this._excluded.has(m.id)) feed(m.ops, m.client, m.ts ?? 0);
    feed(this._buffer.values(), this.sessionId, this._bufferTs);
    for (const k of targets) {
      const d = scratch.texts.get(k);
      if (d !== undefined) this._g.texts.set(k, d);
      else this._g.texts.delete(k);
      if (scratch.missingRefs.has(k)) this._unresolved.add(k);
      else this._unresolved.delete(k);
    }
  }

  /** A graph (own text docs) equal to base + the first `n` confirmed messages. */
  private _foldPrefix(n: number): SceneGraph {
    const g = new SceneGraph();
    g.restore((this._cps[0] as [number, Checkpoint])[1]);
    g.texts = new Map(Array.from(this._baseTexts, ([k, raw]) => [k, TextDoc.fromSnapshot(raw)]));
    for (let i = 0; i < n; i++) {
      const m = this._msgs[i] as Message;
      if (!this._excluded.has(m.id)) g.applyMessage(m);
    }
    return g;
  }

  private _snapshotOf(g: SceneGraph, n: number): Snapshot {
    let lt = 0;
    const clock = { ...this._baseClock };
    const seen = Array.from(this._seen);
    let seq = this._seq;
    const burnt = new Map(this._baseBurnt);
    for (let i = 0; i < n; i++) {
      const m = this._msgs[i] as Message;
      if (this._excluded.has(m.id) && this._textKeys.has(m.id)) {
        for (const [key, path, agent, nxt] of textIdsOf(m)) {
          const bk = JSON.stringify([key, path, agent]);
          if (nxt > (burnt.get(bk) ?? 0)) burnt.set(bk, nxt);
        }
      }
      lt = Math.max(lt, m.lt);
      const c = m.clock[m.client] ?? 0;
      if (c > (clock[m.client] ?? 0)) clock[m.client] = c;
      seen.push(m.id);
      const s = seqOf(m);
      if (s !== null) seq = Math.max(seq, s);
    }
    const texts = Array.from(g.texts, ([k, d]) => {
      const [key, path] = splitTextKey(k);
      return [key, path, d.snapshot()] as [string, string, RawText];
    }).sort((a, b) => cmpStr(a[0], b[0]) || cmpStr(a[1], b[1]));
    return {
      version: SNAPSHOT_VERSION,
      root_key: g.rootKey,
      nodes: Array.from(g.nodes.values(), encodeNode),
      texts,
      lt: Math.max(lt, this._baseLt),
      clock,
      seen,
      seq,
      burnt: Array.from(burnt, ([bk, c]) => [...(JSON.parse(bk) as [string, string, string]), c] as [string, string, string, number]).sort(
        (a, b) => cmpStr(a[0], b[0]) || cmpStr(a[1], b[1]) || cmpStr(a[2], b[2]),
      ),
    };
  }

  private _newMessage(ops: Op[], ts: number): Message {
    this.lt += 1;
    this.clock[this.sessionId] = (this.clock[this.sessionId] ?? 0) + 1;
    return { id: `${this.sessionId}:${this.lt}`, client: this.sessionId, lt: this.lt, ts, ops, clock: { ...this.clock }, serverSeq: null };
  }

  private _commitMessage(msg: Message, rebase: boolean): void {
    this._noteTextIds(msg);
    if (!this.sequenced) {
      this._buffer.clear();
      this._pendingIds.set(msg.id, msg);
      this._pending.push(msg);
      this.receiveMany([msg], null, { validate: false });
      return;
    }
    this._pending.push(msg);
    this._pendingIds.set(msg.id, msg);
    const flipped = new Set<string>();
    for (const [target, undo] of metasOf(msg)) {
      this._metaMap(target).set(msg.id, { key: [2, msg.lt, msg.client, msg.id], undo });
      flipped.add(target);
    }
    if (flipped.size > 0 || rebase) {
      const fl = this._afterChange(null, [], flipped);
      if (fl.length > 0) this._emitFor(fl, "local");
    }
  }

  private _ownTarget(excluded: boolean): string | null {
    for (let i = this._pending.length - 1; i >= 0; i--) {
      const m = this._pending[i] as Message;
      if (!m.ops.some((o) => META_OTYPES.has(o.ot)) && this._excluded.has(m.id) === excluded) return m.id;
    }
    for (let i = this._msgs.length - 1; i >= 0; i--) {
      const m = this._msgs[i] as Message;
      if (m.client === this.sessionId && metasOf(m).length === 0 && this._excluded.has(m.id) === excluded) return m.id;
    }
    return null;
  }

  private _metaMessage(ot: string, target: string, ts: number): Message {
    const msg = this._newMessage([{ ot, key: "_meta", path: "_meta", targetMsgId: target }], ts);
    this._commitMessage(msg, false);
    return msg;
  }
}

/** An op from a local caller (plain object, long or compact otype name). */
function decodeLocalOp(input: Op | Record<string, unknown>): Op {
  return decodeOp(input, "op");
}
