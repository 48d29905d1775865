// What every synchronized object shares: its subscription across reconnects (resumed
// from the replica's revision), the handles the app holds on it, removal, and the count
// of writes still waiting for the server.

import type { Connection } from "./connection.js";
import { EventEmitter } from "./emitter.js";
import { SyncError } from "./errors.js";
import type { Logger } from "./log.js";
import { sameConnection } from "./transport.js";
import type { Event, ItemKey, ObjectInfo, ObjectKind, Response, WriteInfo } from "./wire.js";

/** What the client lends its entities. */
export interface Host {
  readonly conn: Connection;
  readonly log: Logger;
  readonly optimistic: boolean;
  readonly listWindow: number | null;
  /** Routes the events of `subId` to `entity` (`null`: stop routing them). */
  route(subId: number, entity: Entity | null): void;
  nextSubId(): number;
  /** The entity has ended (removed, or its last handle closed): open it anew next time. */
  forget(entity: Entity): void;
}

/** Events every object's handle emits. */
export interface CommonEvents {
  /** The object was deleted (by anyone) or expired; the handle is closed. */
  removed: { isLocal: boolean; reason?: "write" | "expired" };
  /** The count of writes waiting for the server went from zero to some, or back. */
  pendingWritesChanged: { hasPendingWrites: boolean };
  /** The server ended the subscription (e.g. read access was revoked); no more events. */
  subscriptionEnded: { error: SyncError };
}

/** The app's view of an entity: one per `client.document()` (etc.) call. */
export abstract class Handle<E extends object> extends EventEmitter<E> {
  #closed = false;
  constructor(protected readonly entity: Entity) {
    super();
  }

  get sid(): string {
    return this.entity.sid;
  }
  get uniqueName(): string | null {
    return this.entity.uniqueName;
  }
  /** When the object expires (null: never). */
  get dateExpires(): Date | null {
    return this.entity.dateExpires();
  }
  /** Some writes through this client have not been answered by the server yet. */
  get hasPendingWrites(): boolean {
    return this.entity.pendingWrites > 0;
  }

  /** Stops this handle's events; the subscription ends with the object's last handle. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.removeAllListeners();
    this.entity.detach(this);
  }

  /** Throws if the handle can no longer act. */
  protected check(): void {
    if (this.#closed) throw new SyncError("InvalidArgument", `this handle on ${this.sid} was closed`);
  }
}

const RETRY_MS = 1000;

export abstract class Entity {
  readonly sid: string;
  readonly kind: ObjectKind;
  readonly uniqueName: string | null;
  readonly host: Host;
  ended = false;
  pendingWrites = 0;
  protected handles = new Set<Handle<any>>();
  protected info: ObjectInfo;
  #subId: number | null = null;
  #live = false;
  #ready!: { resolve(): void; reject(e: SyncError): void };
  readonly ready: Promise<void>;
  readonly #unlisten: () => void;

  constructor(host: Host, info: ObjectInfo) {
    this.host = host;
    this.info = info;
    this.sid = info.sid;
    this.kind = info.kind;
    this.uniqueName = info.unique_name;
    this.ready = new Promise((resolve, reject) => (this.#ready = { resolve, reject }));
    // Swallowed here so that an open abandoned by the app is no unhandled rejection.
    this.ready.catch(() => {});
    const onWelcome = () => this.#subscribe();
    const onLost = () => this.#dropSubscription();
    host.conn.on("welcome", onWelcome).on("lost", onLost);
    this.#unlisten = () => host.conn.off("welcome", onWelcome).off("lost", onLost);
  }

  /** Subscribes (now if connected, else on the next connection); `ready` follows the snapshot. */
  start(): Promise<void> {
    if (this.host.conn.state === "connected") this.#subscribe();
    return this.ready;
  }

  /** The revision the replica holds, which a resubscription continues from. */
  protected abstract since(): number | null;
  /** A change, a snapshot or a chunk of one; ObjectRemoved and SubscriptionEnded are handled here. */
  protected abstract apply(e: Event, isLocal: boolean): void;
  /** The connection dropped: a snapshot being assembled is abandoned. */
  protected abstract interrupted(): void;

  dateExpires(): Date | null {
    return this.info.date_expires == null ? null : new Date(this.info.date_expires);
  }

  /** The first snapshot is complete: `open` may resolve. */
  protected loaded(): void {
    this.#live = true;
    this.#ready.resolve();
  }

  get loadedOnce(): boolean {
    return this.#live;
  }

  attach(h: Handle<any>): void {
    this.handles.add(h);
  }

  detach(h: Handle<any>): void {
    this.handles.delete(h);
    if (this.handles.size === 0) this.end();
  }

  emit(event: string, arg: unknown): void {
    for (const h of [...this.handles]) (h as EventEmitter<any>).emit(event, arg);
  }

  /** Runs a write, keeping `hasPendingWrites` and its event current. */
  async write<R>(run: () => Promise<R>): Promise<R> {
    if (this.ended) throw new SyncError("NotFound", `${this.kind} ${this.sid} was removed or closed`);
    if (this.pendingWrites++ === 0) this.emit("pendingWritesChanged", { hasPendingWrites: true });
    try {
      return await run();
    } finally {
      if (--this.pendingWrites === 0) this.emit("pendingWritesChanged", { hasPendingWrites: false });
    }
  }

  /** Sends a request on the client's connection. */
  request(request: Parameters<Connection["request"]>[0], idempotent = false): Promise<Response> {
    return this.host.conn.request(request, { idempotent });
  }

  /**
   * Changes only the time to live (seconds, 0: none) of the object, or of the item at
   * `key`: the server keeps the data, gives no new revision and sends no event.
   */
  async setTtl(ttl: number, key: ItemKey | null = null): Promise<void> {
    const r = await this.write(() => this.request({ SetTtl: { kind: this.kind, object: this.sid, key, ttl } }, true));
    if (typeof r !== "object") throw unexpected(r);
    if ("Object" in r) this.expiresAt(r.Object.date_expires);
    else if ("Written" in r) this.itemExpiresAt(r.Written);
    else throw unexpected(r);
  }

  /** The object's expiry changed (`setTtl`). */
  protected expiresAt(ms: number | null): void {
    this.info = { ...this.info, date_expires: ms };
  }

  /** An item's expiry changed (`setTtl` with a key); collections keep it. */
  protected itemExpiresAt(_written: WriteInfo): void {}

  /** Deletes the object; its `removed` event follows (at once, if the server's comes later). */
  async remove(): Promise<void> {
    await this.write(async () => {
      await this.request({ Delete: { kind: this.kind, object: this.sid, if_match: null } });
    });
    this.removed(true, "write");
  }

  handle(e: Event): void {
    if (this.ended) return;
    const isLocal = sameConnection(e.origin, this.host.conn.welcome?.connection_id);
    const k = e.kind;
    if (typeof k === "object" && "ObjectRemoved" in k) {
      this.removed(isLocal, k.ObjectRemoved.reason === "Expired" ? "expired" : "write");
    } else if (typeof k === "object" && "SubscriptionEnded" in k) {
      this.#endedBy(SyncError.fromWire(k.SubscriptionEnded.error));
    } else {
      this.apply(e, isLocal);
    }
  }

  /** Ends the entity: no more subscription, events or writes. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.#unlisten();
    const subId = this.#subId;
    this.#dropSubscription();
    if (subId !== null && this.host.conn.state === "connected") {
      this.host.conn.request({ Unsubscribe: { sub_id: subId } }, { queue: false }).catch(() => {});
    }
    this.host.forget(this);
    this.#ready.reject(new SyncError("NotFound", `${this.kind} ${this.sid} was closed before it loaded`));
  }

  protected removed(isLocal: boolean, reason: "write" | "expired"): void {
    if (this.ended) return;
    const handles = [...this.handles];
    this.emit("removed", { isLocal, reason });
    this.end();
    for (const h of handles) h.removeAllListeners();
  }

  #endedBy(error: SyncError): void {
    if (this.ended) return;
    if (!this.#live) this.#ready.reject(error);
    this.emit("subscriptionEnded", { error });
    this.end();
  }

  #dropSubscription(): void {
    if (this.#subId !== null) this.host.route(this.#subId, null);
    this.#subId = null;
    this.interrupted();
  }

  #subscribe(): void {
    if (this.ended || this.host.conn.state !== "connected") return;
    this.#dropSubscription();
    const subId = this.host.nextSubId();
    this.#subId = subId;
    // Routed before asking, so that no event can arrive unrouted.
    this.host.route(subId, this);
    const since = this.since();
    this.host.conn
      .request(
        {
          Subscribe: {
            sub_id: subId,
            object: this.sid,
            since,
            window: this.kind === "List" ? this.host.listWindow : null,
          },
        },
        { queue: false },
      )
      .catch((e: SyncError) => {
        if (this.#subId !== subId || this.ended) return;
        this.#dropSubscription();
        // The next connection's welcome subscribes again.
        if (e.code === "ConnectionLost") return;
        if (e.code === "NotFound" && this.#live) {
          // Deleted while this client was away: a resumed subscription finds it gone.
          this.removed(false, "write");
        } else if (e.code === "NotFound" || e.code === "Forbidden" || e.code === "Unauthorized") {
          this.#endedBy(e);
        } else {
          this.host.log.warn(`subscribing to ${this.sid} failed (${e.code}: ${e.message}); retrying`);
          setTimeout(() => this.#subscribe(), RETRY_MS);
        }
      });
  }
}

/** The write's outcome from a `Written` answer. */
export function written(r: Response): WriteInfo {
  if (typeof r === "object" && "Written" in r) return r.Written;
  throw unexpected(r);
}

export function unexpected(r: Response): SyncError {
  const name = typeof r === "string" ? r : Object.keys(r)[0];
  return new SyncError("Protocol", `unexpected answer from the server: ${name}`);
}
