/**
 * The store's per-instance resource operations (issue 12) on both backends (in-memory PGlite and
 * real Postgres): intent first and only for a starting instance under the lease, one resource of a
 * kind per instance, answers recorded once, releases, what the reconciler collects, usage, totals,
 * retention, and instance events that change no status.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { inMemoryPglite, postgresLabel, realPostgres, type TestDatabase, storeForSuite, uniqueId } from "../../test/support/databases.ts";
import type { Lease, Store } from "./store.ts";

const uid = uniqueId;

function resources(name: string, open: () => Promise<TestDatabase>) {
  describe(`Store resources: ${name}`, () => {
    let store!: Store;
    storeForSuite(open, (s) => {
      store = s;
    });

    const newPool = async () => {
      const id = uid("p");
      await store.upsertPool({ id, minIdle: 0, maxTotal: 10 });
      return id;
    };
    const newInstance = async (pool: string) => {
      const id = uid("i");
      await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "test" });
      return id;
    };
    const intent = (pool: string, instanceId: string, kind = "openrouter", fence?: Lease) =>
      store.insertResourceIntent({ id: uid("r"), instanceId, poolId: pool, kind, name: `ap:own01:${pool}:test:${instanceId}` }, fence);
    const kill = (id: string) => store.transition({ id, from: ["starting", "idle"], to: "dead", actor: "operator", reason: "killed" });

    it("records intent only for a starting instance, once per kind, and only under a lease term that holds", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const r = await intent(pool, a);
      assert.ok(r);
      assert.deepEqual([r.state, r.ref, r.instanceId, r.poolId, r.kind], ["creating", null, a, pool, "openrouter"]);
      // A second resource of the same kind for the same instance is refused; another kind is fine.
      assert.equal(await intent(pool, a), null);
      assert.ok(await intent(pool, a, "memory"));
      // An instance that is not starting (here: idle, then dead) gets nothing.
      const b = await newInstance(pool);
      await store.transition({ id: b, from: "starting", to: "idle", actor: "reconciler", reason: "up" });
      assert.equal(await intent(pool, b), null);
      const c = await newInstance(pool);
      await kill(c);
      assert.equal(await intent(pool, c), null);
      // Unknown instance, or the wrong pool.
      assert.equal(await intent(pool, "i-nobody"), null);
      const d = await newInstance(pool);
      assert.equal(await intent(await newPool(), d), null);
      // Fenced on the lease: a lost term writes nothing, the current one does.
      const name = uid("reconciler");
      const lost = (await store.acquireLease(name, "old", 60_000))!;
      await store.releaseLease(lost);
      const current = (await store.acquireLease(name, "new", 60_000))!;
      assert.equal(await intent(pool, d, "openrouter", lost), null);
      assert.ok(await intent(pool, d, "openrouter", current));
      // On demand: the statuses the caller allows (never a dead row, whatever it asks).
      const nameOf = (i: string) => `ap:own01:${pool}:test:${i}`;
      assert.ok(
        await store.insertResourceIntent({ id: uid("r"), instanceId: b, poolId: pool, kind: "inbox", name: nameOf(b) }, undefined, ["idle", "claimed"]),
      );
      assert.equal(
        await store.insertResourceIntent({ id: uid("r"), instanceId: c, poolId: pool, kind: "inbox", name: nameOf(c) }, undefined, ["dead", "idle"]),
        null,
      );
    });

    it("records a create's answer once; a released row keeps its state but learns its ref", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const r = (await intent(pool, a))!;
      const done = await store.recordResourceCreated(r.id, "hash-a", 20, 0);
      assert.deepEqual([done?.state, done?.ref, done?.limit, done?.usage], ["ready", "hash-a", 20, 0]);
      assert.ok(done?.usageAt);
      // A second answer for the same row is refused: the caller deletes what it made.
      assert.equal(await store.recordResourceCreated(r.id, "hash-other", 20, 0), null);

      const b = await newInstance(pool);
      const rb = (await intent(pool, b))!;
      const released = await store.releaseResources(b);
      assert.deepEqual(
        released.map((x) => [x.id, x.state]),
        [[rb.id, "deleting"]],
      );
      const late = await store.recordResourceCreated(rb.id, "hash-b", 20, null);
      assert.deepEqual([late?.state, late?.ref, late?.usage], ["deleting", "hash-b", null]);
      // Once deleted, nothing is recorded any more.
      assert.equal(await store.markResourceDeleted(rb.id), true);
      assert.equal(await store.markResourceDeleted(rb.id), false);
      const c = await newInstance(pool);
      const rc = (await intent(pool, c))!;
      await store.markResourceDeleted(rc.id);
      assert.equal(await store.recordResourceCreated(rc.id, "hash-c", 20, 0), null);
    });

    it("a failed create goes to deleting with its error; only a creating row fails", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const r = (await intent(pool, a))!;
      assert.equal(await store.markResourceFailed(r.id, "openrouter create: 500"), true);
      assert.equal(await store.markResourceFailed(r.id, "again"), false);
      const [row] = await store.listResources({ instanceId: a });
      assert.deepEqual([row?.state, row?.error], ["deleting", "openrouter create: 500"]);
    });

    it("releaseResources returns every resource of the instance not yet deleted, already deleting ones included", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const r1 = (await intent(pool, a, "k1"))!;
      const r2 = (await intent(pool, a, "k2"))!;
      const r3 = (await intent(pool, a, "k3"))!;
      await store.recordResourceCreated(r1.id, "h1", 1, 0);
      await store.markResourceFailed(r2.id, "boom");
      await store.markResourceDeleted(r3.id);
      const released = await store.releaseResources(a);
      assert.deepEqual(
        released.map((x) => [x.id, x.state]).sort(),
        [
          [r1.id, "deleting"],
          [r2.id, "deleting"],
        ].sort(),
      );
      assert.deepEqual((await store.releaseResources(a)).map((x) => x.id).sort(), [r1.id, r2.id].sort());
    });

    it("resourcesToRelease: rows with a ref that are deleting or whose instance is not live; never a live instance's", async () => {
      const pool = await newPool();
      const live = await newInstance(pool);
      const dead = await newInstance(pool);
      const released = await newInstance(pool);
      const noRef = await newInstance(pool);
      const rl = (await intent(pool, live))!;
      const rd = (await intent(pool, dead))!;
      const rr = (await intent(pool, released))!;
      await intent(pool, noRef);
      for (const [r, h] of [
        [rl, "hl"],
        [rd, "hd"],
        [rr, "hr"],
      ] as const)
        await store.recordResourceCreated(r.id, h, 1, 0);
      await kill(dead);
      await kill(noRef);
      await store.releaseResources(released);
      const ids = (await store.resourcesToRelease(100)).map((r) => r.id);
      assert.ok(ids.includes(rd.id), "a dead instance's resource");
      assert.ok(ids.includes(rr.id), "a released resource");
      assert.ok(!ids.includes(rl.id), "never a live instance's resource");
      assert.equal((await store.resourcesToRelease(100)).filter((r) => r.ref === null).length, 0, "rows without a ref are resolved by listing");
      // A deleted instance row counts as not live too.
      const gone = await newInstance(pool);
      const rg = (await intent(pool, gone))!;
      await store.recordResourceCreated(rg.id, "hg", 1, 0);
      await kill(gone);
      await store.markDeleted(gone);
      assert.ok((await store.resourcesToRelease(100)).some((r) => r.id === rg.id));
      assert.equal((await store.resourcesToRelease(1)).length, 1, "the limit holds");
    });

    it("strandedResources: rows without a ref whose instance is not live (or deleting), older than the grace by the database clock", async () => {
      const pool = await newPool();
      const kind = uid("k");
      const dead = await newInstance(pool);
      const live = await newInstance(pool);
      const failedLive = await newInstance(pool);
      const rd = (await intent(pool, dead, kind))!;
      await intent(pool, live, kind);
      const rf = (await intent(pool, failedLive, kind))!;
      await store.markResourceFailed(rf.id, "boom");
      await kill(dead);
      assert.deepEqual(await store.strandedResources(kind, 60_000, 10), [], "younger than the grace");
      await sleep(30);
      const ids = (await store.strandedResources(kind, 10, 10)).map((r) => r.id).sort();
      assert.deepEqual(ids, [rd.id, rf.id].sort());
      assert.deepEqual(await store.strandedResources("another-kind", 10, 10), []);
    });

    it("resourceOwnership: liveness of each instance asked about and its resources of the kind", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const b = await newInstance(pool);
      const ra = (await intent(pool, a))!;
      await store.recordResourceCreated(ra.id, "ha", 5, 1);
      await intent(pool, a, "other");
      await kill(b);
      const owners = await store.resourceOwnership("openrouter", [a, b, "i-missing", a]);
      const by = new Map(owners.map((o) => [o.instanceId, o]));
      assert.equal(owners.length, 3);
      assert.equal(by.get(a)?.instanceLive, true);
      assert.deepEqual(
        by.get(a)?.resources.map((r) => r.ref),
        ["ha"],
      );
      assert.equal(by.get(b)?.instanceLive, false);
      assert.equal(by.get("i-missing")?.instanceLive, false);
      assert.deepEqual(by.get("i-missing")?.resources, []);
      assert.deepEqual(await store.resourceOwnership("openrouter", []), []);
    });

    it("records usage in one statement, sums it per pool, kind and state, and prunes deleted rows", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const b = await newInstance(pool);
      const ra = (await intent(pool, a))!;
      const rb = (await intent(pool, b))!;
      await store.recordResourceCreated(ra.id, "ha", 20, 0);
      await store.recordResourceCreated(rb.id, "hb", 20, 0);
      assert.equal(
        await store.recordResourceUsage([
          { id: ra.id, limit: 40, usage: 1.25 },
          { id: rb.id, limit: 20, usage: 3.5 },
          { id: "r-none", limit: 1, usage: 1 },
        ]),
        2,
      );
      assert.equal(await store.recordResourceUsage([]), 0);
      const [row] = await store.listResources({ instanceId: a });
      assert.deepEqual([row?.limit, row?.usage], [40, 1.25]);
      const totals = (await store.resourceTotals()).filter((t) => t.poolId === pool);
      assert.deepEqual(totals, [{ poolId: pool, kind: "openrouter", state: "ready", count: 2, usage: 4.75, limit: 60 }]);
      assert.deepEqual(
        (await store.listResources({ poolId: pool })).map((r) => r.id),
        [ra.id, rb.id],
      );

      await store.markResourceDeleted(ra.id);
      assert.deepEqual(
        (await store.listResources({ poolId: pool })).map((r) => r.id),
        [rb.id],
        "deleted rows are not listed",
      );
      assert.equal(await store.pruneDeletedResources(60_000, 100), 0, "too recent");
      await sleep(30);
      assert.ok((await store.pruneDeletedResources(10, 100)) >= 1);
      assert.equal(await store.recordResourceCreated(ra.id, "x", 1, 1), null, "the pruned row is gone");
    });

    it("recordInstanceEvent logs an event that changes no status, on a live row only", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      assert.equal(await store.recordInstanceEvent(a, "instance", "asked for its own info"), true);
      const [ev] = await store.listEvents(a, 1);
      assert.deepEqual([ev?.fromStatus, ev?.toStatus, ev?.actor, ev?.reason], ["starting", "starting", "instance", "asked for its own info"]);
      await kill(a);
      assert.equal(await store.recordInstanceEvent(a, "instance", "again"), false);
      assert.equal(await store.recordInstanceEvent("i-missing", "instance", "x"), false);
    });
  });
}

resources("PGlite (in-memory)", inMemoryPglite);
resources(postgresLabel, realPostgres);
