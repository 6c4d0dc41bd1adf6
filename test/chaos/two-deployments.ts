/**
 * Two deployments (one replica each, each on its own fresh database, hence its own owner id) with
 * the same pool name in ONE Railway project and environment, each with its own API token so the
 * stand-in's log tells who did what. During a short burst of claims on both, with 5xx and 429s,
 * neither may delete, rename or adopt the other's services: before owner ids each took the
 * other's services for orphans and deleted them, claimed agents included (issue 8).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startTestPostgres, type TestPostgres } from "../support/postgres.ts";
import { waitFor } from "../support/process.ts";
import { startRailwayStandin, type RailwayStandin } from "../railway/standin.ts";
import { DOCUMENTED_5XX, serviceIdentity, type Check, type ClaimRecord } from "./checks.ts";
import { runClaim } from "./claimer.ts";
import { PoolClient, Replica, type PoolStatus } from "./cluster.ts";
import { CHAOS_IMAGE, CHAOS_POOL, CHAOS_RUNTIME } from "./fault-run.ts";
import { readOwnerId } from "./readings.ts";
import { Rng } from "./rng.ts";

export interface TwoDeploymentsOptions {
  seed: number;
  claimsEach: number;
  minIdle: number;
  maxTotal: number;
  burstMs: number;
  log?: (line: string) => void;
}

export const DEFAULT_TWO_DEPLOYMENTS: Omit<TwoDeploymentsOptions, "seed"> = { claimsEach: 12, minIdle: 3, maxTotal: 6, burstMs: 3_000 };

/** Short, so a deployment that took the other's services for orphans would delete them within the run. */
const ORPHAN_GRACE_MS = 1_000;

export interface TwoDeploymentsReport {
  seed: number;
  poolId: string;
  durationMs: number;
  deployments: Array<{
    ownerId: string;
    claimsOk: number;
    claimsEmpty: number;
    claimsFailed: number;
    created: number;
    deleted: number;
    renamed: number;
    liveRows: number;
    foreignReported: number;
  }>;
  faultsHit: Record<string, number>;
  checks: Check[];
  replicaLogs: string[];
  ok: boolean;
}

interface Deployment {
  replica: Replica;
  db: TestPostgres;
  token: string;
  tokenId: string;
  ownerId: string;
  claims: ClaimRecord[];
  /** What the pass asked for reported as foreign, and the other's services (past the grace) at that moment. */
  foreign: string[];
  theirs: string[];
}

export async function runTwoDeployments(o: TwoDeploymentsOptions): Promise<TwoDeploymentsReport> {
  const log = o.log ?? (() => undefined);
  const started = Date.now();
  const rng = new Rng(o.seed).fork("two-deployments");
  const recordDir = mkdtempSync(join(tmpdir(), "agent-pool-chaos-two-"));
  let standin: RailwayStandin | null = null;
  const deps: Deployment[] = [];
  try {
    const s = await startRailwayStandin({ stepMs: 50, runtimeCommand: [process.execPath, CHAOS_RUNTIME], runtimeEnv: { CHAOS_RECORD_DIR: recordDir } });
    standin = s;
    const { projectId } = s.createProject("shared");
    for (const [i, token] of [s.token, s.createToken("workspace")].entries()) {
      const db = await startTestPostgres();
      const replica = new Replica(`deployment-${"AB"[i]}`, {
        PROVIDER: "railway",
        RAILWAY_API_URL: s.url,
        RAILWAY_API_TOKEN: token,
        RAILWAY_URL_SCHEME: "http",
        RAILWAY_PROJECT_IDS: projectId,
        INSTANCE_IMAGE: CHAOS_IMAGE,
        DATABASE_URL: db.url,
        PG_POOL_MAX: "4",
        POOL_ID: CHAOS_POOL,
        POOL_MIN_IDLE: String(o.minIdle),
        POOL_MAX_TOTAL: String(o.maxTotal),
        TICK_INTERVAL_MS: "300",
        STARTING_POLL_MS: "200",
        ORPHAN_GRACE_MS: String(ORPHAN_GRACE_MS),
        MUTATION_RATE_LIMIT_PER_MIN: "100000",
      });
      deps.push({ replica, db, token, tokenId: s.tokenId(token)!, ownerId: "", claims: [], foreign: [], theirs: [] });
    }
    log(`seed ${o.seed}: two deployments, pool "${CHAOS_POOL}", one project`);
    await Promise.all(deps.map((d) => d.replica.start()));
    const client = new PoolClient();
    for (const d of deps) {
      d.ownerId = await readOwnerId(d.db.url);
      await waitFor(
        `${o.minIdle} idle instances of ${d.replica.name}`,
        async () => ((await client.status([d.replica]))?.counts.idle ?? 0) >= o.minIdle,
        60_000,
        200,
      );
    }

    // The burst: claims on both, with 5xx and 429s at the stand-in.
    const t0 = Date.now();
    const runs: Promise<unknown>[] = [];
    for (const [i, d] of deps.entries()) {
      for (let k = 0; k < o.claimsEach; k++) {
        const keyed = rng.chance(0.4);
        const plan = {
          index: i * 1000 + k,
          atMs: rng.int(0, o.burstMs),
          replica: 0,
          key: keyed ? `two-${o.seed}-${i}-${k}` : null,
          replay: keyed && rng.chance(0.5),
          waitMs: rng.chance(0.3) ? rng.int(500, 2000) : 0,
          releaseAfterMs: rng.chance(0.5) ? rng.int(200, 1500) : null,
        };
        runs.push(delay(plan.atMs).then(() => runClaim(plan, [d.replica], client, t0).then((r) => void d.claims.push(r))));
      }
    }
    for (let k = 0; k < 4; k++) {
      const at = rng.int(0, o.burstMs);
      const fault =
        k % 2 === 0
          ? ({ kind: "html5xx", n: rng.int(1, 3), opts: { status: rng.pick([502, 503]) } } as const)
          : ({ kind: "429burst", n: rng.int(1, 3), opts: { retryAfterSec: 1 } } as const);
      runs.push(delay(at).then(() => s.failNext(fault.n, fault.kind, fault.opts)));
    }
    await Promise.all(runs);
    log(`burst done after ${Date.now() - t0} ms`);

    // Settled, and then a pass of each made once every service of the other was past the orphan grace.
    const statuses = new Map<Deployment, PoolStatus>();
    let slow = false;
    for (const d of deps) {
      let reported = false;
      statuses.set(
        d,
        await waitFor(
          `${d.replica.name} to settle`,
          async () => {
            const st = await client.status([d.replica]);
            const busy = (st?.instances ?? []).filter((i) => i.status === "claiming" || i.status === "starting");
            if (!reported && Date.now() - t0 > o.burstMs + 10_000) {
              reported = true;
              slow = slow || busy.length > 0;
              for (const i of busy) {
                const svc = i.providerRef ? s.service(i.providerRef) : null;
                const at = s.serviceLog.find((e) => e.kind === "create" && serviceIdentity(e.name, CHAOS_POOL)?.instanceId === i.id);
                log(
                  `${d.replica.name} still busy 10 s after the burst: ${i.id} ${i.status}, ref ${i.providerRef}, stand-in: ` +
                    `${at ? `created +${at.at - t0} ms, ` : "no service created, "}${svc ? `domains ${JSON.stringify(svc.domains)}, deployments ${svc.deployments.map((x) => x.status).join(", ")}` : "no service"}; ` +
                    `events ${JSON.stringify(await client.instance([d.replica], i.id))}`,
                );
              }
            }
            return st && busy.length === 0 ? st : null;
          },
          120_000,
          200,
        ),
      );
    }
    log(`both settled after ${Date.now() - t0} ms`);
    for (const d of deps) {
      const other = deps.find((x) => x !== d)!;
      await waitFor(
        `a pass of ${d.replica.name} reporting every service of ${other.ownerId} as foreign past the grace`,
        async () => {
          const theirs = s.services(projectId).filter((x) => serviceIdentity(x.name, CHAOS_POOL)?.owner === other.ownerId);
          // Only a pass that saw the other's services, every one past the grace, shows anything.
          if (theirs.length === 0 || theirs.some((x) => Date.now() - Date.parse(x.createdAt) < ORPHAN_GRACE_MS + 200)) return null;
          const a = await client.call(d.replica, "POST", "/api/pool/reconcile", { timeoutMs: 30_000 });
          const t = a.json as { listing?: string; foreign?: Array<{ ref: string }> } | null;
          if (a.status !== 200 || t?.listing !== "complete") return null;
          d.foreign = (t.foreign ?? []).map((f) => f.ref);
          d.theirs = theirs.map((x) => x.id);
          return theirs.every((x) => d.foreign.includes(x.id));
        },
        60_000,
        200,
      );
    }
    log(`foreign services reported by both after ${Date.now() - t0} ms`);
    for (const d of deps) statuses.set(d, (await client.status([d.replica]))!);

    const checks = checkTwo(s, projectId, deps, statuses, client);
    const ok = checks.every((c) => c.ok);
    if (!ok || slow) {
      // Full replica output on disk, for whoever reads the report.
      const dir = mkdtempSync(join(tmpdir(), `agent-pool-chaos-two-${o.seed}-`));
      for (const d of deps) writeFileSync(join(dir, `${d.replica.name}.log`), d.replica.output());
      log(`full replica output in ${dir}`);
    }
    const faultsHit: Record<string, number> = {};
    for (const r of s.requests) if (r.fault) faultsHit[r.fault] = (faultsHit[r.fault] ?? 0) + 1;
    return {
      seed: o.seed,
      poolId: CHAOS_POOL,
      durationMs: Date.now() - started,
      deployments: deps.map((d) => ({
        ownerId: d.ownerId,
        claimsOk: d.claims.filter((c) => c.outcome === "ok").length,
        claimsEmpty: d.claims.filter((c) => c.outcome === "empty").length,
        claimsFailed: d.claims.filter((c) => c.outcome === "failed").length,
        created: s.serviceLog.filter((e) => e.kind === "create" && e.tokenId === d.tokenId).length,
        deleted: s.serviceLog.filter((e) => e.kind === "delete" && e.tokenId === d.tokenId).length,
        renamed: s.serviceLog.filter((e) => e.kind === "rename" && e.tokenId === d.tokenId).length,
        liveRows: statuses.get(d)!.instances.length,
        foreignReported: d.foreign.length,
      })),
      faultsHit,
      checks,
      replicaLogs: ok ? [] : deps.map((d) => `--- ${d.replica.name} ---\n${d.replica.output().split("\n").slice(-60).join("\n")}`),
      ok,
    };
  } finally {
    await Promise.all(deps.map((d) => d.replica.stop().catch(() => undefined)));
    await standin?.close().catch(() => undefined);
    for (const d of deps) await d.db.stop().catch(() => undefined);
    rmSync(recordDir, { recursive: true, force: true });
  }
}

function checkTwo(s: RailwayStandin, projectId: string, deps: Deployment[], statuses: Map<Deployment, PoolStatus>, client: PoolClient): Check[] {
  const checks: Check[] = [];
  const ownerOf = (name: string | undefined) => (name === undefined ? null : (serviceIdentity(name, CHAOS_POOL)?.owner ?? null));
  const [a, b] = deps as [Deployment, Deployment];
  checks.push({
    name: "the two deployments have different owner ids",
    ok: a.ownerId !== b.ownerId && a.ownerId !== "" && b.ownerId !== "",
    detail: `${a.ownerId} and ${b.ownerId}`,
    instances: [],
  });

  const log = s.serviceLog.filter((e) => e.projectId === projectId);
  const wrong = log.filter((e) => {
    if (e.kind === "create") return false;
    const by = deps.find((d) => d.tokenId === e.tokenId);
    const owners = [ownerOf(e.name), ...(e.kind === "rename" ? [ownerOf(e.previousName)] : [])];
    return !by || owners.some((x) => x !== by.ownerId);
  });
  const touches = log.filter((e) => e.kind !== "create").length;
  checks.push({
    name: "neither deletes nor renames the other's services (stand-in delete/rename log against the owner id in each name)",
    ok: wrong.length === 0,
    detail:
      wrong.length === 0
        ? `${touches} deletes and renames, each by the service's own deployment`
        : wrong.map((e) => `${e.kind} of ${e.serviceId} (${e.previousName ?? ""} ${e.name}) by token ${e.tokenId}`).join("; "),
    instances: [],
  });

  const services = new Map(s.services(projectId).map((x) => [x.id, x]));
  const held = new Map<string, string[]>();
  const adopted: string[] = [];
  for (const d of deps) {
    for (const row of statuses.get(d)!.instances) {
      if (!row.providerRef) continue;
      held.set(row.providerRef, [...(held.get(row.providerRef) ?? []), d.ownerId]);
      const svc = services.get(row.providerRef);
      if (!svc || ownerOf(svc.name) !== d.ownerId || serviceIdentity(svc.name, CHAOS_POOL)?.instanceId !== row.id) {
        adopted.push(`${d.ownerId} row ${row.id} (${row.status}) → service ${row.providerRef} ${svc ? `named ${svc.name}` : "missing"}`);
      }
    }
  }
  const shared = [...held].filter(([, owners]) => owners.length > 1);
  checks.push({
    name: "neither adopts the other's services: every row's service carries its own owner id and instance id, none is held by both",
    ok: adopted.length === 0 && shared.length === 0,
    detail:
      adopted.length + shared.length === 0
        ? `${held.size} services held, each by its own deployment`
        : [...adopted, ...shared.map(([ref, o]) => `${ref} held by ${o.join(" and ")}`)].join("; "),
    instances: [],
  });

  for (const d of deps) {
    const other = deps.find((x) => x !== d)!;
    // The other's services live (and past the orphan grace) when this deployment's pass ran, all
    // reported as foreign by that pass; and every one of them still exists now.
    const gone = d.theirs.filter((id) => !services.has(id) && !log.some((e) => e.kind === "delete" && e.serviceId === id && e.tokenId === other.tokenId));
    checks.push({
      name: `${d.ownerId} reported the other's services as foreign (past the orphan grace) and left them alone`,
      ok: d.theirs.length > 0 && d.theirs.every((id) => d.foreign.includes(id)) && gone.length === 0 && d.claims.some((c) => c.outcome === "ok"),
      detail: `${d.theirs.length} services of ${other.ownerId} past the grace at its pass, ${d.foreign.length} reported foreign${gone.length ? `; deleted by someone else: ${gone.join(", ")}` : ""}; ${d.claims.filter((c) => c.outcome === "ok").length} claims served`,
      instances: [],
    });
  }

  const undocumented = client.errors.filter((e) => e.code === null || (e.status >= 500 && !(DOCUMENTED_5XX[e.status] ?? []).includes(e.code)));
  checks.push({
    name: "no undocumented 5xx, every error body has a code",
    ok: undocumented.length === 0,
    detail:
      undocumented.length === 0
        ? `${client.errors.length} error answers, all documented`
        : undocumented
            .slice(0, 5)
            .map((e) => `${e.replica} ${e.path} → ${e.status}: ${e.body}`)
            .join("; "),
    instances: [],
  });
  return checks;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
