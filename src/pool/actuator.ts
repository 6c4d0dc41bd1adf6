/**
 * The actuator: carries out what the plan decided, at the provider.
 *
 * - Creates record intent first: the row (status `starting`) is inserted under the pool's create
 *   lock and only within the limits, fenced on the lease term when a pass creates; only then is
 *   the provider asked. A row that could not be inserted means no provider call.
 * - Per-instance resources (issue 12) are made between the row and the provider call, each
 *   recorded before its own outside call, and their variables join the create's environment. A
 *   required one that fails fails the create like a provider failure (row dead, fenced) and no
 *   provider call is made; a provider failure after them deletes them.
 * - Deletes of dead rows: the row is already `dead` (nothing live counts it); after the provider
 *   confirms, the row is marked deleted, conditional on still being dead and on the lease term.
 * - Deletes of orphans: only resources carrying our owner id ever become orphans; right before the
 *   call the database is asked again whether a row knows the resource (a create whose row was
 *   written after the pass read its rows), and a resource some row knows is left alone.
 */
import type { IdSource } from "../clock.ts";
import type { InsertLimits, Lease, PoolRecord, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import type { Logger } from "../logger.ts";
import type { Provider } from "../provider/provider.ts";
import { mapLimit } from "./map-limit.ts";
import type { DeleteAction } from "./plan.ts";

/** Per-instance resources made before the provider is asked (issue 12; src/resource/service.ts). */
export interface InstanceResourceHooks {
  /**
   * Makes the instance's boot-time resources (each row written before its outside call) and returns
   * their environment. Throws when a required one fails, having deleted what it made.
   */
  provision(instance: { id: string; poolId: string }, lease?: Lease): Promise<Record<string, string>>;
  /** Deletes the instance's resources now; returns what could not be (the resource reconciler collects it). */
  release(instanceId: string): Promise<string[]>;
}

export interface ActuatorOptions {
  ownerId: string;
  store: Store;
  /** Providers by kind; a pool's `provider` (or `defaultProvider`) picks one. */
  providers: ReadonlyMap<string, Provider>;
  defaultProvider: string;
  ids: IdSource;
  logger: Logger;
  /**
   * Environment every instance gets (the operator's INSTANCE_ENV_*), before the pool's own and the
   * pool-manager's (POOL_ID, POOL_ENVIRONMENT, …) given by `envFor`.
   */
  instanceEnv?: Record<string, string>;
  envFor?: (pool: PoolRecord) => Record<string, string>;
  /** Creates at once. Default 4. The provider paces its own requests (Railway: RAILWAY_MAX_RPS). */
  createConcurrency?: number;
  /** Creates failing in a row before creating halts for a while (default 5); 0: never halt. */
  haltAfterFailures?: number;
  /** Monotonic milliseconds (the halt's timer). */
  monotonic?: () => number;
  /** Per-instance resources (issue 12); none when unset. */
  resources?: InstanceResourceHooks | undefined;
}

/** How long creating halts after `haltAfterFailures` failures in a row: 30 s, doubling, at most 10 min. */
export function createHaltMs(halts: number): number {
  return Math.min(600_000, 30_000 * 2 ** Math.max(0, halts - 1));
}

export interface CreateResult {
  /** Instances created at the provider. */
  created: string[];
  /** True when creating is halted after repeated failures (nothing was tried). */
  halted?: boolean;
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
  /**
   * The creation brake: a provider that fails every create (a bad image, a revoked token, a full
   * account) must not be asked again at every pass; each halt lasts longer (createHaltMs).
   */
  #failuresInRow = 0;
  #halts = 0;
  #haltedUntil = 0;

  constructor(opts: ActuatorOptions) {
    this.#o = opts;
  }

  /**
   * Creates up to `count` instances; each row is inserted before the provider is called, and only
   * while the pool is within `limits` at that moment (the store checks under a per-pool lock and,
   * with `lease`, that the term still holds).
   */
  /** The provider a pool's instances live at. */
  providerFor(pool: Pick<PoolRecord, "provider">): Provider {
    const kind = pool.provider ?? this.#o.defaultProvider;
    const p = this.#o.providers.get(kind);
    if (!p) throw new PoolError("CONFIG_INVALID", `provider ${kind} is not configured in this process`);
    return p;
  }

  async create(pool: PoolRecord, count: number, limits: InsertLimits, lease?: Lease, reason = "replenish"): Promise<CreateResult> {
    const o = this.#o;
    const res: CreateResult = { created: [], calls: 0, errors: [] };
    let provider: Provider;
    try {
      provider = this.providerFor(pool);
    } catch (err) {
      res.errors.push((err as Error).message);
      return res;
    }
    const baseEnv = { ...(o.instanceEnv ?? {}), ...pool.env, ...(o.envFor?.(pool) ?? {}) };
    const mono = o.monotonic ?? (() => performance.now());
    if (mono() < this.#haltedUntil) return { ...res, halted: true };
    let full = false;
    await mapLimit(Array.from({ length: count }), o.createConcurrency ?? 4, async () => {
      if (full || mono() < this.#haltedUntil) return;
      const id = o.ids.instanceId();
      const gatewayToken = o.ids.token();
      const name = provider.serviceName?.(id, pool.id) ?? `agent-pool-${pool.id}-${id}`;
      const row = await o.store.insertInstanceWithin(
        { id, poolId: pool.id, provider: provider.kind, name, gatewayToken, templateHash: pool.templateHash, image: pool.image, reason },
        limits,
        lease,
      );
      if (!row) {
        full = true; // at the limit (another replica or an operator filled the gap), or the lease is gone
        return;
      }
      const env = { ...baseEnv };
      if (o.resources) {
        try {
          // After the row, before the provider: the instance boots with its resources' variables.
          Object.assign(env, await o.resources.provision({ id, poolId: pool.id }, lease));
        } catch (err) {
          const msg = `resources: ${(err as Error).message}`;
          await this.#failCreate(res, id, msg, msg, lease);
          return;
        }
      }
      res.calls++;
      let made = false;
      try {
        const p = await provider.create({
          instanceId: id,
          poolId: pool.id,
          name,
          gatewayToken,
          ownerId: o.ownerId,
          env,
          image: pool.image,
          command: pool.command,
        });
        made = true;
        this.#failuresInRow = 0;
        this.#halts = 0;
        // Recording the answer is fenced too; if the lease is gone, the next leader matches the
        // resource to its row by the instance id the provider reports.
        await o.store.setProviderRef(id, p.ref, p.url, p.deployStatus, lease);
        res.created.push(id);
      } catch (err) {
        // The provider must not leak a half-made instance; if it did, the orphan sweep finds it.
        const msg = (err as Error).message;
        // A create the provider deferred (its budget is low) is not a failure of the provider.
        const deferred = (err as { details?: { deferred?: unknown } }).details?.deferred === true;
        if (!made && !deferred && ++this.#failuresInRow >= (o.haltAfterFailures ?? 5) && (o.haltAfterFailures ?? 5) > 0) {
          this.#halts++;
          this.#failuresInRow = 0;
          this.#haltedUntil = mono() + createHaltMs(this.#halts);
          o.logger.error({ pool: pool.id, haltMs: createHaltMs(this.#halts), err: msg }, "creates failed repeatedly; creating halts for a while");
        }
        await this.#failCreate(res, id, `provider create: ${msg}`, msg, lease, true);
        if (o.resources && !made) {
          // What was made for it goes now; the resource reconciler collects whatever this misses.
          // (When the provider did make it and only recording failed, the row decides: dead, and the
          // resource reconciler deletes its key; still starting, and it is adopted with its key.)
          const left = await o.resources.release(id).catch((e: unknown) => [(e as Error).message]);
          if (left.length > 0) res.errors.push(`resources of ${id} not deleted yet: ${left.join("; ")}`);
        }
      }
    });
    return res;
  }

  /** A create that failed: the row goes dead (fenced) and, having no resource, deleted. */
  /**
   * A create that failed: the row goes dead. When the provider was asked (`askedProvider`) the row
   * is NOT marked deleted: a provider cannot always clean up a half-made instance (the Railway
   * service whose domain and clean-up delete both failed in an outage), and a row marked deleted
   * freed its slot while that resource still ran (test/chaos: 29 services at max total 25). The next
   * complete listing either shows a resource with this instance id (then it is deleted as this dead
   * row's) or nothing (then the row is forgotten).
   */
  async #failCreate(res: CreateResult, id: string, error: string, cause: string, lease: Lease | undefined, askedProvider = false): Promise<void> {
    const o = this.#o;
    res.errors.push(error);
    const dead = await o.store.transition({
      id,
      from: "starting",
      to: "dead",
      actor: "reconciler",
      reason: `create failed: ${cause.slice(0, 200)}`,
      ...(lease ? { fence: { lease } } : {}),
    });
    if (dead && !askedProvider) await o.store.markDeleted(id, lease);
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
      const provider = o.providers.get(d.provider ?? o.defaultProvider);
      if (!provider) {
        res.errors.push(`provider delete ${d.ref}: provider ${d.provider} is not configured in this process`);
        continue;
      }
      res.calls++;
      try {
        await provider.delete(d.ref);
        if (d.instanceId && d.reason === "dead") await o.store.markDeleted(d.instanceId, lease);
        res.deleted.push({ ref: d.ref, instanceId: d.instanceId, reason: d.reason });
      } catch (err) {
        res.errors.push(`provider delete ${d.ref}: ${(err as Error).message}`);
      }
    }
    return res;
  }
}
