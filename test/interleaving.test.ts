/**
 * The interleaving suite (issue 8): on real Postgres, three reconcilers (separate pg pools,
 * separate holders) and many concurrent claims through three claim services run against one pool,
 * with injected faults: provider errors, partial and slow listings (passes that outlive their
 * lease), slow and failing creates and deletes, provisions slower than the attempt's deadline
 * (runtimes that bind after their client gave up), failing provisions, claim processes killed
 * right after their pick, runtimes that die, and process clocks skewed by hours against the
 * database. Each schedule is drawn from a seed, so a failure replays: the seed and the schedule
 * are printed.
 *
 * After every schedule the invariants are checked:
 *   - no instance bound to two claims; no claim answered with an instance not bound to it;
 *   - never more of our resources at the provider than max total;
 *   - no resource deleted while a row still counts it as live;
 *   - no row left in `claiming` once its deadline plus the sweep margin has passed;
 *   - one instance at most per idempotency key (and a retried key gets the same instance);
 *   - no resource of another owner (or of none) touched.
 *
 * INTERLEAVING_SCHEDULES (default 1000) and INTERLEAVING_SEED (default: random, printed) choose
 * how many and which; INTERLEAVING_PARALLEL (default 6) how many run at once; INTERLEAVING_TRACE=1
 * prints a failing schedule's provider log and every status change.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { ClaimService, type ClaimResponse } from "../src/claim/claim.ts";
import { ManualClock, type IdSource } from "../src/clock.ts";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { PoolError } from "../src/errors.ts";
import { silentLogger } from "../src/logger.ts";
import { Reconciler } from "../src/pool/reconciler.ts";
import { FaultyFleet, NO_FAULTS, prng, type FleetFaults } from "./support/faulty-fleet.ts";
import { startTestPostgres, type TestPostgres } from "./support/postgres.ts";

const SCHEDULES = Number(process.env.INTERLEAVING_SCHEDULES ?? 1000);
// Each worker holds 8 Postgres connections (3 stores of 2, their LISTEN stays closed: no
// reconciler is started, passes are called; and one raw): 6 workers leave room on a 100-connection
// server for the test file `npm test` runs beside this one.
const PARALLEL = Number(process.env.INTERLEAVING_PARALLEL ?? 6);
const BASE_SEED = Number(process.env.INTERLEAVING_SEED ?? Math.floor(Math.random() * 2 ** 31));
const OWNER = "own01";
const SWEEP_MARGIN_MS = 40;
const PROVISION_TIMEOUT_MS = 60;
const RESET_TIMEOUT_MS = 20;
const LEASE_TTL_MS = 120;

type ClaimMode = "ok" | "slow" | "fail" | "stall" | "killed";
interface PlannedClaim {
  at: number;
  replica: number;
  key: string | null;
  mode: ClaimMode;
  /** Waits this long for an idle instance (a waiting claim picks a row the moment it is idle). */
  waitMs: number;
}
interface Schedule {
  seed: number;
  minIdle: number;
  maxTotal: number;
  faults: FleetFaults;
  ticks: Array<{ at: number; replica: number }>;
  claims: PlannedClaim[];
  deaths: Array<{ at: number }>;
  skewMs: number[];
  /** Runtimes that replace a binding instead of refusing a second provision. */
  laxRuntimes: boolean;
}

/** Draws one schedule from its seed (pure: the same seed gives the same schedule). */
function drawSchedule(seed: number): Schedule {
  const r = prng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const minIdle = int(1, 3);
  const maxTotal = minIdle + int(1, 3);
  const faults: FleetFaults = {
    listFail: r() < 0.5 ? 0.1 : 0,
    listPartial: r() < 0.5 ? 0.1 : 0,
    listSlow: r() < 0.4 ? 0.15 : 0,
    slowListMs: LEASE_TTL_MS + 40,
    createFail: r() < 0.5 ? 0.15 : 0,
    createSlow: r() < 0.3 ? 0.2 : 0,
    deleteFail: r() < 0.4 ? 0.2 : 0,
  };
  const ticks = Array.from({ length: int(10, 20) }, () => ({ at: int(0, 420), replica: int(0, 2) })).sort((a, b) => a.at - b.at);
  const keys: string[] = [];
  const claims: PlannedClaim[] = Array.from({ length: int(2, 9) }, () => {
    let key: string | null = null;
    const k = r();
    if (k < 0.2 && keys.length > 0)
      key = keys[int(0, keys.length - 1)]!; // a retry of an earlier key
    else if (k < 0.45) {
      key = `key-${seed}-${keys.length}`;
      keys.push(key);
    }
    const m = r();
    const mode: ClaimMode = m < 0.45 ? "ok" : m < 0.6 ? "slow" : m < 0.72 ? "fail" : m < 0.86 ? "stall" : "killed";
    return { at: int(20, 280), replica: int(0, 2), key, mode, waitMs: r() < 0.4 ? 300 : 0 };
  });
  const deaths = r() < 0.3 ? [{ at: int(50, 250) }] : [];
  const skewMs = [0, 1, 2].map(() => int(-6, 6) * 3_600_000);
  // Runtimes that do not refuse a second provision, and a claiming process that stalls and sends
  // its provision after its attempt was resolved and the instance re-claimed: together, nothing
  // in the pool can stop that late request from rebinding the runtime (fencing orders database
  // writes, not a request already on its way). Schedules have one or the other, not both.
  const laxRuntimes = r() < 0.5;
  if (laxRuntimes) for (const c of claims) if (c.mode === "stall") c.mode = "slow";
  return { seed, minIdle, maxTotal, faults, ticks, claims, deaths, skewMs, laxRuntimes };
}

interface Outcome {
  claim: PlannedClaim;
  result: ClaimResponse | null;
  error: string | null;
}

/** The status of a row that still counts this resource as live (not dead, not deleted), if any. */
async function liveRowFor(raw: pg.Pool, ref: string, instanceId: string | null): Promise<string | null> {
  const { rows } = await raw.query<{ status: string }>(
    "SELECT status FROM instances WHERE deleted_at IS NULL AND status <> 'dead' AND (provider_ref = $1 OR id = $2) LIMIT 1",
    [ref, instanceId],
  );
  return rows[0]?.status ?? null;
}

/**
 * One reconciler serves every pool of a database (a deployment), so schedules that run at once
 * each need a database of their own: every worker has one, with three stores (three replicas),
 * emptied between its schedules.
 */
interface Worker {
  db: TestPostgres;
  stores: Store[];
  raw: pg.Pool;
}

describe(`interleaving: ${SCHEDULES} seeded schedules of 3 reconcilers and concurrent claims on Postgres (base seed ${BASE_SEED})`, () => {
  const workers: Worker[] = [];

  before(async () => {
    for (let w = 0; w < PARALLEL; w++) {
      const db = await startTestPostgres();
      const stores: Store[] = [];
      for (let i = 0; i < 3; i++) stores.push(await openStore({ databaseUrl: db.url, postgres: { poolMax: 2 } }));
      workers.push({ db, stores, raw: new pg.Pool({ connectionString: db.url, max: 1 }) });
    }
  });
  after(async () => {
    for (const w of workers) {
      for (const s of w.stores) await s.close();
      await w.raw.end();
      await w.db.stop();
    }
  });

  /** A fresh deployment in the worker's database: every table emptied, the owner id recorded. */
  async function reset(w: Worker): Promise<void> {
    // Every table but the migrations' record, so a table a later migration adds is emptied too.
    const { rows } = await w.raw.query<{ t: string }>(
      "SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'",
    );
    await w.raw.query(`TRUNCATE ${rows.map((r) => r.t).join(", ")}`);
    await w.stores[0]!.ensureOwnerId(OWNER);
  }

  const totals = { ok: 0, failed: 0, empty: 0, swept: 0, leaseLost: 0, foreignSeen: 0 };
  const failureCodes = new Map<string, number>();

  async function runSchedule(w: Worker, s: Schedule): Promise<string[]> {
    const { stores, raw } = w;
    await reset(w);
    const pool = `p${s.seed.toString(36)}`;
    await stores[0]!.upsertPool({ id: pool, minIdle: s.minIdle, maxTotal: s.maxTotal });
    const fleet = new FaultyFleet(OWNER, pool, s.maxTotal, s.seed, s.faults, (ref, id) => liveRowFor(raw, ref, id));
    fleet.addForeign(`i-foreign${s.seed}`, "other");
    fleet.addForeign(`i-legacy${s.seed}`, null);
    fleet.answerJitterMs = 40;
    fleet.laxRuntimes = s.laxRuntimes;
    let n = 0;
    const ids: IdSource = { instanceId: () => `i-${s.seed.toString(36)}x${(n++).toString(36)}`, token: () => `tok-${n}` };
    const clocks = s.skewMs.map((skew) => new ManualClock(Date.now() + skew));
    const reconcilers = [0, 1, 2].map(
      (i) =>
        new Reconciler({
          ownerId: OWNER,
          store: stores[i]!,
          providers: new Map([[fleet.kind, fleet]]),
          defaultProvider: fleet.kind,
          health: fleet,
          statusReader: fleet,
          clock: clocks[i]!,
          ids,
          logger: silentLogger,
          holder: `r${i}`,
          spec: { orphanGraceMs: 50, maxDeletesPerTick: 10, maxCreatesPerTick: 10 },
          policy: { stuckTimeoutMs: 60_000, failureThreshold: 2, healthRecordIntervalMs: 60_000, createGraceMs: 5_000 },
          intervalMs: 1_000,
          leaseTtlMs: LEASE_TTL_MS,
          healthTimeoutMs: 50,
          healthConcurrency: 8,
          sweepMarginMs: SWEEP_MARGIN_MS,
          // The production cadence, scaled to a schedule that lasts half a second.
          cadence: { bootingMinMs: 10, bootingMaxMs: 50, idleMs: 100, claimedMs: 200, otherMs: 200, jitter: 0.2 },
        }),
    );
    const services = [0, 1, 2].map(
      (i) =>
        new ClaimService({
          store: stores[i]!,
          client: fleet,
          clock: clocks[i]!,
          logger: silentLogger,
          defaultPool: pool,
          owner: `c${i}`,
          provisionTimeoutMs: PROVISION_TIMEOUT_MS,
          resetTimeoutMs: RESET_TIMEOUT_MS,
          claimDeadlineMs: 900,
          sweepMarginMs: SWEEP_MARGIN_MS,
          maxAttempts: 3,
          maxWaitMs: 300,
          waitPollMs: 10,
        }),
    );
    // A warm pool to start from (the faults begin with the schedule).
    fleet.faults = NO_FAULTS;
    for (let i = 0; i < 6 && (await stores[0]!.countByStatus(pool)).idle < s.minIdle; i++) await reconcilers[0]!.tick();
    fleet.faults = s.faults;
    const t0 = performance.now();
    const at = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms - (performance.now() - t0))));
    const outcomes: Outcome[] = [];
    const work: Promise<unknown>[] = [];
    const tally = (t: Awaited<ReturnType<Reconciler["tick"]>>) => {
      totals.swept += t.transitions.filter((x) => x.from === "claiming").length;
      if (t.errors.some((e) => e.startsWith("lease lost"))) totals.leaseLost++;
      if (t.foreign.length > 0) totals.foreignSeen++;
    };
    for (const t of s.ticks)
      work.push(
        at(t.at)
          .then(() => reconcilers[t.replica]!.tick())
          .then(tally),
      );
    for (const d of s.deaths) {
      work.push(
        at(d.at).then(() => {
          const victims = [...fleet.runtimes.values()].filter((rt) => rt.alive && !rt.instanceId.includes("foreign") && !rt.instanceId.includes("legacy"));
          if (victims.length) fleet.killRuntime(victims[Math.floor(prng(s.seed + d.at)() * victims.length)]!.instanceId);
        }),
      );
    }
    for (const c of s.claims) {
      work.push(
        at(c.at).then(async () => {
          if (c.mode === "killed") {
            // A claim process killed right after its pick: the row is left `claiming`, and the
            // runtime may or may not have been provisioned before the process died.
            const pick = await stores[c.replica]!.claimIdle({
              poolIds: [pool],
              owner: `c${c.replica}`,
              attempt: `killed-${s.seed}-${c.at}`,
              attemptTtlMs: PROVISION_TIMEOUT_MS + 2 * RESET_TIMEOUT_MS,
              claimKey: c.key,
              source: null,
              agentName: "Killed",
              instructions: "x",
              joinUrl: null,
              profileImage: null,
              metadata: null,
              exclude: [],
            });
            if (pick.kind === "picked" && c.at % 2 === 0)
              await fleet.provision({ url: pick.instance.url!, gatewayToken: "" }, { agentName: "Killed", instructions: "x" }, 1_000).catch(() => undefined);
            outcomes.push({ claim: c, result: null, error: "killed" });
            return;
          }
          // The instance this claim will most likely pick is the newest idle one: give it the mode.
          const idle = (await stores[c.replica]!.listInstances(pool)).filter((x) => x.status === "idle").at(-1);
          if (idle && c.mode === "slow") fleet.provisionDelay.set(idle.id, PROVISION_TIMEOUT_MS + 30);
          if (idle && c.mode === "fail") fleet.provisionFails.add(idle.id);
          // Past the attempt's deadline and the sweep margin: the sweeper resolves the row meanwhile,
          // and a newer claim may pick it before this one carries on.
          if (idle && c.mode === "stall") {
            fleet.provisionStalls.set(idle.id, {
              ms: PROVISION_TIMEOUT_MS + 2 * RESET_TIMEOUT_MS + SWEEP_MARGIN_MS + (c.at % 7) * 12,
              succeed: c.at % 2 === 0,
              endOnStatus: c.at % 3 !== 0,
            });
          }
          try {
            const result = await services[c.replica]!.claim({
              agentName: "Ada",
              instructions: "x",
              waitMs: c.waitMs,
              ...(c.key ? { idempotencyKey: c.key } : {}),
            });
            outcomes.push({ claim: c, result, error: null });
          } catch (err) {
            outcomes.push({ claim: c, result: null, error: err instanceof PoolError ? err.code : String(err) });
          }
        }),
      );
    }
    await Promise.all(work);

    // Settle: no more faults; passes (by whoever holds the lease) until nothing is claiming.
    fleet.faults = NO_FAULTS;
    fleet.provisionDelay.clear();
    // Bounded by time AND by passes: on a machine loaded several times over (CI beside other work),
    // 5 s of wall time once held too few passes for the sweeper to reach a row past its deadline.
    const settleUntil = performance.now() + 5_000;
    for (let i = 0; ; i++) {
      tally(await reconcilers[i % 3]!.tick());
      const counts = await stores[0]!.countByStatus(pool);
      if (counts.claiming === 0 && i >= 3) break;
      if (performance.now() > settleUntil && i >= 60) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    await new Promise((r) => setTimeout(r, PROVISION_TIMEOUT_MS + 40)); // late bindings land
    for (let i = 0; i < 3; i++) await reconcilers[i]!.tick();
    for (const o of outcomes) {
      if (o.result) totals.ok++;
      else if (o.error === "POOL_EMPTY") totals.empty++;
      else if (o.error !== "killed") {
        totals.failed++;
        failureCodes.set(o.error ?? "?", (failureCodes.get(o.error ?? "?") ?? 0) + 1);
      }
    }
    const probs = await checkInvariants(w, s, pool, fleet, outcomes);
    if (probs.length && process.env.INTERLEAVING_TRACE) {
      console.error(JSON.stringify(s));
      console.error(fleet.log.join("\n"));
      const { rows: ev } = await raw.query(
        "SELECT e.id, e.instance_id, e.from_status, e.to_status, e.actor, e.reason, e.created_at, i.provider_ref, i.deleted_at, i.resource_gone_at FROM instance_events e JOIN instances i ON i.id = e.instance_id ORDER BY e.id",
      );
      for (const e of ev) console.error(JSON.stringify(e));
    }
    return probs;
  }

  async function checkInvariants(w: Worker, s: Schedule, pool: string, fleet: FaultyFleet, outcomes: Outcome[]): Promise<string[]> {
    const { stores, raw } = w;
    const problems: string[] = fleet.violations.map((v) => `${v.kind}: ${v.detail}`);
    const rows = await stores[0]!.listInstances(pool, { includeDeleted: true });
    const byId = new Map(rows.map((r) => [r.id, r]));
    const ok = outcomes.filter((o) => o.result !== null);
    // Distinct instances, except the same key replayed.
    const holder = new Map<string, Outcome>();
    for (const o of ok) {
      const prev = holder.get(o.result!.instanceId);
      if (prev && !(prev.claim.key !== null && prev.claim.key === o.claim.key)) {
        problems.push(`instance ${o.result!.instanceId} answered to two claims (keys ${prev.claim.key}, ${o.claim.key})`);
      }
      holder.set(o.result!.instanceId, o);
      const row = byId.get(o.result!.instanceId);
      const rt = fleet.runtimes.get(o.result!.instanceId);
      if (!row) problems.push(`claim answered with unknown instance ${o.result!.instanceId}`);
      else if (row.conversationId !== o.result!.conversationId)
        problems.push(`claim answered ${o.result!.conversationId} but row ${row.id} records ${row.conversationId} (${row.status})`);
      else if (!["claimed", "pending_acceptance", "crashed"].includes(row.status)) problems.push(`claim answered with ${row.id}, now ${row.status}`);
      else if (row.status === "crashed" && rt?.alive) problems.push(`claimed instance ${row.id} crashed though its runtime lives`);
      if (rt?.alive && rt.bound !== o.result!.conversationId)
        problems.push(`runtime ${rt.instanceId} bound to ${rt.bound}, not to the answered ${o.result!.conversationId}`);
    }
    // One answer per key.
    const perKey = new Map<string, string>();
    for (const o of ok) {
      if (!o.claim.key) continue;
      const prev = perKey.get(o.claim.key);
      if (prev && prev !== o.result!.instanceId) problems.push(`key ${o.claim.key} answered with ${prev} and ${o.result!.instanceId}`);
      perKey.set(o.claim.key, o.result!.instanceId);
    }
    // One live instance per key in the database.
    const liveKeys = new Map<string, number>();
    for (const r of rows)
      if (r.claimKey && !r.deletedAt && ["claiming", "claimed", "pending_acceptance"].includes(r.status))
        liveKeys.set(r.claimKey, (liveKeys.get(r.claimKey) ?? 0) + 1);
    for (const [k, c] of liveKeys) if (c > 1) problems.push(`${c} live instances carry key ${k}`);
    // Nothing left claiming past its deadline + margin.
    const { rows: stale } = await raw.query<{ id: string }>(
      `SELECT id FROM instances WHERE pool_id = $1 AND status = 'claiming' AND claim_deadline + $2 * interval '1 millisecond' < now() - interval '1 second'`,
      [pool, SWEEP_MARGIN_MS],
    );
    for (const r of stale) problems.push(`row ${r.id} still claiming past its deadline + margin`);
    const claimingNow = rows.filter((r) => r.status === "claiming" && !r.deletedAt);
    if (claimingNow.length > 0) problems.push(`rows still claiming after settling: ${claimingNow.map((r) => r.id).join(", ")}`);
    // Foreign resources untouched.
    for (const id of [`i-foreign${s.seed}`, `i-legacy${s.seed}`])
      if (!fleet.resources.has(`ref-${id}`)) problems.push(`resource ${id} of another owner was deleted`);
    if (fleet.maxOwned > s.maxTotal) problems.push(`${fleet.maxOwned} resources at once > max total ${s.maxTotal}`);
    return problems;
  }

  it("every schedule keeps every invariant", { timeout: 900_000 }, async () => {
    const failures: Array<{ schedule: Schedule; problems: string[] }> = [];
    const stats = { schedules: 0, killed: 0 };
    let next = 0;
    const worker = async (w: Worker) => {
      while (next < SCHEDULES && failures.length === 0) {
        const s = drawSchedule(BASE_SEED + next++);
        const problems = await runSchedule(w, s).catch((err) => [`schedule threw: ${(err as Error).stack ?? err}`]);
        stats.schedules++;
        stats.killed += s.claims.filter((c) => c.mode === "killed").length;
        if (problems.length > 0) failures.push({ schedule: s, problems });
      }
    };
    await Promise.all(workers.map(worker));
    if (failures.length > 0) {
      const f = failures[0]!;
      console.error(
        `interleaving: schedule with seed ${f.schedule.seed} broke an invariant (replay: INTERLEAVING_SEED=${f.schedule.seed} INTERLEAVING_SCHEDULES=1)`,
      );
      console.error(JSON.stringify(f.schedule));
    }
    assert.deepEqual(
      failures.map((f) => ({ seed: f.schedule.seed, problems: f.problems })),
      [],
    );
    assert.equal(stats.schedules, SCHEDULES);
    console.log(
      `# interleaving: ${stats.schedules} schedules (base seed ${BASE_SEED}); claims: ${totals.ok} served, ${totals.empty} pool empty, ` +
        `${totals.failed} failed, ${stats.killed} killed after their pick; ${totals.swept} stale claims swept; ${totals.leaseLost} passes lost their lease; ` +
        `${totals.foreignSeen} passes saw foreign resources; failures by code ${JSON.stringify(Object.fromEntries(failureCodes))}; every invariant held`,
    );
    // The schedules must really exercise the paths they claim to (a suite that never sweeps proves nothing).
    if (SCHEDULES >= 200) {
      assert.ok(totals.ok > SCHEDULES, `claims were served (${totals.ok})`);
      assert.ok(totals.swept > 0, "stale claims were swept");
      assert.ok(totals.leaseLost > 0, "passes lost their lease mid-pass");
    }
  });
});
