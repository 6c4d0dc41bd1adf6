import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { claimReport, HistoryRecorder } from "./history-recorder.ts";
import { latencyBucket, type HistoryWrite } from "./history.ts";
import type { ClaimOutcome } from "../claim/claim.ts";

const silent = {
  info() {},
  warn() {},
  error() {},
  debug() {},
  child() {
    return silent;
  },
} as never;

function setup(fail = 0) {
  let now = Date.parse("2026-12-01T12:00:10Z");
  const writes: HistoryWrite[][] = [];
  let failures = fail;
  const rec = new HistoryRecorder({
    store: {
      addPoolHistory: async (rows) => {
        if (failures-- > 0) throw new Error("database down");
        writes.push([...rows]);
      },
    },
    clock: { now: () => new Date(now) },
    logger: silent,
  });
  return { rec, writes, advance: (ms: number) => (now += ms) };
}

describe("claimReport", () => {
  const table: Array<[string, ClaimOutcome, { firstEmptyAt?: number; pickedAt?: number }, number, ReturnType<typeof claimReport>]> = [
    ["served at its first look: warm", "claimed", {}, 500, { pool: "p", launch: "warm", failed: false, seconds: 1, waitedMs: 0 }],
    ["pending acceptance counts as served", "pending_acceptance", {}, 500, { pool: "p", launch: "warm", failed: false, seconds: 1, waitedMs: 0 }],
    [
      "found none, then picked one: waited until the pick",
      "claimed",
      { firstEmptyAt: 100, pickedAt: 350 },
      900,
      { pool: "p", launch: "waited", failed: false, seconds: 1, waitedMs: 250 },
    ],
    [
      "found none in its wait: empty, waited until it gave up",
      "pool_empty",
      { firstEmptyAt: 100 },
      400,
      { pool: "p", launch: "empty", failed: false, seconds: 1, waitedMs: 300 },
    ],
    ["a replay wanted no instance", "replayed", {}, 500, { pool: "p", launch: null, failed: false, seconds: 1, waitedMs: 0 }],
    ["a refusal wanted no instance", "invalid", {}, 500, { pool: "p", launch: null, failed: false, seconds: 1, waitedMs: 0 }],
    ["provisioning failed: failed", "failed", { pickedAt: 10 }, 500, { pool: "p", launch: null, failed: true, seconds: 1, waitedMs: 0 }],
  ];
  for (const [name, outcome, t, now, want] of table) it(name, () => assert.deepEqual(claimReport(outcome, "p", 1, t, now), want));
});

describe("HistoryRecorder", () => {
  it("adds claims, refills and idle seconds per pool and minute, and writes one row per pool", async () => {
    const { rec, writes, advance } = setup();
    rec.claim({ pool: "a", launch: "warm", failed: false, seconds: 0.2, waitedMs: 0 });
    rec.claim({ pool: "a", launch: "waited", failed: false, seconds: 40, waitedMs: 39_000 });
    rec.claim({ pool: "a", launch: "empty", failed: false, seconds: 5, waitedMs: 5_000 });
    rec.claim({ pool: "a", launch: null, failed: true, seconds: 1, waitedMs: 0 });
    rec.claim({ pool: "a", launch: null, failed: false, seconds: 1, waitedMs: 0 });
    rec.refill("a", 3_000);
    rec.refill("a", 5_000);
    rec.idle("b", 30);
    rec.snapshot("b", { idle: 3, starting: 0, claimed: 1, other: 0, target: 3, targetSummary: "target 3 idle: fixed min idle 3" });
    advance(20_000);
    await rec.flush();
    assert.equal(writes.length, 1);
    const [a, b] = writes[0]!;
    assert.equal(a!.poolId, "a");
    assert.deepEqual([a!.claimsWarm, a!.claimsWaited, a!.claimsEmpty, a!.claimsFailed], [1, 1, 1, 1]);
    assert.equal(a!.latencyHist[latencyBucket(200)], 1);
    assert.equal(a!.latencyHist[latencyBucket(40_000)], 1);
    assert.equal(
      a!.latencyHist.reduce((x, y) => x + y, 0),
      2,
      "only served claims have a latency",
    );
    assert.deepEqual([a!.waitMsSum, a!.waitMsMax], [44_000, 39_000]);
    assert.deepEqual([a!.refills, a!.refillMsSum, a!.refillMsMax], [2, 8_000, 5_000]);
    assert.equal(a!.snapshot, null);
    // Everything happened at 12:00:10; written 20 s later: 20 s old.
    assert.equal(a!.ageMs, 20_000);
    assert.equal(b!.idleSeconds, 30);
    assert.equal(b!.snapshot?.target, 3);
    // Written once: nothing left.
    await rec.flush();
    assert.equal(writes.length, 1);
  });

  it("writes each minute in its own statement", async () => {
    const { rec, writes, advance } = setup();
    rec.claim({ pool: "a", launch: "warm", failed: false, seconds: 0.2, waitedMs: 0 });
    advance(60_000);
    rec.claim({ pool: "a", launch: "warm", failed: false, seconds: 0.2, waitedMs: 0 });
    await rec.flush();
    assert.deepEqual(
      writes.map((w) => w.map((r) => [r.poolId, r.claimsWarm, r.ageMs])),
      [[["a", 1, 60_000]], [["a", 1, 0]]],
    );
  });

  it("keeps the counts of a failed write for the next flush, adding what came meanwhile", async () => {
    const { rec, writes, advance } = setup(1);
    rec.claim({ pool: "a", launch: "warm", failed: false, seconds: 0.2, waitedMs: 0 });
    await rec.flush();
    assert.equal(writes.length, 0);
    advance(5_000);
    rec.claim({ pool: "a", launch: "empty", failed: false, seconds: 0.2, waitedMs: 0 });
    await rec.flush();
    assert.deepEqual(
      writes.map((w) => w.map((r) => [r.claimsWarm, r.claimsEmpty])),
      [[[1, 1]]],
    );
  });

  it("drops minutes older than it keeps when the database stays down", async () => {
    const { rec, writes, advance } = setup(1);
    rec.claim({ pool: "a", launch: "warm", failed: false, seconds: 0.2, waitedMs: 0 });
    advance(11 * 60_000);
    await rec.flush();
    await rec.flush();
    assert.equal(writes.length, 0);
  });
});
