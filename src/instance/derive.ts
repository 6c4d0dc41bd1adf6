/**
 * Pure derivation of an instance's observed status from what the provider and the instance say.
 *
 * Deploy statuses use Railway's vocabulary (all 13 values of its `DeploymentStatus` enum) because it
 * is the most complete one we target; every provider maps its own states onto it.
 */

export const DEPLOY_STATUSES = [
  "BUILDING",
  "CRASHED",
  "DEPLOYING",
  "FAILED",
  "INITIALIZING",
  "NEEDS_APPROVAL",
  "QUEUED",
  "REMOVED",
  "REMOVING",
  "SKIPPED",
  "SLEEPING",
  "SUCCESS",
  "WAITING",
] as const;

export type DeployStatus = (typeof DEPLOY_STATUSES)[number];

/** Deploys still on their way up: wait for them. */
const STARTING_DEPLOYS: ReadonlySet<string> = new Set(["QUEUED", "WAITING", "BUILDING", "DEPLOYING", "INITIALIZING"]);
/** Deploys that will not come back by themselves. `REMOVING` is on its way out. */
const DEAD_DEPLOYS: ReadonlySet<string> = new Set(["FAILED", "CRASHED", "REMOVED", "REMOVING", "SKIPPED"]);

/** What one health check of an instance found. `null` = unreachable / not ready / bad answer. */
export interface HealthObservation {
  ready: boolean;
  /** Conversation the runtime says it is bound to, if any. */
  conversationId: string | null;
  /** The runtime is waiting for a join request to be accepted. */
  pending: boolean;
  /** The runtime has no identity, conversation or instructions left from an earlier claim. */
  clean: boolean;
  version: string | null;
  /** What the runtime says it is (`runtime` of /pool/health: "openclaw", "hermes", …), when it says. */
  runtime?: string | null;
}

export type DerivedStatus = "starting" | "idle" | "dirty" | "claimed" | "pending" | "dead" | "sleeping";

export interface DeriveInput {
  /** Latest deployment status; null or an unknown string when the provider has none. */
  deployStatus: string | null;
  /** Health check result; `null` = checked and unreachable; `undefined` = not checked. */
  health: HealthObservation | null | undefined;
  /** Age of the instance (now − created at), in ms. */
  ageMs: number;
  /** `POOL_STUCK_TIMEOUT_MS`: how long an instance may take to become healthy. */
  stuckTimeoutMs: number;
}

/**
 * The table of seed 000 task 3, extended to all 13 deploy statuses:
 *
 * | deploy status                                   | health                 | derived                         |
 * |-------------------------------------------------|------------------------|---------------------------------|
 * | SLEEPING                                        | —                      | sleeping                        |
 * | FAILED CRASHED REMOVED REMOVING SKIPPED          | —                      | dead                            |
 * | QUEUED WAITING BUILDING DEPLOYING INITIALIZING  | —                      | starting (dead once stuck)      |
 * | SUCCESS                                         | bound to a conversation| claimed (pending if pending)    |
 * | SUCCESS                                         | ready, not bound, clean| idle                            |
 * | SUCCESS                                         | ready, not bound, dirty| dirty (never handed out)        |
 * | SUCCESS                                         | unreachable / not ready| starting, dead once stuck       |
 * | null (the provider could not tell)              | answered               | as SUCCESS                      |
 * | NEEDS_APPROVAL, null, unknown                   | —                      | starting, dead once stuck       |
 *
 * Differences from the seed, on purpose: a deploy stuck in a starting state past the timeout is
 * dead too (the seed waited forever, and stuck `starting` rows blocked the pool, seed §8 #16);
 * `pending` is its own answer so a join waiting for acceptance is not taken for a fresh idle runtime;
 * a runtime that answers while the provider reports no deployment status counts as deployed;
 * a ready runtime that is not `clean` is `dirty`, never `idle`, so a broken or half-reset instance is not
 * recycled into the pool (seed §8, #280: crashed instances promoted back to idle).
 */
export function deriveStatus(input: DeriveInput): DerivedStatus {
  const { deployStatus, health, ageMs, stuckTimeoutMs } = input;
  const stuck = ageMs >= stuckTimeoutMs;
  if (deployStatus === "SLEEPING") return "sleeping";
  if (deployStatus !== null && DEAD_DEPLOYS.has(deployStatus)) return "dead";
  if (deployStatus !== null && STARTING_DEPLOYS.has(deployStatus)) return stuck ? "dead" : "starting";
  // A runtime that answers is running, whatever the provider's listing failed to say about its
  // deployment (Railway lists a service with no deployment edge now and then).
  if (deployStatus === "SUCCESS" || (deployStatus === null && health)) {
    if (health) {
      if (health.conversationId) return "claimed";
      if (health.pending) return "pending";
      if (health.ready) return health.clean ? "idle" : "dirty";
    }
    return stuck ? "dead" : "starting";
  }
  // NEEDS_APPROVAL, null, or a status this build does not know: give it the stuck timeout.
  return stuck ? "dead" : "starting";
}

export function isDeployStatus(value: unknown): value is DeployStatus {
  return typeof value === "string" && (DEPLOY_STATUSES as readonly string[]).includes(value);
}
