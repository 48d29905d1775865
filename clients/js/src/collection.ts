// Lists and maps alike: the replica of their items (a list's holds the newest window and
// everything added since), optimistic item writes laid over it, and the item events.

import { MUTATE_ATTEMPTS } from "./document.js";
import { Entity, Handle, unexpected, written, type CommonEvents, type Host } from "./entity.js";
import { SyncError } from "./errors.js";
import { Paginator } from "./paginator.js";
import { checkPatch, clone, fromWireKey, mergePatch, parse, sameJson, stringify, toWireKey, type Key } from "./values.js";
import type { Event, ItemInfo, ObjectInfo, Order, Request, WriteInfo } from "./wire.js";

/** An item as the replica holds it: its data parsed. */
export interface ItemRecord {
  key: Key;
  data: any;
  revision: number;
  createdBy: string;
  dateCreated: number;
  dateUpdated: number;
  dateExpires: number | null;
}

export function record(i: ItemInfo): ItemRecord {
  return {
    key: fromWireKey(i.key),
    data: parse(i.data),
    revision: i.revision,
    createdBy: i.created_by,
    dateCreated: i.date_created,
    dateUpdated: i.date_updated,
    dateExpires: i.date_expires,
  };
}

/** What list and map items share; `SyncListItem` adds `index`, `SyncMapItem` `key`. */
export abstract class SyncItem<T = any> {
  readonly data: T;
  /** The object revision at which the item last changed. */
  readonly revision: number;
  readonly dateCreated: Date;
  readonly dateUpdated: Date;
  readonly dateExpires: Date | null;
  /** The identity that created it (`system` for the backend). */
  readonly createdBy: string;

  constructor(r: ItemRecord) {
    this.data = r.data;
    this.revision = r.revision;
    this.dateCreated = new Date(r.dateCreated);
    this.dateUpdated = new Date(r.dateUpdated);
    this.dateExpires = r.dateExpires == null ? null : new Date(r.dateExpires);
    this.createdBy = r.createdBy;
  }
}

/** Item events with Twilio's argument shapes; `K` names the key: `index` or `key`. */
export type ItemEvents<Item, K extends string> = CommonEvents & {
  itemAdded: { item: Item; isLocal: boolean };
  itemUpdated: { item: Item; previousItemData: any; isLocal: boolean };
  itemRemoved: { [P in K]: P extends "index" ? number : string } & { previousItemData: any; isLocal: boolean };
  /** A write that was already shown was refused: `item` is the server's (null: none). */
  rolledBack: { [P in K]: P extends "index" ? number : string } & { error: SyncError; item: Item | null };
};

export interface ItemWriteOptions {
  /** The item's time to live in seconds (0: none); omitted: keep its current expiry. */
  ttl?: number;
  /**
   * Presence: the item lives while this client's identity has a live connection, and is
   * removed (for everyone) once the last one ends.
   */
  ephemeral?: boolean;
}

export interface ItemQueryOptions<K> {
  /** The first item of the page (inclusive): a list index or a map key. */
  from?: K;
  /** Items per page (default 50, at most 1,000). */
  pageSize?: number;
  /** Same as `pageSize`, as Twilio accepts it. */
  limit?: number;
  order?: "asc" | "desc" | Order;
}

interface Op {
  apply(v: ItemRecord | undefined): ItemRecord | undefined;
  ack: number | null;
}

export abstract class CollectionEntity extends Entity {
  #items = new Map<Key, ItemRecord>();
  #windowStart = 0;
  #ops = new Map<Key, Op[]>();
  #building: { info: ObjectInfo; windowStart: number; items: Map<Key, ItemRecord> } | null = null;
  #deferred: [Event, boolean][] = [];

  constructor(host: Host, info: ObjectInfo) {
    super(host, info);
  }

  /** `index` for lists, `key` for maps: the name item events use. */
  protected abstract readonly keyName: "index" | "key";
  /** The app's item object for a record. */
  abstract makeItem(r: ItemRecord): unknown;

  get revision(): number {
    return this.info.revision;
  }

  protected since(): number | null {
    return this.loadedOnce ? this.info.revision : null;
  }

  protected interrupted(): void {
    this.#building = null;
    this.#deferred = [];
  }

  protected override itemExpiresAt(w: WriteInfo): void {
    const v = w.value;
    if (!v || !("Item" in v)) return;
    const key = fromWireKey(v.Item.key);
    const held = this.#items.get(key);
    if (held) this.#items.set(key, { ...held, dateExpires: v.Item.date_expires });
  }

  #holds(key: Key): boolean {
    return typeof key !== "number" || key >= this.#windowStart;
  }

  /** An item as the app sees it: the replica's, with unanswered local writes applied. */
  visible(key: Key): ItemRecord | undefined {
    const ops = this.#ops.get(key);
    const base = this.#items.get(key);
    return ops ? ops.reduce<ItemRecord | undefined>((v, op) => op.apply(v), base) : base;
  }

  protected apply(e: Event, isLocal: boolean): void {
    const k = e.kind;
    if (typeof k !== "object") return;
    if ("Snapshot" in k) {
      const s = k.Snapshot.state;
      if ("List" in s) this.#building = { info: s.List.info, windowStart: s.List.window_start, items: new Map() };
      else if ("Map" in s) this.#building = { info: s.Map.info, windowStart: 0, items: new Map() };
      this.#deferred = [];
      return;
    }
    if ("SnapshotItems" in k) {
      const b = this.#building;
      if (!b) return;
      for (const i of k.SnapshotItems.items) {
        const r = record(i);
        b.items.set(r.key, r);
      }
      if (k.SnapshotItems.done) this.#replace(b);
      return;
    }
    if (this.#building) {
      // A change sent while the snapshot's chunks are still coming applies after them.
      this.#deferred.push([e, isLocal]);
      return;
    }
    if (!this.loadedOnce || e.revision <= this.info.revision) return;
    this.info = { ...this.info, revision: e.revision };
    if ("ItemAdded" in k || "ItemUpdated" in k) {
      const info = "ItemAdded" in k ? k.ItemAdded.item : k.ItemUpdated.item;
      const item = record(info);
      this.info.date_updated = item.dateUpdated;
      const held = this.#holds(item.key);
      if (this.#ops.has(item.key)) {
        this.#change([item.key], isLocal, () => this.#items.set(item.key, item));
        return;
      }
      const before = this.#items.get(item.key);
      if (held) this.#items.set(item.key, item);
      this.#settleAll(isLocal);
      if ("ItemAdded" in k && !before) this.emit("itemAdded", { item: this.makeItem(item), isLocal });
      else {
        const previous = before ? before.data : "ItemUpdated" in k ? parse(k.ItemUpdated.previous) : null;
        this.emit("itemUpdated", { item: this.makeItem(item), previousItemData: previous, isLocal });
      }
    } else if ("ItemRemoved" in k) {
      const key = fromWireKey(k.ItemRemoved.key);
      if (this.#ops.has(key)) {
        this.#change([key], isLocal, () => this.#items.delete(key));
        return;
      }
      this.#items.delete(key);
      this.#settleAll(isLocal);
      this.emit("itemRemoved", { [this.keyName]: key, previousItemData: parse(k.ItemRemoved.previous), isLocal });
    }
  }

  /** A complete snapshot replaces the replica; after the first, listeners hear what changed. */
  #replace(b: { info: ObjectInfo; windowStart: number; items: Map<Key, ItemRecord> }): void {
    this.#building = null;
    if (!this.loadedOnce) {
      this.info = b.info;
      this.#windowStart = b.windowStart;
      this.#items = b.items;
      this.loaded();
    } else {
      const keys = new Set<Key>([...this.#items.keys(), ...b.items.keys()].filter((k) => typeof k !== "number" || k >= b.windowStart));
      this.#change([...keys], false, () => {
        this.info = b.info;
        this.#windowStart = b.windowStart;
        this.#items = b.items;
      });
    }
    const deferred = this.#deferred;
    this.#deferred = [];
    for (const [e, isLocal] of deferred) this.apply(e, isLocal);
  }

  /**
   * Runs `mutate` on the replica and tells listeners how the items of `keys` (and those
   * with local writes) changed as they see them.
   */
  #change(keys: Key[], isLocal: boolean, mutate: () => void): void {
    const all = new Set<Key>([...keys, ...this.#ops.keys()]);
    const before = new Map<Key, ItemRecord | undefined>();
    for (const k of all) before.set(k, this.visible(k));
    mutate();
    this.#dropAcked();
    for (const k of all) this.#tell(k, before.get(k), this.visible(k), isLocal);
  }

  #settleAll(isLocal: boolean): void {
    if (this.#ops.size) this.#change([], isLocal, () => {});
  }

  #dropAcked(): void {
    const revision = this.info.revision;
    for (const [k, ops] of this.#ops) {
      const rest = ops.filter((op) => op.ack === null || op.ack > revision);
      if (rest.length) this.#ops.set(k, rest);
      else this.#ops.delete(k);
    }
  }

  #tell(key: Key, before: ItemRecord | undefined, after: ItemRecord | undefined, isLocal: boolean): void {
    if (!before && after) this.emit("itemAdded", { item: this.makeItem(after), isLocal });
    else if (before && after && !sameJson(before.data, after.data)) {
      this.emit("itemUpdated", { item: this.makeItem(after), previousItemData: before.data, isLocal });
    } else if (before && !after) {
      this.emit("itemRemoved", { [this.keyName]: key, previousItemData: before.data, isLocal });
    }
  }

  /** Shows a local write of an item at once, when the client is optimistic and holds the item. */
  #show(key: Key, data: (v: unknown) => unknown, mayCreate: boolean): Op | null {
    if (!this.host.optimistic || !this.loadedOnce || !this.#holds(key)) return null;
    if (!mayCreate && !this.visible(key)) return null;
    const op: Op = {
      ack: null,
      apply: (v) => {
        const now = Date.now();
        return v
          ? { ...v, data: data(v.data), dateUpdated: now }
          : { key, data: data(undefined), revision: this.info.revision, createdBy: "", dateCreated: now, dateUpdated: now, dateExpires: null };
      },
    };
    this.#change([key], true, () => this.#ops.set(key, [...(this.#ops.get(key) ?? []), op]));
    return op;
  }

  #acked(op: Op | null, revision: number): void {
    if (!op) return;
    op.ack = revision;
    this.#settleAll(true);
  }

  #withdraw(key: Key, op: Op | null): void {
    if (!op) return;
    this.#change([key], false, () => {
      const rest = (this.#ops.get(key) ?? []).filter((o) => o !== op);
      if (rest.length) this.#ops.set(key, rest);
      else this.#ops.delete(key);
    });
  }

  #rollBack(key: Key, op: Op | null, error: unknown): void {
    if (!op) return;
    this.#withdraw(key, op);
    const v = this.visible(key);
    this.emit("rolledBack", { [this.keyName]: key, error, item: v ? this.makeItem(v) : null });
  }

  /** The item written, from the server's answer or, when it may not be read, from what was sent. */
  #result(w: ReturnType<typeof written>, key: Key, data: unknown): ItemRecord {
    const v = w.value;
    if (v && "Item" in v) return record(v.Item);
    const now = Date.now();
    return { key, data, revision: w.revision, createdBy: w.object_created_by, dateCreated: now, dateUpdated: now, dateExpires: null };
  }

  async get(key: Key): Promise<ItemRecord> {
    const v = this.loadedOnce && this.#holds(key) ? this.visible(key) : undefined;
    if (v) return v;
    const r = await this.request({ ItemGet: { kind: this.kind, object: this.sid, key: toWireKey(key) } }, true);
    if (typeof r === "object" && "Item" in r) return record(r.Item);
    throw unexpected(r);
  }

  set(key: Key, value: unknown, o: ItemWriteOptions): Promise<ItemRecord> {
    const data = stringify(value);
    return this.write(async () => {
      const op = this.#show(key, () => value, this.kind === "Map");
      try {
        const w = written(
          await this.request(
            {
              ItemSet: {
                kind: this.kind,
                object: this.sid,
                key: toWireKey(key),
                data,
                if_match: null,
                ttl: o.ttl ?? null,
                ephemeral: o.ephemeral ?? false,
              },
            },
            true,
          ),
        );
        this.#acked(op, w.revision);
        return this.#result(w, key, value);
      } catch (e) {
        this.#rollBack(key, op, e);
        throw e;
      }
    });
  }

  update(key: Key, patch: unknown, o: ItemWriteOptions): Promise<ItemRecord> {
    const p = checkPatch(patch);
    // A map item that is not there yet is created (as Twilio's update does), and the
    // server's update takes no TTL: both go through mutate.
    const absent = this.kind === "Map" && this.loadedOnce && !this.visible(key);
    if (o.ttl !== undefined || absent) return this.mutate(key, (v) => mergePatch(v, p), o).then((r) => r as ItemRecord);
    const data = stringify(p);
    return this.write(async () => {
      const op = this.#show(key, (v) => mergePatch(v, p), false);
      try {
        const w = written(
          await this.request({ ItemUpdate: { kind: this.kind, object: this.sid, key: toWireKey(key), data, if_match: null } }, true),
        );
        this.#acked(op, w.revision);
        return this.#result(w, key, mergePatch(this.visible(key)?.data, p));
      } catch (e) {
        this.#rollBack(key, op, e);
        throw e;
      }
    });
  }

  /**
   * Conditional read-modify-write of one item. A map item that does not exist is passed
   * to the mutator as `{}` and created only if still absent; `null` cancels (resolving
   * with the item as it is, or null if there is none).
   */
  mutate(key: Key, fn: (current: any) => unknown, o: ItemWriteOptions): Promise<ItemRecord | null> {
    const wireKey = toWireKey(key);
    return this.write(async () => {
      // The server's item as the replica has it, not with unanswered local writes applied:
      // the write is conditional on its revision.
      let current: ItemRecord | undefined = this.loadedOnce && this.#holds(key) ? this.#items.get(key) : undefined;
      if (!current && (this.kind === "List" || !this.loadedOnce)) current = await this.#read(key);
      let op: Op | null = null;
      for (let attempt = 1; ; attempt++) {
        const next = fn(current ? clone(current.data) : {});
        if (next === null || next === undefined) {
          this.#withdraw(key, op);
          return this.visible(key) ?? current ?? null;
        }
        const data = stringify(next);
        if (op) {
          const o2 = op;
          this.#change([key], true, () => {
            o2.apply = (v) => (v ? { ...v, data: next } : { ...this.#synth(key), data: next });
          });
        } else {
          op = this.#show(key, () => next, this.kind === "Map");
        }
        const request: Request = current
          ? {
              ItemSet: {
                kind: this.kind,
                object: this.sid,
                key: wireKey,
                data,
                if_match: current.revision,
                ttl: o.ttl ?? null,
                ephemeral: o.ephemeral ?? false,
              },
            }
          : { ItemCreate: { kind: this.kind, object: this.sid, key: wireKey, data, ttl: o.ttl ?? null, ephemeral: o.ephemeral ?? false } };
        try {
          const w = written(await this.request(request));
          this.#acked(op, w.revision);
          return this.#result(w, key, next);
        } catch (e) {
          const retry =
            e instanceof SyncError &&
            attempt < MUTATE_ATTEMPTS &&
            (e.code === "Conflict" || e.code === "AlreadyExists" || (e.code === "NotFound" && this.kind === "Map" && current !== undefined));
          if (!retry) {
            this.#rollBack(key, op, e);
            throw e;
          }
        }
        // Another writer got in first: read what it wrote and ask the mutator again.
        try {
          current = await this.#read(key);
        } catch (e) {
          this.#rollBack(key, op, e);
          throw e;
        }
      }
    });
  }

  #synth(key: Key): ItemRecord {
    const now = Date.now();
    return { key, data: null, revision: this.info.revision, createdBy: "", dateCreated: now, dateUpdated: now, dateExpires: null };
  }

  /** The server's item; for a map, undefined when there is none. */
  async #read(key: Key): Promise<ItemRecord | undefined> {
    try {
      const r = await this.request({ ItemGet: { kind: this.kind, object: this.sid, key: toWireKey(key) } }, true);
      if (typeof r === "object" && "Item" in r) return record(r.Item);
      throw unexpected(r);
    } catch (e) {
      if (this.kind === "Map" && e instanceof SyncError && e.code === "NotFound") return undefined;
      throw e;
    }
  }

  async removeItem(key: Key): Promise<void> {
    await this.write(() => this.request({ ItemRemove: { kind: this.kind, object: this.sid, key: toWireKey(key), if_match: null } }));
  }

  async push(value: unknown, o: ItemWriteOptions): Promise<ItemRecord> {
    const data = stringify(value);
    return this.write(async () => {
      const w = written(await this.request({ ListPush: { list: this.sid, data, ttl: o.ttl ?? null, ephemeral: o.ephemeral ?? false } }));
      const key = w.key ? fromWireKey(w.key) : -1;
      return this.#result(w, key, value);
    });
  }

  getItems<I>(options: ItemQueryOptions<Key>, make: (r: ItemRecord) => I): Promise<Paginator<I>> {
    const size = Math.max(1, Math.min(1000, options.pageSize ?? options.limit ?? 50));
    const o = options.order ?? "asc";
    const order: Order = o === "desc" || o === "Desc" ? "Desc" : "Asc";
    const from = options.from === undefined || options.from === null ? null : toWireKey(options.from);
    const fetch = async (from: ReturnType<typeof toWireKey> | null, order: Order, limit: number) => {
      const r = await this.request({ Items: { kind: this.kind, object: this.sid, from, order, limit } }, true);
      if (typeof r === "object" && "Items" in r) return r.Items;
      throw unexpected(r);
    };
    return Paginator.first(fetch, (i) => make(record(i)), from, order, size);
  }
}

/** Base of the list and map handles: what they share. */
export abstract class CollectionHandle<E extends object> extends Handle<E> {
  declare protected readonly entity: CollectionEntity;

  /** The revision the replica is at. */
  get revision(): number {
    return this.entity.revision;
  }

  /** Sets the list's or map's own time to live in seconds (0: none); its items stay. */
  async setTtl(ttl: number): Promise<void> {
    this.check();
    await this.entity.setTtl(ttl);
  }
}
