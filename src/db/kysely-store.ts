/**
 * The Store, written once over Kysely and shared by both backends (pg.Pool and PGlite differ only
 * in the dialect they hand in). Simple reads and writes use the query builder; the statements that
 * must be ONE round trip (batched observations, conditional transitions with their event, leases)
 * are written as SQL with the `sql` tag.
 */
import { Kysely, sql, type Dialect, type RawBuilder, type Selectable } from "kysely";
import { PoolError } from "../errors.ts";
import { canTransition, emptyCounts, isInstanceStatus, type InstanceStatus, type StatusCounts, type TransitionActor } from "../instance/status.ts";
import type {
  ApplyResult,
  BeginOperation,
  BeginOperationResult,
  ClaimPick,
  ClaimPickResult,
  ForeignResource,
  HeldUpgradeJob,
  IdempotencyBegin,
  IdempotentClaimState,
  InstanceEvent,
  InstanceRecord,
  Lease,
  NewInstance,
  NewResource,
  NewUpgradeJob,
  ObservationChange,
  PoolHint,
  PoolRecord,
  PoolWrite,
  InsertLimits,
  QueueJoin,
  QueueJoinResult,
  ResourceOwnership,
  ResourceRecord,
  ResourceState,
  ResourceTotals,
  Store,
  TransitionFields,
  TransitionRequest,
  UpgradeItemState,
  UpgradeJobRecord,
  VersionCount,
  WriteFence,
} from "./store.ts";
import { leaseHeld } from "./fence.ts";
import { KyselyRolloutStore, type RolloutStore } from "./rollouts.ts";
import { LocalHintBus, type HintBus } from "./hints.ts";
import * as agentOps from "./agent-operations.ts";
import * as history from "./pool-history.ts";
import type { HistoryRow, HistoryWrite } from "../pool/history.ts";
import { readSizingPolicy } from "../pool/sizing.ts";
import * as waiters from "./claim-waiters.ts";
import { templateHash, type InstanceTemplate } from "../pool/template.ts";
import type { Database, InstanceEventsTable, InstanceResourcesTable, InstancesTable, PoolsTable } from "./tables.ts";

/** Rows per applyObservations statement: 15 parameters a row keeps a chunk (30,000) well under
 * Postgres' 65,535-parameter limit. */
export const OBSERVATION_CHUNK_ROWS = 2_000;

/** Every column of `instances` but the heavy claim fields (see Store.listInstances `lean`). */
const LEAN_COLUMNS = [
  "id",
  "pool_id",
  "provider",
  "provider_ref",
  "name",
  "url",
  "status",
  "deploy_status",
  "runtime_version",
  "runtime_type",
  "image",
  "gateway_token",
  "health_checked_at",
  "health_ok_at",
  "health_failures",
  "health_error",
  "agent_name",
  "conversation_id",
  "invite_url",
  "join_url",
  "claim_key",
  "claim_owner",
  "claim_attempt",
  "claim_deadline",
  "claim_source",
  "claim_started_at",
  "claimed_at",
  "created_at",
  "updated_at",
  "status_changed_at",
  "deleted_at",
  "resource_gone_at",
  "template_hash",
  "protected",
  "op_kind",
  "op_token",
  "op_deadline",
] as const;

/** Statuses in which a row carries a claim (and so its idempotency key is unique). */
const BOUND_SQL = sql`('claiming', 'claimed', 'pending_acceptance')`;

/** `interval` of `ms` milliseconds as SQL. */
function msInterval(ms: number): RawBuilder<unknown> {
  return sql`(${ms}::double precision * interval '1 millisecond')`;
}

export interface KyselyStoreOptions {
  backend: Store["backend"];
  dialect: Dialect;
  /** Hints between replicas; default in-process (one process: PGlite). */
  hints?: HintBus;
  /** Runs after Kysely has let go of its connections (PGlite: close it and release the lock). */
  onClose?: () => Promise<void>;
}

type InstanceRow = Selectable<InstancesTable>;

/** Column and SQL type of each field a transition may set. */
const TRANSITION_COLUMNS: { readonly [K in keyof Required<TransitionFields>]: readonly [string, string] } = {
  agentName: ["agent_name", "text"],
  instructions: ["instructions", "text"],
  conversationId: ["conversation_id", "text"],
  inviteUrl: ["invite_url", "text"],
  joinUrl: ["join_url", "text"],
  profileImage: ["profile_image", "text"],
  claimMetadata: ["claim_metadata", "jsonb"],
  claimKey: ["claim_key", "text"],
  claimOwner: ["claim_owner", "text"],
  claimAttempt: ["claim_attempt", "text"],
  claimSource: ["claim_source", "text"],
  claimStartedAt: ["claim_started_at", "timestamptz"],
  claimDeadline: ["claim_deadline", "timestamptz"],
  claimedAt: ["claimed_at", "timestamptz"],
  url: ["url", "text"],
  deployStatus: ["deploy_status", "text"],
  healthFailures: ["health_failures", "int"],
  healthError: ["health_error", "text"],
};

export class KyselyStore implements Store {
  readonly backend: Store["backend"];
  readonly rollouts: RolloutStore;
  readonly #db: Kysely<Database>;
  readonly #onClose: (() => Promise<void>) | undefined;
  readonly #hints: HintBus;
  #statements = 0;
  #closing: Promise<void> | undefined;

  constructor(opts: KyselyStoreOptions) {
    this.backend = opts.backend;
    this.#onClose = opts.onClose;
    this.#hints = opts.hints ?? new LocalHintBus();
    // Kysely calls `log` once per statement sent (failed ones included): that is the count.
    this.#db = new Kysely<Database>({ dialect: opts.dialect, log: () => void this.#statements++ });
    this.rollouts = new KyselyRolloutStore(this.#db, toInstance as (row: never) => InstanceRecord);
  }

  get statementCount(): number {
    return this.#statements;
  }

  async ping(): Promise<void> {
    await sql`SELECT 1`.execute(this.#db);
  }

  // ---- deployment ----

  async ensureOwnerId(candidate: string): Promise<string> {
    // One statement: the first replica to start records its candidate; everyone reads the same id.
    const { rows } = await sql<{ owner_id: string }>`
      WITH ins AS (
        INSERT INTO deployment (singleton, owner_id) VALUES (true, ${candidate}::text)
        ON CONFLICT (singleton) DO NOTHING
        RETURNING owner_id
      )
      SELECT owner_id FROM ins
      UNION ALL
      SELECT owner_id FROM deployment
      LIMIT 1`.execute(this.#db);
    if (rows[0]) return rows[0].owner_id;
    // Another replica inserted concurrently: our statement waited for it, but its snapshot predates
    // that insert. A new statement sees it.
    const again = await this.#db.selectFrom("deployment").select("owner_id").executeTakeFirstOrThrow();
    return again.owner_id;
  }

  async ensureWebhookSecret(candidate: string): Promise<string> {
    // The owner id's row exists first (ensureOwnerId runs at every start); set once, then read.
    const { rows } = await sql<{ webhook_secret: string | null }>`
      UPDATE deployment SET webhook_secret = COALESCE(webhook_secret, ${candidate}::text)
      RETURNING webhook_secret`.execute(this.#db);
    const secret = rows[0]?.webhook_secret;
    if (!secret) throw new Error("no deployment row: call ensureOwnerId first");
    return secret;
  }

  // ---- pools ----

  async upsertPool(pool: { id: string; minIdle: number; maxTotal: number }): Promise<PoolRecord> {
    const row = await this.#db
      .insertInto("pools")
      .values({
        id: pool.id,
        runtime: pool.id,
        min_idle: pool.minIdle,
        max_total: pool.maxTotal,
        template_hash: templateHash({ provider: null, image: null, command: null, env: {} }),
      })
      .onConflict((oc) =>
        oc.column("id").doUpdateSet((eb) => ({
          min_idle: eb.ref("excluded.min_idle"),
          max_total: eb.ref("excluded.max_total"),
          retired_at: null,
          updated_at: sql<Date>`now()`,
        })),
      )
      .returningAll()
      .executeTakeFirstOrThrow();
    return toPool(row);
  }

  async savePool(pool: PoolWrite, opts: { expectHash?: string } = {}): Promise<PoolRecord | null> {
    const json = (v: unknown) => (v === null || v === undefined ? null : JSON.stringify(v));
    // One statement; with expectHash the update is conditional on the template it was decided
    // from (two operators changing one pool at once: the second change writes nothing).
    const { rows } = await sql<Selectable<PoolsTable>>`
      INSERT INTO pools (id, runtime, provider, image, command, env, min_idle, max_total, claim_agent_name,
                         claim_instructions, join_url_hosts, max_surge, template_hash, previous_template, seed_hash, sizing)
      VALUES (${pool.id}, ${pool.runtime}, ${pool.provider}::text, ${pool.image}::text, ${json(pool.command)}::text::jsonb,
              ${JSON.stringify(pool.env)}::text::jsonb, ${pool.minIdle}, ${pool.maxTotal}, ${pool.claimAgentName}::text,
              ${pool.claimInstructions}::text, ${json(pool.joinUrlHosts)}::text::jsonb, ${pool.maxSurge}, ${pool.templateHash},
              ${json(pool.previousTemplate)}::text::jsonb, ${pool.seedHash ?? null}::text,
              ${pool.sizing.mode === "fixed" ? null : JSON.stringify(pool.sizing)}::text::jsonb)
      ON CONFLICT (id) DO UPDATE SET
        runtime = EXCLUDED.runtime, provider = EXCLUDED.provider, image = EXCLUDED.image, command = EXCLUDED.command,
        env = EXCLUDED.env, min_idle = EXCLUDED.min_idle, max_total = EXCLUDED.max_total,
        claim_agent_name = EXCLUDED.claim_agent_name, claim_instructions = EXCLUDED.claim_instructions,
        join_url_hosts = EXCLUDED.join_url_hosts, max_surge = EXCLUDED.max_surge, template_hash = EXCLUDED.template_hash,
        previous_template = EXCLUDED.previous_template, sizing = EXCLUDED.sizing,
        seed_hash = ${pool.seedHash === undefined ? sql`pools.seed_hash` : sql`EXCLUDED.seed_hash`},
        retired_at = NULL, updated_at = now()
      WHERE ${opts.expectHash === undefined ? sql`TRUE` : sql`pools.template_hash = ${opts.expectHash}`}
      RETURNING *`.execute(this.#db);
    return rows[0] ? toPool(rows[0]) : null;
  }

  async retirePool(id: string): Promise<boolean> {
    return this.#db.transaction().execute(async (trx) => {
      // The creates' lock: no instance can be inserted into the pool while it is being retired.
      await sql`SELECT pg_advisory_xact_lock(hashtext('create'))`.execute(trx);
      const { rows } = await sql<{ id: string }>`
        UPDATE pools SET retired_at = now(), updated_at = now()
         WHERE id = ${id} AND retired_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.pool_id = pools.id AND i.deleted_at IS NULL)
        RETURNING id`.execute(trx);
      return rows.length > 0;
    });
  }

  async getPool(id: string): Promise<PoolRecord | null> {
    const row = await this.#db.selectFrom("pools").selectAll().where("id", "=", id).executeTakeFirst();
    return row ? toPool(row) : null;
  }

  async recordForeignResources(resources: readonly ForeignResource[], fence?: Lease): Promise<void> {
    await sql`UPDATE deployment SET foreign_resources = ${JSON.stringify(resources)}::text::jsonb WHERE ${leaseHeld(fence)}`.execute(this.#db);
  }

  async foreignResources(): Promise<ForeignResource[]> {
    const row = await this.#db.selectFrom("deployment").select("foreign_resources").executeTakeFirst();
    return parseJsonArray(row?.foreign_resources).flatMap((f) =>
      f && typeof f === "object" && typeof (f as ForeignResource).ref === "string"
        ? [
            {
              ref: (f as ForeignResource).ref,
              name: String((f as ForeignResource).name ?? ""),
              owner: typeof (f as ForeignResource).owner === "string" ? (f as ForeignResource).owner : null,
            },
          ]
        : [],
    );
  }

  async listPools(): Promise<PoolRecord[]> {
    const rows = await this.#db.selectFrom("pools").selectAll().where("retired_at", "is", null).orderBy("id").execute();
    return rows.map(toPool);
  }

  // ---- instances ----

  async insertInstance(input: NewInstance): Promise<InstanceRecord> {
    return this.#insertInstance(this.#db, input);
  }

  async insertInstanceWithin(input: NewInstance, limits: InsertLimits, fence?: Lease): Promise<InstanceRecord | null> {
    return this.#db.transaction().execute(async (trx) => {
      // One lock for every create of the deployment: the global cap counts all pools, and a pool
      // being retired takes the same lock.
      await sql`SELECT pg_advisory_xact_lock(hashtext('create'))`.execute(trx);
      // Slots are counted as occupiedSlots() does: a dead row whose resource is not deleted yet
      // still runs at the provider, so it holds its slot until the delete lands.
      const { rows } = await sql<{ live: number; fresh: number; everywhere: number; held: boolean; open: boolean }>`
        SELECT count(*) FILTER (WHERE pool_id = ${input.poolId})::int AS live,
               count(*) FILTER (WHERE pool_id = ${input.poolId} AND status IN ('idle', 'starting'))::int AS fresh,
               count(*)::int AS everywhere,
               ${leaseHeld(fence)} AS held,
               EXISTS (SELECT 1 FROM pools WHERE id = ${input.poolId} AND retired_at IS NULL) AS open
          FROM instances
         WHERE deleted_at IS NULL AND resource_gone_at IS NULL`.execute(trx);
      const { live, fresh, everywhere, held, open } = first(rows);
      if (!held || !open) return null;
      if (live >= limits.maxLive) return null;
      if (limits.minIdle !== undefined && fresh >= limits.minIdle) return null;
      if (limits.globalMax !== undefined && everywhere >= limits.globalMax) return null;
      return this.#insertInstance(trx, input);
    });
  }

  async #insertInstance(db: Kysely<Database>, input: NewInstance): Promise<InstanceRecord> {
    // One statement: the row and its first event land together or not at all.
    try {
      const { rows } = await sql<InstanceRow>`
        WITH ins AS (
          INSERT INTO instances (id, pool_id, provider, name, gateway_token, image, template_hash, status)
          VALUES (${input.id}, ${input.poolId}, ${input.provider}, ${input.name}, ${input.gatewayToken},
                  ${input.image ?? null}::text, ${input.templateHash ?? null}::text, 'starting')
          RETURNING *
        ), ev AS (
          INSERT INTO instance_events (instance_id, pool_id, from_status, to_status, actor, reason)
          SELECT id, pool_id, NULL, status, 'create', ${input.reason}::text FROM ins
        )
        SELECT * FROM ins`.execute(db);
      return toInstance(first(rows));
    } catch (err) {
      if (pgErrorCode(err) === "23503") {
        throw new PoolError("POOL_NOT_FOUND", `no pool ${input.poolId}`, { poolId: input.poolId }, { cause: err });
      }
      throw err;
    }
  }

  async setProviderRef(id: string, ref: string, url: string | null, deployStatus: string | null, fence?: Lease): Promise<boolean> {
    const { rows } = await sql<{ id: string }>`
      UPDATE instances SET provider_ref = ${ref}::text, url = ${url}::text, deploy_status = ${deployStatus}::text, updated_at = now()
       WHERE id = ${id} AND ${leaseHeld(fence)}
      RETURNING id`.execute(this.#db);
    return rows.length > 0;
  }

  async getInstance(id: string): Promise<InstanceRecord | null> {
    const row = await this.#db.selectFrom("instances").selectAll().where("id", "=", id).executeTakeFirst();
    return row ? toInstance(row) : null;
  }

  async listInstances(poolId: string | null, opts: { includeDeleted?: boolean; lean?: boolean } = {}): Promise<InstanceRecord[]> {
    let q = opts.lean
      ? this.#db
          .selectFrom("instances")
          .select(LEAN_COLUMNS)
          .select([sql<null>`NULL`.as("instructions"), sql<null>`NULL`.as("claim_metadata"), sql<null>`NULL`.as("profile_image")])
      : this.#db.selectFrom("instances").selectAll();
    if (poolId !== null) q = q.where("pool_id", "=", poolId);
    if (!opts.includeDeleted) q = q.where("deleted_at", "is", null);
    const rows = await q.orderBy("created_at", "asc").orderBy("id", "asc").execute();
    return rows.map(toInstance);
  }

  async setProtected(id: string, value: boolean): Promise<InstanceRecord | null> {
    const row = await this.#db
      .updateTable("instances")
      .set({ protected: value, updated_at: sql<Date>`now()` })
      .where("id", "=", id)
      .where("deleted_at", "is", null)
      .returningAll()
      .executeTakeFirst();
    return row ? toInstance(row) : null;
  }

  async countByStatus(poolId: string): Promise<StatusCounts> {
    const rows = await this.#db
      .selectFrom("instances")
      .select(["status", sql<number>`count(*)::int`.as("n")])
      .where("pool_id", "=", poolId)
      .where("deleted_at", "is", null)
      .groupBy("status")
      .execute();
    const counts = emptyCounts();
    for (const r of rows) if (isInstanceStatus(r.status)) counts[r.status] = Number(r.n);
    return counts;
  }

  async occupiedSlots(poolId: string): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM instances
       WHERE pool_id = ${poolId} AND deleted_at IS NULL AND resource_gone_at IS NULL`.execute(this.#db);
    return Number(first(rows).n);
  }

  async rowForResource(ref: string, instanceId: string | null): Promise<{ id: string; status: InstanceStatus } | null> {
    const { rows } = await sql<{ id: string; status: string }>`
      SELECT id, status FROM instances
       WHERE deleted_at IS NULL AND (provider_ref = ${ref}::text OR id = ${instanceId}::text)
       LIMIT 1`.execute(this.#db);
    return rows[0] ? { id: rows[0].id, status: rows[0].status as InstanceStatus } : null;
  }

  async applyObservations(changes: readonly ObservationChange[], fence?: Lease): Promise<ApplyResult> {
    // Check the whole batch before sending any of it, so a bad edge writes nothing.
    const seen = new Set<string>();
    for (const c of changes) {
      if (seen.has(c.id)) throw new Error(`applyObservations: instance ${c.id} appears twice in one batch`);
      seen.add(c.id);
      if (c.status !== c.expectedStatus && !canTransition(c.expectedStatus, c.status, "reconciler")) {
        throw new PoolError("INVALID_TRANSITION", `reconciler may not move instance ${c.id} from ${c.expectedStatus} to ${c.status}`, {
          id: c.id,
          from: c.expectedStatus,
          to: c.status,
        });
      }
    }
    const applied = new Set<string>();
    for (let i = 0; i < changes.length; i += OBSERVATION_CHUNK_ROWS) {
      // Chunks are separate statements (not one transaction): each row's write is conditional on
      // its own expected status, so a partly applied batch is still consistent.
      for (const id of await this.#applyChunk(changes.slice(i, i + OBSERVATION_CHUNK_ROWS), fence)) applied.add(id);
    }
    return {
      applied: changes.filter((c) => applied.has(c.id)).map((c) => c.id),
      skipped: changes.filter((c) => !applied.has(c.id)).map((c) => c.id),
    };
  }

  async #applyChunk(chunk: readonly ObservationChange[], fence: Lease | undefined): Promise<string[]> {
    // Every VALUES column is cast: Postgres infers a VALUES list's types from its first row, and a
    // NULL there would otherwise make the column `text`.
    const values = chunk.map(
      (c) => sql`(${c.id}::text, ${c.expectedStatus}::text, ${c.status}::text, ${c.reason}::text,
        ${c.providerRef}::text, ${c.url}::text, ${c.deployStatus}::text, ${c.runtimeVersion}::text,
        ${c.image}::text, ${c.healthCheckedAt}::timestamptz, ${c.healthOkAt}::timestamptz,
        ${c.healthFailures}::int, ${c.healthError}::text, ${c.conversationId}::text, ${c.resourceGone}::boolean,
        ${c.runtimeType}::text)`,
    );
    const { rows } = await sql<{ id: string }>`
      WITH v (id, expected, status, reason, provider_ref, url, deploy_status, runtime_version, image,
              health_checked_at, health_ok_at, health_failures, health_error, conversation_id, gone, runtime_type) AS (
        VALUES ${sql.join(values)}
      ), upd AS (
        UPDATE instances i SET
          status = v.status,
          status_changed_at = CASE WHEN v.status <> i.status THEN now() ELSE i.status_changed_at END,
          provider_ref = v.provider_ref,
          url = v.url,
          deploy_status = v.deploy_status,
          runtime_version = v.runtime_version,
          image = v.image,
          health_checked_at = v.health_checked_at,
          health_ok_at = v.health_ok_at,
          health_failures = v.health_failures,
          health_error = v.health_error,
          conversation_id = COALESCE(v.conversation_id, i.conversation_id),
          resource_gone_at = CASE WHEN v.gone THEN COALESCE(i.resource_gone_at, now()) ELSE NULL END,
          runtime_type = COALESCE(v.runtime_type, i.runtime_type),
          updated_at = now()
        FROM v
        WHERE i.id = v.id AND i.status = v.expected AND i.deleted_at IS NULL AND ${leaseHeld(fence)}
        RETURNING i.id, i.pool_id, v.expected AS from_status, i.status AS to_status, v.reason
      ), ev AS (
        INSERT INTO instance_events (instance_id, pool_id, from_status, to_status, actor, reason)
        SELECT id, pool_id, from_status, to_status, 'reconciler', reason FROM upd WHERE from_status <> to_status
      )
      SELECT id FROM upd`.execute(this.#db);
    return rows.map((r) => r.id);
  }

  async transition(req: TransitionRequest): Promise<InstanceRecord | null> {
    const froms: readonly InstanceStatus[] = typeof req.from === "string" ? [req.from] : req.from;
    // Only the edges the table allows are tried: a row sitting in a disallowed `from` stays put.
    const allowed = froms.filter((f) => canTransition(f, req.to, req.actor));
    if (allowed.length === 0) {
      throw new PoolError("INVALID_TRANSITION", `${req.actor} may not move instance ${req.id} from ${froms.join("|")} to ${req.to}`, {
        id: req.id,
        from: froms,
        to: req.to,
        actor: req.actor,
      });
    }
    const sets: RawBuilder<unknown>[] = [];
    for (const [field, value] of Object.entries(req.set ?? {}) as [keyof TransitionFields, unknown][]) {
      const spec = TRANSITION_COLUMNS[field];
      if (!spec || value === undefined) continue;
      const [column, type] = spec;
      const param = type === "jsonb" ? (value === null ? null : JSON.stringify(value)) : value;
      // jsonb travels as text: pg and PGlite serialize a JS value for a jsonb parameter differently.
      const cast = type === "jsonb" ? "text::jsonb" : type;
      sets.push(sql`${sql.ref(column)} = ${param}::${sql.raw(cast)}`);
    }
    // `cur` locks the row and reads its status as of the write (the old value, for the event);
    // RETURNING only sees the new one.
    const { rows } = await sql<InstanceRow & { prev_status: string }>`
      WITH cur AS (
        SELECT id, status FROM instances
        WHERE id = ${req.id} AND status = ANY(${allowed}::text[]) AND deleted_at IS NULL
          ${attemptFence(req.fence)} ${operationFence(req.fence)} AND ${leaseHeld(req.fence?.lease)}
        FOR UPDATE
      ), upd AS (
        UPDATE instances i SET
          status = ${req.to}::text, status_changed_at = now(), updated_at = now()
          ${sets.length > 0 ? sql`, ${sql.join(sets)}` : sql``}
          ${req.fence?.operation !== undefined ? sql`, op_kind = NULL, op_token = NULL, op_deadline = NULL` : sql``}
        FROM cur
        WHERE i.id = cur.id
        RETURNING i.*, cur.status AS prev_status
      ), ev AS (
        INSERT INTO instance_events (instance_id, pool_id, from_status, to_status, actor, reason)
        SELECT id, pool_id, prev_status, status, ${req.actor}::text, ${req.reason}::text FROM upd
      )
      SELECT * FROM upd`.execute(this.#db);
    return rows[0] ? toInstance(rows[0]) : null;
  }

  async markDeleted(id: string, fence?: Lease): Promise<boolean> {
    // Conditional on `dead`: the status that justified the delete. A row that moved meanwhile (an
    // operator's kill racing a pass is fine, both want it dead) is never marked deleted.
    const { rows } = await sql<{ id: string }>`
      UPDATE instances SET deleted_at = now(), updated_at = now()
       WHERE id = ${id} AND status = 'dead' AND deleted_at IS NULL AND ${leaseHeld(fence)}
      RETURNING id`.execute(this.#db);
    return rows.length > 0;
  }

  async staleClaims(poolId: string, marginMs: number, limit: number): Promise<InstanceRecord[]> {
    const { rows } = await sql<InstanceRow>`
      SELECT * FROM instances
       WHERE ${poolId === null ? sql`TRUE` : sql`pool_id = ${poolId}`} AND status = 'claiming' AND deleted_at IS NULL
         AND (claim_deadline IS NULL OR claim_deadline + ${msInterval(marginMs)} <= now())
       ORDER BY claim_deadline ASC NULLS FIRST
       LIMIT ${limit}`.execute(this.#db);
    return rows.map(toInstance);
  }

  async listEvents(instanceId: string, limit = 50): Promise<InstanceEvent[]> {
    const rows = await this.#db.selectFrom("instance_events").selectAll().where("instance_id", "=", instanceId).orderBy("id", "desc").limit(limit).execute();
    return rows.map(toEvent);
  }

  // ---- claims ----

  async claimIdle(pick: ClaimPick): Promise<ClaimPickResult> {
    // The unique index on (pool, claim_key) of live rows: an earlier run of this claim (same
    // idempotency key) holds an instance. Hand that one back instead of taking a second. The
    // holder may let go between the refused pick and the look-up: then the key is free, try again.
    for (let round = 0; round < 3; round++) {
      try {
        return await this.#claimIdle(pick);
      } catch (err) {
        if (
          pick.claimKey === null ||
          pgErrorCode(err) !== "23505" ||
          !/claim_key/.test(String((err as { constraint?: string }).constraint ?? (err as Error).message))
        )
          throw err;
      }
      const { rows } = await sql<InstanceRow>`
        SELECT * FROM instances
         WHERE claim_key = ${pick.claimKey} AND deleted_at IS NULL AND status IN ${BOUND_SQL}
         LIMIT 1`.execute(this.#db);
      if (rows[0]) return { kind: "key_taken", instance: toInstance(rows[0]) };
    }
    throw new PoolError("CLAIM_IN_PROGRESS", "Another run of this claim (same idempotency key) keeps changing its instance; try again.");
  }

  async #claimIdle(pick: ClaimPick): Promise<ClaimPickResult> {
    if (pick.joinUrl === null) {
      // One statement is atomic on its own: one round trip on the hot path.
      return this.#pickIdle(this.#db, pick);
    }
    return this.#db.transaction().execute(async (trx) => {
      // Serialize claims of the same invite URL: the iOS app's double-submit claimed two
      // instances in the earlier system (#402). The lock ends with the transaction.
      await sql`SELECT pg_advisory_xact_lock(hashtext(${`join:${pick.joinUrl}`}::text))`.execute(trx);
      const { rows } = await sql<{ id: string }>`
        SELECT id FROM instances
        WHERE pool_id = ANY(${[...pick.poolIds]}::text[]) AND join_url = ${pick.joinUrl}
          AND status IN ('claiming', 'claimed', 'pending_acceptance') AND deleted_at IS NULL
        LIMIT 1`.execute(trx);
      if (rows[0]) return { kind: "already_joined", instanceId: rows[0].id };
      return this.#pickIdle(trx, pick);
    });
  }

  async #pickIdle(db: Kysely<Database>, pick: ClaimPick): Promise<ClaimPickResult> {
    // Newest idle first: the most recently verified runtime (the earlier system moved to
    // newest-first, #1022). SKIP LOCKED lets concurrent claims pass each other.
    const { rows } = await sql<InstanceRow>`
      WITH pick AS (
        SELECT id FROM instances
        WHERE pool_id = ANY(${[...pick.poolIds]}::text[]) AND status = 'idle' AND deleted_at IS NULL AND NOT protected
          AND NOT (id = ANY(${[...pick.exclude]}::text[]))
          ${pick.fresh ? sql`AND template_hash = (SELECT p.template_hash FROM pools p WHERE p.id = instances.pool_id)` : sql``}
          ${waiters.queueAllowsPick(pick.queue)}
        ORDER BY created_at DESC
        LIMIT 1
        FOR UPDATE SKIP LOCKED
      ), upd AS (
        UPDATE instances i SET
          status = 'claiming', status_changed_at = now(), updated_at = now(),
          claim_owner = ${pick.owner}::text, claim_started_at = now(),
          claim_attempt = ${pick.attempt}::text, claim_deadline = now() + ${msInterval(pick.attemptTtlMs)},
          claim_key = ${pick.claimKey}::text, claim_source = ${pick.source}::text,
          agent_name = ${pick.agentName}::text, instructions = ${pick.instructions}::text,
          join_url = ${pick.joinUrl}::text, profile_image = ${pick.profileImage}::text,
          claim_metadata = ${pick.metadata === null ? null : JSON.stringify(pick.metadata)}::text::jsonb,
          conversation_id = NULL, invite_url = NULL, claimed_at = NULL
        FROM pick WHERE i.id = pick.id AND i.status = 'idle'
        RETURNING i.*
      ), ev AS (
        INSERT INTO instance_events (instance_id, pool_id, from_status, to_status, actor, reason)
        SELECT id, pool_id, 'idle', 'claiming', 'claim', 'claim started' FROM upd
      )${waiters.queueServedCte(pick.queue)}
      SELECT * FROM upd`.execute(db);
    return rows[0] ? { kind: "picked", instance: toInstance(rows[0]) } : { kind: "empty" };
  }

  async beginIdempotentClaim(req: IdempotencyBegin): Promise<IdempotentClaimState> {
    // Taken over only once the running record's deadline is past by the margin, by the database
    // clock: its run stops at that deadline, and whatever it still writes is fenced on its attempt.
    const { rows } = await sql<{ taken: boolean }>`
      INSERT INTO claims (pool_id, idempotency_key, state, owner, attempt, deadline)
      VALUES (${req.poolId}::text, ${req.key}::text, 'running', ${req.owner}::text, ${req.attempt}::text,
              now() + ${msInterval(req.deadlineMs)})
      ON CONFLICT (pool_id, idempotency_key) DO UPDATE
        SET owner = EXCLUDED.owner, attempt = EXCLUDED.attempt, deadline = EXCLUDED.deadline,
            updated_at = now(), created_at = now()
        WHERE claims.state = 'running'
          AND COALESCE(claims.deadline, claims.updated_at) + ${msInterval(req.takeoverMarginMs)} <= now()
      RETURNING true AS taken`.execute(this.#db);
    if (rows[0]) return { state: "new" };
    const existing = await this.#db
      .selectFrom("claims")
      .select(["state", "result"])
      .where("pool_id", "=", req.poolId)
      .where("idempotency_key", "=", req.key)
      .executeTakeFirst();
    // Abandoned between the two statements: the caller may retry.
    if (!existing) return { state: "running" };
    if (existing.state === "succeeded") return { state: "succeeded", result: parseJson(existing.result) ?? {} };
    return { state: "running" };
  }

  async finishIdempotentClaim(poolId: string, key: string, attempt: string, instanceId: string, result: Record<string, unknown>): Promise<boolean> {
    const { rows } = await sql<{ k: string }>`
      UPDATE claims SET state = 'succeeded', instance_id = ${instanceId}::text, result = ${JSON.stringify(result)}::text::jsonb, updated_at = now()
       WHERE pool_id = ${poolId} AND idempotency_key = ${key} AND attempt = ${attempt} AND state = 'running'
      RETURNING idempotency_key AS k`.execute(this.#db);
    return rows.length > 0;
  }

  async abandonIdempotentClaim(poolId: string, key: string, attempt: string): Promise<void> {
    await this.#db
      .deleteFrom("claims")
      .where("pool_id", "=", poolId)
      .where("idempotency_key", "=", key)
      .where("attempt", "=", attempt)
      .where("state", "=", "running")
      .execute();
  }

  // ---- the queue of waiting claims (issue 13; SQL in claim-waiters.ts) ----

  joinClaimQueue(req: QueueJoin): Promise<QueueJoinResult> {
    return waiters.joinClaimQueue(this.#db, req);
  }

  renewClaimWaiters(tickets: readonly number[], ttlMs: number): Promise<number[]> {
    return waiters.renewClaimWaiters(this.#db, tickets, ttlMs);
  }

  leaveClaimQueue(ticket: number): Promise<boolean> {
    return waiters.leaveClaimQueue(this.#db, ticket);
  }

  claimQueueLengths(): Promise<Array<{ poolId: string; waiting: number }>> {
    return waiters.claimQueueLengths(this.#db);
  }

  async listPoolEventsSince(poolId: string, afterId: number, limit = 500): Promise<InstanceEvent[]> {
    // An index range read on (pool_id, id); ids are bigint end to end (passed as text, never ::int).
    const { rows } = await sql<Selectable<InstanceEventsTable>>`
      SELECT * FROM instance_events
       WHERE pool_id = ${poolId} AND id > ${String(afterId)}::bigint
       ORDER BY id ASC
       LIMIT ${limit}`.execute(this.#db);
    return rows.map(toEvent);
  }

  async bootStats(poolId: string): Promise<{ recentBootMs: number[]; startingSince: Date[] }> {
    const [boots, starting] = await Promise.all([
      // Time in `starting` = from the event that entered it (a create or a redeploy) to idle.
      sql<{ ms: number }>`
        SELECT (extract(epoch FROM e.at - prev.at) * 1000)::float8 AS ms
          FROM instance_events e
          CROSS JOIN LATERAL (
            SELECT p.at FROM instance_events p WHERE p.instance_id = e.instance_id AND p.id < e.id ORDER BY p.id DESC LIMIT 1
          ) prev
         WHERE e.pool_id = ${poolId} AND e.from_status = 'starting' AND e.to_status = 'idle'
         ORDER BY e.id DESC
         LIMIT 50`.execute(this.#db),
      this.#db
        .selectFrom("instances")
        .select("status_changed_at")
        .where("pool_id", "=", poolId)
        .where("status", "=", "starting")
        .where("deleted_at", "is", null)
        .execute(),
    ]);
    return { recentBootMs: boots.rows.map((r) => Number(r.ms)), startingSince: starting.map((r) => r.status_changed_at) };
  }

  async lastPoolEventId(poolId: string): Promise<number> {
    // The newest entry of the (pool_id, id) index: one index probe, not a scan of the table.
    const { rows } = await sql<{ id: string | number }>`
      SELECT id FROM instance_events WHERE pool_id = ${poolId} ORDER BY id DESC LIMIT 1`.execute(this.#db);
    return Number(rows[0]?.id ?? 0);
  }

  // ---- leases ----

  async acquireLease(name: string, holder: string, ttlMs: number): Promise<Lease | null> {
    if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new RangeError(`lease ttl must be positive, got ${ttlMs}`);
    // The database clock decides expiry, so replicas with skewed clocks agree. The term changes
    // whenever the lease changes hands or lapsed (even back to the same holder): whatever a pass of
    // the old term still has in flight is refused by its fence.
    const { rows } = await sql<{ term: string | number }>`
      INSERT INTO leases (name, holder, expires_at, term)
      VALUES (${name}::text, ${holder}::text, now() + ${msInterval(ttlMs)}, 1)
      ON CONFLICT (name) DO UPDATE SET
        holder = EXCLUDED.holder,
        expires_at = EXCLUDED.expires_at,
        term = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > now() THEN leases.term ELSE leases.term + 1 END
        WHERE leases.holder = EXCLUDED.holder OR leases.expires_at <= now()
      RETURNING term`.execute(this.#db);
    return rows[0] ? { name, holder, term: Number(rows[0].term) } : null;
  }

  async renewLease(lease: Lease, ttlMs: number): Promise<boolean> {
    const { rows } = await sql<{ name: string }>`
      UPDATE leases SET expires_at = now() + ${msInterval(ttlMs)}
       WHERE name = ${lease.name} AND holder = ${lease.holder} AND term = ${lease.term}::bigint AND expires_at > now()
      RETURNING name`.execute(this.#db);
    return rows.length > 0;
  }

  async releaseLease(lease: Lease): Promise<void> {
    await sql`
      UPDATE leases SET expires_at = now()
       WHERE name = ${lease.name} AND holder = ${lease.holder} AND term = ${lease.term}::bigint AND expires_at > now()`.execute(this.#db);
  }

  async databaseNow(): Promise<Date> {
    const { rows } = await sql<{ now: Date | string }>`SELECT now() AS now`.execute(this.#db);
    return toDate(first(rows).now);
  }

  // ---- rate limits (shared by replicas) ----

  async hitRateLimit(key: string, windowMs: number): Promise<{ hits: number; resetAt: Date }> {
    const { rows } = await sql<{ hits: number; reset_at: Date | string }>`
      INSERT INTO rate_limits (key, window_start, window_ms, hits) VALUES (${key}::text, now(), ${windowMs}::int, 1)
      ON CONFLICT (key) DO UPDATE SET
        hits = CASE WHEN rate_limits.window_start + ${msInterval(windowMs)} <= now() THEN 1 ELSE rate_limits.hits + 1 END,
        window_start = CASE WHEN rate_limits.window_start + ${msInterval(windowMs)} <= now() THEN now() ELSE rate_limits.window_start END,
        window_ms = EXCLUDED.window_ms
      RETURNING hits, window_start + ${msInterval(windowMs)} AS reset_at`.execute(this.#db);
    const r = first(rows);
    return { hits: Number(r.hits), resetAt: toDate(r.reset_at) };
  }

  async peekRateLimit(key: string): Promise<{ hits: number; resetAt: Date } | null> {
    const { rows } = await sql<{ hits: number; reset_at: Date | string }>`
      SELECT hits, window_start + window_ms * interval '1 millisecond' AS reset_at FROM rate_limits
       WHERE key = ${key} AND window_start + window_ms * interval '1 millisecond' > now()`.execute(this.#db);
    return rows[0] ? { hits: Number(rows[0].hits), resetAt: toDate(rows[0].reset_at) } : null;
  }

  async clearRateLimit(key: string): Promise<void> {
    await this.#db.deleteFrom("rate_limits").where("key", "=", key).execute();
  }

  // ---- retention ----

  async pruneEvents(olderThanMs: number, batch: number): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      WITH gone AS (
        DELETE FROM instance_events WHERE id IN (
          SELECT id FROM instance_events WHERE at < now() - ${msInterval(olderThanMs)} ORDER BY at LIMIT ${batch})
        RETURNING 1)
      SELECT count(*)::int AS n FROM gone`.execute(this.#db);
    return Number(first(rows).n);
  }

  async pruneClaimRecords(olderThanMs: number, batch: number): Promise<number> {
    // A succeeded record whose agent is still live stays: it is what makes a late retry of that
    // claim get its answer instead of a second agent.
    const { rows } = await sql<{ n: number }>`
      WITH old AS (
        SELECT c.pool_id, c.idempotency_key FROM claims c
          LEFT JOIN instances i ON i.id = c.instance_id
         WHERE c.created_at < now() - ${msInterval(olderThanMs)}
           AND (c.state = 'running' OR i.id IS NULL OR i.deleted_at IS NOT NULL OR i.status = 'dead')
         ORDER BY c.created_at
         LIMIT ${batch}
      ), gone AS (
        DELETE FROM claims c USING old
         WHERE c.pool_id = old.pool_id AND c.idempotency_key = old.idempotency_key
        RETURNING 1)
      SELECT count(*)::int AS n FROM gone`.execute(this.#db);
    return Number(first(rows).n);
  }

  async pruneDeletedInstances(olderThanMs: number, batch: number): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      WITH old AS (
        SELECT i.id FROM instances i
         WHERE i.deleted_at < now() - ${msInterval(olderThanMs)}
           AND NOT EXISTS (SELECT 1 FROM instance_events e WHERE e.instance_id = i.id)
           AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.instance_id = i.id)
         ORDER BY i.deleted_at
         LIMIT ${batch}
      ), gone AS (
        DELETE FROM instances i USING old WHERE i.id = old.id RETURNING 1)
      SELECT count(*)::int AS n FROM gone`.execute(this.#db);
    return Number(first(rows).n);
  }

  async prunePoolHistory(olderThanMs: number, batch: number): Promise<number> {
    return history.prunePoolHistory(this.#db, olderThanMs, batch);
  }

  // ---- pool history (issue 13): SQL in pool-history.ts ----

  async addPoolHistory(rows: readonly HistoryWrite[]): Promise<void> {
    await history.addPoolHistory(this.#db, rows);
  }

  poolHistory(poolId: string, sinceMs: number): Promise<{ rows: HistoryRow[]; now: Date }> {
    return history.poolHistory(this.#db, poolId, sinceMs);
  }

  retireSurplusIdle(poolId: string, keepIdle: number, reason: string, fence?: Lease): Promise<string | null> {
    return history.retireSurplusIdle(this.#db, poolId, keepIdle, reason, fence);
  }

  claimArrivals(poolId: string, windowMs: number): Promise<{ arrivals: number; oldestMinute: Date | null; now: Date }> {
    return history.claimArrivals(this.#db, poolId, windowMs);
  }

  async pruneRateLimits(batch: number): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      WITH gone AS (
        DELETE FROM rate_limits WHERE key IN (
          SELECT key FROM rate_limits WHERE window_start + window_ms * interval '1 millisecond' <= now() LIMIT ${batch})
        RETURNING 1)
      SELECT count(*)::int AS n FROM gone`.execute(this.#db);
    return Number(first(rows).n);
  }

  // ---- per-instance resources (issue 12) ----
  // Every write is conditional on the row's state (and the intent on its instance's status and the
  // lease term) in its own statement; see migration 0006 for the lifecycle.

  async insertResourceIntent(input: NewResource, fence?: Lease, instanceStatuses: readonly InstanceStatus[] = ["starting"]): Promise<ResourceRecord | null> {
    // FOR SHARE on the instance row orders the intent against a concurrent kill (a conditional
    // UPDATE of that row): if the kill commits first, the status is re-checked and nothing is written.
    const { rows } = await sql<ResourceRow>`
      WITH inst AS (
        SELECT id FROM instances
         WHERE id = ${input.instanceId} AND pool_id = ${input.poolId} AND status = ANY(${[...instanceStatuses]}::text[])
           AND status <> 'dead' AND deleted_at IS NULL
           AND ${leaseHeld(fence)}
         FOR SHARE
      )
      INSERT INTO instance_resources (id, instance_id, pool_id, kind, name, state)
      SELECT ${input.id}::text, inst.id, ${input.poolId}::text, ${input.kind}::text, ${input.name}::text, 'creating' FROM inst
      ON CONFLICT (instance_id, kind) WHERE state <> 'deleted' DO NOTHING
      RETURNING *`.execute(this.#db);
    return rows[0] ? toResource(rows[0]) : null;
  }

  async recordResourceCreated(id: string, ref: string, limit: number | null, usage: number | null): Promise<ResourceRecord | null> {
    const { rows } = await sql<ResourceRow>`
      UPDATE instance_resources SET
        ref = ${ref}::text, spend_limit = ${limit}::double precision, usage = ${usage}::double precision,
        usage_at = CASE WHEN ${usage}::double precision IS NULL THEN usage_at ELSE now() END,
        state = CASE WHEN state = 'creating' THEN 'ready' ELSE state END,
        error = NULL, updated_at = now()
       WHERE id = ${id} AND ref IS NULL AND state <> 'deleted'
      RETURNING *`.execute(this.#db);
    return rows[0] ? toResource(rows[0]) : null;
  }

  async markResourceFailed(id: string, error: string): Promise<boolean> {
    const { rows } = await sql<{ id: string }>`
      UPDATE instance_resources SET state = 'deleting', error = ${error.slice(0, 500)}::text, updated_at = now()
       WHERE id = ${id} AND state = 'creating'
      RETURNING id`.execute(this.#db);
    return rows.length > 0;
  }

  async releaseResources(instanceId: string): Promise<ResourceRecord[]> {
    // The second SELECT reads the statement's snapshot (before the UPDATE): rows already deleting.
    const { rows } = await sql<ResourceRow>`
      WITH upd AS (
        UPDATE instance_resources SET state = 'deleting', updated_at = now()
         WHERE instance_id = ${instanceId} AND state IN ('creating', 'ready')
        RETURNING *
      )
      SELECT * FROM upd
      UNION ALL
      SELECT * FROM instance_resources
       WHERE instance_id = ${instanceId} AND state = 'deleting' AND id NOT IN (SELECT id FROM upd)`.execute(this.#db);
    return rows.map(toResource);
  }

  async markResourceDeleted(id: string): Promise<boolean> {
    const { rows } = await sql<{ id: string }>`
      UPDATE instance_resources SET state = 'deleted', deleted_at = now(), updated_at = now()
       WHERE id = ${id} AND state <> 'deleted'
      RETURNING id`.execute(this.#db);
    return rows.length > 0;
  }

  async listResources(filter: { instanceId?: string; poolId?: string } = {}): Promise<ResourceRecord[]> {
    let q = this.#db.selectFrom("instance_resources").selectAll().where("state", "<>", "deleted");
    if (filter.instanceId !== undefined) q = q.where("instance_id", "=", filter.instanceId);
    if (filter.poolId !== undefined) q = q.where("pool_id", "=", filter.poolId);
    const rows = await q.orderBy("created_at", "asc").orderBy("id", "asc").execute();
    return rows.map(toResource);
  }

  async resourcesToRelease(limit: number): Promise<ResourceRecord[]> {
    const { rows } = await sql<ResourceRow>`
      SELECT r.* FROM instance_resources r
        LEFT JOIN instances i ON i.id = r.instance_id
       WHERE r.state <> 'deleted' AND r.ref IS NOT NULL
         AND (r.state = 'deleting' OR i.id IS NULL OR i.status = 'dead' OR i.deleted_at IS NOT NULL)
       ORDER BY r.created_at ASC
       LIMIT ${limit}`.execute(this.#db);
    return rows.map(toResource);
  }

  async strandedResources(kind: string, olderThanMs: number, limit: number): Promise<ResourceRecord[]> {
    const { rows } = await sql<ResourceRow>`
      SELECT r.* FROM instance_resources r
        LEFT JOIN instances i ON i.id = r.instance_id
       WHERE r.kind = ${kind} AND r.state <> 'deleted' AND r.ref IS NULL
         AND (r.state = 'deleting' OR i.id IS NULL OR i.status = 'dead' OR i.deleted_at IS NOT NULL)
         AND r.created_at < now() - ${msInterval(olderThanMs)}
       ORDER BY r.created_at ASC
       LIMIT ${limit}`.execute(this.#db);
    return rows.map(toResource);
  }

  async resourceOwnership(kind: string, instanceIds: readonly string[]): Promise<ResourceOwnership[]> {
    if (instanceIds.length === 0) return [];
    const ids = [...new Set(instanceIds)];
    const [live, res] = await Promise.all([
      sql<{ id: string; live: boolean }>`
        SELECT x.id, (i.id IS NOT NULL AND i.status <> 'dead' AND i.deleted_at IS NULL) AS live
          FROM unnest(${ids}::text[]) AS x(id)
          LEFT JOIN instances i ON i.id = x.id`.execute(this.#db),
      sql<ResourceRow>`
        SELECT * FROM instance_resources
         WHERE kind = ${kind} AND instance_id = ANY(${ids}::text[]) AND state <> 'deleted'`.execute(this.#db),
    ]);
    const byInstance = new Map<string, ResourceRecord[]>();
    for (const r of res.rows.map(toResource)) byInstance.set(r.instanceId, [...(byInstance.get(r.instanceId) ?? []), r]);
    return live.rows.map((x) => ({ instanceId: x.id, instanceLive: x.live === true, resources: byInstance.get(x.id) ?? [] }));
  }

  async recordResourceUsage(updates: ReadonlyArray<{ id: string; limit: number | null; usage: number | null }>): Promise<number> {
    let written = 0;
    for (let i = 0; i < updates.length; i += 1_000) {
      const values = updates.slice(i, i + 1_000).map((u) => sql`(${u.id}::text, ${u.limit}::double precision, ${u.usage}::double precision)`);
      const { rows } = await sql<{ id: string }>`
        WITH v (id, lim, usage) AS (VALUES ${sql.join(values)})
        UPDATE instance_resources r SET spend_limit = v.lim, usage = v.usage, usage_at = now(), updated_at = now()
          FROM v
         WHERE r.id = v.id AND r.state <> 'deleted'
        RETURNING r.id`.execute(this.#db);
      written += rows.length;
    }
    return written;
  }

  async resourceTotals(): Promise<ResourceTotals[]> {
    const { rows } = await sql<{ pool_id: string; kind: string; state: string; n: number; usage: number; lim: number }>`
      SELECT pool_id, kind, state, count(*)::int AS n,
             COALESCE(sum(usage), 0)::float8 AS usage, COALESCE(sum(spend_limit), 0)::float8 AS lim
        FROM instance_resources
       WHERE state <> 'deleted'
       GROUP BY pool_id, kind, state
       ORDER BY pool_id, kind, state`.execute(this.#db);
    return rows.map((r) => ({
      poolId: r.pool_id,
      kind: r.kind,
      state: r.state as ResourceState,
      count: Number(r.n),
      usage: Number(r.usage),
      limit: Number(r.lim),
    }));
  }

  async pruneDeletedResources(olderThanMs: number, batch: number): Promise<number> {
    const { rows } = await sql<{ n: number }>`
      WITH gone AS (
        DELETE FROM instance_resources WHERE id IN (
          SELECT id FROM instance_resources
           WHERE state = 'deleted' AND deleted_at < now() - ${msInterval(olderThanMs)}
           ORDER BY deleted_at LIMIT ${batch})
        RETURNING 1)
      SELECT count(*)::int AS n FROM gone`.execute(this.#db);
    return Number(first(rows).n);
  }

  async recordInstanceEvent(instanceId: string, actor: TransitionActor, reason: string): Promise<boolean> {
    const { rows } = await sql<{ id: string | number }>`
      INSERT INTO instance_events (instance_id, pool_id, from_status, to_status, actor, reason)
      SELECT id, pool_id, status, status, ${actor}::text, ${reason}::text FROM instances
       WHERE id = ${instanceId} AND status <> 'dead' AND deleted_at IS NULL
      RETURNING id`.execute(this.#db);
    return rows.length > 0;
  }

  // ---- operators' operations on claimed agents (issue 11; SQL in agent-operations.ts) ----

  beginOperation(req: BeginOperation): Promise<BeginOperationResult> {
    return agentOps.beginOperation(this.#db, req);
  }

  endOperation(id: string, token: string, set?: { templateHash?: string }): Promise<boolean> {
    return agentOps.endOperation(this.#db, id, token, set);
  }

  versionCounts(poolId: string): Promise<VersionCount[]> {
    return agentOps.versionCounts(this.#db, poolId);
  }

  createUpgradeJob(job: NewUpgradeJob): Promise<UpgradeJobRecord> {
    return agentOps.createUpgradeJob(this.#db, job);
  }

  getUpgradeJob(id: string): Promise<UpgradeJobRecord | null> {
    return agentOps.getUpgradeJob(this.#db, id);
  }

  listUpgradeJobs(poolId: string | null, limit: number): Promise<UpgradeJobRecord[]> {
    return agentOps.listUpgradeJobs(this.#db, poolId, limit);
  }

  heldUpgradeJobs(runner: string): Promise<HeldUpgradeJob[]> {
    return agentOps.heldUpgradeJobs(this.#db, runner);
  }

  takeOverStaleUpgradeJobs(runner: string, runnerToken: string, staleMs: number, limit: number): Promise<HeldUpgradeJob[]> {
    return agentOps.takeOverStaleUpgradeJobs(this.#db, runner, runnerToken, staleMs, limit);
  }

  heartbeatUpgradeJob(job: HeldUpgradeJob): Promise<boolean> {
    return agentOps.heartbeatUpgradeJob(this.#db, job);
  }

  updateUpgradeItem(
    job: HeldUpgradeJob,
    instanceId: string,
    patch: { state: UpgradeItemState; detail?: string | null; toHash?: string | null },
  ): Promise<boolean> {
    return agentOps.updateUpgradeItem(this.#db, job, instanceId, patch);
  }

  finishUpgradeJob(job: HeldUpgradeJob): Promise<boolean> {
    return agentOps.finishUpgradeJob(this.#db, job);
  }

  // ---- hints ----

  async publishHint(hint: PoolHint): Promise<void> {
    await this.#hints.publish(hint, async (channel, payload) => {
      await sql`SELECT pg_notify(${channel}::text, ${payload}::text)`.execute(this.#db);
    });
  }

  subscribeHints(fn: (hint: PoolHint) => void): Promise<() => Promise<void>> {
    return this.#hints.subscribe(fn);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await this.#hints.close();
        await this.#db.destroy();
      } finally {
        await this.#onClose?.();
      }
    })();
    return this.#closing;
  }
}

// ---- row mapping ----

/** The claim-attempt part of a fence, as an SQL condition (empty when the fence has none). */
function attemptFence(fence: WriteFence | undefined): RawBuilder<unknown> {
  if (!fence || fence.claimAttempt === undefined) return sql``;
  return fence.claimAttempt === null ? sql`AND claim_attempt IS NULL` : sql`AND claim_attempt = ${fence.claimAttempt}::text`;
}

/** The operation part of a fence (release, upgrade): the row is still held by that token. */
function operationFence(fence: WriteFence | undefined): RawBuilder<unknown> {
  return fence?.operation === undefined ? sql`` : sql`AND op_token = ${fence.operation}::text`;
}

function first<T>(rows: readonly T[]): T {
  const row = rows[0];
  if (row === undefined) throw new Error("expected a row, got none");
  return row;
}

function pgErrorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

function toDate(v: Date | string): Date {
  return v instanceof Date ? v : new Date(v);
}

function toDateOrNull(v: Date | string | null): Date | null {
  return v === null ? null : toDate(v);
}

function toPool(r: Selectable<PoolsTable>): PoolRecord {
  const env = parseJson(r.env) ?? {};
  const command = parseJsonArray(r.command);
  const hosts = r.join_url_hosts === null ? null : parseJsonArray(r.join_url_hosts);
  const prev = parseJson(r.previous_template);
  return {
    id: r.id,
    runtime: r.runtime,
    provider: r.provider,
    image: r.image,
    command: r.command === null || command.length === 0 ? null : command.map(String),
    env: Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])),
    minIdle: Number(r.min_idle),
    maxTotal: Number(r.max_total),
    claimAgentName: r.claim_agent_name,
    claimInstructions: r.claim_instructions,
    joinUrlHosts: hosts === null ? null : hosts.map(String),
    maxSurge: Number(r.max_surge),
    sizing: readSizingPolicy(parseJson(r.sizing)),
    templateHash: r.template_hash,
    previousTemplate: prev ? (prev as unknown as InstanceTemplate) : null,
    seedHash: r.seed_hash,
    retiredAt: toDateOrNull(r.retired_at),
    createdAt: toDate(r.created_at),
    updatedAt: toDate(r.updated_at),
  };
}

export function toInstance(r: InstanceRow): InstanceRecord {
  const meta = r.claim_metadata as unknown;
  return {
    id: r.id,
    poolId: r.pool_id,
    provider: r.provider,
    providerRef: r.provider_ref,
    name: r.name,
    url: r.url,
    status: r.status as InstanceStatus,
    deployStatus: r.deploy_status,
    runtimeVersion: r.runtime_version,
    image: r.image,
    gatewayToken: r.gateway_token,
    healthCheckedAt: toDateOrNull(r.health_checked_at),
    healthOkAt: toDateOrNull(r.health_ok_at),
    healthFailures: Number(r.health_failures),
    healthError: r.health_error,
    agentName: r.agent_name,
    instructions: r.instructions,
    conversationId: r.conversation_id,
    inviteUrl: r.invite_url,
    joinUrl: r.join_url,
    profileImage: r.profile_image,
    claimMetadata: meta === null || meta === undefined ? null : ((typeof meta === "string" ? JSON.parse(meta) : meta) as Record<string, unknown>),
    claimKey: r.claim_key,
    claimOwner: r.claim_owner,
    claimAttempt: r.claim_attempt,
    claimDeadline: toDateOrNull(r.claim_deadline),
    claimSource: r.claim_source,
    claimStartedAt: toDateOrNull(r.claim_started_at),
    claimedAt: toDateOrNull(r.claimed_at),
    createdAt: toDate(r.created_at),
    updatedAt: toDate(r.updated_at),
    statusChangedAt: toDate(r.status_changed_at),
    deletedAt: toDateOrNull(r.deleted_at),
    resourceGoneAt: toDateOrNull(r.resource_gone_at),
    templateHash: r.template_hash,
    runtimeType: r.runtime_type,
    protected: Boolean(r.protected),
    operation: r.op_kind === "release" || r.op_kind === "upgrade" ? r.op_kind : null,
    operationDeadline: toDateOrNull(r.op_deadline),
  };
}

type ResourceRow = Selectable<InstanceResourcesTable>;

function numberOrNull(v: number | string | null): number | null {
  return v === null ? null : Number(v);
}

function toResource(r: ResourceRow): ResourceRecord {
  return {
    id: r.id,
    instanceId: r.instance_id,
    poolId: r.pool_id,
    kind: r.kind,
    name: r.name,
    state: r.state as ResourceState,
    ref: r.ref,
    limit: numberOrNull(r.spend_limit),
    usage: numberOrNull(r.usage),
    usageAt: toDateOrNull(r.usage_at),
    error: r.error,
    createdAt: toDate(r.created_at),
    updatedAt: toDate(r.updated_at),
    deletedAt: toDateOrNull(r.deleted_at),
  };
}

function toEvent(r: Selectable<InstanceEventsTable>): InstanceEvent {
  return {
    id: Number(r.id),
    instanceId: r.instance_id,
    fromStatus: r.from_status as InstanceStatus | null,
    toStatus: r.to_status as InstanceStatus,
    actor: r.actor as InstanceEvent["actor"],
    reason: r.reason,
    at: toDate(r.at),
  };
}

function parseJsonArray(v: unknown): unknown[] {
  const parsed =
    typeof v === "string"
      ? (() => {
          try {
            return JSON.parse(v) as unknown;
          } catch {
            return [];
          }
        })()
      : v;
  return Array.isArray(parsed) ? parsed : [];
}

/** jsonb comes back parsed on both drivers, or as text from a text cast: accept both. */
function parseJson(v: unknown): Record<string, unknown> | null {
  if (v === null || v === undefined) return null;
  if (typeof v === "string") {
    try {
      return JSON.parse(v) as Record<string, unknown>;
    } catch {
      return null;
    }
  }
  return typeof v === "object" ? (v as Record<string, unknown>) : null;
}
