/**
 * Prometheus metrics on a registry of our own. Instance counts are read from the store at scrape
 * time (the database is the truth, and every replica reports the same numbers); the rest are
 * counters and histograms fed by the claim path, the reconciler and the provider.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Store } from "./db/store.ts";
import { INSTANCE_STATUSES } from "./instance/status.ts";
import type { CreateInstanceSpec, Provider, ProviderInstance, ProviderListing, UpgradeInstanceSpec } from "./provider/provider.ts";
import type { TickResult } from "./pool/reconciler.ts";
import type { ClaimOutcome } from "./claim/claim.ts";
import type { ClaimReport } from "./pool/history-recorder.ts";
import type { SizingDecision } from "./pool/sizing.ts";

export class PoolMetrics {
  readonly registry = new Registry();
  readonly claims: Counter<"pool" | "outcome">;
  readonly claimSeconds: Histogram<"pool">;
  readonly claimOwnSeconds: Histogram<"pool">;
  readonly tickSeconds: Histogram;
  readonly providerCalls: Counter<"provider" | "operation" | "outcome">;
  readonly healthFailures: Counter;
  readonly transitions: Counter<"from" | "to">;
  // Warm hits, demand and refills (issue 13).
  readonly launches: Counter<"pool" | "launch_type">;
  readonly startupLatency: Histogram<"pool" | "launch_type">;
  readonly waitSeconds: Histogram<"pool" | "served">;
  readonly refillSeconds: Histogram<"pool">;
  readonly idleInstanceSeconds: Counter<"pool">;
  readonly arrivalRate: Gauge<"pool">;
  readonly targetIdle: Gauge<"pool">;
  readonly refillP95: Gauge<"pool">;
  readonly queueRejections: Counter<"pool">;

  constructor(store: Store, pools: () => string[] | Promise<string[]>, extra?: (registry: Registry) => void) {
    collectDefaultMetrics({ register: this.registry, prefix: "agent_pool_process_" });
    const r = this.registry;
    new Gauge({
      name: "agent_pool_instances",
      help: "Instances by pool and status (not yet deleted).",
      labelNames: ["pool", "status"],
      registers: [r],
      async collect() {
        this.reset();
        for (const pool of await pools()) {
          const counts = await store.countByStatus(pool);
          for (const s of INSTANCE_STATUSES) this.set({ pool, status: s }, counts[s]);
        }
      },
    });
    new Gauge({
      name: "agent_pool_foreign_resources",
      help: "Resources named like this deployment's that belong to another deployment (owner = its id) or to none (owner = none): left alone, never deleted.",
      labelNames: ["owner"],
      registers: [r],
      async collect() {
        this.reset();
        const byOwner = new Map<string, number>();
        for (const f of await store.foreignResources()) byOwner.set(f.owner ?? "none", (byOwner.get(f.owner ?? "none") ?? 0) + 1);
        for (const [owner, n] of byOwner) this.set({ owner }, n);
      },
    });
    new Gauge({
      name: "agent_pool_claim_queue_length",
      help: "Claims waiting in a pool's queue (live waiters of every replica, read from the database).",
      labelNames: ["pool"],
      registers: [r],
      async collect() {
        this.reset();
        const lengths = new Map((await store.claimQueueLengths()).map((l) => [l.poolId, l.waiting]));
        for (const pool of await pools()) this.set({ pool }, lengths.get(pool) ?? 0);
      },
    });
    this.queueRejections = new Counter({
      name: "agent_pool_claim_queue_rejections_total",
      help: "Claims refused because their pool's queue of waiting claims was full (503 QUEUE_FULL).",
      labelNames: ["pool"],
      registers: [r],
    });
    this.claims = new Counter({ name: "agent_pool_claims_total", help: "Claims by outcome.", labelNames: ["pool", "outcome"], registers: [r] });
    const buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 75];
    this.claimSeconds = new Histogram({
      name: "agent_pool_claim_duration_seconds",
      help: "Claim latency as the client sees it.",
      labelNames: ["pool"],
      buckets,
      registers: [r],
    });
    this.claimOwnSeconds = new Histogram({
      name: "agent_pool_claim_own_duration_seconds",
      help: "The pool manager's own share of a claim (total minus the instance's provision time).",
      labelNames: ["pool"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [r],
    });
    this.tickSeconds = new Histogram({
      name: "agent_pool_tick_duration_seconds",
      help: "Duration of reconcile passes (one pass serves every pool).",
      buckets,
      registers: [r],
    });
    this.providerCalls = new Counter({
      name: "agent_pool_provider_calls_total",
      help: "Provider API calls by operation and outcome.",
      labelNames: ["provider", "operation", "outcome"],
      registers: [r],
    });
    this.healthFailures = new Counter({ name: "agent_pool_health_check_failures_total", help: "Failed instance health checks.", registers: [r] });
    this.transitions = new Counter({
      name: "agent_pool_transitions_total",
      help: "Status changes made by the reconciler.",
      labelNames: ["from", "to"],
      registers: [r],
    });
    this.launches = new Counter({
      name: "agent_pool_claim_launches_total",
      help: "Claims that wanted an instance, by how they were served: warm (an idle instance at once), waited (none idle, then one), empty (none in the claim's wait).",
      labelNames: ["pool", "launch_type"],
      registers: [r],
    });
    this.startupLatency = new Histogram({
      name: "agent_pool_claim_startup_latency_seconds",
      help: "Latency of served claims: launch_type warm (an idle instance at once) or cold (waited for one). After agent-sandbox's claim_startup_latency.",
      labelNames: ["pool", "launch_type"],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers: [r],
    });
    const minutes = [0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 240, 360, 600];
    this.waitSeconds = new Histogram({
      name: "agent_pool_claim_wait_seconds",
      help: "Time a claim that found no idle instance waited, whether it was then served (served=true) or not.",
      labelNames: ["pool", "served"],
      buckets: minutes,
      registers: [r],
    });
    this.refillSeconds = new Histogram({
      name: "agent_pool_refill_seconds",
      help: "Time from an instance's create to idle (seen by the lease holder).",
      labelNames: ["pool"],
      buckets: minutes,
      registers: [r],
    });
    this.idleInstanceSeconds = new Counter({
      name: "agent_pool_idle_instance_seconds_total",
      help: "Instance-seconds spent idle (what the warm pool costs while nobody claims).",
      labelNames: ["pool"],
      registers: [r],
    });
    this.arrivalRate = new Gauge({
      name: "agent_pool_claim_arrival_rate_per_minute",
      help: "Claims per minute over the sizing window, as the sizing planner last measured it.",
      labelNames: ["pool"],
      registers: [r],
    });
    this.targetIdle = new Gauge({
      name: "agent_pool_sizing_target_idle",
      help: "Idle instances the sizing policy last chose to keep.",
      labelNames: ["pool"],
      registers: [r],
    });
    this.refillP95 = new Gauge({
      name: "agent_pool_sizing_refill_p95_seconds",
      help: "p95 of recent create-to-idle times the sizing planner last used.",
      labelNames: ["pool"],
      registers: [r],
    });
    extra?.(r);
  }

  /** How a claim was served (history-recorder.ts's report). */
  onLaunch(r: ClaimReport): void {
    if (r.launch === null) return;
    this.launches.inc({ pool: r.pool, launch_type: r.launch });
    if (r.launch !== "empty") this.startupLatency.observe({ pool: r.pool, launch_type: r.launch === "warm" ? "warm" : "cold" }, r.seconds);
    if (r.launch !== "warm") this.waitSeconds.observe({ pool: r.pool, served: String(r.launch === "waited") }, r.waitedMs / 1000);
  }

  onRefill(pool: string, ms: number): void {
    this.refillSeconds.observe({ pool }, ms / 1000);
  }

  onIdle(pool: string, instanceSeconds: number): void {
    if (instanceSeconds > 0) this.idleInstanceSeconds.inc({ pool }, instanceSeconds);
  }

  onSizing(pool: string, d: SizingDecision): void {
    this.targetIdle.set({ pool }, d.target);
    if (d.arrivalsPerMinute !== null) this.arrivalRate.set({ pool }, d.arrivalsPerMinute);
    this.refillP95.set({ pool }, d.refillP95Ms / 1000);
  }

  onClaim(pool: string, outcome: ClaimOutcome, seconds: number, provisionSeconds: number): void {
    this.claims.inc({ pool, outcome });
    if (outcome === "claimed" || outcome === "pending_acceptance") {
      this.claimSeconds.observe({ pool }, seconds);
      this.claimOwnSeconds.observe({ pool }, Math.max(0, seconds - provisionSeconds));
    }
  }

  onTick(t: TickResult): void {
    if (!t.leader) return;
    this.tickSeconds.observe(t.durationMs / 1000);
    if (t.healthFailures) this.healthFailures.inc(t.healthFailures);
    for (const x of t.transitions) this.transitions.inc({ from: x.from, to: x.to });
  }

  /**
   * Gauges of the provider's API budget, read at scrape time: what Railway's `X-RateLimit-*`
   * headers said last, and the renames waiting for a retry. The earlier system spent 82% of its
   * hourly budget without anyone seeing it coming; these make that visible and alertable.
   */
  watchProvider(provider: Provider): void {
    if (!provider.budget) return;
    const read = () => provider.budget!();
    const gauge = (name: string, help: string, value: (b: ReturnType<typeof read>) => number | null) =>
      new Gauge({
        name,
        help,
        labelNames: ["provider"],
        registers: [this.registry],
        collect() {
          this.reset();
          const v = value(read());
          if (v !== null) this.set({ provider: provider.kind }, v);
        },
      });
    gauge("agent_pool_provider_rate_limit", "Requests the provider allows in its current rate-limit window (X-RateLimit-Limit).", (b) => b.limit);
    gauge("agent_pool_provider_rate_limit_remaining", "Requests left in the provider's current rate-limit window (X-RateLimit-Remaining).", (b) => b.remaining);
    gauge("agent_pool_provider_pending_renames", "Renames that failed and wait for a retry.", (b) => b.pendingRenames);
  }

  /** Wraps a provider so that every call is counted by operation and outcome. */
  meter(provider: Provider): Provider {
    const count = async <T>(operation: string, fn: () => Promise<T>): Promise<T> => {
      try {
        const v = await fn();
        this.providerCalls.inc({ provider: provider.kind, operation, outcome: "ok" });
        return v;
      } catch (err) {
        this.providerCalls.inc({ provider: provider.kind, operation, outcome: "error" });
        throw err;
      }
    };
    return {
      kind: provider.kind,
      list: (): Promise<ProviderListing> => count("list", () => provider.list()),
      create: (spec: CreateInstanceSpec): Promise<ProviderInstance> => count("create", () => provider.create(spec)),
      delete: (ref: string) => count("delete", () => provider.delete(ref)),
      rename: (ref: string, name: string) => count("rename", () => provider.rename(ref, name)),
      ...(provider.upgrade ? { upgrade: (ref: string, spec: UpgradeInstanceSpec) => count("upgrade", () => provider.upgrade!(ref, spec)) } : {}),
      close: () => provider.close(),
      // The pool id and the pools told every pass go through: without them a provider named every
      // pool's instances as the default pool's and listed only that pool's (several pools, Railway).
      ...(provider.serviceName ? { serviceName: (id: string, poolId?: string) => provider.serviceName!(id, poolId) } : {}),
      ...(provider.knowPools ? { knowPools: (poolIds: readonly string[]) => provider.knowPools!(poolIds) } : {}),
      ...(provider.budget ? { budget: () => provider.budget!() } : {}),
      ...(provider.renamePending ? { renamePending: (ref: string) => provider.renamePending!(ref) } : {}),
      ...(provider.nameFor ? { nameFor: (requested: string) => provider.nameFor!(requested) } : {}),
    };
  }
}
