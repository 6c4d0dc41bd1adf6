/**
 * Operators' actions on agents through the API (issue 11), end to end in-process: the real server
 * (`serve`) on PGlite with real reference runtimes behind a test provider that upgrades in place.
 * Release (clean → idle and claimable again, dirty → retired and deleted, protected / mid-claim /
 * idle refused, auth), upgrades (one agent, a pool's in bulk with live progress, a failure reported,
 * protected agents skipped in bulk, refusals) and versions.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.ts";
import { serve, type RunningPool } from "../src/serve.ts";
import { RuntimeProvider } from "./support/runtime-provider.ts";
import { waitFor } from "./support/process.ts";

interface Res {
  status: number;
  body: any;
  text: string;
}

describe("API: release, upgrades and versions of agents", () => {
  let pool: RunningPool;
  let provider: RuntimeProvider;
  let dir: string;
  const seen: string[] = [];

  const api = async (method: string, path: string, body?: unknown, key: string | null = pool.apiKey): Promise<Res> => {
    const h: Record<string, string> = {};
    if (key !== null) h.authorization = `Bearer ${key}`;
    if (body !== undefined) h["content-type"] = "application/json";
    const r = await fetch(`${pool.url}${path}`, { method, headers: h, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await r.text();
    seen.push(text);
    let parsed: any = null;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: r.status, body: parsed, text };
  };
  const row = async (id: string) => (await api("GET", `/api/pool/instances/${id}`)).body.instance;
  const idleOf = async (p: string) => (await api("GET", `/api/pool/counts?pool=${p}`)).body.idle as number;
  const claim = async (body: Record<string, unknown>) => {
    const r = await api("POST", "/api/pool/claim", { agentName: "Ada", instructions: "x", ...body });
    assert.equal(r.status, 200, r.text);
    return r.body as { instanceId: string; conversationId: string };
  };
  const reconcile = async () => assert.equal((await api("POST", "/api/pool/reconcile")).status, 200);
  const jobDone = async (id: string) =>
    waitFor(
      `upgrade job ${id} done`,
      async () => {
        const j = (await api("GET", `/api/upgrades/${id}`)).body.job;
        return j.state === "done" ? j : null;
      },
      15_000,
      50,
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agent-pool-agents-"));
    provider = new RuntimeProvider();
    pool = await serve(
      loadConfig({
        DATA_DIR: dir,
        PORT: "0",
        LOG_LEVEL: "silent",
        TICK_INTERVAL_MS: "3600000",
        POOL_MIN_IDLE: "2",
        POOL_MAX_TOTAL: "8",
        UPGRADE_CONCURRENCY: "1",
        RESET_TIMEOUT_MS: "2000",
      }),
      { provider },
    );
    await waitFor("2 idle", async () => (await idleOf("default")) === 2, 15_000, 50);
  });
  after(async () => {
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("needs the API key on every route, before the body is read", async () => {
    for (const [method, path, body] of [
      ["POST", "/api/pool/instances/i-x/release", undefined],
      ["POST", "/api/pool/instances/i-x/upgrade", undefined],
      ["POST", "/api/pools/default/upgrade", { nonsense: 1 }],
      ["GET", "/api/pools/default/upgrades", undefined],
      ["GET", "/api/upgrades/up-x", undefined],
      ["GET", "/api/pools/default/versions", undefined],
    ] as const) {
      for (const key of [null, "wrong-key-0123456789"]) {
        const r = await api(method, path, body, key);
        assert.equal(r.status, 401, `${method} ${path} with ${key}`);
        assert.equal(r.body.code, "UNAUTHORIZED");
      }
    }
  });

  it("release: a clean reset returns the agent to idle, its agent cleared, and it is claimed again", async () => {
    // A pool of exactly one instance: the second claim can only get the released one.
    assert.equal((await api("POST", "/api/pools", { id: "solo", minIdle: 1, maxTotal: 1 })).status, 201);
    await reconcile();
    await waitFor("solo idle", async () => (await idleOf("solo")) === 1, 15_000, 50);
    const first = await claim({ pool: "solo", agentName: "Solo" });
    const r = await api("POST", `/api/pool/instances/${first.instanceId}/release`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { ok: true, id: first.instanceId, status: "idle", clean: true, reason: "reset clean: back in the pool", deleteError: null });
    const inst = await row(first.instanceId);
    assert.deepEqual(
      [inst.status, inst.agentName, inst.instructions, inst.conversationId, inst.inviteUrl, inst.claimSource],
      ["idle", null, null, null, null, null],
    );
    const events = (await api("GET", `/api/pool/instances/${first.instanceId}`)).body.events;
    // Recorded as the operator's transition. A pass running meanwhile (the claim woke the reconciler)
    // may have seen the reset runtime without its conversation and crashed the agent first: the
    // release still ends on its verified reset.
    assert.deepEqual([events[0].to, events[0].actor], ["idle", "operator"]);
    assert.ok(["claimed", "crashed"].includes(events[0].from), events[0].from);
    const again = await claim({ pool: "solo", agentName: "Solo II" });
    assert.equal(again.instanceId, first.instanceId, "the same instance is reused, not replaced");
    assert.notEqual(again.conversationId, first.conversationId);
  });

  it("release: a runtime that stays dirty is retired, deleted at the provider, and replaced", async () => {
    provider.nextOptions.push({ resetDirty: true });
    await api("POST", "/api/pool/replenish", { count: 1 });
    await waitFor("3 idle", async () => (await idleOf("default")) >= 3, 15_000, 50);
    // The newest idle instance (the dirty one) is the one a claim takes.
    const a = await claim({});
    const ref = (await row(a.instanceId)).providerRef;
    const r = await api("POST", `/api/pool/instances/${a.instanceId}/release`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "dead");
    assert.equal(r.body.clean, false);
    assert.match(r.body.reason, /not clean/);
    const inst = await row(a.instanceId);
    assert.equal(inst.status, "dead");
    assert.ok(inst.deletedAt, "deleted at the provider");
    assert.equal(provider.running.has(ref), false);
  });

  it("release: refused for a protected agent (409 INSTANCE_PROTECTED), mid-claim, idle, or unknown", async () => {
    const a = await claim({ agentName: "Guarded" });
    assert.equal((await api("POST", `/api/pool/instances/${a.instanceId}/protect`, { protected: true })).status, 200);
    const refused = await api("POST", `/api/pool/instances/${a.instanceId}/release`);
    assert.equal(refused.status, 409);
    assert.equal(refused.body.code, "INSTANCE_PROTECTED");
    assert.match(refused.body.error, /protected/);
    assert.equal((await row(a.instanceId)).status, "claimed", "untouched");
    assert.equal((await api("POST", `/api/pool/instances/${a.instanceId}/protect`, { protected: false })).status, 200);

    // Mid-claim: a pool whose runtimes take a while to provision.
    provider.poolOptions.set("slow", { provisionDelayMs: 1_500 });
    assert.equal((await api("POST", "/api/pools", { id: "slow", minIdle: 1, maxTotal: 1 })).status, 201);
    await reconcile();
    await waitFor("slow idle", async () => (await idleOf("slow")) === 1, 15_000, 50);
    const slow = api("POST", "/api/pool/claim", { agentName: "Slow", instructions: "x", pool: "slow" });
    const claiming = await waitFor(
      "a claiming row",
      async () => {
        const rows = (await api("GET", "/api/pool/status?pool=slow")).body.instances as Array<{ id: string; status: string }>;
        return rows.find((x) => x.status === "claiming")?.id;
      },
      5_000,
      20,
    );
    const mid = await api("POST", `/api/pool/instances/${claiming}/release`);
    assert.equal(mid.status, 409);
    assert.equal(mid.body.code, "INVALID_TRANSITION");
    assert.match(mid.body.error, /being claimed/);
    assert.equal((await slow).status, 200);

    const idle = ((await api("GET", "/api/pool/status")).body.instances as Array<{ id: string; status: string }>).find((x) => x.status === "idle")!;
    const notAgent = await api("POST", `/api/pool/instances/${idle.id}/release`);
    assert.equal(notAgent.status, 409);
    assert.equal(notAgent.body.code, "INVALID_TRANSITION");
    assert.equal((await api("POST", "/api/pool/instances/i-nope/release")).status, 404);
  });

  let jobSingle: any;
  it("upgrade one agent: 202 with a job, the agent redeployed in place with the pool's new template, its hash recorded", async () => {
    const a = await claim({ agentName: "Up" });
    const before = await row(a.instanceId);
    const same = await api("POST", `/api/pool/instances/${a.instanceId}/upgrade`);
    assert.equal(same.status, 409, "already on the current template");
    assert.match(same.body.error, /already on the current template/);

    const patched = await api("PATCH", "/api/pools/default", { env: { RUNTIME_VERSION: "2.0.0" } });
    assert.equal(patched.body.templateChanged, true);
    const hash = patched.body.pool.templateHash as string;
    const r = await api("POST", `/api/pool/instances/${a.instanceId}/upgrade`);
    assert.equal(r.status, 202, r.text);
    assert.equal(r.body.job.scope, "instance");
    assert.equal(r.body.job.total, 1);
    jobSingle = await jobDone(r.body.job.id);
    assert.deepEqual([jobSingle.done, jobSingle.failed, jobSingle.skipped, jobSingle.remaining], [1, 0, 0, 0]);
    assert.deepEqual(
      [jobSingle.items[0].instanceId, jobSingle.items[0].state, jobSingle.items[0].fromHash, jobSingle.items[0].toHash],
      [a.instanceId, "upgraded", before.templateHash, hash],
    );
    const after = await row(a.instanceId);
    assert.equal(after.templateHash, hash);
    assert.equal(after.url, before.url, "same address");
    const up = provider.upgrades.at(-1)!;
    assert.equal(up.spec.instanceId, a.instanceId);
    assert.equal(up.spec.env.RUNTIME_VERSION, "2.0.0");
    assert.equal(up.spec.env.POOL_ID, "default", "the template's environment, as at create");
    // The new runtime reports its version on the next pass; like any restarted reference runtime it
    // came back without its conversation, and the normal health rules say so.
    await reconcile();
    const observed = await row(a.instanceId);
    assert.equal(observed.runtimeVersion, "2.0.0");
    assert.equal(observed.status, "crashed");
    const events = (await api("GET", `/api/pool/instances/${a.instanceId}`)).body.events as Array<{ actor: string; reason: string }>;
    assert.ok(
      events.some((e) => e.actor === "operator" && e.reason.startsWith(`upgraded to template ${hash}`)),
      JSON.stringify(events),
    );
    assert.equal((await api("GET", "/api/pools/default/upgrades")).body.jobs[0].id, jobSingle.id);
  });

  it("upgrade refused for an idle instance, one mid-claim, and an unknown one", async () => {
    const idle = ((await api("GET", "/api/pool/status")).body.instances as Array<{ id: string; status: string }>).find((x) => x.status === "idle")!;
    const r = await api("POST", `/api/pool/instances/${idle.id}/upgrade`);
    assert.equal(r.status, 409);
    assert.match(r.body.error, /idle instances are replaced by rollouts/);
    assert.equal((await api("POST", "/api/pool/instances/i-nope/upgrade")).status, 404);
    assert.equal((await api("GET", "/api/upgrades/up-nope")).status, 404);
    assert.equal((await api("GET", "/api/upgrades/up-nope")).body.code, "UPGRADE_NOT_FOUND");
  });

  it("bulk upgrade of a pool: live progress, a failure reported, protected agents skipped", async () => {
    await waitFor(
      "3 idle",
      async () => {
        const c = (await api("GET", "/api/pool/counts")).body;
        if (c.idle < 3 && c.starting === 0) await api("POST", "/api/pool/replenish", { count: 3 - c.idle });
        return c.idle >= 3;
      },
      15_000,
      50,
    );
    const agents = [await claim({ agentName: "B1" }), await claim({ agentName: "B2" }), await claim({ agentName: "B3" })];
    // Fresh claims of the current template: move the pool on again so they are all behind.
    const patched = await api("PATCH", "/api/pools/default", { env: { RUNTIME_VERSION: "3.0.0" } });
    const hash = patched.body.pool.templateHash as string;
    await api("POST", `/api/pool/instances/${agents[2]!.instanceId}/protect`, { protected: true });

    const bad = await api("POST", "/api/pools/default/upgrade", { ids: ["x"], all: true });
    assert.equal(bad.status, 400);
    assert.equal((await api("POST", "/api/pools/nope/upgrade", { all: true })).status, 404);

    // Hold every upgrade until the test lets it go; the first one fails at the provider.
    const gates: Array<() => void> = [];
    provider.upgradeGate = () => new Promise<void>((r) => gates.push(r));
    provider.failUpgrades = 1;
    const r = await api("POST", "/api/pools/default/upgrade", { all: true });
    assert.equal(r.status, 202, r.text);
    const id = r.body.job.id as string;
    const behind = r.body.job.items as Array<{ instanceId: string; state: string; detail: string | null }>;
    const byId = new Map(behind.map((i) => [i.instanceId, i]));
    assert.equal(byId.get(agents[2]!.instanceId)?.state, "skipped");
    assert.equal(byId.get(agents[2]!.instanceId)?.detail, "protected");
    assert.ok(byId.has(agents[0]!.instanceId) && byId.has(agents[1]!.instanceId));
    const total = r.body.job.total as number;
    const toRun = total - r.body.job.skipped;
    assert.ok(toRun >= 2, JSON.stringify(r.body.job));

    // One at a time (UPGRADE_CONCURRENCY=1): the progress is visible while the job runs.
    await waitFor("the first upgrade waiting", () => gates.length === 1, 5_000, 20);
    let j = (await api("GET", `/api/upgrades/${id}`)).body.job;
    assert.deepEqual([j.state, j.done, j.failed, j.remaining], ["running", 0, 0, toRun]);
    assert.equal(j.items.filter((i: any) => i.state === "running").length, 1);
    gates.shift()!(); // fails (failUpgrades)
    await waitFor("the second upgrade waiting", () => gates.length === 1, 5_000, 20);
    j = (await api("GET", `/api/upgrades/${id}`)).body.job;
    assert.deepEqual([j.state, j.failed, j.remaining], ["running", 1, toRun - 1]);
    const failedItem = j.items.find((i: any) => i.state === "failed");
    assert.match(failedItem.detail, /provider: simulated upgrade failure/);
    assert.notEqual((await row(failedItem.instanceId)).templateHash, hash, "a failed upgrade records nothing");
    provider.upgradeGate = null;
    gates.shift()!();
    const done = await jobDone(id);
    assert.deepEqual([done.done, done.failed, done.remaining], [toRun - 1, 1, 0]);
    for (const it of done.items.filter((i: any) => i.state === "upgraded")) assert.equal((await row(it.instanceId)).templateHash, hash);
    assert.notEqual((await row(agents[2]!.instanceId)).templateHash, hash, "the protected agent keeps its template");
  });

  it("versions: the pool's instances by template (current or not), runtime type, version and status", async () => {
    await reconcile();
    const r = await api("GET", "/api/pools/default/versions");
    assert.equal(r.status, 200, r.text);
    const pool = (await api("GET", "/api/pools/default")).body.pool;
    assert.equal(r.body.templateHash, pool.templateHash);
    const rows = r.body.versions as Array<{
      templateHash: string;
      current: boolean;
      runtimeType: string;
      runtimeVersion: string;
      status: string;
      count: number;
    }>;
    const status = (await api("GET", "/api/pool/status")).body.instances as Array<{ status: string }>;
    assert.equal(
      rows.reduce((n, x) => n + x.count, 0),
      status.filter((s) => s.status !== "dead").length,
      "every live instance counted once",
    );
    for (const x of rows) assert.equal(x.current, x.templateHash === pool.templateHash);
    assert.ok(
      rows.some((x) => x.current && x.runtimeVersion === "3.0.0"),
      JSON.stringify(rows),
    );
    assert.ok(
      rows.some((x) => !x.current),
      "older templates are shown",
    );
    assert.ok(rows.every((x) => x.runtimeType === null || x.runtimeType === "agent-pool-reference"));
    assert.equal((await api("GET", "/api/pools/nope/versions")).status, 404);
  });

  it("no answer carries a gateway token", async () => {
    const rows = await pool.store.listInstances(null, { includeDeleted: true });
    const all = seen.join("\n");
    for (const r of rows) assert.equal(all.includes(r.gatewayToken), false, `token of ${r.id} leaked`);
  });
});
