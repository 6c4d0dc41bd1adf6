/**
 * Retry-After of a POOL_EMPTY answer: when the client's retry is likely to find an idle instance.
 * Pure, so the estimate is table-tested; the claim path feeds it the pool's boot history.
 *
 * The same model as pool sizing (issue 13, pool/sizing.ts): a boot takes the p95 of the pool's
 * recent create → idle times, so a client retrying then finds the instance that was starting.
 *
 * The earlier system answered every empty pool with the same fixed delay, so clients either
 * hammered a pool whose instances needed minutes or waited long after one became free.
 */
export interface RetryAfterInput {
  now: Date;
  /** Creation-to-idle durations of the pool's recent boots (any order). */
  recentBootMs: readonly number[];
  /** When each instance now starting began. */
  startingSince: readonly Date[];
  /** The reconciler's interval: with nothing starting, a create waits for the next pass. */
  tickIntervalMs: number;
  /** Used while the pool has no boot history yet. */
  defaultBootMs?: number;
}

import { percentile } from "../pool/sizing.ts";

const MIN_S = 1;
const MAX_S = 300;

export function estimateRetryAfterSeconds(i: RetryAfterInput): number {
  const typical = percentile(i.recentBootMs, 0.95) ?? i.defaultBootMs ?? 10_000;
  let ms: number;
  if (i.startingSince.length > 0) {
    // The instance furthest along is the first one expected to be handed out.
    const furthest = Math.max(...i.startingSince.map((d) => i.now.getTime() - d.getTime()));
    // Already past the typical boot: it may be ready any moment; check back soon, not at once.
    ms = Math.max(typical - furthest, Math.min(typical, 2_000));
  } else {
    // Nothing starting: the next pass (or the replenish a claim triggers) creates, then it boots.
    ms = i.tickIntervalMs + typical;
  }
  return Math.min(MAX_S, Math.max(MIN_S, Math.ceil(ms / 1000)));
}
