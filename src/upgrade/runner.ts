/**
 * The upgrade runner: runs upgrade jobs of claimed agents (issue 11), one small service per
 * replica. A job is a row with its items (src/db/agent-operations.ts), so its progress is visible
 * while it runs, from any replica, and it survives its runner:
 *
 * - the replica that records a job runs it, renewing its heartbeat; every write of the job (an
 *   item's state, its end) is fenced on the runner's token;
 * - `runOnce()` also takes over running jobs whose heartbeat is stale by the database clock (their
 *   runner restarted or died): a new token, their interrupted items back to pending, the holds their
 *   earlier runner took on instances released, in one statement. An item interrupted mid-upgrade is
 *   upgraded again: a redeploy to the same template is harmless, a silently lost one is not.
 *
 * One item: the agent is checked again (select.ts: never mid-claim, never protected in bulk), held
 * for the upgrade (a hold fenced by its token, so a release cannot reset a runtime being
 * redeployed), the provider upgrades it in place, and the row records its new template hash,
 * conditional on the hold. The new deployment's health is then the observer's, as for any instance.
 */
import { randomId } from "../clock.ts";
import type { HeldUpgradeJob, InstanceRecord, PoolRecord, Store, UpgradeItemRecord, UpgradeJobRecord, UpgradeJobScope } from "../db/store.ts";
import { upgradeHoldPrefix } from "../db/agent-operations.ts";
import type { Logger } from "../logger.ts";
import type { Provider } from "../provider/provider.ts";
import { mapLimit } from "../pool/map-limit.ts";
import { planItems, skipReason, UPGRADABLE } from "./select.ts";

export interface UpgradeRunnerOptions {
  store: Store;
  /** Providers by kind: an instance is upgraded at the provider it lives at. */
  providers: ReadonlyMap<string, Provider>;
  /** The deployment's owner id (providers check the resource is ours). */
  ownerId: string;
  /** Environment every instance gets (INSTANCE_ENV_*), then the pool's, then `envFor` (as at create). */
  instanceEnv?: Record<string, string>;
  envFor?: (pool: PoolRecord) => Record<string, string>;
  logger: Logger;
  /** This replica (recorded as the job's runner, for people). */
  runner?: string;
  /** Agents upgraded at once within a job. Default 2. */
  concurrency?: number;
  /** How often a running job's heartbeat is renewed. Default 5 s. */
  heartbeatMs?: number;
  /** A running job whose heartbeat is this old (database clock) is taken over. Default 60 s. */
  staleMs?: number;
  /** How long an item's hold on its instance lasts (the provider's upgrade must end within it). Default 10 min. */
  holdTtlMs?: number;
  /** A row changed (the reconciler looks sooner). */
  onChanged?: (instance: InstanceRecord) => void;
  /** Runner tokens and job ids (tests make them readable). */
  newToken?: () => string;
}

export interface UpgradeRequest {
  pool: PoolRecord;
  scope: UpgradeJobScope;
  /** The instances of `pool` (for `all`, and to judge the named ones). */
  instances: readonly InstanceRecord[];
  /** For `instance` and `ids`. */
  ids?: readonly string[];
}

export class UpgradeRunner {
  readonly #o: UpgradeRunnerOptions;
  readonly runner: string;
  readonly #newToken: () => string;
  /** Jobs this process is running now, by id. */
  readonly #running = new Map<string, Promise<void>>();
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #pass: Promise<void> | null = null;

  constructor(opts: UpgradeRunnerOptions) {
    this.#o = opts;
    this.#newToken = opts.newToken ?? (() => randomId(16));
    this.runner = opts.runner ?? `upgrader-${randomId(8)}`;
  }

  get #staleMs(): number {
    return this.#o.staleMs ?? 60_000;
  }

  /** Records a job (held by this runner from the start) and starts it. */
  async submit(req: UpgradeRequest): Promise<UpgradeJobRecord> {
    const job = await this.#o.store.createUpgradeJob({
      id: `up-${this.#newToken().slice(0, 12)}`,
      poolId: req.pool.id,
      templateHash: req.pool.templateHash,
      scope: req.scope,
      runner: this.runner,
      runnerToken: this.#newToken(),
      items: planItems(req.pool, req.scope, req.instances, req.ids),
    });
    this.#o.logger.info({ jobId: job.id, pool: job.poolId, scope: job.scope, items: job.items.length }, "upgrade job recorded");
    this.wake();
    return job;
  }

  /** Takes over stale jobs, and starts every job this runner holds that is not running here yet. */
  runOnce(): Promise<void> {
    this.#pass ??= this.#runOnce().finally(() => (this.#pass = null));
    return this.#pass;
  }

  async #runOnce(): Promise<void> {
    if (this.#stopped) return;
    const { store, logger } = this.#o;
    const taken = await store.takeOverStaleUpgradeJobs(this.runner, this.#newToken(), this.#staleMs, 5);
    for (const t of taken) logger.warn({ jobId: t.id, runner: this.runner }, "upgrade job taken over: its runner stopped; interrupted items run again");
    for (const held of await store.heldUpgradeJobs(this.runner)) {
      if (this.#running.has(held.id) || this.#stopped) continue;
      const run = this.#run(held)
        .catch((err) => logger.error({ jobId: held.id, err: (err as Error).message }, "upgrade job failed; another pass (or runner) resumes it"))
        .finally(() => this.#running.delete(held.id));
      this.#running.set(held.id, run);
    }
  }

  /** Polls for stale jobs every half stale period; `wake()` runs a pass at once. */
  start(): void {
    if (this.#timer || this.#stopped) return;
    const every = Math.max(50, Math.floor(this.#staleMs / 2));
    this.#timer = setInterval(() => this.wake(), every);
    this.#timer.unref();
    this.wake();
  }

  wake(): void {
    if (this.#stopped) return;
    void this.runOnce().catch((err) => this.#o.logger.warn({ err: (err as Error).message }, "upgrade runner pass failed; the next one retries"));
  }

  /** Stops starting anything; waits for the jobs running here to stop at their next item. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#pass?.catch(() => undefined);
    await Promise.allSettled([...this.#running.values()]);
  }

  /** Jobs running in this process (tests). */
  get runningJobs(): number {
    return this.#running.size;
  }

  async #run(held: HeldUpgradeJob): Promise<void> {
    const { store, logger } = this.#o;
    const job = await store.getUpgradeJob(held.id);
    if (job?.state !== "running") return;
    const pool = await store.getPool(job.poolId);
    let lost = false;
    const beat = setInterval(() => {
      store.heartbeatUpgradeJob(held).then(
        (ok) => {
          if (!ok) lost = true;
        },
        (err) => logger.warn({ jobId: held.id, err: (err as Error).message }, "upgrade job heartbeat failed"),
      );
    }, this.#o.heartbeatMs ?? 5_000);
    beat.unref();
    try {
      const pending = job.items.filter((i) => i.state === "pending");
      await mapLimit(pending, this.#o.concurrency ?? 2, async (item) => {
        if (lost || this.#stopped) return;
        if (!(await store.updateUpgradeItem(held, item.instanceId, { state: "running" }))) {
          lost = true; // taken over (or finished) by another runner: it carries on
          return;
        }
        const outcome = pool ? await this.#upgradeOne(job, held, item, pool) : { state: "failed" as const, detail: `pool ${job.poolId} is gone` };
        if (!(await store.updateUpgradeItem(held, item.instanceId, outcome))) lost = true;
      });
      if (!lost && !this.#stopped) {
        await store.finishUpgradeJob(held);
        const done = await store.getUpgradeJob(held.id);
        const n = (s: string) => done?.items.filter((i) => i.state === s).length ?? 0;
        logger.info({ jobId: held.id, upgraded: n("upgraded"), failed: n("failed"), skipped: n("skipped") }, "upgrade job done");
      }
    } finally {
      clearInterval(beat);
    }
  }

  /** One agent to its pool's current template; never throws (a failure is the item's outcome). */
  async #upgradeOne(
    job: UpgradeJobRecord,
    held: HeldUpgradeJob,
    item: UpgradeItemRecord,
    jobPool: PoolRecord,
  ): Promise<{ state: "upgraded" | "failed" | "skipped"; detail: string; toHash?: string }> {
    const { store, logger } = this.#o;
    // The pool as it is now: an upgrade deploys (and records) the template current at its turn.
    const pool = (await store.getPool(jobPool.id)) ?? jobPool;
    const inst = await store.getInstance(item.instanceId);
    const why = skipReason(inst, pool, job.scope);
    if (why !== null || !inst) return { state: "skipped", detail: why ?? "gone" };
    const provider = this.#o.providers.get(inst.provider);
    if (!provider?.upgrade) return { state: "failed", detail: `provider ${inst.provider} cannot upgrade instances in place (or is not configured here)` };
    if (!inst.providerRef) return { state: "failed", detail: "the provider has not reported this instance yet" };

    const token = `${upgradeHoldPrefix(job.id)}${held.runnerToken}:${item.position}`;
    const begun = await store.beginOperation({
      id: inst.id,
      kind: "upgrade",
      token,
      ttlMs: this.#o.holdTtlMs ?? 600_000,
      from: UPGRADABLE,
      refuseProtected: job.scope !== "instance",
    });
    if (begun.kind === "refused") {
      const now = begun.instance;
      if (now?.operation) return { state: "failed", detail: `a ${now.operation} of this instance is under way; try again once it is done` };
      return { state: "skipped", detail: skipReason(now, pool, job.scope) ?? `${now?.status ?? "gone"}: changed meanwhile` };
    }
    const spec = {
      instanceId: inst.id,
      poolId: pool.id,
      gatewayToken: inst.gatewayToken,
      ownerId: this.#o.ownerId,
      env: { ...(this.#o.instanceEnv ?? {}), ...pool.env, ...(this.#o.envFor?.(pool) ?? {}) },
      image: pool.image,
      command: pool.command,
    };
    try {
      await provider.upgrade(inst.providerRef, spec);
    } catch (err) {
      const msg = (err as Error).message.slice(0, 300);
      await store.endOperation(inst.id, token).catch(() => undefined);
      logger.warn({ jobId: job.id, instanceId: inst.id, err: msg }, "upgrade of an agent failed at the provider");
      return { state: "failed", detail: `provider: ${msg}` };
    }
    const recorded = await store.endOperation(inst.id, token, { templateHash: pool.templateHash });
    if (!recorded) {
      const now = await store.getInstance(inst.id);
      return { state: "failed", detail: `redeployed, but the instance moved on meanwhile (${now?.status ?? "gone"}): its template was not recorded` };
    }
    const what = pool.image ?? pool.command?.join(" ") ?? "the default runtime";
    await store.recordInstanceEvent(inst.id, "operator", `upgraded to template ${pool.templateHash} (${what.slice(0, 150)})`).catch(() => false);
    this.#o.onChanged?.(inst);
    logger.info({ jobId: job.id, instanceId: inst.id, templateHash: pool.templateHash }, "agent upgraded");
    return { state: "upgraded", detail: `redeployed with ${what.slice(0, 200)}`, toHash: pool.templateHash };
  }
}
