/**
 * `ResilientWebSocket`: a browser (and node) WebSocket that reconnects, buffers and resumes,
 * with the states, backoff, bounded buffer, heartbeat and reconnect modes of the Python
 * `durasync.client.ResilientWebSocket`, speaking the same stateful-reconnect wire as
 * `ReliableSession` (docs/client.md, docs/browser.md).
 *
 * Reconnect modes:
 * - `"none"`: one connection; a drop moves to `disconnected`. Messages sent while not
 *   connected wait in the buffer until an explicit `connect()`.
 * - `"stateless"`: reconnect with backoff; messages sent while disconnected are buffered
 *   (bounded) and sent after the reconnect; a message in flight when the connection drops may
 *   be lost.
 * - `"stateful"` (default): the reliable session: no loss, no duplicates, order kept, both
 *   ways, across drops, while the server keeps the session; if it does not, a `session`
 *   event with `resumed: false` says so.
 *
 * Dropped messages are always reported (`overflow` events). Failures are transient (retry
 * after a backoff delay) or permanent (stop in `failed`, with the reason): a session `error`
 * frame marked permanent, a protocol violation, permanent close codes (1002, 1003, 1007-1010,
 * 4400, 4401, 4403, 4404), and HTTP 401/403 -- which a browser cannot see on a refused upgrade, so
 * it is learned from `authProbe` (an HTTP URL fetched after a connection fails before opening)
 * or from `negotiate` (an `HttpError`). Browsers cannot send WebSocket pings: the heartbeat
 * is the session's `ping`/`pong` frames (stateful) or `heartbeatMessage` (other modes).
 */

import { Backoff, backoffPolicy, type BackoffPolicy } from "./protocol/backoff.js";
import { OutgoingBuffer, type BufferLimits, type Overflow, type Payload } from "./protocol/buffer.js";
import { BufferFull, RemoteProtocolError, classifyCloseCode, classifyHttpStatus, type Classification } from "./protocol/errors.js";
import { ReliableSession, type Encoding, type SessionLimits, type SessionOpened } from "./protocol/session.js";
import { ConnectionStateMachine, type ConnectionState, type StateChanged, type Trigger } from "./protocol/state.js";

export type ReconnectMode = "none" | "stateless" | "stateful";

/** An HTTP failure (from `negotiate` or the auth probe), classified by its status. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message = `HTTP ${status}`,
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** The connection is closed, closing or failed (for `send`/`connect`). */
export class ConnectionNotOpen extends Error {
  constructor(state: string) {
    super(`connection is ${state}`);
    this.name = "ConnectionNotOpen";
  }
}

/** The connection reached `failed` (or `disconnected` in mode "none"); `reason` says why. */
export class ConnectionFailed extends Error {
  constructor(
    readonly reason: string,
    readonly permanent: boolean,
    override readonly cause?: unknown,
  ) {
    super(reason);
    this.name = "ConnectionFailed";
  }
}

/** The server sent a session `error` frame (e.g. `busy`), or refused the handshake. */
export class PeerErrorFrame extends Error {
  constructor(
    readonly code: string,
    readonly detail: string,
    readonly permanent: boolean,
  ) {
    super(`${code}: ${detail}`);
    this.name = "PeerErrorFrame";
  }
}

/** The WebSocket closed (`code` 1006 when there was no close frame). */
export class ConnectionClosed extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
  ) {
    super(`closed with code ${code}${reason ? ` (${reason})` : ""}`);
    this.name = "ConnectionClosed";
  }
}

export interface MessageEvent_ {
  type: "message";
  data: Payload;
}

/** A failure; `permanent` means no reconnect follows (state `failed`). */
export interface ErrorEvent_ {
  type: "error";
  error: Error;
  permanent: boolean;
  reason: string;
  /** The code of a session `error` frame or of the WebSocket close, when there is one. */
  code: string | number | null;
}

export type ClientEvent = StateChanged | MessageEvent_ | Overflow | ErrorEvent_ | SessionOpened;

export interface ResilientOptions {
  reconnect: ReconnectMode;
  backoff: Partial<BackoffPolicy>;
  /** Seconds for negotiate + token + open + session handshake, per attempt. */
  connectTimeout: number;
  /** Heartbeat period in seconds (null = none). */
  pingInterval: number | null;
  /** Nothing received this long after a heartbeat: the connection is dead, reconnect. */
  pingTimeout: number | null;
  /** Modes none/stateless: the application-level heartbeat payload (null = no heartbeat). */
  heartbeatMessage: Payload | null;
  /** Bound on the graceful close (flush, acks, bye). */
  closeTimeout: number;
  buffer: Partial<BufferLimits>;
  session: Partial<SessionLimits>;
  encoding: Encoding;
  /** Events kept for `events()` before the oldest are dropped (listeners get every event). */
  eventQueueSize: number;
  /** Query parameter that carries the token from `tokenProvider` (browsers cannot set headers). */
  tokenParam: string;
  /**
   * HTTP URL fetched after a connection fails before opening: 401/403 = permanent failure
   * (a function is asked before each probe, e.g. to follow the URL of the current server).
   */
  authProbe: string | (() => string | null) | null;
  /** HTTP method of the auth probe (`HEAD` when the URL answers HEAD: no body to download). */
  authProbeMethod: "GET" | "HEAD";
}

export const DEFAULT_OPTIONS: Readonly<ResilientOptions> = Object.freeze({
  reconnect: "stateful" as ReconnectMode,
  backoff: {},
  connectTimeout: 10,
  pingInterval: 20,
  pingTimeout: 20,
  heartbeatMessage: null,
  closeTimeout: 5,
  buffer: {},
  session: {},
  encoding: "json" as Encoding,
  eventQueueSize: 1024,
  tokenParam: "token",
  authProbe: null,
  authProbeMethod: "GET" as const,
});

export interface ResilientInit {
  options?: Partial<ResilientOptions>;
  /** Run before every (re)connect; returns the URL to use. */
  negotiate?: () => Promise<string>;
  /** Run before every (re)connect; the token goes into the `tokenParam` query parameter. */
  tokenProvider?: () => Promise<string | null>;
  /** Random source in [0, 1) for the backoff jitter. */
  rng?: () => number;
  /** Monotonic clock in seconds. */
  clock?: () => number;
  /** WebSocket constructor (default: the global one). */
  WebSocket?: typeof WebSocket;
  /** fetch for the auth probe (default: the global one). */
  fetch?: typeof fetch;
}

type Listener = (ev: ClientEvent) => void;

function defaultClock(): number {
  return (typeof performance !== "undefined" ? performance.now() : Date.now()) / 1000;
}

function sleep(seconds: number, abort: Promise<void>): Promise<void> {
  let t: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([new Promise<void>((r) => (t = setTimeout(r, Math.max(0, seconds) * 1000))), abort]).finally(() => clearTimeout(t));
}

function classify(err: unknown): Classification {
  if (err instanceof HttpError) return classifyHttpStatus(err.status);
  if (err instanceof RemoteProtocolError) return { permanent: true, reason: `protocol violation: ${err.message}` };
  if (err instanceof PeerErrorFrame) return { permanent: err.permanent, reason: `handshake rejected: ${err.message}` };
  if (err instanceof ConnectionClosed) return classifyCloseCode(err.code === 1006 ? null : err.code);
  if (err instanceof Error && (err.name === "TimeoutError" || err.name === "NetworkError" || err.name === "TypeError")) {
    return { permanent: false, reason: `${err.name}: ${err.message}` };
  }
  if (err instanceof Error && err.name === "SyntaxError") return { permanent: true, reason: `invalid URL: ${err.message}` };
  return { permanent: true, reason: `unexpected ${err instanceof Error ? err.name : typeof err}: ${String(err)}` };
}

function codeOf(err: unknown): string | number | null {
  if (err instanceof PeerErrorFrame || err instanceof RemoteProtocolError) return err.code;
  if (err instanceof ConnectionClosed) return err.code;
  if (err instanceof HttpError) return err.status;
  return null;
}

class Timeout extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TimeoutError";
  }
}

/** A WebSocket client connection that survives drops (see the module docs). */
export class ResilientWebSocket {
  readonly url: string | null;
  readonly options: ResilientOptions;
  /** Connections opened so far (1 + successful reconnects). */
  connections = 0;
  /** Events dropped from the `events()` queue because nobody read it. */
  eventsDropped = 0;
  private machine = new ConnectionStateMachine();
  private backoff: Backoff;
  private buffer: OutgoingBuffer;
  private _session: ReliableSession | null;
  private listeners = new Map<string, Set<Listener>>();
  private queue: ClientEvent[] = [];
  private iterating = false;
  private wakeReader: (() => void) | null = null;
  private running: Promise<void> | null = null;
  private closeRequested = false;
  private abortResolve!: () => void;
  private abort: Promise<void>;
  private failure: ConnectionFailed | null = null;
  private ws: WebSocket | null = null;
  private flushHook: (() => void) | null = null;
  private dropHook: ((reason: string) => void) | null = null;
  private wakeBackoff: (() => void) | null = null;
  private pendingSessionEvents: SessionOpened[] = [];
  private readonly clock: () => number;
  private readonly WS: typeof WebSocket;
  private readonly fetchFn: typeof fetch | undefined;
  private readonly init: ResilientInit;

  constructor(url: string | null, init: ResilientInit = {}) {
    if (url === null && init.negotiate === undefined) throw new TypeError("need a url or a negotiate function");
    this.url = url;
    this.init = init;
    this.options = { ...DEFAULT_OPTIONS, ...(init.options ?? {}) };
    if (!["none", "stateless", "stateful"].includes(this.options.reconnect)) throw new RangeError(`unknown reconnect mode ${this.options.reconnect}`);
    this.backoff = new Backoff(backoffPolicy(this.options.backoff), init.rng ?? Math.random);
    this.buffer = new OutgoingBuffer(this.options.buffer);
    this._session = this.options.reconnect === "stateful" ? new ReliableSession(this.options.encoding, this.options.session) : null;
    this.clock = init.clock ?? defaultClock;
    this.WS = init.WebSocket ?? globalThis.WebSocket;
    this.fetchFn = init.fetch ?? (typeof fetch !== "undefined" ? fetch.bind(globalThis) : undefined);
    this.abort = new Promise((r) => (this.abortResolve = r));
  }

  // -- public API ---------------------------------------------------------------------------

  /** Current connection state (always exact). */
  get state(): ConnectionState {
    return this.machine.state;
  }

  /** The reliable session core in stateful mode (read-only use), else null. */
  get session(): ReliableSession | null {
    return this._session;
  }

  /** Messages waiting in the outgoing buffer (not yet written or numbered). */
  get buffered(): number {
    return this.buffer.length;
  }

  /** Subscribe to events of one type (`state`, `message`, `overflow`, `error`, `session`, or `*`). */
  on(type: ClientEvent["type"] | "*", cb: Listener): () => void {
    let set = this.listeners.get(type);
    if (set === undefined) this.listeners.set(type, (set = new Set()));
    set.add(cb);
    return () => set.delete(cb);
  }

  /** All events in order (a bounded queue; use `on` to never miss one). */
  async *events(): AsyncGenerator<ClientEvent> {
    this.iterating = true;
    for (;;) {
      while (this.queue.length > 0) yield this.queue.shift() as ClientEvent;
      if (this.finished()) return;
      await new Promise<void>((r) => (this.wakeReader = r));
    }
  }

  /**
   * Start connecting and wait until `connected`. Transient failures are retried meanwhile.
   * Rejects with `ConnectionFailed` (failed, or disconnected in mode "none") or
   * `ConnectionNotOpen` (closed).
   */
  async connect(): Promise<void> {
    if (this.machine.state === "closed") throw new ConnectionNotOpen("closed");
    if (this.running === null) {
      this.failure = null;
      this.backoff.reset();
      this.fire("connect");
      this.running = this.run().finally(() => {
        this.running = null;
        this.wakeReader?.();
      });
    }
    const st = await this.waitForState("connected", "failed", "disconnected", "closed");
    if (st === "connected") return;
    if (st === "closed") throw new ConnectionNotOpen("closed");
    throw this.failure ?? new ConnectionFailed("disconnected", false);
  }

  /**
   * Queue `data` for sending (never waits for the network). Throws `BufferFull` (policy
   * reject, nothing queued), `ConnectionNotOpen` (closed or failed).
   */
  send(data: Payload): void {
    if (typeof data !== "string" && !(data instanceof Uint8Array)) throw new TypeError("data must be a string or Uint8Array");
    if (this.closeRequested || this.machine.state === "closed" || this.machine.state === "failed") throw new ConnectionNotOpen(this.machine.state);
    this.buffer.push(data, this.clock());
    this.drainOverflow();
    this.flushHook?.();
  }

  /**
   * End the current connection as a transient failure (`reason` in the `error` event) and
   * reconnect after the backoff delay, e.g. when the browser reports that it went offline
   * (an open WebSocket may otherwise stay up, or take long to notice). No-op when not connected.
   */
  drop(reason: string): void {
    this.dropHook?.(reason);
  }

  /** Cut a backoff wait short: the next attempt starts now (e.g. the network came back). */
  retryNow(): void {
    this.wakeBackoff?.();
  }

  /** Wait until the state is one of `states`; returns it. */
  waitForState(...states: ConnectionState[]): Promise<ConnectionState> {
    if (states.includes(this.machine.state)) return Promise.resolve(this.machine.state);
    return new Promise((resolve) => {
      const off = this.on("state", (ev) => {
        const s = (ev as StateChanged).current;
        if (states.includes(s)) {
          off();
          resolve(s);
        }
      });
    });
  }

  /**
   * Close gracefully: flush, wait for acks (stateful), say `bye`, close; at most `grace`
   * seconds (default `closeTimeout`). Unacknowledged messages are reported as one `overflow`
   * (reason `closed`). Idempotent; never throws for network errors.
   */
  async close(grace?: number): Promise<void> {
    if (this.machine.state === "closed") return;
    const limit = grace ?? this.options.closeTimeout;
    this.closeRequested = true;
    const ws = this.ws;
    if (ws !== null && this.machine.state === "connected") {
      const deadline = this.clock() + limit;
      while (this.clock() < deadline && this.ws === ws && (this.buffer.length > 0 || (this._session?.unacked ?? 0) > 0)) {
        this.flushHook?.();
        await sleep(0.02, new Promise(() => {}));
      }
      if (this._session !== null && this.ws === ws) {
        this._session.sendBye();
        for (const f of this._session.dataToSend()) ws.send(f);
      }
    }
    this.abortResolve();
    if (ws !== null) {
      try {
        ws.close(1000, "bye");
      } catch {
        // already closed
      }
    }
    if (this.running !== null) await Promise.race([this.running, sleep(limit + 1, new Promise(() => {}))]);
    const left = this.buffer.clear();
    if (this._session !== null) {
      this._session.sendBye();
      left.unshift(...this._session.unackedPayloads());
    }
    if (left.length > 0) this.push({ type: "overflow", dropped: left, reason: "closed" });
    if (this.machine.can("close")) this.fire("close");
    this.wakeReader?.();
  }

  // -- the pump -----------------------------------------------------------------------------

  private finished(): boolean {
    const st = this.machine.state;
    return st === "closed" || st === "failed" || (st === "disconnected" && this.running === null);
  }

  private async run(): Promise<void> {
    while (!this.closeRequested) {
      let ws: WebSocket;
      try {
        ws = await this.open();
      } catch (err) {
        if (this.closeRequested) return;
        if (!(await this.afterFailure(err, classify(err)))) return;
        continue;
      }
      if (this.closeRequested) {
        ws.close(1000, "bye");
        return;
      }
      this.connections++;
      this.backoff.connectionOpened(this.clock());
      this.fire("opened");
      for (const ev of this.pendingSessionEvents) this.push(ev);
      this.pendingSessionEvents = [];
      const [error, verdict] = await this.pump(ws);
      this.backoff.connectionLost(this.clock());
      this._session?.connectionLost();
      if (this.closeRequested) return;
      if (this._session !== null && this._session.closed) {
        this.fire("drop"); // the server ended the session with bye: nothing to resume
        return;
      }
      if (!(await this.afterFailure(error, verdict))) return;
    }
  }

  private async afterFailure(error: unknown, verdict: Classification): Promise<boolean> {
    const err = error instanceof Error ? error : new Error(String(error));
    this.push({ type: "error", error: err, permanent: verdict.permanent, reason: verdict.reason, code: codeOf(error) });
    if (verdict.permanent) return this.fail(verdict.reason, error);
    if (this.options.reconnect === "none") {
      this.failure = new ConnectionFailed(verdict.reason, false, error);
      this.fire("drop");
      return false;
    }
    const delay = this.backoff.nextDelay();
    if (delay === null) return this.fail(`gave up after ${this.backoff.attempts} attempts; last: ${verdict.reason}`, error);
    if (this.machine.state !== "reconnecting") this.fire("retry");
    const woken = new Promise<void>((r) => (this.wakeBackoff = r));
    await sleep(delay, Promise.race([this.abort, woken]));
    this.wakeBackoff = null;
    return !this.closeRequested;
  }

  private fail(reason: string, cause: unknown): boolean {
    this.failure = new ConnectionFailed(reason, true, cause);
    this.fire("fail");
    return false;
  }

  private async target(): Promise<string> {
    let url = this.init.negotiate !== undefined ? await this.init.negotiate() : (this.url as string);
    if (this.init.tokenProvider !== undefined) {
      const token = await this.init.tokenProvider();
      if (token) {
        const u = new URL(url);
        u.searchParams.set(this.options.tokenParam, token);
        url = u.toString();
      }
    }
    return url;
  }

  /** Negotiate, connect, and (stateful) run the session handshake, within `connectTimeout`. */
  private async open(): Promise<WebSocket> {
    let ws: WebSocket | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Timeout(`no connection within ${this.options.connectTimeout} s`)), this.options.connectTimeout * 1000);
    });
    const attempt = async (): Promise<WebSocket> => {
      const url = await this.target();
      const sock = new this.WS(url);
      ws = sock;
      sock.binaryType = "arraybuffer";
      await new Promise<void>((resolve, reject) => {
        sock.onopen = () => resolve();
        sock.onclose = (ev) => reject(new ConnectionClosed(ev.code, ev.reason));
        sock.onerror = () => undefined; // the close event follows with the code
      });
      const s = this._session;
      if (s === null) return sock;
      s.connectionMade();
      for (const f of s.dataToSend()) sock.send(f);
      const first = await new Promise<Payload>((resolve, reject) => {
        sock.onmessage = (ev) => resolve(toPayload(ev.data));
        sock.onclose = (ev) => reject(new ConnectionClosed(ev.code, ev.reason));
      });
      s.receiveData(first, this.clock());
      for (const ev of s.eventsReceived()) {
        if (ev.type === "peer-error") throw new PeerErrorFrame(ev.code, ev.message, ev.permanent);
        if (ev.type === "session") this.pendingSessionEvents.push(ev);
      }
      return sock;
    };
    try {
      return await Promise.race([attempt(), timeout, this.abort.then(() => Promise.reject(new ConnectionNotOpen("closed")))]);
    } catch (err) {
      this._session?.connectionLost();
      const sock = ws as WebSocket | null;
      if (sock !== null) {
        sock.onopen = sock.onclose = sock.onmessage = null;
        try {
          sock.close();
        } catch {
          // never opened
        }
      }
      if (err instanceof ConnectionClosed && err.code === 1006) {
        const status = await this.probe();
        if (status !== null && (status === 401 || status === 403)) throw new HttpError(status, `handshake refused (HTTP ${status} from the auth probe)`);
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  private async probe(): Promise<number | null> {
    const probe = this.options.authProbe;
    const url = typeof probe === "function" ? probe() : probe;
    if (url === null || this.fetchFn === undefined) return null;
    try {
      const headers: Record<string, string> = {};
      if (this.init.tokenProvider !== undefined) {
        const token = await this.init.tokenProvider();
        if (token) headers["Authorization"] = `Bearer ${token}`;
      }
      const resp = await this.fetchFn(url, { method: this.options.authProbeMethod, headers, cache: "no-store" });
      return resp.status;
    } catch {
      return null;
    }
  }

  /** Run the connection until it ends; resolves with why it ended. */
  private pump(ws: WebSocket): Promise<[unknown, Classification]> {
    this.ws = ws;
    const s = this._session;
    const opts = this.options;
    return new Promise((resolve) => {
      let done = false;
      let ackTimer: ReturnType<typeof setTimeout> | undefined;
      let expiryTimer: ReturnType<typeof setTimeout> | undefined;
      let pingTimer: ReturnType<typeof setInterval> | undefined;
      let deadTimer: ReturnType<typeof setTimeout> | undefined;
      let lastReceived = this.clock();
      let pingId = 0;
      const finish = (err: unknown, verdict: Classification, closeCode?: number): void => {
        if (done) return;
        done = true;
        clearTimeout(ackTimer);
        clearTimeout(expiryTimer);
        clearInterval(pingTimer);
        clearTimeout(deadTimer);
        ws.onmessage = ws.onclose = ws.onerror = null;
        if (closeCode !== undefined) {
          try {
            ws.close(closeCode, String((err as Error).message ?? "").slice(0, 100));
          } catch {
            // already closing
          }
        }
        this.ws = null;
        this.flushHook = null;
        this.dropHook = null;
        resolve([err, verdict]);
      };
      const flush = (): void => {
        if (done) return;
        try {
          const now = this.clock();
          this.buffer.expire(now);
          this.drainOverflow();
          if (s === null) {
            while (this.buffer.length > 0) ws.send(this.buffer.pop());
          } else {
            while (this.buffer.length > 0 && s.hasRoom(this.buffer.peek() as Payload)) s.sendMessage(this.buffer.pop());
            s.tick(now);
            for (const f of s.dataToSend()) ws.send(f);
          }
          clearTimeout(ackTimer);
          const d = s?.nextDeadline() ?? null;
          if (d !== null) ackTimer = setTimeout(flush, Math.max(0, d - now) * 1000 + 1);
          clearTimeout(expiryTimer);
          const e = this.buffer.nextExpiry();
          if (e !== null) expiryTimer = setTimeout(flush, Math.max(0, e - now) * 1000 + 1);
        } catch (err) {
          finish(err, classify(err), 1011);
        }
      };
      this.flushHook = flush;
      this.dropHook = (reason) => finish(new Error(reason), { permanent: false, reason }, 4000);
      ws.onmessage = (ev) => {
        lastReceived = this.clock();
        const data = toPayload(ev.data);
        if (s === null) {
          this.push({ type: "message", data });
          return;
        }
        try {
          s.receiveData(data, lastReceived);
        } catch (err) {
          finish(err, classify(err), err instanceof RemoteProtocolError ? err.closeCode : 1011);
          return;
        }
        for (const e of s.eventsReceived()) {
          if (e.type === "message") {
            this.push({ type: "message", data: e.payload });
          } else if (e.type === "peer-error") {
            const err = new PeerErrorFrame(e.code, e.message, e.permanent);
            if (e.permanent) {
              finish(err, { permanent: true, reason: `error frame ${e.code}: ${e.message}` }, 1000);
              return;
            }
            this.push({ type: "error", error: err, permanent: false, reason: `error frame ${e.code}: ${e.message}`, code: e.code });
          } else if (e.type === "peer-closed") {
            finish(new ConnectionClosed(1000, "bye"), { permanent: false, reason: "session ended by the server" }, 1000);
            return;
          }
        }
        flush();
      };
      ws.onclose = (ev) => finish(new ConnectionClosed(ev.code, ev.reason), classifyCloseCode(ev.code === 1006 ? null : ev.code));
      ws.onerror = () => undefined;
      const interval = opts.pingInterval;
      const timeout = opts.pingTimeout;
      if (interval !== null && interval > 0 && (s !== null || opts.heartbeatMessage !== null)) {
        pingTimer = setInterval(() => {
          const sentAt = this.clock();
          if (s !== null) s.sendPing(++pingId);
          else ws.send(opts.heartbeatMessage as Payload);
          flush();
          if (timeout !== null && deadTimer === undefined) {
            deadTimer = setTimeout(() => {
              deadTimer = undefined;
              if (lastReceived < sentAt) finish(new Timeout(`no answer to the heartbeat within ${timeout} s`), { permanent: false, reason: "heartbeat timeout" }, 4000);
            }, timeout * 1000);
          }
        }, interval * 1000);
      }
      flush();
    });
  }

  // -- events -------------------------------------------------------------------------------

  private fire(trigger: Trigger): void {
    this.push(this.machine.fire(trigger));
  }

  private push(ev: ClientEvent): void {
    if (this.iterating) {
      if (this.queue.length >= this.options.eventQueueSize) {
        this.queue.shift();
        this.eventsDropped++;
      }
      this.queue.push(ev);
      this.wakeReader?.();
      this.wakeReader = null;
    }
    for (const key of [ev.type, "*"]) {
      const set = this.listeners.get(key);
      if (set !== undefined) for (const cb of Array.from(set)) cb(ev);
    }
  }

  private drainOverflow(): void {
    for (const ev of this.buffer.drainEvents()) this.push(ev);
  }
}

function toPayload(data: unknown): Payload {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return String(data);
}

export { BufferFull };
