/**
 * Crash detection (issue 10): the time from killing an idle instance's runtime to its row leaving
 * `idle`, over 20 kills. The runtimes are loopback endpoints of bench/fleet.ts (20–80 ms, no hangs);
 * a kill closes the endpoint and its connections, so the instance refuses connections from then
 * on, as a crashed process does, while the provider still reports its deployment as running (the
 * case only a health check can catch). Kills are staggered 0.5–1.5 s apart, so they land at every
 * phase of the tick. The manager (the real `serve()` on Postgres) runs in its own process; this
 * process watches the rows through its own store connection.
 *
 * `notify` is where a variant tells the manager at once (e.g. a provider webhook): called right
 * after each kill; the default variant tells nobody.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/db/open.ts";
import { spawnChild, type BenchChild } from "./child.ts";
import type { ManagerStats } from "./manager.ts";
import { managerEnv } from "./watch.ts";
import { benchPostgres, ms, pct, sleep, until } from "./util.ts";

const KILLS = 20;
const IDLE = 20;

export interface CrashVariant {
  label: string;
  env?: Record<string, string>;
  /** Called right after an instance's runtime was killed (a webhook variant posts its event here). */
  notify?: (ctx: { managerUrl: string; instanceId: string }) => Promise<void>;
}

export async function crashBench(variants: readonly CrashVariant[] = [{ label: "without events" }]): Promise<void> {
  console.log(
    `Crash detection: kill an idle instance's runtime (connections refused from then on), time until its row leaves idle; ${KILLS} kills, ${IDLE} idle, 5 s tick, Postgres`,
  );
  for (const v of variants) await crashOne(v);
}

async function crashOne(v: CrashVariant): Promise<void> {
  const pg = await benchPostgres();
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-bench-crash-"));
  const children: BenchChild[] = [];
  const store = await openStore({ databaseUrl: pg.url });
  try {
    const fleet = await spawnChild(new URL("./fleet.ts", import.meta.url));
    children.push(fleet);
    const manager = await spawnChild(new URL("./manager.ts", import.meta.url));
    children.push(manager);
    const { urls } = await fleet.ask<{ urls: string[] }>(
      { type: "start", endpoints: IDLE + KILLS + 10, latencyMs: [20, 80], hangRate: 0, provisionMs: 0 },
      "ready",
    );
    const started = await manager.ask<{ url: string; poolId: string }>(
      { type: "start", env: managerEnv(pg.url, dataDir, { POOL_MIN_IDLE: String(IDLE), POOL_MAX_TOTAL: String(IDLE * 3), ...v.env }), fleetUrls: urls },
      "started",
    );
    const idle = async () => (await manager.ask<{ instances: Array<{ id: string; url: string }> }>({ type: "idle" }, "idle")).instances;
    await until(`${IDLE} idle`, async () => (await idle()).length >= IDLE, 120_000, 500);

    const killed = new Set<string>();
    const results: Array<Promise<{ ms: number; to: string }>> = [];
    for (let k = 0; k < KILLS; k++) {
      const victim = (await idle()).find((i) => !killed.has(i.id));
      if (!victim) throw new Error("no idle instance left to kill");
      killed.add(victim.id);
      await fleet.ask({ type: "kill", index: urls.indexOf(victim.url) }, "killed");
      const t0 = performance.now();
      await manager.ask({ type: "retire", url: victim.url }, "retired");
      await v.notify?.({ managerUrl: started.url, instanceId: victim.id });
      results.push(
        until(
          `${victim.id} to leave idle`,
          async () => {
            const row = await store.getInstance(victim.id);
            return row && row.status !== "idle" ? { ms: performance.now() - t0, to: row.status } : null;
          },
          300_000,
          20,
        ),
      );
      await sleep(500 + Math.random() * 1000);
    }
    const done = await Promise.all(results);
    const times = done.map((d) => d.ms);
    const to = new Map<string, number>();
    for (const d of done) to.set(d.to, (to.get(d.to) ?? 0) + 1);
    const s = await manager.ask<ManagerStats>({ type: "stats" }, "stats");
    console.log(
      `  ${v.label.padEnd(16)} p50 ${ms(pct(times, 50), 0).padStart(9)}  p99 ${ms(pct(times, 99), 0).padStart(9)}  min ${ms(Math.min(...times), 0)}  max ${ms(Math.max(...times), 0)}` +
        `  (to ${[...to].map(([k, n]) => `${k} ×${n}`).join(", ")}; ${s.counts.idle ?? 0} idle after)`,
    );
  } finally {
    await store.close();
    for (const c of children.reverse()) await c.close().catch(() => undefined);
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
