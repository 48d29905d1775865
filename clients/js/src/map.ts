// Maps: SyncMap, the handle on a collection of JSON items keyed by string, and
// SyncMapItem. Presence is a map item written with `ephemeral: true`.

import { CollectionEntity, CollectionHandle, SyncItem, type ItemEvents, type ItemQueryOptions, type ItemRecord, type ItemWriteOptions } from "./collection.js";
import type { Paginator } from "./paginator.js";

/** One item of a map. */
export class SyncMapItem<T = any> extends SyncItem<T> {
  readonly key: string;

  constructor(r: ItemRecord) {
    super(r);
    this.key = r.key as string;
  }
}

export type MapEvents<T> = ItemEvents<SyncMapItem<T>, "key">;

export class MapEntity extends CollectionEntity {
  protected readonly keyName = "key" as const;
  makeItem(r: ItemRecord): SyncMapItem {
    return new SyncMapItem(r);
  }
}

const item = <T>(r: ItemRecord) => new SyncMapItem<T>(r);

/** A collection of JSON items keyed by string. */
export class SyncMap<T = any> extends CollectionHandle<MapEvents<T>> {
  /**
   * Creates or replaces the item at `key`. With `ephemeral: true` it is presence: removed
   * for everyone once this identity has no live connection left.
   */
  async set(key: string, data: T, options: ItemWriteOptions = {}): Promise<SyncMapItem<T>> {
    this.check();
    return item(await this.entity.set(key, data, options));
  }

  /** Merges top-level keys into the item (`null` removes a key), creating it if absent. */
  async update(key: string, partial: Partial<T>, options: ItemWriteOptions = {}): Promise<SyncMapItem<T>> {
    this.check();
    return item(await this.entity.update(key, partial, options));
  }

  /**
   * Replaces the item's data with `mutator(current)` (`{}` when there is no item yet),
   * written only if nobody changed it in between (else re-read and retried). `null`
   * cancels: resolves with the item as it is, or null if there is none.
   */
  async mutate(key: string, mutator: (current: T) => T | null, options: ItemWriteOptions = {}): Promise<SyncMapItem<T> | null> {
    this.check();
    const r = await this.entity.mutate(key, mutator, options);
    return r ? item(r) : null;
  }

  /** Removes the item at `key`. */
  async remove(key: string): Promise<void> {
    this.check();
    await this.entity.removeItem(key);
  }

  /** The item at `key`; rejects with code `NotFound` if there is none. */
  async get(key: string): Promise<SyncMapItem<T>> {
    this.check();
    return item(await this.entity.get(key));
  }

  /** A page of items, by key (ascending unless `order: "desc"`). */
  getItems(options: ItemQueryOptions<string> = {}): Promise<Paginator<SyncMapItem<T>>> {
    this.check();
    return this.entity.getItems(options, (r) => item<T>(r));
  }

  /** Sets the time to live of one item, in seconds (0: none); its data and revision stay. */
  async setItemTtl(key: string, ttl: number): Promise<void> {
    this.check();
    await this.entity.setTtl(ttl, { Key: key });
  }

  /** Deletes the map and its items for everyone. */
  async removeMap(): Promise<void> {
    this.check();
    await this.entity.remove();
  }
}
