// The durasync demo: a shared scene (drag, add, recolour, delete), a shared note (the text
// CRDT), presence cursors with names, undo/redo and the connection state, on one RoomClient.
// Served by `durasync serve` at /demo/?room=NAME; the client bundle comes from /js/durasync.mjs.
import { RoomClient } from "../js/durasync.mjs";

const SCENE = "scene";
const NOTE = "note";
const TEXT = "text";
const W = 1000;
const H = 640;
const R = 34;
const COLORS = ["#3b6fe0", "#e0503b", "#2fa66a", "#e0a21b", "#8b4fd8", "#1ba6c2", "#d6457f", "#5c6472"];
const SVGNS = "http://www.w3.org/2000/svg";
const ROOM_RE = /^[A-Za-z0-9._~-]{1,128}$/;

const $ = (id) => document.getElementById(id);
const svg = $("scene");
const shapesLayer = $("shapes");
const cursorsLayer = $("cursors");
const note = $("note");
const statusEl = $("status");

// -- room and identity ------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const room = params.get("room") || "lab";
if (!params.get("room")) {
  params.set("room", room);
  history.replaceState(null, "", `${location.pathname}?${params}`);
}
$("room").textContent = room;
document.title = `${room} · durasync demo`;

function storedName() {
  try {
    return localStorage.getItem("durasync-demo-name");
  } catch {
    return null;
  }
}
let myName = params.get("name") || storedName() || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
const myColor = COLORS[Math.floor(Math.random() * COLORS.length)];
$("name").value = myName;

if (!ROOM_RE.test(room) || /^\.+$/.test(room)) {
  statusEl.dataset.state = "failed";
  statusEl.textContent = "bad room name (1-128 of A-Z a-z 0-9 . _ ~ -)";
  throw new Error("bad room name");
}

// A server run with --auth-secret wants a token with read/write on room/<name>: ?token=JWT.
const client = new RoomClient(location.origin, room, {
  token: params.get("token"),
  backoff: { initialDelay: 0.25, maxDelay: 5, minDelay: 0.05, stableAfter: 2 },
});

// -- helpers ----------------------------------------------------------------------------------

const cpLen = (s) => Array.from(s).length;
const isHigh = (c) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff;

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 4000);
}

/** Run a local change; a full outbox or a refused op is shown, never thrown at the page. */
function act(fn) {
  try {
    return fn();
  } catch (err) {
    toast(err && err.reason === "count" ? "too many unsynced edits: wait for the connection" : String(err.message || err));
    return null;
  }
}

function live(key) {
  const n = client.replica.graph.nodes.get(key);
  return n !== undefined && !n.deleted ? n : null;
}

function shapes() {
  const scene = live(SCENE);
  if (!scene) return [];
  const out = [];
  for (const k of scene.children) {
    const n = live(k);
    if (n && n.tag === "shape") out.push(n);
  }
  return out;
}

function pos(n) {
  const p = n.props.get("position");
  return Array.isArray(p) && p.length >= 2 ? [Number(p[0]) || 0, Number(p[1]) || 0] : [W / 2, H / 2];
}

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

function svgPoint(ev) {
  const m = svg.getScreenCTM();
  if (!m) return [0, 0];
  const p = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(m.inverse());
  return [p.x, p.y];
}

// -- presence ---------------------------------------------------------------------------------

const me = { name: myName, color: myColor, cursor: null, drag: null };
let presenceTimer = null;
let presenceDirty = false;

function sendPresence() {
  presenceDirty = true;
  if (presenceTimer !== null) return;
  const flush = () => {
    presenceTimer = null;
    if (!presenceDirty) return;
    presenceDirty = false;
    client.setPresence({ ...me });
    presenceTimer = setTimeout(flush, 50); // at most 20 updates a second
  };
  flush();
}

$("name").addEventListener("input", (ev) => {
  myName = ev.target.value.trim().slice(0, 24) || "anonymous";
  me.name = myName;
  try {
    localStorage.setItem("durasync-demo-name", myName);
  } catch {
    // private mode: the name lives for this page only
  }
  sendPresence();
  renderMembers();
});

// -- rendering --------------------------------------------------------------------------------

let selected = null;
let drag = null; // {key, dx, dy, moved}
const shapeEls = new Map();
let frame = 0;

function schedule() {
  if (frame === 0) frame = requestAnimationFrame(render);
}

function render() {
  frame = 0;
  renderShapes();
  renderCursors();
  renderMembers();
  renderControls();
}

function remoteDrags() {
  const out = new Map();
  for (const [id, st] of client.presence) {
    if (id === client.clientId || !st || typeof st !== "object" || !st.drag) continue;
    const d = st.drag;
    if (typeof d.key === "string" && Array.isArray(d.pos)) out.set(d.key, d.pos);
  }
  return out;
}

function renderShapes() {
  const seen = new Set();
  const dragged = remoteDrags();
  for (const n of shapes()) {
    seen.add(n.key);
    let g = shapeEls.get(n.key);
    if (!g) {
      g = document.createElementNS(SVGNS, "g");
      g.classList.add("shape");
      g.dataset.key = n.key;
      const c = document.createElementNS(SVGNS, "circle");
      c.setAttribute("r", String(R));
      c.setAttribute("filter", "url(#shadow)");
      const t = document.createElementNS(SVGNS, "text");
      g.append(c, t);
      shapesLayer.append(g);
      shapeEls.set(n.key, g);
    }
    const [x, y] = dragged.get(n.key) ?? pos(n);
    g.setAttribute("transform", `translate(${x.toFixed(1)} ${y.toFixed(1)})`);
    const color = n.props.get("color");
    g.firstChild.setAttribute("fill", typeof color === "string" ? color : "#888");
    g.lastChild.textContent = String(n.props.get("label") ?? "");
    g.classList.toggle("selected", n.key === selected);
    g.classList.toggle("dragging", drag !== null && drag.key === n.key);
  }
  for (const [k, g] of shapeEls) {
    if (!seen.has(k)) {
      g.remove();
      shapeEls.delete(k);
    }
  }
  if (selected !== null && !seen.has(selected)) selected = null;
}

function renderCursors() {
  cursorsLayer.replaceChildren();
  for (const [id, st] of client.presence) {
    if (id === client.clientId || !st || typeof st !== "object" || !Array.isArray(st.cursor)) continue;
    const [x, y] = st.cursor;
    const color = typeof st.color === "string" ? st.color : "#5c6472";
    const name = String(st.name ?? id).slice(0, 24);
    const g = document.createElementNS(SVGNS, "g");
    g.classList.add("cursor");
    g.dataset.client = id;
    g.setAttribute("transform", `translate(${Number(x) || 0} ${Number(y) || 0})`);
    const arrow = document.createElementNS(SVGNS, "path");
    arrow.setAttribute("d", "M0 0 L0 20 L5 15 L9 24 L12 22 L8 14 L15 14 Z");
    arrow.setAttribute("fill", color);
    arrow.setAttribute("stroke", "#fff");
    arrow.setAttribute("stroke-width", "1.5");
    const label = document.createElementNS(SVGNS, "text");
    label.textContent = name;
    label.setAttribute("x", "20");
    label.setAttribute("y", "30");
    const bg = document.createElementNS(SVGNS, "rect");
    bg.setAttribute("x", "14");
    bg.setAttribute("y", "17");
    bg.setAttribute("rx", "4");
    bg.setAttribute("height", "18");
    bg.setAttribute("width", String(12 + name.length * 7.2));
    bg.setAttribute("fill", color);
    g.append(arrow, bg, label);
    cursorsLayer.append(g);
  }
}

function renderMembers() {
  const ul = $("members");
  ul.replaceChildren();
  const rows = [[client.clientId, me]];
  for (const [id, st] of client.presence) if (id !== client.clientId && st && typeof st === "object") rows.push([id, st]);
  for (const [id, st] of rows) {
    const li = document.createElement("li");
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = typeof st.color === "string" ? st.color : "#5c6472";
    const name = document.createElement("span");
    name.textContent = String(st.name ?? id).slice(0, 24);
    li.append(dot, name);
    if (id === client.clientId) {
      const you = document.createElement("span");
      you.className = "me";
      you.textContent = "(you)";
      li.append(you);
    }
    ul.append(li);
  }
}

let joined = false;

function renderControls() {
  const has = selected !== null;
  $("add").disabled = !joined;
  $("delete").disabled = !has;
  for (const b of $("swatches").children) b.disabled = !has;
  $("undo").disabled = !joined;
  $("redo").disabled = !joined;
  note.disabled = !joined;
}

function renderStatus() {
  const st = client.state;
  const n = client.unsynced;
  const edits = `${n} unsynced edit${n === 1 ? "" : "s"}`;
  const text = {
    idle: "starting…",
    connecting: "connecting…",
    connected: n === 0 ? "live" : `live · syncing ${n}`,
    reconnecting: `reconnecting… ${edits}`,
    offline: `offline · ${edits}`,
    failed: `stopped: ${client.failure ? client.failure.reason : "failed"}`,
    closed: "closed",
  }[st];
  statusEl.dataset.state = st;
  statusEl.textContent = text ?? st;
}

// -- the note (text CRDT) ---------------------------------------------------------------------

let noteShown = "";
let textTimer = null;

function commitText() {
  clearTimeout(textTimer);
  textTimer = null;
  act(() => client.commit());
}

note.addEventListener("input", () => {
  const prev = noteShown;
  const next = note.value;
  const max = Math.min(prev.length, next.length);
  let a = 0;
  while (a < max && prev.charCodeAt(a) === next.charCodeAt(a)) a++;
  let b = 0;
  while (b < max - a && prev.charCodeAt(prev.length - 1 - b) === next.charCodeAt(next.length - 1 - b)) b++;
  if (a > 0 && isHigh(prev.charCodeAt(a - 1))) a--; // never split a surrogate pair
  if (b > 0 && isLow(prev.charCodeAt(prev.length - b))) b--;
  const removed = prev.slice(a, prev.length - b);
  const inserted = next.slice(a, next.length - b);
  const at = cpLen(prev.slice(0, a));
  const ok = act(() => {
    if (removed && inserted) client.replaceText(NOTE, TEXT, at, cpLen(removed), inserted);
    else if (removed) client.deleteText(NOTE, TEXT, at, cpLen(removed));
    else if (inserted) client.insertText(NOTE, TEXT, at, inserted);
    return true;
  });
  if (ok === null) {
    showNote(); // refused: back to the model's text
    return;
  }
  noteShown = client.text(NOTE, TEXT);
  if (textTimer === null) textTimer = setTimeout(commitText, 300); // a message per 300 ms of typing
});
note.addEventListener("blur", commitText);

/** Show the model's text, keeping the caret where it was relative to the text around it. */
function showNote() {
  const next = client.text(NOTE, TEXT);
  const prev = note.value;
  if (next === prev) {
    noteShown = next;
    return;
  }
  const max = Math.min(prev.length, next.length);
  let a = 0;
  while (a < max && prev.charCodeAt(a) === next.charCodeAt(a)) a++;
  let b = 0;
  while (b < max - a && prev.charCodeAt(prev.length - 1 - b) === next.charCodeAt(next.length - 1 - b)) b++;
  const map = (c) => (c <= a ? c : c >= prev.length - b ? c + next.length - prev.length : a + (next.length - b - a));
  const focused = document.activeElement === note;
  const s = map(note.selectionStart);
  const e = map(note.selectionEnd);
  note.value = next;
  noteShown = next;
  if (focused) note.setSelectionRange(s, e);
}

// -- scene interactions -----------------------------------------------------------------------

function addShape() {
  const key = `s${Math.random().toString(16).slice(2, 10)}`;
  const x = Math.round(80 + Math.random() * (W - 160));
  const y = Math.round(80 + Math.random() * (H - 160));
  const color = COLORS[Math.floor(Math.random() * COLORS.length)];
  const done = act(() => {
    client.edit({ ot: "node.insert", key: SCENE, path: "children", value: { key, tag: "shape" } });
    client.edit({ ot: "vector3.set", key, path: "position", value: [x, y, 0] });
    client.edit({ ot: "color.set", key, path: "color", value: color });
    client.edit({ ot: "string.set", key, path: "label", value: myName.slice(0, 1).toUpperCase() });
    return client.commit();
  });
  if (done) selected = key;
  schedule();
  return key;
}

function deleteSelected() {
  if (selected === null) return;
  const key = selected;
  act(() => {
    client.edit({ ot: "node.remove", key: SCENE, path: "children", value: key });
    return client.commit();
  });
  selected = null;
  schedule();
}

function recolour(color) {
  if (selected === null) return;
  const key = selected;
  act(() => {
    client.edit({ ot: "color.set", key, path: "color", value: color });
    return client.commit();
  });
}

for (const c of COLORS) {
  const b = document.createElement("button");
  b.className = "swatch";
  b.style.background = c;
  b.title = `colour ${c}`;
  b.disabled = true;
  b.addEventListener("click", () => recolour(c));
  $("swatches").append(b);
}
$("add").addEventListener("click", addShape);
$("delete").addEventListener("click", deleteSelected);
$("undo").addEventListener("click", () => act(() => client.undo()));
$("redo").addEventListener("click", () => act(() => client.redo()));

document.addEventListener("keydown", (ev) => {
  const mod = ev.ctrlKey || ev.metaKey;
  if (mod && (ev.key === "z" || ev.key === "Z")) {
    ev.preventDefault();
    if (document.activeElement === note) commitText();
    act(() => (ev.shiftKey ? client.redo() : client.undo()));
  } else if (mod && ev.key === "y") {
    ev.preventDefault();
    act(() => client.redo());
  } else if ((ev.key === "Delete" || ev.key === "Backspace") && document.activeElement === document.body) {
    deleteSelected();
  }
});

svg.addEventListener("pointerdown", (ev) => {
  if (!joined) return;
  const g = ev.target.closest ? ev.target.closest(".shape") : null;
  const [x, y] = svgPoint(ev);
  if (!g) {
    selected = null;
    schedule();
    return;
  }
  const key = g.dataset.key;
  const n = live(key);
  if (!n) return;
  const [px, py] = pos(n);
  selected = key;
  drag = { key, dx: x - px, dy: y - py, moved: false };
  svg.setPointerCapture(ev.pointerId);
  schedule();
});

svg.addEventListener("pointermove", (ev) => {
  const [x, y] = svgPoint(ev);
  me.cursor = [Math.round(x), Math.round(y)];
  if (drag !== null && live(drag.key)) {
    const p = [Math.round(clamp(x - drag.dx, R, W - R)), Math.round(clamp(y - drag.dy, R, H - R))];
    drag.moved = true;
    // buffered (local and optimistic); one message when the drag ends, so undo takes it back
    act(() => client.edit({ ot: "vector3.set", key: drag.key, path: "position", value: [p[0], p[1], 0] }));
    me.drag = { key: drag.key, pos: p };
    schedule();
  }
  sendPresence();
});

function endDrag() {
  if (drag === null) return;
  if (drag.moved) act(() => client.commit());
  drag = null;
  me.drag = null;
  sendPresence();
  schedule();
}
svg.addEventListener("pointerup", endDrag);
svg.addEventListener("pointercancel", endDrag);
svg.addEventListener("pointerleave", () => {
  if (drag !== null) return;
  me.cursor = null;
  sendPresence();
});

// -- wiring -----------------------------------------------------------------------------------

client.on("change", (ev) => {
  if (ev.keys === null || ev.keys.has(NOTE)) showNote();
  schedule();
});
client.on("presence", schedule);
client.on("state", renderStatus);
client.on("unsynced", renderStatus);
client.on("error", (ev) => {
  if (ev.source === "server") toast(`refused by the server: ${ev.code}`);
});
renderStatus();

/** Everything typed is committed and every commit acknowledged (for tests and the curious). */
async function idle() {
  commitText();
  await client.synced();
}

const ready = client.join().then(() => {
  // The scene root and the note exist once, whoever comes first (node.insert is idempotent).
  act(() => {
    if (!live(SCENE)) client.edit({ ot: "node.insert", key: "", path: "children", value: { key: SCENE, tag: "scene" } });
    if (!live(NOTE)) client.edit({ ot: "node.insert", key: SCENE, path: "children", value: { key: NOTE, tag: "note" } });
    return client.commit();
  });
  joined = true;
  sendPresence();
  showNote();
  render();
});
ready.catch((err) => toast(`cannot join: ${err.message || err}`));

window.demo = { client, room, ready, idle, addShape, shapes: () => shapes().map((n) => ({ key: n.key, pos: pos(n), color: n.props.get("color") })) };
