// Failing over to another node: which URLs the client tries and in what order (fake
// sockets), a client moving to a second server of the same installation when its own
// stops, and a real cluster (two nodes over one etcd; skipped without `etcd` on PATH
// unless SYNCLINE_REQUIRE_ETCD=1).

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { SyncClient } from "../dist/index.js";
import { NodeBook, listedUrl, wsUrl } from "../dist/nodes.js";
import { Server, next, record, sleep, unique, waitFor } from "./helpers.mjs";

const node = (id, https, quic = "127.0.0.1:1") => ({ id, quic, https });

describe("the node book", () => {
  test("a round is the current node, then the listed ones, then the URLs the app gave", () => {
    const book = new NodeBook(["wss://a:1/v1/ws", "wss://z:1/v1/ws", "wss://a:1/v1/ws"]);
    assert.deepEqual(book.round(), ["wss://a:1/v1/ws", "wss://z:1/v1/ws"]);
    assert.equal(book.current, null);
    book.connected("wss://a:1/v1/ws");
    // The answering node is listed first; it stays at the URL the client reached it by.
    book.learn("wss://a:1/v1/ws", [node("a", "https://10.0.0.1:1"), node("b", "https://b:2"), node("c", "https://c:3")]);
    assert.deepEqual(book.round(), ["wss://a:1/v1/ws", "wss://b:2/v1/ws", "wss://c:3/v1/ws", "wss://z:1/v1/ws"]);
    // Moved to c, which no longer lists a: c first, a still tried as a URL the app gave.
    book.connected("wss://c:3/v1/ws");
    book.learn("wss://c:3/v1/ws", [node("c", "https://c:3"), node("b", "https://b:2")]);
    assert.deepEqual(book.round(), ["wss://c:3/v1/ws", "wss://b:2/v1/ws", "wss://a:1/v1/ws", "wss://z:1/v1/ws"]);
    // c going away: it comes last.
    assert.deepEqual(book.round(true), ["wss://b:2/v1/ws", "wss://a:1/v1/ws", "wss://z:1/v1/ws", "wss://c:3/v1/ws"]);
  });

  test("nodes without HTTPS or at an address nobody can dial are left out", () => {
    assert.equal(listedUrl(node("a", null)), null);
    assert.equal(listedUrl(node("a", "https://0.0.0.0:7401")), null);
    assert.equal(listedUrl(node("a", "https://[::]:7401")), null);
    assert.equal(listedUrl(node("a", "not a url")), null);
    assert.equal(listedUrl(node("a", "https://[::1]:7401")), "wss://[::1]:7401/v1/ws");
    assert.equal(wsUrl("https://h:1"), "wss://h:1/v1/ws");
    assert.equal(wsUrl("wss://h:1/custom"), "wss://h:1/custom");
    const book = new NodeBook(["wss://a:1/v1/ws"]);
    book.learn("wss://a:1/v1/ws", []);
    assert.deepEqual(book.round(), ["wss://a:1/v1/ws"]);
  });
});

describe("the order of attempts", () => {
  // Sockets the test scripts: each records its URL; `refuse` URLs close before opening
  // (a node that is down), the others open and answer Hello, and Nodes with `nodes`
  // (HTTPS URLs), the answering node first.
  function fakeInstallation({ refuse = new Set(), nodes = [] } = {}) {
    const opened = [];
    class FakeSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        opened.push(this);
        setTimeout(() => {
          if (refuse.has(url)) {
            this.readyState = 3;
            this.onclose?.({ code: 1006, reason: "" });
            return;
          }
          this.readyState = 1;
          this.onopen?.({});
        }, 1);
      }
      send(text) {
        const { id, request } = JSON.parse(text);
        const ok = (Ok) => setTimeout(() => this.onmessage?.({ data: JSON.stringify({ id, result: { Ok } }) }), 1);
        if (typeof request === "object" && "Hello" in request) {
          ok({ Welcome: { connection_id: opened.length, identity: "alice", service_sid: "IS0", account_sid: "AC0", token_expires_at: null, max_frame_bytes: 65536 } });
        } else if (request === "Nodes") {
          const self = this.url.replace(/^wss:/, "https:").replace(/\/v1\/ws$/, "");
          ok({ Nodes: [self, ...nodes.filter((n) => n !== self)].map((https) => node(https, https)) });
        }
      }
      close(code = 1000, reason = "") {
        if (this.readyState === 3) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code, reason }), 1);
      }
      /** The connection ends from the server's side: 4001 a node going away, 1006 a lost network. */
      drop(code) {
        this.readyState = 3;
        this.onclose?.({ code, reason: "" });
      }
    }
    return { FakeSocket, opened, urls: () => opened.map((s) => s.url) };
  }

  const [A, B, C, Z] = ["a.test:1", "b.test:2", "c.test:3", "z.test:9"].map((h) => `wss://${h}/v1/ws`);

  test("a lost node is tried first, then the nodes it listed, then the URLs given, one round per backoff", async () => {
    const refuse = new Set();
    const f = fakeInstallation({ refuse, nodes: ["https://a.test:1", "https://b.test:2", "https://c.test:3"] });
    const c = new SyncClient("t", {
      url: "https://a.test:1",
      nodes: ["https://z.test:9"],
      WebSocket: f.FakeSocket,
      logLevel: "silent",
      reconnectInitialDelayMs: 300,
      reconnectMaxDelayMs: 300,
    });
    try {
      assert.deepEqual(c.nodes, [A, Z]);
      await next(c, "connectionStateChanged", (s) => s === "connected", 2000);
      assert.equal(c.node, A);
      await waitFor(() => c.nodes.length === 4, "the listed nodes");
      assert.deepEqual(c.nodes, [A, B, C, Z]);

      // The network to a drops, and a and b are down: one round goes a, b, c at once.
      refuse.add(A).add(B);
      const lostAt = Date.now();
      f.opened.at(-1).drop(1006);
      await next(c, "connectionStateChanged", (s) => s === "connected", 3000);
      assert.deepEqual(f.urls(), [A, A, B, C]);
      assert.equal(c.node, C);
      // One backoff (150-300 ms) before the round, none between its attempts.
      assert.ok(Date.now() - lostAt < 1000, `failed over in ${Date.now() - lostAt} ms`);
      await waitFor(() => c.nodes[1] === A, "c's list");
      assert.deepEqual(c.nodes, [C, A, B, Z]);

      // c goes away (shutting down) and every node is down: the first round tries c
      // last, the next one first again, with a backoff between rounds.
      refuse.add(C).add(Z);
      const before = f.opened.length;
      f.opened.at(-1).drop(4001);
      await waitFor(() => f.opened.length >= before + 8, "two rounds", 3000);
      assert.deepEqual(f.urls().slice(before, before + 8), [A, B, Z, C, C, A, B, Z]);
      assert.equal(c.connectionState, "connecting");

      // z comes back: a round reaches it.
      refuse.delete(Z);
      await next(c, "connectionStateChanged", (s) => s === "connected", 3000);
      assert.equal(c.node, Z);
    } finally {
      await c.shutdown();
    }
  });

  test("a node that does not welcome the client within failoverAfterMs gives way to the next", async () => {
    const f = fakeInstallation();
    // A socket that opens and never answers: a node that is stuck.
    class Stuck extends f.FakeSocket {
      send(text) {
        if (this.url !== A) super.send(text);
      }
    }
    const c = new SyncClient("t", { url: "https://a.test:1", nodes: ["https://b.test:2"], WebSocket: Stuck, logLevel: "silent", failoverAfterMs: 200 });
    try {
      const started = Date.now();
      await next(c, "connectionStateChanged", (s) => s === "connected", 3000);
      assert.ok(Date.now() - started < 2000, `connected in ${Date.now() - started} ms`);
      assert.equal(c.node, B);
      assert.deepEqual(f.urls(), [A, B]);
    } finally {
      await c.shutdown();
    }
  });
});

describe("two servers of one installation", () => {
  test("when its server stops, the client goes to the other one it was given and its document catches up there", async () => {
    // b is a copy of a's data directory: the same installation (account, keys,
    // certificate), objects as they were at the copy. Each server lists only itself.
    const a = await new Server().start();
    const name = unique("doc");
    const setup = await a.backend();
    await setup.request({ DocSet: { document: name, data: JSON.stringify({ step: 0 }), if_match: null, ttl: null } });
    setup.close();
    await a.stop();
    const b = new Server(mkdtempSync(join(tmpdir(), "syncline-js-")));
    rmSync(b.dir, { recursive: true, force: true });
    cpSync(a.dir, b.dir, { recursive: true });
    await a.start(a.addresses());
    await b.start();
    let c;
    try {
      c = await a.client("alice", { nodes: [b.url], reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200 });
      const doc = await c.document(name);
      assert.deepEqual(doc.data, { step: 0 });
      assert.equal(c.node, wsUrl(a.url));
      const updates = record(doc, "updated");

      await a.stop();
      await waitFor(() => c.connectionState === "connected" && c.node === wsUrl(b.url), "the client on b", 10_000);
      const backend = await b.backend();
      await backend.request({ DocSet: { document: name, data: JSON.stringify({ step: 1 }), if_match: null, ttl: null } });
      backend.close();
      await waitFor(() => doc.data.step === 1, "the change made on b");
      assert.deepEqual(updates.map((u) => u.data), [{ step: 1 }]);
      // Writes go to b now.
      await doc.set({ step: 2 });
    } finally {
      await c?.shutdown();
      await a.stop();
      await b.stop();
      a.remove();
      b.remove();
    }
  });
});

/** Whether `etcd` runs here; a missing one fails instead under SYNCLINE_REQUIRE_ETCD. */
function etcdAvailable() {
  const bin = process.env.ETCD_BIN ?? "etcd";
  const ok = spawnSync(bin, ["--version"], { stdio: "ignore" }).status === 0;
  if (!ok && process.env.SYNCLINE_REQUIRE_ETCD) {
    throw new Error(`SYNCLINE_REQUIRE_ETCD is set but \`${bin} --version\` does not run`);
  }
  return ok;
}

async function freePorts(n) {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise((resolve) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => resolve(s));
    })),
  );
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** A one-member etcd in a temp dir; `stop()` kills it and removes the dir. */
async function startEtcd() {
  const dir = mkdtempSync(join(tmpdir(), "syncline-js-etcd-"));
  const [client, peer] = await freePorts(2);
  const clientUrl = `http://127.0.0.1:${client}`;
  const peerUrl = `http://127.0.0.1:${peer}`;
  const proc = spawn(
    process.env.ETCD_BIN ?? "etcd",
    [
      "--name", "m0", "--data-dir", join(dir, "data"),
      "--listen-client-urls", clientUrl, "--advertise-client-urls", clientUrl,
      "--listen-peer-urls", peerUrl, "--initial-advertise-peer-urls", peerUrl,
      "--initial-cluster", `m0=${peerUrl}`, "--initial-cluster-token", unique("syncline-js"),
      "--logger", "zap", "--log-level", "warn",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  proc.stderr.on("data", (d) => (log += d));
  const exited = new Promise((r) => proc.once("exit", r));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => {
        if (proc.exitCode !== null) throw new Error(`etcd exited: ${log}`);
        try {
          const r = await fetch(`${clientUrl}/health`);
          return r.ok && (await r.json()).health === "true";
        } catch {
          return false;
        }
      },
      "etcd to answer",
      30_000,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { endpoint: clientUrl, stop };
}

describe("a cluster over etcd", { skip: !etcdAvailable() && "etcd is not installed (set SYNCLINE_REQUIRE_ETCD=1 to fail instead)" }, () => {
  test("a client of a node that shuts down moves to the node it was told of and misses no change", async () => {
    const etcd = await startEtcd();
    const a = new Server();
    const b = new Server();
    let c;
    try {
      const cluster = ["--store", "etcd", "--etcd-endpoints", etcd.endpoint, "--etcd-prefix", `/${unique("js")}/`];
      await a.start({ args: cluster });
      // b presents a's certificate, so the CA the client trusts covers both nodes.
      const tls = join(a.dir, "tls");
      await b.start({ args: [...cluster, "--cert", join(tls, "cert.pem"), "--key", join(tls, "key.pem")] });

      c = await a.client("alice", { reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200 });
      const name = unique("doc");
      const listName = unique("list");
      const doc = await c.document({ id: name, data: { step: 0 } });
      const list = await c.list(listName);
      const updates = record(doc, "updated");
      const items = record(list, "itemAdded");
      await list.push({ i: 0 });
      // The client learned b from a's answer to Nodes.
      await waitFor(() => c.nodes.includes(wsUrl(b.url)), "the client to know b");
      assert.equal(c.node, wsUrl(a.url));

      await a.stop();
      await waitFor(() => c.connectionState !== "connected" || c.node !== wsUrl(a.url), "the client to lose a");
      // Written while the client is between nodes: queued, sent to b.
      const queued = doc.set({ step: 1 });
      const backend = await b.backend();
      try {
        for (let i = 1; i <= 3; i++) {
          await backend.request({ ListPush: { list: listName, data: JSON.stringify({ i }), ttl: null, ephemeral: false } });
        }
        await queued;
        await backend.request({ DocUpdate: { document: name, data: JSON.stringify({ by: "backend" }), if_match: null } });
        // b answers Nodes with itself first; a is gone from the list.
        const nodes = (await backend.request("Nodes")).Nodes;
        assert.equal(nodes[0].https, b.url);
        assert.ok(!nodes.some((n) => n.https === a.url), JSON.stringify(nodes));
      } finally {
        backend.close();
      }

      await waitFor(() => c.connectionState === "connected" && c.node === wsUrl(b.url), "the client on b", 15_000);
      await waitFor(() => doc.data.by === "backend" && items.length >= 4, "every change made on b", 10_000);
      await sleep(200);
      assert.deepEqual(doc.data, { step: 1, by: "backend" });
      assert.deepEqual(items.map((e) => e.item.data.i), [0, 1, 2, 3]);
      assert.deepEqual(updates.map((u) => u.data), [{ step: 1 }, { step: 1, by: "backend" }]);
      assert.deepEqual((await list.getItems()).items.map((i) => i.data.i), [0, 1, 2, 3]);
    } finally {
      await c?.shutdown();
      await a.stop();
      await b.stop();
      a.remove();
      b.remove();
      await etcd.stop();
    }
  });
});
