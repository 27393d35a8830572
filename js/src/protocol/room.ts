/**
 * Client side of a room connection, sans-I/O (a port of `durasync.protocol.room_client`; the
 * wire is docs/protocol.md, the rules docs/browser.md "RoomClient").
 *
 * The session outlives connections. It holds the member's `Replica` (confirmed messages in the
 * server's order, plus own pending ones and the edit buffer), the *outbox* of committed
 * messages the server has not acknowledged (in commit order, bounded), and the resume
 * position: the last `serverSeq` received and the `epoch` it belongs to.
 *
 * - **Join and resume.** Every connection is opened with `joinParams()` (`since`/`epoch` once
 *   a position is known). The first frame is `state`: `recovered: true` (same epoch) applies
 *   exactly the missed messages; otherwise the replica is *reloaded* from the snapshot and
 *   journal: the edit buffer is committed first so nothing is lost, own messages the state
 *   already holds leave the outbox, and the Lamport time never goes back (ids are
 *   `<client>:<lt>`; a reused one would be deduped away by the server).
 * - **Resend after state.** Frames go out only while *connected*: between a `state` and the
 *   connection's loss. After each `state` the whole outbox is sent again in commit order (the
 *   server dedupes by id, so every message is applied exactly once), then the presence state.
 * - **Acks and errors.** An `ack` confirms a message (it leaves the outbox). An `error` naming
 *   one of ours drops it and its optimistic effect, except `RATE_LIMITED`, which is resent
 *   after `retryDelay` (a `RATE_LIMITED` without a message id re-sends the presence state then).
 * - **Bounded outbox.** At most `maxMessages` messages and about `maxBytes` bytes (the last
 *   message may pass the byte bound). Policy `reject` (default): `edit`/`commit`/`undo`/`redo`
 *   throw `BufferFull` while it is full, nothing changes, and an `overflow` event with no
 *   dropped message says so. Policy `drop_oldest`: the oldest messages are dropped with their
 *   optimistic effect and reported in an `overflow` event; if one of them reached the server
 *   anyway, its `ack` makes the session ask for the missed messages (`sync` with
 *   `since`/`epoch`), so the replica still converges.
 *
 * Nothing here reads a clock, awaits, or touches a socket: calls that create a message or a
 * timer take `now` (seconds of the wall clock; message timestamps are `now * 1000` ms).
 * Caller obligations, after each `receiveData`, `tick` or local call: write every item of
 * `dataToSend()` in order, one WebSocket message each (a string as text, bytes as binary);
 * process `eventsReceived()`; call `tick` no later than `nextDeadline()`; call
 * `connectionLost()` when the transport ends.
 */

import { Decoder, encode as mpEncode } from "@msgpack/msgpack";

import { textKey } from "../crdt/graph.js";
import { CRDTValidationError, decodeMessage, messageToObject, type Message, type Op } from "../crdt/messages.js";
import { Replica, type ReplicaChange, type Snapshot } from "../crdt/replica.js";
import { payloadSize, type Payload } from "./buffer.js";
import { BufferFull, RemoteProtocolError } from "./errors.js";

export type RoomFormat = "msgpack" | "json";

/** Seconds before a `RATE_LIMITED` frame is sent again (docs/protocol.md: "resend later"). */
export const RETRY_DELAY = 0.5;

/** Where a change of the visible graph came from. */
export type ChangeOrigin = "local" | "remote" | "reload" | "rejected";

/** The visible graph changed; `keys` are the node keys affected (null: anything may have). */
export interface RoomChange {
  type: "change";
  keys: ReadonlySet<string> | null;
  origin: ChangeOrigin;
}

/** A member's presence changed; `members` is the current table (client id -> state). */
export interface PresenceEvent {
  type: "presence";
  event: "sync" | "join" | "update" | "leave";
  client: string | null;
  state: unknown;
  reason: string | null;
  members: ReadonlyMap<string, unknown>;
}

/** The server refused a frame (an `error` frame); `msgId` names our message when known. */
export interface RoomError {
  type: "room-error";
  code: string;
  message: string;
  msgId: string | null;
}

/** The outbox was full: `dropped` messages (policy `drop_oldest`) or a refused call (`reject`). */
export interface OutboxOverflow {
  type: "overflow";
  reason: "count" | "bytes";
  policy: "reject" | "drop_oldest";
  dropped: Message[];
}

export type ClientRoomEvent = RoomChange | PresenceEvent | RoomError | OutboxOverflow;

export interface OutboxLimits {
  maxMessages: number;
  /** Bytes of the messages' JSON encoding (the last message may pass it). */
  maxBytes: number;
  policy: "reject" | "drop_oldest";
}

export const DEFAULT_OUTBOX: Readonly<OutboxLimits> = Object.freeze({ maxMessages: 10_000, maxBytes: 16 << 20, policy: "reject" });

export interface ClientRoomOptions {
  format?: RoomFormat;
  retryDelay?: number;
  outbox?: Partial<OutboxLimits>;
}

type Frame = Record<string, unknown>;

interface Entry {
  msg: Message;
  size: number;
}

const RESEND = "r:";
const PRESENCE = "p";
const MAX_SEQ = Number.MAX_SAFE_INTEGER;

function bad(message: string): RemoteProtocolError {
  return new RemoteProtocolError("bad_frame", message);
}

function isObj(v: unknown): v is Frame {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function seqOf(f: Frame, name: string, mtype: string): number {
  const v = f[name];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_SEQ) throw bad(`${mtype}.${name} must be an integer in 0..2^53-1`);
  return v;
}

function strOf(f: Frame, name: string, mtype: string, nullable = false): string | null {
  const v = f[name];
  if (typeof v === "string") return v;
  if (nullable && (v === null || v === undefined)) return null;
  throw bad(`${mtype}.${name} must be a string`);
}

/** One decoder for every msgpack frame (it keeps its buffers and its cache of map keys). */
const mpDecoder = new Decoder();

function decodeMsg(raw: unknown, where: string): Message {
  try {
    return decodeMessage(raw);
  } catch (exc) {
    if (exc instanceof CRDTValidationError) throw bad(`${where}.${exc.field}: ${exc.detail}`);
    throw exc;
  }
}

/** The messages of a `state` journal, decoded and validated, and their serverSeqs. */
function decodeJournal(raw: unknown[]): [Message[], number[]] {
  const n = raw.length;
  const journal: Message[] = new Array<Message>(n);
  const seqs: number[] = new Array<number>(n);
  let i = 0;
  try {
    for (; i < n; i++) {
      const m = decodeMessage(raw[i]);
      if (typeof m.serverSeq !== "number") throw bad(`state.journal[${i}].serverSeq is missing`);
      journal[i] = m;
      seqs[i] = m.serverSeq;
    }
  } catch (exc) {
    // the field name is built here, on error only: not once per message
    if (exc instanceof CRDTValidationError) throw bad(`state.journal[${i}].${exc.field}: ${exc.detail}`);
    throw exc;
  }
  return [journal, seqs];
}

/** The owner of a message id: everything before its last `:` (docs/protocol.md "Id namespaces"). */
export function idOwner(id: string): string {
  const i = id.lastIndexOf(":");
  return i < 0 ? "" : id.slice(0, i);
}

/** One member of a room, client side (see the module docs). */
export class ClientRoomSession {
  readonly clientId: string;
  readonly format: RoomFormat;
  readonly retryDelay: number;
  readonly outboxLimits: OutboxLimits;
  /** The member's replica (replaced by a reload). */
  replica: Replica;
  /** Last serverSeq received (the resume position), or null before the first state. */
  serverSeq: number | null = null;
  /** Epoch of the room incarnation `serverSeq` belongs to. */
  epoch: string | null = null;
  /** Full states received (`recovered: false`), the first join included. */
  reloads = 0;
  /** Presence state of every member present (client id -> state). */
  readonly presence = new Map<string, unknown>();
  /** A connection is up and its `state` was applied: frames go out. */
  connected = false;
  private outbox = new Map<string, Entry>();
  private outboxBytes = 0;
  private myPresence: unknown = null;
  private timers = new Map<string, number>();
  private out: Payload[] = [];
  private events: ClientRoomEvent[] = [];
  private origin: ChangeOrigin = "local";
  private unsubscribe: () => void;

  constructor(clientId: string, opts: ClientRoomOptions = {}) {
    if (!clientId) throw new RangeError("clientId must be a non-empty string");
    this.clientId = clientId;
    this.format = opts.format ?? "msgpack";
    if (this.format !== "msgpack" && this.format !== "json") throw new RangeError(`unknown format ${String(this.format)}`);
    this.retryDelay = opts.retryDelay ?? RETRY_DELAY;
    this.outboxLimits = { ...DEFAULT_OUTBOX, ...(opts.outbox ?? {}) };
    if (!(this.outboxLimits.maxMessages >= 1) || !(this.outboxLimits.maxBytes >= 1)) throw new RangeError("outbox maxMessages and maxBytes must be >= 1");
    this.replica = new Replica(clientId, { sequenced: true });
    this.unsubscribe = this.replica.onChange((c) => this.forward(c));
  }

  // -- reading ------------------------------------------------------------------------------

  /** Committed messages the server has not acknowledged yet. */
  get unsynced(): number {
    return this.outbox.size;
  }

  /** The unacknowledged messages, in commit order. */
  unacked(): Message[] {
    return Array.from(this.outbox.values(), (e) => e.msg);
  }

  /** The visible text of the text property `path` of node `key` ("" if none). */
  text(key: string, path: string): string {
    return this.replica.graph.texts.get(textKey(key, path))?.text() ?? "";
  }

  /** The query of the next connection's URL: `client`, `format`, and `since`/`epoch` once known. */
  joinParams(): Record<string, string> {
    const q: Record<string, string> = { client: this.clientId, format: this.format };
    if (this.serverSeq !== null && this.epoch !== null) {
      q["since"] = String(this.serverSeq);
      q["epoch"] = this.epoch;
    }
    return q;
  }

  // -- draining -----------------------------------------------------------------------------

  /** Encoded frames to write, in order (drained): JSON frames are strings. */
  dataToSend(): Payload[] {
    const out = this.out;
    this.out = [];
    return out;
  }

  /** Events since the last call, in order (drained). */
  eventsReceived(): ClientRoomEvent[] {
    const ev = this.events;
    this.events = [];
    return ev;
  }

  // -- timers -------------------------------------------------------------------------------

  /** When `tick` must run next (a pending retry), or null. */
  nextDeadline(): number | null {
    let d: number | null = null;
    for (const at of this.timers.values()) if (d === null || at < d) d = at;
    return d;
  }

  /** Fire due retries (only while connected; otherwise the next `state` sends everything). */
  tick(now: number): void {
    for (const [key, at] of Array.from(this.timers)) {
      if (at > now) continue;
      this.timers.delete(key);
      if (!this.connected) continue;
      if (key === PRESENCE) {
        if (this.myPresence !== null) this.send({ mtype: "presence", state: this.myPresence });
      } else {
        const e = this.outbox.get(key.slice(RESEND.length));
        if (e !== undefined) this.send({ mtype: "crdt", msg: messageToObject(e.msg) });
      }
    }
  }

  // -- connection ---------------------------------------------------------------------------

  /** The transport ended: stop sending; frames not written yet are dropped. */
  connectionLost(): void {
    this.connected = false;
    this.out = [];
  }

  /**
   * Process one WebSocket message from the server. Throws `RemoteProtocolError` (`bad_frame`)
   * when it is not a frame of this protocol (nothing changed; the caller may log it, go on).
   */
  receiveData(data: Payload, now: number): void {
    let obj: unknown;
    try {
      obj = typeof data === "string" ? JSON.parse(data) : mpDecoder.decode(data);
    } catch (exc) {
      throw bad(`undecodable server frame: ${String((exc as Error).message ?? exc)}`);
    }
    if (!isObj(obj) || typeof obj["mtype"] !== "string") throw bad("a frame must be a map with a string 'mtype'");
    this.receiveFrame(obj, now);
  }

  private receiveFrame(f: Frame, now: number): void {
    const mtype = f["mtype"] as string;
    switch (mtype) {
      case "broadcast": {
        const seq = seqOf(f, "serverSeq", mtype);
        const msg = decodeMsg(f["msg"], "broadcast.msg");
        this.advance(seq);
        this.origin = "remote";
        this.replica.receive(msg, seq, { validate: false });
        return;
      }
      case "ack":
        this.receiveAck(strOf(f, "msgId", mtype) as string, seqOf(f, "serverSeq", mtype));
        return;
      case "state":
        this.receiveState(f, now);
        return;
      case "presence":
        this.receivePresence(f);
        return;
      case "ping":
        this.send({ mtype: "heartbeat", client: this.clientId });
        return;
      case "error":
        this.receiveError(strOf(f, "msgId", mtype, true), strOf(f, "code", mtype) as string, String(f["error"] ?? ""), now);
        return;
      case "sync-status":
        return; // this client sends no sync-check (no blake2b in browsers): nothing to match
      default:
        throw bad(`unknown mtype ${JSON.stringify(mtype).slice(0, 80)}`);
    }
  }

  // -- local intents ------------------------------------------------------------------------

  /**
   * Buffer one op and apply it optimistically (`Replica.edit`; position-based text edits are
   * turned into the wire form). Throws `CRDTValidationError` (malformed op) or `BufferFull`
   * (outbox full, policy reject); nothing changes then.
   */
  edit(op: Op | Record<string, unknown>, now: number): Op {
    this.checkRoom();
    this.origin = "local";
    return this.replica.edit(op, now * 1000);
  }

  /** Commit the edit buffer as one message into the outbox (sent when connected); null if empty. */
  commit(now: number): Message | null {
    if (this.replica.bufferSize === 0) return null;
    this.checkRoom();
    this.origin = "local";
    const msg = this.replica.commit(now * 1000);
    if (msg !== null) this.queue(msg);
    return msg;
  }

  /**
   * Undo our newest effective message; null if nothing. A non-empty edit buffer is committed
   * first, as its own message queued before the undo (which then targets it).
   */
  undo(now: number): Message | null {
    this.commit(now);
    this.checkRoom();
    this.origin = "local";
    const msg = this.replica.undo(now * 1000);
    if (msg !== null) this.queue(msg);
    return msg;
  }

  /** Redo our newest undone message; null if nothing is undone. */
  redo(now: number): Message | null {
    this.checkRoom();
    this.origin = "local";
    const msg = this.replica.redo(now * 1000);
    if (msg !== null) this.queue(msg);
    return msg;
  }

  /** Set our presence state (null clears it); announced again after every reconnect. */
  setPresence(state: unknown): void {
    this.myPresence = state === undefined ? null : state;
    this.send({ mtype: "presence", state: this.myPresence });
  }

  // -- frames -------------------------------------------------------------------------------

  private receiveAck(id: string, seq: number): void {
    this.advance(seq);
    const e = this.outbox.get(id);
    if (e !== undefined) this.remove(id);
    this.origin = "remote";
    if (this.replica.ack(id, seq) || this.replica.has(id)) return;
    if (e !== undefined) {
      // Reloaded while it was in flight: the new replica does not hold it yet.
      this.replica.receive(e.msg, seq, { validate: false });
    } else if (idOwner(id) === this.clientId && this.epoch !== null) {
      // One of ours that the outbox dropped reached the server: fetch what we lack.
      this.send({ mtype: "sync", since: Math.max(0, seq - 1), epoch: this.epoch });
    }
  }

  private receiveState(f: Frame, now: number): void {
    const seq = seqOf(f, "serverSeq", "state");
    const epoch = strOf(f, "epoch", "state") as string;
    const recovered = f["recovered"];
    if (typeof recovered !== "boolean") throw bad("state.recovered must be a boolean");
    const rawJournal = f["journal"];
    if (!Array.isArray(rawJournal)) throw bad("state.journal must be an array");
    const snapshot = f["snapshot"];
    if (snapshot !== null && snapshot !== undefined && !isObj(snapshot)) throw bad("state.snapshot must be a map or null");
    const [journal, seqs] = decodeJournal(rawJournal);
    if (recovered && epoch === this.epoch) {
      this.origin = "remote";
      this.replica.receiveMany(journal, seqs, { validate: false });
    } else {
      this.reload((snapshot ?? null) as Snapshot | null, journal, seqs, now);
    }
    this.serverSeq = seq;
    this.epoch = epoch;
    this.connected = true;
    // docs/protocol.md "Join and resume": after a state, resend every unacknowledged message.
    for (const e of this.outbox.values()) this.send({ mtype: "crdt", msg: messageToObject(e.msg) });
    if (this.myPresence !== null) this.send({ mtype: "presence", state: this.myPresence });
  }

  private reload(snapshot: Snapshot | null, journal: Message[], seqs: number[], now: number): void {
    const old = this.replica;
    // Uncommitted edits become a message, so the reload does not lose them.
    this.origin = "local";
    const pending = old.commit(now * 1000);
    if (pending !== null) this.add(pending);
    const before = new Set(old.graph.nodes.keys());
    let fresh: Replica;
    try {
      fresh = new Replica(this.clientId, snapshot !== null ? { sequenced: true, snapshot } : { sequenced: true });
      fresh.receiveMany(journal, seqs, { validate: false });
    } catch (exc) {
      if (exc instanceof CRDTValidationError) throw bad(`state.snapshot.${exc.field}: ${exc.detail}`);
      throw exc;
    }
    // Message ids are "<client>:<lt>": never reuse a Lamport time we already used.
    fresh.lt = Math.max(fresh.lt, old.lt);
    fresh.clock[this.clientId] = Math.max(old.clock[this.clientId] ?? 0, fresh.clock[this.clientId] ?? 0);
    // Own messages the server already holds are confirmed by the state itself.
    for (const id of Array.from(this.outbox.keys())) if (fresh.has(id)) this.remove(id);
    this.unsubscribe();
    this.replica = fresh;
    this.unsubscribe = fresh.onChange((c) => this.forward(c));
    this.reloads++;
    for (const k of fresh.graph.nodes.keys()) before.add(k);
    this.events.push({ type: "change", keys: before, origin: "reload" });
  }

  private receivePresence(f: Frame): void {
    const event = f["event"];
    if (event !== "sync" && event !== "join" && event !== "update" && event !== "leave") throw bad("presence.event must be sync, join, update or leave");
    const client = strOf(f, "client", "presence", true);
    const state = f["state"] ?? null;
    if (event === "sync") {
      const members = f["members"] ?? {};
      if (!isObj(members)) throw bad("presence.members must be a map");
      this.presence.clear();
      for (const [k, v] of Object.entries(members)) this.presence.set(k, v);
    } else if (client !== null) {
      if (event === "leave") this.presence.delete(client);
      else this.presence.set(client, state);
    }
    const reason = typeof f["reason"] === "string" ? (f["reason"] as string) : null;
    this.events.push({ type: "presence", event, client, state, reason, members: this.presence });
  }

  private receiveError(id: string | null, code: string, message: string, now: number): void {
    if (id === null && code === "RATE_LIMITED" && this.myPresence !== null) {
      // Any frame may be refused over the server's frame budget: a refused presence update
      // would leave the others with a stale state. Send it again after the pause.
      this.later(PRESENCE, now);
    }
    if (id !== null && this.outbox.has(id)) {
      if (code === "RATE_LIMITED") {
        this.later(RESEND + id, now);
      } else {
        this.remove(id);
        this.origin = "rejected";
        this.replica.reject(id);
      }
    }
    this.events.push({ type: "room-error", code, message, msgId: id });
  }

  // -- internals ----------------------------------------------------------------------------

  private advance(seq: number): void {
    // Acks of resends carry their original (older) seq: never move backwards.
    if (this.serverSeq === null || seq > this.serverSeq) this.serverSeq = seq;
  }

  private full(): "count" | "bytes" | null {
    const lim = this.outboxLimits;
    if (this.outbox.size >= lim.maxMessages) return "count";
    if (this.outboxBytes >= lim.maxBytes) return "bytes";
    return null;
  }

  /** Policy reject: refuse a call that would add to a full outbox (nothing changes). */
  private checkRoom(): void {
    if (this.outboxLimits.policy !== "reject") return;
    const reason = this.full();
    if (reason === null) return;
    this.events.push({ type: "overflow", reason, policy: "reject", dropped: [] });
    throw new BufferFull(reason);
  }

  private queue(msg: Message): void {
    this.add(msg);
    this.send({ mtype: "crdt", msg: messageToObject(msg) });
    if (this.outboxLimits.policy !== "drop_oldest") return;
    const lim = this.outboxLimits;
    const dropped: Message[] = [];
    let reason: "count" | "bytes" | null = null;
    while (this.outbox.size > 1 && (this.outbox.size > lim.maxMessages || this.outboxBytes > lim.maxBytes)) {
      reason ??= this.outbox.size > lim.maxMessages ? "count" : "bytes";
      const [id, e] = this.outbox.entries().next().value as [string, Entry];
      this.remove(id);
      this.origin = "rejected";
      this.replica.reject(id);
      dropped.push(e.msg);
    }
    if (reason !== null) this.events.push({ type: "overflow", reason, policy: "drop_oldest", dropped });
  }

  private add(msg: Message): void {
    const size = payloadSize(JSON.stringify(messageToObject(msg)));
    this.outbox.set(msg.id, { msg, size });
    this.outboxBytes += size;
  }

  private remove(id: string): void {
    const e = this.outbox.get(id);
    if (e === undefined) return;
    this.outbox.delete(id);
    this.outboxBytes -= e.size;
    this.timers.delete(RESEND + id);
  }

  private send(frame: Frame): void {
    // Not connected: dropped here on purpose; what matters is sent after the next state.
    if (!this.connected) return;
    this.out.push(this.format === "json" ? JSON.stringify(frame) : mpEncode(frame));
  }

  private later(key: string, now: number): void {
    if (!this.timers.has(key)) this.timers.set(key, now + this.retryDelay);
  }

  private forward(c: ReplicaChange): void {
    this.events.push({ type: "change", keys: c.keys, origin: this.origin });
  }
}
