/**
 * The sizer (issue 13): the reconciler's link to the pure planner (sizing.ts) and to the pool
 * history. Each pass of the lease holder asks it for every pool's idle target; it measures what
 * `demand` pools need (claims per minute over the policy's window from `pool_history`, the p95 of
 * the pool's recent boots), plans, and logs the numbers a decision used whenever the decision
 * changes. After the pass it records what the pass saw: idle instance-seconds, refills (created →
 * idle) and a snapshot with the target, for the dashboard's history panel.
 *
 * `fixed` pools cost no query. The planner's memory (the held target for the cooldown) lives
 * here, in the lease holder's process: a new lease holder starts from the measured demand.
 */
import type { InstanceRecord, Lease, PoolRecord, Store } from "../db/store.ts";
import { INSTANCE_STATUSES, type StatusCounts } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import type { HistoryRecorder } from "./history-recorder.ts";
import { arrivalsPerMinute, percentile, planSizing, type SizingDecision, type SizingState } from "./sizing.ts";

export interface SizerOptions {
  store: Pick<Store, "claimArrivals" | "bootStats" | "retireSurplusIdle">;
  logger: Logger;
  globalMaxTotal?: number;
  /** Refill time assumed for a pool until one of its boots is measured (default 60 s). */
  defaultRefillMs?: (pool: PoolRecord) => number;
  /** Measurements of a demand pool are reused this long (default 15 s): a pass every second costs no query each. */
  measureEveryMs?: number;
  recorder?: HistoryRecorder;
  /** Metrics. */
  onDecision?: (pool: string, d: SizingDecision) => void;
  onRefill?: (pool: string, ms: number) => void;
  onIdle?: (pool: string, instanceSeconds: number) => void;
  /** Monotonic milliseconds (idle time between passes). */
  monotonic?: () => number;
}

interface Measured {
  at: number;
  arrivals: number | null;
  refillP95Ms: number | null;
}

/** Idle time between two passes longer than this is not counted (a pause, another replica led meanwhile). */
const MAX_IDLE_GAP_MS = 120_000;

export class Sizer {
  readonly #o: SizerOptions;
  readonly #mono: () => number;
  readonly #state = new Map<string, SizingState>();
  readonly #last = new Map<string, SizingDecision>();
  readonly #measured = new Map<string, Measured>();
  readonly #observedAt = new Map<string, number>();

  constructor(opts: SizerOptions) {
    this.#o = opts;
    this.#mono = opts.monotonic ?? (() => performance.now());
  }

  /** The pool's last target (its min idle before the first decision). */
  target(pool: PoolRecord): number {
    return this.#last.get(pool.id)?.target ?? Math.min(pool.minIdle, pool.maxTotal);
  }

  lastDecision(poolId: string): SizingDecision | undefined {
    return this.#last.get(poolId);
  }

  /** Decides every pool's idle target. A pool whose measurement fails keeps its last target (or min idle). */
  async decide(pools: readonly PoolRecord[], now: Date): Promise<Map<string, SizingDecision>> {
    const out = new Map<string, SizingDecision>();
    for (const pool of pools) {
      let m: Measured = { at: 0, arrivals: null, refillP95Ms: null };
      if (pool.sizing.mode === "demand") {
        try {
          m = await this.#measure(pool);
        } catch (err) {
          this.#o.logger.warn({ pool: pool.id, err: (err as Error).message }, "could not measure the pool's demand; keeping its last target");
          const last = this.#last.get(pool.id);
          if (last) {
            out.set(pool.id, last);
            continue;
          }
        }
      }
      const d = planSizing({
        policy: pool.sizing,
        minIdle: pool.minIdle,
        maxTotal: pool.maxTotal,
        ...(this.#o.globalMaxTotal !== undefined ? { globalMaxTotal: this.#o.globalMaxTotal } : {}),
        arrivalsPerMinute: m.arrivals,
        refillP95Ms: m.refillP95Ms,
        defaultRefillMs: this.#o.defaultRefillMs?.(pool) ?? 60_000,
        now,
        previous: this.#state.get(pool.id) ?? null,
      });
      const before = this.#last.get(pool.id);
      this.#state.set(pool.id, d.state);
      this.#last.set(pool.id, d);
      out.set(pool.id, d);
      this.#o.onDecision?.(pool.id, d);
      const numbers = {
        pool: pool.id,
        policy: pool.sizing.mode,
        sizing: {
          target: d.target,
          demand: d.demand,
          floor: d.floor,
          ceiling: d.ceiling,
          arrivalsPerMinute: d.arrivalsPerMinute,
          refillP95Ms: d.refillP95Ms,
          safetyFactor: d.safetyFactor,
          reason: d.reason,
        },
      };
      if (!before || before.target !== d.target || before.reason !== d.reason) this.#o.logger.info(numbers, `pool ${pool.id}: ${d.summary}`);
      else this.#o.logger.debug(numbers, `pool ${pool.id}: ${d.summary}`);
    }
    return out;
  }

  async #measure(pool: PoolRecord): Promise<Measured> {
    const cached = this.#measured.get(pool.id);
    const mono = this.#mono();
    if (cached && mono - cached.at < (this.#o.measureEveryMs ?? 15_000)) return cached;
    if (pool.sizing.mode !== "demand") return { at: mono, arrivals: null, refillP95Ms: null };
    const windowMs = pool.sizing.windowMinutes * 60_000;
    const [a, boots] = await Promise.all([this.#o.store.claimArrivals(pool.id, windowMs), this.#o.store.bootStats(pool.id)]);
    const m: Measured = {
      at: mono,
      arrivals: arrivalsPerMinute({ arrivals: a.arrivals, oldestMinuteMs: a.oldestMinute?.getTime() ?? null }, a.now.getTime(), pool.sizing.windowMinutes),
      refillP95Ms: percentile(boots.recentBootMs, 0.95),
    };
    this.#measured.set(pool.id, m);
    return m;
  }

  /**
   * Scale-down of a `demand` pool: idle instances above the target its last decision chose (which
   * already waited out the cooldown) are retired, oldest first, at most `max` per pass; the next
   * pass deletes their resources. `fixed` pools keep today's behaviour (surplus idle stays).
   */
  async scaleDown(pool: PoolRecord, idle: number, max: number, lease: Lease): Promise<string[]> {
    const d = this.#last.get(pool.id);
    if (pool.sizing.mode !== "demand" || !d) return [];
    const retired: string[] = [];
    for (let n = Math.min(idle - d.target, max); n > 0; n--) {
      const id = await this.#o.store.retireSurplusIdle(pool.id, d.target, `scaled down: ${d.summary}`, lease);
      if (!id) break;
      retired.push(id);
    }
    if (retired.length)
      this.#o.logger.info({ pool: pool.id, retired, target: d.target }, `pool ${pool.id}: retired ${retired.length} surplus idle (${d.summary})`);
    return retired;
  }

  /**
   * What a pass saw for one pool: its counts, the rows it read and the transitions it made.
   * Records idle instance-seconds since the pool's previous pass, each refill (a row that went
   * from `starting` to idle, timed from when it entered `starting`), and a snapshot.
   */
  observe(
    poolId: string,
    counts: StatusCounts,
    rows: ReadonlyMap<string, Pick<InstanceRecord, "statusChangedAt">>,
    transitions: ReadonlyArray<{ id: string; from: string; to: string }>,
    now: Date,
  ): void {
    const mono = this.#mono();
    const prev = this.#observedAt.get(poolId);
    this.#observedAt.set(poolId, mono);
    if (prev !== undefined && mono - prev <= MAX_IDLE_GAP_MS) {
      const seconds = (counts.idle * (mono - prev)) / 1000;
      this.#o.recorder?.idle(poolId, seconds);
      this.#o.onIdle?.(poolId, seconds);
    }
    for (const t of transitions) {
      if (t.from !== "starting" || t.to !== "idle") continue;
      const row = rows.get(t.id);
      if (!row) continue;
      const ms = Math.max(0, now.getTime() - row.statusChangedAt.getTime());
      this.#o.recorder?.refill(poolId, ms);
      this.#o.onRefill?.(poolId, ms);
    }
    const d = this.#last.get(poolId);
    this.#o.recorder?.snapshot(poolId, {
      idle: counts.idle,
      starting: counts.starting,
      claimed: counts.claiming + counts.claimed + counts.pending_acceptance,
      other: INSTANCE_STATUSES.reduce((n, s) => (["idle", "starting", "claiming", "claimed", "pending_acceptance", "dead"].includes(s) ? n : n + counts[s]), 0),
      target: d?.target ?? 0,
      targetSummary: d?.summary ?? "",
    });
  }
}
