/**
 * The store interface: every read and write of pool state goes through it, and all of its SQL
 * lives in this folder. Two backends implement it with the same Kysely code: real Postgres
 * (`pg.Pool`, production, several replicas) and PGlite (in-process, the zero-set-up default).
 * `store.conformance.test.ts` runs the same suite on both.
 */
import type { InstanceStatus, StatusCounts, TransitionActor } from "../instance/status.ts";

export interface PoolRecord {
  id: string;
  minIdle: number;
  maxTotal: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface InstanceRecord {
  id: string;
  poolId: string;
  /** Provider kind that runs it (`local`, `railway`, ...). */
  provider: string;
  /** Provider's id for the resource; null between the row's insert and the provider's answer. */
  providerRef: string | null;
  name: string;
  url: string | null;
  status: InstanceStatus;
  deployStatus: string | null;
  runtimeVersion: string | null;
  image: string | null;
  /** Per-instance secret; never leaves the server (not in API responses, logs or HTML). */
  gatewayToken: string;
  healthCheckedAt: Date | null;
  healthOkAt: Date | null;
  /** Consecutive failed health checks. */
  healthFailures: number;
  healthError: string | null;
  agentName: string | null;
  instructions: string | null;
  conversationId: string | null;
  inviteUrl: string | null;
  joinUrl: string | null;
  profileImage: string | null;
  claimMetadata: Record<string, unknown> | null;
  /** Idempotency key of the claim that took the instance, if one was given. */
  claimKey: string | null;
  /** Which pool-manager process holds the claim (for the stale-claim sweeper). */
  claimOwner: string | null;
  claimStartedAt: Date | null;
  claimedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  statusChangedAt: Date;
  /** When the provider resource was deleted; the row stays for the event log. */
  deletedAt: Date | null;
}

export interface InstanceEvent {
  id: number;
  instanceId: string;
  fromStatus: InstanceStatus | null;
  toStatus: InstanceStatus;
  actor: TransitionActor | "create";
  reason: string;
  at: Date;
}

export interface NewInstance {
  id: string;
  poolId: string;
  provider: string;
  name: string;
  gatewayToken: string;
  image?: string | null;
  reason: string;
}

/**
 * What the reconciler learned about one instance this pass. All observation fields are given in
 * full (the reconciler computed them from the row it read), so one batched statement can write
 * many rows. The write is conditional on `expectedStatus`: a row whose status moved meanwhile
 * (a claim took it) is skipped, not clobbered.
 */
export interface ObservationChange {
  id: string;
  expectedStatus: InstanceStatus;
  /** New status; equal to `expectedStatus` when only bookkeeping changed. */
  status: InstanceStatus;
  /** Why the status changed (logged to `instance_events`); ignored when it did not. */
  reason: string;
  providerRef: string | null;
  url: string | null;
  deployStatus: string | null;
  runtimeVersion: string | null;
  image: string | null;
  healthCheckedAt: Date | null;
  healthOkAt: Date | null;
  healthFailures: number;
  healthError: string | null;
  /** Set when the runtime reports its conversation (pending → claimed); null leaves it as it is. */
  conversationId: string | null;
}

export interface ApplyResult {
  /** Ids whose row matched `expectedStatus` and was written. */
  applied: string[];
  /** Ids skipped because their status had moved. */
  skipped: string[];
}

/** Fields a single transition may set alongside the status. */
export type TransitionFields = Partial<
  Pick<
    InstanceRecord,
    | "agentName"
    | "instructions"
    | "conversationId"
    | "inviteUrl"
    | "joinUrl"
    | "profileImage"
    | "claimMetadata"
    | "claimKey"
    | "claimOwner"
    | "claimStartedAt"
    | "claimedAt"
    | "url"
    | "deployStatus"
    | "healthFailures"
    | "healthError"
  >
>;

export interface TransitionRequest {
  id: string;
  from: InstanceStatus | readonly InstanceStatus[];
  to: InstanceStatus;
  actor: TransitionActor;
  reason: string;
  set?: TransitionFields;
}

/** What a claim asks of the store: take one idle instance of the pool and mark it `claiming`. */
export interface ClaimPick {
  poolId: string;
  /** Pool-manager process making the claim (the sweeper reads it). */
  owner: string;
  agentName: string;
  instructions: string;
  joinUrl: string | null;
  profileImage: string | null;
  metadata: Record<string, unknown> | null;
  /** Instances this claim already tried (a failed provision is not retried on the same one). */
  exclude: readonly string[];
}

export type ClaimPickResult =
  | { kind: "picked"; instance: InstanceRecord }
  | { kind: "empty" }
  /** Another instance of the pool has joined, or is joining, `joinUrl`. */
  | { kind: "already_joined"; instanceId: string };

export type IdempotentClaimState =
  | { state: "new" }
  | { state: "running" }
  | { state: "succeeded"; result: Record<string, unknown> };

export interface Store {
  readonly backend: "pglite" | "postgres";
  /** SQL statements sent since open (benchmarks report statements per tick). */
  readonly statementCount: number;

  /** Creates or updates a pool's settings. */
  upsertPool(pool: { id: string; minIdle: number; maxTotal: number }): Promise<PoolRecord>;
  getPool(id: string): Promise<PoolRecord | null>;
  listPools(): Promise<PoolRecord[]>;

  /** Records intent: the row (status `starting`) is written BEFORE the provider is asked to create. */
  insertInstance(input: NewInstance): Promise<InstanceRecord>;
  /**
   * insertInstance, unless the pool already has `maxLive` instances that are not dead, or (with
   * `minIdle`) `minIdle` idle and starting ones: then null. Counting and inserting happen under one
   * per-pool advisory lock, so creates decided by different replicas, or by a pass and an
   * operator's "add" at once, never take the pool past its limits (seed-system §8 #968).
   */
  insertInstanceWithin(input: NewInstance, limits: { maxLive: number; minIdle?: number }): Promise<InstanceRecord | null>;
  /** Fills in what the provider answered to a create (ref, url, deploy status). */
  setProviderRef(id: string, ref: string, url: string | null, deployStatus: string | null): Promise<void>;
  getInstance(id: string): Promise<InstanceRecord | null>;
  /** Instances of a pool, oldest first; deleted ones only when asked. */
  listInstances(poolId: string, opts?: { includeDeleted?: boolean }): Promise<InstanceRecord[]>;
  /** Count per status of the pool's instances that are not deleted. */
  countByStatus(poolId: string): Promise<StatusCounts>;

  /** Writes a pass's observations in one statement; status changes are checked and logged. */
  applyObservations(changes: readonly ObservationChange[]): Promise<ApplyResult>;
  /**
   * One conditional status change (claim path, sweeper, operator actions): applied only when the
   * row is in `from` and the edge is allowed for `actor`. Returns the updated row, or null when
   * the row was not in `from`. Throws INVALID_TRANSITION for an edge the table does not allow.
   */
  transition(req: TransitionRequest): Promise<InstanceRecord | null>;
  /** Marks the provider resource deleted (row kept for the event log). */
  markDeleted(id: string): Promise<void>;
  /** Events of a pool's instances with `id > afterId`, oldest first (server-sent events read these). */
  listPoolEventsSince(poolId: string, afterId: number, limit?: number): Promise<InstanceEvent[]>;
  /** The id of the pool's newest event (0 when none). */
  lastPoolEventId(poolId: string): Promise<number>;
  /**
   * What a POOL_EMPTY's Retry-After is estimated from: how long the pool's 50 latest boots spent
   * in `starting` before idle, and since when each instance now starting has been starting.
   */
  bootStats(poolId: string): Promise<{ recentBootMs: number[]; startingSince: Date[] }>;
  /** Latest events of an instance, newest first. */
  listEvents(instanceId: string, limit?: number): Promise<InstanceEvent[]>;

  /**
   * The atomic pick of a claim, in one transaction: refuse a `joinUrl` another instance of the
   * pool holds (serialized per URL by an advisory lock, so two concurrent double-submits cannot
   * both pass), then `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)` the newest idle
   * instance to `claiming`, logging the event.
   */
  claimIdle(pick: ClaimPick): Promise<ClaimPickResult>;
  /**
   * Registers an idempotency key. `new`: this caller runs the claim; `running`: another does;
   * `succeeded`: here is the first result. A running record older than `staleAfterMs` (its owner
   * died) is taken over.
   */
  beginIdempotentClaim(poolId: string, key: string, owner: string, staleAfterMs: number): Promise<IdempotentClaimState>;
  finishIdempotentClaim(poolId: string, key: string, instanceId: string, result: Record<string, unknown>): Promise<void>;
  /** Forgets a key whose claim failed, so that a retry tries again. */
  abandonIdempotentClaim(poolId: string, key: string, owner: string): Promise<void>;

  /**
   * Takes or renews a named lease for `holder` for `ttlMs` (database clock). True when `holder`
   * holds it after the call. Only the holder of `reconciler:<pool>` ticks.
   */
  acquireLease(name: string, holder: string, ttlMs: number): Promise<boolean>;
  releaseLease(name: string, holder: string): Promise<void>;

  /** Closes the connection(s) and, for PGlite, releases the data-dir lock. */
  close(): Promise<void>;
}
