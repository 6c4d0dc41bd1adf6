/**
 * A rollout on Railway (issue 11): the real server (`serve()`, PROVIDER=railway) against the Railway
 * stand-in, which validates every operation against Railway's published schema and runs real
 * reference runtimes behind its domains. A change of the pool's image replaces its idle services:
 * new services of the new image first (at most max surge at once), an old one deleted only once a
 * new one is idle, min idle claimable after every pass; every pass of the rollout still lists
 * Railway in ONE request; a quiet pass after it is that one request alone.
 *
 * Without the schema (RAILWAY_SCHEMA_PATH) the test is reported SKIPPED with the reason, never
 * passed.
 */
import { after, afterEach, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config.ts";
import { serve, type RunningPool } from "../../src/serve.ts";
import { startTestPostgres, type TestPostgres } from "../support/postgres.ts";
import { waitFor } from "../support/process.ts";
import { railwaySchemaPath, startRailwayStandin, type RailwayStandin } from "./standin.ts";

const SCHEMA = railwaySchemaPath();
const skip = SCHEMA ? false : "no Railway schema: set RAILWAY_SCHEMA_PATH to Railway's introspection schema.json";
const API_KEY = "railway-rollout-test-key-0123456789";
const V1 = "ghcr.io/acme/agent-runtime:1.0";
const V2 = "ghcr.io/acme/agent-runtime:2.0";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch((err) => console.error("cleanup failed:", err));
});
let keeper: TestPostgres | null = null;
before(async () => {
  if (SCHEMA) keeper = await startTestPostgres();
});
after(async () => {
  await keeper?.stop();
});

test("a rollout of a new image on Railway: surge, min idle claimable, one listing request per pass, every operation valid (Postgres)", {
  skip,
  timeout: 180_000,
}, async () => {
  const s: RailwayStandin = await startRailwayStandin({ runtimeEnv: { RUNTIME_BOOT_DELAY_MS: "0" }, stepMs: 20 });
  cleanups.push(() => s.close());
  const db = await startTestPostgres();
  cleanups.push(() => db.stop());
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-railway-rollout-"));
  cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
  const { projectId } = s.createProject("agents");
  const pool: RunningPool = await serve(
    loadConfig({
      PROVIDER: "railway",
      RAILWAY_API_URL: s.url,
      RAILWAY_API_TOKEN: s.token,
      RAILWAY_URL_SCHEME: "http",
      RAILWAY_PROJECT_IDS: projectId,
      INSTANCE_IMAGE: V1,
      POOL_API_KEY: API_KEY,
      POOL_ID: "a",
      POOL_MIN_IDLE: "3",
      POOL_MAX_TOTAL: "4",
      DATABASE_URL: db.url,
      DATA_DIR: dataDir,
      PORT: "0",
      HEALTH_TIMEOUT_MS: "2000",
      TICK_INTERVAL_MS: "3600000",
      LOG_LEVEL: "silent",
    }),
  );
  cleanups.push(() => pool.close());

  const idleOf = async () => (await pool.store.listInstances("a")).filter((r) => r.status === "idle" && !r.protected);
  // The first pass (started by serve) creates; the passes from here on are this test's.
  await waitFor("the first pass", async () => (await pool.store.listInstances("a")).length === 3, 30_000, 20);
  await pool.reconciler.stop();
  for (let i = 0; i < 200 && (await idleOf()).length < 3; i++) {
    await new Promise((r) => setTimeout(r, 50));
    await pool.reconciler.tick();
  }
  const old = await idleOf();
  assert.equal(old.length, 3);
  assert.ok(old.every((r) => s.service(r.providerRef!)?.image === V1));

  // The image changes through the API: a rollout starts.
  const res = await fetch(`${pool.url}/api/pools/a`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ image: V2 }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const changed = (await res.json()) as { templateChanged: boolean; pool: { templateHash: string; maxSurge: number }; rollout: { status: string } };
  assert.deepEqual([changed.templateChanged, changed.rollout.status, changed.pool.maxSurge], [true, "running", 2]);

  let passes = 0;
  let minClaimable = Number.POSITIVE_INFINITY;
  let maxStarting = 0;
  for (; passes < 300; passes++) {
    const before = s.requests.length;
    const t = await pool.reconciler.tick();
    const ops = s.requests.slice(before).map((r) => r.op);
    assert.equal(ops.filter((op) => op === "PoolList").length, 1, `pass ${passes}: one listing request (${ops.join(", ")})`);
    assert.deepEqual(
      ops.filter((op) => !["PoolList", "ServiceCreate", "ServiceDomainCreate", "ServiceDelete", "ServiceRename"].includes(op)),
      [],
      `pass ${passes}: only creates and deletes beside it`,
    );
    assert.deepEqual(t.errors, []);
    const rows = await pool.store.listInstances("a");
    minClaimable = Math.min(minClaimable, rows.filter((r) => r.status === "idle" && !r.protected).length);
    maxStarting = Math.max(maxStarting, rows.filter((r) => r.status === "starting").length);
    if ((await pool.rollouts.state("a")).current?.status === "complete") break;
    await new Promise((r) => setTimeout(r, 50)); // the stand-in's deploys move on their own clock
  }
  const r = (await pool.rollouts.state("a")).current!;
  assert.equal(r.status, "complete", `after ${passes} passes`);
  assert.deepEqual([r.retired, r.remaining, r.failed], [3, 0, 0]);
  assert.equal(minClaimable, 3, "never fewer than min idle claimable after a pass");
  assert.ok(maxStarting <= 2, `at most max surge services deploying at once (${maxStarting})`);

  const now = await idleOf();
  assert.equal(now.length, 3);
  for (const row of now) {
    assert.equal(row.templateHash, changed.pool.templateHash);
    assert.equal(s.service(row.providerRef!)?.image, V2, "the new services run the new image");
  }
  for (const row of old) {
    assert.equal(s.service(row.providerRef!), null, "the old services are deleted");
    assert.deepEqual([(await pool.store.getInstance(row.id))!.status, (await pool.store.getInstance(row.id))!.deletedAt !== null], ["dead", true]);
  }
  const creates = s.requests.filter((x) => x.op === "ServiceCreate").map((x) => (x.variables as { input: { source: { image: string } } }).input.source.image);
  assert.deepEqual(creates, [V1, V1, V1, V2, V2, V2], "three of each image: the pool kept its size");

  // A quiet pass after the rollout is one request again.
  const before = s.requests.length;
  await pool.reconciler.tick();
  assert.deepEqual(
    s.requests.slice(before).map((x) => x.op),
    ["PoolList"],
  );
  assert.deepEqual(s.validationFailures, [], "every operation validated against Railway's schema");
});
