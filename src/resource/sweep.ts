/**
 * `planSweep`: what one listing of a resource kind means, judged against the rows. Pure; the
 * resource reconciler carries it out. The rules are those of instances (README, "What is
 * guaranteed"):
 *
 * - Only resources whose name carries OUR owner id are ever judged; any other is left alone.
 * - A resource is owned when its instance is live and a row of that instance records its ref, or a
 *   row of that instance is still `creating` without a ref (a create in flight, or whose answer is
 *   about to be recorded).
 * - Anything else of ours is an orphan: its instance is gone (or never got it recorded), or it is a
 *   second one of a live instance. It is deleted once older than the grace period, a capped number
 *   per pass, and NEVER on a listing that failed or is not complete.
 * - A resource that a row records (same ref) but whose instance is gone is left to the release
 *   phase, which deletes it by that row.
 * - A row without a ref whose instance is gone ("stranded": the create's answer was lost) is
 *   resolved once a complete listing shows nothing of its instance: there is nothing to delete.
 */
import type { ResourceOwnership, ResourceRecord } from "../db/store.ts";
import { parseResourceName, type ResourceListing } from "./kind.ts";

export interface SweepInput {
  ownerId: string;
  listing: ResourceListing;
  /** Ownership of every instance named by our entries and by the stranded rows. */
  ownership: ReadonlyMap<string, ResourceOwnership>;
  /** Rows without a ref whose instance is not live, older than the grace (database clock). */
  stranded: readonly ResourceRecord[];
  now: Date;
  graceMs: number;
  /** Deletes this pass may still make. */
  maxDeletes: number;
}

export interface SweepDelete {
  ref: string;
  name: string;
  instanceId: string;
  reason: "instance gone" | "not recorded" | "duplicate";
}

export interface SweepPlan {
  deletes: SweepDelete[];
  /** Stranded rows with nothing left at the vendor: mark them deleted. */
  resolved: string[];
  /** Rows whose limit or usage the vendor reports differently. */
  usage: Array<{ id: string; limit: number | null; usage: number | null }>;
  /** Orphans younger than the grace period. */
  waiting: number;
  /** Orphans left for a later pass by the cap. */
  deferred: number;
  /** Entries named like ours but carrying another owner id. */
  foreign: number;
  notes: string[];
}

/** Whether `ref` of `instanceId` is owned, given what the rows say (see the rules above). */
export function isOwned(own: ResourceOwnership | undefined, ref: string): boolean {
  if (!own?.instanceLive) return false;
  return own.resources.some((r) => r.ref === ref || (r.ref === null && r.state === "creating"));
}

export function planSweep(input: SweepInput): SweepPlan {
  const plan: SweepPlan = { deletes: [], resolved: [], usage: [], waiting: 0, deferred: 0, foreign: 0, notes: [] };
  const complete = input.listing.complete;
  if (!complete) plan.notes.push("listing incomplete: nothing deleted or resolved this pass");
  /** Instances that have at least one of our entries at the vendor. */
  const present = new Set<string>();

  for (const e of input.listing.resources) {
    const n = parseResourceName(e.name);
    if (!n) continue;
    if (n.ownerId !== input.ownerId) {
      plan.foreign++;
      continue;
    }
    present.add(n.instanceId);
    const own = input.ownership.get(n.instanceId);
    const recorded = own?.resources.find((r) => r.ref === e.ref);
    if (isOwned(own, e.ref)) {
      if (recorded && (recorded.limit !== e.limit || recorded.usage !== e.usage)) plan.usage.push({ id: recorded.id, limit: e.limit, usage: e.usage });
      continue;
    }
    // Recorded by a row of an instance that is gone: the release phase deletes it by its row.
    if (recorded) continue;
    if (!complete) continue;
    if (input.now.getTime() - e.createdAt.getTime() < input.graceMs) {
      plan.waiting++;
      continue;
    }
    if (plan.deletes.length >= input.maxDeletes) {
      plan.deferred++;
      continue;
    }
    const reason = !own?.instanceLive ? "instance gone" : own.resources.some((r) => r.ref !== null) ? "duplicate" : "not recorded";
    plan.deletes.push({ ref: e.ref, name: e.name, instanceId: n.instanceId, reason });
  }
  if (plan.deferred > 0) plan.notes.push(`${plan.deferred} orphans left for later passes (at most ${input.maxDeletes} deletes per pass)`);

  if (complete) {
    for (const r of input.stranded) if (!present.has(r.instanceId)) plan.resolved.push(r.id);
  }
  return plan;
}
