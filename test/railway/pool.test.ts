/**
 * The pool manager on Railway, end to end: the real server (`serve()`, config from env vars,
 * PROVIDER=railway) against the Railway stand-in, which validates every operation against Railway's
 * real schema and runs real reference-runtime processes behind its domains.
 *
 * Without the schema (RAILWAY_SCHEMA_PATH) every test here is reported SKIPPED with the reason,
 * never passed.
 */
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import type { Clock } from "../../src/clock.ts";
import { GraphQLClient } from "../../src/provider/railway/client.ts";
import { loadConfig } from "../../src/config.ts";
import type { InstanceRecord } from "../../src/db/store.ts";
import type { TickResult } from "../../src/pool/reconciler.ts";
import { EVERY_PASS } from "../../src/pool/health-schedule.ts";
import { serve, type RunningPool, type ServeOverrides } from "../../src/serve.ts";
import { startTestPostgres, type TestPostgres } from "../support/postgres.ts";
import { waitFor } from "../support/process.ts";
import { railwaySchemaPath, startRailwayStandin, type RailwayStandin, type RailwayStandinOptions, type ValidationFailure } from "./standin.ts";

const SCHEMA = railwaySchemaPath();
const skip = SCHEMA ? false : "no Railway schema: set RAILWAY_SCHEMA_PATH to Railway's introspection schema.json";

const API_KEY = "railway-pool-test-key-0123456789";
const IMAGE = "ghcr.io/acme/agent-runtime:test";
const POOL = "default";
/**
 * `ap-<pool>-i-<12>-<owner id>`: the service name of an unrenamed instance (the instance id is group 1).
 * With pool `default` it is 31 characters: no agent label fits after a claim.
 */
const nameRe = (pool: string, ownerId: string) => new RegExp(`^ap-${pool}-(i-[a-z0-9]{12})-${ownerId}$`);
/**
 * The pool of the tests that watch renames: `ap-a-i-<12>-<owner>` is 25 characters, which leaves
 * `--` + 5 for the agent's label.
 */
const SHORT_POOL = "a";

// ---- bookkeeping shared by all tests: cleanups, and every stand-in's requests for the schema check ----

const cleanups: Array<() => Promise<unknown>> = [];
const seenOperations = new Map<string, number>();
const allValidationFailures: ValidationFailure[] = [];
let requestsSeen = 0;

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch((err) => console.error("cleanup failed:", err));
});

// One embedded Postgres cluster for the whole file (a fresh database per test is then ~30 ms;
// a fresh PGlite directory costs ~2 s). This database only keeps the cluster up between tests.
let keeper: TestPostgres | null = null;
before(async () => {
  if (SCHEMA) keeper = await startTestPostgres();
});
after(async () => {
  await keeper?.stop();
});

/** A fresh, empty Postgres database, dropped after the test. */
async function database(): Promise<string> {
  const pg = await startTestPostgres();
  cleanups.push(() => pg.stop());
  return pg.url;
}

async function standin(opts: RailwayStandinOptions = {}): Promise<RailwayStandin> {
  const s = await startRailwayStandin({ runtimeEnv: { RUNTIME_BOOT_DELAY_MS: "0" }, ...opts });
  cleanups.push(async () => {
    for (const r of s.requests) seenOperations.set(r.op, (seenOperations.get(r.op) ?? 0) + 1);
    requestsSeen += s.requests.length;
    allValidationFailures.push(...s.validationFailures);
    await s.close();
  });
  return s;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-railway-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Pool extends RunningPool {
  poolId: string;
  /** The deployment's owner id (recorded in its database at first start). */
  ownerId: string;
  /** Log lines (pino JSON) of this server, newest last. */
  logs: string[];
  /** Every pass this server ran (timer-driven and `tick()`), oldest first. */
  passes: TickResult[];
}

/** `serve()` on the stand-in with PROVIDER=railway; closed after the test. */
async function startPool(s: RailwayStandin, env: Record<string, string>, over: ServeOverrides = {}): Promise<Pool> {
  const logs: string[] = [];
  const dest = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split("\n")) if (line) logs.push(line);
      if (logs.length > 2000) logs.splice(0, logs.length - 2000);
      cb();
    },
  });
  const config = loadConfig({
    PROVIDER: "railway",
    RAILWAY_API_URL: s.url,
    RAILWAY_API_TOKEN: s.token,
    RAILWAY_URL_SCHEME: "http",
    INSTANCE_IMAGE: IMAGE,
    POOL_API_KEY: API_KEY,
    POOL_ID: POOL,
    PORT: "0",
    HEALTH_TIMEOUT_MS: "2000",
    TICK_INTERVAL_MS: "3600000",
    LOG_LEVEL: "info",
    ...env,
  });
  // Passes are driven by hand and runtimes crashed between them: check every instance every pass.
  const running = await serve(config, { logDestination: dest, cadence: EVERY_PASS, ...over });
  // Every pass reports to the metrics; this runs before the first pass ends (it starts on a timer).
  const passes: TickResult[] = [];
  const onTick = running.metrics.onTick.bind(running.metrics);
  running.metrics.onTick = (t) => {
    passes.push(t);
    onTick(t);
  };
  // Recorded by serve() before the provider opened: the candidate is not used.
  const ownerId = await running.store.ensureOwnerId("never");
  const pool: Pool = Object.assign(running, { poolId: config.POOL_ID, ownerId, logs, passes });
  cleanups.push(() => pool.close());
  return pool;
}

/** Runs `body`; on failure prints the pool's last log lines (what the tick loop said). */
async function withLogs(pools: () => Pool[], body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    for (const p of pools()) console.error(`--- last log lines of ${p.url} ---\n${p.logs.slice(-40).join("\n")}`);
    throw err;
  }
}

const live = (rows: InstanceRecord[]) => rows.filter((r) => r.status !== "dead");
const byStatus = (rows: InstanceRecord[], status: string) => rows.filter((r) => r.status === status);
const opsSince = (s: RailwayStandin, from: number) => s.requests.slice(from).map((r) => r.op);
const countOp = (s: RailwayStandin, op: string, from = 0) => s.requests.slice(from).filter((r) => r.op === op).length;

/** The result of the server's first pass (the one `serve()` starts), once it has run. */
const firstPass = (pool: Pool): TickResult | null => pool.passes[0] ?? null;

/** Polls the store until the pool has `idle` idle instances and nothing starting. */
async function settled(pool: Pool, idle: number, timeoutMs = 30_000): Promise<InstanceRecord[]> {
  return waitFor(
    `${idle} idle instances`,
    async () => {
      const rows = await pool.store.listInstances(pool.poolId);
      return byStatus(rows, "idle").length === idle && byStatus(rows, "starting").length === 0 ? rows : null;
    },
    timeoutMs,
    50,
  );
}

// ---- 1. the lifecycle on Railway ----

test("on Railway: fill to min idle, claim + rename, crash of idle and claimed, dismiss, drain, kill, restart adopts", { skip, timeout: 120_000 }, async () => {
  const s = await standin({ stepMs: 20 });
  const { projectId, environmentId } = s.createProject("agents");
  const dataDir = tempDir();
  const env = { DATA_DIR: dataDir, RAILWAY_PROJECT_IDS: projectId, POOL_ID: SHORT_POOL, POOL_MIN_IDLE: "2", POOL_MAX_TOTAL: "6", TICK_INTERVAL_MS: "200" };
  const pools: Pool[] = [];
  let pool = await startPool(s, env);
  pools.push(pool);

  await withLogs(
    () => pools,
    async () => {
      // -- The pool fills to min idle: services with image + variables inline, a domain, SUCCESS, healthy.
      let rows = await settled(pool, 2);
      const services = s.services(projectId);
      assert.equal(services.length, 2);
      for (const r of byStatus(rows, "idle")) {
        const svc = services.find((x) => x.id === r.providerRef);
        assert.ok(svc, `no service for ${r.id}`);
        assert.equal(nameRe(SHORT_POOL, pool.ownerId).exec(svc.name)?.[1], r.id, "service named <prefix>-<pool>-<instance id>-<owner id>");
        assert.ok(svc.name.length <= 32);
        assert.equal(svc.image, IMAGE);
        const vars = svc.variables[environmentId]!;
        assert.equal(vars.GATEWAY_TOKEN, r.gatewayToken);
        assert.equal(vars.INSTANCE_ID, r.id);
        assert.equal(vars.PORT, "8080");
        assert.equal(vars.AGENT_POOL_OWNER, pool.ownerId);
        assert.equal(svc.domains.length, 1);
        assert.equal(r.url, `http://${svc.domains[0]}`);
        // Variables went in with the create: the first and only deployment booted with them.
        assert.deepEqual(
          svc.deployments.map((d) => d.status),
          ["SUCCESS"],
        );
      }
      const creates = s.requests.filter((r) => r.op === "ServiceCreate");
      assert.equal(creates.length, 2);
      for (const c of creates) {
        const input = (c.variables as { input: { source: { image: string }; variables: Record<string, string>; environmentId: string } }).input;
        assert.equal(input.source.image, IMAGE);
        assert.equal(input.environmentId, environmentId);
        assert.ok(input.variables.GATEWAY_TOKEN && input.variables.INSTANCE_ID, "variables inline in serviceCreate");
      }
      assert.equal(s.counts.variableCollectionUpsert ?? 0, 0);
      assert.equal(s.counts.variableUpsert ?? 0, 0);

      // -- A quiet pass with healthy idle instances is one request.
      await pool.reconciler.stop();
      for (let i = 0; i < 3; i++) {
        const before = s.requests.length;
        const r = await pool.reconciler.tick();
        assert.deepEqual(opsSince(s, before), ["PoolList"]);
        assert.equal(r.listing, "complete");
        assert.equal(r.healthChecks, 2);
        assert.deepEqual([r.created, r.deleted, r.errors], [[], [], []]);
      }
      pool.reconciler.start();

      // -- A claim through the HTTP API; the service is renamed in the background; the pool refills.
      const res = await fetch(`${pool.url}/api/pool/claim`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({ agentName: "Ada Lovelace", instructions: "You count things." }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      const claimA = (await res.json()) as { instanceId: string; conversationId: string | null; status: string };
      assert.equal(claimA.status, "claimed");
      assert.ok(claimA.conversationId, "provisioned: the runtime created a conversation");
      const rowA = (await pool.store.getInstance(claimA.instanceId))!;
      assert.equal(rowA.status, "claimed");
      const refA = rowA.providerRef!;
      const renamedA = await waitFor(
        "the claimed service to be renamed",
        () => {
          const name = s.service(refA)?.name;
          return name && name !== rowA.name ? name : null;
        },
        15_000,
        50,
      );
      assert.ok(renamedA.startsWith(`${rowA.name}-`) && renamedA.length <= 32, renamedA);
      assert.equal(countOp(s, "ServiceRename"), 1);
      rows = await settled(pool, 2);
      // Still recognised after the rename: listed, healthy, claimed.
      await pool.reconciler.tick();
      assert.equal((await pool.store.getInstance(claimA.instanceId))!.status, "claimed");

      // -- A crashed deployment of an idle instance: dead, its service deleted, a replacement made.
      const victim = byStatus(rows, "idle")[0]!;
      await s.crashDeployment(victim.providerRef!);
      await waitFor(
        "the crashed idle instance to be dead and deleted",
        async () => {
          const row = (await pool.store.getInstance(victim.id))!;
          return row.status === "dead" && row.deletedAt !== null;
        },
        15_000,
        50,
      );
      assert.equal(s.service(victim.providerRef!), null, "its service is deleted");
      rows = await settled(pool, 2);
      assert.ok(!rows.some((r) => r.id === victim.id));

      // -- A crashed deployment of a claimed instance: `crashed`, kept for dismissal; dismiss deletes it.
      await s.crashDeployment(refA);
      await waitFor("the claimed instance to show crashed", async () => (await pool.store.getInstance(claimA.instanceId))!.status === "crashed", 15_000, 50);
      assert.deepEqual(
        (await pool.ops.agents()).map((a) => [a.id, a.status]),
        [[claimA.instanceId, "crashed"]],
      );
      await pool.reconciler.tick();
      assert.ok(s.service(refA), "a crashed agent's service is kept until dismissed");
      assert.equal((await pool.store.getInstance(claimA.instanceId))!.status, "crashed");
      assert.deepEqual(await pool.ops.dismiss(claimA.instanceId), { id: claimA.instanceId, status: "dead" });
      assert.equal(s.service(refA), null);

      // -- Drain and kill delete services.
      rows = await settled(pool, 2);
      const drained = await pool.ops.drain(1);
      assert.equal(drained.drained.length, 1);
      assert.deepEqual(drained.errors, []);
      const drainedRow = (await pool.store.getInstance(drained.drained[0]!))!;
      assert.equal(s.service(drainedRow.providerRef!), null);
      const toKill = byStatus(await pool.store.listInstances(pool.poolId), "idle").find((r) => r.id !== drainedRow.id)!;
      assert.deepEqual(await pool.ops.kill(toKill.id), { id: toKill.id, status: "dead" });
      assert.equal(s.service(toKill.providerRef!), null);
      rows = await settled(pool, 2);

      // -- A second claim (through the operations), renamed, then a restart. A name with no ASCII
      // letter still gets the service renamed (to a generic label).
      const claimB = await pool.ops.claim({ agentName: "李雷", instructions: "You debug things." });
      const rowB = (await pool.store.getInstance(claimB.instanceId))!;
      const renamedB = await waitFor(
        "the second claim's rename",
        () => {
          const name = s.service(rowB.providerRef!)?.name;
          return name && name !== rowB.name ? name : null;
        },
        15_000,
        50,
      );
      assert.equal(renamedB, `${rowB.name}--agent`);
      rows = await settled(pool, 2);
      const before = live(rows)
        .map((r) => [r.id, r.status, r.providerRef])
        .sort();
      assert.equal(before.length, 3);
      const servicesBefore = s
        .services(projectId)
        .map((x) => [x.id, x.name])
        .sort();
      assert.equal(servicesBefore.length, 3);

      await pool.close();
      const createsBefore = countOp(s, "ServiceCreate");
      const mark = s.requests.length;
      pool = await startPool(s, env);
      pools.push(pool);
      await waitFor("two passes after the restart", () => pool.passes.length >= 2, 15_000, 20);
      rows = await pool.store.listInstances(pool.poolId);
      assert.deepEqual(
        live(rows)
          .map((r) => [r.id, r.status, r.providerRef])
          .sort(),
        before,
        "same instances, same statuses",
      );
      assert.equal(countOp(s, "ServiceCreate"), createsBefore, "no create after the restart");
      assert.equal(countOp(s, "ServiceDelete", mark), 0, "no delete after the restart");
      assert.deepEqual(
        s
          .services(projectId)
          .map((x) => [x.id, x.name])
          .sort(),
        servicesBefore,
      );
      assert.equal(s.service(rowB.providerRef!)!.name, renamedB);
      assert.equal((await pool.store.getInstance(claimB.instanceId))!.status, "claimed");
      await pool.close();

      // -- Every operation sent was valid against Railway's schema (see also the last test).
      assert.deepEqual(s.validationFailures, []);
      const ops = new Set(s.requests.map((r) => r.op));
      for (const op of ["ResolveEnvironments", "PoolList", "ServiceCreate", "ServiceDomainCreate", "ServiceRename", "ServiceDelete"]) {
        assert.ok(ops.has(op), `${op} was sent (sent: ${[...ops].join(", ")})`);
      }
    },
  );
});

// ---- 2. one request per tick ----

for (const [projects, instances] of [
  [1, 10],
  // Railway caps a project at 100 services: 100 is the most one project holds, 400 needs 4+ projects.
  [1, 100],
  [5, 10],
  [5, 400],
] as const) {
  test(`one GraphQL request per quiet tick: ${projects} project(s), ${instances} instances, and after a restart (Postgres)`, {
    skip,
    timeout: 120_000,
  }, async () => {
    // No runtimes and deployments held in QUEUED: nothing is health-checked (the fake domains
    // resolve nowhere); every row is `starting`, the pool is full, so a pass only lists.
    const s = await standin({ runtimes: false, autoAdvance: false, rateLimit: { perSecond: null } });
    const ids = Array.from({ length: projects }, (_, i) => s.createProject(`pool-${i}`).projectId);
    const env = {
      DATA_DIR: tempDir(),
      DATABASE_URL: await database(),
      RAILWAY_PROJECT_IDS: ids.join(","),
      POOL_MIN_IDLE: String(instances),
      POOL_MAX_TOTAL: String(instances),
      MAX_CREATES_PER_TICK: String(instances),
      RAILWAY_MAX_RPS: "1000",
    };
    const pools: Pool[] = [];
    let pool = await startPool(s, env);
    pools.push(pool);
    await withLogs(
      () => pools,
      async () => {
        const fill = await waitFor("the filling pass", () => firstPass(pool), 60_000, 20);
        await pool.reconciler.stop();
        assert.deepEqual(fill.errors, []);
        assert.equal(fill.created.length, instances);
        const all = ids.flatMap((id) => s.services(id));
        assert.equal(all.length, instances);
        assert.ok(all.every((x) => x.domains.length === 1));

        const quiet = async (p: Pool) => {
          const before = s.requests.length;
          const r = await p.reconciler.tick();
          assert.deepEqual(opsSince(s, before), ["PoolList"], "one request: the listing");
          assert.equal(s.requests[before]!.rootFields.length, projects, "one `project` alias per project");
          assert.equal(r.listing, "complete");
          assert.equal(r.counts.starting, instances);
          assert.deepEqual([r.created, r.deleted, r.errors], [[], [], []]);
        };
        for (let i = 0; i < 3; i++) await quiet(pool);
        const rowsBefore = (await pool.store.listInstances(pool.poolId)).map((r) => [r.id, r.providerRef]).sort();

        // Restart: the first pass of the new server is one request too (the environments are
        // resolved once at start, before it).
        await pool.close();
        const mark = s.requests.length;
        pool = await startPool(s, env);
        pools.push(pool);
        const first = await waitFor("the first pass after the restart", () => firstPass(pool), 30_000, 5);
        await pool.reconciler.stop();
        const passes = pool.passes.length; // 1, unless the 1 s re-poll of `starting` rows came first
        assert.equal(first.listing, "complete");
        assert.deepEqual([first.created, first.deleted], [[], []]);
        assert.deepEqual(opsSince(s, mark), ["ResolveEnvironments", ...Array<string>(passes).fill("PoolList")]);
        assert.deepEqual((await pool.store.listInstances(pool.poolId)).map((r) => [r.id, r.providerRef]).sort(), rowsBefore);
        for (let i = 0; i < 2; i++) await quiet(pool);
        assert.deepEqual(s.validationFailures, []);
      },
    );
  });
}

// ---- 3. pacing ----

test("filling 60 instances under Railway's 50/s limit draws no 429 and leaves no service without a domain (Postgres)", { skip, timeout: 60_000 }, async () => {
  const s = await standin({ runtimes: false, autoAdvance: false, rateLimit: { perSecond: 50, perHour: 10_000 } });
  const { projectId } = s.createProject("burst");
  const pool = await startPool(s, {
    DATA_DIR: tempDir(),
    DATABASE_URL: await database(),
    RAILWAY_PROJECT_IDS: projectId,
    POOL_MIN_IDLE: "60",
    POOL_MAX_TOTAL: "60",
    MAX_CREATES_PER_TICK: "60",
  });
  await withLogs(
    () => [pool],
    async () => {
      const r = await waitFor("the filling pass", () => firstPass(pool), 30_000, 20);
      await pool.reconciler.stop();
      assert.deepEqual(r.errors, []);
      assert.equal(r.created.length, 60);
      assert.deepEqual(
        s.requests.filter((x) => x.status !== 200).map((x) => `${x.op} ${x.status}`),
        [],
        "no 429, no failure",
      );
      // At most 50 requests in any one second.
      const at = s.requests.map((x) => x.at);
      let peak = 0;
      for (let i = 0, j = 0; i < at.length; i++) {
        while (at[i]! - at[j]! >= 1000) j++;
        peak = Math.max(peak, i - j + 1);
      }
      assert.ok(peak <= 50, `peak ${peak} requests/s`);
      const services = s.services(projectId);
      assert.equal(services.length, 60);
      assert.deepEqual(
        services.filter((x) => x.domains.length !== 1).map((x) => x.name),
        [],
        "every service has its domain",
      );
      const rows = await pool.store.listInstances(pool.poolId);
      assert.equal(rows.length, 60);
      assert.ok(rows.every((x) => x.providerRef && x.url?.startsWith("http://")));
      assert.deepEqual(s.validationFailures, []);

      // The hourly budget Railway reports is a metric: after one more (serial) pass it is exactly
      // what the stand-in counted.
      await pool.reconciler.tick();
      const scrape = (await pool.app.inject({ url: "/metrics", headers: { authorization: `Bearer ${API_KEY}` } })).body;
      const gauge = (name: string) => Number(new RegExp(`^${name}\\{provider="railway"\\} (\\d+)$`, "m").exec(scrape)?.[1]);
      assert.equal(gauge("agent_pool_provider_rate_limit"), 10_000);
      assert.equal(gauge("agent_pool_provider_rate_limit_remaining"), 10_000 - s.requests.length);
      assert.equal(gauge("agent_pool_provider_pending_renames"), 0);
    },
  );
});

// ---- 4. outage and 429 storm ----

test("a 10-minute outage, a 429 storm and HTML 5xx delete nothing, lose no claimed instance, and the pool recovers (Postgres)", {
  skip,
  timeout: 120_000,
}, async () => {
  const databaseUrl = await database();
  const s = await standin({ stepMs: 20 });
  const { projectId } = s.createProject("outage");
  // Pool time runs ahead of the wall clock by `offset`: each pass of the outage stands for 75 s.
  let offset = 0;
  const clock: Clock = { now: () => new Date(Date.now() + offset) };
  const pool = await startPool(
    s,
    // The short pool id leaves room for the label of the rename that fails during the outage.
    { DATA_DIR: tempDir(), DATABASE_URL: databaseUrl, RAILWAY_PROJECT_IDS: projectId, POOL_ID: SHORT_POOL, POOL_MIN_IDLE: "2", POOL_MAX_TOTAL: "5" },
    { clock },
  );
  await withLogs(
    () => [pool],
    async () => {
      await settled(pool, 2);
      await pool.reconciler.stop();
      const claim1 = await pool.ops.claim({ agentName: "Before", instructions: "Claimed before the outage." });
      await waitFor(
        "the pool to refill",
        async () => {
          const r = await pool.reconciler.tick();
          return r.counts.idle === 2 && r.counts.starting === 0;
        },
        30_000,
        50,
      );
      const servicesBefore = new Set(s.services(projectId).map((x) => x.id));
      assert.equal(servicesBefore.size, 3);
      const deletesBefore = countOp(s, "ServiceDelete");

      const assertNothingLost = async (label: string) => {
        const rows = await pool.store.listInstances(pool.poolId);
        for (const c of claims) {
          const row = rows.find((r) => r.id === c.instanceId);
          assert.equal(row?.status, "claimed", `${label}: claimed instance ${c.instanceId} is ${row?.status}`);
          assert.equal(row.conversationId, c.conversationId);
          assert.ok(s.service(row.providerRef!), `${label}: its service exists`);
        }
        for (const id of servicesBefore) assert.ok(s.service(id), `${label}: service ${id} still exists`);
        assert.equal(countOp(s, "ServiceDelete"), deletesBefore, `${label}: no delete`);
      };
      const claims = [claim1];

      // -- Railway unreachable for "10 minutes": 6 passes, each standing for 100 s of pool time.
      s.failNext(1, "outage", { durationMs: 10 * 60_000 });
      for (let i = 0; i < 6; i++) {
        offset += 100_000;
        const r = await pool.reconciler.tick();
        assert.equal(r.listing, "failed");
        assert.deepEqual([r.created, r.deleted, r.transitions], [[], [], []]);
        if (i === 1) {
          // The claim path makes no Railway call: claims keep working during the outage (its
          // rename fails and is queued for a retry).
          claims.push(await pool.ops.claim({ agentName: "During", instructions: "Claimed during the outage." }));
        }
      }
      await assertNothingLost("after the outage");

      // -- Railway answers again, with a storm of 429s on every call (short Retry-After: compressed in time).
      s.clearFaults();
      s.failNext(8, "429burst", { retryAfterSec: 0 });
      s.failNext(1, "429burst", { retryAfterSec: 1 });
      let stormPasses = 0;
      for (let r = await pool.reconciler.tick(); r.listing === "failed"; r = await pool.reconciler.tick()) {
        assert.deepEqual([r.created, r.deleted, r.transitions], [[], [], []]);
        assert.ok(++stormPasses < 10, "the storm ends");
      }
      assert.ok(stormPasses >= 1, "the storm failed a pass");
      assert.equal(s.requests.filter((x) => x.status === 429).length, 9);
      await assertNothingLost("after the 429 storm");

      // -- Cloudflare HTML error pages instead of JSON (the listing is resent once): never a listing.
      s.failNext(1, "html5xx", { status: 502, match: "PoolList" });
      s.failNext(1, "html5xx", { status: 503, match: "PoolList" });
      const html = await pool.reconciler.tick();
      assert.equal(html.listing, "failed");
      assert.deepEqual([html.created, html.deleted, html.transitions], [[], [], []]);
      await assertNothingLost("after the HTML 5xx");

      // -- Recovery: the next passes list completely and refill what the outage claim took; the
      // rename that failed during the outage lands.
      await waitFor(
        "the pool to recover",
        async () => {
          const r = await pool.reconciler.tick();
          return r.listing === "complete" && r.counts.idle === 2 && r.counts.starting === 0 && r.counts.claimed === 2;
        },
        30_000,
        50,
      );
      const during = (await pool.store.getInstance(claims[1]!.instanceId))!;
      await waitFor("the rename queued during the outage to land", () => s.service(during.providerRef!)!.name.startsWith(`${during.name}--`), 30_000, 100);
      await assertNothingLost("after recovery");
      assert.equal(s.services(projectId).length, 4);
      assert.deepEqual(s.validationFailures, []);
    },
  );
});

// ---- 5. deployments sharing a project (owner ids) ----

/** A second API client on the stand-in (its own token and budget), for what another version or an operator does. */
function operator(s: RailwayStandin): GraphQLClient {
  const c = new GraphQLClient({ apiUrl: s.url, apiToken: s.createToken("workspace") });
  cleanups.push(() => c.close());
  return c;
}

/** Waits until `pool` has run `n` passes that started at or after `since` (ms), and returns them. */
function passesSince(pool: Pool, since: number, n: number): Promise<TickResult[]> {
  return waitFor(
    `${n} passes of ${pool.url}`,
    () => {
      const ps = pool.passes.filter((p) => Date.parse(p.at) >= since);
      return ps.length >= n ? ps : null;
    },
    30_000,
    20,
  );
}

const GRACE_MS = 300;

test("two deployments with the same pool name on one project and environment leave each other's services alone (Postgres)", {
  skip,
  timeout: 120_000,
}, async () => {
  const s = await standin({ stepMs: 20 });
  const { projectId, environmentId } = s.createProject("shared");
  // The same pool name and project, each with its own database (hence its own owner id): a laptop
  // pointed at production, or staging beside production.
  const common = { RAILWAY_PROJECT_IDS: projectId, POOL_MIN_IDLE: "2", POOL_MAX_TOTAL: "4", TICK_INTERVAL_MS: "200", ORPHAN_GRACE_MS: String(GRACE_MS) };
  const a = await startPool(s, { ...common, DATA_DIR: tempDir(), DATABASE_URL: await database() });
  const b = await startPool(s, { ...common, DATA_DIR: tempDir(), DATABASE_URL: await database() });
  assert.notEqual(a.ownerId, b.ownerId);
  const pairs: Array<[Pool, Pool]> = [
    [a, b],
    [b, a],
  ];

  await withLogs(
    () => [a, b],
    async () => {
      // Both fill their pools; one agent of each is claimed (a claimed agent is what the earlier
      // system lost), and both refill.
      await Promise.all([settled(a, 2), settled(b, 2)]);
      const claimA = await a.ops.claim({ agentName: "Ada", instructions: "Deployment A's agent." });
      const claimB = await b.ops.claim({ agentName: "Bob", instructions: "Deployment B's agent." });
      await Promise.all([settled(a, 2), settled(b, 2)]);
      const rowsOf = async (p: Pool) => live(await p.store.listInstances(p.poolId));
      const refsOf = async (p: Pool) => new Set((await rowsOf(p)).map((r) => r.providerRef!));
      const [refsA, refsB] = [await refsOf(a), await refsOf(b)];
      assert.equal(refsA.size, 3);
      assert.equal(refsB.size, 3);
      const services = s.services(projectId);
      assert.equal(services.length, 6);
      for (const [p, refs] of [
        [a, refsA],
        [b, refsB],
      ] as const) {
        for (const ref of refs) {
          const svc = services.find((x) => x.id === ref)!;
          assert.match(svc.name, nameRe(POOL, p.ownerId));
          assert.equal(svc.variables[environmentId]!.AGENT_POOL_OWNER, p.ownerId);
        }
      }
      const namesBefore = services.map((x) => [x.id, x.name]).sort();

      // Several passes of each, all past the orphan grace for every service of the other.
      const since = Date.now() + GRACE_MS;
      const [passesA, passesB] = await Promise.all([passesSince(a, since, 4), passesSince(b, since, 4)]);
      for (const [p, q, passes] of [
        [a, b, passesA],
        [b, a, passesB],
      ] as const) {
        const theirs = await refsOf(q);
        for (const t of passes) {
          assert.equal(t.listing, "complete");
          assert.deepEqual(t.errors, []);
          // Reported as another deployment's, with its owner id: every one of its services, nothing else.
          assert.deepEqual(t.foreign.map((f) => [f.ref, f.owner]).sort(), [...theirs].map((ref) => [ref, q.ownerId]).sort());
        }
        // Never adopted: no row of one deployment points at the other's services.
        assert.ok((await rowsOf(p)).every((r) => !theirs.has(r.providerRef!)));
        assert.ok(
          p.logs.some((l) => l.includes("belongs to another deployment: left alone") && l.includes(q.ownerId)),
          "a log line names the other owner",
        );
      }
      // Neither deleted nor renamed anything of the other, in any pass. (One of its own instances
      // may die and be replaced when the machine is loaded, e.g. by the rest of `npm test`: that is
      // its own business, counted here, and no deletion of the other's.)
      const ownDeletes = pairs.map(([p]) => p.passes.flatMap((t) => t.deleted).map((d) => d.ref));
      assert.ok(
        ownDeletes[0]!.every((ref) => refsA.has(ref) || !refsB.has(ref)),
        "A deleted none of B's services",
      );
      assert.ok(
        ownDeletes[1]!.every((ref) => refsB.has(ref) || !refsA.has(ref)),
        "B deleted none of A's services",
      );
      assert.equal(countOp(s, "ServiceDelete"), ownDeletes[0]!.length + ownDeletes[1]!.length, "every delete is one a pass reported as its own");
      assert.equal(countOp(s, "ServiceCreate"), 6 + ownDeletes[0]!.length + ownDeletes[1]!.length);
      // `ap-default-i-<12>-<owner>` leaves no room for a label: the claims sent no rename either.
      assert.equal(countOp(s, "ServiceRename"), 0);
      const deleted = new Set(ownDeletes.flat());
      const namesNow = new Map(s.services(projectId).map((x) => [x.id, x.name]));
      for (const [id, name] of namesBefore) if (!deleted.has(id!)) assert.equal(namesNow.get(id!), name, `service ${id} kept its name`);
      // The claimed agents stay claimed, on the services they were given.
      assert.equal((await a.store.getInstance(claimA.instanceId))!.status, "claimed");
      assert.equal((await b.store.getInstance(claimB.instanceId))!.status, "claimed");
      if (deleted.size === 0) assert.deepEqual([await refsOf(a), await refsOf(b)], [refsA, refsB]);
      assert.deepEqual(s.validationFailures, []);
    },
  );
});

test("services of the old name form (no owner id): the rows' own are adopted, others are left alone and reported (Postgres)", {
  skip,
  timeout: 120_000,
}, async () => {
  const s = await standin({ stepMs: 20 });
  const { projectId, environmentId } = s.createProject("upgrade");
  const env = {
    DATA_DIR: tempDir(),
    DATABASE_URL: await database(),
    RAILWAY_PROJECT_IDS: projectId,
    POOL_MIN_IDLE: "2",
    POOL_MAX_TOTAL: "4",
    TICK_INTERVAL_MS: "200",
    ORPHAN_GRACE_MS: String(GRACE_MS),
  };
  const pools: Pool[] = [];
  let pool = await startPool(s, env);
  pools.push(pool);

  await withLogs(
    () => pools,
    async () => {
      await settled(pool, 2);
      const claimed = await pool.ops.claim({ agentName: "Old", instructions: "Claimed before the upgrade." });
      await settled(pool, 2);
      const before = live(await pool.store.listInstances(pool.poolId)).map((r) => [r.id, r.status, r.providerRef!] as const);
      assert.equal(before.length, 3);
      await pool.close();

      // What the version before owner ids made: the same services, named `ap-default-<instance id>`.
      const api = operator(s);
      for (const [id, , ref] of before) {
        await api.call(
          "mutation OldFormRename($id: String!, $input: ServiceUpdateInput!) { serviceUpdate(id: $id, input: $input) { id } }",
          { id: ref, input: { name: `ap-default-${id}` } },
          { operation: "oldFormRename", idempotent: false },
        );
      }
      // And one of the old form that no row of this database knows (another deployment's, from before owner ids).
      const stray = await api.call<{ serviceCreate: { id: string } }>(
        "mutation OldFormCreate($input: ServiceCreateInput!) { serviceCreate(input: $input) { id } }",
        { input: { projectId, environmentId, name: "ap-default-i-0ldf0rmstray", source: { image: IMAGE } } },
        { operation: "oldFormCreate", idempotent: false },
      );
      const strayRef = stray.data.serviceCreate.id;
      const servicesBefore = s
        .services(projectId)
        .map((x) => [x.id, x.name])
        .sort();
      assert.equal(servicesBefore.length, 4);

      // The upgraded deployment (same database, so the same rows) starts.
      const mark = s.requests.length;
      pool = await startPool(s, env);
      pools.push(pool);
      const since = Date.now() + GRACE_MS;
      const passes = await passesSince(pool, since, 4);
      for (const t of passes) {
        assert.equal(t.listing, "complete");
        assert.deepEqual([t.created, t.deleted, t.errors], [[], [], []]);
        assert.deepEqual(t.foreign, [{ ref: strayRef, name: "ap-default-i-0ldf0rmstray", owner: null }]);
      }
      // Adopted: same rows, same services, same statuses; nothing deleted, nothing made twice.
      assert.deepEqual(
        live(await pool.store.listInstances(pool.poolId)).map((r) => [r.id, r.status, r.providerRef!] as const),
        before,
      );
      assert.equal(countOp(s, "ServiceDelete", mark), 0);
      assert.equal(countOp(s, "ServiceCreate", mark), 0);
      assert.deepEqual(
        s
          .services(projectId)
          .map((x) => [x.id, x.name])
          .sort(),
        servicesBefore,
      );
      assert.ok(pool.logs.some((l) => l.includes("carries no owner id and matches no row: left alone") && l.includes(strayRef)));
      assert.equal((await pool.store.getInstance(claimed.instanceId))!.status, "claimed");

      // Claiming an adopted service renames it to the current form: from then on it carries the owner id.
      const next = await pool.ops.claim({ agentName: "New", instructions: "Claimed after the upgrade." });
      const nextRow = (await pool.store.getInstance(next.instanceId))!;
      assert.ok(
        before.some(([id]) => id === next.instanceId),
        "an adopted instance was handed out",
      );
      await waitFor(
        "the adopted service's rename",
        () => s.service(nextRow.providerRef!)!.name === `ap-default-${next.instanceId}-${pool.ownerId}`,
        15_000,
        50,
      );
      const t = await pool.reconciler.tick();
      assert.deepEqual(
        t.foreign.map((f) => f.ref),
        [strayRef],
      );
      assert.ok(s.service(strayRef), "the stray service is still there");
      assert.deepEqual(s.validationFailures, []);
    },
  );
});

// ---- 6. schema ----

test("every operation the pool sent in these tests validated against Railway's schema", { skip }, () => {
  assert.ok(requestsSeen > 0, "run the whole file: this test checks what the tests above sent");
  assert.deepEqual(allValidationFailures, []);
  const ops = [...seenOperations.keys()].sort();
  for (const op of ["ResolveEnvironments", "PoolList", "ServiceCreate", "ServiceDomainCreate", "ServiceDelete", "ServiceRename"]) {
    assert.ok(ops.includes(op), `${op} among ${ops.join(", ")}`);
  }
});
