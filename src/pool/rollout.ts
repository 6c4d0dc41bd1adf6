/**
 * `planRollout`: the pure heart of a rollout (issue 11). From what a pass sees of a pool (its rows
 * after the pass's observations, deletes and creates), the rollout's record and the outcomes of
 * the new template's instances, it decides which old instances to retire and how many new ones to
 * make, and whether the rollout is over. No I/O, no clock reads: rollouts.ts applies the plan.
 *
 * The rules (Kubernetes' maxSurge with maxUnavailable 0, against a floor of claimable instances):
 * - Old = of another template than the pool's; only old instances that are idle, starting or
 *   sleeping and not protected are the rollout's to replace. Claimed agents keep their template
 *   (an operator upgrades them), protected instances are never touched, and an old instance a
 *   claim takes meanwhile simply leaves the rollout.
 * - Surge: the rollout keeps the pool's warm size W (its idle, starting and sleeping instances,
 *   not protected, when the change came; at least min idle). New instances are made first, up to W
 *   of them; an old one is retired only while the instances ready to serve (idle or sleeping, old
 *   and new) number more than W, so each retirement is covered by a new instance that is already
 *   idle, and only while the pool keeps at least min idle CLAIMABLE instances (idle, not
 *   protected) after it. The store checks that floor again in the retirement's own statement.
 * - New instances in flight (starting) are at most max surge; the pool may hold up to max total +
 *   max surge while the rollout runs (the global cap still bounds every pool together).
 * - Outcome: complete once no old instance is left to replace; halted once N new instances in a
 *   row failed before becoming idle (the provider refused the create, the process crashed, its
 *   health check never passed), with the reason; a paused rollout decides nothing but its progress.
 */
import type { RolloutOutcome, RolloutProgress, RolloutStatus } from "../db/rollouts.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { ObservedInstance } from "./plan.ts";

/** Statuses of an old instance the rollout replaces (bound, crashed and dead ones are not its). */
const REPLACEABLE: ReadonlySet<InstanceStatus> = new Set(["idle", "starting", "sleeping"]);

export interface RolloutPlanInput {
  rollout: {
    status: RolloutStatus;
    toHash: string;
    /** Failures in a row that halt it. */
    haltAfter: number;
    /** Old instances it retired so far (the store's count). */
    retired: number;
    /** The warm size it keeps (idle, starting and sleeping instances, not protected). */
    target: number;
    /** Failures in a row are counted from here (the start, or a resume). */
    countedSince: Date;
  };
  pool: { minIdle: number; maxTotal: number; maxSurge: number };
  /** The pool's rows as the pass leaves them (dead ones whose resource is deleted left out). */
  instances: readonly ObservedInstance[];
  /** New-template instances made since the rollout started. */
  outcomes: readonly RolloutOutcome[];
  /** Creates and retirements this pass may still make for the pool (per-pass caps). */
  createsLeft: number;
  retiresLeft: number;
  /** Slots left under the global cap after the pass's own creates (null: no cap). */
  globalRoom: number | null;
}

export type RolloutNote =
  | "paused"
  /** Retiring more would leave fewer than min idle claimable instances. */
  | "floor"
  /** No new instance became idle yet beyond the warm size, to retire an old one against. */
  | "waiting_for_new"
  | "max_surge"
  | "max_total"
  | "global_cap"
  | "creates_capped"
  | "retires_capped";

export interface RolloutPlan {
  /** New-template instances to create now. */
  create: number;
  /** Old instances to retire now (oldest first), sleeping ones before idle ones. */
  retire: string[];
  /** How many of `retire` are idle (they lower the claimable count). */
  retireIdle: number;
  /** Progress as seen before this plan's actions. */
  progress: RolloutProgress;
  outcome: null | { status: "complete" } | { status: "halted"; reason: string };
  notes: RolloutNote[];
}

/** Counts of what the outcomes say: made, failed before idle, became idle, the current streak. */
export function tallyOutcomes(
  outcomes: readonly RolloutOutcome[],
  countedSince: Date,
): { created: number; failed: number; ready: number; streak: RolloutOutcome[] } {
  let failed = 0;
  let ready = 0;
  const decided: Array<{ at: number; ok: boolean; o: RolloutOutcome }> = [];
  for (const o of outcomes) {
    const failedFirst = o.deadAt !== null && (o.idleAt === null || o.deadAt.getTime() < o.idleAt.getTime());
    if (failedFirst) {
      failed++;
      decided.push({ at: o.deadAt!.getTime(), ok: false, o });
    } else if (o.idleAt !== null) {
      ready++;
      decided.push({ at: o.idleAt.getTime(), ok: true, o });
    }
  }
  // The streak: failures since the last success, counted from the start or the last resume.
  decided.sort((a, b) => a.at - b.at);
  const streak: RolloutOutcome[] = [];
  for (let i = decided.length - 1; i >= 0; i--) {
    const d = decided[i]!;
    if (d.ok || d.at < countedSince.getTime()) break;
    streak.unshift(d.o);
  }
  return { created: outcomes.length, failed, ready, streak };
}

/** A failure's event reason, said for an operator. */
export function describeFailure(reason: string | null): string {
  const r = reason ?? "unknown";
  if (/^create failed/.test(r)) return `the provider refused the create (${r.replace(/^create failed:\s*/, "")})`;
  if (/deploy (CRASHED|FAILED|REMOVED)|gone at the provider|never created at the provider/.test(r)) return `it crashed at boot (${r})`;
  if (/did not become healthy|unhealthy|no sign of life/.test(r)) return `its health check never passed (${r})`;
  return r;
}

/** Why a rollout halted: the streak's size and its reasons, most recent first, each said once. */
export function haltReason(streak: readonly RolloutOutcome[]): string {
  const reasons: string[] = [];
  for (const o of [...streak].reverse()) {
    const d = describeFailure(o.deadReason);
    if (!reasons.includes(d)) reasons.push(d);
  }
  return `${streak.length} new instance${streak.length === 1 ? "" : "s"} in a row failed before becoming idle: ${reasons.join("; ")}`;
}

export function planRollout(input: RolloutPlanInput): RolloutPlan {
  const { rollout, pool } = input;
  const oldIdle: string[] = [];
  const oldSleeping: string[] = [];
  let oldStarting = 0;
  let newIdle = 0;
  let newSleeping = 0;
  let newStarting = 0;
  let claimable = 0;
  let occupied = 0;
  for (const i of input.instances) {
    if (i.status === "dead") {
      // A dead row whose resource is not deleted yet still runs at the provider: it holds its slot.
      if (i.providerRef !== null && !i.goneAtProvider) occupied++;
      continue;
    }
    if (i.holdsSlot !== false) occupied++;
    if (i.status === "idle" && !i.protected) claimable++;
    if (i.protected) continue;
    if (i.templateHash === rollout.toHash) {
      if (i.status === "idle") newIdle++;
      else if (i.status === "sleeping") newSleeping++;
      else if (i.status === "starting") newStarting++;
      continue;
    }
    if (i.status === "idle") oldIdle.push(i.id);
    else if (i.status === "sleeping") oldSleeping.push(i.id);
    else if (i.status === "starting") oldStarting++;
  }
  const remaining = oldIdle.length + oldSleeping.length + oldStarting;
  const tally = tallyOutcomes(input.outcomes, rollout.countedSince);
  const progress: RolloutProgress = {
    retired: rollout.retired,
    remaining,
    created: tally.created,
    failed: tally.failed,
    failuresInARow: tally.streak.length,
    inFlight: newStarting,
    claimable,
    minClaimable: null,
  };
  const none = { create: 0, retire: [], retireIdle: 0, progress };
  if (remaining === 0) return { ...none, outcome: { status: "complete" }, notes: [] };
  if (rollout.status !== "running") return { ...none, outcome: null, notes: ["paused"] };
  if (tally.streak.length >= rollout.haltAfter) return { ...none, outcome: { status: "halted", reason: haltReason(tally.streak) }, notes: [] };

  const notes: RolloutNote[] = [];
  const warm = Math.max(rollout.target, pool.minIdle);
  // Retire: only what the instances ready to serve hold beyond the warm size (so a new idle one
  // covers each), idle ones only while the floor holds. Sleeping ones are not claimable: they do
  // not lower the floor, and go first.
  let excess = Math.max(0, oldIdle.length + oldSleeping.length + newIdle + newSleeping - warm);
  let retiresLeft = Math.max(0, input.retiresLeft);
  const retire: string[] = [];
  const sleeping = Math.min(oldSleeping.length, excess, retiresLeft);
  retire.push(...oldSleeping.slice(0, sleeping));
  excess -= sleeping;
  retiresLeft -= sleeping;
  const floorRoom = Math.max(0, claimable - pool.minIdle);
  const idle = Math.min(oldIdle.length, excess, floorRoom, retiresLeft);
  retire.push(...oldIdle.slice(0, idle));
  excess -= idle;
  retiresLeft -= idle;
  if (retire.length < oldIdle.length + oldSleeping.length) notes.push(excess === 0 ? "waiting_for_new" : retiresLeft === 0 ? "retires_capped" : "floor");

  // Create: new instances up to the warm size (old ones are retired as these become idle).
  let create = Math.max(0, warm - newIdle - newSleeping - newStarting);
  const caps: Array<[number, RolloutNote]> = [
    [pool.maxSurge - newStarting, "max_surge"],
    // Retired ones are deleted in the same pass: their slots count as freed (a delete that fails
    // leaves the guarded insert to refuse the create).
    [pool.maxTotal + pool.maxSurge - (occupied - retire.length), "max_total"],
    [input.globalRoom === null ? Number.POSITIVE_INFINITY : input.globalRoom + retire.length, "global_cap"],
    [input.createsLeft, "creates_capped"],
  ];
  for (const [cap, note] of caps) {
    if (create > cap) {
      create = Math.max(0, cap);
      if (!notes.includes(note)) notes.push(note);
    }
  }
  return { create, retire, retireIdle: idle, progress, outcome: null, notes };
}

/** Progress once a plan was applied: what was actually retired and created this pass. */
export function progressAfter(p: RolloutProgress, done: { retired: number; retiredIdle: number; created: number }): RolloutProgress {
  const claimable = p.claimable === null ? null : p.claimable - done.retiredIdle;
  return {
    ...p,
    retired: p.retired + done.retired,
    remaining: p.remaining - done.retired,
    created: p.created + done.created,
    inFlight: p.inFlight + done.created,
    claimable,
    minClaimable: claimable === null ? p.minClaimable : Math.min(p.minClaimable ?? claimable, claimable),
  };
}

/**
 * Whether a pass (or an operator's change) should start a rollout of the pool: its template is not
 * the one its latest rollout went to, and there is something to say about it (an earlier rollout,
 * instances of another template, or a template that changed). A new pool starts none. `fromHash`:
 * the latest rollout's target, else the template most old instances were made from.
 */
export function rolloutToStart(
  pool: { templateHash: string; previousTemplate: unknown | null },
  latest: { toHash: string; fromHash: string | null } | null,
  instances: readonly Pick<ObservedInstance, "status" | "templateHash" | "protected">[],
): { fromHash: string | null; reason: string } | null {
  if (latest && latest.toHash === pool.templateHash) return null;
  const old = instances.filter((i) => i.status !== "dead" && i.templateHash !== pool.templateHash);
  if (!latest && old.length === 0 && pool.previousTemplate === null) return null;
  let fromHash = latest?.toHash ?? null;
  if (fromHash === null && old.length > 0) {
    const counts = new Map<string, number>();
    for (const i of old) counts.set(i.templateHash ?? "", (counts.get(i.templateHash ?? "") ?? 0) + 1);
    fromHash = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0]![0];
  }
  const reason = latest && latest.fromHash === pool.templateHash ? "rolled back" : "template changed";
  return { fromHash, reason };
}

/** The warm size a rollout keeps: idle, starting and sleeping instances, not protected (≥ min idle). */
export function warmSize(minIdle: number, instances: readonly Pick<ObservedInstance, "status" | "protected">[]): number {
  return Math.max(minIdle, instances.filter((i) => !i.protected && REPLACEABLE.has(i.status)).length);
}

/** Old instances a rollout of the pool would replace now (the pass looks only where there are some). */
export function replaceableCount(toHash: string, instances: readonly Pick<ObservedInstance, "status" | "templateHash" | "protected">[]): number {
  return instances.filter((i) => i.templateHash !== toHash && !i.protected && REPLACEABLE.has(i.status)).length;
}
