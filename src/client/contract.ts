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
import { PoolView, PoolWithCounts } from "../http/pool-routes.ts";
import {
  PoolUpgradeBody,
  ReleaseResultView,
  UpgradeItemView,
  UpgradeJobAnswer,
  UpgradeJobsAnswer,
  UpgradeJobView,
  VersionRowView,
  VersionsView,
} from "../http/agent-views.ts";

export { AgentView, ClaimBody, ClaimResult, CountsView, DrainResult, ErrorView, EventView, InstanceView, Killed, ReplenishResult, Summary, TickResultView };
export { RolloutActionView, RolloutStateView, RolloutView };
export { PoolView, PoolUpgradeBody, ReleaseResultView, UpgradeItemView, UpgradeJobAnswer, UpgradeJobsAnswer, UpgradeJobView, VersionRowView, VersionsView };

/** GET /api/pool/status. */
export const StatusView = Summary.extend({ instances: z.array(InstanceView) });
/** GET /api/pool/agents. */
export const AgentsView = z.object({ agents: z.array(AgentView) });
/** GET /api/pool/instances/:id. */
export const InstanceDetailView = z.object({ instance: InstanceView, events: z.array(EventView) });
/** GET /version. */
export const VersionView = z.object({ version: z.string(), commit: z.string().nullable() });

/** GET /api/pools/:id, POST /api/pools (201). */
/** A pool with its counts and newest rollout: the server's own schema. */
export const PoolWithCountsView = PoolWithCounts;
/** GET /api/pools. */
export const PoolsView = z.object({ pools: z.array(PoolWithCountsView) });
/** PATCH /api/pools/:id. */
export const PoolChangedView = PoolWithCountsView.extend({ templateChanged: z.boolean() });
/** DELETE /api/pools/:id. */
export const PoolDeletedView = z.object({ ok: z.boolean(), id: z.string() });
/** POST /api/pool/instances/:id/protect. */
export const ProtectedView = z.object({ instance: InstanceView });

/**
 * A pool's settings as a create or a change takes them (the server validates them again, with the
 * same rules as the configuration file: src/pool/template.ts). In a change, an env value sent back
 * as the mask (`••••••`) keeps the stored secret.
 */
export interface PoolSettingsInput {
  id?: string;
  runtime?: string;
  provider?: "local" | "railway" | null;
  image?: string | null;
  command?: string[] | null;
  env?: Record<string, string>;
  minIdle?: number;
  maxTotal?: number;
  claimAgentName?: string | null;
  claimInstructions?: string | null;
  joinUrlHosts?: string[] | null;
  maxSurge?: number;
  /** How many idle instances the pool keeps (issue 13): `{mode: "fixed"}` or `{mode: "demand", …}`. */
  sizing?: SizingInput;
}

/** A sizing policy as a create or change takes it; fields left out of `demand` take their defaults. */
export type SizingInput =
  | { mode: "fixed" }
  | {
      mode: "demand";
      floor?: number;
      ceiling?: number | null;
      safetyFactor?: number;
      windowMinutes?: number;
      cooldownMinutes?: number;
      timeZone?: string;
      schedule?: Array<{ days: Array<"sun" | "mon" | "tue" | "wed" | "thu" | "fri" | "sat">; from: string; to: string; floor: number }>;
    };

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
export type Pool = z.infer<typeof PoolView>;
export type PoolWithCounts = z.infer<typeof PoolWithCountsView>;
export type Pools = z.infer<typeof PoolsView>;
export type PoolChanged = z.infer<typeof PoolChangedView>;
export type PoolDeleted = z.infer<typeof PoolDeletedView>;
export type Protected = z.infer<typeof ProtectedView>;
export type ReleaseResult = z.infer<typeof ReleaseResultView>;
export type UpgradeJob = z.infer<typeof UpgradeJobView>;
export type UpgradeItem = z.infer<typeof UpgradeItemView>;
export type UpgradeJobs = z.infer<typeof UpgradeJobsAnswer>;
export type Versions = z.infer<typeof VersionsView>;
export type VersionRow = z.infer<typeof VersionRowView>;
/** `{ids}` or `{all: true}`. */
export type PoolUpgradeInput = z.input<typeof PoolUpgradeBody>;

/**
 * Each call of the client: its route and the schema of its answer, a 200 unless `status` says
 * otherwise (the drift test walks this table against the OpenAPI document).
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
  rollBack: { method: "POST", path: "/api/pools/{id}/rollback", response: PoolWithCountsView },
  // Pools, protection, release, upgrades and versions (issue 11).
  pools: { method: "GET", path: "/api/pools", response: PoolsView },
  pool: { method: "GET", path: "/api/pools/{id}", response: PoolWithCountsView },
  createPool: { method: "POST", path: "/api/pools", response: PoolWithCountsView, status: "201" },
  updatePool: { method: "PATCH", path: "/api/pools/{id}", response: PoolChangedView },
  deletePool: { method: "DELETE", path: "/api/pools/{id}", response: PoolDeletedView },
  protect: { method: "POST", path: "/api/pool/instances/{id}/protect", response: ProtectedView },
  release: { method: "POST", path: "/api/pool/instances/{id}/release", response: ReleaseResultView },
  upgrade: { method: "POST", path: "/api/pool/instances/{id}/upgrade", response: UpgradeJobAnswer, status: "202" },
  upgradePool: { method: "POST", path: "/api/pools/{id}/upgrade", response: UpgradeJobAnswer, status: "202" },
  upgradeJob: { method: "GET", path: "/api/upgrades/{id}", response: UpgradeJobAnswer },
  upgradeJobs: { method: "GET", path: "/api/pools/{id}/upgrades", response: UpgradeJobsAnswer },
  versions: { method: "GET", path: "/api/pools/{id}/versions", response: VersionsView },
} as const;
