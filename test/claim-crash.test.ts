/**
 * A pool manager killed in the middle of a claim (after `claiming` is written, before the
 * instance's provision answers) must not leave the row stuck: after a restart the stale-claim
 * sweeper asks the runtime and the instance ends `claimed` (it did finish provisioning) or `idle`.
 * The earlier system had no sweeper, and such rows stayed in `claiming` forever (seed §8).
 */
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanUpPool, startPoolProcess, waitFor, type PoolProcess } from "./support/process.ts";

interface StatusBody {
  instances: Array<{ id: string; status: string; conversationId: string | null; agentName: string | null }>;
}

describe("pool manager killed mid-claim", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-midclaim-"));
  let pool: PoolProcess | null = null;

  after(() => cleanUpPool(pool, dataDir));

  it("the sweeper resolves the claiming row after a restart", async () => {
    const env = {
      DATA_DIR: dataDir,
      TICK_INTERVAL_MS: "500",
      POOL_MIN_IDLE: "1",
      // The runtime takes 2.5 s to provision; the manager dies before it answers.
      INSTANCE_ENV_RUNTIME_PROVISION_DELAY_MS: "2500",
      PROVISION_TIMEOUT_MS: "2000",
      RESET_TIMEOUT_MS: "1000",
      CLAIM_SWEEP_MARGIN_MS: "1500",
    };
    pool = await startPoolProcess(env);
    const key = readFileSync(join(dataDir, "api-key"), "utf8").trim();
    const status = async (): Promise<StatusBody> => {
      const r = await fetch(`${pool!.url}/api/pool/status`, { headers: { authorization: `Bearer ${key}` } });
      return (await r.json()) as StatusBody;
    };
    await waitFor("an idle instance", async () => (await status()).instances.some((i) => i.status === "idle"), 30_000);

    // Start a claim and do not wait for it.
    void fetch(`${pool.url}/api/pool/claim`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ agentName: "Interrupted", instructions: "You were cut off." }),
    }).catch(() => undefined);
    const claiming = await waitFor("the row to be claiming", async () => (await status()).instances.find((i) => i.status === "claiming"), 10_000, 20);

    pool.child.kill("SIGKILL");
    await pool.exited;

    pool = await startPoolProcess(env);
    const resolved = await waitFor(
      "the sweeper to resolve the claim",
      async () => {
        const inst = (await status()).instances.find((i) => i.id === claiming.id);
        return inst && inst.status !== "claiming" ? inst : null;
      },
      30_000,
    );
    assert.ok(["claimed", "idle"].includes(resolved.status), `ended ${resolved.status}`);
    // The runtime finished provisioning on its own, so the sweeper finds it bound.
    assert.equal(resolved.status, "claimed");
    assert.ok(resolved.conversationId, "conversation recorded from the runtime");
    assert.equal(resolved.agentName, "Interrupted");
  });
});
