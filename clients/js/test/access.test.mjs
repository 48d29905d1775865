// What the backend decides: optimistic writes rolled back when the ACL refuses them, and
// presence (ephemeral map items) ending with the writer's connection.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SyncError } from "../dist/index.js";
import { sharedServer, next, record, unique, waitFor } from "./helpers.mjs";

let backend;
const shared = sharedServer({
  started: async (server) => {
    backend = await server.backend();
  },
  stopping: () => backend?.close(),
});
const client = shared.client;

const flags = (over) => ({
  acl_enabled: false,
  webhook_url: null,
  webhooks_from_backend: false,
  reachability_webhooks_enabled: false,
  reachability_debouncing_enabled: false,
  reachability_debouncing_window_ms: null,
  token_create: "own",
  friendly_name: null,
  ...over,
});

async function service(over) {
  const r = await backend.request({ ServiceCreate: { unique_name: null, flags: flags(over) } });
  return r.Service.sid;
}


describe("access control", () => {
  test("a write the ACL refuses is shown at once, then rolled back with updated and rolledBack events", async () => {
    const sid = await service({ acl_enabled: true });
    const admin = await shared.server.backend(sid);
    const name = unique("doc");
    await admin.request({ Create: { kind: "Document", unique_name: name, ttl: null } });
    await admin.request({ DocSet: { document: name, data: JSON.stringify({ v: "server" }), if_match: null, ttl: null } });
    await admin.request({ PermissionGrant: { object: name, identity: "reader", rights: { read: true, write: false, manage: false } } });
    admin.close();

    const c = await client("reader", {}, { service: sid });
    const doc = await c.document({ id: name, mode: "open_existing" });
    assert.deepEqual(doc.data, { v: "server" });
    const updates = record(doc, "updated");
    const rolledBack = next(doc, "rolledBack");
    const write = doc.set({ v: "mine" });
    assert.deepEqual(doc.data, { v: "mine" }, "shown before the server answers");
    assert.equal(doc.hasPendingWrites, true);
    await assert.rejects(write, (e) => e instanceof SyncError && e.code === "Forbidden" && e.status === 403);
    const rb = await rolledBack;
    assert.equal(rb.error.code, "Forbidden");
    assert.deepEqual(rb.data, { v: "server" });
    assert.deepEqual(doc.data, { v: "server" });
    assert.equal(doc.hasPendingWrites, false);
    assert.deepEqual(updates, [
      { data: { v: "mine" }, previousData: { v: "server" }, isLocal: true },
      { data: { v: "server" }, previousData: { v: "mine" }, isLocal: false },
    ]);
  });

  test("a refused map item write is rolled back to no item", async () => {
    const sid = await service({ acl_enabled: true });
    const admin = await shared.server.backend(sid);
    const name = unique("map");
    await admin.request({ Create: { kind: "Map", unique_name: name, ttl: null } });
    await admin.request({ PermissionGrant: { object: name, identity: "reader", rights: { read: true, write: false, manage: false } } });
    admin.close();
    const c = await client("reader", {}, { service: sid });
    const map = await c.map({ id: name, mode: "open_existing" });
    const added = next(map, "itemAdded");
    const removed = next(map, "itemRemoved");
    const rolledBack = next(map, "rolledBack");
    await assert.rejects(map.set("k", { x: 1 }), (e) => e.code === "Forbidden");
    assert.equal((await added).isLocal, true);
    assert.deepEqual(await removed, { key: "k", previousItemData: { x: 1 }, isLocal: false });
    const rb = await rolledBack;
    assert.equal(rb.key, "k");
    assert.equal(rb.item, null);
    await assert.rejects(map.get("k"), (e) => e.code === "NotFound");
  });

  test("an object the identity may not read cannot be opened: Forbidden", async () => {
    const sid = await service({ acl_enabled: true });
    const admin = await shared.server.backend(sid);
    const name = unique("doc");
    await admin.request({ Create: { kind: "Document", unique_name: name, ttl: null } });
    admin.close();
    const c = await client("stranger", {}, { service: sid });
    await assert.rejects(c.document({ id: name, mode: "open_existing" }), (e) => e.code === "Forbidden");
  });
});

describe("presence", () => {
  test("an ephemeral map item disappears for others when its writer's client shuts down", async () => {
    const sid = await service({ reachability_debouncing_enabled: false });
    const name = unique("roster");
    const writer = await shared.server.client("walker", {}, { service: sid });
    const watcher = await client("watcher", {}, { service: sid });
    const mw = await writer.map(name);
    const mv = await watcher.map(name);
    const added = next(mv, "itemAdded");
    await mw.set("walker", { online: true }, { ephemeral: true });
    assert.equal((await added).item.key, "walker");
    const removed = next(mv, "itemRemoved", (e) => e.key === "walker", 15_000);
    await writer.shutdown();
    const ev = await removed;
    assert.deepEqual(ev.previousItemData, { online: true });
    assert.equal(ev.isLocal, false);
    await assert.rejects(mv.get("walker"), (e) => e.code === "NotFound");
  });
});
