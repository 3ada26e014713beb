// End-user chat page: talks to /ws/user with the JSON frames of docs/protocol.md.
// All text is inserted with textContent, never as HTML.
"use strict";

const log = document.getElementById("log");
const form = document.getElementById("composer");
const input = document.getElementById("text");
const sendButton = document.getElementById("send");
const statusBadge = document.getElementById("status");
const typingNote = document.getElementById("typing");

const CONVERSATION_KEY = "larkspur.conversation_id";
const CURSOR_KEY = "larkspur.last_event_id";
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 5000, 10000];
const TYPING_IDLE_MS = 3000;

let socket = null;
let reconnectAttempt = 0;
let withAgent = false;
let typingSent = false;
let typingTimer = null;
const unacked = new Map(); // client id -> frame, resent after a reconnect (the server dedupes)

function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

function setStatus(kind, text) {
  statusBadge.className = "status status--" + kind;
  statusBadge.textContent = text;
  const online = kind === "online";
  input.disabled = !online;
  sendButton.disabled = !online;
}

function append(kind, text, options = {}) {
  const item = document.createElement("li");
  item.className = "msg msg--" + kind;
  if (options.who) {
    const who = document.createElement("div");
    who.className = "msg__who";
    who.textContent = options.who;
    item.appendChild(who);
  }
  const body = document.createElement("div");
  body.textContent = text || "";
  item.appendChild(body);
  if (options.buttons && options.buttons.length) {
    const row = document.createElement("div");
    row.className = "msg__buttons";
    for (const b of options.buttons) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = b.title;
      button.addEventListener("click", () => sendText(b.payload || b.title, b.title));
      row.appendChild(button);
    }
    item.appendChild(row);
  }
  if (options.feedback) item.appendChild(feedbackRow(options.feedback));
  log.appendChild(item);
  log.scrollTop = log.scrollHeight;
  return item;
}

function feedbackRow(inReplyTo) {
  const row = document.createElement("div");
  row.className = "msg__feedback";
  const down = document.createElement("button");
  down.type = "button";
  down.title = "This answer did not help";
  down.setAttribute("aria-label", "This answer did not help");
  down.appendChild(thumbsDownIcon());
  down.addEventListener("click", () => {
    row.replaceChildren();
    transmit({ type: "feedback", id: newId(), in_reply_to: inReplyTo, helpful: false });
    offerPerson();
  });
  row.appendChild(down);
  return row;
}

const SVG_NS = "http://www.w3.org/2000/svg";

// A thumbs-down drawn as SVG: an emoji needs a colour-emoji font, which many systems lack.
function thumbsDownIcon() {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "16");
  svg.setAttribute("height", "16");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute(
    "d",
    "M15 3H6c-.83 0-1.54.5-1.84 1.22l-3.02 7.05c-.09.23-.14.47-.14.73v2c0 1.1.9 2 2 2h6.31" +
      "l-.95 4.57-.03.32c0 .41.17.79.44 1.06L9.83 23l6.59-6.59c.36-.36.58-.86.58-1.41V5" +
      "c0-1.1-.9-2-2-2zm4 0v12h4V3h-4z",
  );
  path.setAttribute("fill", "currentColor");
  svg.appendChild(path);
  return svg;
}

function offerPerson() {
  const item = append("notice", "Sorry that didn't help. Would you like to talk to a person?");
  const yes = document.createElement("button");
  yes.type = "button";
  yes.textContent = "Yes, connect me";
  yes.addEventListener("click", () => {
    item.querySelectorAll("button").forEach((b) => b.remove());
    transmit({ type: "request_human", id: newId() });
  });
  const no = document.createElement("button");
  no.type = "button";
  no.textContent = "No, thanks";
  no.addEventListener("click", () => item.querySelectorAll("button").forEach((b) => b.remove()));
  item.append(yes, no);
}

function transmit(frame) {
  if (frame.id) unacked.set(frame.id, frame);
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
}

function sendText(text, shownText) {
  append("user", shownText || text);
  transmit({ type: "message", id: newId(), text });
  stopTyping();
}

function stopTyping() {
  clearTimeout(typingTimer);
  if (typingSent && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "typing", typing: false }));
  }
  typingSent = false;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const params = new URLSearchParams();
  const conversationId = localStorage.getItem(CONVERSATION_KEY);
  const cursor = localStorage.getItem(CURSOR_KEY);
  if (conversationId) params.set("conversation_id", conversationId);
  if (conversationId && cursor) params.set("last_event_id", cursor);
  socket = new WebSocket(scheme + "//" + location.host + "/ws/user?" + params.toString());
  setStatus("connecting", "connecting…");

  socket.addEventListener("message", (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    if (frame.event_id) localStorage.setItem(CURSOR_KEY, String(frame.event_id));
    handle(frame);
  });
  socket.addEventListener("close", () => {
    setStatus("offline", "reconnecting…");
    const delay = RECONNECT_DELAYS_MS[Math.min(reconnectAttempt++, RECONNECT_DELAYS_MS.length - 1)];
    setTimeout(connect, delay);
  });
}

function handle(frame) {
  switch (frame.type) {
    case "ready":
      localStorage.setItem(CONVERSATION_KEY, frame.conversation_id);
      if (!localStorage.getItem(CURSOR_KEY)) localStorage.setItem(CURSOR_KEY, String(frame.last_event_id));
      withAgent = frame.state === "assigned" || frame.state === "queued";
      reconnectAttempt = 0;
      setStatus("online", withAgent ? "with our team" : "online");
      for (const pending of unacked.values()) socket.send(JSON.stringify(pending));
      break;
    case "ack":
      unacked.delete(frame.id);
      break;
    case "bot":
      typingNote.hidden = true;
      append("bot", frame.text, { buttons: frame.buttons, feedback: frame.in_reply_to });
      break;
    case "agent":
      typingNote.hidden = true;
      append("agent", frame.text, { who: frame.agent });
      break;
    case "handoff":
      withAgent = ["queued", "no_agents", "agent_joined"].includes(frame.status);
      setStatus("online", withAgent ? "with our team" : "online");
      append("notice", frame.text);
      break;
    case "queue_position":
      setStatus("online", `in queue: ${frame.position} of ${frame.waiting}`);
      break;
    case "typing":
      // "who": the agent, or the assistant while a person checks its answer
      typingNote.textContent = frame.who === "bot" ? "The assistant is typing…" : "An agent is typing…";
      typingNote.hidden = !frame.typing;
      break;
    case "resync":
      localStorage.setItem(CURSOR_KEY, String(frame.last_event_id));
      append("notice", "Some earlier messages could not be restored.");
      break;
    case "error":
      if (frame.id) unacked.delete(frame.id);
      append("error", frame.message);
      break;
  }
}

input.addEventListener("input", () => {
  if (!typingSent && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "typing", typing: true }));
    typingSent = true;
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  sendText(text);
  input.focus();
});

connect();
