/**
 * Claim cost (issue 10): the pool manager's CPU per claim, from its own CPU counters (meaningful on
 * a noisy shared machine, unlike latencies), and the latency seen by clients, at 1, 8, 32 and 64
 * concurrent clients through the HTTP API on Postgres. Three processes: the manager (the real
 * `serve()`), the instances (bench/fleet.ts, one listener for all, answering at once or with a
 * 50 ms provision) and the load generator (bench/load.ts).
 *
 * Printed per run: claims, latency p50/p99, claims per second, the manager's own share of each
 * claim (total minus the instance's provision time) p50/p99, and its CPU per claim: gross (all its
 * CPU during the run, divided by the claims) and net of its quiet rate (the CPU it spends watching
 * the same pool with nobody claiming, measured for 15 s before the runs).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cpuSeconds, spawnChild, type BenchChild } from "./child.ts";
import type { ManagerStats } from "./manager.ts";
import { managerEnv } from "./watch.ts";
import { benchPostgres, ms, pct, sleep, until } from "./util.ts";

const RUNS: ReadonlyArray<[clients: number, perClient: number]> = [
  [1, 200],
  [8, 30],
  [32, 8],
  [64, 5],
];
const MIN_IDLE = 400;

export async function claimBench(): Promise<void> {
  console.log(`Claim through the HTTP API (Postgres; manager, instances and load generator in three processes; ${MIN_IDLE} idle, 5 s tick)`);
  for (const provisionMs of [0, 50]) await claimMode(provisionMs);
}

async function claimMode(provisionMs: number): Promise<void> {
  console.log(`  instances that answer ${provisionMs === 0 ? "at once" : `a provision in ${provisionMs} ms`}:`);
  const pg = await benchPostgres();
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-bench-claim-"));
  const children: BenchChild[] = [];
  try {
    const fleet = await spawnChild(new URL("./fleet.ts", import.meta.url));
    children.push(fleet);
    const manager = await spawnChild(new URL("./manager.ts", import.meta.url));
    children.push(manager);
    const load = await spawnChild(new URL("./load.ts", import.meta.url));
    children.push(load);
    const { urls } = await fleet.ask<{ urls: string[] }>({ type: "start", endpoints: 0, latencyMs: [0, 0], hangRate: 0, provisionMs }, "ready");
    // Every instance on the one listener (told apart by gateway token).
    const fleetUrls = Array.from({ length: 10_000 }, () => urls[0]!);
    const started = await manager.ask<{ url: string; apiKey: string }>(
      { type: "start", env: managerEnv(pg.url, dataDir, { POOL_MIN_IDLE: String(MIN_IDLE), POOL_MAX_TOTAL: "5000", MAX_CREATES_PER_TICK: "1000" }), fleetUrls },
      "started",
    );
    const stats = () => manager.ask<ManagerStats>({ type: "stats" }, "stats");
    const idleAtLeast = (n: number) => until(`${n} idle`, async () => ((await stats()).counts.idle ?? 0) >= n, 300_000, 500);
    await idleAtLeast(MIN_IDLE);

    // The quiet rate: the same pool watched, nobody claiming.
    const q0 = await stats();
    const tq = performance.now();
    await sleep(15_000);
    const q1 = await stats();
    const quietPerSec = cpuSeconds(q0.cpu, q1.cpu) / ((performance.now() - tq) / 1000);
    console.log(`    quiet: ${(quietPerSec * 1000).toFixed(0)} ms of CPU per second watching ${q1.counts.idle ?? 0} idle instances`);

    for (const [clients, perClient] of RUNS) {
      await idleAtLeast(Math.min(MIN_IDLE, clients * perClient + 10));
      const s0 = await stats();
      const done = await load.ask<{ lat: number[]; wallMs: number; error: string | null }>(
        { type: "load", poolUrl: started.url, apiKey: started.apiKey, clients, perClient },
        "done",
      );
      const s1 = await stats();
      if (done.error) throw new Error(done.error);
      const claims = done.lat.length;
      const cpu = cpuSeconds(s0.cpu, s1.cpu);
      const net = cpu - quietPerSec * (done.wallMs / 1000);
      console.log(
        `    ${String(clients).padStart(2)} clients ${String(claims).padStart(4)} claims  p50 ${ms(pct(done.lat, 50)).padStart(9)}  p99 ${ms(pct(done.lat, 99)).padStart(9)}` +
          `  ${(claims / (done.wallMs / 1000)).toFixed(0).padStart(4)} claims/s  own share p50 ${ms(pct(s1.own, 50)).padStart(9)} p99 ${ms(pct(s1.own, 99)).padStart(9)}` +
          `  manager CPU/claim ${ms((cpu / claims) * 1000, 2)} (net of quiet ${ms((net / claims) * 1000, 2)})`,
      );
      // Back to the same pool for the next run: the claimed instances go (their rows die, then get deleted).
      await manager.ask({ type: "killClaimed" }, "killedClaimed");
    }
  } finally {
    for (const c of children.reverse()) await c.close().catch(() => undefined);
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
