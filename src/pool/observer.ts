/**
 * The observer: what a pass sees. Reads the pool's rows, lists the provider in ONE call, sorts the
 * listing by owner, health-checks what needs it (in parallel, bounded, each with a timeout),
 * concludes each row's status with the pure `observeInstance`, and writes only the rows that
 * changed, in one statement per chunk fenced on the pass's lease term.
 *
 * Ownership: a resource carrying another deployment's owner id is never matched, adopted or
 * deleted, only reported; one carrying no owner id (made before owner ids) is ours only when a row
 * of this database matches it. Two deployments sharing a project used to delete each other's
 * services as orphans.
 */
import type { Clock } from "../clock.ts";
import type { ForeignResource, InstanceRecord, Lease, ObservationChange, Store } from "../db/store.ts";
import type { HealthChecker } from "../instance/client.ts";
import type { HealthObservation } from "../instance/derive.ts";
import { observeInstance, type ObservePolicy } from "../instance/observe.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { Provider, ProviderInstance } from "../provider/provider.ts";
import { mapLimit } from "./map-limit.ts";
import type { ListingState, ObservedInstance, ObservedOrphan } from "./plan.ts";

export interface ObserverOptions {
  poolId: string;
  ownerId: string;
  store: Store;
  provider: Provider;
  health: HealthChecker;
  clock: Clock;
  policy: ObservePolicy;
  healthTimeoutMs: number;
  healthConcurrency: number;
}

export type { ForeignResource } from "../db/store.ts";

export interface StatusChangeNote {
  id: string;
  from: InstanceStatus;
  to: InstanceStatus;
  reason: string;
}

export interface Observation {
  listing: ListingState;
  /** Each row with its provider resource (undefined: not in the listing). */
  pairs: Array<[InstanceRecord, ProviderInstance | undefined]>;
  /** Rows as the plan sees them after this pass's writes (rows moved by someone else left out). */
  observed: ObservedInstance[];
  /** Our resources no row knows about. */
  orphans: ObservedOrphan[];
  foreign: ForeignResource[];
  transitions: StatusChangeNote[];
  healthChecks: number;
  healthFailures: number;
  /** Rows whose write was refused: their status moved meanwhile, or the lease term was lost. */
  skipped: string[];
  errors: string[];
}

/**
 * Splits a listing by owner: `ours` carries our owner id, `legacy` carries none (ours only if a
 * row matches), `foreign` carries another deployment's.
 */
export function splitByOwner(
  fleet: readonly ProviderInstance[],
  ownerId: string,
): { ours: ProviderInstance[]; legacy: ProviderInstance[]; foreign: ProviderInstance[] } {
  const ours: ProviderInstance[] = [];
  const legacy: ProviderInstance[] = [];
  const foreign: ProviderInstance[] = [];
  for (const p of fleet) (p.owner === ownerId ? ours : p.owner === null ? legacy : foreign).push(p);
  return { ours, legacy, foreign };
}

/**
 * Pure: pairs rows with the listing's resources (by ref, then by the instance id the provider
 * reports: a create whose answer was lost still carries our id), and says what is left over.
 */
export function matchListing(
  rows: readonly InstanceRecord[],
  fleet: readonly ProviderInstance[],
  ownerId: string,
): { pairs: Array<[InstanceRecord, ProviderInstance | undefined]>; orphans: ObservedOrphan[]; foreign: ForeignResource[] } {
  const { ours, legacy, foreign } = splitByOwner(fleet, ownerId);
  const byRef = new Map<string, ProviderInstance>();
  const byId = new Map<string, ProviderInstance>();
  for (const p of [...legacy, ...ours]) {
    byRef.set(p.ref, p);
    if (p.instanceId) byId.set(p.instanceId, p);
  }
  const matched = new Set<string>();
  const pairs = rows.map((r): [InstanceRecord, ProviderInstance | undefined] => {
    const p = (r.providerRef ? byRef.get(r.providerRef) : undefined) ?? byId.get(r.id);
    if (p) matched.add(p.ref);
    return [r, p];
  });
  return {
    pairs,
    orphans: ours.filter((p) => !matched.has(p.ref)).map((p) => ({ ref: p.ref, instanceId: p.instanceId, createdAt: p.createdAt })),
    foreign: [
      ...foreign.map((p) => ({ ref: p.ref, name: p.name, owner: p.owner })),
      ...legacy.filter((p) => !matched.has(p.ref)).map((p) => ({ ref: p.ref, name: p.name, owner: null })),
    ],
  };
}

export class Observer {
  readonly #o: ObserverOptions;

  constructor(opts: ObserverOptions) {
    this.#o = opts;
  }

  async runOnce(lease: Lease | undefined): Promise<Observation> {
    const o = this.#o;
    const errors: string[] = [];
    const rows = await o.store.listInstances(o.poolId);

    let listing: ListingState = "complete";
    let fleet: ProviderInstance[] = [];
    try {
      const l = await o.provider.list();
      fleet = l.instances;
      listing = l.complete ? "complete" : "partial";
    } catch (err) {
      listing = "failed";
      errors.push(`provider list: ${(err as Error).message}`);
    }
    const { pairs, orphans, foreign } = matchListing(rows, fleet, o.ownerId);

    // Health checks: every deployed instance (or one whose deployment the listing did not report),
    // at the listed URL or, when the listing has none this time, the one we stored. Skipping the
    // check because one listing lacked a field is how healthy instances were killed before
    // (seed-system §8, f1a1fab).
    const now = o.clock.now();
    const health = new Map<string, { health: HealthObservation | null; error?: string }>();
    const urlOf = (r: InstanceRecord, p: ProviderInstance | undefined) => p?.url ?? r.url;
    const toCheck = pairs.filter(
      ([r, p]) => p && (p.deployStatus === "SUCCESS" || p.deployStatus === null) && urlOf(r, p) && r.status !== "claiming" && r.status !== "dead",
    );
    await mapLimit(toCheck, o.healthConcurrency, async ([r, p]) => {
      health.set(r.id, await o.health.check({ url: urlOf(r, p)!, gatewayToken: r.gatewayToken }, o.healthTimeoutMs));
    });

    const changes: ObservationChange[] = [];
    const observed = new Map<string, ObservedInstance>();
    let healthFailures = 0;
    for (const [r, p] of pairs) {
      const h = health.get(r.id);
      if (h && h.health === null) healthFailures++;
      const out = observeInstance(
        r,
        { provider: p, listingComplete: listing === "complete", health: h ? h.health : undefined, ...(h?.error ? { healthError: h.error } : {}) },
        now,
        o.policy,
      );
      if (out.change) changes.push(out.change);
      const gone = out.change ? out.change.resourceGone : r.resourceGoneAt !== null;
      observed.set(r.id, {
        id: r.id,
        status: out.status,
        // A dead row whose create failed has no ref, but its resource may exist (matched by id).
        providerRef: out.change?.providerRef ?? r.providerRef ?? p?.ref ?? null,
        goneAtProvider: out.goneAtProvider,
        holdsSlot: !gone,
      });
    }
    const applied = await o.store.applyObservations(changes, lease);
    const transitions: StatusChangeNote[] = [];
    for (const id of applied.skipped) observed.delete(id); // someone (a claim) moved it: not this pass's to plan
    const skipped = new Set(applied.skipped);
    for (const c of changes) {
      if (!skipped.has(c.id) && c.status !== c.expectedStatus) transitions.push({ id: c.id, from: c.expectedStatus, to: c.status, reason: c.reason });
    }
    return {
      listing,
      pairs,
      observed: [...observed.values()],
      orphans: listing === "failed" ? [] : orphans,
      foreign,
      transitions,
      healthChecks: toCheck.length,
      healthFailures,
      skipped: applied.skipped,
      errors,
    };
  }
}
