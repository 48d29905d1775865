// The chat in the browser: logs in through the backend, then talks to Syncline directly
// with the SDK (a List of messages, a Map of who is here, a Stream for typing).

import { SyncClient } from "/sdk/index.js";

const $ = (id) => document.getElementById(id);
const TYPING_SHOWN_MS = 2000;
const TYPING_EVERY_MS = 1000;
const NO_ACCESS = "You have no access to this room. Ask a member for an invite link.";

let session = null; // { identity, token, syncUrl, userDocument } from POST /api/login
let client = null;
let rooms = []; // the user's rooms, from their user document
let current = null; // the open room: { id, messages, members, typing }
let opening = 0; // bumps on every openRoom, so a slow open that lost the race backs off

async function api(path, body) {
  const headers = { "content-type": "application/json" };
  if (session) headers.authorization = `Bearer ${session.token}`;
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(body ?? {}) });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(answer.error ?? `HTTP ${r.status}`), { status: r.status });
  return answer;
}

function notice(text) {
  $("notice").textContent = text ?? "";
  $("notice").hidden = !text;
}

// --- login and connection -------------------------------------------------------------

async function login(name) {
  session = await api("/api/login", { name });
  sessionStorage.setItem("chat-name", session.identity);
  $("login").hidden = true;
  $("app").hidden = false;
  $("me").textContent = session.identity;

  client = new SyncClient(session.token, { url: session.syncUrl });
  const hint = setTimeout(
    () => notice(`Cannot reach the sync server at ${session.syncUrl}. With its self-signed certificate, open ${session.syncUrl}/healthz once and accept it, then reload.`),
    8000,
  );
  let wasConnected = false;
  client.on("connectionStateChanged", (state) => {
    document.body.dataset.connection = state;
    $("connection").title = `Sync server: ${state}`;
    if (state !== "connected") return;
    clearTimeout(hint);
    // After an outage the server may have dropped our presence (its window elapsed):
    // say we are here again. The SDK resubscribes everything else by itself.
    if (wasConnected && current) announce(current).catch(() => {});
    wasConnected = true;
  });
  const refresh = async () => {
    try {
      session.token = (await api("/api/token")).token;
    } catch {
      session = { ...session, ...(await api("/api/login", { name: session.identity })) };
    }
    await client.updateToken(session.token);
  };
  client.on("tokenAboutToExpire", () => refresh().catch((e) => console.warn("token refresh failed", e)));
  client.on("tokenExpired", () => refresh().catch((e) => console.warn("token refresh failed", e)));

  const user = await client.document({ id: session.userDocument, mode: "open_existing" });
  renderRooms(user.data);
  user.on("updated", ({ data }) => renderRooms(data));

  await acceptInvite();
  route();
}

/** An invite link is /?join=ROOM&invite=CODE: the backend checks it and grants the room. */
async function acceptInvite() {
  const params = new URLSearchParams(location.search);
  const room = params.get("join");
  if (!room) return;
  history.replaceState(null, "", "/");
  try {
    await api("/api/join", { room, invite: params.get("invite") ?? "" });
    location.hash = `room=${room}`;
  } catch (e) {
    notice(e.status === 403 ? `${e.message} ${NO_ACCESS}` : e.message);
  }
}

function renderRooms(data) {
  rooms = data?.rooms ?? [];
  $("rooms").replaceChildren(
    ...rooms.map((r) => {
      const a = Object.assign(document.createElement("a"), { href: `#room=${r.id}`, textContent: r.name });
      a.dataset.room = r.id;
      a.classList.toggle("current", r.id === current?.id);
      const li = document.createElement("li");
      li.append(a);
      return li;
    }),
  );
  $("no-rooms").hidden = rooms.length > 0;
  if (current) showRoomHeader(current.id);
}

function route() {
  const id = new URLSearchParams(location.hash.slice(1)).get("room");
  if (id && id !== current?.id) openRoom(id);
}

// --- a room -------------------------------------------------------------------------

const objectNames = (id) => ({ messages: `chat-${id}-messages`, members: `chat-${id}-members`, typing: `chat-${id}-typing` });

function showRoomHeader(id) {
  const room = rooms.find((r) => r.id === id);
  $("room-name").textContent = room?.name ?? id;
  $("invite-link").value = room ? `${location.origin}/?join=${room.id}&invite=${room.invite}` : "";
  for (const a of $("rooms").querySelectorAll("a")) a.classList.toggle("current", a.dataset.room === id);
}

async function openRoom(id) {
  const mine = ++opening;
  await closeRoom();
  notice("");
  // Open whatever the URL names, member or not: Syncline decides, and says Forbidden to
  // a stranger (the same answer as for a room that does not exist).
  const names = objectNames(id);
  const opened = await Promise.allSettled([
    client.list({ id: names.messages, mode: "open_existing" }),
    client.map({ id: names.members, mode: "open_existing" }),
    client.stream({ id: names.typing, mode: "open_existing" }),
  ]);
  const failed = opened.find((o) => o.status === "rejected");
  if (failed || mine !== opening) {
    for (const o of opened) if (o.status === "fulfilled") o.value.close();
    if (mine !== opening) return;
    const code = failed.reason?.code;
    notice(code === "Forbidden" || code === "NotFound" ? NO_ACCESS : `Could not open the room: ${failed.reason?.message}`);
    return;
  }
  const [messages, members, typing] = opened.map((o) => o.value);
  current = { id, messages, members, typing };
  showRoomHeader(id);
  $("room").hidden = false;
  $("roster-pane").hidden = false;

  $("messages").replaceChildren();
  messages.on("itemAdded", ({ item }) => addMessage(item));
  const page = await messages.getItems({ pageSize: 50, order: "desc" });
  for (const item of page.items) addMessage(item);

  $("roster").replaceChildren();
  members.on("itemAdded", ({ item }) => setMember(item.key, item.data));
  members.on("itemUpdated", ({ item }) => setMember(item.key, item.data));
  members.on("itemRemoved", ({ key }) => $("roster").querySelector(`[data-member="${CSS.escape(key)}"]`)?.remove());
  for (const item of (await members.getItems({ pageSize: 200 })).items) setMember(item.key, item.data);

  typingUntil.clear();
  renderTyping();
  typing.on("messagePublished", ({ message, isLocal }) => {
    const who = message.data?.identity;
    if (isLocal || !who || who === session.identity) return;
    typingUntil.set(who, Date.now() + TYPING_SHOWN_MS);
    renderTyping();
    setTimeout(renderTyping, TYPING_SHOWN_MS + 50);
  });

  await announce(current);
  $("text").focus();
}

/** Puts us in the room's roster: an ephemeral item, gone when our last connection is. */
function announce(room) {
  return room.members.set(session.identity, { name: session.identity, since: new Date().toISOString() }, { ephemeral: true });
}

async function closeRoom() {
  const room = current;
  current = null;
  $("room").hidden = true;
  $("roster-pane").hidden = true;
  if (!room) return;
  await room.members.remove(session.identity).catch(() => {});
  for (const o of [room.messages, room.members, room.typing]) o.close();
}

function addMessage(item) {
  const list = $("messages");
  if (list.querySelector(`[data-index="${item.index}"]`)) return;
  // The server records who pushed an item; that, not the data, says who wrote it.
  const author = item.createdBy || item.data?.author || "?";
  const li = document.createElement("li");
  li.dataset.index = item.index;
  li.classList.toggle("mine", author === session.identity);
  const name = Object.assign(document.createElement("span"), { className: "author", textContent: author });
  const sent = new Date(item.data?.sentAt ?? item.dateCreated);
  const time = Object.assign(document.createElement("time"), { textContent: sent.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) });
  const text = Object.assign(document.createElement("p"), { className: "text", textContent: String(item.data?.text ?? "") });
  li.append(name, time, text);
  // Keep index order whatever order the page and the live events arrive in.
  const after = [...list.children].find((c) => Number(c.dataset.index) > item.index);
  list.insertBefore(li, after ?? null);
  if (!after) list.scrollTop = list.scrollHeight;
  typingUntil.delete(author);
  renderTyping();
}

function setMember(key, data) {
  let li = $("roster").querySelector(`[data-member="${CSS.escape(key)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.member = key;
    $("roster").append(li);
  }
  li.textContent = key === session.identity ? `${data?.name ?? key} (you)` : (data?.name ?? key);
}

// --- typing -------------------------------------------------------------------------

const typingUntil = new Map(); // identity -> when to stop showing them
let lastTypingSent = 0;

function renderTyping() {
  const now = Date.now();
  const who = [...typingUntil].filter(([, until]) => until > now).map(([name]) => name);
  $("typing").textContent =
    who.length === 0 ? "" : who.length === 1 ? `${who[0]} is typing…` : `${who.slice(0, -1).join(", ")} and ${who.at(-1)} are typing…`;
}

$("text").addEventListener("input", () => {
  const now = Date.now();
  if (!current || now - lastTypingSent < TYPING_EVERY_MS) return;
  lastTypingSent = now;
  current.typing.publishMessage({ identity: session.identity }).catch(() => {});
});

// --- forms --------------------------------------------------------------------------

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !current) return;
  $("text").value = "";
  lastTypingSent = 0;
  try {
    await current.messages.push({ author: session.identity, text, sentAt: new Date().toISOString() });
  } catch (err) {
    $("text").value = text;
    notice(`Not sent: ${err.message}`);
  }
});

$("new-room").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const room = await api("/api/rooms", { name: $("new-room-name").value });
    $("new-room-name").value = "";
    rooms = [...rooms.filter((r) => r.id !== room.id), room];
    location.hash = `room=${room.id}`;
  } catch (err) {
    notice(err.message);
  }
});

$("copy-invite").addEventListener("click", () => {
  $("invite-link").select();
  navigator.clipboard?.writeText($("invite-link").value).catch(() => {});
});

$("logout").addEventListener("click", async () => {
  sessionStorage.removeItem("chat-name");
  await closeRoom();
  await client?.shutdown();
  location.replace("/");
});

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    await login($("login-name").value.trim());
  } catch (err) {
    // Half a login (a token, no room list) is no login: start over from the form.
    session = null;
    await client?.shutdown().catch(() => {});
    client = null;
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = err.message;
  }
});

window.addEventListener("hashchange", () => client && route());

// A reload logs in again under the same name (there is no password to ask for).
const remembered = sessionStorage.getItem("chat-name");
if (remembered) login(remembered).catch(() => ($("login").hidden = false));
else $("login").hidden = false;
