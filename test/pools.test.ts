/**
 * Pools as templates through the API (issue 11): create, change, roll back, delete when empty, with
 * auth; claims routed by `runtime` and `pool`, with each pool's claim defaults and invite-host list;
 * `fresh: true` refuses instances of an old template. The real HTTP server over a real store
 * (in-memory PGlite), instances from an in-memory provider with instantly answering runtimes.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { ensureIdle, startTestServer, type TestServer } from "./support/http-server.ts";

describe("pools as templates over the API", () => {
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

  before(async () => {
    store = await openStore({ dataDir: null });
    t = await startTestServer({ store, minIdle: 1, maxTotal: 5 });
  });
  after(async () => {
    await t?.close();
    await store?.close();
  });

  it("pool routes need the API key, before anything is read of the body", async () => {
    assert.equal((await call("GET", "/api/pools", undefined, null)).status, 401);
    assert.equal((await call("POST", "/api/pools", { nonsense: true }, null)).status, 401);
    assert.equal((await call("PATCH", "/api/pools/default", { minIdle: -5 }, "wrong-key")).status, 401);
    assert.equal((await call("DELETE", "/api/pools/default", undefined, null)).status, 401);
  });

  it("creates a pool from a template, masks secrets, and refuses bad or duplicate ones", async () => {
    const created = await call("POST", "/api/pools", {
      id: "hermes",
      runtime: "hermes",
      image: "ghcr.io/acme/hermes:1",
      env: { XMTP_ENV: "dev", OPENAI_API_KEY: "sk-secret-value" },
      minIdle: 1,
      maxTotal: 3,
      claimAgentName: "Hermy",
      joinUrlHosts: ["convos.org"],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.pool.runtime, "hermes");
    assert.deepEqual(created.body.pool.env, { XMTP_ENV: "dev", OPENAI_API_KEY: "••••••" });
    assert.doesNotMatch(JSON.stringify((await call("GET", "/api/pools")).body), /sk-secret-value/, "the secret never comes back");
    assert.equal((await store.getPool("hermes"))?.env.OPENAI_API_KEY, "sk-secret-value", "but it is stored");

    assert.equal((await call("POST", "/api/pools", { id: "hermes" })).body.code, "POOL_EXISTS");
    const bad = await call("POST", "/api/pools", { id: "Bad Id!", minIdle: 1 });
    assert.deepEqual([bad.status, bad.body.code], [400, "VALIDATION_FAILED"]);
    assert.match(bad.body.error, /at id/);
    const sizes = await call("POST", "/api/pools", { id: "sizes", minIdle: 5, maxTotal: 2 });
    assert.deepEqual([sizes.status, sizes.body.code], [400, "VALIDATION_FAILED"]);
    assert.match(sizes.body.error, /min idle \(5\) is larger than max total \(2\)/);
    const provider = await call("POST", "/api/pools", { id: "rw", provider: "railway" });
    assert.deepEqual([provider.status, provider.body.code], [400, "VALIDATION_FAILED"], "a provider this deployment does not run");
    assert.equal(await store.getPool("sizes"), null, "a refused pool is not written");
  });

  it("routes claims by runtime label or pool id, with each pool's defaults and allowed hosts", async () => {
    await call("POST", "/api/pool/reconcile");
    await ensureIdle(t.ops, 1);
    for (let i = 0; i < 3 && (await store.countByStatus("hermes")).idle < 1; i++) await call("POST", "/api/pool/reconcile");
    assert.equal((await store.countByStatus("hermes")).idle, 1, "the new pool was filled by the same passes");

    const byRuntime = await call("POST", "/api/pool/claim", { runtime: "hermes" });
    assert.equal(byRuntime.status, 200, JSON.stringify(byRuntime.body));
    assert.deepEqual([byRuntime.body.pool, byRuntime.body.runtime, byRuntime.body.agentName], ["hermes", "hermes", "Hermy"], "the pool's claim default name");

    const byPool = await call("POST", "/api/pool/claim", { pool: "default", agentName: "Ada" });
    assert.deepEqual([byPool.status, byPool.body.pool, byPool.body.runtime], [200, "default", "default"]);

    const none = await call("POST", "/api/pool/claim", { runtime: "openclaw" });
    assert.deepEqual([none.status, none.body.code], [404, "POOL_NOT_FOUND"]);
    assert.match(none.body.error, /No pool runs the runtime "openclaw"; available: default, hermes/);

    const wrongHost = await call("POST", "/api/pool/claim", { runtime: "hermes", joinUrl: "https://dev.convos.org/join/abc" });
    assert.deepEqual([wrongHost.status, wrongHost.body.code], [400, "JOIN_URL_NOT_ALLOWED"], "the pool's own allow-list");
  });

  it("changes settings: sizes start no rollout, a new image does and can be rolled back; concurrent changes do not clobber", async () => {
    const sizes = await call("PATCH", "/api/pools/hermes", { minIdle: 2 });
    assert.deepEqual([sizes.status, sizes.body.templateChanged, sizes.body.pool.minIdle], [200, false, 2]);
    const before = sizes.body.pool.templateHash;
    const image = await call("PATCH", "/api/pools/hermes", { image: "ghcr.io/acme/hermes:2", env: { XMTP_ENV: "dev", OPENAI_API_KEY: "••••••" } });
    assert.deepEqual([image.body.templateChanged, image.body.pool.canRollBack], [true, true]);
    assert.notEqual(image.body.pool.templateHash, before);
    assert.equal((await store.getPool("hermes"))?.env.OPENAI_API_KEY, "sk-secret-value", "a masked value sent back keeps the secret");
    const back = await call("POST", "/api/pools/hermes/rollback");
    assert.deepEqual([back.status, back.body.pool.image, back.body.pool.templateHash], [200, "ghcr.io/acme/hermes:1", before]);
    assert.equal((await call("PATCH", "/api/pools/nope", { minIdle: 1 })).status, 404);
  });

  it("fresh: true refuses an idle instance of an old template", async () => {
    for (let i = 0; i < 4 && (await store.countByStatus("hermes")).idle < 2; i++) await call("POST", "/api/pool/reconcile");
    await call("PATCH", "/api/pools/hermes", { env: { XMTP_ENV: "production", OPENAI_API_KEY: "••••••" } });
    const fresh = await call("POST", "/api/pool/claim", { runtime: "hermes", fresh: true });
    assert.deepEqual([fresh.status, fresh.body.code], [503, "POOL_EMPTY"], "every idle hermes instance is of the old template");
    const any = await call("POST", "/api/pool/claim", { runtime: "hermes" });
    assert.equal(any.status, 200, "without `fresh` an old one is fine");
  });

  it("deletes a pool only when it holds no instance", async () => {
    const full = await call("DELETE", "/api/pools/hermes");
    assert.deepEqual([full.status, full.body.code], [409, "POOL_NOT_EMPTY"]);
    const empty = await call("POST", "/api/pools", { id: "spare", minIdle: 0, maxTotal: 1 });
    assert.equal(empty.status, 201);
    const gone = await call("DELETE", "/api/pools/spare");
    assert.deepEqual([gone.status, gone.body.ok], [200, true]);
    assert.equal((await call("GET", "/api/pools/spare")).status, 404);
    assert.ok(!(await call("GET", "/api/pools")).body.pools.some((p: { pool: { id: string } }) => p.pool.id === "spare"));
    assert.equal((await call("POST", "/api/pool/claim", { pool: "spare" })).body.code, "POOL_NOT_FOUND");
  });

  it("protects an instance: claims and drains leave it alone", async () => {
    for (let i = 0; i < 4 && (await store.countByStatus("default")).idle < 1; i++) await call("POST", "/api/pool/reconcile");
    await call("PATCH", "/api/pools/default", { minIdle: 0 });
    const idle = (await store.listInstances("default")).filter((r) => r.status === "idle");
    for (const r of idle) assert.equal((await call("POST", `/api/pool/instances/${r.id}/protect`, { protected: true })).status, 200);
    const claim = await call("POST", "/api/pool/claim", { pool: "default" });
    assert.equal(claim.body.code, "POOL_EMPTY", "a protected instance is never claimed");
    const drain = await call("POST", "/api/pool/drain?pool=default", { count: 5 });
    assert.deepEqual(drain.body.drained, [], "nor drained");
    const unprotected = await call("POST", `/api/pool/instances/${idle[0]!.id}/protect`, { protected: false });
    assert.equal(unprotected.body.instance.protected, false);
    assert.equal((await call("POST", "/api/pool/claim", { pool: "default" })).status, 200);
  });
  it("sets a pool's sizing policy, fills in its defaults, and refuses a bad one with VALIDATION_FAILED, changing nothing (issue 13)", async () => {
    const set = await call("PATCH", "/api/pools/default", {
      sizing: { mode: "demand", floor: 2, timeZone: "Europe/Berlin", schedule: [{ days: ["mon"], from: "08:00", to: "10:00", floor: 5 }] },
    });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.deepEqual(set.body.pool.sizing, {
      mode: "demand",
      floor: 2,
      ceiling: null,
      safetyFactor: 1,
      windowMinutes: 15,
      cooldownMinutes: 20,
      timeZone: "Europe/Berlin",
      schedule: [{ days: ["mon"], from: "08:00", to: "10:00", floor: 5 }],
    });
    assert.equal(set.body.templateChanged, false, "sizing starts no rollout");
    for (const sizing of [
      { mode: "demand", floor: 9, ceiling: 3 },
      { mode: "demand", timeZone: "Nowhere/Atlantis" },
      { mode: "magic" },
      { mode: "demand", schedule: [{ days: ["mon"], from: "10:00", to: "09:00", floor: 1 }] },
      "demand",
    ]) {
      const bad = await call("PATCH", "/api/pools/default", { sizing });
      assert.equal(bad.status, 400, JSON.stringify(sizing));
      assert.equal(bad.body.code, "VALIDATION_FAILED");
      assert.match(String(bad.body.error), /sizing/);
    }
    assert.equal((await store.getPool("default"))?.sizing.mode, "demand", "nothing changed");
    const back = await call("PATCH", "/api/pools/default", { sizing: { mode: "fixed" } });
    assert.deepEqual(back.body.pool.sizing, { mode: "fixed" });
  });
});
