/**
 * `planPool(spec, observed, now) → PoolPlan`: the pure heart of a reconcile pass. It decides how
 * many instances to create and which provider resources to delete, from what this pass observed.
 * No I/O, no clock reads: the reconciler gathers the observation and applies the plan.
 */
import { LIVE_STATUSES, type InstanceStatus } from "../instance/status.ts";

export interface PoolSpec {
  minIdle: number;
  maxTotal: number;
  /** A provider instance no row knows about is deleted only once it is older than this. */
  orphanGraceMs: number;
  maxDeletesPerTick: number;
  maxCreatesPerTick: number;
}

/** `failed`: the provider listing threw; `partial`: it said it is not complete. */
export type ListingState = "complete" | "partial" | "failed";

export interface ObservedInstance {
  id: string;
  /** Status after this pass's observations were applied. */
  status: InstanceStatus;
  providerRef: string | null;
  /** True when the provider no longer has the resource (nothing to delete there). */
  goneAtProvider: boolean;
  /**
   * False once a complete listing showed the resource gone (a crashed agent kept for its operator):
   * such a row no longer counts against max total. Default true.
   */
  holdsSlot?: boolean;
  /** Hash of the template the instance was made from (rollouts compare it with the pool's). */
  templateHash?: string | null;
  /** Protected instances are left alone by bulk operations and rollouts. */
  protected?: boolean;
}

export interface ObservedOrphan {
  ref: string;
  instanceId: string | null;
  createdAt: Date;
}

export interface ObservedPool {
  listing: ListingState;
  /** Rows of the pool that are not deleted yet. */
  instances: readonly ObservedInstance[];
  /** Provider instances of this pool that match no live row. */
  orphans: readonly ObservedOrphan[];
}

export type DeleteReason = "dead" | "orphan";

export interface DeleteAction {
  ref: string;
  instanceId: string | null;
  reason: DeleteReason;
  /** Provider kind that holds the resource (set by the reconciler; one pass may span several). */
  provider?: string;
}

export interface PoolPlan {
  create: number;
  deletes: DeleteAction[];
  /** Dead rows whose resource is already gone at the provider: mark them deleted, no provider call. */
  forget: string[];
  /** Why the plan holds back, for the tick's summary line and the API. */
  notes: PlanNote[];
  counts: { idle: number; starting: number; live: number; deficit: number };
}

export type PlanNote =
  | "listing_failed_no_changes"
  | "listing_partial_no_deletes"
  | "max_total_reached"
  | "deletes_capped"
  | "creates_capped"
  /** Creates failed repeatedly: creating is halted for a while (the actuator's brake). */
  | "creates_halted";

/** Statuses that hold a provider resource and so count against `maxTotal`. */
const COUNTS_AGAINST_MAX: ReadonlySet<InstanceStatus> = new Set(LIVE_STATUSES);

export function planPool(spec: PoolSpec, observed: ObservedPool, now: Date): PoolPlan {
  const notes: PlanNote[] = [];
  let idle = 0;
  let starting = 0;
  let live = 0;
  for (const inst of observed.instances) {
    if (inst.status === "idle") idle++;
    // `starting` includes rows written before the provider answered (in-flight creates): counting
    // them is what stops over-creation from a stale count (agent-sandbox #1215, ~10x over-creation).
    if (inst.status === "starting") starting++;
    if (COUNTS_AGAINST_MAX.has(inst.status) && inst.holdsSlot !== false) live++;
  }
  const deficit = Math.max(0, spec.minIdle - idle - starting);

  if (observed.listing === "failed") {
    // A failed listing says nothing about the fleet: delete nothing, and do not hammer a provider
    // that is failing with creates. The next pass retries.
    return { create: 0, deletes: [], forget: [], notes: ["listing_failed_no_changes"], counts: { idle, starting, live, deficit } };
  }

  const deletes: DeleteAction[] = [];
  const forget: string[] = [];
  const candidates: DeleteAction[] = [];
  for (const inst of observed.instances) {
    if (inst.status !== "dead") continue;
    if (inst.providerRef === null || inst.goneAtProvider) forget.push(inst.id);
    else candidates.push({ ref: inst.providerRef, instanceId: inst.id, reason: "dead" });
  }
  // A dead row whose resource is not deleted yet still runs at the provider, and so do orphans:
  // both hold a slot against max total until their delete lands (the store's guarded insert counts
  // the same way, so a delete that fails cannot let the pool grow past max total).
  const occupiedBefore = live + candidates.length + observed.orphans.length;
  for (const orphan of observed.orphans) {
    if (now.getTime() - orphan.createdAt.getTime() >= spec.orphanGraceMs) {
      candidates.push({ ref: orphan.ref, instanceId: orphan.instanceId, reason: "orphan" });
    }
  }
  if (observed.listing === "partial") {
    // A partial listing can make live instances look missing: no deletions this pass.
    if (candidates.length > 0) notes.push("listing_partial_no_deletes");
  } else {
    deletes.push(...candidates.slice(0, spec.maxDeletesPerTick));
    if (candidates.length > spec.maxDeletesPerTick) notes.push("deletes_capped");
  }
  // Planned deletes are counted as freed; if one fails, the guarded insert refuses the create.
  const occupied = occupiedBefore - deletes.length;

  const room = Math.max(0, spec.maxTotal - occupied);
  let create = Math.min(deficit, room);
  if (deficit > room) notes.push("max_total_reached");
  if (create > spec.maxCreatesPerTick) {
    create = spec.maxCreatesPerTick;
    notes.push("creates_capped");
  }
  return { create, deletes, forget, notes, counts: { idle, starting, live: occupied, deficit } };
}

/**
 * Orphans (our resources no row knows about, of any pool) are deleted once older than the grace
 * period, never on a failed or partial listing, at most `maxDeletes` per pass.
 */
export function planOrphans(
  orphans: readonly ObservedOrphan[],
  listing: ListingState,
  spec: Pick<PoolSpec, "orphanGraceMs" | "maxDeletesPerTick">,
  now: Date,
): { deletes: DeleteAction[]; notes: PlanNote[] } {
  if (listing !== "complete") return { deletes: [], notes: orphans.length > 0 && listing === "partial" ? ["listing_partial_no_deletes"] : [] };
  const due = orphans
    .filter((o) => now.getTime() - o.createdAt.getTime() >= spec.orphanGraceMs)
    .map((o): DeleteAction => ({ ref: o.ref, instanceId: o.instanceId, reason: "orphan" }));
  const deletes = due.slice(0, spec.maxDeletesPerTick);
  return { deletes, notes: due.length > deletes.length ? ["deletes_capped"] : [] };
}
