/**
 * One client's claim in the fault run, as a careful client would make it:
 * - with an idempotency key, every answer that leaves the outcome open (no answer, 409
 *   CLAIM_IN_PROGRESS, 503 NOT_READY) is retried with the same key on the next replica: the key is
 *   what makes that safe;
 * - without a key, only a refused connection (the request never arrived) or NOT_READY is retried;
 *   a connection cut mid-request is reported as a failure (the agent may exist; nobody knows it);
 * - a keyed claim that succeeded may be replayed once on another replica: same instance expected;
 * - most clients let their agent go after a while (DELETE /api/pool/instances/:id, retried on
 *   another replica after no answer or NOT_READY), so the pool keeps creating and deleting.
 */
import type { ClaimAttempt, ClaimRecord } from "./checks.ts";
import type { ClaimBody, PoolClient, Replica } from "./cluster.ts";
import type { PlannedClaim } from "./schedule.ts";

/** A client gives up on one claim after this long (a keyed claim cut off by the SIGKILL needs ~13 s). */
const CLIENT_DEADLINE_MS = 60_000;
const RETRY_PAUSE_MS = 300;

export async function runClaim(plan: PlannedClaim, replicas: readonly Replica[], client: PoolClient, t0: number): Promise<ClaimRecord> {
  const body: ClaimBody = { agentName: `Agent ${plan.index}`, instructions: `Chaos claim ${plan.index}.`, ...(plan.waitMs ? { waitMs: plan.waitMs } : {}) };
  const rec: ClaimRecord = { plan, attempts: [], outcome: "failed", failure: null, instanceId: null, conversationId: null, replay: null, release: null };
  const deadline = Date.now() + CLIENT_DEADLINE_MS;
  const keyed = plan.key !== null;
  let r = plan.replica;
  for (;;) {
    const a = await attempt(client, replicas[r % replicas.length]!, body, plan.key, t0);
    rec.attempts.push(a);
    if (a.status === 200) {
      rec.outcome = "ok";
      rec.instanceId = a.instanceId;
      rec.conversationId = a.conversationId;
      break;
    }
    if (a.status === 503 && a.code === "POOL_EMPTY") {
      rec.outcome = "empty";
      break;
    }
    if (!openOutcome(a, keyed) || Date.now() > deadline) {
      rec.outcome = "failed";
      rec.failure = a.status === null ? `no answer (${a.error})` : `${a.status} ${a.code}`;
      break;
    }
    await delay(RETRY_PAUSE_MS);
    r++;
  }
  if (rec.outcome === "ok" && plan.replay) {
    // Another replica than the one that answered.
    for (let k = r + 1; ; k++) {
      const a = await attempt(client, replicas[k % replicas.length]!, body, plan.key, t0);
      rec.replay = a;
      if (a.status === 200 || !openOutcome(a, true) || Date.now() > deadline) break;
      await delay(RETRY_PAUSE_MS);
    }
  }
  if (rec.outcome === "ok" && plan.releaseAfterMs !== null) {
    await delay(plan.releaseAfterMs);
    // The time of the FIRST request: one cut off by a kill may still have deleted the agent.
    const atMs = Date.now() - t0;
    for (let k = plan.replica + 2; ; k++) {
      const replica = replicas[k % replicas.length]!;
      const res = await client.call(replica, "DELETE", `/api/pool/instances/${encodeURIComponent(rec.instanceId!)}`);
      const code = (res.json as { code?: unknown } | null)?.code;
      rec.release = {
        replica: replica.name,
        status: res.status,
        code: typeof code === "string" ? code : null,
        instanceId: rec.instanceId,
        conversationId: null,
        atMs,
        ...(res.error ? { error: res.error } : {}),
      };
      // No answer, or NOT_READY (e.g. the database refused a connection): send it again.
      if ((res.status !== null && !(res.status === 503 && rec.release.code === "NOT_READY")) || Date.now() > deadline) break;
      await delay(RETRY_PAUSE_MS);
    }
  }
  return rec;
}

/** May the claim be sent again? */
function openOutcome(a: ClaimAttempt, keyed: boolean): boolean {
  if (a.status === null) return keyed || a.error === "ECONNREFUSED";
  if (a.status === 503 && a.code === "NOT_READY") return true;
  return keyed && a.status === 409 && a.code === "CLAIM_IN_PROGRESS";
}

async function attempt(client: PoolClient, replica: Replica, body: ClaimBody, key: string | null, t0: number): Promise<ClaimAttempt> {
  const atMs = Date.now() - t0;
  const res = await client.claim(replica, body, key);
  const j = (res.json ?? {}) as { code?: unknown; instanceId?: unknown; conversationId?: unknown };
  return {
    replica: replica.name,
    status: res.status,
    code: typeof j.code === "string" ? j.code : null,
    instanceId: res.status === 200 && typeof j.instanceId === "string" ? j.instanceId : null,
    conversationId: res.status === 200 && typeof j.conversationId === "string" ? j.conversationId : null,
    ...(res.error ? { error: res.error } : {}),
    atMs,
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
