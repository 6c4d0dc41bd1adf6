import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ManualClock, type IdSource } from "../clock.ts";
import { openStore } from "../db/open.ts";
import type { Store } from "../db/store.ts";
import type { HealthObservation } from "../instance/derive.ts";
import type { HealthChecker, InstanceTarget, RuntimeStatus } from "../instance/client.ts";
import { silentLogger } from "../logger.ts";
import { MemoryProvider } from "../provider/memory.ts";
import type { HealthCadence } from "./health-schedule.ts";
import { HistoryRecorder } from "./history-recorder.ts";
import { Reconciler, type ReconcilerOptions } from "./reconciler.ts";

/** Stands in for the runtimes' HTTP answers: per-url health, default healthy and clean. */
class FakeRuntimes implements HealthChecker {
  readonly answers = new Map<string, HealthObservation | null>();
  readonly statuses = new Map<string, RuntimeStatus>();
  checks = 0;
  async check(target: InstanceTarget) {
    this.checks++;
    const a = this.answers.has(target.url)
      ? this.answers.get(target.url)!
      : { ready: true, conversationId: null, pending: false, clean: true, version: "1.2.3" };
    return a ? { health: a } : { health: null, error: "connect ECONNREFUSED" };
  }
  async status(target: InstanceTarget): Promise<RuntimeStatus> {
    const s = this.statuses.get(target.url);
    if (!s) throw new Error("unreachable");
    return s;
  }
}

let n = 0;
const ids: IdSource = { instanceId: () => `i-${String(++n).padStart(4, "0")}`, token: () => `tok-${n}` };

const EVERY_PASS: HealthCadence = { bootingMinMs: 0, bootingMaxMs: 0, idleMs: 0, claimedMs: 0, otherMs: 0, jitter: 0 };

describe("Reconciler.tick", () => {
  let store: Store;
  let clock: ManualClock;
  let provider: MemoryProvider;
  let runtimes: FakeRuntimes;
  let pool = 0;
  let poolId = "p0";

  // One reconciler serves every pool of a database: each test gets its own (in-memory) database.
  beforeEach(async () => {
    store = await openStore({ dataDir: null });
    poolId = `p${++pool}`;
    clock = new ManualClock(Date.now());
    provider = new MemoryProvider({ clock });
    runtimes = new FakeRuntimes();
    await store.upsertPool({ id: poolId, minIdle: 3, maxTotal: 10 });
    await store.ensureOwnerId("own01");
  });
  afterEach(async () => {
    await store.close();
  });

  /** A reconciler of the test's database; `pool` sets the test pool's sizes first. */
  async function reconciler(over: Partial<ReconcilerOptions> & { pool?: { minIdle: number; maxTotal: number } } = {}): Promise<Reconciler> {
    const { pool: sizes, ...rest } = over;
    if (sizes) await store.upsertPool({ id: poolId, ...sizes });
    return new Reconciler({
      ownerId: "own01",
      store,
      providers: new Map([["memory", provider]]),
      defaultProvider: "memory",
      health: runtimes,
      statusReader: runtimes,
      clock,
      ids,
      logger: silentLogger,
      spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 },
      policy: { stuckTimeoutMs: 15 * 60_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 },
      intervalMs: 1000,
      healthTimeoutMs: 1000,
      healthConcurrency: 8,
      holder: `test-${poolId}`,
      // Every deployed instance checked every pass: these tests are about what a check concludes
      // (health-schedule.test.ts and the scheduling tests below are about when).
      cadence: EVERY_PASS,
      ...rest,
    });
  }

  it("fills an empty pool, then promotes healthy instances to idle", async () => {
    const r = await reconciler();
    const first = await r.tick();
    assert.equal(first.leader, true);
    assert.equal(first.created.length, 3);
    assert.equal(first.providerCalls.list, 1);
    assert.equal(first.counts.starting, 3);
    const rows = await store.listInstances(poolId);
    assert.equal(rows.length, 3);
    assert.ok(
      rows.every((x) => x.providerRef?.startsWith("mem-")),
      "provider refs recorded",
    );

    const second = await r.tick();
    assert.equal(second.created.length, 0);
    assert.equal(second.counts.idle, 3);
    assert.equal(second.transitions.filter((t) => t.to === "idle").length, 3);
    const events = await store.listEvents(rows[0]!.id);
    assert.deepEqual(
      events.map((e) => e.toStatus),
      ["idle", "starting"],
    );
  });

  it("makes one provider list call per pass however large the pool", async () => {
    const r = await reconciler({ pool: { minIdle: 40, maxTotal: 50 }, spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 50 } });
    await r.tick();
    const before = provider.calls.list;
    const res = await r.tick();
    assert.equal(provider.calls.list - before, 1);
    assert.equal(res.providerCalls.list, 1);
    assert.equal(res.counts.idle, 40);
  });

  it("writes nothing on a quiet pass", async () => {
    const r = await reconciler();
    await r.tick();
    await r.tick();
    const before = store.statementCount;
    const quiet = await r.tick();
    assert.equal(quiet.transitions.length, 0);
    // lease + pools + rows of every pool + (no observation write) = 3 statements.
    assert.equal(store.statementCount - before, 3);
  });

  it("never deletes or adopts another deployment's resources, nor unowned ones no row matches; reports and records them", async () => {
    const r = await reconciler({ pool: { minIdle: 1, maxTotal: 10 }, spec: { orphanGraceMs: 0, maxDeletesPerTick: 10, maxCreatesPerTick: 10 } });
    const old = new Date(clock.now().getTime() - 3_600_000);
    provider.addForeign("theirs", old, "i-theirs", "other"); // another deployment, same pool naming
    provider.addForeign("ancient", old, "i-ancient", null); // made before owner ids, no row of ours
    provider.addForeign("stray", old, "i-stray"); // ours (our owner id), no row: an orphan
    // An unowned resource that a row of ours matches is adopted (an upgrade from before owner ids).
    await store.insertInstance({ id: "i-legacy-ours", poolId, provider: "memory", name: "legacy", gatewayToken: "t", reason: "test" });
    await store.setProviderRef("i-legacy-ours", "legacy-ours", null, null);
    provider.addForeign("legacy-ours", old, "i-legacy-ours", null);
    const first = await r.tick();
    assert.deepEqual(
      first.deleted.map((d) => d.ref),
      ["stray"],
      "only our own orphan is deleted",
    );
    assert.deepEqual(first.foreign.map((f) => [f.ref, f.owner]).sort(), [
      ["ancient", null],
      ["theirs", "other"],
    ]);
    for (let i = 0; i < 3; i++) await r.tick();
    assert.ok(provider.fleet.has("theirs") && provider.fleet.has("ancient"), "left alone pass after pass");
    const adopted = await store.getInstance("i-legacy-ours");
    assert.deepEqual([adopted?.providerRef, adopted?.deletedAt], ["legacy-ours", null], "the unowned resource our row knows is adopted, not reported");
    assert.ok(provider.fleet.has("legacy-ours"));
    assert.deepEqual((await store.foreignResources()).map((f) => f.ref).sort(), ["ancient", "theirs"], "recorded for every replica's dashboard");
    // A quiet pass does not rewrite it.
    const before = store.statementCount;
    await r.tick();
    assert.equal(store.statementCount - before, 3);
  });

  it("serves every pool in one pass with one provider listing; the global cap bounds them together", async () => {
    await store.upsertPool({ id: `${poolId}-b`, minIdle: 3, maxTotal: 10 });
    const r = await reconciler({ spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10, globalMaxTotal: 4 } });
    const first = await r.tick();
    assert.equal(first.providerCalls.list, 1, "one listing for both pools");
    assert.equal(first.created.length, 4, "3 + 3 wanted, the global cap allows 4");
    assert.ok(first.notes.includes("max_total_reached"));
    const byPool = new Map(first.pools.map((p) => [p.pool, p.created.length]));
    assert.equal((byPool.get(poolId) ?? 0) + (byPool.get(`${poolId}-b`) ?? 0), 4);
    const second = await r.tick();
    assert.equal(second.created.length, 0, "at the global cap");
    assert.equal((await store.listInstances(null)).length, 4);
    // The cap is in the database too: an operator's add of another pool is refused at it.
    assert.deepEqual((await r.createNow(`${poolId}-b`, 2)).created, []);
    // Each pool's rows carry their pool; the pass reports each pool's counts.
    assert.deepEqual(
      second.pools.map((p) => p.counts.total).reduce((a, b) => a + b, 0),
      4,
    );
  });

  describe("health checks on a schedule per instance (issue 10)", () => {
    const cadence: HealthCadence = { bootingMinMs: 1_000, bootingMaxMs: 15_000, idleMs: 30_000, claimedMs: 60_000, otherMs: 60_000, jitter: 0.2 };
    let seed = 7;
    const random = () => {
      seed = (seed * 16807) % 2147483647;
      return seed / 2147483647;
    };

    it("a quiet pool is checked at the idle cadence, not every pass: health traffic ≈ N / cadence", async () => {
      const r = await reconciler({
        pool: { minIdle: 50, maxTotal: 60 },
        cadence,
        random,
        spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 50 },
      });
      await r.tick(); // creates 50
      for (let i = 0; i < 3 && (await store.countByStatus(poolId)).idle < 50; i++) {
        clock.advance(1_000);
        await r.tick();
      }
      assert.equal((await store.countByStatus(poolId)).idle, 50);
      const before = runtimes.checks;
      let passes = 0;
      for (let t = 0; t < 120_000; t += 5_000) {
        clock.advance(5_000);
        await r.tick();
        passes++;
      }
      const checks = runtimes.checks - before;
      // 50 instances × 120 s / 30 s = 200 at most (passes every 5 s round each interval up, and all 50
      // were promoted in the same pass, so the fourth round falls after the window about half the
      // time); checking every pass would be 1,200.
      assert.ok(checks >= 130 && checks <= 240, `${checks} checks in ${passes} passes`);
    });

    it("a failed check is repeated at the next pass, then backs off; a once-healthy instance is declared dead after the threshold", async () => {
      const r = await reconciler({ pool: { minIdle: 1, maxTotal: 3 }, cadence, random });
      await r.tick();
      clock.advance(1_000);
      await r.tick();
      const [inst] = (await store.listInstances(poolId)).filter((x) => x.status === "idle");
      runtimes.answers.set(`http://memory.invalid/${inst!.id}`, null); // unreachable from now on
      clock.advance(40_000); // past its idle cadence
      const checks0 = runtimes.checks;
      await r.tick(); // failure 1
      await r.tick(); // failure 2: at once, no clock move
      assert.equal(runtimes.checks - checks0, 2, "rechecked at the very next pass");
      assert.equal((await store.getInstance(inst!.id))?.status, "idle", "two failures are tolerated");
      await r.tick();
      assert.equal(runtimes.checks - checks0, 2, "then it backs off (1 s)");
      clock.advance(1_000);
      const third = await r.tick();
      assert.deepEqual(
        third.transitions.filter((t) => t.id === inst!.id).map((t) => t.to),
        ["dead"],
        "third failure: dead",
      );
    });

    it("a hint (a webhook, a process exit) makes one instance due at once; nothing else is checked", async () => {
      const r = await reconciler({ pool: { minIdle: 3, maxTotal: 5 }, cadence, random });
      await r.tick();
      clock.advance(1_000);
      await r.tick();
      clock.advance(1_000);
      const [a] = (await store.listInstances(poolId)).filter((x) => x.status === "idle");
      runtimes.answers.set(`http://memory.invalid/${a!.id}`, { ready: true, conversationId: "intruder", pending: false, clean: false, version: "1" });
      const quiet = await r.tick();
      assert.equal(quiet.healthChecks, 0, "not due: nothing checked");
      r.checkSoon(a!.id);
      const hinted = await r.tick();
      assert.equal(hinted.healthChecks, 1);
      assert.deepEqual(
        hinted.transitions.map((t) => [t.id, t.to]),
        [[a!.id, "dead"]],
        "runtime bound without a claim",
      );
    });

    it("a changed deploy status is acted on in the next pass, whatever the schedule", async () => {
      const r = await reconciler({ pool: { minIdle: 2, maxTotal: 5 }, cadence, random });
      await r.tick();
      clock.advance(1_000);
      await r.tick();
      clock.advance(1_000);
      const [a] = (await store.listInstances(poolId)).filter((x) => x.status === "idle");
      provider.setStatus(a!.providerRef!, "CRASHED");
      const res = await r.tick();
      assert.deepEqual(
        res.transitions.filter((t) => t.id === a!.id).map((t) => t.to),
        ["dead"],
      );
    });
  });

  it("halts creating after repeated create failures (the brake), and creates again once the halt is over", async () => {
    const r = await reconciler({ haltCreatesAfterFailures: 4 });
    provider.failCreates = 1_000;
    const first = await r.tick(); // 3 tries, 3 failures
    assert.equal(first.providerCalls.create, 3);
    const second = await r.tick(); // the 4th failure halts; the rest of the pass creates nothing more
    assert.ok(second.providerCalls.create >= 1 && second.providerCalls.create <= 3);
    const calls = provider.calls.create;
    const halted = await r.tick();
    assert.equal(provider.calls.create, calls, "halted: the provider is not asked");
    assert.ok(halted.notes.includes("creates_halted"));
    assert.equal((await store.listInstances(poolId)).filter((x) => x.status === "starting").length, 0, "no row left behind by the failures");
  });

  it("deletes nothing and creates nothing when the provider listing fails", async () => {
    const r = await reconciler();
    await r.tick();
    await r.tick();
    // Make one instance dead and add an old orphan: a working pass would delete both.
    const [victim] = await store.listInstances(poolId);
    provider.setStatus(victim!.providerRef!, "CRASHED");
    provider.addForeign("stray", new Date(clock.now().getTime() - 3_600_000));
    provider.failLists = 1;
    const res = await r.tick();
    assert.equal(res.listing, "failed");
    assert.equal(res.deleted.length, 0);
    assert.equal(res.created.length, 0);
    assert.equal(provider.calls.delete, 0);
    assert.equal(provider.fleet.size, 4);
    const rows = await store.listInstances(poolId);
    assert.ok(
      rows.every((x) => x.status === "idle"),
      "no status changed on a failed listing",
    );
    assert.deepEqual(res.notes, ["listing_failed_no_changes"]);
  });

  it("deletes nothing when the listing is partial, even though instances look missing", async () => {
    const r = await reconciler();
    await r.tick();
    await r.tick();
    provider.partialOmit = 2;
    const res = await r.tick();
    assert.equal(res.listing, "partial");
    assert.equal(provider.calls.delete, 0);
    const rows = await store.listInstances(poolId);
    assert.equal(rows.filter((x) => x.status === "idle").length, 3);
  });

  it("replaces a crashed idle instance and deletes it at the provider", async () => {
    const r = await reconciler();
    await r.tick();
    await r.tick();
    const [victim] = await store.listInstances(poolId);
    provider.setStatus(victim!.providerRef!, "CRASHED");
    const res = await r.tick();
    assert.deepEqual(
      res.transitions.map((t) => [t.id, t.to]),
      [[victim!.id, "dead"]],
    );
    assert.deepEqual(
      res.deleted.map((d) => d.instanceId),
      [victim!.id],
    );
    assert.equal(res.created.length, 1);
    assert.equal(provider.fleet.has(victim!.providerRef!), false);
    const row = await store.getInstance(victim!.id);
    assert.equal(row?.status, "dead");
    assert.ok(row?.deletedAt, "kept for the event log, marked deleted");
  });

  it("tolerates transient health failures of an idle instance, then declares it dead", async () => {
    const r = await reconciler();
    await r.tick();
    await r.tick();
    const [victim] = await store.listInstances(poolId);
    const url = `http://memory.invalid/${victim!.id}`;
    runtimes.answers.set(url, null);
    for (let i = 0; i < 2; i++) {
      const res = await r.tick();
      assert.equal(res.transitions.length, 0, `failure ${i + 1} is tolerated`);
    }
    const third = await r.tick();
    assert.deepEqual(
      third.transitions.map((t) => t.to),
      ["dead"],
    );
    assert.match(third.transitions[0]!.reason, /unhealthy/);
  });

  it("deletes an orphan only after the grace period", async () => {
    const r = await reconciler();
    await r.tick();
    provider.addForeign("orphan-1", clock.now());
    const early = await r.tick();
    assert.equal(early.deleted.length, 0);
    clock.advance(61_000);
    const late = await r.tick();
    assert.deepEqual(
      late.deleted.map((d) => [d.ref, d.reason]),
      [["orphan-1", "orphan"]],
    );
  });

  it("adopts a provider instance whose create answer was lost (matched by instance id)", async () => {
    const r = await reconciler({ pool: { minIdle: 1, maxTotal: 10 }, spec: { orphanGraceMs: 0, maxDeletesPerTick: 10, maxCreatesPerTick: 10 } });
    await store.insertInstance({ id: "i-lost", poolId, provider: "memory", name: "lost", gatewayToken: "t", reason: "test" });
    await provider.create({ instanceId: "i-lost", poolId, name: "lost", gatewayToken: "t", ownerId: "own01", env: {} });
    const res = await r.tick();
    assert.equal(res.deleted.length, 0, "not an orphan");
    assert.equal(res.created.length, 0, "counted as the one starting instance");
    const row = await store.getInstance("i-lost");
    assert.equal(row?.providerRef, "mem-i-lost");
    assert.equal(row?.status, "idle");
  });

  it("marks a failed create dead and retries on the next pass", async () => {
    const r = await reconciler({ pool: { minIdle: 1, maxTotal: 10 }, spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 } });
    provider.failCreates = 1;
    const res = await r.tick();
    assert.equal(res.created.length, 0);
    assert.equal(res.errors.length, 1);
    const rows = await store.listInstances(poolId, { includeDeleted: true });
    assert.equal(rows[0]?.status, "dead");
    const again = await r.tick();
    assert.equal(again.created.length, 1);
  });

  it("shows a crashed claimed agent as crashed, never deletes it", async () => {
    const r = await reconciler({ pool: { minIdle: 1, maxTotal: 10 }, spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 } });
    await r.tick();
    await r.tick();
    const [inst] = await store.listInstances(poolId);
    await store.transition({ id: inst!.id, from: "idle", to: "claiming", actor: "claim", reason: "test claim" });
    await store.transition({ id: inst!.id, from: "claiming", to: "claimed", actor: "claim", reason: "test", set: { conversationId: "c1", agentName: "A" } });
    provider.setStatus(inst!.providerRef!, "CRASHED");
    const res = await r.tick();
    assert.ok(res.transitions.some((t) => t.id === inst!.id && t.to === "crashed"));
    assert.equal(res.deleted.length, 0);
    assert.ok(provider.fleet.has(inst!.providerRef!));
  });

  // Staleness is judged by the database clock against the attempt's deadline; the process clock
  // is moved far ahead here to show it plays no part (clock skew between process and database).
  const claimingFor = (ms: number, attempt: string) => ({
    claimStartedAt: new Date(Date.now() - 1_000),
    claimDeadline: new Date(Date.now() + ms),
    claimAttempt: attempt,
  });

  it("never moves a fresh claiming row, whatever the process clock says; the sweeper resolves a stale one by asking the runtime", async () => {
    const r = await reconciler({ pool: { minIdle: 4, maxTotal: 10 }, spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 } });
    await r.tick();
    await r.tick();
    const [a, b, c, d] = await store.listInstances(poolId);
    // a, b: claims whose deadline is a minute ahead (database clock); c, d: an hour past.
    for (const x of [a!, b!])
      await store.transition({ id: x.id, from: "idle", to: "claiming", actor: "claim", reason: "test", set: claimingFor(60_000, `att-${x.id}`) });
    for (const x of [c!, d!])
      await store.transition({ id: x.id, from: "idle", to: "claiming", actor: "claim", reason: "test", set: claimingFor(-3_600_000, `att-${x.id}`) });
    for (const x of [a!, c!]) {
      runtimes.statuses.set(`http://memory.invalid/${x.id}`, {
        conversationId: `conv-${x.id}`,
        inboxId: null,
        pending: false,
        clean: false,
        inviteUrl: "http://x/i/a",
      });
    }
    for (const x of [b!, d!])
      runtimes.statuses.set(`http://memory.invalid/${x.id}`, { conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null });
    provider.setStatus(a!.providerRef!, "CRASHED");
    clock.advance(24 * 3_600_000); // a process clock a day ahead of the database: no effect
    const swept = await r.tick();
    const byId = new Map(swept.transitions.filter((t) => t.from === "claiming").map((t) => [t.id, t.to]));
    assert.equal(byId.has(a!.id) || byId.has(b!.id), false, "fresh claims untouched");
    assert.equal(byId.get(c!.id), "claimed");
    assert.equal(byId.get(d!.id), "idle");
    const boundRow = await store.getInstance(c!.id);
    assert.equal(boundRow?.conversationId, `conv-${c!.id}`);
    assert.equal(boundRow?.claimAttempt, `att-${c!.id}`, "a bound row keeps its attempt: the claim, if alive, completes as what it is");
    const cleanRow = await store.getInstance(d!.id);
    assert.deepEqual([cleanRow?.claimAttempt, cleanRow?.claimKey, cleanRow?.agentName], [null, null, null], "a released row keeps nothing of the claim");
  });

  it("sweeps a stale claim whose runtime is neither bound nor clean, or unreachable, to crashed, released (so the next pass retires it)", async () => {
    const r = await reconciler({ pool: { minIdle: 2, maxTotal: 10 }, spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 } });
    await r.tick();
    await r.tick();
    const [dirty, gone] = await store.listInstances(poolId);
    for (const x of [dirty!, gone!]) {
      await store.transition({
        id: x.id,
        from: "idle",
        to: "claiming",
        actor: "claim",
        reason: "test",
        set: { ...claimingFor(-3_600_000, `att-${x.id}`), agentName: "Ada" },
      });
    }
    runtimes.statuses.set(`http://memory.invalid/${dirty!.id}`, { conversationId: null, inboxId: null, pending: false, clean: false, inviteUrl: null });
    // `gone` has no status answer: the fake throws, as an unreachable runtime would.
    const swept = await r.tick();
    const byId = new Map(swept.transitions.filter((t) => t.from === "claiming").map((t) => [t.id, t]));
    assert.equal(byId.get(dirty!.id)?.to, "crashed");
    assert.match(byId.get(dirty!.id)!.reason, /neither bound nor clean/);
    assert.equal(byId.get(gone!.id)?.to, "crashed");
    assert.match(byId.get(gone!.id)!.reason, /unreachable/);
    const next = await r.tick();
    assert.deepEqual(
      next.transitions.filter((t) => t.from === "crashed").map((t) => t.to),
      ["dead", "dead"],
      "nobody got these agents: retired, not kept for an operator",
    );
  });

  it("judges row ages by the database's clock: a replica hours ahead leaves an in-flight create alone", async () => {
    // Replicas' clocks disagree (the interleaving suite skews them by ±6 h). Row timestamps are the
    // database's, so a pass measuring a row's age with its own clock took a create still waiting
    // for the provider's answer for one "never created" and freed its slot.
    clock = new ManualClock(Date.now() + 6 * 3_600_000);
    const r = await reconciler({ pool: { minIdle: 0, maxTotal: 1 } });
    await store.insertInstance({ id: "i-inflight", poolId, provider: "memory", name: "inflight", gatewayToken: "t", reason: "create in flight" });
    const res = await r.tick();
    assert.deepEqual(res.transitions, [], "within the create's grace by the database's clock");
    assert.equal((await store.getInstance("i-inflight"))?.status, "starting");
    // Time the injected clock moves within a term still passes: past the grace, it is judged.
    clock.advance(121_000);
    const later = await r.tick();
    assert.deepEqual(
      later.transitions.map((t) => [t.id, t.to]),
      [["i-inflight", "dead"]],
    );
  });

  it("checks an instance at its stored URL when a listing omits it, and keeps old healthy instances (seed §8 f1a1fab)", async () => {
    const r = await reconciler();
    await r.tick();
    await r.tick();
    const [a, b] = await store.listInstances(poolId);
    clock.advance(60 * 60_000); // long past the stuck timeout since creation
    provider.fleet.get(a!.providerRef!)!.url = null; // this listing has no domain for `a`
    provider.setStatus(b!.providerRef!, null); // nor a deployment for `b`
    const checksBefore = runtimes.checks;
    const res = await r.tick();
    assert.equal(runtimes.checks - checksBefore, 3, "all three checked, two at their stored URLs");
    assert.deepEqual(res.transitions, []);
    assert.deepEqual(res.deleted, []);
    assert.equal(res.counts.idle, 3);
    // And when the stored URL stops answering too, the failure threshold applies as usual.
    runtimes.answers.set(`http://memory.invalid/${a!.id}`, null);
    assert.deepEqual((await r.tick()).transitions, [], "one failure is tolerated");
  });

  it("does nothing when another replica holds the lease", async () => {
    const other = await reconciler({ holder: "other-replica" });
    const mine = await reconciler();
    assert.equal((await other.tick()).leader, true);
    const res = await mine.tick();
    assert.equal(res.leader, false);
    assert.equal(res.providerCalls.list, 0);
  });

  it("renews its lease before acting: a pass that lost it meanwhile deletes and creates nothing", async () => {
    const r = await reconciler();
    const origList = provider.list.bind(provider);
    provider.list = async () => {
      // Another replica takes over while this pass is looking (as after a pass longer than the TTL).
      const mine = await store.acquireLease("reconciler", `test-${poolId}`, 60_000);
      await store.releaseLease(mine!);
      assert.notEqual(await store.acquireLease("reconciler", "other-replica", 60_000), null);
      return origList();
    };
    const res = await r.tick();
    assert.equal(res.leader, true, "it held the lease when the pass began");
    assert.deepEqual(res.created, []);
    assert.match(res.errors.join(" "), /lease lost/);
    assert.equal((await store.listInstances(poolId)).length, 0);
  });

  it("the lease holder replenishes on a claim hint from any replica; the others ignore it, and a burst creates once", async () => {
    // Long intervals: after their first pass only hints make these reconcilers act.
    const leader = await reconciler({ intervalMs: 3_600_000 });
    const others = [await reconciler({ holder: "replica-x", intervalMs: 3_600_000 }), await reconciler({ holder: "replica-y", intervalMs: 3_600_000 })];
    await leader.tick();
    await leader.tick();
    for (const x of [leader, ...others]) x.start();
    for (const x of others) assert.equal((await x.tick()).leader, false);
    const [a, b] = (await store.listInstances(poolId)).filter((x) => x.status === "idle");
    for (const x of [a!, b!]) await store.transition({ id: x.id, from: "idle", to: "claiming", actor: "claim", reason: "test" });
    const createsBefore = provider.calls.create;
    for (let i = 0; i < 5; i++) await store.publishHint({ pool: poolId, kind: "claimed", instanceId: a!.id });
    await new Promise((r) => setImmediate(r)); // hints are delivered after the current call stack
    await leader.createNow(poolId, 0); // queued behind the replenish the hint started
    for (const x of [leader, ...others]) await x.stop();
    const counts = await store.countByStatus(poolId);
    assert.deepEqual([counts.idle, counts.starting, counts.claiming], [1, 2, 2], "min idle 3 met once, not once per hint or replica");
    assert.equal(provider.calls.create - createsBefore, 2);
  });

  it("createNow (an operator's add) is bounded by max total, whoever holds the lease", async () => {
    const r = await reconciler({ holder: "not-the-leader" });
    await (await reconciler()).tick(); // the leader: 3 starting
    const added = await r.createNow(poolId, 20);
    assert.equal(added.created.length, 7);
    assert.equal((await r.createNow(poolId, 1)).created.length, 0);
    assert.equal((await store.listInstances(poolId)).length, 10);
  });

  it("renames claimed instances whose rename never landed, once, and only after their own rename had time", async () => {
    const r = await reconciler();
    await r.tick();
    await r.tick();
    const [a, b] = await store.listInstances(poolId);
    for (const [x, name] of [
      [a!, "Ada Lovelace"],
      [b!, "李雷"],
    ] as const) {
      await store.transition({ id: x.id, from: "idle", to: "claiming", actor: "claim", reason: "t", set: { agentName: name } });
      await store.transition({
        id: x.id,
        from: "claiming",
        to: "claimed",
        actor: "claim",
        reason: "t",
        set: { conversationId: `c-${x.id}`, claimedAt: clock.now() },
      });
    }
    runtimes.answers.set(`http://memory.invalid/${a!.id}`, { ready: true, conversationId: `c-${a!.id}`, pending: false, clean: false, version: "1" });
    runtimes.answers.set(`http://memory.invalid/${b!.id}`, { ready: true, conversationId: `c-${b!.id}`, pending: false, clean: false, version: "1" });
    // The claim's own background rename never happened (a restart, a kill -9).
    assert.deepEqual((await r.tick()).renamed, [], "not within a minute of the claim");
    clock.advance(61_000);
    const res = await r.tick();
    assert.deepEqual(res.renamed.sort(), [a!.id, b!.id].sort());
    assert.equal(provider.fleet.get(a!.providerRef!)!.name, `${a!.name}--ada-lovelace`);
    assert.equal(provider.fleet.get(b!.providerRef!)!.name, `${b!.name}--agent`);
    const renamesBefore = provider.calls.rename;
    assert.deepEqual((await r.tick()).renamed, []);
    assert.equal(provider.calls.rename, renamesBefore, "converged: no further calls");

    // A provider that shortens names (Railway: 32 characters) is compared with what it would set,
    // so a shortened name is not renamed again on every pass.
    provider.nameFor = (n: string) => n.slice(0, a!.name.length + 4);
    const shortened = await r.tick();
    assert.deepEqual(shortened.renamed.sort(), [a!.id, b!.id].sort());
    assert.equal(provider.fleet.get(a!.providerRef!)!.name, `${a!.name}--ad`);
    assert.deepEqual((await r.tick()).renamed, []);

    // A rename the provider keeps refusing backs off, then is given up: not a call every pass.
    provider.nameFor = undefined;
    const realRename = provider.rename.bind(provider);
    provider.rename = async (ref: string) => {
      provider.calls.rename++;
      throw new Error(`refused ${ref}`);
    };
    const tries: number[] = [];
    for (let pass = 0; pass < 80; pass++) {
      const before = provider.calls.rename;
      await r.tick();
      tries.push(provider.calls.rename - before);
      clock.advance(60_000);
    }
    const total = tries.reduce((x, y) => x + y, 0);
    assert.equal(total, 10, `5 tries for each of the two instances over 80 minutes, not one a pass (${tries.join("")})`);
    provider.rename = realRename;
  });

  it("never overlaps passes: concurrent tick() calls run one after another", async () => {
    const r = await reconciler();
    let inFlight = 0;
    let maxInFlight = 0;
    const origList = provider.list.bind(provider);
    provider.list = async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((res) => setImmediate(res));
      inFlight--;
      return origList();
    };
    const results = await Promise.all([r.tick(), r.tick(), r.tick()]);
    assert.equal(maxInFlight, 1);
    // Only the first pass creates: the later ones count its rows.
    assert.deepEqual(
      results.map((x) => x.created.length),
      [3, 0, 0],
    );
  });

  it("a failed create that left its resource behind holds its slot until that resource is deleted (never above max total)", async () => {
    // Railway: the service was made, its domain failed, and the clean-up delete failed too (an
    // outage). Found by the fault run (test/chaos): the row was marked deleted at once, so a
    // replenish filled its slot while the service still ran: 29 services at max total 25.
    const r = await reconciler({ pool: { minIdle: 2, maxTotal: 2 } });
    const create = provider.create.bind(provider);
    let leaks = 1;
    let most = 0;
    provider.create = async (spec) => {
      const made = await create(spec);
      most = Math.max(most, provider.fleet.size);
      if (leaks-- > 0) throw new Error("domain failed; the clean-up delete failed too");
      return made;
    };
    const first = await r.tick();
    assert.equal(first.errors.length, 1);
    assert.equal(provider.fleet.size, 2, "the failed create's resource is still there");
    // An operator's add (the same guarded insert as a replenish after a claim) finds no room.
    assert.deepEqual((await r.createNow(poolId, 1)).created, []);
    // The next pass matches the dead row to its resource by instance id and deletes it; the one after refills.
    const second = await r.tick();
    assert.deepEqual(
      second.deleted.map((d) => d.reason),
      ["dead"],
    );
    await r.tick();
    assert.equal(provider.fleet.size, 2);
    assert.ok(most <= 2, `at most max total at the provider, saw ${most}`);
    provider.create = create;
  });
  it("keeps the idle target its demand sizing policy chooses instead of min idle, and records the pass in the history (issue 13)", async () => {
    const p = (await store.getPool(poolId))!;
    await store.savePool({
      ...p,
      sizing: { mode: "demand", floor: 1, ceiling: null, safetyFactor: 1, windowMinutes: 15, cooldownMinutes: 20, timeZone: "UTC", schedule: [] },
    });
    // 12 claims in the last 14–15 minutes (0.8–0.86/min); no boot measured yet: 5 min assumed → ceil(4.0–4.3) = 5 idle.
    await store.addPoolHistory([
      {
        poolId,
        ageMs: 14 * 60_000,
        claimsWarm: 8,
        claimsWaited: 2,
        claimsEmpty: 2,
        claimsFailed: 0,
        latencyHist: [],
        waitMsSum: 0,
        waitMsMax: 0,
        refills: 0,
        refillMsSum: 0,
        refillMsMax: 0,
        idleSeconds: 0,
        snapshot: null,
      },
    ]);
    const recorder = new HistoryRecorder({ store, clock, logger: silentLogger });
    const r = await reconciler({ sizing: { recorder, defaultRefillMs: () => 5 * 60_000 } });
    const first = await r.tick();
    assert.equal(first.created.length, 5, "five created where min idle says three");
    const sizing = first.pools.find((x) => x.pool === poolId)?.sizing;
    assert.deepEqual([sizing?.target, sizing?.reason], [5, "demand"]);
    assert.match(sizing?.summary ?? "", /^target 5 idle: 0\.[89] claims\/min × 5\.0 min refill p95 \(assumed\) × 1\.0$/);
    // The instances come up: the next pass records a refill for each and a snapshot of the pool.
    clock.advance(2_000);
    await r.tick();
    await recorder.flush();
    const { rows } = await store.poolHistory(poolId, 3_600_000);
    const last = rows.at(-1)!;
    assert.deepEqual([last.idle, last.target, last.refills], [5, 5, 5]);
    // Timed by the pass clock (anchored to the database): at most the 2 s the clock moved, plus the real time of the test.
    assert.ok(last.refillMsMax > 0 && last.refillMsMax < 60_000, `refill ${last.refillMsMax} ms`);
  });
  it("a demand pool retires idle instances above its target once the cooldown allows; the next pass deletes them (issue 13)", async () => {
    const r0 = await reconciler();
    await r0.tick();
    clock.advance(2_000);
    await r0.tick();
    assert.equal((await store.countByStatus(poolId)).idle, 3);
    const p = (await store.getPool(poolId))!;
    // No claims measured at all and no cooldown: the floor (1) is the target.
    await store.savePool({
      ...p,
      sizing: { mode: "demand", floor: 1, ceiling: null, safetyFactor: 1, windowMinutes: 15, cooldownMinutes: 0, timeZone: "UTC", schedule: [] },
    });
    const r = await reconciler({ holder: `test-${poolId}` });
    const t = await r.tick();
    assert.equal(t.transitions.filter((x) => x.to === "dead" && x.reason === "scaled down (sizing)").length, 2);
    assert.equal((await store.countByStatus(poolId)).idle, 1);
    clock.advance(2_000);
    const next = await r.tick();
    assert.equal(next.deleted.length, 2, "their resources deleted by the next pass");
    assert.equal(provider.fleet.size, 1);
  });
});
