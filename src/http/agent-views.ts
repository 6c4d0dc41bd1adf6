/**
 * What the API shows of operators' actions on agents (issue 11): a release's outcome, upgrade jobs
 * with their progress, and a pool's versions. Schemas only (zod), so the client imports them
 * without the server; the routes are in agent-routes.ts.
 */
import { z } from "zod";
import type { UpgradeJobRecord } from "../db/store.ts";
import { INSTANCE_STATUSES } from "../instance/status.ts";

export const ReleaseResultView = z.object({
  ok: z.boolean(),
  id: z.string(),
  status: z.enum(["idle", "dead"]).describe("idle: reset clean and back in the pool; dead: retired, deleted at the provider and replaced"),
  clean: z.boolean().describe("the runtime reported itself clean after the reset"),
  reason: z.string(),
  deleteError: z.string().nullable().describe("the provider delete of a retired instance failed (the reconciler retries it)"),
});

export const UPGRADE_ITEM_STATES = ["pending", "running", "upgraded", "failed", "skipped"] as const;

export const UpgradeItemView = z.object({
  instanceId: z.string(),
  state: z.enum(UPGRADE_ITEM_STATES),
  detail: z.string().nullable().describe("why it was skipped or failed, or what was deployed"),
  fromHash: z.string().nullable().describe("its template hash when the job was asked for"),
  toHash: z.string().nullable().describe("the template hash it was upgraded to"),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});

export const UpgradeJobView = z.object({
  id: z.string(),
  pool: z.string(),
  templateHash: z.string().describe("the pool's template hash when the job was asked for"),
  scope: z.enum(["instance", "ids", "all"]),
  state: z.enum(["running", "done"]),
  runner: z.string().describe("the pool-manager process running it"),
  resumed: z.number().describe("times another runner took it over after its runner stopped (a restart)"),
  total: z.number(),
  done: z.number().describe("agents upgraded"),
  failed: z.number(),
  skipped: z.number().describe("agents not touched: protected (in bulk), mid-claim, not agents, already current"),
  remaining: z.number().describe("agents still to upgrade"),
  createdAt: z.string(),
  updatedAt: z.string(),
  heartbeatAt: z.string(),
  finishedAt: z.string().nullable(),
  items: z.array(UpgradeItemView),
});
export type UpgradeJobView = z.infer<typeof UpgradeJobView>;

export const UpgradeJobAnswer = z.object({ job: UpgradeJobView });
export const UpgradeJobsAnswer = z.object({ jobs: z.array(UpgradeJobView) });

/** `{ids}` or `{all: true}`: exactly one. */
export const PoolUpgradeBody = z
  .object({
    ids: z.array(z.string().min(1).max(100)).min(1).max(1_000).optional().describe("agents to upgrade"),
    all: z.literal(true).optional().describe("every agent of the pool on an older template"),
  })
  .strict()
  .refine((b) => (b.ids !== undefined) !== (b.all === true), "give `ids` or `all: true`, not both and not neither");

export const VersionRowView = z.object({
  templateHash: z.string().nullable(),
  current: z.boolean().describe("the pool's current template"),
  runtimeType: z.string().nullable().describe("what the runtime says it is on /pool/health"),
  runtimeVersion: z.string().nullable(),
  status: z.enum(INSTANCE_STATUSES),
  count: z.number(),
});

export const VersionsView = z.object({
  pool: z.string(),
  templateHash: z.string().describe("the pool's current template hash"),
  versions: z.array(VersionRowView),
});

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

export function upgradeJobView(job: UpgradeJobRecord): UpgradeJobView {
  const n = (s: string) => job.items.filter((i) => i.state === s).length;
  return {
    id: job.id,
    pool: job.poolId,
    templateHash: job.templateHash,
    scope: job.scope,
    state: job.state,
    runner: job.runner,
    resumed: job.resumed,
    total: job.items.length,
    done: n("upgraded"),
    failed: n("failed"),
    skipped: n("skipped"),
    remaining: n("pending") + n("running"),
    createdAt: job.createdAt.toISOString(),
    updatedAt: job.updatedAt.toISOString(),
    heartbeatAt: job.heartbeatAt.toISOString(),
    finishedAt: iso(job.finishedAt),
    items: job.items.map((i) => ({
      instanceId: i.instanceId,
      state: i.state,
      detail: i.detail,
      fromHash: i.fromHash,
      toHash: i.toHash,
      startedAt: iso(i.startedAt),
      finishedAt: iso(i.finishedAt),
    })),
  };
}
