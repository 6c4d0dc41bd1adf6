/**
 * What operators do to claimed agents (issue 11), for the API, the CLI and the dashboard: release
 * (release.ts), upgrade one agent or a pool's (upgrade jobs, src/upgrade/), and read versions. The
 * pool operations (PoolOperations) stay about the pool's size and its instances' lives; these act
 * on agents, each through a hold on the row fenced by its token.
 */
import type { InstanceRecord, PoolRecord, Store, UpgradeJobRecord, VersionCount } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { PoolRegistry } from "./registry.ts";
import { releaseAgent, type ReleaseOptions, type ReleaseResult } from "./release.ts";
import { skipReason } from "../upgrade/select.ts";
import type { UpgradeRunner } from "../upgrade/runner.ts";

export interface AgentOperationsOptions {
  store: Store;
  registry: PoolRegistry;
  release: ReleaseOptions;
  upgrades: UpgradeRunner;
}

/** One line of the versions view: instances of a template, runtime and status. */
export interface VersionRow extends VersionCount {
  /** The template is the pool's current one. */
  current: boolean;
}

export interface PoolVersions {
  pool: string;
  templateHash: string;
  rows: VersionRow[];
}

/** Most instances one bulk upgrade may name. */
export const MAX_UPGRADE_IDS = 1_000;

export class AgentOperations {
  readonly #o: AgentOperationsOptions;

  constructor(opts: AgentOperationsOptions) {
    this.#o = opts;
  }

  /** Factory-resets a claimed, pending or crashed agent: back to idle when clean, else retired. */
  release(id: string): Promise<ReleaseResult> {
    return releaseAgent(this.#o.release, id);
  }

  /**
   * Upgrades one agent to its pool's current template (a job of one item, run at once). Refused now
   * (409) when it cannot be: mid-claim, not an agent, already current. A protected agent may be
   * upgraded this way: the operator named it.
   */
  async upgradeInstance(id: string): Promise<UpgradeJobRecord> {
    const inst = await this.#instance(id);
    const pool = await this.#o.registry.get(inst.poolId);
    const why = skipReason(inst, pool, "instance");
    if (why !== null) throw new PoolError("INVALID_TRANSITION", `Instance ${inst.id} is not upgraded: ${why}.`, { status: inst.status });
    if (inst.operation)
      throw new PoolError("OPERATION_IN_PROGRESS", `A ${inst.operation} of instance ${inst.id} is under way; try again once it is done.`, {
        operation: inst.operation,
      });
    return this.#o.upgrades.submit({ pool, scope: "instance", instances: [inst], ids: [inst.id] });
  }

  /**
   * Upgrades agents of a pool: the ones named, or every agent on an older template (`all`). Agents
   * that must not be touched (protected, mid-claim, not agents, already current) are listed as
   * skipped with the reason; the job runs in the background and its progress is read by id.
   */
  async upgradePool(poolId: string, sel: { ids?: readonly string[] | undefined; all?: boolean | undefined }): Promise<UpgradeJobRecord> {
    const pool = await this.#o.registry.get(poolId);
    const all = sel.all === true;
    const ids = sel.ids ?? [];
    if (all === ids.length > 0) throw new PoolError("VALIDATION_FAILED", "Name the agents to upgrade (`ids`) or ask for all of them (`all: true`), not both.");
    if (ids.length > MAX_UPGRADE_IDS) throw new PoolError("VALIDATION_FAILED", `At most ${MAX_UPGRADE_IDS} agents per upgrade.`);
    const instances = await this.#o.store.listInstances(pool.id);
    return this.#o.upgrades.submit({ pool, scope: all ? "all" : "ids", instances, ids });
  }

  async job(id: string): Promise<UpgradeJobRecord> {
    const job = await this.#o.store.getUpgradeJob(id);
    if (!job) throw new PoolError("UPGRADE_NOT_FOUND", `No upgrade job "${id}".`);
    return job;
  }

  /** Latest upgrade jobs of a pool, newest first. */
  async jobs(poolId: string, limit = 10): Promise<UpgradeJobRecord[]> {
    await this.#o.registry.get(poolId);
    return this.#o.store.listUpgradeJobs(poolId, limit);
  }

  /** The pool's live instances by template (current or not), runtime type, version and status. */
  async versions(poolId: string): Promise<PoolVersions> {
    const pool: PoolRecord = await this.#o.registry.get(poolId);
    const rows = await this.#o.store.versionCounts(pool.id);
    return { pool: pool.id, templateHash: pool.templateHash, rows: rows.map((r) => ({ ...r, current: r.templateHash === pool.templateHash })) };
  }

  async #instance(id: string): Promise<InstanceRecord> {
    const inst = await this.#o.store.getInstance(id);
    if (!inst || inst.deletedAt !== null) throw new PoolError("INSTANCE_NOT_FOUND", `No instance "${id}".`);
    return inst;
  }
}
