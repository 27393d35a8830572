/**
 * durasync in the browser (and node): the room client with its scene-graph CRDT replica, the
 * Durable Streams client and the resilient WebSocket. See docs/browser.md.
 */
export * from "./crdt/index.js";
export { Backoff, DEFAULT_BACKOFF, backoffPolicy } from "./protocol/backoff.js";
export type { BackoffPolicy } from "./protocol/backoff.js";
export { DEFAULT_BUFFER, OutgoingBuffer, payloadSize } from "./protocol/buffer.js";
export type { BufferLimits, Overflow, Payload } from "./protocol/buffer.js";
export {
  BufferFull,
  InvalidTransition,
  LocalProtocolError,
  ProtocolError,
  RemoteProtocolError,
  classifyCloseCode,
  classifyHttpStatus,
} from "./protocol/errors.js";
export type { Classification } from "./protocol/errors.js";
export { DEFAULT_SESSION, FrameCodec, ReliableSession } from "./protocol/session.js";
export type { Encoding, SessionEvent, SessionLimits, SessionOpened } from "./protocol/session.js";
export { ClientRoomSession, DEFAULT_OUTBOX, RETRY_DELAY, idOwner } from "./protocol/room.js";
export type {
  ChangeOrigin,
  ClientRoomEvent,
  ClientRoomOptions,
  OutboxLimits,
  OutboxOverflow,
  PresenceEvent,
  RoomChange,
  RoomError,
  RoomFormat,
} from "./protocol/room.js";
export { RoomClient } from "./room.js";
export type { RoomClientOptions, RoomErrorEvent, RoomEvent, RoomState, RoomStateChanged, UnsyncedChanged } from "./room.js";
export { ConnectionStateMachine, TRANSITIONS } from "./protocol/state.js";
export type { ConnectionState, StateChanged, Trigger } from "./protocol/state.js";
export {
  Batch,
  IdempotentProducer,
  ProducerFenced,
  ProducerSeqGap,
  ProducerStateConflict,
  StreamClient,
  StreamClosedError,
  StreamConflict,
  StreamError,
  StreamGone,
  StreamNotFound,
} from "./streams.js";
export type { AppendResult, LiveMode, StreamClientOptions, StreamInfo, TailOptions } from "./streams.js";
export {
  ConnectionClosed,
  ConnectionFailed,
  ConnectionNotOpen,
  DEFAULT_OPTIONS,
  HttpError,
  PeerErrorFrame,
  ResilientWebSocket,
} from "./websocket.js";
export type { ClientEvent, ErrorEvent_ as ErrorEvent, MessageEvent_ as MessageEvent, ReconnectMode, ResilientInit, ResilientOptions } from "./websocket.js";
