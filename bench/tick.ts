/**
 * The reconcile pass alone at N = 1,000 and 10,000 instances, in process, with an in-memory
 * provider and instant in-process health checks, on PGlite and on Postgres: the pass's own cost
 * (SQL and bookkeeping) without any network. Tick duration, provider calls per tick, SQL
 * statements per quiet tick. (The watch section measures the same pool behind real HTTP.)
 */
import { randomIds, systemClock } from "../src/clock.ts";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import type { HealthChecker } from "../src/instance/client.ts";
import { silentLogger } from "../src/logger.ts";
import { Reconciler } from "../src/pool/reconciler.ts";
import { MemoryProvider } from "../src/provider/memory.ts";
import { benchPostgres, ms, pct } from "./util.ts";

const instantHealth: HealthChecker = {
  async check() {
    return { health: { ready: true, conversationId: null, pending: false, clean: true, version: "bench" } };
  },
};

async function tickOne(label: string, store: Store, n: number): Promise<void> {
  const poolId = `bench-${n}`;
  await store.upsertPool({ id: poolId, minIdle: n, maxTotal: n });
  const provider = new MemoryProvider();
  await store.ensureOwnerId("bench");
  const r = new Reconciler({
    ownerId: "bench",
    store,
    providers: new Map([["memory", provider]]),
    defaultProvider: "memory",
    health: instantHealth,
    statusReader: { status: async () => ({ conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null }) },
    clock: systemClock,
    ids: randomIds,
    logger: silentLogger,
    spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: n },
    // The production policy (serve.ts). Once a minute a pass also rewrites the health bookkeeping;
    // these back-to-back passes stay inside that minute, so the statements printed are the others'.
    policy: { stuckTimeoutMs: 900_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 },
    intervalMs: 5000,
    healthTimeoutMs: 1000,
    healthConcurrency: 64,
  });
  // Fill: passes create (as many as fit in the lease TTL each) and promote (one batched write).
  const tFill = performance.now();
  let fillPasses = 0;
  let slowest = 0;
  for (let idle = 0; idle < n; fillPasses++) {
    if (fillPasses >= 100) throw new Error(`not filled after 100 passes (${idle} idle)`);
    const t = await r.tick();
    slowest = Math.max(slowest, t.durationMs);
    idle = t.counts.idle;
  }
  const fillMs = performance.now() - tFill;
  const durations: number[] = [];
  let stmts = 0;
  let calls = 0;
  for (let i = 0; i < 5; i++) {
    const s0 = store.statementCount;
    const c0 = provider.calls.list + provider.calls.create + provider.calls.delete;
    const res = await r.tick();
    durations.push(res.durationMs);
    stmts = store.statementCount - s0;
    calls = provider.calls.list + provider.calls.create + provider.calls.delete - c0;
    if (res.counts.idle !== n) throw new Error(`expected ${n} idle, got ${res.counts.idle}`);
  }
  console.log(
    `  ${label.padEnd(9)} N=${String(n).padStart(6)}  quiet tick p50 ${ms(pct(durations, 50), 2).padStart(10)}  max ${ms(Math.max(...durations), 2).padStart(10)}` +
      `  provider calls/tick ${calls}  SQL statements/quiet tick ${stmts}` +
      `  (fill ${(fillMs / 1000).toFixed(1)} s in ${fillPasses} passes, slowest ${ms(slowest, 0)})`,
  );
}

export async function tickBench(): Promise<void> {
  console.log("Reconcile pass in process (in-memory provider, instant in-process health checks)");
  // A fresh database per N: one reconciler passes over every pool of its database, so a pool
  // left from the smaller run would be counted in the larger one.
  for (const n of [1_000, 10_000]) {
    const pglite = await openStore({ dataDir: null });
    try {
      await tickOne("pglite", pglite, n);
    } finally {
      await pglite.close();
    }
  }
  for (const n of [1_000, 10_000]) {
    const pg = await benchPostgres();
    const store = await openStore({ databaseUrl: pg.url });
    try {
      await tickOne("postgres", store, n);
    } finally {
      await store.close();
      await pg.stop();
    }
  }
}
