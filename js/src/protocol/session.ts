/**
 * Stateful reconnect: the client end of the reliable session (sans-I/O), speaking the same
 * frames as `durasync.protocol.session.ReliableSession` and `durasync.endpoints.ReliableHub`
 * (docs/client.md "The reliable-session protocol").
 *
 * Each side numbers its messages 1, 2, 3... per session and keeps them in a bounded replay
 * buffer until acknowledged; a receiver delivers seq `last + 1` only, drops duplicates, and
 * treats a gap as a protocol violation. After a reconnect: `hello(session, last_seen)` ->
 * `welcome(session, last_seen, resumed)`, both sides replay what the other has not seen. A
 * server that lost the session answers `resumed: false`: unacknowledged messages are
 * renumbered and sent again, and `SessionOpened.resumed` is false. `ping`/`pong` are the
 * heartbeat (browsers cannot send WebSocket pings). Nothing here reads a clock.
 */

import { decode as mpDecode, encode as mpEncode } from "@msgpack/msgpack";

import { payloadSize, type Payload } from "./buffer.js";
import { BufferFull, LocalProtocolError, RemoteProtocolError } from "./errors.js";

export type Encoding = "json" | "msgpack";

export interface SessionLimits {
  maxUnackedMessages: number;
  maxUnackedBytes: number;
  ackEvery: number;
  /** Seconds after the first unacknowledged message before an ack goes out. */
  ackInterval: number;
}

export const DEFAULT_SESSION: Readonly<SessionLimits> = Object.freeze({ maxUnackedMessages: 1000, maxUnackedBytes: 1 << 20, ackEvery: 16, ackInterval: 0.5 });

/** A connection attached to the session; `resumed` false = a new session (say so). */
export interface SessionOpened {
  type: "session";
  sessionId: string;
  resumed: boolean;
  replayed: number;
  previousSession: string | null;
}

export type SessionEvent =
  | { type: "message"; payload: Payload; seq: number }
  | SessionOpened
  | { type: "peer-closed" }
  | { type: "peer-error"; code: string; message: string; permanent: boolean }
  | { type: "pong"; id: number };

type Frame = Record<string, unknown> & { t: string };

const MAX_SEQ = 2 ** 53 - 1;
const base64 = {
  encode(b: Uint8Array): string {
    let s = "";
    for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i] as number);
    return btoa(s);
  },
  decode(s: string): Uint8Array {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  },
};

function bad(message: string): RemoteProtocolError {
  return new RemoteProtocolError("bad_frame", message);
}

function seqField(f: Frame, name: string, dflt?: number): number {
  const v = f[name];
  if (v === undefined && dflt !== undefined) return dflt;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_SEQ) throw bad(`${f.t}.${name} must be an integer in 0..2^53-1`);
  return v;
}

/** Encodes and decodes frames: JSON text messages or msgpack binary messages. */
export class FrameCodec {
  constructor(readonly encoding: Encoding = "json") {}

  encode(frame: Frame): Payload {
    if (this.encoding === "json") {
      const f: Record<string, unknown> = { ...frame };
      if (f["data"] instanceof Uint8Array) f["data"] = base64.encode(f["data"]);
      return JSON.stringify(f);
    }
    return mpEncode(frame);
  }

  /** Parse one WebSocket message; throws `RemoteProtocolError` (`bad_frame`). */
  decode(data: Payload): Frame {
    let obj: unknown;
    try {
      if (this.encoding === "json") {
        if (typeof data !== "string") throw bad("binary message on a JSON session");
        obj = JSON.parse(data);
      } else {
        if (typeof data === "string") throw bad("text message on a msgpack session");
        obj = mpDecode(data);
      }
    } catch (exc) {
      if (exc instanceof RemoteProtocolError) throw exc;
      throw bad(String((exc as Error).message ?? exc));
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj) || typeof (obj as Frame).t !== "string") throw bad("frame must be a map with 't'");
    const f = obj as Frame;
    switch (f.t) {
      case "hello":
      case "bye":
        return f;
      case "welcome":
        if (typeof f["session"] !== "string" || !f["session"] || (f["session"] as string).length > 128) throw bad("welcome.session must be a string of 1-128 characters");
        if (f["resumed"] !== undefined && typeof f["resumed"] !== "boolean") throw bad("welcome.resumed must be a boolean");
        return { t: "welcome", session: f["session"], last_seen: seqField(f, "last_seen", 0), resumed: f["resumed"] === true };
      case "msg": {
        const seq = seqField(f, "seq");
        const text = f["text"] ?? null;
        let d = f["data"] ?? null;
        if (this.encoding === "json" && typeof d === "string") d = base64.decode(d);
        if ((text === null) === (d === null)) throw bad("msg needs exactly one of text/data");
        if (text !== null && typeof text !== "string") throw bad("msg.text must be a string");
        if (d !== null && !(d instanceof Uint8Array)) throw bad("msg.data must be bytes");
        return text !== null ? { t: "msg", seq, text } : { t: "msg", seq, data: d };
      }
      case "ack":
        return { t: "ack", seq: seqField(f, "seq") };
      case "ping":
      case "pong":
        return { t: f.t, id: seqField(f, "id", 0) };
      case "error":
        if (typeof f["code"] !== "string") throw bad("error.code must be a string");
        return { t: "error", code: f["code"], message: typeof f["message"] === "string" ? f["message"] : "", permanent: f["permanent"] !== false };
      default:
        throw bad(`unknown frame type ${JSON.stringify(f.t)}`);
    }
  }
}

interface Sent {
  seq: number;
  payload: Payload;
  size: number;
}

/**
 * The client end of a reliable session. After each `receiveData`/`sendMessage`/`tick`/
 * `connectionMade`, write every `dataToSend()` item in order and process
 * `eventsReceived()`; call `tick` by `nextDeadline()`; `connectionLost` when the transport ends.
 */
export class ReliableSession {
  sessionId: string | null = null;
  attached = false;
  closed = false;
  lastSent = 0;
  lastReceived = 0;
  duplicatesDropped = 0;
  readonly codec: FrameCodec;
  readonly limits: SessionLimits;
  private unackedItems: Sent[] = [];
  private unackedSize = 0;
  private pendingAck = 0;
  private pendingSince = 0;
  private helloSent = false;
  private out: Payload[] = [];
  private events: SessionEvent[] = [];

  constructor(encoding: Encoding = "json", limits: Partial<SessionLimits> = {}) {
    this.codec = new FrameCodec(encoding);
    this.limits = { ...DEFAULT_SESSION, ...limits };
  }

  dataToSend(): Payload[] {
    const o = this.out;
    this.out = [];
    return o;
  }

  eventsReceived(): SessionEvent[] {
    const e = this.events;
    this.events = [];
    return e;
  }

  get unacked(): number {
    return this.unackedItems.length;
  }

  get unackedBytes(): number {
    return this.unackedSize;
  }

  unackedPayloads(): Payload[] {
    return this.unackedItems.map((i) => i.payload);
  }

  hasRoom(payload: Payload): boolean {
    return this.unackedItems.length < this.limits.maxUnackedMessages && this.unackedSize + payloadSize(payload) <= this.limits.maxUnackedBytes;
  }

  /** Number `payload`, keep it until acked, send it if attached; throws `BufferFull`. */
  sendMessage(payload: Payload): number {
    if (this.closed) throw new LocalProtocolError("session is closed");
    if (!this.hasRoom(payload)) throw new BufferFull(payloadSize(payload) > this.limits.maxUnackedBytes ? "too_large" : "replay");
    this.lastSent++;
    const item = { seq: this.lastSent, payload, size: payloadSize(payload) };
    this.unackedItems.push(item);
    this.unackedSize += item.size;
    if (this.attached) this.out.push(this.encodeMsg(item));
    return item.seq;
  }

  sendBye(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.attached) this.emit({ t: "bye" });
  }

  /** Queue a heartbeat `ping` (attached sessions only). */
  sendPing(id: number): void {
    if (this.attached) this.emit({ t: "ping", id });
  }

  /** A new transport is open: queue `hello`. */
  connectionMade(): void {
    if (this.closed) throw new LocalProtocolError("connectionMade on a closed session");
    this.attached = false;
    this.out = [];
    const hello: Frame = { t: "hello", v: 1, last_seen: this.lastReceived };
    if (this.sessionId !== null) hello["session"] = this.sessionId;
    this.emit(hello);
    this.helloSent = true;
  }

  connectionLost(): void {
    this.attached = false;
    this.helloSent = false;
    this.out = [];
    this.pendingAck = 0;
  }

  /** Process one WebSocket message; throws `RemoteProtocolError` (close 1002, no retry). */
  receiveData(data: Payload, now: number): void {
    const f = this.codec.decode(data);
    if (f.t === "error") {
      this.events.push({ type: "peer-error", code: f["code"] as string, message: f["message"] as string, permanent: f["permanent"] as boolean });
      return;
    }
    if (!this.attached) {
      if (f.t === "welcome" && this.helloSent) {
        this.receiveWelcome(f);
        return;
      }
      throw new RemoteProtocolError("unexpected_frame", `${f.t} before welcome`);
    }
    switch (f.t) {
      case "msg":
        this.receiveMsg(f, now);
        return;
      case "ack": {
        const seq = f["seq"] as number;
        this.checkAck(seq);
        this.release(seq);
        return;
      }
      case "bye":
        this.closed = true;
        this.events.push({ type: "peer-closed" });
        return;
      case "ping":
        this.emit({ t: "pong", id: f["id"] as number });
        return;
      case "pong":
        this.events.push({ type: "pong", id: f["id"] as number });
        return;
      default:
        throw new RemoteProtocolError("unexpected_frame", `${f.t} mid-session`);
    }
  }

  nextDeadline(): number | null {
    return this.pendingAck && this.attached ? this.pendingSince + this.limits.ackInterval : null;
  }

  tick(now: number): void {
    if (this.pendingAck && this.attached && now >= this.pendingSince + this.limits.ackInterval) this.sendAck();
  }

  private emit(f: Frame): void {
    this.out.push(this.codec.encode(f));
  }

  private encodeMsg(item: Sent): Payload {
    const p = item.payload;
    return this.codec.encode(typeof p === "string" ? { t: "msg", seq: item.seq, text: p } : { t: "msg", seq: item.seq, data: p });
  }

  private attach(peerLastSeen: number): number {
    this.release(peerLastSeen);
    this.attached = true;
    for (const it of this.unackedItems) this.out.push(this.encodeMsg(it));
    if (this.closed) this.emit({ t: "bye" });
    return this.unackedItems.length;
  }

  private checkAck(seq: number): void {
    if (seq > this.lastSent) throw new RemoteProtocolError("ack_from_future", `peer acknowledged ${seq} but we sent only ${this.lastSent}`);
  }

  private release(seq: number): void {
    let i = 0;
    while (i < this.unackedItems.length && (this.unackedItems[i] as Sent).seq <= seq) {
      this.unackedSize -= (this.unackedItems[i] as Sent).size;
      i++;
    }
    if (i > 0) this.unackedItems.splice(0, i);
  }

  private receiveWelcome(w: Frame): void {
    const previous = this.sessionId;
    const session = w["session"] as string;
    if (w["resumed"] === true) {
      if (previous === null || session !== previous) throw new RemoteProtocolError("bad_resume", "welcome resumed a session we did not ask for");
      this.checkAck(w["last_seen"] as number);
      const replayed = this.attach(w["last_seen"] as number);
      this.events.push({ type: "session", sessionId: session, resumed: true, replayed, previousSession: null });
      return;
    }
    this.sessionId = session;
    this.lastReceived = 0;
    const pending = this.unackedItems.map((i) => i.payload);
    this.unackedItems = [];
    this.unackedSize = 0;
    this.lastSent = 0;
    for (const p of pending) {
      this.lastSent++;
      this.unackedItems.push({ seq: this.lastSent, payload: p, size: payloadSize(p) });
      this.unackedSize += payloadSize(p);
    }
    const replayed = this.attach(0);
    const lost = previous !== null && previous !== session ? previous : null;
    this.events.push({ type: "session", sessionId: session, resumed: false, replayed, previousSession: lost });
  }

  private receiveMsg(m: Frame, now: number): void {
    const seq = m["seq"] as number;
    if (seq <= this.lastReceived) {
      this.duplicatesDropped++;
      return;
    }
    if (seq !== this.lastReceived + 1) throw new RemoteProtocolError("seq_gap", `expected seq ${this.lastReceived + 1}, got ${seq}`);
    this.lastReceived = seq;
    const payload = (m["text"] as string | undefined) ?? (m["data"] as Uint8Array);
    this.events.push({ type: "message", payload, seq });
    if (this.pendingAck === 0) this.pendingSince = now;
    this.pendingAck++;
    if (this.pendingAck >= this.limits.ackEvery) this.sendAck();
  }

  private sendAck(): void {
    this.emit({ t: "ack", seq: this.lastReceived });
    this.pendingAck = 0;
  }
}
