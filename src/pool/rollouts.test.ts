/**
 * The rollout service inside real reconciler passes: a real store (in-memory PGlite), the memory
 * provider and runtimes that answer at once. Pass after pass it checks what the planner promises
 * end to end: surge before retirement, min idle claimable at every pass, the outcome recorded, a
 * halt with the provider's reason, pause and resume, and no statement on a quiet pass.
 */
import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ManualClock, type IdSource } from "../clock.ts";
import { openStore } from "../db/open.ts";
import type { Store } from "../db/store.ts";
import type { HealthChecker } from "../instance/client.ts";
import { silentLogger } from "../logger.ts";
import { MemoryProvider } from "../provider/memory.ts";
import { Reconciler } from "./reconciler.ts";
import { PoolRegistry } from "./registry.ts";
import { RolloutService } from "./rollouts.ts";

const healthy: HealthChecker & { status(): Promise<never> } = {
  async check() {
    return { health: { ready: true, conversationId: null, pending: false, clean: true, version: "1" } };
  },
  async status() {
    throw new Error("unused");
  },
};

describe("RolloutService in reconciler passes", () => {
  let store: Store;
  let provider: MemoryProvider;
  let registry: PoolRegistry;
  let rollouts: RolloutService;
  let reconciler: Reconciler;
  let n = 0;
  const ids: IdSource = { instanceId: () => `i-${String(++n).padStart(4, "0")}`, token: () => `tok-${n}` };

  beforeEach(async () => {
    store = await openStore({ dataDir: null });
    await store.ensureOwnerId("own01");
    const clock = new ManualClock(Date.now());
    provider = new MemoryProvider({ clock });
    rollouts = new RolloutService({ store, logger: silentLogger, haltAfter: 3 });
    registry = new PoolRegistry({ store, logger: silentLogger, deploymentEnv: {}, providers: ["memory"] });
    await registry.create({ id: "web", minIdle: 4, maxTotal: 6, maxSurge: 2, env: { V: "1" } });
    reconciler = new Reconciler({
      ownerId: "own01",
      store,
      providers: new Map([["memory", provider]]),
      defaultProvider: "memory",
      health: healthy,
      statusReader: healthy,
      clock,
      ids,
      logger: silentLogger,
      spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 },
      policy: { stuckTimeoutMs: 15 * 60_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 },
      intervalMs: 1000,
      healthTimeoutMs: 1000,
      healthConcurrency: 8,
      rollouts,
    });
    await reconciler.tick(); // 4 created
    await reconciler.tick(); // 4 idle
  });
  afterEach(async () => {
    await reconciler.stop();
    await store.close();
  });

  const claimable = async () => (await store.listInstances("web")).filter((r) => r.status === "idle" && !r.protected).length;

  it("a changed template is rolled out by surge: new instances first, min idle claimable at every pass, then complete", async () => {
    const before = (await store.listInstances("web")).map((r) => r.id);
    const { pool } = await registry.update("web", { env: { V: "2" } });
    // No change hook here: the pass finds the pool's template is not its latest rollout's.
    let seen = Number.POSITIVE_INFINITY;
    let maxHeld = 0;
    for (let i = 0; i < 20; i++) {
      const t = await reconciler.tick();
      assert.deepEqual(t.errors, []);
      seen = Math.min(seen, await claimable());
      const live = (await store.listInstances("web")).filter((r) => r.deletedAt === null);
      maxHeld = Math.max(maxHeld, live.length);
      assert.ok(live.filter((r) => r.status === "starting").length <= 2, "at most max surge starting");
      if ((await store.rollouts.latest("web"))?.status === "complete") break;
    }
    const r = (await store.rollouts.latest("web"))!;
    assert.equal(r.status, "complete");
    assert.deepEqual([r.retired, r.remaining, r.failed, r.toHash, r.reason], [4, 0, 0, pool.templateHash, "template changed"]);
    assert.equal(seen, 4, "never fewer than min idle claimable");
    assert.equal(r.minClaimable, 4, "the rollout recorded the fewest claimable it saw");
    assert.ok(maxHeld <= 6 + 2, `held ${maxHeld} ≤ max total + max surge`);
    const rows = await store.listInstances("web");
    assert.deepEqual(
      rows.map((x) => [x.status, x.templateHash]),
      Array(4).fill(["idle", pool.templateHash]),
    );
    for (const id of before) {
      const old = (await store.getInstance(id))!;
      assert.ok(old.status === "dead" && old.deletedAt !== null, `${id} retired and deleted`);
      assert.match((await store.listEvents(id))[0]!.reason, /^replaced by rollout \d+/);
    }
    assert.equal(provider.fleet.size, 4, "the old resources are gone at the provider");
  });

  it("halts after 3 failed creates in a row with the provider's error; the old instances stay", async () => {
    await registry.update("web", { env: { V: "broken" } });
    provider.failCreates = 100;
    for (let i = 0; i < 10 && (await store.rollouts.latest("web"))?.status !== "halted"; i++) await reconciler.tick();
    const r = (await store.rollouts.latest("web"))!;
    assert.equal(r.status, "halted");
    // Two creates a pass (max surge 2): the pass that sees the third failure sees the fourth too.
    assert.match(r.haltReason!, /^[34] new instances in a row failed before becoming idle: the provider refused the create \(simulated create failure\)$/);
    assert.ok(r.failed >= 3 && r.failuresInARow === r.failed);
    assert.equal(await claimable(), 4, "every old instance is still there and claimable");
    // Halted: the passes leave it alone (no more creates).
    const creates = provider.calls.create;
    await reconciler.tick();
    assert.equal(provider.calls.create, creates);
    // A rollback is a new rollout back to the old template: nothing to replace, complete at once.
    await registry.rollBack("web");
    await reconciler.tick();
    const back = (await store.rollouts.latest("web"))!;
    assert.deepEqual([back.status, back.reason, back.remaining], ["complete", "rolled back", 0]);
    assert.equal((await store.rollouts.history("web", 10)).length, 2, "the halted one stays in the history");
  });

  it("pause stops it, resume goes on; a halted rollout resumed is a new attempt", async () => {
    await registry.update("web", { env: { V: "2" } });
    await rollouts.noteChange(await registry.get("web"));
    assert.equal((await rollouts.state("web")).current?.status, "running", "started by the change hook, before any pass");
    await rollouts.pause("web");
    await assert.rejects(rollouts.pause("web"), /no running rollout to pause/);
    const creates = provider.calls.create;
    for (let i = 0; i < 3; i++) await reconciler.tick();
    assert.equal(provider.calls.create, creates, "a paused rollout makes nothing");
    assert.equal((await store.rollouts.latest("web"))!.remaining, 4, "its progress is still recorded");
    await rollouts.resume("web");
    for (let i = 0; i < 20 && (await store.rollouts.latest("web"))?.status !== "complete"; i++) await reconciler.tick();
    assert.equal((await store.rollouts.latest("web"))!.status, "complete");
    await assert.rejects(rollouts.resume("web"), /nothing|no paused or halted/);
  });

  it("a new change while one runs supersedes it", async () => {
    await registry.update("web", { env: { V: "2" } });
    await reconciler.tick();
    const first = (await store.rollouts.latest("web"))!;
    assert.equal(first.status, "running");
    const { pool } = await registry.update("web", { env: { V: "3" } });
    await reconciler.tick();
    const [second, old] = await store.rollouts.history("web", 5);
    assert.deepEqual([old!.id, old!.status], [first.id, "superseded"]);
    assert.deepEqual([second!.status, second!.fromHash, second!.toHash], ["running", first.toHash, pool.templateHash]);
    for (let i = 0; i < 20 && (await store.rollouts.latest("web"))?.status !== "complete"; i++) await reconciler.tick();

    assert.deepEqual(
      (await store.listInstances("web")).map((x) => x.templateHash),
      Array(4).fill(pool.templateHash),
    );
  });

  it("a quiet pass asks nothing about rollouts", async () => {
    await reconciler.tick();
    let calls = 0;
    const orig = store.rollouts.latestPerPool.bind(store.rollouts);
    store.rollouts.latestPerPool = async () => {
      calls++;
      return orig();
    };
    const s0 = store.statementCount;
    await reconciler.tick();
    await reconciler.tick();
    assert.equal(calls, 0);
    assert.equal(store.statementCount - s0, 6, "3 statements a quiet pass, as without rollouts");
    // A change is noticed by the next pass.
    await registry.update("web", { env: { V: "2" } });
    await reconciler.tick();
    assert.equal(calls, 1);
  });
});
