/**
 * The history recorder (issue 13): each replica counts what it sees per pool and minute in memory
 * and adds it to `pool_history` every `flushIntervalMs` (default a minute: one upsert per pool per
 * minute per replica; counters add up across replicas). The claim path only calls `claim()`, a few additions in memory; the
 * lease holder's pass calls `refill()`, `idle()` and `snapshot()`.
 *
 * A failed flush keeps its counts for the next one (at most `keepMinutes` minutes are kept, so a
 * database that is down for long costs bounded memory and loses only the oldest minutes).
 */
import type { ClaimOutcome } from "../claim/claim.ts";
import type { Clock } from "../clock.ts";
import type { Store } from "../db/store.ts";
import type { Logger } from "../logger.ts";
import { addHist, emptyCounts, hasCounts, latencyBucket, type HistoryCounts, type HistorySnapshot, type HistoryWrite, type LaunchType } from "./history.ts";

/** What the claim path reports about one claim (see ClaimService's `recorder`). */
export interface ClaimReport {
  pool: string;
  /** warm / waited / empty for a claim that wanted an instance; null for replays and refusals. */
  launch: LaunchType | null;
  /** The claim failed for another reason (every instance tried failed to provision). */
  failed: boolean;
  seconds: number;
  /** How long it waited for an idle instance (0 when served at once). */
  waitedMs: number;
}

export interface HistoryRecorderOptions {
  store: Pick<Store, "addPoolHistory">;
  clock: Clock;
  logger: Logger;
  flushIntervalMs?: number;
  keepMinutes?: number;
}

interface Bucket {
  pool: string;
  minuteMs: number;
  /** Latest time (writer's clock) something was recorded in it. */
  lastMs: number;
  firstMs: number;
  counts: HistoryCounts;
  snapshot: HistorySnapshot | null;
}

export class HistoryRecorder {
  readonly #o: HistoryRecorderOptions;
  #buckets = new Map<string, Bucket>();
  #timer: NodeJS.Timeout | null = null;
  #flushing: Promise<void> = Promise.resolve();

  constructor(opts: HistoryRecorderOptions) {
    this.#o = opts;
  }

  claim(r: ClaimReport): void {
    const c = this.#bucket(r.pool).counts;
    if (r.failed && r.launch === null) {
      c.claimsFailed++;
      return;
    }
    if (r.launch === "warm") c.claimsWarm++;
    else if (r.launch === "waited") c.claimsWaited++;
    else if (r.launch === "empty") c.claimsEmpty++;
    else return;
    if (r.launch !== "empty") c.latencyHist[latencyBucket(r.seconds * 1000)]!++;
    if (r.waitedMs > 0) {
      c.waitMsSum += r.waitedMs;
      c.waitMsMax = Math.max(c.waitMsMax, r.waitedMs);
    }
  }

  /** An instance of the pool went from created to idle in `ms`. */
  refill(pool: string, ms: number): void {
    const c = this.#bucket(pool).counts;
    c.refills++;
    c.refillMsSum += ms;
    c.refillMsMax = Math.max(c.refillMsMax, ms);
  }

  idle(pool: string, instanceSeconds: number): void {
    if (instanceSeconds > 0) this.#bucket(pool).counts.idleSeconds += instanceSeconds;
  }

  snapshot(pool: string, s: HistorySnapshot): void {
    this.#bucket(pool).snapshot = s;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.flush(), this.#o.flushIntervalMs ?? 60_000);
    this.#timer.unref();
  }

  /** Stops the timer and writes what is left. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.flush();
  }

  /** Writes every pending bucket: one statement per minute, one row per pool in it. Never throws. */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#flush());
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    const pending = [...this.#buckets.values()];
    if (pending.length === 0) return;
    this.#buckets = new Map();
    const now = this.#o.clock.now().getTime();
    const byMinute = new Map<number, Bucket[]>();
    for (const b of pending) byMinute.set(b.minuteMs, [...(byMinute.get(b.minuteMs) ?? []), b]);
    for (const [, list] of [...byMinute].sort(([a], [b]) => a - b)) {
      const rows: HistoryWrite[] = list
        .filter((b) => hasCounts(b.counts) || b.snapshot !== null)
        // Filed under the database's minute of the middle of what the bucket saw.
        .map((b) => ({ ...b.counts, poolId: b.pool, ageMs: Math.max(0, now - (b.firstMs + b.lastMs) / 2), snapshot: b.snapshot }));
      try {
        await this.#o.store.addPoolHistory(rows);
      } catch (err) {
        this.#o.logger.warn({ err: (err as Error).message }, "could not write pool history; kept for the next flush");
        for (const b of list) this.#merge(b);
      }
    }
  }

  /** Puts a bucket that could not be written back (unless it is older than keepMinutes). */
  #merge(b: Bucket): void {
    const now = this.#o.clock.now().getTime();
    if (now - b.minuteMs > (this.#o.keepMinutes ?? 10) * 60_000) return;
    const key = `${b.pool}\u0000${b.minuteMs}`;
    const into = this.#buckets.get(key);
    if (!into) {
      this.#buckets.set(key, b);
      return;
    }
    const c = into.counts;
    c.claimsWarm += b.counts.claimsWarm;
    c.claimsWaited += b.counts.claimsWaited;
    c.claimsEmpty += b.counts.claimsEmpty;
    c.claimsFailed += b.counts.claimsFailed;
    addHist(c.latencyHist, b.counts.latencyHist);
    c.waitMsSum += b.counts.waitMsSum;
    c.waitMsMax = Math.max(c.waitMsMax, b.counts.waitMsMax);
    c.refills += b.counts.refills;
    c.refillMsSum += b.counts.refillMsSum;
    c.refillMsMax = Math.max(c.refillMsMax, b.counts.refillMsMax);
    c.idleSeconds += b.counts.idleSeconds;
    into.snapshot ??= b.snapshot;
    into.firstMs = Math.min(into.firstMs, b.firstMs);
  }

  #bucket(pool: string): Bucket {
    const now = this.#o.clock.now().getTime();
    const minuteMs = now - (now % 60_000);
    const key = `${pool}\u0000${minuteMs}`;
    let b = this.#buckets.get(key);
    if (!b) {
      b = { pool, minuteMs, firstMs: now, lastMs: now, counts: emptyCounts(), snapshot: null };
      this.#buckets.set(key, b);
    }
    b.lastMs = now;
    return b;
  }
}

/**
 * How a claim was served, for the pool's history: warm (an idle instance at its first look),
 * waited (found none, then got one), empty (found none in its wait). Replays and refusals wanted
 * no new instance and count nowhere; other failures count as failed.
 */
export function claimReport(
  outcome: ClaimOutcome,
  pool: string,
  seconds: number,
  t: { firstEmptyAt?: number; pickedAt?: number },
  nowMono: number,
): ClaimReport {
  const served = outcome === "claimed" || outcome === "pending_acceptance";
  const waitedMs = t.firstEmptyAt === undefined ? 0 : Math.max(0, (served ? (t.pickedAt ?? nowMono) : nowMono) - t.firstEmptyAt);
  if (served) return { pool, launch: t.firstEmptyAt === undefined ? "warm" : "waited", failed: false, seconds, waitedMs };
  if (outcome === "pool_empty") return { pool, launch: "empty", failed: false, seconds, waitedMs };
  return { pool, launch: null, failed: outcome === "failed", seconds, waitedMs: 0 };
}
