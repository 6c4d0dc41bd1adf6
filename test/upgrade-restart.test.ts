/**
 * An upgrade job survives a restart of the pool manager (issue 11), with real processes: the pool
 * manager runs as `agent-pool serve` on the local provider; it is SIGKILLed (its instances outlive
 * it), leaving an upgrade job running under a runner that is gone, one agent mid-upgrade (its item
 * running, the instance held). The next pool manager adopts the instances, takes the job over once
 * its heartbeat is stale, releases the dead runner's hold, and upgrades both agents: each process is
 * restarted with the template's new environment, and the job ends done, reported as resumed.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/db/open.ts";
import { cleanUpPool, runtimeProcesses, startPoolProcess, waitFor, type PoolProcess } from "./support/process.ts";

describe("an upgrade job across a restart of the pool manager", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-upgrade-restart-"));
  const env = { DATA_DIR: dataDir, TICK_INTERVAL_MS: "500", POOL_MIN_IDLE: "2", POOL_MAX_TOTAL: "5", UPGRADE_JOB_STALE_MS: "1500", LOG_LEVEL: "warn" };
  let pool: PoolProcess | null = null;
  let key = "";
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${pool!.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, body: (await r.json()) as any };
  };

  before(async () => {
    pool = await startPoolProcess(env);
    key = readFileSync(join(dataDir, "api-key"), "utf8").trim();
  });
  after(async () => {
    await cleanUpPool(pool, dataDir);
  });

  it("is taken over by the next pool manager and finished, never lost", { timeout: 120_000 }, async () => {
    await waitFor("2 idle", async () => (await api("GET", "/api/pool/counts")).body.idle >= 2, 30_000);
    const agents: string[] = [];
    for (const name of ["Ada", "Bea"]) {
      const r = await api("POST", "/api/pool/claim", { agentName: name });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      agents.push(r.body.instanceId);
    }
    const patched = await api("PATCH", "/api/pools/default", { env: { RUNTIME_VERSION: "9.9.9" } });
    assert.equal(patched.body.templateChanged, true);
    const hash = patched.body.pool.templateHash as string;
    const pidsBefore = runtimeProcesses(dataDir)
      .map((p) => p.pid)
      .sort();

    // The pool manager dies (no shutdown: a crash, an OOM kill). Its instances keep running. (The
    // template change starts a rollout, which may have started a new instance between the snapshot and
    // the kill: every instance seen before must still run, more may.)
    pool!.child.kill("SIGKILL");
    await pool!.exited;
    const alive = new Set(runtimeProcesses(dataDir).map((p) => p.pid));
    assert.deepEqual(
      pidsBefore.filter((p) => !alive.has(p)),
      [],
      "every runtime that ran before the kill still runs",
    );

    // What it left: a running upgrade job of both agents, the first one mid-upgrade.
    const store = await openStore({ dataDir: join(dataDir, "pglite") });
    const jobId = "up-left-running";
    try {
      const poolRow = (await store.getPool("default"))!;
      await store.createUpgradeJob({
        id: jobId,
        poolId: "default",
        templateHash: poolRow.templateHash,
        scope: "all",
        runner: "dead-runner",
        runnerToken: "tok-dead",
        items: agents.map((id) => ({ instanceId: id, state: "pending" as const, fromHash: "old", detail: null })),
      });
      assert.equal(await store.updateUpgradeItem({ id: jobId, runnerToken: "tok-dead" }, agents[0]!, { state: "running" }), true);
      const held = await store.beginOperation({
        id: agents[0]!,
        kind: "upgrade",
        token: `upgrade:${jobId}:tok-dead:0`,
        ttlMs: 3_600_000,
        from: ["claimed", "pending_acceptance", "crashed"],
        refuseProtected: false,
      });
      assert.equal(held.kind, "begun");
    } finally {
      await store.close();
    }

    // The next pool manager: adopts the instances, takes the job over once its heartbeat is stale.
    pool = await startPoolProcess(env);
    const job = await waitFor(
      "the job taken over and done",
      async () => {
        const r = await api("GET", `/api/upgrades/${jobId}`);
        return r.body.job?.state === "done" ? r.body.job : null;
      },
      60_000,
      200,
    );
    assert.equal(job.resumed, 1, "reported as resumed");
    assert.notEqual(job.runner, "dead-runner");
    assert.deepEqual(
      job.items.map((i: any) => [i.instanceId, i.state, i.toHash]),
      agents.map((id) => [id, "upgraded", hash]),
    );
    for (const id of agents) {
      const inst = (await api("GET", `/api/pool/instances/${id}`)).body.instance;
      assert.equal(inst.templateHash, hash);
    }
    // Each agent's process was restarted with the template's environment: it reports the new version.
    await waitFor(
      "the new version reported by both",
      async () => {
        const rows = await Promise.all(agents.map(async (id) => (await api("GET", `/api/pool/instances/${id}`)).body.instance));
        return rows.every((r) => r.runtimeVersion === "9.9.9");
      },
      30_000,
      200,
    );
    const pidsAfter = runtimeProcesses(dataDir).map((p) => p.pid);
    for (const id of agents) {
      const p = runtimeProcesses(dataDir).find((x) => x.env.INSTANCE_ID === id);
      assert.ok(p, `a process for ${id}`);
      assert.equal(p.env.RUNTIME_VERSION, "9.9.9");
      assert.equal(pidsBefore.includes(p.pid), false, "a new process");
    }
    assert.ok(pidsAfter.length >= agents.length);
  });
});
