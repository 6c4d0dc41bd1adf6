import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  arrivalsPerMinute,
  percentile,
  planSizing,
  readSizingPolicy,
  scheduleFloor,
  SizingPolicyInput,
  type DemandPolicy,
  type SizingInput,
  type SizingState,
} from "./sizing.ts";

const MIN = 60_000;
// Tuesday 2026-12-01 12:00 UTC.
const NOON = new Date("2026-12-01T12:00:00Z");

const demand = (over: Partial<DemandPolicy> = {}): DemandPolicy => ({
  mode: "demand",
  floor: 1,
  ceiling: null,
  safetyFactor: 1,
  windowMinutes: 15,
  cooldownMinutes: 20,
  timeZone: "UTC",
  schedule: [],
  ...over,
});

const input = (over: Partial<SizingInput> = {}): SizingInput => ({
  policy: demand(),
  minIdle: 3,
  maxTotal: 50,
  arrivalsPerMinute: 2,
  refillP95Ms: 3 * MIN,
  defaultRefillMs: 60_000,
  now: NOON,
  previous: null,
  ...over,
});

describe("planSizing", () => {
  const table: Array<[string, Partial<SizingInput>, number, string]> = [
    ["fixed: min idle, whatever the demand", { policy: { mode: "fixed" }, arrivalsPerMinute: 40 }, 3, "fixed"],
    ["fixed: max total wins over min idle", { policy: { mode: "fixed" }, minIdle: 8, maxTotal: 5 }, 5, "capped"],
    ["demand: 2/min × 3 min × 1.0 = 6", {}, 6, "demand"],
    ["demand: a fraction rounds up (2.1 × 3.2 = 6.72 → 7)", { arrivalsPerMinute: 2.1, refillP95Ms: 3.2 * MIN }, 7, "demand"],
    ["demand: the safety factor multiplies", { policy: demand({ safetyFactor: 1.5 }) }, 9, "demand"],
    ["demand: exact products do not round up from float noise (0.1 × 30 min = 3)", { arrivalsPerMinute: 0.1, refillP95Ms: 30 * MIN }, 3, "demand"],
    ["no claims in the window: the floor", { arrivalsPerMinute: 0 }, 1, "floor"],
    ["no data yet: the floor", { arrivalsPerMinute: null }, 1, "no_data"],
    ["no boot measured yet: the assumed refill time (2/min × 1 min)", { refillP95Ms: null }, 2, "demand"],
    ["the ceiling caps demand", { policy: demand({ ceiling: 4 }) }, 4, "capped"],
    ["max total wins over demand", { maxTotal: 5 }, 5, "capped"],
    ["the global cap wins over demand and max total", { maxTotal: 50, globalMaxTotal: 3 }, 3, "capped"],
    ["max total wins over the floor", { policy: demand({ floor: 10 }), maxTotal: 4, arrivalsPerMinute: 0 }, 4, "capped"],
  ];
  for (const [name, over, target, reason] of table) {
    it(name, () => {
      const d = planSizing(input(over));
      assert.equal(d.target, target, d.summary);
      assert.equal(d.reason, reason, d.summary);
    });
  }

  it("shows the numbers it used", () => {
    const d = planSizing(input({ arrivalsPerMinute: 2.1, refillP95Ms: 3.2 * MIN }));
    assert.equal(d.summary, "target 7 idle: 2.1 claims/min × 3.2 min refill p95 × 1.0");
    assert.equal(planSizing(input({ arrivalsPerMinute: null })).summary, "target 1 idle: no claims measured yet × 3.0 min refill p95 × 1.0 (floor 1)");
  });

  it("ramps up at once and comes down only after the cooldown", () => {
    let state: SizingState | null = null;
    const step = (minute: number, rate: number) => {
      const d = planSizing(input({ arrivalsPerMinute: rate, now: new Date(NOON.getTime() + minute * MIN), previous: state }));
      state = d.state;
      return [d.target, d.reason];
    };
    assert.deepEqual(step(0, 1), [3, "demand"]);
    // Ramp: each rise applies in the same pass.
    assert.deepEqual(step(1, 2), [6, "demand"]);
    assert.deepEqual(step(2, 4), [12, "demand"]);
    // Demand falls: held for the cooldown (20 min from the last time 12 was justified, minute 2).
    assert.deepEqual(step(3, 1), [12, "cooldown"]);
    // A rise during the cooldown that stays below the held target does not restart it.
    assert.deepEqual(step(10, 3), [12, "cooldown"]);
    assert.deepEqual(step(21, 1), [12, "cooldown"]);
    assert.deepEqual(step(22, 1), [3, "demand"]);
    // Up again at once.
    assert.deepEqual(step(23, 5), [15, "demand"]);
  });

  it("the held target still gives way to max total", () => {
    const d = planSizing(input({ arrivalsPerMinute: 0, maxTotal: 4, previous: { target: 12, justifiedAt: NOON.getTime() } }));
    assert.equal(d.target, 4);
  });

  it("a zero cooldown scales down at once", () => {
    const d = planSizing(input({ policy: demand({ cooldownMinutes: 0 }), arrivalsPerMinute: 0, previous: { target: 12, justifiedAt: NOON.getTime() } }));
    assert.equal(d.target, 1);
  });
});

describe("schedule floors", () => {
  const morning = demand({ schedule: [{ days: ["mon", "tue", "wed", "thu", "fri"], from: "08:00", to: "10:00", floor: 5 }] });
  const table: Array<[string, string, DemandPolicy, number | null]> = [
    ["inside the window on a weekday", "2026-12-01T08:30:00Z", morning, 5],
    ["at its start (inclusive)", "2026-12-01T08:00:00Z", morning, 5],
    ["at its end (exclusive)", "2026-12-01T10:00:00Z", morning, null],
    ["on a Saturday", "2026-12-05T08:30:00Z", morning, null],
    ["read in the policy's time zone (08:30 in Berlin is 07:30 UTC)", "2026-12-01T07:30:00Z", { ...morning, timeZone: "Europe/Berlin" }, 5],
    ["…and not at 08:30 UTC then (09:30 Berlin is inside; 10:30 Berlin is not)", "2026-12-01T09:30:00Z", { ...morning, timeZone: "Europe/Berlin" }, null],
    [
      "overlapping windows: the highest floor",
      "2026-12-01T09:00:00Z",
      { ...morning, schedule: [...morning.schedule, { days: ["tue"], from: "09:00", to: "24:00", floor: 8 }] },
      8,
    ],
  ];
  for (const [name, at, policy, floor] of table) {
    it(name, () => assert.equal(scheduleFloor(policy, new Date(at)), floor));
  }

  it("raises the target above demand during the window, and max total still wins", () => {
    const at = new Date("2026-12-01T08:30:00Z");
    const d = planSizing(input({ policy: morning, arrivalsPerMinute: 0.2, now: at }));
    assert.deepEqual([d.target, d.reason], [5, "schedule_floor"]);
    assert.match(d.summary, /schedule floor 5/);
    assert.equal(planSizing(input({ policy: morning, arrivalsPerMinute: 0.2, now: at, maxTotal: 2 })).target, 2);
  });
});

describe("sizing policy input", () => {
  it("fills in defaults", () => {
    const p = SizingPolicyInput.parse({ mode: "demand" });
    assert.deepEqual(p, { mode: "demand", floor: 1, ceiling: null, safetyFactor: 1, windowMinutes: 15, cooldownMinutes: 20, timeZone: "UTC", schedule: [] });
  });
  const bad: Array<[string, unknown]> = [
    ["an unknown mode", { mode: "magic" }],
    ["floor above ceiling", { mode: "demand", floor: 5, ceiling: 2 }],
    ["a window that ends before it starts", { mode: "demand", schedule: [{ days: ["mon"], from: "10:00", to: "08:00", floor: 2 }] }],
    ["an unknown time zone", { mode: "demand", timeZone: "Mars/Olympus" }],
    ["a bad time", { mode: "demand", schedule: [{ days: ["mon"], from: "8am", to: "10:00", floor: 2 }] }],
    ["an unknown day", { mode: "demand", schedule: [{ days: ["funday"], from: "08:00", to: "10:00", floor: 2 }] }],
    ["an unknown field", { mode: "demand", surge: 3 }],
    ["fields on fixed", { mode: "fixed", floor: 3 }],
  ];
  for (const [name, v] of bad) it(`refuses ${name}`, () => assert.equal(SizingPolicyInput.safeParse(v).success, false));

  it("an unreadable stored policy is fixed", () => {
    assert.deepEqual(readSizingPolicy(null), { mode: "fixed" });
    assert.deepEqual(readSizingPolicy({ mode: "nonsense" }), { mode: "fixed" });
    assert.equal(readSizingPolicy({ mode: "demand", floor: 2 }).mode, "demand");
  });
});

describe("measurements", () => {
  it("arrival rate divides by the minutes the window covers", () => {
    const now = NOON.getTime();
    assert.equal(arrivalsPerMinute({ arrivals: 30, oldestMinuteMs: now - 15 * MIN }, now, 15), 2);
    // Only 3 minutes measured: not diluted over 15.
    assert.equal(arrivalsPerMinute({ arrivals: 6, oldestMinuteMs: now - 3 * MIN }, now, 15), 2);
    // Older rows than the window do not stretch it.
    assert.equal(arrivalsPerMinute({ arrivals: 30, oldestMinuteMs: now - 60 * MIN }, now, 15), 2);
    // Less than a minute: counted as one.
    assert.equal(arrivalsPerMinute({ arrivals: 4, oldestMinuteMs: now - 10_000 }, now, 15), 4);
    assert.equal(arrivalsPerMinute({ arrivals: 0, oldestMinuteMs: null }, now, 15), null);
  });

  it("percentile by nearest rank, ignoring junk", () => {
    assert.equal(percentile([], 0.95), null);
    assert.equal(percentile([5], 0.95), 5);
    assert.equal(
      percentile(
        Array.from({ length: 100 }, (_, i) => i + 1),
        0.95,
      ),
      95,
    );
    assert.equal(percentile([1, 2, Number.NaN, -1, 3], 0.5), 2);
  });
});
