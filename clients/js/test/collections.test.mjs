// Lists, maps and streams against a real server: items, paging both ways, events between
// clients, and removal.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SyncError, SyncListItem, SyncMapItem } from "../dist/index.js";
import { sharedServer, next, record, unique, waitFor } from "./helpers.mjs";

const shared = sharedServer();
const client = shared.client;


const indices = (page) => page.items.map((i) => i.index);

describe("lists", () => {
  test("push resolves with the new item's index, and get reads it back", async () => {
    const c = await client("alice");
    const list = await c.list(unique("list"));
    const first = await list.push({ text: "a" });
    const second = await list.push({ text: "b" });
    assert.ok(first instanceof SyncListItem);
    assert.equal(second.index, first.index + 1);
    assert.deepEqual(second.data, { text: "b" });
    const got = await list.get(first.index);
    assert.deepEqual(got.data, { text: "a" });
    await assert.rejects(list.get(999), (e) => e instanceof SyncError && e.code === "NotFound");
  });

  test("set, update, mutate and remove change items, and another client hears each with Twilio's arguments", async () => {
    const name = unique("list");
    const a = await client("alice");
    const b = await client("bob");
    const la = await a.list(name);
    const lb = await b.list(name);
    const added = next(lb, "itemAdded");
    const item = await la.push({ n: 1 });
    const ev = await added;
    assert.equal(ev.isLocal, false);
    assert.equal(ev.item.index, item.index);
    assert.deepEqual(ev.item.data, { n: 1 });

    const updated = next(lb, "itemUpdated");
    await la.set(item.index, { n: 2 });
    assert.deepEqual(await updated, { item: (await updated).item, previousItemData: { n: 1 }, isLocal: false });
    assert.deepEqual((await updated).item.data, { n: 2 });

    const merged = next(lb, "itemUpdated");
    await la.update(item.index, { m: 1 });
    assert.deepEqual((await merged).item.data, { n: 2, m: 1 });

    const mutated = next(lb, "itemUpdated");
    await la.mutate(item.index, (d) => ({ ...d, n: d.n * 10 }));
    assert.deepEqual((await mutated).item.data, { n: 20, m: 1 });

    const removed = next(lb, "itemRemoved");
    const mine = next(la, "itemRemoved");
    await la.remove(item.index);
    assert.deepEqual(await removed, { index: item.index, previousItemData: { n: 20, m: 1 }, isLocal: false });
    assert.equal((await mine).isLocal, true);
  });

  test("getItems pages forward and back, in both orders", async () => {
    const c = await client("alice");
    const list = await c.list(unique("list"));
    for (let i = 0; i < 7; i++) await list.push({ i });
    const p1 = await list.getItems({ pageSize: 3 });
    assert.deepEqual(indices(p1), [0, 1, 2]);
    assert.equal(p1.hasPrevPage, false);
    assert.equal(p1.hasNextPage, true);
    const p2 = await p1.nextPage();
    assert.deepEqual(indices(p2), [3, 4, 5]);
    assert.equal(p2.hasPrevPage, true);
    const p3 = await p2.nextPage();
    assert.deepEqual(indices(p3), [6]);
    assert.equal(p3.hasNextPage, false);
    await assert.rejects(p3.nextPage(), (e) => e instanceof SyncError);
    const back = await p3.prevPage();
    assert.deepEqual(indices(back), [3, 4, 5]);
    const start = await back.prevPage();
    assert.deepEqual(indices(start), [0, 1, 2]);
    assert.equal(start.hasPrevPage, false);
    assert.equal(start.hasNextPage, true);

    const d1 = await list.getItems({ pageSize: 4, order: "desc" });
    assert.deepEqual(indices(d1), [6, 5, 4, 3]);
    const d2 = await d1.nextPage();
    assert.deepEqual(indices(d2), [2, 1, 0]);
    assert.equal(d2.hasNextPage, false);
    assert.deepEqual(indices(await d2.prevPage()), [6, 5, 4, 3]);

    const mid = await list.getItems({ from: 2, pageSize: 2 });
    assert.deepEqual(indices(mid), [2, 3]);
    assert.equal(mid.hasPrevPage, true);
    assert.deepEqual(indices(await mid.prevPage()), [0, 1]);
  });

  test("removeList fires removed for every subscriber", async () => {
    const name = unique("list");
    const a = await client("alice");
    const b = await client("bob");
    const la = await a.list(name);
    const lb = await b.list(name);
    const gone = next(lb, "removed");
    await la.removeList();
    assert.equal((await gone).isLocal, false);
  });
});

describe("maps", () => {
  test("set, get, update, mutate and remove items, with events on another client", async () => {
    const name = unique("map");
    const a = await client("alice");
    const b = await client("bob");
    const ma = await a.map(name);
    const mb = await b.map(name);
    const added = next(mb, "itemAdded");
    const item = await ma.set("k1", { v: 1 });
    assert.ok(item instanceof SyncMapItem);
    assert.equal(item.key, "k1");
    const ev = await added;
    assert.equal(ev.item.key, "k1");
    assert.equal(ev.isLocal, false);
    assert.deepEqual((await mb.get("k1")).data, { v: 1 });

    const upd = next(mb, "itemUpdated");
    await ma.update("k1", { w: 2 });
    assert.deepEqual(await upd, { item: (await upd).item, previousItemData: { v: 1 }, isLocal: false });
    assert.deepEqual((await upd).item.data, { v: 1, w: 2 });

    // update and mutate create an item that is not there, as Twilio's do.
    await ma.update("k2", { fresh: true });
    assert.deepEqual((await ma.get("k2")).data, { fresh: true });
    const m = await ma.mutate("k3", (d) => ({ ...d, count: (d.count ?? 0) + 1 }));
    assert.deepEqual(m.data, { count: 1 });
    assert.equal(await ma.mutate("k4", () => null), null);

    const removed = next(mb, "itemRemoved", (e) => e.key === "k1");
    await ma.remove("k1");
    assert.deepEqual(await removed, { key: "k1", previousItemData: { v: 1, w: 2 }, isLocal: false });
    await assert.rejects(ma.get("k1"), (e) => e instanceof SyncError && e.code === "NotFound");
  });

  test("getItems pages by key in both directions", async () => {
    const c = await client("alice");
    const map = await c.map(unique("map"));
    for (const k of ["a", "b", "c", "d", "e"]) await map.set(k, { k });
    const keys = (p) => p.items.map((i) => i.key);
    const p1 = await map.getItems({ pageSize: 2 });
    assert.deepEqual(keys(p1), ["a", "b"]);
    const p2 = await p1.nextPage();
    assert.deepEqual(keys(p2), ["c", "d"]);
    const p3 = await p2.nextPage();
    assert.deepEqual(keys(p3), ["e"]);
    assert.equal(p3.hasNextPage, false);
    assert.deepEqual(keys(await p3.prevPage()), ["c", "d"]);
    const d = await map.getItems({ order: "desc", limit: 3 });
    assert.deepEqual(keys(d), ["e", "d", "c"]);
    const from = await map.getItems({ from: "c", pageSize: 10 });
    assert.deepEqual(keys(from), ["c", "d", "e"]);
    assert.equal(from.hasPrevPage, true);
  });

  test("two clients' concurrent mutates of one map item lose no increment", async () => {
    const name = unique("map");
    const a = await client("alice");
    const b = await client("bob");
    const ma = await a.map(name);
    const mb = await b.map(name);
    const inc = (d) => ({ n: (d.n ?? 0) + 1 });
    await Promise.all([...Array.from({ length: 6 }, () => ma.mutate("c", inc)), ...Array.from({ length: 6 }, () => mb.mutate("c", inc))]);
    // `get` reads the replica, which hears the other client's last write a moment later:
    // both reach 12, or an increment was lost.
    await waitFor(async () => (await ma.get("c")).data.n === 12, "alice's replica");
    await waitFor(async () => (await mb.get("c")).data.n === 12, "bob's replica");
  });

  test("a map opened with open_existing under a list's name is NotFound", async () => {
    const c = await client("alice");
    const name = unique("list");
    await c.list(name);
    await assert.rejects(c.map({ id: name, mode: "open_existing" }), (e) => e.code === "NotFound" && /List/.test(e.message));
  });
});

describe("streams", () => {
  test("a published message reaches another client, and the publisher as local", async () => {
    const name = unique("stream");
    const a = await client("alice");
    const b = await client("bob");
    const sa = await a.stream(name);
    const sb = await b.stream(name);
    const theirs = next(sb, "messagePublished");
    const mine = next(sa, "messagePublished");
    const sent = await sa.publishMessage({ hello: "world" });
    assert.deepEqual(sent.data, { hello: "world" });
    const got = await theirs;
    assert.deepEqual(got.message.data, { hello: "world" });
    assert.equal(got.message.sid, sent.sid);
    assert.equal(got.isLocal, false);
    assert.equal((await mine).isLocal, true);
  });

  test("removeStream fires removed for the other subscriber", async () => {
    const name = unique("stream");
    const a = await client("alice");
    const b = await client("bob");
    const sa = await a.stream(name);
    const sb = await b.stream(name);
    const gone = next(sb, "removed");
    await sa.removeStream();
    assert.equal((await gone).isLocal, false);
  });
});

describe("time to live", () => {
  test("setTtl changes only the expiry of a document, list, map, stream or item: same data, same revision, no event", async () => {
    const c = await client("alice");
    const watcher = await client("bob");
    const doc = await c.document(unique("doc"));
    await doc.set({ v: 1 });
    const list = await c.list(unique("list"));
    const pushed = await list.push({ text: "a" });
    const map = await c.map(unique("map"));
    await map.set("k", { n: 1 });
    const stream = await c.stream(unique("stream"));
    const seen = [];
    const remoteDoc = await watcher.document(doc.sid);
    remoteDoc.on("updated", (e) => seen.push(e));
    const remoteMap = await watcher.map(map.sid);
    remoteMap.on("itemUpdated", (e) => seen.push(e));

    const revisions = [doc.revision, list.revision, map.revision];
    const soon = Date.now() + 3_000_000;
    for (const handle of [doc, list, map, stream]) {
      assert.equal(handle.dateExpires, null);
      await handle.setTtl(3600);
      assert.ok(handle.dateExpires instanceof Date && handle.dateExpires.getTime() > soon, `${handle.sid} expires in an hour`);
    }
    await list.setItemTtl(pushed.index, 60);
    await map.setItemTtl("k", 60);
    assert.ok((await map.get("k")).dateExpires instanceof Date);
    assert.ok((await list.get(pushed.index)).dateExpires instanceof Date);
    assert.deepEqual([doc.revision, list.revision, map.revision], revisions);
    assert.deepEqual(doc.data, { v: 1 });
    assert.deepEqual((await map.get("k")).data, { n: 1 });

    // A change after them is the next event the other client hears: none came before.
    await doc.set({ v: 2 });
    await waitFor(() => seen.length > 0);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0].data, { v: 2 });
    await assert.rejects(map.setItemTtl("absent", 60), (e) => e.code === "NotFound");
  });
});
