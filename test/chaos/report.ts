/** Human-readable report of a fault run: what it did, the figures, and every check with its result. */
import type { FaultRunReport } from "./fault-run.ts";
import type { TwoDeploymentsReport } from "./two-deployments.ts";

export function formatFaultRun(r: FaultRunReport): string {
  const o = r.options;
  const failed = Object.entries(r.claims.failed)
    .map(([k, n]) => `${k} ×${n}`)
    .join(", ");
  const hits = Object.entries(r.faults.hitByKind)
    .map(([k, n]) => `${k} ×${n}`)
    .join(", ");
  const lines = [
    `Fault run, seed ${r.seed} (replay: npm run chaos -- --seed ${r.seed} --claims ${o.claims})`,
    `  ${o.replicas} pool-manager replicas (child processes) on one Postgres database, Railway stand-in; min idle ${o.minIdle}, max total ${o.maxTotal}`,
    `  ${r.durationMs} ms in all, ${r.burstToSettledMs} ms from the start of the burst until the pool settled`,
    `  claims      ${r.claims.total}: ${r.claims.ok} ok, ${r.claims.empty} POOL_EMPTY, ${r.claims.total - r.claims.ok - r.claims.empty} failed${failed ? ` (${failed})` : ""}`,
    `              ${r.claims.keyed} with an idempotency key, ${r.claims.replayed} keys replayed, ${r.claims.released} agents released by their clients; ${r.claims.attempts} HTTP claim requests`,
    `  instances   ${r.instances.servicesCreated} services created at the stand-in, ${r.instances.claimedByClients} handed to clients`,
    `  provisions  ${r.provisions.total} over ${r.provisions.runtimes} runtimes, ${r.provisions.resets} resets (the runtimes' own records)`,
    `  services    at most ${r.services.maxFromLog} at once (create/delete log), ${r.services.maxSampled} sampled; max total ${o.maxTotal}`,
    `  kills       ${r.kills.map((k) => `${k.replica} SIGKILLed at +${k.atMs} ms with ${k.claimsCut} claims in flight${k.leader ? " (the lease holder)" : ""}, restarted at ${k.restartedAtMs === null ? "never" : `+${k.restartedAtMs} ms`}`).join("; ") || "none"}`,
    ...(r.failedStarts.length ? [`  restarts    ${r.failedStarts.length} start(s) exited and were retried: ${r.failedStarts.join("; ")}`] : []),
    ...(r.budgetWaits.count
      ? [`  budget      ${r.budgetWaits.count} creates held back by the Railway provider's low-budget gate, the longest for ${r.budgetWaits.maxWaitMs} ms`]
      : []),
    `  crashes     idle ${r.crashes.idle ?? "none"}, claimed ${r.crashes.claimed ?? "none"}`,
    `  faults      ${r.faults.scheduled.length} scheduled: ${r.faults.scheduled.join("; ")}`,
    `              requests hit: ${hits || "none"} (of ${r.standinRequests} requests to the stand-in)`,
    `Checks:`,
    ...r.checks.map((c) => `  ${c.ok ? "ok  " : "FAIL"} ${c.name}\n         ${c.detail}`),
  ];
  if (r.explanations.length) lines.push("Instances named by a failed check:", ...r.explanations.map((e) => `  ${e}`));
  if (r.replicaLogs.length) lines.push("Replica output (last lines):", ...r.replicaLogs);
  lines.push(r.ok ? `All checks passed (seed ${r.seed}).` : `FAILED (seed ${r.seed}).`);
  return lines.join("\n");
}

export function formatTwoDeployments(r: TwoDeploymentsReport): string {
  const lines = [
    `Two deployments sharing a project and environment, pool "${r.poolId}", seed ${r.seed}`,
    `  owner ids ${r.deployments.map((d) => d.ownerId).join(" and ")}; ${r.durationMs} ms`,
    ...r.deployments.map(
      (d) =>
        `  ${d.ownerId}: ${d.claimsOk} claims ok, ${d.claimsEmpty} POOL_EMPTY, ${d.claimsFailed} failed; ${d.created} services created, ${d.deleted} deleted, ${d.renamed} renamed; ${d.liveRows} live rows; reported ${d.foreignReported} foreign services`,
    ),
    `  faults hit: ${
      Object.entries(r.faultsHit)
        .map(([k, n]) => `${k} ×${n}`)
        .join(", ") || "none"
    }`,
    `Checks:`,
    ...r.checks.map((c) => `  ${c.ok ? "ok  " : "FAIL"} ${c.name}\n         ${c.detail}`),
  ];
  if (r.replicaLogs.length) lines.push("Replica output (last lines):", ...r.replicaLogs);
  lines.push(r.ok ? `All checks passed (seed ${r.seed}).` : `FAILED (seed ${r.seed}).`);
  return lines.join("\n");
}
