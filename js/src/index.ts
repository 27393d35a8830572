/**
 * durasync in the browser (and node): the scene-graph CRDT replica, the Durable Streams
 * client and the resilient WebSocket. See docs/browser.md.
 */
export * from "./crdt/index.js";
