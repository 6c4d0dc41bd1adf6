/**
 * Waiting claims over HTTP (issue 13), the real server (`serve`) on PGlite with real reference
 * runtimes: the queue is bounded (503 QUEUE_FULL with Retry-After, nothing written, counted in the
 * metrics), and a client that goes away mid-wait (its request aborted) gives its place up: its row
 * is gone and the next waiter is served by the next instance that turns idle. The re-check without
 * a hint is set to 10 minutes: the waiter is woken by the idle transition's notification.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { request } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.ts";
import { EVERY_PASS } from "../src/pool/health-schedule.ts";
import { serve, type RunningPool } from "../src/serve.ts";
import { RuntimeProvider } from "./support/runtime-provider.ts";
import { waitFor } from "./support/process.ts";

describe("Waiting claims over HTTP", () => {
  let pool: RunningPool;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agent-pool-queue-"));
    const config = loadConfig({
      DATA_DIR: dir,
      PORT: "0",
      LOG_LEVEL: "silent",
      TICK_INTERVAL_MS: "3600000",
      POOL_MIN_IDLE: "0",
      POOL_MAX_TOTAL: "3",
      CLAIM_QUEUE_MAX: "2",
      CLAIM_QUEUE_RECHECK_MS: "600000",
    });
    pool = await serve(config, { provider: new RuntimeProvider(), cadence: EVERY_PASS });
  });
  after(async () => {
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const headers = () => ({ authorization: `Bearer ${pool.apiKey}`, "content-type": "application/json" });
  const post = async (path: string, body: unknown) => {
    const r = await fetch(`${pool.url}${path}`, { method: "POST", headers: headers(), body: JSON.stringify(body) });
    return { status: r.status, body: (await r.json()) as any, headers: r.headers };
  };
  const waiting = async () => (await pool.store.claimQueueLengths()).find((l) => l.poolId === pool.ops.poolId)?.waiting ?? 0;

  it("bounds the queue, and a client that disconnects gives its place to the next waiter", { timeout: 60_000 }, async () => {
    // A: a raw request we can cut; it waits first in line.
    let aEnded = false;
    const a = request(`${pool.url}/api/pool/claim`, { method: "POST", headers: headers() });
    a.on("error", () => (aEnded = true));
    a.on("response", () => (aEnded = true));
    a.end(JSON.stringify({ agentName: "A", waitMs: 30_000 }));
    await waitFor("A waits", async () => (await waiting()) === 1, 15_000, 20);

    // B waits behind A.
    const b = post("/api/pool/claim", { agentName: "B", waitMs: 30_000 });
    await waitFor("B waits", async () => (await waiting()) === 2, 15_000, 20);

    // C finds the queue full: refused at once, nothing written.
    const c = await post("/api/pool/claim", { agentName: "C", waitMs: 30_000 });
    assert.equal(c.status, 503);
    assert.equal(c.body.code, "QUEUE_FULL");
    assert.match(c.headers.get("retry-after") ?? "", /^\d+$/);
    assert.equal(await waiting(), 2);
    const metrics = await (await fetch(`${pool.url}/metrics`, { headers: headers() })).text();
    assert.match(metrics, new RegExp(`agent_pool_claim_queue_length\\{pool="${pool.ops.poolId}"\\} 2`));
    assert.match(metrics, new RegExp(`agent_pool_claim_queue_rejections_total\\{pool="${pool.ops.poolId}"\\} 1`));

    // A's client goes away: its place is given up (its row deleted), B is now first.
    a.destroy();
    await waitFor("A's row is gone", async () => (await waiting()) === 1, 15_000, 20);
    assert.equal(aEnded, true);

    // An instance turns idle: B is served, by the notification of that transition.
    const added = await post("/api/pool/replenish", { count: 1 });
    assert.equal(added.status, 200);
    const served = await b;
    assert.equal(served.status, 200, JSON.stringify(served.body));
    assert.equal(served.body.agentName, "B");
    assert.equal(await waiting(), 0);
    // Nobody claimed for A: the one agent handed out is B's.
    const agents = (await (await fetch(`${pool.url}/api/pool/agents`, { headers: headers() })).json()) as { agents: Array<{ agentName: string }> };
    assert.deepEqual(
      agents.agents.map((x) => x.agentName),
      ["B"],
    );
  });
});
