// Agent console: signs in over /api/login, then lives on the /ws/agent websocket
// (frames in docs/protocol.md). Every piece of conversation text is inserted with
// textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const RECONNECT_DELAYS_MS = [500, 1000, 2000, 5000];
const TYPING_IDLE_MS = 3000;
// Close codes of /ws/agent that end the sign-in (docs/protocol.md): no reconnect.
const SIGNED_OUT_MESSAGES = {
  4001: "Your account was disabled, so you were signed out. Ask a maintainer if this is a mistake.",
  4002: "Your role changed. Sign in again to get your new rights.",
  4003: "Your session ended. Sign in again.",
};
const SIGNIN_MESSAGE_KEY = "handoff-signin-message";

const state = {
  me: null,
  socket: null,
  lastEventId: null,
  reconnectAttempt: 0,
  intents: [],
  responses: {},
  queue: [],
  conversations: new Map(), // id -> {id, reason, messages: [], typing}
  active: null,
  presence: [],
  pending: new Map(), // client id -> callback(ack)
  cannedText: null,
  typingTimer: null,
  typingSent: false,
  signingOut: false,
  approvals: new Map(), // approval id -> held bot answer waiting for this agent
  drafts: new Map(), // conversation id -> the bot's answer to its last user message
  earlyMessages: new Map(), // conversation id -> messages that came before its transcript
  earlyIntents: new Map(), // message id -> guesses that came before their message was shown
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function newId() {
  return (crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2));
}

function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

function send(frame, onAck) {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) {
    toast("Not connected; try again in a moment.");
    return;
  }
  if (frame.id && onAck) state.pending.set(frame.id, onAck);
  state.socket.send(JSON.stringify(frame));
}

// ---- sign-in ---------------------------------------------------------------------------

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
    credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
  return data;
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  try {
    const data = await api("POST", "/api/login", { username: $("username").value, password: $("password").value });
    start(data.agent);
  } catch (error) {
    $("signin-error").textContent = error.message;
  }
});

$("signout").addEventListener("click", async () => {
  state.signingOut = true; // the server closes the socket (4003): no message for that
  await api("POST", "/api/logout").catch(() => {});
  location.reload();
});

function start(agent) {
  state.me = agent;
  $("signin").hidden = true;
  $("console").hidden = false;
  $("me").textContent = `${agent.display_name} (${agent.role})`;
  $("manage-agents").hidden = agent.role !== "maintainer";
  $("open-review").hidden = agent.role !== "maintainer";
  $("open-cockpit").hidden = agent.role !== "maintainer";
  connect();
}

// ---- websocket -------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = state.lastEventId !== null ? `?last_event_id=${state.lastEventId}` : "";
  const socket = new WebSocket(`${scheme}//${location.host}/ws/agent${query}`);
  state.socket = socket;
  $("connection").textContent = "connecting…";
  socket.addEventListener("message", (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    if (frame.event_id) state.lastEventId = frame.event_id;
    handle(frame);
  });
  socket.addEventListener("close", (event) => {
    if (state.signingOut) return;
    if (SIGNED_OUT_MESSAGES[event.code]) {
      sessionStorage.setItem(SIGNIN_MESSAGE_KEY, SIGNED_OUT_MESSAGES[event.code]);
      location.reload(); // back to the sign-in screen, with nothing of the old session left
      return;
    }
    $("connection").textContent = "reconnecting…";
    const delay = RECONNECT_DELAYS_MS[Math.min(state.reconnectAttempt++, RECONNECT_DELAYS_MS.length - 1)];
    setTimeout(connect, delay);
  });
}

function handle(frame) {
  switch (frame.type) {
    case "hello":
      state.reconnectAttempt = 0;
      state.intents = frame.intents;
      state.responses = frame.responses;
      state.queue = frame.queue;
      if (state.lastEventId === null) state.lastEventId = frame.last_event_id;
      $("connection").textContent = "connected";
      $("model").textContent = `model ${frame.model}`;
      state.approvals = new Map((frame.approvals || []).map((a) => [a.approval_id, a]));
      renderApprovals();
      for (const id of frame.assigned) openConversation(id);
      for (const id of [...state.conversations.keys()]) {
        if (!frame.assigned.includes(id)) dropConversation(id);
      }
      renderQueue();
      if (location.hash.startsWith("#conversation=")) {
        openConversation(decodeURIComponent(location.hash.slice("#conversation=".length)));
      }
      break;
    case "model":
      state.intents = frame.intents;
      state.responses = frame.responses;
      $("model").textContent = `model ${frame.model}`;
      toast(`The assistant now answers with model ${frame.model}.`);
      break;
    case "resync":
      state.lastEventId = null;
      state.socket.close();
      break;
    case "queue":
      state.queue = frame.items;
      renderQueue();
      break;
    case "assigned":
      openConversation(frame.conversation_id);
      break;
    case "unassigned":
      dropConversation(frame.conversation_id);
      break;
    case "user_message":
      addMessage(frame.conversation_id, frame.message);
      break;
    case "intents":
      setIntents(frame.conversation_id, frame.message_id, frame.ranking);
      break;
    case "agent_message":
      addMessage(frame.conversation_id, { message_id: frame.message_id, sender: "agent", text: frame.text, agent_id: state.me.id });
      break;
    case "labelled":
      setLabel(frame.conversation_id, frame.message_id, frame.intent);
      break;
    case "typing": {
      const conversation = state.conversations.get(frame.conversation_id);
      if (conversation) { conversation.typing = frame.typing; renderTyping(); }
      break;
    }
    case "presence":
      state.presence = frame.agents;
      renderPresence();
      break;
    case "approval":
      state.approvals.set(frame.approval_id, frame);
      renderApprovals();
      break;
    case "approval_settled":
      if (state.approvals.delete(frame.approval_id)) {
        if (frame.outcome === "timed_out") toast("An answer waited too long and was sent as the bot wrote it.");
        if (frame.outcome === "superseded") toast("The user wrote again: the bot's answer was sent as it was.");
        renderApprovals();
      }
      break;
    case "ack": {
      const callback = state.pending.get(frame.id);
      state.pending.delete(frame.id);
      if (callback) callback(frame);
      break;
    }
    case "error": {
      state.pending.delete(frame.id);
      toast(frame.message);
      break;
    }
  }
}

// ---- answers to approve --------------------------------------------------------------------

// Intents an agent can answer as, for a held answer: its ranking first (what the number keys
// pick), then every other intent of the model.
function approvalChoices(approval) {
  const ranked = (approval.message.intents || []).map((i) => i.name).filter((n) => n !== "nlu_fallback");
  return ranked.slice(0, 9);
}

function decideHeld(approval, type, extra) {
  send({ type, id: newId(), approval_id: approval.approval_id, ...extra });
}

function approvalCard(approval, first) {
  const card = el("li", first ? "approval first" : "approval");
  card.dataset.approvalId = String(approval.approval_id);
  card.appendChild(el("div", "user-text", approval.message.text));
  card.appendChild(intentChips(approval.message.intents, 5, true));
  card.appendChild(el("div", "draft", approval.draft.map((m) => m.text || "").join(" ")));

  const row = el("div", "row");
  const approve = el("button", "approve", "Approve (A)");
  approve.type = "button";
  approve.addEventListener("click", () => decideHeld(approval, "approve"));
  const select = el("select");
  select.setAttribute("aria-label", "Answer as intent");
  const choices = approvalChoices(approval);
  choices.forEach((name, index) => {
    const option = el("option", null, `${index + 1}. ${name}`);
    option.value = name;
    select.appendChild(option);
  });
  for (const name of state.intents.filter((n) => !choices.includes(n))) {
    const option = el("option", null, name);
    option.value = name;
    select.appendChild(option);
  }
  const correct = el("button", "correct", "Answer as this intent");
  correct.type = "button";
  correct.addEventListener("click", () => decideHeld(approval, "correct", { intent: select.value }));
  row.append(approve, select, correct, el("span", "countdown"));
  card.appendChild(row);

  const own = el("div", "row");
  const text = el("textarea");
  text.rows = 2;
  text.maxLength = 2000;
  text.placeholder = "Or write the answer yourself (R), Ctrl+Enter to send";
  const replace = el("button", "replace", "Send mine");
  replace.type = "button";
  let picked = false; // the intent list labels a written answer only when the agent chose one
  select.addEventListener("change", () => { picked = true; });
  const sendOwn = () => {
    const reply = text.value.trim();
    if (reply) decideHeld(approval, "replace", { text: reply, intent: picked ? select.value : null });
  };
  replace.addEventListener("click", sendOwn);
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); sendOwn(); }
    if (event.key === "Escape") text.blur();
  });
  own.append(text, replace);
  card.appendChild(own);
  return card;
}

function renderApprovals() {
  const approvals = [...state.approvals.values()].sort((a, b) => a.deadline - b.deadline);
  $("approvals").hidden = approvals.length === 0;
  $("approvals-count").textContent = String(approvals.length);
  const list = $("approval-list");
  list.replaceChildren(...approvals.map((approval, index) => approvalCard(approval, index === 0)));
  renderCountdowns();
}

function renderCountdowns() {
  for (const card of document.querySelectorAll("#approval-list .approval")) {
    const approval = state.approvals.get(Number(card.dataset.approvalId));
    if (!approval) continue;
    const left = Math.max(0, Math.round(approval.deadline - Date.now() / 1000));
    card.querySelector(".countdown").textContent = `sent as it is in ${left} s`;
  }
}
setInterval(renderCountdowns, 1000);

// The keys act on the first held answer, unless the agent is typing somewhere.
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLElement && target.closest("input, textarea, select")) return;
  const first = [...state.approvals.values()].sort((a, b) => a.deadline - b.deadline)[0];
  if (!first) { conversationKey(event); return; }
  if (event.key === "a" || event.key === "A") {
    event.preventDefault();
    decideHeld(first, "approve");
  } else if (/^[1-9]$/.test(event.key)) {
    const intent = approvalChoices(first)[Number(event.key) - 1];
    if (intent) { event.preventDefault(); decideHeld(first, "correct", { intent }); }
  } else if (event.key === "r" || event.key === "R") {
    event.preventDefault();
    document.querySelector("#approval-list .approval.first textarea").focus();
  }
});

// Keys on the open conversation (when no held answer waits): confirm an intent of its last
// user message, use or send the bot's draft, go to the next conversation.
function conversationKey(event) {
  const conversation = state.conversations.get(state.active);
  const key = event.key.toLowerCase();
  if (key === "n" && state.conversations.size) {
    event.preventDefault();
    const ids = [...state.conversations.keys()];
    state.active = ids[(ids.indexOf(state.active) + 1) % ids.length];
    renderMine();
    renderChat();
    return;
  }
  if (!conversation) return;
  const message = lastUserMessage(conversation);
  if (key === "d" || key === "s") { event.preventDefault(); useDraft(key === "s"); return; }
  if (!message) return;
  const guesses = (message.intents || []).map((i) => i.name).filter((n) => n !== "nlu_fallback");
  let intent = null;
  if (key === "c") {
    const selects = document.querySelectorAll("#transcript .msg.user select");
    intent = selects.length ? selects[selects.length - 1].value : guesses[0];
  } else if (/^[1-9]$/.test(key)) {
    intent = guesses[Number(key) - 1];
  }
  if (intent && intent !== "__new__") {
    event.preventDefault();
    send({ type: "label", id: newId(), message_id: message.message_id, intent });
  }
}

$("reply").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    $("reply-form").requestSubmit();
  }
});

// ---- queue -------------------------------------------------------------------------------

function waited(since) {
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - since));
  return seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

function intentChips(ranking, limit, saysNone) {
  const row = el("div", "intents");
  // [] is "no guesses" (the assistant skipped NLU of a superseded message); null: still to come.
  if (saysNone && Array.isArray(ranking) && ranking.length === 0) row.appendChild(el("span", "intent", "no guesses"));
  for (const item of (ranking || []).slice(0, limit)) {
    row.appendChild(el("span", "intent", `${item.name} ${Math.round(item.confidence * 100)}%`));
  }
  return row;
}

function renderQueue() {
  const list = $("queue");
  list.replaceChildren();
  $("queue-count").textContent = state.queue.length;
  for (const item of state.queue) {
    const entry = el("li");
    entry.dataset.conversationId = item.conversation_id;
    const head = el("div");
    head.appendChild(el("strong", null, `#${item.position}`));
    head.appendChild(document.createTextNode(" waiting "));
    head.appendChild(el("span", "waited", waited(item.queued_at)));
    head.dataset.since = item.queued_at;
    head.appendChild(document.createTextNode(` · ${item.reason || ""}`));
    entry.appendChild(head);
    entry.appendChild(el("p", "last", item.last_message || ""));
    entry.appendChild(intentChips(item.intents, 3));
    const claim = el("button", "claim", "Claim");
    claim.type = "button";
    claim.addEventListener("click", () => {
      send({ type: "claim", id: newId(), conversation_id: item.conversation_id }, (ack) => {
        loadTranscript(ack.transcript);
      });
    });
    entry.appendChild(claim);
    list.appendChild(entry);
  }
}

setInterval(() => {
  for (const node of document.querySelectorAll("#queue .waited")) {
    node.textContent = waited(Number(node.parentElement.dataset.since));
  }
}, 1000);

function renderPresence() {
  const list = $("agents-online");
  list.replaceChildren();
  const select = $("transfer-to");
  select.replaceChildren(el("option", null, "back to the queue"));
  select.firstChild.value = "";
  for (const agent of state.presence) {
    list.appendChild(el("li", null, `${agent.display_name} · ${agent.status}`));
  }
  api("GET", "/api/agents").then((data) => fillTransferTargets(data.agents)).catch(() => {
    fillTransferTargets(state.presence.map((p) => ({ username: null, display_name: p.display_name })));
  });
}

function fillTransferTargets(agents) {
  const select = $("transfer-to");
  for (const agent of agents) {
    if (!agent.username || agent.username === state.me.username || agent.disabled) continue;
    const option = el("option", null, `to ${agent.display_name}`);
    option.value = agent.username;
    select.appendChild(option);
  }
}

$("presence").addEventListener("change", (event) => send({ type: "presence", status: event.target.value }));

// ---- conversations -----------------------------------------------------------------------

function openConversation(id) {
  send({ type: "open", id: newId(), conversation_id: id }, (ack) => loadTranscript(ack.transcript));
}

function loadTranscript(transcript) {
  const conversation = state.conversations.get(transcript.conversation_id) || { typing: false };
  conversation.id = transcript.conversation_id;
  conversation.reason = transcript.handoff_reason;
  conversation.slots = transcript.slots || {};
  conversation.activeLoop = transcript.active_loop || null;
  const early = state.earlyMessages.get(conversation.id) || [];
  state.earlyMessages.delete(conversation.id);
  conversation.messages = mergedMessages([...(conversation.messages || []), ...early], transcript.messages);
  state.conversations.set(conversation.id, conversation);
  if (!state.active) state.active = conversation.id;
  renderMine();
  renderChat();
  requestDraft(conversation);
}

// A transcript is read a moment before it arrives: what came as events meanwhile (messages
// and guesses, also before the conversation was on screen at all) is newer and is kept.
function mergedMessages(shown, transcribed) {
  const before = new Map(shown.map((m) => [m.message_id, m]));
  const merged = transcribed.map((m) => {
    const old = before.get(m.message_id);
    before.delete(m.message_id);
    if (!old) return m;
    return { ...m, intents: m.intents ?? old.intents ?? null, label: m.label ?? old.label ?? null };
  });
  return [...merged, ...before.values()].map(withEarlyIntents);
}

function dropConversation(id) {
  state.conversations.delete(id);
  state.earlyMessages.delete(id);
  if (state.active === id) state.active = state.conversations.keys().next().value || null;
  renderMine();
  renderChat();
}

function addMessage(conversationId, message) {
  const conversation = state.conversations.get(conversationId);
  if (!conversation) { // its transcript is still on its way: kept until it comes
    state.earlyMessages.set(conversationId, [...(state.earlyMessages.get(conversationId) || []), message]);
    return;
  }
  if (conversation.messages.some((m) => m.message_id === message.message_id)) return;
  conversation.messages.push(withEarlyIntents(message));
  if (message.sender === "user") conversation.typing = false;
  renderMine();
  if (state.active === conversationId) renderChat();
}

// Guesses can arrive before their message is on screen (a transcript read a moment before
// they were stored): they are kept until it is.
function withEarlyIntents(message) {
  const early = state.earlyIntents.get(message.message_id);
  if (early === undefined) return message;
  state.earlyIntents.delete(message.message_id);
  return message.intents == null ? { ...message, intents: early } : message;
}

function setIntents(conversationId, messageId, ranking) {
  const conversation = state.conversations.get(conversationId);
  const message = conversation && conversation.messages.find((m) => m.message_id === messageId);
  if (!message) { state.earlyIntents.set(messageId, ranking); return; }
  message.intents = ranking;
  if (state.active === conversationId) renderChat();
  if (isLastUserMessage(conversation, message)) requestDraft(conversation);
}

function setLabel(conversationId, messageId, intent) {
  const conversation = state.conversations.get(conversationId);
  const message = conversation && conversation.messages.find((m) => m.message_id === messageId);
  if (!message) return;
  message.label = intent;
  if (state.active === conversationId) renderChat();
  if (isLastUserMessage(conversation, message)) requestDraft(conversation, intent);
}

function lastUserMessage(conversation) {
  return [...conversation.messages].reverse().find((m) => m.sender === "user");
}

// By id: a transcript loaded again holds new objects for the same messages.
function isLastUserMessage(conversation, message) {
  const last = lastUserMessage(conversation);
  return Boolean(last) && last.message_id === message.message_id;
}

// The bot's answer to the last user message (for its top guess, or the intent the agent
// confirmed), as a draft the agent can edit or send: nothing is sent or run by asking.
function requestDraft(conversation, intent) {
  const message = lastUserMessage(conversation);
  if (!message || (!intent && message.intents == null)) return; // its guesses are still to come
  const frame = { type: "suggest", id: newId(), message_id: message.message_id };
  if (intent) frame.intent = intent;
  send(frame, (ack) => {
    if (!isLastUserMessage(conversation, message)) return; // a newer message came meanwhile
    state.drafts.set(conversation.id, ack);
    if (state.active === conversation.id) renderDraft(conversation);
  });
}

function draftText(draft) {
  return (draft.draft || []).map((m) => m.text || "").filter(Boolean).join("\n");
}

function renderDraft(conversation) {
  const draft = state.drafts.get(conversation.id);
  const text = draft ? draftText(draft) : "";
  const needs = draft && draft.stopped_at ? `it would then run ${draft.stopped_at}, which only the bot can do: hand back for that` : "";
  $("draft").hidden = !draft || (!text && !needs);
  if (!draft) return;
  $("draft-intent").textContent = draft.intent || "";
  $("draft-text").textContent = [text, needs].filter(Boolean).join(" — ");
  $("draft-send").disabled = !text;
  $("draft-use").disabled = !text;
}

function useDraft(sendIt) {
  const draft = state.active && state.drafts.get(state.active);
  const text = draft ? draftText(draft) : "";
  if (!text) return;
  $("reply").value = text;
  if (sendIt) $("reply-form").requestSubmit();
  else $("reply").focus();
}

$("draft-use").addEventListener("click", () => useDraft(false));
$("draft-send").addEventListener("click", () => useDraft(true));

function renderMine() {
  const list = $("mine");
  list.replaceChildren();
  for (const conversation of state.conversations.values()) {
    const last = [...conversation.messages].reverse().find((m) => m.sender === "user");
    const entry = el("li", conversation.id === state.active ? "active" : "");
    entry.appendChild(el("div", null, conversation.id.slice(0, 12)));
    entry.appendChild(el("div", "muted", last ? last.text : ""));
    entry.addEventListener("click", () => { state.active = conversation.id; renderMine(); renderChat(); });
    list.appendChild(entry);
  }
}

function labelControls(message) {
  const row = el("div", "label-row");
  if (message.label) row.appendChild(el("span", "labelled", `✓ ${message.label}`));
  const select = el("select");
  select.setAttribute("aria-label", "Intent for this message");
  const suggestions = (message.intents || []).map((i) => i.name).filter((n) => n !== "nlu_fallback");
  for (const name of [...suggestions, ...state.intents.filter((n) => !suggestions.includes(n))]) {
    const option = el("option", null, name);
    option.value = name;
    select.appendChild(option);
  }
  const newOption = el("option", null, "new intent…");
  newOption.value = "__new__";
  select.appendChild(newOption);
  if (message.label && state.intents.includes(message.label)) select.value = message.label;
  const custom = el("input");
  custom.placeholder = "new_intent_name";
  custom.hidden = true;
  select.addEventListener("change", () => { custom.hidden = select.value !== "__new__"; });
  const confirm = el("button", "label-button", message.label ? "Relabel" : "Confirm intent");
  confirm.type = "button";
  confirm.addEventListener("click", () => {
    const intent = select.value === "__new__" ? custom.value.trim() : select.value;
    if (!intent) return;
    send({ type: "label", id: newId(), message_id: message.message_id, intent });
  });
  row.append(select, custom, confirm);
  return row;
}

function describeValue(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function describeEvent(event) {
  if ("slot" in event) return `${event.slot} = ${event.value === null ? "(cleared)" : describeValue(event.value)}`;
  if ("active_loop" in event) return event.active_loop ? `form ${event.active_loop} active` : "form done";
  if (event.paused) return "handed the conversation to a person";
  if (event.rejected) return "rejected";
  if (event.followup) return `then ${event.followup}`;
  return "";
}

// What the bot's actions did in answer to a user message (custom actions, forms), and the
// ones that failed: shown to the agent under the message, never to the user.
function turnDetails(turn) {
  const box = el("div", "turn");
  for (const action of turn.actions || []) {
    const events = (action.events || []).map(describeEvent).filter(Boolean);
    box.appendChild(el("div", "action", events.length ? `${action.name}: ${events.join(", ")}` : action.name));
  }
  for (const failure of turn.failed_actions || []) {
    box.appendChild(el("div", "failed", `${failure.name} failed: ${failure.error}`));
  }
  return box;
}

function renderSlots(conversation) {
  const line = $("chat-slots");
  const entries = Object.entries(conversation.slots || {}).filter(([name]) => name !== "requested_slot");
  const parts = entries.map(([name, value]) => `${name} = ${describeValue(value)}`);
  if (conversation.activeLoop) parts.push(`form ${conversation.activeLoop} active`);
  line.hidden = parts.length === 0;
  line.textContent = parts.length ? `Slots: ${parts.join(" · ")}` : "";
}

function renderChat() {
  const conversation = state.conversations.get(state.active);
  $("empty").hidden = Boolean(conversation);
  $("chat").hidden = !conversation;
  if (!conversation) return;
  $("chat-id").textContent = conversation.id;
  $("chat-reason").textContent = conversation.reason || "";
  renderSlots(conversation);
  const list = $("transcript");
  list.replaceChildren();
  for (const message of conversation.messages) {
    const item = el("li", `msg ${message.sender}`);
    const who = message.sender === "user" ? "user" : message.sender === "bot" ? "assistant" : "agent";
    item.appendChild(el("div", "who", who));
    item.appendChild(el("div", "text", message.text));
    if (message.sender === "user") {
      item.appendChild(intentChips(message.intents, 5, true));
      if (message.turn) item.appendChild(turnDetails(message.turn));
      item.appendChild(labelControls(message));
    }
    list.appendChild(item);
  }
  list.scrollTop = list.scrollHeight;
  renderCanned(conversation);
  renderDraft(conversation);
  renderTyping();
}

function renderTyping() {
  const conversation = state.conversations.get(state.active);
  $("user-typing").hidden = !(conversation && conversation.typing);
}

function renderCanned(conversation) {
  const lastUser = [...conversation.messages].reverse().find((m) => m.sender === "user");
  const guesses = ((lastUser && lastUser.intents) || []).map((i) => `utter_${i.name}`);
  const names = Object.keys(state.responses);
  const ordered = [...guesses.filter((n) => names.includes(n)), ...names.filter((n) => !guesses.includes(n)).sort()];
  const select = $("canned");
  select.replaceChildren(el("option", null, "Canned replies (best guesses first)…"));
  select.firstChild.value = "";
  for (const name of ordered) {
    const text = state.responses[name][0];
    if (!text) continue;
    const option = el("option", null, `${name}: ${text.slice(0, 80)}`);
    option.value = name;
    select.appendChild(option);
  }
}

$("canned").addEventListener("change", (event) => {
  const name = event.target.value;
  if (!name) return;
  $("reply").value = state.responses[name][0];
  state.cannedText = { name, text: state.responses[name][0] };
  $("reply").focus();
});

$("reply").addEventListener("input", () => {
  if (!state.active) return;
  if (!state.typingSent) {
    send({ type: "typing", conversation_id: state.active, typing: true });
    state.typingSent = true;
  }
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
});

function stopTyping() {
  if (state.typingSent && state.active) send({ type: "typing", conversation_id: state.active, typing: false });
  state.typingSent = false;
}

$("reply-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("reply").value.trim();
  if (!text || !state.active) return;
  const frame = { type: "reply", id: newId(), conversation_id: state.active, text };
  if (state.cannedText && state.cannedText.text === text) frame.response_name = state.cannedText.name;
  send(frame, () => { $("reply").value = ""; state.cannedText = null; $("canned").value = ""; });
  clearTimeout(state.typingTimer);
  state.typingSent = false;
});

function conversationAction(type, extra) {
  if (!state.active) return;
  send({ type, id: newId(), conversation_id: state.active, ...extra });
}

$("hand-back").addEventListener("click", () => conversationAction("hand_back"));
$("close").addEventListener("click", () => conversationAction("close"));
$("transfer").addEventListener("click", () => conversationAction("transfer", { to: $("transfer-to").value || null }));

// ---- maintainers: agent accounts ------------------------------------------------------

async function renderAgents() {
  const data = await api("GET", "/api/agents");
  const body = $("agents-table");
  body.replaceChildren();
  for (const agent of data.agents) {
    const row = el("tr");
    for (const value of [agent.username, agent.display_name, agent.role, agent.presence, agent.disabled ? "disabled" : "active"]) {
      row.appendChild(el("td", null, value));
    }
    const cell = el("td");
    if (agent.username !== state.me.username) {
      const toggle = el("button", null, agent.disabled ? "Enable" : "Disable");
      toggle.type = "button";
      toggle.addEventListener("click", async () => {
        await api("PATCH", `/api/agents/${encodeURIComponent(agent.username)}`, { disabled: !agent.disabled }).catch((e) => toast(e.message));
        renderAgents();
      });
      cell.appendChild(toggle);
    }
    row.appendChild(cell);
    body.appendChild(row);
  }
}

$("manage-agents").addEventListener("click", () => { $("agents-panel").hidden = false; renderAgents(); });
$("close-agents").addEventListener("click", () => { $("agents-panel").hidden = true; });
$("add-agent").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $("add-agent-error").textContent = "";
  try {
    await api("POST", "/api/agents", Object.fromEntries(form.entries()));
    event.target.reset();
    renderAgents();
  } catch (error) {
    $("add-agent-error").textContent = error.message;
  }
});

// ---- batch verification (agents and maintainers) ----------------------------------------

async function renderVerify() {
  const data = await api("GET", "/api/verifications");
  const body = $("verify-table");
  body.replaceChildren();
  for (const item of data.verifications) {
    const row = el("tr");
    row.dataset.id = item.id;
    row.dataset.ids = [item.id, ...item.duplicates.map((d) => d.id)].join(",");
    row.dataset.predicted = item.predicted_intent;
    const message = el("td", null, item.text);
    if (item.duplicates.length) {
      const more = el("div", "muted", `+ ${item.duplicates.length} similar: ${item.duplicates.map((d) => d.text).join(" · ")}`);
      message.appendChild(more);
    }
    row.appendChild(message);
    row.appendChild(el("td", null, `${item.predicted_intent} (${Math.round(item.confidence * 100)}%, margin ${Math.round(item.margin * 100)})`));
    row.appendChild(el("td", null, item.reason));
    const choice = el("select");
    choice.setAttribute("aria-label", "Right intent");
    for (const [value, label] of [["", "— leave for later —"], [item.predicted_intent, `✓ ${item.predicted_intent}`], ["dismiss", "✗ not a usable example"]]) {
      const option = el("option", null, label);
      option.value = value;
      choice.appendChild(option);
    }
    for (const intent of state.intents.filter((i) => i !== item.predicted_intent)) {
      const option = el("option", null, intent);
      option.value = intent;
      choice.appendChild(option);
    }
    const cell = el("td");
    cell.appendChild(choice);
    row.appendChild(cell);
    body.appendChild(row);
  }
  if (!data.verifications.length) body.appendChild(el("tr", null, "Nothing to verify."));
}

$("open-verify").addEventListener("click", () => { $("verify-panel").hidden = false; renderVerify().catch((e) => toast(e.message)); });
$("close-verify").addEventListener("click", () => { $("verify-panel").hidden = true; });
$("verify-submit").addEventListener("click", async () => {
  const decisions = [];
  for (const row of $("verify-table").querySelectorAll("tr[data-id]")) {
    const value = row.querySelector("select").value;
    if (!value) continue;
    for (const id of row.dataset.ids.split(",").map(Number)) {
      if (value === "dismiss") decisions.push({ id, action: "dismiss" });
      else if (value === row.dataset.predicted) decisions.push({ id, action: "confirm" });
      else decisions.push({ id, action: "correct", intent: value });
    }
  }
  if (!decisions.length) return;
  try {
    const result = await api("POST", "/api/verifications", { decisions });
    toast(`${decisions.length} verified; ${result.candidates.length} new training example(s) for review.`);
  } catch (error) {
    toast(error.message);
  }
  renderVerify().catch((e) => toast(e.message));
});

// ---- maintainers: review ---------------------------------------------------------------

function reviewFlags(item) {
  const flags = [];
  if (item.conflicts.length) flags.push(`conflict: ${item.conflicts.join(", ")}`);
  if (item.low_value) flags.push("low value: the bot already knows this");
  if (item.in_training_data) flags.push("already in training data");
  if (item.duplicates.length) flags.push(`+${item.duplicates.length} near-duplicate(s)`);
  return flags;
}

function reviewRow(item, label) {
  const row = el("div", "review-item");
  row.appendChild(el("span", null, label));
  const flags = reviewFlags(item);
  if (flags.length) row.appendChild(el("span", "badge", flags.join("; ")));
  if (item.conversation_id) {
    const link = el("a", null, "conversation");
    link.href = `#conversation=${encodeURIComponent(item.conversation_id)}`;
    link.addEventListener("click", () => openConversation(item.conversation_id));
    row.appendChild(link);
  }
  for (const action of ["approve", "reject"]) {
    const button = el("button", null, action === "approve" ? "Approve" : "Reject");
    button.type = "button";
    button.addEventListener("click", () => decide([{ id: item.id, action }]));
    row.appendChild(button);
  }
  if (item.kind === "example") {
    const holdOut = el("button", null, "Hold out");
    holdOut.type = "button";
    holdOut.title = "Keep it out of the training data: new models are scored on it instead";
    holdOut.addEventListener("click", () => decide([{ id: item.id, action: "hold_out" }]));
    row.appendChild(holdOut);
    const edit = el("button", null, "Edit");
    edit.type = "button";
    edit.addEventListener("click", () => {
      const text = prompt("Example text", item.text);
      if (text === null) return;
      const intent = prompt("Intent", item.intent);
      if (intent === null) return;
      decide([{ id: item.id, action: "edit", text, intent }]);
    });
    row.appendChild(edit);
  }
  return row;
}

async function renderReview() {
  const data = await api("GET", "/api/review");
  state.review = data;
  const list = $("review-list");
  list.replaceChildren();
  for (const group of data.groups) {
    const section = el("section", "review-group");
    section.appendChild(el("h3", null, group.new_intent ? `${group.intent} (new intent)` : group.intent));
    for (const item of group.responses) section.appendChild(reviewRow(item, `response: ${item.text}`));
    for (const item of group.examples) section.appendChild(reviewRow(item, item.text));
    list.appendChild(section);
  }
  if (data.stories.length) {
    const section = el("section", "review-group");
    section.appendChild(el("h3", null, "stories"));
    for (const item of data.stories) {
      section.appendChild(reviewRow(item, item.turns.map(([intent, response]) => `${intent} → ${response}`).join(", ")));
    }
    list.appendChild(section);
  }
  if (!data.groups.length && !data.stories.length) list.appendChild(el("p", "muted", "Nothing to review."));
}

async function decide(decisions) {
  try {
    await api("POST", "/api/review", { decisions });
  } catch (error) {
    toast(error.message);
  }
  renderReview().catch((e) => toast(e.message));
}

$("open-review").addEventListener("click", () => { $("review-panel").hidden = false; renderReview().catch((e) => toast(e.message)); });

// ---- cockpit (maintainers) ---------------------------------------------------------------

async function renderCockpit() {
  const data = await api("GET", "/api/cockpit?days=30");
  $("cockpit-models").replaceChildren(HandoffCharts.modelsTable(data.models, data.serving, async (model) => {
    const live = data.models.find((m) => m.status === "live");
    const question = `Make ${model.name} live${live ? ` instead of ${live.name}` : ""}? Every server switches to it.`;
    if (!window.confirm(question)) return;
    const answer = await api("POST", "/api/models/promote", { name: model.name });
    toast(`${answer.promoted} is live: servers switch to it within ${answer.swap_within_s} s.`);
    renderCockpit().catch((e) => toast(e.message));
  }));
  HandoffCharts.render($("cockpit-charts"), data);
}

$("open-cockpit").addEventListener("click", () => { $("cockpit-panel").hidden = false; renderCockpit().catch((e) => toast(e.message)); });
$("close-cockpit").addEventListener("click", () => { $("cockpit-panel").hidden = true; });
$("close-review").addEventListener("click", () => { $("review-panel").hidden = true; });
$("review-approve-clean").addEventListener("click", () => {
  const items = [...(state.review?.groups || []).flatMap((g) => [...g.examples, ...g.responses]), ...(state.review?.stories || [])];
  const clean = items.filter((item) => !reviewFlags(item).some((f) => !f.startsWith("+")));
  if (clean.length) decide(clean.map((item) => ({ id: item.id, action: "approve" })));
});

// ---- start -------------------------------------------------------------------------------

api("GET", "/api/me").then((data) => start(data.agent)).catch(() => {
  $("signin-error").textContent = sessionStorage.getItem(SIGNIN_MESSAGE_KEY) || "";
  sessionStorage.removeItem(SIGNIN_MESSAGE_KEY);
  $("signin").hidden = false;
});
