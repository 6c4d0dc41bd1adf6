import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { addHist, binHistory, emptyCounts, histQuantileMs, HISTORY_LATENCY_BOUNDS_MS, LATENCY_BUCKETS, latencyBucket, type HistoryRow } from "./history.ts";

const T0 = Date.parse("2026-12-01T12:00:00Z");
const row = (minute: number, over: Partial<HistoryRow> = {}): HistoryRow => ({
  ...emptyCounts(),
  poolId: "p",
  minute: new Date(T0 + minute * 60_000),
  idle: null,
  starting: null,
  claimed: null,
  other: null,
  target: null,
  targetSummary: null,
  ...over,
});

describe("pool history buckets", () => {
  it("latency buckets by upper bound, the last one open", () => {
    assert.equal(latencyBucket(0), 0);
    assert.equal(latencyBucket(50), 0);
    assert.equal(latencyBucket(51), 1);
    assert.equal(latencyBucket(10 * 60_000), HISTORY_LATENCY_BOUNDS_MS.length);
    assert.equal(LATENCY_BUCKETS, HISTORY_LATENCY_BOUNDS_MS.length + 1);
  });

  it("quantiles of a histogram are their bucket's bound", () => {
    const h = new Array<number>(LATENCY_BUCKETS).fill(0);
    assert.equal(histQuantileMs(h, 0.5), null);
    h[latencyBucket(80)] = 98;
    h[latencyBucket(40_000)] = 2;
    assert.equal(histQuantileMs(h, 0.5), 100);
    assert.equal(histQuantileMs(h, 0.99), 60_000);
    assert.deepEqual(addHist([1, 2], [3, 4, 5]), [4, 6, 5]);
  });

  it("bins add counters and keep each bin's latest snapshot", () => {
    const rows = [
      row(0, { claimsWarm: 2, idleSeconds: 30, idle: 3, target: 3, targetSummary: "a" }),
      row(1, { claimsWarm: 1, claimsEmpty: 1, idle: 5, target: 6, targetSummary: "b" }),
      row(2, { claimsWaited: 4 }),
      row(-5, { claimsWarm: 100 }),
    ];
    const bins = binHistory(rows, T0 + 4 * 60_000, 2 * 60_000, 2);
    assert.equal(bins.length, 2);
    assert.deepEqual(
      [bins[0]!.claimsWarm, bins[0]!.claimsEmpty, bins[0]!.idleSeconds, bins[0]!.idle, bins[0]!.target, bins[0]!.targetSummary],
      [3, 1, 30, 5, 6, "b"],
    );
    assert.deepEqual([bins[1]!.claimsWaited, bins[1]!.idle, bins[1]!.minutes], [4, null, 1]);
  });
});
