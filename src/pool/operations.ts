/**
 * What operators and clients do to a pool, in one place for the API, the CLI and the dashboard:
 * read counts and agents, add, drain, kill, dismiss, reconcile, claim. Each operation is a
 * conditional transition first (so it cannot clobber a concurrent claim), the provider call after.
 */
import type { ForeignResource, InstanceEvent, InstanceRecord, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import { LIVE_STATUSES, type InstanceStatus, type StatusCounts } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import type { Provider } from "../provider/provider.ts";
import type { ClaimRequest, ClaimResponse, ClaimService } from "../claim/claim.ts";
import type { Reconciler, TickResult } from "./reconciler.ts";

export interface PoolOperationsOptions {
  store: Store;
  provider: Provider;
  reconciler: Reconciler;
  claims: ClaimService;
  poolId: string;
  minIdle: number;
  maxTotal: number;
  logger: Logger;
  /** Most instances one add/drain request may touch. */
  maxBatch?: number;
}

export interface PoolSummary {
  pool: string;
  minIdle: number;
  maxTotal: number;
  counts: StatusCounts & { total: number };
  /** Resources named like this pool's that belong to another deployment (or none): left alone. */
  foreign: ForeignResource[];
}

export class PoolOperations {
  readonly #o: PoolOperationsOptions;

  constructor(opts: PoolOperationsOptions) {
    this.#o = opts;
  }

  get poolId(): string {
    return this.#o.poolId;
  }

  get maxBatch(): number {
    return this.#o.maxBatch ?? 20;
  }

  async summary(): Promise<PoolSummary> {
    const [c, pool] = await Promise.all([this.#o.store.countByStatus(this.#o.poolId), this.#o.store.getPool(this.#o.poolId)]);
    let total = 0;
    for (const s of LIVE_STATUSES) total += c[s];
    return { pool: this.#o.poolId, minIdle: this.#o.minIdle, maxTotal: this.#o.maxTotal, counts: { ...c, total }, foreign: pool?.foreignResources ?? [] };
  }

  instances(): Promise<InstanceRecord[]> {
    return this.#o.store.listInstances(this.#o.poolId);
  }

  /** Agents people use or lost: claimed, pending and crashed, crashed first. */
  async agents(): Promise<InstanceRecord[]> {
    const order: Partial<Record<InstanceStatus, number>> = { crashed: 0, pending_acceptance: 1, claimed: 2 };
    const rows = await this.#o.store.listInstances(this.#o.poolId);
    return rows
      // A crashed instance without an agent broke in a failed claim; the next pass deletes it.
      .filter((r) => order[r.status] !== undefined && !(r.status === "crashed" && r.agentName === null))
      .sort((a, b) => order[a.status]! - order[b.status]! || (b.claimedAt?.getTime() ?? 0) - (a.claimedAt?.getTime() ?? 0));
  }

  async instance(id: string): Promise<{ instance: InstanceRecord; events: InstanceEvent[] }> {
    const inst = await this.#o.store.getInstance(id);
    if (!inst || inst.poolId !== this.#o.poolId) throw new PoolError("INSTANCE_NOT_FOUND", `No instance "${id}".`);
    return { instance: inst, events: await this.#o.store.listEvents(id, 50) };
  }

  claim(req: ClaimRequest): Promise<ClaimResponse> {
    return this.#o.claims.claim(req);
  }

  reconcile(): Promise<TickResult> {
    return this.#o.reconciler.tick();
  }

  /** Creates up to `count` instances now (bounded by max total). */
  async add(count: number): Promise<{ created: string[]; errors: string[] }> {
    const res = await this.#o.reconciler.createNow(Math.min(count, this.maxBatch));
    this.#o.reconciler.wake();
    return res;
  }

  /** Deletes up to `count` idle instances, newest last. */
  async drain(count: number): Promise<{ drained: string[]; errors: string[] }> {
    const idle = (await this.#o.store.listInstances(this.#o.poolId)).filter((r) => r.status === "idle").slice(0, Math.min(count, this.maxBatch));
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
    if (!inst || inst.poolId !== this.#o.poolId) throw new PoolError("INSTANCE_NOT_FOUND", `No instance "${id}".`);
    return inst;
  }

  /** Deletes the resource; on failure the dead row stays undeleted and the reconciler retries. */
  async #deleteAtProvider(row: InstanceRecord): Promise<string | null> {
    try {
      if (row.providerRef) await this.#o.provider.delete(row.providerRef);
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
