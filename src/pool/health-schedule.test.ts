import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { checkInterval, DEFAULT_CADENCE, firstCheckAt, HealthSchedule, type HealthCadence } from "./health-schedule.ts";

const c: HealthCadence = { bootingMinMs: 1_000, bootingMaxMs: 15_000, idleMs: 30_000, claimedMs: 60_000, otherMs: 60_000, jitter: 0.2 };
const mid = () => 0.5; // no jitter: the middle of the spread

describe("checkInterval", () => {
  const cases: Array<[string, Parameters<typeof checkInterval>[0], number, number]> = [
    ["booting, just created: the minimum", "starting", 0, 1_000],
    ["booting 30 s: a tenth of it", "starting", 30_000, 3_000],
    ["booting 10 min: capped", "starting", 600_000, 15_000],
    ["idle: the idle cadence", "idle", 0, 30_000],
    ["claimed: less often", "claimed", 0, 60_000],
    ["pending: as claimed", "pending_acceptance", 0, 60_000],
    ["crashed: the other cadence", "crashed", 0, 60_000],
    ["sleeping: the other cadence", "sleeping", 0, 60_000],
  ];
  for (const [name, status, bootMs, want] of cases) it(name, () => assert.equal(checkInterval(status, bootMs, c, mid), want));

  it("jitter spreads idle checks over ±20 %, evenly", () => {
    let seed = 1;
    const rng = () => {
      seed = (seed * 16807) % 2147483647;
      return seed / 2147483647;
    };
    const xs = Array.from({ length: 10_000 }, () => checkInterval("idle", 0, c, rng));
    assert.ok(Math.min(...xs) >= 24_000 && Math.max(...xs) <= 36_000);
    const buckets = [0, 0, 0, 0];
    for (const x of xs) buckets[Math.min(3, Math.floor((x - 24_000) / 3_000))]!++;
    for (const b of buckets) assert.ok(b > 2_200 && b < 2_800, `even spread: ${buckets.join(", ")}`);
  });
});

describe("firstCheckAt (a new leader, a restart)", () => {
  it("a booting instance at once; one checked recently after its interval; one never checked somewhere in the next cadence", () => {
    const now = 1_000_000;
    assert.equal(firstCheckAt("starting", null, now, c, mid), now);
    assert.equal(firstCheckAt("idle", new Date(now - 10_000), now, c, mid), now + 20_000);
    assert.equal(firstCheckAt("idle", new Date(now - 60_000), now, c, mid), now, "overdue: now");
    assert.equal(
      firstCheckAt("idle", null, now, c, () => 0.25),
      now + 6_750,
      "a quarter into a (jittered: 27 s) cadence",
    );
  });

  it("10,000 idle instances first seen by a new leader are spread over a cadence, not checked in one pass", () => {
    const s = new HealthSchedule(c, Math.random);
    const now = 5_000_000;
    let dueNow = 0;
    for (let i = 0; i < 10_000; i++) if (s.due(`i-${i}`, "idle", null, now)) dueNow++;
    assert.ok(dueNow < 50, `${dueNow} due at once`);
    let dueInFiveSeconds = 0;
    for (let i = 0; i < 10_000; i++) if (s.due(`i-${i}`, "idle", null, now + 5_000)) dueInFiveSeconds++;
    assert.ok(dueInFiveSeconds > 1_000 && dueInFiveSeconds < 2_400, `about a sixth after 5 s: ${dueInFiveSeconds}`);
  });
});

describe("HealthSchedule", () => {
  it("after a good check: the status's interval; a failure: at once, then backing off to the interval", () => {
    const s = new HealthSchedule(c, mid);
    s.checked("a", "idle", 0, 0, 0);
    assert.equal(s.nextAt("a"), 30_000);
    s.checked("a", "idle", 0, 1, 0);
    assert.equal(s.nextAt("a"), 0, "first failure: the next pass");
    s.checked("a", "idle", 0, 2, 0);
    assert.equal(s.nextAt("a"), 1_000);
    s.checked("a", "idle", 0, 4, 0);
    assert.equal(s.nextAt("a"), 4_000);
    s.checked("a", "idle", 0, 20, 0);
    assert.equal(s.nextAt("a"), 30_000, "a runtime that stays unreachable: once per cadence");
  });

  it("soon() makes an instance due at once (a hint, a changed deploy status); retain() forgets the gone", () => {
    const s = new HealthSchedule(DEFAULT_CADENCE, mid);
    s.checked("a", "idle", 0, 0, 0);
    assert.equal(s.due("a", "idle", null, 1_000), false);
    s.soon("a", 1_000);
    assert.equal(s.due("a", "idle", null, 1_000), true);
    s.retain(new Set());
    assert.equal(s.size, 0);
  });
});
