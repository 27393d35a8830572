// durasync inspector: a read-only view of one server, using only its public HTTP APIs
// (/v1/inspect/*, /v1/stream/*, /v1/rooms/*) with the token the user gives (docs/operations.md).
// Everything from the server is shown with textContent, never parsed as HTML.
"use strict";

const REFRESH_MS = 2000;
const TAIL_LINES = 200;
let token = sessionStorage.getItem("durasync-token") || "";
let tailAbort = null;
let journalAbort = null;
let chosenStream = null;
let chosenRoom = null;

const $ = (id) => document.getElementById(id);

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(url, options = {}) {
  return fetch(url, { ...options, headers: headers(), cache: "no-store" });
}

async function apiJson(url) {
  const r = await api(url);
  if (!r.ok) {
    let message = r.status + " " + r.statusText;
    try {
      const body = await r.json();
      if (body && body.error) message = r.status + " " + body.error.code + ": " + body.error.message;
    } catch (_) { /* not JSON */ }
    const err = new Error(message);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.appendChild(td);
  return td;
}

function streamUrl(path) {
  return "/v1/stream/" + path.split("/").map(encodeURIComponent).join("/");
}

function showStatus(text) {
  $("status").textContent = text;
}

function appendLine(box, text) {
  const line = document.createElement("div");
  line.textContent = text;
  box.appendChild(line);
  while (box.childNodes.length > TAIL_LINES) box.removeChild(box.firstChild);
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); });
  });
}

// Reads a stream from its start, then waits for more with long-polls, until aborted.
async function follow(url, box, signal) {
  let offset = "-1";
  while (!signal.aborted) {
    let r;
    try {
      r = await api(url + "?offset=" + encodeURIComponent(offset) + "&live=long-poll", { signal });
    } catch (e) {
      if (signal.aborted) return;
      appendLine(box, "(connection failed: " + e.message + ")");
      await sleep(1000, signal);
      continue;
    }
    if (signal.aborted) return;
    const next = r.headers.get("Stream-Next-Offset");
    if (r.status === 204) {
      if (next) offset = next;
      continue;
    }
    if (!r.ok) {
      appendLine(box, "(" + r.status + ": " + (await r.text()) + ")");
      await sleep(1000, signal);
      continue;
    }
    const type = (r.headers.get("content-type") || "").toLowerCase();
    if (type.startsWith("application/json")) {
      for (const value of await r.json()) appendLine(box, JSON.stringify(value));
    } else if (type.startsWith("text/")) {
      appendLine(box, await r.text());
    } else {
      appendLine(box, "<" + (await r.arrayBuffer()).byteLength + " bytes>");
    }
    if (next) offset = next;
    if (r.headers.get("Stream-Closed") === "true") {
      appendLine(box, "(stream closed)");
      return;
    }
  }
}

function showLinks(links) {
  $("links-panel").hidden = links.length === 0;
  const rows = [];
  for (const l of links) {
    const row = document.createElement("tr");
    for (const v of [l.name, l.remote, l.status, l.connectivity, l.lag.messages, l.lag.seconds, l.deadLetters]) {
      cell(row, String(v));
    }
    rows.push(row);
  }
  $("links").tBodies[0].replaceChildren(...rows);
}

async function refreshNode() {
  try {
    const n = await apiJson("/v1/inspect/node");
    let text = "v" + n.version + " · up " + Math.round(n.uptimeSeconds) + " s · store " + n.store +
      (n.redis ? " (" + n.redis.url + ")" : "") + (n.storeAvailable ? "" : " UNAVAILABLE") +
      " · live reads " + n.liveRequests + " · rooms loaded " + n.roomsLoaded +
      " · replication links " + n.replicationLinks.length;
    $("node").textContent = text;
    showLinks(n.replicationLinks);
    showStatus("");
    return true;
  } catch (e) {
    $("node").textContent = "";
    showStatus(e.status === 401 || e.status === 403 ? "a token is needed: " + e.message : e.message);
    return false;
  }
}

async function refreshStreams() {
  const body = $("streams").tBodies[0];
  let data;
  try {
    data = await apiJson("/v1/inspect/streams?limit=500");
  } catch (e) {
    body.replaceChildren();
    return;
  }
  const rows = [];
  for (const s of data.streams) {
    const row = document.createElement("tr");
    row.className = "pick" + (s.path === chosenStream ? " chosen" : "");
    row.dataset.path = s.path;
    cell(row, s.path);
    cell(row, s.contentType);
    cell(row, s.messages);
    cell(row, s.bytes);
    cell(row, s.tail);
    cell(row, s.ttlSeconds !== null ? s.ttlSeconds + " s" : s.expiresAt || "");
    cell(row, s.closed ? "closed" : "");
    row.addEventListener("click", () => chooseStream(s.path));
    rows.push(row);
  }
  body.replaceChildren(...rows);
}

function chooseStream(path) {
  chosenStream = path;
  if (tailAbort) tailAbort.abort();
  tailAbort = new AbortController();
  $("tail-name").textContent = path;
  $("tail").replaceChildren();
  for (const row of $("streams").tBodies[0].rows) {
    row.classList.toggle("chosen", row.dataset.path === path);
  }
  follow(streamUrl(path), $("tail"), tailAbort.signal);
}

async function refreshRooms() {
  const body = $("rooms").tBodies[0];
  let data;
  try {
    data = await apiJson("/v1/rooms");
  } catch (e) {
    body.replaceChildren();
    return;
  }
  const rows = [];
  for (const r of data.rooms) {
    const row = document.createElement("tr");
    row.className = "pick" + (r.room === chosenRoom ? " chosen" : "");
    row.dataset.room = r.room;
    cell(row, r.room);
    cell(row, r.members);
    cell(row, r.clients);
    cell(row, r.loaded ? "yes" : "no");
    cell(row, r.serverSeq);
    row.addEventListener("click", () => chooseRoom(r.room));
    rows.push(row);
  }
  body.replaceChildren(...rows);
}

function graphTree(graph) {
  const nodes = graph.nodes || {};
  const seen = new Set();
  const build = (key, depth) => {
    const li = document.createElement("li");
    const n = nodes[key];
    if (!n || seen.has(key) || depth > 64) {
      li.textContent = key + (n ? " (…)" : " (missing)");
      return li;
    }
    seen.add(key);
    const props = Object.keys(n.props || {}).length ? " " + JSON.stringify(n.props) : "";
    li.textContent = key + " <" + n.tag + ">" + (n.name ? " " + n.name : "") + props;
    if (n.children && n.children.length) {
      const ul = document.createElement("ul");
      ul.className = "tree";
      for (const c of n.children) ul.appendChild(build(c, depth + 1));
      li.appendChild(ul);
    }
    return li;
  };
  const root = document.createElement("ul");
  root.className = "tree";
  root.appendChild(build(graph.rootKey, 0));
  return root;
}

async function refreshRoom() {
  if (!chosenRoom) return;
  const name = chosenRoom;
  const info = $("room-info");
  try {
    const r = await apiJson("/v1/inspect/rooms/" + encodeURIComponent(name));
    const members = r.members.map((m) => m.client + " (" + m.format + ")").join(", ") || "none";
    const presence = Object.entries(r.presence).map(([c, s]) => c + "=" + JSON.stringify(s)).join(", ") || "none";
    const pre = document.createElement("pre");
    pre.textContent = "room " + r.room + " · serverSeq " + r.serverSeq + " · epoch " + r.epoch +
      "\nmembers: " + members + "\npresence: " + presence +
      "\nsnapshot at seq " + r.snapshot.seq + " (journal offset " + r.snapshot.journalOffset + ")" +
      " · first available " + r.firstAvailable +
      "\njournal: " + r.journal.messages + " messages, " + r.journal.bytes + " bytes, tail " + r.journal.tail;
    info.replaceChildren(pre);
    const graph = await apiJson("/v1/rooms/" + encodeURIComponent(name) + "?view=live");
    if (name === chosenRoom) $("room-graph").replaceChildren(graphTree(graph));
  } catch (e) {
    info.textContent = e.message;
  }
}

function chooseRoom(name) {
  chosenRoom = name;
  if (journalAbort) journalAbort.abort();
  journalAbort = new AbortController();
  $("room-name").textContent = name;
  $("journal").replaceChildren();
  $("room-graph").replaceChildren();
  for (const row of $("rooms").tBodies[0].rows) {
    row.classList.toggle("chosen", row.dataset.room === name);
  }
  refreshRoom();
  follow("/v1/rooms/" + encodeURIComponent(name) + "/journal", $("journal"), journalAbort.signal);
}

async function refreshAll() {
  if (await refreshNode()) {
    await Promise.all([refreshStreams(), refreshRooms(), refreshRoom()]);
  } else {
    $("streams").tBodies[0].replaceChildren();
    $("rooms").tBodies[0].replaceChildren();
  }
}

$("token").value = token;
$("use-token").addEventListener("click", () => {
  token = $("token").value.trim();
  sessionStorage.setItem("durasync-token", token);
  chosenStream = null;
  chosenRoom = null;
  if (tailAbort) tailAbort.abort();
  if (journalAbort) journalAbort.abort();
  $("tail").replaceChildren();
  $("journal").replaceChildren();
  $("room-info").replaceChildren();
  $("room-graph").replaceChildren();
  refreshAll();
});

refreshAll();
setInterval(refreshAll, REFRESH_MS);
