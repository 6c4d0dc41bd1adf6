/**
 * Resources with their instances, on PGlite with the in-memory provider: made before the provider
 * is asked and handed to it in the environment, nothing left behind by a create that fails (before
 * or after the key was made), and the resource reconciler collecting what no live instance owns:
 * never on a failed or partial listing, never another owner's, capped, after the grace period.
 */
import { after, afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { OpenRouterStandin } from "../../test/support/openrouter-standin.ts";
import { ManualClock, type IdSource } from "../clock.ts";
import { openStore } from "../db/open.ts";
import type { Store } from "../db/store.ts";
import type { HealthChecker, InstanceTarget, RuntimeStatus } from "../instance/client.ts";
import { silentLogger } from "../logger.ts";
import { Reconciler } from "../pool/reconciler.ts";
import { MemoryProvider } from "../provider/memory.ts";
import type { CreateInstanceSpec, Provider, ProviderInstance } from "../provider/provider.ts";
import { resourceName, type ResourceKind } from "./kind.ts";
import { MemoryKind } from "./memory.ts";
import { OpenRouterKind } from "./openrouter.ts";
import { ResourceReconciler } from "./reconciler.ts";
import { ResourceService } from "./service.ts";

const PROVISIONING = "sk-or-v1-provisioning-reconciler-test-0000000000000000";
const GRACE = 600_000;

class Healthy implements HealthChecker {
  async check() {
    return { health: { ready: true, conversationId: null, pending: false, clean: true, version: "1" } };
  }
  async status(_t: InstanceTarget): Promise<RuntimeStatus> {
    return { conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null };
  }
}

/** A provider that remembers the environment each instance was created with. */
class EnvProvider extends MemoryProvider {
  readonly envOf = new Map<string, Record<string, string>>();
  override async create(spec: CreateInstanceSpec): Promise<ProviderInstance> {
    const p = await super.create(spec);
    this.envOf.set(spec.instanceId, { ...spec.env });
    return p;
  }
}

let n = 0;
const ids: IdSource = { instanceId: () => `i-r${String(++n).padStart(4, "0")}`, token: () => `tok-${n}` };

describe("resources with their instances", () => {
  let store: Store;
  let standin: OpenRouterStandin;
  let clock: ManualClock;
  let provider: EnvProvider;
  let poolId = "p0";
  let pools = 0;

  after(async () => {
    await standin?.close();
  });
  afterEach(async () => {
    await store?.close();
  });
  // One reconciler serves every pool of a database: each test gets its own (in-memory) one.
  beforeEach(async () => {
    store = await openStore({ dataDir: null });
    await store.ensureOwnerId("own01");
    await standin?.close();
    clock = new ManualClock(Date.now());
    standin = await new OpenRouterStandin({ provisioningKey: PROVISIONING, clock }).start();
    provider = new EnvProvider({ clock });
    poolId = `rp${++pools}`;
    await store.upsertPool({ id: poolId, minIdle: 2, maxTotal: 10 });
  });

  async function setup(kinds?: ResourceKind[], over: { minIdle?: number; maxDeletes?: number } = {}) {
    if (over.minIdle !== undefined) await store.upsertPool({ id: poolId, minIdle: over.minIdle, maxTotal: 10 });
    const kindList = kinds ?? [new OpenRouterKind({ apiUrl: standin.apiUrl, provisioningKey: PROVISIONING, keyLimit: 20, maxLimit: 100 })];
    const service = new ResourceService({ store, kinds: kindList, ownerId: "own01", environment: "test", logger: silentLogger });
    const runtimes = new Healthy();
    const reconciler = new Reconciler({
      ownerId: "own01",
      store,
      providers: new Map([["memory", provider as Provider]]),
      defaultProvider: "memory",
      health: runtimes,
      statusReader: runtimes,
      clock,
      ids,
      logger: silentLogger,
      spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 },
      policy: { stuckTimeoutMs: 15 * 60_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 },
      intervalMs: 1000,
      healthTimeoutMs: 1000,
      healthConcurrency: 8,
      holder: `pool-${poolId}`,
      resources: service,
    });
    const collector = new ResourceReconciler({
      store,
      kinds: kindList,
      ownerId: "own01",
      clock,
      logger: silentLogger,
      orphanGraceMs: GRACE,
      maxDeletesPerPass: over.maxDeletes ?? 10,
      intervalMs: 1000,
      // One holder for every test: the `resources` lease is one per database.
      holder: "res-test",
    });
    return { service, reconciler, collector };
  }

  const keysOf = (instanceIds: readonly string[]) => instanceIds.map((id) => standin.keyOfInstance(id));

  it("each new instance boots with its own key in its environment; only the key's hash is recorded", async () => {
    const { reconciler } = await setup();
    const r = await reconciler.tick();
    assert.equal(r.created.length, 2);
    const keys = keysOf(r.created);
    assert.ok(keys.every((k) => k !== undefined));
    for (const [i, id] of r.created.entries()) {
      assert.equal(provider.envOf.get(id)?.OPENROUTER_API_KEY, keys[i]!.key, "the instance got its own key");
      const [res] = await store.listResources({ instanceId: id });
      assert.deepEqual([res?.state, res?.ref, res?.limit], ["ready", keys[i]!.hash, 20]);
      assert.ok(!JSON.stringify(res).includes(keys[i]!.key), "the secret is never recorded");
    }
    assert.notEqual(keys[0]!.key, keys[1]!.key);
    // The key's name carries the pool, the environment, the instance id and the owner id.
    assert.equal(keys[0]!.name, resourceName({ ownerId: "own01", poolId, environment: "test", instanceId: r.created[0]! }));
  });

  it("a required key that cannot be made fails the create cleanly: no provider call, row dead, nothing left", async () => {
    const { reconciler } = await setup(undefined, { minIdle: 1 });
    standin.failNext("create", 503);
    const r = await reconciler.tick();
    assert.equal(provider.calls.create, 0, "no provider call");
    assert.equal(r.created.length, 0);
    assert.match(r.errors.join(), /resources: openrouter: openrouter create: answered 503/);
    const rows = await store.listInstances(poolId, { includeDeleted: true });
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.status, "dead");
    assert.ok(rows[0]!.deletedAt, "no provider resource: the row is done");
    assert.equal(standin.keys.size, 0);
  });

  it("a create that fails at the provider after the key was made deletes the key at once", async () => {
    const { reconciler } = await setup(undefined, { minIdle: 1 });
    provider.failCreates = 1;
    const r = await reconciler.tick();
    assert.equal(provider.calls.create, 1);
    assert.equal(r.created.length, 0);
    const [row] = await store.listInstances(poolId, { includeDeleted: true });
    assert.equal(row?.status, "dead");
    assert.equal(standin.keys.size, 0, "the key made for it is gone");
    assert.equal(standin.deleted.size, 1);
    const res = (await store.resourceOwnership("openrouter", [row!.id]))[0];
    assert.deepEqual(res?.resources, [], "its row is marked deleted");
  });

  it("a key made but whose answer was lost fails the create, and is collected once past the grace period", async () => {
    const { reconciler, collector } = await setup(undefined, { minIdle: 1 });
    standin.createThenFail = 1;
    const r = await reconciler.tick();
    assert.equal(provider.calls.create, 0);
    assert.equal(r.created.length, 0);
    assert.equal(standin.keys.size, 1, "the vendor made it");
    const first = await collector.runOnce();
    assert.deepEqual([first.orphansDeleted, first.waiting], [[], 1], "young: left alone");
    assert.equal(standin.keys.size, 1);
    clock.advance(GRACE + 1);
    const second = await collector.runOnce();
    assert.equal(second.orphansDeleted.length, 1);
    assert.equal(second.orphansDeleted[0]!.reason, "instance gone");
    assert.equal(standin.keys.size, 0);
  });

  it("a key whose instance is gone is collected: killed, deleted, or never known to this database", async () => {
    const { reconciler, collector } = await setup();
    const r = await reconciler.tick();
    const [a, b] = r.created;
    const keyA = standin.keyOfInstance(a!)!;
    // A kill marks the row dead: the next pass releases its key by the row.
    await store.transition({ id: a!, from: ["starting", "idle"], to: "dead", actor: "operator", reason: "killed" });
    // A key of ours for an instance this database never had (a leak from before).
    const stray = standin.add(
      resourceName({ ownerId: "own01", poolId, environment: "test", instanceId: "i-stray" }),
      new Date(clock.now().getTime() - GRACE - 1),
    );
    // Another deployment's key, and one named otherwise: never touched.
    const theirs = standin.add(resourceName({ ownerId: "other", poolId, environment: "test", instanceId: "i-theirs" }), new Date(0));
    const byHand = standin.add("assistant-production-i-1", new Date(0));
    const pass = await collector.runOnce();
    assert.deepEqual(
      pass.released.map((x) => x.ref),
      [keyA.hash],
    );
    assert.deepEqual(
      pass.orphansDeleted.map((x) => [x.ref, x.reason]),
      [[stray.hash, "instance gone"]],
    );
    assert.equal(pass.foreign, 1);
    assert.ok(!standin.keys.has(keyA.hash) && !standin.keys.has(stray.hash));
    assert.ok(standin.keys.has(theirs.hash) && standin.keys.has(byHand.hash));
    assert.ok(standin.keyOfInstance(b!), "the live instance keeps its key");
  });

  it("a partial or failed key listing deletes nothing", async () => {
    const mem = new MemoryKind({ kind: "openrouter", clock });
    const { reconciler, collector } = await setup([mem]);
    await reconciler.tick();
    const orphan = mem.add(resourceName({ ownerId: "own01", poolId, environment: "test", instanceId: "i-orphan" }), new Date(0));
    mem.partialOmit = 1;
    let pass = await collector.runOnce();
    assert.equal(pass.listings.openrouter, "partial");
    assert.deepEqual(pass.orphansDeleted, []);
    mem.partialOmit = 0;
    mem.failLists = 1;
    pass = await collector.runOnce();
    assert.equal(pass.listings.openrouter, "failed");
    assert.deepEqual(pass.orphansDeleted, []);
    assert.ok(mem.held.has(orphan));
    pass = await collector.runOnce();
    assert.deepEqual(
      pass.orphansDeleted.map((d) => d.ref),
      [orphan],
      "a complete listing collects it",
    );
  });

  it("caps deletes per pass, and retries a release the vendor refused", async () => {
    const mem = new MemoryKind({ kind: "openrouter", clock });
    const { collector } = await setup([mem], { maxDeletes: 2 });
    for (let i = 0; i < 5; i++) mem.add(resourceName({ ownerId: "own01", poolId, environment: "test", instanceId: `i-leak${i}` }), new Date(0));
    let pass = await collector.runOnce();
    assert.equal(pass.orphansDeleted.length, 2);
    assert.equal(mem.held.size, 3);
    pass = await collector.runOnce();
    pass = await collector.runOnce();
    assert.equal(mem.held.size, 0);
  });

  it("a release the vendor refuses is retried at the next pass", async () => {
    const mem = new MemoryKind({ kind: "openrouter", clock });
    const { reconciler, collector } = await setup([mem], { minIdle: 1 });
    const [id] = (await reconciler.tick()).created;
    await store.transition({ id: id!, from: ["starting", "idle"], to: "dead", actor: "operator", reason: "killed" });
    mem.failDeletes = 1;
    let pass = await collector.runOnce();
    assert.equal(pass.released.length, 0);
    assert.match(pass.errors.join(), /simulated delete failure/);
    assert.equal(mem.held.size, 1);
    pass = await collector.runOnce();
    assert.equal(pass.released.length, 1);
    assert.equal(mem.held.size, 0);
  });

  it("records spend from the listing for the dashboard, and bounds top-ups by the maximum", async () => {
    const { reconciler, collector, service } = await setup(undefined, { minIdle: 1 });
    const [id] = (await reconciler.tick()).created;
    const key = standin.keyOfInstance(id!)!;
    standin.spend(key.hash, 3.25);
    const pass = await collector.runOnce();
    assert.equal(pass.usageRecorded, 1);
    const spend = await service.spendByInstance(poolId);
    assert.deepEqual([spend.get(id!)?.usage, spend.get(id!)?.limit, spend.get(id!)?.remaining], [3.25, 20, 16.75]);
    const up = await service.topUp(id!, 30);
    assert.deepEqual([up.previousLimit, up.limit], [20, 50]);
    assert.equal(standin.keys.get(key.hash)?.limit, 50);
    await assert.rejects(
      service.topUp(id!, 50.01),
      (err: { code?: string; message: string }) => err.code === "TOP_UP_OVER_MAX" && /at most \$50\.00 more/.test(err.message),
    );
    assert.equal(standin.keys.get(key.hash)?.limit, 50, "a refused top-up changes nothing at the vendor");
    await service.topUp(id!, 50);
    assert.equal(standin.keys.get(key.hash)?.limit, 100);
    await assert.rejects(service.topUp(id!, 0.01), (err: { code?: string }) => err.code === "TOP_UP_OVER_MAX");
    const credits = await service.credits(id!);
    assert.deepEqual([credits.live, credits.limit, credits.usage, credits.remaining], [true, 100, 3.25, 96.75]);
    standin.failNext("get", 502);
    const stale = await service.credits(id!);
    assert.deepEqual([stale.live, stale.limit, stale.usage], [false, 100, 3.25], "the vendor down: the last numbers recorded");
  });

  it("an optional kind that fails leaves the instance without it; an on-demand kind is made only when asked", async () => {
    const optional = new MemoryKind({ kind: "optional", required: false, clock, envName: "OPTIONAL_KEY" });
    const onDemand = new MemoryKind({ kind: "inbox", when: "on-demand", clock, envName: "INBOX" });
    const { reconciler, service } = await setup([optional, onDemand], { minIdle: 1 });
    optional.failCreates = 1;
    const [id] = (await reconciler.tick()).created;
    assert.ok(id, "created without the optional resource");
    assert.equal(provider.envOf.get(id!)?.OPTIONAL_KEY, undefined);
    assert.equal(onDemand.calls.create, 0);
    const env = await service.ensure(id!, "inbox");
    assert.ok(env?.INBOX);
    assert.equal(await service.ensure(id!, "inbox"), null, "one per instance");
    await assert.rejects(service.ensure(id!, "optional"), /No on-demand resource kind/);
  });

  it("a resource judged an orphan is judged again right before its delete, and a duplicate of a live instance goes", async () => {
    const mem = new MemoryKind({ kind: "openrouter", clock });
    const id = "i-late";
    await store.insertInstance({ id, poolId, provider: "memory", name: id, gatewayToken: "t", reason: "test" });
    const intent = await store.insertResourceIntent({
      id: "r-late",
      instanceId: id,
      poolId,
      kind: "openrouter",
      name: resourceName({ ownerId: "own01", poolId, environment: "test", instanceId: id }),
    });
    assert.ok(intent);
    const made = await mem.create({ resourceId: "r-late", instanceId: id, poolId, name: intent.name });
    await store.recordResourceCreated("r-late", made.ref, 20, 0);
    // A second key for the same live instance, recorded by nobody: a duplicate.
    const dup = mem.add(intent.name, new Date(0));
    clock.advance(GRACE + 1);
    // The pass's first read of the rows is stale (it sees no row for the instance): both keys look
    // like orphans; the second look, right before each delete, spares the recorded one.
    let stale = true;
    const staleStore = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === "resourceOwnership") {
          return async (kind: string, ids: readonly string[]) => {
            const real = await target.resourceOwnership(kind, ids);
            if (!stale) return real;
            stale = false;
            return real.map((o) => ({ ...o, resources: [] }));
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const collector = new ResourceReconciler({
      store: staleStore,
      kinds: [mem],
      ownerId: "own01",
      clock,
      logger: silentLogger,
      orphanGraceMs: GRACE,
      maxDeletesPerPass: 10,
      intervalMs: 1000,
      holder: "res-test",
    });
    const pass = await collector.runOnce();
    assert.deepEqual(pass.spared, [made.ref]);
    assert.deepEqual(
      pass.orphansDeleted.map((d) => d.ref),
      [dup],
    );
    assert.ok(mem.held.has(made.ref));
  });

  it("acts only while it holds the resources lease", async () => {
    const mem = new MemoryKind({ kind: "openrouter", clock });
    const { collector } = await setup([mem]);
    await collector.runOnce();
    await collector.stop(); // lets go of the lease (held by this holder since earlier tests)
    const other = new ResourceReconciler({
      store,
      kinds: [mem],
      ownerId: "own01",
      clock,
      logger: silentLogger,
      orphanGraceMs: GRACE,
      maxDeletesPerPass: 10,
      intervalMs: 1000,
      holder: "someone-else",
    });
    await other.runOnce();
    mem.add(resourceName({ ownerId: "own01", poolId, environment: "test", instanceId: "i-x" }), new Date(0));
    const pass = await collector.runOnce();
    assert.equal(pass.leader, false);
    assert.equal(mem.held.size, 1);
    await other.stop();
    assert.equal((await collector.runOnce()).orphansDeleted.length, 1);
    await collector.stop();
  });
});
