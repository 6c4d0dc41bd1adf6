/**
 * The claim's fencing, with a real store (in-memory PGlite) and a stand-in for the runtimes'
 * HTTP answers whose timing the test controls (deferreds, no sleeping).
 */
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { systemClock } from "../clock.ts";
import { openStore } from "../db/open.ts";
import type { Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { InstanceTarget, ProvisionRequest, ProvisionResult, RuntimeStatus } from "../instance/client.ts";
import { silentLogger } from "../logger.ts";
import { ClaimService, type ClaimServiceOptions, type ProvisionClient } from "./claim.ts";

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Runtimes keyed by URL: each provision either answers now or waits for the test. */
class Runtimes implements ProvisionClient {
  readonly provisions: string[] = [];
  readonly resets: string[] = [];
  /** A provision of this url waits for the deferred (the test resolves or rejects it). */
  readonly hold = new Map<string, ReturnType<typeof deferred<ProvisionResult>>>();
  /** Called when a provision of this url starts. */
  onProvision: (url: string) => void = () => {};
  async provision(t: InstanceTarget, _req: ProvisionRequest, _timeoutMs: number): Promise<ProvisionResult> {
    this.provisions.push(t.url);
    this.onProvision(t.url);
    const held = this.hold.get(t.url);
    if (held) return held.promise;
    return { inviteUrl: `${t.url}/invite`, conversationId: `conv-${t.url.split("/").pop()}`, joined: false, status: "created" };
  }
  async reset(t: InstanceTarget): Promise<unknown> {
    this.resets.push(t.url);
    return {};
  }
  async status(_t: InstanceTarget): Promise<RuntimeStatus> {
    return { conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null };
  }
}

/** The store with some methods replaced (a Proxy: the store's private fields stay reachable). */
function override(store: Store, over: Partial<Store>): Store {
  return new Proxy(store, {
    get(target, prop) {
      if (prop in over) return (over as Record<string | symbol, unknown>)[prop];
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

describe("ClaimService fencing", () => {
  let store: Store;
  let runtimes: Runtimes;
  let pool = "";
  let n = 0;
  before(async () => {
    store = await openStore({ dataDir: null });
  });
  after(() => store.close());
  beforeEach(async () => {
    pool = `claims-${++n}`;
    runtimes = new Runtimes();
    await store.upsertPool({ id: pool, minIdle: 0, maxTotal: 10 });
  });

  let seq = 0;
  async function idle(count: number): Promise<string[]> {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = `i-${pool}-${++seq}`;
      await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "test" });
      await store.setProviderRef(id, `ref-${id}`, `http://rt.invalid/${id}`, "SUCCESS");
      await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "test" });
      ids.push(id);
    }
    return ids;
  }

  const service = (over: Partial<ClaimServiceOptions> = {}) =>
    new ClaimService({
      store,
      client: runtimes,
      clock: systemClock,
      logger: silentLogger,
      defaultPool: pool,
      owner: "replica-1",
      provisionTimeoutMs: 5_000,
      resetTimeoutMs: 1_000,
      ...over,
    });

  it("a completion that lost the row to the sweeper and a newer claim writes nothing; both claims end on distinct instances", async () => {
    const [first, second] = await idle(2);
    const url = `http://rt.invalid/${second}`;
    // Newest idle first: claim A picks `second`. Its provision stalls; the sweeper resolves the
    // attempt (as if A ran past its deadline) back to idle, and claim B picks `second` again.
    const heldA = deferred<ProvisionResult>();
    runtimes.hold.set(url, heldA);
    const startedA = deferred<void>();
    runtimes.onProvision = (u) => u === url && startedA.resolve();
    const claimA = service().claim({ agentName: "A", instructions: "x" });
    await startedA.promise;
    const rowA = await store.getInstance(second!);
    assert.ok(
      await store.transition({
        id: second!,
        from: "claiming",
        to: "idle",
        actor: "sweeper",
        reason: "stale claim: runtime is clean",
        fence: { claimAttempt: rowA!.claimAttempt },
        set: { claimAttempt: null, agentName: null },
      }),
    );
    const heldB = deferred<ProvisionResult>();
    runtimes.hold.set(url, heldB);
    const startedB = deferred<void>();
    runtimes.onProvision = (u) => u === url && startedB.resolve();
    const claimB = service().claim({ agentName: "B", instructions: "x" });
    await startedB.promise;
    // A's provision answers now: its completion must not take B's row.
    runtimes.hold.delete(url);
    heldA.resolve({ inviteUrl: "x", conversationId: "conv-A-late", joined: false, status: "created" });
    const resA = await claimA;
    assert.equal(resA.instanceId, first, "A is served by the other instance");
    const mid = await store.getInstance(second!);
    assert.deepEqual([mid?.status, mid?.agentName, mid?.conversationId], ["claiming", "B", null], "B's row untouched by A's late completion");
    heldB.resolve({ inviteUrl: "y", conversationId: "conv-B", joined: false, status: "created" });
    const resB = await claimB;
    assert.equal(resB.instanceId, second);
    const end = await store.getInstance(second!);
    assert.deepEqual([end?.status, end?.agentName, end?.conversationId], ["claimed", "B", "conv-B"]);
  });

  it("a completion the sweeper already recorded as bound (our attempt kept) is reported as the success it is", async () => {
    const [only] = await idle(1);
    const held = deferred<ProvisionResult>();
    runtimes.hold.set(`http://rt.invalid/${only}`, held);
    const started = deferred<void>();
    runtimes.onProvision = () => started.resolve();
    const claim = service().claim({ agentName: "Ada", instructions: "x" });
    await started.promise;
    const row = await store.getInstance(only!);
    assert.ok(
      await store.transition({
        id: only!,
        from: "claiming",
        to: "claimed",
        actor: "sweeper",
        reason: "stale claim: runtime is bound",
        fence: { claimAttempt: row!.claimAttempt },
        set: { conversationId: "conv-1", inviteUrl: "https://i/1" },
      }),
    );
    held.resolve({ inviteUrl: "https://i/1", conversationId: "conv-1", joined: false, status: "created" });
    const res = await claim;
    assert.deepEqual([res.instanceId, res.conversationId, res.status], [only, "conv-1", "claimed"]);
  });

  it("a late recovery never resets or writes an instance a newer claim holds", async () => {
    const [only] = await idle(1);
    const held = deferred<ProvisionResult>();
    runtimes.hold.set(`http://rt.invalid/${only}`, held);
    const started = deferred<void>();
    runtimes.onProvision = () => started.resolve();
    const late = service().claim({ agentName: "Late", instructions: "x" });
    await started.promise;
    // The sweeper resolves the stalled attempt to idle, and a newer claim picks the instance.
    const row = await store.getInstance(only!);
    await store.transition({
      id: only!,
      from: "claiming",
      to: "idle",
      actor: "sweeper",
      reason: "stale",
      fence: { claimAttempt: row!.claimAttempt },
      set: { claimAttempt: null },
    });
    runtimes.hold.delete(`http://rt.invalid/${only}`);
    const newer = await service().claim({ agentName: "Newer", instructions: "x" });
    assert.equal(newer.instanceId, only);
    // Now the stalled provision fails: its recovery must leave the newer claim's agent alone.
    held.reject(new Error("timed out"));
    await assert.rejects(late, (e: unknown) => e instanceof PoolError && e.code === "PROVISION_FAILED");
    assert.deepEqual(runtimes.resets, [], "no reset sent to the newer claim's runtime");
    const now = await store.getInstance(only!);
    assert.deepEqual([now?.status, now?.agentName], ["claimed", "Newer"]);
  });

  it("a claim that succeeded answers the client even when recording its idempotency result fails; a retry gets the same agent", async () => {
    await idle(2);
    const failingFinish = override(store, {
      finishIdempotentClaim: async () => {
        throw new Error("connection reset");
      },
    });
    const res = await service({ store: failingFinish }).claim({ agentName: "Ada", instructions: "x", idempotencyKey: "k-1" });
    assert.equal(res.status, "claimed");
    // The record is still `running` under the first run's token: a retry now is told to wait.
    await assert.rejects(
      service().claim({ agentName: "Ada", instructions: "x", idempotencyKey: "k-1" }),
      (e: unknown) => e instanceof PoolError && e.code === "CLAIM_IN_PROGRESS",
    );
    // Once the record may be taken over (a margin of minus a day stands for "its deadline passed"),
    // the retry's pick meets the key on the instance and answers from it: no second agent.
    const provisions = runtimes.provisions.length;
    const retry = await service({ sweepMarginMs: -86_400_000 }).claim({ agentName: "Ada", instructions: "x", idempotencyKey: "k-1" });
    assert.deepEqual([retry.instanceId, retry.conversationId, retry.status], [res.instanceId, res.conversationId, "claimed"]);
    assert.equal(runtimes.provisions.length, provisions, "nothing provisioned again");
    assert.deepEqual(
      (await store.listInstances(pool)).filter((r) => r.claimKey === "k-1").map((r) => r.id),
      [res.instanceId],
    );
    assert.equal((await store.countByStatus(pool)).idle, 1, "the other instance is still idle");
  });

  it("one live instance per idempotency key: the store's pick meets the key instead of taking another instance", async () => {
    const [a, b] = await idle(2);
    const first = await service().claim({ agentName: "Ada", instructions: "x", idempotencyKey: "k-2" });
    assert.equal(first.instanceId, b);
    const pick = await store.claimIdle({
      poolIds: [pool],
      owner: "x",
      attempt: "z",
      attemptTtlMs: 60_000,
      claimKey: "k-2",
      source: null,
      agentName: "Ada",
      instructions: "x",
      joinUrl: null,
      profileImage: null,
      metadata: null,
      exclude: [],
    });
    assert.equal(pick.kind, "key_taken");
    assert.equal(pick.kind === "key_taken" ? pick.instance.id : null, b);
    assert.equal((await store.getInstance(a!))?.status, "idle", "the other instance was not taken");
  });

  it("never starts an attempt that could not end by the claim's deadline, and tells the store each attempt's budget", async () => {
    const [only] = await idle(1);
    let ttl = 0;
    const spy = override(store, {
      claimIdle: async (p) => {
        ttl = p.attemptTtlMs;
        return store.claimIdle(p);
      },
    });
    await service({ store: spy, claimDeadlineMs: 10_000, provisionTimeoutMs: 60_000, resetTimeoutMs: 1_000 }).claim({ agentName: "A", instructions: "x" });
    assert.ok(ttl <= 10_000 && ttl > 9_000, `the attempt's budget fits the deadline (${ttl} ms)`);
    assert.equal((await store.getInstance(only!))?.status, "claimed");
    // A deadline that leaves no room for a provision after the recovery budget: no attempt at all.
    await idle(1);
    await assert.rejects(
      service({ claimDeadlineMs: 2_500, resetTimeoutMs: 1_000 }).claim({ agentName: "B", instructions: "x" }),
      (e: unknown) => e instanceof PoolError && e.code === "PROVISION_FAILED",
    );
    assert.equal(runtimes.provisions.length, 1, "the second claim provisioned nothing");
  });
  it("reports to the recorder how each claim was served: warm, after waiting (and how long), or pool empty (issue 13)", async () => {
    const reports: Array<[string | null, number]> = [];
    let mono = 1_000;
    let emptyLooks = 0;
    const waiting = override(store, {
      claimIdle: async (pick) => {
        if (emptyLooks > 0) {
          emptyLooks--;
          mono += 700;
          return { kind: "empty" };
        }
        return store.claimIdle(pick);
      },
    });
    const svc = service({ store: waiting, monotonic: () => mono, waitPollMs: 1, maxWaitMs: 10_000, recorder: (r) => reports.push([r.launch, r.waitedMs]) });
    await idle(2);
    await svc.claim({});
    emptyLooks = 2;
    await svc.claim({ waitMs: 5_000 });
    await assert.rejects(svc.claim({}), (e: unknown) => e instanceof PoolError && e.code === "POOL_EMPTY");
    // Waited from its first empty look (at 1,700) to the pick (at 2,400, after the second).
    assert.deepEqual(reports, [
      ["warm", 0],
      ["waited", 700],
      ["empty", 0],
    ]);
  });
});
