import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Readiness } from "./readiness.ts";

/** A store whose ping answers, refuses or never answers, and a clock the test moves. */
function setup(ping: () => Promise<void> = async () => undefined, maxPassAgeMs = 15_000) {
  let now = 1_000;
  const r = new Readiness({ store: { ping }, maxPassAgeMs, pingTimeoutMs: 50, now: () => now });
  return {
    r,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe("Readiness", () => {
  it("is not ready before a pass completed, ready after, and not ready once the last pass is older than the limit", async () => {
    const { r, advance } = setup();
    assert.deepEqual(await r.check(), { ready: false, reason: "No reconcile pass has completed yet.", lastPassAgeMs: null });
    r.passEnded({ errors: [] });
    advance(14_000);
    assert.deepEqual(await r.check(), { ready: true, lastPassAgeMs: 14_000 });
    advance(1_001);
    const stale = await r.check();
    assert.equal(stale.ready, false);
    assert.match((stale as { reason: string }).reason, /completed 15\.0 s ago \(more than 15\.0 s\)/);
    r.passEnded({ errors: ["listing: provider unreachable"] });
    assert.deepEqual(await r.check(), { ready: true, lastPassAgeMs: 0 }, "a provider outage does not make the replica unready");
  });

  it("a pass that aborted does not count", async () => {
    const { r, advance } = setup();
    r.passEnded({ errors: [] });
    advance(16_000);
    r.passEnded({ errors: ["pass: connect ECONNREFUSED"] });
    assert.equal((await r.check()).ready, false);
  });

  it("is not ready when the database refuses, without the driver's message", async () => {
    const { r } = setup(async () => {
      throw new Error('password authentication failed for user "pool" at db.internal:5432');
    });
    r.passEnded({ errors: [] });
    const res = await r.check();
    assert.deepEqual(res, { ready: false, reason: "The database refused the readiness check.", lastPassAgeMs: 0 });
  });

  it("is not ready when the database does not answer in time", async () => {
    const { r } = setup(() => new Promise<void>(() => undefined));
    r.passEnded({ errors: [] });
    assert.deepEqual(await r.check(), { ready: false, reason: "The database did not answer within 50 ms.", lastPassAgeMs: 0 });
  });
});
