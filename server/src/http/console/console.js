// The console's script: everything goes through /admin/api/ with the session cookie (set
// by /admin/login) and the console header, which is what makes a request the console's.
"use strict";

const $ = (id) => document.getElementById(id);
const HEADER = { "X-Syncline-Console": "1" };
const KINDS = ["Documents", "Lists", "Maps", "Streams"];
const state = { service: null, kind: "Documents", object: null, events: null, metricsTimer: null };

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  const { dataset, ...rest } = props;
  Object.assign(e, rest);
  Object.assign(e.dataset, dataset || {});
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return e;
}

function showError(e) {
  $("error").textContent = e ? String(e.message || e) : "";
}

async function call(method, path, form) {
  const init = { method, headers: { ...HEADER }, credentials: "same-origin" };
  if (form) {
    init.headers["Content-Type"] = "application/x-www-form-urlencoded";
    init.body = new URLSearchParams(form).toString();
  }
  const r = await fetch("/admin/api/" + path, init);
  if (r.status === 401) {
    loggedOut();
    throw new Error("logged out");
  }
  const text = await r.text();
  const body = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((body && body.message) || r.statusText);
  return body;
}

function loggedOut() {
  if (state.events) state.events.close();
  clearInterval(state.metricsTimer);
  $("app").classList.add("hidden");
  $("logout").classList.add("hidden");
  $("login").classList.remove("hidden");
  $("who").textContent = "";
}

async function loggedIn(who) {
  $("login").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("logout").classList.remove("hidden");
  $("who").textContent = who || "";
  await Promise.all([metrics(), services(), keys()]);
  clearInterval(state.metricsTimer);
  state.metricsTimer = setInterval(() => metrics().catch(showError), 2000);
}

async function metrics() {
  const m = await call("GET", "metrics");
  const figures = [
    ["connections", m.connections],
    ["subscriptions", m.subscriptions],
    ["present identities", m.present],
    ["queued events", m.queued_events],
    ["writes committed", m.commit_writes],
    ["request errors", m.request_errors],
    ...Object.entries(m.requests_by_edge).map(([edge, n]) => [`${edge} requests`, n]),
  ];
  $("metrics").replaceChildren(...figures.map(([name, v]) => el("div", { className: "figure", dataset: { name } }, el("b", {}, v), name)));
}

async function services() {
  const { services } = await call("GET", "v1/Services?PageSize=100");
  const rows = services.map((s) => {
    const acl = el("input", { type: "checkbox", checked: s.acl_enabled, title: "ACL enabled" });
    acl.addEventListener("click", (ev) => ev.stopPropagation());
    acl.addEventListener("change", () =>
      call("POST", `v1/Services/${s.sid}`, { AclEnabled: String(acl.checked) }).then(services, showError),
    );
    const row = el("tr", { className: "clickable" + (state.service === s.sid ? " selected" : "") },
      el("td", {}, s.unique_name || s.friendly_name || ""),
      el("td", {}, el("code", {}, s.sid)),
      el("td", {}, el("label", {}, acl, " acl")),
      el("td", {}, `token_create: ${s.token_create}`),
      el("td", {}, s.webhook_url ? `webhooks → ${s.webhook_url}` : "no webhooks"),
      el("td", { className: "webhooks-dropped" }, `${s.webhooks_dropped} dropped`),
    );
    row.dataset.sid = s.sid;
    row.addEventListener("click", () => selectService(s));
    return row;
  });
  $("services").replaceChildren(
    el("tr", {}, el("th", {}, "name"), el("th", {}, "sid"), el("th", {}, "ACL"), el("th", {}, "creation"), el("th", {}, "webhooks"), el("th", {}, "delivery")),
    ...rows,
  );
  if (!state.service && services.length) await selectService(services[0]);
}

async function selectService(s) {
  state.service = s.sid;
  $("service-name").textContent = s.unique_name || s.sid;
  for (const tr of $("services").querySelectorAll("tr[data-sid]")) tr.classList.toggle("selected", tr.dataset.sid === s.sid);
  $("kinds").replaceChildren(...KINDS.map((k) => {
    const b = el("button", { className: k === state.kind ? "active" : "" }, k);
    b.addEventListener("click", () => { state.kind = k; selectService(s).catch(showError); });
    return b;
  }));
  await objects();
}

async function objects() {
  const key = state.kind.toLowerCase();
  const page = await call("GET", `v1/Services/${state.service}/${state.kind}?PageSize=100`);
  const rows = page[key].map((o) => {
    const row = el("tr", { className: "clickable" }, el("td", {}, o.unique_name || ""), el("td", {}, el("code", {}, o.sid)), el("td", {}, o.revision ?? ""));
    row.dataset.sid = o.sid;
    row.addEventListener("click", () => selectObject(o).catch(showError));
    return row;
  });
  $("objects").replaceChildren(el("tr", {}, el("th", {}, "name"), el("th", {}, "sid"), el("th", {}, "revision")), ...rows);
}

function objectPath(o) {
  return `v1/Services/${state.service}/${state.kind}/${o.sid}`;
}

async function showObject(o) {
  let shown;
  if (state.kind === "Documents") {
    shown = await call("GET", objectPath(o));
    shown = { revision: shown.revision, data: shown.data };
  } else if (state.kind === "Streams") {
    shown = await call("GET", objectPath(o));
  } else {
    const { items } = await call("GET", `${objectPath(o)}/Items?PageSize=100`);
    shown = items.map((i) => ({ [state.kind === "Lists" ? "index" : "key"]: i.index ?? i.key, data: i.data, revision: i.revision }));
  }
  $("object").textContent = JSON.stringify(shown, null, 2);
}

function markSelected(o) {
  for (const tr of $("objects").querySelectorAll("tr[data-sid]")) tr.classList.toggle("selected", tr.dataset.sid === o.sid);
}

async function selectObject(o) {
  state.object = o;
  $("object-name").textContent = o.unique_name || o.sid;
  markSelected(o);
  if (state.events) state.events.close();
  state.events = null;
  $("live").textContent = "";
  await showObject(o);
  if (state.kind !== "Streams") {
    // Live: every event of the object re-reads what is shown.
    const events = new EventSource(`/admin/api/${objectPath(o)}/Events`);
    state.events = events;
    const refresh = () => {
      if (state.object !== o) return;
      showObject(o).catch(showError);
      objects().then(() => markSelected(o), showError);
    };
    for (const name of ["snapshot", "document_updated", "item_added", "item_updated", "item_removed", "object_removed"]) {
      events.addEventListener(name, refresh);
    }
    events.onopen = () => { $("live").textContent = "● live"; };
    events.onerror = () => { $("live").textContent = "(reconnecting)"; };
    await permissions();
  } else {
    $("permissions").replaceChildren();
    $("grant").classList.add("hidden");
  }
}

async function permissions() {
  const o = state.object;
  const { permissions } = await call("GET", `${objectPath(o)}/Permissions?PageSize=100`);
  const rows = permissions.map((p) => {
    const revoke = el("button", {}, "revoke");
    revoke.addEventListener("click", () =>
      call("DELETE", `${objectPath(o)}/Permissions/${encodeURIComponent(p.identity)}`).then(permissions, showError),
    );
    return el("tr", {}, el("td", {}, p.identity), el("td", {}, ["read", "write", "manage"].filter((r) => p[r]).join(", ") || "none"), el("td", {}, revoke));
  });
  $("permissions").replaceChildren(el("tr", {}, el("th", {}, "identity"), el("th", {}, "rights"), el("th", {}, "")), ...rows);
  $("grant").classList.remove("hidden");
}

async function keys() {
  const { keys, console_key } = await call("GET", "keys");
  const rows = keys.map((k) => {
    const cells = [el("td", {}, el("code", {}, k.sid)), el("td", {}, k.friendly_name || ""), el("td", {}, k.date_created), el("td", {}, k.revoked ? "revoked" : "active")];
    if (!k.revoked && k.sid !== console_key) {
      const revoke = el("button", {}, "revoke");
      revoke.addEventListener("click", () => {
        if (confirm(`Revoke ${k.sid}? Every token it signed stops working.`)) call("DELETE", `keys/${k.sid}`).then(keys, showError);
      });
      cells.push(el("td", {}, revoke));
    } else {
      cells.push(el("td", {}, k.sid === console_key ? "(this console's key)" : ""));
    }
    const row = el("tr", {}, ...cells);
    row.dataset.sid = k.sid;
    return row;
  });
  $("keys").replaceChildren(el("tr", {}, el("th", {}, "sid"), el("th", {}, "name"), el("th", {}, "created"), el("th", {}, "state"), el("th", {}, "")), ...rows);
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  const r = await fetch("/admin/login", {
    method: "POST",
    headers: { ...HEADER, "Content-Type": "application/json" },
    credentials: "same-origin",
    body: JSON.stringify({ sid: $("sid").value.trim(), secret: $("secret").value }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    $("login-error").textContent = body.message || r.statusText;
    return;
  }
  $("secret").value = "";
  await loggedIn(body.key_sid).catch(showError);
});

$("logout").addEventListener("click", async () => {
  await fetch("/admin/logout", { method: "POST", headers: HEADER, credentials: "same-origin" });
  loggedOut();
});

$("grant").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const identity = $("grant-identity").value.trim();
  const form = { Read: String($("grant-read").checked), Write: String($("grant-write").checked), Manage: String($("grant-manage").checked) };
  call("POST", `${objectPath(state.object)}/Permissions/${encodeURIComponent(identity)}`, form).then(permissions, showError);
});

$("key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await fetch("/admin/api/keys", {
      method: "POST",
      headers: { ...HEADER, "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ friendly_name: $("key-name").value }),
    });
    const k = await r.json();
    if (!r.ok) throw new Error(k.message || r.statusText);
    const box = $("new-secret");
    box.replaceChildren("New key ", el("code", {}, k.sid), ". Its secret, shown this once: ", el("code", { id: "secret-once" }, k.secret));
    box.classList.remove("hidden");
    $("key-name").value = "";
    await keys();
  } catch (e) {
    showError(e);
  }
});

// Already logged in (the cookie is still good)? The keys call says.
call("GET", "keys").then(() => loggedIn(""), () => loggedOut());
