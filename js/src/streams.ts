/**
 * `StreamClient`: a Durable Streams client over `fetch` for browsers and node, with the
 * guarantees of the Python `durasync.client.StreamClient` (docs/client.md, docs/browser.md):
 *
 * - `IdempotentProducer.append` applies each batch exactly once: it sends
 *   `Producer-Id/Epoch/Seq` and retries transient failures (network errors, timeouts, 408,
 *   425, 429, 5xx) with the same numbers, so a retry of a request that reached the server is
 *   answered `204` (duplicate) and not applied twice. One request in flight per producer.
 * - `tail(stream, {offset, live})` yields every byte from `offset` exactly once and in order,
 *   as batches tagged with offsets, over long-poll or SSE; it resumes from the last delivered
 *   offset after network cuts and server restarts (a partly received batch is read again,
 *   never delivered twice). With `storageKey`, the offset of the last batch the consumer
 *   finished (it asked for the next one) is kept in `localStorage`, so a reloaded page resumes
 *   there.
 * - Permanent failures (400/401/403/404/409/410...) throw a `StreamError` and never loop.
 */

import { Backoff, backoffPolicy, type BackoffPolicy } from "./protocol/backoff.js";

const RETRY_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504]);

/** A non-retryable HTTP answer; `status` 0 for a malformed response. */
export class StreamError extends Error {
  constructor(
    readonly status: number,
    readonly url: string,
    readonly body: string = "",
  ) {
    super(`HTTP ${status} for ${url}${body ? `: ${body}` : ""}`);
    this.name = new.target.name;
  }
}
export class StreamNotFound extends StreamError {}
export class StreamGone extends StreamError {}
export class StreamConflict extends StreamError {}
export class StreamClosedError extends StreamError {}
/** 403 with `Producer-Epoch`: a newer epoch of this producer id exists. */
export class ProducerFenced extends StreamError {}
/** 409 with `Producer-Expected-Seq`: the server lost the producer's state. */
export class ProducerSeqGap extends StreamError {}
/** The server is ahead of this producer's seq: the identity is used elsewhere. */
export class ProducerStateConflict extends StreamError {}

/** A contiguous range of the stream: `data` spans `offset` -> `nextOffset`. */
export class Batch {
  constructor(
    readonly data: Uint8Array,
    readonly offset: string,
    readonly nextOffset: string,
    readonly contentType: string | null,
    readonly upToDate: boolean,
  ) {}

  text(): string {
    return new TextDecoder().decode(this.data);
  }

  /** The messages of a JSON-mode batch (a JSON array). */
  json(): unknown[] {
    if (this.data.length === 0) return [];
    const v: unknown = JSON.parse(this.text());
    if (!Array.isArray(v)) throw new TypeError("JSON-mode batch is not an array");
    return v;
  }
}

export interface StreamInfo {
  url: string;
  contentType: string | null;
  nextOffset: string | null;
  closed: boolean;
  created: boolean;
}

export interface AppendResult {
  nextOffset: string | null;
  closed: boolean;
  /** The server had applied this producer batch already (a retry): it is there once. */
  duplicate: boolean;
  epoch: number | null;
  seq: number | null;
}

export interface StreamClientOptions {
  headers?: Record<string, string>;
  /** Called per request; its token goes into `Authorization: Bearer`. */
  tokenProvider?: () => Promise<string | null>;
  retry?: Partial<BackoffPolicy>;
  /** Attempts per operation before the last error is thrown (0 = forever). */
  maxRetries?: number;
  /** Per-request timeout, seconds. */
  timeout?: number;
  /** Timeout of one long-poll or SSE read, seconds (must exceed the server's long-poll). */
  liveTimeout?: number;
  rng?: () => number;
  fetch?: typeof fetch;
  /** Where `tail({storageKey})` keeps offsets (default: `globalThis.localStorage`). */
  storage?: Pick<Storage, "getItem" | "setItem"> | null;
}

export type LiveMode = "long-poll" | "sse";

export interface TailOptions {
  /** Where to start (`-1` = beginning, `now` = tail); a stored offset wins. */
  offset?: string;
  live?: LiveMode;
  /** Keep the offset of finished batches in storage under this key. */
  storageKey?: string;
  /** End once caught up instead of waiting for more. */
  stopAtUpToDate?: boolean;
  signal?: AbortSignal;
}

class Transient extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Transient";
  }
}

function isJson(ct: string | null): boolean {
  return (ct ?? "").split(";")[0]!.trim().toLowerCase() === "application/json";
}

function closedHeader(resp: Response): boolean {
  return (resp.headers.get("stream-closed") ?? "").toLowerCase() === "true";
}

function intHeader(resp: Response, name: string): number | null {
  const v = resp.headers.get(name);
  if (v === null || !/^-?\d+$/.test(v.trim())) return null;
  return Number(v);
}

function empty(data: Uint8Array, ct: string | null): boolean {
  return data.length === 0 || (isJson(ct) && new TextDecoder().decode(data).trim() === "[]");
}

function sleep(seconds: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, seconds * 1000);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });
}

function toBytes(data: string | Uint8Array): Uint8Array {
  return typeof data === "string" ? new TextEncoder().encode(data) : data;
}

/** Client for one Durable Streams server (or absolute stream URLs). */
export class StreamClient {
  readonly baseUrl: string;
  private readonly opts: Required<Omit<StreamClientOptions, "tokenProvider" | "storage" | "retry">> & {
    tokenProvider?: () => Promise<string | null>;
    storage: Pick<Storage, "getItem" | "setItem"> | null;
    retry: BackoffPolicy;
  };

  constructor(baseUrl = "", options: StreamClientOptions = {}) {
    this.baseUrl = baseUrl;
    const storage = options.storage !== undefined ? options.storage : typeof localStorage !== "undefined" ? localStorage : null;
    this.opts = {
      headers: options.headers ?? {},
      retry: backoffPolicy({ initialDelay: 0.1, maxDelay: 5, minDelay: 0.05, ...(options.retry ?? {}) }),
      maxRetries: options.maxRetries ?? 8,
      timeout: options.timeout ?? 10,
      liveTimeout: options.liveTimeout ?? 75,
      rng: options.rng ?? Math.random,
      fetch: options.fetch ?? fetch.bind(globalThis),
      storage,
      ...(options.tokenProvider !== undefined ? { tokenProvider: options.tokenProvider } : {}),
    };
  }

  /** The absolute URL of `stream` (absolute URLs are returned unchanged). */
  url(stream: string): string {
    if (stream.includes("://")) return stream;
    const base = this.baseUrl.endsWith("/") ? this.baseUrl : this.baseUrl + "/";
    return new URL(stream.replace(/^\/+/, ""), base).toString();
  }

  /** Create the stream, or confirm it exists with the same config (idempotent, retried). */
  async create(stream: string, o: { contentType?: string; data?: string | Uint8Array; ttl?: number; expiresAt?: string; closed?: boolean } = {}): Promise<StreamInfo> {
    const url = this.url(stream);
    const headers: Record<string, string> = { "Content-Type": o.contentType ?? "application/octet-stream" };
    if (o.ttl !== undefined) headers["Stream-TTL"] = String(o.ttl);
    if (o.expiresAt !== undefined) headers["Stream-Expires-At"] = o.expiresAt;
    if (o.closed) headers["Stream-Closed"] = "true";
    const resp = await this.request("PUT", url, { headers, body: o.data === undefined ? null : toBytes(o.data), retry: true });
    await this.raiseFor(resp, url);
    return this.info(url, resp, resp.status === 201);
  }

  /** Metadata of the stream (HEAD, retried). */
  async head(stream: string): Promise<StreamInfo> {
    const url = this.url(stream);
    const resp = await this.request("HEAD", url, { retry: true });
    await this.raiseFor(resp, url);
    return this.info(url, resp, false);
  }

  /** Delete the stream (not retried: a retry would 404). */
  async delete(stream: string): Promise<void> {
    const url = this.url(stream);
    await this.raiseFor(await this.request("DELETE", url, { retry: false }), url);
  }

  /** One catch-up read from `offset` (retried). */
  async read(stream: string, offset = "-1"): Promise<Batch> {
    const url = this.url(stream);
    const resp = await this.request("GET", url, { params: { offset }, retry: true });
    await this.raiseFor(resp, url);
    return this.batch(resp, offset);
  }

  /** A plain append, NOT retried (a retry could duplicate): use `producer()` for that. */
  async append(stream: string, data: string | Uint8Array, o: { contentType?: string; seq?: string; close?: boolean } = {}): Promise<AppendResult> {
    const url = this.url(stream);
    const headers: Record<string, string> = { "Content-Type": o.contentType ?? "application/octet-stream" };
    if (o.seq !== undefined) headers["Stream-Seq"] = o.seq;
    if (o.close) headers["Stream-Closed"] = "true";
    const resp = await this.request("POST", url, { headers, body: toBytes(data), retry: false });
    await this.raiseFor(resp, url);
    return { nextOffset: resp.headers.get("stream-next-offset"), closed: closedHeader(resp), duplicate: false, epoch: null, seq: null };
  }

  /** An idempotent producer for `stream` (exactly-once appends). */
  producer(stream: string, o: { contentType?: string; producerId?: string; epoch?: number; autoClaim?: boolean } = {}): IdempotentProducer {
    return new IdempotentProducer(this, this.url(stream), o);
  }

  /**
   * Yield the stream from `offset`, live, exactly once and in order; retries transient
   * failures forever from the last delivered offset. Ends when the stream is closed and
   * everything was delivered, or with `signal`. Throws `StreamError` on permanent failures.
   */
  async *tail(stream: string, o: TailOptions = {}): AsyncGenerator<Batch> {
    const url = this.url(stream);
    const storage = o.storageKey !== undefined ? this.opts.storage : null;
    let offset = o.offset ?? "-1";
    if (storage !== null && o.storageKey !== undefined) offset = storage.getItem(o.storageKey) ?? offset;
    const backoff = new Backoff(this.opts.retry, this.opts.rng);
    const st: TailState = { offset, cursor: null, caughtUp: false, closed: false, contentType: null };
    for (;;) {
      o.signal?.throwIfAborted();
      try {
        let reader: AsyncGenerator<Batch>;
        if ((o.live ?? "long-poll") === "sse" && st.caughtUp) {
          if (st.contentType === null) st.contentType = (await this.head(url)).contentType;
          reader = this.tailSse(url, st, o.signal);
        } else {
          reader = this.tailHttp(url, st, o.signal);
        }
        for await (const batch of reader) {
          backoff.reset();
          yield batch;
          // the consumer asked for more: this batch is done
          st.offset = batch.nextOffset;
          if (storage !== null && o.storageKey !== undefined) storage.setItem(o.storageKey, st.offset);
          if (o.stopAtUpToDate && batch.upToDate) return;
        }
        if (st.closed || (o.stopAtUpToDate && st.caughtUp)) return;
        continue;
      } catch (err) {
        if (o.signal?.aborted) throw o.signal.reason;
        if (err instanceof StreamError && !RETRY_STATUSES.has(err.status)) throw err;
        if (!(err instanceof StreamError) && !(err instanceof Transient)) throw err;
      }
      await sleep(backoff.nextDelay() ?? this.opts.retry.maxDelay, o.signal);
    }
  }

  private async *tailHttp(url: string, st: TailState, signal?: AbortSignal): AsyncGenerator<Batch> {
    const params: Record<string, string> = { offset: st.offset };
    if (st.caughtUp) {
      params["live"] = "long-poll";
      if (st.cursor) params["cursor"] = st.cursor;
    }
    const resp = await this.request("GET", url, { params, retry: false, timeout: this.opts.liveTimeout, ...(signal ? { signal } : {}) });
    if (resp.status === 204) {
      st.cursor = resp.headers.get("stream-cursor") ?? st.cursor;
      const nxt = resp.headers.get("stream-next-offset");
      // a 204 that claims the tail moved: never skip data, re-read from our offset
      if (nxt && nxt !== st.offset) st.caughtUp = false;
      else if (closedHeader(resp)) st.caughtUp = false; // confirm the end with a catch-up read
      return;
    }
    await this.raiseFor(resp, url);
    const batch = await this.batch(resp, st.offset);
    st.contentType = batch.contentType;
    st.cursor = resp.headers.get("stream-cursor") ?? st.cursor;
    st.caughtUp = batch.upToDate;
    if (batch.upToDate && closedHeader(resp)) st.closed = true;
    if (!empty(batch.data, batch.contentType) || batch.nextOffset !== st.offset) yield batch;
  }

  private async *tailSse(url: string, st: TailState, signal?: AbortSignal): AsyncGenerator<Batch> {
    const params: Record<string, string> = { offset: st.offset, live: "sse" };
    if (st.cursor) params["cursor"] = st.cursor;
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let idle: ReturnType<typeof setTimeout> | undefined;
    const arm = (): void => {
      clearTimeout(idle);
      idle = setTimeout(() => ctl.abort(new Transient("SSE read timeout")), this.opts.liveTimeout * 1000);
    };
    try {
      arm();
      let resp: Response;
      try {
        resp = await this.opts.fetch(withParams(url, params), { headers: await this.authHeaders(), signal: ctl.signal, cache: "no-store" });
      } catch (err) {
        throw signal?.aborted ? err : new Transient(String(err));
      }
      if (resp.status >= 400) await this.raiseFor(resp, url);
      if (resp.body === null) throw new Transient("SSE response without a body");
      const b64 = (resp.headers.get("stream-sse-data-encoding") ?? "").toLowerCase() === "base64";
      const ctype = st.contentType;
      const pending: Uint8Array[] = [];
      const events = sseEvents(resp.body);
      try {
        for (;;) {
          let next: IteratorResult<[string, string]>;
          try {
            next = await events.next();
          } catch (err) {
            throw signal?.aborted ? err : new Transient(String(err));
          }
          if (next.done) break;
          arm();
          const [event, data] = next.value;
          if (event === "data") {
            pending.push(b64 ? base64Decode(data.replace(/\s+/g, "")) : new TextEncoder().encode(data));
          } else if (event === "control") {
            let c: { streamNextOffset?: unknown; streamCursor?: unknown; upToDate?: unknown; streamClosed?: unknown };
            try {
              c = JSON.parse(data) as typeof c;
            } catch {
              throw new StreamError(0, url, "bad SSE control event");
            }
            if (typeof c.streamNextOffset !== "string") throw new StreamError(0, url, "bad SSE control event");
            if (typeof c.streamCursor === "string" && c.streamCursor) st.cursor = c.streamCursor;
            const body = join(pending, ctype);
            pending.length = 0;
            if (!empty(body, ctype) || c.streamNextOffset !== st.offset) {
              yield new Batch(body, st.offset, c.streamNextOffset, ctype, c.upToDate === true);
            } else {
              st.offset = c.streamNextOffset;
            }
            if (c.streamClosed === true) {
              st.caughtUp = false; // the catch-up read that follows confirms the end
              return;
            }
          }
        }
      } finally {
        await events.return(undefined);
      }
      // the server ended the SSE response (it does so periodically): reconnect
    } finally {
      clearTimeout(idle);
      signal?.removeEventListener("abort", onAbort);
      ctl.abort();
    }
  }

  /** Send one request; with `retry`, retry transient failures with backoff. */
  async request(
    method: string,
    url: string,
    o: { headers?: Record<string, string>; params?: Record<string, string>; body?: Uint8Array | null; retry: boolean; timeout?: number; signal?: AbortSignal },
  ): Promise<Response> {
    const backoff = new Backoff(this.opts.retry, this.opts.rng);
    let attempt = 0;
    for (;;) {
      attempt++;
      const headers = { ...(await this.authHeaders()), ...(o.headers ?? {}) };
      const ctl = new AbortController();
      const t = setTimeout(() => ctl.abort(new Transient("request timeout")), (o.timeout ?? this.opts.timeout) * 1000);
      const onAbort = (): void => ctl.abort(o.signal?.reason);
      o.signal?.addEventListener("abort", onAbort, { once: true });
      let failure: unknown = null;
      try {
        const init: RequestInit = { method, headers, signal: ctl.signal, cache: "no-store" };
        if (o.body !== undefined && o.body !== null) init.body = o.body as unknown as BodyInit;
        const resp = await this.opts.fetch(withParams(url, o.params ?? {}), init);
        // read the body now: a cut in the middle of it is a transient failure of this attempt
        const body = method === "HEAD" ? new Uint8Array(0) : new Uint8Array(await resp.arrayBuffer());
        const full = new Response(resp.status === 204 || resp.status === 304 || method === "HEAD" ? null : body, { status: resp.status, headers: resp.headers });
        if (!o.retry || !RETRY_STATUSES.has(resp.status) || (this.opts.maxRetries && attempt >= this.opts.maxRetries)) return full;
      } catch (err) {
        if (o.signal?.aborted) throw o.signal.reason;
        failure = err instanceof Transient ? err : new Transient(`${method} ${url}: ${String(err)}`);
        if (!o.retry || (this.opts.maxRetries && attempt >= this.opts.maxRetries)) throw failure;
      } finally {
        clearTimeout(t);
        o.signal?.removeEventListener("abort", onAbort);
      }
      await sleep(backoff.nextDelay() ?? this.opts.retry.maxDelay, o.signal);
    }
  }

  private async authHeaders(): Promise<Record<string, string>> {
    const h = { ...this.opts.headers };
    if (this.opts.tokenProvider !== undefined) {
      const token = await this.opts.tokenProvider();
      if (token) h["Authorization"] = `Bearer ${token}`;
    }
    return h;
  }

  /** Throw the typed `StreamError` of a >= 400 response. */
  async raiseFor(resp: Response, url: string): Promise<void> {
    const status = resp.status;
    if (status < 400) return;
    const text = (await resp.text().catch(() => "")).slice(0, 200);
    if (status === 404) throw new StreamNotFound(status, url, text);
    if (status === 410) throw new StreamGone(status, url, text);
    if (status === 409) throw closedHeader(resp) ? new StreamClosedError(status, url, text) : new StreamConflict(status, url, text);
    throw new StreamError(status, url, text);
  }

  private info(url: string, resp: Response, created: boolean): StreamInfo {
    return { url, contentType: resp.headers.get("content-type"), nextOffset: resp.headers.get("stream-next-offset"), closed: closedHeader(resp), created };
  }

  private async batch(resp: Response, offset: string): Promise<Batch> {
    const data = new Uint8Array(await resp.arrayBuffer());
    return new Batch(
      data,
      offset,
      resp.headers.get("stream-next-offset") || offset,
      resp.headers.get("content-type"),
      (resp.headers.get("stream-up-to-date") ?? "").toLowerCase() === "true",
    );
  }

  /** @internal the backoff policy and random source (for producers). */
  get retryPolicy(): [BackoffPolicy, () => number] {
    return [this.opts.retry, this.opts.rng];
  }
}

interface TailState {
  offset: string;
  cursor: string | null;
  caughtUp: boolean;
  closed: boolean;
  contentType: string | null;
}

function withParams(url: string, params: Record<string, string>): string {
  const keys = Object.keys(params).sort(); // DS §2: sorted keys
  if (keys.length === 0) return url;
  const u = new URL(url);
  for (const k of keys) u.searchParams.set(k, params[k] as string);
  return u.toString();
}

function join(parts: Uint8Array[], ct: string | null): Uint8Array {
  if (parts.length === 1) return parts[0] as Uint8Array;
  if (isJson(ct)) {
    const merged: unknown[] = [];
    for (const p of parts) merged.push(...(JSON.parse(new TextDecoder().decode(p)) as unknown[]));
    return new TextEncoder().encode(JSON.stringify(merged));
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
}

function base64Decode(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Parse `text/event-stream` (the subset Durable Streams uses) from a byte stream. */
async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<[string, string]> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let event = "message";
  let data: string[] = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
        if (line === "") {
          if (data.length > 0) yield [event, data.join("\n")];
          event = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const name = i < 0 ? line : line.slice(0, i);
        let value = i < 0 ? "" : line.slice(i + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "event") event = value;
        else if (name === "data") data.push(value);
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Exactly-once appends to one stream (DS §3 idempotent producers): each batch is numbered
 * (`producerId`, `epoch`, `seq`); transient failures are retried with the same numbers; the
 * server answers a retry of an applied batch with 204 and does not apply it again.
 */
export class IdempotentProducer {
  readonly url: string;
  readonly contentType: string;
  readonly producerId: string;
  epoch: number;
  /** Sequence number of the next batch. */
  seq = 0;
  autoClaim: boolean;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private client: StreamClient,
    url: string,
    o: { contentType?: string; producerId?: string; epoch?: number; autoClaim?: boolean } = {},
  ) {
    this.url = url;
    this.contentType = o.contentType ?? "application/octet-stream";
    this.producerId = o.producerId ?? randomId();
    this.epoch = o.epoch ?? 0;
    this.autoClaim = o.autoClaim ?? false;
  }

  /** Append one batch exactly once (optionally closing the stream); batches keep call order. */
  append(data: string | Uint8Array, o: { close?: boolean; signal?: AbortSignal } = {}): Promise<AppendResult> {
    const run = this.chain.then(() => this.appendNow(toBytes(data), o));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async appendNow(body: Uint8Array, o: { close?: boolean; signal?: AbortSignal }): Promise<AppendResult> {
    const [policy, rng] = this.client.retryPolicy;
    const backoff = new Backoff(policy, rng);
    for (;;) {
      const headers: Record<string, string> = {
        "Content-Type": this.contentType,
        "Producer-Id": this.producerId,
        "Producer-Epoch": String(this.epoch),
        "Producer-Seq": String(this.seq),
      };
      if (o.close) headers["Stream-Closed"] = "true";
      let resp: Response | null = null;
      try {
        resp = await this.client.request("POST", this.url, { headers, body, retry: false, ...(o.signal ? { signal: o.signal } : {}) });
      } catch (err) {
        if (!(err instanceof Transient)) throw err;
      }
      if (resp === null || RETRY_STATUSES.has(resp.status)) {
        // the same (id, epoch, seq) again: the server dedupes (DS §3)
        await sleep(backoff.nextDelay() ?? policy.maxDelay, o.signal);
        continue;
      }
      const result = await this.handle(resp);
      if (result !== null) {
        this.seq++;
        return result;
      }
    }
  }

  private async handle(resp: Response): Promise<AppendResult | null> {
    const status = resp.status;
    const serverEpoch = intHeader(resp, "producer-epoch");
    if (status === 200 || status === 204) {
      const serverSeq = intHeader(resp, "producer-seq");
      if (status === 204 && serverSeq !== null && serverSeq > this.seq) {
        // a "duplicate" of a seq we never sent: someone else owns this identity/epoch
        if (!this.autoClaim) throw new ProducerStateConflict(409, this.url, `server is at seq ${serverSeq}, we sent ${this.seq}`);
        this.claim(serverEpoch);
        return null;
      }
      return {
        nextOffset: resp.headers.get("stream-next-offset"),
        closed: closedHeader(resp),
        duplicate: status === 204 && serverSeq !== null,
        epoch: this.epoch,
        seq: this.seq,
      };
    }
    if (status === 403 && resp.headers.get("producer-epoch") !== null) {
      if (!this.autoClaim) throw new ProducerFenced(403, this.url, `fenced by epoch ${serverEpoch}`);
      this.claim(serverEpoch);
      return null;
    }
    if (status === 409 && resp.headers.get("producer-expected-seq") !== null) {
      throw new ProducerSeqGap(409, this.url, `expected seq ${intHeader(resp, "producer-expected-seq")}, got ${intHeader(resp, "producer-received-seq")}`);
    }
    await this.client.raiseFor(resp, this.url);
    throw new StreamError(status, this.url, "unexpected response");
  }

  private claim(serverEpoch: number | null): void {
    this.epoch = Math.max(this.epoch, serverEpoch ?? this.epoch) + 1;
    this.seq = 0;
  }
}

function randomId(): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
