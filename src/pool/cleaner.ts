/**
 * The cleaner: retention. Events and idempotency records older than their retention are deleted,
 * then rows whose provider resource was deleted long ago and that nothing refers to any more,
 * rate-limit windows that ended, and pools' per-minute history past its retention (issue 13). In batches, so no statement holds locks for long; at most
 * `maxBatches` per kind per run, so a large backlog is worked off over several runs instead of one
 * long one. Safe on any replica and at any time (each batch is one statement); the reconciler runs
 * it on the lease holder every `intervalMs`.
 */
import type { Store } from "../db/store.ts";

export const DEFAULT_HISTORY_RETENTION_MS = 8 * 86_400_000;

export interface CleanerOptions {
  store: Store;
  eventRetentionMs: number;
  claimRecordRetentionMs: number;
  /** Pool history minutes are kept this long (default 8 days: the dashboard's week and a day more). */
  historyRetentionMs?: number;
  batch?: number;
  maxBatches?: number;
}

export interface CleanResult {
  events: number;
  claimRecords: number;
  instances: number;
  rateLimits: number;
  history: number;
  /** True when a kind hit maxBatches: more is left for the next run. */
  more: boolean;
}

export class Cleaner {
  readonly #o: CleanerOptions;

  constructor(opts: CleanerOptions) {
    this.#o = opts;
  }

  async runOnce(): Promise<CleanResult> {
    const o = this.#o;
    const batch = o.batch ?? 5_000;
    const maxBatches = o.maxBatches ?? 10;
    let more = false;
    const drain = async (step: () => Promise<number>): Promise<number> => {
      let total = 0;
      for (let i = 0; i < maxBatches; i++) {
        const n = await step();
        total += n;
        if (n < batch) return total;
      }
      more = true;
      return total;
    };
    const events = await drain(() => o.store.pruneEvents(o.eventRetentionMs, batch));
    const claimRecords = await drain(() => o.store.pruneClaimRecords(o.claimRecordRetentionMs, batch));
    // Dead rows go once their events are gone (they were kept for the event log).
    const instances = await drain(() => o.store.pruneDeletedInstances(o.eventRetentionMs, batch));
    const rateLimits = await drain(() => o.store.pruneRateLimits(batch));
    const history = await drain(() => o.store.prunePoolHistory(o.historyRetentionMs ?? DEFAULT_HISTORY_RETENTION_MS, batch));
    return { events, claimRecords, instances, rateLimits, history, more };
  }
}
