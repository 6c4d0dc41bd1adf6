/**
 * The claim: hand a client exactly one live, provisioned instance.
 *
 * 1. Idempotency: a retried request with the same key gets the first result (409 while it runs).
 *    The key's record is fenced on this run's token and taken over only after the claim's overall
 *    deadline has passed by the database clock; the key is also written on the instance, where a
 *    unique index allows one live instance per key whatever happens to the record.
 * 2. Pick: one statement moves the newest idle instance to `claiming` (SKIP LOCKED) and writes a
 *    fresh attempt token and the attempt's deadline. A hint tells the replica that holds the
 *    reconciler lease to replenish; the claim path never calls into the reconciler.
 * 3. Provision through the instance protocol (the claim path makes no provider API call).
 * 4. Every later write of the attempt (complete, recover) is conditional on its token: if the
 *    sweeper judged the attempt dead meanwhile, the write changes nothing and the claim reports
 *    what really happened. A failed instance is reset (clean → idle, else crashed) and another is
 *    tried while the deadline allows.
 *
 * Before fencing, a sweep acting on an old snapshot could move a NEWER claim's row back to idle
 * and clear it, and the newer claim's recovery then reset the agent it had just provisioned
 * (issue 8's reproduction, a regression test in claim.test.ts).
 */
import { randomId, type Clock } from "../clock.ts";
import type { ClaimPickResult, InstanceRecord, PoolRecord, QueuePlace, Store } from "../db/store.ts";
import { joinUrlHostAllowed } from "./join-url.ts";
import { PoolError } from "../errors.ts";
import { factoryReset, type InstanceTarget, type ProvisionRequest, type ProvisionResult, type RuntimeStatus } from "../instance/client.ts";
import type { Logger } from "../logger.ts";
import { claimReport, type ClaimReport } from "../pool/history-recorder.ts";
import { ClaimWaitQueue } from "./wait-queue.ts";

export interface ProvisionClient {
  provision(target: InstanceTarget, req: ProvisionRequest, timeoutMs: number): Promise<ProvisionResult>;
  reset(target: InstanceTarget, timeoutMs: number): Promise<unknown>;
  status(target: InstanceTarget, timeoutMs: number): Promise<RuntimeStatus>;
}

export interface ClaimRequest {
  /** Take from this pool (by id). */
  pool?: string | undefined;
  /** Take from a pool with this runtime label ("openclaw", "hermes", …); unused when `pool` is given. */
  runtime?: string | undefined;
  /** Only an instance of its pool's current template (not one left from before a rollout). */
  fresh?: boolean | undefined;
  /** Default: the pool's claim default, else the deployment's. */
  agentName?: string | undefined;
  instructions?: string | undefined;
  joinUrl?: string | undefined;
  profileImage?: string | undefined;
  metadata?: Record<string, unknown> | undefined;
  idempotencyKey?: string | undefined;
  /**
   * Wait up to this long for an idle instance instead of failing at once: the claim joins its
   * pools' queue and is served first come, first served across replicas (wait-queue.ts).
   */
  waitMs?: number | undefined;
  /** Aborted when the client went away: a waiting claim gives its place in the queue up. */
  signal?: AbortSignal | undefined;
  /** Where the claim came from (recorded with it; the earlier system's web proxy sends "landing"). */
  source?: string | undefined;
}

export interface ClaimResponse {
  inviteUrl: string | null;
  conversationId: string | null;
  instanceId: string;
  joined: boolean;
  status: "claimed" | "pending_acceptance";
  agentName: string;
  /** The pool the instance came from, and its runtime label. */
  pool: string;
  runtime: string;
}

/** What a claim gets when neither its body nor its pool says (CLAIM_DEFAULT_*, JOIN_URL_HOSTS). */
export interface ClaimDefaults {
  agentName: string;
  instructions: string;
  joinUrlHosts: readonly string[] | null;
}

export const DEFAULT_CLAIM_DEFAULTS: ClaimDefaults = {
  agentName: "Assistant",
  instructions: "You are a helpful AI assistant.",
  joinUrlHosts: null,
};

export type ClaimOutcome = "claimed" | "pending_acceptance" | "pool_empty" | "already_joined" | "in_progress" | "replayed" | "failed" | "invalid";

export interface ClaimServiceOptions {
  store: Store;
  client: ProvisionClient;
  clock: Clock;
  logger: Logger;
  defaultPool: string;
  /** This process, recorded on the claim for people reading the row. */
  owner: string;
  provisionTimeoutMs: number;
  /** Timeout of the reset, and of the status call after it, when a provision failed. Default 15 s. */
  resetTimeoutMs?: number;
  /**
   * Overall deadline of one claim, waiting included: no attempt starts that could not end by it,
   * and the idempotency record is taken over only once it has passed (plus `sweepMarginMs`).
   * Default: max wait + 2 full attempts.
   */
  claimDeadlineMs?: number;
  /** Margin past a deadline before the sweeper (rows) or a retry (idempotency records) takes over. */
  sweepMarginMs?: number;
  maxAttempts?: number;
  maxWaitMs?: number;
  /**
   * The queue waiting claims join (one per process, shared by its claim services). Default: one of
   * this service's own, re-checking every `waitPollMs`.
   */
  queue?: ClaimWaitQueue;
  /**
   * How often a waiting claim looks again WITHOUT a hint (a lost notification): waiters are woken
   * by the change hint of an instance turning idle, not by polling. Default 5 s.
   */
  waitPollMs?: number;
  /** Called after each claim with its outcome, duration and pool (metrics). */
  onOutcome?: (outcome: ClaimOutcome, seconds: number, provisionSeconds: number, pool: string) => void;
  /**
   * Told how each claim was served (warm, after waiting, pool empty) and how long it waited: the
   * pool's history and warm-hit metrics (issue 13). Called after `onOutcome`; must not throw.
   */
  recorder?: (report: ClaimReport) => void;
  /** Seconds a client should wait before retrying an empty pool. */
  retryAfterSeconds?: (poolId: string) => Promise<number>;
  /** Fencing tokens (tests make them readable). */
  newAttemptId?: () => string;
  /** Monotonic milliseconds for the deadline (never the wall clock: skew must not matter). */
  monotonic?: () => number;
  /** The deployment's claim defaults (a pool's own win). */
  defaults?: ClaimDefaults;
  /** How long pool settings are cached on the claim path. Default 1 s. */
  poolCacheMs?: number;
}

/** A claim whose pools, defaults and allow-list are resolved. */
interface ResolvedClaim {
  pools: PoolRecord[];
  agentName: string;
  instructions: string;
}

/** An attempt is not started with less than this left for its provision call (or the whole timeout, if shorter). */
const MIN_PROVISION_MS = 1_000;

export class ClaimService {
  readonly #o: ClaimServiceOptions;
  #pools: { at: number; list: PoolRecord[] } | null = null;
  readonly #mono: () => number;
  readonly #newAttempt: () => string;
  readonly #queue: ClaimWaitQueue;

  constructor(opts: ClaimServiceOptions) {
    this.#o = opts;
    this.#queue = opts.queue ?? new ClaimWaitQueue({ store: opts.store, logger: opts.logger, owner: opts.owner, recheckMs: opts.waitPollMs ?? 5_000 });
    this.#mono = opts.monotonic ?? (() => performance.now());
    this.#newAttempt = opts.newAttemptId ?? (() => `a-${randomId(16)}`);
  }

  /** The budget of one attempt after its provision: a reset and a status call. */
  get #recoveryMs(): number {
    return 2 * (this.#o.resetTimeoutMs ?? 15_000);
  }

  /** The overall deadline of a claim (see ClaimServiceOptions.claimDeadlineMs). */
  get deadlineMs(): number {
    const o = this.#o;
    return o.claimDeadlineMs ?? (o.maxWaitMs ?? 60_000) + 2 * (o.provisionTimeoutMs + this.#recoveryMs);
  }

  async claim(req: ClaimRequest): Promise<ClaimResponse> {
    const t0 = performance.now();
    const timing: ClaimTiming = { provision: 0 };
    const state: { outcome: ClaimOutcome; pool: string } = { outcome: "failed", pool: req.pool ?? req.runtime ?? this.#o.defaultPool };
    try {
      const res = await this.#claim(req, timing, (o) => (state.outcome = o));
      if (state.outcome !== "replayed") state.outcome = res.status;
      state.pool = res.pool;
      return res;
    } catch (err) {
      if (err instanceof PoolError) {
        state.outcome =
          err.code === "POOL_EMPTY" || err.code === "QUEUE_FULL"
            ? "pool_empty"
            : err.code === "ALREADY_JOINED"
              ? "already_joined"
              : err.code === "CLAIM_IN_PROGRESS"
                ? "in_progress"
                : err.code === "POOL_NOT_FOUND" || err.code === "JOIN_URL_NOT_ALLOWED"
                  ? "invalid"
                  : "failed";
      }
      throw err;
    } finally {
      const seconds = (performance.now() - t0) / 1000;
      this.#o.onOutcome?.(state.outcome, seconds, timing.provision / 1000, state.pool);
      if (this.#o.recorder) {
        try {
          // A claim by runtime label that found its pools empty is counted on the first of them.
          const pool = state.outcome === "pool_empty" ? (timing.pool ?? state.pool) : state.pool;
          this.#o.recorder(claimReport(state.outcome, pool, seconds, timing, this.#mono()));
        } catch (err) {
          this.#o.logger.warn({ err: (err as Error).message }, "could not record the claim for the pool's history");
        }
      }
    }
  }

  async #claim(req: ClaimRequest, timing: ClaimTiming, mark: (o: ClaimOutcome) => void): Promise<ClaimResponse> {
    const o = this.#o;
    const resolved = await this.#resolve(req);
    const poolId = resolved.pools[0]!.id;
    timing.pool = poolId;
    const deadline = this.#mono() + this.deadlineMs;

    const key = req.idempotencyKey;
    // This run's token on the key's record: finish and abandon are conditional on it.
    const run = this.#newAttempt();
    if (key !== undefined) {
      const state = await o.store.beginIdempotentClaim({
        poolId,
        key,
        owner: o.owner,
        attempt: run,
        deadlineMs: this.deadlineMs,
        takeoverMarginMs: o.sweepMarginMs ?? 30_000,
      });
      if (state.state === "running") throw new PoolError("CLAIM_IN_PROGRESS");
      if (state.state === "succeeded") {
        mark("replayed");
        return state.result as unknown as ClaimResponse;
      }
    }
    let res: ClaimResponse;
    try {
      res = await this.#pickAndProvision(resolved, req, deadline, timing, mark);
    } catch (err) {
      if (key !== undefined) await o.store.abandonIdempotentClaim(poolId, key, run).catch(() => undefined);
      throw err;
    }
    if (key !== undefined) {
      // The agent is the client's now, whatever happens to the record: a failure here must not
      // turn a claim that succeeded into a 500 while the agent keeps its slot. A retry that finds
      // the record unfinished is answered from the instance, which carries the key.
      try {
        const finished = await o.store.finishIdempotentClaim(poolId, key, run, res.instanceId, res as unknown as Record<string, unknown>);
        if (!finished)
          o.logger.warn({ instanceId: res.instanceId }, "idempotency record was taken over before this claim finished; the instance carries the key");
      } catch (err) {
        o.logger.error({ err: (err as Error).message, instanceId: res.instanceId }, "could not record the claim's result under its idempotency key");
      }
    }
    return res;
  }

  /** Pools (cached briefly: the claim path must not read settings every time). */
  async #activePools(): Promise<PoolRecord[]> {
    const now = this.#mono();
    if (!this.#pools || now - this.#pools.at > (this.#o.poolCacheMs ?? 1_000)) this.#pools = { at: now, list: await this.#o.store.listPools() };
    return this.#pools.list;
  }

  /** Forgets cached pool settings (after this process changed a pool). */
  invalidatePools(): void {
    this.#pools = null;
  }

  /**
   * Which pools the claim may take from (`pool` by id, else every pool of the `runtime` label,
   * else the default pool), its agent name and instructions (the body's, else the pool's defaults,
   * else the deployment's), and whether its invite link's host is allowed. Refused before any
   * instance is picked: a link of the wrong network would spend one.
   */
  async #resolve(req: ClaimRequest): Promise<ResolvedClaim> {
    const all = await this.#activePools();
    let pools: PoolRecord[];
    if (req.pool !== undefined) {
      pools = all.filter((p) => p.id === req.pool);
      if (pools.length === 0) throw new PoolError("POOL_NOT_FOUND", `No pool named "${req.pool}".`, { pool: req.pool });
    } else if (req.runtime !== undefined) {
      pools = all.filter((p) => p.runtime === req.runtime);
      if (pools.length === 0) {
        const labels = [...new Set(all.map((p) => p.runtime))].sort();
        throw new PoolError("POOL_NOT_FOUND", `No pool runs the runtime "${req.runtime}"; available: ${labels.join(", ") || "none"}.`, {
          runtime: req.runtime,
          available: labels,
        });
      }
    } else {
      pools = all.filter((p) => p.id === this.#o.defaultPool);
      if (pools.length === 0) throw new PoolError("POOL_NOT_FOUND", `No pool named "${this.#o.defaultPool}".`, { pool: this.#o.defaultPool });
    }
    const first = pools[0]!;
    const defaults = this.#o.defaults ?? DEFAULT_CLAIM_DEFAULTS;
    const hosts = first.joinUrlHosts ?? defaults.joinUrlHosts;
    if (req.joinUrl !== undefined && !joinUrlHostAllowed(req.joinUrl, hosts)) {
      let host = "";
      try {
        host = new URL(req.joinUrl).hostname;
      } catch {
        /* reported below */
      }
      throw new PoolError(
        "JOIN_URL_NOT_ALLOWED",
        `This pool does not accept invite links of ${host || "that host"}; it accepts links of ${hosts!.join(", ")}.`,
        { host },
      );
    }
    return {
      pools,
      agentName: req.agentName ?? first.claimAgentName ?? defaults.agentName,
      instructions: req.instructions ?? first.claimInstructions ?? defaults.instructions,
    };
  }

  async #pickAndProvision(
    resolved: ResolvedClaim,
    req: ClaimRequest,
    deadline: number,
    timing: ClaimTiming,
    mark: (o: ClaimOutcome) => void,
  ): Promise<ClaimResponse> {
    const o = this.#o;
    const maxAttempts = o.maxAttempts ?? 3;
    const waitMs = Math.min(Math.max(0, req.waitMs ?? 0), o.maxWaitMs ?? 60_000);
    const waitUntil = Math.min(this.#mono() + waitMs, deadline);
    const tried: string[] = [];
    const budget = () => Math.min(o.provisionTimeoutMs, deadline - this.#mono() - this.#recoveryMs);
    // Once served from the queue, a retry after a failed provision keeps the claim's place.
    let place: QueuePlace | undefined;

    while (tried.length < maxAttempts) {
      // No attempt starts that could not end (provision, then reset and status) by the deadline.
      let provisionMs = budget();
      if (provisionMs < Math.min(MIN_PROVISION_MS, o.provisionTimeoutMs)) break;
      const attempt = this.#newAttempt();
      const pickAt = (queue: QueuePlace | undefined): Promise<ClaimPickResult> =>
        o.store.claimIdle({
          poolIds: resolved.pools.map((p) => p.id),
          ...(req.fresh ? { fresh: true } : {}),
          owner: o.owner,
          attempt,
          attemptTtlMs: Math.max(0, budget()) + this.#recoveryMs,
          claimKey: req.idempotencyKey ?? null,
          source: req.source ?? null,
          agentName: resolved.agentName,
          instructions: resolved.instructions,
          joinUrl: req.joinUrl ?? null,
          profileImage: req.profileImage ?? null,
          metadata: req.metadata ?? null,
          exclude: tried,
          ...(queue ? { queue } : {}),
        });
      let pick = await pickAt(place);
      // The pools' history (issue 13): a claim that found none idle at its first look was not warm.
      if (pick.kind === "empty" && tried.length === 0) timing.firstEmptyAt ??= this.#mono();
      if (pick.kind === "empty" && tried.length === 0 && this.#mono() < waitUntil) {
        // Wait in the pools' queue for this claim's turn (woken by hints, not by polling).
        const waited = await this.#queue.wait({
          poolIds: resolved.pools.map((p) => p.id),
          timeoutMs: waitUntil - this.#mono(),
          signal: req.signal,
          pick: pickAt,
        });
        if (waited.kind === "full") {
          const retryAfter = await this.#retryAfter(resolved);
          throw new PoolError("QUEUE_FULL", `${waited.waiting} claims are already waiting for pool "${waited.poolId}"; try again later.`, {
            retryAfter,
            pool: waited.poolId,
            waiting: waited.waiting,
          });
        }
        if (waited.kind === "gave_up" && waited.why === "aborted")
          throw new PoolError("POOL_EMPTY", "The client went away while waiting; its place in the queue was given up.", { retryAfter: 0 });
        if (waited.kind === "turn") {
          pick = waited.pick;
          place = { ticket: waited.ticket, serve: false };
          provisionMs = Math.max(budget(), Math.min(MIN_PROVISION_MS, o.provisionTimeoutMs));
        }
      }
      if (pick.kind === "already_joined") {
        throw new PoolError("ALREADY_JOINED", `Instance ${pick.instanceId} of this pool has already joined, or is joining, that conversation.`, {
          instanceId: pick.instanceId,
        });
      }
      if (pick.kind === "key_taken") {
        // An earlier run of this claim (same idempotency key) holds an instance: its answer is ours.
        const inst = pick.instance;
        if (inst.status === "claimed" || inst.status === "pending_acceptance") {
          mark("replayed");
          return responseFromRow(inst, this.#runtimeOf(resolved, inst.poolId));
        }
        throw new PoolError("CLAIM_IN_PROGRESS");
      }
      if (pick.kind === "empty") {
        if (tried.length > 0) break;
        throw new PoolError("POOL_EMPTY", undefined, { retryAfter: await this.#retryAfter(resolved) });
      }
      const inst = pick.instance;
      timing.pickedAt ??= this.#mono();
      tried.push(inst.id);
      // A hint to the replica holding the lease: replenish (and rename this agent's resource).
      o.store
        .publishHint({ pool: inst.poolId, kind: "claimed", instanceId: inst.id })
        .catch((err) => o.logger.warn({ err: (err as Error).message }, "could not publish the claim hint; the next pass replenishes"));

      const t = performance.now();
      let res: ProvisionResult;
      try {
        if (!inst.url) throw new Error("instance has no url");
        res = await o.client.provision(
          { url: inst.url, gatewayToken: inst.gatewayToken },
          { agentName: resolved.agentName, instructions: resolved.instructions, joinUrl: req.joinUrl, profileImage: req.profileImage, metadata: req.metadata },
          provisionMs,
        );
        if (res.status !== "pending_acceptance" && !res.conversationId) throw new Error("provision answered without a conversation id");
      } catch (err) {
        timing.provision += performance.now() - t;
        const msg = (err as Error).message;
        o.logger.warn({ instanceId: inst.id, err: msg }, "provision failed; resetting the instance and trying another");
        await this.#recover(inst, attempt, msg);
        continue;
      }
      timing.provision += performance.now() - t;
      const done = await this.#complete(inst, attempt, req, res, resolved);
      if (done) {
        // The agent is handed out: the lease holder renames its resource to show who it is.
        o.store.publishHint({ pool: inst.poolId, kind: "bound", instanceId: inst.id }).catch(() => undefined);
        return done;
      }
      o.logger.warn({ instanceId: inst.id }, "the claim attempt was resolved by the sweeper before it completed; trying another instance");
    }
    throw new PoolError("PROVISION_FAILED", `Provisioning failed on ${tried.length} instance(s).`, { attempts: tried.length });
  }

  /** Seconds a client should wait before retrying an empty pool (or a full queue). */
  async #retryAfter(resolved: ResolvedClaim): Promise<number> {
    return this.#o.retryAfterSeconds ? await this.#o.retryAfterSeconds(resolved.pools[0]!.id).catch(() => 30) : 30;
  }

  /**
   * Records the provisioned agent, conditional on this attempt still holding the row. Returns the
   * answer, or null when the attempt lost the row (then nothing was written).
   */
  #runtimeOf(resolved: ResolvedClaim, poolId: string): string {
    return resolved.pools.find((p) => p.id === poolId)?.runtime ?? poolId;
  }

  async #complete(inst: InstanceRecord, attempt: string, req: ClaimRequest, res: ProvisionResult, resolved: ResolvedClaim): Promise<ClaimResponse | null> {
    const o = this.#o;
    const pending = res.status === "pending_acceptance";
    const to = pending ? "pending_acceptance" : "claimed";
    const inviteUrl = res.inviteUrl ?? (req.joinUrl && res.joined ? req.joinUrl : null);
    const row = await o.store.transition({
      id: inst.id,
      from: "claiming",
      to,
      actor: "claim",
      reason: pending ? "join waiting for acceptance" : res.joined ? "joined a conversation" : "created a conversation",
      set: { conversationId: res.conversationId, inviteUrl, claimedAt: o.clock.now() },
      fence: { claimAttempt: attempt },
    });
    if (!row) {
      // The sweeper resolved this attempt meanwhile. If it found the runtime bound to our
      // conversation it kept our token on the row: the claim did succeed. Otherwise the row is no
      // longer ours, and reporting success would hand out an agent bound to nobody.
      const now = await o.store.getInstance(inst.id);
      const ours =
        now !== null &&
        now.claimAttempt === attempt &&
        (now.status === "claimed" || now.status === "pending_acceptance") &&
        (res.conversationId === null || now.conversationId === res.conversationId);
      if (!ours) return null;
      return responseFromRow(now, this.#runtimeOf(resolved, now.poolId));
    }
    return {
      inviteUrl,
      conversationId: res.conversationId,
      instanceId: inst.id,
      joined: res.joined,
      status: to,
      agentName: resolved.agentName,
      pool: inst.poolId,
      runtime: this.#runtimeOf(resolved, inst.poolId),
    };
  }

  /**
   * After a failed provision: factory-reset the instance; clean → idle, otherwise crashed. Either
   * way the claim's fields are cleared: the client's agent lives on another instance (or the client
   * got an error), so this one must not show as that agent, and a crashed instance that never
   * served anyone is cleaned up by the reconciler instead of waiting for an operator. Fenced on the
   * attempt: a recovery that runs late must not reset an instance a newer claim now holds.
   */
  async #recover(inst: InstanceRecord, attempt: string, why: string): Promise<void> {
    const o = this.#o;
    const timeout = o.resetTimeoutMs ?? 15_000;
    // The reset is a side effect the fence on the write below cannot undo: if the sweeper resolved
    // this attempt meanwhile (this process stalled past the deadline) and a newer claim now holds
    // the instance, resetting it would wipe that claim's agent. Look before touching the runtime.
    const now = await o.store.getInstance(inst.id).catch(() => null);
    if (now?.status !== "claiming" || now.claimAttempt !== attempt) {
      o.logger.warn({ instanceId: inst.id }, "the failed claim attempt no longer holds the instance; not resetting it");
      return;
    }
    const { clean } = await factoryReset(o.client, inst, timeout);
    await o.store
      .transition({
        id: inst.id,
        from: "claiming",
        to: clean ? "idle" : "crashed",
        actor: "claim",
        reason: `provision failed (${why.slice(0, 150)}); reset ${clean ? "clean" : "failed"}`,
        set: RELEASED_CLAIM_FIELDS,
        fence: { claimAttempt: attempt },
      })
      .catch((err) => o.logger.error({ err, instanceId: inst.id }, "could not record the failed claim; the sweeper resolves it"));
  }
}

/** When a claim found its pools empty first and when it picked an instance (monotonic ms). */
export interface ClaimTiming {
  provision: number;
  /** The pool the claim resolved to first (its pools' order). */
  pool?: string;
  firstEmptyAt?: number;
  pickedAt?: number;
}

/** What an instance no longer holds once a claim attempt lets go of it (recovery or sweeper). */
export const RELEASED_CLAIM_FIELDS = {
  agentName: null,
  instructions: null,
  joinUrl: null,
  profileImage: null,
  claimMetadata: null,
  claimOwner: null,
  claimStartedAt: null,
  claimAttempt: null,
  claimDeadline: null,
  claimKey: null,
  claimSource: null,
  conversationId: null,
  inviteUrl: null,
} as const;

/** The claim's answer as the row records it (a replay, or an attempt the sweeper found bound). */
export function responseFromRow(row: InstanceRecord, runtime: string): ClaimResponse {
  return {
    pool: row.poolId,
    runtime,
    inviteUrl: row.inviteUrl,
    conversationId: row.conversationId,
    instanceId: row.id,
    joined: row.joinUrl !== null && row.status === "claimed",
    status: row.status === "pending_acceptance" ? "pending_acceptance" : "claimed",
    agentName: row.agentName ?? "",
  };
}
