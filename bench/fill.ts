/**
 * Fill on the Railway stand-in (issue 10): from an empty pool to N idle instances through
 * Railway's GraphQL API as test/railway/standin.ts plays it (every request validated against
 * Railway's schema, 50 requests/s per token, 429 beyond), with runtimes that are ready as soon as
 * they listen (bench/tiny-runtime.mjs), so the figure is the pool manager's pacing, not boots.
 * The manager (the real `serve()`, PROVIDER=railway, on Postgres) runs in its own process.
 *
 * Printed per run: time to all idle, API requests and 429s, and the most services that existed
 * at once, against max total (which must never be exceeded).
 *
 * Needs RAILWAY_SCHEMA_PATH (Railway's introspection schema, not in this repository).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { railwaySchemaPath, startRailwayStandin } from "../test/railway/standin.ts";
import { spawnChild, type BenchChild } from "./child.ts";
import type { ManagerStats } from "./manager.ts";
import { benchPostgres, sleep } from "./util.ts";

export interface FillRun {
  n: number;
  label: string;
  env?: Record<string, string>;
}

export const FILL_RUNS: readonly FillRun[] = [
  { n: 60, label: "default config" },
  { n: 60, label: "1 s tick", env: { TICK_INTERVAL_MS: "1000" } },
  { n: 100, label: "default config" },
];

export async function fillBench(runs: readonly FillRun[] = FILL_RUNS): Promise<void> {
  console.log("Fill on the Railway stand-in (50 requests/s; runtimes ready on listen; min idle = max total = N; Postgres)");
  if (!railwaySchemaPath()) {
    console.log("  skipped: no Railway schema (set RAILWAY_SCHEMA_PATH to Railway's introspection schema.json)");
    return;
  }
  for (const r of runs) await fillOne(r);
}

async function fillOne(run: FillRun): Promise<void> {
  const pg = await benchPostgres();
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-bench-fill-"));
  const standin = await startRailwayStandin({
    runtimeCommand: [process.execPath, new URL("./tiny-runtime.mjs", import.meta.url).pathname],
    rateLimit: { perSecond: 50 },
  });
  const children: BenchChild[] = [];
  let sampling = true;
  try {
    const projects = [standin.createProject("agents-1").projectId, standin.createProject("agents-2").projectId];
    const services = () => projects.reduce((n, p) => n + standin.services(p).length, 0);
    let most = 0;
    void (async () => {
      while (sampling) {
        most = Math.max(most, services());
        await sleep(10);
      }
    })();
    const manager = await spawnChild(new URL("./manager.ts", import.meta.url));
    children.push(manager);
    const t0 = performance.now();
    await manager.ask(
      {
        type: "start",
        env: {
          PROVIDER: "railway",
          RAILWAY_API_URL: standin.url,
          RAILWAY_API_TOKEN: standin.token,
          RAILWAY_PROJECT_IDS: projects.join(","),
          RAILWAY_URL_SCHEME: "http",
          INSTANCE_IMAGE: "ghcr.io/acme/agent-runtime:bench",
          DATABASE_URL: pg.url,
          DATA_DIR: dataDir,
          PORT: "0",
          POOL_API_KEY: "bench-key-bench-key-bench-key",
          POOL_MIN_IDLE: String(run.n),
          POOL_MAX_TOTAL: String(run.n),
          LOG_LEVEL: "error",
          ...run.env,
        },
      },
      "started",
    );
    let idle = 0;
    const deadline = t0 + 10 * 60_000;
    while (idle < run.n && performance.now() < deadline) {
      await sleep(50);
      idle = (await manager.ask<ManagerStats>({ type: "stats" }, "stats")).counts.idle ?? 0;
    }
    const secs = (performance.now() - t0) / 1000;
    most = Math.max(most, services());
    const r429 = standin.requests.filter((r) => r.status === 429).length;
    console.log(
      `  N=${String(run.n).padStart(4)} ${run.label.padEnd(15)} ${idle < run.n ? `NOT FILLED (${idle} idle) after` : "all idle after"} ${secs.toFixed(1).padStart(5)} s` +
        `  API requests ${standin.requests.length}  429s ${r429}  most services at once ${most} (max total ${run.n}; above it: ${Math.max(0, most - run.n)})`,
    );
  } finally {
    sampling = false;
    for (const c of children.reverse()) await c.close().catch(() => undefined);
    await standin.close();
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
