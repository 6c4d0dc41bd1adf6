/**
 * The end-to-end fault run (issue 8): three pool-manager replicas (child processes) on one real
 * Postgres database, against the Railway stand-in, take a seeded burst of claims through their
 * HTTP APIs while the stand-in answers 5xx, 429s and outages, loses the answer of a create that
 * happened, an idle and a claimed deployment crash, and one replica is SIGKILLed and restarted.
 * Once the pool has settled, `checks.ts` holds the result against the invariants.
 *
 * Used by `npm run chaos` (run.ts, prints the figures) and by the CI test (chaos.test.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startTestPostgres } from "../support/postgres.ts";
import { waitFor } from "../support/process.ts";
import { startRailwayStandin, type RailwayStandin } from "../railway/standin.ts";
import { checkRun, serviceIdentity, type Check, type ClaimRecord, type RuntimeEvent } from "./checks.ts";
import { budgetWaits, leaseHolder, readOwnerId, readRuntimeRecords } from "./readings.ts";
import { PoolClient, Replica, type PoolStatus } from "./cluster.ts";
import { runClaim } from "./claimer.ts";
import { makeSchedule, type Schedule, type ScheduledFault } from "./schedule.ts";
import { Rng } from "./rng.ts";

export const CHAOS_RUNTIME = fileURLToPath(new URL("./runtime.mjs", import.meta.url));
export const CHAOS_IMAGE = "ghcr.io/acme/agent-runtime:chaos";
/** A one-letter pool id: claimed services get a `--<label>` rename within Railway's 32 characters. */
export const CHAOS_POOL = "c";

export interface FaultRunOptions {
  seed: number;
  claims: number;
  replicas: number;
  minIdle: number;
  maxTotal: number;
  burstMs: number;
  /** Progress lines (the run is quiet without it). */
  log?: (line: string) => void;
}

export const DEFAULT_FAULT_RUN: Omit<FaultRunOptions, "seed"> = { claims: 200, replicas: 3, minIdle: 10, maxTotal: 25, burstMs: 20_000 };

export interface FaultRunReport {
  seed: number;
  options: Omit<FaultRunOptions, "log">;
  durationMs: number;
  /** From the start of the burst until the pool settled. */
  burstToSettledMs: number;
  claims: { total: number; ok: number; empty: number; failed: Record<string, number>; keyed: number; replayed: number; released: number; attempts: number };
  instances: { servicesCreated: number; claimedByClients: number };
  provisions: { total: number; runtimes: number; resets: number };
  services: { maxFromLog: number; maxSampled: number };
  kills: Array<{ replica: string; atMs: number; restartedAtMs: number | null; claimsCut: number; leader: boolean }>;
  /** Starts that exited before answering and were retried (as Railway's restart policy would). */
  failedStarts: string[];
  /** Creates the Railway provider held back because it read the hourly budget as low (count, longest wait). */
  budgetWaits: { count: number; maxWaitMs: number };
  faults: { scheduled: string[]; hitByKind: Record<string, number> };
  crashes: { idle: string | null; claimed: string | null };
  standinRequests: number;
  checks: Check[];
  /** Events and runtime records of the instances a failed check names. */
  explanations: string[];
  /** Last lines of each replica's output when a check failed. */
  replicaLogs: string[];
  ok: boolean;
}

export async function runFaultRun(o: FaultRunOptions): Promise<FaultRunReport> {
  const log = o.log ?? (() => undefined);
  const started = Date.now();
  const schedule = makeSchedule(o.seed, { claims: o.claims, replicas: o.replicas, burstMs: o.burstMs });
  const recordDir = mkdtempSync(join(tmpdir(), "agent-pool-chaos-records-"));
  const db = await startTestPostgres();
  let standin: RailwayStandin | null = null;
  const replicas: Replica[] = [];
  try {
    standin = await startRailwayStandin({
      stepMs: 50,
      runtimeCommand: [process.execPath, CHAOS_RUNTIME],
      runtimeEnv: { CHAOS_RECORD_DIR: recordDir, CHAOS_PROVISION_DELAY_MS: "150" },
    });
    const s = standin;
    const { projectId } = s.createProject("chaos");
    const env = poolEnv(s, projectId, db.url, o);
    for (let i = 0; i < o.replicas; i++) replicas.push(new Replica(`replica-${i + 1}`, env));
    log(`seed ${o.seed}: starting ${o.replicas} replicas on one Postgres database`);
    await Promise.all(replicas.map((r) => r.start()));
    const client = new PoolClient();
    await waitFor(`${o.minIdle} idle instances before the burst`, async () => ((await client.status(replicas))?.counts.idle ?? 0) >= o.minIdle, 90_000, 200);
    const ownerId = await readOwnerId(db.url);

    // Sample the project's services all along (the log replay is exact; the sample is a second view).
    let sampledMax = 0;
    const sampler = setInterval(() => (sampledMax = Math.max(sampledMax, s.services(projectId).length)), 20);

    log(`burst: ${o.claims} claims over ${o.burstMs} ms; ${schedule.events.length} scheduled faults`);
    const t0 = Date.now();
    const ctx: RunContext = {
      databaseUrl: db.url,
      s,
      projectId,
      replicas,
      client,
      t0,
      log,
      kills: [],
      crashes: { idle: null, claimed: null },
      claims: [],
      rng: new Rng(o.seed).fork("events"),
    };
    const claimRuns = schedule.claims.map((plan) => delay(plan.atMs).then(() => runClaim(plan, replicas, client, t0).then((rec) => void ctx.claims.push(rec))));
    const eventRuns = schedule.events.map((e) => delay(e.atMs).then(() => fire(e, ctx)));
    await Promise.all([...claimRuns, ...eventRuns]);
    log(`burst done after ${Date.now() - t0} ms; letting the pool settle`);

    // Settled: every replica up, nothing claiming or starting, the crashed deployments seen, the
    // released agents gone. Not settling in time is itself a failed check (with what was pending).
    const settle = await settled(ctx, SETTLE_TIMEOUT_MS);
    const finalStatus = settle.status;
    const burstToSettledMs = Date.now() - t0;
    clearInterval(sampler);
    sampledMax = Math.max(sampledMax, s.services(projectId).length);

    const runtimeRecords = readRuntimeRecords(recordDir);
    const checks = checkRun({
      t0,
      poolId: CHAOS_POOL,
      ownerId,
      projectId,
      maxTotal: o.maxTotal,
      claims: ctx.claims,
      runtimeRecords,
      serviceLog: s.serviceLog,
      sampledMaxServices: sampledMax,
      finalStatus,
      finalServices: s.services(projectId),
      crashedIdle: ctx.crashes.idle,
      crashedClaimed: ctx.crashes.claimed,
      httpErrors: client.errors,
    });
    checks.unshift({
      name: `the pool settled within ${SETTLE_TIMEOUT_MS / 1000} s of the burst's end (nothing claiming or starting, crashes seen, released agents gone)`,
      ok: settle.pending === null,
      detail: settle.pending === null ? `settled ${burstToSettledMs} ms after the start of the burst` : `still pending: ${settle.pending.what}`,
      instances: settle.pending?.instances ?? [],
    });
    const failed = checks.filter((c) => !c.ok);
    const explanations: string[] = [];
    for (const id of new Set(failed.flatMap((c) => c.instances))) {
      const created = s.serviceLog.find((e) => e.kind === "create" && serviceIdentity(e.name, CHAOS_POOL)?.instanceId === id);
      const svc = created ? s.service(created.serviceId) : null;
      const standin = created
        ? `service ${created.serviceId} created at +${created.at - t0} ms; ${svc ? `domains ${JSON.stringify(svc.domains)}, deployments ${svc.deployments.map((d) => d.status).join(", ")}` : "deleted"}; log ${JSON.stringify(s.serviceLog.filter((e) => e.serviceId === created.serviceId).map((e) => `${e.kind} +${e.at - t0} ms`))}`
        : "no service was created";
      explanations.push(
        `instance ${id}: ${JSON.stringify(await client.instance(replicas, id))}\n  stand-in: ${standin}\n  runtime record: ${JSON.stringify(runtimeRecords.get(id) ?? [])}\n` +
          `  claims: ${JSON.stringify(ctx.claims.filter((c) => c.instanceId === id || c.attempts.some((a) => a.instanceId === id)))}`,
      );
    }
    // Full replica output of a failed run, on disk (the report shows the last lines).
    let logDir: string | null = null;
    if (failed.length) {
      logDir = mkdtempSync(join(tmpdir(), `agent-pool-chaos-${o.seed}-`));
      for (const r of replicas) writeFileSync(join(logDir, `${r.name}.log`), r.output());
    }
    const report = summarize(
      o,
      schedule,
      ctx,
      s,
      projectId,
      runtimeRecords,
      sampledMax,
      checks,
      explanations,
      failed.length ? [`(full output in ${logDir})`, ...replicas.map((r) => `--- ${r.name} ---\n${r.output().split("\n").slice(-40).join("\n")}`)] : [],
    );
    report.durationMs = Date.now() - started;
    report.burstToSettledMs = burstToSettledMs;
    return report;
  } finally {
    await Promise.all(replicas.map((r) => r.stop().catch(() => undefined)));
    await standin?.close().catch(() => undefined);
    await db.stop().catch(() => undefined);
    rmSync(recordDir, { recursive: true, force: true });
  }
}

const SETTLE_TIMEOUT_MS = 120_000;

/** Polls until the pool has settled; on timeout, says what was still pending (and the last status seen). */
async function settled(ctx: RunContext, timeoutMs: number): Promise<{ status: PoolStatus; pending: { what: string; instances: string[] } | null }> {
  const deadline = Date.now() + timeoutMs;
  let last: PoolStatus = { counts: {}, instances: [] };
  for (;;) {
    const pending = await pendingWork(ctx, (st) => (last = st));
    if (pending === null || Date.now() > deadline) return { status: last, pending };
    await delay(250);
  }
}

async function pendingWork(ctx: RunContext, seen: (st: PoolStatus) => void): Promise<{ what: string; instances: string[] } | null> {
  const down = ctx.replicas.filter((r) => !r.up);
  if (down.length) return { what: `${down.map((r) => r.name).join(", ")} not running`, instances: [] };
  const st = await ctx.client.status(ctx.replicas);
  if (!st) return { what: "no replica answered /api/pool/status", instances: [] };
  seen(st);
  const busy = st.instances.filter((i) => i.status === "claiming" || i.status === "starting");
  if (busy.length) return { what: `${busy.map((i) => `${i.id} ${i.status}`).join(", ")}`, instances: busy.map((i) => i.id) };
  const row = (id: string | null) => (id ? st.instances.find((i) => i.id === id) : undefined);
  const claimedCrash = row(ctx.crashes.claimed);
  if (ctx.crashes.claimed && claimedCrash?.status !== "crashed") {
    return { what: `the crashed claimed instance ${ctx.crashes.claimed} is ${claimedCrash?.status ?? "gone"}`, instances: [ctx.crashes.claimed] };
  }
  // The crashed idle instance is retired, unless a client got it just before the crash.
  const idleCrash = row(ctx.crashes.idle);
  const handedOut = ctx.claims.some((c) => c.outcome === "ok" && c.instanceId === ctx.crashes.idle);
  if (idleCrash && !(handedOut && idleCrash.status === "crashed") && idleCrash.status !== "dead") {
    return { what: `the crashed idle instance ${idleCrash.id} is ${idleCrash.status}`, instances: [idleCrash.id] };
  }
  // Agents their clients let go are dead and their services deleted (a failed delete is retried by a pass).
  const live = new Set(ctx.s.services(ctx.projectId).map((x) => serviceIdentity(x.name, CHAOS_POOL)?.instanceId));
  const released = ctx.claims.filter((c) => c.release !== null).map((c) => c.instanceId!);
  const lingering = released.filter((id) => live.has(id) || (row(id) && row(id)!.status !== "dead"));
  if (lingering.length)
    return {
      what: `released agents not gone: ${lingering.map((id) => `${id} ${row(id)?.status ?? "no row"}${live.has(id) ? " (service exists)" : ""}`).join(", ")}`,
      instances: lingering,
    };
  return null;
}

function poolEnv(s: RailwayStandin, projectId: string, databaseUrl: string, o: FaultRunOptions): Record<string, string> {
  return {
    PROVIDER: "railway",
    RAILWAY_API_URL: s.url,
    RAILWAY_API_TOKEN: s.token,
    RAILWAY_URL_SCHEME: "http",
    RAILWAY_PROJECT_IDS: projectId,
    RAILWAY_REQUEST_TIMEOUT_MS: "5000",
    INSTANCE_IMAGE: CHAOS_IMAGE,
    DATABASE_URL: databaseUrl,
    // The test server's 100 connections are shared with the other test file that runs beside this one.
    PG_POOL_MAX: "4",
    POOL_ID: CHAOS_POOL,
    POOL_MIN_IDLE: String(o.minIdle),
    POOL_MAX_TOTAL: String(o.maxTotal),
    TICK_INTERVAL_MS: "500",
    STARTING_POLL_MS: "250",
    HEALTH_TIMEOUT_MS: "2000",
    // Short claim deadlines: a claim cut off by the SIGKILL is swept within seconds, not minutes.
    PROVISION_TIMEOUT_MS: "5000",
    RESET_TIMEOUT_MS: "1000",
    CLAIM_SWEEP_MARGIN_MS: "1000",
    CLAIM_DEADLINE_MS: "12000",
    ORPHAN_GRACE_MS: "5000",
    MUTATION_RATE_LIMIT_PER_MIN: "100000",
    LOG_LEVEL: "info",
  };
}

interface RunContext {
  databaseUrl: string;
  s: RailwayStandin;
  projectId: string;
  replicas: Replica[];
  client: PoolClient;
  t0: number;
  log: (line: string) => void;
  kills: FaultRunReport["kills"];
  crashes: { idle: string | null; claimed: string | null };
  claims: ClaimRecord[];
  rng: Rng;
}

/** Carries out one scheduled event. Crashes retry until a fitting instance exists (bounded). */
async function fire(e: ScheduledFault, ctx: RunContext): Promise<void> {
  const at = () => Date.now() - ctx.t0;
  switch (e.kind) {
    case "fault":
      ctx.s.failNext(e.n, e.fault, e.opts);
      ctx.log(`  +${at()} ms  stand-in: ${e.label}`);
      return;
    case "kill": {
      const holder = await leaseHolder(ctx.databaseUrl, CHAOS_POOL).catch(() => null);
      const isLeader = (x: Replica) => holder !== null && x.proc !== null && holder.includes(`:${x.proc.child.pid}:`);
      const followers = ctx.replicas.filter((x) => !isLeader(x));
      const r = (e.target === "leader" ? ctx.replicas.find(isLeader) : undefined) ?? followers[e.pick % followers.length]!;
      // Aim at a claim in flight (sent 30 ms ago or more: picked, provisioning): the SIGKILL then
      // leaves a `claiming` row for the sweeper and, with a key, a running idempotency record.
      const aimed = await waitFor("a claim in flight", () => ctx.client.claimsInFlight(r, 30) > 0, 5_000, 5).catch(() => false);
      const cut = ctx.client.claimsInFlight(r, 0);
      const leader = isLeader(r);
      await r.kill();
      ctx.log(
        `  +${at()} ms  SIGKILL ${r.name} (${cut} claims in flight${aimed ? "" : "; none came within 5 s"}${leader ? "; it held the reconciler lease" : ""})`,
      );
      const entry = { replica: r.name, atMs: at(), restartedAtMs: null as number | null, claimsCut: cut, leader };
      ctx.kills.push(entry);
      await r.start();
      entry.restartedAtMs = at();
      ctx.log(`  +${at()} ms  ${r.name} restarted`);
      return;
    }
    case "crash-idle":
    case "crash-claimed": {
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        const target = e.kind === "crash-idle" ? await idleTarget(ctx) : claimedTarget(ctx);
        if (target) {
          try {
            await ctx.s.crashDeployment(target.ref);
            if (e.kind === "crash-idle") ctx.crashes.idle = target.id;
            else ctx.crashes.claimed = target.id;
            ctx.log(`  +${at()} ms  crashed the deployment of ${e.kind === "crash-idle" ? "idle" : "claimed"} instance ${target.id}`);
            return;
          } catch {
            // Not running (still deploying, or gone): choose again.
          }
        }
        await delay(200);
      }
      ctx.log(`  +${at()} ms  ${e.kind}: no instance to crash within 30 s`);
    }
  }
}

async function idleTarget(ctx: RunContext): Promise<{ id: string; ref: string } | null> {
  const st: PoolStatus | null = await ctx.client.status(ctx.replicas);
  const idle = (st?.instances ?? []).filter((i) => i.status === "idle" && i.providerRef);
  if (idle.length === 0) return null;
  const pick = ctx.rng.pick(idle);
  return { id: pick.id, ref: pick.providerRef! };
}

function claimedTarget(ctx: RunContext): { id: string; ref: string } | null {
  // An agent its client keeps: its expected end (crashed, service kept) is then unambiguous.
  const got = ctx.claims.filter((c) => c.outcome === "ok" && c.plan.releaseAfterMs === null && c.instanceId !== ctx.crashes.idle);
  if (got.length === 0) return null;
  const id = ctx.rng.pick(got).instanceId!;
  const svc = ctx.s.services(ctx.projectId).find((x) => Object.values(x.variables).some((v) => v.INSTANCE_ID === id));
  return svc ? { id, ref: svc.id } : null;
}

function summarize(
  o: FaultRunOptions,
  schedule: Schedule,
  ctx: RunContext,
  s: RailwayStandin,
  projectId: string,
  records: Map<string, RuntimeEvent[]>,
  sampledMax: number,
  checks: Check[],
  explanations: string[],
  replicaLogs: string[],
): FaultRunReport {
  const failed: Record<string, number> = {};
  for (const c of ctx.claims) if (c.outcome === "failed") failed[c.failure ?? "?"] = (failed[c.failure ?? "?"] ?? 0) + 1;
  const hitByKind: Record<string, number> = {};
  for (const r of s.requests) if (r.fault) hitByKind[r.fault] = (hitByKind[r.fault] ?? 0) + 1;
  const events = [...records.values()].flat();
  const { log: _log, ...options } = o;
  const servicesLog = s.serviceLog.filter((e) => e.projectId === projectId);
  let live = 0;
  let maxFromLog = 0;
  for (const e of servicesLog) {
    if (e.kind === "create") maxFromLog = Math.max(maxFromLog, ++live);
    else if (e.kind === "delete") live--;
  }
  return {
    seed: o.seed,
    options,
    durationMs: 0,
    burstToSettledMs: 0,
    claims: {
      total: ctx.claims.length,
      ok: ctx.claims.filter((c) => c.outcome === "ok").length,
      empty: ctx.claims.filter((c) => c.outcome === "empty").length,
      failed,
      keyed: ctx.claims.filter((c) => c.plan.key !== null).length,
      replayed: ctx.claims.filter((c) => c.replay !== null).length,
      released: ctx.claims.filter((c) => c.release !== null).length,
      attempts: ctx.claims.reduce((n, c) => n + c.attempts.length + (c.replay ? 1 : 0), 0),
    },
    instances: {
      servicesCreated: servicesLog.filter((e) => e.kind === "create").length,
      claimedByClients: new Set(ctx.claims.map((c) => c.instanceId).filter(Boolean)).size,
    },
    provisions: {
      total: events.filter((e) => e.event === "provision").length,
      runtimes: records.size,
      resets: events.filter((e) => e.event === "reset").length,
    },
    services: { maxFromLog, maxSampled: sampledMax },
    kills: ctx.kills,
    failedStarts: ctx.replicas.flatMap((r) => r.failedStarts.map((f) => `${r.name}: ${f}`)),
    budgetWaits: budgetWaits(ctx.replicas),
    faults: {
      scheduled: schedule.events.map(
        (e) =>
          `+${e.atMs} ms ${e.kind === "fault" ? e.label : e.kind === "kill" ? `kill ${e.target === "leader" ? "the lease holder" : "a replica without the lease"}` : e.kind}`,
      ),
      hitByKind,
    },
    crashes: ctx.crashes,
    standinRequests: s.requests.length,
    checks,
    explanations,
    replicaLogs,
    ok: checks.every((c) => c.ok),
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
