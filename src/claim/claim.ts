/**
 * The claim: hand a client exactly one live, provisioned instance.
 *
 * 1. Idempotency: a retried request with the same key gets the first result (409 while it runs).
 * 2. Pick: one transaction moves the newest idle instance to `claiming` (SKIP LOCKED), refusing a
 *    join URL another agent of the pool already holds. The reconciler is woken at once to replenish.
 * 3. Provision through the instance protocol (the claim path makes no provider API call).
 * 4. An instance that fails is not the client's problem: reset it (clean → idle, else crashed) and
 *    try another, up to `maxAttempts`. The client sees an error only when the pool is empty or every
 *    try failed.
 */
import type { Clock } from "../clock.ts";
import type { InstanceRecord, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { InstanceTarget, ProvisionRequest, ProvisionResult, RuntimeStatus } from "../instance/client.ts";
import type { Logger } from "../logger.ts";

export interface ProvisionClient {
  provision(target: InstanceTarget, req: ProvisionRequest, timeoutMs: number): Promise<ProvisionResult>;
  reset(target: InstanceTarget, timeoutMs: number): Promise<unknown>;
  status(target: InstanceTarget, timeoutMs: number): Promise<RuntimeStatus>;
}

export interface ClaimRequest {
  pool?: string | undefined;
  agentName: string;
  instructions: string;
  joinUrl?: string | undefined;
  profileImage?: string | undefined;
  metadata?: Record<string, unknown> | undefined;
  idempotencyKey?: string | undefined;
  /** Wait up to this long for an idle instance instead of failing at once. */
  waitMs?: number | undefined;
}

export interface ClaimResponse {
  inviteUrl: string | null;
  conversationId: string | null;
  instanceId: string;
  joined: boolean;
  status: "claimed" | "pending_acceptance";
  agentName: string;
}

export type ClaimOutcome = "claimed" | "pending_acceptance" | "pool_empty" | "already_joined" | "in_progress" | "replayed" | "failed" | "invalid";

export interface ClaimServiceOptions {
  store: Store;
  client: ProvisionClient;
  clock: Clock;
  logger: Logger;
  defaultPool: string;
  /** This process, recorded on the claim for the sweeper. */
  owner: string;
  provisionTimeoutMs: number;
  resetTimeoutMs?: number;
  maxAttempts?: number;
  maxWaitMs?: number;
  /** How often a waiting claim looks again for an idle instance. */
  waitPollMs?: number;
  /** Called when a claim has taken an instance: replenish right away. */
  onPicked?: (poolId: string) => void;
  /** Called after each claim with its outcome and duration (metrics). */
  onOutcome?: (outcome: ClaimOutcome, seconds: number, provisionSeconds: number) => void;
  /** Seconds a client should wait before retrying an empty pool. */
  retryAfterSeconds?: (poolId: string) => Promise<number>;
  /** Background work after a claim (e.g. renaming the provider resource). */
  afterClaim?: (instance: InstanceRecord) => void;
}

export class ClaimService {
  readonly #o: ClaimServiceOptions;
  readonly #knownPools = new Set<string>();

  constructor(opts: ClaimServiceOptions) {
    this.#o = opts;
  }

  async claim(req: ClaimRequest): Promise<ClaimResponse> {
    const t0 = performance.now();
    const timing = { provision: 0 };
    const state: { outcome: ClaimOutcome } = { outcome: "failed" };
    try {
      const res = await this.#claim(req, timing, (o) => (state.outcome = o));
      if (state.outcome !== "replayed") state.outcome = res.status;
      return res;
    } catch (err) {
      if (err instanceof PoolError) {
        state.outcome =
          err.code === "POOL_EMPTY" ? "pool_empty"
          : err.code === "ALREADY_JOINED" ? "already_joined"
          : err.code === "CLAIM_IN_PROGRESS" ? "in_progress"
          : err.code === "POOL_NOT_FOUND" ? "invalid"
          : "failed";
      }
      throw err;
    } finally {
      this.#o.onOutcome?.(state.outcome, (performance.now() - t0) / 1000, timing.provision / 1000);
    }
  }

  async #claim(req: ClaimRequest, timing: { provision: number }, mark: (o: ClaimOutcome) => void): Promise<ClaimResponse> {
    const o = this.#o;
    const poolId = req.pool ?? o.defaultPool;
    await this.#requirePool(poolId);

    const key = req.idempotencyKey;
    if (key !== undefined) {
      const staleAfter = o.provisionTimeoutMs * (o.maxAttempts ?? 3) + 60_000;
      const state = await o.store.beginIdempotentClaim(poolId, key, o.owner, staleAfter);
      if (state.state === "running") throw new PoolError("CLAIM_IN_PROGRESS");
      if (state.state === "succeeded") {
        mark("replayed");
        return state.result as unknown as ClaimResponse;
      }
    }
    try {
      const res = await this.#pickAndProvision(poolId, req, timing);
      if (key !== undefined) await o.store.finishIdempotentClaim(poolId, key, res.instanceId, res as unknown as Record<string, unknown>);
      return res;
    } catch (err) {
      if (key !== undefined) await o.store.abandonIdempotentClaim(poolId, key, o.owner).catch(() => undefined);
      throw err;
    }
  }

  async #requirePool(poolId: string): Promise<void> {
    if (this.#knownPools.has(poolId)) return;
    if (!(await this.#o.store.getPool(poolId))) throw new PoolError("POOL_NOT_FOUND", `No pool named "${poolId}".`);
    this.#knownPools.add(poolId);
  }

  async #pickAndProvision(poolId: string, req: ClaimRequest, timing: { provision: number }): Promise<ClaimResponse> {
    const o = this.#o;
    const maxAttempts = o.maxAttempts ?? 3;
    const waitMs = Math.min(Math.max(0, req.waitMs ?? 0), o.maxWaitMs ?? 60_000);
    const deadline = o.clock.now().getTime() + waitMs;
    const tried: string[] = [];
    const failures: string[] = [];

    while (tried.length < maxAttempts) {
      const pick = await o.store.claimIdle({
        poolId,
        owner: o.owner,
        agentName: req.agentName,
        instructions: req.instructions,
        joinUrl: req.joinUrl ?? null,
        profileImage: req.profileImage ?? null,
        metadata: req.metadata ?? null,
        exclude: tried,
      });
      if (pick.kind === "already_joined") {
        throw new PoolError("ALREADY_JOINED", `Instance ${pick.instanceId} of this pool has already joined, or is joining, that conversation.`, {
          instanceId: pick.instanceId,
        });
      }
      if (pick.kind === "empty") {
        if (tried.length === 0 && o.clock.now().getTime() < deadline) {
          await sleep(Math.min(o.waitPollMs ?? 200, Math.max(1, deadline - o.clock.now().getTime())));
          continue;
        }
        if (tried.length > 0) break;
        const retryAfter = o.retryAfterSeconds ? await o.retryAfterSeconds(poolId).catch(() => 30) : 30;
        throw new PoolError("POOL_EMPTY", undefined, { retryAfter });
      }
      const inst = pick.instance;
      tried.push(inst.id);
      o.onPicked?.(poolId);

      const t = performance.now();
      try {
        if (!inst.url) throw new Error("instance has no url");
        const target = { url: inst.url, gatewayToken: inst.gatewayToken };
        const res = await o.client.provision(
          target,
          { agentName: req.agentName, instructions: req.instructions, joinUrl: req.joinUrl, profileImage: req.profileImage, metadata: req.metadata },
          o.provisionTimeoutMs,
        );
        timing.provision += performance.now() - t;
        return await this.#complete(inst, req, res);
      } catch (err) {
        timing.provision += performance.now() - t;
        const msg = (err as Error).message;
        failures.push(`${inst.id}: ${msg}`);
        o.logger.warn({ instanceId: inst.id, err: msg }, "provision failed; resetting the instance and trying another");
        await this.#recover(inst, msg);
      }
    }
    throw new PoolError("PROVISION_FAILED", `Provisioning failed on ${tried.length} instance(s).`, { attempts: tried.length });
  }

  async #complete(inst: InstanceRecord, req: ClaimRequest, res: ProvisionResult): Promise<ClaimResponse> {
    const o = this.#o;
    const pending = res.status === "pending_acceptance";
    if (!pending && !res.conversationId) throw new Error("provision answered without a conversation id");
    const to = pending ? "pending_acceptance" : "claimed";
    const row = await o.store.transition({
      id: inst.id,
      from: "claiming",
      to,
      actor: "claim",
      reason: pending ? "join waiting for acceptance" : res.joined ? "joined a conversation" : "created a conversation",
      set: {
        conversationId: res.conversationId,
        inviteUrl: res.inviteUrl ?? (req.joinUrl && res.joined ? req.joinUrl : null),
        claimedAt: o.clock.now(),
      },
    });
    if (!row) {
      // The sweeper resolved this claim meanwhile (we ran past its timeout): report what it decided.
      const now = await o.store.getInstance(inst.id);
      if (!now || (now.status !== "claimed" && now.status !== "pending_acceptance")) throw new Error("claim was resolved elsewhere");
    }
    if (row) o.afterClaim?.(row);
    return {
      inviteUrl: res.inviteUrl ?? (res.joined ? (req.joinUrl ?? null) : null),
      conversationId: res.conversationId,
      instanceId: inst.id,
      joined: res.joined,
      status: to,
      agentName: req.agentName,
    };
  }

  /**
   * After a failed provision: factory-reset the instance; clean → idle, otherwise crashed. Either
   * way the claim's fields are cleared: the client's agent lives on another instance (or the client
   * got an error), so this one must not show as that agent, and a crashed instance that never
   * served anyone is cleaned up by the reconciler instead of waiting for an operator.
   */
  async #recover(inst: InstanceRecord, why: string): Promise<void> {
    const o = this.#o;
    const timeout = o.resetTimeoutMs ?? 15_000;
    let clean = false;
    if (inst.url) {
      const target = { url: inst.url, gatewayToken: inst.gatewayToken };
      try {
        await o.client.reset(target, timeout);
        const s = await o.client.status(target, timeout);
        clean = s.clean && !s.conversationId && !s.pending;
      } catch {
        clean = false;
      }
    }
    const cleared = { agentName: null, instructions: null, joinUrl: null, profileImage: null, claimMetadata: null, claimOwner: null, claimStartedAt: null, conversationId: null, inviteUrl: null };
    await o.store
      .transition({
        id: inst.id,
        from: "claiming",
        to: clean ? "idle" : "crashed",
        actor: "claim",
        reason: `provision failed (${why.slice(0, 150)}); reset ${clean ? "clean" : "failed"}`,
        set: cleared,
      })
      .catch((err) => o.logger.error({ err, instanceId: inst.id }, "could not record the failed claim"));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
