// The wshub demo page: one WebSocket client speaking the v1 protocol
// (docs/protocol.md). Everything shown is set with textContent, never
// parsed as HTML: messages come from other people.
"use strict";

const $ = (id) => document.getElementById(id);
let ws = null;
let nextId = 1;
const pending = new Map(); // request id -> {body, onAck}
// The node's largest message (the welcome says), checked before sending.
let maxMessageBytes = 0;
// Reconnecting by itself (docs/clients.md#reconnecting): attempts since the
// last welcome, the pending retry, and whether the person asked to stop.
let attempt = 0;
let retry = null;
let stopped = false;
// The page's topics and, for topics with history, where it stopped in each
// ({offset, epoch}): kept for the tab's life (a reload keeps them), so a
// reconnect asks for what it missed (docs/history.md).
const saved = JSON.parse(sessionStorage.getItem("wshub-demo") || "{}");
const topics = new Set(saved.topics || []);
const positions = new Map(Object.entries(saved.positions || {}));
function save() {
  sessionStorage.setItem("wshub-demo", JSON.stringify({ topics: [...topics], positions: Object.fromEntries(positions) }));
}

const scheme = location.protocol === "https:" ? "wss:" : "ws:";
$("url").value = `${scheme}//${location.host}/ws`;
const query = new URLSearchParams(location.search);
if (query.get("token")) $("token").value = query.get("token");

// What a close code means to the person at the page (docs/protocol.md#close-codes).
function explain(code, reason) {
  const why = reason ? ` ${reason}` : "";
  if (code >= 4000 && code <= 4999 && code !== 4008 && code !== 4010 && code !== 4029) {
    return `kicked by the operator: ${code}${why}`;
  }
  switch (code) {
    case 4008: return "evicted: too slow (4008): this client did not read fast enough";
    case 4010: return "missed messages the cluster could not fill in (4010): reconnect, and the topics are recovered if they still can be";
    case 4029: return `closed: rate limited (4029)${why ? ":" + why : ""}; wait, then send less`;
    case 1000: return reason === "ping timeout" ? "closed: silent for too long (1000 ping timeout)" : `closed (1000)${why}`;
    case 1001: return "the server is shutting down (1001): reconnect in a moment";
    case 1002: return `protocol error (1002)${why}`;
    case 1003: return "closed: binary frames are not supported (1003)";
    case 1006: return "connection lost, or refused before it opened (1006): the server may be down, draining, full, or it refused this page's origin or token (see wshub_handshake_failures_total)";
    case 1007: return "closed: invalid UTF-8 (1007)";
    case 1008: return `closed by policy (1008)${why}: get a fresh token and reconnect`;
    case 1009: return "closed: message too large (1009)";
    case 1011: return "the server hit an internal error (1011): reconnect";
    case 1012: return "the node is being drained for a deploy (1012 service restart): reconnect";
    default: return `closed (${code})${why}`;
  }
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = kind || "";
}

function log(kind, where, text, attrs) {
  const li = document.createElement("li");
  li.className = kind;
  for (const [k, v] of Object.entries(attrs || {})) li.dataset[k] = v;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  const w = document.createElement("span");
  w.className = "where";
  w.textContent = where;
  const data = document.createElement("span");
  data.className = "data";
  data.textContent = text;
  li.append(time, w, data);
  const list = $("log");
  list.prepend(li);
  while (list.children.length > 500) list.lastChild.remove();
}

function connected(on) {
  for (const id of ["subscribe", "publish", "disconnect"]) $(id).disabled = !on;
  $("connect").disabled = on;
}

function renderTopics() {
  const list = $("topics");
  list.replaceChildren();
  for (const topic of [...topics].sort()) {
    const li = document.createElement("li");
    li.textContent = topic;
    li.dataset.topic = topic;
    const x = document.createElement("button");
    x.textContent = "×";
    x.title = `unsubscribe from ${topic}`;
    x.onclick = () => request({ type: "unsubscribe", topic }, () => {
      topics.delete(topic);
      positions.delete(topic);
      save();
      renderTopics();
    });
    li.append(x);
    list.append(li);
  }
}

// What a request was, in words: "subscribe #news", "publish to everyone".
function describe(body) {
  const where = body.topic ? `#${body.topic}` : "everyone";
  return body.type === "publish" ? `publish to ${where}` : `${body.type} ${where}`;
}

function request(body, onAck) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const id = nextId++;
  const text = JSON.stringify({ ...body, id });
  const size = new TextEncoder().encode(text).length;
  if (maxMessageBytes && size > maxMessageBytes) {
    // The server would close the connection (1009): refused here instead.
    log("error", `not sent · ${describe(body)}`,
      `the request is ${size} bytes; this server takes at most ${maxMessageBytes}`, { code: "too_large" });
    return;
  }
  pending.set(id, { body, onAck });
  ws.send(text);
}

// Whether to reconnect after a close, by the rules of docs/clients.md:
// {again: true, extra: ms to wait beyond the backoff} or {again: false}.
function plan(code, reason) {
  if (code === 4029) return { again: true, extra: 10000 };
  if ([1001, 1005, 1006, 1011, 1012, 4002, 4008, 4010].includes(code)) return { again: true, extra: 0 };
  if (code === 1000 && reason === "ping timeout") return { again: true, extra: 0 };
  return { again: false };
}

// Reconnects after a pause: full jitter up to min(30 s, 0.5 s · 2^attempt),
// plus `extra`, counting down where the status is.
function reconnectLater(extra) {
  cancelRetry();
  const wait = Math.random() * Math.min(30000, 500 * 2 ** attempt) + extra;
  attempt++;
  const at = Date.now() + wait;
  const tick = () => {
    const left = Math.max(0, Math.ceil((at - Date.now()) / 1000));
    $("retry").textContent = `reconnecting in ${left} s…`;
  };
  tick();
  retry = { timer: setTimeout(() => { cancelRetry(); connect(); }, wait), ticker: setInterval(tick, 250) };
}

function cancelRetry() {
  if (retry) {
    clearTimeout(retry.timer);
    clearInterval(retry.ticker);
    retry = null;
  }
  $("retry").textContent = "";
}

// Subscribes to `topic`; with a position kept for it, asks for what was
// missed since, and says whether it came.
function subscribe(topic) {
  const since = positions.get(topic);
  const body = since ? { type: "subscribe", topic, since } : { type: "subscribe", topic };
  request(body, (ack) => {
    topics.add(topic);
    renderTopics();
    if (since && ack.recovered) {
      const missed = ack.offset - since.offset;
      log("system", `#${topic}`, `recovered ${missed} missed message${missed === 1 ? "" : "s"}`, { recovered: String(missed) });
    } else if (since) {
      log("system", `#${topic}`, "missed messages could not be recovered (history gone or the server restarted); showing new ones", { recovered: "no" });
    }
    if (ack.epoch) {
      // Recovered: the replay that follows moves the offset on.
      positions.set(topic, { offset: since && ack.recovered ? since.offset : ack.offset, epoch: ack.epoch });
    } else {
      positions.delete(topic);
    }
    save();
  });
}

function connect() {
  cancelRetry();
  if (ws) {
    ws.onclose = null;
    ws.close();
  }
  pending.clear();
  let url = $("url").value.trim();
  const token = $("token").value.trim();
  if (token) url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  setStatus("connecting…");
  let socket;
  try {
    socket = new WebSocket(url);
  } catch (e) {
    setStatus(`cannot connect: ${e.message}`, "bad");
    connected(false);
    return;
  }
  ws = socket;
  socket.onmessage = (e) => {
    let frame;
    try { frame = JSON.parse(e.data); } catch { log("error", "server", `not JSON: ${e.data}`); return; }
    switch (frame.type) {
      case "welcome":
        attempt = 0;
        maxMessageBytes = frame.max_message_bytes || 0;
        $("client-id").textContent = frame.client_id;
        $("node").textContent = frame.node || "–";
        $("user-line").hidden = !frame.user;
        $("user").textContent = frame.user || "";
        setStatus("connected", "ok");
        connected(true);
        $("connect").hidden = false;
        $("reconnect").hidden = true;
        log("system", "welcome", `you are ${frame.client_id} on node ${frame.node}`);
        // Subscriptions belong to a connection: a reconnect renews them,
        // asking for what was missed where the topic keeps history.
        for (const topic of topics) subscribe(topic);
        break;
      case "message": {
        const at = frame.offset ? ` · offset ${frame.offset}` : "";
        log("message", `${frame.topic ? "#" + frame.topic : "everyone"} · ${frame.from}${at}`,
          JSON.stringify(frame.data, null, 1), { from: frame.from, topic: frame.topic || "", offset: frame.offset || "" });
        const position = frame.topic && positions.get(frame.topic);
        if (position && frame.offset) {
          position.offset = frame.offset;
          save();
        }
        break;
      }
      case "ack": {
        const done = pending.get(frame.id);
        pending.delete(frame.id);
        if (done && done.onAck) done.onAck(frame);
        break;
      }
      case "error": {
        // Named by the request it answers, when it has an id.
        const asked = pending.get(frame.id);
        pending.delete(frame.id);
        const what = asked ? ` · ${describe(asked.body)}` : "";
        log("error", `error · ${frame.code}${what}`, frame.message, { code: frame.code });
        break;
      }
      case "pong":
        break;
      default:
        log("system", frame.type, e.data);
    }
  };
  socket.onclose = (e) => {
    if (ws !== socket) return;
    const text = explain(e.code, e.reason);
    setStatus(text, e.code === 1000 && !e.reason ? "" : "bad");
    log("closed", `closed · ${e.code}`, text, { code: String(e.code), reason: e.reason });
    connected(false);
    $("connect").hidden = true;
    $("reconnect").hidden = false;
    ws = null;
    const next = plan(e.code, e.reason);
    if (stopped) {
      $("retry").textContent = "";
    } else if (next.again) {
      reconnectLater(next.extra);
    } else {
      // Retrying would fail the same way, or an operator said go.
      $("retry").textContent = "not reconnecting by itself: press Reconnect to try again";
    }
  };
}

$("connect").onclick = () => { stopped = false; connect(); };
$("reconnect").onclick = () => { stopped = false; connect(); };
$("disconnect").onclick = () => { stopped = true; cancelRetry(); if (ws) ws.close(1000); };
$("subscribe-form").onsubmit = (e) => {
  e.preventDefault();
  const topic = $("topic").value.trim();
  if (topic) subscribe(topic);
};
$("publish-form").onsubmit = (e) => {
  e.preventDefault();
  let data;
  try {
    data = JSON.parse($("pub-data").value);
  } catch (err) {
    log("error", "not sent", `the data is not JSON: ${err.message}`);
    return;
  }
  const topic = $("pub-topic").value.trim();
  request(topic ? { type: "publish", topic, data } : { type: "publish", data }, (ack) => {
    const at = ack.offset ? ` · offset ${ack.offset}` : "";
    log("sent", `→ ${topic ? "#" + topic : "everyone"} · acked${at}`, JSON.stringify(data, null, 1), { acked: String(ack.id) });
  });
};

connected(false);
renderTopics();
connect();
