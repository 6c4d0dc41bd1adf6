/**
 * One reader of the pool's changes per process, shared by every server-sent event stream and every
 * dashboard page of that process.
 *
 * The database announces changes itself: a trigger on `instance_events` (migration 0005) NOTIFYs
 * `agent_pool_hints` with `{pool, kind: "changed"}` whenever any replica writes a status change, and
 * the store delivers it (one LISTEN connection per process on Postgres, PGlite's LISTEN in process).
 * On such a hint the watcher reads the new events and the pool's summary ONCE and hands the result
 * to every listener, so 500 open streams cost the same as one: a read per change, not a poll per
 * connection per second (issue 10).
 *
 * A hint is only a hint (it can be lost with a dropped LISTEN connection): a safety read every
 * `safetyReadMs` catches whatever a lost notification hid. Reads are coalesced (a hint during a
 * read causes one more read after it, not one per hint) and spaced by `minGapMs`, so a burst of
 * claims costs a few reads a second however many changes it makes. The watcher runs only while
 * someone listens.
 */
import type { InstanceEvent, Store } from "../db/store.ts";
import type { Logger } from "../logger.ts";
import type { PoolSummary } from "../pool/operations.ts";

/** What one read found: the events not handed out before (oldest first) and the current summary. */
export interface PoolChange {
  events: InstanceEvent[];
  summary: PoolSummary;
  /** The watched state's marker (`watch`), read with the summary; null without one. */
  watched: string | null;
}

export type PoolChangeListener = (change: PoolChange) => void;

export interface PoolChangeWatcherOptions {
  store: Store;
  poolId: string;
  summary: () => Promise<PoolSummary>;
  /**
   * More of our own state that live pages show (rollouts of any pool, issue 11): a string that
   * changes when it does, read once per read like the summary.
   */
  watch?: () => Promise<string>;
  logger: Logger;
  /** Read this often even without a hint (a lost notification). Default 20 s. */
  safetyReadMs?: number;
  /** Least time between the starts of two reads. Default 200 ms. */
  minGapMs?: number;
  /**
   * How long an event id stays "recent". Ids come from a sequence, but on Postgres a transaction
   * can commit after one with a higher id: re-reading a short window catches such late rows (the
   * late commit sends its own notification, which triggers that re-read).
   */
  lateCommitMs?: number;
}

const PAGE = 500;
/** At most this many pages per read; the rest waits for the next read (the cursor is kept). */
const MAX_PAGES = 20;

export class PoolChangeWatcher {
  readonly #o: PoolChangeWatcherOptions;
  readonly #listeners = new Set<PoolChangeListener>();
  /** Every event with an id at or below this has been handed out (modulo the late-commit window). */
  #floor = 0;
  /** Ids handed out within the late-commit window, oldest first. */
  #recent: Array<{ id: number; at: number }> = [];
  readonly #recentIds = new Set<number>();
  #unsubscribe: Promise<() => Promise<void>> | null = null;
  #safety: NodeJS.Timeout | null = null;
  #timer: NodeJS.Timeout | null = null;
  #reading: Promise<void> | null = null;
  #again = false;
  #lastStart = Number.NEGATIVE_INFINITY;
  #closed = false;
  /** Reads done, by what caused them (tests and the benchmark count them). */
  readonly reads = { hint: 0, safety: 0, manual: 0 };
  #pendingCause: "hint" | "safety" | "manual" = "hint";

  constructor(opts: PoolChangeWatcherOptions) {
    this.#o = opts;
  }

  get listenerCount(): number {
    return this.#listeners.size;
  }

  /** True while someone listens (the hint subscription and the safety timer are up). */
  get active(): boolean {
    return this.#safety !== null;
  }

  /**
   * Adds a listener. `head` is the newest event id the caller has already accounted for: when the
   * watcher was idle it starts reading after it, so a change right after the caller's own read is
   * neither missed nor sent twice.
   */
  add(listener: PoolChangeListener, head: number): void {
    if (this.#closed) return;
    if (this.#listeners.size === 0) this.#resetCursor(head);
    this.#listeners.add(listener);
    this.#start();
  }

  remove(listener: PoolChangeListener): void {
    if (!this.#listeners.delete(listener)) return;
    if (this.#listeners.size === 0) this.#stop();
  }

  /** One read now, after any read in flight (tests; hints and the safety timer call the same). */
  async readNow(): Promise<void> {
    await this.#reading;
    this.#pendingCause = "manual";
    await this.#runRead();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#listeners.clear();
    this.#stop();
    await this.#reading;
  }

  #resetCursor(head: number): void {
    this.#floor = head;
    this.#recent = [];
    this.#recentIds.clear();
  }

  #start(): void {
    if (this.#safety || this.#closed) return;
    const { store, poolId } = this.#o;
    this.#safety = setInterval(() => this.#request("safety"), this.#o.safetyReadMs ?? 20_000);
    this.#safety.unref();
    this.#unsubscribe = store
      .subscribeHints((h) => {
        if (h.kind === "changed" && h.pool === poolId) this.#request("hint");
      })
      .catch((err) => {
        this.#o.logger.warn({ err: (err as Error).message }, "live updates: could not listen for change hints; reading at the safety interval only");
        return async () => undefined;
      });
  }

  #stop(): void {
    if (this.#safety) clearInterval(this.#safety);
    if (this.#timer) clearTimeout(this.#timer);
    this.#safety = this.#timer = null;
    this.#again = false;
    const off = this.#unsubscribe;
    this.#unsubscribe = null;
    void off?.then((f) => f()).catch(() => undefined);
  }

  /** Schedules a read: at once, or after the gap since the last one; once while one is pending. */
  #request(cause: "hint" | "safety"): void {
    if (this.#closed || this.#listeners.size === 0) return;
    if (this.#reading) {
      this.#again = true;
      return;
    }
    if (this.#timer) return;
    this.#pendingCause = cause;
    const wait = Math.max(0, this.#lastStart + (this.#o.minGapMs ?? 200) - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#runRead();
    }, wait);
  }

  #runRead(): Promise<void> {
    this.#reading ??= (async () => {
      this.#lastStart = performance.now();
      this.reads[this.#pendingCause]++;
      this.#pendingCause = "hint";
      try {
        await this.#readOnce();
      } finally {
        this.#reading = null;
      }
      if (this.#again) {
        this.#again = false;
        this.#request("hint");
      }
    })();
    return this.#reading;
  }

  async #readOnce(): Promise<void> {
    try {
      const { store, poolId } = this.#o;
      const now = Date.now();
      const lateMs = this.#o.lateCommitMs ?? 5_000;
      while (this.#recent.length > 0 && now - this.#recent[0]!.at > lateMs) {
        const old = this.#recent.shift()!;
        this.#recentIds.delete(old.id);
        if (old.id > this.#floor) this.#floor = old.id;
      }
      // Re-reads the recent window too (see lateCommitMs); pages so a burst cannot stall the cursor.
      const fresh: InstanceEvent[] = [];
      let after = this.#floor;
      for (let i = 0; i < MAX_PAGES; i++) {
        const page = await store.listPoolEventsSince(poolId, after, PAGE);
        for (const e of page) if (!this.#recentIds.has(e.id)) fresh.push(e);
        if (page.length < PAGE) break;
        after = page.at(-1)!.id;
      }
      for (const e of fresh) {
        this.#recent.push({ id: e.id, at: now });
        this.#recentIds.add(e.id);
      }
      if (this.#listeners.size === 0 || this.#closed) return;
      const change: PoolChange = { events: fresh, summary: await this.#o.summary(), watched: this.#o.watch ? await this.#o.watch() : null };
      for (const fn of this.#listeners) {
        try {
          fn(change);
        } catch (err) {
          this.#o.logger.warn({ err: (err as Error).message }, "live updates: a listener failed");
        }
      }
    } catch (err) {
      this.#o.logger.warn({ err: (err as Error).message }, "live updates: reading the pool's changes failed");
    }
  }
}
