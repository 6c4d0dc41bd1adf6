/**
 * Waiting claims served in order across replicas, on real Postgres (issue 13): three pool-manager
 * replicas (each its own store, LISTEN connection, wait queue and claim service) share one
 * database. Claims arrive on random replicas in a seeded order, instances turn idle in random
 * bursts, and the order in which claims are served (the order of their picks in the event log)
 * must be the order they arrived in. The re-check without a hint is set to 10 minutes: every
 * waiter here is woken by a notification, never by polling.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ClaimService, type ClaimResponse, type ProvisionClient } from "../src/claim/claim.ts";
import { ClaimWaitQueue } from "../src/claim/wait-queue.ts";
import { systemClock } from "../src/clock.ts";
import { openStore } from "../src/db/open.ts";
import type { ClaimPick, QueueJoin, QueueJoinResult, Store } from "../src/db/store.ts";
import { silentLogger } from "../src/logger.ts";
import { prng } from "./support/faulty-fleet.ts";
import { startTestPostgres } from "./support/postgres.ts";

const NO_POLLING_MS = 600_000;

/** Answers every provision at once (the order under test is the pick's, not the runtime's). */
const runtime: ProvisionClient = {
  provision: async (target) => ({
    inviteUrl: `http://x/i/${target.gatewayToken}`,
    conversationId: `conv-${target.gatewayToken}`,
    joined: false,
    status: "created",
  }),
  reset: async () => ({}),
  status: async () => ({ clean: true, conversationId: null, pending: false }) as never,
};

/** The store as the queue and the claims see it, telling the test when a join has landed and when a pick at a queue place has answered. */
function watchJoins(store: Store, onJoin: (r: QueueJoinResult) => void, onQueuedPick: () => void = () => undefined): Store {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === "joinClaimQueue") {
        return async (req: QueueJoin) => {
          const r = await target.joinClaimQueue(req);
          onJoin(r);
          return r;
        };
      }
      if (prop === "claimIdle") {
        return async (req: ClaimPick) => {
          const r = await target.claimIdle(req);
          if (req.queue) onQueuedPick();
          return r;
        };
      }
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe("Waiting claims across 3 replicas on Postgres", () => {
  let pg: { url: string; stop(): Promise<void> };
  const stores: Store[] = [];
  const queues: ClaimWaitQueue[] = [];
  const services: ClaimService[] = [];
  let joined: (r: QueueJoinResult) => void = () => undefined;
  let queuedPick: () => void = () => undefined;
  let n = 0;

  before(async () => {
    pg = await startTestPostgres();
    for (let i = 0; i < 3; i++) {
      const store = await openStore({ databaseUrl: pg.url, postgres: { poolMax: 4 } });
      stores.push(store);
      const watched = watchJoins(
        store,
        (r) => joined(r),
        () => queuedPick(),
      );
      const queue = new ClaimWaitQueue({
        store: watched,
        logger: silentLogger,
        owner: `replica-${i}`,
        recheckMs: NO_POLLING_MS,
        ttlMs: 60_000,
      });
      queues.push(queue);
      services.push(
        new ClaimService({
          store: watched,
          queue,
          client: runtime,
          clock: systemClock,
          logger: silentLogger,
          defaultPool: "q",
          owner: `replica-${i}`,
          provisionTimeoutMs: 10_000,
        }),
      );
    }
  });
  after(async () => {
    for (const q of queues) await q.close();
    for (const s of stores) await s.close();
    await pg?.stop();
  });

  const newPool = async (id: string) => {
    await stores[0]!.upsertPool({ id, minIdle: 0, maxTotal: 200 });
    for (const s of services) s.invalidatePools();
  };
  /** An instance of the pool, booting. */
  const starting = async (pool: string) => {
    const id = `i-${pool}-${n++}`;
    const s = stores[0]!;
    await s.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "test" });
    await s.setProviderRef(id, `ref-${id}`, "http://127.0.0.1:9", "SUCCESS");
    return id;
  };
  /** It turns idle (the transition's event NOTIFYs every replica). */
  const idle = (id: string) => stores[0]!.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "healthy" });
  const turnIdle = async (pool: string) => {
    const id = await starting(pool);
    await idle(id);
    return id;
  };
  const pickEventId = async (instanceId: string) => {
    const ev = (await stores[0]!.listEvents(instanceId)).find((e) => e.toStatus === "claiming");
    assert.ok(ev, `${instanceId} was picked`);
    return ev.id;
  };

  for (const seed of [11, 2026]) {
    it(`serves claims in the order they arrived, whichever replica they arrived on (seed ${seed})`, { timeout: 120_000 }, async () => {
      const pool = `fifo${seed}`;
      await newPool(pool);
      const rnd = prng(seed);
      const looksBefore = queues.map((q) => q.looks.recheck);
      const arrivals: number[] = [];
      const replicaOf = new Map<number, number>();
      const served: Array<{ index: number; res: ClaimResponse }> = [];
      const all: Array<Promise<void>> = [];
      let onServed: () => void = () => undefined;
      let waiting = 0;
      let idleLeft = 0;
      let index = 0;

      const arrive = async () => {
        const i = index++;
        const r = Math.floor(rnd() * 3);
        replicaOf.set(i, r);
        const landed = new Promise<void>((res) => (joined = () => res()));
        const claim = services[r]!.claim({ pool, agentName: `c${i}`, waitMs: 60_000 }).then((res) => {
          served.push({ index: i, res });
          onServed();
        });
        all.push(claim);
        // Arrived: it waits in the queue, or (queue empty, an instance idle) it was served at once.
        await Promise.race([landed, claim]);
        arrivals.push(i);
        if (idleLeft > 0 && waiting === 0) {
          await claim;
          idleLeft--;
        } else waiting++;
      };
      const release = async (k: number) => {
        const expect = served.length + Math.min(k, waiting);
        const done = new Promise<void>((res) => {
          onServed = () => served.length >= expect && res();
          if (served.length >= expect) res();
        });
        for (let j = 0; j < k; j++) await turnIdle(pool);
        await done;
        idleLeft += Math.max(0, k - waiting);
        waiting = Math.max(0, waiting - k);
      };

      for (let step = 0; step < 36; step++) {
        if (waiting === 0 || rnd() < 0.6) await arrive();
        else await release(1 + Math.floor(rnd() * 3));
      }
      await release(waiting);
      await Promise.all(all);

      assert.equal(served.length, index, "every claim was served");
      assert.equal(new Set(served.map((s) => s.res.instanceId)).size, index, "each on its own instance");
      const order = await Promise.all(served.map(async (s) => ({ index: s.index, at: await pickEventId(s.res.instanceId) })));
      order.sort((a, b) => a.at - b.at);
      assert.deepEqual(
        order.map((o) => o.index),
        arrivals,
        `service order = arrival order (replicas: ${arrivals.map((i) => replicaOf.get(i)).join("")})`,
      );
      assert.ok(new Set(replicaOf.values()).size === 3, "claims arrived on every replica");
      assert.deepEqual(
        queues.map((q, i) => q.looks.recheck - looksBefore[i]!),
        [0, 0, 0],
        "no waiter was woken by the re-check: notifications did it all",
      );
      assert.deepEqual(await stores[1]!.claimQueueLengths().then((l) => l.filter((x) => x.poolId === pool)), [], "the queue is empty");
    });
  }

  it("a waiter is served within one notification of an instance turning idle (no polling)", { timeout: 30_000 }, async () => {
    const pool = "notify";
    await newPool(pool);
    const q = queues[2]!;
    // The booting instance's own hint is delivered (in order, on replica 2's one LISTEN connection)
    // before the claim waits: the only hint of this pool after the join is the idle transition's.
    let delivered: () => void = () => undefined;
    const hinted = new Promise<void>((res) => (delivered = res));
    const off = await stores[2]!.subscribeHints((h) => {
      if (h.pool === pool) delivered();
    });
    const id = await starting(pool);
    await hinted;
    await off();
    const landed = new Promise<void>((res) => (joined = () => res()));
    // The pick the join itself makes must have answered (empty) before the instance turns idle:
    // otherwise that pick may find it, and no notification is needed at all (a full run once did).
    const joinLooked = new Promise<void>((res) => (queuedPick = () => res()));
    const claim = services[2]!.claim({ pool, agentName: "Patient", waitMs: 60_000 });
    await landed;
    await joinLooked;
    queuedPick = () => undefined;
    const before = { ...q.looks };
    await idle(id);
    const res = await claim;
    assert.equal(res.instanceId, id);
    assert.equal(q.looks.recheck, before.recheck, "not woken by the re-check");
    // One pick after the transition served it: woken by its hint (or, when the hint came while the
    // pick the join started was still in flight, the one pick that hint queued after it).
    assert.equal(q.looks.hint + q.looks.again - (before.hint + before.again), 1, "one notification, one look, served");
    assert.equal(q.looks.next, before.next);
  });

  it("a waiter of a replica that died holds nobody back after its TTL (database clock)", { timeout: 30_000 }, async () => {
    const pool = "dead";
    await newPool(pool);
    // A replica joined and died: its row is never renewed nor removed.
    const dead = await stores[1]!.joinClaimQueue({ poolIds: [pool], owner: "dead-replica", ttlMs: 1_500, maxLength: 10 });
    assert.equal(dead.kind, "joined");
    const live = new ClaimWaitQueue({ store: stores[0]!, logger: silentLogger, owner: "live", recheckMs: 200, ttlMs: 60_000 });
    const service = new ClaimService({
      store: stores[0]!,
      queue: live,
      client: runtime,
      clock: systemClock,
      logger: silentLogger,
      defaultPool: pool,
      owner: "live",
      provisionTimeoutMs: 10_000,
    });
    try {
      const claim = service.claim({ pool, agentName: "Next", waitMs: 20_000 });
      const id = await turnIdle(pool);
      // Behind the dead waiter until its row lapses; then the re-check serves it.
      const res = await claim;
      assert.equal(res.instanceId, id);
      assert.ok(live.looks.recheck > 0, "served by a re-check once the dead waiter lapsed (no hint marks a lapse)");
      assert.deepEqual(
        (await stores[0]!.claimQueueLengths()).filter((l) => l.poolId === pool),
        [],
      );
    } finally {
      await live.close();
    }
  });
});
