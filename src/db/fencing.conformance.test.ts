/**
 * Fencing, ownership, shared rate limits, retention and hints: the store operations issue 8 added,
 * on both backends (in-memory PGlite and real Postgres).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { inMemoryPglite, postgresLabel, realPostgres, type TestDatabase } from "../../test/support/databases.ts";
import { waitFor } from "../../test/support/process.ts";
import type { Lease, ObservationChange, PoolHint, Store } from "./store.ts";

let seq = 0;
const uid = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(seq++).toString(36)}`;

function observation(id: string, expectedStatus: ObservationChange["expectedStatus"], status: ObservationChange["status"]): ObservationChange {
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
  };
}

function fencing(name: string, open: () => Promise<TestDatabase>, opts: { multiProcess: boolean }) {
  describe(`Store fencing: ${name}`, () => {
    let db: TestDatabase;
    let store: Store;
    before(async () => {
      db = await open();
      store = await db.open();
    });
    after(async () => {
      await store?.close();
      await db?.stop();
    });

    const newPool = async () => {
      const id = uid("p");
      await store.upsertPool({ id, minIdle: 0, maxTotal: 10 });
      return id;
    };
    const newInstance = (pool: string) => {
      const id = uid("i");
      return store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "test" });
    };
    /** A lease taken and then lost: another holder took it over in a newer term. */
    const lostLease = async (): Promise<{ lost: Lease; current: Lease }> => {
      const name = uid("reconciler");
      const lost = (await store.acquireLease(name, "old", 60_000))!;
      await store.releaseLease(lost);
      const current = (await store.acquireLease(name, "new", 60_000))!;
      return { lost, current };
    };

    it("every write fenced on a lease term changes nothing once the term is lost, and works under the current one", async () => {
      const pool = await newPool();
      const { lost, current } = await lostLease();
      const a = await newInstance(pool);
      // applyObservations
      const refused = await store.applyObservations([observation(a.id, "starting", "idle")], lost);
      assert.deepEqual(refused, { applied: [], skipped: [a.id] });
      assert.equal((await store.getInstance(a.id))?.status, "starting");
      // transition
      assert.equal(await store.transition({ id: a.id, from: "starting", to: "dead", actor: "reconciler", reason: "r", fence: { lease: lost } }), null);
      // setProviderRef
      assert.equal(await store.setProviderRef(a.id, "ref-x", "http://x", "SUCCESS", lost), false);
      assert.equal((await store.getInstance(a.id))?.providerRef, null);
      // insertInstanceWithin
      assert.equal(
        await store.insertInstanceWithin({ id: uid("i"), poolId: pool, provider: "memory", name: "n", gatewayToken: "t", reason: "r" }, { maxLive: 10 }, lost),
        null,
      );
      // markDeleted (on a dead row)
      assert.ok(await store.transition({ id: a.id, from: "starting", to: "dead", actor: "reconciler", reason: "r", fence: { lease: current } }));
      assert.equal(await store.markDeleted(a.id, lost), false);
      assert.equal((await store.getInstance(a.id))?.deletedAt, null);
      assert.equal(await store.markDeleted(a.id, current), true);
      // and the current term writes
      const b = await newInstance(pool);
      assert.deepEqual((await store.applyObservations([observation(b.id, "starting", "idle")], current)).applied, [b.id]);
      assert.equal(await store.setProviderRef(b.id, "ref-b", null, null, current), true);
      assert.ok(
        await store.insertInstanceWithin(
          { id: uid("i"), poolId: pool, provider: "memory", name: "n", gatewayToken: "t", reason: "r" },
          { maxLive: 10 },
          current,
        ),
      );
    });

    it("an expired lease fences like a lost one (database clock)", async () => {
      const pool = await newPool();
      const name = uid("reconciler");
      const lease = (await store.acquireLease(name, "me", 80))!;
      const a = await newInstance(pool);
      await sleep(150);
      assert.deepEqual((await store.applyObservations([observation(a.id, "starting", "idle")], lease)).skipped, [a.id]);
      assert.equal(await store.renewLease(lease, 60_000), false);
    });

    it("a transition fenced on a claim attempt applies only while the row carries that attempt", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      await store.transition({ id: a.id, from: "starting", to: "idle", actor: "reconciler", reason: "r" });
      const pick = await store.claimIdle({
        poolIds: [pool],
        owner: "o",
        attempt: "att-1",
        attemptTtlMs: 60_000,
        claimKey: "key-1",
        source: "landing",
        agentName: "Ada",
        instructions: "x",
        joinUrl: null,
        profileImage: null,
        metadata: null,
        exclude: [],
      });
      assert.equal(pick.kind, "picked");
      const row = pick.kind === "picked" ? pick.instance : null;
      assert.deepEqual([row?.claimAttempt, row?.claimKey, row?.claimSource], ["att-1", "key-1", "landing"]);
      assert.ok(row?.claimDeadline && row.claimDeadline.getTime() > Date.now() + 30_000, "deadline from the database clock, a minute ahead");
      assert.equal(
        await store.transition({ id: a.id, from: "claiming", to: "claimed", actor: "claim", reason: "r", fence: { claimAttempt: "att-other" } }),
        null,
      );
      assert.equal(await store.transition({ id: a.id, from: "claiming", to: "claimed", actor: "claim", reason: "r", fence: { claimAttempt: null } }), null);
      assert.equal(
        (await store.transition({ id: a.id, from: "claiming", to: "claimed", actor: "claim", reason: "r", fence: { claimAttempt: "att-1" } }))?.status,
        "claimed",
      );
    });

    it("staleClaims: only rows past their deadline plus the margin, by the database clock", async () => {
      const pool = await newPool();
      const ids: string[] = [];
      for (const ttl of [1, 60_000]) {
        const a = await newInstance(pool);
        await store.transition({ id: a.id, from: "starting", to: "idle", actor: "reconciler", reason: "r" });
        await store.claimIdle({
          poolIds: [pool],
          owner: "o",
          attempt: `att-${ttl}`,
          attemptTtlMs: ttl,
          claimKey: null,
          source: null,
          agentName: "A",
          instructions: "x",
          joinUrl: null,
          profileImage: null,
          metadata: null,
          exclude: [],
        });
        ids.push(a.id);
      }
      await sleep(30);
      assert.deepEqual(
        (await store.staleClaims(pool, 0, 10)).map((r) => r.id),
        [ids[0]],
      );
      assert.deepEqual(
        (await store.staleClaims(pool, 60_000, 10)).map((r) => r.id),
        [],
        "within the margin",
      );
    });

    it("ensureOwnerId: the first candidate is kept for good", async () => {
      const first = await store.ensureOwnerId("abc12");
      assert.match(first, /^[a-z0-9]{5}$/);
      assert.equal(await store.ensureOwnerId("zzz99"), first);
    });

    it("occupiedSlots and rowForResource", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      await store.setProviderRef(a.id, `ref-${a.id}`, null, null);
      assert.equal(await store.occupiedSlots(pool), 1);
      assert.deepEqual(await store.rowForResource(`ref-${a.id}`, null), { id: a.id, status: "starting" });
      assert.deepEqual(await store.rowForResource("nope", a.id), { id: a.id, status: "starting" }, "by instance id too");
      assert.equal(await store.rowForResource("nope", "no-such-id"), null);
      // A crashed agent whose resource is gone keeps its row, but no slot.
      const gone: ObservationChange = { ...observation(a.id, "starting", "starting"), resourceGone: true };
      await store.applyObservations([gone]);
      assert.ok((await store.getInstance(a.id))?.resourceGoneAt instanceof Date);
      assert.equal(await store.occupiedSlots(pool), 0);
    });

    it("rate limits: a fixed window counted across calls, reset after it ends, cleared on demand", async () => {
      const key = uid("rl");
      assert.equal((await store.hitRateLimit(key, 150)).hits, 1);
      assert.equal((await store.hitRateLimit(key, 150)).hits, 2);
      const peek = await store.peekRateLimit(key);
      assert.equal(peek?.hits, 2);
      assert.ok(peek!.resetAt.getTime() > Date.now() - 1_000);
      await sleep(200);
      assert.equal(await store.peekRateLimit(key), null, "ended");
      assert.equal((await store.hitRateLimit(key, 150)).hits, 1, "a new window");
      await store.clearRateLimit(key);
      assert.equal(await store.peekRateLimit(key), null);
      await store.hitRateLimit(uid("rl"), 1);
      await sleep(10);
      assert.ok((await store.pruneRateLimits(1000)) >= 1, "ended windows are pruned");
    });

    it("retention prunes old events, finished claim records and long-deleted rows, in batches; a live agent's record stays", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      await store.transition({ id: a.id, from: "starting", to: "dead", actor: "reconciler", reason: "r" });
      await store.markDeleted(a.id);
      const b = await newInstance(pool);
      await store.transition({ id: b.id, from: "starting", to: "idle", actor: "reconciler", reason: "r" });
      await store.beginIdempotentClaim({ poolId: pool, key: "live", owner: "o", attempt: "x", deadlineMs: 60_000, takeoverMarginMs: 0 });
      await store.finishIdempotentClaim(pool, "live", "x", b.id, { instanceId: b.id });
      await store.beginIdempotentClaim({ poolId: pool, key: "gone", owner: "o", attempt: "y", deadlineMs: 60_000, takeoverMarginMs: 0 });
      await store.finishIdempotentClaim(pool, "gone", "y", a.id, { instanceId: a.id });
      await sleep(20);
      assert.equal(await store.pruneEvents(60_000, 100), 0, "nothing older than a minute");
      assert.equal(await store.pruneClaimRecords(10, 100), 1, "the dead agent's record goes, the live one's stays");
      assert.equal(await store.pruneDeletedInstances(10, 100), 0, "still has events");
      // Other tests share this database: prune until nothing old is left, a batch at a time.
      assert.equal(await store.pruneEvents(10, 1), 1, "a batch of one deletes one");
      while ((await store.pruneEvents(10, 50)) > 0);
      assert.deepEqual(await store.listEvents(a.id), []);
      assert.deepEqual(await store.listEvents(b.id), [], "an old event goes even when its instance lives");
      while ((await store.pruneDeletedInstances(10, 50)) > 0);
      assert.equal(await store.getInstance(a.id), null, "the deleted row, once nothing refers to it");
      assert.ok(await store.getInstance(b.id));
      assert.deepEqual(
        (await store.beginIdempotentClaim({ poolId: pool, key: "live", owner: "o", attempt: "z", deadlineMs: 1, takeoverMarginMs: 0 })).state,
        "succeeded",
      );
    });

    it("hints reach subscribers of the same store", async () => {
      const got: PoolHint[] = [];
      const off = await store.subscribeHints((h) => got.push(h));
      await store.publishHint({ pool: "p", kind: "claimed", instanceId: "i-1" });
      await waitFor("the hint", async () => got.length > 0, 5_000, 10);
      assert.deepEqual(got[0], { pool: "p", kind: "claimed", instanceId: "i-1" });
      await off();
    });

    if (opts.multiProcess) {
      it("hints cross replicas (NOTIFY): a hint published on one store reaches another's subscriber", async () => {
        const other = await db.open();
        try {
          const got: PoolHint[] = [];
          await other.subscribeHints((h) => got.push(h));
          // The LISTEN connection may still be starting: publish until one arrives.
          await waitFor(
            "a hint from the other replica",
            async () => {
              await store.publishHint({ pool: "p", kind: "bound", instanceId: "i-2" });
              return got.length > 0;
            },
            10_000,
            100,
          );
          assert.deepEqual(got[0], { pool: "p", kind: "bound", instanceId: "i-2" });
        } finally {
          await other.close();
        }
      });

      it("ensureOwnerId: replicas starting at once agree on one owner id", async () => {
        const fresh = await open();
        try {
          const stores = await Promise.all([fresh.open(), fresh.open(), fresh.open()]);
          const ids = await Promise.all(stores.map((s, i) => s.ensureOwnerId(`cand${i}`)));
          assert.equal(new Set(ids).size, 1);
          await Promise.all(stores.map((s) => s.close()));
        } finally {
          await fresh.stop();
        }
      });

      it("event ids are bigint end to end: past 2^31 they are read, compared and paged exactly", async () => {
        const pool = await newPool();
        await db.withSession((s) => s.query("SELECT setval('instance_events_id_seq', 3000000000)"));
        const a = await newInstance(pool);
        const last = await store.lastPoolEventId(pool);
        assert.ok(last > 2 ** 31, `last id ${last}`);
        await store.transition({ id: a.id, from: "starting", to: "idle", actor: "reconciler", reason: "r" });
        const since = await store.listPoolEventsSince(pool, last);
        assert.equal(since.length, 1);
        assert.equal(since[0]!.id, last + 1);
        assert.equal(await store.lastPoolEventId(pool), last + 1);
      });

      it("a lease fence orders writes against a takeover: with two stores racing, the old term never writes after the new term exists", async () => {
        const other = await db.open();
        try {
          const pool = await newPool();
          for (let round = 0; round < 10; round++) {
            const name = uid("race");
            const old = (await store.acquireLease(name, "old", 60_000))!;
            const a = await newInstance(pool);
            // The old holder's write races a takeover by the other replica.
            await store.releaseLease(old);
            const [applied, taken] = await Promise.all([
              store.applyObservations([observation(a.id, "starting", "idle")], old),
              other.acquireLease(name, "new", 60_000),
            ]);
            assert.ok(taken);
            assert.deepEqual(applied.applied, [], "a released term never writes");
          }
        } finally {
          await other.close();
        }
      });
    }
  });
}

fencing("PGlite (in-memory)", inMemoryPglite, { multiProcess: false });
fencing(postgresLabel, realPostgres, { multiProcess: true });
