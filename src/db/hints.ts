/**
 * Hints between replicas: "a claim took an instance of pool X", "something changed". A hint is a
 * latency optimisation only (pg-boss: "a NOTIFY is only ever a latency hint"): a lost, duplicated
 * or forged hint changes nothing by itself, because whoever receives one only looks sooner, and
 * the periodic pass converges without any.
 *
 * On Postgres the hint travels as `NOTIFY agent_pool_hints` and one dedicated connection per
 * process LISTENs (reconnecting with backoff when it drops). On PGlite the same NOTIFY goes through
 * PGlite's own LISTEN support, so the database's trigger on `instance_events` (migration 0005,
 * `kind: "changed"`) reaches subscribers by the same path on both backends.
 */
import { EventEmitter } from "node:events";
import type { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import type { PoolHint } from "./store.ts";

export const HINT_CHANNEL = "agent_pool_hints";

const HINT_KINDS: ReadonlySet<string> = new Set(["claimed", "bound", "changed", "check", "pool"]);

export interface HintBus {
  /** Delivers to every subscriber of every replica; on Postgres `send` is the NOTIFY statement. */
  publish(hint: PoolHint, send: (channel: string, payload: string) => Promise<void>): Promise<void>;
  subscribe(fn: (hint: PoolHint) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/** Parses a hint payload; anything malformed is dropped (a hint is never trusted for more). */
export function parseHint(payload: string | undefined): PoolHint | null {
  if (!payload || payload.length > 2_000) return null;
  try {
    const h = JSON.parse(payload) as Partial<PoolHint>;
    if (typeof h.pool !== "string" || !HINT_KINDS.has(h.kind as string)) return null;
    return { pool: h.pool, kind: h.kind as PoolHint["kind"], ...(typeof h.instanceId === "string" ? { instanceId: h.instanceId } : {}) };
  } catch {
    return null;
  }
}

/** One process (PGlite): subscribers are called in-process, after the current call stack. */
export class LocalHintBus implements HintBus {
  readonly #emitter = new EventEmitter();

  async publish(hint: PoolHint): Promise<void> {
    queueMicrotask(() => this.#emitter.emit("hint", hint));
  }

  async subscribe(fn: (hint: PoolHint) => void): Promise<() => Promise<void>> {
    const safe = (h: PoolHint) => {
      try {
        fn(h);
      } catch {
        /* a subscriber's failure is its own */
      }
    };
    this.#emitter.on("hint", safe);
    return async () => void this.#emitter.off("hint", safe);
  }

  async close(): Promise<void> {
    this.#emitter.removeAllListeners();
  }
}

/**
 * PGlite: NOTIFY through the database (the trigger's and `publish`'s alike), delivered by PGlite's
 * LISTEN. `open()` runs the LISTEN before anything else uses the single session: a LISTEN issued
 * later could land inside another caller's open transaction (PGlite has one session) and be undone
 * by its rollback. Subscribers are called after the statement that delivered the notification.
 */
export class PgliteHintBus implements HintBus {
  readonly #subscribers = new Set<(hint: PoolHint) => void>();
  #closed = false;

  private constructor() {}

  static async open(db: PGlite): Promise<PgliteHintBus> {
    const bus = new PgliteHintBus();
    await db.listen(HINT_CHANNEL, (payload) => {
      const hint = parseHint(payload);
      if (hint && !bus.#closed) queueMicrotask(() => bus.#deliver(hint));
    });
    return bus;
  }

  async publish(hint: PoolHint, send: (channel: string, payload: string) => Promise<void>): Promise<void> {
    await send(HINT_CHANNEL, JSON.stringify(hint));
  }

  async subscribe(fn: (hint: PoolHint) => void): Promise<() => Promise<void>> {
    this.#subscribers.add(fn);
    return async () => void this.#subscribers.delete(fn);
  }

  /** No UNLISTEN: it could run inside a caller's open transaction; closing PGlite ends the LISTEN. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#subscribers.clear();
  }

  #deliver(hint: PoolHint): void {
    for (const fn of this.#subscribers) {
      try {
        fn(hint);
      } catch {
        /* a subscriber's failure is its own */
      }
    }
  }
}

export interface PostgresHintBusOptions {
  connectionString: string;
  logger?: { warn(obj: unknown, msg?: string): void };
  /** First reconnect delay; doubles up to 30 s. */
  reconnectMs?: number;
}

/** LISTEN on one dedicated connection per process, started on the first subscription. */
export class PostgresHintBus implements HintBus {
  readonly #o: PostgresHintBusOptions;
  readonly #subscribers = new Set<(hint: PoolHint) => void>();
  #client: pg.Client | null = null;
  #connecting: Promise<void> | null = null;
  #retryTimer: NodeJS.Timeout | null = null;
  #failures = 0;
  #closed = false;

  constructor(opts: PostgresHintBusOptions) {
    this.#o = opts;
  }

  async publish(hint: PoolHint, send: (channel: string, payload: string) => Promise<void>): Promise<void> {
    await send(HINT_CHANNEL, JSON.stringify(hint));
  }

  async subscribe(fn: (hint: PoolHint) => void): Promise<() => Promise<void>> {
    this.#subscribers.add(fn);
    await this.#ensureListening().catch((err) => {
      // Not fatal: hints are an optimisation; the periodic pass converges without them.
      this.#o.logger?.warn({ err: (err as Error).message }, "hint listener could not connect; retrying");
      this.#scheduleReconnect();
    });
    return async () => {
      this.#subscribers.delete(fn);
    };
  }

  /** True while the LISTEN connection is up (tests). */
  get listening(): boolean {
    return this.#client !== null;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#subscribers.clear();
    await this.#connecting?.catch(() => undefined);
    const c = this.#client;
    this.#client = null;
    await c?.end().catch(() => undefined);
  }

  #ensureListening(): Promise<void> {
    if (this.#client || this.#closed) return Promise.resolve();
    this.#connecting ??= (async () => {
      const client = new pg.Client({ connectionString: this.#o.connectionString, connectionTimeoutMillis: 10_000 });
      client.on("notification", (msg) => {
        if (msg.channel !== HINT_CHANNEL) return;
        const hint = parseHint(msg.payload);
        if (!hint) return;
        for (const fn of this.#subscribers) {
          try {
            fn(hint);
          } catch {
            /* a subscriber's failure is its own */
          }
        }
      });
      const lost = (err?: Error) => {
        if (this.#client !== client) return;
        this.#client = null;
        client.end().catch(() => undefined);
        if (!this.#closed) {
          this.#o.logger?.warn({ err: err?.message }, "hint listener connection lost; reconnecting");
          this.#scheduleReconnect();
        }
      };
      client.on("error", lost);
      client.on("end", () => lost());
      try {
        await client.connect();
        await client.query(`LISTEN ${HINT_CHANNEL}`);
      } catch (err) {
        await client.end().catch(() => undefined);
        throw err;
      }
      if (this.#closed) {
        await client.end().catch(() => undefined);
        return;
      }
      this.#client = client;
      this.#failures = 0;
    })().finally(() => (this.#connecting = null));
    return this.#connecting;
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#retryTimer || this.#subscribers.size === 0) return;
    const base = this.#o.reconnectMs ?? 500;
    const delay = Math.min(30_000, base * 2 ** Math.min(this.#failures++, 6));
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#ensureListening().catch(() => this.#scheduleReconnect());
    }, delay);
    this.#retryTimer.unref();
  }
}
