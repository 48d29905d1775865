// The client's one logical connection: authenticates each socket with Hello, queues
// requests while offline, reconnects with backoff (to another node of the installation
// when its own does not answer), notices a stale socket by pinging, and keeps time for
// the token. Entities hear `welcome` (resubscribe) and `lost`.

import { EventEmitter } from "./emitter.js";
import { SyncError } from "./errors.js";
import type { Logger } from "./log.js";
import { NodeBook } from "./nodes.js";
import { Transport, type WebSocketConstructor } from "./transport.js";
import type { EventFrame, Request, Response, Welcome, WireError } from "./wire.js";

/** Twilio Sync's connection states. */
export type ConnectionState = "connecting" | "connected" | "disconnecting" | "disconnected" | "denied" | "error";

export interface ConnectionOptions {
  /** WebSocket URLs of the installation: the app's first, then the other nodes it gave. */
  urls: string[];
  WebSocket: WebSocketConstructor;
  token: string;
  pingIntervalMs: number;
  pingTimeoutMs: number;
  requestTimeoutMs: number;
  connectTimeoutMs: number;
  /** How long an attempt may go without a Welcome before the next node of the round is tried. */
  failoverAfterMs: number;
  reconnectInitialDelayMs: number;
  reconnectMaxDelayMs: number;
  log: Logger;
}

/** What `connectionError` carries. */
export interface ConnectionErrorArgs {
  /** True when the client gives up until the app acts (a new token, a new client). */
  terminal: boolean;
  message: string;
  error?: SyncError;
}

export interface ConnectionEvents {
  stateChanged: ConnectionState;
  welcome: Welcome;
  lost: void;
  event: EventFrame;
  connectionError: ConnectionErrorArgs;
  tokenAboutToExpire: number;
  tokenExpired: void;
}

export interface RequestOptions {
  /** Safe to send again when the connection dropped before the answer (default false). */
  idempotent?: boolean;
  /** Wait for a connection if there is none (default true); else fail at once. */
  queue?: boolean;
}

interface Op {
  request: Request;
  idempotent: boolean;
  resolve(r: Response): void;
  reject(e: SyncError): void;
  timer: ReturnType<typeof setTimeout>;
  done: boolean;
}

// Close codes of the server's WebSocket edge.
const GOING_AWAY = 4001;
const UNAUTHORIZED = 4002;
const TOKEN_EXPIRED = 4003;

export class Connection extends EventEmitter<ConnectionEvents> {
  state: ConnectionState = "disconnected";
  welcome: Welcome | null = null;
  readonly #o: ConnectionOptions;
  #token: string;
  #transport: Transport | null = null;
  #queue: Op[] = [];
  #attempt = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #tokenTimers: ReturnType<typeof setTimeout>[] = [];
  #expiredToken: string | null = null;
  /** The token the live connection was authenticated with. */
  #liveToken: string | null = null;
  #stopped = false;
  readonly #nodes: NodeBook;
  /** What is left of the current round of attempts (the next node first). */
  #round: string[] = [];

  constructor(options: ConnectionOptions) {
    super();
    this.#o = options;
    this.#token = options.token;
    this.#nodes = new NodeBook(options.urls);
  }

  /** The WebSocket URL of the node connected to (or last connected to); null before the first. */
  get node(): string | null {
    return this.#nodes.current;
  }

  /** The nodes the next round of attempts would try, in order (the current one first). */
  get nodes(): string[] {
    return this.#nodes.round();
  }

  start(): void {
    this.#connect();
  }

  /** Sends `request` once connected; rejects with the server's error or `Timeout`. */
  request(request: Request, options: RequestOptions = {}): Promise<Response> {
    if (this.#stopped) return Promise.reject(new SyncError("ClientShutdown", "the client was shut down"));
    if (options.queue === false && this.state !== "connected") {
      return Promise.reject(new SyncError("ConnectionLost", "not connected"));
    }
    if (this.state === "denied" || this.state === "error") {
      return Promise.reject(new SyncError("Unauthorized", `the client cannot connect (state ${this.state})`));
    }
    return new Promise<Response>((resolve, reject) => {
      const op: Op = {
        request,
        idempotent: options.idempotent ?? false,
        resolve,
        reject,
        done: false,
        timer: setTimeout(() => {
          this.#queue = this.#queue.filter((o) => o !== op);
          this.#finish(op, new SyncError("Timeout", `no answer within ${this.#o.requestTimeoutMs} ms`));
        }, this.#o.requestTimeoutMs),
      };
      if (this.state === "connected" && this.#transport) this.#send(op, this.#transport);
      else this.#queue.push(op);
    });
  }

  /** Replaces the token: on the live connection, or for the next one (after expiry or denial). */
  async updateToken(token: string): Promise<void> {
    this.#token = token;
    if (this.#stopped) throw new SyncError("ClientShutdown", "the client was shut down");
    if (this.state === "connected") {
      const r = await this.request({ UpdateToken: { token } });
      this.#liveToken = token;
      if (typeof r === "object" && "TokenUpdated" in r) this.#scheduleToken(r.TokenUpdated.expires_at);
      return;
    }
    // Waiting for a token (expired, denied) or between attempts: try now with the new one.
    // A socket mid-handshake reads the token when it sends Hello.
    if (this.#transport === null) {
      this.#attempt = 0;
      this.#connect();
    }
  }

  async shutdown(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#connectTimer);
    this.#clearTokenTimers();
    this.#stopPing();
    this.#setState("disconnecting");
    const err = new SyncError("ClientShutdown", "the client was shut down");
    for (const op of this.#queue) this.#finish(op, err);
    this.#queue = [];
    const t = this.#transport;
    if (t) {
      t.close(1000, "client shutdown");
      await t.whenClosed();
    }
    this.#setState("disconnected");
  }

  #setState(s: ConnectionState): void {
    if (this.state === s) return;
    this.state = s;
    this.#o.log.debug("connection state", s);
    this.emit("stateChanged", s);
  }

  /**
   * One attempt, on the next node of the round (a new round, current node first, when the
   * last one is spent). A node that fails brings on the next at once; only a spent round
   * waits out the backoff (`#closed`).
   */
  #connect(): void {
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    if (this.#stopped) return;
    this.#setState("connecting");
    if (this.#round.length === 0) this.#round = this.#nodes.round();
    const url = this.#round.shift() as string;
    let t: Transport;
    try {
      t = new Transport(this.#o.WebSocket, url, {
        open: () => void this.#hello(t, url),
        event: (frame) => {
          if (t === this.#transport && this.welcome) this.emit("event", frame);
        },
        notice: (e) => this.#notice(e),
        closed: (code, reason) => this.#closed(t, code, reason),
      });
    } catch (e) {
      const err = new SyncError("InvalidArgument", `cannot open a WebSocket to ${url}: ${String(e)}`);
      // The app's own URL malformed, or a WebSocket that cannot be built: retrying will
      // not help. Another node's URL is only a failed attempt.
      if (url === this.#o.urls[0]) {
        this.#terminal("error", err);
        return;
      }
      this.#o.log.warn(err.message);
      if (this.#round.length > 0) this.#connect();
      else this.#scheduleReconnect();
      return;
    }
    this.#transport = t;
    // A socket that never opens, or a Hello never answered, must not stall the client;
    // with another node left in the round, it is tried after failoverAfterMs.
    const limit = this.#round.length > 0 ? Math.min(this.#o.failoverAfterMs, this.#o.connectTimeoutMs) : this.#o.connectTimeoutMs;
    clearTimeout(this.#connectTimer);
    this.#connectTimer = setTimeout(() => {
      if (t === this.#transport && !this.welcome) {
        this.#o.log.info(`no Welcome from ${url} within ${limit} ms; trying ${this.#round.length > 0 ? "the next node" : "again"}`);
        t.close(4000, "connect timeout");
      }
    }, limit);
  }

  async #hello(t: Transport, url: string): Promise<void> {
    let r: Response;
    const token = this.#token;
    try {
      r = await t.request({ Hello: { credential: { Token: token }, service: null } });
    } catch (e) {
      if (t !== this.#transport) return;
      const err = e instanceof SyncError ? e : new SyncError("Protocol", String(e));
      if (token !== this.#token && err.code !== "ConnectionLost") {
        // updateToken gave a new token while the old one was being refused: try it.
        t.close(1000, "token replaced");
        return;
      }
      if (err.code === "Unauthorized" || err.code === "Forbidden") this.#terminal("denied", err);
      else if (err.code === "TokenExpired") this.#expired(err);
      else {
        this.#o.log.warn("Hello failed:", err.message);
        this.emit("connectionError", { terminal: false, message: err.message, error: err });
        t.close(1000, "hello failed");
      }
      return;
    }
    if (t !== this.#transport) return;
    if (typeof r !== "object" || !("Welcome" in r)) {
      t.close(4004, "expected Welcome");
      return;
    }
    clearTimeout(this.#connectTimer);
    this.#liveToken = token;
    const welcome = r.Welcome;
    this.welcome = welcome;
    this.#attempt = 0;
    this.#round = [];
    this.#nodes.connected(url);
    // Where to go when this node goes: the installation's live nodes. A server from
    // before `Nodes` refuses it, and the client keeps the URLs it was given.
    t.request("Nodes").then(
      (answer) => {
        if (typeof answer === "object" && "Nodes" in answer) this.#nodes.learn(url, answer.Nodes);
      },
      (e: SyncError) => this.#o.log.debug("the node did not list the installation's nodes:", e.message),
    );
    this.#scheduleToken(welcome.token_expires_at);
    this.#startPing(t);
    this.#setState("connected");
    this.emit("welcome", welcome);
    const queued = this.#queue;
    this.#queue = [];
    for (const op of queued) this.#send(op, t);
  }

  #send(op: Op, t: Transport): void {
    if (op.done) return;
    t.request(op.request, this.welcome?.max_frame_bytes).then(
      (r) => this.#finish(op, null, r),
      (e: SyncError) => {
        if (op.done) return;
        // Sent again only when a repeat cannot do harm; a push or a conditional write
        // might have been applied, so its caller is told instead of guessing.
        if (e.code === "ConnectionLost" && op.idempotent && !this.#stopped) {
          if (this.state === "connected" && this.#transport) this.#send(op, this.#transport);
          else this.#queue.push(op);
          return;
        }
        this.#finish(op, e);
      },
    );
  }

  #finish(op: Op, error: SyncError | null, response?: Response): void {
    if (op.done) return;
    op.done = true;
    clearTimeout(op.timer);
    if (error) op.reject(error);
    else op.resolve(response as Response);
  }

  #notice(e: WireError): void {
    this.#o.log.warn("server notice:", e.code, e.message);
    if (e.code === "TokenExpired") this.#emitExpired();
  }

  #closed(t: Transport, code: number, reason: string): void {
    if (t !== this.#transport) return;
    this.#transport = null;
    clearTimeout(this.#connectTimer);
    this.#stopPing();
    const wasConnected = this.welcome !== null;
    this.welcome = null;
    if (wasConnected) this.emit("lost", undefined);
    if (this.#stopped) {
      this.#setState("disconnected");
      return;
    }
    if (code === UNAUTHORIZED) {
      this.#terminal("denied", new SyncError("Unauthorized", reason || "the server refused the credential"));
    } else if (code === TOKEN_EXPIRED && this.#token === this.#liveToken) {
      this.#expired(new SyncError("TokenExpired", reason || "the access token expired"));
    } else {
      const message = `connection lost (${code}${reason ? ` ${reason}` : ""}); reconnecting`;
      this.#o.log.info(message);
      if (wasConnected) this.emit("connectionError", { terminal: false, message });
      // Another node left in this round is tried at once; a spent round backs off. A
      // node going away (shutting down, restarting) is tried last in the next round.
      if (!wasConnected && this.#round.length > 0) this.#connect();
      else {
        if (wasConnected && code === GOING_AWAY) this.#round = this.#nodes.round(true);
        this.#scheduleReconnect();
      }
    }
  }

  #scheduleReconnect(): void {
    this.#setState("connecting");
    const { reconnectInitialDelayMs: first, reconnectMaxDelayMs: max } = this.#o;
    const base = Math.min(max, first * 2 ** Math.min(this.#attempt, 20));
    this.#attempt++;
    // Jitter spreads the reconnects of many clients after a server restart.
    const delay = base * (0.5 + Math.random() / 2);
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  /** Gives up until the app acts: reject what waits, say why. */
  #terminal(state: ConnectionState, err: SyncError): void {
    this.#round = [];
    this.#closeTransport();
    this.#clearTokenTimers();
    this.#setState(state);
    this.emit("connectionError", { terminal: true, message: err.message, error: err });
    for (const op of this.#queue) this.#finish(op, err);
    this.#queue = [];
  }

  /** The token ran out: wait for updateToken (queued requests keep their deadlines). */
  #expired(err: SyncError): void {
    this.#round = [];
    this.#closeTransport();
    this.#clearTokenTimers();
    this.#emitExpired();
    this.#setState("disconnected");
    this.emit("connectionError", { terminal: false, message: err.message, error: err });
  }

  #emitExpired(): void {
    if (this.#expiredToken === this.#token) return;
    this.#expiredToken = this.#token;
    this.emit("tokenExpired", undefined);
  }

  #closeTransport(): void {
    const t = this.#transport;
    this.#transport = null;
    clearTimeout(this.#connectTimer);
    this.#stopPing();
    if (this.welcome) {
      this.welcome = null;
      this.emit("lost", undefined);
    }
    t?.close(1000);
  }

  #startPing(t: Transport): void {
    this.#stopPing();
    this.#pingTimer = setInterval(() => {
      if (t !== this.#transport) return;
      const timer = setTimeout(() => {
        if (t !== this.#transport) return;
        this.#o.log.info(`no Pong within ${this.#o.pingTimeoutMs} ms; reconnecting`);
        t.close(4000, "no pong");
      }, this.#o.pingTimeoutMs);
      t.request("Ping").then(
        () => clearTimeout(timer),
        () => clearTimeout(timer),
      );
    }, this.#o.pingIntervalMs);
  }

  #stopPing(): void {
    clearInterval(this.#pingTimer);
    this.#pingTimer = undefined;
  }

  #scheduleToken(expiresAt: number | null): void {
    this.#clearTokenTimers();
    if (expiresAt == null) return;
    const token = this.#token;
    const left = expiresAt * 1000 - Date.now();
    // Three minutes ahead, or at half-life for a token shorter than six minutes.
    const lead = left > 360_000 ? 180_000 : left / 2;
    this.#tokenTimers.push(
      setTimeout(() => {
        if (token === this.#token) this.emit("tokenAboutToExpire", Math.max(0, Math.round((expiresAt * 1000 - Date.now()) / 1000)));
      }, Math.max(0, left - lead)),
      setTimeout(() => {
        if (token === this.#token) this.#emitExpired();
      }, Math.max(0, left)),
    );
  }

  #clearTokenTimers(): void {
    for (const t of this.#tokenTimers) clearTimeout(t);
    this.#tokenTimers = [];
  }
}
