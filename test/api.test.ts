/**
 * The HTTP API end to end, in-process: the real server (`serve`) on PGlite, with real reference
 * runtimes started by a test provider. Claims, joins, idempotency, empty pool, waiting, failures
 * and resets, pending acceptance, operator actions, auth on every route, secrets, bad input,
 * events, metrics, OpenAPI and rate limits.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../src/config.ts";
import { EVERY_PASS } from "../src/pool/health-schedule.ts";
import { serve, type RunningPool } from "../src/serve.ts";
import { RuntimeProvider } from "./support/runtime-provider.ts";
import { OpenRouterStandin } from "./support/openrouter-standin.ts";

/** Per-instance keys (issue 12): the first pool gives each instance its own, from a stand-in. */
const PROVISIONING = "sk-or-v1-provisioning-api-test-000000000000000000000000";
import { waitFor } from "./support/process.ts";

interface Res {
  status: number;
  body: any;
  text: string;
  headers: Headers;
}

function client(pool: RunningPool) {
  return async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}, key: string | null = pool.apiKey): Promise<Res> => {
    const h: Record<string, string> = { ...headers };
    if (key !== null) h.authorization = `Bearer ${key}`;
    let payload: string | undefined;
    if (body !== undefined) {
      h["content-type"] ??= "application/json";
      payload = typeof body === "string" ? body : JSON.stringify(body);
    }
    const r = await fetch(`${pool.url}${path}`, { method, headers: h, ...(payload !== undefined ? { body: payload } : {}) });
    const text = await r.text();
    let parsed: any = null;
    try {
      parsed = JSON.parse(text);
    } catch {}
    return { status: r.status, body: parsed, text, headers: r.headers };
  };
}

async function startPool(env: Record<string, string>): Promise<{ pool: RunningPool; provider: RuntimeProvider; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-api-"));
  const provider = new RuntimeProvider();
  const pool = await serve(loadConfig({ DATA_DIR: dir, PORT: "0", LOG_LEVEL: "silent", TICK_INTERVAL_MS: "3600000", ...env }), {
    provider,
    cadence: EVERY_PASS,
  });
  return { pool, provider, dir };
}

const roomPath = (invite: string) => new URL(invite).pathname;

describe("API: claims on a pool of real runtimes", () => {
  let pool: RunningPool;
  let provider: RuntimeProvider;
  let dir: string;
  let api: ReturnType<typeof client>;
  let standin: OpenRouterStandin;
  const seen: string[] = [];

  before(async () => {
    standin = await new OpenRouterStandin({ provisioningKey: PROVISIONING }).start();
    ({ pool, provider, dir } = await startPool({
      POOL_MIN_IDLE: "2",
      POOL_MAX_TOTAL: "3",
      OPENROUTER_PROVISIONING_KEY: PROVISIONING,
      OPENROUTER_API_URL: standin.apiUrl,
    }));
    const raw = client(pool);
    api = async (...args) => {
      const r = await raw(...args);
      seen.push(r.text);
      return r;
    };
    await waitFor("2 idle", async () => (await api("GET", "/api/pool/counts")).body.idle === 2, 15_000, 50);
  });
  after(async () => {
    await pool?.close();
    await standin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  let created: any;
  it("claims an instance: creates a conversation, and the pool refills at once", async () => {
    const r = await api("POST", "/api/pool/claim", { agentName: "Ada", instructions: "You are a pirate." });
    assert.equal(r.status, 200, r.text);
    created = r.body;
    assert.deepEqual(Object.keys(created).sort(), ["agentName", "conversationId", "instanceId", "inviteUrl", "joined", "pool", "runtime", "status"]);
    assert.equal(created.status, "claimed");
    assert.equal(created.joined, false);
    assert.match(created.inviteUrl, /^http:\/\/127\.0\.0\.1:\d+\/i\//);
    const inst = (await api("GET", `/api/pool/instances/${created.instanceId}`)).body;
    assert.equal(inst.instance.status, "claimed");
    assert.equal(inst.instance.agentName, "Ada");
    assert.deepEqual(inst.events.map((e: any) => e.to).slice(0, 2), ["claimed", "claiming"]);
    // The claim woke the reconciler: a replacement is created without waiting for the (hour-long) tick.
    await waitFor("the pool to refill to 2 idle", async () => (await api("GET", "/api/pool/counts")).body.idle === 2, 15_000, 50);
    // The agent answers in its room.
    const said = await fetch(`${new URL(created.inviteUrl).origin}${roomPath(created.inviteUrl)}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: "Ahoy?" }),
    });
    const room = (await said.json()) as { messages: Array<{ role: string; from: string; text: string }> };
    assert.ok(
      room.messages.some((m) => m.role === "agent" && m.from === "Ada"),
      JSON.stringify(room),
    );
  });

  let joined: any;
  it("joins a conversation by invite URL; a second join of the same URL is ALREADY_JOINED", async () => {
    const r = await api("POST", "/api/pool/claim", { agentName: "Bea", instructions: "Second agent.", joinUrl: created.inviteUrl });
    assert.equal(r.status, 200, r.text);
    joined = r.body;
    assert.equal(joined.joined, true);
    assert.equal(joined.status, "claimed");
    assert.notEqual(joined.instanceId, created.instanceId);
    const again = await api("POST", "/api/pool/claim", { agentName: "Bea", instructions: "Double submit.", joinUrl: created.inviteUrl });
    assert.equal(again.status, 409);
    assert.equal(again.body.code, "ALREADY_JOINED");
    assert.equal(again.body.instanceId, joined.instanceId);
  });

  it("an idempotent retry returns the same result and takes no second instance", async () => {
    const key = { "idempotency-key": "retry-123" };
    const first = await api("POST", "/api/pool/claim", { agentName: "Cy", instructions: "x" }, key);
    assert.equal(first.status, 200, first.text);
    const second = await api("POST", "/api/pool/claim", { agentName: "Cy", instructions: "x" }, key);
    assert.equal(second.status, 200);
    assert.deepEqual(second.body, first.body);
    const agents = (await api("GET", "/api/pool/agents")).body.agents;
    assert.equal(agents.filter((a: any) => a.agentName === "Cy").length, 1);
  });

  it("an empty pool at max total answers 503 POOL_EMPTY with Retry-After", async () => {
    await waitFor(
      "no idle left and max total reached",
      async () => {
        const c = (await api("GET", "/api/pool/counts")).body;
        return c.total === 3 && c.idle === 0;
      },
      5_000,
      50,
    );
    const r = await api("POST", "/api/pool/claim", { agentName: "Dee", instructions: "x" });
    assert.equal(r.status, 503);
    assert.equal(r.body.code, "POOL_EMPTY");
    assert.match(r.headers.get("retry-after") ?? "", /^\d+$/);
  });

  it("waitMs waits for an instance to become idle", async () => {
    const waiting = api("POST", "/api/pool/claim", { agentName: "Eve", instructions: "patient", waitMs: 15_000 });
    await new Promise((r) => setTimeout(r, 200));
    // Free a slot: the reconciler replaces it and the waiting claim takes the new one.
    const k = await api("DELETE", `/api/pool/instances/${joined.instanceId}`);
    assert.equal(k.status, 200, k.text);
    const r = await waiting;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.agentName, "Eve");
  });

  it("kill and dismiss: kill marks dead and deletes at the provider; dismiss only takes crashed agents", async () => {
    const notCrashed = await api("DELETE", `/api/pool/crashed/${created.instanceId}`);
    assert.equal(notCrashed.status, 409);
    assert.equal(notCrashed.body.code, "INVALID_TRANSITION");
    // Crash Ada's runtime; the reconciler shows her as crashed for dismissal.
    await provider.runtimeOf(created.instanceId)!.close();
    for (let i = 0; i < 3; i++) await api("POST", "/api/pool/reconcile");
    const agents = (await api("GET", "/api/pool/agents")).body.agents;
    assert.equal(agents[0].id, created.instanceId, "crashed agents come first");
    assert.equal(agents[0].status, "crashed");
    const d = await api("DELETE", `/api/pool/crashed/${created.instanceId}`);
    assert.equal(d.status, 200, d.text);
    const inst = (await api("GET", `/api/pool/instances/${created.instanceId}`)).body.instance;
    assert.equal(inst.status, "dead");
    assert.ok(inst.deletedAt);
    assert.equal((await api("DELETE", "/api/pool/instances/nope")).body.code, "INSTANCE_NOT_FOUND");
    const missing = await api("GET", "/api/pool/instances/nope");
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, "INSTANCE_NOT_FOUND");
  });

  it("streams status changes as server-sent events", async () => {
    const ctrl = new AbortController();
    const res = await fetch(`${pool.url}/api/pool/events`, { headers: { authorization: `Bearer ${pool.apiKey}` }, signal: ctrl.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
    const reader = res.body!.getReader();
    let buf = "";
    const read = async (pattern: RegExp) =>
      waitFor(
        `an event matching ${pattern}`,
        async () => {
          const { value } = await reader.read();
          buf += new TextDecoder().decode(value);
          return pattern.test(buf);
        },
        10_000,
        0,
      );
    await read(/event: counts/);
    const agents = (await api("GET", "/api/pool/agents")).body.agents;
    const victim = agents.find((a: any) => a.status === "claimed");
    await api("DELETE", `/api/pool/instances/${victim.id}`);
    await read(new RegExp(`id: \\d+\\nevent: status\\ndata: \\{[^\\n]*"to":"dead"[^\\n]*"instanceId":"${victim.id}"`));
    // The change is followed by the new counts.
    await read(
      new RegExp(
        `"instanceId":"${victim.id}"[^]*event: counts\\ndata: \\{"pool":"default","runtime":"default","minIdle":2,"maxTotal":3,"templateHash":"[0-9a-f]*","counts":\\{`,
      ),
    );
    seen.push(buf);
    ctrl.abort();
  });

  it("exports metrics and documents every route", async () => {
    const m = await api("GET", "/metrics");
    assert.equal(m.status, 200);
    assert.match(m.text, /agent_pool_claims_total\{pool="default",outcome="claimed"\} \d+/);
    assert.match(m.text, /agent_pool_instances\{pool="default",status="idle"\}/);
    assert.match(m.text, /agent_pool_provider_calls_total/);
    const doc = (await api("GET", "/openapi.json")).body;
    const routes: Array<[string, string]> = [
      ["post", "/api/pool/claim"],
      ["get", "/api/pool/counts"],
      ["get", "/api/pool/status"],
      ["get", "/api/pool/summary"],
      ["get", "/api/pool/agents"],
      ["get", "/api/pool/instances/{id}"],
      ["delete", "/api/pool/instances/{id}"],
      ["post", "/api/pool/replenish"],
      ["post", "/api/pool/drain"],
      ["post", "/api/pool/reconcile"],
      ["delete", "/api/pool/crashed/{id}"],
      ["get", "/api/pool/events"],
      ["get", "/metrics"],
      ["get", "/healthz"],
      ["get", "/readyz"],
      ["get", "/version"],
    ];
    for (const [method, p] of routes) {
      const op = doc.paths[p]?.[method];
      assert.ok(op, `OpenAPI documents ${method.toUpperCase()} ${p}`);
      assert.ok(op.responses["200"], `${method} ${p} has a 200 response`);
      const open = ["/api/pool/counts", "/healthz", "/readyz", "/version"].includes(p);
      assert.deepEqual(op.security, open ? undefined : [{ bearer: [] }], `${method} ${p} security`);
    }
    const claim = doc.paths["/api/pool/claim"].post;
    assert.equal(claim.requestBody.content["application/json"].schema.properties.agentName.maxLength, 200);
    assert.ok(
      claim.parameters.some((x: any) => x.in === "header" && x.name === "idempotency-key"),
      "Idempotency-Key documented",
    );
    assert.ok(claim.responses["503"] && claim.responses["409"], "claim errors documented");
    assert.ok(doc.paths["/api/pool/events"].get.responses["200"].content["text/event-stream"], "events are an event stream");
    assert.ok(doc.paths["/metrics"].get.responses["200"].content["text/plain"], "metrics are text");
    assert.ok(doc.paths["/api/pool/reconcile"].post.responses["200"].content["application/json"].schema.properties.transitions, "reconcile result documented");
  });

  it("never shows the API key, a gateway token, an instance's key or the provisioning key in any response", async () => {
    const rows = await pool.store.listInstances("default", { includeDeleted: true });
    assert.ok(rows.length > 0);
    assert.ok(standin.issued.length >= rows.length, "every instance got its own key");
    for (const path of ["/api/pool/status", "/api/pool/agents", "/api/pool/counts", "/api/pool/summary", "/metrics", "/openapi.json", "/version", "/healthz"]) {
      await api("GET", path);
    }
    for (const r of rows) await api("GET", `/api/pool/instances/${r.id}`);
    const all = seen.join("\n");
    assert.ok(!all.includes(pool.apiKey), "API key leaked");
    assert.ok(!all.includes(PROVISIONING), "provisioning key leaked");
    for (const r of rows) assert.ok(!all.includes(r.gatewayToken), `gateway token of ${r.id} leaked`);
    for (const k of standin.issued) assert.ok(!all.includes(k), "an instance's key leaked");
  });

  it("status has counts, min idle, max total and the instances; replenish without a count runs a reconcile pass", async () => {
    const s = await api("GET", "/api/pool/status");
    assert.equal(s.status, 200);
    assert.equal(s.body.minIdle, 2);
    assert.equal(s.body.maxTotal, 3);
    assert.equal(s.body.counts.total, s.body.instances.length);
    const r = await api("POST", "/api/pool/replenish", {});
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.ok, true);
    assert.equal(typeof r.body.result.leader, "boolean");
    assert.ok(Array.isArray(r.body.result.transitions));
    assert.equal(typeof r.body.counts.idle, "number");
    const t = await api("POST", "/api/pool/reconcile");
    assert.equal(t.status, 200);
    assert.deepEqual(Object.keys(t.body).sort(), [
      "at",
      "counts",
      "created",
      "deleted",
      "durationMs",
      "errors",
      "foreign",
      "healthChecks",
      "healthFailures",
      "leader",
      "listing",
      "notes",
      "providerCalls",
      "renamed",
      "term",
      "transitions",
    ]);
  });

  it("requires the API key on every route but healthz, version and counts", async () => {
    const raw = client(pool);
    const protectedRoutes: Array<[string, string, unknown?]> = [
      ["GET", "/api/pool/status"],
      ["GET", "/api/pool/agents"],
      ["GET", "/api/pool/summary"],
      ["GET", `/api/pool/instances/${created.instanceId}`],
      ["POST", "/api/pool/claim", { agentName: "x", instructions: "y" }],
      ["POST", "/api/pool/replenish", { count: 1 }],
      ["POST", "/api/pool/drain", { count: 1 }],
      ["POST", "/api/pool/reconcile"],
      ["DELETE", `/api/pool/instances/${created.instanceId}`],
      ["DELETE", `/api/pool/crashed/${created.instanceId}`],
      ["GET", "/api/pool/events"],
      ["GET", "/metrics"],
      ["GET", "/openapi.json"],
    ];
    const before = JSON.stringify(await pool.store.countByStatus("default"));
    for (const [m, p, b] of protectedRoutes) {
      for (const key of [null, "wrong-key-wrong-key", `${pool.apiKey}x`]) {
        const r = await raw(m, p, b, {}, key);
        assert.equal(r.status, 401, `${m} ${p} with ${key === null ? "no key" : "a wrong key"}`);
        assert.equal(r.body.code, "UNAUTHORIZED");
      }
    }
    assert.equal(JSON.stringify(await pool.store.countByStatus("default")), before, "nothing changed");
    for (const p of ["/healthz", "/readyz", "/version", "/api/pool/counts"]) assert.equal((await raw("GET", p, undefined, {}, null)).status, 200, p);
  });

  it("rejects bad input with a 4xx and a stable code, changing nothing", async () => {
    const snapshot = async () => JSON.stringify((await pool.store.listInstances("default")).map((r) => [r.id, r.status, r.agentName]));
    const before = await snapshot();
    const cases: Array<[string, string, unknown, number, string, Record<string, string>?]> = [
      ["malformed JSON", "/api/pool/claim", "{not json", 400, "VALIDATION_FAILED"],
      ["instructions not a string", "/api/pool/claim", { instructions: 42 }, 400, "VALIDATION_FAILED"],
      ["wrong type", "/api/pool/claim", { agentName: 42, instructions: "x" }, 400, "VALIDATION_FAILED"],
      ["empty name", "/api/pool/claim", { agentName: "  ", instructions: "x" }, 400, "VALIDATION_FAILED"],
      ["oversized string", "/api/pool/claim", { agentName: "a".repeat(201), instructions: "x" }, 400, "VALIDATION_FAILED"],
      ["oversized body", "/api/pool/claim", { agentName: "a", instructions: "x".repeat(70_000) }, 413, "PAYLOAD_TOO_LARGE"],
      ["invalid join URL", "/api/pool/claim", { agentName: "a", instructions: "x", joinUrl: "javascript:alert(1)" }, 400, "VALIDATION_FAILED"],
      ["empty source", "/api/pool/claim", { agentName: "a", instructions: "x", source: " " }, 400, "VALIDATION_FAILED"],
      ["unknown pool", "/api/pool/claim", { agentName: "a", instructions: "x", pool: "nosuchpool" }, 404, "POOL_NOT_FOUND"],
      ["bad waitMs", "/api/pool/claim", { agentName: "a", instructions: "x", waitMs: 10_000_000 }, 400, "VALIDATION_FAILED"],
      ["bad idempotency key", "/api/pool/claim", { agentName: "a", instructions: "x" }, 400, "VALIDATION_FAILED", { "idempotency-key": "has space" }],
      ["count too large", "/api/pool/drain", { count: 1000 }, 400, "VALIDATION_FAILED"],
      ["count not a number", "/api/pool/replenish", { count: "3" }, 400, "VALIDATION_FAILED"],
      ["count zero", "/api/pool/replenish", { count: 0 }, 400, "VALIDATION_FAILED"],
      ["count above 20", "/api/pool/drain", { count: 21 }, 400, "VALIDATION_FAILED"],
      ["metadata not an object", "/api/pool/claim", { agentName: "a", instructions: "x", metadata: [1, 2] }, 400, "VALIDATION_FAILED"],
      ["metadata too large", "/api/pool/claim", { agentName: "a", instructions: "x", metadata: { blob: "m".repeat(9_000) } }, 400, "VALIDATION_FAILED"],
      ["invalid profile image", "/api/pool/claim", { agentName: "a", instructions: "x", profileImage: "not a url" }, 400, "VALIDATION_FAILED"],
      ["instructions too long", "/api/pool/claim", { agentName: "a", instructions: "x".repeat(50_001) }, 400, "VALIDATION_FAILED"],
      ["bad pool id", "/api/pool/claim", { agentName: "a", instructions: "x", pool: "Not A Pool!" }, 400, "VALIDATION_FAILED"],
      ["negative waitMs", "/api/pool/claim", { agentName: "a", instructions: "x", waitMs: -1 }, 400, "VALIDATION_FAILED"],
      ["body not an object", "/api/pool/claim", "[]", 400, "VALIDATION_FAILED"],
      ["wrong content type", "/api/pool/claim", "<claim/>", 415, "VALIDATION_FAILED", { "content-type": "application/xml" }],
    ];
    for (const [name, path, body, status, code, headers] of cases) {
      const r = await api("POST", path, body, headers ?? {});
      assert.equal(r.status, status, `${name}: ${r.text}`);
      assert.equal(r.body.code, code, name);
      assert.equal(typeof r.body.error, "string");
      assert.doesNotMatch(r.text, /at .*\.ts:\d+|stack/i, `${name}: no stack`);
    }
    assert.equal(await snapshot(), before, "bad input changed nothing");
    assert.equal((await api("GET", "/no/such/route")).body.code, "NOT_FOUND");
  });
});

describe("API: failed provisions, resets, pending acceptance, rate limits", () => {
  let pool: RunningPool;
  let provider: RuntimeProvider;
  let dir: string;
  let api: ReturnType<typeof client>;

  before(async () => {
    ({ pool, provider, dir } = await startPool({ POOL_MIN_IDLE: "0", POOL_MAX_TOTAL: "6", MUTATION_RATE_LIMIT_PER_MIN: "40" }));
    api = client(pool);
  });
  after(async () => {
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Adds one instance with the given runtime knobs and waits for it to be idle. */
  async function addOne(knobs: Record<string, unknown>): Promise<string> {
    provider.nextOptions.push(knobs);
    const r = await api("POST", "/api/pool/replenish", { count: 1 });
    assert.equal(r.status, 200, r.text);
    const id = r.body.created[0] as string;
    // Passes run in-process here, so they do not use up the rate limit tested below.
    await waitFor(
      `${id} idle`,
      async () => {
        await pool.ops.reconcile();
        return (await api("GET", `/api/pool/instances/${id}`)).body.instance.status === "idle";
      },
      10_000,
      20,
    );
    return id;
  }

  it("retries on another instance when provisioning fails, and resets the failed one to idle", async () => {
    const good = await addOne({});
    const bad = await addOne({ failProvision: true }); // newest: tried first
    const r = await api("POST", "/api/pool/claim", { agentName: "Fay", instructions: "x" });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.instanceId, good);
    const badRow = (await api("GET", `/api/pool/instances/${bad}`)).body;
    assert.equal(badRow.instance.status, "idle", "reset clean → back to idle");
    assert.equal(badRow.instance.agentName, null, "claim fields cleared");
    assert.deepEqual(
      badRow.events.slice(0, 2).map((e: any) => e.to),
      ["idle", "claiming"],
    );
    // With only the failing instance left, every try fails: 502 PROVISION_FAILED.
    const all = await api("POST", "/api/pool/claim", { agentName: "Gus", instructions: "x" });
    assert.equal(all.status, 502);
    assert.equal(all.body.code, "PROVISION_FAILED");
    await api("DELETE", `/api/pool/instances/${bad}`);
  });

  it("marks an instance crashed when the reset leaves it dirty", async () => {
    const dirty = await addOne({ failProvision: true, resetDirty: true });
    const r = await api("POST", "/api/pool/claim", { agentName: "Hal", instructions: "x" });
    assert.equal(r.status, 502);
    const row = (await api("GET", `/api/pool/instances/${dirty}`)).body.instance;
    assert.equal(row.status, "crashed");
    assert.equal(row.agentName, null, "not shown as Hal: Hal was never handed out");
    assert.ok(!(await api("GET", "/api/pool/agents")).body.agents.some((a: any) => a.instanceId === dirty || a.id === dirty), "not a live agent");
    // Nobody will dismiss it: the next pass deletes it, so it does not hold a slot for good.
    await pool.ops.reconcile();
    const after = (await api("GET", `/api/pool/instances/${dirty}`)).body;
    assert.equal(after.instance.status, "dead");
    assert.match(after.events[0].reason, /never|handed/);
  });

  it("a join waiting for acceptance is pending_acceptance, then claimed once the reconciler sees the conversation", async () => {
    await addOne({});
    const host = await api("POST", "/api/pool/claim", { agentName: "Host", instructions: "x", metadata: { requireApproval: true } });
    assert.equal(host.status, 200, host.text);
    await addOne({ pendingPollMs: 50 });
    const j = await api("POST", "/api/pool/claim", { agentName: "Guest", instructions: "x", joinUrl: host.body.inviteUrl });
    assert.equal(j.status, 200, j.text);
    assert.equal(j.body.status, "pending_acceptance");
    assert.equal(j.body.conversationId, null);
    const origin = new URL(host.body.inviteUrl).origin;
    const room = (await (await fetch(`${origin}${roomPath(host.body.inviteUrl)}/messages`)).json()) as { members: Array<{ id: string; status: string }> };
    const member = room.members.find((m) => m.status === "pending")!;
    const ok = await fetch(`${origin}${roomPath(host.body.inviteUrl)}/members/${member.id}/approve`, { method: "POST" });
    assert.equal(ok.status, 200);
    const row = await waitFor(
      "the guest to be claimed",
      async () => {
        await pool.ops.reconcile();
        const x = (await api("GET", `/api/pool/instances/${j.body.instanceId}`)).body.instance;
        return x.status === "claimed" ? x : null;
      },
      10_000,
      50,
    );
    assert.equal(row.conversationId, host.body.conversationId);
  });

  it("a concurrent claim with the same Idempotency-Key is 409 CLAIM_IN_PROGRESS; a retry after it returns the same result", async () => {
    const id = await addOne({ provisionDelayMs: 400 });
    const key = { "idempotency-key": "same-key-1" };
    const first = api("POST", "/api/pool/claim", { agentName: "Ivy", instructions: "x" }, key);
    await waitFor(
      "the first claim to be provisioning",
      async () => (await api("GET", `/api/pool/instances/${id}`)).body.instance.status === "claiming",
      5_000,
      10,
    );
    const second = await api("POST", "/api/pool/claim", { agentName: "Ivy", instructions: "x" }, key);
    assert.equal(second.status, 409, second.text);
    assert.equal(second.body.code, "CLAIM_IN_PROGRESS");
    const done = await first;
    assert.equal(done.status, 200, done.text);
    assert.equal(done.body.instanceId, id);
    const retry = await api("POST", "/api/pool/claim", { agentName: "Ivy", instructions: "x" }, key);
    assert.equal(retry.status, 200);
    assert.deepEqual(retry.body, done.body);
  });

  it("rate-limits mutating routes per client with 429 RATE_LIMITED", async () => {
    const codes: number[] = [];
    let limited: any = null;
    for (let i = 0; i < 45; i++) {
      const r = await api("POST", "/api/pool/drain", { count: 1 });
      codes.push(r.status);
      if (r.status === 429) limited = r.body;
    }
    assert.ok(codes.includes(429), "some requests were limited");
    assert.equal(limited.code, "RATE_LIMITED");
    assert.equal(typeof limited.error, "string");
    // Anonymous callers from the same address have their own bucket: they get 401, not 429.
    const anon = await client(pool)("POST", "/api/pool/drain", { count: 1 }, {}, null);
    assert.equal(anon.status, 401);
    assert.equal(anon.body.code, "UNAUTHORIZED");
    assert.equal((await api("GET", "/api/pool/status")).status, 200, "reads are not limited");
  });
});

/** Reads a server-sent event stream in the background; `until` polls its text with a deadline. */
async function openStream(pool: RunningPool, headers: Record<string, string> = {}) {
  const res = await fetch(`${pool.url}/api/pool/events`, { headers: { authorization: `Bearer ${pool.apiKey}`, ...headers } });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  const s = { text: "", done: false };
  void (async () => {
    for (;;) {
      const r = await reader.read().catch(() => ({ done: true as const, value: undefined }));
      if (r.done) {
        s.done = true;
        return;
      }
      s.text += dec.decode(r.value, { stream: true });
    }
  })();
  return {
    get text() {
      return s.text;
    },
    until: (re: RegExp) => waitFor(`the stream to show ${re}`, () => re.test(s.text), 10_000, 10),
    ended: () => waitFor("the stream to end", () => s.done, 5_000, 10),
    cancel: () => reader.cancel(),
  };
}

describe("API: event stream replay and shutdown", () => {
  it("replays from Last-Event-ID without duplicates, streams live changes, and a close with open streams ends them", async () => {
    const { pool, dir } = await startPool({ POOL_MIN_IDLE: "0", POOL_MAX_TOTAL: "4" });
    let closed = false;
    try {
      const api = client(pool);
      const add = await api("POST", "/api/pool/replenish", { count: 1 });
      assert.equal(add.status, 200, add.text);
      const id = add.body.created[0] as string;
      const [created] = await pool.store.listEvents(id);
      assert.equal(created!.toStatus, "starting");

      // Reconnecting after the event before the create: the create is replayed, with its id.
      const replayed = await openStream(pool, { "last-event-id": String(created!.id - 1) });
      await replayed.until(new RegExp(`id: ${created!.id}\\nevent: status\\ndata: \\{[^\\n]*"to":"starting"[^\\n]*"instanceId":"${id}"`));
      const fresh = await openStream(pool);
      await fresh.until(/event: counts\ndata: \{"pool":"default"/);

      // A live change reaches both; the replayed one is never sent twice.
      await waitFor(
        `${id} idle`,
        async () => {
          await pool.ops.reconcile();
          return (await pool.store.getInstance(id))?.status === "idle";
        },
        10_000,
        20,
      );
      assert.equal((await api("DELETE", `/api/pool/instances/${id}`)).status, 200);
      for (const s of [replayed, fresh]) await s.until(new RegExp(`"from":"idle","to":"dead"[^\\n]*"instanceId":"${id}"[^]*event: counts`));
      assert.equal(replayed.text.split(`id: ${created!.id}\n`).length - 1, 1, "replayed once");
      assert.doesNotMatch(fresh.text, new RegExp(`id: ${created!.id}\\n`), "a new client gets no history");

      const t0 = Date.now();
      await pool.close();
      closed = true;
      assert.ok(Date.now() - t0 < 5_000, `close took ${Date.now() - t0} ms with streams open`);
      await replayed.ended();
      await fresh.ended();
    } finally {
      if (!closed) await pool.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects a malformed Last-Event-ID", async () => {
    const { pool, dir } = await startPool({ POOL_MIN_IDLE: "0" });
    try {
      const r = await client(pool)("GET", "/api/pool/events", undefined, { "last-event-id": "abc" });
      assert.equal(r.status, 400);
      assert.equal(r.body.code, "VALIDATION_FAILED");
    } finally {
      await pool.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
