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
import type { HealthSchedule } from "./health-schedule.ts";
import { mapLimit } from "./map-limit.ts";
import type { ListingState, ObservedInstance, ObservedOrphan } from "./plan.ts";

export interface ObserverOptions {
  ownerId: string;
  store: Store;
  /** Providers by kind: each one in use is listed ONCE per pass, whatever the number of pools. */
  providers: ReadonlyMap<string, Provider>;
  health: HealthChecker;
  clock: Clock;
  policy: ObservePolicy;
  healthTimeoutMs: number;
  healthConcurrency: number;
  /** When each instance is checked next (kept by the replica across passes). */
  schedule: HealthSchedule;
  /** Most health checks in one pass (the longest overdue first). Default: no cap. */
  maxChecksPerPass?: number;
}

export type { ForeignResource } from "../db/store.ts";

export interface StatusChangeNote {
  id: string;
  from: InstanceStatus;
  to: InstanceStatus;
  reason: string;
}

export interface Observation {
  /** What each provider's listing was (by provider kind). */
  listings: Map<string, ListingState>;
  /** Each row with its provider resource (undefined: not in the listing). */
  pairs: Array<[InstanceRecord, ProviderInstance | undefined]>;
  /** Rows as the plans see them after this pass's writes, by pool (rows moved by someone else left out). */
  observed: Map<string, ObservedInstance[]>;
  /** Our resources no row knows about, by provider kind. */
  orphans: Map<string, ObservedOrphan[]>;
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
    // Every pool's rows in one read; the pools only split them afterwards.
    // Only the columns a pass needs (not instructions of up to 50 KB each, nor claim metadata).
    const rows = await o.store.listInstances(null, { lean: true });
    const kinds = new Set<string>(o.providers.keys());
    for (const r of rows) kinds.add(r.provider);

    const listings = new Map<string, ListingState>();
    const pairs: Array<[InstanceRecord, ProviderInstance | undefined]> = [];
    const orphans = new Map<string, ObservedOrphan[]>();
    const foreign: ForeignResource[] = [];
    for (const kind of kinds) {
      const provider = o.providers.get(kind);
      const mine = rows.filter((r) => r.provider === kind);
      let listing: ListingState = "complete";
      let fleet: ProviderInstance[] = [];
      if (!provider) {
        // Rows of a provider this process does not run (configuration changed): nothing to learn.
        listing = "failed";
        errors.push(`provider ${kind}: not configured in this process`);
      } else {
        try {
          const l = await provider.list();
          fleet = l.instances;
          listing = l.complete ? "complete" : "partial";
        } catch (err) {
          listing = "failed";
          errors.push(`provider list (${kind}): ${(err as Error).message}`);
        }
      }
      listings.set(kind, listing);
      const m = matchListing(mine, fleet, o.ownerId);
      pairs.push(...m.pairs);
      orphans.set(kind, listing === "failed" ? [] : m.orphans);
      foreign.push(...m.foreign);
    }

    // Health checks, on each instance's own schedule (health-schedule.ts): only the instances that
    // are due, at the listed URL or, when the listing has none this time, the one we stored.
    // Skipping the check because one listing lacked a field is how healthy instances were killed
    // before (seed-system §8, f1a1fab). An instance whose deploy status, URL or ref changed since
    // the row was written is due at once.
    const now = o.clock.now();
    const nowMs = now.getTime();
    const schedule = o.schedule;
    const health = new Map<string, { health: HealthObservation | null; error?: string }>();
    const urlOf = (r: InstanceRecord, p: ProviderInstance | undefined) => p?.url ?? r.url;
    const deployable = (r: InstanceRecord, p: ProviderInstance | undefined) =>
      !!p && (p.deployStatus === "SUCCESS" || p.deployStatus === null) && !!urlOf(r, p) && r.status !== "claiming" && r.status !== "dead";
    const changedAtProvider = (r: InstanceRecord, p: ProviderInstance) =>
      p.deployStatus !== r.deployStatus || p.ref !== r.providerRef || (p.url !== null && p.url !== r.url);
    const due: Array<[InstanceRecord, ProviderInstance]> = [];
    for (const [r, p] of pairs) {
      if (!p || !deployable(r, p)) continue;
      if (changedAtProvider(r, p)) schedule.soon(r.id, nowMs);
      if (schedule.due(r.id, r.status, r.healthCheckedAt, nowMs)) due.push([r, p]);
    }
    // At most `maxChecksPerPass`, the longest overdue first: a backlog (a new leader, a slow pass)
    // is worked off over a few passes instead of stretching one past its lease.
    due.sort(([a], [b]) => (schedule.nextAt(a.id) ?? 0) - (schedule.nextAt(b.id) ?? 0));
    const toCheck = due.slice(0, o.maxChecksPerPass ?? Number.POSITIVE_INFINITY);
    await mapLimit(toCheck, o.healthConcurrency, async ([r, p]) => {
      health.set(r.id, await o.health.check({ url: urlOf(r, p)!, gatewayToken: r.gatewayToken }, o.healthTimeoutMs));
    });

    const changes: ObservationChange[] = [];
    const byId = new Map<string, ObservedInstance & { poolId: string }>();
    let healthFailures = 0;
    for (const [r, p] of pairs) {
      const h = health.get(r.id);
      if (h && h.health === null) healthFailures++;
      // A deployed instance that was not due learns nothing this pass: its row stays as it is (its
      // status must not be judged on a health answer nobody asked for).
      const learned = h !== undefined || !deployable(r, p);
      const out = learned
        ? observeInstance(
            r,
            {
              provider: p,
              listingComplete: listings.get(r.provider) === "complete",
              health: h ? h.health : undefined,
              ...(h?.error ? { healthError: h.error } : {}),
            },
            now,
            o.policy,
          )
        : { change: null, goneAtProvider: false, status: r.status };
      if (out.change) changes.push(out.change);
      if (h) {
        const failures = out.change ? out.change.healthFailures : r.healthFailures;
        schedule.checked(r.id, out.status, nowMs - r.statusChangedAt.getTime(), h.health === null ? Math.max(1, failures) : 0, nowMs);
      }
      const gone = out.change ? out.change.resourceGone : r.resourceGoneAt !== null;
      byId.set(r.id, {
        poolId: r.poolId,
        id: r.id,
        status: out.status,
        // A dead row whose create failed has no ref, but its resource may exist (matched by id).
        providerRef: out.change?.providerRef ?? r.providerRef ?? p?.ref ?? null,
        goneAtProvider: out.goneAtProvider,
        holdsSlot: !gone,
        templateHash: r.templateHash,
        protected: r.protected,
      });
    }
    schedule.retain(new Set(rows.map((r) => r.id)));
    const applied = await o.store.applyObservations(changes, lease);
    for (const id of applied.skipped) byId.delete(id); // someone (a claim) moved it: not this pass's to plan
    const skipped = new Set(applied.skipped);
    const transitions: StatusChangeNote[] = [];
    for (const c of changes) {
      if (!skipped.has(c.id) && c.status !== c.expectedStatus) transitions.push({ id: c.id, from: c.expectedStatus, to: c.status, reason: c.reason });
    }
    const observed = new Map<string, ObservedInstance[]>();
    for (const { poolId, ...x } of byId.values()) {
      const list = observed.get(poolId) ?? [];
      list.push(x);
      observed.set(poolId, list);
    }
    return { listings, pairs, observed, orphans, foreign, transitions, healthChecks: toCheck.length, healthFailures, skipped: applied.skipped, errors };
  }
}
