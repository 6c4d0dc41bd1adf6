/**
 * Railway's deployment webhooks as hints (issue 10), end to end: the pool registers a notification
 * rule at start-up (schema-validated by the stand-in), the stand-in posts deployment events to it,
 * and a crashed idle instance leaves `idle` within seconds although passes run only once a minute
 * and idle instances are checked once an hour. A forged event changes nothing by itself (it only
 * costs a check); a wrong secret is answered like an unknown route; lost events cost only latency.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config.ts";
import { serve, type RunningPool } from "../../src/serve.ts";
import { startTestPostgres, type TestPostgres } from "../support/postgres.ts";
import { waitFor } from "../support/process.ts";
import { railwaySchemaPath, startRailwayStandin, type RailwayStandin } from "./standin.ts";

const SCHEMA = railwaySchemaPath();
const skip = SCHEMA ? false : "no Railway schema: set RAILWAY_SCHEMA_PATH to Railway's introspection schema.json";
const API_KEY = "railway-webhook-test-key-0123456789";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const a = srv.address();
      srv.close(() => (a && typeof a === "object" ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

let s: RailwayStandin | null = null;
let pool: RunningPool | null = null;
let db: TestPostgres | null = null;
const dir = mkdtempSync(join(tmpdir(), "agent-pool-webhooks-"));
after(async () => {
  await pool?.close();
  await s?.close();
  await db?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("deployment webhooks make the pool look at once; forged or lost events change nothing by themselves", { skip, timeout: 120_000 }, async () => {
  s = await startRailwayStandin({ runtimeEnv: { RUNTIME_BOOT_DELAY_MS: "0" }, stepMs: 20 });
  const { projectId } = s.createProject("hooks");
  db = await startTestPostgres();
  const port = await freePort();
  pool = await serve(
    loadConfig({
      PROVIDER: "railway",
      RAILWAY_API_URL: s.url,
      RAILWAY_API_TOKEN: s.token,
      RAILWAY_URL_SCHEME: "http",
      RAILWAY_PROJECT_IDS: projectId,
      RAILWAY_WORKSPACE_ID: s.workspaceId,
      INSTANCE_IMAGE: "ghcr.io/acme/agent-runtime:test",
      POOL_API_KEY: API_KEY,
      POOL_ID: "a",
      POOL_MIN_IDLE: "2",
      POOL_MAX_TOTAL: "4",
      DATABASE_URL: db.url,
      DATA_DIR: dir,
      PORT: String(port),
      POOL_PUBLIC_URL: `http://127.0.0.1:${port}`,
      // Slow everything but booting: only a webhook can make the pool notice a crash quickly.
      TICK_INTERVAL_MS: "60000",
      STARTING_POLL_MS: "200",
      HEALTH_IDLE_INTERVAL_MS: "3600000",
      LOG_LEVEL: "silent",
    }),
  );
  const p = pool;
  const idle = async () => (await p.store.listInstances("a")).filter((r) => r.status === "idle");
  await waitFor("2 idle", async () => (await idle()).length === 2, 60_000, 50);
  await waitFor("the notification rule", async () => s!.requests.some((r) => r.op === "NotificationRuleCreate"), 10_000, 50);
  const secret = await p.store.ensureWebhookSecret("unused");
  assert.notEqual(secret, API_KEY, "the webhook's secret is not the API key");

  // A crash: the stand-in posts Deployment.crashed; the row leaves idle long before the next pass.
  const [victim, healthy] = await idle();
  const t0 = performance.now();
  await s.crashDeployment(victim!.providerRef!);
  await waitFor("the crashed instance to leave idle", async () => (await p.store.getInstance(victim!.id))?.status !== "idle", 10_000, 20);
  const detectMs = performance.now() - t0;
  assert.ok(detectMs < 5_000, `noticed after ${Math.round(detectMs)} ms, with passes a minute apart`);

  // A forged event naming a healthy instance: one check, no change.
  const url = `http://127.0.0.1:${port}/api/webhooks/railway/${secret}`;
  const checksBefore = p.reconciler.lastResult?.healthChecks ?? 0;
  const forged = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "Deployment.crashed", resource: { service: { id: healthy!.providerRef } } }),
  });
  assert.deepEqual(await forged.json(), { ok: true, checked: true });
  await waitFor(
    "the hinted check",
    async () => p.reconciler.lastResult !== null && p.reconciler.lastResult.healthChecks >= 1 && p.reconciler.lastResult.healthChecks !== checksBefore - 1,
    10_000,
    20,
  );
  assert.equal((await p.store.getInstance(healthy!.id))?.status, "idle", "the check found it healthy: nothing changed");
  // Replayed: the same.
  await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ type: "Deployment.crashed", resource: { service: { id: healthy!.providerRef } } }),
  });
  assert.equal((await p.store.getInstance(healthy!.id))?.status, "idle");
  // Unknown services and malformed bodies are acknowledged and ignored; a wrong secret is a 404.
  assert.deepEqual(
    await (
      await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ resource: { service: { id: "nope" } } }) })
    ).json(),
    { ok: true, checked: false },
  );
  assert.deepEqual(await (await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: "[1,2,3]" })).json(), {
    ok: true,
    checked: false,
  });
  const wrong = await fetch(`http://127.0.0.1:${port}/api/webhooks/railway/${"x".repeat(secret.length)}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  assert.equal(wrong.status, 404);

  // Lost events: the periodic pass still converges (here: one pass run by hand).
  await waitFor("a replacement to be idle", async () => (await idle()).length >= 2, 60_000, 50);
  s.dropWebhooks = true;
  const [second] = await idle();
  await s.crashDeployment(second!.providerRef!);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal((await p.store.getInstance(second!.id))?.status, "idle", "no event, no pass: not noticed yet");
  await p.reconciler.tick();
  assert.notEqual((await p.store.getInstance(second!.id))?.status, "idle", "the pass noticed it from the listing");
});
