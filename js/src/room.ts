/**
 * `RoomClient`: a member of a collaborative room (docs/protocol.md) from a page or node, with a
 * full local replica. The rules live in the sans-I/O core `ClientRoomSession`
 * (`protocol/room.ts`); this class pumps it over a `ResilientWebSocket` in `stateless` mode
 * (full-jitter backoff, heartbeat, connect timeout, token, auth probe), as the Python
 * `durasync.client.RoomClient` does. See docs/browser.md "RoomClient".
 *
 * Guarantees: edits apply optimistically at once; every committed message is kept in the
 * bounded outbox until the server acknowledges it and is sent again after every reconnect, and
 * the server dedupes by id, so it is applied exactly once; reconnects resume with
 * `since`/`epoch` (exactly the missed messages) or reload on `recovered: false`; every member
 * ends with the server's graph. Permanent failures (HTTP 401/403 learned from the auth probe,
 * close codes 1002, 1003, 1007-1010, 4400, 4401, 4403) stop reconnecting: state `failed`, with
 * the reason. In a browser, the `offline`/`online` events of the window drop the connection at
 * once and reconnect as soon as the network is back.
 */

import { encode as mpEncode } from "@msgpack/msgpack";

import { type Message, type Op } from "./crdt/messages.js";
import { type Replica } from "./crdt/replica.js";
import { type BackoffPolicy } from "./protocol/backoff.js";
import { type Payload } from "./protocol/buffer.js";
import { RemoteProtocolError } from "./protocol/errors.js";
import {
  ClientRoomSession,
  type ClientRoomEvent,
  type OutboxLimits,
  type OutboxOverflow,
  type PresenceEvent,
  type RoomChange,
  type RoomFormat,
} from "./protocol/room.js";
import { ConnectionFailed, ConnectionNotOpen, ResilientWebSocket, type ClientEvent, type ErrorEvent_ } from "./websocket.js";

/** Connection state of a room client. `connected`: the room's state of this connection is applied. */
export type RoomState = "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "failed" | "closed";

export interface RoomStateChanged {
  type: "state";
  previous: RoomState;
  current: RoomState;
  /** Why (a failure's reason, "offline", ...), or null. */
  reason: string | null;
}

/**
 * A refused frame (`source: "server"`, an `error` frame: `code` is its code, `msgId` names our
 * message) or a connection failure (`source: "connection"`: `code` is the close code or HTTP
 * status when known; `permanent` means no reconnect follows).
 */
export interface RoomErrorEvent {
  type: "error";
  source: "server" | "connection";
  code: string | number | null;
  message: string;
  msgId: string | null;
  permanent: boolean;
}

/** The number of unacknowledged messages changed (a commit, an ack, a refusal, a drop). */
export interface UnsyncedChanged {
  type: "unsynced";
  count: number;
}

export type RoomEvent = RoomChange | PresenceEvent | RoomErrorEvent | RoomStateChanged | OutboxOverflow | UnsyncedChanged;
type EventOf<T extends RoomEvent["type"]> = Extract<RoomEvent, { type: T }>;

export interface RoomClientOptions {
  /** The member's session id (default: a random one); its messages are `<clientId>:<lt>`. */
  clientId?: string;
  /** `msgpack` (binary frames, default) or `json` (text frames). */
  format?: RoomFormat;
  /** A bearer token (sent as the `token` query parameter; browsers cannot set headers). */
  token?: string | null;
  /** Asked before every (re)connect and auth probe; wins over `token`. */
  tokenProvider?: () => Promise<string | null>;
  /** Reconnect delays (full jitter; seconds). */
  backoff?: Partial<BackoffPolicy>;
  /** Seconds for one connection attempt (open + upgrade). */
  connectTimeout?: number;
  /** Seconds between heartbeats (null: none). */
  heartbeatInterval?: number | null;
  /** Nothing received this long after a heartbeat: the connection is dead (must exceed the server's ping interval, 15 s by default). */
  heartbeatTimeout?: number | null;
  outbox?: Partial<OutboxLimits>;
  /** Seconds before a rate-limited frame is sent again. */
  retryDelay?: number;
  /** Follow the window's `online`/`offline` events (default: true where they exist). */
  watchNetwork?: boolean;
  /** Wall clock in seconds (message timestamps, retries). */
  clock?: () => number;
  /** Random source in [0, 1) for the backoff jitter. */
  rng?: () => number;
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

function randomId(): string {
  const c = globalThis.crypto;
  if (c !== undefined && typeof c.randomUUID === "function") return c.randomUUID().replace(/-/g, "");
  return Math.random().toString(36).slice(2) + Date.now().toString(36);
}

/** `ws(s)://host[:port][/prefix]` from an `http(s)://` or `ws(s)://` base URL. */
function wsBase(url: string): string {
  const u = url.replace(/\/+$/, "");
  if (u.startsWith("http://")) return "ws://" + u.slice(7);
  if (u.startsWith("https://")) return "wss://" + u.slice(8);
  if (u.startsWith("ws://") || u.startsWith("wss://")) return u;
  throw new TypeError(`server URL must start with http(s):// or ws(s)://: ${url}`);
}

function httpBase(ws: string): string {
  return ws.startsWith("wss://") ? "https://" + ws.slice(6) : "http://" + ws.slice(5);
}

interface Waiter {
  done: () => boolean;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** One member of room `room` on the server at `url` (see the module docs). */
export class RoomClient {
  /** Server base URLs (ws:// form), in failover order: every reconnect moves to the next. */
  readonly urls: string[];
  readonly room: string;
  readonly clientId: string;
  /** The sans-I/O core (read-only use: the pump feeds it). */
  readonly session: ClientRoomSession;
  private urlIndex = 0;
  private attempts = 0;
  private ws: ResilientWebSocket;
  private _state: RoomState = "idle";
  private _failure: ConnectionFailed | null = null;
  private lastError: string | null = null;
  private listeners = new Map<string, Set<(ev: RoomEvent) => void>>();
  private waiters: Waiter[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt: number | null = null;
  private readonly clock: () => number;
  private offline = false;
  private lastUnsynced = 0;
  private unwatch: (() => void) | null = null;

  constructor(url: string | string[], room: string, opts: RoomClientOptions = {}) {
    const urls = (Array.isArray(url) ? url : [url]).map(wsBase);
    if (urls.length === 0) throw new TypeError("need at least one server url");
    if (!room) throw new TypeError("room must be a non-empty name");
    this.urls = urls;
    this.room = room;
    this.clientId = opts.clientId ?? randomId();
    this.clock = opts.clock ?? (() => Date.now() / 1000);
    this.session = new ClientRoomSession(this.clientId, {
      format: opts.format ?? "msgpack",
      ...(opts.retryDelay !== undefined ? { retryDelay: opts.retryDelay } : {}),
      ...(opts.outbox !== undefined ? { outbox: opts.outbox } : {}),
    });
    const fmt = this.session.format;
    const heartbeat: Payload = fmt === "json" ? JSON.stringify({ mtype: "heartbeat", client: this.clientId }) : mpEncode({ mtype: "heartbeat", client: this.clientId });
    const token = opts.token ?? null;
    const tokenProvider = opts.tokenProvider ?? (token !== null ? async () => token : undefined);
    this.ws = new ResilientWebSocket(null, {
      options: {
        reconnect: "stateless",
        backoff: opts.backoff ?? {},
        connectTimeout: opts.connectTimeout ?? 10,
        pingInterval: opts.heartbeatInterval === undefined ? 15 : opts.heartbeatInterval,
        pingTimeout: opts.heartbeatTimeout === undefined ? 30 : opts.heartbeatTimeout,
        heartbeatMessage: heartbeat,
        // Frames are written only while the room state of the connection is applied; anything
        // caught in a drop is sent again after the next state, so stale frames may go.
        buffer: { maxMessages: 1000, maxBytes: 4 << 20, maxAge: null, policy: "drop_oldest" },
        authProbe: () => `${httpBase(this.urls[this.urlIndex] as string)}/v1/rooms/${encodeURIComponent(this.room)}/journal`,
        authProbeMethod: "HEAD",
      },
      negotiate: async () => this.target(),
      ...(tokenProvider !== undefined ? { tokenProvider } : {}),
      ...(opts.rng !== undefined ? { rng: opts.rng } : {}),
      ...(opts.WebSocket !== undefined ? { WebSocket: opts.WebSocket } : {}),
      ...(opts.fetch !== undefined ? { fetch: opts.fetch } : {}),
    });
    this.ws.on("*", (ev) => this.onTransport(ev));
    const win = globalThis as unknown as { addEventListener?: (t: string, cb: () => void) => void; removeEventListener?: (t: string, cb: () => void) => void; navigator?: { onLine?: boolean } };
    if ((opts.watchNetwork ?? true) && typeof win.addEventListener === "function" && typeof win.removeEventListener === "function") {
      const off = (): void => this.networkChanged(false);
      const on = (): void => this.networkChanged(true);
      win.addEventListener("offline", off);
      win.addEventListener("online", on);
      this.offline = win.navigator?.onLine === false;
      this.unwatch = () => {
        win.removeEventListener?.("offline", off);
        win.removeEventListener?.("online", on);
      };
    }
  }

  // -- lifecycle ----------------------------------------------------------------------------

  /**
   * Connect and wait for the room's state (the replica is loaded when this resolves). Edits
   * made before are kept and sent then. Rejects with `ConnectionFailed` (permanent failure:
   * `reason` says why) or `ConnectionNotOpen` (closed).
   */
  async join(): Promise<void> {
    if (this._state === "closed") throw new ConnectionNotOpen("closed");
    if (this._state === "idle" || this._state === "failed") {
      this._failure = null;
      this.setState(this.offline ? "offline" : "connecting", null);
      this.ws.connect().catch(() => undefined); // the outcome arrives as state events
    }
    await this.waitFor(() => this.session.connected);
  }

  /**
   * Leave the room: wait up to `grace` seconds for the outbox to drain, then close. Messages
   * still unacknowledged stay in `unacked()`. Idempotent.
   */
  async close(grace = 2): Promise<void> {
    if (this._state === "closed") return;
    if (this.session.connected && this.session.unsynced > 0) {
      let t: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.synced().catch(() => undefined), new Promise<void>((r) => (t = setTimeout(r, grace * 1000)))]);
      clearTimeout(t);
    }
    this.unwatch?.();
    this.unwatch = null;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.session.connectionLost();
    await this.ws.close(0.5);
    this.setState("closed", null);
  }

  // -- reading ------------------------------------------------------------------------------

  get state(): RoomState {
    return this._state;
  }

  /** Why the client failed (state `failed`), else null. */
  get failure(): ConnectionFailed | null {
    return this._failure;
  }

  /** The member's replica (replaced when a `recovered: false` state reloads it). */
  get replica(): Replica {
    return this.session.replica;
  }

  /** Connected, and the room state of this connection applied. */
  get connected(): boolean {
    return this.session.connected;
  }

  /** Committed messages the server has not acknowledged yet. */
  get unsynced(): number {
    return this.session.unsynced;
  }

  /** The unacknowledged messages, in commit order. */
  unacked(): Message[] {
    return this.session.unacked();
  }

  /** Last serverSeq received (the resume position). */
  get serverSeq(): number | null {
    return this.session.serverSeq;
  }

  get epoch(): string | null {
    return this.session.epoch;
  }

  /** Presence state of every member present (client id -> state). */
  get presence(): ReadonlyMap<string, unknown> {
    return this.session.presence;
  }

  /** Canonical JSON of the visible graph (docs/crdt.md). */
  dump(opts: { live?: boolean; withMeta?: boolean } = {}): string {
    return this.session.replica.dump(opts);
  }

  /** The visible text of text property `path` of node `key` ("" if none). */
  text(key: string, path: string): string {
    return this.session.text(key, path);
  }

  /**
   * Resolve when connected and every committed message is acknowledged (durable). Uncommitted
   * edits are not waited for: `commit()` first. Rejects once the client failed or closed.
   */
  synced(): Promise<void> {
    return this.waitFor(() => this.session.connected && this.session.unsynced === 0);
  }

  // -- events -------------------------------------------------------------------------------

  /** Subscribe to `change`, `presence`, `error`, `state`, `unsynced` or `overflow`; returns an unsubscribe. */
  on<T extends RoomEvent["type"]>(type: T, cb: (ev: EventOf<T>) => void): () => void {
    let set = this.listeners.get(type);
    if (set === undefined) this.listeners.set(type, (set = new Set()));
    const f = cb as (ev: RoomEvent) => void;
    set.add(f);
    return () => set.delete(f);
  }

  // -- editing ------------------------------------------------------------------------------

  /**
   * Buffer one op and apply it optimistically. Throws `CRDTValidationError` (malformed op; a
   * position-based text edit of a missing node) or `BufferFull` (outbox full, policy reject).
   */
  edit(op: Op | Record<string, unknown>): Op {
    try {
      return this.session.edit(op, this.clock());
    } finally {
      this.pump();
    }
  }

  /** Commit the edit buffer as one message and send it (or keep it until connected); null if empty. */
  commit(): Message | null {
    try {
      return this.session.commit(this.clock());
    } finally {
      this.pump();
    }
  }

  /** Undo our newest effective message (uncommitted edits are committed and sent first); null if nothing. */
  undo(): Message | null {
    try {
      return this.session.undo(this.clock());
    } finally {
      this.pump();
    }
  }

  /** Redo our newest undone message; null if nothing is undone. */
  redo(): Message | null {
    try {
      return this.session.redo(this.clock());
    } finally {
      this.pump();
    }
  }

  /** Insert `text` at code point `position` of text property `path` of node `key` (buffered). */
  insertText(key: string, path: string, position: number, text: string): Op {
    return this.edit({ ot: "text.insert", key, path, position, value: text });
  }

  /** Delete `length` code points at `position` (buffered). */
  deleteText(key: string, path: string, position: number, length: number): Op {
    return this.edit({ ot: "text.delete", key, path, position, length });
  }

  /** Replace `length` code points at `position` by `text` (buffered). */
  replaceText(key: string, path: string, position: number, length: number, text: string): Op {
    return this.edit({ ot: "text.replace", key, path, position, length, value: text });
  }

  /** Set our presence state (null clears it); announced again after every reconnect. */
  setPresence(state: unknown): void {
    this.session.setPresence(state);
    this.pump();
  }

  // -- the pump -----------------------------------------------------------------------------

  private target(): string {
    if (this.offline) {
      // No attempt while the browser says it has no network: the `online` event retries.
      const err = new Error("the browser is offline");
      err.name = "NetworkError";
      throw err;
    }
    // Called before every (re)connect attempt: any call after the first follows a drop or a
    // failed attempt, so it moves to the next server (a dead node's clients fail over).
    if (this.attempts > 0 && this.urls.length > 1) this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    this.attempts++;
    const q = new URLSearchParams(this.session.joinParams());
    return `${this.urls[this.urlIndex] as string}/v1/rooms/${encodeURIComponent(this.room)}?${q.toString()}`;
  }

  private onTransport(ev: ClientEvent): void {
    if (ev.type === "message") {
      try {
        this.session.receiveData(ev.data, this.clock());
      } catch (err) {
        if (!(err instanceof RemoteProtocolError)) throw err;
        console.warn(`durasync room ${this.room}: ignored a frame: ${err.message}`);
      }
    } else if (ev.type === "state") {
      if (ev.current !== "connected") this.session.connectionLost();
      if (ev.current === "failed") {
        const failure = new ConnectionFailed(this.lastError ?? "failed", true);
        this._failure = failure;
        this.setState("failed", failure.reason);
      } else if (ev.current === "reconnecting") {
        this.setState(this.offline ? "offline" : "reconnecting", this.offline ? "the browser is offline" : this.lastError);
      }
    } else if (ev.type === "error") {
      this.transportError(ev);
    }
    this.pump();
  }

  private transportError(ev: ErrorEvent_): void {
    this.lastError = ev.reason;
    this.emit({ type: "error", source: "connection", code: ev.code, message: ev.reason, msgId: null, permanent: ev.permanent });
  }

  private networkChanged(online: boolean): void {
    this.offline = !online;
    if (this._state === "closed" || this._state === "failed" || this._state === "idle") return;
    if (!online) {
      this.ws.drop("the browser went offline");
      this.session.connectionLost();
      this.setState("offline", "the browser is offline");
    } else {
      if (this._state === "offline") this.setState("reconnecting", "the network is back");
      this.ws.retryNow();
    }
    this.pump();
  }

  /** Deliver the core's events, write its frames, arm its next timer, settle waiters. */
  private pump(): void {
    const s = this.session;
    if (s.connected && this._state !== "connected" && this._state !== "closed") this.setState("connected", null);
    for (const ev of s.eventsReceived()) this.deliver(ev);
    if (s.unsynced !== this.lastUnsynced) {
      this.lastUnsynced = s.unsynced;
      this.emit({ type: "unsynced", count: s.unsynced });
    }
    for (const data of s.dataToSend()) {
      if (!s.connected) break; // dropped: what matters is sent again after the next state
      try {
        this.ws.send(data);
      } catch {
        break; // closed or failed meanwhile
      }
    }
    const d = s.nextDeadline();
    if (d !== this.timerAt) {
      clearTimeout(this.timer);
      this.timerAt = d;
      this.timer =
        d === null
          ? undefined
          : setTimeout(
              () => {
                this.timerAt = null;
                s.tick(this.clock());
                this.pump();
              },
              Math.max(0, d - this.clock()) * 1000,
            );
    }
    this.settle();
  }

  private deliver(ev: ClientRoomEvent): void {
    if (ev.type === "room-error") {
      this.emit({ type: "error", source: "server", code: ev.code, message: ev.message, msgId: ev.msgId, permanent: false });
    } else {
      this.emit(ev);
    }
  }

  private setState(current: RoomState, reason: string | null): void {
    const previous = this._state;
    if (previous === current) return;
    this._state = current;
    this.emit({ type: "state", previous, current, reason });
    this.settle();
  }

  private emit(ev: RoomEvent): void {
    const set = this.listeners.get(ev.type);
    if (set === undefined) return;
    for (const cb of Array.from(set)) {
      try {
        cb(ev);
      } catch (err) {
        console.error("durasync room listener failed", err);
      }
    }
  }

  private waitFor(done: () => boolean): Promise<void> {
    if (done()) return Promise.resolve();
    if (this._state === "closed") return Promise.reject(new ConnectionNotOpen("closed"));
    if (this._state === "failed") return Promise.reject(this._failure ?? new ConnectionFailed("failed", true));
    return new Promise((resolve, reject) => this.waiters.push({ done, resolve, reject }));
  }

  private settle(): void {
    if (this.waiters.length === 0) return;
    const dead = this._state === "closed" || this._state === "failed";
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.done()) w.resolve();
      else if (dead) w.reject(this._state === "closed" ? new ConnectionNotOpen("closed") : (this._failure ?? new ConnectionFailed("failed", true)));
      else keep.push(w);
    }
    this.waiters = keep;
  }
}
