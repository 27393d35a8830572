/**
 * Reconnect delays: exponential backoff with full jitter and a floor (a port of
 * `durasync.protocol.backoff`). Attempt n waits uniformly in `[min(minDelay, cap), cap]` with
 * `cap = min(maxDelay, initialDelay * multiplier^n)`; the counter resets only after a
 * connection stayed open `stableAfter` seconds, so a server that accepts and drops at once
 * does not cause a hot loop. Times in seconds; no clock read (`now` is an argument).
 */

export interface BackoffPolicy {
  initialDelay: number;
  maxDelay: number;
  multiplier: number;
  minDelay: number;
  /** Give up after this many consecutive failed attempts; 0 = never. */
  maxAttempts: number;
  stableAfter: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffPolicy> = Object.freeze({
  initialDelay: 1.0,
  maxDelay: 30.0,
  multiplier: 2.0,
  minDelay: 0.1,
  maxAttempts: 0,
  stableAfter: 5.0,
});

export function backoffPolicy(p: Partial<BackoffPolicy> = {}): BackoffPolicy {
  const out = { ...DEFAULT_BACKOFF, ...p };
  if (!(out.initialDelay > 0) || out.maxDelay < out.initialDelay) throw new RangeError("need 0 < initialDelay <= maxDelay");
  if (out.multiplier < 1) throw new RangeError("multiplier must be >= 1");
  if (out.minDelay < 0 || out.maxAttempts < 0 || out.stableAfter < 0) throw new RangeError("minDelay, maxAttempts and stableAfter must be >= 0");
  return out;
}

/** The reconnect schedule of one client. */
export class Backoff {
  attempts = 0;
  private openedAt: number | null = null;
  constructor(
    readonly policy: BackoffPolicy = { ...DEFAULT_BACKOFF },
    private rng: () => number = Math.random,
  ) {}

  cap(attempt: number): number {
    const p = this.policy;
    let cap = p.initialDelay;
    for (let i = 0; i < attempt; i++) {
      cap *= p.multiplier;
      if (cap >= p.maxDelay) return p.maxDelay;
    }
    return Math.min(cap, p.maxDelay);
  }

  /** Seconds to wait before the next attempt (counts one failure), or null to give up. */
  nextDelay(): number | null {
    const p = this.policy;
    if (p.maxAttempts && this.attempts >= p.maxAttempts) return null;
    const cap = this.cap(this.attempts);
    this.attempts++;
    const low = Math.min(p.minDelay, cap);
    const r = this.rng();
    if (!(r >= 0 && r < 1)) throw new RangeError(`random source returned ${r}, outside [0, 1)`);
    return low + r * (cap - low);
  }

  connectionOpened(now: number): void {
    this.openedAt = now;
  }

  connectionLost(now: number): void {
    if (this.openedAt !== null && now - this.openedAt >= this.policy.stableAfter) this.attempts = 0;
    this.openedAt = null;
  }

  reset(): void {
    this.attempts = 0;
    this.openedAt = null;
  }
}
