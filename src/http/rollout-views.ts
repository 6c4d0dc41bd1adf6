/**
 * What the API shows of a rollout (issue 11): an explicit allow-list of its fields, shared by the
 * routes, the pool view and the client library (src/client/contract.ts). Zod and types only, so the
 * client loads no database code.
 */
import { z } from "zod";
import type { RolloutRecord, RolloutStatus } from "../db/rollouts.ts";

const STATUSES = ["running", "paused", "complete", "halted", "superseded"] as const satisfies readonly RolloutStatus[];

export const RolloutView = z.object({
  id: z.number(),
  pool: z.string(),
  fromHash: z.string().nullable().describe("template hash most old instances were made from (null: unknown)"),
  toHash: z.string().describe("the pool's template hash it brings idle instances to"),
  status: z.enum(STATUSES),
  reason: z.string().describe("why it started: template changed, rolled back, resumed after a halt"),
  haltReason: z
    .string()
    .nullable()
    .describe("why it halted: the failures in a row and their reasons (the provider's error, a crash at boot, a health check that never passed)"),
  progress: z.object({
    updated: z.number().describe("old instances replaced so far"),
    total: z.number().describe("updated + remaining"),
    remaining: z.number().describe("old idle, starting or sleeping instances left to replace (claimed and protected ones keep their template)"),
    created: z.number().describe("new-template instances made since it started"),
    failed: z.number().describe("of those, how many failed before becoming idle"),
    failuresInARow: z.number(),
    inFlight: z.number().describe("new-template instances starting now (at most max surge from the rollout)"),
    claimable: z.number().nullable().describe("idle, unprotected instances at the last pass"),
    minClaimable: z.number().nullable().describe("the fewest claimable instances a pass of it saw"),
  }),
  target: z.number().describe("the warm size it keeps (idle, starting and sleeping instances when it started, at least min idle)"),
  maxSurge: z.number(),
  haltAfter: z.number().describe("failed creates in a row that halt it (ROLLOUT_HALT_AFTER)"),
  startedAt: z.string(),
  updatedAt: z.string(),
  finishedAt: z.string().nullable(),
});
export type RolloutView = z.infer<typeof RolloutView>;

export const RolloutStateView = z.object({
  pool: z.string(),
  current: RolloutView.nullable().describe("the pool's newest rollout, whatever its status (null: it never had one)"),
  history: z.array(RolloutView).describe("earlier rollouts, newest first"),
});
export const RolloutActionView = z.object({ rollout: RolloutView });

export function rolloutView(r: RolloutRecord): RolloutView {
  return {
    id: r.id,
    pool: r.poolId,
    fromHash: r.fromHash,
    toHash: r.toHash,
    status: r.status,
    reason: r.reason,
    haltReason: r.haltReason,
    progress: {
      updated: r.retired,
      total: r.retired + r.remaining,
      remaining: r.remaining,
      created: r.created,
      failed: r.failed,
      failuresInARow: r.failuresInARow,
      inFlight: r.inFlight,
      claimable: r.claimable,
      minClaimable: r.minClaimable,
    },
    target: r.target,
    maxSurge: r.maxSurge,
    haltAfter: r.haltAfter,
    startedAt: r.startedAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
    finishedAt: r.finishedAt?.toISOString() ?? null,
  };
}
