// The SDK's logger: console output filtered by the client's `logLevel` option.

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "silent";

const RANK: Record<LogLevel, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4, silent: 5 };

export class Logger {
  readonly #rank: number;
  constructor(level: LogLevel = "error") {
    this.#rank = RANK[level] ?? RANK.error;
  }
  debug(...args: unknown[]): void {
    if (this.#rank <= RANK.debug) console.debug("[syncline]", ...args);
  }
  info(...args: unknown[]): void {
    if (this.#rank <= RANK.info) console.info("[syncline]", ...args);
  }
  warn(...args: unknown[]): void {
    if (this.#rank <= RANK.warn) console.warn("[syncline]", ...args);
  }
  error(...args: unknown[]): void {
    if (this.#rank <= RANK.error) console.error("[syncline]", ...args);
  }
}
