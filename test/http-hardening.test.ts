/**
 * Issue 8, "Requests and data", on the real server (`buildServer`) over a real store (in-memory
 * PGlite): authentication before validation on every protected route (API, metrics, OpenAPI,
 * dashboard), text Postgres cannot store refused with 400 wherever it comes from (and nothing
 * changed), and the X-Forwarded-For warning when TRUST_PROXY=0. Cross-replica rate limits are in
 * test/http-shared-limits.test.ts, on real Postgres.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { pino } from "pino";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.ts";
import { trustHops } from "../src/http/server.ts";
import { MemoryProvider } from "../src/provider/memory.ts";
import { serve } from "../src/serve.ts";
import { ensureIdle, poolState, startTestServer, type TestServer } from "./support/http-server.ts";

const POOL = "default";

describe("issue 8: auth before validation, unstorable text", () => {
  let store: Store;
  let t: TestServer;
  let auth: Record<string, string>;
  let session: { cookie: string; csrf: string };

  before(async () => {
    store = await openStore({ dataDir: null });
    t = await startTestServer({ store, poolId: POOL, minIdle: 2, maxTotal: 10 });
    await ensureIdle(t.ops, 2);
    auth = { authorization: `Bearer ${t.apiKey}` };
    const login = await t.app.inject({
      method: "POST",
      url: "/login",
      payload: `password=${encodeURIComponent(t.apiKey)}`,
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    assert.equal(login.statusCode, 303);
    const cookie = String(login.headers["set-cookie"]).split(";")[0]!;
    const csrf = /name="_csrf" value="([^"]+)"/.exec((await t.app.inject({ method: "GET", url: "/", headers: { cookie } })).body)![1]!;
    session = { cookie, csrf };
  });
  after(async () => {
    await t?.close();
    await store?.close();
  });

  const json = (body: unknown) => ({ payload: typeof body === "string" ? body : JSON.stringify(body), headers: { "content-type": "application/json" } });

  it("answers 401 to an unauthenticated request whatever its body, query or headers", async () => {
    const before = await poolState(store, POOL);
    const cases: Array<[string, string, string, { payload?: string; headers?: Record<string, string> }]> = [
      ["malformed JSON", "POST", "/api/pool/claim", json("{not json")],
      ["missing fields", "POST", "/api/pool/claim", json({})],
      ["wrong types", "POST", "/api/pool/claim", json({ agentName: 42, instructions: [] })],
      ["NUL in the body", "POST", "/api/pool/claim", json({ agentName: "a\u0000", instructions: "x" })],
      ["body over the limit", "POST", "/api/pool/claim", json({ agentName: "a", instructions: "x".repeat(70_000) })],
      ["wrong content type", "POST", "/api/pool/claim", { payload: "<claim/>", headers: { "content-type": "application/xml" } }],
      [
        "bad Idempotency-Key",
        "POST",
        "/api/pool/claim",
        { ...json({ agentName: "a", instructions: "x" }), headers: { "content-type": "application/json", "idempotency-key": "has space" } },
      ],
      ["bad count", "POST", "/api/pool/drain", json({ count: 1000 })],
      ["NUL in the path", "DELETE", "/api/pool/instances/%00", {}],
      ["NUL in the query", "GET", "/api/pool/status?x=%00", {}],
      ["NUL in a header", "GET", "/api/pool/agents", { headers: { "x-note": "a\u0000b" } }],
      ["bad Last-Event-ID", "GET", "/api/pool/events", { headers: { "last-event-id": "abc" } }],
      ["metrics", "GET", "/metrics", {}],
      ["OpenAPI document", "GET", "/openapi.json", {}],
    ];
    for (const [what, method, url, o] of cases) {
      for (const key of [null, "wrong-key-wrong-key"]) {
        const headers = { ...(o.headers ?? {}), ...(key ? { authorization: `Bearer ${key}` } : {}) };
        const r = await t.app.inject({ method: method as "GET", url, headers, ...(o.payload !== undefined ? { payload: o.payload } : {}) });
        assert.equal(r.statusCode, 401, `${what} (${key ? "wrong key" : "no key"}): ${r.body}`);
        assert.equal(r.json().code, "UNAUTHORIZED", what);
      }
    }
    assert.equal((await poolState(store, POOL)).hash, before.hash, "nothing changed");
  });

  it("over a real socket too: a body over the limit without the key is a 401", async () => {
    const url = await t.app.listen({ port: 0, host: "127.0.0.1" });
    const r = await fetch(`${url}/api/pool/claim`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ agentName: "a", instructions: "x".repeat(200_000) }),
    });
    assert.equal(r.status, 401);
    assert.equal(((await r.json()) as { code: string }).code, "UNAUTHORIZED");
  });

  it("keeps /metrics and /openapi.json behind the key, and the public routes public", async () => {
    for (const url of ["/metrics", "/openapi.json"]) assert.equal((await t.app.inject({ method: "GET", url, headers: auth })).statusCode, 200, url);
    for (const url of ["/healthz", "/version", "/api/pool/counts", "/login", "/dashboard/assets/app.css"]) {
      assert.equal((await t.app.inject({ method: "GET", url })).statusCode, 200, url);
    }
  });

  it("refuses signed-out dashboard requests before reading their body", async () => {
    const cases: Array<[string, string, { payload?: string; headers?: Record<string, string> }]> = [
      ["POST", "/dashboard/launch", { payload: "{bad", headers: { "content-type": "application/json" } }],
      ["POST", "/dashboard/pool/add", { payload: "count=%00", headers: { "content-type": "application/x-www-form-urlencoded" } }],
      ["POST", "/dashboard/pool/drain", { payload: "<x/>", headers: { "content-type": "application/xml" } }],
      ["POST", "/logout", { payload: "x".repeat(600_000), headers: { "content-type": "application/x-www-form-urlencoded" } }],
      ["GET", "/dashboard/instances/%00/events", { headers: { "hx-request": "true" } }],
    ];
    for (const [method, url, o] of cases) {
      const r = await t.app.inject({ method: method as "GET", url, ...o });
      assert.equal(r.statusCode, 401, `${method} ${url}: ${r.body.slice(0, 200)}`);
    }
    const page = await t.app.inject({ method: "GET", url: "/dashboard/instances/%00/events" });
    assert.equal(page.statusCode, 303, "a signed-out page load goes to the login page");
  });

  it("refuses NUL and unpaired surrogates in bodies, keys, path parameters, query strings and headers: 400, nothing changed", async () => {
    const before = await poolState(store, POOL);
    const claim = (body: Record<string, unknown>) => ({
      ...json({ agentName: "Ada", instructions: "x", ...body }),
      headers: { ...auth, "content-type": "application/json" },
    });
    let deep: unknown = "x";
    for (let i = 0; i < 40; i++) deep = { a: deep };
    const cases: Array<[string, string, string, { payload?: string; headers?: Record<string, string> }, string]> = [
      ["GET an instance", "GET", "/api/pool/instances/%00", { headers: auth }, "params.id"],
      ["kill", "DELETE", "/api/pool/instances/a%00b", { headers: auth }, "params.id"],
      ["dismiss", "DELETE", "/api/pool/crashed/%00", { headers: auth }, "params.id"],
      ["agentName", "POST", "/api/pool/claim", claim({ agentName: "Ada\u0000" }), "body.agentName"],
      ["instructions", "POST", "/api/pool/claim", claim({ instructions: "be \u0000 brief" }), "body.instructions"],
      ["a nested metadata value", "POST", "/api/pool/claim", claim({ metadata: { a: { b: ["ok", "\u0000"] } } }), "body.metadata.a.b.1"],
      ["a metadata key", "POST", "/api/pool/claim", claim({ metadata: { "k\u0000": 1 } }), "body.metadata.<key>"],
      ["an unpaired surrogate", "POST", "/api/pool/claim", claim({ agentName: "Ada\ud800" }), "body.agentName"],
      ["an unpaired surrogate in a metadata key", "POST", "/api/pool/claim", claim({ metadata: { "\udc00": 1 } }), "body.metadata.<key>"],
      ["metadata nested 40 deep", "POST", "/api/pool/claim", claim({ metadata: deep as Record<string, unknown> }), "nested deeper"],
      ["a query value", "GET", "/api/pool/status?x=%00", { headers: auth }, "query.x"],
      ["a query key", "GET", "/api/pool/agents?a%00=1", { headers: auth }, "query.<key>"],
      ["a header", "GET", "/api/pool/summary", { headers: { ...auth, "x-note": "a\u0000b" } }, "headers.x-note"],
      [
        "the Idempotency-Key",
        "POST",
        "/api/pool/claim",
        { ...claim({}), headers: { ...auth, "content-type": "application/json", "idempotency-key": "k\u0000" } },
        "headers.idempotency-key",
      ],
    ];
    for (const [what, method, url, o, where] of cases) {
      const r = await t.app.inject({ method: method as "GET", url, ...o });
      assert.equal(r.statusCode, 400, `${what}: ${r.body}`);
      const body = r.json() as { code: string; error: string };
      assert.equal(body.code, "VALIDATION_FAILED", what);
      assert.ok(body.error.includes(where), `${what}: ${body.error}`);
      assert.doesNotMatch(r.body, /\\u0000|\\ud8|\\udc/, "the refused bytes are not echoed");
    }
    assert.equal((await poolState(store, POOL)).hash, before.hash, "nothing changed");
    // The same claim without the NUL goes through: the check refuses only what it must.
    const ok = await t.app.inject({ method: "POST", url: "/api/pool/claim", ...claim({ metadata: { a: { b: ["ok", "😀"] } } }) });
    assert.equal(ok.statusCode, 200, ok.body);
  });

  it("refuses them in the dashboard too (400 page), after the session check", async () => {
    const before = await poolState(store, POOL);
    const hx = { cookie: session.cookie, "hx-request": "true" };
    const form = { "content-type": "application/x-www-form-urlencoded" };
    const cases: Array<[string, string, { payload?: string; headers: Record<string, string> }]> = [
      ["GET", "/dashboard/instances/%00/events", { headers: hx }],
      ["GET", "/dashboard/agents/%00/qr", { headers: hx }],
      ["POST", "/dashboard/launch", { payload: `_csrf=${session.csrf}&mode=new&agentName=Ada%00`, headers: { ...hx, ...form } }],
      ["POST", "/dashboard/instances/%00/kill", { payload: `_csrf=${session.csrf}`, headers: { ...hx, ...form } }],
      ["POST", "/login", { payload: "password=a%00b", headers: form }],
    ];
    for (const [method, url, o] of cases) {
      const r = await t.app.inject({ method: method as "GET", url, ...o });
      assert.equal(r.statusCode, 400, `${method} ${url}: ${r.body.slice(0, 300)}`);
      assert.match(r.body, /cannot be stored/);
    }
    assert.equal((await poolState(store, POOL)).hash, before.hash, "nothing changed");
  });

  it("answers a path that does not decode with 400 VALIDATION_FAILED in the API's shape", async () => {
    for (const url of ["/api/pool/instances/%ED%A0%80", "/api/pool/instances/%FF", "/api/pool/instances/%"]) {
      const r = await t.app.inject({ method: "GET", url, headers: auth });
      assert.equal(r.statusCode, 400, url);
      assert.deepEqual(Object.keys(r.json()).sort(), ["code", "error"]);
      assert.equal(r.json().code, "VALIDATION_FAILED");
    }
  });
});

describe("TRUST_PROXY", () => {
  it("trusts exactly `hops` proxies", () => {
    assert.equal(trustHops(1)("10.0.0.1", 0), true);
    assert.equal(trustHops(1)("10.0.0.1", 1), false);
    assert.equal(trustHops(2)("10.0.0.1", 1), true);
  });

  async function withServer(trustProxy: number, fn: (t: TestServer, lines: string[]) => Promise<void>) {
    const store = await openStore({ dataDir: null });
    const lines: string[] = [];
    const logger = pino(
      { level: "warn" },
      new Writable({
        write: (c, _e, cb) => {
          lines.push(String(c));
          cb();
        },
      }),
    );
    const t = await startTestServer({ store, trustProxy, logger: logger as never, loginAttemptsPerMinute: 2 });
    try {
      await fn(t, lines);
    } finally {
      await t.close();
      await store.close();
    }
  }

  const login = (t: TestServer, xff: string) =>
    t.app.inject({
      method: "POST",
      url: "/login",
      payload: "password=wrong",
      headers: { "content-type": "application/x-www-form-urlencoded", "x-forwarded-for": xff },
      remoteAddress: "10.9.9.9",
    });

  it("with TRUST_PROXY=0: every forwarded client shares the proxy's address, and the server warns once", async () => {
    await withServer(0, async (t, lines) => {
      assert.equal((await login(t, "203.0.113.1")).statusCode, 401);
      assert.equal((await login(t, "203.0.113.2")).statusCode, 401);
      assert.equal((await login(t, "203.0.113.3")).statusCode, 429, "a third client is locked out by the first two");
      const warnings = lines.filter((l) => l.includes("X-Forwarded-For"));
      assert.equal(warnings.length, 1, lines.join(""));
      assert.match(warnings[0]!, /TRUST_PROXY=0/);
    });
  });

  it("with TRUST_PROXY=1: each forwarded client has its own address, and no warning", async () => {
    await withServer(1, async (t, lines) => {
      for (const ip of ["203.0.113.1", "203.0.113.2", "203.0.113.3"]) assert.equal((await login(t, ip)).statusCode, 401, ip);
      assert.equal((await login(t, "198.51.100.1, 203.0.113.1")).statusCode, 401, "the address the proxy saw counts, not what the client claims");
      assert.equal((await login(t, "203.0.113.1")).statusCode, 429);
      assert.equal(lines.filter((l) => l.includes("X-Forwarded-For")).length, 0);
    });
  });

  it("serve() applies the platform's default and warns at start-up when a proxy platform runs with TRUST_PROXY=0", async () => {
    const start = async (env: Record<string, string>) => {
      const dir = mkdtempSync(join(tmpdir(), "agent-pool-trust-"));
      const lines: string[] = [];
      const pool = await serve(
        loadConfig({ DATA_DIR: dir, PORT: "0", POOL_MIN_IDLE: "0", POOL_API_KEY: "k".repeat(32), TICK_INTERVAL_MS: "3600000", ...env }),
        {
          provider: new MemoryProvider(),
          logDestination: new Writable({
            write: (c, _e, cb) => {
              lines.push(String(c));
              cb();
            },
          }),
        },
      );
      await pool.close();
      rmSync(dir, { recursive: true, force: true });
      return lines.map((l) => JSON.parse(l) as { level: number; msg: string; trustProxy?: number });
    };
    const heroku = await start({ DYNO: "web.1" });
    assert.equal(heroku.find((l) => l.msg.startsWith("agent-pool listening"))?.trustProxy, 0);
    assert.ok(
      heroku.some((l) => l.level === 40 && /running on Heroku with TRUST_PROXY=0/.test(l.msg)),
      JSON.stringify(heroku),
    );
    const railway = await start({ RAILWAY_SERVICE_ID: "svc" });
    assert.equal(railway.find((l) => l.msg.startsWith("agent-pool listening"))?.trustProxy, 1);
    assert.ok(!railway.some((l) => /TRUST_PROXY/.test(l.msg)), "no warning with the Railway default");
  });
});
