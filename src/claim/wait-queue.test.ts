/**
 * The wait queue of one process on in-memory PGlite: how a wait ends (turn, timeout, client gone,
 * lapsed place, shutdown, a failing pick, a full queue) and that every end without a turn leaves
 * the queue. The re-check without a hint is 10 minutes here: what happens, happens on a hint or a
 * timer of the queue itself; the tests never sleep.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { openStore } from "../db/open.ts";
import type { ClaimPick, QueuePlace, Store } from "../db/store.ts";
import { silentLogger } from "../logger.ts";
import { ClaimWaitQueue, type ClaimWaitQueueOptions } from "./wait-queue.ts";

let seq = 0;
const uid = (p: string) => `${p}-${(seq++).toString(36)}`;

describe("ClaimWaitQueue (PGlite)", () => {
  let store: Store;
  before(async () => {
    store = await openStore({ dataDir: null });
  });
  after(async () => {
    await store?.close();
  });

  const newPool = async () => {
    const id = uid("p");
    await store.upsertPool({ id, minIdle: 0, maxTotal: 20 });
    return id;
  };
  const queue = (over: Partial<ClaimWaitQueueOptions> = {}) => new ClaimWaitQueue({ store, logger: silentLogger, owner: "test", recheckMs: 600_000, ...over });
  const lengthOf = async (pool: string) => (await store.claimQueueLengths()).find((l) => l.poolId === pool)?.waiting ?? 0;
  const picker = (pool: string) => (place: QueuePlace) => {
    const pick: ClaimPick = {
      poolIds: [pool],
      owner: "test",
      attempt: uid("a"),
      attemptTtlMs: 60_000,
      claimKey: null,
      source: null,
      agentName: "Ada",
      instructions: "x",
      joinUrl: null,
      profileImage: null,
      metadata: null,
      exclude: [],
      queue: place,
    };
    return store.claimIdle(pick);
  };
  const starting = async (pool: string) => {
    const id = uid("i");
    await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `t-${id}`, reason: "test" });
    return id;
  };

  it("a waiter's turn comes on the hint of an instance turning idle; two local waiters are served in order", async () => {
    const pool = await newPool();
    const q = queue();
    const [x, y] = [await starting(pool), await starting(pool)];
    const first = q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: picker(pool) });
    const second = q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: picker(pool) });
    while (q.size < 2) await new Promise((r) => setImmediate(r));
    // Both instances turn idle in one statement: one notification.
    const obs = (id: string) => ({
      id,
      expectedStatus: "starting" as const,
      status: "idle" as const,
      reason: "healthy",
      providerRef: null,
      url: null,
      deployStatus: null,
      runtimeVersion: null,
      runtimeType: null,
      image: null,
      healthCheckedAt: null,
      healthOkAt: null,
      healthFailures: 0,
      healthError: null,
      conversationId: null,
      resourceGone: false,
    });
    await store.applyObservations([obs(x), obs(y)]);
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.kind, "turn");
    assert.equal(b.kind, "turn");
    assert.ok(a.kind === "turn" && b.kind === "turn" && a.ticket < b.ticket);
    assert.equal(q.looks.recheck, 0);
    assert.equal(await lengthOf(pool), 0);
    assert.equal(q.size, 0);
  });

  it("a wait that times out leaves the queue", async () => {
    const pool = await newPool();
    const q = queue();
    const r = await q.wait({ poolIds: [pool], timeoutMs: 30, pick: picker(pool) });
    assert.deepEqual(r, { kind: "gave_up", why: "timeout" });
    assert.equal(await lengthOf(pool), 0);
  });

  it("a client that goes away gives its place up; one gone before joining never joins", async () => {
    const pool = await newPool();
    const q = queue();
    const gone = new AbortController();
    const w = q.wait({ poolIds: [pool], timeoutMs: 60_000, signal: gone.signal, pick: picker(pool) });
    while (q.size < 1) await new Promise((r) => setImmediate(r));
    assert.equal(await lengthOf(pool), 1);
    gone.abort();
    assert.deepEqual(await w, { kind: "gave_up", why: "aborted" });
    assert.equal(await lengthOf(pool), 0);
    let joins = 0;
    const counting = new Proxy(store, {
      get(t, p) {
        if (p === "joinClaimQueue") joins++;
        const v = Reflect.get(t, p, t) as unknown;
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
    const q2 = queue({ store: counting });
    assert.deepEqual(await q2.wait({ poolIds: [pool], timeoutMs: 60_000, signal: AbortSignal.abort(), pick: picker(pool) }), {
      kind: "gave_up",
      why: "aborted",
    });
    assert.equal(joins, 0);
  });

  it("a full queue refuses the claim, counts it, and writes nothing", async () => {
    const pool = await newPool();
    const rejected: string[] = [];
    const q = queue({ maxLength: 1, onRejected: (p) => rejected.push(p) });
    const first = q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: picker(pool) });
    while (q.size < 1) await new Promise((r) => setImmediate(r));
    assert.deepEqual(await q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: picker(pool) }), { kind: "full", poolId: pool, waiting: 1 });
    assert.deepEqual(rejected, [pool]);
    assert.equal(await lengthOf(pool), 1);
    await q.close();
    assert.deepEqual(await first, { kind: "gave_up", why: "closed" });
  });

  it("a waiter whose place lapsed (no heartbeat in time, by the database clock) gives up", async () => {
    const pool = await newPool();
    // A TTL already past: the row is written lapsed, as if this process had stalled past it.
    const q = queue({ ttlMs: -1_000, heartbeatMs: 20 });
    const id = await starting(pool);
    await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "healthy" });
    assert.deepEqual(await q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: picker(pool) }), { kind: "gave_up", why: "lapsed" });
    assert.equal((await store.getInstance(id))?.status, "idle", "a lapsed waiter takes no turn");
  });

  it("the heartbeat keeps a waiter's place past its TTL for as long as it waits", async () => {
    const pool = await newPool();
    const q = queue({ ttlMs: 200, heartbeatMs: 40 });
    const w = q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: picker(pool) });
    // Ten renewals: over twice the TTL has passed since the join (by both clocks).
    while (q.renewals < 10) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await lengthOf(pool), 1, "still live");
    const id = await starting(pool);
    await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "healthy" });
    const r = await w;
    assert.equal(r.kind, "turn");
    assert.equal(r.kind === "turn" && r.pick.kind === "picked" ? r.pick.instance.id : null, id);
  });

  it("shutdown ends every wait and leaves the queue; no wait starts after it", async () => {
    const pool = await newPool();
    const q = queue();
    const w = q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: picker(pool) });
    while (q.size < 1) await new Promise((r) => setImmediate(r));
    await q.close();
    assert.deepEqual(await w, { kind: "gave_up", why: "closed" });
    assert.equal(await lengthOf(pool), 0);
    assert.deepEqual(await q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: picker(pool) }), { kind: "gave_up", why: "closed" });
  });

  it("a pick that fails ends the wait with its error and leaves the queue", async () => {
    const pool = await newPool();
    const q = queue();
    await assert.rejects(q.wait({ poolIds: [pool], timeoutMs: 60_000, pick: async () => Promise.reject(new Error("database gone")) }), /database gone/);
    assert.equal(await lengthOf(pool), 0);
  });
});
