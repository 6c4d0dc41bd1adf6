/**
 * The SQL of operators' operations on claimed agents (issue 11; migration 0010): the hold an
 * operation takes on a row (release, upgrade), the versions view, and upgrade jobs. KyselyStore
 * delegates here so its file stays about instances, claims and leases.
 *
 * Every write that can race is conditional on its token in the same statement: an operation's hold
 * on its token, a job's writes on its runner token. A writer that lost the race changes nothing.
 */
import { sql, type Kysely, type Selectable } from "kysely";
import type { InstanceStatus } from "../instance/status.ts";
import type {
  BeginOperation,
  BeginOperationResult,
  HeldUpgradeJob,
  NewUpgradeJob,
  UpgradeItemRecord,
  UpgradeItemState,
  UpgradeJobRecord,
  UpgradeJobScope,
  VersionCount,
} from "./store.ts";
import type { Database, InstancesTable, UpgradeJobItemsTable, UpgradeJobsTable } from "./tables.ts";
import { toInstance } from "./kysely-store.ts";

const ms = (n: number) => sql`(${n}::double precision * interval '1 millisecond')`;

/** Prefix of the holds a job's items take: a takeover releases the holds of the job's earlier runner. */
export function upgradeHoldPrefix(jobId: string): string {
  return `upgrade:${jobId}:`;
}

export async function beginOperation(db: Kysely<Database>, req: BeginOperation): Promise<BeginOperationResult> {
  // FOR UPDATE orders the hold against a concurrent transition of the row (a claim's pick of an
  // idle row, a kill): whichever commits first, the other re-checks the row's newest version.
  const { rows } = await sql<Selectable<InstancesTable>>`
    WITH cur AS (
      SELECT id FROM instances
       WHERE id = ${req.id} AND status = ANY(${[...req.from]}::text[]) AND deleted_at IS NULL
         ${req.refuseProtected ? sql`AND NOT protected` : sql``}
         AND (op_token IS NULL OR op_deadline IS NULL OR op_deadline <= now())
       FOR UPDATE
    )
    UPDATE instances i SET op_kind = ${req.kind}::text, op_token = ${req.token}::text,
                           op_deadline = now() + ${ms(req.ttlMs)}, updated_at = now()
      FROM cur WHERE i.id = cur.id
    RETURNING i.*`.execute(db);
  if (rows[0]) return { kind: "begun", instance: toInstance(rows[0]) };
  const now = await db.selectFrom("instances").selectAll().where("id", "=", req.id).executeTakeFirst();
  return { kind: "refused", instance: now ? toInstance(now) : null };
}

export async function endOperation(db: Kysely<Database>, id: string, token: string, set: { templateHash?: string } = {}): Promise<boolean> {
  const record = set.templateHash !== undefined;
  const { rows } = await sql<{ id: string }>`
    UPDATE instances SET op_kind = NULL, op_token = NULL, op_deadline = NULL, updated_at = now()
      ${record ? sql`, template_hash = ${set.templateHash}::text` : sql``}
     WHERE id = ${id} AND op_token = ${token}::text
       ${record ? sql`AND status <> 'dead' AND deleted_at IS NULL` : sql``}
    RETURNING id`.execute(db);
  return rows.length > 0;
}

export async function versionCounts(db: Kysely<Database>, poolId: string): Promise<VersionCount[]> {
  const { rows } = await sql<{ template_hash: string | null; runtime_type: string | null; runtime_version: string | null; status: string; n: number }>`
    SELECT template_hash, runtime_type, runtime_version, status, count(*)::int AS n
      FROM instances
     WHERE pool_id = ${poolId} AND deleted_at IS NULL AND status <> 'dead'
     GROUP BY template_hash, runtime_type, runtime_version, status
     ORDER BY template_hash NULLS FIRST, runtime_type NULLS FIRST, runtime_version NULLS FIRST, status`.execute(db);
  return rows.map((r) => ({
    templateHash: r.template_hash,
    runtimeType: r.runtime_type,
    runtimeVersion: r.runtime_version,
    status: r.status as InstanceStatus,
    count: Number(r.n),
  }));
}

// ---- upgrade jobs ----

export async function createUpgradeJob(db: Kysely<Database>, job: NewUpgradeJob): Promise<UpgradeJobRecord> {
  await db.transaction().execute(async (trx) => {
    await trx
      .insertInto("upgrade_jobs")
      .values({
        id: job.id,
        pool_id: job.poolId,
        template_hash: job.templateHash,
        scope: job.scope,
        state: job.items.some((i) => i.state === "pending") ? "running" : "done",
        runner: job.runner,
        runner_token: job.runnerToken,
        ...(job.items.some((i) => i.state === "pending") ? {} : { finished_at: sql<Date>`now()` as never }),
      })
      .execute();
    if (job.items.length > 0) {
      await trx
        .insertInto("upgrade_job_items")
        .values(
          job.items.map((it, position) => ({
            job_id: job.id,
            instance_id: it.instanceId,
            position,
            state: it.state,
            from_hash: it.fromHash,
            detail: it.detail,
            ...(it.state === "skipped" ? { finished_at: sql<Date>`now()` as never } : {}),
          })),
        )
        .execute();
    }
  });
  return (await getUpgradeJob(db, job.id))!;
}

export async function getUpgradeJob(db: Kysely<Database>, id: string): Promise<UpgradeJobRecord | null> {
  const row = await db.selectFrom("upgrade_jobs").selectAll().where("id", "=", id).executeTakeFirst();
  if (!row) return null;
  const items = await db.selectFrom("upgrade_job_items").selectAll().where("job_id", "=", id).orderBy("position").execute();
  return toJob(row, items);
}

export async function listUpgradeJobs(db: Kysely<Database>, poolId: string | null, limit: number): Promise<UpgradeJobRecord[]> {
  let q = db.selectFrom("upgrade_jobs").selectAll();
  if (poolId !== null) q = q.where("pool_id", "=", poolId);
  const jobs = await q.orderBy("created_at", "desc").orderBy("id", "desc").limit(limit).execute();
  if (jobs.length === 0) return [];
  const items = await db
    .selectFrom("upgrade_job_items")
    .selectAll()
    .where(
      "job_id",
      "in",
      jobs.map((j) => j.id),
    )
    .orderBy("position")
    .execute();
  return jobs.map((j) =>
    toJob(
      j,
      items.filter((i) => i.job_id === j.id),
    ),
  );
}

export async function heldUpgradeJobs(db: Kysely<Database>, runner: string): Promise<HeldUpgradeJob[]> {
  const rows = await db
    .selectFrom("upgrade_jobs")
    .select(["id", "runner_token"])
    .where("runner", "=", runner)
    .where("state", "=", "running")
    .orderBy("created_at")
    .execute();
  return rows.map((r) => ({ id: r.id, runnerToken: r.runner_token }));
}

export async function takeOverStaleUpgradeJobs(db: Kysely<Database>, runner: string, token: string, staleMs: number, limit: number): Promise<HeldUpgradeJob[]> {
  // One statement: the job changes hands, its interrupted items go back to pending, and the holds
  // its earlier runner took on instances are released (they carry the job's prefix), so the new
  // runner can take them again while any late write of the old runner is refused by its token.
  const { rows } = await sql<{ id: string }>`
    WITH taken AS (
      UPDATE upgrade_jobs SET runner = ${runner}::text, runner_token = ${token}::text, heartbeat_at = now(),
                              resumed = resumed + 1, updated_at = now()
       WHERE id IN (
         SELECT id FROM upgrade_jobs
          WHERE state = 'running' AND heartbeat_at + ${ms(staleMs)} <= now()
          ORDER BY created_at
          LIMIT ${limit}
          FOR UPDATE SKIP LOCKED)
      RETURNING id
    ), items AS (
      UPDATE upgrade_job_items SET state = 'pending', started_at = NULL,
                                   detail = 'interrupted (its runner stopped); run again'
       WHERE job_id IN (SELECT id FROM taken) AND state = 'running'
      RETURNING 1
    ), holds AS (
      UPDATE instances SET op_kind = NULL, op_token = NULL, op_deadline = NULL, updated_at = now()
       WHERE op_token IS NOT NULL
         AND op_token LIKE ANY (ARRAY(SELECT 'upgrade:' || id || ':%' FROM taken))
      RETURNING 1
    )
    SELECT id FROM taken`.execute(db);
  return rows.map((r) => ({ id: r.id, runnerToken: token }));
}

export async function heartbeatUpgradeJob(db: Kysely<Database>, job: HeldUpgradeJob): Promise<boolean> {
  const { rows } = await sql<{ id: string }>`
    UPDATE upgrade_jobs SET heartbeat_at = now(), updated_at = now()
     WHERE id = ${job.id} AND runner_token = ${job.runnerToken} AND state = 'running'
    RETURNING id`.execute(db);
  return rows.length > 0;
}

export async function updateUpgradeItem(
  db: Kysely<Database>,
  job: HeldUpgradeJob,
  instanceId: string,
  patch: { state: UpgradeItemState; detail?: string | null; toHash?: string | null },
): Promise<boolean> {
  const final = patch.state === "upgraded" || patch.state === "failed" || patch.state === "skipped";
  const { rows } = await sql<{ instance_id: string }>`
    UPDATE upgrade_job_items it SET
      state = ${patch.state}::text,
      detail = ${patch.detail === undefined ? sql`it.detail` : sql`${patch.detail}::text`},
      to_hash = ${patch.toHash === undefined ? sql`it.to_hash` : sql`${patch.toHash}::text`},
      started_at = ${patch.state === "running" ? sql`now()` : sql`it.started_at`},
      finished_at = ${final ? sql`now()` : sql`NULL`}
     FROM upgrade_jobs j
     WHERE j.id = it.job_id AND it.job_id = ${job.id} AND it.instance_id = ${instanceId}
       AND j.runner_token = ${job.runnerToken} AND j.state = 'running'
    RETURNING it.instance_id`.execute(db);
  return rows.length > 0;
}

export async function finishUpgradeJob(db: Kysely<Database>, job: HeldUpgradeJob): Promise<boolean> {
  const { rows } = await sql<{ id: string }>`
    UPDATE upgrade_jobs SET state = 'done', finished_at = now(), updated_at = now()
     WHERE id = ${job.id} AND runner_token = ${job.runnerToken} AND state = 'running'
    RETURNING id`.execute(db);
  return rows.length > 0;
}

// ---- row mapping ----

const date = (v: Date | string): Date => (v instanceof Date ? v : new Date(v));
const dateOrNull = (v: Date | string | null): Date | null => (v === null ? null : date(v));

function toJob(j: Selectable<UpgradeJobsTable>, items: ReadonlyArray<Selectable<UpgradeJobItemsTable>>): UpgradeJobRecord {
  return {
    id: j.id,
    poolId: j.pool_id,
    templateHash: j.template_hash,
    scope: j.scope as UpgradeJobScope,
    state: j.state === "done" ? "done" : "running",
    runner: j.runner,
    heartbeatAt: date(j.heartbeat_at),
    resumed: Number(j.resumed),
    createdAt: date(j.created_at),
    updatedAt: date(j.updated_at),
    finishedAt: dateOrNull(j.finished_at),
    items: items.map(toItem),
  };
}

function toItem(i: Selectable<UpgradeJobItemsTable>): UpgradeItemRecord {
  return {
    instanceId: i.instance_id,
    position: Number(i.position),
    state: i.state as UpgradeItemState,
    fromHash: i.from_hash,
    toHash: i.to_hash,
    detail: i.detail,
    startedAt: dateOrNull(i.started_at),
    finishedAt: dateOrNull(i.finished_at),
  };
}
