/**
 * A bounded outgoing buffer (count, bytes, age) with an explicit overflow policy (a port of
 * `durasync.protocol.buffer`). `reject`: `push` throws `BufferFull` and nothing is queued;
 * `drop_oldest`: the oldest messages are evicted and reported. Messages older than `maxAge`
 * seconds are evicted by `expire` (reason `age`). Every drop is an `Overflow` event.
 */

import { BufferFull } from "./errors.js";

export type Payload = string | Uint8Array;

export interface BufferLimits {
  maxMessages: number;
  maxBytes: number;
  /** Seconds a message may wait; null = forever. */
  maxAge: number | null;
  policy: "reject" | "drop_oldest";
}

export const DEFAULT_BUFFER: Readonly<BufferLimits> = Object.freeze({ maxMessages: 1000, maxBytes: 1 << 20, maxAge: 60, policy: "reject" });

/** Messages dropped from a buffer, oldest first, and why (`count`, `bytes`, `age`, `closed`). */
export interface Overflow {
  type: "overflow";
  dropped: Payload[];
  reason: string;
}

const encoder = new TextEncoder();

/** Size in bytes on the wire (UTF-8 for text). */
export function payloadSize(p: Payload): number {
  return typeof p === "string" ? encoder.encode(p).length : p.byteLength;
}

interface Item {
  payload: Payload;
  size: number;
  at: number;
}

export class OutgoingBuffer {
  readonly limits: BufferLimits;
  private items: Item[] = [];
  private head = 0;
  private _bytes = 0;
  private events: Overflow[] = [];

  constructor(limits: Partial<BufferLimits> = {}) {
    this.limits = { ...DEFAULT_BUFFER, ...limits };
    if (this.limits.maxMessages < 1 || this.limits.maxBytes < 1) throw new RangeError("maxMessages and maxBytes must be >= 1");
  }

  get length(): number {
    return this.items.length - this.head;
  }

  get bytes(): number {
    return this._bytes;
  }

  /** Append; throws `BufferFull` (policy reject, or a message larger than `maxBytes`). */
  push(payload: Payload, now: number): void {
    const size = payloadSize(payload);
    const lim = this.limits;
    if (size > lim.maxBytes) throw new BufferFull("too_large");
    const overCount = this.length + 1 > lim.maxMessages;
    const overBytes = this._bytes + size > lim.maxBytes;
    if (overCount || overBytes) {
      if (lim.policy === "reject") throw new BufferFull(overCount ? "count" : "bytes");
      const dropped: Payload[] = [];
      while (this.length > 0 && (this.length + 1 > lim.maxMessages || this._bytes + size > lim.maxBytes)) dropped.push(this.popItem().payload);
      this.events.push({ type: "overflow", dropped, reason: overCount ? "count" : "bytes" });
    }
    this.items.push({ payload, size, at: now });
    this._bytes += size;
  }

  peek(): Payload | null {
    return this.length > 0 ? (this.items[this.head] as Item).payload : null;
  }

  pop(): Payload {
    if (this.length === 0) throw new RangeError("buffer is empty");
    return this.popItem().payload;
  }

  /** Drop messages older than `maxAge` (one `Overflow` event, reason `age`). */
  expire(now: number): void {
    const maxAge = this.limits.maxAge;
    if (maxAge === null) return;
    const dropped: Payload[] = [];
    while (this.length > 0 && now - (this.items[this.head] as Item).at >= maxAge) dropped.push(this.popItem().payload);
    if (dropped.length > 0) this.events.push({ type: "overflow", dropped, reason: "age" });
  }

  /** When the oldest message expires, or null. */
  nextExpiry(): number | null {
    if (this.limits.maxAge === null || this.length === 0) return null;
    return (this.items[this.head] as Item).at + this.limits.maxAge;
  }

  /** Remove and return everything, oldest first (no event). */
  clear(): Payload[] {
    const out = this.items.slice(this.head).map((i) => i.payload);
    this.items = [];
    this.head = 0;
    this._bytes = 0;
    return out;
  }

  /** Overflow events since the last call (drained). */
  drainEvents(): Overflow[] {
    const ev = this.events;
    this.events = [];
    return ev;
  }

  private popItem(): Item {
    const it = this.items[this.head] as Item;
    this.items[this.head] = undefined as unknown as Item;
    this.head++;
    if (this.head > 64 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    this._bytes -= it.size;
    return it;
  }
}
