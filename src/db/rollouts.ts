/**
 * The store's part for rollouts (issue 11; migration 0008): the record of each change of a pool's
 * template and how replacing its idle instances went. Reached as `store.rollouts`; its SQL lives
 * here, next to the rest of the store's.
 *
 * Who writes what, and on what condition:
 * - a pass (the reconciler's lease holder) starts, advances and ends rollouts, every write fenced on
 *   its lease term in the write's own statement (fence.ts), like every other write of a pass;
 * - an operator (API, CLI, dashboard) starts one through a change of the template, pauses and
 *   resumes: conditional on the rollout's status, so an operator and a pass never clobber each
 *   other (a pass's progress write keeps a pause; a retirement is refused once paused).
 * Starting is serialized per pool (an advisory lock) and conditional on the pool's template still
 * being the one the rollout brings instances to: a start decided from an old read of the pool does
 * nothing, so two quick changes in a row cannot leave the older one running.
 */
import { sql, type Kysely, type Selectable } from "kysely";
import { canTransition } from "../instance/status.ts";
import { leaseHeld } from "./fence.ts";
import type { InstanceRecord, Lease } from "./store.ts";
import type { Database, RolloutsTable } from "./tables.ts";

export const ROLLOUT_STATUSES = ["running", "paused", "complete", "halted", "superseded"] as const;
export type RolloutStatus = (typeof ROLLOUT_STATUSES)[number];

/** How far a rollout got, as its last pass saw it. */
export interface RolloutProgress {
  /** Old instances this rollout replaced (retired once a new one was idle). */
  retired: number;
  /** Old instances still to replace (idle, starting or sleeping, not protected). */
  remaining: number;
  /** New-template instances made since the rollout started, and those that failed before idle. */
  created: number;
  failed: number;
  /** Failures since the last new instance that became idle (counted from the start or a resume). */
  failuresInARow: number;
  /** New-template instances starting now. */
  inFlight: number;
  /** Idle, unprotected instances at the last pass, and the fewest any pass of the rollout saw. */
  claimable: number | null;
  minClaimable: number | null;
}

export interface RolloutRecord extends RolloutProgress {
  id: number;
  poolId: string;
  fromHash: string | null;
  toHash: string;
  status: RolloutStatus;
  reason: string;
  haltReason: string | null;
  /** The warm size it keeps (idle, starting, sleeping; unprotected), at least min idle. */
  target: number;
  maxSurge: number;
  haltAfter: number;
  countedSince: Date;
  startedAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

export interface NewRollout {
  poolId: string;
  fromHash: string | null;
  toHash: string;
  reason: string;
  /** The pool's warm size now; a superseded rollout's own is kept instead. */
  target: number;
  /** Old instances to replace now (its progress until a pass records more). */
  remaining: number;
  maxSurge: number;
  haltAfter: number;
}

/** A new-template instance made since a rollout started: when it became idle, or failed before. */
export interface RolloutOutcome {
  instanceId: string;
  createdAt: Date;
  /** First time it became idle (null: never). */
  idleAt: Date | null;
  /** First time the reconciler declared it dead, and why (the provider's error, a crash, health). */
  deadAt: Date | null;
  deadReason: string | null;
}

/** What a pass writes of a rollout's progress (the retired count is the retirements' own). */
export type ProgressWrite = Omit<RolloutProgress, "retired" | "minClaimable">;

export interface RolloutStore {
  /**
   * Starts a rollout of the pool to `toHash`, superseding the one that runs (or is paused). Nothing
   * new when the pool's latest rollout already goes to `toHash` (it is returned, `started` false),
   * and null when the pool's template is not `toHash` (any more) or the fence's term is gone.
   */
  start(r: NewRollout, fence?: Lease): Promise<{ rollout: RolloutRecord; started: boolean } | null>;
  /** The pool's newest rollout, whatever its status. */
  latest(poolId: string): Promise<RolloutRecord | null>;
  /** Each pool's newest rollout (one statement for a pass). */
  latestPerPool(): Promise<RolloutRecord[]>;
  /** A pool's rollouts, newest first. */
  history(poolId: string, limit: number): Promise<RolloutRecord[]>;
  /** Changes whenever any rollout is written (the dashboard's live feed compares it). */
  lastChange(): Promise<string>;
  /** Progress of a running or paused rollout; null when it is neither (or the term is gone). */
  recordProgress(id: number, p: ProgressWrite, fence?: Lease): Promise<RolloutRecord | null>;
  /**
   * Ends a rollout: `complete` from running or paused, `halted` (with its reason) from running only.
   * Null when it was not in such a status any more, or the term is gone.
   */
  finish(id: number, status: "complete" | "halted", p: ProgressWrite, haltReason: string | null, fence?: Lease): Promise<RolloutRecord | null>;
  /** running → paused (an operator). Null when the pool has no running rollout. */
  pause(poolId: string): Promise<RolloutRecord | null>;
  /**
   * An operator's resume: the newest rollout, paused → running; halted → a new rollout of the same
   * change (the halted one stays in the history), its failures in a row counted afresh. Only while
   * the pool's template is still the one it goes to. Null when there is nothing to resume.
   */
  resume(poolId: string, reason: string): Promise<RolloutRecord | null>;
  /** New-template instances of the pool made since `since` (database clock), oldest first. */
  outcomes(poolId: string, toHash: string, since: Date): Promise<RolloutOutcome[]>;
  /**
   * Retires an old instance for a running rollout: idle (or sleeping) → dead, logged, and the
   * rollout's retired count moved, in one statement, only while the rollout runs, the instance is
   * still idle, unprotected and of an old template, the pool keeps more than `floor` claimable
   * instances counting this one (judged in the statement, not on the pass's earlier read), and the
   * lease term holds. A claim that took the instance first wins: null.
   */
  retire(rolloutId: number, instanceId: string, floor: number, reason: string, fence?: Lease): Promise<InstanceRecord | null>;
}

type Row = Selectable<RolloutsTable>;

export class KyselyRolloutStore implements RolloutStore {
  readonly #db: Kysely<Database>;
  /** Row mapping of the instance table, from the store (one definition of an InstanceRecord). */
  readonly #toInstance: (row: never) => InstanceRecord;

  constructor(db: Kysely<Database>, toInstance: (row: never) => InstanceRecord) {
    this.#db = db;
    this.#toInstance = toInstance;
  }

  async start(r: NewRollout, fence?: Lease): Promise<{ rollout: RolloutRecord; started: boolean } | null> {
    return this.#db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext(${`rollout:${r.poolId}`}::text))`.execute(trx);
      const { rows: pool } = await sql<{ current: boolean; held: boolean }>`
        SELECT (template_hash = ${r.toHash}::text AND retired_at IS NULL) AS current, ${leaseHeld(fence)} AS held
          FROM pools WHERE id = ${r.poolId}`.execute(trx);
      if (!pool[0]?.current || !pool[0].held) return null;
      const { rows: latest } = await sql<Row>`SELECT * FROM rollouts WHERE pool_id = ${r.poolId} ORDER BY id DESC LIMIT 1`.execute(trx);
      if (latest[0] && latest[0].to_hash === r.toHash) return { rollout: toRollout(latest[0]), started: false };
      // The superseded rollout's target is kept: its surge, still starting or idle, is not the
      // pool's size (else every quick second change would grow the pool by max surge).
      const { rows: superseded } = await sql<{ target: number }>`
        UPDATE rollouts SET status = 'superseded', finished_at = now(), updated_at = now()
         WHERE pool_id = ${r.poolId} AND status IN ('running', 'paused')
        RETURNING target`.execute(trx);
      const target = superseded[0] ? Number(superseded[0].target) : r.target;
      const { rows } = await sql<Row>`
        INSERT INTO rollouts (pool_id, from_hash, to_hash, status, reason, target, remaining, max_surge, halt_after)
        VALUES (${r.poolId}, ${r.fromHash}::text, ${r.toHash}, 'running', ${r.reason}, ${target}, ${r.remaining}, ${r.maxSurge}, ${r.haltAfter})
        RETURNING *`.execute(trx);
      return { rollout: toRollout(rows[0]!), started: true };
    });
  }

  async latest(poolId: string): Promise<RolloutRecord | null> {
    const row = await this.#db.selectFrom("rollouts").selectAll().where("pool_id", "=", poolId).orderBy("id", "desc").limit(1).executeTakeFirst();
    return row ? toRollout(row) : null;
  }

  async latestPerPool(): Promise<RolloutRecord[]> {
    const { rows } = await sql<Row>`SELECT DISTINCT ON (pool_id) * FROM rollouts ORDER BY pool_id, id DESC`.execute(this.#db);
    return rows.map(toRollout);
  }

  async history(poolId: string, limit: number): Promise<RolloutRecord[]> {
    const rows = await this.#db.selectFrom("rollouts").selectAll().where("pool_id", "=", poolId).orderBy("id", "desc").limit(limit).execute();
    return rows.map(toRollout);
  }

  async lastChange(): Promise<string> {
    const { rows } = await sql<{ n: number | string; at: Date | string | null }>`SELECT count(*) AS n, max(updated_at) AS at FROM rollouts`.execute(this.#db);
    const r = rows[0];
    return r ? `${Number(r.n)}:${r.at === null ? "" : toDate(r.at).toISOString()}` : "";
  }

  async recordProgress(id: number, p: ProgressWrite, fence?: Lease): Promise<RolloutRecord | null> {
    const { rows } = await sql<Row>`
      UPDATE rollouts SET ${progressSets(p)}, updated_at = now()
       WHERE id = ${id} AND status IN ('running', 'paused') AND ${leaseHeld(fence)}
      RETURNING *`.execute(this.#db);
    return rows[0] ? toRollout(rows[0]) : null;
  }

  async finish(id: number, status: "complete" | "halted", p: ProgressWrite, haltReason: string | null, fence?: Lease): Promise<RolloutRecord | null> {
    const from = status === "complete" ? sql`('running', 'paused')` : sql`('running')`;
    const { rows } = await sql<Row>`
      UPDATE rollouts SET ${progressSets(p)}, status = ${status}, halt_reason = ${haltReason}::text,
             finished_at = now(), updated_at = now()
       WHERE id = ${id} AND status IN ${from} AND ${leaseHeld(fence)}
      RETURNING *`.execute(this.#db);
    return rows[0] ? toRollout(rows[0]) : null;
  }

  async pause(poolId: string): Promise<RolloutRecord | null> {
    const { rows } = await sql<Row>`
      UPDATE rollouts SET status = 'paused', updated_at = now()
       WHERE pool_id = ${poolId} AND status = 'running'
      RETURNING *`.execute(this.#db);
    return rows[0] ? toRollout(rows[0]) : null;
  }

  async resume(poolId: string, reason: string): Promise<RolloutRecord | null> {
    return this.#db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext(${`rollout:${poolId}`}::text))`.execute(trx);
      const { rows: latest } = await sql<Row & { current: boolean }>`
        SELECT r.*, EXISTS (SELECT 1 FROM pools p WHERE p.id = r.pool_id AND p.template_hash = r.to_hash AND p.retired_at IS NULL) AS current
          FROM rollouts r WHERE r.pool_id = ${poolId} ORDER BY r.id DESC LIMIT 1`.execute(trx);
      const last = latest[0];
      if (!last?.current) return null;
      if (last.status === "paused") {
        const { rows } = await sql<Row>`
          UPDATE rollouts SET status = 'running', updated_at = now() WHERE id = ${last.id} AND status = 'paused' RETURNING *`.execute(trx);
        return rows[0] ? toRollout(rows[0]) : null;
      }
      if (last.status !== "halted") return null;
      // A new row: the halted one keeps its outcome and reason in the history.
      const { rows } = await sql<Row>`
        INSERT INTO rollouts (pool_id, from_hash, to_hash, status, reason, target, remaining, max_surge, halt_after)
        VALUES (${poolId}, ${last.from_hash}::text, ${last.to_hash}, 'running', ${reason}, ${last.target}, ${last.remaining}, ${last.max_surge}, ${last.halt_after})
        RETURNING *`.execute(trx);
      return toRollout(rows[0]!);
    });
  }

  async outcomes(poolId: string, toHash: string, since: Date): Promise<RolloutOutcome[]> {
    // Only the reconciler's verdicts count as failures: an operator's kill of a starting instance
    // says nothing about the template.
    const { rows } = await sql<{
      id: string;
      created_at: Date | string;
      idle_at: Date | string | null;
      dead_at: Date | string | null;
      dead_reason: string | null;
    }>`
      SELECT i.id, i.created_at,
             (SELECT min(e.at) FROM instance_events e WHERE e.instance_id = i.id AND e.to_status = 'idle') AS idle_at,
             d.at AS dead_at, d.reason AS dead_reason
        FROM instances i
        LEFT JOIN LATERAL (
          SELECT e.at, e.reason FROM instance_events e
           WHERE e.instance_id = i.id AND e.to_status = 'dead' AND e.actor = 'reconciler'
           ORDER BY e.id LIMIT 1
        ) d ON TRUE
       WHERE i.pool_id = ${poolId} AND i.template_hash = ${toHash} AND i.created_at >= ${since}::timestamptz
       ORDER BY i.created_at, i.id`.execute(this.#db);
    return rows.map((r) => ({
      instanceId: r.id,
      createdAt: toDate(r.created_at),
      idleAt: r.idle_at === null ? null : toDate(r.idle_at),
      deadAt: r.dead_at === null ? null : toDate(r.dead_at),
      deadReason: r.dead_reason,
    }));
  }

  async retire(rolloutId: number, instanceId: string, floor: number, reason: string, fence?: Lease): Promise<InstanceRecord | null> {
    // The edges this write takes must stay inside the transition table.
    if (!canTransition("idle", "dead", "reconciler") || !canTransition("sleeping", "dead", "reconciler"))
      throw new Error("retire: the transition table no longer allows it");
    // `cur` locks the instance row: a claim's `FOR UPDATE SKIP LOCKED` passes it by, and a claim
    // that locked it first makes this statement wait and then find it no longer idle. The floor is
    // counted in the same statement, so claims that landed since the pass read its rows count.
    const { rows } = await sql<Record<string, unknown>>`
      WITH r AS (
        SELECT id, pool_id, to_hash FROM rollouts WHERE id = ${rolloutId} AND status = 'running'
      ), cur AS (
        SELECT i.id, i.status FROM instances i, r
         WHERE i.id = ${instanceId} AND i.pool_id = r.pool_id AND i.status IN ('idle', 'sleeping') AND NOT i.protected
           AND i.deleted_at IS NULL AND i.template_hash IS DISTINCT FROM r.to_hash
           AND (i.status = 'sleeping' OR (
             SELECT count(*) FROM instances c
              WHERE c.pool_id = r.pool_id AND c.status = 'idle' AND NOT c.protected AND c.deleted_at IS NULL) > ${floor})
           AND ${leaseHeld(fence)}
         FOR UPDATE OF i
      ), upd AS (
        UPDATE instances i SET status = 'dead', status_changed_at = now(), updated_at = now()
          FROM cur WHERE i.id = cur.id
        RETURNING i.*, cur.status AS prev_status
      ), ev AS (
        INSERT INTO instance_events (instance_id, pool_id, from_status, to_status, actor, reason)
        SELECT id, pool_id, prev_status, 'dead', 'reconciler', ${reason}::text FROM upd
      ), counted AS (
        UPDATE rollouts SET retired = retired + 1, updated_at = now()
         WHERE id = ${rolloutId} AND EXISTS (SELECT 1 FROM upd)
      )
      SELECT * FROM upd`.execute(this.#db);
    return rows[0] ? this.#toInstance(rows[0] as never) : null;
  }
}

function progressSets(p: ProgressWrite) {
  return sql`remaining = ${p.remaining}, created = ${p.created}, failed = ${p.failed}, failures_in_a_row = ${p.failuresInARow},
    in_flight = ${p.inFlight}, claimable = ${p.claimable}::int,
    min_claimable = CASE WHEN ${p.claimable}::int IS NULL THEN min_claimable ELSE LEAST(COALESCE(min_claimable, ${p.claimable}::int), ${p.claimable}::int) END`;
}

function toDate(v: Date | string): Date {
  return v instanceof Date ? v : new Date(v);
}

function toRollout(r: Row): RolloutRecord {
  return {
    id: Number(r.id),
    poolId: r.pool_id,
    fromHash: r.from_hash,
    toHash: r.to_hash,
    status: r.status as RolloutStatus,
    reason: r.reason,
    haltReason: r.halt_reason,
    target: Number(r.target),
    maxSurge: Number(r.max_surge),
    haltAfter: Number(r.halt_after),
    retired: Number(r.retired),
    remaining: Number(r.remaining),
    created: Number(r.created),
    failed: Number(r.failed),
    failuresInARow: Number(r.failures_in_a_row),
    inFlight: Number(r.in_flight),
    claimable: r.claimable === null ? null : Number(r.claimable),
    minClaimable: r.min_claimable === null ? null : Number(r.min_claimable),
    countedSince: toDate(r.counted_since),
    startedAt: toDate(r.started_at),
    updatedAt: toDate(r.updated_at),
    finishedAt: r.finished_at === null ? null : toDate(r.finished_at),
  };
}
