/**
 * A claimed agent upgraded on Railway (issue 11), end to end: the real server (`serve()`,
 * PROVIDER=railway) against the Railway stand-in, which validates every operation against Railway's
 * real schema and runs the reference runtime behind its domains with each deployment's variables.
 * The upgrade upserts the template's variables (the service's own stay), sets the new image, and
 * deploys; the service keeps its id and domain; the listing is still one request per pass.
 *
 * Without the schema (RAILWAY_SCHEMA_PATH) the test is reported SKIPPED with the reason.
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config.ts";
import { serve, type RunningPool } from "../../src/serve.ts";
import { startTestPostgres } from "../support/postgres.ts";
import { waitFor } from "../support/process.ts";
import { railwaySchemaPath, startRailwayStandin } from "./standin.ts";

const SCHEMA = railwaySchemaPath();
const skip = SCHEMA ? false : "no Railway schema: set RAILWAY_SCHEMA_PATH to Railway's introspection schema.json";
const API_KEY = "railway-upgrade-test-key-0123456789";
const IMAGE = "ghcr.io/acme/agent-runtime:1";
const IMAGE_2 = "ghcr.io/acme/agent-runtime:2";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch((err) => console.error("cleanup failed:", err));
});

test("on Railway: a claimed agent upgraded in place to its pool's new image and variables, every operation valid, one request per pass", {
  skip,
  timeout: 120_000,
}, async () => {
  const s = await startRailwayStandin({ runtimeEnv: { RUNTIME_BOOT_DELAY_MS: "0" }, stepMs: 20 });
  cleanups.push(() => s.close());
  const pg = await startTestPostgres();
  cleanups.push(() => pg.stop());
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-railway-upgrade-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const { projectId, environmentId } = s.createProject("agents");
  const pool: RunningPool = await serve(
    loadConfig({
      PROVIDER: "railway",
      RAILWAY_API_URL: s.url,
      RAILWAY_API_TOKEN: s.token,
      RAILWAY_URL_SCHEME: "http",
      RAILWAY_PROJECT_IDS: projectId,
      INSTANCE_IMAGE: IMAGE,
      POOL_API_KEY: API_KEY,
      POOL_ID: "a",
      PORT: "0",
      HEALTH_TIMEOUT_MS: "2000",
      TICK_INTERVAL_MS: "200",
      POOL_MIN_IDLE: "1",
      POOL_MAX_TOTAL: "3",
      DATABASE_URL: pg.url,
      DATA_DIR: dir,
      LOG_LEVEL: "silent",
    }),
  );
  cleanups.push(() => pool.close());
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${pool.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${API_KEY}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, body: (await r.json()) as any };
  };

  await waitFor("an idle instance", async () => (await pool.ops.summary("a")).counts.idle >= 1, 30_000, 50);
  const claimed = await api("POST", "/api/pool/claim", { agentName: "Ada", instructions: "x" });
  assert.equal(claimed.status, 200, JSON.stringify(claimed.body));
  const id = claimed.body.instanceId as string;
  const before = (await pool.store.getInstance(id))!;
  const ref = before.providerRef!;
  const svcBefore = s.service(ref)!;
  assert.equal(svcBefore.image, IMAGE);
  const ownKey = svcBefore.variables[environmentId]!.GATEWAY_TOKEN;

  // The pool moves on: a new image and a variable.
  const patched = await api("PATCH", "/api/pools/a", { image: IMAGE_2, env: { RUNTIME_VERSION: "2.0.0" } });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
  const hash = patched.body.pool.templateHash as string;

  const mark = s.requests.length;
  const up = await api("POST", `/api/pool/instances/${id}/upgrade`);
  assert.equal(up.status, 202, JSON.stringify(up.body));
  const job = await waitFor(
    "the upgrade job done",
    async () => {
      const j = (await api("GET", `/api/upgrades/${up.body.job.id}`)).body.job;
      return j.state === "done" ? j : null;
    },
    30_000,
    50,
  );
  assert.deepEqual([job.done, job.failed, job.items[0].state], [1, 0, "upgraded"], JSON.stringify(job));

  // Three requests for the upgrade: variables (no deploy of their own), the image, a deploy. (The
  // pool's refill after the claim, listings and the rename run meanwhile.)
  const upgradeOps = s.requests
    .slice(mark)
    .filter((r) => r.operationType === "mutation" && !["ServiceCreate", "ServiceDomainCreate", "ServiceRename"].includes(r.op));
  assert.deepEqual(
    upgradeOps.map((r) => r.op),
    ["VariablesUpsert", "ServiceInstanceSource", "ServiceInstanceDeploy"],
  );
  const upsert = (upgradeOps[0]!.variables as { input: Record<string, any> }).input;
  assert.deepEqual(
    [upsert.serviceId, upsert.projectId, upsert.environmentId, upsert.replace, upsert.skipDeploys],
    [ref, projectId, environmentId, false, true],
  );
  assert.equal(upsert.variables.RUNTIME_VERSION, "2.0.0");
  assert.equal(upsert.variables.GATEWAY_TOKEN, before.gatewayToken, "its own token, unchanged");
  assert.equal(upsert.variables.INSTANCE_ID, id);
  assert.deepEqual((upgradeOps[1]!.variables as { input: unknown }).input, { source: { image: IMAGE_2 } });

  // The same service (id and domain), now on the new image, with its variables and the new one.
  const svc = s.service(ref)!;
  assert.equal(svc.image, IMAGE_2);
  assert.deepEqual(svc.domains, svcBefore.domains);
  assert.equal(svc.variables[environmentId]!.GATEWAY_TOKEN, ownKey);
  assert.equal(svc.variables[environmentId]!.RUNTIME_VERSION, "2.0.0");
  assert.equal((await pool.store.getInstance(id))!.templateHash, hash);
  // The new deployment runs the new version (the observer reads it from /pool/health).
  await waitFor("the new version reported", async () => (await pool.store.getInstance(id))!.runtimeVersion === "2.0.0", 30_000, 50);
  const after = (await pool.store.getInstance(id))!;
  assert.equal(after.image, IMAGE_2);
  assert.equal(after.url, before.url);

  // A pass is still one request, upgrade or not.
  await pool.reconciler.stop();
  for (let i = 0; i < 2; i++) {
    const n = s.requests.length;
    await pool.reconciler.tick();
    assert.deepEqual(
      s.requests.slice(n).map((r) => r.op),
      ["PoolList"],
    );
  }
  assert.deepEqual(s.validationFailures, [], "every operation validated against Railway's schema");
});
