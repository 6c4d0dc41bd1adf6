/**
 * Kysely's view of the schema in `migrations/`. Column names stay snake_case here; kysely-store.ts
 * maps rows to the camelCase records of store.ts.
 */
import type { ColumnType, Generated } from "kysely";

/** Read as Date (both drivers parse timestamptz); written as Date or an SQL expression. */
type Timestamp = ColumnType<Date, Date | string, Date | string>;
type TimestampDefault = ColumnType<Date, Date | string | undefined, Date | string>;

export interface PoolsTable {
  id: string;
  min_idle: number;
  max_total: number;
  runtime: ColumnType<string, string | undefined, string>;
  provider: string | null;
  image: string | null;
  /** jsonb: argv array or null. */
  command: ColumnType<unknown, string | null | undefined, string | null>;
  /** jsonb: {NAME: value}. */
  env: ColumnType<unknown, string | undefined, string>;
  claim_agent_name: string | null;
  claim_instructions: string | null;
  /** jsonb: host names or null. */
  join_url_hosts: ColumnType<unknown, string | null | undefined, string | null>;
  max_surge: ColumnType<number, number | undefined, number>;
  template_hash: ColumnType<string, string | undefined, string>;
  previous_template: ColumnType<unknown, string | null | undefined, string | null>;
  seed_hash: string | null;
  /** jsonb: the sizing policy (issue 13; migration 0012), null = fixed. */
  sizing: ColumnType<unknown, string | null | undefined, string | null>;
  retired_at: Timestamp | null;
  created_at: TimestampDefault;
  updated_at: TimestampDefault;
}

export interface InstancesTable {
  id: string;
  pool_id: string;
  provider: string;
  provider_ref: string | null;
  name: string;
  url: string | null;
  status: string;
  deploy_status: string | null;
  runtime_version: string | null;
  image: string | null;
  gateway_token: string;
  health_checked_at: Timestamp | null;
  health_ok_at: Timestamp | null;
  health_failures: Generated<number>;
  health_error: string | null;
  agent_name: string | null;
  instructions: string | null;
  conversation_id: string | null;
  invite_url: string | null;
  join_url: string | null;
  profile_image: string | null;
  /** jsonb: parsed by both drivers on read; written as JSON text (cast to jsonb in SQL). */
  claim_metadata: ColumnType<Record<string, unknown> | null, string | null, string | null>;
  claim_key: string | null;
  claim_owner: string | null;
  claim_attempt: string | null;
  claim_deadline: Timestamp | null;
  claim_source: string | null;
  claim_started_at: Timestamp | null;
  claimed_at: Timestamp | null;
  created_at: TimestampDefault;
  updated_at: TimestampDefault;
  status_changed_at: TimestampDefault;
  deleted_at: Timestamp | null;
  resource_gone_at: Timestamp | null;
  template_hash: string | null;
  runtime_type: string | null;
  protected: Generated<boolean>;
  /** An operator's operation holding the row (release, upgrade; migration 0010), fenced by its token. */
  op_kind: string | null;
  op_token: string | null;
  op_deadline: Timestamp | null;
}

export interface InstanceEventsTable {
  /** bigserial: pg returns int8 as string, PGlite as number. */
  id: Generated<string | number>;
  instance_id: string;
  pool_id: string;
  from_status: string | null;
  to_status: string;
  actor: string;
  reason: string;
  at: TimestampDefault;
}

export interface LeasesTable {
  name: string;
  holder: string;
  expires_at: Timestamp;
  /** bigint: pg returns int8 as string, PGlite as number. */
  term: ColumnType<string | number, string | number | undefined, string | number>;
}

export interface DeploymentTable {
  singleton: Generated<boolean>;
  owner_id: string;
  /** jsonb array of {ref, name, owner}; written as JSON text. */
  foreign_resources: ColumnType<unknown, string | undefined, string>;
  created_at: TimestampDefault;
}

export interface RateLimitsTable {
  key: string;
  window_start: Timestamp;
  window_ms: number;
  hits: number;
}

export interface SchemaMigrationsTable {
  id: string;
  applied_at: TimestampDefault;
}

export interface ClaimsTable {
  pool_id: string;
  idempotency_key: string;
  state: "running" | "succeeded";
  owner: string;
  attempt: string;
  deadline: Timestamp | null;
  instance_id: string | null;
  result: ColumnType<Record<string, unknown> | null, string | null, string | null>;
  created_at: TimestampDefault;
  updated_at: TimestampDefault;
}

/** Per-instance resources (issue 12; migration 0006). */
export interface InstanceResourcesTable {
  id: string;
  instance_id: string;
  pool_id: string;
  kind: string;
  name: string;
  state: string;
  ref: string | null;
  spend_limit: number | null;
  usage: number | null;
  usage_at: Timestamp | null;
  error: string | null;
  created_at: TimestampDefault;
  updated_at: TimestampDefault;
  deleted_at: Timestamp | null;
}

/** Rollouts of a pool's template (issue 11; migration 0008). */
export interface RolloutsTable {
  /** bigserial: pg returns int8 as string, PGlite as number. */
  id: Generated<string | number>;
  pool_id: string;
  from_hash: string | null;
  to_hash: string;
  status: string;
  reason: string;
  halt_reason: string | null;
  target: number;
  max_surge: number;
  halt_after: number;
  retired: Generated<number>;
  remaining: Generated<number>;
  created: Generated<number>;
  failed: Generated<number>;
  failures_in_a_row: Generated<number>;
  in_flight: Generated<number>;
  claimable: number | null;
  min_claimable: number | null;
  counted_since: TimestampDefault;
  started_at: TimestampDefault;
  updated_at: TimestampDefault;
  finished_at: Timestamp | null;
}

/** Upgrades of claimed agents as jobs (issue 11; migration 0010). */
export interface UpgradeJobsTable {
  id: string;
  pool_id: string;
  template_hash: string;
  scope: string;
  state: string;
  runner: string;
  runner_token: string;
  heartbeat_at: TimestampDefault;
  resumed: Generated<number>;
  created_at: TimestampDefault;
  updated_at: TimestampDefault;
  finished_at: Timestamp | null;
}

export interface UpgradeJobItemsTable {
  job_id: string;
  instance_id: string;
  position: number;
  state: string;
  from_hash: string | null;
  to_hash: string | null;
  detail: string | null;
  started_at: Timestamp | null;
  finished_at: Timestamp | null;
}

/** Per-minute measurements of a pool (issue 13; migration 0012). */
export interface PoolHistoryTable {
  pool_id: string;
  minute: Timestamp;
  claims_warm: number;
  claims_waited: number;
  claims_empty: number;
  claims_failed: number;
  latency_hist: ColumnType<number[], string, string>;
  wait_ms_sum: ColumnType<string | number, number, number>;
  wait_ms_max: number;
  refills: number;
  refill_ms_sum: ColumnType<string | number, number, number>;
  refill_ms_max: number;
  idle_seconds: number;
  idle: number | null;
  starting: number | null;
  claimed: number | null;
  other: number | null;
  target: number | null;
  target_summary: string | null;
}

/** Waiting claims, one row per pool and ticket (migration 0013). */
export interface ClaimWaitersTable {
  pool_id: string;
  ticket: ColumnType<string, string | number, never>;
  owner: string;
  expires_at: Timestamp;
  created_at: TimestampDefault;
}

export interface Database {
  pool_history: PoolHistoryTable;
  claims: ClaimsTable;
  claim_waiters: ClaimWaitersTable;
  deployment: DeploymentTable;
  rate_limits: RateLimitsTable;
  pools: PoolsTable;
  instances: InstancesTable;
  instance_events: InstanceEventsTable;
  instance_resources: InstanceResourcesTable;
  leases: LeasesTable;
  rollouts: RolloutsTable;
  schema_migrations: SchemaMigrationsTable;
  upgrade_jobs: UpgradeJobsTable;
  upgrade_job_items: UpgradeJobItemsTable;
}
