/**
 * Rollouts through the API (issue 11): auth first on every route; a template change (PATCH) starts
 * a rollout that GET shows at once, with its progress in the pool view too; passes carry it to
 * complete; pause and resume (409 when there is nothing to act on); a rollback is a rollout back;
 * a size change starts none. The real HTTP server over a real store (in-memory PGlite), instances
 * from an in-memory provider with instantly answering runtimes.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { RolloutActionView, RolloutStateView } from "../src/http/rollout-views.ts";
import { ensureIdle, startTestServer, type TestServer } from "./support/http-server.ts";

describe("rollouts over the API", () => {
  let store: Store;
  let t: TestServer;
  const call = async (method: string, url: string, body?: unknown, key: string | null = t.apiKey) => {
    const res = await t.app.inject({
      method: method as "GET",
      url,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { payload: JSON.stringify(body) } : {}),
    });
    return { status: res.statusCode, body: res.json() as Record<string, any> };
  };
  const reconcile = () => call("POST", "/api/pool/reconcile");

  before(async () => {
    store = await openStore({ dataDir: null });
    t = await startTestServer({ store, minIdle: 3, maxTotal: 6 });
    await ensureIdle(t.ops, 3);
  });
  after(async () => {
    await t?.close();
    await store?.close();
  });

  it("every rollout route needs the API key, before the path or body is looked at", async () => {
    for (const [method, url] of [
      ["GET", "/api/pools/default/rollout"],
      ["POST", "/api/pools/default/rollout/pause"],
      ["POST", "/api/pools/default/rollout/resume"],
      ["GET", "/api/pools/NOT%20A%20POOL/rollout"],
      ["POST", "/api/pools/nope/rollout/pause"],
    ] as const) {
      assert.equal((await call(method, url, undefined, null)).status, 401, `${method} ${url} without a key`);
      assert.equal((await call(method, url, undefined, "ap_wrong_key_0123456789")).status, 401, `${method} ${url} with a wrong key`);
    }
    assert.deepEqual((await call("GET", "/api/pools/NOT%20A%20POOL/rollout")).body.code, "VALIDATION_FAILED");
    const missing = await call("POST", "/api/pools/nope/rollout/pause");
    assert.deepEqual([missing.status, missing.body.code], [404, "POOL_NOT_FOUND"]);
  });

  it("a pool that never changed has no rollout; a size change starts none", async () => {
    const none = await call("GET", "/api/pools/default/rollout");
    assert.equal(none.status, 200);
    assert.deepEqual(none.body, { pool: "default", current: null, history: [] });
    assert.equal((await call("GET", "/api/pools/default")).body.rollout, null);
    const sizes = await call("PATCH", "/api/pools/default", { maxTotal: 7 });
    assert.deepEqual([sizes.body.templateChanged, sizes.body.rollout], [false, null]);
    const nothing = await call("POST", "/api/pools/default/rollout/pause");
    assert.deepEqual([nothing.status, nothing.body.code], [409, "INVALID_TRANSITION"]);
    assert.match(nothing.body.error, /no running rollout to pause/);
    assert.equal((await call("POST", "/api/pools/default/rollout/resume")).status, 409);
  });

  let toHash = "";
  it("a template change starts a rollout, shown at once by GET and in the pool view", async () => {
    const before = (await call("GET", "/api/pools/default")).body.pool.templateHash;
    const changed = await call("PATCH", "/api/pools/default", { env: { RUNTIME_VERSION: "2" } });
    assert.equal(changed.body.templateChanged, true);
    toHash = changed.body.pool.templateHash;
    const r = await call("GET", "/api/pools/default/rollout");
    assert.equal(r.status, 200);
    const state = RolloutStateView.parse(r.body);
    assert.deepEqual(
      [state.current?.status, state.current?.fromHash, state.current?.toHash, state.current?.reason, state.current?.target, state.current?.haltAfter],
      ["running", before, toHash, "template changed", 3, 3],
    );
    assert.deepEqual((await call("GET", "/api/pools/default")).body.rollout.id, state.current?.id, "the pool view shows it");
    assert.ok((await call("GET", "/api/pools")).body.pools[0].rollout, "and the pool list");
  });

  it("pause holds it, resume goes on; each only once", async () => {
    const paused = await call("POST", "/api/pools/default/rollout/pause");
    assert.equal(paused.status, 200);
    assert.equal(RolloutActionView.parse(paused.body).rollout.status, "paused");
    assert.equal((await call("POST", "/api/pools/default/rollout/pause")).status, 409);
    const created = (await reconcile()).body.created.length;
    assert.equal(created, 0, "a paused rollout makes nothing");
    const progress = (await call("GET", "/api/pools/default/rollout")).body.current.progress;
    assert.deepEqual([progress.updated, progress.remaining, progress.total, progress.claimable], [0, 3, 3, 3], "its progress is still recorded");
    const resumed = await call("POST", "/api/pools/default/rollout/resume");
    assert.deepEqual([resumed.status, resumed.body.rollout.status], [200, "running"]);
    assert.equal((await call("POST", "/api/pools/default/rollout/resume")).status, 409, "running: nothing to resume");
  });

  it("passes carry it to complete: updated / total, and min idle claimable throughout", async () => {
    let current: Record<string, any> = {};
    for (let i = 0; i < 20; i++) {
      await reconcile();
      current = (await call("GET", "/api/pools/default/rollout")).body.current;
      if (current.status === "complete") break;
    }
    assert.equal(current.status, "complete");
    assert.deepEqual([current.progress.updated, current.progress.total, current.progress.remaining, current.progress.failed], [3, 3, 0, 0]);
    assert.equal(current.progress.minClaimable, 3);
    assert.ok(current.finishedAt);
    const rows = (await call("GET", "/api/pool/status")).body.instances as Array<{ status: string; templateHash: string }>;
    assert.deepEqual(
      rows.map((r) => [r.status, r.templateHash]),
      Array(3).fill(["idle", toHash]),
    );
  });

  it("a rollback is a rollout back to the earlier template, kept in the history", async () => {
    const back = await call("POST", "/api/pools/default/rollback");
    assert.equal(back.status, 200);
    assert.deepEqual(
      [back.body.rollout?.reason, back.body.rollout?.toHash],
      ["rolled back", back.body.pool.templateHash],
      "the rollback's answer shows the rollout it started",
    );
    for (let i = 0; i < 20 && (await call("GET", "/api/pools/default/rollout")).body.current.status !== "complete"; i++) await reconcile();
    const s = RolloutStateView.parse((await call("GET", "/api/pools/default/rollout")).body);
    assert.deepEqual([s.current?.status, s.current?.fromHash], ["complete", toHash]);
    assert.deepEqual(
      s.history.map((h) => h.status),
      ["complete"],
    );
  });
});
