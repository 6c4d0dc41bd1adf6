/**
 * Release of a claimed agent by an operator (issue 11, `POST /api/pool/instances/:id/release`):
 * the instance is factory-reset through the instance protocol (`POST /convos/reset`, then
 * `GET /convos/status`) and returned to idle when it then reports itself clean, so a used instance
 * is reused instead of destroyed; a runtime that does not come back clean is retired (dead) and
 * deleted at the provider, and the pool replaces it.
 *
 * Races, each settled in the store: the release first takes a hold on the row (its token, one
 * statement, conditional on the status being an agent's, not protected, and no other operation
 * such as an upgrade holding it); its final transition is conditional on that hold. A claim never
 * races it (claims take idle rows only); a pass that saw the reset runtime without its conversation
 * and crashed the agent meanwhile is overtaken (crashed is a source of the edge back to idle); a kill
 * or a pass that retired the row wins, and the release says so.
 */
import { randomId } from "../clock.ts";
import { RELEASED_CLAIM_FIELDS } from "../claim/claim.ts";
import type { InstanceRecord, Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import { factoryReset, type RuntimeResetter } from "../instance/client.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { Logger } from "../logger.ts";
import type { Provider } from "../provider/provider.ts";

/** Statuses an agent can be released from. */
export const RELEASABLE: readonly InstanceStatus[] = ["claimed", "pending_acceptance", "crashed"];

export interface ReleaseOptions {
  store: Store;
  providers: ReadonlyMap<string, Provider>;
  /** The instance protocol (called with the instance's own gateway token). */
  runtime: RuntimeResetter;
  /** Timeout of the reset, and of the status call after it. */
  resetTimeoutMs: number;
  logger: Logger;
  /** A row changed (the reconciler refills or looks sooner). */
  onChanged?: (instance: InstanceRecord) => void;
  newToken?: () => string;
}

export interface ReleaseResult {
  id: string;
  /** idle: reset clean and back in the pool; dead: retired and deleted (or being deleted). */
  status: "idle" | "dead";
  clean: boolean;
  reason: string;
  /** The provider delete of a retired instance failed (the reconciler retries it). */
  deleteError: string | null;
}

/** Why an instance cannot be released now, as a 409 (or a 404), from what its row holds. */
export function releaseRefusal(inst: InstanceRecord | null, id: string): PoolError {
  if (!inst || inst.deletedAt !== null) return new PoolError("INSTANCE_NOT_FOUND", `No instance "${id}".`);
  if (inst.protected)
    return new PoolError("INSTANCE_PROTECTED", `Instance ${inst.id} is protected: unprotect it before releasing it.`, { instanceId: inst.id });
  if (inst.status === "claiming")
    return new PoolError("INVALID_TRANSITION", `Instance ${inst.id} is being claimed right now; try again in a moment.`, { status: inst.status });
  if (inst.operation)
    return new PoolError("OPERATION_IN_PROGRESS", `A ${inst.operation} of instance ${inst.id} is under way; try again once it is done.`, {
      operation: inst.operation,
    });
  return new PoolError("INVALID_TRANSITION", `Only claimed, pending or crashed agents can be released; instance ${inst.id} is ${inst.status}.`, {
    status: inst.status,
  });
}

export async function releaseAgent(o: ReleaseOptions, id: string): Promise<ReleaseResult> {
  const token = `release:${(o.newToken ?? (() => randomId(16)))()}`;
  const begun = await o.store.beginOperation({
    id,
    kind: "release",
    token,
    // The reset and the status call, plus a margin: a release whose process died frees the row then.
    ttlMs: 2 * o.resetTimeoutMs + 30_000,
    from: RELEASABLE,
    refuseProtected: true,
  });
  if (begun.kind === "refused") throw releaseRefusal(begun.instance, id);
  const inst = begun.instance;

  const { clean, why } = await factoryReset(o.runtime, inst, o.resetTimeoutMs);

  const row = clean
    ? await o.store.transition({
        id,
        from: RELEASABLE,
        to: "idle",
        actor: "operator",
        reason: "released by an operator: runtime reset clean",
        set: { ...RELEASED_CLAIM_FIELDS, claimedAt: null, healthFailures: 0, healthError: null },
        fence: { operation: token },
      })
    : await o.store.transition({ id, from: RELEASABLE, to: "dead", actor: "operator", reason: `released by an operator: ${why}`, fence: { operation: token } });
  if (!row) {
    await o.store.endOperation(id, token).catch(() => false);
    const now = await o.store.getInstance(id);
    throw new PoolError("CONFLICT", `Instance ${id} changed meanwhile (it is ${now?.status ?? "gone"} now); nothing was released.`, {
      status: now?.status ?? null,
    });
  }
  o.logger.info({ instanceId: id, clean, status: row.status }, "agent released by an operator");
  let deleteError: string | null = null;
  if (row.status === "dead") deleteError = await deleteAtProvider(o, row);
  o.onChanged?.(row);
  return { id, status: row.status === "idle" ? "idle" : "dead", clean, reason: clean ? "reset clean: back in the pool" : why, deleteError };
}

/** The provider delete of a retired row; on failure the dead row stays and the reconciler retries. */
async function deleteAtProvider(o: ReleaseOptions, row: InstanceRecord): Promise<string | null> {
  try {
    if (row.providerRef) {
      const provider = o.providers.get(row.provider);
      if (!provider) throw new Error(`provider ${row.provider} is not configured in this process`);
      await provider.delete(row.providerRef);
    }
    await o.store.markDeleted(row.id);
    return null;
  } catch (err) {
    const msg = (err as Error).message;
    o.logger.warn({ instanceId: row.id, err: msg }, "provider delete of a released instance failed; the reconciler retries");
    return msg;
  }
}
