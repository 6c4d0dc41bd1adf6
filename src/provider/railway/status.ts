/**
 * Railway deploy status → our deploy status. Pure.
 *
 * Our vocabulary IS Railway's `DeploymentStatus` (all 13 values, `instance/derive.ts`), so every
 * value passes through unchanged; a value a newer Railway adds passes through as-is too and
 * `deriveStatus` gives it the stuck timeout. Nothing is guessed here: no deployment → null.
 */

/** Railway's `DeploymentStatus` enum, as in the public schema: it is our vocabulary. */
export { DEPLOY_STATUSES as RAILWAY_DEPLOYMENT_STATUSES } from "../../instance/derive.ts";

/** One deployment as the listing selects it. */
export interface DeploymentLike {
  status?: unknown;
  createdAt?: unknown;
  environmentId?: unknown;
}

/** A Railway status string → our deploy status; null/absent/non-string → null. */
export function mapDeployStatus(raw: unknown): string | null {
  if (typeof raw !== "string" || raw.length === 0) return null;
  return raw;
}

/**
 * The deployment that describes our environment's instance: the service instance's own
 * `latestDeployment` (environment-scoped), else the service's newest deployment only when it is in
 * our environment (`Service.deployments` has no environment filter in the schema, so its first
 * entry may belong to another environment sharing the project).
 */
export function pickDeployment(
  latestOfInstance: DeploymentLike | null | undefined,
  newestOfService: DeploymentLike | null | undefined,
  environmentId: string,
): DeploymentLike | null {
  if (latestOfInstance && typeof latestOfInstance === "object") return latestOfInstance;
  if (newestOfService && typeof newestOfService === "object" && newestOfService.environmentId === environmentId) return newestOfService;
  return null;
}
