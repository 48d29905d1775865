// A tiny typed event emitter with the on/off/once API Twilio Sync users know, so the SDK
// has no runtime dependency (Node's `events` is not in browsers).

/** A listener of one event; each event passes one argument, as Twilio Sync's do. */
export type Listener<A> = (arg: A) => void;

type Wrapped = Listener<never> & { listener?: Listener<never> };

export class EventEmitter<Events extends object> {
  #listeners = new Map<keyof Events, Wrapped[]>();

  /** Calls `listener` on every `event` from now on. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const list = this.#listeners.get(event);
    // A new array on every change: an emit in progress keeps iterating the old one, so
    // a listener that removes itself (once) or adds another does not skip anyone.
    this.#listeners.set(event, list ? [...list, listener as Wrapped] : [listener as Wrapped]);
    return this;
  }

  /** Alias of `on`. */
  addListener<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    return this.on(event, listener);
  }

  /** Calls `listener` on the next `event` only. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const wrapper: Wrapped = ((arg: Events[K]) => {
      this.off(event, listener);
      listener(arg);
    }) as Wrapped;
    // Kept so that off(event, listener) also finds a once-listener.
    wrapper.listener = listener as Listener<never>;
    return this.on(event, wrapper as Listener<Events[K]>);
  }

  /** Stops calling `listener` on `event`. */
  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    const list = this.#listeners.get(event);
    if (!list) return this;
    const i = list.findIndex((l) => l === listener || l.listener === listener);
    if (i < 0) return this;
    const rest = list.filter((_, j) => j !== i);
    if (rest.length) this.#listeners.set(event, rest);
    else this.#listeners.delete(event);
    return this;
  }

  /** Alias of `off`. */
  removeListener<K extends keyof Events>(event: K, listener: Listener<Events[K]>): this {
    return this.off(event, listener);
  }

  /** Removes every listener of `event`, or of every event. */
  removeAllListeners(event?: keyof Events): this {
    if (event === undefined) this.#listeners.clear();
    else this.#listeners.delete(event);
    return this;
  }

  /** How many listeners `event` has. */
  listenerCount(event: keyof Events): number {
    return this.#listeners.get(event)?.length ?? 0;
  }

  /**
   * Calls the listeners of `event` with `arg`; true if there were any. A listener that
   * throws does not stop the others nor the SDK's own bookkeeping: its error is rethrown
   * on a later tick, where the host reports it as uncaught.
   */
  emit<K extends keyof Events>(event: K, arg: Events[K]): boolean {
    const list = this.#listeners.get(event);
    if (!list) return false;
    for (const l of list) {
      try {
        (l as Listener<Events[K]>)(arg);
      } catch (e) {
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
    return true;
  }
}
