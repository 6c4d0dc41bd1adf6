/**
 * The queue of waiting claims (issue 13, migration 0013) on both backends: tickets in join order,
 * the bound, the pick that respects the queue (no overtaking, no jumping), the serve fenced on the
 * waiter's own live row, renewal and expiry by the database clock, and the hint a leaving waiter
 * sends. Expiry is tested without sleeping: a negative TTL makes a row that has already lapsed.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { inMemoryPglite, postgresLabel, realPostgres, type TestDatabase, storeForSuite, uniqueId } from "../../test/support/databases.ts";
import type { ClaimPick, PoolHint, Store } from "./store.ts";

const uid = uniqueId;

function queueSuite(name: string, open: () => Promise<TestDatabase>) {
  describe(`Claim queue: ${name}`, () => {
    let store!: Store;
    storeForSuite(open, (s) => {
      store = s;
    });

    const newPool = async () => {
      const id = uid("p");
      await store.upsertPool({ id, minIdle: 0, maxTotal: 20 });
      return id;
    };
    const idleInstance = async (pool: string) => {
      const id = uid("i");
      await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "test" });
      return (await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "healthy" }))!;
    };
    const pick = (pools: string[], over: Partial<ClaimPick> = {}): ClaimPick => ({
      poolIds: pools,
      owner: "replica-a",
      attempt: uid("att"),
      attemptTtlMs: 60_000,
      claimKey: null,
      source: null,
      agentName: "Ada",
      instructions: "x",
      joinUrl: null,
      profileImage: null,
      metadata: null,
      exclude: [],
      ...over,
    });
    const join = async (pools: string[], over: { ttlMs?: number; maxLength?: number } = {}) => {
      const r = await store.joinClaimQueue({ poolIds: pools, owner: "replica-a", ttlMs: over.ttlMs ?? 60_000, maxLength: over.maxLength ?? 10 });
      assert.equal(r.kind, "joined", `join ${JSON.stringify(r)}`);
      return (r as { ticket: number }).ticket;
    };
    const lengthOf = async (pool: string) => (await store.claimQueueLengths()).find((l) => l.poolId === pool)?.waiting ?? 0;

    it("tickets grow in join order; a full queue refuses and writes nothing", async () => {
      const pool = await newPool();
      const t1 = await join([pool], { maxLength: 2 });
      const t2 = await join([pool], { maxLength: 2 });
      assert.ok(t2 > t1, `${t2} > ${t1}`);
      assert.equal(await lengthOf(pool), 2);
      assert.deepEqual(await store.joinClaimQueue({ poolIds: [pool], owner: "x", ttlMs: 60_000, maxLength: 2 }), { kind: "full", poolId: pool, waiting: 2 });
      assert.equal(await lengthOf(pool), 2);
      // Another pool's queue is its own.
      const other = await newPool();
      await join([other], { maxLength: 2 });
      assert.equal(await lengthOf(other), 1);
      assert.equal(await store.leaveClaimQueue(t1), true);
      assert.equal(await store.leaveClaimQueue(t1), false, "a second leave of the same ticket changes nothing");
      assert.equal(await lengthOf(pool), 1);
      assert.equal(await store.leaveClaimQueue(t2), true);
    });

    it("no claim overtakes a live waiter: without a ticket or with a later one the pick takes nothing; the head's turn takes it and leaves every queue", async () => {
      const pool = await newPool();
      const t1 = await join([pool]);
      const t2 = await join([pool]);
      const inst = await idleInstance(pool);
      assert.deepEqual(await store.claimIdle(pick([pool])), { kind: "empty" }, "a claim that does not wait does not jump the queue");
      assert.deepEqual(
        await store.claimIdle(pick([pool], { queue: { ticket: t2, serve: true } })),
        { kind: "empty" },
        "the second waiter does not overtake the first",
      );
      assert.equal((await store.getInstance(inst.id))?.status, "idle");
      const served = await store.claimIdle(pick([pool], { queue: { ticket: t1, serve: true } }));
      assert.equal(served.kind, "picked");
      assert.equal(await lengthOf(pool), 1, "the served waiter left the queue in the same statement");
      assert.equal(await store.leaveClaimQueue(t1), false);
      // Nothing idle now: the next waiter's turn finds nothing, and keeps its place.
      assert.deepEqual(await store.claimIdle(pick([pool], { queue: { ticket: t2, serve: true } })), { kind: "empty" });
      assert.equal(await lengthOf(pool), 1);
      await idleInstance(pool);
      assert.equal((await store.claimIdle(pick([pool], { queue: { ticket: t2, serve: true } }))).kind, "picked");
      assert.equal(await lengthOf(pool), 0);
      // An empty queue is no obstacle.
      await idleInstance(pool);
      assert.equal((await store.claimIdle(pick([pool]))).kind, "picked");
    });

    it("a claim served earlier keeps its place on a retry (serve: false): waiters behind it do not block it, earlier ones do", async () => {
      const pool = await newPool();
      const t1 = await join([pool]);
      const t2 = await join([pool]);
      await idleInstance(pool);
      assert.equal((await store.claimIdle(pick([pool], { queue: { ticket: t1, serve: true } }))).kind, "picked");
      await idleInstance(pool);
      // t1's provision failed: its retry is not behind t2.
      assert.equal((await store.claimIdle(pick([pool], { queue: { ticket: t1, serve: false } }))).kind, "picked");
      await idleInstance(pool);
      const t3 = await join([pool]);
      assert.deepEqual(await store.claimIdle(pick([pool], { queue: { ticket: t3, serve: false } })), { kind: "empty" }, "t2 is still ahead of t3");
      await store.leaveClaimQueue(t2);
      await store.leaveClaimQueue(t3);
    });

    it("the serve is fenced on the waiter's own live row: a lapsed or removed waiter takes nothing", async () => {
      const pool = await newPool();
      const lapsed = await join([pool], { ttlMs: -1_000 });
      const inst = await idleInstance(pool);
      assert.deepEqual(await store.claimIdle(pick([pool], { queue: { ticket: lapsed, serve: true } })), { kind: "empty" });
      const left = await join([pool]);
      assert.equal(await store.leaveClaimQueue(left), true);
      assert.deepEqual(await store.claimIdle(pick([pool], { queue: { ticket: left, serve: true } })), { kind: "empty" });
      assert.equal((await store.getInstance(inst.id))?.status, "idle");
      // …and a lapsed waiter blocks no one: a claim without a ticket takes the instance.
      assert.equal((await store.claimIdle(pick([pool]))).kind, "picked");
    });

    it("liveness is the database clock: renewal keeps live rows only, expired rows neither count nor block and go at the next join", async () => {
      const pool = await newPool();
      const live = await join([pool]);
      const dead = await join([pool], { ttlMs: -1_000 });
      assert.equal(await lengthOf(pool), 1, "an expired row does not count");
      assert.deepEqual(await store.renewClaimWaiters([live, dead], 60_000), [live], "a lapsed place is not revived");
      assert.deepEqual(await store.renewClaimWaiters([], 60_000), []);
      // The next join of the pool deletes the expired row, and the bound counts live rows only.
      const next = await join([pool], { maxLength: 2 });
      assert.equal(await store.leaveClaimQueue(dead), false, "the expired row was deleted by the join");
      assert.equal(await lengthOf(pool), 2);
      await store.leaveClaimQueue(live);
      await store.leaveClaimQueue(next);
    });

    it("a claim of several pools waits in each with one ticket; an instance of either goes to it first", async () => {
      const a = await newPool();
      const b = await newPool();
      const both = await join([a, b]);
      const onlyB = await join([b]);
      assert.equal(await lengthOf(a), 1);
      assert.equal(await lengthOf(b), 2);
      await idleInstance(b);
      assert.deepEqual(await store.claimIdle(pick([b], { queue: { ticket: onlyB, serve: true } })), { kind: "empty" });
      const served = await store.claimIdle(pick([a, b], { queue: { ticket: both, serve: true } }));
      assert.equal(served.kind, "picked");
      assert.equal(await lengthOf(a), 0, "served: gone from every pool's queue");
      assert.equal(await lengthOf(b), 1);
      // A full queue of one of the pools refuses the whole join.
      assert.deepEqual(await store.joinClaimQueue({ poolIds: [a, b], owner: "x", ttlMs: 60_000, maxLength: 1 }), { kind: "full", poolId: b, waiting: 1 });
      assert.equal(await lengthOf(a), 0);
      await store.leaveClaimQueue(onlyB);
    });

    it("a waiter that leaves sends the pool's change hint (it may unblock the next one)", async () => {
      const pool = await newPool();
      const ticket = await join([pool]);
      const seen: PoolHint[] = [];
      let got: () => void = () => undefined;
      const arrived = new Promise<void>((r) => (got = r));
      const off = await store.subscribeHints((h) => {
        if (h.pool !== pool) return;
        seen.push(h);
        got();
      });
      try {
        await store.leaveClaimQueue(ticket);
        await arrived;
        assert.deepEqual(seen[0], { pool, kind: "changed" });
      } finally {
        await off();
      }
    });
  });
}

queueSuite("PGlite (in-memory)", inMemoryPglite);
queueSuite(postgresLabel, realPostgres);
