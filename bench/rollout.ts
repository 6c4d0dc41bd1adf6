/**
 * `npm run bench -- rollout` (issue 11): a rollout of 50 idle instances on the local provider (real
 * reference-runtime processes, PGlite): from the template change to the rollout's outcome, and the
 * fewest claimable instances (idle, not protected) seen during it, sampled from the store every
 * 25 ms, next to what the passes themselves recorded.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.ts";
import { serve } from "../src/serve.ts";

const ms = (x: number) => `${x.toFixed(0)} ms`;

export async function rolloutBench(instances = 50, maxSurge = 10): Promise<void> {
  console.log(`Rollout of ${instances} idle instances (local provider, reference runtimes, PGlite)`);
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-bench-rollout-"));
  const pool = await serve(
    loadConfig({
      DATA_DIR: dir,
      PORT: "0",
      LOG_LEVEL: "silent",
      POOL_ID: "bench",
      POOL_API_KEY: "bench-key-bench-key-bench-key",
      POOL_MIN_IDLE: String(instances),
      POOL_MAX_TOTAL: String(instances),
      MAX_CREATES_PER_TICK: String(instances),
      TICK_INTERVAL_MS: "1000",
      INSTANCE_ENV_RUNTIME_BOOT_DELAY_MS: "0",
    }),
  );
  const claimable = async () => (await pool.store.listInstances("bench")).filter((r) => r.status === "idle" && !r.protected).length;
  try {
    const tFill = performance.now();
    while ((await claimable()) < instances) {
      if (performance.now() - tFill > 600_000) throw new Error("the pool did not fill in 10 min");
      await new Promise((r) => setTimeout(r, 100));
    }
    const fillMs = performance.now() - tFill;
    await pool.ops.registry.update("bench", { maxSurge });

    let sampling = true;
    let minSeen = Number.POSITIVE_INFINITY;
    let maxStarting = 0;
    let samples = 0;
    const sampler = (async () => {
      while (sampling) {
        const rows = await pool.store.listInstances("bench");
        minSeen = Math.min(minSeen, rows.filter((r) => r.status === "idle" && !r.protected).length);
        maxStarting = Math.max(maxStarting, rows.filter((r) => r.status === "starting").length);
        samples++;
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const t0 = performance.now();
    await pool.ops.registry.update("bench", { env: { RUNTIME_VERSION: "bench-2" } });
    let outcome = "";
    for (;;) {
      const r = (await pool.rollouts.state("bench")).current;
      if (r && (r.status === "complete" || r.status === "halted")) {
        outcome = r.status;
        break;
      }
      if (performance.now() - t0 > 900_000) throw new Error("the rollout did not end in 15 min");
      await new Promise((r) => setTimeout(r, 50));
    }
    const durationMs = performance.now() - t0;
    sampling = false;
    await sampler;
    const r = (await pool.rollouts.state("bench")).current!;
    console.log(
      `  ${instances} idle, max surge ${maxSurge}: ${outcome} in ${ms(durationMs)}  (${r.retired} replaced, ${r.failed} failed)  ` +
        `min claimable ${minSeen} of ${instances} (${samples} samples; passes saw ${r.minClaimable})  max starting ${maxStarting}  (fill ${ms(fillMs)})`,
    );
  } finally {
    await pool.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
