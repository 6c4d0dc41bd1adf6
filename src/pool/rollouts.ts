/**
 * The rollout service (issue 11): starts rollouts when a pool's template changes, and applies the
 * pure `planRollout` (rollout.ts) inside the reconciler's pass. Thin on purpose: it reads, asks the
 * planner, and writes; every write of a pass is fenced on the pass's lease term, and each action is
 * intent first:
 * - a retirement is one conditional statement (store.rollouts.retire: idle → dead only while the
 *   rollout runs, the instance is still idle and the floor of claimable instances holds), and only
 *   a row that statement moved to `dead` is deleted at the provider, through the actuator;
 * - a create goes through the actuator: its row is inserted (fenced, within max total + max surge
 *   and the global cap) before the provider is asked.
 * A claim racing a retirement wins: the retirement's statement finds the instance no longer idle.
 *
 * Operators start rollouts by changing a template (`noteChange`, from the registry's change hook),
 * and pause and resume them; those writes are conditional on the rollout's status, not fenced (they
 * are not a pass's). A pass starts one too when it finds a pool whose template is not its latest
 * rollout's (a change made while no replica was up, or a lost hook): the database, not the hook,
 * is what the passes converge on.
 *
 * Cost: a pass with no pool changed since it last looked and no old instance to replace sends no
 * statement here. While a rollout runs, a pass reads the pools' latest rollouts (one statement) and
 * each running rollout's new instances (one), and writes its progress when it moved (one).
 */
import type { ListingState } from "./plan.ts";
import type { ObservedInstance } from "./plan.ts";
import type { Actuator } from "./actuator.ts";
import type { DeploymentSpec, PoolTickResult } from "./reconciler.ts";
import type { Lease, PoolRecord, Store } from "../db/store.ts";
import type { ProgressWrite, RolloutRecord } from "../db/rollouts.ts";
import { PoolError } from "../errors.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import { planRollout, progressAfter, replaceableCount, rolloutToStart, warmSize, type RolloutNote } from "./rollout.ts";

export interface RolloutServiceOptions {
  store: Store;
  logger: Logger;
  /** Failed creates in a row (new instances dead before idle) that halt a rollout. Default 3. */
  haltAfter?: number;
  /** Rollouts kept in a pool's history view. Default 20. */
  historyLimit?: number;
}

/** What the reconciler hands the service in its pass (after its own deletes and creates). */
export interface RolloutPassInput {
  lease: Lease;
  pools: readonly PoolRecord[];
  /** Rows as the pass's observer left them, by pool. */
  observed: ReadonlyMap<string, readonly ObservedInstance[]>;
  /** Status of each row after the pass's actions (a row deleted at the provider is absent). */
  status: ReadonlyMap<string, InstanceStatus>;
  /** What the pass did per pool (its creates, its deletes). */
  passResults: ReadonlyMap<string, PoolTickResult>;
  listing: (pool: PoolRecord) => ListingState;
  /** Orphan resources still holding a slot (the global cap counts them). */
  orphansHeld: number;
  spec: DeploymentSpec;
  actuator: Actuator;
}

export interface RolloutPassResult {
  created: Array<{ pool: string; id: string }>;
  /** Old instances retired (now dead) this pass. */
  retired: string[];
  deleted: Array<{ ref: string; instanceId: string | null; reason: string }>;
  calls: { create: number; delete: number };
  errors: string[];
  /** Each acting rollout's state after the pass, and why it held back. */
  rollouts: Array<{ pool: string; id: number; status: string; notes: RolloutNote[] }>;
}

/** A pool's rollout as the API and the dashboard show it. */
export interface RolloutState {
  pool: string;
  /** The pool's newest rollout (whatever its status), or null when it never had one. */
  current: RolloutRecord | null;
  /** Earlier rollouts, newest first. */
  history: RolloutRecord[];
}

export class RolloutService {
  readonly #o: RolloutServiceOptions;
  /** Per pool: the template hash last seen and whether a rollout was acting (null: not looked yet). */
  #known: Map<string, { hash: string; active: boolean }> | null = null;
  /** Starts decided from an operator's change, still being written (read-your-writes in views). */
  readonly #pending = new Map<string, Promise<unknown>>();

  constructor(opts: RolloutServiceOptions) {
    this.#o = opts;
  }

  get haltAfter(): number {
    return this.#o.haltAfter ?? 3;
  }

  /**
   * A pool changed (API, configuration, rollback): start a rollout if its template did. Not fenced:
   * an operator's write, conditional on the pool's template still being this one. Never throws
   * (a failure is logged; the next pass starts it anyway).
   */
  noteChange(pool: PoolRecord): Promise<void> {
    const run = (this.#pending.get(pool.id) ?? Promise.resolve())
      .then(async () => {
        const [latest, rows] = await Promise.all([this.#o.store.rollouts.latest(pool.id), this.#o.store.listInstances(pool.id)]);
        await this.#start(
          pool,
          latest,
          rows.map((r) => ({ status: r.status, templateHash: r.templateHash, protected: r.protected })),
          undefined,
        );
      })
      .catch((err) => this.#o.logger.warn({ pool: pool.id, err: (err as Error).message }, "could not start the rollout now; the next pass will"));
    this.#pending.set(pool.id, run);
    void run.finally(() => {
      if (this.#pending.get(pool.id) === run) this.#pending.delete(pool.id);
    });
    return run;
  }

  /** The pool's current rollout and its history (an operator's change just made is in it). */
  async state(poolId: string): Promise<RolloutState> {
    await this.#pending.get(poolId);
    const all = await this.#o.store.rollouts.history(poolId, (this.#o.historyLimit ?? 20) + 1);
    return { pool: poolId, current: all[0] ?? null, history: all.slice(1) };
  }

  /** The pool's newest rollout (one read; an operator's change just made is in it). */
  async current(poolId: string): Promise<RolloutRecord | null> {
    await this.#pending.get(poolId);
    return this.#o.store.rollouts.latest(poolId);
  }

  /** An operator pauses the pool's running rollout (409 when none runs). */
  async pause(poolId: string): Promise<RolloutRecord> {
    await this.#pending.get(poolId);
    const r = await this.#o.store.rollouts.pause(poolId);
    if (!r) throw new PoolError("INVALID_TRANSITION", `Pool "${poolId}" has no running rollout to pause.`, { pool: poolId });
    this.#o.logger.info({ pool: poolId, rollout: r.id }, `rollout ${r.id} of pool ${poolId} paused`);
    await this.#hint(poolId);
    return r;
  }

  /**
   * An operator resumes the pool's paused rollout, or retries a halted one (a new rollout of the same
   * change, its failures counted afresh). 409 when there is nothing to resume.
   */
  async resume(poolId: string): Promise<RolloutRecord> {
    await this.#pending.get(poolId);
    const r = await this.#o.store.rollouts.resume(poolId, "resumed after a halt");
    if (!r) throw new PoolError("INVALID_TRANSITION", `Pool "${poolId}" has no paused or halted rollout of its current template to resume.`, { pool: poolId });
    this.#o.logger.info({ pool: poolId, rollout: r.id }, `rollout ${r.id} of pool ${poolId} resumed`);
    await this.#hint(poolId);
    return r;
  }

  /** The pass's share: start, advance and end the pools' rollouts. Fenced on `input.lease`. */
  async runOnce(input: RolloutPassInput): Promise<RolloutPassResult> {
    const res: RolloutPassResult = { created: [], retired: [], deleted: [], calls: { create: 0, delete: 0 }, errors: [], rollouts: [] };
    const rowsOf = (pool: PoolRecord) => this.#rowsAfterPass(pool, input);
    const known = this.#known;
    const needed =
      known === null ||
      input.pools.some((p) => {
        const k = known.get(p.id);
        return !k || k.hash !== p.templateHash || k.active || replaceableCount(p.templateHash, rowsOf(p)) > 0;
      });
    if (!needed) return res;

    const latest = new Map((await this.#o.store.rollouts.latestPerPool()).map((r) => [r.poolId, r]));
    const next = new Map<string, { hash: string; active: boolean }>();
    // Slots left under the global cap, shared by the pools in order (as the pass's own creates).
    let globalRoom =
      input.spec.globalMaxTotal === undefined
        ? null
        : input.spec.globalMaxTotal - input.orphansHeld - input.pools.reduce((n, p) => n + heldSlots(rowsOf(p)), 0);
    for (const pool of input.pools) {
      try {
        let rollout = latest.get(pool.id) ?? null;
        const rows = rowsOf(pool);
        if (!rollout || rollout.toHash !== pool.templateHash) rollout = (await this.#start(pool, rollout, rows, input.lease)) ?? rollout;
        const acting = rollout !== null && rollout.toHash === pool.templateHash && (rollout.status === "running" || rollout.status === "paused");
        next.set(pool.id, { hash: pool.templateHash, active: acting });
        if (!acting || input.listing(pool) !== "complete") continue;
        const made = await this.#advance(pool, rollout!, rows, input, globalRoom, res);
        if (globalRoom !== null) globalRoom -= made;
      } catch (err) {
        res.errors.push(`rollout of ${pool.id}: ${(err as Error).message}`);
        next.set(pool.id, { hash: pool.templateHash, active: true }); // look again next pass
      }
    }
    this.#known = next;
    return res;
  }

  /** One pool's running (or paused) rollout: plan, retire, delete, create, record. Returns creates made. */
  async #advance(
    pool: PoolRecord,
    rollout: RolloutRecord,
    rows: ObservedInstance[],
    input: RolloutPassInput,
    globalRoom: number | null,
    res: RolloutPassResult,
  ): Promise<number> {
    const { store, logger } = this.#o;
    const { lease, spec, actuator } = input;
    const outcomes = rollout.status === "running" ? await store.rollouts.outcomes(pool.id, rollout.toHash, rollout.startedAt) : [];
    const did = input.passResults.get(pool.id);
    const plan = planRollout({
      rollout: {
        status: rollout.status,
        toHash: rollout.toHash,
        haltAfter: rollout.haltAfter,
        retired: rollout.retired,
        target: rollout.target,
        countedSince: rollout.countedSince,
      },
      pool: { minIdle: pool.minIdle, maxTotal: pool.maxTotal, maxSurge: pool.maxSurge },
      instances: rows,
      outcomes,
      createsLeft: spec.maxCreatesPerTick - (did?.created.length ?? 0),
      retiresLeft: spec.maxDeletesPerTick - (did?.deleted.length ?? 0),
      globalRoom,
    });
    res.rollouts.push({ pool: pool.id, id: rollout.id, status: plan.outcome?.status ?? rollout.status, notes: plan.notes });
    // A paused rollout's progress (outcomes unread) keeps its counts of new instances.
    const base =
      rollout.status === "running"
        ? plan.progress
        : { ...plan.progress, created: rollout.created, failed: rollout.failed, failuresInARow: rollout.failuresInARow };

    if (plan.outcome) {
      const done = await store.rollouts.finish(
        rollout.id,
        plan.outcome.status,
        write(base),
        plan.outcome.status === "halted" ? plan.outcome.reason : null,
        lease,
      );
      if (done?.status === "complete")
        logger.info(
          { pool: pool.id, rollout: rollout.id, retired: done.retired },
          `rollout ${rollout.id} of pool ${pool.id} complete: ${done.retired} replaced`,
        );
      if (done?.status === "halted")
        logger.warn({ pool: pool.id, rollout: rollout.id, reason: done.haltReason }, `rollout ${rollout.id} of pool ${pool.id} halted: ${done.haltReason}`);
      return 0;
    }

    // Retire, then delete at the provider only what the retirement moved to dead.
    let retiredIdle = 0;
    const retiredRows = [];
    for (const id of plan.retire) {
      const row = await store.rollouts.retire(rollout.id, id, pool.minIdle, `replaced by rollout ${rollout.id} (template ${rollout.toHash})`, lease);
      if (!row) continue; // claimed meanwhile, the floor no longer holds, paused, or the term is gone
      retiredRows.push(row);
      res.retired.push(row.id);
      if (rows.find((r) => r.id === id)?.status === "idle") retiredIdle++;
    }
    if (retiredRows.length > 0) {
      const del = await actuator.delete(
        retiredRows
          .filter((r) => r.providerRef !== null)
          .map((r) => ({ ref: r.providerRef!, instanceId: r.id, reason: "dead" as const, provider: r.provider })),
        retiredRows.filter((r) => r.providerRef === null).map((r) => r.id),
        lease,
      );
      res.calls.delete += del.calls;
      res.deleted.push(...del.deleted);
      res.errors.push(...del.errors);
    }

    let created = 0;
    if (plan.create > 0) {
      const made = await actuator.create(
        pool,
        plan.create,
        { maxLive: pool.maxTotal + pool.maxSurge, ...(spec.globalMaxTotal !== undefined ? { globalMax: spec.globalMaxTotal } : {}) },
        lease,
        `rollout ${rollout.id}`,
      );
      res.calls.create += made.calls;
      res.errors.push(...made.errors);
      for (const id of made.created) res.created.push({ pool: pool.id, id });
      created = made.created.length;
    }

    const after = progressAfter(base, { retired: retiredRows.length, retiredIdle, created });
    const changed = (["remaining", "created", "failed", "failuresInARow", "inFlight", "claimable"] as const).some((k) => after[k] !== rollout[k]);
    if (changed) await store.rollouts.recordProgress(rollout.id, write(after), lease);
    return created;
  }

  /** Starts a rollout when the pool's template is not its latest rollout's; returns the acting one. */
  async #start(
    pool: PoolRecord,
    latest: RolloutRecord | null,
    rows: ReadonlyArray<Pick<ObservedInstance, "status" | "templateHash" | "protected">>,
    lease: Lease | undefined,
  ): Promise<RolloutRecord | null> {
    const want = rolloutToStart(pool, latest, rows);
    if (!want) return null;
    const r = await this.#o.store.rollouts.start(
      {
        poolId: pool.id,
        fromHash: want.fromHash,
        toHash: pool.templateHash,
        reason: want.reason,
        target: warmSize(pool.minIdle, rows),
        remaining: replaceableCount(pool.templateHash, rows),
        maxSurge: pool.maxSurge,
        haltAfter: this.haltAfter,
      },
      lease,
    );
    if (r?.started) {
      this.#o.logger.info(
        {
          pool: pool.id,
          rollout: r.rollout.id,
          from: want.fromHash,
          to: pool.templateHash,
          superseded: latest?.status === "running" || latest?.status === "paused" ? latest.id : null,
        },
        `rollout ${r.rollout.id} of pool ${pool.id} started (${want.reason}): ${want.fromHash ?? "?"} → ${pool.templateHash}`,
      );
    }
    return r?.rollout ?? null;
  }

  /** The pool's rows as the pass leaves them: its statuses, its deletes gone, its creates starting. */
  #rowsAfterPass(pool: PoolRecord, input: RolloutPassInput): ObservedInstance[] {
    const rows: ObservedInstance[] = [];
    for (const x of input.observed.get(pool.id) ?? []) {
      const s = input.status.get(x.id);
      if (s !== undefined) rows.push({ ...x, status: s });
    }
    for (const id of input.passResults.get(pool.id)?.created ?? []) {
      rows.push({ id, status: "starting", providerRef: null, goneAtProvider: false, templateHash: pool.templateHash, protected: false });
    }
    return rows;
  }

  async #hint(poolId: string): Promise<void> {
    await this.#o.store.publishHint({ pool: poolId, kind: "changed" }).catch(() => undefined);
  }
}

/** Slots a pool's rows hold (as planPool counts them). */
function heldSlots(rows: readonly ObservedInstance[]): number {
  let n = 0;
  for (const r of rows) {
    if (r.status === "dead") {
      if (r.providerRef !== null && !r.goneAtProvider) n++;
    } else if (r.holdsSlot !== false) n++;
  }
  return n;
}

function write(p: ProgressWrite): ProgressWrite {
  return { remaining: p.remaining, created: p.created, failed: p.failed, failuresInARow: p.failuresInARow, inFlight: p.inFlight, claimable: p.claimable };
}
