// The connection: resuming after a server restart without missing a change, noticing a
// stale socket, token renewal and expiry, and a revoked key.

import assert from "node:assert/strict";
import { createServer, connect } from "node:net";
import { describe, test } from "node:test";
import { SyncClient } from "../dist/index.js";
import { sharedServer, next, record, sleep, unique, waitFor, withServer } from "./helpers.mjs";

const shared = sharedServer();
const client = shared.client;


describe("reconnecting", () => {
  test("after the server is killed and restarted, clients resume and miss no change", async () => {
    const name = unique("doc");
    const listName = unique("list");
    const fast = { reconnectInitialDelayMs: 100, reconnectMaxDelayMs: 400, pingIntervalMs: 500, pingTimeoutMs: 500 };
    const a = await client("alice", fast);
    // Bob comes back later than the backend's writes below, so he must catch up on them.
    const b = await client("bob", { reconnectInitialDelayMs: 3000, reconnectMaxDelayMs: 3000, pingIntervalMs: 500, pingTimeoutMs: 500 });
    const da = await a.document({ id: name, data: { step: 0 } });
    const db = await b.document(name);
    const lb = await b.list(listName);
    await a.list(listName);
    const bobUpdates = record(db, "updated");
    const bobItems = record(lb, "itemAdded");
    const states = record(b, "connectionStateChanged");

    const addresses = shared.server.addresses();
    await shared.server.stop("SIGKILL");
    await waitFor(() => a.connectionState === "connecting" && b.connectionState === "connecting", "both clients to notice");
    // Made while the server is down: queued, shown at once, sent on reconnect.
    const queued = da.set({ step: 1 });
    assert.deepEqual(da.data, { step: 1 });

    await shared.server.start(addresses);
    await queued;
    const backend = await shared.server.backend();
    await backend.request({ DocUpdate: { document: name, data: JSON.stringify({ by: "backend" }), if_match: null } });
    for (let i = 0; i < 3; i++) {
      await backend.request({ ListPush: { list: listName, data: JSON.stringify({ i }), ttl: null, ephemeral: false } });
    }
    backend.close();
    assert.notEqual(b.connectionState, "connected", "bob is still away while the changes are made");

    await waitFor(() => b.connectionState === "connected", "bob to reconnect", 15_000);
    await waitFor(() => bobItems.length === 3 && db.data.by === "backend", "bob to catch up", 10_000);
    assert.deepEqual(db.data, { step: 1, by: "backend" });
    assert.deepEqual(da.data, db.data);
    assert.deepEqual(bobItems.map((e) => e.item.data.i), [0, 1, 2]);
    assert.deepEqual(bobUpdates.map((u) => u.data), [{ step: 1 }, { step: 1, by: "backend" }]);
    assert.ok(states.includes("connecting") && states.at(-1) === "connected");
  });

  test("a socket that stops answering is noticed by ping within seconds and replaced", async () => {
    // A loopback proxy that can go silent, as a dead network path does, without closing.
    const target = new URL(shared.server.url);
    let frozen = false;
    const sockets = [];
    const proxy = createServer((inbound) => {
      const outbound = connect(Number(target.port), target.hostname);
      sockets.push(inbound, outbound);
      inbound.on("data", (d) => frozen || outbound.write(d));
      outbound.on("data", (d) => frozen || inbound.write(d));
      inbound.on("error", () => outbound.destroy());
      outbound.on("error", () => inbound.destroy());
      inbound.on("close", () => outbound.destroy());
      outbound.on("close", () => inbound.destroy());
    });
    await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
    try {
      const url = `https://127.0.0.1:${proxy.address().port}`;
      const c = await client("alice", { url, pingIntervalMs: 300, pingTimeoutMs: 300, reconnectInitialDelayMs: 50 });
      const doc = await c.document(unique("doc"));
      frozen = true;
      const started = Date.now();
      await next(c, "connectionStateChanged", (s) => s === "connecting", 5000);
      assert.ok(Date.now() - started < 3000, "noticed within seconds");
      for (const s of sockets.splice(0)) s.destroy();
      frozen = false;
      await next(c, "connectionStateChanged", (s) => s === "connected", 10_000);
      await doc.set({ after: "reconnect" });
    } finally {
      for (const s of sockets) s.destroy();
      proxy.close();
    }
  });
});

describe("tokens", () => {
  test("updateToken swaps the token of a live connection", async () => {
    const c = await client("alice");
    const doc = await c.document(unique("doc"));
    assert.equal(await c.updateToken(shared.server.token("alice")), c);
    await doc.set({ ok: true });
    assert.equal(c.connectionState, "connected");
  });

  test("updateToken for another identity is refused with Unauthorized", async () => {
    const c = await client("alice");
    await assert.rejects(c.updateToken(shared.server.token("mallory")), (e) => e.code === "Unauthorized");
  });

  test("a short token fires tokenAboutToExpire then tokenExpired", async () => {
    const c = await client("alice", {}, { ttl: 4 });
    const about = await next(c, "tokenAboutToExpire", () => true, 5000);
    assert.ok(about >= 0 && about <= 3, `ttl ${about}`);
    await next(c, "tokenExpired", () => true, 5000);
  });

  test("when the server ends an expired token's connection the client is disconnected until updateToken", () =>
    withServer(async (server, clients) => {
      // Past its exp but inside the server's clock skew: accepted for a few seconds more.
      const c = await server.client("alice", { reconnectInitialDelayMs: 100 }, { ttl: -57 });
      clients.push(c);
      const doc = await c.document(unique("doc"));
      await next(c, "connectionStateChanged", (s) => s === "disconnected", 15_000);
      // Nothing reconnects by itself with an expired token.
      await sleep(500);
      assert.equal(c.connectionState, "disconnected");
      const pending = doc.set({ after: "renewal" });
      await c.updateToken(server.token("alice"));
      await waitFor(() => c.connectionState === "connected", "the renewed connection");
      await pending;
      assert.deepEqual(doc.data, { after: "renewal" });
    }));
});

describe("denial", () => {
  test("revoking the key that signed a client's token moves the client to denied with a terminal connectionError", () =>
    withServer(async (server, clients) => {
      const backend = await server.backend();
      try {
        const key = (await backend.request({ KeyCreate: { friendly_name: "doomed" } })).Key;
        const c = await server.client("alice", {}, { keySid: key.sid, keySecret: key.secret });
        clients.push(c);
        const errors = record(c, "connectionError");
        const denied = next(c, "connectionStateChanged", (s) => s === "denied", 10_000);
        await backend.request({ KeyRevoke: { sid: key.sid } });
        await denied;
        assert.equal(errors.at(-1).terminal, true);
        assert.ok(errors.at(-1).message.length > 0);
        await assert.rejects(c.document(unique("doc")), (e) => e.code === "Unauthorized");
      } finally {
        backend.close();
      }
    }));

  test("a token signed with a wrong secret is denied at once", async () => {
    const c = new SyncClient(shared.server.token("alice", { keySecret: "wrong" }), { url: shared.server.url, WebSocket: shared.server.WebSocket, logLevel: "silent" });
    shared.clients.push(c);
    const err = await next(c, "connectionError");
    assert.equal(err.terminal, true);
    assert.equal(c.connectionState, "denied");
  });
});
