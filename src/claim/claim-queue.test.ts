/**
 * The claim with the queue of waiting claims (issue 13), on in-memory PGlite: a claim that does
 * not wait never jumps a queue, a served claim whose provision failed keeps its place for its
 * retry, and idempotency keys keep working while a claim waits. Another replica's waiter is a row
 * joined straight through the store (it never looks: it only holds its place).
 */
import { after, before, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { systemClock } from "../clock.ts";
import { openStore } from "../db/open.ts";
import type { Store } from "../db/store.ts";
import { isPoolError } from "../errors.ts";
import type { InstanceTarget, ProvisionResult, RuntimeStatus } from "../instance/client.ts";
import { silentLogger } from "../logger.ts";
import { ClaimService, type ProvisionClient } from "./claim.ts";
import { ClaimWaitQueue } from "./wait-queue.ts";

/** Provisions answer at once, or when the test settles the one held for an url. */
class Runtimes implements ProvisionClient {
  readonly hold = new Map<string, { promise: Promise<ProvisionResult>; reject: (e: unknown) => void }>();
  readonly started: string[] = [];
  async provision(t: InstanceTarget): Promise<ProvisionResult> {
    this.started.push(t.url);
    const held = this.hold.get(t.url);
    if (held) return held.promise;
    return { inviteUrl: `${t.url}/invite`, conversationId: `conv-${t.url}`, joined: false, status: "created" };
  }
  holdNext(url: string): (e: unknown) => void {
    let reject!: (e: unknown) => void;
    const promise = new Promise<ProvisionResult>((_res, rej) => (reject = rej));
    this.hold.set(url, { promise, reject });
    return reject;
  }
  async reset(): Promise<unknown> {
    return {};
  }
  async status(): Promise<RuntimeStatus> {
    // Dirty after a failed provision: the instance is not handed out again in these tests.
    return { conversationId: null, inboxId: null, pending: false, clean: false, inviteUrl: null };
  }
}

describe("Claims and the queue of waiting claims (PGlite)", () => {
  let store: Store;
  let runtimes: Runtimes;
  let queue: ClaimWaitQueue;
  let service: ClaimService;
  let pool = "";
  let n = 0;
  before(async () => {
    store = await openStore({ dataDir: null });
  });
  after(() => store.close());
  beforeEach(async () => {
    pool = `q-${++n}`;
    await store.upsertPool({ id: pool, minIdle: 0, maxTotal: 10 });
    runtimes = new Runtimes();
    queue = new ClaimWaitQueue({ store, logger: silentLogger, owner: "me", recheckMs: 600_000 });
    service = new ClaimService({
      store,
      queue,
      client: runtimes,
      clock: systemClock,
      logger: silentLogger,
      defaultPool: pool,
      owner: "me",
      provisionTimeoutMs: 10_000,
    });
  });

  const urlOf = (id: string) => `http://rt.invalid/${id}`;
  const starting = async () => {
    const id = `i-${pool}-${++n}`;
    await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "test" });
    await store.setProviderRef(id, `ref-${id}`, urlOf(id), "SUCCESS");
    return id;
  };
  const idle = (id: string) => store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "test" });
  /** Another replica's waiter: a row that holds its place and never looks. */
  const otherWaiter = async () => {
    const r = await store.joinClaimQueue({ poolIds: [pool], owner: "other", ttlMs: 60_000, maxLength: 10 });
    assert.equal(r.kind, "joined");
    return (r as { ticket: number }).ticket;
  };
  const joined = async (count: number) => {
    while (((await store.claimQueueLengths()).find((l) => l.poolId === pool)?.waiting ?? 0) < count) await new Promise((r) => setImmediate(r));
  };

  it("a claim that does not wait never jumps a queue: POOL_EMPTY while an earlier claim waits, the instance stays for it", async () => {
    const ticket = await otherWaiter();
    const x = await starting();
    await idle(x);
    await assert.rejects(service.claim({ agentName: "Impatient" }), (err) => isPoolError(err) && err.code === "POOL_EMPTY");
    assert.equal((await store.getInstance(x))?.status, "idle");
    // Once the waiter is gone, the same claim takes it.
    await store.leaveClaimQueue(ticket);
    assert.equal((await service.claim({ agentName: "Impatient" })).instanceId, x);
  });

  it("a served claim whose provision failed retries ahead of the waiters behind it", async () => {
    const x = await starting();
    const fail = runtimes.holdNext(urlOf(x));
    const claim = service.claim({ agentName: "First", waitMs: 30_000 });
    await joined(1);
    await otherWaiter(); // behind the claim
    await idle(x);
    while (!runtimes.started.includes(urlOf(x))) await new Promise((r) => setImmediate(r));
    // While its provision runs, another instance turns idle; the waiter behind does not look.
    const y = await starting();
    await idle(y);
    fail(new Error("provision refused"));
    const res = await claim;
    assert.equal(res.instanceId, y, "the retry took the idle instance although a later waiter is live");
    assert.equal((await store.claimQueueLengths()).find((l) => l.poolId === pool)?.waiting, 1, "the later waiter keeps its place");
  });

  it("idempotency keys keep working while a claim waits: a retry is told it is in progress, and after the turn gets the same agent", async () => {
    const x = await starting();
    const claim = service.claim({ agentName: "Keyed", waitMs: 30_000, idempotencyKey: "k-1" });
    await joined(1);
    await assert.rejects(
      service.claim({ agentName: "Keyed", waitMs: 30_000, idempotencyKey: "k-1" }),
      (err) => isPoolError(err) && err.code === "CLAIM_IN_PROGRESS",
    );
    assert.equal((await store.claimQueueLengths()).find((l) => l.poolId === pool)?.waiting, 1, "the retry did not join the queue");
    await idle(x);
    const first = await claim;
    assert.equal(first.instanceId, x);
    assert.deepEqual(await service.claim({ agentName: "Keyed", idempotencyKey: "k-1" }), first);
  });
});
