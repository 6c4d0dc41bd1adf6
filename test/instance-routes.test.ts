/**
 * Instances that talk back (issue 12), end to end in-process: the real server (`serve`) on PGlite,
 * real reference runtimes behind a test provider, and the OpenRouter stand-in giving each instance
 * its own key. The routes are called the way an instance calls them, with its own id and gateway
 * token; one instance can never act on another, a dead instance's token opens nothing, and no
 * response or log line carries a secret.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { loadConfig } from "../src/config.ts";
import { serve, type RunningPool } from "../src/serve.ts";
import { OpenRouterStandin } from "./support/openrouter-standin.ts";
import { RuntimeProvider } from "./support/runtime-provider.ts";
import { waitFor } from "./support/process.ts";

const PROVISIONING = "sk-or-v1-provisioning-instance-routes-000000000000000000";

interface Res {
  status: number;
  body: any;
  text: string;
  headers: Headers;
}

describe("instance routes", () => {
  let pool: RunningPool;
  let provider: RuntimeProvider;
  let standin: OpenRouterStandin;
  let dir: string;
  const seen: string[] = [];
  const logs: string[] = [];

  before(async () => {
    standin = await new OpenRouterStandin({ provisioningKey: PROVISIONING }).start();
    dir = mkdtempSync(join(tmpdir(), "agent-pool-instance-routes-"));
    provider = new RuntimeProvider();
    const logStream = new PassThrough();
    logStream.on("data", (c: Buffer) => logs.push(c.toString("utf8")));
    pool = await serve(
      loadConfig({
        DATA_DIR: dir,
        PORT: "0",
        LOG_LEVEL: "info",
        TICK_INTERVAL_MS: "3600000",
        POOL_MIN_IDLE: "0",
        POOL_MAX_TOTAL: "40",
        MUTATION_RATE_LIMIT_PER_MIN: "1000",
        INSTANCE_RATE_LIMIT_PER_MIN: "30",
        RESOURCE_TICK_INTERVAL_MS: "3600000",
        OPENROUTER_PROVISIONING_KEY: PROVISIONING,
        OPENROUTER_API_URL: standin.apiUrl,
        OPENROUTER_KEY_LIMIT: "20",
        OPENROUTER_KEY_LIMIT_MAX: "100",
      }),
      { provider, logDestination: logStream },
    );
  });
  after(async () => {
    await pool?.close();
    await standin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function call(method: string, path: string, opts: { body?: unknown; auth?: string | null; raw?: string } = {}): Promise<Res> {
    const headers: Record<string, string> = {};
    if (opts.auth) headers.authorization = opts.auth;
    let payload: string | undefined = opts.raw;
    if (opts.body !== undefined) payload = JSON.stringify(opts.body);
    if (payload !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(`${pool.url}${path}`, { method, headers, ...(payload !== undefined ? { body: payload } : {}) });
    const text = await r.text();
    seen.push(text);
    let body: any = null;
    try {
      body = JSON.parse(text);
    } catch {}
    return { status: r.status, body, text, headers: r.headers };
  }
  const admin = (method: string, path: string, body?: unknown) =>
    call(method, path, { auth: `Bearer ${pool.apiKey}`, ...(body !== undefined ? { body } : {}) });

  /** The credentials an instance holds: its id and its gateway token (from its environment). */
  async function credsOf(id: string): Promise<string> {
    const row = await pool.store.getInstance(id);
    return `Bearer ${id}:${row!.gatewayToken}`;
  }

  async function addOne(knobs: Record<string, unknown> = {}): Promise<string> {
    provider.nextOptions.push(knobs);
    const r = await admin("POST", "/api/pool/replenish", { count: 1 });
    assert.equal(r.status, 200, r.text);
    const id = r.body.created[0] as string;
    await waitFor(
      `${id} idle`,
      async () => {
        await pool.ops.reconcile();
        return (await pool.store.getInstance(id))?.status === "idle";
      },
      10_000,
      20,
    );
    return id;
  }

  async function claimPending(): Promise<{ guest: string; host: any }> {
    await addOne();
    const host = await admin("POST", "/api/pool/claim", { agentName: "Host", instructions: "x", metadata: { requireApproval: true } });
    assert.equal(host.status, 200, host.text);
    await addOne({ pendingPollMs: 50 });
    const j = await admin("POST", "/api/pool/claim", { agentName: "Guest", instructions: "x", joinUrl: host.body.inviteUrl });
    assert.equal(j.body.status, "pending_acceptance", j.text);
    return { guest: j.body.instanceId, host: host.body };
  }

  it("each instance got its own key; `self` shows its pool, template, version and resources, never a secret", async () => {
    const id = await addOne();
    const key = standin.keyOfInstance(id);
    assert.ok(key, "a key was made for it before it booted");
    const r = await call("GET", "/api/instance/self", { auth: await credsOf(id) });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(
      [r.body.instanceId, r.body.pool, r.body.status, r.body.template, r.body.version, r.body.provider],
      [id, "default", "idle", "reference", (await pool.store.getInstance(id))!.runtimeVersion, "test-runtimes"],
    );
    assert.deepEqual(
      r.body.resources.map((x: any) => [x.kind, x.state, x.limit, x.usage]),
      [["openrouter", "ready", 20, 0]],
    );
    assert.ok(!r.text.includes(key.key) && !r.text.includes(key.hash), "neither the key nor its hash");
    assert.ok(!r.text.includes((await pool.store.getInstance(id))!.gatewayToken));
    const [ev] = await pool.store.listEvents(id, 1);
    assert.deepEqual([ev?.actor, ev?.reason, ev?.fromStatus, ev?.toStatus], ["instance", "asked for its own info", "idle", "idle"]);
  });

  it("authenticates before validation, in constant time, and refuses every credential that is not the instance's own", async () => {
    const a = await addOne();
    const b = await addOne();
    const tokenA = (await pool.store.getInstance(a))!.gatewayToken;
    const bad: Array<[string, string | null]> = [
      ["no header", null],
      ["the API key", `Bearer ${pool.apiKey}`],
      ["a token without an id", `Bearer ${tokenA}`],
      ["A's token under B's id", `Bearer ${b}:${tokenA}`],
      ["an unknown id", `Bearer i-nobody:${tokenA}`],
      ["a wrong token", `Bearer ${a}:${"0".repeat(64)}`],
      ["an id the database could not store", `Bearer i-\u0000x:${tokenA}`],
      ["Basic", `Basic ${Buffer.from(`${a}:${tokenA}`).toString("base64")}`],
    ];
    for (const [what, auth] of bad) {
      for (const [method, path, body] of [
        ["GET", "/api/instance/self", undefined],
        ["POST", "/api/instance/pending-acceptance/complete", { conversationId: 42 }],
        ["POST", "/api/instance/self/destroy", undefined],
        ["GET", "/api/instance/credits", undefined],
      ] as const) {
        let r: Res;
        try {
          r = await call(method, path, { auth, ...(body !== undefined ? { body } : {}) });
        } catch {
          continue; // a header fetch itself refuses to send (the NUL)
        }
        assert.equal(r.status, 401, `${what}: ${method} ${path} → ${r.status} ${r.text}`);
        assert.equal(r.body.code, "UNAUTHORIZED");
      }
    }
    // An unauthenticated malformed body is a 401, not a 400: nothing is validated before auth.
    assert.equal((await call("POST", "/api/instance/pending-acceptance/complete", { raw: "{not json" })).status, 401);
    // Nothing happened to either instance.
    assert.equal((await pool.store.getInstance(a))!.status, "idle");
    assert.equal((await pool.store.getInstance(b))!.status, "idle");
    // With its own credentials, a malformed body is then a 400.
    const malformed = await call("POST", "/api/instance/pending-acceptance/complete", { auth: await credsOf(a), body: { conversationId: "" } });
    assert.equal(malformed.status, 400);
    assert.equal(malformed.body.code, "VALIDATION_FAILED");
  });

  it("one instance cannot act on another: a destroy with A's credentials retires A only", async () => {
    const a = await addOne();
    const b = await addOne();
    const r = await call("POST", "/api/instance/self/destroy", { auth: await credsOf(a), body: { instanceId: b } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([r.body.instanceId, r.body.status], [a, "dead"]);
    assert.equal((await pool.store.getInstance(b))!.status, "idle", "B untouched whatever the body says");
    // A's key went with it, at once; B keeps its own.
    assert.equal(standin.keyOfInstance(a), undefined);
    assert.ok(standin.keyOfInstance(b));
    const [ev] = await pool.store.listEvents(a, 1);
    assert.deepEqual([ev?.actor, ev?.toStatus, ev?.reason], ["instance", "dead", "destroyed at its own request"]);
  });

  it("a stolen token of a dead instance is refused on every route", async () => {
    const id = await addOne();
    const creds = await credsOf(id);
    assert.equal((await admin("DELETE", `/api/pool/instances/${id}`)).status, 200);
    for (const [method, path] of [
      ["GET", "/api/instance/self"],
      ["GET", "/api/instance/credits"],
      ["POST", "/api/instance/self/reset"],
      ["POST", "/api/instance/self/destroy"],
      ["POST", "/api/instance/pending-acceptance/fail"],
    ] as const) {
      const r = await call(method, path, { auth: creds });
      assert.equal(r.status, 401, `${method} ${path} → ${r.status}`);
    }
    const complete = await call("POST", "/api/instance/pending-acceptance/complete", { auth: creds, body: { conversationId: "c-1" } });
    assert.equal(complete.status, 401);
  });

  it("pending → claimed through the callback within one request (no pass in between), idempotent on retry", async () => {
    const { guest, host } = await claimPending();
    const creds = await credsOf(guest);
    const r = await call("POST", "/api/instance/pending-acceptance/complete", { auth: creds, body: { conversationId: host.conversationId } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([r.body.changed, r.body.status, r.body.conversationId], [true, "claimed", host.conversationId]);
    const row = await pool.store.getInstance(guest);
    assert.deepEqual([row?.status, row?.conversationId], ["claimed", host.conversationId]);
    const [ev] = await pool.store.listEvents(guest, 1);
    assert.deepEqual([ev?.fromStatus, ev?.toStatus, ev?.actor], ["pending_acceptance", "claimed", "instance"]);
    const again = await call("POST", "/api/instance/pending-acceptance/complete", { auth: creds, body: { conversationId: host.conversationId } });
    assert.deepEqual([again.status, again.body.changed], [200, false]);
    const other = await call("POST", "/api/instance/pending-acceptance/complete", { auth: creds, body: { conversationId: "another" } });
    assert.equal(other.status, 409);
    assert.equal(other.body.code, "INVALID_TRANSITION");
    const fail = await call("POST", "/api/instance/pending-acceptance/fail", { auth: creds });
    assert.equal(fail.status, 409, `claimed: nothing pending to refuse (${fail.text})`);
  });

  it("a refused join retires the instance at once and deletes its key", async () => {
    const { guest } = await claimPending();
    assert.ok(standin.keyOfInstance(guest));
    const r = await call("POST", "/api/instance/pending-acceptance/fail", { auth: await credsOf(guest), body: { error: "the group's admin said no" } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "dead");
    const [ev] = await pool.store.listEvents(guest, 1);
    assert.deepEqual([ev?.actor, ev?.reason], ["instance", "join refused (reported by the instance): the group's admin said no"]);
    assert.equal(standin.keyOfInstance(guest), undefined);
  });

  it("credits: remaining spend on its own key, live from the vendor", async () => {
    const id = await addOne();
    const key = standin.keyOfInstance(id)!;
    standin.spend(key.hash, 4.5);
    const r = await call("GET", "/api/instance/credits", { auth: await credsOf(id) });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual([r.body.kind, r.body.limit, r.body.usage, r.body.remaining, r.body.live], ["openrouter", 20, 4.5, 15.5, true]);
    assert.ok(!r.text.includes(key.key));
  });

  it("self/reset: a clean runtime returns to idle with its claim cleared; a dirty one is retired", async () => {
    const id = await addOne();
    const c = await admin("POST", "/api/pool/claim", { agentName: "Resettable", instructions: "x" });
    assert.equal(c.body.instanceId, id, c.text);
    const r = await call("POST", "/api/instance/self/reset", { auth: await credsOf(id) });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, "idle");
    const row = await pool.store.getInstance(id);
    assert.deepEqual([row?.status, row?.agentName, row?.conversationId, row?.claimedAt], ["idle", null, null, null]);
    assert.ok(standin.keyOfInstance(id), "an instance back in the pool keeps its key");
    // Idle already: nothing to do.
    assert.deepEqual((await call("POST", "/api/instance/self/reset", { auth: await credsOf(id) })).body.changed, false);

    const dirty = await addOne({ resetDirty: true });
    await admin("DELETE", `/api/pool/instances/${id}`);
    const c2 = await admin("POST", "/api/pool/claim", { agentName: "Dirty", instructions: "x" });
    assert.equal(c2.body.instanceId, dirty, c2.text);
    const d = await call("POST", "/api/instance/self/reset", { auth: await credsOf(dirty) });
    assert.equal(d.status, 200, d.text);
    assert.equal(d.body.status, "dead");
    assert.match((await pool.store.listEvents(dirty, 1))[0]!.reason, /reset at its own request: runtime not clean/);
    assert.equal(standin.keyOfInstance(dirty), undefined, "a retired instance's key is deleted");
  });

  it("rate-limits each instance on its own counter", async () => {
    const a = await addOne();
    const b = await addOne();
    const credsA = await credsOf(a);
    const codes: number[] = [];
    for (let i = 0; i < 32; i++) codes.push((await call("GET", "/api/instance/self", { auth: credsA })).status);
    assert.deepEqual(codes.slice(0, 30), Array(30).fill(200));
    const limited = await call("GET", "/api/instance/self", { auth: credsA });
    assert.equal(limited.status, 429);
    assert.equal(limited.body.code, "RATE_LIMITED");
    assert.match(limited.headers.get("retry-after") ?? "", /^\d+$/);
    assert.equal((await call("GET", "/api/instance/self", { auth: await credsOf(b) })).status, 200, "B has its own budget");
  });

  it("documents the routes in OpenAPI with the instance's credentials", async () => {
    const doc = (await admin("GET", "/openapi.json")).body;
    for (const [method, p] of [
      ["post", "/api/instance/pending-acceptance/complete"],
      ["post", "/api/instance/pending-acceptance/fail"],
      ["get", "/api/instance/self"],
      ["post", "/api/instance/self/reset"],
      ["post", "/api/instance/self/destroy"],
      ["get", "/api/instance/credits"],
    ] as const) {
      const op = doc.paths[p]?.[method];
      assert.ok(op, `${method} ${p}`);
      assert.deepEqual(op.security, [{ instance: [] }]);
    }
    assert.ok(doc.components.securitySchemes.instance);
  });

  it("no response and no log line carries a gateway token, an instance's key or the provisioning key", async () => {
    const rows = await pool.store.listInstances("default", { includeDeleted: true });
    assert.ok(rows.length > 5);
    assert.ok(standin.issued.length > 5, "keys were made (and some deleted)");
    const out = seen.join("\n");
    const log = logs.join("");
    assert.ok(log.includes("instance route"), "the routes did log");
    for (const text of [out, log]) {
      assert.ok(!text.includes(PROVISIONING), "provisioning key leaked");
      assert.ok(!text.includes(pool.apiKey), "API key leaked");
      for (const r of rows) assert.ok(!text.includes(r.gatewayToken), `gateway token of ${r.id} leaked`);
      for (const k of standin.issued) assert.ok(!text.includes(k), "an instance's key leaked");
    }
  });
});
