/** The scene-graph CRDT of durasync rooms (a port of `durasync.crdt`; docs/crdt.md). */
export { canonicalJson, formatNumber } from "./canonical.js";
export { HANDLERS, SceneGraph, SceneNode, TEXT, applyTextOnly, pyEq, splitTextKey, textKey } from "./graph.js";
export type { Checkpoint, Handler, PropValue, Stamp } from "./graph.js";
export {
  ADDITIVE_OTYPES,
  CRDTUsageError,
  CRDTValidationError,
  DEFAULT_LIMITS,
  META_OTYPES,
  OTYPES,
  TEXT_OTYPES,
  decodeMessage,
  decodeMessageJson,
  decodeOp,
  messageToObject,
  validateMessage,
  validateOp,
} from "./messages.js";
export type { Json, Limits, Message, Op } from "./messages.js";
export { Replica, sortKey } from "./replica.js";
export type { NodeState, ReplicaChange, ReplicaOptions, Snapshot } from "./replica.js";
export { cmpStr, cpLen } from "./strings.js";
export { TextDoc, TextOpError, parseId } from "./text.js";
export type { InsertEdit, RawItem, RawText, ReplaceEdit, RmEntry } from "./text.js";
