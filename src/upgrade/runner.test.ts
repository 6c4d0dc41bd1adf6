/**
 * The upgrade runner on a real store (in-memory PGlite) with an in-memory provider: which agents a
 * job touches (a table), a job run to the end, and a job whose runner stops mid-upgrade taken over
 * by another runner: the interrupted agent is upgraded again by the new runner, and the old runner's
 * late writes (its item, its hold, the template hash) change nothing.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { openStore } from "../db/open.ts";
import type { InstanceRecord, PoolRecord, Store } from "../db/store.ts";
import type { InstanceStatus } from "../instance/status.ts";
import { silentLogger } from "../logger.ts";
import { MemoryProvider } from "../provider/memory.ts";
import type { Provider, UpgradeInstanceSpec } from "../provider/provider.ts";
import { waitFor } from "../../test/support/process.ts";
import { planItems, skipReason } from "./select.ts";
import { UpgradeRunner } from "./runner.ts";

describe("which agents an upgrade touches", () => {
  const pool = { id: "p", templateHash: "new" } as PoolRecord;
  const inst = (status: InstanceStatus, o: Partial<InstanceRecord> = {}): InstanceRecord =>
    ({
      id: `i-${status}`,
      poolId: "p",
      status,
      templateHash: "old",
      protected: false,
      deletedAt: null,
      agentName: "Ada",
      claimedAt: new Date(),
      ...o,
    }) as InstanceRecord;
  const CASES: Array<[string, InstanceRecord | null, "instance" | "ids" | "all", RegExp | null]> = [
    ["a claimed agent on an old template", inst("claimed"), "all", null],
    ["a pending agent", inst("pending_acceptance"), "ids", null],
    ["a crashed agent", inst("crashed"), "instance", null],
    ["mid-claim: never", inst("claiming"), "instance", /being claimed/],
    ["idle: a rollout's, not an upgrade's", inst("idle"), "instance", /idle instances are replaced by rollouts/],
    ["starting", inst("starting"), "all", /only agents/],
    ["protected, in bulk", inst("claimed", { protected: true }), "all", /^protected$/],
    ["protected, in a list", inst("claimed", { protected: true }), "ids", /^protected$/],
    ["protected, named alone: the operator's call", inst("claimed", { protected: true }), "instance", null],
    ["already current", inst("claimed", { templateHash: "new" }), "instance", /already on the current template/],
    ["dead", inst("dead"), "instance", /gone/],
    ["deleted", inst("claimed", { deletedAt: new Date() }), "instance", /gone/],
    ["unknown", null, "ids", /gone/],
    ["another pool's", inst("claimed", { poolId: "q" }), "ids", /not an instance of pool p/],
    ["crashed before anyone had it", inst("crashed", { agentName: null, claimedAt: null }), "instance", /before it was handed to anyone/],
  ];
  for (const [name, row, scope, expected] of CASES) {
    it(name, () => {
      const why = skipReason(row, pool, scope);
      if (expected === null) assert.equal(why, null);
      else assert.match(why ?? "", expected);
    });
  }

  it("all: every agent of the pool behind its template, protected ones listed as skipped; ids: each named", () => {
    const rows = [
      inst("claimed", { id: "a" }),
      inst("claimed", { id: "b", protected: true }),
      inst("claimed", { id: "c", templateHash: "new" }),
      inst("idle", { id: "d" }),
      inst("claiming", { id: "e" }),
      inst("crashed", { id: "f" }),
    ];
    assert.deepEqual(
      planItems(pool, "all", rows).map((i) => [i.instanceId, i.state, i.detail]),
      [
        ["a", "pending", null],
        ["b", "skipped", "protected"],
        ["f", "pending", null],
      ],
    );
    assert.deepEqual(
      planItems(pool, "ids", rows, ["a", "d", "zz", "a"]).map((i) => [i.instanceId, i.state]),
      [
        ["a", "pending"],
        ["d", "skipped"],
        ["zz", "skipped"],
      ],
    );
  });
});

describe("the upgrade runner", () => {
  let store: Store;
  let memory: MemoryProvider;
  /** Upgrades wait here while `hold` is set; each waiting one is released by calling its function. */
  let hold = false;
  const waiting: Array<() => void> = [];
  const provider: Provider = {
    kind: "memory",
    list: () => memory.list(),
    create: (s) => memory.create(s),
    delete: (r) => memory.delete(r),
    rename: (r, n) => memory.rename(r, n),
    close: async () => {},
    upgrade: async (ref: string, spec: UpgradeInstanceSpec) => {
      if (hold) await new Promise<void>((r) => waiting.push(r));
      await memory.upgrade(ref, spec);
    },
  };
  const runners: UpgradeRunner[] = [];
  const runner = (name: string, o: { heartbeatMs?: number; staleMs?: number } = {}) => {
    const r = new UpgradeRunner({
      store,
      providers: new Map([["memory", provider]]),
      ownerId: "own01",
      logger: silentLogger,
      runner: name,
      concurrency: 1,
      ...o,
    });
    runners.push(r);
    return r;
  };

  let n = 0;
  /** A claimed agent of pool `p` on template `old`, at the provider. */
  async function agent(): Promise<InstanceRecord> {
    const id = `i-agent${n++}`;
    await store.insertInstance({ id, poolId: "p", provider: "memory", name: id, gatewayToken: `tok-${id}`, templateHash: "old", reason: "test" });
    const made = await memory.create({ instanceId: id, poolId: "p", name: id, gatewayToken: `tok-${id}`, ownerId: "own01", env: {} });
    await store.setProviderRef(id, made.ref, made.url, "SUCCESS");
    await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "up" });
    await store.claimIdle({
      poolIds: ["p"],
      owner: "t",
      attempt: `a-${id}`,
      attemptTtlMs: 60_000,
      claimKey: null,
      source: null,
      agentName: "Ada",
      instructions: "x",
      joinUrl: null,
      profileImage: null,
      metadata: null,
      exclude: [],
    });
    return (await store.transition({ id, from: "claiming", to: "claimed", actor: "claim", reason: "ok", fence: { claimAttempt: `a-${id}` } }))!;
  }

  before(async () => {
    store = await openStore({ dataDir: null });
    memory = new MemoryProvider({ ownerId: "own01" });
    await store.upsertPool({ id: "p", minIdle: 0, maxTotal: 20 });
    const p = (await store.getPool("p"))!;
    await store.savePool({ ...p, image: "img:2", templateHash: "new", previousTemplate: null });
  });
  after(async () => {
    hold = false;
    for (const w of waiting.splice(0)) w();
    await Promise.all(runners.map((r) => r.stop()));
    await store.close();
  });

  it("runs a job to the end: each agent redeployed with the pool's template and its hash recorded", async () => {
    const a = await agent();
    const b = await agent();
    const r = runner("r-plain");
    const pool = (await store.getPool("p"))!;
    const job = await r.submit({ pool, scope: "ids", instances: [a, b], ids: [a.id, b.id] });
    const done = await waitFor("done", async () => ((await store.getUpgradeJob(job.id))?.state === "done" ? store.getUpgradeJob(job.id) : null), 5_000, 20);
    assert.deepEqual(
      done!.items.map((i) => [i.state, i.toHash]),
      [
        ["upgraded", "new"],
        ["upgraded", "new"],
      ],
    );
    for (const x of [a, b]) {
      const row = (await store.getInstance(x.id))!;
      assert.deepEqual([row.templateHash, row.operation, row.status], ["new", null, "claimed"]);
      assert.equal(memory.fleet.get(row.providerRef!)?.image, "img:2");
    }
  });

  it("a job whose runner stopped mid-upgrade is taken over: the interrupted agent is upgraded again, the old runner's late writes change nothing", async () => {
    const a = await agent();
    const b = await agent();
    hold = true;
    // The first runner never renews its heartbeat (it is as good as dead once the upgrade hangs).
    const dead = runner("r-dead", { heartbeatMs: 3_600_000, staleMs: 3_600_000 });
    const pool = (await store.getPool("p"))!;
    const job = await dead.submit({ pool, scope: "all", instances: [a, b] });
    await waitFor("the first upgrade in flight", () => waiting.length === 1, 5_000, 10);
    const inFlight = (await store.getUpgradeJob(job.id))!.items.find((i) => i.state === "running")!;
    assert.equal((await store.getInstance(inFlight.instanceId))?.operation, "upgrade", "held while it upgrades");

    // Another runner (the restarted pool manager) takes the job over once its heartbeat is stale.
    const next = runner("r-next", { staleMs: 300, heartbeatMs: 100 });
    const deadHold = waiting.shift()!; // the dead runner's call stays stuck for now
    hold = false;
    next.start();
    const done = await waitFor(
      "taken over and done",
      async () => {
        const j = await store.getUpgradeJob(job.id);
        return j?.state === "done" ? j : null;
      },
      10_000,
      20,
    );
    assert.deepEqual([done.runner, done.resumed], ["r-next", 1]);
    assert.deepEqual(
      done.items.map((i) => i.state),
      ["upgraded", "upgraded"],
    );
    // The dead runner's call now returns: its hold and its item are gone, nothing it writes lands.
    deadHold();
    await waitFor("the dead runner stops", () => dead.runningJobs === 0, 5_000, 10);
    const after = (await store.getUpgradeJob(job.id))!;
    assert.deepEqual(
      after.items.map((i) => [i.state, i.detail?.startsWith("redeployed")]),
      [
        ["upgraded", true],
        ["upgraded", true],
      ],
    );
    assert.equal(after.runner, "r-next");
    // The interrupted agent was redeployed twice (the late call, then the new runner's), the other once.
    const other = inFlight.instanceId === a.id ? b.id : a.id;
    assert.equal(memory.upgrades.filter((u) => u.spec.instanceId === inFlight.instanceId).length, 2);
    assert.equal(memory.upgrades.filter((u) => u.spec.instanceId === other).length, 1);
    for (const x of [a, b]) assert.deepEqual([(await store.getInstance(x.id))?.templateHash, (await store.getInstance(x.id))?.operation], ["new", null]);
  });
});
