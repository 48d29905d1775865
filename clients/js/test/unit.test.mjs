// Parts of the SDK that need no server: the emitter, update's merge, the paginator's
// paging both ways, and what the client sends on a socket it is given.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EventEmitter, Paginator, SyncClient, SyncError } from "../dist/index.js";
import { mergePatch } from "../dist/values.js";

describe("the event emitter", () => {
  test("on, once and off work as Twilio's EventEmitter API does", () => {
    const e = new EventEmitter();
    const seen = [];
    const a = (x) => seen.push(["a", x]);
    const b = (x) => seen.push(["b", x]);
    e.on("x", a).once("x", b);
    e.emit("x", 1);
    e.emit("x", 2);
    e.off("x", a);
    e.emit("x", 3);
    assert.deepEqual(seen, [["a", 1], ["b", 1], ["a", 2]]);
    e.once("y", b).off("y", b);
    assert.equal(e.emit("y", 4), false);
  });
});

describe("update's merge", () => {
  test("top-level keys replace, null removes, and a non-object becomes an object", () => {
    assert.deepEqual(mergePatch({ a: 1, b: { c: 2 } }, { b: { d: 3 }, a: null, e: 4 }), { b: { d: 3 }, e: 4 });
    assert.deepEqual(mergePatch(null, { a: 1 }), { a: 1 });
    assert.deepEqual(mergePatch([1, 2], { a: 1 }), { a: 1 });
  });
});

describe("the paginator", () => {
  // A fake `Items` over indices 0..n-1 that, like the server, pages from an inclusive key.
  const fakeList = (n) => async (from, order, limit) => {
    const all = Array.from({ length: n }, (_, i) => i);
    const sorted = order === "Asc" ? all : all.reverse();
    const start = from === null ? 0 : sorted.findIndex((i) => (order === "Asc" ? i >= from.Index : i <= from.Index));
    const page = start < 0 ? [] : sorted.slice(start, start + limit);
    const rest = start < 0 ? [] : sorted.slice(start + limit);
    return { items: page.map((i) => ({ key: { Index: i } })), next: rest.length ? { Index: rest[0] } : null };
  };
  const keys = (p) => p.items.map((i) => i.key.Index);

  test("pages forward to the end and back to the start", async () => {
    const p1 = await Paginator.first(fakeList(5), (i) => i, null, "Asc", 2);
    assert.deepEqual([keys(p1), p1.hasPrevPage, p1.hasNextPage], [[0, 1], false, true]);
    const p2 = await p1.nextPage();
    const p3 = await p2.nextPage();
    assert.deepEqual([keys(p3), p3.hasNextPage], [[4], false]);
    const b2 = await p3.prevPage();
    assert.deepEqual([keys(b2), b2.hasPrevPage, b2.hasNextPage], [[2, 3], true, true]);
    const b1 = await b2.prevPage();
    assert.deepEqual([keys(b1), b1.hasPrevPage], [[0, 1], false]);
    await assert.rejects(b1.prevPage(), SyncError);
  });

  test("an empty collection is one empty page with neither neighbour", async () => {
    const p = await Paginator.first(fakeList(0), (i) => i, null, "Desc", 10);
    assert.deepEqual([keys(p), p.hasPrevPage, p.hasNextPage], [[], false, false]);
  });

  test("a page that starts mid-way knows it has a previous page, in descending order too", async () => {
    const p = await Paginator.first(fakeList(6), (i) => i, { Index: 3 }, "Desc", 2);
    assert.deepEqual([keys(p), p.hasPrevPage, p.hasNextPage], [[3, 2], true, true]);
    assert.deepEqual(keys(await p.prevPage()), [5, 4]);
  });
});

describe("the client on a socket it is given", () => {
  class FakeSocket {
    static last = null;
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      FakeSocket.last = this;
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
      }, 0);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code = 1000, reason = "") {
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }), 0);
    }
  }

  test("an https URL becomes the wss /v1/ws URL, with the subprotocol and a Hello carrying the token", async () => {
    const c = new SyncClient("jwt-here", { url: "https://example.test:7401", WebSocket: FakeSocket });
    assert.equal(c.connectionState, "connecting");
    await new Promise((r) => setTimeout(r, 10));
    const s = FakeSocket.last;
    assert.equal(s.url, "wss://example.test:7401/v1/ws");
    assert.equal(s.protocols, "syncline.v1");
    assert.deepEqual(s.sent[0], { id: 1, request: { Hello: { credential: { Token: "jwt-here" }, service: null } } });
    await c.shutdown();
    assert.equal(c.connectionState, "disconnected");
  });

  test("a refused Hello is a denied client with a terminal connectionError carrying the server's message", async () => {
    const c = new SyncClient("bad", { url: "wss://example.test/v1/ws", WebSocket: FakeSocket });
    const err = new Promise((r) => c.once("connectionError", r));
    await new Promise((r) => setTimeout(r, 10));
    const s = FakeSocket.last;
    s.onmessage({ data: JSON.stringify({ id: 1, result: { Err: { code: "Unauthorized", message: "the token's signature does not verify", current_revision: null } } }) });
    const e = await err;
    assert.equal(e.terminal, true);
    assert.equal(e.message, "the token's signature does not verify");
    assert.equal(e.error.code, "Unauthorized");
    assert.equal(c.connectionState, "denied");
    await c.shutdown();
  });

  test("without a WebSocket constructor the client says what to pass", () => {
    assert.throws(() => new SyncClient("t", { url: "https://x" }), (e) => e instanceof SyncError && /options\.WebSocket/.test(e.message));
  });
});
