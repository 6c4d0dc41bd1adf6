/**
 * The store's rollout operations (issue 11) on both backends (in-memory PGlite and real Postgres):
 * starting (idempotent, conditional on the pool's template, superseding, fenced), pausing and
 * resuming, progress and outcomes, the new template's instances and their fate, and the
 * retirement's conditions (the claim wins, the floor is judged in the statement, protected and
 * current instances are never retired, a paused rollout or a lost term retires nothing).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { inMemoryPglite, postgresLabel, realPostgres, type TestDatabase } from "../../test/support/databases.ts";
import { poolSettings } from "../pool/template.ts";
import type { NewRollout } from "./rollouts.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { Lease, Store } from "./store.ts";

let seq = 0;
const uid = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(seq++).toString(36)}`;

function rollouts(name: string, open: () => Promise<TestDatabase>) {
  describe(`Store rollouts: ${name}`, () => {
    let db: TestDatabase;
    let store: Store;
    let lease: Lease;
    before(async () => {
      db = await open();
      store = await db.open();
      lease = (await store.acquireLease(uid("reconciler"), "me", 60_000))!;
    });
    after(async () => {
      await store?.close();
      await db?.stop();
    });

    /** A pool at template `hash`. */
    const newPool = async (hash = "h1", minIdle = 2) => {
      const id = uid("p");
      await store.savePool({ ...poolSettings({ id, minIdle, maxTotal: 20 }), templateHash: hash, previousTemplate: null });
      return id;
    };
    const setHash = async (pool: string, hash: string) => {
      const p = (await store.getPool(pool))!;
      await store.savePool({ ...p, templateHash: hash });
    };
    const instance = async (pool: string, hash: string, status: InstanceStatus = "idle", protect = false) => {
      const id = uid("i");
      await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, templateHash: hash, reason: "test" });
      await store.setProviderRef(id, `ref-${id}`, null, "SUCCESS");
      if (status !== "starting")
        await store.transition({ id, from: "starting", to: status === "claimed" ? "idle" : status, actor: "reconciler", reason: "up" });
      if (status === "claimed") {
        await store.transition({ id, from: "idle", to: "claiming", actor: "claim", reason: "claim" });
      }
      if (protect) await store.setProtected(id, true);
      return id;
    };
    const start = (pool: string, to: string, over: Partial<NewRollout> = {}, fence?: Lease) =>
      store.rollouts.start(
        { poolId: pool, fromHash: "h0", toHash: to, reason: "template changed", target: 2, remaining: 0, maxSurge: 2, haltAfter: 3, ...over },
        fence,
      );
    const progress = { remaining: 3, created: 1, failed: 0, failuresInARow: 0, inFlight: 1, claimable: 4 };

    it("starts once per change, only for the pool's current template, and supersedes the one that runs", async () => {
      const pool = await newPool("h1");
      assert.equal(await start(pool, "h2"), null, "the pool is not at h2");
      const a = await start(pool, "h1", { target: 5 });
      assert.ok(a?.started);
      assert.deepEqual([a.rollout.status, a.rollout.fromHash, a.rollout.toHash, a.rollout.target, a.rollout.retired], ["running", "h0", "h1", 5, 0]);
      const again = await start(pool, "h1");
      assert.deepEqual([again?.started, again?.rollout.id], [false, a.rollout.id], "the same change starts nothing new");

      await setHash(pool, "h2");
      const b = await start(pool, "h2", { fromHash: "h1", target: 9 });
      assert.ok(b?.started);
      assert.equal(b.rollout.target, 5, "a superseding rollout keeps the pool size of the one it supersedes");
      const [newest, old] = await store.rollouts.history(pool, 10);
      assert.deepEqual([newest?.id, old?.id, old?.status], [b.rollout.id, a.rollout.id, "superseded"]);
      assert.ok(old?.finishedAt);
      assert.deepEqual((await store.rollouts.latest(pool))?.id, b.rollout.id);
      assert.ok((await store.rollouts.latestPerPool()).some((r) => r.poolId === pool && r.id === b.rollout.id));
    });

    it("a pass's start, progress and finish are fenced on its lease term", async () => {
      const pool = await newPool("h1");
      const gone: Lease = { ...lease, term: lease.term + 1000 };
      assert.equal(await start(pool, "h1", {}, gone), null);
      const r = (await start(pool, "h1", {}, lease))!.rollout;
      assert.equal(await store.rollouts.recordProgress(r.id, progress, gone), null);
      const p = await store.rollouts.recordProgress(r.id, progress, lease);
      assert.deepEqual([p?.remaining, p?.created, p?.inFlight, p?.claimable, p?.minClaimable], [3, 1, 1, 4, 4]);
      const lower = await store.rollouts.recordProgress(r.id, { ...progress, claimable: 2 }, lease);
      const higher = await store.rollouts.recordProgress(r.id, { ...progress, claimable: 6 }, lease);
      assert.deepEqual([lower?.minClaimable, higher?.claimable, higher?.minClaimable], [2, 6, 2], "the fewest claimable seen is kept");
      assert.equal(await store.rollouts.finish(r.id, "complete", progress, null, gone), null);
      const done = await store.rollouts.finish(r.id, "complete", { ...progress, remaining: 0 }, null, lease);
      assert.deepEqual([done?.status, done?.remaining], ["complete", 0]);
      assert.ok(done?.finishedAt);
      assert.equal(await store.rollouts.recordProgress(r.id, progress, lease), null, "a finished rollout keeps its last progress");
    });

    it("pause and resume: paused ↔ running; a halted one resumed is a new rollout; nothing to resume once the template moved on", async () => {
      const pool = await newPool("h1");
      const r = (await start(pool, "h1"))!.rollout;
      const paused = await store.rollouts.pause(pool);
      assert.deepEqual([paused?.id, paused?.status], [r.id, "paused"]);
      assert.equal(await store.rollouts.pause(pool), null, "nothing running");
      assert.equal(await store.rollouts.finish(r.id, "halted", progress, "x", lease), null, "a paused rollout does not halt");
      const resumed = await store.rollouts.resume(pool, "resumed after a halt");
      assert.deepEqual([resumed?.id, resumed?.status], [r.id, "running"]);
      const halted = await store.rollouts.finish(r.id, "halted", { ...progress, failuresInARow: 3 }, "3 new instances in a row failed", lease);
      assert.deepEqual([halted?.status, halted?.haltReason], ["halted", "3 new instances in a row failed"]);
      assert.equal(await store.rollouts.pause(pool), null);
      await sleep(5);
      const retry = await store.rollouts.resume(pool, "resumed after a halt");
      assert.ok(retry && retry.id !== r.id);
      assert.deepEqual([retry.status, retry.reason, retry.toHash, retry.target, retry.failuresInARow], ["running", "resumed after a halt", "h1", 2, 0]);
      assert.ok(retry.countedSince.getTime() > r.countedSince.getTime(), "failures in a row are counted afresh");
      assert.equal((await store.rollouts.history(pool, 10)).find((x) => x.id === r.id)?.status, "halted", "the halted one stays in the history");
      await store.rollouts.finish(retry.id, "halted", progress, "again", lease);
      await setHash(pool, "h2");
      assert.equal(await store.rollouts.resume(pool, "x"), null, "the pool's template is not the halted rollout's any more");
    });

    it("at most one rollout of a pool acts at a time", async () => {
      const pool = await newPool("h1");
      await start(pool, "h1");
      await setHash(pool, "h2");
      await Promise.all([start(pool, "h2"), start(pool, "h2"), start(pool, "h2")]);
      const active = (await store.rollouts.history(pool, 10)).filter((r) => r.status === "running" || r.status === "paused");
      assert.equal(active.length, 1);
    });

    it("outcomes: the new template's instances since the start, when they became idle or why they died first", async () => {
      const pool = await newPool("h2");
      const before = await instance(pool, "h2");
      await sleep(5);
      const since = new Date((await store.getInstance(before))!.createdAt.getTime() + 1);
      const ok = await instance(pool, "h2", "idle");
      const crashed = await instance(pool, "h2", "starting");
      await store.transition({ id: crashed, from: "starting", to: "dead", actor: "reconciler", reason: "deploy CRASHED" });
      const killed = await instance(pool, "h2", "starting");
      await store.transition({ id: killed, from: "starting", to: "dead", actor: "operator", reason: "killed by an operator" });
      const idleThenDead = await instance(pool, "h2", "idle");
      await store.transition({ id: idleThenDead, from: "idle", to: "dead", actor: "reconciler", reason: "unhealthy: x" });
      const booting = await instance(pool, "h2", "starting");
      await instance(pool, "h1", "idle"); // another template
      const out = await store.rollouts.outcomes(pool, "h2", since);
      const by = new Map(out.map((o) => [o.instanceId, o]));
      assert.deepEqual([...by.keys()].sort(), [ok, crashed, killed, idleThenDead, booting].sort());
      assert.ok(by.get(ok)!.idleAt && by.get(ok)!.deadAt === null);
      assert.deepEqual([by.get(crashed)!.idleAt, by.get(crashed)!.deadReason], [null, "deploy CRASHED"]);
      assert.deepEqual([by.get(killed)!.deadAt, by.get(killed)!.deadReason], [null, null], "an operator's kill is not the template's failure");
      assert.ok(by.get(idleThenDead)!.idleAt!.getTime() <= by.get(idleThenDead)!.deadAt!.getTime());
      assert.deepEqual([by.get(booting)!.idleAt, by.get(booting)!.deadAt], [null, null]);
    });

    it("retire: an old idle instance goes dead with its event and the count; never a claimed, protected or current one, nor below the floor", async () => {
      const pool = await newPool("h2", 2);
      const r = (await start(pool, "h2"))!.rollout;
      const old1 = await instance(pool, "h1");
      const old2 = await instance(pool, "h1");
      const claimed = await instance(pool, "h1", "claimed");
      const prot = await instance(pool, "h1", "idle", true);
      const current = await instance(pool, "h2");
      const retire = (id: string, floor = 2, fence: Lease | undefined = lease) => store.rollouts.retire(r.id, id, floor, `replaced by rollout ${r.id}`, fence);
      // 3 claimable (old1, old2, current): one may go with a floor of 2.
      assert.equal(await retire(claimed), null, "a claim that took it first wins");
      assert.equal(await retire(prot), null, "protected");
      assert.equal(await retire(current), null, "of the current template");
      assert.equal(await retire(old1, 2, { ...lease, term: lease.term + 1 }), null, "the term is gone");
      const gone = await retire(old1);
      assert.deepEqual([gone?.id, gone?.status], [old1, "dead"]);
      const [ev] = await store.listEvents(old1, 1);
      assert.deepEqual([ev?.fromStatus, ev?.toStatus, ev?.actor, ev?.reason], ["idle", "dead", "reconciler", `replaced by rollout ${r.id}`]);
      assert.equal((await store.rollouts.latest(pool))?.retired, 1);
      assert.equal(await retire(old2), null, "2 claimable left: retiring one more would leave 1, under the floor of 2");
      assert.equal((await store.getInstance(old2))?.status, "idle");
      const sleeping = await instance(pool, "h1", "sleeping");
      assert.equal((await retire(sleeping))?.status, "dead", "a sleeping one is not claimable: the floor does not hold it");
      await store.rollouts.pause(pool);
      assert.equal(await retire(old2, 0), null, "a paused rollout retires nothing");
      assert.equal((await store.rollouts.latest(pool))?.retired, 2);
    });
  });
}

rollouts("PGlite (in-memory)", inMemoryPglite);
rollouts(postgresLabel, realPostgres);
