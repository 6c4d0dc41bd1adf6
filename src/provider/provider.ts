/**
 * The provider interface: what agent-pool needs from a compute platform.
 *
 * The contract that matters most is `list()`: it returns everything the provider runs for this
 * pool in ONE call (the earlier system's 1+N calls per tick used 82% of Railway's hourly budget),
 * and it either returns a listing that is complete, or says it is not, or throws. The reconciler
 * never deletes or declares anything gone on a listing that failed or is not complete.
 */

/** One instance as the provider sees it. */
export interface ProviderInstance {
  /** Provider's own id for the resource (Railway service id, local `local:<instanceId>`). */
  ref: string;
  /** Our instance id, when the provider can tell (from the service name or the process env). */
  instanceId: string | null;
  name: string;
  /** Deploy status in Railway's vocabulary (see `instance/derive.ts`); null when unknown. */
  deployStatus: string | null;
  /** Base URL the instance protocol is served on, or null when not known yet. */
  url: string | null;
  /** Image or runtime command/version the instance was created from. */
  image: string | null;
  createdAt: Date;
  /**
   * The owner id the resource carries (the deployment that made it), or null when it carries none
   * (made by a version before owner ids). The reconciler touches only resources of its own owner;
   * one of another owner is reported and never deleted or adopted, and one without an owner is
   * adopted only when a row of this database matches it.
   */
  owner: string | null;
}

export interface ProviderListing {
  /** Every resource that looks like one of this pool's (by name), whatever owner it carries. */
  instances: ProviderInstance[];
  /**
   * False when the provider could only return part of the fleet (a page failed, a project was
   * unreadable). Deletions and "gone" decisions are skipped for the whole pass when false.
   */
  complete: boolean;
}

export interface CreateInstanceSpec {
  instanceId: string;
  /** Pool the instance belongs to; providers put it in the resource name. */
  poolId: string;
  name: string;
  /** Per-instance secret the pool uses to talk to the instance. */
  gatewayToken: string;
  /** The deployment's owner id: the resource must carry it, where `list()` can read it back. */
  ownerId: string;
  /** Extra environment for the runtime (operator-given and pool settings). */
  env: Record<string, string>;
  /** Image to run (Railway), from the pool's template; null/undefined: the provider's default. */
  image?: string | null;
  /** argv to run (local provider), from the pool's template; null/undefined: the provider's default. */
  command?: string[] | null;
}

/**
 * What an upgrade of a running instance (a claimed agent, issue 11) runs from now on: its pool's
 * current template. The instance keeps its id, its gateway token and its address, and its own
 * variables (its resources' keys, made once at its create): the template's environment is laid
 * over what it has, never in place of it.
 */
export interface UpgradeInstanceSpec {
  instanceId: string;
  poolId: string;
  gatewayToken: string;
  /** The deployment's owner id (the resource carries it already; a provider checks it is ours). */
  ownerId: string;
  /** The template's environment (INSTANCE_ENV_*, the pool's env, the pool manager's variables). */
  env: Record<string, string>;
  /** Image to run (Railway); null/undefined: the provider's default. */
  image?: string | null;
  /** argv to run (local provider); null/undefined: the provider's default. */
  command?: string[] | null;
}

/** What a provider's API budget looks like right now (from its rate-limit headers). */
export interface ProviderBudget {
  /** Requests allowed in the current window, when the provider says. */
  limit: number | null;
  /** Requests left in it (Railway: `X-RateLimit-Remaining`). */
  remaining: number | null;
  /** Renames that failed and wait for a retry. */
  pendingRenames: number;
}

export interface Provider {
  /** `local`, `railway`, `memory`. */
  readonly kind: string;
  /** Everything this provider runs for the pool, in one call. Throws when the listing fails. */
  list(): Promise<ProviderListing>;
  /** Creates and starts one instance. Throws when it could not; must not leak a half-made one. */
  create(spec: CreateInstanceSpec): Promise<ProviderInstance>;
  /** Deletes one instance. Deleting one that is already gone succeeds. */
  delete(ref: string): Promise<void>;
  /**
   * Moves a running instance to a new template in place (Railway: redeploy the service with the new
   * image and its variables; local: restart the process with the new command). Resolves once the
   * provider took the change; the new deployment's health is the observer's to judge, like any
   * other. Providers that cannot leave it out.
   */
  upgrade?(ref: string, spec: UpgradeInstanceSpec): Promise<void>;
  /** Renames one instance, for visibility in the provider's console. */
  rename(ref: string, name: string): Promise<void>;
  /** The resource name this provider gives an instance of a pool (Railway caps names at 32 characters). */
  serviceName?(instanceId: string, poolId?: string): string;
  /** The pools the provider serves (their resources are in its one listing); told every pass. */
  knowPools?(poolIds: readonly string[]): void;
  /** The name a rename to `requested` actually gives (Railway fits names to 32 characters). */
  nameFor?(requested: string): string;
  /** True while a failed rename of `ref` waits in the provider's own retry queue. */
  renamePending?(ref: string): boolean;
  /** The API budget, for metrics; providers without one (local) leave it out. */
  budget?(): ProviderBudget;
  /** Releases what the provider holds in this process (timers, sockets, local processes). */
  close(): Promise<void>;
}
