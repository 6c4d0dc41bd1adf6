/**
 * Pool history and sizing policies (issue 13) on both backends (in-memory PGlite and real
 * Postgres): replicas' counts add up in one minute, snapshots replace only when given, a bucket is
 * filed by the database's minute, arrivals over a window, retention, and a pool's sizing policy
 * stored and read back.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { inMemoryPglite, postgresLabel, realPostgres, type TestDatabase, storeForSuite, uniqueId } from "../../test/support/databases.ts";
import type { Store } from "./store.ts";
import { emptyCounts, LATENCY_BUCKETS, type HistoryWrite } from "../pool/history.ts";
import { poolSettings } from "../pool/template.ts";

const uid = uniqueId;

function write(poolId: string, over: Partial<HistoryWrite> = {}): HistoryWrite {
  return { ...emptyCounts(), poolId, ageMs: 0, snapshot: null, ...over };
}

function history(name: string, open: () => Promise<TestDatabase>) {
  describe(`Store pool history: ${name}`, () => {
    let store!: Store;
    storeForSuite(open, (s) => {
      store = s;
    });
    const newPool = async () => {
      const id = uid("p");
      await store.upsertPool({ id, minIdle: 0, maxTotal: 10 });
      return id;
    };

    it("adds replicas' counts in one minute instead of overwriting, element by element for histograms", async () => {
      const pool = await newPool();
      const hist = (i: number, n: number) => Object.assign(new Array<number>(LATENCY_BUCKETS).fill(0), { [i]: n });
      // Two replicas at once, then one more write: every count adds up.
      await Promise.all([
        store.addPoolHistory([write(pool, { claimsWarm: 2, claimsEmpty: 1, latencyHist: hist(1, 2), waitMsSum: 100, waitMsMax: 100, claimsWaited: 1 })]),
        store.addPoolHistory([write(pool, { claimsWarm: 3, latencyHist: hist(1, 1), refills: 1, refillMsSum: 4_000, refillMsMax: 4_000, idleSeconds: 30 })]),
      ]);
      await store.addPoolHistory([write(pool, { claimsWaited: 1, waitMsSum: 900, waitMsMax: 900, latencyHist: hist(5, 1), idleSeconds: 12.5 })]);
      const { rows } = await store.poolHistory(pool, 3_600_000);
      // A write can land just after a minute turns: allow for two buckets, and sum them.
      assert.ok(rows.length >= 1 && rows.length <= 2);
      const sum = (f: (r: (typeof rows)[number]) => number) => rows.reduce((n, r) => n + f(r), 0);
      assert.equal(
        sum((r) => r.claimsWarm),
        5,
      );
      assert.equal(
        sum((r) => r.claimsWaited),
        2,
      );
      assert.equal(
        sum((r) => r.claimsEmpty),
        1,
      );
      assert.equal(
        sum((r) => r.waitMsSum),
        1_000,
      );
      assert.equal(Math.max(...rows.map((r) => r.waitMsMax)), 900);
      assert.equal(
        sum((r) => r.refills),
        1,
      );
      assert.equal(
        sum((r) => r.idleSeconds),
        42.5,
      );
      const merged = new Array<number>(LATENCY_BUCKETS).fill(0);
      for (const r of rows) {
        for (const [i, n] of r.latencyHist.entries()) merged[i]! += n;
      }
      assert.deepEqual(merged, Object.assign(new Array<number>(LATENCY_BUCKETS).fill(0), { 1: 3, 5: 1 }));
    });

    it("replaces the snapshot only when a write carries one", async () => {
      const pool = await newPool();
      const snap = { idle: 4, starting: 1, claimed: 2, other: 0, target: 5, targetSummary: "target 5 idle: 1.0 claims/min × 5.0 min refill p95 × 1.0" };
      await store.addPoolHistory([write(pool, { snapshot: snap })]);
      await store.addPoolHistory([write(pool, { claimsWarm: 1 })]);
      let { rows } = await store.poolHistory(pool, 3_600_000);
      const withSnap = rows.filter((r) => r.idle !== null);
      assert.deepEqual(
        withSnap.map((r) => [r.idle, r.starting, r.claimed, r.other, r.target, r.targetSummary]),
        [[4, 1, 2, 0, 5, snap.targetSummary]],
      );
      await store.addPoolHistory([write(pool, { snapshot: { ...snap, idle: 7, target: 8 } })]);
      ({ rows } = await store.poolHistory(pool, 3_600_000));
      assert.equal(rows.at(-1)!.idle, 7);
      assert.equal(rows.at(-1)!.target, 8);
    });

    it("files a bucket under the database's minute the write is about, and counts arrivals over a window", async () => {
      const pool = await newPool();
      const other = await newPool();
      await store.addPoolHistory([write(pool, { ageMs: 10 * 60_000, claimsWarm: 4, claimsEmpty: 2, claimsFailed: 9 }), write(other, { claimsWarm: 50 })]);
      await store.addPoolHistory([write(pool, { ageMs: 2 * 60_000, claimsWaited: 3 })]);
      await store.addPoolHistory([write(pool, { ageMs: 40 * 60_000, claimsWarm: 100 })]);
      const { rows, now } = await store.poolHistory(pool, 3_600_000);
      assert.equal(rows.length, 3);
      const ages = rows.map((r) => Math.round((now.getTime() - r.minute.getTime()) / 60_000));
      // Minutes are truncated: each bucket starts within a minute of its age.
      assert.ok(ages[0]! >= 40 && ages[0]! <= 41, `ages ${ages}`);
      assert.ok(ages[1]! >= 10 && ages[1]! <= 11, `ages ${ages}`);
      assert.ok(ages[2]! >= 2 && ages[2]! <= 3, `ages ${ages}`);
      // A 15-minute window: the two recent buckets, failed claims not counted, the other pool not counted.
      const a = await store.claimArrivals(pool, 15 * 60_000);
      assert.equal(a.arrivals, 9);
      assert.ok(a.oldestMinute && now.getTime() - a.oldestMinute.getTime() >= 10 * 60_000);
      const none = await store.claimArrivals(await newPool(), 15 * 60_000);
      assert.deepEqual([none.arrivals, none.oldestMinute], [0, null]);
      // History since 20 minutes ago leaves out the old bucket.
      assert.equal((await store.poolHistory(pool, 20 * 60_000)).rows.length, 2);
    });

    it("prunes minutes older than the retention, in batches", async () => {
      const pool = await newPool();
      await store.addPoolHistory([write(pool, { ageMs: 3 * 86_400_000, claimsWarm: 1 })]);
      await store.addPoolHistory([write(pool, { ageMs: 2 * 86_400_000, claimsWarm: 1 })]);
      await store.addPoolHistory([write(pool, { claimsWarm: 1 })]);
      assert.equal(await store.prunePoolHistory(86_400_000, 1), 1);
      assert.ok((await store.prunePoolHistory(86_400_000, 100)) >= 1);
      const { rows } = await store.poolHistory(pool, 7 * 86_400_000);
      assert.equal(rows.length, 1);
    });

    it("retires surplus idle instances oldest first, never below keepIdle, never a protected one, only under the lease", async () => {
      const pool = await newPool();
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const id = uid("i");
        await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `t-${id}`, reason: "test" });
        await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "up" });
        ids.push(id);
      }
      await store.setProtected(ids[0]!, true);
      const lease = (await store.acquireLease("reconciler", "me", 60_000))!;
      assert.equal(await store.retireSurplusIdle(pool, 2, "scaled down", lease), ids[1]);
      assert.equal(await store.retireSurplusIdle(pool, 2, "scaled down", lease), ids[2]);
      assert.equal(await store.retireSurplusIdle(pool, 2, "scaled down", lease), null, "two idle left: kept");
      assert.equal(await store.retireSurplusIdle(pool, 0, "x", { ...lease, term: lease.term + 100 }), null, "a stale term retires nothing");
      assert.equal(await store.retireSurplusIdle(pool, 0, "scaled down", lease), ids[3], "the protected one is never picked");
      assert.equal(await store.retireSurplusIdle(pool, 0, "scaled down", lease), null);
      assert.equal((await store.getInstance(ids[0]!))?.status, "idle");
      const [ev] = await store.listEvents(ids[1]!, 1);
      assert.deepEqual([ev?.fromStatus, ev?.toStatus, ev?.reason], ["idle", "dead", "scaled down"]);
    });

    it("stores a pool's sizing policy and reads it back; fixed by default", async () => {
      const id = uid("p");
      const sizing = {
        mode: "demand" as const,
        floor: 2,
        ceiling: 12,
        safetyFactor: 1.5,
        windowMinutes: 10,
        cooldownMinutes: 30,
        timeZone: "Europe/Berlin",
        schedule: [{ days: ["mon" as const, "fri" as const], from: "08:00", to: "10:00", floor: 6 }],
      };
      const s = poolSettings({ id, sizing });
      const saved = await store.savePool({ ...s, templateHash: "h", previousTemplate: null });
      assert.deepEqual(saved?.sizing, sizing);
      assert.deepEqual((await store.getPool(id))?.sizing, sizing);
      const back = await store.savePool({ ...s, sizing: { mode: "fixed" }, templateHash: "h", previousTemplate: null });
      assert.deepEqual(back?.sizing, { mode: "fixed" });
      assert.deepEqual((await store.getPool(await newPool()))?.sizing, { mode: "fixed" });
    });
  });
}

history("PGlite (in-memory)", inMemoryPglite);
history(postgresLabel, realPostgres);
