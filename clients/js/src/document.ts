// Documents: the replica of one JSON value with optimistic writes laid over it, and
// SyncDocument, the handle the app holds.

import { Entity, Handle, unexpected, written, type CommonEvents, type Host } from "./entity.js";
import { SyncError } from "./errors.js";
import { checkPatch, clone, mergePatch, parse, sameJson, stringify } from "./values.js";
import type { DocumentInfo, Event, ObjectInfo } from "./wire.js";

export interface DocumentEvents<T> extends CommonEvents {
  /** The data changed: here, by another client, or back after a refused write. */
  updated: { data: T; previousData: T; isLocal: boolean };
  /** A write that was already shown was refused by the server: `data` is the server's. */
  rolledBack: { error: SyncError; data: T };
}

export interface WriteOptions {
  /** Time to live in seconds from now (0: none); omitted: keep the current expiry. */
  ttl?: number;
}

/** A local write shown before the server's answer; `ack` is the revision that holds it. */
interface Op {
  apply(v: unknown): unknown;
  ack: number | null;
}

/** How many times `mutate` re-reads and retries when another writer got in first. */
export const MUTATE_ATTEMPTS = 32;

export class DocumentEntity extends Entity {
  #doc: DocumentInfo | null = null;
  #data: unknown = null;
  #ops: Op[] = [];
  /** The value listeners last saw. */
  #shown: unknown = null;

  constructor(host: Host, info: ObjectInfo) {
    super(host, info);
  }

  get data(): unknown {
    return this.#shown;
  }
  get revision(): number {
    return this.#doc?.revision ?? this.info.revision;
  }
  get dateUpdated(): Date {
    return new Date(this.#doc?.date_updated ?? this.info.date_updated);
  }
  override dateExpires(): Date | null {
    const e = this.#doc ? this.#doc.date_expires : this.info.date_expires;
    return e == null ? null : new Date(e);
  }

  protected override expiresAt(ms: number | null): void {
    super.expiresAt(ms);
    if (this.#doc) this.#doc = { ...this.#doc, date_expires: ms };
  }

  protected since(): number | null {
    return this.#doc?.revision ?? null;
  }

  protected interrupted(): void {}

  protected apply(e: Event, isLocal: boolean): void {
    const k = e.kind;
    if (typeof k !== "object") return;
    if ("Snapshot" in k) {
      const state = k.Snapshot.state;
      if (!("Document" in state)) return;
      this.#doc = state.Document;
      this.#data = parse(state.Document.data);
      if (!this.loadedOnce) {
        this.#shown = this.#visible();
        this.loaded();
      } else {
        this.#settle(false);
      }
    } else if ("DocumentUpdated" in k) {
      const doc = this.#doc;
      if (!doc || e.revision <= doc.revision) return;
      const u = k.DocumentUpdated;
      const hadOps = this.#ops.length > 0;
      this.#data = parse(u.data);
      this.#doc = { ...doc, revision: e.revision, data: u.data, date_updated: u.date_updated };
      if (hadOps) {
        this.#settle(isLocal);
      } else {
        const previousData = this.#shown;
        this.#shown = this.#data;
        this.emit("updated", { data: this.#shown, previousData, isLocal });
      }
    }
  }

  #visible(): unknown {
    return this.#ops.reduce((v, op) => op.apply(v), this.#data);
  }

  /** Drops the local writes the replica now holds, and tells listeners if what they see changed. */
  #settle(isLocal: boolean): void {
    const revision = this.#doc?.revision ?? -1;
    this.#ops = this.#ops.filter((op) => op.ack === null || op.ack > revision);
    const next = this.#visible();
    if (sameJson(next, this.#shown)) return;
    const previousData = this.#shown;
    this.#shown = next;
    this.emit("updated", { data: next, previousData, isLocal });
  }

  /** Shows a local write at once (when the client is optimistic). */
  #show(apply: (v: unknown) => unknown): Op | null {
    if (!this.host.optimistic || !this.#doc) return null;
    const op: Op = { apply, ack: null };
    this.#ops.push(op);
    const previousData = this.#shown;
    this.#shown = this.#visible();
    this.emit("updated", { data: this.#shown, previousData, isLocal: true });
    return op;
  }

  #acked(op: Op | null, revision: number): void {
    if (!op) return;
    op.ack = revision;
    this.#settle(true);
  }

  #rollBack(op: Op | null, error: unknown): void {
    if (!op) return;
    this.#ops = this.#ops.filter((o) => o !== op);
    this.#settle(false);
    this.emit("rolledBack", { error, data: this.#shown });
  }

  set(value: unknown, ttl: number | undefined): Promise<unknown> {
    const data = stringify(value);
    return this.write(async () => {
      const op = this.#show(() => value);
      try {
        const w = written(
          await this.request({ DocSet: { document: this.sid, data, if_match: null, ttl: ttl ?? null } }, true),
        );
        this.#acked(op, w.revision);
        return value;
      } catch (e) {
        this.#rollBack(op, e);
        throw e;
      }
    });
  }

  update(patch: unknown, ttl: number | undefined): Promise<unknown> {
    const p = checkPatch(patch);
    // The server's update takes no TTL: with one, it is a mutate that merges.
    if (ttl !== undefined) return this.mutate((v) => mergePatch(v, p), ttl);
    const data = stringify(p);
    return this.write(async () => {
      const op = this.#show((v) => mergePatch(v, p));
      try {
        const w = written(await this.request({ DocUpdate: { document: this.sid, data, if_match: null } }, true));
        this.#acked(op, w.revision);
        const v = w.value;
        return v && "Document" in v ? parse(v.Document.data) : mergePatch(this.#data, p);
      } catch (e) {
        this.#rollBack(op, e);
        throw e;
      }
    });
  }

  mutate(fn: (current: any) => unknown, ttl: number | undefined): Promise<unknown> {
    return this.write(async () => {
      // The server's data at the revision the write is conditional on: not what is shown,
      // which may hold other unanswered writes that the server has not applied.
      let base: unknown = clone(this.#data);
      let ifMatch = this.revision;
      let op: Op | null = null;
      for (let attempt = 1; ; attempt++) {
        const next = fn(base);
        if (next === null || next === undefined) {
          // Cancelled: what was shown for an earlier attempt goes.
          if (op) {
            this.#ops = this.#ops.filter((o) => o !== op);
            this.#settle(false);
          }
          return this.#shown;
        }
        const data = stringify(next);
        if (op) {
          op.apply = () => next;
          this.#settle(true);
        } else {
          op = this.#show(() => next);
        }
        try {
          const w = written(
            await this.request({ DocSet: { document: this.sid, data, if_match: ifMatch, ttl: ttl ?? null } }),
          );
          this.#acked(op, w.revision);
          return next;
        } catch (e) {
          if (!(e instanceof SyncError) || e.code !== "Conflict" || attempt >= MUTATE_ATTEMPTS) {
            this.#rollBack(op, e);
            throw e;
          }
        }
        // Another writer got in first: read what it wrote and ask the mutator again.
        try {
          const r = await this.request({ DocGet: { document: this.sid } }, true);
          if (typeof r !== "object" || !("Document" in r)) throw unexpected(r);
          base = parse(r.Document.data);
          ifMatch = r.Document.revision;
        } catch (e) {
          this.#rollBack(op, e);
          throw e;
        }
      }
    });
  }
}

/**
 * A JSON value every subscriber sees change in real time. `T` is the shape of its data
 * (`document<T>()`); the SDK does not check it.
 */
export class SyncDocument<T = any> extends Handle<DocumentEvents<T>> {
  declare protected readonly entity: DocumentEntity;

  /** The current data, with this client's unanswered writes already applied. */
  get data(): T {
    return this.entity.data as T;
  }
  /** The revision the replica is at (the server's, without unanswered local writes). */
  get revision(): number {
    return this.entity.revision;
  }
  get dateUpdated(): Date {
    return this.entity.dateUpdated;
  }

  /** Replaces the data; resolves with it once the server has it. */
  async set(data: T, options: WriteOptions = {}): Promise<T> {
    this.check();
    return (await this.entity.set(data, options.ttl)) as T;
  }

  /** Merges top-level keys into the data (`null` removes a key); resolves with the result. */
  async update(partial: Partial<T>, options: WriteOptions = {}): Promise<T> {
    this.check();
    return (await this.entity.update(partial, options.ttl)) as T;
  }

  /**
   * Replaces the data with `mutator(current)`, written only if nobody wrote in between;
   * otherwise the current data is read again and `mutator` called again. Returning
   * `null` cancels (the promise resolves with the data as it is).
   */
  async mutate(mutator: (current: T) => T | null, options: WriteOptions = {}): Promise<T> {
    this.check();
    return (await this.entity.mutate(mutator, options.ttl)) as T;
  }

  /** Sets the document's time to live in seconds (0: none); its data and revision stay. */
  async setTtl(ttl: number): Promise<void> {
    this.check();
    await this.entity.setTtl(ttl);
  }

  /** Deletes the document for everyone. */
  async removeDocument(): Promise<void> {
    this.check();
    await this.entity.remove();
  }
}
