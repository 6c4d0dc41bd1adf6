/**
 * `observeInstance`: what one reconcile pass concludes about one row, from the provider's listing
 * entry and the health check. Pure: the reconciler batches the returned changes into one write.
 *
 * It applies policy on top of `deriveStatus`: which derived status may move which stored status,
 * and how much a once-healthy instance is forgiven. The earlier system declared instances dead on
 * one missed check while Railway woke them up (#266 "false deaths"); here a once-healthy instance
 * needs `failureThreshold` consecutive failures.
 */
import { deriveStatus, type HealthObservation } from "./derive.ts";
import { canTransition, type InstanceStatus } from "./status.ts";
import type { InstanceRecord, ObservationChange } from "../db/store.ts";
import type { ProviderInstance } from "../provider/provider.ts";

export interface ObservePolicy {
  stuckTimeoutMs: number;
  failureThreshold: number;
  /** Health bookkeeping alone is rewritten at most this often (keeps quiet ticks write-free). */
  healthRecordIntervalMs: number;
  /** A row with no provider ref is an in-flight create for this long (the provider may answer late). */
  createGraceMs: number;
  /**
   * A join still waiting for acceptance this long after the claim is given up: the instance is
   * asked (its health answer says pending or not) and, still pending, retired. The earlier system's
   * pending rows waited forever and held their slot. Default: never.
   */
  pendingTimeoutMs?: number;
}

export interface Observation {
  /** The provider's entry for the row; undefined when the listing does not have it. */
  provider: ProviderInstance | undefined;
  /** True when the listing is complete, so a missing entry means the resource is gone. */
  listingComplete: boolean;
  /** `undefined`: not checked this pass; `null`: checked and failed; else what it answered. */
  health: HealthObservation | null | undefined;
  /** Why the health check failed, when it did. */
  healthError?: string;
}

export interface ObserveOutcome {
  /** The write to make, or null when nothing changed. */
  change: ObservationChange | null;
  /** The provider no longer has the resource. */
  goneAtProvider: boolean;
  /** Status after this pass. */
  status: InstanceStatus;
}

const BOUND: ReadonlySet<InstanceStatus> = new Set(["claimed", "pending_acceptance"]);

export function observeInstance(row: InstanceRecord, obs: Observation, now: Date, policy: ObservePolicy): ObserveOutcome {
  const unchanged: ObserveOutcome = { change: null, goneAtProvider: false, status: row.status };
  if (row.status === "dead" || row.deletedAt !== null) return unchanged;

  const p = obs.provider;
  // "Stuck" is measured from the last sign of life, not from creation: a row starting (or
  // redeploying) since statusChangedAt, a live one since it last answered. Measured from creation,
  // a 20-minute-old idle instance was declared dead in one pass the first time a listing came back
  // without its domain or deployment (the earlier system's f1a1fab: healthy instances killed when
  // one API call returned less than usual).
  const aliveSince = row.status === "starting" ? row.statusChangedAt : (row.healthOkAt ?? row.statusChangedAt);
  const silentMs = now.getTime() - Math.max(aliveSince.getTime(), row.createdAt.getTime());

  // Health bookkeeping (computed first, written only when it matters).
  let healthCheckedAt = row.healthCheckedAt;
  let healthOkAt = row.healthOkAt;
  let healthFailures = row.healthFailures;
  let healthError = row.healthError;
  let runtimeVersion = row.runtimeVersion;
  let runtimeType = row.runtimeType;
  if (obs.health !== undefined) {
    healthCheckedAt = now;
    if (obs.health) {
      // Only a ready runtime is a sign of life: one that keeps answering "not ready" (stuck in a
      // reboot loop) must reach the stuck timeout, or a claimed agent in that state is never
      // reported crashed.
      if (obs.health.ready) healthOkAt = now;
      healthFailures = 0;
      healthError = null;
      runtimeVersion = obs.health.version ?? runtimeVersion;
      runtimeType = obs.health.runtime ?? runtimeType;
    } else {
      healthFailures = row.healthFailures + 1;
      healthError = (obs.healthError ?? "unreachable").slice(0, 500);
    }
  }

  /** Crashed in a failed claim, before any client got it: nobody will dismiss it. */
  const neverHandedOut = row.status === "crashed" && row.claimedAt === null && row.agentName === null;
  let next: InstanceStatus = row.status;
  let reason = "";
  let conversationId: string | null = null;
  let goneAtProvider = false;
  // Once a complete listing shows the resource gone, the row no longer holds a slot; a resource
  // that shows up again (it was never really gone) holds one again.
  let resourceGone = p ? false : row.resourceGoneAt !== null;

  if (row.status === "claiming") {
    // Only the claim path or the stale-claim sweeper moves a claiming row.
  } else if (!p) {
    if (!obs.listingComplete) {
      // Say nothing about rows a partial listing did not mention.
    } else if (row.providerRef === null && now.getTime() - row.createdAt.getTime() < policy.createGraceMs) {
      // In-flight create: the provider has not answered yet.
    } else {
      goneAtProvider = row.providerRef !== null;
      if (goneAtProvider) resourceGone = true;
      const why = row.providerRef === null ? "never created at the provider" : "gone at the provider";
      if (BOUND.has(row.status)) [next, reason] = ["crashed", why];
      else if (row.status !== "crashed" || neverHandedOut) [next, reason] = ["dead", why];
    }
  } else {
    const derived = deriveStatus({ deployStatus: p.deployStatus, health: obs.health, ageMs: silentMs, stuckTimeoutMs: policy.stuckTimeoutMs });
    const wasHealthy = row.healthOkAt !== null;
    const tolerated = healthFailures < policy.failureThreshold;
    const deployedOrUnknown = p.deployStatus === "SUCCESS" || p.deployStatus === null;
    const unreachable = deployedOrUnknown && obs.health === null;
    // Nothing learned this pass (no URL to check, deployment not reported): keep what we know.
    const inconclusive = deployedOrUnknown && obs.health === undefined;
    const deployDead = derived === "dead" && p.deployStatus !== "SUCCESS" && p.deployStatus !== null;
    const reasonDead = deployDead
      ? `deploy ${p.deployStatus}`
      : unreachable
        ? `unhealthy: ${healthError ?? "unreachable"}`
        : row.status === "starting"
          ? "did not become healthy in time"
          : "no sign of life within the stuck timeout";

    switch (row.status) {
      case "starting":
        if (derived === "idle") [next, reason] = ["idle", "healthy and clean"];
        else if (derived === "dead") [next, reason] = ["dead", reasonDead];
        else if (derived === "dirty") [next, reason] = ["dead", "runtime not clean before any claim"];
        else if (derived === "claimed" || derived === "pending") [next, reason] = ["dead", "runtime bound without a claim"];
        else if (derived === "sleeping") [next, reason] = ["sleeping", "deploy SLEEPING"];
        else if ((p.url ?? row.url) === null && now.getTime() - row.createdAt.getTime() >= policy.createGraceMs) {
          // A resource with no address past the create's grace can never be checked, so never
          // becomes idle: its create was interrupted between its steps (a pool manager killed
          // between Railway's serviceCreate and serviceDomainCreate, found by the fault run). Left
          // alone it held a slot and counted toward min idle until the stuck timeout (15 min).
          [next, reason] = ["dead", "no address: its create was interrupted"];
        }
        break;
      case "idle":
      case "sleeping":
        if (derived === "idle") {
          if (row.status === "sleeping") [next, reason] = ["idle", "awake, healthy and clean"];
        } else if (derived === "sleeping") {
          if (row.status === "idle") [next, reason] = ["sleeping", "deploy SLEEPING"];
        } else if (derived === "dirty") [next, reason] = ["dead", "runtime not clean"];
        else if (derived === "claimed" || derived === "pending") [next, reason] = ["dead", "runtime bound without a claim"];
        else if (unreachable) {
          if (!tolerated || !wasHealthy) [next, reason] = ["dead", reasonDead];
        } else if (deployDead) [next, reason] = ["dead", reasonDead];
        else if (inconclusive) {
          if (derived === "dead") [next, reason] = ["dead", "no sign of life within the stuck timeout"];
        } else if (derived === "starting" || derived === "dead") {
          // Redeploying (or a stuck redeploy): wait for it as for a new one; the stuck timeout ends it.
          if (derived === "dead") [next, reason] = ["dead", reasonDead];
          else [next, reason] = ["starting", `redeploying (${p.deployStatus ?? "unknown"})`];
        }
        break;
      case "claimed":
      case "pending_acceptance":
        if (derived === "claimed" && obs.health) {
          const reported = obs.health.conversationId;
          if (row.status === "pending_acceptance") {
            [next, reason] = ["claimed", "join accepted"];
            conversationId = reported;
          } else if (row.conversationId !== null && reported !== row.conversationId) {
            [next, reason] = ["crashed", "runtime reports another conversation"];
          }
        } else if (derived === "pending") {
          if (row.status === "claimed") [next, reason] = ["crashed", "runtime reports a pending join"];
          else if (policy.pendingTimeoutMs !== undefined && now.getTime() - row.statusChangedAt.getTime() >= policy.pendingTimeoutMs) {
            [next, reason] = ["dead", `join not accepted within ${Math.round(policy.pendingTimeoutMs / 1000)} s`];
          }
        } else if (derived === "idle" || derived === "dirty") {
          [next, reason] = ["crashed", row.status === "pending_acceptance" ? "join not accepted" : "runtime lost its conversation"];
        } else if (unreachable) {
          if (!tolerated) [next, reason] = ["crashed", reasonDead];
        } else if (deployDead || derived === "dead") [next, reason] = ["crashed", reasonDead];
        break;
      case "crashed":
        if (derived === "claimed" && obs.health && row.conversationId !== null && obs.health.conversationId === row.conversationId) {
          [next, reason] = ["claimed", "runtime healthy again with its conversation"];
        } else if (neverHandedOut) {
          // Broke during a failed claim and was never handed to anyone: nobody will dismiss it, and
          // left alone it would hold a slot against max total for good (seed-system §8: crashed
          // instances never cleaned up, pools stuck at max). Delete it; the plan replaces it.
          [next, reason] = ["dead", "crashed before it was handed to anyone"];
        }
        break;
    }
  }

  if (next !== row.status && !canTransition(row.status, next, "reconciler")) {
    // The policy above must stay inside the table; never write an edge it does not allow.
    next = row.status;
    reason = "";
  }

  const providerRef = p?.ref ?? row.providerRef;
  const url = p?.url ?? row.url;
  const deployStatus = p ? p.deployStatus : row.deployStatus;
  const image = p?.image ?? row.image;

  const statusChanged = next !== row.status;
  const fieldsChanged =
    providerRef !== row.providerRef ||
    url !== row.url ||
    deployStatus !== row.deployStatus ||
    image !== row.image ||
    runtimeVersion !== row.runtimeVersion ||
    runtimeType !== row.runtimeType ||
    healthFailures !== row.healthFailures ||
    healthError !== row.healthError ||
    resourceGone !== (row.resourceGoneAt !== null) ||
    (healthOkAt === null) !== (row.healthOkAt === null);
  const bookkeepingDue =
    healthCheckedAt !== null && (row.healthCheckedAt === null || now.getTime() - row.healthCheckedAt.getTime() >= policy.healthRecordIntervalMs);

  if (!statusChanged && !fieldsChanged && !bookkeepingDue) return { change: null, goneAtProvider, status: row.status };

  return {
    goneAtProvider,
    status: next,
    change: {
      id: row.id,
      expectedStatus: row.status,
      status: next,
      reason,
      providerRef,
      url,
      deployStatus,
      runtimeVersion,
      runtimeType,
      image,
      healthCheckedAt,
      healthOkAt,
      healthFailures,
      healthError,
      conversationId,
      resourceGone,
    },
  };
}
