/**
 * The actuator: carries out what the plan decided, at the provider.
 *
 * - Creates record intent first: the row (status `starting`) is inserted under the pool's create
 *   lock and only within the limits, fenced on the lease term when a pass creates; only then is
 *   the provider asked. A row that could not be inserted means no provider call.
 * - Deletes of dead rows: the row is already `dead` (nothing live counts it); after the provider
 *   confirms, the row is marked deleted, conditional on still being dead and on the lease term.
 * - Deletes of orphans: only resources carrying our owner id ever become orphans; right before the
 *   call the database is asked again whether a row knows the resource (a create whose row was
 *   written after the pass read its rows), and a resource some row knows is left alone.
 */
import type { IdSource } from "../clock.ts";
import type { Lease, Store } from "../db/store.ts";
import type { Logger } from "../logger.ts";
import type { Provider } from "../provider/provider.ts";
import { mapLimit } from "./map-limit.ts";
import type { DeleteAction } from "./plan.ts";

export interface ActuatorOptions {
  poolId: string;
  ownerId: string;
  store: Store;
  provider: Provider;
  ids: IdSource;
  logger: Logger;
  /** Environment for new instances (pool settings, operator's INSTANCE_ENV_*). */
  instanceEnv?: Record<string, string>;
  /** Creates at once. Default 4. */
  createConcurrency?: number;
}

export interface CreateResult {
  /** Instances created at the provider. */
  created: string[];
  /** Provider create calls made. */
  calls: number;
  errors: string[];
}

export interface DeleteResult {
  deleted: Array<{ ref: string; instanceId: string | null; reason: string }>;
  forgotten: string[];
  /** Provider delete calls made. */
  calls: number;
  /** Orphans left alone because a row knows them after all. */
  spared: string[];
  errors: string[];
}

export class Actuator {
  readonly #o: ActuatorOptions;

  constructor(opts: ActuatorOptions) {
    this.#o = opts;
  }

  /**
   * Creates up to `count` instances; each row is inserted before the provider is called, and only
   * while the pool is within `limits` at that moment (the store checks under a per-pool lock and,
   * with `lease`, that the term still holds).
   */
  async create(count: number, limits: { maxLive: number; minIdle?: number }, lease?: Lease, reason = "replenish"): Promise<CreateResult> {
    const o = this.#o;
    const res: CreateResult = { created: [], calls: 0, errors: [] };
    let full = false;
    await mapLimit(Array.from({ length: count }), o.createConcurrency ?? 4, async () => {
      if (full) return;
      const id = o.ids.instanceId();
      const gatewayToken = o.ids.token();
      const name = o.provider.serviceName?.(id) ?? `agent-pool-${o.poolId}-${id}`;
      const row = await o.store.insertInstanceWithin({ id, poolId: o.poolId, provider: o.provider.kind, name, gatewayToken, reason }, limits, lease);
      if (!row) {
        full = true; // at the limit (another replica or an operator filled the gap), or the lease is gone
        return;
      }
      res.calls++;
      try {
        const p = await o.provider.create({ instanceId: id, poolId: o.poolId, name, gatewayToken, ownerId: o.ownerId, env: { ...(o.instanceEnv ?? {}) } });
        // Recording the answer is fenced too; if the lease is gone, the next leader matches the
        // resource to its row by the instance id the provider reports.
        await o.store.setProviderRef(id, p.ref, p.url, p.deployStatus, lease);
        res.created.push(id);
      } catch (err) {
        const msg = (err as Error).message;
        res.errors.push(`provider create: ${msg}`);
        // Dead, but not marked deleted: a provider cannot always clean up a half-made instance (the
        // Railway service whose domain and clean-up delete both failed in an outage), and a row
        // marked deleted freed its slot while that resource still ran (test/chaos: 29 services at
        // max total 25). The next complete listing either shows a resource with this instance id
        // (then it is deleted as this dead row's) or nothing (then the row is forgotten).
        await o.store.transition({
          id,
          from: "starting",
          to: "dead",
          actor: "reconciler",
          reason: `create failed: ${msg.slice(0, 200)}`,
          ...(lease ? { fence: { lease } } : {}),
        });
      }
    });
    return res;
  }

  /** Deletes what the plan says, then forgets dead rows whose resource is already gone. */
  async delete(deletes: readonly DeleteAction[], forget: readonly string[], lease?: Lease): Promise<DeleteResult> {
    const o = this.#o;
    const res: DeleteResult = { deleted: [], forgotten: [], calls: 0, spared: [], errors: [] };
    for (const id of forget) if (await o.store.markDeleted(id, lease)) res.forgotten.push(id);
    for (const d of deletes) {
      if (d.reason === "orphan") {
        const row = await o.store.rowForResource(d.ref, d.instanceId);
        if (row) {
          res.spared.push(d.ref);
          continue;
        }
      }
      res.calls++;
      try {
        await o.provider.delete(d.ref);
        if (d.instanceId && d.reason === "dead") await o.store.markDeleted(d.instanceId, lease);
        res.deleted.push({ ref: d.ref, instanceId: d.instanceId, reason: d.reason });
      } catch (err) {
        res.errors.push(`provider delete ${d.ref}: ${(err as Error).message}`);
      }
    }
    return res;
  }
}
