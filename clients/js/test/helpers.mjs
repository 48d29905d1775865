// Test support: a real Syncline server in a temporary directory, access tokens minted as a
// backend would, the `ws` package with the server's CA, and a raw backend connection.

import { after, before } from "node:test";
import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { SyncClient } from "../dist/index.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const BIN = process.env.SYNCLINE_BIN ?? resolve(here, "../../../target/debug/syncline");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `cond()` is truthy; fails after `ms`. */
export async function waitFor(cond, what = "condition", ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** The next `event` from `emitter` (matching `filter`), or a failure after `ms`. */
export function next(emitter, event, filter = () => true, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`timed out waiting for ${String(event)}`));
    }, ms);
    const on = (arg) => {
      if (!filter(arg)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(arg);
    };
    emitter.on(event, on);
  });
}

/** Collects every `event` of `emitter` into an array. */
export function record(emitter, event) {
  const seen = [];
  emitter.on(event, (arg) => seen.push(arg));
  return seen;
}

export class Server {
  constructor(dir) {
    this.dir = dir ?? mkdtempSync(join(tmpdir(), "syncline-js-"));
    this.proc = null;
    this.admin = null;
  }

  /**
   * Starts the server (on the given addresses, else free ports; `args`: more `serve`
   * arguments, kept for restarts) and reads its admin.json.
   */
  async start({ listen = "127.0.0.1:0", httpListen = "127.0.0.1:0", args: extra } = {}) {
    if (extra) this.args = extra;
    if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run cargo build -p syncline-cli, or set SYNCLINE_BIN`);
    const adminPath = join(this.dir, "admin.json");
    // Written anew after every bind: a stale one would name the previous run's ports.
    if (existsSync(adminPath)) unlinkSync(adminPath);
    const args = ["serve", "--listen", listen, "--http-listen", httpListen, "--reap-interval-ms", "50", "--data", this.dir, ...(this.args ?? [])];
    this.proc = spawn(BIN, args, { env: { ...process.env, RUST_LOG: process.env.SERVER_LOG ?? "warn" }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    this.proc.stderr.on("data", (d) => {
      stderr += d;
      if (process.env.SERVER_LOG) process.stderr.write(d);
    });
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.exited = exited;
    let early = false;
    exited.then(() => (early = true));
    await waitFor(
      () => {
        if (early) throw new Error(`the server exited: ${stderr}`);
        if (!existsSync(adminPath)) return false;
        try {
          this.admin = JSON.parse(readFileSync(adminPath, "utf8"));
          return true;
        } catch {
          return false; // caught mid-write
        }
      },
      "admin.json",
      20_000,
    );
    this.ca = readFileSync(this.admin.ca_file);
    this.url = this.admin.http_url;
    return this;
  }

  /** The addresses to restart on: the same ports. */
  addresses() {
    return { listen: this.admin.server, httpListen: new URL(this.admin.http_url).host };
  }

  /** Stops the server and waits for it to exit (SIGKILL: as a crash). */
  async stop(signal = "SIGTERM") {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    const t = setTimeout(() => this.proc.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(t);
  }

  remove() {
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The `ws` WebSocket trusting the server's self-signed CA. */
  get WebSocket() {
    const ca = this.ca;
    return class extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols, { ca });
      }
    };
  }

  /** An access token for `identity` (in `service`, default the installation's), as a backend mints it. */
  token(identity, { ttl = 3600, service, keySid, keySecret } = {}) {
    const a = this.admin;
    const sid = keySid ?? a.api_key_sid;
    const now = Math.floor(Date.now() / 1000);
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const head = b64({ alg: "HS256", typ: "JWT", cty: "twilio-fpa;v=1" });
    const body = b64({
      jti: `${sid}-${now}-${randomUUID()}`,
      iss: sid,
      sub: a.account_sid,
      exp: now + ttl,
      grants: { identity, data_sync: { service_sid: service ?? a.default_service_sid } },
    });
    const sig = createHmac("sha256", keySecret ?? a.api_key_secret).update(`${head}.${body}`).digest("base64url");
    return `${head}.${body}.${sig}`;
  }

  /** A SyncClient for `identity`, connected. */
  async client(identity, options = {}, tokenOptions = {}) {
    const c = new SyncClient(this.token(identity, tokenOptions), {
      url: this.url,
      WebSocket: this.WebSocket,
      logLevel: "silent",
      ...options,
    });
    if (c.connectionState !== "connected") await next(c, "connectionStateChanged", (s) => s === "connected");
    return c;
  }

  /** A raw backend (API key) connection acting in `service`. */
  async backend(service = null) {
    const ws = new (this.WebSocket)(this.url.replace(/^https/, "wss") + "/v1/ws", "syncline.v1");
    const pending = new Map();
    let id = 0;
    ws.on("message", (data) => {
      const m = JSON.parse(String(data));
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      if ("Ok" in m.result) p.resolve(m.result.Ok);
      else p.reject(Object.assign(new Error(m.result.Err.message), m.result.Err));
    });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("backend socket did not open in 10 s")), 10_000);
      ws.once("open", () => (clearTimeout(timer), resolve()));
      ws.once("error", (e) => (clearTimeout(timer), reject(e)));
    });
    const request = (req) =>
      new Promise((resolve, reject) => {
        const n = ++id;
        const timer = setTimeout(() => {
          pending.delete(n);
          reject(new Error(`backend request ${JSON.stringify(req).slice(0, 80)} got no answer in 10 s`));
        }, 10_000);
        pending.set(n, {
          resolve: (v) => (clearTimeout(timer), resolve(v)),
          reject: (e) => (clearTimeout(timer), reject(e)),
        });
        ws.send(JSON.stringify({ id: n, request: req }));
      });
    const a = this.admin;
    await request({ Hello: { credential: { ApiKey: { sid: a.api_key_sid, secret: a.api_key_secret } }, service } });
    return { request, close: () => ws.close() };
  }
}

/**
 * Runs `fn` with a server of its own, stopped afterwards: for tests that end sessions
 * server-side, so that whatever they leave behind cannot reach other tests.
 */
export async function withServer(fn) {
  const server = await new Server().start();
  const clients = [];
  try {
    return await fn(server, clients);
  } finally {
    await Promise.all(clients.map((c) => c.shutdown()));
    await server.stop();
    server.remove();
  }
}

/**
 * The server one test file shares: started before its tests and stopped after them,
 * with every client opened through `client` shut down first. `started(server)` and
 * `stopping()` run the file's own setup and teardown around it.
 */
export function sharedServer({ started, stopping } = {}) {
  const shared = {
    server: null,
    clients: [],
    async client(identity, options, tokenOptions) {
      const c = await shared.server.client(identity, options, tokenOptions);
      shared.clients.push(c);
      return c;
    },
  };
  before(async () => {
    shared.server = await new Server().start();
    await started?.(shared.server);
  });
  after(async () => {
    await stopping?.();
    await Promise.all(shared.clients.map((c) => c.shutdown()));
    await shared.server?.stop();
    shared.server?.remove();
  });
  return shared;
}

export const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;
