/**
 * Which agents an upgrade touches, pure. An upgrade moves a claimed agent to its pool's current
 * template in place; idle instances are not upgraded (a rollout replaces them: new ones first, so
 * the pool keeps its claimable floor). The rules, each with why:
 *
 * - never an agent mid-claim (`claiming`): its claim is provisioning it right now, and a redeploy
 *   would cut that short; it is skipped, and can be upgraded once claimed;
 * - never a protected agent in a bulk job (the point of protection); a single upgrade is the
 *   operator naming that agent, so it may;
 * - only agents (claimed, pending acceptance, crashed with an agent); a crashed instance that never
 *   served anyone is deleted by the next pass anyway;
 * - not one already on the pool's current template.
 */
import type { InstanceRecord, PoolRecord, UpgradeJobScope } from "../db/store.ts";
import type { InstanceStatus } from "../instance/status.ts";

/** Statuses of an agent an upgrade may act on. */
export const UPGRADABLE: readonly InstanceStatus[] = ["claimed", "pending_acceptance", "crashed"];

/** Why an instance is not upgraded in a job of `scope` to `pool`'s template; null: it is. */
export function skipReason(inst: InstanceRecord | null, pool: PoolRecord, scope: UpgradeJobScope): string | null {
  if (!inst || inst.deletedAt !== null || inst.status === "dead") return "gone";
  if (inst.poolId !== pool.id) return `not an instance of pool ${pool.id}`;
  if (inst.status === "claiming") return "being claimed right now (never upgraded mid-claim)";
  if (!UPGRADABLE.includes(inst.status)) {
    return `${inst.status}: only agents (claimed, pending or crashed) are upgraded; idle instances are replaced by rollouts`;
  }
  if (inst.status === "crashed" && inst.agentName === null && inst.claimedAt === null)
    return "crashed before it was handed to anyone (the next pass deletes it)";
  if (inst.protected && scope !== "instance") return "protected";
  if (inst.templateHash === pool.templateHash) return "already on the current template";
  return null;
}

/**
 * The items of a job: for `all`, every agent of the pool on another template (protected ones listed
 * as skipped, so the operator sees them); for ids, each one named (an unknown id is skipped too).
 */
export function planItems(
  pool: PoolRecord,
  scope: UpgradeJobScope,
  rows: readonly InstanceRecord[],
  ids?: readonly string[],
): Array<{ instanceId: string; state: "pending" | "skipped"; fromHash: string | null; detail: string | null }> {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const chosen: string[] =
    scope === "all"
      ? [...byId.values()]
          .filter((r) => r.poolId === pool.id && UPGRADABLE.includes(r.status) && r.templateHash !== pool.templateHash && r.deletedAt === null)
          .filter((r) => !(r.status === "crashed" && r.agentName === null && r.claimedAt === null))
          .map((r) => r.id)
      : [...new Set(ids ?? [])];
  return chosen.map((id) => {
    const inst = byId.get(id) ?? null;
    const reason = inst ? skipReason(inst, pool, scope) : "no such instance";
    return { instanceId: id, state: reason === null ? "pending" : "skipped", fromHash: inst?.templateHash ?? null, detail: reason };
  });
}
