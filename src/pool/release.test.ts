/**
 * The release of an agent against races, on a real store (in-memory PGlite) with a runtime the test
 * answers for: a pass that crashes the agent during its reset is overtaken (the release still ends on
 * its verified reset); a kill (or a pass that retires the row) during the reset wins, and the release
 * reports it without writing; a second release or an upgrade while one runs is refused; a runtime
 * that does not answer is retired and deleted at the provider.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { openStore } from "../db/open.ts";
import type { InstanceRecord, Store } from "../db/store.ts";
import type { PoolError } from "../errors.ts";
import type { RuntimeStatus } from "../instance/client.ts";
import { silentLogger } from "../logger.ts";
import { MemoryProvider } from "../provider/memory.ts";
import { releaseAgent, type ReleaseOptions } from "./release.ts";

const CLEAN: RuntimeStatus = { conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null };

describe("release of an agent", () => {
  let store: Store;
  let memory: MemoryProvider;
  /** What the runtime does when reset (the test's hook runs first). */
  let onReset: (() => Promise<void>) | null = null;
  let status: RuntimeStatus = CLEAN;
  let resetFails = false;
  let n = 0;
  const opts = (): ReleaseOptions => ({
    store,
    providers: new Map([["memory", memory]]),
    runtime: {
      reset: async () => {
        await onReset?.();
        if (resetFails) throw new Error("connection refused");
      },
      status: async () => status,
    },
    resetTimeoutMs: 1_000,
    logger: silentLogger,
  });

  before(async () => {
    store = await openStore({ dataDir: null });
    memory = new MemoryProvider({ ownerId: "own01" });
    await store.upsertPool({ id: "p", minIdle: 0, maxTotal: 20 });
  });
  after(() => store.close());

  async function agent(): Promise<InstanceRecord> {
    const id = `i-rel${n++}`;
    await store.insertInstance({ id, poolId: "p", provider: "memory", name: id, gatewayToken: `tok-${id}`, reason: "test" });
    const made = await memory.create({ instanceId: id, poolId: "p", name: id, gatewayToken: `tok-${id}`, ownerId: "own01", env: {} });
    await store.setProviderRef(id, made.ref, made.url, "SUCCESS");
    await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "up" });
    await store.claimIdle({
      poolIds: ["p"],
      owner: "t",
      attempt: `a-${id}`,
      attemptTtlMs: 60_000,
      claimKey: `key-${id}`,
      source: "test",
      agentName: "Ada",
      instructions: "x",
      joinUrl: null,
      profileImage: null,
      metadata: null,
      exclude: [],
    });
    return (await store.transition({
      id,
      from: "claiming",
      to: "claimed",
      actor: "claim",
      reason: "ok",
      set: { conversationId: `c-${id}`, claimedAt: new Date() },
      fence: { claimAttempt: `a-${id}` },
    }))!;
  }
  const reset = () => {
    onReset = null;
    status = CLEAN;
    resetFails = false;
  };

  it("a pass that crashes the agent while it is reset is overtaken: the release ends on its verified reset", async () => {
    reset();
    const a = await agent();
    onReset = async () => {
      // The pass saw the runtime without its conversation: "runtime lost its conversation".
      await store.applyObservations([
        {
          id: a.id,
          expectedStatus: "claimed",
          status: "crashed",
          reason: "runtime lost its conversation",
          providerRef: a.providerRef,
          url: a.url,
          deployStatus: "SUCCESS",
          runtimeVersion: null,
          runtimeType: null,
          image: null,
          healthCheckedAt: new Date(),
          healthOkAt: new Date(),
          healthFailures: 0,
          healthError: null,
          conversationId: null,
          resourceGone: false,
        },
      ]);
    };
    const r = await releaseAgent(opts(), a.id);
    assert.deepEqual([r.status, r.clean], ["idle", true]);
    const row = (await store.getInstance(a.id))!;
    assert.deepEqual(
      [row.status, row.agentName, row.conversationId, row.claimKey, row.claimSource, row.claimedAt, row.operation],
      ["idle", null, null, null, null, null, null],
    );
    const [last, before] = await store.listEvents(a.id, 2);
    assert.deepEqual([before?.toStatus, last?.fromStatus, last?.toStatus, last?.actor], ["crashed", "crashed", "idle", "operator"]);
  });

  it("a kill during the reset wins: the release writes nothing and says so", async () => {
    reset();
    const a = await agent();
    onReset = async () => {
      await store.transition({ id: a.id, from: "claimed", to: "dead", actor: "operator", reason: "killed" });
    };
    await assert.rejects(releaseAgent(opts(), a.id), (err: PoolError) => {
      assert.equal(err.code, "CONFLICT");
      assert.match(err.message, /it is dead now/);
      return true;
    });
    const row = (await store.getInstance(a.id))!;
    assert.equal(row.status, "dead");
    assert.equal((await store.listEvents(a.id, 1))[0]?.reason, "killed");
  });

  it("one operation at a time: a second release, or an upgrade's hold, is refused while one runs", async () => {
    reset();
    const a = await agent();
    let second: unknown = null;
    let upgradeHold = "";
    onReset = async () => {
      second = await releaseAgent(opts(), a.id).catch((e: unknown) => e);
      const held = await store.beginOperation({ id: a.id, kind: "upgrade", token: "up-x", ttlMs: 60_000, from: ["claimed"], refuseProtected: true });
      upgradeHold = held.kind;
    };
    const r = await releaseAgent(opts(), a.id);
    assert.equal(r.status, "idle");
    assert.equal((second as PoolError).code, "OPERATION_IN_PROGRESS");
    assert.match((second as PoolError).message, /A release of instance/);
    assert.equal(upgradeHold, "refused");
  });

  it("a runtime that does not answer its reset is retired and deleted at the provider; protected and idle ones are refused", async () => {
    reset();
    const a = await agent();
    resetFails = true;
    const r = await releaseAgent(opts(), a.id);
    assert.deepEqual([r.status, r.clean, r.deleteError], ["dead", false, null]);
    assert.match(r.reason, /reset failed: connection refused/);
    const row = (await store.getInstance(a.id))!;
    assert.ok(row.deletedAt);
    assert.equal(memory.fleet.has(a.providerRef!), false);

    reset();
    const dirty = await agent();
    status = { ...CLEAN, clean: false };
    assert.equal((await releaseAgent(opts(), dirty.id)).status, "dead");

    reset();
    const b = await agent();
    await store.setProtected(b.id, true);
    await assert.rejects(releaseAgent(opts(), b.id), (err: PoolError) => err.code === "INSTANCE_PROTECTED");
    await store.transition({ id: b.id, from: "claimed", to: "dead", actor: "operator", reason: "killed" });
    await assert.rejects(releaseAgent(opts(), "i-nobody"), (err: PoolError) => err.code === "INSTANCE_NOT_FOUND");
  });
});
