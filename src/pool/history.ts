/**
 * A pool's per-minute measurements (issue 13): what one replica adds to a minute's bucket, and how
 * the dashboard and the planner read buckets back. Pure: the recorder (history-recorder.ts) keeps
 * these in memory and the store adds them up in `pool_history` (migration 0012).
 */

/** Upper bounds (ms) of the claim latency histogram's buckets; the last bucket is everything above. */
export const HISTORY_LATENCY_BOUNDS_MS = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000] as const;
/** Number of latency buckets (the bounds plus "above the last one"). */
export const LATENCY_BUCKETS = HISTORY_LATENCY_BOUNDS_MS.length + 1;

/** How a claim that wanted an instance was served: at once from an idle one, after waiting, not at all. */
export type LaunchType = "warm" | "waited" | "empty";

/** What one replica adds to one pool's minute. Counters add up across replicas. */
export interface HistoryCounts {
  claimsWarm: number;
  claimsWaited: number;
  claimsEmpty: number;
  claimsFailed: number;
  latencyHist: number[];
  waitMsSum: number;
  waitMsMax: number;
  refills: number;
  refillMsSum: number;
  refillMsMax: number;
  idleSeconds: number;
}

/** What the lease holder saw at its last pass in the minute (replaces, does not add). */
export interface HistorySnapshot {
  idle: number;
  starting: number;
  claimed: number;
  other: number;
  target: number;
  targetSummary: string;
}

export interface HistoryWrite extends HistoryCounts {
  poolId: string;
  /** How long ago (writer's clock) the middle of what this bucket saw was: the store files it under the database's minute. */
  ageMs: number;
  snapshot: HistorySnapshot | null;
}

/** A stored minute. */
export interface HistoryRow extends HistoryCounts {
  poolId: string;
  minute: Date;
  idle: number | null;
  starting: number | null;
  claimed: number | null;
  other: number | null;
  target: number | null;
  targetSummary: string | null;
}

export function emptyCounts(): HistoryCounts {
  return {
    claimsWarm: 0,
    claimsWaited: 0,
    claimsEmpty: 0,
    claimsFailed: 0,
    latencyHist: new Array<number>(LATENCY_BUCKETS).fill(0),
    waitMsSum: 0,
    waitMsMax: 0,
    refills: 0,
    refillMsSum: 0,
    refillMsMax: 0,
    idleSeconds: 0,
  };
}

export function latencyBucket(ms: number): number {
  const i = HISTORY_LATENCY_BOUNDS_MS.findIndex((b) => ms <= b);
  return i === -1 ? HISTORY_LATENCY_BOUNDS_MS.length : i;
}

/** Adds a histogram into another (element by element; missing elements count 0). */
export function addHist(into: number[], more: readonly number[]): number[] {
  const n = Math.max(into.length, more.length);
  for (let i = 0; i < n; i++) into[i] = (into[i] ?? 0) + (more[i] ?? 0);
  return into;
}

/**
 * The p-th quantile (0..1) of a latency histogram, as its bucket's upper bound in ms (the last
 * bucket reports the largest bound). Null with no samples.
 */
export function histQuantileMs(hist: readonly number[], p: number): number | null {
  const total = hist.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(p * total));
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i] ?? 0;
    if (seen >= rank) return HISTORY_LATENCY_BOUNDS_MS[Math.min(i, HISTORY_LATENCY_BOUNDS_MS.length - 1)]!;
  }
  return HISTORY_LATENCY_BOUNDS_MS[HISTORY_LATENCY_BOUNDS_MS.length - 1]!;
}

export function hasCounts(c: HistoryCounts): boolean {
  return c.claimsWarm + c.claimsWaited + c.claimsEmpty + c.claimsFailed + c.refills > 0 || c.idleSeconds > 0;
}

/** One bin of a chart: several minutes added up (counters) or their last value (snapshots). */
export interface HistoryBin extends HistoryCounts {
  start: Date;
  minutes: number;
  idle: number | null;
  starting: number | null;
  claimed: number | null;
  other: number | null;
  target: number | null;
  targetSummary: string | null;
}

/**
 * Puts rows into `count` bins of `binMs` ending at `endMs` (oldest first). Counters add up;
 * snapshot columns take the bin's latest value. Bins without rows are empty (nulls, zeros).
 */
export function binHistory(rows: readonly HistoryRow[], endMs: number, binMs: number, count: number): HistoryBin[] {
  const startMs = endMs - binMs * count;
  const bins: HistoryBin[] = Array.from({ length: count }, (_, i) => ({
    ...emptyCounts(),
    start: new Date(startMs + i * binMs),
    minutes: 0,
    idle: null,
    starting: null,
    claimed: null,
    other: null,
    target: null,
    targetSummary: null,
  }));
  const latestAt = new Array<number>(count).fill(Number.NEGATIVE_INFINITY);
  for (const r of rows) {
    const t = r.minute.getTime();
    const i = Math.floor((t - startMs) / binMs);
    if (i < 0 || i >= count) continue;
    const b = bins[i]!;
    b.minutes++;
    b.claimsWarm += r.claimsWarm;
    b.claimsWaited += r.claimsWaited;
    b.claimsEmpty += r.claimsEmpty;
    b.claimsFailed += r.claimsFailed;
    addHist(b.latencyHist, r.latencyHist);
    b.waitMsSum += r.waitMsSum;
    b.waitMsMax = Math.max(b.waitMsMax, r.waitMsMax);
    b.refills += r.refills;
    b.refillMsSum += r.refillMsSum;
    b.refillMsMax = Math.max(b.refillMsMax, r.refillMsMax);
    b.idleSeconds += r.idleSeconds;
    if (r.idle !== null && t >= latestAt[i]!) {
      latestAt[i] = t;
      b.idle = r.idle;
      b.starting = r.starting;
      b.claimed = r.claimed;
      b.other = r.other;
      b.target = r.target;
      b.targetSummary = r.targetSummary;
    }
  }
  return bins;
}
