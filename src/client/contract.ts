/**
 * The API's request and response schemas as the client sees them: the server's own zod schemas
 * (src/http/api.ts, src/http/views.ts), re-exported, so a field added or renamed on the server
 * changes the client's types in the same commit. The few responses the server declares inline in
 * its route (a list wrapped in an object, an instance with its events) are composed here from the
 * same element schemas; test/client.test.ts checks every response schema of this file against the
 * server's OpenAPI document, so these wrappers cannot drift either.
 *
 * Importing this module loads zod and the schema modules only (their other imports are types):
 * no Fastify, no database driver.
 */
import { z } from "zod";
import { AgentView, ClaimBody, ClaimResult, DrainResult, Killed, ReplenishResult, Summary, TickResultView } from "../http/api.ts";
import { CountsView, ErrorView, EventView, InstanceView } from "../http/views.ts";
import { RolloutActionView, RolloutStateView, RolloutView } from "../http/rollout-views.ts";
import { PoolWithCounts } from "../http/pool-routes.ts";

export { AgentView, ClaimBody, ClaimResult, CountsView, DrainResult, ErrorView, EventView, InstanceView, Killed, ReplenishResult, Summary, TickResultView };
export { PoolWithCounts, RolloutActionView, RolloutStateView, RolloutView };

/** GET /api/pool/status. */
export const StatusView = Summary.extend({ instances: z.array(InstanceView) });
/** GET /api/pool/agents. */
export const AgentsView = z.object({ agents: z.array(AgentView) });
/** GET /api/pool/instances/:id. */
export const InstanceDetailView = z.object({ instance: InstanceView, events: z.array(EventView) });
/** GET /version. */
export const VersionView = z.object({ version: z.string(), commit: z.string().nullable() });

/** What a claim may say: every field optional (agentName/instructions default on the server). */
export type ClaimInput = z.input<typeof ClaimBody>;
export type ClaimResult = z.infer<typeof ClaimResult>;
export type Counts = z.infer<typeof CountsView>;
export type Summary = z.infer<typeof Summary>;
export type Status = z.infer<typeof StatusView>;
export type Agent = z.infer<typeof AgentView>;
export type Agents = z.infer<typeof AgentsView>;
export type Instance = z.infer<typeof InstanceView>;
export type InstanceDetail = z.infer<typeof InstanceDetailView>;
export type ReplenishResult = z.infer<typeof ReplenishResult>;
export type DrainResult = z.infer<typeof DrainResult>;
export type Killed = z.infer<typeof Killed>;
export type TickResult = z.infer<typeof TickResultView>;
export type Version = z.infer<typeof VersionView>;
export type ErrorBody = z.infer<typeof ErrorView>;
/** A pool's rollouts (issue 11): the current one and the history; the answer of pause / resume. */
export type Rollout = z.infer<typeof RolloutView>;
export type RolloutState = z.infer<typeof RolloutStateView>;
export type RolloutAction = z.infer<typeof RolloutActionView>;
/** A pool with its counts and newest rollout (the answer of a rollback). */
export type PoolWithCounts = z.infer<typeof PoolWithCounts>;

/**
 * Each call of the client: its route and the schema of its 200 answer (the drift test walks this
 * table against the OpenAPI document).
 */
export const ROUTES = {
  claim: { method: "POST", path: "/api/pool/claim", response: ClaimResult },
  status: { method: "GET", path: "/api/pool/status", response: StatusView },
  counts: { method: "GET", path: "/api/pool/counts", response: CountsView },
  summary: { method: "GET", path: "/api/pool/summary", response: Summary },
  agents: { method: "GET", path: "/api/pool/agents", response: AgentsView },
  instance: { method: "GET", path: "/api/pool/instances/{id}", response: InstanceDetailView },
  replenish: { method: "POST", path: "/api/pool/replenish", response: ReplenishResult },
  drain: { method: "POST", path: "/api/pool/drain", response: DrainResult },
  reconcile: { method: "POST", path: "/api/pool/reconcile", response: TickResultView },
  kill: { method: "DELETE", path: "/api/pool/instances/{id}", response: Killed },
  dismiss: { method: "DELETE", path: "/api/pool/crashed/{id}", response: Killed },
  version: { method: "GET", path: "/version", response: VersionView },
  rollout: { method: "GET", path: "/api/pools/{id}/rollout", response: RolloutStateView },
  pauseRollout: { method: "POST", path: "/api/pools/{id}/rollout/pause", response: RolloutActionView },
  resumeRollout: { method: "POST", path: "/api/pools/{id}/rollout/resume", response: RolloutActionView },
  rollBack: { method: "POST", path: "/api/pools/{id}/rollback", response: PoolWithCounts },
} as const;
