/**
 * The real HTTP server (`buildServer`) over a real store, with an in-memory provider and in-memory
 * runtimes that answer the instance protocol at once. The reconciler's timer is never started:
 * state changes only through requests (and what a test does itself), which the fuzz test and the
 * shared rate-limit tests rely on.
 */
import { createHash } from "node:crypto";
import { ClaimService } from "../../src/claim/claim.ts";
import { randomIds, systemClock } from "../../src/clock.ts";
import type { Store } from "../../src/db/store.ts";
import { buildServer, type PoolServer, type ServerDeps } from "../../src/http/server.ts";
import type { InstanceTarget, ProvisionRequest, ProvisionResult, RuntimeStatus } from "../../src/instance/client.ts";
import type { HealthObservation } from "../../src/instance/derive.ts";
import { silentLogger } from "../../src/logger.ts";
import { PoolMetrics } from "../../src/metrics.ts";
import { PoolRegistry } from "../../src/pool/registry.ts";
import { PoolOperations } from "../../src/pool/operations.ts";
import { Reconciler } from "../../src/pool/reconciler.ts";
import { RolloutService } from "../../src/pool/rollouts.ts";
import { MemoryProvider } from "../../src/provider/memory.ts";
import { AgentOperations } from "../../src/pool/agent-operations.ts";
import { UpgradeRunner } from "../../src/upgrade/runner.ts";

/** Runtimes keyed by URL: a provision binds a conversation, a reset clears it; always healthy. */
export class InstantRuntimes {
  readonly bound = new Map<string, string>();
  #n = 0;

  async check(target: InstanceTarget): Promise<{ health: HealthObservation }> {
    const c = this.bound.get(target.url) ?? null;
    return { health: { ready: true, conversationId: c, pending: false, clean: c === null, version: "instant" } };
  }

  async status(target: InstanceTarget): Promise<RuntimeStatus> {
    const c = this.bound.get(target.url) ?? null;
    return { conversationId: c, inboxId: null, pending: false, clean: c === null, inviteUrl: c ? `http://room.invalid/i/${c}` : null };
  }

  async provision(target: InstanceTarget, req: ProvisionRequest): Promise<ProvisionResult> {
    const c = req.joinUrl ? `joined-${++this.#n}` : `c-${++this.#n}`;
    this.bound.set(target.url, c);
    return req.joinUrl
      ? { inviteUrl: null, conversationId: c, joined: true, status: "joined" }
      : { inviteUrl: `http://room.invalid/i/${c}`, conversationId: c, joined: false, status: "created" };
  }

  async reset(target: InstanceTarget): Promise<null> {
    this.bound.delete(target.url);
    return null;
  }
}

export interface TestServer {
  app: PoolServer;
  ops: PoolOperations;
  rollouts: RolloutService;
  provider: MemoryProvider;
  runtimes: InstantRuntimes;
  apiKey: string;
  close(): Promise<void>;
}

export interface TestServerOptions
  extends Partial<
    Pick<ServerDeps, "mutationRateLimit" | "trustProxy" | "adminPassword" | "loginAttemptsPerMinute" | "bodyLimit" | "logger" | "liveSafetyReadMs">
  > {
  store: Store;
  poolId?: string;
  minIdle?: number;
  maxTotal?: number;
  apiKey?: string;
  /** Replica name (lease holder, claim owner). */
  holder?: string;
}

export async function startTestServer(o: TestServerOptions): Promise<TestServer> {
  const poolId = o.poolId ?? "default";
  const minIdle = o.minIdle ?? 2;
  const maxTotal = o.maxTotal ?? 10;
  const apiKey = o.apiKey ?? "ap_test_key_0123456789abcdef";
  const store = o.store;
  await store.upsertPool({ id: poolId, minIdle, maxTotal });
  const ownerId = await store.ensureOwnerId("own01");
  const provider = new MemoryProvider({ ownerId });
  const runtimes = new InstantRuntimes();
  const providers = new Map([["memory", provider as import("../../src/provider/provider.ts").Provider]]);
  const rollouts = new RolloutService({ store, logger: silentLogger });
  const reconciler = new Reconciler({
    ownerId,
    store,
    providers,
    defaultProvider: "memory",
    health: runtimes,
    statusReader: runtimes,
    clock: systemClock,
    ids: randomIds,
    logger: silentLogger,
    spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 },
    policy: { stuckTimeoutMs: 15 * 60_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 },
    intervalMs: 3_600_000,
    healthTimeoutMs: 1000,
    healthConcurrency: 8,
    rollouts,
    ...(o.holder ? { holder: o.holder } : {}),
  });
  const claims = new ClaimService({
    store,
    client: runtimes,
    clock: systemClock,
    logger: silentLogger,
    defaultPool: poolId,
    owner: reconciler.holder,
    provisionTimeoutMs: 5_000,
    maxWaitMs: 2_000,
  });
  const registry = new PoolRegistry({
    store,
    logger: silentLogger,
    deploymentEnv: {},
    providers: ["memory"],
    onChange: (p) => {
      claims.invalidatePools();
      void rollouts.noteChange(p);
    },
  });
  const ops = new PoolOperations({ store, providers, reconciler, claims, registry, defaultPool: poolId, logger: silentLogger });
  const metrics = new PoolMetrics(store, () => [poolId]);
  // Release and upgrades of agents (issue 11), on the same in-memory runtimes and provider.
  const upgrades = new UpgradeRunner({ store, providers, ownerId, logger: silentLogger, runner: reconciler.holder });
  const agents = new AgentOperations({
    store,
    registry,
    upgrades,
    release: { store, providers, runtime: runtimes, resetTimeoutMs: 1_000, logger: silentLogger },
  });
  const app = await buildServer({
    store,
    reconciler,
    ops,
    metrics,
    poolId,
    apiKey,
    logger: (o.logger ?? silentLogger) as never,
    version: { version: "0.0.0-test", commit: null },
    ...(o.mutationRateLimit !== undefined ? { mutationRateLimit: o.mutationRateLimit } : {}),
    ...(o.trustProxy !== undefined ? { trustProxy: o.trustProxy } : {}),
    ...(o.adminPassword !== undefined ? { adminPassword: o.adminPassword } : {}),
    ...(o.loginAttemptsPerMinute !== undefined ? { loginAttemptsPerMinute: o.loginAttemptsPerMinute } : {}),
    ...(o.bodyLimit !== undefined ? { bodyLimit: o.bodyLimit } : {}),
    // The routes instances call about themselves (no resource kinds here: credits answer 404).
    instanceRoutes: { runtime: runtimes, resources: null, rateLimitPerMin: 1_000, resetTimeoutMs: 1_000 },
    ...(o.liveSafetyReadMs !== undefined ? { liveSafetyReadMs: o.liveSafetyReadMs } : {}),
    rollouts,
    agents,
  });
  await app.ready();
  return {
    app,
    ops,
    rollouts,
    provider,
    runtimes,
    apiKey,
    close: async () => {
      await app.close();
      await upgrades.stop();
      await reconciler.stop();
    },
  };
}

/** Adds instances until the pool has `n` idle ones (a create, then passes with instant health). */
export async function ensureIdle(ops: PoolOperations, n: number): Promise<void> {
  for (let i = 0; i < 5 && (await ops.summary()).counts.idle < n; i++) {
    const s = await ops.summary();
    const missing = n - s.counts.idle - s.counts.starting;
    if (missing > 0) await ops.add(missing);
    await ops.reconcile();
  }
}

/**
 * The pool's state as the Store shows it: every field of every row (deleted ones included), the
 * newest event id and the pools. Equal hashes: the request in between changed none of it.
 */
export async function poolState(store: Store, poolId: string): Promise<{ hash: string; ids: string[]; invites: string[] }> {
  const [rows, pools, lastEvent] = await Promise.all([store.listInstances(poolId, { includeDeleted: true }), store.listPools(), store.lastPoolEventId(poolId)]);
  return {
    hash: createHash("sha256").update(JSON.stringify({ rows, pools, lastEvent })).digest("hex"),
    ids: rows.map((r) => r.id),
    invites: rows.flatMap((r) => (r.inviteUrl ? [r.inviteUrl] : [])),
  };
}
