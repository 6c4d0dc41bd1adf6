/**
 * The invariants of a fault run, as pure functions of what the run recorded: the clients' answers,
 * the runtimes' own provision records, the stand-in's service log and the pool's final state.
 * Each check says what it looked at and, when it fails, exactly which instances broke it (the run
 * then prints their events from GET /api/pool/instances/:id).
 */
import type { ServiceLogEntry, ServiceSnapshot } from "../railway/standin.ts";
import type { HttpErrorRecord, PoolStatus } from "./cluster.ts";
import type { PlannedClaim } from "./schedule.ts";

export interface ClaimAttempt {
  replica: string;
  /** null: no HTTP answer. */
  status: number | null;
  code: string | null;
  instanceId: string | null;
  conversationId: string | null;
  error?: string;
  atMs: number;
}

export interface ClaimRecord {
  plan: PlannedClaim;
  attempts: ClaimAttempt[];
  outcome: "ok" | "empty" | "failed";
  /** The code (or "no answer") that ended a failed claim. */
  failure: string | null;
  instanceId: string | null;
  conversationId: string | null;
  /** The replayed key's answer (plan.replay and ok). */
  replay: ClaimAttempt | null;
  /**
   * The client's release of its agent (DELETE /api/pool/instances/:id), when it let it go: the last
   * answer, with `atMs` of the first request.
   */
  release: ClaimAttempt | null;
}

export interface RuntimeEvent {
  at: number;
  pid: number;
  event: "provision" | "reset";
  accepted?: boolean;
  agentName?: string | null;
  conversationId: string | null;
}

export interface RunFacts {
  /** Start of the burst (ms since epoch): claim `atMs` figures count from here. */
  t0: number;
  poolId: string;
  ownerId: string;
  projectId: string;
  maxTotal: number;
  claims: ClaimRecord[];
  /** Per instance id, what its runtime recorded. */
  runtimeRecords: Map<string, RuntimeEvent[]>;
  serviceLog: readonly ServiceLogEntry[];
  sampledMaxServices: number;
  finalStatus: PoolStatus;
  /** The project's services at the end. */
  finalServices: ServiceSnapshot[];
  crashedIdle: string | null;
  crashedClaimed: string | null;
  httpErrors: HttpErrorRecord[];
}

export interface Check {
  name: string;
  ok: boolean;
  /** The figures it checked, or what broke. */
  detail: string;
  /** Instances involved in a failure (explained with their events). */
  instances: string[];
}

/** The 5xx answers a pool manager may give (README, src/errors.ts). */
export const DOCUMENTED_5XX: Record<number, readonly string[]> = {
  502: ["PROVISION_FAILED", "PROVIDER_ERROR"],
  503: ["POOL_EMPTY", "NOT_READY"],
};

/** `ap-<pool>-<instance id>-<owner>[--label]` → instance id and owner, or null. */
export function serviceIdentity(name: string, poolId: string): { instanceId: string; owner: string } | null {
  const m = new RegExp(`^[a-z][a-z0-9]{0,4}-${poolId}-(i-[a-z0-9]{12})-([a-z0-9]{5})(?:--.*)?$`).exec(name);
  return m ? { instanceId: m[1]!, owner: m[2]! } : null;
}

/**
 * Most services of `owner` alive at once in `projectId`, replaying the stand-in's log in order, and
 * the first moment it went past `limit` (when, and the instance ids alive then).
 */
export function maxConcurrentServices(
  log: readonly ServiceLogEntry[],
  projectId: string,
  poolId: string,
  owner: string,
  limit = Number.POSITIVE_INFINITY,
): { max: number; over: { at: number; instances: string[] } | null } {
  let max = 0;
  let over: { at: number; instances: string[] } | null = null;
  const live = new Map<string, string>();
  for (const e of log) {
    if (e.projectId !== projectId) continue;
    const who = serviceIdentity(e.name, poolId);
    if (e.kind === "create" && who?.owner === owner) {
      live.set(e.serviceId, who.instanceId);
      max = Math.max(max, live.size);
      if (live.size > limit && over === null) over = { at: e.at, instances: [...live.values()] };
    } else if (e.kind === "delete") {
      live.delete(e.serviceId);
    }
  }
  return { max, over };
}

export function checkRun(f: RunFacts): Check[] {
  const checks: Check[] = [];
  const ok = f.claims.filter((c) => c.outcome === "ok");
  const crashed = new Set([f.crashedIdle, f.crashedClaimed].filter((x): x is string => x !== null));

  // 1. Every successful claim has its own instance; a replayed key got the same one.
  {
    const byInstance = new Map<string, number[]>();
    for (const c of ok) byInstance.set(c.instanceId!, [...(byInstance.get(c.instanceId!) ?? []), c.plan.index]);
    const shared = [...byInstance].filter(([, idx]) => idx.length > 1);
    const replays = ok.filter((c) => c.replay !== null);
    const badReplays = replays.filter((c) => c.replay!.status !== 200 || c.replay!.instanceId !== c.instanceId);
    checks.push({
      name: "every successful claim has a distinct instance; a retried idempotency key got the same one",
      ok: shared.length === 0 && badReplays.length === 0,
      detail:
        shared.length + badReplays.length === 0
          ? `${ok.length} claims, ${byInstance.size} instances; ${replays.length} keys replayed, all answered with their instance`
          : [
              ...shared.map(([id, idx]) => `instance ${id} handed to claims ${idx.join(", ")}`),
              ...badReplays.map(
                (c) =>
                  `claim ${c.plan.index} (key ${c.plan.key}) got ${c.instanceId}, its replay answered ${c.replay!.status} ${c.replay!.code ?? ""} ${c.replay!.instanceId ?? ""}`,
              ),
            ].join("; "),
      instances: [...shared.map(([id]) => id), ...badReplays.flatMap((c) => [c.instanceId!, c.replay!.instanceId].filter((x): x is string => !!x))],
    });
  }

  // 2. Each runtime was provisioned at most once (its own record), and a client's agent is the binding its runtime recorded.
  {
    let provisions = 0;
    const twice: string[] = [];
    for (const [id, events] of f.runtimeRecords) {
      const n = events.filter((e) => e.event === "provision").length;
      provisions += n;
      if (n > 1) twice.push(id);
    }
    const mismatched = ok.filter((c) => {
      const bound = (f.runtimeRecords.get(c.instanceId!) ?? []).filter((e) => e.event === "provision" && e.accepted);
      return bound.length !== 1 || bound[0]!.conversationId !== c.conversationId;
    });
    checks.push({
      name: "each runtime was provisioned at most once, and every client's agent is the conversation its runtime bound",
      ok: twice.length === 0 && mismatched.length === 0,
      detail:
        twice.length + mismatched.length === 0
          ? `${provisions} provisions over ${f.runtimeRecords.size} runtimes`
          : [
              ...twice.map(
                (id) =>
                  `runtime ${id} provisioned ${f.runtimeRecords.get(id)!.filter((e) => e.event === "provision").length} times: ${JSON.stringify(f.runtimeRecords.get(id))}`,
              ),
              ...mismatched.map(
                (c) =>
                  `claim ${c.plan.index} got ${c.instanceId} / ${c.conversationId}, its runtime recorded ${JSON.stringify(f.runtimeRecords.get(c.instanceId!) ?? [])}`,
              ),
            ].join("; "),
      instances: [...twice, ...mismatched.map((c) => c.instanceId!)],
    });
  }

  // 3. Never more services of this deployment than max total at the stand-in.
  {
    const { max, over } = maxConcurrentServices(f.serviceLog, f.projectId, f.poolId, f.ownerId, f.maxTotal);
    checks.push({
      name: "never more services of this deployment than max total at the stand-in",
      ok: max <= f.maxTotal && f.sampledMaxServices <= f.maxTotal,
      detail:
        `max ${max} at once from the stand-in's create/delete log, ${f.sampledMaxServices} sampled; max total ${f.maxTotal}` +
        (over ? `; first over at +${over.at - f.t0} ms, alive then: ${over.instances.join(", ")}` : ""),
      instances: over?.instances ?? [],
    });
  }

  // 4. Nothing left in `claiming`.
  {
    const claiming = f.finalStatus.instances.filter((i) => i.status === "claiming");
    checks.push({
      name: "nothing left in claiming",
      ok: claiming.length === 0 && (f.finalStatus.counts.claiming ?? 0) === 0,
      detail: claiming.length === 0 ? `final counts ${JSON.stringify(f.finalStatus.counts)}` : `still claiming: ${claiming.map((i) => i.id).join(", ")}`,
      instances: claiming.map((i) => i.id),
    });
  }

  // 5. No claimed agent's service deleted: every agent a client got and kept is still claimed
  //    (crashed, if its deployment was crashed: kept for dismissal) and its service exists; no
  //    agent's service was deleted before its client let it go, and a released one is gone.
  {
    const rows = new Map(f.finalStatus.instances.map((i) => [i.id, i]));
    const services = new Map(f.finalServices.map((s) => [s.id, s]));
    const serviceOf = new Map<string, string>();
    for (const e of f.serviceLog) {
      const who = e.kind === "create" ? serviceIdentity(e.name, f.poolId) : null;
      if (who) serviceOf.set(who.instanceId, e.serviceId);
    }
    const bad: string[] = [];
    const why: string[] = [];
    let kept = 0;
    for (const c of ok) {
      const id = c.instanceId!;
      const row = rows.get(id);
      const ref = serviceOf.get(id);
      const releasedAt = c.release ? f.t0 + c.release.atMs : null;
      const problems: string[] = [];
      if (!ref) problems.push("no service was ever created for it");
      const early = f.serviceLog.filter((e) => e.kind === "delete" && e.serviceId === ref && (releasedAt === null || e.at < releasedAt));
      if (early.length > 0)
        problems.push(
          `service ${ref} deleted at +${early[0]!.at - f.t0} ms while its client held it${releasedAt ? ` (released at +${releasedAt - f.t0} ms)` : ""}`,
        );
      if (releasedAt === null) {
        kept++;
        const expected = crashed.has(id) ? "crashed" : "claimed";
        if (!row) problems.push("no live row");
        else {
          if (row.status !== expected) problems.push(`status ${row.status}, expected ${expected}`);
          if (row.conversationId !== c.conversationId) problems.push(`conversation ${row.conversationId}, the client got ${c.conversationId}`);
          if (!row.providerRef || !services.has(row.providerRef) || row.providerRef !== ref)
            problems.push(`service ${row.providerRef} missing at the stand-in`);
        }
      } else {
        if (row && row.status !== "dead") problems.push(`status ${row.status} after its client released it (${c.release!.status} ${c.release!.code ?? ""})`);
        if (ref && services.has(ref)) problems.push(`service ${ref} still exists after its client released it`);
      }
      if (problems.length > 0) {
        bad.push(id);
        why.push(`claim ${c.plan.index} → ${id}: ${problems.join(", ")}`);
      }
    }
    checks.push({
      name: "no claimed agent's service deleted: every agent a client kept is still claimed (crashed if its deployment was crashed) and its service exists; none deleted before its client released it",
      ok: bad.length === 0,
      detail:
        bad.length === 0
          ? `${ok.length} agents checked against the database and the stand-in's log: ${kept} kept, ${ok.length - kept} released by their clients`
          : why.join("; "),
      instances: bad,
    });
  }

  // 6. The crashed idle instance (unless a client got it meanwhile) ended dead, its service deleted.
  if (f.crashedIdle !== null && !ok.some((c) => c.instanceId === f.crashedIdle)) {
    const row = f.finalStatus.instances.find((i) => i.id === f.crashedIdle);
    const live = f.finalServices.some((s) => serviceIdentity(s.name, f.poolId)?.instanceId === f.crashedIdle);
    checks.push({
      name: "the crashed idle instance was retired and its service deleted",
      ok: (row === undefined || row.status === "dead") && !live,
      detail: `instance ${f.crashedIdle}: ${row ? row.status : "row deleted"}, service ${live ? "still exists" : "deleted"}`,
      instances: (row && row.status !== "dead") || live ? [f.crashedIdle] : [],
    });
  }

  // 7. Every agent bound that no client got belongs to a claim that got no answer (cut off by the
  //    SIGKILL): a claim answered with an error must not leave an agent behind holding a slot.
  {
    const handed = new Set(ok.map((c) => c.instanceId));
    const byName = new Map(f.claims.map((c) => [`Agent ${c.plan.index}`, c]));
    const phantoms = f.finalStatus.instances.filter((i) => (i.status === "claimed" || i.status === "pending_acceptance") && !handed.has(i.id));
    const unexplained = phantoms.filter((i) => {
      const c = i.agentName ? byName.get(i.agentName) : undefined;
      return !c || c.outcome === "ok" || !c.attempts.some((a) => a.status === null);
    });
    checks.push({
      name: "every agent bound that no client got comes from a claim that got no answer (cut off by the kill)",
      ok: unexplained.length === 0,
      detail:
        unexplained.length === 0
          ? `${phantoms.length} such agents${phantoms.length ? `: ${phantoms.map((i) => `${i.id} (${i.agentName})`).join(", ")}` : ""}`
          : unexplained
              .map((i) => `${i.id} is ${i.status} for ${i.agentName}, whose claim ended ${(i.agentName && byName.get(i.agentName)?.outcome) ?? "unknown"}`)
              .join("; "),
      instances: unexplained.map((i) => i.id),
    });
  }

  // 8. No 5xx from the pool managers but the documented ones, and every error body carries a code.
  {
    const undocumented = f.httpErrors.filter((e) => e.status >= 500 && !(DOCUMENTED_5XX[e.status] ?? []).includes(e.code ?? ""));
    const codeless = f.httpErrors.filter((e) => e.code === null);
    const tally = new Map<string, number>();
    for (const e of f.httpErrors) tally.set(`${e.status} ${e.code}`, (tally.get(`${e.status} ${e.code}`) ?? 0) + 1);
    checks.push({
      name: "no 5xx from the pool managers but 502 PROVISION_FAILED/PROVIDER_ERROR and 503 POOL_EMPTY/NOT_READY; every error body has a code",
      ok: undocumented.length === 0 && codeless.length === 0,
      detail:
        undocumented.length + codeless.length === 0
          ? `errors answered: ${[...tally].map(([k, n]) => `${k} ×${n}`).join(", ") || "none"}`
          : [...undocumented, ...codeless]
              .slice(0, 10)
              .map((e) => `${e.replica} ${e.method} ${e.path} → ${e.status}: ${e.body}`)
              .join("; "),
      instances: [],
    });
  }
  return checks;
}
