/**
 * The connection state table (a port of `durasync.protocol.state`): every state change is a
 * trigger the table allows; anything else throws `InvalidTransition` (a bug in the shell).
 *
 *     disconnected --connect--> connecting --opened--> connected
 *     connecting|connected --retry--> reconnecting --opened--> connected
 *     connecting|connected --drop--> disconnected      (reconnect mode "none")
 *     connecting|connected|reconnecting --fail--> failed  (permanent error or gave up)
 *     disconnected|failed --connect--> connecting
 *     any state but closed --close--> closed
 */

import { InvalidTransition } from "./errors.js";

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected" | "failed" | "closed";
export type Trigger = "connect" | "opened" | "retry" | "drop" | "fail" | "close";

export const TRANSITIONS: Readonly<Record<ConnectionState, Partial<Record<Trigger, ConnectionState>>>> = {
  disconnected: { connect: "connecting", close: "closed" },
  connecting: { opened: "connected", retry: "reconnecting", drop: "disconnected", fail: "failed", close: "closed" },
  connected: { retry: "reconnecting", drop: "disconnected", fail: "failed", close: "closed" },
  reconnecting: { opened: "connected", fail: "failed", close: "closed" },
  failed: { connect: "connecting", close: "closed" },
  closed: {},
};

/** The one state-change event: `previous` -> `current`. */
export interface StateChanged {
  type: "state";
  previous: ConnectionState;
  current: ConnectionState;
}

export class ConnectionStateMachine {
  state: ConnectionState = "disconnected";

  can(trigger: Trigger): boolean {
    return TRANSITIONS[this.state][trigger] !== undefined;
  }

  fire(trigger: Trigger): StateChanged {
    const next = TRANSITIONS[this.state][trigger];
    if (next === undefined) throw new InvalidTransition(`trigger '${trigger}' is invalid in state '${this.state}'`);
    const change: StateChanged = { type: "state", previous: this.state, current: next };
    this.state = next;
    return change;
  }
}
