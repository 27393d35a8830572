/**
 * CRDT messages and ops: types, decoding of both spellings (long `sessionId`/`lamportTime`/
 * `timestamp`/`otype` or compact `client`/`lt`/`ts`/`ot`, and the wire wrapper
 * `{mtype: "crdt"|"broadcast", msg}`), and validation. A port of `durasync.crdt.messages`:
 * the same checks, the same field names in errors (`ops[2].value`), the same limits.
 *
 * Numbers (docs/crdt.md "Numbers"): integer fields (`lt`, clock counters, `seq`, `position`,
 * `length`, `from`, `to`, `rm` lengths, the number of a char id) must lie within
 * ±`MAX_SAFE_INTEGER` (and be non-negative where Python requires it), every number finite.
 * JSON does not tell JS an integer `2` from a float `2.0`: an integer field accepts `2.0` here,
 * and a huge integral number inside a value (Python rejects an int beyond the range, accepts the
 * float `1e300`) is accepted.
 */

import { cpLen, isDigits, rpartition } from "./strings.js";

/** A JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One operation: `ot` plus the reference's flat extras. */
export interface Op {
  ot: string;
  key: string;
  path: string;
  value?: Json;
  separator?: string;
  order?: string;
  intrinsic?: boolean;
  targetMsgId?: string;
  id?: string;
  seq?: number;
  ts?: number;
  rm?: [string, number][];
  position?: number;
  length?: number;
  from?: number;
  to?: number;
}

/** A CRDT message: a batch of ops from one session at one Lamport time. */
export interface Message {
  id: string;
  client: string;
  lt: number;
  ts: number;
  ops: Op[];
  clock: Record<string, number>;
  /** The room's total-order position, when a server sequenced the message. */
  serverSeq?: number | null;
}

/** A message, op or snapshot from a peer is malformed; `field` names the offending field. */
export class CRDTValidationError extends Error {
  readonly field: string;
  readonly detail: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = "CRDTValidationError";
    this.field = field;
    this.detail = message;
  }
}

/** The library was used incorrectly by local code (not a peer's fault). */
export class CRDTUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CRDTUsageError";
  }
}

/** Size limits enforced by validation (the defaults of `durasync.crdt.Limits`). */
export interface Limits {
  maxOps: number;
  maxString: number;
  maxValueItems: number;
  maxDepth: number;
  maxKey: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxOps: 10_000,
  maxString: 1 << 20,
  maxValueItems: 100_000,
  maxDepth: 32,
  maxKey: 1024,
});

/** Largest magnitude of an integer in a message (JS `Number.MAX_SAFE_INTEGER`). */
export const MAX_SAFE_INTEGER = Number.MAX_SAFE_INTEGER;

export const OTYPES: ReadonlySet<string> = new Set([
  "node.insert", "node.remove", "node.move",
  "number.set", "number.add", "number.multiply", "number.min", "number.max",
  "vector3.set", "vector3.add", "vector3.multiply", "vector3.applyQuaternion", "vector3.applyEuler",
  "euler.set", "euler.add", "quaternion.set", "quaternion.multiply",
  "color.set", "color.blend", "string.set", "string.concat",
  "boolean.set", "boolean.or", "boolean.and",
  "array.set", "array.push", "array.union", "array.remove", "array.move",
  "object.set", "object.merge",
  "text.init", "text.insert", "text.delete", "text.replace",
  "meta.undo", "meta.redo",
]);
/** Otypes whose values merge inside one edit-buffer slot. */
export const ADDITIVE_OTYPES: ReadonlySet<string> = new Set(["number.add", "number.multiply", "vector3.add", "quaternion.multiply"]);
export const TEXT_OTYPES: ReadonlySet<string> = new Set(["text.init", "text.insert", "text.delete", "text.replace"]);
export const META_OTYPES: ReadonlySet<string> = new Set(["meta.undo", "meta.redo"]);
const EULER_ORDERS = new Set(["XYZ", "YXZ", "ZXY", "ZYX", "YZX", "XZY"]);
const COLOR_RE = /^#?[0-9a-fA-F]{6}$/;

function pyType(v: unknown): string {
  if (v === null || v === undefined) return "NoneType";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "string") return "str";
  if (Array.isArray(v)) return "list";
  return "dict";
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function isNum(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

function isInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v);
}

// -- decoding -----------------------------------------------------------------------------
// Decoding runs once per message of a join (thousands per frame): it walks each object's own
// fields once, builds no closures, arrays or field-name strings on the way, and names the bad
// field only when it throws (`withPrefix`).

function wrong(field: string, expected: string, v: unknown): CRDTValidationError {
  return new CRDTValidationError(field, `Expected \`${expected}\`, got \`${pyType(v)}\``);
}

/** `err` with its field moved under `prefix` (`ops[2]` + `value` -> `ops[2].value`). */
function withPrefix(err: unknown, prefix: string): unknown {
  if (!(err instanceof CRDTValidationError)) return err;
  return new CRDTValidationError(err.field ? `${prefix}.${err.field}` : prefix, err.detail);
}

/** One op object; errors name fields relative to the op ("" for the op itself). */
function readOp(raw: unknown): Op {
  if (!isObj(raw)) throw wrong("", "object", raw);
  const op: Op = { ot: "", key: "", path: "" };
  const o = op as unknown as Record<string, unknown>;
  let otype: string | undefined;
  for (const f in raw) {
    const v = raw[f];
    if (v === undefined) continue;
    switch (f) {
      case "ot":
      case "key":
      case "path":
      case "separator":
      case "order":
      case "targetMsgId":
      case "id":
        if (typeof v !== "string") throw wrong(f, "str", v);
        o[f] = v;
        break;
      case "otype":
        if (typeof v !== "string") throw wrong(f, "str", v);
        otype = v;
        break;
      case "seq":
      case "position":
      case "length":
      case "from":
      case "to":
        if (!isInt(v)) throw wrong(f, "int", v);
        if (v > MAX_SAFE_INTEGER || v < -MAX_SAFE_INTEGER) throw outOfRange(f);
        o[f] = v;
        break;
      case "intrinsic":
        if (typeof v !== "boolean") throw wrong(f, "bool", v);
        op.intrinsic = v;
        break;
      case "ts":
        if (typeof v !== "number") throw wrong(f, "int | float", v);
        op.ts = v;
        break;
      case "rm":
        if (!Array.isArray(v)) throw wrong(f, "array", v);
        op.rm = v as [string, number][];
        break;
      case "value":
        op.value = v as Json;
        break;
      default: // unknown fields are dropped
    }
  }
  if (otype !== undefined && !op.ot) op.ot = otype;
  return op;
}

/** Decode one op object (long or compact otype name); unknown fields are dropped. */
export function decodeOp(raw: unknown, p: string): Op {
  try {
    return readOp(raw);
  } catch (exc) {
    throw withPrefix(exc, p);
  }
}

/** The message fields of `obj` (no validation beyond the field types); errors name the field. */
function readMessage(obj: Record<string, unknown>): Message {
  let id = "";
  let client = "";
  let sessionId = "";
  let lt: number | undefined;
  let longLt: number | undefined;
  let ts: number | null | undefined;
  let longTs: number | undefined;
  let rawOps: unknown;
  let rawClock: unknown;
  let ss: number | null = null;
  for (const f in obj) {
    const v = obj[f];
    if (v === undefined) continue;
    switch (f) {
      case "id":
        if (typeof v !== "string") throw wrong(f, "str", v);
        id = v;
        break;
      case "client":
        if (typeof v !== "string") throw wrong(f, "str", v);
        client = v;
        break;
      case "sessionId":
        if (typeof v !== "string") throw wrong(f, "str", v);
        sessionId = v;
        break;
      case "lt":
        if (!isInt(v)) throw wrong(f, "int", v);
        lt = v;
        break;
      case "lamportTime":
        if (!isInt(v)) throw wrong(f, "int", v);
        longLt = v;
        break;
      case "ts":
        if (v !== null && typeof v !== "number") throw wrong(f, "int | float | null", v);
        ts = v;
        break;
      case "timestamp":
        if (typeof v !== "number") throw wrong(f, "int | float", v);
        longTs = v;
        break;
      case "ops":
        rawOps = v;
        break;
      case "clock":
        rawClock = v;
        break;
      case "serverSeq":
        if (v !== null && !isInt(v)) throw wrong(f, "int | null", v);
        ss = v;
        break;
      default: // unknown fields are dropped
    }
  }
  if (lt === undefined || lt < 0) lt = longLt ?? lt ?? -1;
  if (ts === undefined || ts === null) ts = longTs;
  rawOps ??= [];
  if (!Array.isArray(rawOps)) throw wrong("ops", "array", rawOps);
  const ops: Op[] = new Array<Op>(rawOps.length);
  for (let i = 0; i < rawOps.length; i++) {
    try {
      ops[i] = readOp(rawOps[i]);
    } catch (exc) {
      throw withPrefix(exc, `ops[${i}]`);
    }
  }
  rawClock ??= {};
  if (!isObj(rawClock)) throw wrong("clock", "object", rawClock);
  const clock: Record<string, number> = {};
  for (const k in rawClock) {
    const v = rawClock[k];
    if (!isInt(v)) throw wrong(`clock.${k}`, "int", v);
    clock[k] = v;
  }
  return { id, client: client || sessionId, lt, ts: ts as number, ops, clock, serverSeq: ss };
}

/**
 * Convert a parsed JSON/msgpack object (or the wire wrapper) into a validated `Message`.
 * Throws `CRDTValidationError` naming the field; nothing else is touched.
 */
export function decodeMessage(obj: unknown, limits: Limits = DEFAULT_LIMITS): Message {
  if (isObj(obj) && "mtype" in obj && "msg" in obj) {
    if (obj["mtype"] !== "crdt" && obj["mtype"] !== "broadcast") {
      throw new CRDTValidationError("mtype", `not a CRDT message frame: ${JSON.stringify(obj["mtype"])}`);
    }
    obj = obj["msg"];
  }
  if (!isObj(obj)) throw wrong("message", "object", obj);
  const msg = readMessage(obj);
  validateMessage(msg, limits);
  return msg;
}

/** Decode one JSON text (a message or a wire wrapper). */
export function decodeMessageJson(text: string, limits: Limits = DEFAULT_LIMITS): Message {
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (exc) {
    throw new CRDTValidationError("message", `JSON is malformed: ${(exc as Error).message}`);
  }
  return decodeMessage(obj, limits);
}

/** The compact-name plain form of `msg` (what the wire carries); unset fields omitted. */
export function messageToObject(msg: Message): Record<string, unknown> {
  const out: Record<string, unknown> = {
    id: msg.id,
    client: msg.client,
    lt: msg.lt,
    ts: msg.ts,
    ops: msg.ops.map((op) => {
      const o: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(op)) if (v !== undefined) o[k] = v;
      return o;
    }),
    clock: msg.clock,
  };
  if (msg.serverSeq !== undefined && msg.serverSeq !== null) out["serverSeq"] = msg.serverSeq;
  return out;
}

// -- validation ---------------------------------------------------------------------------

function checkNum(v: unknown, field: string): void {
  if (!isNum(v)) {
    if (typeof v === "number") throw new CRDTValidationError(field, "NaN or infinity is not allowed");
    throw new CRDTValidationError(field, `expected a number, got ${pyType(v)}`);
  }
}

function checkVec(v: unknown, n: number, field: string): void {
  if (!Array.isArray(v)) throw new CRDTValidationError(field, `expected a list of ${n} numbers`);
  if (v.length !== n) throw new CRDTValidationError(field, `expected ${n} components, got ${v.length}`);
  v.forEach((x, i) => checkNum(x, `${field}[${i}]`));
}

function checkStr(v: unknown, field: string, limits: Limits): void {
  if (typeof v !== "string") throw new CRDTValidationError(field, `expected a string, got ${pyType(v)}`);
  if (v.length > limits.maxString && cpLen(v) > limits.maxString) {
    throw new CRDTValidationError(field, `string longer than ${limits.maxString}`);
  }
}

/** A JSON value within the size limits, with finite numbers only (each node counts one). */
function checkJson(v: unknown, field: string, limits: Limits): void {
  let budget = limits.maxValueItems;
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, depth] = stack.pop() as [unknown, number];
    budget -= 1;
    if (x !== null && typeof x === "object") {
      if (depth >= limits.maxDepth) throw new CRDTValidationError(field, `nested deeper than ${limits.maxDepth}`);
      const items = Array.isArray(x) ? x : Object.values(x as Record<string, unknown>);
      for (const y of items) {
        if (typeof y === "string") {
          budget -= 1;
          if (y.length > limits.maxString && cpLen(y) > limits.maxString) {
            throw new CRDTValidationError(field, `string longer than ${limits.maxString}`);
          }
        } else if (typeof y === "number") {
          budget -= 1;
          if (!Number.isFinite(y)) throw new CRDTValidationError(field, "NaN or infinity is not allowed");
        } else if (typeof y === "boolean" || y === null) {
          budget -= 1;
        } else if (typeof y === "object") {
          stack.push([y, depth + 1]);
        } else {
          throw new CRDTValidationError(field, `not a JSON value: ${typeof y}`);
        }
      }
    } else if (typeof x === "string") {
      if (x.length > limits.maxString && cpLen(x) > limits.maxString) {
        throw new CRDTValidationError(field, `string longer than ${limits.maxString}`);
      }
    } else if (typeof x === "number") {
      if (!Number.isFinite(x)) throw new CRDTValidationError(field, "NaN or infinity is not allowed");
    } else if (!(typeof x === "boolean" || x === null)) {
      throw new CRDTValidationError(field, `not a JSON value: ${typeof x}`);
    }
    if (budget < 0) throw new CRDTValidationError(field, `value larger than ${limits.maxValueItems} items`);
  }
}

function outOfRange(field: string): CRDTValidationError {
  return new CRDTValidationError(field, `integer out of range (allowed: -${MAX_SAFE_INTEGER}..${MAX_SAFE_INTEGER})`);
}

/** A non-negative integer within the safe range. */
function checkCount(v: unknown, field: string): number {
  if (!isInt(v) || v < 0) throw new CRDTValidationError(field, "expected a non-negative integer");
  if (v > MAX_SAFE_INTEGER) throw outOfRange(field);
  return v;
}

/** The number `n` of a char id `agent:n` (at most `MAX_SAFE_INTEGER`). */
function checkCharId(v: unknown, field: string): number {
  if (typeof v !== "string") throw new CRDTValidationError(field, "expected a char id 'agent:n'");
  const [, sep, n] = rpartition(v, ":");
  if (!sep || !isDigits(n)) throw new CRDTValidationError(field, "expected a char id 'agent:n'");
  if (n.length > 16 || Number(n) > MAX_SAFE_INTEGER) throw new CRDTValidationError(field, "char id number out of the safe integer range");
  return Number(n);
}

function checkRm(rm: unknown, field: string): void {
  if (!Array.isArray(rm)) throw new CRDTValidationError(field, "expected a list of [charId, length]");
  rm.forEach((r: unknown, i: number) => {
    if (!Array.isArray(r) || r.length !== 2 || typeof r[0] !== "string" || !isInt(r[1]) || (r[1] as number) <= 0) {
      throw new CRDTValidationError(`${field}[${i}]`, "expected [charId, positive length]");
    }
    const n = checkCharId(r[0], `${field}[${i}][0]`);
    if (n + (r[1] as number) > MAX_SAFE_INTEGER) throw new CRDTValidationError(`${field}[${i}]`, "char ids beyond the safe integer range");
  });
}

function localContent(v: unknown): unknown {
  return Array.isArray(v) && v.length === 2 && v[0] === null ? v[1] : v;
}

function checkTextInsert(op: Op, p: string, limits: Limits, local: boolean): void {
  if (local && op.position !== undefined && op.id === undefined) {
    checkCount(op.position, `${p}.position`);
    checkStr(localContent(op.value), `${p}.value`, limits);
    return;
  }
  const n = checkCharId(op.id, `${p}.id`);
  const v = op.value;
  if (!Array.isArray(v) || v.length !== 2) throw new CRDTValidationError(`${p}.value`, "expected [anchor, content]");
  if (v[0] !== null) checkCharId(v[0], `${p}.value[0]`);
  checkStr(v[1], `${p}.value[1]`, limits);
  if (!v[1]) throw new CRDTValidationError(`${p}.value[1]`, "empty insert");
  if (n + cpLen(v[1] as string) > MAX_SAFE_INTEGER) throw new CRDTValidationError(`${p}.id`, "char ids beyond the safe integer range");
  checkCount(op.seq, `${p}.seq`);
  if (op.ts === undefined) throw new CRDTValidationError(`${p}.ts`, "missing");
  checkNum(op.ts, `${p}.ts`);
}

function checkTextDelete(op: Op, p: string, local: boolean): void {
  if (local && op.rm === undefined && op.position !== undefined) {
    for (const name of ["position", "length"] as const) checkCount(op[name], `${p}.${name}`);
    return;
  }
  if (op.rm === undefined) throw new CRDTValidationError(`${p}.rm`, "missing");
  checkRm(op.rm, `${p}.rm`);
}

/** Check one op; `p` prefixes field names; `local` also accepts position-based text edits. */
export function validateOp(op: Op, p = "op", limits: Limits = DEFAULT_LIMITS, local = false): void {
  const ot = op.ot;
  if (!ot) throw new CRDTValidationError(`${p}.ot`, "missing otype");
  if (!OTYPES.has(ot)) throw new CRDTValidationError(`${p}.ot`, `unknown otype ${JSON.stringify(ot)}`);
  if (op.key.length > limits.maxKey && cpLen(op.key) > limits.maxKey) throw new CRDTValidationError(`${p}.key`, `longer than ${limits.maxKey}`);
  if (op.path.length > limits.maxKey && cpLen(op.path) > limits.maxKey) throw new CRDTValidationError(`${p}.path`, `longer than ${limits.maxKey}`);
  const dot = ot.indexOf(".");
  const family = ot.slice(0, dot);
  const verb = ot.slice(dot + 1);
  const v = op.value;
  const fv = `${p}.value`;
  switch (family) {
    case "number":
      checkNum(v, fv);
      break;
    case "vector3":
      checkVec(v, verb === "applyQuaternion" ? 4 : 3, fv);
      if (verb === "applyEuler" && op.order !== undefined && !EULER_ORDERS.has(op.order)) {
        throw new CRDTValidationError(`${p}.order`, `unknown Euler order ${JSON.stringify(op.order)}`);
      }
      break;
    case "euler":
      checkVec(v, 3, fv);
      break;
    case "quaternion":
      checkVec(v, 4, fv);
      break;
    case "color":
      if (typeof v !== "string" || !COLOR_RE.test(v)) throw new CRDTValidationError(fv, "expected a color '#rrggbb'");
      break;
    case "string":
      checkStr(v, fv, limits);
      if (op.separator !== undefined) checkStr(op.separator, `${p}.separator`, limits);
      break;
    case "boolean":
      if (typeof v !== "boolean") throw new CRDTValidationError(fv, "expected a boolean");
      break;
    case "array":
      if (verb === "set" || verb === "union") {
        if (!Array.isArray(v)) throw new CRDTValidationError(fv, "expected a list");
        checkJson(v, fv, limits);
      } else if (verb === "move") {
        for (const name of ["from", "to"] as const) {
          const x = op[name];
          if (!isInt(x)) throw new CRDTValidationError(`${p}.${name}`, "expected an integer");
          if (Math.abs(x) > MAX_SAFE_INTEGER) throw outOfRange(`${p}.${name}`);
        }
        if (v !== undefined) checkJson(v, fv, limits);
      } else {
        if (v === undefined) throw new CRDTValidationError(fv, "missing");
        checkJson(v, fv, limits);
      }
      break;
    case "object":
      if (!isObj(v)) throw new CRDTValidationError(fv, "expected an object");
      checkJson(v, fv, limits);
      break;
    case "node":
      if (verb === "insert") {
        if (!isObj(v)) throw new CRDTValidationError(fv, "expected a node object {key, tag, name, ...}");
        const nk = v["key"];
        if (typeof nk !== "string" || !nk) throw new CRDTValidationError(`${fv}.key`, "expected a non-empty string");
        for (const name of ["tag", "name"]) {
          if (name in v && typeof v[name] !== "string") throw new CRDTValidationError(`${fv}.${name}`, "expected a string");
        }
        const ch = v["children"];
        if (ch !== undefined && ch !== null && (!Array.isArray(ch) || ch.some((c) => typeof c !== "string"))) {
          throw new CRDTValidationError(`${fv}.children`, "expected a list of node keys");
        }
        checkJson(v, fv, limits);
      } else if (verb === "remove") {
        if (typeof v !== "string") throw new CRDTValidationError(fv, "expected the child node key");
      } else if (!isObj(v) || typeof v["nodeKey"] !== "string" || typeof v["newParent"] !== "string") {
        throw new CRDTValidationError(fv, "expected {nodeKey, newParent}");
      } else {
        checkJson(v, fv, limits);
      }
      break;
    case "text":
      if (verb === "init") {
        if (v !== undefined && v !== null) checkStr(v, fv, limits);
      } else if (verb === "insert") {
        checkTextInsert(op, p, limits, local);
      } else if (verb === "delete") {
        checkTextDelete(op, p, local);
        if (v !== undefined) checkJson(v, fv, limits);
      } else if (local && op.rm === undefined && op.position !== undefined) {
        checkTextDelete(op, p, local);
        checkStr(localContent(v), fv, limits);
      } else {
        checkTextDelete(op, p, false);
        checkTextInsert(op, p, limits, false);
      }
      break;
    default: // meta
      if (typeof op.targetMsgId !== "string" || !op.targetMsgId) {
        throw new CRDTValidationError(`${p}.targetMsgId`, "expected the target message id");
      }
      if (v !== undefined) checkJson(v, fv, limits);
  }
}

/** Check a decoded message (compact names set); throws `CRDTValidationError`. */
export function validateMessage(msg: Message, limits: Limits = DEFAULT_LIMITS, local = false): void {
  if (!msg.id) throw new CRDTValidationError("id", "missing message id");
  if (msg.id.length > limits.maxKey && cpLen(msg.id) > limits.maxKey) throw new CRDTValidationError("id", `longer than ${limits.maxKey}`);
  if (!msg.client) throw new CRDTValidationError("client", "missing sender (client / sessionId)");
  if (msg.client.length > limits.maxKey && cpLen(msg.client) > limits.maxKey) throw new CRDTValidationError("client", `longer than ${limits.maxKey}`);
  if (!(msg.lt >= 0)) throw new CRDTValidationError("lt", "missing or negative Lamport time (lt / lamportTime)");
  if (msg.lt > MAX_SAFE_INTEGER) throw outOfRange("lt");
  if (msg.ts === undefined || msg.ts === null) throw new CRDTValidationError("ts", "missing timestamp (ts / timestamp)");
  checkNum(msg.ts, "ts");
  const clock = msg.clock;
  for (const k in clock) {
    const c = clock[k] as number;
    if (c < 0) throw new CRDTValidationError(`clock.${k}`, "negative counter");
    if (c > MAX_SAFE_INTEGER) throw outOfRange(`clock.${k}`);
  }
  const ops = msg.ops;
  if (ops.length > limits.maxOps) throw new CRDTValidationError("ops", `more than ${limits.maxOps} ops`);
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i] as Op;
    if (!fastOk(op, limits)) validateOp(op, `ops[${i}]`, limits, local);
  }
}

// -- fast acceptance of the common ops ------------------------------------------------------
// `fastOk` is true only when the op is certainly valid (the same rules as `validateOp`); false
// sends it through `validateOp`, which names the bad field. Nothing is allocated on this path:
// no field-name strings, no arrays (a join validates thousands of messages at once).

function finite3(v: unknown): boolean {
  return Array.isArray(v) && v.length === 3 && isNum(v[0]) && isNum(v[1]) && isNum(v[2]);
}

function finite4(v: unknown): boolean {
  return Array.isArray(v) && v.length === 4 && isNum(v[0]) && isNum(v[1]) && isNum(v[2]) && isNum(v[3]);
}

/** Items left for the value being checked by `jsonOk` (one check at a time, never reentrant). */
let jsonBudget = 0;

function jsonItemOk(x: unknown, depth: number, limits: Limits): boolean {
  if (--jsonBudget < 0) return false;
  switch (typeof x) {
    case "string":
      return x.length <= limits.maxString || cpLen(x) <= limits.maxString;
    case "number":
      return Number.isFinite(x);
    case "boolean":
      return true;
    case "object": {
      if (x === null) return true;
      if (depth >= limits.maxDepth) return false;
      if (Array.isArray(x)) {
        for (let i = 0; i < x.length; i++) if (!jsonItemOk(x[i], depth + 1, limits)) return false;
        return true;
      }
      const o = x as Record<string, unknown>;
      for (const k in o) if (!jsonItemOk(o[k], depth + 1, limits)) return false;
      return true;
    }
    default:
      return false;
  }
}

/** `checkJson` as a yes/no answer (recursion depth is bounded by `maxDepth`). */
function jsonOk(v: unknown, limits: Limits): boolean {
  jsonBudget = limits.maxValueItems;
  return jsonItemOk(v, 0, limits);
}

function nodeInsertOk(v: unknown, limits: Limits): boolean {
  if (!isObj(v)) return false;
  const nk = v["key"];
  if (typeof nk !== "string" || !nk) return false;
  if ("tag" in v && typeof v["tag"] !== "string") return false;
  if ("name" in v && typeof v["name"] !== "string") return false;
  const ch = v["children"];
  if (ch !== undefined && ch !== null) {
    if (!Array.isArray(ch)) return false;
    for (let i = 0; i < ch.length; i++) if (typeof ch[i] !== "string") return false;
  }
  return jsonOk(v, limits);
}

function fastOk(op: Op, limits: Limits): boolean {
  if (op.key.length > limits.maxKey || op.path.length > limits.maxKey) return false;
  const v = op.value;
  switch (op.ot) {
    case "number.set":
    case "number.add":
    case "number.multiply":
    case "number.min":
    case "number.max":
      return isNum(v);
    case "vector3.set":
    case "vector3.add":
    case "vector3.multiply":
    case "euler.set":
    case "euler.add":
      return finite3(v);
    case "quaternion.set":
    case "quaternion.multiply":
    case "vector3.applyQuaternion":
      return finite4(v);
    case "string.set":
      // string.concat and a separator go through the full check
      return typeof v === "string" && v.length <= limits.maxString && op.separator === undefined;
    case "color.set":
    case "color.blend":
      return typeof v === "string" && COLOR_RE.test(v);
    case "boolean.set":
    case "boolean.or":
    case "boolean.and":
      return typeof v === "boolean";
    case "node.insert":
      return nodeInsertOk(v, limits);
    case "node.remove":
      return typeof v === "string";
    default:
      return false;
  }
}
