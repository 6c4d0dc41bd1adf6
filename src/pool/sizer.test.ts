import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { PoolRecord } from "../db/store.ts";
import { emptyCounts } from "../instance/status.ts";
import type { HistorySnapshot } from "./history.ts";
import type { HistoryRecorder } from "./history-recorder.ts";
import { Sizer } from "./sizer.ts";
import { FIXED_POLICY, type SizingPolicy } from "./sizing.ts";

const NOW = new Date("2026-12-01T12:00:00Z");
const demand: SizingPolicy = {
  mode: "demand",
  floor: 1,
  ceiling: null,
  safetyFactor: 1,
  windowMinutes: 15,
  cooldownMinutes: 20,
  timeZone: "UTC",
  schedule: [],
};

function pool(id: string, sizing: SizingPolicy, over: Partial<PoolRecord> = {}): PoolRecord {
  return {
    id,
    runtime: id,
    provider: null,
    image: null,
    command: null,
    env: {},
    minIdle: 3,
    maxTotal: 20,
    claimAgentName: null,
    claimInstructions: null,
    joinUrlHosts: null,
    maxSurge: 2,
    sizing,
    templateHash: "",
    previousTemplate: null,
    seedHash: null,
    retiredAt: null,
    createdAt: NOW,
    updatedAt: NOW,
    ...over,
  };
}

function setup(opts: { arrivals?: number; boots?: number[]; fail?: boolean } = {}) {
  const queries: string[] = [];
  const logs: Array<[string, Record<string, unknown>, string]> = [];
  let mono = 0;
  const log = (level: string) => (obj: Record<string, unknown>, msg: string) => void logs.push([level, obj, msg]);
  const logger = { info: log("info"), debug: log("debug"), warn: log("warn"), error: log("error"), child: () => logger } as never;
  const recorded = { idle: [] as number[], refills: [] as number[], snapshots: [] as HistorySnapshot[] };
  const recorder = {
    idle: (_p: string, s: number) => void recorded.idle.push(s),
    refill: (_p: string, ms: number) => void recorded.refills.push(ms),
    snapshot: (_p: string, s: HistorySnapshot) => void recorded.snapshots.push(s),
  } as unknown as HistoryRecorder;
  const sizer = new Sizer({
    store: {
      claimArrivals: async (id) => {
        queries.push(`arrivals ${id}`);
        if (opts.fail) throw new Error("database down");
        return { arrivals: opts.arrivals ?? 0, oldestMinute: new Date(NOW.getTime() - 15 * 60_000), now: NOW };
      },
      bootStats: async (id) => {
        queries.push(`boots ${id}`);
        return { recentBootMs: opts.boots ?? [], startingSince: [] };
      },
      retireSurplusIdle: async () => null,
    },
    logger,
    recorder,
    monotonic: () => mono,
  });
  return { sizer, queries, logs, recorded, advance: (ms: number) => (mono += ms) };
}

describe("Sizer", () => {
  it("a fixed pool keeps min idle and costs no query", async () => {
    const { sizer, queries } = setup();
    const d = await sizer.decide([pool("f", FIXED_POLICY)], NOW);
    assert.equal(d.get("f")?.target, 3);
    assert.deepEqual(queries, []);
  });

  it("a demand pool's target comes from its arrivals over the window and its boots' p95, with the numbers logged", async () => {
    // 30 claims in 15 min = 2/min; boots of 1..3 min, p95 3 min: 6 idle.
    const { sizer, logs } = setup({ arrivals: 30, boots: [60_000, 120_000, 180_000] });
    const d = (await sizer.decide([pool("d", demand)], NOW)).get("d")!;
    assert.equal(d.target, 6);
    assert.equal(d.summary, "target 6 idle: 2.0 claims/min × 3.0 min refill p95 × 1.0");
    const [level, obj, msg] = logs[0]!;
    assert.equal(level, "info");
    assert.equal(msg, "pool d: target 6 idle: 2.0 claims/min × 3.0 min refill p95 × 1.0");
    assert.deepEqual(obj.sizing, {
      target: 6,
      demand: 6,
      floor: 1,
      ceiling: 20,
      arrivalsPerMinute: 2,
      refillP95Ms: 180_000,
      safetyFactor: 1,
      reason: "demand",
    });
    assert.equal(sizer.target(pool("d", demand)), 6);
    // The same decision again is logged at debug only.
    await sizer.decide([pool("d", demand)], NOW);
    assert.equal(logs[1]![0], "debug");
  });

  it("reuses a pool's measurements for a while", async () => {
    const { sizer, queries, advance } = setup({ arrivals: 30, boots: [60_000] });
    await sizer.decide([pool("d", demand)], NOW);
    advance(5_000);
    await sizer.decide([pool("d", demand)], NOW);
    assert.equal(queries.length, 2);
    advance(15_000);
    await sizer.decide([pool("d", demand)], NOW);
    assert.equal(queries.length, 4);
  });

  it("the global cap wins", async () => {
    const capped = new Sizer({
      store: {
        claimArrivals: async () => ({ arrivals: 300, oldestMinute: new Date(NOW.getTime() - 15 * 60_000), now: NOW }),
        bootStats: async () => ({ recentBootMs: [600_000], startingSince: [] }),
        retireSurplusIdle: async () => null,
      },
      logger: { info() {}, debug() {}, warn() {} } as never,
      globalMaxTotal: 4,
    });
    assert.equal((await capped.decide([pool("d", demand)], NOW)).get("d")?.target, 4);
  });

  it("a failed measurement keeps the last target", async () => {
    const ok = setup({ arrivals: 30, boots: [180_000] });
    await ok.sizer.decide([pool("d", demand)], NOW);
    const failing = setup({ fail: true });
    // No earlier decision: the policy's floor (no data).
    assert.equal((await failing.sizer.decide([pool("d", demand)], NOW)).get("d")?.target, 1);
    assert.equal(failing.logs[0]![0], "warn");
  });

  it("records idle instance-seconds between passes, refills timed from entering starting, and a snapshot with the target", async () => {
    const { sizer, recorded, advance } = setup({ arrivals: 30, boots: [180_000] });
    await sizer.decide([pool("d", demand)], NOW);
    const counts = { ...emptyCounts(), idle: 4, starting: 1, claimed: 2, crashed: 1 };
    const rows = new Map([["i-1", { statusChangedAt: new Date(NOW.getTime() - 90_000) }]]);
    sizer.observe("d", counts, rows, [], NOW);
    assert.deepEqual(recorded.idle, [], "no idle time before a previous pass");
    advance(10_000);
    sizer.observe(
      "d",
      counts,
      rows,
      [
        { id: "i-1", from: "starting", to: "idle" },
        { id: "i-1", from: "idle", to: "claiming" },
      ],
      NOW,
    );
    assert.deepEqual(recorded.idle, [40]);
    assert.deepEqual(recorded.refills, [90_000]);
    assert.deepEqual(recorded.snapshots.at(-1), {
      idle: 4,
      starting: 1,
      claimed: 2,
      other: 1,
      target: 6,
      targetSummary: "target 6 idle: 2.0 claims/min × 3.0 min refill p95 × 1.0",
    });
    // A long gap (another replica led meanwhile) is not counted.
    advance(10 * 60_000);
    sizer.observe("d", counts, rows, [], NOW);
    assert.deepEqual(recorded.idle, [40]);
  });
});
