/**
 * The reconciler sequences a pool's maintenance services; it decides nothing itself. One pass:
 *
 *   elector  → take or renew the lease (one replica acts at a time; its term fences every write)
 *   observer → one provider listing, health checks, changed rows written (fenced)
 *   sweeper  → stale claims resolved by the database clock (fenced on attempt and term)
 *   planPool → pure: what to create and delete
 *   actuator → deletes, then creates, intent recorded first (fenced)
 *   renamer  → claimed resources renamed to show their agent
 *   cleaner  → retention, every `cleanIntervalMs`
 *
 * `tick()` is one pass returning what it did; `start()` is only a timer around it. Hints (a claim
 * on any replica, an instance coming up) only make the loop look sooner; the periodic pass alone
 * converges (pg-boss: "a NOTIFY is only ever a latency hint").
 */
import { hostname } from "node:os";
import type { Clock, IdSource } from "../clock.ts";
import { randomId } from "../clock.ts";
import type { Lease, PoolRecord, Store } from "../db/store.ts";
import type { HealthChecker } from "../instance/client.ts";
import type { ObservePolicy } from "../instance/observe.ts";
import { emptyCounts, LIVE_STATUSES, type InstanceStatus, type StatusCounts } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import type { Provider } from "../provider/provider.ts";
import { Actuator, type InstanceResourceHooks } from "./actuator.ts";
import type { Cleaner, CleanResult } from "./cleaner.ts";
import { Elector } from "./elector.ts";
import { DEFAULT_CADENCE, HealthSchedule, type HealthCadence } from "./health-schedule.ts";
import { Observer, type ForeignResource } from "./observer.ts";
import { planOrphans, planPool, type ListingState, type PlanNote } from "./plan.ts";
import { Renamer } from "./renamer.ts";
import { Sizer, type SizerOptions } from "./sizer.ts";
import type { RolloutService } from "./rollouts.ts";
import { Sweeper, type StatusReader } from "./sweeper.ts";

export { agentServiceName } from "./renamer.ts";
export { mapLimit } from "./map-limit.ts";
export type { StatusReader } from "./sweeper.ts";

/** What bounds every pool of the deployment (a pool's own sizes come from its row). */
export interface DeploymentSpec {
  /** A provider instance no row knows about is deleted only once it is older than this. */
  orphanGraceMs: number;
  maxDeletesPerTick: number;
  maxCreatesPerTick: number;
  /** Slots every pool together may hold; unset: no global cap. */
  globalMaxTotal?: number;
}

export interface ReconcilerOptions {
  /** The deployment's owner id: every resource it creates carries it. */
  ownerId: string;
  store: Store;
  /** Providers by kind (`local`, `railway`): each one in use is listed once per pass. */
  providers: ReadonlyMap<string, Provider>;
  /** Provider of pools that name none. */
  defaultProvider: string;
  health: HealthChecker;
  /** Asks a runtime what it is bound to (stale-claim sweeper). */
  statusReader: StatusReader;
  clock: Clock;
  ids: IdSource;
  logger: Logger;
  spec: DeploymentSpec;
  policy: ObservePolicy;
  intervalMs: number;
  healthTimeoutMs: number;
  healthConcurrency: number;
  /** A `claiming` row is swept once its claim deadline is this far past (database clock). Default 30 s. */
  sweepMarginMs?: number;
  /** Interval between passes while instances are starting (default 1 s, never above intervalMs). */
  startingPollMs?: number;
  /** Environment for new instances of every pool (operator's INSTANCE_ENV_*). */
  instanceEnv?: Record<string, string>;
  /** More environment for a pool's instances (POOL_ID, POOL_ENVIRONMENT, …). */
  envFor?: (pool: PoolRecord) => Record<string, string>;
  /** Per-instance resources made with each instance (issue 12), passed to the actuator. */
  resources?: InstanceResourceHooks;
  /** When each instance is health-checked (default: idle every 30 s, claimed every 60 s, booting fast). */
  cadence?: HealthCadence;
  /** Creates at once (default 8): the provider paces its own requests. */
  createConcurrency?: number;
  /** Creates failing in a row before creating halts for a while (default 5). */
  haltCreatesAfterFailures?: number;
  /** Most health checks in one pass (default 2,000). */
  maxChecksPerPass?: number;
  /** Randomness for the checks' jitter (tests pass a seeded one). */
  random?: () => number;
  /** Rollouts of changed templates (issue 11), run inside each pass after its creates. */
  rollouts?: RolloutService;
  /** Identity of this replica for the lease. */
  holder?: string;
  /** Lease time-to-live; default three intervals, at least 15 s. */
  leaseTtlMs?: number;
  /** Retention, run by the lease holder every `cleanIntervalMs` (default 10 min). */
  cleaner?: Cleaner;
  cleanIntervalMs?: number;
  /** Called after every pass (metrics, server-sent events). */
  onTick?: (result: TickResult) => void;
  /** Sizing (issue 13): the history recorder, metrics hooks and assumed refill times for the sizer. */
  sizing?: Omit<SizerOptions, "store" | "logger" | "globalMaxTotal">;
}

/** One pool's share of a pass. */
export interface PoolTickResult {
  pool: string;
  counts: StatusCounts & { total: number };
  created: string[];
  deleted: string[];
  notes: PlanNote[];
  /** The idle target the pool's sizing policy chose this pass, and the numbers it used. */
  sizing?: { target: number; reason: string; summary: string };
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
  /** Each pool's share (counts, creates, deletes, notes); the fields below add them up. */
  pools: PoolTickResult[];
  /** The lease term this pass acted under (null when not the leader). */
  term: number | null;
  listing: ListingState | "skipped";
  providerCalls: { list: number; create: number; delete: number };
  healthChecks: number;
  healthFailures: number;
  transitions: TransitionNote[];
  created: string[];
  deleted: Array<{ ref: string; instanceId: string | null; reason: string }>;
  /** Claimed instances whose provider resource was renamed to show the agent. */
  renamed: string[];
  /**
   * Resources named like this pool's that are not ours: another deployment's (`owner` its id), or
   * made before owner ids and matching no row (`owner` null). Never deleted or adopted.
   */
  foreign: ForeignResource[];
  notes: PlanNote[];
  counts: StatusCounts & { total: number };
  /** What the cleaner pruned, when it ran in this pass. */
  cleaned?: CleanResult;
  errors: string[];
}

const LIVE = LIVE_STATUSES;

/** The worst of several listings: one failed or partial listing limits the whole pass's report. */
function worstListing(states: ListingState[]): ListingState {
  if (states.includes("failed")) return "failed";
  if (states.includes("partial")) return "partial";
  return "complete";
}

export class Reconciler {
  readonly #o: ReconcilerOptions;
  readonly #elector: Elector;
  readonly #observer: Observer;
  readonly #sweeper: Sweeper;
  readonly #actuator: Actuator;
  readonly #renamer: Renamer;
  readonly #checks: HealthSchedule;
  readonly #sizer: Sizer;
  #chain: Promise<unknown> = Promise.resolve();
  #timer: NodeJS.Timeout | null = null;
  #running = false;
  #stopped = true;
  #wakeRequested = false;
  readonly #replenishQueued = new Set<string>();
  #last: TickResult | null = null;
  #lastCleanAt = Number.NEGATIVE_INFINITY;
  #unsubscribe: Promise<() => Promise<void>> | null = null;
  /** The foreign resources last recorded in the pool's row (JSON), so a quiet pass writes nothing. */
  #recordedForeign: string | null = null;
  /** Foreign resources already reported in the log (reported once each). */
  readonly #reportedForeign = new Set<string>();

  constructor(opts: ReconcilerOptions) {
    this.#o = opts;
    const holder = opts.holder ?? `${hostname()}:${process.pid}:${randomId(6)}`;
    // Three missed passes before another replica takes over; never less than 15 s.
    const ttlMs = opts.leaseTtlMs ?? Math.max(15_000, opts.intervalMs * 3);
    this.#checks = new HealthSchedule(opts.cadence ?? DEFAULT_CADENCE, opts.random ?? Math.random);
    // One lease for the whole deployment: one replica acts for every pool, with one listing.
    this.#elector = new Elector({ store: opts.store, name: "reconciler", holder, ttlMs });
    this.#observer = new Observer({
      ownerId: opts.ownerId,
      store: opts.store,
      providers: opts.providers,
      health: opts.health,
      clock: this.#passClock,
      policy: opts.policy,
      healthTimeoutMs: opts.healthTimeoutMs,
      healthConcurrency: opts.healthConcurrency,
      schedule: this.#checks,
      maxChecksPerPass: opts.maxChecksPerPass ?? 2_000,
    });
    this.#sweeper = new Sweeper({
      poolId: null,
      store: opts.store,
      statusReader: opts.statusReader,
      clock: this.#passClock,
      marginMs: opts.sweepMarginMs ?? 30_000,
      statusTimeoutMs: opts.healthTimeoutMs,
      concurrency: opts.healthConcurrency,
    });
    this.#actuator = new Actuator({
      ownerId: opts.ownerId,
      store: opts.store,
      providers: opts.providers,
      defaultProvider: opts.defaultProvider,
      ids: opts.ids,
      logger: opts.logger,
      ...(opts.instanceEnv ? { instanceEnv: opts.instanceEnv } : {}),
      ...(opts.envFor ? { envFor: opts.envFor } : {}),
      createConcurrency: opts.createConcurrency ?? 8,
      ...(opts.haltCreatesAfterFailures !== undefined ? { haltAfterFailures: opts.haltCreatesAfterFailures } : {}),
      resources: opts.resources,
    });
    this.#sizer = new Sizer({
      store: opts.store,
      logger: opts.logger,
      ...(opts.spec.globalMaxTotal !== undefined ? { globalMaxTotal: opts.spec.globalMaxTotal } : {}),
      ...opts.sizing,
    });
    this.#renamer = new Renamer({ store: opts.store, providers: opts.providers, clock: this.#passClock, logger: opts.logger });
  }

  get holder(): string {
    return this.#elector.holder;
  }

  get lastResult(): TickResult | null {
    return this.#last;
  }

  /** The lease this replica holds as far as it knows (null: not the leader). */
  get lease(): Lease | null {
    return this.#elector.lease;
  }

  /** One pass. Calls never overlap: a call made during a pass runs after it. */
  tick(): Promise<TickResult> {
    return this.#enqueue(() => this.#pass());
  }

  /**
   * Creates up to `count` instances now (an operator's "add N"), bounded by max total: each row is
   * inserted under the pool's create lock, so neither this replica's passes nor another's can take
   * the pool past it. Any replica may do it (it is not a pass's decision, so no lease fence).
   */
  createNow(poolId: string, count: number): Promise<{ created: string[]; errors: string[] }> {
    return this.#enqueue(async () => {
      const pool = await this.#o.store.getPool(poolId);
      if (!pool || pool.retiredAt) return { created: [], errors: [`no pool ${poolId}`] };
      const r = await this.#actuator.create(pool, Math.max(0, count), this.#limits(pool), undefined, "added by an operator");
      return { created: r.created, errors: r.errors };
    });
  }

  /** What a pool's creates stay within: its max total, and the global cap. */
  #limits(pool: PoolRecord, minIdle?: number): { maxLive: number; minIdle?: number; globalMax?: number } {
    return {
      maxLive: pool.maxTotal,
      ...(minIdle !== undefined ? { minIdle } : {}),
      ...(this.#o.spec.globalMaxTotal !== undefined ? { globalMax: this.#o.spec.globalMaxTotal } : {}),
    };
  }

  /** Runs a pass now and then every `intervalMs` after each pass ends; listens for hints. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
    // A claim on any replica publishes a hint; the replica holding the lease replenishes and
    // renames. A lost hint costs only latency: the next pass does both anyway.
    this.#unsubscribe = this.#o.store
      .subscribeHints((h) => {
        // Kept even while another replica (or nobody yet) holds the lease: an agent upgraded while
        // this process was starting up is checked by its first pass as the holder, not a cadence
        // later (found by test/upgrade-restart.test.ts: a claimed agent's new version unseen for 60 s).
        if (h.kind === "check" && h.instanceId) return this.checkSoon(h.instanceId);
        if (this.#elector.lease === null) return;
        if (h.kind === "claimed") this.replenishSoon(h.pool);
        else if (h.kind === "bound" && h.instanceId) this.renameSoon(h.instanceId);
      })
      .catch((err) => {
        this.#o.logger.warn({ err: (err as Error).message }, "could not listen for hints; acting at each pass only");
        return async () => undefined;
      });
  }

  /**
   * Health-check one instance at the next pass, and run it now (a webhook said its deployment
   * changed, its process exited, it called back). A forged or replayed hint costs one check.
   */
  checkSoon(instanceId: string): void {
    // Due at any time at all: the next pass of this replica as the lease holder checks it, whatever
    // its clock's offset turns out to be.
    this.#checks.soon(instanceId, 0);
    this.wake();
  }

  /** A hint that something changed: run a pass soon. */
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
   * plan would ask for. Coalesced (many claims at once cause one replenish) and queued behind this
   * replica's passes; only the lease holder does it, fenced on its term, and each row is inserted
   * under the pool's create lock within min idle and max total, so it never over-creates beside a
   * pass. (A full pass per claim would put every health check of the fleet on the claim path's CPU.)
   */
  replenishSoon(poolId: string): void {
    if (this.#stopped || this.#replenishQueued.has(poolId)) return;
    this.#replenishQueued.add(poolId);
    void this.#enqueue(async () => {
      this.#replenishQueued.delete(poolId);
      const o = this.#o;
      const lease = this.#elector.lease;
      if (!lease) return;
      const pool = await o.store.getPool(poolId);
      if (!pool || pool.retiredAt) return;
      const counts = await o.store.countByStatus(poolId);
      // The target the last pass chose (issue 13); the next pass re-decides with fresh numbers.
      const target = this.#sizer.target(pool);
      const deficit = Math.max(0, target - counts.idle - counts.starting);
      const n = Math.min(deficit, o.spec.maxCreatesPerTick);
      if (n === 0) return;
      const r = await this.#actuator.create(pool, n, this.#limits(pool, target), lease);
      if (r.errors.length) o.logger.warn({ pool: poolId, errors: r.errors }, "replenish after claim: some creates failed");
      // New instances are `starting`: look at them sooner than the interval.
      if (!this.#running && !this.#stopped) this.#schedule(Math.min(o.intervalMs, o.startingPollMs ?? 1000));
    }).catch((err) => this.#o.logger.error({ err }, "replenish after claim failed"));
  }

  /** Renames a just-claimed instance's resource (see Renamer.renameSoon). */
  renameSoon(instanceId: string): void {
    if (this.#stopped) return;
    this.#renamer
      .renameSoon(instanceId)
      .catch((err) => this.#o.logger.warn({ err: (err as Error).message, instanceId }, "rename after claim failed; a later pass retries"));
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
    await this.#elector.release().catch(() => undefined);
  }

  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.catch(() => undefined);
    return run;
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

  /**
   * The clock a pass judges ages by: the injected clock, anchored to the database's at the start
   * of each term. Row timestamps come from the database (`now()` defaults), so comparing them with
   * a process clock hours off (the interleaving suite skews replicas by ±6 h) declared in-flight
   * creates "never created" and freed their slots while the create was still under way: a schedule
   * found 6 resources at max total 5. Anchored per term, not per pass, so time the injected clock
   * moves within a term (tests) still passes.
   */
  #clockOffsetMs: number | null = null;
  readonly #passClock: Clock = { now: () => new Date(this.#o.clock.now().getTime() + (this.#clockOffsetMs ?? 0)) };

  async #anchorClock(): Promise<void> {
    const before = this.#o.clock.now().getTime();
    const db = (await this.#o.store.databaseNow()).getTime();
    this.#clockOffsetMs = db - before;
  }

  async #pass(): Promise<TickResult> {
    const o = this.#o;
    const t0 = performance.now();
    const result: TickResult = {
      at: o.clock.now().toISOString(),
      durationMs: 0,
      leader: false,
      pools: [],
      term: null,
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
      const { lease, newTerm } = await this.#elector.runOnce();
      result.leader = lease !== null;
      result.term = lease?.term ?? null;
      if (lease && (newTerm || this.#clockOffsetMs === null)) await this.#anchorClock();
      if (lease) await this.#reconcile(lease, result);
    } catch (err) {
      result.errors.push(`pass: ${(err as Error).message}`);
      o.logger.error({ err }, "reconcile pass aborted");
    }
    return this.#finish(result, t0);
  }

  async #reconcile(lease: Lease, result: TickResult): Promise<void> {
    const o = this.#o;
    const pools = await o.store.listPools();
    for (const p of o.providers.values()) p.knowPools?.(pools.map((x) => x.id));
    result.providerCalls.list += o.providers.size;
    const seen = await this.#observer.runOnce(lease);
    const listingOf = (kind: string): ListingState => seen.listings.get(kind) ?? "complete";
    result.listing = worstListing([...seen.listings.values()]);
    result.healthChecks = seen.healthChecks;
    result.healthFailures = seen.healthFailures;
    result.transitions.push(...seen.transitions);
    result.foreign = seen.foreign;
    result.errors.push(...seen.errors);
    if (result.listing === "failed") o.logger.warn({ errors: seen.errors }, "a provider listing failed; nothing of it is deleted this pass");
    this.#reportForeign(seen.foreign);
    if (result.listing === "complete") {
      // Recorded for every replica's dashboard and metrics, only when it changed.
      const key = JSON.stringify(seen.foreign);
      if (key !== this.#recordedForeign) {
        await o.store.recordForeignResources(seen.foreign, lease);
        this.#recordedForeign = key;
      }
    }
    const status = new Map<string, InstanceStatus>();
    for (const list of seen.observed.values()) for (const x of list) status.set(x.id, x.status);

    // Only a row that was `claiming` when the pass read its rows can be stale: one picked since
    // has a deadline ahead of it. A quiet pass so costs no sweep statement.
    const swept = seen.pairs.some(([r]) => r.status === "claiming") ? await this.#sweeper.runOnce(lease) : { resolved: [] };
    for (const t of swept.resolved) {
      result.transitions.push(t);
      status.set(t.id, t.to);
      for (const list of seen.observed.values()) {
        const x = list.find((i) => i.id === t.id);
        if (x) x.status = t.to;
      }
    }

    // Plans: one per pool (its idle target from its sizing policy), then the orphans of each
    // provider, then the global cap.
    const now = this.#passClock.now();
    const sizing = await this.#sizer.decide(pools, now);
    const targetOf = (pool: PoolRecord) => sizing.get(pool.id)?.target ?? pool.minIdle;
    const plans = pools.map((pool) => {
      const kind = pool.provider ?? o.defaultProvider;
      const instances = seen.observed.get(pool.id) ?? [];
      const plan = planPool(
        {
          minIdle: targetOf(pool),
          maxTotal: pool.maxTotal,
          orphanGraceMs: o.spec.orphanGraceMs,
          maxDeletesPerTick: o.spec.maxDeletesPerTick,
          maxCreatesPerTick: o.spec.maxCreatesPerTick,
        },
        { listing: listingOf(kind), instances, orphans: [] },
        now,
      );
      for (const d of plan.deletes) d.provider = kind;
      return { pool, plan };
    });
    const orphanDeletes = [...seen.orphans].flatMap(([kind, list]) => {
      const p = planOrphans(list, listingOf(kind), o.spec, now);
      result.notes.push(...p.notes);
      for (const d of p.deletes) d.provider = kind;
      return p.deletes;
    });
    if (o.spec.globalMaxTotal !== undefined) {
      let room = o.spec.globalMaxTotal - plans.reduce((n, x) => n + x.plan.counts.live, 0);
      for (const [, list] of seen.orphans) room -= list.length;
      room += orphanDeletes.length;
      for (const x of plans) {
        const allowed = Math.max(0, Math.min(x.plan.create, room));
        if (allowed < x.plan.create) x.plan.notes.push("max_total_reached");
        x.plan.create = allowed;
        room -= allowed;
      }
    }
    for (const x of plans) result.notes.push(...x.plan.notes.filter((n) => !result.notes.includes(n)));

    // A pass longer than the lease TTL (health checks at scale, a paused process) may have lost its
    // term. Its writes are refused by their fences anyway, but provider calls are not writes: renew
    // before acting, and act on nothing if the term is gone.
    const acts = orphanDeletes.length > 0 || plans.some((x) => x.plan.deletes.length > 0 || x.plan.create > 0 || x.plan.forget.length > 0);
    if (acts && !(await this.#elector.renew())) return this.#lost(result, "before acting");

    const poolResults = new Map<string, PoolTickResult>(
      pools.map((p) => [p.id, { pool: p.id, counts: { ...emptyCounts(), total: 0 }, created: [], deleted: [], notes: [] }]),
    );
    const poolOf = new Map<string, string>(seen.pairs.map(([r]) => [r.id, r.poolId]));
    const del = await this.#actuator.delete(
      [...plans.flatMap((x) => x.plan.deletes), ...orphanDeletes],
      plans.flatMap((x) => x.plan.forget),
      lease,
    );
    result.providerCalls.delete += del.calls;
    result.deleted.push(...del.deleted);
    result.errors.push(...del.errors);
    for (const id of del.forgotten) status.delete(id);
    for (const d of del.deleted) if (d.instanceId && d.reason === "dead") status.delete(d.instanceId);

    for (const { pool, plan } of plans) {
      const pr = poolResults.get(pool.id)!;
      pr.notes = plan.notes;
      const d = sizing.get(pool.id);
      if (d) pr.sizing = { target: d.target, reason: d.reason, summary: d.summary };
      pr.deleted = del.deleted.filter((d) => d.instanceId !== null && seen.observed.get(pool.id)?.some((i) => i.id === d.instanceId)).map((d) => d.ref);
      if (plan.create === 0) continue;
      const made = await this.#actuator.create(pool, plan.create, this.#limits(pool, targetOf(pool)), lease);
      result.providerCalls.create += made.calls;
      result.created.push(...made.created);
      result.errors.push(...made.errors);
      if (made.halted && !result.notes.includes("creates_halted")) result.notes.push("creates_halted");
      pr.created = made.created;
      for (const id of made.created) {
        status.set(id, "starting");
        poolOf.set(id, pool.id);
      }
    }

    // Scale-down (issue 13): a demand pool retires idle instances above its target; the next pass
    // deletes them. Only on a complete listing, within the pass's delete budget.
    for (const { pool } of plans) {
      if (listingOf(pool.provider ?? o.defaultProvider) !== "complete") continue;
      let idle = 0;
      for (const [id, s] of status) if (s === "idle" && poolOf.get(id) === pool.id) idle++;
      for (const id of await this.#sizer.scaleDown(pool, idle, o.spec.maxDeletesPerTick, lease)) {
        status.set(id, "dead");
        result.transitions.push({ id, from: "idle", to: "dead", reason: "scaled down (sizing)" });
      }
    }

    // ---- rollouts (issue 11): idle instances of an old template replaced by surge, fenced on
    // this pass's lease (src/pool/rollouts.ts applies the pure planner of src/pool/rollout.ts).
    if (o.rollouts) {
      const orphansHeld = [...seen.orphans.values()].reduce((n, l) => n + l.length, 0) - del.deleted.filter((d) => d.reason === "orphan").length;
      const listing = (p: PoolRecord) => listingOf(p.provider ?? o.defaultProvider);
      const r = await o.rollouts.runOnce({
        lease,
        pools,
        observed: seen.observed,
        status,
        passResults: poolResults,
        listing,
        orphansHeld,
        spec: o.spec,
        actuator: this.#actuator,
      });
      result.providerCalls.create += r.calls.create;
      result.providerCalls.delete += r.calls.delete;
      result.created.push(...r.created.map((c) => c.id));
      result.deleted.push(...r.deleted);
      result.errors.push(...r.errors);
      for (const id of r.retired) status.set(id, "dead");
      for (const d of r.deleted) if (d.instanceId) status.delete(d.instanceId);
      for (const c of r.created) {
        status.set(c.id, "starting");
        poolOf.set(c.id, c.pool);
        poolResults.get(c.pool)?.created.push(c.id);
      }
    }
    // ---- end of rollouts

    if (result.listing === "complete") {
      const r = await this.#renamer.runOnce(seen.pairs, status);
      result.renamed.push(...r.renamed);
      result.errors.push(...r.errors);
    }

    const interval = o.cleanIntervalMs ?? 600_000;
    if (o.cleaner && performance.now() - this.#lastCleanAt >= interval) {
      this.#lastCleanAt = performance.now();
      try {
        result.cleaned = await o.cleaner.runOnce();
      } catch (err) {
        result.errors.push(`cleaner: ${(err as Error).message}`);
      }
    }

    // Counts: per pool, and added up.
    const counts = emptyCounts();
    for (const [id, s] of status) {
      counts[s]++;
      const pr = poolResults.get(poolOf.get(id) ?? "");
      if (pr) pr.counts[s]++;
    }
    for (const pr of poolResults.values()) pr.counts.total = LIVE.reduce((n, s) => n + pr.counts[s], 0);
    // Measurements for the pool history (issue 13): idle instance-seconds, refills, a snapshot.
    const rows = new Map(seen.pairs.map(([r]) => [r.id, r]));
    for (const pr of poolResults.values())
      this.#sizer.observe(
        pr.pool,
        pr.counts,
        rows,
        result.transitions.filter((t) => poolOf.get(t.id) === pr.pool),
        now,
      );
    result.counts = { ...counts, total: LIVE.reduce((n, s) => n + counts[s], 0) };
    result.pools = [...poolResults.values()];
  }

  #lost(result: TickResult, when: string): void {
    result.errors.push(`lease lost ${when}: this pass acts no further`);
    this.#o.logger.warn({ term: result.term }, `reconciler lease lost ${when}; another replica acts`);
  }

  #reportForeign(foreign: readonly ForeignResource[]): void {
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

  #finish(result: TickResult, t0: number): TickResult {
    result.durationMs = Math.round((performance.now() - t0) * 100) / 100;
    this.#last = result;
    if (result.leader) {
      const c = result.counts;
      this.#o.logger.info(
        {
          tick: {
            durationMs: result.durationMs,
            term: result.term,
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
            foreign: result.foreign.length,
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
}
