// The nodes a client knows of an installation, and the order it tries them in. It
// starts with the URLs it was given (`url`, then `nodes`); after each Welcome it asks its
// node for the installation's live nodes (`Nodes`) and keeps their WebSocket URLs, so that
// when its node goes away it can go to another. A round of attempts takes the current
// node first (it may only have blinked), then the listed ones, then the given URLs as a
// last resort (a load balancer, or a node that left the list since). No IO here.

import type { NodeInfo } from "./wire.js";

const URL_PATH = "/v1/ws";

/** The WebSocket URL of a server URL: `https://h:p` becomes `wss://h:p/v1/ws`. */
export function wsUrl(url: string): string {
  const u = url.replace(/^http(s?):\/\//i, "ws$1://");
  // Only a bare host gets the default path; a URL with a path is taken as given.
  return /^wss?:\/\/[^/]+\/?$/i.test(u) ? u.replace(/\/?$/, URL_PATH) : u;
}

/**
 * The WebSocket URL of a node the server listed, or null when there is none to dial: a
 * node without HTTPS, or one advertising an address no other machine can reach
 * (`0.0.0.0`, `[::]`: a node bound to every interface).
 */
export function listedUrl(node: NodeInfo): string | null {
  if (!node.https) return null;
  let host: string;
  try {
    host = new URL(node.https).hostname;
  } catch {
    return null;
  }
  if (host === "0.0.0.0" || host === "[::]" || host === "") return null;
  return wsUrl(node.https);
}

export class NodeBook {
  readonly #configured: string[];
  #listed: string[] = [];
  #current: string | null = null;

  /** A book of the given WebSocket URLs (the app's `url` first), duplicates dropped. */
  constructor(configured: string[]) {
    this.#configured = [...new Set(configured)];
  }

  /**
   * The URLs of one round, each once: the current node, the listed ones, the given ones.
   * With `currentLast` (the node said it was going away) the current node comes last.
   */
  round(currentLast = false): string[] {
    const all = this.#current === null ? [] : [this.#current];
    const round = [...new Set([...all, ...this.#listed, ...this.#configured])];
    if (currentLast && this.#current !== null) round.push(round.shift() as string);
    return round;
  }

  /** The client is now connected to `url`. */
  connected(url: string): void {
    this.#current = url;
  }

  /** The node of the live (or the last) connection. */
  get current(): string | null {
    return this.#current;
  }

  /**
   * `answer` is what the node reached at `via` said to `Nodes`: it comes first and keeps
   * the URL it was reached at; the others are dialed at their HTTPS URL's `/v1/ws`.
   */
  learn(via: string, answer: NodeInfo[]): void {
    if (answer.length === 0) return;
    const listed = [via];
    for (const node of answer.slice(1)) {
      const url = listedUrl(node);
      if (url !== null && !listed.includes(url)) listed.push(url);
    }
    this.#listed = listed;
  }
}
