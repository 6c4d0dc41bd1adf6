/**
 * The pool manager on its embedded defaults (PGlite + local provider + reference runtime), run as
 * a real process: it fills the pool, replaces a killed runtime, adopts its instances after a
 * SIGKILL, and leaves no process behind after SIGTERM.
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanUpPool, runtimeProcesses, startPoolProcess, waitFor, type PoolProcess } from "./support/process.ts";

interface StatusBody {
  counts: Record<string, number>;
  instances: Array<{ id: string; status: string; url: string | null }>;
}

describe("pool manager on the embedded defaults", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-e2e-"));
  let pool: PoolProcess | null = null;

  after(() => cleanUpPool(pool, dataDir));

  const env = { DATA_DIR: dataDir, TICK_INTERVAL_MS: "1000", LOCAL_START_TIMEOUT_MS: "20000" };
  let apiKey = "";
  const status = async (): Promise<StatusBody> => {
    const r = await fetch(`${pool!.url}/api/pool/status`, { headers: { authorization: `Bearer ${apiKey}` } });
    assert.equal(r.status, 200);
    return (await r.json()) as StatusBody;
  };
  const idleIds = (s: StatusBody) =>
    s.instances
      .filter((i) => i.status === "idle")
      .map((i) => i.id)
      .sort();

  let firstIds: string[] = [];

  it("starts, prints a generated API key once, and brings 3 reference runtimes to idle", async () => {
    const t0 = Date.now();
    pool = await startPoolProcess(env);
    apiKey = readFileSync(join(dataDir, "api-key"), "utf8").trim();
    assert.match(pool.output(), new RegExp(apiKey), "the generated key is printed at first start");
    const counts = await waitFor(
      "3 idle instances",
      async () => {
        const r = await fetch(`${pool!.url}/api/pool/counts`);
        const c = (await r.json()) as Record<string, number>;
        return c.idle === 3 ? c : null;
      },
      30_000,
    );
    assert.equal(counts.total, 3);
    console.log(`# 3 idle ${Date.now() - t0} ms after start`);
    const s = await status();
    firstIds = idleIds(s);
    assert.equal(firstIds.length, 3);
    assert.equal(runtimeProcesses(dataDir).length, 3, "3 runtime processes in the process table");
    // Each instance answers its own health endpoint.
    for (const inst of s.instances) {
      const h = await fetch(`${inst.url}/pool/health`);
      assert.equal(h.status, 200);
    }
    // The API never shows a gateway token.
    const raw = JSON.stringify(s);
    for (const p of runtimeProcesses(dataDir)) assert.ok(!raw.includes(p.env.GATEWAY_TOKEN!), "no gateway token in /api/pool/status");
    assert.equal((await fetch(`${pool.url}/api/pool/status`)).status, 401, "status needs the key");
  });

  it("replaces a runtime whose process was killed within two ticks", async () => {
    const procs = runtimeProcesses(dataDir);
    const victim = procs.find((p) => p.env.INSTANCE_ID === firstIds[0])!;
    assert.ok(victim, "found the victim's process");
    process.kill(-victim.pgid, "SIGKILL");
    const t0 = Date.now();
    const s = await waitFor(
      "a replacement to be idle",
      async () => {
        const s = await status();
        const ids = idleIds(s);
        return ids.length === 3 && !ids.includes(firstIds[0]!) ? s : null;
      },
      30_000,
    );
    console.log(`# replaced in ${Date.now() - t0} ms (tick 1000 ms)`);
    assert.ok(!s.instances.some((i) => i.id === firstIds[0]), "the dead instance left the live list");
    await waitFor("exactly 3 runtime processes", () => runtimeProcesses(dataDir).length === 3, 10_000);
    firstIds = idleIds(s);
  });

  it("after a SIGKILL of the pool manager, a restart adopts the running instances (no duplicates, no orphans)", async () => {
    const pidsBefore = runtimeProcesses(dataDir)
      .map((p) => p.pid)
      .sort();
    pool!.child.kill("SIGKILL");
    await pool!.exited;
    // The instances outlive the manager.
    assert.deepEqual(
      runtimeProcesses(dataDir)
        .map((p) => p.pid)
        .sort(),
      pidsBefore,
    );

    pool = await startPoolProcess(env);
    assert.doesNotMatch(pool.output(), /generated an API key/, "the key is not regenerated");
    const s = await waitFor(
      "the restarted manager to see 3 idle",
      async () => {
        const s = await status();
        return idleIds(s).length === 3 ? s : null;
      },
      30_000,
    );
    // Let two more passes run: nothing new may be created.
    await new Promise((r) => setTimeout(r, 2500));
    const again = await status();
    assert.deepEqual(idleIds(again), firstIds, "the same instances, adopted");
    assert.equal(again.instances.length, 3);
    assert.deepEqual(
      runtimeProcesses(dataDir)
        .map((p) => p.pid)
        .sort(),
      pidsBefore,
      "the same processes, no duplicates",
    );
    assert.deepEqual(idleIds(s), firstIds);
  });

  it("SIGTERM stops the manager cleanly and leaves no process behind", async () => {
    pool!.child.kill("SIGTERM");
    const code = await pool!.exited;
    assert.equal(code, 0);
    assert.deepEqual(runtimeProcesses(dataDir), [], "no runtime process survives");
  });
});
