// Paginator: Twilio's page-at-a-time view of a list's or map's items, over the server's
// `Items` request (which only pages forward from an inclusive key, in either order).

import { SyncError } from "./errors.js";
import type { ItemInfo, ItemKey, Order } from "./wire.js";

/** One server page: `next` is where the following one starts, if there is one. */
export type FetchPage = (from: ItemKey | null, order: Order, limit: number) => Promise<{ items: ItemInfo[]; next: ItemKey | null }>;

const MAX_LIMIT = 1000;

function sameKey(a: ItemKey, b: ItemKey): boolean {
  return "Index" in a ? "Index" in b && a.Index === b.Index : "Key" in b && a.Key === b.Key;
}

function reverse(order: Order): Order {
  return order === "Asc" ? "Desc" : "Asc";
}

/**
 * `size` items after `cursor` (exclusive) in `order`, and whether more follow. Asking for
 * one more than needed says whether the page is the last without another round trip.
 */
async function after(fetch: FetchPage, cursor: ItemKey, order: Order, size: number) {
  const r = await fetch(cursor, order, Math.min(size + 2, MAX_LIMIT));
  const items = r.items.length && sameKey(r.items[0]!.key, cursor) ? r.items.slice(1) : r.items;
  return { items: items.slice(0, size), more: items.length > size || r.next !== null };
}

export class Paginator<I> {
  /** This page's items, in the order asked for. */
  readonly items: I[];
  readonly hasNextPage: boolean;
  readonly hasPrevPage: boolean;
  readonly #raw: ItemInfo[];
  readonly #fetch: FetchPage;
  readonly #make: (i: ItemInfo) => I;
  readonly #order: Order;
  readonly #size: number;

  constructor(raw: ItemInfo[], hasNext: boolean, hasPrev: boolean, fetch: FetchPage, make: (i: ItemInfo) => I, order: Order, size: number) {
    this.#raw = raw;
    this.items = raw.map(make);
    this.hasNextPage = hasNext;
    this.hasPrevPage = hasPrev;
    this.#fetch = fetch;
    this.#make = make;
    this.#order = order;
    this.#size = size;
  }

  /** The first page, from `from` (inclusive) or the start of `order`. */
  static async first<I>(fetch: FetchPage, make: (i: ItemInfo) => I, from: ItemKey | null, order: Order, size: number): Promise<Paginator<I>> {
    const r = await fetch(from, order, size);
    let hasPrev = false;
    if (from !== null) {
      // Something before `from` means a previous page.
      const back = await fetch(from, reverse(order), 2);
      hasPrev = back.items.some((i) => !sameKey(i.key, from));
    }
    return new Paginator(r.items, r.next !== null, hasPrev, fetch, make, order, size);
  }

  /** The page after this one; rejects if there is none. */
  async nextPage(): Promise<Paginator<I>> {
    const last = this.#raw[this.#raw.length - 1];
    if (!this.hasNextPage || !last) throw new SyncError("InvalidArgument", "there is no next page");
    const r = await after(this.#fetch, last.key, this.#order, this.#size);
    return new Paginator(r.items, r.more, true, this.#fetch, this.#make, this.#order, this.#size);
  }

  /** The page before this one; rejects if there is none. */
  async prevPage(): Promise<Paginator<I>> {
    const first = this.#raw[0];
    if (!this.hasPrevPage || !first) throw new SyncError("InvalidArgument", "there is no previous page");
    const r = await after(this.#fetch, first.key, reverse(this.#order), this.#size);
    return new Paginator(r.items.reverse(), true, r.more, this.#fetch, this.#make, this.#order, this.#size);
  }
}
