// One WebSocket to the server: JSON text messages, request ids matched to their answers,
// and events handed up by subscription. It never reconnects; connection.ts does.

import { SyncError } from "./errors.js";
import type { EventFrame, Request, Response, WireError } from "./wire.js";

/** The part of the WebSocket API the SDK uses (the browser's, and the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

/** A WebSocket constructor: `globalThis.WebSocket`, or the `ws` package's on Node 20. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The subprotocol the server's WebSocket edge speaks. */
export const SUBPROTOCOL = "syncline.v1";

const OPEN = 1;

export interface TransportHandlers {
  open(): void;
  event(frame: EventFrame): void;
  /** An error tied to no request (id 0), e.g. the token expired. */
  notice(error: WireError): void;
  closed(code: number, reason: string): void;
}

interface Waiter {
  resolve(r: Response): void;
  reject(e: SyncError): void;
}

export class Transport {
  readonly #ws: WebSocketLike;
  readonly #pending = new Map<number, Waiter>();
  #handlers: TransportHandlers | null;
  #nextId = 1;
  #markClosed!: () => void;
  readonly #closed = new Promise<void>((resolve) => (this.#markClosed = resolve));

  constructor(WS: WebSocketConstructor, url: string, handlers: TransportHandlers) {
    this.#handlers = handlers;
    this.#ws = new WS(url, SUBPROTOCOL);
    this.#ws.onopen = () => this.#handlers?.open();
    this.#ws.onmessage = (ev) => this.#receive(ev.data);
    // Every failure also ends in a close event, which is where it is handled.
    this.#ws.onerror = () => {};
    this.#ws.onclose = (ev) => {
      this.#markClosed();
      this.#ended(ev.code, ev.reason);
    };
  }

  get isOpen(): boolean {
    return this.#handlers !== null && this.#ws.readyState === OPEN;
  }

  /** Sends `request` and resolves with its answer; rejects with the server's error. */
  request(request: Request, maxBytes = Infinity): Promise<Response> {
    if (!this.isOpen) {
      return Promise.reject(new SyncError("ConnectionLost", "not connected"));
    }
    const id = this.#nextId++;
    const text = JSON.stringify({ id, request });
    // Measured in UTF-16 units, which never undercounts UTF-8 bytes by more than 3x; the
    // exact count is only needed near the limit.
    if (text.length > maxBytes / 3 && utf8Length(text) > maxBytes) {
      return Promise.reject(
        new SyncError("TooLarge", `the request is ${utf8Length(text)} bytes, over the server's limit of ${maxBytes}`),
      );
    }
    return new Promise<Response>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#ws.send(text);
    });
  }

  /** Resolves once the socket has really closed (at most a second after `close`). */
  whenClosed(): Promise<void> {
    return this.#closed;
  }

  /**
   * Closes the socket and reports the end at once (`closed` is not called again): a
   * stale socket's close handshake may take as long as the dead peer it waits for.
   */
  close(code = 1000, reason = ""): void {
    try {
      this.#ws.close(code, reason);
    } catch {
      // Already closing, or a code the implementation refuses: either way it is done.
    }
    this.#ended(code, reason);
    // A peer that never answers the close handshake must not hold up a shutdown.
    const t: any = setTimeout(() => this.#markClosed(), 1000);
    // Node: this wait alone must not keep a process alive that has nothing else to do.
    t?.unref?.();
  }

  #ended(code: number, reason: string): void {
    const handlers = this.#handlers;
    if (!handlers) return;
    this.#handlers = null;
    this.#ws.onopen = this.#ws.onmessage = null;
    const lost = new SyncError("ConnectionLost", `the connection closed before the server answered (${code}${reason ? ` ${reason}` : ""})`);
    for (const w of this.#pending.values()) w.reject(lost);
    this.#pending.clear();
    handlers.closed(code, reason);
  }

  #receive(data: unknown): void {
    const handlers = this.#handlers;
    if (!handlers) return;
    let msg: any;
    try {
      msg = JSON.parse(typeof data === "string" ? data : String(data));
    } catch {
      this.close(4004, "unreadable message");
      return;
    }
    if (msg && typeof msg === "object" && "event" in msg) {
      handlers.event(msg as EventFrame);
      return;
    }
    const id: number | undefined = msg?.id;
    const result = msg?.result;
    if (typeof id !== "number" || !result || typeof result !== "object") {
      this.close(4004, "unexpected message");
      return;
    }
    if (id === 0) {
      // A notice tied to no request (the token expired, say) fails everything in flight.
      if ("Err" in result) {
        const err = SyncError.fromWire(result.Err as WireError);
        for (const w of this.#pending.values()) w.reject(err);
        this.#pending.clear();
        handlers.notice(result.Err as WireError);
      }
      return;
    }
    const waiter = this.#pending.get(id);
    if (!waiter) return;
    this.#pending.delete(id);
    if ("Ok" in result) waiter.resolve(result.Ok as Response);
    else waiter.reject(SyncError.fromWire(result.Err as WireError));
  }
}

/** Whether an event's `origin` is the connection with id `connectionId` (0: the server itself). */
export function sameConnection(origin: number, connectionId: number | undefined): boolean {
  return origin !== 0 && origin === connectionId;
}

export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
