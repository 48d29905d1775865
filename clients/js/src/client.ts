// SyncClient: the entry point. Opens documents, lists, maps and streams (by name or sid,
// in Twilio's modes), shares one entity per object among its handles, and routes the
// connection's events to them.

import { Connection, type ConnectionErrorArgs, type ConnectionState } from "./connection.js";
import { DocumentEntity, SyncDocument } from "./document.js";
import { EventEmitter } from "./emitter.js";
import type { Entity, Handle, Host } from "./entity.js";
import { SyncError } from "./errors.js";
import { ListEntity, SyncList } from "./list.js";
import { Logger, type LogLevel } from "./log.js";
import { MapEntity, SyncMap } from "./map.js";
import { wsUrl } from "./nodes.js";
import { StreamEntity, SyncStream } from "./stream.js";
import type { WebSocketConstructor } from "./transport.js";
import { SID, stringify } from "./values.js";
import type { ObjectInfo, ObjectKind, Response } from "./wire.js";

export interface SyncClientOptions {
  /**
   * The server: its HTTPS URL (`https://host:port`, as in admin.json's `http_url`) or the
   * WebSocket URL (`wss://host:port/v1/ws`).
   */
  url: string;
  /** A WebSocket constructor; default `globalThis.WebSocket` (on Node 20, pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** Console output from `trace` to `silent`; default `error`. */
  logLevel?: LogLevel;
  /** Show `set`/`update`/`mutate` at once and roll back if refused (default true). */
  optimistic?: boolean;
  /** How often to check that the connection is alive, in ms (default 5,000). */
  pingIntervalMs?: number;
  /** How long to wait for the answer before reconnecting, in ms (default 5,000). */
  pingTimeoutMs?: number;
  /** An operation fails with `Timeout` after this long, offline time included (default 30,000). */
  requestTimeoutMs?: number;
  /** How long to wait for a connection to open and be welcomed before trying again, in ms (default 10,000). */
  connectTimeoutMs?: number;
  /**
   * Other nodes of the same installation (HTTPS or WebSocket URLs, as `url`), tried when
   * `url` does not answer. Not needed to fail over once connected: after each connection
   * the client asks its node for the installation's live nodes and goes to another one
   * when its own is lost. These are for the start, and stay a last resort.
   */
  nodes?: string[];
  /**
   * With another node left to try, how long an attempt may go without a Welcome before
   * that node is tried instead, in ms (default 2,000; the last node of a round gets
   * `connectTimeoutMs`).
   */
  failoverAfterMs?: number;
  /** The first reconnect waits about this long, doubling up to the maximum (default 500). */
  reconnectInitialDelayMs?: number;
  /** The longest wait between reconnect attempts (default 15,000). */
  reconnectMaxDelayMs?: number;
  /** Lists: how many of the newest items the replica holds at subscribe (default the server's, 100). */
  listWindow?: number;
}

export type OpenMode = "open_or_create" | "open_existing" | "create_new";

export interface OpenOptions {
  /** A unique name or a sid; omitted: a new object without a name. */
  id?: string;
  /** Default `open_or_create`. */
  mode?: OpenMode;
  /** Time to live in seconds of an object this call creates. */
  ttl?: number;
}

export interface OpenDocumentOptions<T> extends OpenOptions {
  /** The data of a document this call creates (default `{}`). */
  data?: T;
}

export interface ClientEvents {
  connectionStateChanged: ConnectionState;
  connectionError: ConnectionErrorArgs;
  /** The token expires in the given number of seconds: call `updateToken`. */
  tokenAboutToExpire: number;
  /** The token has expired; the client reconnects once `updateToken` gives it a new one. */
  tokenExpired: void;
}

type AnyHandle = Handle<any>;

export class SyncClient extends EventEmitter<ClientEvents> {
  readonly #conn: Connection;
  readonly #host: Host;
  readonly #entities = new Map<string, Promise<Entity>>();
  readonly #routes = new Map<number, Entity>();
  #nextSub = 1;

  constructor(token: string, options: SyncClientOptions) {
    super();
    if (!options || !options.url) throw new SyncError("InvalidArgument", "SyncClient needs options.url, the server's URL");
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new SyncError("InvalidArgument", "no WebSocket here: pass options.WebSocket (on Node 20, the `ws` package's WebSocket)");
    }
    const log = new Logger(options.logLevel);
    this.#conn = new Connection({
      urls: [options.url, ...(options.nodes ?? [])].map(wsUrl),
      WebSocket: WS,
      token,
      pingIntervalMs: options.pingIntervalMs ?? 5000,
      pingTimeoutMs: options.pingTimeoutMs ?? 5000,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      failoverAfterMs: options.failoverAfterMs ?? 2000,
      reconnectInitialDelayMs: options.reconnectInitialDelayMs ?? 500,
      reconnectMaxDelayMs: options.reconnectMaxDelayMs ?? 15_000,
      log,
    });
    this.#host = {
      conn: this.#conn,
      log,
      optimistic: options.optimistic ?? true,
      listWindow: options.listWindow ?? null,
      route: (subId, entity) => {
        if (entity) this.#routes.set(subId, entity);
        else this.#routes.delete(subId);
      },
      nextSubId: () => this.#nextSub++,
      forget: (entity) => {
        for (const [key, p] of this.#entities) {
          p.then(
            (e) => {
              if (e === entity && this.#entities.get(key) === p) this.#entities.delete(key);
            },
            () => {},
          );
        }
      },
    };
    this.#conn.on("stateChanged", (s) => this.emit("connectionStateChanged", s));
    this.#conn.on("connectionError", (e) => this.emit("connectionError", e));
    this.#conn.on("tokenAboutToExpire", (ttl) => this.emit("tokenAboutToExpire", ttl));
    this.#conn.on("tokenExpired", () => this.emit("tokenExpired", undefined));
    this.#conn.on("event", (f) => this.#routes.get(f.sub_id)?.handle(f.event));
    this.#conn.start();
  }

  get connectionState(): ConnectionState {
    return this.#conn.state;
  }

  /**
   * The WebSocket URL of the node the client is connected to, or was last; null before
   * its first connection. When the connection is lost the client tries this node first,
   * then the installation's other live nodes (as the node listed them), then `url` and
   * `nodes`; its objects resume on whichever node welcomes it, missing nothing.
   */
  get node(): string | null {
    return this.#conn.node;
  }

  /** The nodes the client would try on its next reconnect, in order (its current node first). */
  get nodes(): string[] {
    return this.#conn.nodes;
  }

  /** Opens (or creates) a document and subscribes to it; resolves once its data is here. */
  async document<T = any>(arg?: string | OpenDocumentOptions<T>): Promise<SyncDocument<T>> {
    const o = typeof arg === "string" ? { id: arg } : (arg ?? {});
    const entity = await this.#open("Document", o, "data" in o ? o.data : {});
    return this.#handle(entity, (e) => new SyncDocument<T>(e));
  }

  /** Opens (or creates) a list and subscribes to it. */
  async list<T = any>(arg?: string | OpenOptions): Promise<SyncList<T>> {
    const entity = await this.#open("List", typeof arg === "string" ? { id: arg } : (arg ?? {}));
    return this.#handle(entity, (e) => new SyncList<T>(e));
  }

  /** Opens (or creates) a map and subscribes to it. */
  async map<T = any>(arg?: string | OpenOptions): Promise<SyncMap<T>> {
    const entity = await this.#open("Map", typeof arg === "string" ? { id: arg } : (arg ?? {}));
    return this.#handle(entity, (e) => new SyncMap<T>(e));
  }

  /** Opens (or creates) a message stream and subscribes to it. */
  async stream<T = any>(arg?: string | OpenOptions): Promise<SyncStream<T>> {
    const entity = await this.#open("Stream", typeof arg === "string" ? { id: arg } : (arg ?? {}));
    return this.#handle(entity, (e) => new SyncStream<T>(e));
  }

  /** Gives the client a fresh token (same identity): now, or to reconnect after expiry. */
  async updateToken(token: string): Promise<this> {
    await this.#conn.updateToken(token);
    return this;
  }

  /** Closes the connection and every object; the client cannot be used afterwards. */
  async shutdown(): Promise<void> {
    for (const p of [...this.#entities.values()]) {
      p.then((e) => e.end(), () => {});
    }
    this.#entities.clear();
    await this.#conn.shutdown();
  }

  #handle<H extends AnyHandle>(entity: Entity, make: (e: any) => H): H {
    const h = make(entity);
    entity.attach(h);
    return h;
  }

  /** The entity of the object `o` names, opened in `o.mode`; shared with earlier opens. */
  async #open(kind: ObjectKind, o: OpenOptions, data?: unknown): Promise<Entity> {
    const mode = o.mode ?? "open_or_create";
    if (mode !== "open_or_create" && mode !== "open_existing" && mode !== "create_new") {
      throw new SyncError("InvalidArgument", `unknown mode ${String(mode)}`);
    }
    const id = o.id ?? null;
    const isSid = id !== null && SID.test(id);
    if (mode === "create_new" && isSid) throw new SyncError("InvalidArgument", "create_new needs a unique name, not a sid");
    if (mode === "open_existing" && id === null) throw new SyncError("InvalidArgument", "open_existing needs an id: a unique name or a sid");

    let info: ObjectInfo;
    let created = false;
    if (mode === "create_new" || id === null) {
      info = await this.#create(kind, id, o.ttl);
      created = true;
    } else if (mode === "open_existing" || isSid) {
      info = await this.#fetch(kind, id, mode);
    } else {
      [info, created] = await this.#fetchOrCreate(kind, id, o.ttl);
    }
    if (created && kind === "Document" && data !== undefined) {
      // Only into the document as created: if someone wrote first, theirs stands.
      await this.#conn
        .request({ DocSet: { document: info.sid, data: stringify(data), if_match: 0, ttl: null } })
        .catch((e: SyncError) => {
          if (e.code !== "Conflict") throw e;
        });
    }
    let p = this.#entities.get(info.sid);
    if (!p) {
      const entity = this.#entity(kind, info);
      p = entity.start().then(() => entity);
      this.#entities.set(info.sid, p);
      p.catch(() => {
        if (this.#entities.get(info.sid) === p) this.#entities.delete(info.sid);
      });
    }
    return p;
  }

  #entity(kind: ObjectKind, info: ObjectInfo): Entity {
    switch (kind) {
      case "Document":
        return new DocumentEntity(this.#host, info);
      case "List":
        return new ListEntity(this.#host, info);
      case "Map":
        return new MapEntity(this.#host, info);
      case "Stream":
        return new StreamEntity(this.#host, info);
    }
  }

  async #create(kind: ObjectKind, name: string | null, ttl: number | undefined): Promise<ObjectInfo> {
    return objectInfo(await this.#conn.request({ Create: { kind, unique_name: name, ttl: ttl ?? null } }));
  }

  async #fetch(kind: ObjectKind, id: string, mode: OpenMode): Promise<ObjectInfo> {
    const info = objectInfo(await this.#conn.request({ Fetch: { object: id } }, { idempotent: true }));
    if (info.kind !== kind) {
      // Twilio keeps a namespace per kind; here one name names one object of any kind.
      throw new SyncError(
        mode === "open_existing" ? "NotFound" : "AlreadyExists",
        `${id} is a ${info.kind}, not a ${kind}`,
      );
    }
    return info;
  }

  async #fetchOrCreate(kind: ObjectKind, id: string, ttl: number | undefined): Promise<[ObjectInfo, boolean]> {
    for (let attempt = 0; ; attempt++) {
      try {
        return [await this.#fetch(kind, id, "open_or_create"), false];
      } catch (e) {
        if (!(e instanceof SyncError) || e.code !== "NotFound") throw e;
      }
      try {
        return [await this.#create(kind, id, ttl), true];
      } catch (e) {
        // Created by someone else between the two: fetch theirs (a few times at most).
        if (!(e instanceof SyncError) || e.code !== "AlreadyExists" || attempt >= 3) throw e;
      }
    }
  }
}

function objectInfo(r: Response): ObjectInfo {
  if (typeof r === "object" && "Object" in r) return r.Object;
  throw new SyncError("Protocol", "expected Object");
}
