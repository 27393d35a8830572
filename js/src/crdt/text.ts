/**
 * Span-based RGA/YATA text CRDT: one `TextDoc` per text property. A port of
 * `durasync.crdt.text` with the same ids, the same integration scan and tie-breaks, the same
 * span coalescing (so snapshots agree) and the same blocked-rope layout.
 *
 * - Every character has the id `"agent:n"`; an insert of k characters with id `"agent:s"`
 *   covers `agent:s .. agent:(s+k-1)`. Lengths and positions count Unicode code points, as in
 *   Python (a character above U+FFFF is one character, two UTF-16 units).
 * - An insert names its left origin (`anchor`, or null for the document start), a Lamport
 *   `seq` and a `ts` used only as a tie-break. Deletes only set tombstones; unknown ids are
 *   ignored; an unknown anchor counts as the document start (causal delivery is the caller's
 *   job: the replica folds in a canonical order).
 *
 * Errors: malformed ids, lengths, positions raise `TextOpError` naming the field; the
 * document is unchanged then.
 */

import { cmpStr, cpLen, cpSlice, isDigits, rpartition, strLt } from "./strings.js";

const MAX_BLOCK = 64;

/** A text op or local edit is malformed; `field` names the offending field. */
export class TextOpError extends Error {
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "TextOpError";
    this.field = field;
  }
}

/** Split `"agent:n"` into `[agent, n]`; the agent may contain `:`. */
export function parseId(charId: unknown, field = "id"): [string, number] {
  if (typeof charId !== "string") {
    throw new TextOpError(field, `char id must be a string, got ${typeName(charId)}`);
  }
  const [agent, sep, num] = rpartition(charId, ":");
  if (!sep || !isDigits(num)) {
    throw new TextOpError(field, `malformed char id ${JSON.stringify(charId)} (expected 'agent:n')`);
  }
  return [agent, Number(num)];
}

function typeName(v: unknown): string {
  if (v === null) return "NoneType";
  if (Array.isArray(v)) return "list";
  return typeof v;
}

function checkSeq(seq: unknown): number {
  if (typeof seq !== "number" || !Number.isInteger(seq) || seq < 0) {
    throw new TextOpError("seq", `must be a non-negative integer, got ${String(seq)}`);
  }
  return seq;
}

function checkTs(ts: unknown): number {
  if (typeof ts !== "number" || !Number.isFinite(ts)) {
    throw new TextOpError("ts", `must be a finite number, got ${String(ts)}`);
  }
  return ts;
}

/** The wire fields of a `text.insert` made by a local edit. */
export interface InsertEdit {
  id: string;
  anchor: string | null;
  content: string;
  seq: number;
  ts: number;
}

/** The wire `rm` of a delete: `[[charId, length], ...]`. */
export type RmEntry = [string, number];

/** The wire fields of a `text.replace`: `rm` plus the insert (null without text). */
export interface ReplaceEdit {
  rm: RmEntry[];
  insert: InsertEdit | null;
}

/** One raw snapshot item: `[id, content, anchor, seq, ts, deleted]` (5 fields accepted). */
export type RawItem = [string, string, string | null, number, number, boolean?];
/** Lossless raw form of a doc: `[agent, clock, maxSeq, items]`. */
export type RawText = [string, number, number, RawItem[]];

class Span {
  constructor(
    public agent: string,
    public start: number,
    public content: string,
    public n: number, // code points of content
    public deleted: boolean,
    public anchor: string | null,
    public seq: number,
    public ts: number,
    public meta: number[] | null, // per-char [seq, ts, seq, ts, ...] of coalesced ops
    public block: Block,
  ) {}

  lastSeq(): number {
    const m = this.meta;
    return m === null ? this.seq : (m[m.length - 2] as number);
  }

  lastId(): string {
    return `${this.agent}:${this.start + this.n - 1}`;
  }

  clone(block: Block): Span {
    return new Span(
      this.agent,
      this.start,
      this.content,
      this.n,
      this.deleted,
      this.anchor,
      this.seq,
      this.ts,
      this.meta === null ? null : this.meta.slice(),
      block,
    );
  }
}

class Block {
  chain: number | null = null;
  constructor(
    public idx: number,
    public spans: Span[],
  ) {}
}

interface AgentIndex {
  starts: number[];
  spans: Span[];
}

function bisectRight(a: number[], x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (x < (a[mid] as number)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

type Pos = number[];

function cmpPos(a: Pos, b: Pos): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** One replicated text: a rope of spans with tombstones plus a per-agent id index. */
export class TextDoc {
  private _agent: string;
  private _clock = 0;
  private _maxSeq = 0;
  private _blocks: Block[];
  private _bvis: number[] = [0];
  private _prefix: number[] = [0];
  private _valid = 0;
  private _cur = 0;
  private _len = 0;
  private _idx = new Map<string, AgentIndex>();
  private _text: string | null = "";
  private _lastPos = -1;
  private _lastAgent = "";
  private _lastN = -1;
  private _lastSpan: Span | null = null;

  constructor(agent = "") {
    if (typeof agent !== "string") throw new TextOpError("agent", "must be a string");
    this._agent = agent;
    this._blocks = [new Block(0, [])];
  }

  /** The local agent (author of local edits). */
  get agent(): string {
    return this._agent;
  }

  /** Next unused id number of the local agent. */
  get clock(): number {
    return this._clock;
  }

  /** Largest Lamport seq applied so far. */
  get maxSeq(): number {
    return this._maxSeq;
  }

  /** Number of visible characters (code points). */
  get length(): number {
    return this._len;
  }

  // -- internals ------------------------------------------------------------------------

  private _find(agent: string, n: number): Span | null {
    const ent = this._idx.get(agent);
    if (ent === undefined) return null;
    const i = bisectRight(ent.starts, n) - 1;
    if (i < 0) return null;
    const sp = ent.spans[i] as Span;
    return n < sp.start + sp.n ? sp : null;
  }

  private _indexAdd(sp: Span): void {
    const ent = this._idx.get(sp.agent);
    if (ent === undefined) {
      this._idx.set(sp.agent, { starts: [sp.start], spans: [sp] });
      return;
    }
    const starts = ent.starts;
    if ((starts[starts.length - 1] as number) < sp.start) {
      starts.push(sp.start);
      ent.spans.push(sp);
    } else {
      const i = bisectRight(starts, sp.start);
      starts.splice(i, 0, sp.start);
      ent.spans.splice(i, 0, sp);
    }
  }

  private _addVis(block: Block, delta: number): void {
    const bi = block.idx;
    this._bvis[bi] = (this._bvis[bi] as number) + delta;
    if (this._valid > bi) this._valid = bi;
    this._len += delta;
    this._text = null;
  }

  private _insertSpan(block: Block, si: number, sp: Span, counted: boolean): void {
    if (counted && !sp.deleted) this._addVis(block, sp.n);
    const spans = block.spans;
    spans.splice(si, 0, sp);
    sp.block = block;
    block.chain = null;
    if (spans.length > MAX_BLOCK) this._splitBlock(block);
  }

  private _splitBlock(block: Block): void {
    const spans = block.spans;
    const half = spans.length >> 1;
    const moved = spans.splice(half);
    block.chain = null;
    const bi = block.idx;
    const nb = new Block(bi + 1, moved);
    let vis = 0;
    for (const sp of moved) {
      sp.block = nb;
      if (!sp.deleted) vis += sp.n;
    }
    const blocks = this._blocks;
    blocks.splice(bi + 1, 0, nb);
    for (let j = bi + 2; j < blocks.length; j++) (blocks[j] as Block).idx = j;
    this._bvis[bi] = (this._bvis[bi] as number) - vis;
    this._bvis.splice(bi + 1, 0, vis);
    this._prefix.splice(bi + 1, 0, 0);
    this._valid = Math.min(this._valid, bi);
  }

  private static _posInBlock(sp: Span): number {
    return sp.block.spans.indexOf(sp);
  }

  private _split(sp: Span, k: number): Span {
    const meta = sp.meta;
    const agent = sp.agent;
    const start = sp.start;
    let seq: number;
    let ts: number;
    let rest: number[] | null;
    if (meta === null) {
      seq = sp.seq;
      ts = sp.ts;
      rest = null;
    } else {
      const k2 = k << 1;
      seq = meta[k2] as number;
      ts = meta[k2 + 1] as number;
      rest = sp.n - k > 1 ? meta.slice(k2) : null;
      sp.meta = k > 1 ? meta.slice(0, k2) : null;
    }
    const after = new Span(
      agent,
      start + k,
      cpSlice(sp.content, k, sp.n, sp.n),
      sp.n - k,
      sp.deleted,
      `${agent}:${start + k - 1}`,
      seq,
      ts,
      rest,
      sp.block,
    );
    sp.content = cpSlice(sp.content, 0, k, sp.n);
    sp.n = k;
    this._insertSpan(sp.block, TextDoc._posInBlock(sp) + 1, after, false);
    this._indexAdd(after);
    return after;
  }

  private _fixPrefix(): void {
    const v = this._valid;
    const bvis = this._bvis;
    const last = bvis.length - 1;
    if (v < last) {
      const prefix = this._prefix;
      let acc = prefix[v] as number;
      for (let i = v; i < last; i++) {
        acc += bvis[i] as number;
        prefix[i + 1] = acc;
      }
      this._valid = last;
    }
  }

  private _locate(q: number): [Span, number] {
    let bi = this._cur;
    const bvis = this._bvis;
    const prefix = this._prefix;
    let base = 0;
    if (bi <= this._valid && bi < bvis.length) {
      base = prefix[bi] as number;
      if (!(base <= q && q < base + (bvis[bi] as number))) bi = -1;
    } else {
      bi = -1;
    }
    if (bi < 0) {
      this._fixPrefix();
      bi = bisectRight(prefix, q) - 1;
      base = prefix[bi] as number;
      this._cur = bi;
    }
    let r = q - base;
    const spans = (this._blocks[bi] as Block).spans;
    const total = bvis[bi] as number;
    if (r < total >> 1) {
      for (const sp of spans) {
        if (!sp.deleted) {
          if (r < sp.n) return [sp, r];
          r -= sp.n;
        }
      }
    } else {
      r = total - r;
      for (let i = spans.length - 1; i >= 0; i--) {
        const sp = spans[i] as Span;
        if (!sp.deleted) {
          if (r <= sp.n) return [sp, sp.n - r];
          r -= sp.n;
        }
      }
    }
    throw new Error("text rope counts are inconsistent");
  }

  private static _chainMin(block: Block): number {
    let c = block.chain;
    if (c === null) {
      const spans = block.spans;
      c = -1;
      if (spans.length > 1) {
        c = (spans[1] as Span).seq;
        for (let i = 1; i < spans.length; i++) {
          const p = spans[i - 1] as Span;
          const x = spans[i] as Span;
          if (x.anchor !== p.lastId()) {
            c = -1;
            break;
          }
          if (x.seq < c) c = x.seq;
        }
      }
      block.chain = c;
    }
    return c;
  }

  private _charPos(charId: string | null): Pos {
    if (charId === null) return [-1];
    const [agent, , num] = rpartition(charId, ":");
    const n = Number(num);
    const sp = this._find(agent, n);
    if (sp === null) return [-1];
    return [sp.block.idx, TextDoc._posInBlock(sp), n - sp.start];
  }

  private _switchAgent(agent: string): void {
    if (typeof agent !== "string") throw new TextOpError("agent", "must be a string");
    this._agent = agent;
    const ent = this._idx.get(agent);
    if (ent === undefined) {
      this._clock = 0;
    } else {
      let m = 0;
      for (const sp of ent.spans) m = Math.max(m, sp.start + sp.n);
      this._clock = m;
    }
  }

  /** Make `agent` the local agent and never allocate its ids below `clock`. */
  reserve(agent: string, clock: number): void {
    if (agent !== this._agent) this._switchAgent(agent);
    this._clock = Math.max(this._clock, clock);
  }

  private _checkPosition(position: unknown, field = "position"): number {
    if (typeof position !== "number" || !Number.isInteger(position) || position < 0 || position > this._len) {
      throw new TextOpError(field, `must be an integer in 0..${this._len}, got ${String(position)}`);
    }
    return position;
  }

  // -- remote (wire) ops ----------------------------------------------------------------

  /** Integrate a `text.insert`; false if `id` was already present (no-op). */
  applyInsert(id: string, anchor: string | null, content: string, seq: number, ts: number): boolean {
    const [agent, n] = parseId(id, "id");
    let aagent = "";
    let an = 0;
    if (anchor !== null) [aagent, an] = parseId(anchor, "value[0]");
    if (typeof content !== "string") throw new TextOpError("value[1]", "content must be a string");
    checkSeq(seq);
    checkTs(ts);
    if (seq > this._maxSeq) this._maxSeq = seq;
    if (!content || this._find(agent, n) !== null) return false;
    let asp: Span | null = null;
    if (anchor !== null) {
      asp = this._find(aagent, an);
      if (asp !== null && an - asp.start < asp.n - 1) this._split(asp, an - asp.start + 1);
    }
    const blocks = this._blocks;
    let bi: number;
    let si: number;
    if (asp === null) {
      bi = 0;
      si = 0;
    } else {
      bi = asp.block.idx;
      si = TextDoc._posInBlock(asp) + 1;
    }
    let scanned = false;
    let apos: Pos | null = null;
    let prev: Span | null = asp;
    const nblocks = blocks.length;
    for (;;) {
      const spans = (blocks[bi] as Block).spans;
      if (si >= spans.length) {
        if (bi + 1 >= nblocks) break;
        bi += 1;
        si = 0;
        continue;
      }
      const x = spans[si] as Span;
      const xseq = x.seq;
      if (seq > xseq) break;
      const xa = x.anchor;
      let cmp: number;
      if (prev !== null && xa !== null && xa === prev.lastId()) {
        cmp = scanned ? 1 : 0;
      } else {
        if (apos === null) {
          apos = asp === null ? [-1] : [asp.block.idx, TextDoc._posInBlock(asp), asp.n - 1];
        }
        const xpos = this._charPos(xa);
        const c = cmpPos(xpos, apos);
        cmp = c < 0 ? -1 : c === 0 ? 0 : 1;
      }
      if (cmp < 0) break;
      if (cmp === 0 && seq === xseq && (ts < x.ts || (ts === x.ts && strLt(id, `${x.agent}:${x.start}`)))) {
        break;
      }
      si += 1;
      prev = x;
      scanned = true;
      if (si === 1 && spans.length > 1 && seq <= TextDoc._chainMin(blocks[bi] as Block)) {
        prev = spans[spans.length - 1] as Span;
        si = spans.length;
      }
    }
    const block = blocks[bi] as Block;
    const ln = cpLen(content);
    if (
      !scanned &&
      asp !== null &&
      asp.agent === agent &&
      asp.start + asp.n === n &&
      !asp.deleted &&
      seq >= asp.lastSeq()
    ) {
      this._extend(asp, content, ln, seq, ts);
    } else {
      const sp = new Span(agent, n, content, ln, false, anchor, seq, ts, null, block);
      this._insertSpan(block, si, sp, true);
      this._indexAdd(sp);
    }
    if (agent === this._agent && n + ln > this._clock) this._clock = n + ln;
    return true;
  }

  private _extend(sp: Span, content: string, ln: number, seq: number, ts: number): void {
    let meta = sp.meta;
    if (meta === null) {
      meta = [];
      for (let i = 0; i < sp.n; i++) meta.push(sp.seq, sp.ts);
      sp.meta = meta;
    }
    for (let i = 0; i < ln; i++) meta.push(seq, ts);
    sp.content += content;
    sp.n += ln;
    sp.block.chain = null;
    this._addVis(sp.block, ln);
  }

  /** Tombstone every char covered by `rm`; returns how many visible chars were deleted. */
  applyDelete(rm: readonly (readonly unknown[])[]): number {
    if (!Array.isArray(rm)) throw new TextOpError("rm", "must be a list of [charId, length]");
    const byAgent = new Map<string, [number, number][]>();
    rm.forEach((entry, i) => {
      if (!Array.isArray(entry) || entry.length !== 2) throw new TextOpError(`rm[${i}]`, "must be [charId, length]");
      const [agent, n] = parseId(entry[0], `rm[${i}][0]`);
      const length = entry[1];
      if (typeof length !== "number" || !Number.isInteger(length) || length < 0) {
        throw new TextOpError(`rm[${i}][1]`, `must be a non-negative integer: ${String(length)}`);
      }
      let l = byAgent.get(agent);
      if (l === undefined) byAgent.set(agent, (l = []));
      l.push([n, n + length]);
    });
    let deleted = 0;
    for (const [agent, ranges] of byAgent) {
      ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      let [s, e] = ranges[0] as [number, number];
      for (let i = 1; i < ranges.length; i++) {
        const r = ranges[i] as [number, number];
        if (r[0] <= e) {
          e = Math.max(e, r[1]);
        } else {
          deleted += this._deleteRange(agent, s, e);
          [s, e] = r;
        }
      }
      deleted += this._deleteRange(agent, s, e);
    }
    return deleted;
  }

  private _deleteRange(agent: string, s: number, e: number): number {
    const ent = this._idx.get(agent);
    if (ent === undefined || s >= e) return 0;
    const spans = ent.spans;
    let i = bisectRight(ent.starts, s) - 1;
    if (i < 0 || s >= (spans[i] as Span).start + (spans[i] as Span).n) i += 1;
    let deleted = 0;
    while (s < e && i < spans.length) {
      const sp = spans[i] as Span;
      if (sp.start >= e) break;
      s = Math.max(s, sp.start);
      if (s > sp.start) {
        this._split(sp, s - sp.start);
        i += 1;
        continue;
      }
      if (e < sp.start + sp.n) this._split(sp, e - sp.start);
      if (!sp.deleted) {
        sp.deleted = true;
        deleted += sp.n;
        this._addVis(sp.block, -sp.n);
      }
      s = sp.start + sp.n;
      i += 1;
    }
    return deleted;
  }

  /** `text.replace`: delete then insert (if content); validated before anything changes. */
  applyReplace(
    rm: readonly (readonly unknown[])[],
    id: string | null,
    anchor: string | null,
    content: string,
    seq: number,
    ts: number,
  ): void {
    if (content) {
      parseId(id, "id");
      if (anchor !== null) parseId(anchor, "value[0]");
      checkSeq(seq);
      checkTs(ts);
    }
    this.applyDelete(rm);
    if (content) this.applyInsert(id as string, anchor, content, seq, ts);
  }

  // -- local position-based edits -------------------------------------------------------

  private _anchorFor(position: number): [Span | null, number] {
    if (position === this._lastPos && this._lastN >= 0) {
      let sp = this._lastSpan;
      const n = this._lastN;
      if (sp === null || sp.agent !== this._lastAgent || !(sp.start <= n && n < sp.start + sp.n)) {
        sp = this._find(this._lastAgent, n);
      }
      if (sp !== null) return [sp, n - sp.start];
    }
    if (position === 0) return [null, 0];
    return this._locate(position - 1);
  }

  private _insertLocal(asp: Span | null, off: number, content: string, ts: number, position: number): InsertEdit {
    const agent = this._agent;
    const start = this._clock;
    const seq = this._maxSeq + 1;
    const ln = cpLen(content);
    let anchor: string | null;
    let sp: Span;
    if (asp === null) {
      anchor = null;
      const block = this._blocks[0] as Block;
      sp = new Span(agent, start, content, ln, false, null, seq, ts, null, block);
      this._insertSpan(block, 0, sp, true);
      this._indexAdd(sp);
    } else {
      anchor = `${asp.agent}:${asp.start + off}`;
      if (off < asp.n - 1) this._split(asp, off + 1);
      if (asp.agent === agent && asp.start + asp.n === start && !asp.deleted) {
        this._extend(asp, content, ln, seq, ts);
        sp = asp;
      } else {
        const block = asp.block;
        sp = new Span(agent, start, content, ln, false, anchor, seq, ts, null, block);
        this._insertSpan(block, TextDoc._posInBlock(asp) + 1, sp, true);
        this._indexAdd(sp);
      }
    }
    this._maxSeq = seq;
    this._clock = start + ln;
    this._lastPos = position + ln;
    this._lastAgent = agent;
    this._lastN = start + ln - 1;
    this._lastSpan = sp;
    return { id: `${agent}:${start}`, anchor, content, seq, ts };
  }

  /** Insert `content` before visible `position` as `agent` (default: the local agent). */
  localInsert(position: number, content: string, ts: number, agent?: string): InsertEdit {
    if (agent !== undefined && agent !== this._agent) this._switchAgent(agent);
    this._checkPosition(position);
    if (typeof content !== "string" || !content) throw new TextOpError("value", "content must be a non-empty string");
    checkTs(ts);
    let asp: Span | null;
    let off: number;
    if (position === this._lastPos && this._lastN >= 0) [asp, off] = this._anchorFor(position);
    else if (position === 0) [asp, off] = [null, 0];
    else [asp, off] = this._locate(position - 1);
    return this._insertLocal(asp, off, content, ts, position);
  }

  /** Delete `length` visible chars from `position`; returns the merged `rm` ranges. */
  localDelete(position: number, length: number): RmEntry[] {
    this._checkPosition(position);
    if (typeof length !== "number" || !Number.isInteger(length) || length < 0 || position + length > this._len) {
      throw new TextOpError("length", `must be an integer in 0..${this._len - position}`);
    }
    this._lastPos = -1;
    this._lastN = -1;
    this._lastSpan = null;
    const out: [string, number, number][] = [];
    let remaining = length;
    while (remaining > 0) {
      let [sp, off] = this._locate(position);
      if (off > 0) sp = this._split(sp, off);
      if (sp.n > remaining) this._split(sp, remaining);
      const ln = sp.n;
      sp.deleted = true;
      this._addVis(sp.block, -ln);
      const last = out[out.length - 1];
      if (last !== undefined && last[0] === sp.agent && last[1] + last[2] === sp.start) last[2] += ln;
      else out.push([sp.agent, sp.start, ln]);
      remaining -= ln;
    }
    return out.map(([a, n, ln]) => [`${a}:${n}`, ln]);
  }

  /** Replace `length` chars at `position` by `content` (anchor captured before the delete). */
  localReplace(position: number, length: number, content: string, ts: number, agent?: string): ReplaceEdit {
    if (agent !== undefined && agent !== this._agent) this._switchAgent(agent);
    this._checkPosition(position);
    if (typeof length !== "number" || !Number.isInteger(length) || length < 0 || position + length > this._len) {
      throw new TextOpError("length", `must be an integer in 0..${this._len - position}`);
    }
    if (typeof content !== "string") throw new TextOpError("value", "content must be a string");
    checkTs(ts);
    let asp: Span | null = null;
    let off = 0;
    let anchorKey: [string, number] | null = null;
    if (content) {
      [asp, off] = this._anchorFor(position);
      if (asp !== null) anchorKey = [asp.agent, asp.start + off];
    }
    const rm = length ? this.localDelete(position, length) : [];
    if (!content) return { rm, insert: null };
    if (anchorKey !== null) {
      asp = this._find(anchorKey[0], anchorKey[1]) as Span;
      off = anchorKey[1] - asp.start;
    }
    return { rm, insert: this._insertLocal(asp, off, content, ts, position) };
  }

  // -- reading --------------------------------------------------------------------------

  /** The visible string (cached until the next change). */
  text(): string {
    let t = this._text;
    if (t === null) {
      const parts: string[] = [];
      for (const b of this._blocks) for (const sp of b.spans) if (!sp.deleted) parts.push(sp.content);
      t = parts.join("");
      this._text = t;
    }
    return t;
  }

  toString(): string {
    return this.text();
  }

  /** Whether the char id `"agent:n"` has been integrated (deleted or not). */
  has(charId: unknown): boolean {
    if (typeof charId !== "string") return false;
    const [agent, sep, num] = rpartition(charId, ":");
    if (!sep || !isDigits(num)) return false;
    return this._find(agent, Number(num)) !== null;
  }

  /** Number of spans held (tombstones included). */
  spanCount(): number {
    let n = 0;
    for (const b of this._blocks) n += b.spans.length;
    return n;
  }

  /** One past the highest id number of `agent` held, 0 if none. */
  agentClock(agent: string): number {
    const ent = this._idx.get(agent);
    if (ent === undefined) return 0;
    let m = 0;
    for (const sp of ent.spans) m = Math.max(m, sp.start + sp.n);
    return m;
  }

  /** Lossless raw form `[agent, clock, maxSeq, [[id, content, anchor, seq, ts, deleted]]]`. */
  snapshot(): RawText {
    const items: RawItem[] = [];
    for (const b of this._blocks) {
      for (const sp of b.spans) {
        const meta = sp.meta;
        if (meta === null) {
          items.push([`${sp.agent}:${sp.start}`, sp.content, sp.anchor, sp.seq, sp.ts, sp.deleted]);
          continue;
        }
        const chars = sp.n === sp.content.length ? null : Array.from(sp.content);
        let i = 0;
        const ln = sp.n;
        while (i < ln) {
          const seq = meta[2 * i] as number;
          const ts = meta[2 * i + 1] as number;
          let j = i + 1;
          while (j < ln && meta[2 * j] === seq && meta[2 * j + 1] === ts) j++;
          const anchor = i === 0 ? sp.anchor : `${sp.agent}:${sp.start + i - 1}`;
          const part = chars === null ? sp.content.slice(i, j) : chars.slice(i, j).join("");
          items.push([`${sp.agent}:${sp.start + i}`, part, anchor, seq, ts, sp.deleted]);
          i = j;
        }
      }
    }
    return [this._agent, this._clock, this._maxSeq, items];
  }

  /** Rebuild from `snapshot()` (or the reference's 5-field raw form). */
  static fromSnapshot(raw: unknown, agent?: string): TextDoc {
    if (!Array.isArray(raw) || raw.length !== 4) throw new TextOpError("snapshot", "must be [agent, clock, maxSeq, items]");
    const [ragent, clock, maxSeq, items] = raw as unknown[];
    if (typeof ragent !== "string") throw new TextOpError("snapshot[0]", "agent must be a string");
    if (typeof clock !== "number" || !Number.isInteger(clock) || clock < 0) {
      throw new TextOpError("snapshot[1]", "clock must be a non-negative integer");
    }
    if (typeof maxSeq !== "number" || !Number.isInteger(maxSeq) || maxSeq < 0) {
      throw new TextOpError("snapshot[2]", "maxSeq must be a non-negative integer");
    }
    if (!Array.isArray(items)) throw new TextOpError("snapshot[3]", "items must be a list");
    const doc = new TextDoc(ragent);
    doc._clock = clock;
    doc._maxSeq = maxSeq;
    const placeholder = doc._blocks[0] as Block;
    const spans: Span[] = [];
    items.forEach((it: unknown, i: number) => {
      const f = `snapshot[3][${i}]`;
      if (!Array.isArray(it) || (it.length !== 5 && it.length !== 6)) {
        throw new TextOpError(f, "must be [id, content, anchor, seq, ts(, deleted)]");
      }
      const [sagent, n] = parseId(it[0], f + "[0]");
      const [, content, anchor, seq, ts] = it as unknown[];
      const deleted = it.length === 6 ? it[5] : false;
      if (typeof content !== "string" || !content) throw new TextOpError(f + "[1]", "content must be a non-empty string");
      if (anchor !== null) parseId(anchor, f + "[2]");
      try {
        checkSeq(seq);
        checkTs(ts);
      } catch (exc) {
        if (exc instanceof TextOpError) throw new TextOpError(`${f}.${exc.field}`, exc.message);
        throw exc;
      }
      if (typeof deleted !== "boolean") throw new TextOpError(f + "[5]", "deleted must be a boolean");
      spans.push(
        new Span(sagent, n, content, cpLen(content), deleted, anchor as string | null, seq as number, ts as number, null, placeholder),
      );
    });
    doc._indexAll(spans, true);
    doc._load(spans);
    if (agent !== undefined && agent !== ragent) doc._switchAgent(agent);
    return doc;
  }

  private _indexAll(spans: Span[], check: boolean): void {
    const byAgent = new Map<string, Span[]>();
    for (const sp of spans) {
      let l = byAgent.get(sp.agent);
      if (l === undefined) byAgent.set(sp.agent, (l = []));
      l.push(sp);
    }
    for (const [sagent, lst] of byAgent) {
      lst.sort((a, b) => a.start - b.start);
      if (check) {
        for (let i = 1; i < lst.length; i++) {
          const a = lst[i - 1] as Span;
          if ((lst[i] as Span).start < a.start + a.n) {
            throw new TextOpError("snapshot[3]", `overlapping ids of agent ${JSON.stringify(sagent)}`);
          }
        }
      }
      this._idx.set(sagent, { starts: lst.map((s) => s.start), spans: lst });
    }
  }

  private _load(spans: Span[]): void {
    const size = MAX_BLOCK >> 1;
    const blocks: Block[] = [];
    const bvis: number[] = [];
    for (let k = 0; k < spans.length; k += size) {
      const chunk = spans.slice(k, k + size);
      const b = new Block(blocks.length, chunk);
      let vis = 0;
      for (const sp of chunk) {
        sp.block = b;
        if (!sp.deleted) vis += sp.n;
      }
      blocks.push(b);
      bvis.push(vis);
    }
    if (blocks.length === 0) {
      blocks.push(new Block(0, []));
      bvis.push(0);
    }
    this._blocks = blocks;
    this._bvis = bvis;
    this._prefix = new Array<number>(blocks.length).fill(0);
    this._valid = 0;
    this._cur = 0;
    this._len = bvis.reduce((a, b) => a + b, 0);
    this._text = null;
  }

  /** `text.init`: a new doc of `agent`; a non-empty `value` is inserted as `agent:0`, seq 1. */
  static initial(agent: string, value: string, ts: number): TextDoc {
    const doc = new TextDoc(agent);
    if (value) doc.localInsert(0, value, ts);
    return doc;
  }

  /** An independent deep copy. */
  copy(): TextDoc {
    const doc = new TextDoc(this._agent);
    doc._clock = this._clock;
    doc._maxSeq = this._maxSeq;
    const placeholder = doc._blocks[0] as Block;
    const spans: Span[] = [];
    for (const b of this._blocks) for (const sp of b.spans) spans.push(sp.clone(placeholder));
    doc._indexAll(spans, false);
    doc._load(spans);
    doc._lastPos = this._lastPos;
    doc._lastAgent = this._lastAgent;
    doc._lastN = this._lastN;
    return doc;
  }
}

export { cmpStr };
