/**
 * Readiness (`/readyz`), as opposed to liveness (`/healthz`, "the process is up"): this replica is
 * worth sending traffic to when
 *
 * 1. the database answers (one `SELECT 1`, bounded by `pingTimeoutMs`), and
 * 2. a reconcile pass of this replica completed recently: within `maxPassAgeMs`, the lease TTL
 *    (3 ticks, at least 15 s). Leader or not: a replica that does not hold the lease still runs a
 *    pass (it asks for the lease), so a wedged event loop or a loop stuck on the database shows
 *    here on every replica. A pass that runs longer than the lease TTL makes the replica not ready,
 *    which is right: such a pass loses its lease every time (issue 10's 10,000-instance passes).
 *
 * A pass counts as completed when it ended without aborting; a provider outage does not abort a
 * pass (its listing fails, nothing is deleted), so it does not take the replica out of rotation:
 * claims are served from the idle pool in the database while the provider is down.
 */
import type { Store } from "../db/store.ts";

export interface ReadinessOptions {
  store: Pick<Store, "ping">;
  /** A pass must have completed within this many milliseconds. */
  maxPassAgeMs: number;
  /** The database must answer within this. Default 2 s (a load balancer's probe has its own timeout). */
  pingTimeoutMs?: number;
  /** Monotonic milliseconds (tests drive it). */
  now?: () => number;
}

export type ReadinessReport = { ready: true; lastPassAgeMs: number } | { ready: false; reason: string; lastPassAgeMs: number | null };

export class Readiness {
  readonly #o: ReadinessOptions;
  readonly #now: () => number;
  #lastPassAt: number | null = null;

  constructor(opts: ReadinessOptions) {
    this.#o = opts;
    this.#now = opts.now ?? (() => performance.now());
  }

  /**
   * Called after every pass with its result. A pass that aborted (the reconciler records
   * `pass: <error>` when a step threw, e.g. the database refused the lease) does not count.
   */
  passEnded(result: { errors: readonly string[] }): void {
    if (result.errors.some((e) => e.startsWith("pass: "))) return;
    this.#lastPassAt = this.#now();
  }

  async check(): Promise<ReadinessReport> {
    const age = this.#lastPassAt === null ? null : Math.round(this.#now() - this.#lastPassAt);
    const db = await this.#ping();
    if (db !== null) return { ready: false, reason: db, lastPassAgeMs: age };
    if (age === null) return { ready: false, reason: "No reconcile pass has completed yet.", lastPassAgeMs: null };
    if (age > this.#o.maxPassAgeMs) {
      return {
        ready: false,
        reason: `The last reconcile pass completed ${(age / 1000).toFixed(1)} s ago (more than ${(this.#o.maxPassAgeMs / 1000).toFixed(1)} s).`,
        lastPassAgeMs: age,
      };
    }
    return { ready: true, lastPassAgeMs: age };
  }

  /** Null when the database answered; else why not (never the driver's message: it may name hosts). */
  async #ping(): Promise<string | null> {
    const ms = this.#o.pingTimeoutMs ?? 2_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`The database did not answer within ${ms} ms.`), ms);
    });
    try {
      return await Promise.race([
        this.#o.store.ping().then(
          () => null,
          () => "The database refused the readiness check.",
        ),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }
}
