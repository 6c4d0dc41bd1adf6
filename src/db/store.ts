/**
 * The store interface: every read and write of pool state goes through it, and all of its SQL
 * lives in this folder. Two backends implement it with the same Kysely code: real Postgres
 * (`pg.Pool`, production, several replicas) and PGlite (in-process, the zero-set-up default).
 * `store.conformance.test.ts` runs the same suite on both.
 */
import type { HistoryRow, HistoryWrite } from "../pool/history.ts";
import type { InstanceStatus, StatusCounts, TransitionActor } from "../instance/status.ts";
import type { InstanceTemplate, PoolSettings } from "../pool/template.ts";
import type { RolloutStore } from "./rollouts.ts";

/** A resource named like the pool's that is not ours (see ProviderInstance.owner). */
export interface ForeignResource {
  ref: string;
  name: string;
  /** Another deployment's owner id, or null: made before owner ids and matching no row. */
  owner: string | null;
}

export interface PoolRecord extends PoolSettings {
  /** Hash of what instances are made from (see pool/template.ts); '' for pools made before templates. */
  templateHash: string;
  /** The template before the last change (a rollback returns to it), or null. */
  previousTemplate: InstanceTemplate | null;
  /** Hash of the configuration entry last applied to this pool at start-up. */
  seedHash: string | null;
  /** Set once the pool was deleted (only when empty); its row stays for its instances' history. */
  retiredAt: Date | null;
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
  /**
   * Idempotency key of the claim that holds the instance, if one was given. At most one live
   * instance of a pool carries a given key (a unique index), whatever happens to the key's record.
   */
  claimKey: string | null;
  /** Which pool-manager process holds the claim (for people reading the row). */
  claimOwner: string | null;
  /**
   * Fencing token of the claim attempt that moved the row to `claiming`. Every later write of that
   * attempt, and the sweeper's, is conditional on it: a write that lost the race changes nothing.
   */
  claimAttempt: string | null;
  /** Database-clock time after which (plus the sweep margin) the sweeper may judge the attempt dead. */
  claimDeadline: Date | null;
  /** Where the claim came from (a client's `source`, e.g. "landing"). */
  claimSource: string | null;
  claimStartedAt: Date | null;
  claimedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
  statusChangedAt: Date;
  /** When the provider resource was deleted; the row stays for the event log. */
  deletedAt: Date | null;
  /**
   * When a complete listing last showed the provider resource gone while the row was kept (a
   * crashed agent, for its operator). Such a row no longer holds a slot against max total.
   */
  resourceGoneAt: Date | null;
  /** Hash of the pool template the instance was made from (pool/template.ts). */
  templateHash: string | null;
  /** What the runtime says it is on /pool/health (`runtime`). */
  runtimeType: string | null;
  /** Bulk operations (drain, rollouts, release-all) and claims never touch a protected instance. */
  protected: boolean;
  /**
   * An operator's operation holding the row (release, upgrade; migration 0010) and when its hold
   * lapses by the database clock; null when none. Its token stays in the store: every write of the
   * operation is conditional on it there.
   */
  operation: InstanceOperationKind | null;
  operationDeadline: Date | null;
}

export interface InstanceEvent {
  /** bigserial; a JS number is exact up to 2^53. */
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
  /** Hash of the pool template it is made from. */
  templateHash?: string | null;
  reason: string;
}

/** A pool's full settings as written by seeding or the API. */
export interface PoolWrite extends PoolSettings {
  templateHash: string;
  previousTemplate: InstanceTemplate | null;
  /** Set by seeding from configuration; left as it is when undefined. */
  seedHash?: string | null;
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
  /** What the runtime says it is (`runtime` of /pool/health); null leaves it as it is. */
  runtimeType: string | null;
  image: string | null;
  healthCheckedAt: Date | null;
  healthOkAt: Date | null;
  healthFailures: number;
  healthError: string | null;
  /** Set when the runtime reports its conversation (pending → claimed); null leaves it as it is. */
  conversationId: string | null;
  /** True: the resource is gone at the provider (sets resource_gone_at once); false clears it. */
  resourceGone: boolean;
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
    | "claimAttempt"
    | "claimSource"
    | "claimStartedAt"
    | "claimDeadline"
    | "claimedAt"
    | "url"
    | "deployStatus"
    | "healthFailures"
    | "healthError"
  >
>;

/** A reconciler lease held for one term (River's leader table: holder + term + expiry). */
export interface Lease {
  name: string;
  holder: string;
  term: number;
}

/**
 * What a racing write is conditional on, in the same statement as the write. `claimAttempt`: the
 * row still carries that claim attempt's token (null: carries none). `lease`: the writer still holds
 * that lease term and it has not expired by the database clock.
 */
export interface WriteFence {
  claimAttempt?: string | null;
  lease?: Lease;
  /**
   * The row is still held by the operator's operation with this token (release, upgrade); a
   * transition fenced on it also ends the operation, in the same statement.
   */
  operation?: string;
}

export interface TransitionRequest {
  id: string;
  from: InstanceStatus | readonly InstanceStatus[];
  to: InstanceStatus;
  actor: TransitionActor;
  reason: string;
  set?: TransitionFields;
  fence?: WriteFence;
}

/** What a claim asks of the store: take one idle instance of the pools and mark it `claiming`. */
export interface ClaimPick {
  /** Pools the claim may take from (one, or every pool of a runtime label). */
  poolIds: readonly string[];
  /** Only instances of their pool's current template (a claim with `fresh: true`). */
  fresh?: boolean;
  /** Pool-manager process making the claim (recorded for people reading the row). */
  owner: string;
  /** Fencing token of this attempt, unique per attempt. */
  attempt: string;
  /** The attempt's own time budget: claim_deadline = now() + this (database clock). */
  attemptTtlMs: number;
  /** Idempotency key of the claim, written to the row (one live instance per key). */
  claimKey: string | null;
  /** Where the claim came from, recorded with it. */
  source: string | null;
  agentName: string;
  instructions: string;
  joinUrl: string | null;
  profileImage: string | null;
  metadata: Record<string, unknown> | null;
  /** Instances this claim already tried (a failed provision is not retried on the same one). */
  exclude: readonly string[];
  /**
   * The claim's place in the queue of waiting claims (migration 0013). Without it the pick takes
   * nothing from a pool that has a live waiter: a claim that does not wait never jumps a queue.
   */
  queue?: QueuePlace;
}

/** A waiting claim's ticket, as a pick uses it. */
export interface QueuePlace {
  /** Picks only from pools where no live waiter holds an earlier ticket. */
  ticket: number;
  /**
   * True: this pick is the waiter's turn. It succeeds only while the waiter's own row is live
   * (fenced on the ticket: a waiter whose place lapsed takes nothing), and the same statement
   * removes the waiter from every pool's queue. False: a retry of a claim served earlier (its
   * provision failed), which keeps the place its ticket gives it.
   */
  serve: boolean;
}

/** What joining a pool's queue of waiting claims did. */
export type QueueJoinResult =
  | { kind: "joined"; ticket: number }
  /** A pool's queue already holds `maxLength` live waiters: nothing was written. */
  | { kind: "full"; poolId: string; waiting: number };

export interface QueueJoin {
  /** Pools the claim may take from (one row each, one ticket). */
  poolIds: readonly string[];
  /** Pool-manager process waiting (for people). */
  owner: string;
  /** The row is live until now() + this (database clock) unless a heartbeat renews it. */
  ttlMs: number;
  /** Most live waiters a pool's queue may hold. */
  maxLength: number;
}

export type ClaimPickResult =
  | { kind: "picked"; instance: InstanceRecord }
  | { kind: "empty" }
  /** Another instance of the pool has joined, or is joining, `joinUrl`. */
  | { kind: "already_joined"; instanceId: string }
  /** A live instance of the pool already carries `claimKey` (an earlier run of the same claim). */
  | { kind: "key_taken"; instance: InstanceRecord };

/** What a guarded insert stays within. */
export interface InsertLimits {
  /** Slots the pool may hold (max total, or more during a rollout's surge). */
  maxLive: number;
  /** Only while idle + starting instances of the pool are fewer than this (replenishment). */
  minIdle?: number;
  /** Slots every pool together may hold (the global cap). */
  globalMax?: number;
}

export interface IdempotencyBegin {
  poolId: string;
  key: string;
  /** Pool-manager process (for people). */
  owner: string;
  /** Fencing token of this run of the claim: finish and abandon are conditional on it. */
  attempt: string;
  /** The claim's overall deadline from now (database clock). */
  deadlineMs: number;
  /** A running record is taken over only once its deadline is this far past. */
  takeoverMarginMs: number;
}

/** A hint between replicas (Postgres NOTIFY, or in-process on PGlite). Never a command. */
export interface PoolHint {
  pool: string;
  /**
   * `claimed`: a claim took an instance (replenish); `bound`: it handed the agent out (rename);
   * `changed`: look; `check`: health-check `instanceId` at once (a webhook, an instance's callback).
   */
  kind: "claimed" | "bound" | "changed" | "check";
  instanceId?: string;
}

export type IdempotentClaimState = { state: "new" } | { state: "running" } | { state: "succeeded"; result: Record<string, unknown> };

// ---- per-instance resources (issue 12) ----

/** Lifecycle of a per-instance resource row (see migration 0006). */
export type ResourceState = "creating" | "ready" | "deleting" | "deleted";

/** A per-instance resource as recorded: never its secret, only the vendor's id for it. */
export interface ResourceRecord {
  id: string;
  instanceId: string;
  poolId: string;
  /** The resource kind (`openrouter`, ...). */
  kind: string;
  /** The name the vendor knows it by (owner id, pool, environment, instance id). */
  name: string;
  state: ResourceState;
  /** The vendor's id (OpenRouter: the key's hash); null until the create's answer is recorded. */
  ref: string | null;
  /** Spending limit and usage in USD as last reported by the vendor; null when unknown or none. */
  limit: number | null;
  usage: number | null;
  usageAt: Date | null;
  /** Why the last create or delete failed. */
  error: string | null;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | null;
}

export interface NewResource {
  id: string;
  instanceId: string;
  poolId: string;
  kind: string;
  name: string;
}

/** What the resource reconciler needs to judge the vendor's entries of one instance. */
export interface ResourceOwnership {
  instanceId: string;
  /** The instance row exists, is not dead and not deleted. */
  instanceLive: boolean;
  /** Its resources of the kind asked about that are not deleted. */
  resources: ResourceRecord[];
}

/** Resources not yet deleted, per pool, kind and state (metrics of spend). */
export interface ResourceTotals {
  poolId: string;
  kind: string;
  state: ResourceState;
  count: number;
  /** Sums over the rows that report one (USD). */
  usage: number;
  limit: number;
}

// ---- operators' operations on claimed agents (issue 11: release, upgrade; migration 0010) ----

export type InstanceOperationKind = "release" | "upgrade";

/** Takes the row for an operation: conditional on all of it in one statement. */
export interface BeginOperation {
  id: string;
  kind: InstanceOperationKind;
  /** The operation's fencing token: its later writes are conditional on it. */
  token: string;
  /** How long the hold lasts (database clock) before another operation may take the row. */
  ttlMs: number;
  /** Statuses the row must be in. */
  from: readonly InstanceStatus[];
  /** A protected row is refused. */
  refuseProtected: boolean;
}

/** What the row held when an operation could not take it (for a clear refusal). */
export type BeginOperationResult = { kind: "begun"; instance: InstanceRecord } | { kind: "refused"; instance: InstanceRecord | null };

export type UpgradeJobScope = "instance" | "ids" | "all";
export type UpgradeItemState = "pending" | "running" | "upgraded" | "failed" | "skipped";

export interface UpgradeItemRecord {
  instanceId: string;
  position: number;
  state: UpgradeItemState;
  /** The template hash the instance had when the job was asked for. */
  fromHash: string | null;
  /** The template hash it was upgraded to (once upgraded). */
  toHash: string | null;
  /** Why it was skipped or failed, or what happened. */
  detail: string | null;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface UpgradeJobRecord {
  id: string;
  poolId: string;
  /** The pool's template hash when the job was asked for. */
  templateHash: string;
  scope: UpgradeJobScope;
  state: "running" | "done";
  /** The process running it (for people). */
  runner: string;
  heartbeatAt: Date;
  /** Times another runner took it over after its runner stopped (a restart, a dead replica). */
  resumed: number;
  createdAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
  items: UpgradeItemRecord[];
}

export interface NewUpgradeJob {
  id: string;
  poolId: string;
  templateHash: string;
  scope: UpgradeJobScope;
  runner: string;
  runnerToken: string;
  items: ReadonlyArray<{ instanceId: string; state: "pending" | "skipped"; fromHash: string | null; detail: string | null }>;
}

/** A running job as its runner holds it: every write of the runner is fenced on `runnerToken`. */
export interface HeldUpgradeJob {
  id: string;
  runnerToken: string;
}

/** Instances of a pool per template, runtime and status (the versions view). */
export interface VersionCount {
  templateHash: string | null;
  runtimeType: string | null;
  runtimeVersion: string | null;
  status: InstanceStatus;
  count: number;
}

export interface Store {
  readonly backend: "pglite" | "postgres";
  /** SQL statements sent since open (benchmarks report statements per tick). */
  readonly statementCount: number;
  /** Rollouts of pools' templates (issue 11; src/db/rollouts.ts). */
  readonly rollouts: RolloutStore;

  /** One trivial statement: resolves when the database answers (readiness). */
  ping(): Promise<void>;

  /**
   * The deployment's owner id: recorded on first start (`candidate` is used only then) and the same
   * for every replica and restart after.
   */
  ensureOwnerId(candidate: string): Promise<string>;
  /** The deployment's webhook path secret: recorded by the first caller (`candidate`), then the same. */
  ensureWebhookSecret(candidate: string): Promise<string>;

  /** Creates a pool with default settings, or updates its sizes only (tests and single-pool set-ups). */
  upsertPool(pool: { id: string; minIdle: number; maxTotal: number }): Promise<PoolRecord>;
  /**
   * Writes a pool's settings (creating it, or bringing a retired one back). With `expectHash`, only
   * if the pool's template hash is still that (a concurrent change wins, this one writes nothing:
   * null).
   */
  savePool(pool: PoolWrite, opts?: { expectHash?: string }): Promise<PoolRecord | null>;
  /** Deletes a pool that holds no instance (its row is kept, retired). False when it holds some. */
  retirePool(id: string): Promise<boolean>;
  /** A pool, retired or not. */
  getPool(id: string): Promise<PoolRecord | null>;
  /** Records the foreign resources a pass saw (the lease holder's, fenced on its term). */
  recordForeignResources(resources: readonly ForeignResource[], fence?: Lease): Promise<void>;
  /** What the lease holder last recorded of other owners' resources. */
  foreignResources(): Promise<ForeignResource[]>;
  /** Pools that are not retired, by id. */
  listPools(): Promise<PoolRecord[]>;

  /** Records intent: the row (status `starting`) is written BEFORE the provider is asked to create. */
  insertInstance(input: NewInstance): Promise<InstanceRecord>;
  /**
   * insertInstance, unless the pool already has `maxLive` instances that are not dead, or (with
   * `minIdle`) `minIdle` idle and starting ones: then null. Counting and inserting happen under one
   * per-pool advisory lock, so creates decided by different replicas, or by a pass and an
   * operator's "add" at once, never take the pool past its limits (seed-system §8 #968).
   */
  insertInstanceWithin(input: NewInstance, limits: InsertLimits, fence?: Lease): Promise<InstanceRecord | null>;
  /** Fills in what the provider answered to a create (ref, url, deploy status); false when fenced out. */
  setProviderRef(id: string, ref: string, url: string | null, deployStatus: string | null, fence?: Lease): Promise<boolean>;
  getInstance(id: string): Promise<InstanceRecord | null>;
  /**
   * Instances of a pool (null: of every pool), oldest first; deleted ones only when asked. `lean`:
   * without the heavy claim fields a reconcile pass never reads (instructions, claim metadata,
   * profile image come back null), so a pass at 10,000 instances does not read megabytes of text.
   */
  listInstances(poolId: string | null, opts?: { includeDeleted?: boolean; lean?: boolean }): Promise<InstanceRecord[]>;
  /** Marks an instance protected or not (bulk operations and claims leave protected ones alone). */
  setProtected(id: string, value: boolean): Promise<InstanceRecord | null>;
  /** Count per status of the pool's instances that are not deleted. */
  countByStatus(poolId: string): Promise<StatusCounts>;
  /**
   * Slots the pool holds against max total: rows whose provider resource may still exist (not
   * deleted, not seen gone), whatever their status: a dead row whose delete has not landed still
   * runs at the provider.
   */
  occupiedSlots(poolId: string): Promise<number>;
  /** The row (not deleted) that knows this provider resource, by ref or by our instance id. */
  rowForResource(ref: string, instanceId: string | null): Promise<{ id: string; status: InstanceStatus } | null>;

  /**
   * Writes a pass's observations in one statement per chunk; status changes are checked and logged.
   * With `fence`, nothing is written unless the lease term still holds (same statement).
   */
  applyObservations(changes: readonly ObservationChange[], fence?: Lease): Promise<ApplyResult>;
  /**
   * One conditional status change (claim path, sweeper, operator actions): applied only when the
   * row is in `from` and the edge is allowed for `actor`. Returns the updated row, or null when
   * the row was not in `from`. Throws INVALID_TRANSITION for an edge the table does not allow.
   */
  transition(req: TransitionRequest): Promise<InstanceRecord | null>;
  /**
   * Marks the provider resource deleted (row kept for the event log). Only a `dead` row: the delete
   * was justified by that status, and a row that moved meanwhile is not touched. False when not written.
   */
  markDeleted(id: string, fence?: Lease): Promise<boolean>;
  /**
   * `claiming` rows of the pool whose attempt is past its deadline plus `marginMs`, judged by the
   * database clock (never the process clock), oldest deadline first.
   */
  staleClaims(poolId: string | null, marginMs: number, limit: number): Promise<InstanceRecord[]>;
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
   * `succeeded`: here is the first result. A running record is taken over only once its deadline
   * (database clock) is `takeoverMarginMs` past: its run can no longer write.
   */
  beginIdempotentClaim(req: IdempotencyBegin): Promise<IdempotentClaimState>;
  /** Records the result; conditional on `attempt` still running the key. False when it was not. */
  finishIdempotentClaim(poolId: string, key: string, attempt: string, instanceId: string, result: Record<string, unknown>): Promise<boolean>;
  /** Forgets a key whose claim failed, so that a retry tries again; conditional on `attempt`. */
  abandonIdempotentClaim(poolId: string, key: string, attempt: string): Promise<void>;

  /**
   * Joins the queues of waiting claims of the pools (migration 0013): under a per-pool lock,
   * deletes the pools' expired waiters, refuses when a queue is full, else takes the next ticket
   * and writes one row per pool.
   */
  joinClaimQueue(req: QueueJoin): Promise<QueueJoinResult>;
  /**
   * Renews the rows of these tickets that are still live: expires_at = now() + ttlMs. Returns the
   * tickets renewed; a ticket missing from it has lapsed (or was served or left): its place is gone.
   */
  renewClaimWaiters(tickets: readonly number[], ttlMs: number): Promise<number[]>;
  /** Removes a waiter from every queue, conditional on its ticket. False when it held no row. */
  leaveClaimQueue(ticket: number): Promise<boolean>;
  /** Live waiters per pool (pools without any are left out). */
  claimQueueLengths(): Promise<Array<{ poolId: string; waiting: number }>>;

  /**
   * Takes the named lease for `holder` for `ttlMs` (database clock), or renews it when `holder`
   * holds it. Returns the lease with its term (a new term whenever it changes hands or had expired),
   * or null when another holder has it.
   */
  acquireLease(name: string, holder: string, ttlMs: number): Promise<Lease | null>;
  /** Extends a lease still held in the same term and not expired; false when it was lost. */
  renewLease(lease: Lease, ttlMs: number): Promise<boolean>;
  /** Lets the lease expire now (the term is kept, so the next holder gets a new one). */
  releaseLease(lease: Lease): Promise<void>;
  /** The database's clock (`now()`): passes judge row ages against it, not the process clock. */
  databaseNow(): Promise<Date>;

  /**
   * Counts one hit of a fixed window shared by every replica; returns the hits in the current
   * window (this one included) and when it resets.
   */
  hitRateLimit(key: string, windowMs: number): Promise<{ hits: number; resetAt: Date }>;
  /** The current window of a key without counting a hit (null when none is running). */
  peekRateLimit(key: string): Promise<{ hits: number; resetAt: Date } | null>;
  /** Forgets a key's window (a successful login clears its failures). */
  clearRateLimit(key: string): Promise<void>;

  /** Retention, in batches so no statement holds locks for long. Each returns the rows deleted. */
  pruneEvents(olderThanMs: number, batch: number): Promise<number>;
  /** Idempotency records older than this whose instance is not live any more (or that never got one). */
  pruneClaimRecords(olderThanMs: number, batch: number): Promise<number>;
  /** Rows deleted at the provider this long ago, once no event or claim record refers to them. */
  pruneDeletedInstances(olderThanMs: number, batch: number): Promise<number>;
  /** Rate-limit windows that ended. */
  pruneRateLimits(batch: number): Promise<number>;
  /** Pool history minutes older than this (database clock). */
  prunePoolHistory(olderThanMs: number, batch: number): Promise<number>;

  // ---- pool history (issue 13; migration 0012) ----

  /**
   * Adds one replica's measurements to the pools' minute buckets in one statement: counters add up
   * (replicas never overwrite each other), snapshot columns are replaced when given. At most one
   * row per pool per call.
   */
  addPoolHistory(rows: readonly HistoryWrite[]): Promise<void>;
  /** A pool's minutes from `sinceMs` ago to now (database clock), oldest first, and the database's now. */
  poolHistory(poolId: string, sinceMs: number): Promise<{ rows: HistoryRow[]; now: Date }>;
  /**
   * Retires (idle → dead) the pool's oldest unprotected idle instance while more than `keepIdle`
   * are idle, counted in the same statement, fenced on the lease (a demand pool's scale-down).
   * Returns its id, or null when none was retired.
   */
  retireSurplusIdle(poolId: string, keepIdle: number, reason: string, fence?: Lease): Promise<string | null>;
  /** Claims that wanted an instance in the pool's last `windowMs` (the planner's arrival rate). */
  claimArrivals(poolId: string, windowMs: number): Promise<{ arrivals: number; oldestMinute: Date | null; now: Date }>;

  // ---- per-instance resources (issue 12) ----

  /**
   * Records intent: the resource row (`creating`) is written BEFORE the vendor is asked to create it,
   * and only while its instance is in `instanceStatuses` (default: `starting`, a create) and not
   * deleted, and (with `fence`) the lease term holds, in the same statement. Null when it was not
   * written (the instance moved on, the term is gone, or it has one of the kind): then nothing may
   * be created for it.
   */
  insertResourceIntent(input: NewResource, fence?: Lease, instanceStatuses?: readonly InstanceStatus[]): Promise<ResourceRecord | null>;
  /**
   * Records the vendor's answer to a create: its ref, and its limit/usage. `creating` → `ready`; a row
   * released meanwhile (`deleting`) keeps its state but learns the ref, so its delete can find it.
   * Null when the row is deleted or already has a ref: the caller must delete what it just made.
   */
  recordResourceCreated(id: string, ref: string, limit: number | null, usage: number | null): Promise<ResourceRecord | null>;
  /** A create that failed: `creating` → `deleting` with the error (the vendor may have made it anyway). */
  markResourceFailed(id: string, error: string): Promise<boolean>;
  /** Every resource of the instance that is not deleted goes to `deleting`; returns them. */
  releaseResources(instanceId: string): Promise<ResourceRecord[]>;
  /** The vendor confirmed the delete (or never had it): the row is `deleted`, kept for a while. */
  markResourceDeleted(id: string): Promise<boolean>;
  /** Resources that are not deleted, of one instance or one pool (or all), oldest first. */
  listResources(filter?: { instanceId?: string; poolId?: string }): Promise<ResourceRecord[]>;
  /**
   * Resources with a known ref that must go: `deleting`, or whose instance is not live (dead, deleted
   * or pruned). Oldest first, at most `limit`.
   */
  resourcesToRelease(limit: number): Promise<ResourceRecord[]>;
  /**
   * Resources without a ref (their create's answer never recorded) whose instance is not live, or
   * that are `deleting`, created more than `olderThanMs` ago by the database clock: the reconciler
   * resolves them against the vendor's listing.
   */
  strandedResources(kind: string, olderThanMs: number, limit: number): Promise<ResourceRecord[]>;
  /** For each instance id: is it live, and its resources of `kind` that are not deleted. */
  resourceOwnership(kind: string, instanceIds: readonly string[]): Promise<ResourceOwnership[]>;
  /** Writes limits and usage the vendor reported, in one statement; returns the rows written. */
  recordResourceUsage(updates: ReadonlyArray<{ id: string; limit: number | null; usage: number | null }>): Promise<number>;
  /** Resources not deleted, counted and summed per pool, kind and state. */
  resourceTotals(): Promise<ResourceTotals[]>;
  /** Deleted resource rows older than this, in batches. */
  pruneDeletedResources(olderThanMs: number, batch: number): Promise<number>;
  /**
   * An event that changes no status (an instance calling its own routes), on a live row only:
   * from = to = its current status. False when the row is not live.
   */
  recordInstanceEvent(instanceId: string, actor: TransitionActor, reason: string): Promise<boolean>;

  // ---- operators' operations on claimed agents (issue 11: release, upgrade) ----

  /**
   * Takes the row for an operation, in one statement: only when it is in `from`, not deleted, not
   * protected (when asked), and no other operation holds it (or that one's deadline has passed).
   */
  beginOperation(req: BeginOperation): Promise<BeginOperationResult>;
  /**
   * Ends an operation, conditional on its token; with `templateHash`, records what the instance now
   * runs (an upgrade), on a row that is still live. False when the row is no longer the operation's.
   */
  endOperation(id: string, token: string, set?: { templateHash?: string }): Promise<boolean>;
  /** Instances of a pool (not dead, not deleted) counted by template, runtime type, version and status. */
  versionCounts(poolId: string): Promise<VersionCount[]>;

  /** Records a job and its items (the runner holds it from the start). */
  createUpgradeJob(job: NewUpgradeJob): Promise<UpgradeJobRecord>;
  getUpgradeJob(id: string): Promise<UpgradeJobRecord | null>;
  /** Latest jobs of a pool (null: of every pool), newest first, with their items. */
  listUpgradeJobs(poolId: string | null, limit: number): Promise<UpgradeJobRecord[]>;
  /** Running jobs this runner holds (by token), oldest first. */
  heldUpgradeJobs(runner: string): Promise<HeldUpgradeJob[]>;
  /**
   * Takes over running jobs whose heartbeat is older than `staleMs` (database clock), at most
   * `limit`: a new runner and token, `resumed` + 1, their running items back to pending and the
   * instance holds of their earlier runner released, all in one statement.
   */
  takeOverStaleUpgradeJobs(runner: string, runnerToken: string, staleMs: number, limit: number): Promise<HeldUpgradeJob[]>;
  /** Renews the job's heartbeat; false when the job is no longer this token's (or is done). */
  heartbeatUpgradeJob(job: HeldUpgradeJob): Promise<boolean>;
  /** Moves one item, fenced on the job's token; false when the job is no longer the caller's. */
  updateUpgradeItem(
    job: HeldUpgradeJob,
    instanceId: string,
    patch: { state: UpgradeItemState; detail?: string | null; toHash?: string | null },
  ): Promise<boolean>;
  /** Marks the job done (fenced on its token). */
  finishUpgradeJob(job: HeldUpgradeJob): Promise<boolean>;

  /** Sends a hint to every replica (this one included). Best effort: a hint may be lost. */
  publishHint(hint: PoolHint): Promise<void>;
  /** Receives hints; returns the unsubscribe. */
  subscribeHints(fn: (hint: PoolHint) => void): Promise<() => Promise<void>>;

  /** Closes the connection(s) and, for PGlite, releases the data-dir lock. */
  close(): Promise<void>;
}
