// Lists: SyncList, the handle on an ordered collection whose items get a new index on
// every push, and SyncListItem.

import { CollectionEntity, CollectionHandle, SyncItem, type ItemEvents, type ItemQueryOptions, type ItemRecord, type ItemWriteOptions } from "./collection.js";
import type { Paginator } from "./paginator.js";

/** One item of a list. */
export class SyncListItem<T = any> extends SyncItem<T> {
  /** Its place in the list, given by `push` and never reused. */
  readonly index: number;

  constructor(r: ItemRecord) {
    super(r);
    this.index = r.key as number;
  }
}

export type ListEvents<T> = ItemEvents<SyncListItem<T>, "index">;

export class ListEntity extends CollectionEntity {
  protected readonly keyName = "index" as const;
  makeItem(r: ItemRecord): SyncListItem {
    return new SyncListItem(r);
  }
}

const item = <T>(r: ItemRecord) => new SyncListItem<T>(r);

/** An ordered collection of JSON items, each at an index that `push` gives it. */
export class SyncList<T = any> extends CollectionHandle<ListEvents<T>> {
  /** Appends an item; resolves with it, index included. */
  async push(data: T, options: ItemWriteOptions = {}): Promise<SyncListItem<T>> {
    this.check();
    return item(await this.entity.push(data, options));
  }

  /** Replaces the data of the item at `index` (which must exist). */
  async set(index: number, data: T, options: ItemWriteOptions = {}): Promise<SyncListItem<T>> {
    this.check();
    return item(await this.entity.set(index, data, options));
  }

  /** Merges top-level keys into the item at `index` (`null` removes a key). */
  async update(index: number, partial: Partial<T>, options: ItemWriteOptions = {}): Promise<SyncListItem<T>> {
    this.check();
    return item(await this.entity.update(index, partial, options));
  }

  /**
   * Replaces the item's data with `mutator(current)`, written only if nobody changed
   * the item in between (else re-read and retried); `null` cancels.
   */
  async mutate(index: number, mutator: (current: T) => T | null, options: ItemWriteOptions = {}): Promise<SyncListItem<T>> {
    this.check();
    const r = await this.entity.mutate(index, mutator, options);
    return item(r as ItemRecord);
  }

  /** Removes the item at `index`. */
  async remove(index: number): Promise<void> {
    this.check();
    await this.entity.removeItem(index);
  }

  /** The item at `index`, from the replica when it holds it, else from the server. */
  async get(index: number): Promise<SyncListItem<T>> {
    this.check();
    return item(await this.entity.get(index));
  }

  /** A page of items (by index, ascending unless `order: "desc"`). */
  getItems(options: ItemQueryOptions<number> = {}): Promise<Paginator<SyncListItem<T>>> {
    this.check();
    return this.entity.getItems(options, (r) => item<T>(r));
  }

  /** Sets the time to live of one item, in seconds (0: none); its data and revision stay. */
  async setItemTtl(index: number, ttl: number): Promise<void> {
    this.check();
    await this.entity.setTtl(ttl, { Index: index });
  }

  /** Deletes the list and its items for everyone. */
  async removeList(): Promise<void> {
    this.check();
    await this.entity.remove();
  }
}
