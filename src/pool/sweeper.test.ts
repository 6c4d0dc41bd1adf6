import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ManualClock } from "../clock.ts";
import { openStore } from "../db/open.ts";
import type { InstanceRecord, Store } from "../db/store.ts";
import type { InstanceTarget, RuntimeStatus } from "../instance/client.ts";
import { resolveStaleClaim, Sweeper } from "./sweeper.ts";

/** A promise resolved from outside: the test decides when a slow runtime answers. */
function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const CLEAN: RuntimeStatus = { conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null };

describe("Sweeper", () => {
  let store: Store;
  let n = 0;
  before(async () => {
    store = await openStore({ dataDir: null });
  });
  after(() => store.close());

  async function idleInstance(pool: string): Promise<InstanceRecord> {
    const id = `i-sw-${++n}`;
    await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "test" });
    await store.setProviderRef(id, `ref-${id}`, `http://runtime.invalid/${id}`, "SUCCESS");
    return (await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "test" }))!;
  }

  const pick = (pool: string, attempt: string, ttlMs: number, agentName: string) =>
    store.claimIdle({
      poolIds: [pool],
      owner: "replica",
      attempt,
      attemptTtlMs: ttlMs,
      claimKey: null,
      source: null,
      agentName,
      instructions: "x",
      joinUrl: null,
      profileImage: null,
      metadata: null,
      exclude: [],
    });

  it("regression (issue 8): a sweep that judged claim A stale never undoes claim B, which picked the row meanwhile", async () => {
    const pool = "sweep-a";
    await store.upsertPool({ id: pool, minIdle: 1, maxTotal: 5 });
    const inst = await idleInstance(pool);
    // Claim A picks the row with a deadline already past: stale for a sweeper with no margin.
    assert.equal((await pick(pool, "attempt-A", 1, "Agent A")).kind, "picked");
    await new Promise((r) => setTimeout(r, 5)); // let the database clock pass A's 1 ms deadline
    // The sweeper reads A's row and asks the runtime, which is slow to answer.
    const asked = deferred<void>();
    const answer = deferred<RuntimeStatus>();
    const sweeper = new Sweeper({
      poolId: pool,
      store,
      clock: new ManualClock(),
      marginMs: 0,
      statusTimeoutMs: 1_000,
      concurrency: 4,
      statusReader: {
        status: async (_t: InstanceTarget) => {
          asked.resolve();
          return answer.promise;
        },
      },
    });
    const sweep = sweeper.runOnce();
    await asked.promise;
    // Meanwhile A's own recovery puts the row back to idle, and claim B picks it.
    assert.ok(
      await store.transition({
        id: inst.id,
        from: "claiming",
        to: "idle",
        actor: "claim",
        reason: "A recovered",
        fence: { claimAttempt: "attempt-A" },
        set: { claimAttempt: null, agentName: null },
      }),
    );
    assert.equal((await pick(pool, "attempt-B", 60_000, "Agent B")).kind, "picked");
    // The runtime answers "clean" (it was, for A): before fencing, the sweep moved B's row to idle.
    answer.resolve(CLEAN);
    const res = await sweep;
    assert.deepEqual(res.resolved, [], "the sweep wrote nothing");
    assert.deepEqual(res.fencedOut, [inst.id]);
    const row = await store.getInstance(inst.id);
    assert.deepEqual([row?.status, row?.claimAttempt, row?.agentName], ["claiming", "attempt-B", "Agent B"], "B's claim is intact");
    // And B completes.
    const done = await store.transition({
      id: inst.id,
      from: "claiming",
      to: "claimed",
      actor: "claim",
      reason: "B done",
      fence: { claimAttempt: "attempt-B" },
      set: { conversationId: "conv-B" },
    });
    assert.equal(done?.status, "claimed");
  });

  it("judges staleness by the database clock only: a process clock days ahead sweeps nothing fresh", async () => {
    const pool = "sweep-b";
    await store.upsertPool({ id: pool, minIdle: 1, maxTotal: 5 });
    await idleInstance(pool);
    assert.equal((await pick(pool, "attempt-fresh", 60_000, "Fresh")).kind, "picked");
    const clock = new ManualClock(Date.now() + 5 * 86_400_000);
    let asked = 0;
    const sweeper = new Sweeper({
      poolId: pool,
      store,
      clock,
      marginMs: 0,
      statusTimeoutMs: 1_000,
      concurrency: 4,
      statusReader: {
        status: async () => {
          asked++;
          return CLEAN;
        },
      },
    });
    const res = await sweeper.runOnce();
    assert.deepEqual([res.examined, res.resolved.length, asked], [0, 0, 0]);
  });

  it("a lease fence: a sweep under a lost term writes nothing", async () => {
    const pool = "sweep-c";
    await store.upsertPool({ id: pool, minIdle: 1, maxTotal: 5 });
    const inst = await idleInstance(pool);
    assert.equal((await pick(pool, "attempt-X", 1, "X")).kind, "picked");
    await new Promise((r) => setTimeout(r, 5));
    const mine = (await store.acquireLease(`reconciler:${pool}`, "me", 60_000))!;
    await store.releaseLease(mine);
    assert.ok(await store.acquireLease(`reconciler:${pool}`, "someone-else", 60_000));
    const sweeper = new Sweeper({
      poolId: pool,
      store,
      clock: new ManualClock(),
      marginMs: 0,
      statusTimeoutMs: 1_000,
      concurrency: 4,
      statusReader: { status: async () => CLEAN },
    });
    const res = await sweeper.runOnce(mine);
    assert.deepEqual([res.resolved.length, res.fencedOut], [0, [inst.id]]);
    assert.equal((await store.getInstance(inst.id))?.status, "claiming");
  });

  describe("resolveStaleClaim (pure)", () => {
    const row = { inviteUrl: null } as unknown as InstanceRecord;
    const now = new Date("2026-06-01T00:00:00Z");
    const cases: Array<[string, RuntimeStatus | null, string, boolean]> = [
      ["bound → claimed, keeping the attempt", { ...CLEAN, clean: false, conversationId: "c1" }, "claimed", false],
      ["pending → pending_acceptance", { ...CLEAN, clean: false, pending: true }, "pending_acceptance", false],
      ["clean → idle, released", CLEAN, "idle", true],
      ["dirty → crashed, released", { ...CLEAN, clean: false }, "crashed", true],
      ["unreachable → crashed, released", null, "crashed", true],
    ];
    for (const [name, s, to, released] of cases) {
      it(name, () => {
        const r = resolveStaleClaim(row, s, now);
        assert.equal(r.to, to);
        assert.equal("claimAttempt" in r.set && r.set.claimAttempt === null, released);
      });
    }
  });
});
