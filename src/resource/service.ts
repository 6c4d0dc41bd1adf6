/**
 * The resource service: makes an instance's resources when it is created (the actuator's hook),
 * deletes them when it goes, and answers what the instance routes and the dashboard ask (spend,
 * credits, top-ups).
 *
 * - Intent first: each resource's row is written (`creating`, conditional on the instance still
 *   `starting` and on the pass's lease term) before the kind is asked to make it, and the answer's
 *   ref is recorded right after. A crash in between leaves a row naming the resource; the resource
 *   reconciler finds it in the vendor's listing and deletes it once its instance is gone.
 * - A required resource that fails fails the instance's create: what was already made for the
 *   instance is deleted at once (and whatever could not be, by the reconciler), and no provider
 *   call is made.
 * - Secrets: the env a kind returns goes to the caller (the provider's create) and nowhere else.
 */
import { randomId } from "../clock.ts";
import type { Lease, ResourceRecord, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import { LIVE_STATUSES } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import { type CreatedResource, resourceName, type ResourceKind, type ResourceUsage } from "./kind.ts";
import { roundCents, topUpLimit, usd } from "./top-up.ts";

export interface ResourceServiceOptions {
  store: Store;
  kinds: readonly ResourceKind[];
  /** The deployment's owner id: every resource's name carries it. */
  ownerId: string;
  /** POOL_ENVIRONMENT: carried in names, so environments can share one vendor account. */
  environment: string;
  logger: Logger;
  /** Ids of resource rows (default `r-` + 12 random characters). */
  ids?: () => string;
}

/** What the dashboard and the instance routes show of a resource (no secret: there is none to show). */
export interface ResourceView {
  kind: string;
  state: ResourceRecord["state"];
  limit: number | null;
  usage: number | null;
  remaining: number | null;
  usageAt: string | null;
}

export interface Credits extends ResourceView {
  /** True when the numbers come from the vendor just now; false: the last ones recorded. */
  live: boolean;
}

export function resourceView(r: ResourceRecord): ResourceView {
  const remaining = r.limit === null ? null : roundCents(Math.max(0, r.limit - (r.usage ?? 0)));
  return { kind: r.kind, state: r.state, limit: r.limit, usage: r.usage, remaining, usageAt: r.usageAt?.toISOString() ?? null };
}

export class ResourceService {
  readonly #o: ResourceServiceOptions;
  readonly #kinds: ReadonlyMap<string, ResourceKind>;

  constructor(opts: ResourceServiceOptions) {
    this.#o = opts;
    this.#kinds = new Map(opts.kinds.map((k) => [k.kind, k]));
  }

  get kinds(): readonly ResourceKind[] {
    return this.#o.kinds;
  }

  kind(name: string): ResourceKind | undefined {
    return this.#kinds.get(name);
  }

  /**
   * The actuator's hook, after the instance's row is inserted and before the provider is asked:
   * makes the resources its kinds make at boot and returns their environment. Throws (after
   * deleting what it made) when a required one fails; an optional one that fails is logged and left out.
   */
  async provision(instance: { id: string; poolId: string }, lease?: Lease): Promise<Record<string, string>> {
    const env: Record<string, string> = {};
    for (const kind of this.#o.kinds) {
      if (kind.when !== "boot") continue;
      try {
        Object.assign(env, await this.#make(kind, instance, lease, ["starting"]));
      } catch (err) {
        const msg = (err as Error).message;
        if (!kind.required) {
          this.#o.logger.warn({ instanceId: instance.id, kind: kind.kind, err: msg }, "an optional resource could not be made; the instance starts without it");
          continue;
        }
        const left = await this.release(instance.id);
        if (left.length > 0)
          this.#o.logger.warn({ instanceId: instance.id, errors: left }, "resources of a failed create not deleted yet; the resource reconciler collects them");
        throw new PoolError("RESOURCE_ERROR", `${kind.kind}: ${msg}`, undefined, { cause: err });
      }
    }
    return env;
  }

  /**
   * Makes an on-demand resource of a live instance (or returns nothing when it already has one):
   * the same intent-first path as at boot, for a kind whose `when` is `on-demand`.
   */
  async ensure(instanceId: string, kindName: string): Promise<Record<string, string> | null> {
    const kind = this.#kinds.get(kindName);
    if (kind?.when !== "on-demand") throw new PoolError("RESOURCE_NOT_FOUND", `No on-demand resource kind "${kindName}".`);
    const inst = await this.#o.store.getInstance(instanceId);
    if (!inst) throw new PoolError("INSTANCE_NOT_FOUND");
    const existing = (await this.#o.store.listResources({ instanceId })).find((r) => r.kind === kindName);
    if (existing) return null;
    try {
      return await this.#make(
        kind,
        { id: inst.id, poolId: inst.poolId },
        undefined,
        LIVE_STATUSES.filter((s) => s !== "claiming"),
      );
    } catch (err) {
      throw new PoolError("RESOURCE_ERROR", `${kind.kind}: ${(err as Error).message}`, undefined, { cause: err });
    }
  }

  async #make(
    kind: ResourceKind,
    instance: { id: string; poolId: string },
    lease: Lease | undefined,
    statuses: Parameters<Store["insertResourceIntent"]>[2],
  ): Promise<Record<string, string>> {
    const { store } = this.#o;
    const id = this.#o.ids?.() ?? `r-${randomId(12)}`;
    const name = resourceName({ ownerId: this.#o.ownerId, poolId: instance.poolId, environment: this.#o.environment, instanceId: instance.id });
    const row = await store.insertResourceIntent({ id, instanceId: instance.id, poolId: instance.poolId, kind: kind.kind, name }, lease, statuses);
    if (!row) throw new Error("not recorded (the instance moved on, the lease term is gone, or it already has one): nothing made");
    let made: CreatedResource;
    try {
      made = await kind.create({ resourceId: id, instanceId: instance.id, poolId: instance.poolId, name });
    } catch (err) {
      // The vendor may have made it anyway (an answer lost on the way): the row names it, and the
      // reconciler deletes it from a listing once the grace period has passed.
      await store.markResourceFailed(id, (err as Error).message).catch(() => undefined);
      throw err;
    }
    let rec: ResourceRecord | null;
    try {
      rec = await store.recordResourceCreated(id, made.ref, made.limit ?? null, made.usage ?? null);
    } catch (err) {
      await this.#deleteUnwanted(kind, made.ref, id);
      throw err;
    }
    if (rec?.state !== "ready") {
      // Released while it was being made (its instance was killed meanwhile): it is not wanted.
      await this.#deleteUnwanted(kind, made.ref, id);
      throw new Error("released while it was being made");
    }
    return made.env;
  }

  async #deleteUnwanted(kind: ResourceKind, ref: string, id: string): Promise<void> {
    try {
      await kind.delete(ref);
      await this.#o.store.markResourceDeleted(id);
    } catch (err) {
      this.#o.logger.warn({ kind: kind.kind, ref, err: (err as Error).message }, "could not delete an unwanted resource; the resource reconciler collects it");
    }
  }

  /**
   * Deletes an instance's resources now (its create failed, or it destroyed itself). Returns what
   * could not be deleted; the resource reconciler retries those, and resolves rows whose create's
   * answer was never recorded from the vendor's listing.
   */
  async release(instanceId: string): Promise<string[]> {
    const errors: string[] = [];
    for (const r of await this.#o.store.releaseResources(instanceId)) {
      const kind = this.#kinds.get(r.kind);
      if (!r.ref || !kind) continue;
      try {
        await kind.delete(r.ref);
        await this.#o.store.markResourceDeleted(r.id);
      } catch (err) {
        errors.push(`${r.kind} ${r.ref}: ${(err as Error).message}`);
      }
    }
    return errors;
  }

  /** The instance's resources, as shown to it and to operators. */
  async views(instanceId: string): Promise<ResourceView[]> {
    return (await this.#o.store.listResources({ instanceId })).map(resourceView);
  }

  /** Spend per instance of a pool (the dashboard's agent cards), from what the reconciler recorded. */
  async spendByInstance(poolId: string): Promise<Map<string, ResourceView>> {
    const out = new Map<string, ResourceView>();
    for (const r of await this.#o.store.listResources({ poolId })) {
      if (r.state === "ready" && (r.limit !== null || r.usage !== null) && !out.has(r.instanceId)) out.set(r.instanceId, resourceView(r));
    }
    return out;
  }

  /**
   * Remaining spend on the instance's key: asked of the vendor now (and recorded), else the last
   * numbers recorded, marked `live: false`.
   */
  async credits(instanceId: string): Promise<Credits> {
    const row = await this.#spendable(instanceId);
    const kind = this.#kinds.get(row.kind)!;
    if (kind.usage && row.ref) {
      try {
        const u = await kind.usage(row.ref);
        await this.#o.store.recordResourceUsage([{ id: row.id, limit: u.limit, usage: u.usage }]);
        return { ...resourceView({ ...row, limit: u.limit, usage: u.usage, usageAt: new Date() }), remaining: u.remaining, live: true };
      } catch (err) {
        this.#o.logger.warn(
          { instanceId, kind: row.kind, err: (err as Error).message },
          "could not read usage from the vendor; answering with the last recorded",
        );
      }
    }
    return { ...resourceView(row), live: false };
  }

  /**
   * Raises the spending limit of the instance's key by `amount`, never past the kind's maximum.
   * The current limit is read from the vendor first, so the bound holds against what it really is.
   */
  async topUp(instanceId: string, amount: number): Promise<{ kind: string; previousLimit: number | null; limit: number; usage: ResourceUsage }> {
    const row = await this.#spendable(instanceId);
    const kind = this.#kinds.get(row.kind)!;
    if (!kind.setLimit || !row.ref || kind.maxLimit === undefined)
      throw new PoolError("RESOURCE_NOT_FOUND", `The ${row.kind} resource has no spending limit to raise.`);
    let current = row.limit;
    if (kind.usage) current = (await this.#vendor(() => kind.usage!(row.ref!))).limit;
    const d = topUpLimit(current, amount, kind.maxLimit);
    if (!d.ok) throw new PoolError(d.reason.includes("maximum") ? "TOP_UP_OVER_MAX" : "VALIDATION_FAILED", d.reason, { maxLimit: kind.maxLimit });
    const u = await this.#vendor(() => kind.setLimit!(row.ref!, d.limit));
    await this.#o.store.recordResourceUsage([{ id: row.id, limit: u.limit, usage: u.usage }]);
    this.#o.logger.info({ instanceId, kind: row.kind, previousLimit: current, limit: d.limit }, `spending limit raised to ${usd(d.limit)}`);
    return { kind: row.kind, previousLimit: current, limit: d.limit, usage: u };
  }

  /** The instance's first ready resource whose kind reports spend. */
  async #spendable(instanceId: string): Promise<ResourceRecord> {
    const rows = await this.#o.store.listResources({ instanceId });
    const row = rows.find((r) => r.state === "ready" && r.ref !== null && this.#kinds.get(r.kind)?.usage !== undefined);
    if (!row) throw new PoolError("RESOURCE_NOT_FOUND", "This instance has no key with a spending limit.");
    return row;
  }

  async #vendor<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new PoolError("RESOURCE_ERROR", `The resource vendor failed: ${(err as Error).message}`, undefined, { cause: err });
    }
  }
}
