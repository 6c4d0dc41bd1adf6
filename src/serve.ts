/**
 * Wiring of the pool manager: configuration → store → provider → reconciler → HTTP. Nothing here
 * decides anything; it builds the pieces, starts them, and stops them in reverse order.
 */
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { randomId, randomIds, randomToken, systemClock, type Clock, type IdSource } from "./clock.ts";
import { trustProxyWarning, type Config } from "./config.ts";
import { openStore } from "./db/open.ts";
import type { Store } from "./db/store.ts";
import { InstanceClient } from "./instance/client.ts";
import { createLogger } from "./logger.ts";
import { buildServer, type PoolServer } from "./http/server.ts";
import { Readiness } from "./http/readiness.ts";
import { Cleaner } from "./pool/cleaner.ts";
import { Reconciler } from "./pool/reconciler.ts";
import type { HealthCadence } from "./pool/health-schedule.ts";
import { LocalProvider } from "./provider/local.ts";
import { RailwayProvider } from "./provider/railway/provider.ts";
import { ClaimService } from "./claim/claim.ts";
import { ClaimWaitQueue } from "./claim/wait-queue.ts";
import { estimateRetryAfterSeconds } from "./claim/retry-after.ts";
import { PoolMetrics } from "./metrics.ts";
import { HistoryRecorder } from "./pool/history-recorder.ts";
import { PoolOperations } from "./pool/operations.ts";
import { poolsFromConfig } from "./pool/config-file.ts";
import { PoolRegistry } from "./pool/registry.ts";
import { RolloutService } from "./pool/rollouts.ts";
import type { Provider } from "./provider/provider.ts";
import { packageVersion } from "./version.ts";
import { resourcesFromConfig, type ResourceSetup } from "./resource/setup.ts";
import { AgentOperations } from "./pool/agent-operations.ts";
import { UpgradeRunner } from "./upgrade/runner.ts";

export interface RunningPool {
  url: string;
  app: PoolServer;
  store: Store;
  provider: Provider;
  reconciler: Reconciler;
  ops: PoolOperations;
  metrics: PoolMetrics;
  apiKey: string;
  /** Per-instance resources (issue 12); null when no kind is configured. */
  resources: ResourceSetup | null;
  /** Rollouts of changed templates (issue 11). */
  rollouts: RolloutService;
  /** Release, upgrades and versions of agents (issue 11). */
  agents: AgentOperations;
  upgrades: UpgradeRunner;
  /** Stops everything in reverse order of start; the local provider stops its instances. */
  close(): Promise<void>;
}

export interface ServeOverrides {
  clock?: Clock;
  ids?: IdSource;
  provider?: Provider;
  /** Observes every claim (benchmarks read the pool manager's own share of the latency). */
  onClaim?: (outcome: string, seconds: number, provisionSeconds: number) => void;
  /** Where log lines go (tests capture them). */
  logDestination?: NodeJS.WritableStream;
  /** When instances are health-checked (tests that tick by hand check every instance every pass). */
  cadence?: HealthCadence;
}

/**
 * The API key: from POOL_API_KEY, else generated once and kept in the data dir (mode 0600).
 * It is printed once, at the start that generates it, and never logged afterwards.
 */
export function resolveApiKey(config: Config, dataDir: string): { key: string; generated: boolean } {
  if (config.POOL_API_KEY) return { key: config.POOL_API_KEY, generated: false };
  const file = join(dataDir, "api-key");
  if (existsSync(file)) return { key: readFileSync(file, "utf8").trim(), generated: false };
  const key = `ap_${randomToken()}`;
  writeFileSync(file, `${key}\n`, { mode: 0o600, flag: "wx" });
  chmodSync(file, 0o600);
  return { key, generated: true };
}

async function openRailway(config: Config, logger: ReturnType<typeof createLogger>, ownerId: string): Promise<Provider> {
  return RailwayProvider.open({
    apiUrl: config.RAILWAY_API_URL,
    ...(config.RAILWAY_API_TOKEN ? { apiToken: config.RAILWAY_API_TOKEN } : {}),
    ...(config.RAILWAY_PROJECT_TOKEN ? { projectToken: config.RAILWAY_PROJECT_TOKEN } : {}),
    projectIds: (config.RAILWAY_PROJECT_IDS ?? "")
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean),
    ...(config.RAILWAY_INSTANCE_ENVIRONMENT_ID ? { environmentId: config.RAILWAY_INSTANCE_ENVIRONMENT_ID } : {}),
    environmentName: config.RAILWAY_INSTANCE_ENVIRONMENT_NAME,
    ...(config.RAILWAY_WORKSPACE_ID ? { workspaceId: config.RAILWAY_WORKSPACE_ID } : {}),
    poolId: config.POOL_ID,
    ownerId,
    servicePrefix: config.RAILWAY_SERVICE_PREFIX,
    image: config.INSTANCE_IMAGE!,
    instancePort: config.INSTANCE_PORT,
    urlScheme: config.RAILWAY_URL_SCHEME,
    requestTimeoutMs: config.RAILWAY_REQUEST_TIMEOUT_MS,
    maxRequestsPerSecond: config.RAILWAY_MAX_RPS,
    logger: logger.child({ component: "provider/railway" }),
  });
}

export async function serve(config: Config, over: ServeOverrides = {}): Promise<RunningPool> {
  const logger = createLogger(config.LOG_LEVEL, over.logDestination);
  const dataDir = resolve(config.DATA_DIR);
  mkdirSync(dataDir, { recursive: true });
  const { key: apiKey, generated } = resolveApiKey(config, dataDir);
  if (generated) {
    // Printed on purpose, once, outside the structured log (which never carries secrets).
    process.stdout.write(`\nagent-pool: generated an API key (kept in ${join(dataDir, "api-key")}):\n  ${apiKey}\n\n`);
  }

  const store = await openStore({
    databaseUrl: config.DATABASE_URL,
    dataDir: join(dataDir, "pglite"),
    logger,
    postgres: { poolMax: config.PG_POOL_MAX, statementTimeoutMs: config.PG_STATEMENT_TIMEOUT_MS },
  });
  const closers: Array<() => Promise<void>> = [() => store.close()];
  const closeAll = async () => {
    for (const c of closers.reverse()) await c().catch((err) => logger.error({ err }, "shutdown step failed"));
  };
  try {
    // The deployment's identity, recorded by the first start and shared by every replica: every
    // provider resource carries it, and the reconciler touches nothing that does not.
    const ownerId = await store.ensureOwnerId(randomId(5));
    const poolsConfig = poolsFromConfig(config);

    let reconcilerRef: Reconciler | undefined;
    // /readyz: the database answers and a pass ended within the lease TTL (the reconciler's own).
    const readiness = new Readiness({ store, maxPassAgeMs: Math.max(15_000, 3 * config.TICK_INTERVAL_MS) });
    const ownerTag = createHash("sha256").update(dataDir).digest("hex").slice(0, 16);
    const metrics = new PoolMetrics(store, async () => (await store.listPools()).map((p) => p.id));
    // Each replica adds what it measures to the pools' per-minute history (issue 13).
    const history = new HistoryRecorder({
      store,
      clock: over.clock ?? systemClock,
      logger: logger.child({ component: "history" }),
      flushIntervalMs: config.POOL_HISTORY_FLUSH_MS,
    });
    // Stopped (its last counts written) after the reconciler and the server, before the store closes.
    closers.push(() => history.stop());
    const rawProvider =
      over.provider ??
      (config.PROVIDER === "railway"
        ? await openRailway(config, logger, ownerId)
        : await LocalProvider.open({
            stateDir: join(dataDir, "local"),
            ...(config.localRuntimeCommand ? { command: config.localRuntimeCommand } : {}),
            env: { ...config.instanceEnv, POOL_ENVIRONMENT: config.POOL_ENVIRONMENT },
            ownerTag,
            logger: logger.child({ component: "provider/local" }),
            startTimeoutMs: config.LOCAL_START_TIMEOUT_MS,
            // An instance that starts answering is handed out at the next pass: run it now.
            onChange: () => reconcilerRef?.wake(),
          }));
    const provider = metrics.meter(rawProvider);
    metrics.watchProvider(provider);
    closers.push(() => provider.close());
    const providers = new Map<string, Provider>([[provider.kind, provider]]);

    const client = new InstanceClient();
    closers.push(() => client.close());

    // A change of a pool's template (API, configuration, rollback) starts a rollout (issue 11).
    const rollouts = new RolloutService({ store, logger: logger.child({ component: "rollouts" }), haltAfter: config.ROLLOUT_HALT_AFTER_FAILURES });

    // Seeded before the first pass: a pool the configuration names exists by the time anyone asks.
    let claimsRef: ClaimService | undefined;
    const registry = new PoolRegistry({
      store,
      logger: logger.child({ component: "pools" }),
      deploymentEnv: config.instanceEnv,
      providers: [...providers.keys()],
      onChange: (pool) => {
        claimsRef?.invalidatePools();
        void rollouts.noteChange(pool);
        reconcilerRef?.wake();
        void store.publishHint({ pool: pool.id, kind: "changed" }).catch(() => undefined);
      },
    });
    await registry.seed(poolsConfig.pools);

    // Per-instance resources (issue 12): each new instance's own OpenRouter key (when a provisioning
    // key is configured), made before it boots; the resource reconciler collects what no live
    // instance owns. Null when no kind is configured.
    const resources = resourcesFromConfig(config, { store, ownerId, clock: over.clock ?? systemClock, logger, registry: metrics.registry });

    const reconciler = new Reconciler({
      ownerId,
      store,
      providers,
      defaultProvider: provider.kind,
      health: client,
      statusReader: client,
      clock: over.clock ?? systemClock,
      ids: over.ids ?? randomIds,
      logger: logger.child({ component: "reconciler" }),
      spec: {
        orphanGraceMs: config.ORPHAN_GRACE_MS,
        maxDeletesPerTick: config.MAX_DELETES_PER_TICK,
        maxCreatesPerTick: config.MAX_CREATES_PER_TICK,
        ...(poolsConfig.globalMaxTotal !== undefined ? { globalMaxTotal: poolsConfig.globalMaxTotal } : {}),
      },
      policy: {
        stuckTimeoutMs: config.POOL_STUCK_TIMEOUT_MS,
        failureThreshold: config.HEALTH_FAILURE_THRESHOLD,
        // Health bookkeeping alone (the last good check) is written at most every 5 minutes: the
        // stuck timeout (15 min by default) is judged from it, and at 10,000 instances a write per
        // check would be hundreds of rows a second.
        healthRecordIntervalMs: 300_000,
        createGraceMs: Math.max(120_000, config.LOCAL_START_TIMEOUT_MS),
        pendingTimeoutMs: config.PENDING_ACCEPTANCE_TIMEOUT_MS,
      },
      intervalMs: config.TICK_INTERVAL_MS,
      healthTimeoutMs: config.HEALTH_TIMEOUT_MS,
      healthConcurrency: config.HEALTH_CONCURRENCY,
      cadence: over.cadence ?? {
        bootingMinMs: config.STARTING_POLL_MS,
        bootingMaxMs: Math.max(config.STARTING_POLL_MS, 15_000),
        idleMs: config.HEALTH_IDLE_INTERVAL_MS,
        claimedMs: config.HEALTH_CLAIMED_INTERVAL_MS,
        otherMs: config.HEALTH_CLAIMED_INTERVAL_MS,
        jitter: 0.2,
      },
      maxChecksPerPass: config.HEALTH_CHECKS_PER_PASS,
      createConcurrency: config.CREATE_CONCURRENCY,
      haltCreatesAfterFailures: config.CREATE_HALT_AFTER_FAILURES,
      sweepMarginMs: config.CLAIM_SWEEP_MARGIN_MS,
      cleaner: new Cleaner({
        store,
        eventRetentionMs: config.EVENT_RETENTION_DAYS * 86_400_000,
        claimRecordRetentionMs: config.CLAIM_RECORD_RETENTION_DAYS * 86_400_000,
        historyRetentionMs: config.POOL_HISTORY_RETENTION_DAYS * 86_400_000,
      }),
      sizing: {
        recorder: history,
        // Until a pool's own boots are measured: local processes start in seconds, Railway deploys in minutes.
        defaultRefillMs: (pool) => ((pool.provider ?? provider.kind) === "railway" ? 180_000 : 10_000),
        onDecision: (pool, d) => metrics.onSizing(pool, d),
        onRefill: (pool, ms) => metrics.onRefill(pool, ms),
        onIdle: (pool, s) => metrics.onIdle(pool, s),
      },
      startingPollMs: config.STARTING_POLL_MS,
      instanceEnv: config.instanceEnv,
      envFor: (pool) => ({ POOL_ID: pool.id, POOL_RUNTIME: pool.runtime, POOL_ENVIRONMENT: config.POOL_ENVIRONMENT }),
      ...(resources ? { resources: resources.service } : {}),
      onTick: (t) => {
        metrics.onTick(t);
        readiness.passEnded(t);
      },
      rollouts,
    });
    reconcilerRef = reconciler;
    closers.push(() => reconciler.stop());
    history.start();

    // Waiting claims of this process, served in order with every replica's (issue 13).
    const queue = new ClaimWaitQueue({
      store,
      logger: logger.child({ component: "claim-queue" }),
      owner: reconciler.holder,
      maxLength: config.CLAIM_QUEUE_MAX,
      ttlMs: config.CLAIM_QUEUE_TTL_MS,
      recheckMs: config.CLAIM_QUEUE_RECHECK_MS,
      onRejected: (pool) => metrics.queueRejections.inc({ pool }),
    });
    const claims = new ClaimService({
      queue,
      store,
      client,
      clock: over.clock ?? systemClock,
      logger: logger.child({ component: "claim" }),
      defaultPool: config.POOL_ID,
      defaults: { agentName: config.CLAIM_DEFAULT_AGENT_NAME, instructions: config.CLAIM_DEFAULT_INSTRUCTIONS, joinUrlHosts: config.JOIN_URL_HOSTS ?? null },
      owner: reconciler.holder,
      provisionTimeoutMs: config.PROVISION_TIMEOUT_MS,
      resetTimeoutMs: config.RESET_TIMEOUT_MS,
      ...(config.CLAIM_DEADLINE_MS !== undefined ? { claimDeadlineMs: config.CLAIM_DEADLINE_MS } : {}),
      sweepMarginMs: config.CLAIM_SWEEP_MARGIN_MS,
      onOutcome: (outcome, seconds, provisionSeconds, pool) => {
        metrics.onClaim(pool, outcome, seconds, provisionSeconds);
        over.onClaim?.(outcome, seconds, provisionSeconds);
      },
      recorder: (report) => {
        metrics.onLaunch(report);
        history.claim(report);
      },
      // From the pool's own boot history and the instances starting now (src/claim/retry-after.ts).
      retryAfterSeconds: async (pool) =>
        estimateRetryAfterSeconds({ now: (over.clock ?? systemClock).now(), ...(await store.bootStats(pool)), tickIntervalMs: config.TICK_INTERVAL_MS }),
    });
    claimsRef = claims;
    const ops = new PoolOperations({
      store,
      providers,
      reconciler,
      claims,
      registry,
      defaultPool: config.POOL_ID,
      logger: logger.child({ component: "operations" }),
    });

    // Railway's deployment webhook: a secret path of its own, registered with Railway once the
    // server listens. Events only make the lease holder check an instance at once (webhook-routes.ts).
    const publicUrl = config.POOL_PUBLIC_URL ?? (process.env.RAILWAY_PUBLIC_DOMAIN ? `https://${process.env.RAILWAY_PUBLIC_DOMAIN}` : undefined);
    const webhooks =
      config.RAILWAY_WEBHOOKS === "auto" && rawProvider instanceof RailwayProvider && config.RAILWAY_WORKSPACE_ID !== undefined && publicUrl !== undefined;
    const webhookSecret = webhooks ? await store.ensureWebhookSecret(randomToken()) : undefined;

    // Operators' actions on agents (issue 11): a row an operation moved makes the lease holder look
    // sooner (a released agent is claimable, a retired one is replaced, an upgraded one redeploys).
    const changed = (inst: { id: string; poolId: string }) => {
      store.publishHint({ pool: inst.poolId, kind: "check", instanceId: inst.id }).catch(() => undefined);
      reconciler.wake();
    };
    const envFor = (pool: { id: string; runtime: string }) => ({ POOL_ID: pool.id, POOL_RUNTIME: pool.runtime, POOL_ENVIRONMENT: config.POOL_ENVIRONMENT });
    const upgrades = new UpgradeRunner({
      store,
      providers,
      ownerId,
      instanceEnv: config.instanceEnv,
      envFor,
      logger: logger.child({ component: "upgrades" }),
      runner: reconciler.holder,
      concurrency: config.UPGRADE_CONCURRENCY,
      staleMs: config.UPGRADE_JOB_STALE_MS,
      heartbeatMs: Math.max(250, Math.floor(config.UPGRADE_JOB_STALE_MS / 6)),
      onChanged: changed,
    });
    // Stopped before the providers close: a job stops at its next agent, never mid-provider-call.
    closers.push(() => upgrades.stop());
    const agents = new AgentOperations({
      store,
      registry,
      upgrades,
      release: {
        store,
        providers,
        runtime: client,
        resetTimeoutMs: config.RESET_TIMEOUT_MS,
        logger: logger.child({ component: "release" }),
        onChanged: (inst) => {
          changed(inst);
          if (inst.status === "dead") resources?.reconciler.wake();
        },
      },
    });

    // The first pass starts before the HTTP server is built: instances boot while routes, the
    // OpenAPI document and the dashboard are set up (half a second saved on every start). If the
    // server then fails to listen, closeAll stops the reconciler and the instances it started.
    reconciler.start();
    // Resumes jobs whose runner stopped (a restart of this pool manager) once their heartbeat is stale.
    upgrades.start();
    if (resources) {
      resources.reconciler.start();
      closers.push(() => resources.reconciler.stop());
    }
    const app = await buildServer({
      store,
      reconciler,
      ops,
      metrics,
      poolId: config.POOL_ID,
      apiKey,
      logger: logger.child({ component: "http" }),
      version: packageVersion(),
      mutationRateLimit: config.MUTATION_RATE_LIMIT_PER_MIN,
      trustProxy: config.TRUST_PROXY,
      adminPassword: config.ADMIN_PASSWORD,
      environment: config.POOL_ENVIRONMENT,
      webhookSecret,
      instanceRoutes: {
        runtime: client,
        resources: resources?.service ?? null,
        rateLimitPerMin: config.INSTANCE_RATE_LIMIT_PER_MIN,
        resetTimeoutMs: config.RESET_TIMEOUT_MS,
        // A row an instance moved: the lease holder looks sooner, and what it owned goes now.
        onChanged: (inst) => {
          store.publishHint({ pool: inst.poolId, kind: "changed", instanceId: inst.id }).catch(() => undefined);
          resources?.reconciler.wake();
        },
      },
      resources: resources?.service ?? null,
      readiness,
      rollouts,
      agents,
    });
    closers.push(() => app.close());
    // Closed before the server (closers run in reverse): waiting claims give up and leave the queue
    // instead of holding the server's close for up to their whole wait.
    closers.push(() => queue.close());
    const url = await app.listen({ port: config.PORT, host: config.HOST });
    if (webhookSecret && rawProvider instanceof RailwayProvider) {
      const hook = `${publicUrl!.replace(/\/+$/, "")}/api/webhooks/railway/${webhookSecret}`;
      // Not awaited into the start-up's success: without the webhook the periodic pass converges.
      rawProvider.registerWebhook(hook).then(
        (how) => logger.info({ webhook: `${publicUrl}/api/webhooks/railway/…`, how }, "railway deployment webhook registered"),
        (err) => logger.warn({ err: (err as Error).message }, "railway deployment webhook not registered; instances are checked on their schedule only"),
      );
    }
    logger.info(
      { url, pool: config.POOL_ID, backend: store.backend, provider: provider.kind, trustProxy: config.TRUST_PROXY },
      `agent-pool listening on ${url}`,
    );
    const proxyWarning = trustProxyWarning(config);
    if (proxyWarning) logger.warn({ platform: config.proxyPlatform?.name }, proxyWarning);

    let closing: Promise<void> | null = null;
    return {
      url,
      app,
      store,
      provider,
      reconciler,
      ops,
      metrics,
      apiKey,
      resources,
      rollouts,
      agents,
      upgrades,
      close: () => (closing ??= closeAll()),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
