/**
 * Resource kinds: what an instance owns outside the compute provider (an OpenRouter API key with a
 * spending limit, later an inbox or a phone number). A kind is a plugin with the contract below; the
 * pool records every resource in Postgres BEFORE asking the kind to make it (intent first, as for
 * instances), deletes it when its instance goes, and reconciles the kind's listing against its rows.
 *
 * The contract that matters most is `list()`, as for providers: ONE call's worth of work that returns
 * everything the vendor holds (ours and others'), and says when it could not return all of it. The
 * reconciler never deletes anything on a listing that failed or is not complete, and only ever touches
 * resources whose name carries this deployment's owner id.
 */

/** What a kind is asked to make: one resource for one instance. */
export interface ResourceTarget {
  /** Our id of the resource row (recorded before this call). */
  resourceId: string;
  instanceId: string;
  poolId: string;
  /** The name the vendor will know it by (`resourceName`): carries the owner id and the instance id. */
  name: string;
}

/** What a create made. `env` holds secrets: it goes into the instance's environment once, never stored or logged. */
export interface CreatedResource {
  /** The vendor's id for it (OpenRouter: the key's hash), which is not a secret. */
  ref: string;
  env: Record<string, string>;
  /** Spending limit and usage in USD when the vendor has them. */
  limit?: number | null;
  usage?: number | null;
}

/** One resource as the vendor lists it. */
export interface ExternalResource {
  ref: string;
  name: string;
  /** When the vendor made it (the orphan grace counts from here). */
  createdAt: Date;
  limit: number | null;
  usage: number | null;
}

export interface ResourceListing {
  resources: ExternalResource[];
  /** False when part of it could not be read: nothing is deleted on such a listing. */
  complete: boolean;
}

/** What a resource has spent and may still spend (USD). `remaining` null: no limit. */
export interface ResourceUsage {
  limit: number | null;
  usage: number;
  remaining: number | null;
}

export interface ResourceKind {
  /** `openrouter`, `memory`, ... (one resource of a kind per instance). */
  readonly kind: string;
  /** A failure to make it fails the instance's create (cleanly: nothing is left behind). */
  readonly required: boolean;
  /** `boot`: made before the instance's first boot, so its variables are there from the start; `on-demand`: made when asked. */
  readonly when: "boot" | "on-demand";
  /** The largest limit `setLimit` may set (top-ups are bounded by it). */
  readonly maxLimit?: number;
  create(target: ResourceTarget): Promise<CreatedResource>;
  /** Deletes one resource; one that is already gone resolves (deleting twice is not an error). */
  delete(ref: string): Promise<void>;
  /** Everything the vendor holds, in one listing. Throws when the listing failed. */
  list(): Promise<ResourceListing>;
  usage?(ref: string): Promise<ResourceUsage>;
  setLimit?(ref: string, limit: number): Promise<ResourceUsage>;
}

/** What a resource's name says about it. */
export interface ResourceName {
  ownerId: string;
  poolId: string;
  environment: string;
  instanceId: string;
}

const PREFIX = "agent-pool";
const NAME_RE = /^agent-pool:([a-z0-9]{5}):([a-z0-9][a-z0-9-]{0,31}):([A-Za-z0-9._-]{1,32}):([A-Za-z0-9_-]{1,100})$/;

/** The environment as it appears in names: safe characters only, at most 32. */
export function nameEnvironment(environment: string): string {
  const s = environment
    .trim()
    .replace(/[^A-Za-z0-9._-]+/g, "-")
    .slice(0, 32);
  return s === "" ? "-" : s;
}

/**
 * `agent-pool:<owner id>:<pool>:<environment>:<instance id>`. The owner id comes first so that a
 * glance (and the parser) tells ours from another deployment's sharing the vendor account; the pool
 * and environment let several pools and environments share one account (as the earlier system's
 * `assistant-<env>-<id>` did), and the instance id ties the resource to its row.
 */
export function resourceName(n: ResourceName): string {
  return `${PREFIX}:${n.ownerId}:${n.poolId}:${nameEnvironment(n.environment)}:${n.instanceId}`;
}

/** The parts of a name made by `resourceName`, or null for any other name (never ours to touch). */
export function parseResourceName(name: string): ResourceName | null {
  const m = NAME_RE.exec(name);
  if (!m) return null;
  return { ownerId: m[1]!, poolId: m[2]!, environment: m[3]!, instanceId: m[4]! };
}
