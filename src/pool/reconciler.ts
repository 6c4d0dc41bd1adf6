/**
 * The reconciler. `tick()` is one pass that returns what it did; `start()` is only a timer around
 * it. A pass: take the lease (one replica ticks at a time), read the rows, list the provider in ONE
 * call, health-check what needs it, write only the rows that changed in one batched statement,
 * resolve stale claims, then apply `planPool` (delete dead and orphaned resources, create to fill
 * the deficit, recording each row before calling the provider).
 *
 * Notifications (a claim committing, an operator action) only `wake()` the loop early; the periodic
 * pass alone converges (pg-boss: "a NOTIFY is only ever a latency hint").
 */
import { hostname } from "node:os";
import type { Clock, IdSource } from "../clock.ts";
import { randomId } from "../clock.ts";
import type { InstanceRecord, ObservationChange, Store } from "../db/store.ts";
import type { HealthObservation } from "../instance/derive.ts";
import { observeInstance, type ObservePolicy } from "../instance/observe.ts";
import type { HealthChecker, RuntimeStatus, InstanceTarget } from "../instance/client.ts";
import { emptyCounts, type InstanceStatus, type StatusCounts } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import type { Provider, ProviderInstance } from "../provider/provider.ts";
import { planPool, type ListingState, type ObservedInstance, type ObservedOrphan, type PlanNote, type PoolSpec } from "./plan.ts";

export interface StatusReader {
  status(target: InstanceTarget, timeoutMs: number): Promise<RuntimeStatus>;
}

export interface ReconcilerOptions {
  poolId: string;
  /** The deployment's owner id: every resource this pool creates carries it. */
  ownerId: string;
  store: Store;
  provider: Provider;
  health: HealthChecker;
  /** Asks a runtime what it is bound to (stale-claim sweeper). */
  statusReader: StatusReader;
  clock: Clock;
  ids: IdSource;
  logger: Logger;
  spec: PoolSpec;
  policy: ObservePolicy;
  intervalMs: number;
  healthTimeoutMs: number;
  healthConcurrency: number;
  /** A `claiming` row older than this plus `sweepMarginMs` is resolved by the sweeper. */
  provisionTimeoutMs: number;
  sweepMarginMs?: number;
  /** Interval between passes while instances are starting (default 1 s, never above intervalMs). */
  startingPollMs?: number;
  /** Environment for new instances (pool settings, operator's INSTANCE_ENV_*). */
  instanceEnv?: Record<string, string>;
  /** Identity of this replica for the lease. */
  holder?: string;
  /** Called after every pass (metrics, server-sent events). */
  onTick?: (result: TickResult) => void;
}

export interface TransitionNote {
  id: string;
  from: InstanceStatus;
  to: InstanceStatus;
  reason: string;
}

export interface TickResult {
  at: string;
  durationMs: number;
  /** False when another replica holds the lease: this pass did nothing. */
  leader: boolean;
  listing: ListingState | "skipped";
  providerCalls: { list: number; create: number; delete: number };
  healthChecks: number;
  healthFailures: number;
  transitions: TransitionNote[];
  created: string[];
  deleted: Array<{ ref: string; instanceId: string | null; reason: string }>;
  /** Claimed instances whose provider resource was renamed to show the agent (see #rename). */
  renamed: string[];
  /**
   * Resources named like this pool's that are not ours: another deployment's (`owner` its id), or
   * made before owner ids and matching no row (`owner` null). Never deleted or adopted.
   */
  foreign: Array<{ ref: string; name: string; owner: string | null }>;
  notes: PlanNote[];
  counts: StatusCounts & { total: number };
  errors: string[];
}

export class Reconciler {
  readonly #o: ReconcilerOptions;
  readonly #holder: string;
  readonly #leaseName: string;
  readonly #leaseTtlMs: number;
  #chain: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | null = null;
  #running = false;
  #stopped = true;
  #wakeRequested = false;
  #replenishQueued = false;
  #last: TickResult | null = null;
  #lease: import("../db/store.ts").Lease | null = null;
  #unsubscribe: Promise<() => Promise<void>> | null = null;
  /** Foreign resources already reported in the log (reported once each). */
  readonly #reportedForeign = new Set<string>();
  /** Renames this replica's passes tried and that failed: when to try again (Infinity: given up). */
  readonly #renameBackoff = new Map<string, { failures: number; retryAt: number }>();

  constructor(opts: ReconcilerOptions) {
    this.#o = opts;
    this.#holder = opts.holder ?? `${hostname()}:${process.pid}:${randomId(6)}`;
    this.#leaseName = `reconciler:${opts.poolId}`;
    // Three missed passes before another replica takes over; never less than 15 s.
    this.#leaseTtlMs = Math.max(15_000, opts.intervalMs * 3);
  }

  get holder(): string {
    return this.#holder;
  }

  get lastResult(): TickResult | null {
    return this.#last;
  }

  /** One pass. Calls never overlap: a call made during a pass runs after it. */
  tick(): Promise<TickResult> {
    const run = this.#chain.then(() => this.#pass());
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Creates up to `count` instances now (an operator's "add N"), bounded by max total: each row is
   * inserted under the pool's create lock, so neither this replica's passes nor another's can take
   * the pool past it.
   */
  createNow(count: number): Promise<{ created: string[]; errors: string[] }> {
    const run = this.#chain.then(async () => {
      const o = this.#o;
      const counts = await o.store.countByStatus(o.poolId);
      let live = 0;
      for (const [s, n] of Object.entries(counts)) if (s !== "dead") live += n;
      const n = Math.max(0, Math.min(count, o.spec.maxTotal - live));
      const result = { created: [] as string[], errors: [] as string[], providerCalls: { list: 0, create: 0, delete: 0 } } as unknown as TickResult;
      if (n > 0) await this.#create(n, result, { maxLive: o.spec.maxTotal });
      return { created: result.created, errors: result.errors };
    });
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /** Runs a pass now and then every `intervalMs` after each pass ends; listens for claim hints. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
    // A claim on any replica publishes a hint; the replica holding the lease replenishes. A lost
    // hint costs only latency: the next pass replenishes anyway.
    this.#unsubscribe = this.#o.store
      .subscribeHints((h) => {
        if (h.pool !== this.#o.poolId || this.#lease === null) return;
        if (h.kind === "claimed") this.replenishSoon();
        else if (h.kind === "bound" && h.instanceId) this.renameSoon(h.instanceId);
      })
      .catch((err) => {
        this.#o.logger.warn({ err: (err as Error).message }, "could not listen for claim hints; replenishing at each pass only");
        return async () => undefined;
      });
  }

  /** A hint that something changed (a claim committed): run a pass soon. */
  wake(): void {
    if (this.#stopped) return;
    if (this.#running) {
      this.#wakeRequested = true;
      return;
    }
    this.#schedule(0);
  }

  /**
   * Replenish right away after a claim, without a full pass: one count query, then the creates the
   * plan asks for. Coalesced (many claims at once cause one replenish) and queued behind this
   * replica's passes. Any replica replenishes the claims it served: each row is inserted under the
   * pool's create lock, conditional on the pool still being short of min idle and under max total
   * (insertInstanceWithin), so replicas replenishing at once, or beside the leader's pass, never
   * over-create. (A full pass per claim would put every health check of the fleet on the claim
   * path's CPU.)
   */
  replenishSoon(): void {
    if (this.#stopped || this.#replenishQueued) return;
    this.#replenishQueued = true;
    const run = this.#chain.then(async () => {
      this.#replenishQueued = false;
      const o = this.#o;
      const counts = await o.store.countByStatus(o.poolId);
      let live = 0;
      for (const [st, n] of Object.entries(counts)) if (st !== "dead") live += n;
      const deficit = Math.max(0, o.spec.minIdle - counts.idle - counts.starting);
      const n = Math.min(deficit, Math.max(0, o.spec.maxTotal - live), o.spec.maxCreatesPerTick);
      if (n === 0) return;
      const result = { created: [] as string[], errors: [] as string[], providerCalls: { list: 0, create: 0, delete: 0 } } as unknown as TickResult;
      await this.#create(n, result, { maxLive: o.spec.maxTotal, minIdle: o.spec.minIdle });
      if (result.errors.length) o.logger.warn({ errors: result.errors }, "replenish after claim: some creates failed");
      // New instances are `starting`: look at them sooner than the interval.
      if (!this.#running && !this.#stopped) this.#schedule(Math.min(o.intervalMs, o.startingPollMs ?? 1000));
    });
    this.#chain = run.catch((err) => this.#o.logger.error({ err }, "replenish after claim failed"));
  }

  /**
   * Renames a just-claimed instance's resource to show its agent, off the claim path (the Railway
   * provider queues and retries a rename that fails; the earlier system lost 40 of 90 renames to
   * 429s). A rename that never lands is redone by a later pass (#renameClaimed).
   */
  renameSoon(instanceId: string): void {
    if (this.#stopped) return;
    const o = this.#o;
    void (async () => {
      const inst = await o.store.getInstance(instanceId);
      if (!inst || !inst.providerRef || !inst.agentName || (inst.status !== "claimed" && inst.status !== "pending_acceptance")) return;
      const name = agentServiceName(o.provider.serviceName?.(inst.id) ?? inst.name, inst.agentName);
      await o.provider.rename(inst.providerRef, name);
    })().catch((err) => o.logger.warn({ err: (err as Error).message, instanceId }, "rename after claim failed; a later pass retries"));
  }

  /** Stops the timer and waits for a running pass; gives up the lease. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const unsubscribe = this.#unsubscribe;
    this.#unsubscribe = null;
    await (await unsubscribe)?.().catch(() => undefined);
    await this.#chain;
    const lease = this.#lease;
    this.#lease = null;
    if (lease) await this.#o.store.releaseLease(lease).catch(() => undefined);
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#loopOnce(), delayMs);
  }

  async #loopOnce(): Promise<void> {
    this.#timer = null;
    this.#running = true;
    try {
      await this.tick();
    } catch (err) {
      this.#o.logger.error({ err }, "reconcile pass failed");
    } finally {
      this.#running = false;
    }
    const again = this.#wakeRequested;
    this.#wakeRequested = false;
    // While instances boot, look again sooner than the interval so they are handed out as soon as
    // they are healthy; the interval still bounds the steady-state cost.
    const booting = (this.#last?.counts.starting ?? 0) > 0;
    const next = again ? 0 : booting ? Math.min(this.#o.intervalMs, this.#o.startingPollMs ?? 1000) : this.#o.intervalMs;
    this.#schedule(next);
  }

  async #pass(): Promise<TickResult> {
    const o = this.#o;
    const started = o.clock.now();
    const t0 = performance.now();
    const result: TickResult = {
      at: started.toISOString(),
      durationMs: 0,
      leader: false,
      listing: "skipped",
      providerCalls: { list: 0, create: 0, delete: 0 },
      healthChecks: 0,
      healthFailures: 0,
      transitions: [],
      created: [],
      deleted: [],
      renamed: [],
      foreign: [],
      notes: [],
      counts: { ...emptyCounts(), total: 0 },
      errors: [],
    };
    try {
      this.#lease = await o.store.acquireLease(this.#leaseName, this.#holder, this.#leaseTtlMs);
      result.leader = this.#lease !== null;
      if (!result.leader) return this.#finish(result, t0);
      await this.#reconcile(result);
    } catch (err) {
      result.errors.push(`pass: ${(err as Error).message}`);
      o.logger.error({ err }, "reconcile pass aborted");
    }
    return this.#finish(result, t0);
  }

  #finish(result: TickResult, t0: number): TickResult {
    result.durationMs = Math.round((performance.now() - t0) * 100) / 100;
    this.#last = result;
    if (result.leader) {
      const c = result.counts;
      this.#o.logger.info(
        {
          tick: {
            durationMs: result.durationMs,
            listing: result.listing,
            idle: c.idle,
            starting: c.starting,
            claimed: c.claimed + c.pending_acceptance + c.claiming,
            crashed: c.crashed,
            total: c.total,
            transitions: result.transitions.length,
            created: result.created.length,
            deleted: result.deleted.length,
            healthFailures: result.healthFailures,
            notes: result.notes,
            errors: result.errors.length,
          },
        },
        `tick: ${c.idle} idle, ${c.starting} starting, ${c.claimed} claimed, ${c.crashed} crashed, ${c.total} total; ` +
          `+${result.created.length} created, -${result.deleted.length} deleted, ${result.transitions.length} changed` +
          (result.errors.length ? `, ${result.errors.length} errors` : ""),
      );
    }
    try {
      this.#o.onTick?.(result);
    } catch (err) {
      this.#o.logger.warn({ err }, "onTick hook failed");
    }
    return result;
  }

  async #reconcile(result: TickResult): Promise<void> {
    const o = this.#o;
    const rows = await o.store.listInstances(o.poolId);

    let listing: ListingState = "complete";
    let fleet: ProviderInstance[] = [];
    result.providerCalls.list++;
    try {
      const l = await o.provider.list();
      fleet = l.instances;
      listing = l.complete ? "complete" : "partial";
    } catch (err) {
      listing = "failed";
      result.errors.push(`provider list: ${(err as Error).message}`);
      o.logger.warn({ err: (err as Error).message, provider: o.provider.kind }, "provider listing failed; nothing is deleted this pass");
    }
    result.listing = listing;

    // Ownership first: a resource of another deployment (another owner id) is never matched,
    // adopted or deleted, only reported; one without an owner id (made before owner ids) is ours
    // only when a row of this database matches it. Two deployments sharing a project used to
    // delete each other's services as orphans.
    const { ours, legacy, foreign } = splitByOwner(fleet, o.ownerId);
    // Match provider resources to rows: by ref, then by the instance id the provider reports
    // (a create whose answer was lost still carries our id).
    const byRef = new Map<string, ProviderInstance>();
    const byId = new Map<string, ProviderInstance>();
    for (const p of [...legacy, ...ours]) {
      byRef.set(p.ref, p);
      if (p.instanceId) byId.set(p.instanceId, p);
    }
    const matched = new Set<string>();
    const pairs: Array<[InstanceRecord, ProviderInstance | undefined]> = rows.map((r) => {
      const p = (r.providerRef ? byRef.get(r.providerRef) : undefined) ?? byId.get(r.id);
      if (p) matched.add(p.ref);
      return [r, p];
    });
    result.foreign = [
      ...foreign.map((p) => ({ ref: p.ref, name: p.name, owner: p.owner })),
      ...legacy.filter((p) => !matched.has(p.ref)).map((p) => ({ ref: p.ref, name: p.name, owner: null })),
    ];
    this.#reportForeign(result.foreign);

    // Health checks, bounded in parallel: every deployed instance (or one whose deployment the
    // listing did not report), at the listed URL or, when the listing has none this time, the
    // one we stored. Skipping the check because one listing lacked a field is how healthy
    // instances were killed before (seed-system §8, f1a1fab).
    const now = o.clock.now();
    const health = new Map<string, { health: HealthObservation | null; error?: string }>();
    const urlOf = (r: InstanceRecord, p: ProviderInstance | undefined) => p?.url ?? r.url;
    const toCheck = pairs.filter(
      ([r, p]) => p && (p.deployStatus === "SUCCESS" || p.deployStatus === null) && urlOf(r, p) && r.status !== "claiming" && r.status !== "dead",
    );
    await mapLimit(toCheck, o.healthConcurrency, async ([r, p]) => {
      const res = await o.health.check({ url: urlOf(r, p)!, gatewayToken: r.gatewayToken }, o.healthTimeoutMs);
      health.set(r.id, res);
    });
    result.healthChecks = toCheck.length;

    const changes: ObservationChange[] = [];
    const observed: ObservedInstance[] = [];
    const outcomeById = new Map<string, InstanceStatus>();
    for (const [r, p] of pairs) {
      const h = health.get(r.id);
      if (h && h.health === null) result.healthFailures++;
      const out = observeInstance(
        r,
        { provider: p, listingComplete: listing === "complete", health: h ? h.health : undefined, ...(h?.error ? { healthError: h.error } : {}) },
        now,
        o.policy,
      );
      if (out.change) changes.push(out.change);
      outcomeById.set(r.id, out.status);
      observed.push({ id: r.id, status: out.status, providerRef: out.change?.providerRef ?? r.providerRef, goneAtProvider: out.goneAtProvider });
    }
    const applied = await o.store.applyObservations(changes);
    const skipped = new Set(applied.skipped);
    for (const c of changes) {
      if (skipped.has(c.id)) {
        // Someone (a claim) moved the row meanwhile; leave it out of this pass's plan.
        const idx = observed.findIndex((x) => x.id === c.id);
        if (idx >= 0) observed.splice(idx, 1);
        outcomeById.delete(c.id);
        continue;
      }
      if (c.status !== c.expectedStatus) result.transitions.push({ id: c.id, from: c.expectedStatus, to: c.status, reason: c.reason });
    }

    await this.#sweepStaleClaims(rows, result, outcomeById);

    const orphans: ObservedOrphan[] = [];
    if (listing !== "failed") {
      for (const p of ours) {
        if (!matched.has(p.ref)) orphans.push({ ref: p.ref, instanceId: p.instanceId, createdAt: p.createdAt });
      }
    }

    const plan = planPool(o.spec, { listing, instances: observed, orphans }, now);
    result.notes = plan.notes;

    // The lease was taken at the start of the pass; health checks and the sweep can take longer
    // than its TTL, and another replica may have taken over meanwhile. Renew it before acting, or
    // act on nothing: two replicas deleting and creating from their own snapshots is how fleets
    // get over-created (seed-system §8).
    if ((plan.deletes.length > 0 || plan.create > 0) && !(this.#lease && (await o.store.renewLease(this.#lease, this.#leaseTtlMs)))) {
      result.errors.push("lease lost during the pass: no deletes or creates");
      o.logger.warn({ pool: o.poolId }, "reconciler lease lost during the pass; another replica acts");
      plan.deletes.length = 0;
      plan.create = 0;
    }

    for (const id of plan.forget) {
      await o.store.markDeleted(id);
      outcomeById.delete(id);
    }
    for (const d of plan.deletes) {
      result.providerCalls.delete++;
      try {
        await o.provider.delete(d.ref);
        if (d.instanceId && d.reason === "dead") {
          await o.store.markDeleted(d.instanceId);
          outcomeById.delete(d.instanceId);
        }
        result.deleted.push({ ref: d.ref, instanceId: d.instanceId, reason: d.reason });
      } catch (err) {
        result.errors.push(`provider delete ${d.ref}: ${(err as Error).message}`);
      }
    }

    if (plan.create > 0) {
      const ids = await this.#create(plan.create, result, { maxLive: o.spec.maxTotal, minIdle: o.spec.minIdle });
      for (const id of ids) outcomeById.set(id, "starting");
    }

    if (listing === "complete") await this.#renameClaimed(pairs, outcomeById, result);

    const counts = emptyCounts();
    for (const s of outcomeById.values()) counts[s]++;
    let total = 0;
    for (const [s, n] of Object.entries(counts)) if (s !== "dead") total += n;
    result.counts = { ...counts, total };
  }

  #reportForeign(foreign: TickResult["foreign"]): void {
    for (const f of foreign) {
      if (this.#reportedForeign.has(f.ref)) continue;
      this.#reportedForeign.add(f.ref);
      this.#o.logger.warn(
        { ref: f.ref, name: f.name, owner: f.owner, ownerId: this.#o.ownerId },
        f.owner === null
          ? "a resource named like this pool's carries no owner id and matches no row: left alone"
          : "a resource named like this pool's belongs to another deployment: left alone",
      );
    }
  }

  /**
   * Creates up to `count` instances; each row is written before the provider is called, and only
   * while the pool is within `limits` at that moment (the store checks under a per-pool lock).
   */
  async #create(count: number, result: TickResult, limits: { maxLive: number; minIdle?: number }): Promise<string[]> {
    const o = this.#o;
    const made: string[] = [];
    let full = false;
    await mapLimit(Array.from({ length: count }), 4, async () => {
      if (full) return;
      const id = o.ids.instanceId();
      const gatewayToken = o.ids.token();
      const name = o.provider.serviceName?.(id) ?? `agent-pool-${o.poolId}-${id}`;
      const row = await o.store.insertInstanceWithin({ id, poolId: o.poolId, provider: o.provider.kind, name, gatewayToken, reason: "replenish" }, limits);
      if (!row) {
        full = true; // another replica or an operator filled the gap meanwhile
        return;
      }
      made.push(id);
      result.providerCalls.create++;
      try {
        const p = await o.provider.create({ instanceId: id, poolId: o.poolId, name, gatewayToken, ownerId: o.ownerId, env: { ...(o.instanceEnv ?? {}) } });
        await o.store.setProviderRef(id, p.ref, p.url, p.deployStatus);
        result.created.push(id);
      } catch (err) {
        const msg = (err as Error).message;
        result.errors.push(`provider create: ${msg}`);
        // The provider must not leak a half-made instance; if it did, the orphan sweep finds it.
        await o.store.transition({ id, from: "starting", to: "dead", actor: "reconciler", reason: `create failed: ${msg.slice(0, 200)}` });
        await o.store.markDeleted(id);
        made.splice(made.indexOf(id), 1);
      }
    });
    return made;
  }

  /**
   * Converges provider resource names to show their agent (`<service name>--<agent slug>`). The
   * claim path renames in the background right after a claim; this catches the renames that never
   * landed: lost with a restart or a kill -9, or given up after too many failures (the earlier
   * system lost 40 of 90 renames to 429s and never noticed). Only claims older than a minute (the
   * claim's own rename may still be under way), none the provider is still retrying, at most 5
   * per pass so a backlog cannot eat the API budget. A rename that fails here backs off (2, 4, 8,
   * 16 min) and is given up after 5 failures, logged once: a name the provider rejects must not
   * cost a call every pass, nor hold the 5 slots that other instances need.
   */
  async #renameClaimed(pairs: Array<[InstanceRecord, ProviderInstance | undefined]>, outcome: Map<string, InstanceStatus>, result: TickResult): Promise<void> {
    const o = this.#o;
    const now = o.clock.now().getTime();
    const due: Array<[string, string, string]> = [];
    for (const [r, p] of pairs) {
      if (due.length >= 5) break;
      const status = outcome.get(r.id);
      if (!p || (status !== "claimed" && status !== "pending_acceptance") || !r.agentName || !r.claimedAt) continue;
      if (now - r.claimedAt.getTime() < 60_000 || o.provider.renamePending?.(p.ref)) continue;
      if ((this.#renameBackoff.get(p.ref)?.retryAt ?? 0) > now) continue;
      let want = agentServiceName(o.provider.serviceName?.(r.id) ?? r.name, r.agentName);
      try {
        want = o.provider.nameFor?.(want) ?? want; // compare with what the provider would really set
      } catch {
        continue; // a name the provider refuses: nothing to converge to
      }
      if (p.name !== want) due.push([r.id, p.ref, want]);
    }
    await mapLimit(due, 2, async ([id, ref, name]) => {
      try {
        await o.provider.rename(ref, name);
        this.#renameBackoff.delete(ref);
        result.renamed.push(id);
      } catch (err) {
        const failures = (this.#renameBackoff.get(ref)?.failures ?? 0) + 1;
        const giveUp = failures >= 5;
        this.#renameBackoff.set(ref, { failures, retryAt: giveUp ? Number.POSITIVE_INFINITY : now + 60_000 * 2 ** failures });
        result.errors.push(`provider rename ${ref}: ${(err as Error).message}`);
        if (giveUp) o.logger.error({ instanceId: id, ref, name, err: (err as Error).message }, "rename to show the agent failed 5 times; given up");
      }
    });
  }

  /**
   * A `claiming` row older than the provision timeout plus a margin belongs to a claim that died
   * (a pool manager killed mid-claim). Ask the runtime what it is: bound → claimed, pending →
   * pending_acceptance, clean → idle, otherwise crashed. The earlier system had no sweeper and
   * rows stayed in `claiming` forever (seed §8).
   */
  async #sweepStaleClaims(rows: InstanceRecord[], result: TickResult, outcome: Map<string, InstanceStatus>): Promise<void> {
    const o = this.#o;
    const now = o.clock.now().getTime();
    const limit = o.provisionTimeoutMs + (o.sweepMarginMs ?? 30_000);
    const stale = rows.filter((r) => r.status === "claiming" && (r.claimStartedAt === null || now - r.claimStartedAt.getTime() > limit));
    // In parallel, bounded like the health checks: one unreachable runtime costs a timeout, and a
    // sequential sweep of many would stretch the pass past its lease.
    await mapLimit(stale, o.healthConcurrency, async (r) => {
      let s: RuntimeStatus | null = null;
      if (r.url) s = await o.statusReader.status({ url: r.url, gatewayToken: r.gatewayToken }, o.healthTimeoutMs).catch(() => null);
      let to: InstanceStatus;
      let reason: string;
      let set = {};
      if (s?.conversationId) {
        to = "claimed";
        reason = "stale claim: runtime is bound";
        set = { conversationId: s.conversationId, inviteUrl: s.inviteUrl ?? r.inviteUrl, claimedAt: new Date(now) };
      } else if (s?.pending) {
        to = "pending_acceptance";
        reason = "stale claim: runtime is waiting for acceptance";
      } else if (s?.clean) {
        to = "idle";
        reason = "stale claim: runtime is clean";
        set = { agentName: null, instructions: null, joinUrl: null, profileImage: null, claimMetadata: null, claimOwner: null, claimStartedAt: null };
      } else {
        to = "crashed";
        reason = s ? "stale claim: runtime neither bound nor clean" : "stale claim: runtime unreachable";
      }
      const done = await o.store.transition({ id: r.id, from: "claiming", to, actor: "sweeper", reason, set });
      if (done) {
        result.transitions.push({ id: r.id, from: "claiming", to, reason });
        outcome.set(r.id, to);
      }
    });
  }
}

/**
 * The provider resource name of a claimed instance: `<base>--<agent slug>`, so the console shows
 * who the agent is while the provider still reads the instance id back from the name. A name with
 * no ASCII letter or digit ("李雷") still marks it claimed, as `--agent`.
 */
export function agentServiceName(base: string, agentName: string): string {
  const slug = agentName.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 24) || "agent";
  return `${base}--${slug}`;
}

/**
 * Splits a listing by owner: `ours` carries our owner id, `legacy` carries none (made before owner
 * ids: ours only if a row matches), `foreign` carries another deployment's.
 */
export function splitByOwner(fleet: readonly ProviderInstance[], ownerId: string): { ours: ProviderInstance[]; legacy: ProviderInstance[]; foreign: ProviderInstance[] } {
  const ours: ProviderInstance[] = [];
  const legacy: ProviderInstance[] = [];
  const foreign: ProviderInstance[] = [];
  for (const p of fleet) (p.owner === ownerId ? ours : p.owner === null ? legacy : foreign).push(p);
  return { ours, legacy, foreign };
}

/** Runs `fn` over `items` with at most `limit` at once. */
export async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  });
  await Promise.all(workers);
}
