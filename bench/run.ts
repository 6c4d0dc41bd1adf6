/**
 * `npm run bench`: prints the figures the issues ask for. No assertions: performance targets are
 * read here, not enforced by timed tests.
 *
 * 1. Reconcile pass at N = 1,000 and 10,000 instances (in-memory provider, instant health checks,
 *    PGlite and Postgres): tick duration, provider calls per tick, SQL statements per quiet tick.
 * Sections: `startup`, `tick`, `claim`, `rollout` (`npm run bench -- startup` runs one; none runs all).
 *
 * 0. Start-up: `agent-pool serve` on the embedded defaults, from launch to listening and to 3 idle
 *    instances, on a fresh data directory and on a restart (the README promises 3 idle within 10 s).
 * 2. Claim latency (p50, p99) and throughput at 1, 8 and 32 concurrent clients through the HTTP
 *    API on real Postgres with instantly-answering instances, and the pool manager's own share
 *    (total minus the instance's provision time).
 */
import { MemoryProvider } from "../src/provider/memory.ts";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { Reconciler } from "../src/pool/reconciler.ts";
import { randomIds, systemClock } from "../src/clock.ts";
import { silentLogger } from "../src/logger.ts";
import type { HealthChecker } from "../src/instance/client.ts";
import { loadConfig } from "../src/config.ts";
import { serve } from "../src/serve.ts";
import { startTestPostgres } from "../test/support/postgres.ts";
import { Worker } from "node:worker_threads";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { rolloutBench } from "./rollout.ts";

const instantHealth: HealthChecker = {
  async check() {
    return { health: { ready: true, conversationId: null, pending: false, clean: true, version: "bench" } };
  },
};

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
const ms = (x: number) => `${x.toFixed(2)} ms`;

async function tickBench(label: string, store: Store, n: number): Promise<void> {
  const poolId = `bench-${n}`;
  await store.upsertPool({ id: poolId, minIdle: n, maxTotal: n });
  const provider = new MemoryProvider();
  await store.ensureOwnerId("bench");
  const r = new Reconciler({
    ownerId: "bench",
    store,
    providers: new Map([["memory", provider as import("../src/provider/provider.ts").Provider]]),
    defaultProvider: "memory",
    health: instantHealth,
    statusReader: { status: async () => ({ conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null }) },
    clock: systemClock,
    ids: randomIds,
    logger: silentLogger,
    spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: n },
    // The production policy (serve.ts). Once a minute a pass also rewrites the health bookkeeping
    // (one statement per 3,000 rows); these back-to-back passes stay inside that minute, so the
    // statements printed are those of the other passes.
    policy: { stuckTimeoutMs: 900_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 },
    intervalMs: 5000,
    healthTimeoutMs: 1000,
    healthConcurrency: 64,
  });
  const tFill = performance.now();
  await r.tick(); // creates n
  const fillMs = performance.now() - tFill;
  const promote = await r.tick(); // all → idle (one batched write)
  const durations: number[] = [];
  let stmts = 0;
  let calls = 0;
  const runs = 5;
  for (let i = 0; i < runs; i++) {
    const s0 = store.statementCount;
    const c0 = provider.calls.list + provider.calls.create + provider.calls.delete;
    const res = await r.tick();
    durations.push(res.durationMs);
    stmts = store.statementCount - s0;
    calls = provider.calls.list + provider.calls.create + provider.calls.delete - c0;
    if (res.counts.idle !== n) throw new Error(`expected ${n} idle, got ${res.counts.idle}`);
  }
  durations.sort((a, b) => a - b);
  console.log(
    `  ${label.padEnd(9)} N=${String(n).padStart(6)}  quiet tick p50 ${ms(pct(durations, 50)).padStart(10)}  max ${ms(durations.at(-1)!).padStart(10)}` +
      `  provider calls/tick ${calls}  SQL statements/quiet tick ${stmts}` +
      `  (fill ${(fillMs / 1000).toFixed(1)} s; promote-all tick ${ms(promote.durationMs)})`,
  );
}

async function claimBench(databaseUrl: string): Promise<void> {
  const worker = new Worker(new URL("./load-worker.mjs", import.meta.url));
  const next = <T>(type: string) =>
    new Promise<T>((res, rej) => {
      const on = (m: { type: string }) => {
        if (m.type === type) {
          worker.off("message", on);
          res(m as T);
        }
      };
      worker.on("message", on);
      worker.once("error", rej);
    });
  const { url: runtimesUrl } = await next<{ url: string }>("ready");
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-bench-"));
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    DATA_DIR: dataDir,
    PORT: "0",
    POOL_API_KEY: "bench-key-bench-key-bench-key",
    POOL_MIN_IDLE: "300",
    POOL_MAX_TOTAL: "5000",
    MAX_CREATES_PER_TICK: "1000",
    TICK_INTERVAL_MS: "5000",
    // A production-sized pool polls its starting instances at Railway's default; the local
    // default (250 ms) is for a handful of instances, and would put a pass that health-checks
    // 300 instances beside the claims 4 times a second.
    STARTING_POLL_MS: "5000",
    MUTATION_RATE_LIMIT_PER_MIN: "100000",
    LOG_LEVEL: "silent",
  });
  const provider = new MemoryProvider({ urlBase: runtimesUrl });
  const ownMs: number[] = [];
  const pool = await serve(config, {
    provider,
    onClaim: (outcome, seconds, provisionSeconds) => {
      if (outcome === "claimed") ownMs.push((seconds - provisionSeconds) * 1000);
    },
  });
  try {
    const waitIdle = async (n: number) => {
      for (let i = 0; i < 1200; i++) {
        if ((await pool.store.countByStatus(config.POOL_ID)).idle >= n) return;
        await pool.reconciler.tick();
      }
      throw new Error("pool did not fill");
    };
    for (const clients of [1, 8, 32]) {
      const perClient = clients === 1 ? 200 : clients === 8 ? 30 : 8;
      await waitIdle(Math.min(300, clients * perClient + 10));
      const ownFrom = ownMs.length;
      worker.postMessage({ type: "load", poolUrl: pool.url, apiKey: pool.apiKey, clients, perClient });
      const done = await next<{ lat: number[]; wallMs: number; error: string | null }>("done");
      if (done.error) throw new Error(done.error);
      const lat = done.lat.sort((a, b) => a - b);
      const own = ownMs.slice(ownFrom).sort((a, b) => a - b);
      console.log(
        `  ${String(clients).padStart(2)} clients  ${String(lat.length).padStart(4)} claims  p50 ${ms(pct(lat, 50)).padStart(9)}  p99 ${ms(pct(lat, 99)).padStart(9)}` +
          `  ${(lat.length / (done.wallMs / 1000)).toFixed(0).padStart(5)} claims/s  own share p50 ${ms(pct(own, 50)).padStart(9)}  p99 ${ms(pct(own, 99)).padStart(9)}`,
      );
    }
  } finally {
    await pool.close();
    worker.postMessage({ type: "close" });
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Launch → listening → 3 idle, for one start of the real CLI on the given data dir. */
async function timeStart(dataDir: string): Promise<{ listenMs: number; idleMs: number }> {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli.ts", "serve"], {
    cwd: new URL("..", import.meta.url).pathname,
    env: { ...process.env, DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: "warn", DATABASE_URL: "" },
    stdio: "ignore",
  });
  let listenMs = NaN;
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`serve exited with ${child.exitCode}`);
      if (performance.now() - t0 > 60_000) throw new Error("no 3 idle instances within 60 s");
      try {
        const res = await fetch(`http://127.0.0.1:${port}/api/pool/counts`);
        if (Number.isNaN(listenMs)) listenMs = performance.now() - t0;
        if (((await res.json()) as { idle: number }).idle >= 3) return { listenMs, idleMs: performance.now() - t0 };
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
}

async function startupBench(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-bench-start-"));
  try {
    for (const label of ["fresh data dir", "restart"]) {
      const t = await timeStart(dataDir);
      console.log(`  ${label.padEnd(15)} listening after ${ms(t.listenMs).padStart(11)}  3 idle after ${ms(t.idleMs).padStart(11)}`);
    }
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

// `npm run bench -- startup tick` runs only the sections named; no argument runs them all.
const sections = process.argv.slice(2);
const wanted = (name: string) => sections.length === 0 || sections.includes(name);

if (wanted("startup")) {
  console.log("Start-up of `agent-pool serve` on the embedded defaults (local provider, PGlite)");
  await startupBench();
}

if (wanted("tick") || wanted("claim")) {
  const pgHandle = await startTestPostgres();
  try {
    // One reconciler serves every pool of a database: each run gets a database of its own.
    if (wanted("tick")) {
      console.log("Reconcile pass (in-memory provider, instant health checks)");
      for (const n of [1_000, 10_000]) {
        const pglite = await openStore({ dataDir: null });
        await tickBench("pglite", pglite, n);
        await pglite.close();
      }
      for (const n of [1_000, 10_000]) {
        const db = await startTestPostgres();
        const pgStore = await openStore({ databaseUrl: db.url });
        await tickBench("postgres", pgStore, n);
        await pgStore.close();
        await db.stop();
      }
    }
    if (wanted("claim")) {
      console.log("Claim through the HTTP API (Postgres, instantly-answering instances)");
      await claimBench(pgHandle.url);
    }
  } finally {
    await pgHandle.stop();
  }
}

if (wanted("rollout")) await rolloutBench(); // issue 11: bench/rollout.ts
