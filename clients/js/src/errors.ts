// SyncError: every failure the SDK reports, with the server's stable code and message and
// an HTTP-like status, so callers match on `code` and never parse a message.

import type { ErrorCode, WireError } from "./wire.js";

/**
 * The server's codes (see the server's `ErrorCode`), and the SDK's own: `Timeout` (no
 * answer before the request's deadline), `ConnectionLost` (the connection dropped before
 * the server answered a write that cannot be safely resent: it may or may not have been
 * applied), `ClientShutdown` (the client was shut down) and `Protocol` (the server sent
 * something this SDK does not understand).
 */
export type SyncErrorCode = ErrorCode | "Timeout" | "ConnectionLost" | "ClientShutdown" | "Protocol";

// Twilio's SDK reports an HTTP status with each error; these are the statuses its REST
// API uses for the same conditions, so code written against `status` keeps working.
const STATUS: Record<SyncErrorCode, number> = {
  Unauthorized: 401,
  TokenExpired: 401,
  Forbidden: 403,
  NotFound: 404,
  AlreadyExists: 409,
  Conflict: 412,
  TooLarge: 413,
  InvalidArgument: 400,
  RateLimited: 429,
  Unavailable: 503,
  Internal: 500,
  Timeout: 408,
  ConnectionLost: 503,
  ClientShutdown: 499,
  Protocol: 502,
};

export class SyncError extends Error {
  /** What kind of error it is: match on this, never on `message`. */
  readonly code: SyncErrorCode;
  /** An HTTP-like status for the code (404 for `NotFound`, 412 for `Conflict`, ...). */
  readonly status: number;
  /** For `Conflict`: the object's (or item's) current revision. */
  readonly currentRevision: number | null;

  constructor(code: SyncErrorCode, message: string, currentRevision: number | null = null) {
    super(message);
    this.name = "SyncError";
    this.code = code;
    this.status = STATUS[code] ?? 500;
    this.currentRevision = currentRevision;
  }

  /** The error the server sent. */
  static fromWire(e: WireError): SyncError {
    return new SyncError(e.code, e.message, e.current_revision ?? null);
  }

  override toString(): string {
    return `SyncError ${this.code} (${this.status}): ${this.message}`;
  }
}
