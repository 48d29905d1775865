// Test support: a real Syncline server on loopback in a temporary data directory, which
// can be stopped and started again on the same ports (as clients/js/test/helpers.mjs does).

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const BIN = process.env.SYNCLINE_BIN ? resolve(process.env.SYNCLINE_BIN) : resolve(here, "../../../target/debug/syncline");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `cond()` is truthy; fails after `ms`. */
export async function waitFor(cond, what, ms = 10_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

export class SynclineServer {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "syncline-chat-"));
    this.adminPath = join(this.dir, "admin.json");
    this.proc = null;
    this.admin = null;
  }

  /** Starts the server (on the given addresses, else free ports) and reads its admin.json. */
  async start({ listen = "127.0.0.1:0", httpListen = "127.0.0.1:0" } = {}) {
    if (!existsSync(BIN)) throw new Error(`no server binary at ${BIN}: run cargo build -p syncline-cli at the repository root, or set SYNCLINE_BIN`);
    // Written anew after every bind: a stale one would name the previous run's ports.
    if (existsSync(this.adminPath)) unlinkSync(this.adminPath);
    const args = ["serve", "--listen", listen, "--http-listen", httpListen, "--reap-interval-ms", "50", "--data", this.dir];
    this.proc = spawn(BIN, args, { env: { ...process.env, RUST_LOG: process.env.SERVER_LOG ?? "warn" }, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    this.proc.stderr.on("data", (d) => {
      stderr += d;
      if (process.env.SERVER_LOG) process.stderr.write(d);
    });
    const proc = this.proc;
    this.exited = new Promise((r) => proc.once("exit", r));
    await waitFor(
      () => {
        if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`the server exited: ${stderr}`);
        if (!existsSync(this.adminPath)) return false;
        try {
          this.admin = JSON.parse(readFileSync(this.adminPath, "utf8"));
          return true;
        } catch {
          return false; // caught mid-write
        }
      },
      "the server's admin.json",
      20_000,
    );
    return this;
  }

  /** The addresses it listens on, to start again on the same ports. */
  addresses() {
    return { listen: this.admin.server, httpListen: new URL(this.admin.http_url).host };
  }

  /** Stops the server (SIGTERM, SIGKILL after 5 s) and waits for it to exit. */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGTERM");
    const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(t);
  }

  remove() {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
