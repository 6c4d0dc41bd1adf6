/**
 * Rollouts end to end on the local provider (issue 11's tests): the real server (`serve()`) with a
 * pools file of two pools whose commands differ, each instance a real reference-runtime process that
 * reports its RUNTIME_TYPE on /pool/health.
 *
 * - Claims are routed by `runtime` to the pool of that label, and get an instance of that runtime.
 * - A rollout of one pool under a steady stream of claims: no claim fails for lack of an instance,
 *   and min idle stays claimable throughout. A sampler reads the claimable count (idle, not
 *   protected) every 25 ms for the whole run. Claims are serial: each waits for the pool to be back
 *   at min idle, so at any moment at most one claim's instance is not replaced yet; the samples
 *   must then show at least min idle claimable, or min idle − 1 while a claim is outstanding. The
 *   rollout's own retirements never take the count below min idle.
 * - A rollout to a command that crashes at boot halts after 3 failures in a row, with the reason,
 *   while the old instances stay claimable; a rollback brings the pool back.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.ts";
import { defaultRuntimeCommand } from "../src/provider/local.ts";
import { serve, type RunningPool } from "../src/serve.ts";
import { runtimeProcesses, waitFor } from "./support/process.ts";

describe("rollouts on the local provider", () => {
  let pool: RunningPool;
  let dir: string;
  const [node, ...rest] = defaultRuntimeCommand();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agent-pool-rollouts-local-"));
    const file = join(dir, "pools.json");
    writeFileSync(
      file,
      JSON.stringify({
        pools: [
          {
            id: "hermes",
            runtime: "hermes",
            command: [node, ...rest],
            env: { RUNTIME_TYPE: "hermes", RUNTIME_BOOT_DELAY_MS: "0" },
            minIdle: 3,
            maxTotal: 30,
            maxSurge: 2,
          },
          {
            id: "openclaw",
            runtime: "openclaw",
            // Another command: the same runtime under a smaller heap.
            command: [node, "--max-old-space-size=96", ...rest],
            env: { RUNTIME_TYPE: "openclaw", RUNTIME_BOOT_DELAY_MS: "0" },
            minIdle: 2,
            maxTotal: 6,
            maxSurge: 2,
          },
        ],
      }),
    );
    pool = await serve(
      loadConfig({ DATA_DIR: join(dir, "data"), PORT: "0", LOG_LEVEL: "silent", POOLS_FILE: file, POOL_ID: "hermes", TICK_INTERVAL_MS: "1000" }),
    );
    await waitFor("both pools filled", async () => (await claimable("hermes")) === 3 && (await claimable("openclaw")) === 2, 60_000, 100);
  });
  after(async () => {
    await pool?.close();
    assert.deepEqual(runtimeProcesses(join(dir, "data")), [], "no runtime process left");
    rmSync(dir, { recursive: true, force: true });
  });

  async function claimable(id: string): Promise<number> {
    return (await pool.store.listInstances(id)).filter((r) => r.status === "idle" && !r.protected).length;
  }
  async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
    const r = await fetch(`${pool.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${pool.apiKey}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, json: await r.json() };
  }
  const rollout = async (id: string) => (await api("GET", `/api/pools/${id}/rollout`)).json.current;

  it("routes claims by runtime to the pool of that label, an instance of that runtime", async () => {
    for (const runtime of ["hermes", "openclaw"]) {
      const c = await api("POST", "/api/pool/claim", { runtime, agentName: `A ${runtime}` });
      assert.equal(c.status, 200, JSON.stringify(c.json));
      assert.deepEqual([c.json.pool, c.json.runtime], [runtime, runtime]);
      const row = (await pool.store.getInstance(c.json.instanceId))!;
      assert.equal(row.runtimeType, runtime, "the runtime reports the pool's RUNTIME_TYPE");
      assert.equal(row.poolId, runtime);
    }
    assert.notDeepEqual((await pool.store.getPool("hermes"))!.command, (await pool.store.getPool("openclaw"))!.command);
    await waitFor("both pools back at min idle", async () => (await claimable("hermes")) === 3 && (await claimable("openclaw")) === 2, 30_000, 50);
  });

  it("rolls one pool out under a steady stream of claims: no claim fails, min idle stays claimable", async () => {
    const minIdle = 3;
    const samples: Array<{ n: number; outstanding: boolean }> = [];
    let outstanding = false;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const flag = outstanding;
        const n = await claimable("hermes");
        // A claim that started while we read counts too (it may have taken one already).
        samples.push({ n, outstanding: flag || outstanding });
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const before = (await pool.store.listInstances("hermes")).filter((r) => r.status === "idle").map((r) => r.id);
    const changed = await api("PATCH", "/api/pools/hermes", { env: { RUNTIME_TYPE: "hermes", RUNTIME_BOOT_DELAY_MS: "0", RUNTIME_VERSION: "2.0.0-rollout" } });
    assert.equal(changed.json.templateChanged, true);
    const toHash = changed.json.pool.templateHash as string;
    assert.equal(changed.json.rollout?.status, "running", "the change's answer shows the rollout it started");

    const claims: Array<{ status: number; code?: string; instanceId?: string }> = [];
    try {
      // Claims keep coming while the rollout runs (and a few after).
      for (let i = 0; i < 12; i++) {
        outstanding = true;
        const c = await api("POST", "/api/pool/claim", { runtime: "hermes", agentName: `Stream ${i}`, waitMs: 0 });
        claims.push({ status: c.status, code: c.json.code, instanceId: c.json.instanceId });
        await waitFor("hermes back at min idle", async () => (await claimable("hermes")) >= minIdle, 30_000, 20);
        outstanding = false;
        if (i >= 5 && (await rollout("hermes")).status === "complete") break;
        await new Promise((r) => setTimeout(r, 150));
      }
      await waitFor("the rollout to complete", async () => (await rollout("hermes")).status === "complete", 60_000, 100);
    } finally {
      sampling = false;
      await sampler;
    }

    assert.deepEqual(
      claims.filter((c) => c.status !== 200),
      [],
      "no claim failed (none for lack of an instance)",
    );
    assert.ok(claims.length >= 6, `${claims.length} claims during the rollout`);
    assert.ok(samples.length > 50, `${samples.length} samples`);
    const low = samples.filter((s) => s.n < (s.outstanding ? minIdle - 1 : minIdle));
    assert.deepEqual(low, [], "min idle claimable throughout (one claim's instance at most not replaced yet)");
    const r = await rollout("hermes");
    assert.deepEqual([r.status, r.progress.failed, r.progress.remaining], ["complete", 0, 0]);
    // What the passes saw includes a claim's instance not replaced yet.
    assert.ok(r.progress.minClaimable >= minIdle - 1, `the passes saw at least min idle − 1 claimable (${r.progress.minClaimable})`);

    const rows = await pool.store.listInstances("hermes");
    const idle = rows.filter((x) => x.status === "idle");
    assert.ok(idle.length >= minIdle);
    await waitFor(
      "the new instances' versions recorded",
      async () => (await pool.store.listInstances("hermes")).filter((x) => x.status === "idle").every((x) => x.runtimeVersion === "2.0.0-rollout"),
      10_000,
      50,
    );
    assert.ok(
      idle.every((x) => x.templateHash === toHash),
      "every idle instance is of the new template",
    );
    for (const id of before) {
      const old = (await pool.store.getInstance(id))!;
      assert.ok(old.status === "claimed" || old.status === "dead", `old idle ${id} was claimed or replaced (${old.status})`);
    }
    // Claimed agents keep their template: none was retired.
    for (const c of claims) assert.equal((await pool.store.getInstance(c.instanceId!))!.status, "claimed");
    assert.equal(await rollout("openclaw"), null, "the other pool had no rollout");
  });

  it("halts a rollout to a command that crashes at boot, keeps the old instances claimable, and rolls back", async () => {
    const old = (await pool.store.listInstances("openclaw"))
      .filter((r) => r.status === "idle")
      .map((r) => r.id)
      .sort();
    assert.equal(old.length, 2);
    const changed = await api("PATCH", "/api/pools/openclaw", { command: ["node", "-e", "process.exit(1)"] });
    assert.equal(changed.json.templateChanged, true);
    await waitFor("the rollout to halt", async () => (await rollout("openclaw")).status === "halted", 60_000, 100);
    const halted = await rollout("openclaw");
    assert.match(halted.haltReason, /^[34] new instances in a row failed before becoming idle: it crashed at boot \(deploy CRASHED\)$/);
    assert.ok(halted.progress.failuresInARow >= 3);
    assert.equal(halted.progress.updated, 0, "nothing was retired");
    assert.deepEqual(
      (await pool.store.listInstances("openclaw"))
        .filter((r) => r.status === "idle")
        .map((r) => r.id)
        .sort(),
      old,
      "the old instances are all still there",
    );
    const during = await api("POST", "/api/pool/claim", { runtime: "openclaw", waitMs: 0 });
    assert.equal(during.status, 200, "claims go on from the old instances");

    const back = await api("POST", "/api/pools/openclaw/rollback");
    assert.equal(back.status, 200);
    assert.equal(back.json.rollout.reason, "rolled back");
    await waitFor("the rollback to complete", async () => (await rollout("openclaw")).status === "complete", 60_000, 100);
    await waitFor("openclaw back at min idle", async () => (await claimable("openclaw")) === 2, 30_000, 50);
    const after = await api("POST", "/api/pool/claim", { runtime: "openclaw", waitMs: 0 });
    assert.equal(after.status, 200);
    assert.equal((await pool.store.getInstance(after.json.instanceId))!.runtimeType, "openclaw");
    const history = (await api("GET", "/api/pools/openclaw/rollout")).json.history as Array<{ status: string }>;
    assert.deepEqual(
      history.map((h) => h.status),
      ["halted"],
    );
  });
});
