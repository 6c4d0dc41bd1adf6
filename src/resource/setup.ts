/**
 * Which resource kinds this deployment gives its instances, from the configuration, and the pieces
 * that run them: the service (the actuator's hook, the instance routes, the dashboard) and the
 * resource reconciler. Null when no kind is configured: instances then get no resources, and the
 * pool pays nothing for the machinery (no listing, no query per pass).
 */
import type { Registry } from "prom-client";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Store } from "../db/store.ts";
import type { Logger } from "../logger.ts";
import type { ResourceKind } from "./kind.ts";
import { ResourceMetrics } from "./metrics.ts";
import { OpenRouterKind } from "./openrouter.ts";
import { ResourceReconciler } from "./reconciler.ts";
import { ResourceService } from "./service.ts";

export interface ResourceSetup {
  kinds: readonly ResourceKind[];
  service: ResourceService;
  reconciler: ResourceReconciler;
}

export type ResourceConfig = Pick<
  Config,
  | "POOL_ENVIRONMENT"
  | "OPENROUTER_PROVISIONING_KEY"
  | "OPENROUTER_API_URL"
  | "OPENROUTER_KEY_LIMIT"
  | "OPENROUTER_KEY_LIMIT_MAX"
  | "OPENROUTER_REQUEST_TIMEOUT_MS"
  | "RESOURCE_TICK_INTERVAL_MS"
  | "RESOURCE_ORPHAN_GRACE_MS"
  | "MAX_RESOURCE_DELETES_PER_TICK"
>;

/** The kinds the configuration asks for (OpenRouter keys when a provisioning key is set). */
export function kindsFromConfig(config: ResourceConfig): ResourceKind[] {
  const kinds: ResourceKind[] = [];
  if (config.OPENROUTER_PROVISIONING_KEY) {
    kinds.push(
      new OpenRouterKind({
        apiUrl: config.OPENROUTER_API_URL,
        provisioningKey: config.OPENROUTER_PROVISIONING_KEY,
        keyLimit: config.OPENROUTER_KEY_LIMIT,
        maxLimit: config.OPENROUTER_KEY_LIMIT_MAX,
        requestTimeoutMs: config.OPENROUTER_REQUEST_TIMEOUT_MS,
      }),
    );
  }
  return kinds;
}

export function resourcesFromConfig(
  config: ResourceConfig,
  deps: { store: Store; ownerId: string; clock: Clock; logger: Logger; registry: Registry; holder?: string; kinds?: ResourceKind[] },
): ResourceSetup | null {
  const configured = deps.kinds ?? kindsFromConfig(config);
  if (configured.length === 0) return null;
  const metrics = new ResourceMetrics(deps.registry, deps.store);
  const kinds = configured.map((k) => metrics.meter(k));
  const logger = deps.logger.child({ component: "resources" });
  const service = new ResourceService({ store: deps.store, kinds, ownerId: deps.ownerId, environment: config.POOL_ENVIRONMENT, logger });
  const reconciler = new ResourceReconciler({
    store: deps.store,
    kinds,
    ownerId: deps.ownerId,
    clock: deps.clock,
    logger,
    orphanGraceMs: config.RESOURCE_ORPHAN_GRACE_MS,
    maxDeletesPerPass: config.MAX_RESOURCE_DELETES_PER_TICK,
    intervalMs: config.RESOURCE_TICK_INTERVAL_MS,
    ...(deps.holder ? { holder: deps.holder } : {}),
    onPass: (r) => metrics.onPass(r),
  });
  return { kinds, service, reconciler };
}
