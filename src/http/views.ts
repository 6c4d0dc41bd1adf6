/**
 * What the API shows of an instance: an explicit allow-list, so a column added to the table
 * (a token, a key) never reaches a response by accident.
 */
import { z } from "zod";
import { INSTANCE_STATUSES, type StatusCounts } from "../instance/status.ts";
import type { InstanceEvent, InstanceRecord } from "../db/store.ts";

export const InstanceView = z.object({
  id: z.string(),
  pool: z.string(),
  name: z.string(),
  provider: z.string(),
  providerRef: z.string().nullable(),
  url: z.string().nullable(),
  status: z.enum(INSTANCE_STATUSES),
  deployStatus: z.string().nullable(),
  runtimeVersion: z.string().nullable(),
  /** What the runtime says it is on /pool/health (`runtime`). */
  runtimeType: z.string().nullable(),
  image: z.string().nullable(),
  /** Hash of the pool template it was made from (compare with its pool's `templateHash`). */
  templateHash: z.string().nullable(),
  protected: z.boolean(),
  health: z.object({
    checkedAt: z.string().nullable(),
    okAt: z.string().nullable(),
    consecutiveFailures: z.number(),
    error: z.string().nullable(),
  }),
  agentName: z.string().nullable(),
  instructions: z.string().nullable(),
  conversationId: z.string().nullable(),
  inviteUrl: z.string().nullable(),
  joinUrl: z.string().nullable(),
  /** Where the claim came from (the claim body's `source`, e.g. "landing"; "dashboard"), null when it said nothing. */
  claimSource: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
  statusChangedAt: z.string(),
  claimedAt: z.string().nullable(),
  deletedAt: z.string().nullable(),
});
export type InstanceView = z.infer<typeof InstanceView>;

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

export function instanceView(r: InstanceRecord): InstanceView {
  return {
    id: r.id,
    pool: r.poolId,
    name: r.name,
    provider: r.provider,
    providerRef: r.providerRef,
    url: r.url,
    status: r.status,
    deployStatus: r.deployStatus,
    runtimeVersion: r.runtimeVersion,
    runtimeType: r.runtimeType,
    templateHash: r.templateHash,
    protected: r.protected,
    image: r.image,
    health: { checkedAt: iso(r.healthCheckedAt), okAt: iso(r.healthOkAt), consecutiveFailures: r.healthFailures, error: r.healthError },
    agentName: r.agentName,
    instructions: r.instructions,
    conversationId: r.conversationId,
    inviteUrl: r.inviteUrl,
    joinUrl: r.joinUrl,
    claimSource: r.claimSource,
    createdAt: r.createdAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
    statusChangedAt: r.statusChangedAt.toISOString(),
    claimedAt: iso(r.claimedAt),
    deletedAt: iso(r.deletedAt),
  };
}

export const EventView = z.object({
  id: z.number(),
  from: z.string().nullable(),
  to: z.string(),
  actor: z.string(),
  reason: z.string(),
  at: z.string(),
});

export function eventView(e: InstanceEvent): z.infer<typeof EventView> {
  return { id: e.id, from: e.fromStatus, to: e.toStatus, actor: e.actor, reason: e.reason, at: e.at.toISOString() };
}

export const CountsView = z
  .object(Object.fromEntries(INSTANCE_STATUSES.map((s) => [s, z.number()])) as Record<(typeof INSTANCE_STATUSES)[number], z.ZodNumber>)
  .extend({
    total: z.number(),
  });

export function countsView(c: StatusCounts): z.infer<typeof CountsView> {
  let total = 0;
  for (const s of INSTANCE_STATUSES) if (s !== "dead") total += c[s];
  return { ...c, total };
}

/** `{error, code}`, plus the safe details a code carries (e.g. `instanceId` of ALREADY_JOINED). */
export const ErrorView = z
  .object({ error: z.string(), code: z.string(), instanceId: z.string().optional(), retryAfter: z.number().optional(), attempts: z.number().optional() })
  .loose();
