/**
 * Instance statuses and the table of allowed transitions.
 *
 * Every status change in the store is a conditional update (`WHERE status = <expected>`)
 * checked against this table first, so a stale writer (a late health check, a second
 * replica, a retried request) can never move an instance along an edge that is not here.
 * The earlier system let out-of-order webhooks downgrade recovered instances and left
 * rows stuck in `claiming` forever (seed-system §8); the table is the cure for both.
 */

export const INSTANCE_STATUSES = ["starting", "idle", "claiming", "claimed", "pending_acceptance", "crashed", "dead", "sleeping"] as const;

export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];

/**
 * Who may perform a transition. `claiming` may only be left by the claim path or the sweeper.
 * `instance`: the instance itself, through its own routes (`/api/instance/…`, authenticated by its
 * id and gateway token); it can only ever act on its own row.
 */
export type TransitionActor = "reconciler" | "claim" | "sweeper" | "operator" | "instance";

type Edge = readonly [from: InstanceStatus, to: InstanceStatus, actors: readonly TransitionActor[]];

const R = "reconciler";
const C = "claim";
const S = "sweeper";
const O = "operator";
const I = "instance";

/**
 * The transition table. `dead` is terminal for the row (the provider resource is deleted and the
 * row kept for the event log). `crashed` means "had an agent, now broken": an operator dismisses it.
 */
const EDGES: readonly Edge[] = [
  // Boot.
  ["starting", "idle", [R]],
  ["starting", "dead", [R, O, I]],
  ["starting", "sleeping", [R]],
  // Warm and waiting.
  ["idle", "claiming", [C]],
  ["idle", "starting", [R]], // provider redeployed it: wait for it to be healthy again
  ["idle", "dead", [R, O, I]],
  ["idle", "sleeping", [R]],
  // Claim path: only the claimer or the stale-claim sweeper leaves `claiming`.
  ["claiming", "claimed", [C, S]],
  ["claiming", "pending_acceptance", [C, S]],
  ["claiming", "idle", [C, S]],
  ["claiming", "crashed", [C, S]],
  // Bound to a conversation. The instance reports an accepted join itself (at once, instead of at
  // the next pass), or a refused one (the agent serves nobody: retired like a pending timeout).
  ["pending_acceptance", "claimed", [R, C, I]],
  ["pending_acceptance", "crashed", [R]],
  // A join never accepted within the pending timeout: the agent served nobody; free its slot.
  ["pending_acceptance", "dead", [O, R, I]],
  ["claimed", "crashed", [R]],
  ["claimed", "dead", [O, I]],
  // Broken agents wait for an operator (kill / dismiss), or recover if the runtime comes back bound.
  ["crashed", "claimed", [R]],
  ["crashed", "dead", [O, R, I]],
  // An agent's own reset (`self/reset`) or an operator's release (`POST …/release`): the pool
  // factory-resets the runtime through the instance protocol and returns the row to idle ONLY when
  // the runtime then reports itself clean (else it is retired to dead), so a used instance is reused
  // instead of destroyed. Never the reconciler's decision: a runtime that merely looks clean is not
  // recycled (seed-system §8, #280). Crashed is a source too: a release racing a pass that saw the
  // reset runtime without its conversation (and crashed the agent) still ends on its verified reset.
  ["claimed", "idle", [I, O]],
  ["pending_acceptance", "idle", [I, O]],
  ["crashed", "idle", [I, O]],
  ["sleeping", "starting", [R]],
  ["sleeping", "idle", [R]],
  ["sleeping", "crashed", [R]],
  ["sleeping", "dead", [R, O, I]],
];

const ALLOWED = new Map<string, readonly TransitionActor[]>(EDGES.map(([f, t, a]) => [`${f}>${t}`, a]));

/** True when `actor` may move an instance from `from` to `to`. */
export function canTransition(from: InstanceStatus, to: InstanceStatus, actor: TransitionActor): boolean {
  return ALLOWED.get(`${from}>${to}`)?.includes(actor) ?? false;
}

/** Every allowed edge, for documentation and tests. */
export function transitionTable(): readonly Edge[] {
  return EDGES;
}

/** Statuses whose instance still exists at the provider and counts against `max total`. */
export const LIVE_STATUSES: readonly InstanceStatus[] = INSTANCE_STATUSES.filter((s) => s !== "dead");

/** Statuses in which the instance carries (or is about to carry) a user's agent. */
export const BOUND_STATUSES: readonly InstanceStatus[] = ["claiming", "claimed", "pending_acceptance"];

export function isInstanceStatus(value: unknown): value is InstanceStatus {
  return typeof value === "string" && (INSTANCE_STATUSES as readonly string[]).includes(value);
}

export type StatusCounts = Record<InstanceStatus, number>;

export function emptyCounts(): StatusCounts {
  return Object.fromEntries(INSTANCE_STATUSES.map((s) => [s, 0])) as StatusCounts;
}
