/**
 * What operators and clients do to the pools, in one place for the API, the CLI and the dashboard:
 * read counts and agents, add, drain, kill, dismiss, protect, reconcile, claim. Each operation is a
 * conditional transition first (so it cannot clobber a concurrent claim), the provider call after.
 * Operations on a pool take its id; without one they act on the default pool.
 */
import type { HistoryRow } from "./history.ts";
import type { ForeignResource, InstanceEvent, InstanceRecord, PoolRecord, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import { LIVE_STATUSES, type InstanceStatus, type StatusCounts } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import type { Provider } from "../provider/provider.ts";
import type { ClaimRequest, ClaimResponse, ClaimService } from "../claim/claim.ts";
import type { Reconciler, TickResult } from "./reconciler.ts";
import type { PoolRegistry } from "./registry.ts";

export interface PoolOperationsOptions {
  store: Store;
  /** Providers by kind (an instance is deleted at the provider it lives at). */
  providers: ReadonlyMap<string, Provider>;
  reconciler: Reconciler;
  claims: ClaimService;
  registry: PoolRegistry;
  /** The pool operations act on when they name none (POOL_ID). */
  defaultPool: string;
  logger: Logger;
  /** Most instances one add/drain request may touch. */
  maxBatch?: number;
}

export interface PoolSummary {
  pool: string;
  runtime: string;
  minIdle: number;
  maxTotal: number;
  templateHash: string;
  counts: StatusCounts & { total: number };
  /** Resources named like this deployment's that belong to another deployment (or none): left alone. */
  foreign: ForeignResource[];
}

export class PoolOperations {
  readonly #o: PoolOperationsOptions;

  constructor(opts: PoolOperationsOptions) {
    this.#o = opts;
  }

  /** The default pool's id. */
  get poolId(): string {
    return this.#o.defaultPool;
  }

  get maxBatch(): number {
    return this.#o.maxBatch ?? 20;
  }

  get registry(): PoolRegistry {
    return this.#o.registry;
  }

  pools(): Promise<PoolRecord[]> {
    return this.#o.registry.list();
  }

  async summary(poolId: string = this.#o.defaultPool): Promise<PoolSummary> {
    const [c, pool, foreign] = await Promise.all([this.#o.store.countByStatus(poolId), this.#o.registry.get(poolId), this.#o.store.foreignResources()]);
    let total = 0;
    for (const s of LIVE_STATUSES) total += c[s];
    return {
      pool: pool.id,
      runtime: pool.runtime,
      minIdle: pool.minIdle,
      maxTotal: pool.maxTotal,
      templateHash: pool.templateHash,
      counts: { ...c, total },
      foreign,
    };
  }

  /** The pool's per-minute history since `sinceMs` ago (issue 13), with the database's now. */
  async history(poolId: string, sinceMs: number): Promise<{ rows: HistoryRow[]; now: Date }> {
    await this.#o.registry.get(poolId);
    return this.#o.store.poolHistory(poolId, sinceMs);
  }

  async instances(poolId: string = this.#o.defaultPool): Promise<InstanceRecord[]> {
    await this.#o.registry.get(poolId);
    return this.#o.store.listInstances(poolId);
  }

  /** Agents people use or lost: claimed, pending and crashed, crashed first (one pool, or all). */
  async agents(poolId: string | null = this.#o.defaultPool): Promise<InstanceRecord[]> {
    const order: Partial<Record<InstanceStatus, number>> = { crashed: 0, pending_acceptance: 1, claimed: 2 };
    if (poolId !== null) await this.#o.registry.get(poolId);
    const rows = await this.#o.store.listInstances(poolId);
    return (
      rows
        // A crashed instance without an agent broke in a failed claim; the next pass deletes it.
        .filter((r) => order[r.status] !== undefined && !(r.status === "crashed" && r.agentName === null))
        .sort((a, b) => order[a.status]! - order[b.status]! || (b.claimedAt?.getTime() ?? 0) - (a.claimedAt?.getTime() ?? 0))
    );
  }

  async instance(id: string): Promise<{ instance: InstanceRecord; events: InstanceEvent[] }> {
    const inst = await this.#get(id);
    return { instance: inst, events: await this.#o.store.listEvents(id, 50) };
  }

  claim(req: ClaimRequest): Promise<ClaimResponse> {
    return this.#o.claims.claim(req);
  }

  reconcile(): Promise<TickResult> {
    return this.#o.reconciler.tick();
  }

  /** Creates up to `count` instances of a pool now (bounded by its max total and the global cap). */
  async add(count: number, poolId: string = this.#o.defaultPool): Promise<{ created: string[]; errors: string[] }> {
    await this.#o.registry.get(poolId);
    const res = await this.#o.reconciler.createNow(poolId, Math.min(count, this.maxBatch));
    this.#o.reconciler.wake();
    return res;
  }

  /** Deletes up to `count` idle instances of a pool, oldest first; protected ones are left alone. */
  async drain(count: number, poolId: string = this.#o.defaultPool): Promise<{ drained: string[]; errors: string[] }> {
    await this.#o.registry.get(poolId);
    const idle = (await this.#o.store.listInstances(poolId)).filter((r) => r.status === "idle" && !r.protected).slice(0, Math.min(count, this.maxBatch));
    const drained: string[] = [];
    const errors: string[] = [];
    for (const r of idle) {
      // Conditional: an instance claimed since the read is skipped, never drained.
      const row = await this.#o.store.transition({ id: r.id, from: "idle", to: "dead", actor: "operator", reason: "drained" });
      if (!row) continue;
      const err = await this.#deleteAtProvider(row);
      if (err) errors.push(err);
      drained.push(r.id);
    }
    return { drained, errors };
  }

  /** Marks an instance protected (bulk operations and claims leave it alone) or not. */
  async protect(id: string, value: boolean): Promise<InstanceRecord> {
    await this.#get(id);
    const row = await this.#o.store.setProtected(id, value);
    if (!row) throw new PoolError("INSTANCE_NOT_FOUND", `No instance "${id}".`);
    return row;
  }

  /** Kills one instance: provider delete, row marked dead and kept for the event log. */
  async kill(id: string): Promise<{ id: string; status: InstanceStatus }> {
    const inst = await this.#get(id);
    if (inst.status === "claiming") throw new PoolError("INVALID_TRANSITION", "The instance is being claimed right now; try again in a moment.");
    if (inst.status === "dead") {
      if (!inst.deletedAt) await this.#deleteAtProvider(inst);
      return { id, status: "dead" };
    }
    const row = await this.#o.store.transition({ id, from: inst.status, to: "dead", actor: "operator", reason: "killed by an operator" });
    if (!row) throw new PoolError("INVALID_TRANSITION", "The instance changed state meanwhile; look again.");
    const err = await this.#deleteAtProvider(row);
    if (err) throw new PoolError("PROVIDER_ERROR", `Marked dead, but the provider delete failed (the reconciler retries): ${err}`);
    return { id, status: "dead" };
  }

  /** Dismisses a crashed agent (and deletes what is left of it at the provider). */
  async dismiss(id: string): Promise<{ id: string; status: InstanceStatus }> {
    const inst = await this.#get(id);
    if (inst.status !== "crashed") throw new PoolError("INVALID_TRANSITION", `Only crashed agents can be dismissed; this one is ${inst.status}.`);
    const row = await this.#o.store.transition({ id, from: "crashed", to: "dead", actor: "operator", reason: "dismissed by an operator" });
    if (!row) throw new PoolError("INVALID_TRANSITION", "The instance changed state meanwhile; look again.");
    await this.#deleteAtProvider(row);
    this.#o.reconciler.wake();
    return { id, status: "dead" };
  }

  async #get(id: string): Promise<InstanceRecord> {
    const inst = await this.#o.store.getInstance(id);
    if (!inst) throw new PoolError("INSTANCE_NOT_FOUND", `No instance "${id}".`);
    return inst;
  }

  /** Deletes the resource; on failure the dead row stays undeleted and the reconciler retries. */
  async #deleteAtProvider(row: InstanceRecord): Promise<string | null> {
    try {
      if (row.providerRef) {
        const provider = this.#o.providers.get(row.provider);
        if (!provider) throw new Error(`provider ${row.provider} is not configured in this process`);
        await provider.delete(row.providerRef);
      }
      await this.#o.store.markDeleted(row.id);
      this.#o.reconciler.wake();
      return null;
    } catch (err) {
      const msg = (err as Error).message;
      this.#o.logger.warn({ instanceId: row.id, err: msg }, "provider delete failed; the reconciler will retry");
      return msg;
    }
  }
}
