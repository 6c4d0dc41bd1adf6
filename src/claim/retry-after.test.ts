import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { estimateRetryAfterSeconds, type RetryAfterInput } from "./retry-after.ts";

const NOW = new Date("2026-06-01T12:00:00Z");
const ago = (ms: number) => new Date(NOW.getTime() - ms);

type Row = [name: string, input: Partial<RetryAfterInput>, seconds: number];

const ROWS: Row[] = [
  ["no history, nothing starting: a tick plus the default boot", {}, 15],
  ["no history, one just started: the default boot", { startingSince: [ago(0)] }, 10],
  [
    "boots take up to 65 s (p95, the sizing model's refill time), the furthest started 45 s ago: 20 s",
    { recentBootMs: [55_000, 60_000, 65_000], startingSince: [ago(5_000), ago(45_000)] },
    20,
  ],
  [
    "p95, not max: one slow outlier in 40 boots does not stretch it",
    { recentBootMs: [...new Array<number>(39).fill(5_000), 600_000], startingSince: [ago(1_000)] },
    4,
  ],
  ["past the typical boot: check back in 2 s, not at once", { recentBootMs: [30_000], startingSince: [ago(90_000)] }, 2],
  ["fast local boots past due: at least 1 s", { recentBootMs: [800], startingSince: [ago(5_000)] }, 1],
  ["nothing starting, boots of 3 min: a tick plus 3 min", { recentBootMs: [180_000], tickIntervalMs: 5_000 }, 185],
  ["capped at 5 minutes", { recentBootMs: [3_600_000] }, 300],
  ["history with junk values ignores them", { recentBootMs: [Number.NaN, -5, 20_000], startingSince: [ago(0)] }, 20],
];

describe("estimateRetryAfterSeconds", () => {
  for (const [name, over, seconds] of ROWS) {
    it(name, () => {
      assert.equal(estimateRetryAfterSeconds({ now: NOW, recentBootMs: [], startingSince: [], tickIntervalMs: 5_000, ...over }), seconds);
    });
  }
});
