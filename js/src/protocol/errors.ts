/**
 * Errors of the protocol layer and the transient/permanent split (a port of
 * `durasync.protocol.errors`): `LocalProtocolError` is our misuse (`BufferFull`,
 * `InvalidTransition`), `RemoteProtocolError` the peer's fault (always permanent).
 */

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The local side used an API in a way it does not allow. */
export class LocalProtocolError extends ProtocolError {}

/** A state-machine trigger that is not valid in the current state. */
export class InvalidTransition extends LocalProtocolError {}

/** A bounded buffer with policy `reject` refused a message (`count`, `bytes`, `too_large`, `replay`). */
export class BufferFull extends LocalProtocolError {
  readonly reason: string;
  constructor(reason: string) {
    super(`buffer full (${reason})`);
    this.reason = reason;
  }
}

/** The peer broke the protocol; the connection must stop (close 1002), never retried. */
export class RemoteProtocolError extends ProtocolError {
  readonly code: string;
  readonly detail: string;
  readonly closeCode = 1002;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.code = code;
    this.detail = message;
  }
}

/** The verdict on one failure: permanent (stop, say why) or transient (retry after backoff). */
export interface Classification {
  permanent: boolean;
  reason: string;
}

/** An HTTP status instead of a WebSocket upgrade (or from an HTTP call). */
export function classifyHttpStatus(status: number): Classification {
  if (status === 401 || status === 403) return { permanent: true, reason: `authentication rejected (HTTP ${status})` };
  if (status === 408 || status === 425 || status === 429 || (status >= 500 && status <= 599)) {
    return { permanent: false, reason: `server unavailable (HTTP ${status})` };
  }
  if (status >= 400 && status <= 499) return { permanent: true, reason: `request rejected (HTTP ${status})` };
  return { permanent: false, reason: `unexpected handshake response (HTTP ${status})` };
}

// RFC 6455 §7.4.1 codes that say the peer found us at fault, our auth codes 4401/4403, the
// rooms' 4400 (malformed URL) and 4404 (room deleted): resending the same traffic fails again or
// would re-create a deleted room (as in Python).
const PERMANENT_CLOSE_CODES = new Set([1002, 1003, 1007, 1008, 1009, 1010, 4400, 4401, 4403, 4404]);

/** The close code of a connection that ended (null = none, e.g. 1006 abnormal closure). */
export function classifyCloseCode(code: number | null): Classification {
  if (code === null || code === 1006 || code === 1005) return { permanent: false, reason: "connection lost without a close frame" };
  if (PERMANENT_CLOSE_CODES.has(code)) return { permanent: true, reason: `closed by peer with code ${code}` };
  return { permanent: false, reason: `closed by peer with code ${code}` };
}
