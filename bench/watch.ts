/**
 * Watch cost (issue 10): what it costs the pool manager to keep N idle instances under watch when
 * their health endpoints are real HTTP servers on loopback, in another process (bench/fleet.ts):
 * each instance its own origin, answering after 20–80 ms, 1% of health requests hanging until the
 * client's timeout. The manager (bench/manager.ts, the real `serve()` on Postgres) is a third
 * process: its CPU counters are its own.
 *
 * Printed per N: time to fill; then over a quiet window (no claims; at least 60 s and 5 passes):
 * health requests per second (and status requests), the manager's CPU seconds per minute, pass
 * duration p50/p99, SQL statements per quiet pass, the manager's RSS.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cpuSeconds, spawnChild, type BenchChild } from "./child.ts";
import type { FleetStats } from "./fleet.ts";
import type { ManagerStats, PassInfo } from "./manager.ts";
import { benchPostgres, mb, ms, pct, sleep } from "./util.ts";

const WINDOW_MS = Number(process.env.BENCH_WATCH_MS ?? 60_000);
const MIN_PASSES = 5;
const MAX_WINDOW_MS = 6 * 60_000;
/** A fill with no more idle instances for this long (and 3 passes) has stalled. */
const STALL_MS = Number(process.env.BENCH_FILL_STALL_MS ?? 180_000);

export interface WatchOptions {
  n: number;
  /** Manager configuration on top of the defaults below. */
  env?: Record<string, string>;
  label?: string;
}

/** The manager's environment: production defaults of a large pool (Railway's tick and starting poll). */
export function managerEnv(databaseUrl: string, dataDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    DATA_DIR: dataDir,
    PORT: "0",
    POOL_API_KEY: "bench-key-bench-key-bench-key",
    TICK_INTERVAL_MS: "5000",
    STARTING_POLL_MS: "5000",
    HEALTH_TIMEOUT_MS: "5000",
    MUTATION_RATE_LIMIT_PER_MIN: "100000",
    LOG_LEVEL: "error",
    ...extra,
  };
}

export async function watchBench(ns: readonly number[] = [1_000, 10_000]): Promise<void> {
  console.log(
    `Watch cost (loopback runtimes in another process: health answers in 20–80 ms, 1% of health requests hang until the 5 s timeout; 5 s tick; Postgres)`,
  );
  for (const n of ns) await watchOne({ n });
}

export async function watchOne(o: WatchOptions): Promise<void> {
  const pg = await benchPostgres();
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-bench-watch-"));
  const children: BenchChild[] = [];
  try {
    const fleet = await spawnChild(new URL("./fleet.ts", import.meta.url));
    children.push(fleet);
    const manager = await spawnChild(new URL("./manager.ts", import.meta.url));
    children.push(manager);
    const { urls } = await fleet.ask<{ urls: string[] }>(
      { type: "start", endpoints: o.n + Math.ceil(o.n / 10), latencyMs: [20, 80], hangRate: 0.01, provisionMs: 0 },
      "ready",
    );
    await manager.ask(
      {
        type: "start",
        env: managerEnv(pg.url, dataDir, { POOL_MIN_IDLE: "0", POOL_MAX_TOTAL: String(Math.min(10_000, o.n + 100)), ...o.env }),
        fleetUrls: urls,
      },
      "started",
    );

    const tFill = performance.now();
    const added = await manager.ask<{ created: number; errors: string[] }>({ type: "add", count: o.n }, "added");
    if (added.created !== o.n) throw new Error(`created ${added.created} of ${o.n}: ${added.errors.join("; ")}`);
    // Filled when 99% are idle: a check that hung leaves its instance starting until the next one.
    // A fill that stops making progress is reported as such (e.g. passes that outlive the lease:
    // their writes are refused by the fence, so no instance is ever promoted) and the watch cost is
    // measured on the pool as it is.
    let best = 0;
    let bestAt = performance.now();
    let passesSinceBest = 0;
    const fillPasses: number[] = [];
    let filled = false;
    for (;;) {
      await sleep(1_000);
      const s = await manager.ask<ManagerStats>({ type: "stats" }, "stats");
      const led = s.passes.filter((p) => p.leader);
      fillPasses.push(...led.map((p) => p.durationMs));
      const idle = s.counts.idle ?? 0;
      if (idle >= Math.floor(o.n * 0.99)) {
        filled = true;
        break;
      }
      if (idle > best) {
        best = idle;
        bestAt = performance.now();
        passesSinceBest = 0;
      } else passesSinceBest += led.length;
      if (passesSinceBest >= 3 && performance.now() - bestAt > STALL_MS) break;
    }
    const fillS = (performance.now() - tFill) / 1000;
    const fillNote = filled
      ? `filled in ${fillS.toFixed(1)} s`
      : `NOT FILLED after ${fillS.toFixed(0)} s (${best} idle at best; no progress over the last ${passesSinceBest} passes, ${ms(pct(fillPasses.slice(-passesSinceBest), 50), 0)} each, against a lease of 15 s)`;

    // The quiet window: no claims, nothing to create.
    const s0 = await manager.ask<ManagerStats>({ type: "stats" }, "stats");
    const f0 = await fleet.ask<FleetStats>({ type: "stats" }, "stats");
    const t0 = performance.now();
    const passes: PassInfo[] = [];
    let s1 = s0;
    while (performance.now() - t0 < WINDOW_MS || passes.filter((p) => p.leader).length < MIN_PASSES) {
      await sleep(1_000);
      s1 = await manager.ask<ManagerStats>({ type: "stats" }, "stats");
      passes.push(...s1.passes);
      if (performance.now() - t0 > MAX_WINDOW_MS) break;
    }
    const f1 = await fleet.ask<FleetStats>({ type: "stats" }, "stats");
    const secs = (performance.now() - t0) / 1000;

    const led = passes.filter((p) => p.leader);
    const durations = led.map((p) => p.durationMs);
    const stmts = led.slice(1).map((p, i) => p.statements - led[i]!.statements);
    const cpu = cpuSeconds(s0.cpu, s1.cpu);
    const health = (f1.requests.health - f0.requests.health) / secs;
    const status = (f1.requests.status - f0.requests.status) / secs;
    console.log(
      `  ${(o.label ?? "").padEnd(o.label ? 12 : 0)}N=${String(o.n).padStart(6)}  ${fillNote}; over ${secs.toFixed(0)} s${filled ? " quiet" : ""}:` +
        `  health requests/s ${health.toFixed(0)} (+ status ${status.toFixed(0)})` +
        `  manager CPU ${((cpu / secs) * 60).toFixed(1)} s/min (${((cpu / secs) * 100).toFixed(0)}% of a core)` +
        `  pass p50 ${ms(pct(durations, 50), 0)} p99 ${ms(pct(durations, 99), 0)} (${led.length} passes)` +
        `  statements/quiet pass p50 ${pct(stmts, 50)} max ${stmts.length ? Math.max(...stmts) : NaN}` +
        `  RSS ${mb(s1.rss)}  (${s1.counts.idle ?? 0} idle, ${s1.counts.starting ?? 0} starting)`,
    );
  } finally {
    for (const c of children.reverse()) await c.close().catch(() => undefined);
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
