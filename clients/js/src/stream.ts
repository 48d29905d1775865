// Message streams: SyncStream publishes JSON messages to the stream's current subscribers;
// nothing is stored, so a stream's replica is only the sequence of its last message.

import { Entity, Handle, type CommonEvents } from "./entity.js";
import { SyncError } from "./errors.js";
import { parse, stringify } from "./values.js";
import type { Event } from "./wire.js";

/** A published message. `sid` is its sequence number in the stream, as text. */
export interface StreamMessage<T = any> {
  sid: string;
  data: T;
  /** Counts the stream's messages from 1 at server start. */
  sequence: number;
}

export interface StreamEvents<T> extends CommonEvents {
  messagePublished: { message: StreamMessage<T>; isLocal: boolean };
}

export class StreamEntity extends Entity {
  protected since(): number | null {
    // Messages are never replayed: a resubscription starts afresh.
    return null;
  }

  protected interrupted(): void {}

  protected apply(e: Event, isLocal: boolean): void {
    const k = e.kind;
    if (typeof k !== "object") return;
    if ("Snapshot" in k) {
      if (!this.loadedOnce) this.loaded();
    } else if ("MessagePublished" in k) {
      const m = k.MessagePublished;
      this.emit("messagePublished", {
        message: { sid: String(m.sequence), data: parse(m.data), sequence: m.sequence },
        isLocal,
      });
    }
  }

  publish(data: unknown): Promise<StreamMessage> {
    const text = stringify(data);
    return this.write(async () => {
      const r = await this.request({ Publish: { stream: this.sid, data: text } });
      if (typeof r !== "object" || !("Published" in r)) throw new SyncError("Protocol", "expected Published");
      const sequence = r.Published.sequence;
      return { sid: String(sequence), data, sequence };
    });
  }
}

/** A channel of messages to whoever is subscribed now (at most 4 KiB each, not stored). */
export class SyncStream<T = any> extends Handle<StreamEvents<T>> {
  declare protected readonly entity: StreamEntity;

  /** Sends a message to the stream's current subscribers (this client's included). */
  async publishMessage(data: T): Promise<StreamMessage<T>> {
    this.check();
    return (await this.entity.publish(data)) as StreamMessage<T>;
  }

  /** Sets the stream's time to live in seconds (0: none). */
  async setTtl(ttl: number): Promise<void> {
    this.check();
    await this.entity.setTtl(ttl);
  }

  /** Deletes the stream for everyone. */
  async removeStream(): Promise<void> {
    this.check();
    await this.entity.remove();
  }
}
