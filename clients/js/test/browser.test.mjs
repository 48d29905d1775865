// The SDK in a real browser (headless Chromium, when one is installed): bundled as an app
// would ship it, on the browser's own WebSocket, talking to a node client through a real
// server. Skipped where no Chromium is found (set CHROMIUM to its path).

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { build } from "esbuild";
import { Server, next, unique } from "./helpers.mjs";

function findChromium() {
  for (const c of [process.env.CHROMIUM, "chromium", "chromium-browser", "google-chrome"]) {
    if (c && spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0) return c;
  }
  return null;
}

const chromium = findChromium();
let server;

before(async () => {
  if (chromium) server = await new Server().start();
});
after(async () => {
  await server?.stop();
  server?.remove();
});

const page = (config) => `<!doctype html><meta charset="utf-8"><script type="module">
import { SyncClient } from "/sdk.js";
const config = ${JSON.stringify(config)};
const report = (result) => fetch("/result", { method: "POST", body: JSON.stringify(result) });
try {
  const token = await (await fetch("/token")).text();
  const client = new SyncClient(token, { url: config.url });
  const doc = await client.document(config.name);
  const heard = new Promise((resolve) => doc.on("updated", (e) => { if (!e.isLocal) resolve(e); }));
  await doc.set({ from: "browser" });
  await fetch("/ready", { method: "POST" });
  const e = await heard;
  report({ ok: true, state: client.connectionState, remote: e.data, isLocal: e.isLocal, hasWindow: typeof window });
  await client.shutdown();
} catch (e) {
  report({ ok: false, error: String(e && e.stack || e) });
}
</script>`;

test("the bundled SDK works in a browser on its native WebSocket, with a node client on the other side", { skip: chromium ? false : "no Chromium found" }, async () => {
  const entry = fileURLToPath(new URL("../src/index.ts", import.meta.url));
  const bundle = (await build({ entryPoints: [entry], bundle: true, minify: true, format: "esm", platform: "browser", write: false })).outputFiles[0].text;
  const name = unique("browser-doc");
  const nodeClient = await server.client("node");
  const nodeDoc = await nodeClient.document(name);
  const browserWrite = next(nodeDoc, "updated", (e) => !e.isLocal, 30_000);

  let resolveResult, resolveReady;
  const result = new Promise((r) => (resolveResult = r));
  const ready = new Promise((r) => (resolveReady = r));
  const http = createServer((req, res) => {
    if (req.url === "/") res.setHeader("content-type", "text/html").end(page({ url: server.url, name }));
    else if (req.url === "/sdk.js") res.setHeader("content-type", "text/javascript").end(bundle);
    else if (req.url === "/token") res.end(server.token("browser"));
    else if (req.url === "/ready") res.end(resolveReady());
    else if (req.url === "/result") {
      let body = "";
      req.on("data", (d) => (body += d));
      req.on("end", () => res.end(resolveResult(JSON.parse(body))));
    } else res.writeHead(404).end();
  });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  const profile = mkdtempSync(join(tmpdir(), "syncline-chromium-"));
  const browser = spawn(
    chromium,
    ["--headless=new", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors", `--user-data-dir=${profile}`, `http://127.0.0.1:${http.address().port}/`],
    { stdio: "ignore" },
  );
  const exited = new Promise((r) => browser.once("exit", r));
  const bounded = (p, what) =>
    Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 30_000))]);
  try {
    await bounded(ready, "the browser's write");
    const seen = await browserWrite;
    assert.deepEqual(seen.data, { from: "browser" });
    await nodeDoc.set({ from: "node" });
    const r = await bounded(result, "the browser's report");
    assert.equal(r.ok, true, r.error);
    assert.deepEqual(r.remote, { from: "node" });
    assert.equal(r.isLocal, false);
    assert.equal(r.state, "connected");
  } finally {
    browser.kill("SIGKILL");
    await exited;
    http.close();
    await nodeClient.shutdown();
    rmSync(profile, { recursive: true, force: true });
  }
});
