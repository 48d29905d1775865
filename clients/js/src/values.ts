// JSON values as the SDK handles them: parsed from the wire's JSON text, compared, copied,
// and merged exactly as the server merges an `update`.

import { SyncError } from "./errors.js";
import type { ItemKey } from "./wire.js";

export function parse(text: string): any {
  try {
    return JSON.parse(text);
  } catch {
    throw new SyncError("Protocol", "the server sent invalid JSON");
  }
}

/** JSON text of a value, refusing what JSON cannot carry before it reaches the wire. */
export function stringify(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) throw new SyncError("InvalidArgument", "the data is not JSON (undefined or a function)");
  return text;
}

/** Values compared as the server would store them. */
export function sameJson(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/**
 * A copy handed to a mutator, so that a function that edits its argument in place does
 * not change the replica behind the SDK's back.
 */
export function clone<T>(value: T): T {
  return value === undefined ? value : JSON.parse(JSON.stringify(value));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The server's `update`: top-level keys of `patch` replace those of `current` (a
 * non-object current value counts as `{}`), and a key set to `null` is removed.
 */
export function mergePatch(current: unknown, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = isObject(current) ? { ...current } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else if (v !== undefined) out[k] = v;
  }
  return out;
}

export function checkPatch(patch: unknown): Record<string, unknown> {
  if (!isObject(patch)) throw new SyncError("InvalidArgument", "update data must be a JSON object");
  return patch;
}

/** The plain key of an item: a list index or a map key. */
export type Key = number | string;

export function toWireKey(key: Key): ItemKey {
  return typeof key === "number" ? { Index: key } : { Key: key };
}

export function fromWireKey(key: ItemKey): Key {
  return "Index" in key ? key.Index : key.Key;
}

/** Object sids; anything else is a unique name. */
export const SID = /^(ET|ES|MP|TO)[0-9a-f]{32}$/;
