// Documents against a real server: open modes, writes, mutate's retries, events between
// clients, errors and removal.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SyncError } from "../dist/index.js";
import { sharedServer, next, record, unique, waitFor } from "./helpers.mjs";

const shared = sharedServer();
const client = shared.client;


describe("opening documents", () => {
  test("open_or_create creates a missing document with {} and opens it again by name and by sid", async () => {
    const c = await client("alice");
    const name = unique("doc");
    const doc = await c.document(name);
    assert.match(doc.sid, /^ET[0-9a-f]{32}$/);
    assert.equal(doc.uniqueName, name);
    assert.deepEqual(doc.data, {});
    const again = await c.document({ id: name, mode: "open_or_create" });
    assert.equal(again.sid, doc.sid);
    const bySid = await c.document(doc.sid);
    assert.equal(bySid.sid, doc.sid);
  });

  test("create_new writes the initial data and refuses a name that is taken with AlreadyExists", async () => {
    const c = await client("alice");
    const name = unique("doc");
    const doc = await c.document({ id: name, mode: "create_new", data: { n: 1 } });
    assert.deepEqual(doc.data, { n: 1 });
    await assert.rejects(c.document({ id: name, mode: "create_new" }), (e) => {
      assert.ok(e instanceof SyncError);
      assert.equal(e.code, "AlreadyExists");
      assert.equal(e.status, 409);
      assert.ok(e.message.length > 0);
      return true;
    });
  });

  test("open_existing on a missing document fails with code NotFound and the server's message", async () => {
    const c = await client("alice");
    await assert.rejects(c.document({ id: unique("missing"), mode: "open_existing" }), (e) => {
      assert.ok(e instanceof SyncError);
      assert.equal(e.code, "NotFound");
      assert.equal(e.status, 404);
      assert.match(e.message, /not found/i);
      assert.doesNotMatch(String(e), /^\d+$/);
      return true;
    });
  });

  test("a document opened without a name gets a sid and the data given", async () => {
    const c = await client("alice");
    const doc = await c.document({ data: { a: 1 } });
    assert.match(doc.sid, /^ET/);
    assert.equal(doc.uniqueName, null);
    assert.deepEqual(doc.data, { a: 1 });
  });
});

describe("writing documents", () => {
  test("set, update and mutate change the data, the revision and dateUpdated", async () => {
    const c = await client("alice");
    const doc = await c.document(unique("doc"));
    const r0 = doc.revision;
    assert.deepEqual(await doc.set({ a: 1, b: 2 }), { a: 1, b: 2 });
    assert.deepEqual(await doc.update({ b: null, c: 3 }), { a: 1, c: 3 });
    assert.deepEqual(doc.data, { a: 1, c: 3 });
    const out = await doc.mutate((d) => ({ ...d, a: d.a + 1 }));
    assert.deepEqual(out, { a: 2, c: 3 });
    await waitFor(() => doc.revision >= r0 + 3, "the revision to reach the replica");
    assert.deepEqual(doc.data, { a: 2, c: 3 });
    assert.ok(doc.dateUpdated instanceof Date);
  });

  test("mutate returning null cancels and resolves with the data as it is", async () => {
    const c = await client("alice");
    const doc = await c.document({ id: unique("doc"), data: { v: 1 } });
    const rev = doc.revision;
    const out = await doc.mutate(() => null);
    assert.deepEqual(out, { v: 1 });
    assert.equal(doc.revision, rev);
    assert.equal(doc.hasPendingWrites, false);
  });

  test("concurrent mutates from two clients retry on conflict and lose no increment", async () => {
    const name = unique("counter");
    const a = await client("alice");
    const b = await client("bob");
    const da = await a.document({ id: name, data: { n: 0 } });
    const db = await b.document(name);
    let calls = 0;
    const inc = (d) => {
      calls++;
      return { n: d.n + 1 };
    };
    const N = 10;
    await Promise.all([
      ...Array.from({ length: N }, () => da.mutate(inc)),
      ...Array.from({ length: N }, () => db.mutate(inc)),
    ]);
    assert.ok(calls > 2 * N, `some mutates were retried (${calls} calls)`);
    await waitFor(() => da.data.n === 2 * N && db.data.n === 2 * N, "both replicas to count 20");
  });

  test("two clients see each other's changes, each told which were its own", async () => {
    const name = unique("doc");
    const a = await client("alice");
    const b = await client("bob");
    const da = await a.document(name);
    const db = await b.document(name);
    const seenA = record(da, "updated");
    const seenB = record(db, "updated");
    await da.set({ from: "alice" });
    await waitFor(() => seenB.length === 1, "bob to hear alice's set");
    assert.deepEqual(seenB[0], { data: { from: "alice" }, previousData: {}, isLocal: false });
    assert.equal(seenA.length, 1);
    assert.deepEqual(seenA[0].data, { from: "alice" });
    assert.equal(seenA[0].isLocal, true);
    await db.update({ by: "bob" });
    await waitFor(() => seenA.length === 2, "alice to hear bob's update");
    assert.deepEqual(seenA[1], { data: { from: "alice", by: "bob" }, previousData: { from: "alice" }, isLocal: false });
    assert.equal(seenB[1].isLocal, true);
    assert.deepEqual(da.data, db.data);
  });

  test("without optimism, a write's event comes from the server, once, marked local", async () => {
    const a = await client("alice", { optimistic: false });
    const doc = await a.document(unique("doc"));
    const seen = record(doc, "updated");
    const p = doc.set({ x: 1 });
    assert.equal(seen.length, 0);
    await p;
    await waitFor(() => seen.length === 1, "the server's event");
    assert.deepEqual(seen[0], { data: { x: 1 }, previousData: {}, isLocal: true });
  });

  test("an optimistic set shows at once, flags pending writes, and is not repeated by the server's echo", async () => {
    const a = await client("alice");
    const doc = await a.document(unique("doc"));
    const seen = record(doc, "updated");
    const flags = record(doc, "pendingWritesChanged");
    const p = doc.set({ x: 1 });
    assert.deepEqual(doc.data, { x: 1 });
    assert.equal(doc.hasPendingWrites, true);
    assert.equal(seen.length, 1);
    await p;
    assert.equal(doc.hasPendingWrites, false);
    await waitFor(() => doc.revision >= 1, "the echo");
    assert.equal(seen.length, 1);
    assert.deepEqual(flags, [{ hasPendingWrites: true }, { hasPendingWrites: false }]);
  });

  test("data that is not JSON is refused before it is sent", async () => {
    const a = await client("alice");
    const doc = await a.document(unique("doc"));
    await assert.rejects(doc.set(undefined), (e) => e instanceof SyncError && e.code === "InvalidArgument");
  });

  test("data over the server's limit fails with TooLarge", async () => {
    const a = await client("alice");
    const doc = await a.document(unique("doc"));
    await assert.rejects(doc.set({ big: "x".repeat(20_000) }), (e) => e instanceof SyncError && e.code === "TooLarge");
    assert.deepEqual(doc.data, {});
  });
});

describe("removing documents", () => {
  test("removeDocument fires removed on both clients, local only for the remover", async () => {
    const name = unique("doc");
    const a = await client("alice");
    const b = await client("bob");
    const da = await a.document(name);
    const db = await b.document(name);
    const gone = next(db, "removed");
    const mine = next(da, "removed");
    await da.removeDocument();
    assert.equal((await mine).isLocal, true);
    assert.equal((await gone).isLocal, false);
    await assert.rejects(b.document({ id: name, mode: "open_existing" }), (e) => e.code === "NotFound");
  });

  test("a document with a ttl expires and its subscribers hear removed", async () => {
    const a = await client("alice");
    const doc = await a.document({ id: unique("doc"), ttl: 1 });
    assert.ok(doc.dateExpires instanceof Date);
    const removed = await next(doc, "removed", () => true, 10_000);
    assert.equal(removed.isLocal, false);
  });
});
