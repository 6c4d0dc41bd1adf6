import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { GraphQLClient, RailwayApiError, parseReset, parseRetryAfter, type GraphQLClientOptions } from "./client.ts";
import { FakeRailway, type FakeReply } from "./testkit.ts";

const fake = new FakeRailway();
let url = "";
before(async () => {
  url = await fake.start();
});
after(() => fake.stop());

const TOKEN = "secret-token-value-123";
const Q = "query Ping { me { id } }";

function captureLogger() {
  const lines: Array<{ level: string; obj: object; msg?: string }> = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, obj, ...(msg !== undefined ? { msg } : {}) });
  return { lines, logger: { info: at("info"), warn: at("warn"), error: at("error"), debug: at("debug") } };
}

function client(extra: Partial<GraphQLClientOptions> = {}) {
  const sleeps: number[] = [];
  const c = new GraphQLClient({ apiUrl: url, apiToken: TOKEN, sleep: async (ms) => void sleeps.push(ms), random: () => 0, ...extra });
  return { c, sleeps };
}

function replyWith(...replies: FakeReply[]) {
  let i = 0;
  fake.hook = () => replies[Math.min(i++, replies.length - 1)];
}

async function failure(p: Promise<unknown>): Promise<RailwayApiError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RailwayApiError, `expected RailwayApiError, got ${String(err)}`);
    assert.equal(err.code, "PROVIDER_ERROR");
    return err;
  }
  assert.fail("expected a failure");
}

test("an account token goes as Authorization: Bearer, a project token as Project-Access-Token alone", async () => {
  replyWith({ body: { data: { me: { id: "u" } } } });
  const { c } = client();
  await c.call(Q, {}, { operation: "ping", idempotent: true });
  let h = fake.requests.at(-1)!.headers;
  assert.equal(h.authorization, `Bearer ${TOKEN}`);
  assert.equal(h["project-access-token"], undefined);
  assert.equal(h["content-type"], "application/json");
  const p = new GraphQLClient({ apiUrl: url, projectToken: "proj-tok" });
  await p.call(Q, {}, { operation: "ping", idempotent: true });
  h = fake.requests.at(-1)!.headers;
  assert.equal(h["project-access-token"], "proj-tok");
  assert.equal(h.authorization, undefined);
  await Promise.all([c.close(), p.close()]);
});

test("classification: HTML 502 page → non_json", async () => {
  replyWith({ status: 502, body: "<html><body>Bad gateway</body></html>" });
  const { c } = client();
  const e = await failure(c.call(Q, {}, { operation: "ping", idempotent: false }));
  assert.equal(e.failure, "non_json");
  assert.equal(e.httpStatus, 502);
  assert.deepEqual(c.stats.ping, { non_json: 1 });
  await c.close();
});

test("classification: Cloudflare 'Access denied' HTML with 403 → non_json, not a listing", async () => {
  replyWith({ status: 403, body: "<!DOCTYPE html><title>Access denied</title>" });
  const { c } = client();
  assert.equal((await failure(c.call(Q, {}, { operation: "ping", idempotent: false }))).failure, "non_json");
  await c.close();
});

test("classification: 5xx with a JSON body → http_5xx; a read is retried once", async () => {
  replyWith({ status: 503, body: { errors: [{ message: "upstream" }] } });
  const { c, sleeps } = client();
  const e = await failure(c.call(Q, {}, { operation: "ping", idempotent: true }));
  assert.equal(e.failure, "http_5xx");
  assert.deepEqual(c.stats.ping, { http_5xx: 2 });
  assert.equal(sleeps.filter((s) => s >= 1000).length, 1);
  await c.close();
});

test("classification: HTTP 200 + errors → graphql_error (never treated as data)", async () => {
  replyWith({ body: { data: null, errors: [{ message: "Problem processing request" }] } });
  const { c } = client();
  const e = await failure(c.call(Q, {}, { operation: "ping", idempotent: true }));
  assert.equal(e.failure, "graphql_error");
  assert.equal(e.graphqlErrors[0]!.message, "Problem processing request");
  await c.close();
});

test("classification: data AND errors without allowPartial is a failure; with it, both come back", async () => {
  replyWith({ body: { data: { me: { id: "u" } }, errors: [{ message: "Problem processing request", path: ["me", "x"] }] } });
  const { c } = client();
  assert.equal((await failure(c.call(Q, {}, { operation: "ping", idempotent: true }))).failure, "graphql_error");
  const r = await c.call<{ me: { id: string } }>(Q, {}, { operation: "ping", idempotent: true, allowPartial: true });
  assert.equal(r.data.me.id, "u");
  assert.equal(r.errors.length, 1);
  assert.equal(c.stats.ping!.partial, 1);
  await c.close();
});

test("classification: 401, 403 JSON and 'Not Authorized' → auth", async () => {
  const { c } = client();
  replyWith({ status: 401, body: { errors: [{ message: "Unauthorized" }] } });
  assert.equal((await failure(c.call(Q, {}, { operation: "ping", idempotent: true }))).failure, "auth");
  replyWith({ status: 403, body: { errors: [{ message: "Forbidden" }] } });
  assert.equal((await failure(c.call(Q, {}, { operation: "ping", idempotent: true }))).failure, "auth");
  replyWith({ body: { data: null, errors: [{ message: "Not Authorized" }] } });
  assert.equal((await failure(c.call(Q, {}, { operation: "ping", idempotent: true }))).failure, "auth");
  replyWith({ body: { data: null, errors: [{ message: "Project Token not found" }] } });
  assert.equal((await failure(c.call(Q, {}, { operation: "ping", idempotent: true }))).failure, "auth");
  assert.deepEqual(c.stats.ping, { auth: 4 });
  await c.close();
});

test("classification: 400 → validation", async () => {
  replyWith({ status: 400, body: { errors: [{ message: 'Cannot query field "x" on type "Query".', extensions: { code: "GRAPHQL_VALIDATION_FAILED" } }] } });
  const { c } = client();
  const e = await failure(c.call(Q, {}, { operation: "ping", idempotent: true }));
  assert.equal(e.failure, "validation");
  assert.equal(fake.requests.at(-1)!.operation, "Ping");
  await c.close();
});

test("429 honours Retry-After plus jitter, then succeeds; rate-limit headers are tracked", async () => {
  replyWith(
    { status: 429, headers: { "retry-after": "7", "x-ratelimit-remaining": "0", "x-ratelimit-limit": "10000" }, body: { data: null } },
    { headers: { "x-ratelimit-remaining": "9998", "x-ratelimit-limit": "10000", "x-ratelimit-reset": "1767229200" }, body: { data: { me: { id: "u" } } } },
  );
  const { c, sleeps } = client({ random: () => 0.5 });
  const before = fake.requests.length;
  const r = await c.call<{ me: { id: string } }>(Q, {}, { operation: "ping", idempotent: false });
  assert.equal(r.data.me.id, "u");
  assert.equal(fake.requests.length - before, 2);
  const waited = Math.max(...sleeps);
  assert.ok(waited >= 7000 && waited <= 7000 * 1.2 + 250, `waited ${waited}`);
  assert.deepEqual(c.stats.ping, { rate_limited: 1, ok: 1 });
  const rl = c.rateLimit;
  assert.equal(rl.remaining, 9998);
  assert.equal(rl.limit, 10000);
  assert.equal(rl.resetAt?.getTime(), 1767229200 * 1000);
  assert.equal(rl.throttled, 1);
  await c.close();
});

test("429 retries are bounded", async () => {
  replyWith({ status: 429, headers: { "retry-after": "1" }, body: { data: null } });
  const { c } = client({ maxRetries: 2 });
  const e = await failure(c.call(Q, {}, { operation: "ping", idempotent: true }));
  assert.equal(e.failure, "rate_limited");
  assert.equal(c.stats.ping!.rate_limited, 3);
  await c.close();
});

test("a Retry-After longer than maxRetryWaitMs fails at once and holds later calls", async () => {
  replyWith({ status: 429, headers: { "retry-after": "3600" }, body: "" });
  const { c, sleeps } = client({ maxRetryWaitMs: 10_000 });
  assert.equal((await failure(c.call(Q, {}, { operation: "ping", idempotent: true }))).failure, "rate_limited");
  assert.ok(sleeps.every((s) => s < 10_000));
  const sent = fake.requests.length;
  assert.equal((await failure(c.call(Q, {}, { operation: "ping", idempotent: true }))).failure, "rate_limited");
  assert.equal(fake.requests.length, sent, "no request sent during the pause");
  await c.close();
});

test("throttle messages in GraphQL errors → rate_limited", async () => {
  replyWith({ body: { data: null, errors: [{ message: "Only one project can be created per user" }] } });
  const { c } = client();
  const e = await failure(c.call(Q, {}, { operation: "projectCreate", idempotent: false, retryThrottle: false }));
  assert.equal(e.failure, "rate_limited");
  assert.deepEqual(c.stats.projectCreate, { rate_limited: 1 });
  replyWith({ body: { data: null, errors: [{ message: "You are creating volumes too quickly" }] } }, { body: { data: { me: { id: "u" } } } });
  await c.call(Q, {}, { operation: "volume", idempotent: false });
  assert.deepEqual(c.stats.volume, { rate_limited: 1, ok: 1 });
  await c.close();
});

test("timeout → timeout", async () => {
  replyWith({ delayMs: 1_000, body: { data: { me: { id: "u" } } } });
  const { c } = client({ requestTimeoutMs: 100 });
  const t0 = Date.now();
  const e = await failure(c.call(Q, {}, { operation: "ping", idempotent: false }));
  assert.equal(e.failure, "timeout");
  assert.ok(Date.now() - t0 < 900);
  await c.close();
});

test("connection refused → network", async () => {
  const c = new GraphQLClient({ apiUrl: "http://127.0.0.1:1/graphql/v2", apiToken: TOKEN, sleep: async () => {} });
  const e = await failure(c.call(Q, {}, { operation: "ping", idempotent: false }));
  assert.equal(e.failure, "network");
  await c.close();
});

test("failures are logged with the operation name and never the token", async () => {
  const { lines, logger } = captureLogger();
  replyWith({ status: 401, body: { errors: [{ message: "Unauthorized" }] } });
  const { c } = client({ logger });
  await failure(c.call(Q, {}, { operation: "ping", idempotent: true }));
  const err = lines.find((l) => l.level === "error")!;
  assert.equal((err.obj as { operation: string }).operation, "ping");
  assert.equal((err.obj as { failure: string }).failure, "auth");
  assert.ok(!JSON.stringify(lines).includes(TOKEN));
  await c.close();
});

test("pacing spaces requests below the per-second limit", async () => {
  fake.hook = () => ({ body: { data: { me: { id: "u" } } } });
  const c = new GraphQLClient({ apiUrl: url, apiToken: TOKEN, maxRequestsPerSecond: 20 });
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 17 }, () => c.call(Q, {}, { operation: "ping", idempotent: true })));
  const took = Date.now() - t0;
  // 20/s paced at 80% = 16/s: 17 requests need ~1 s.
  assert.ok(took >= 950, `took ${took} ms`);
  await c.close();
});

test("header parsers accept the undocumented formats", () => {
  const now = Date.UTC(2026, 0, 1);
  assert.equal(parseRetryAfter("5", now), 5000);
  assert.equal(parseRetryAfter(new Date(now + 3000).toUTCString(), now), 3000);
  assert.equal(parseRetryAfter("soon", now), null);
  assert.equal(parseReset("1767229200", now)?.getTime(), 1767229200000);
  assert.equal(parseReset("1767229200000", now)?.getTime(), 1767229200000);
  assert.equal(parseReset("60", now)?.getTime(), now + 60_000);
  assert.equal(parseReset("2026-01-01T01:00:00Z", now)?.getTime(), Date.UTC(2026, 0, 1, 1));
});
