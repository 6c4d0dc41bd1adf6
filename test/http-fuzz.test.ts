/**
 * A seeded fuzz test of every route: the real server (`buildServer`) over a real store (in-memory
 * PGlite), a pool of in-memory instances, and ~1,500 random requests (test/support/request-fuzzer.ts)
 * to every route of the route table (API, OpenAPI, metrics, dashboard), with and without the API
 * key and a dashboard session. Asserts that no request is answered 5xx, and that a request answered
 * 4xx changed nothing: the pool's rows (every field), its events and its pools are hashed before
 * and after each request; and that a request to a protected route without valid credentials is
 * refused as such (401, or the dashboard's login redirect) whatever else it carries.
 *
 * The seed comes from FUZZ_SEED when set, else it is random; it is printed at the start and in
 * every failure, with the request that failed: `FUZZ_SEED=<seed> node scripts/test.mjs
 * test/http-fuzz.test.ts` replays the run. FUZZ_REQUESTS changes the number of requests.
 *
 * Not covered by the snapshot: rate-limit counters (a 429 or a failed sign-in counts, by design),
 * the reconciler lease and idempotency records, which the Store API does not list.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { connect } from "node:net";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { bearerFrom } from "../src/http/auth.ts";
import { routeTable } from "../src/http/server.ts";
import { readCookie } from "../src/dashboard/session.ts";
import { ensureIdle, poolState, startTestServer, type TestServer } from "./support/http-server.ts";
import { RequestFuzzer, describeRequest, type FuzzContext, type FuzzRequest } from "./support/request-fuzzer.ts";

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 1500);
const BODY_LIMIT = 64 * 1024;
const POOL = "default";
const MAX_TOTAL = 40;

interface Answer {
  status: number;
  contentType: string;
  body: string;
}

/**
 * Sends over a real socket, bytes as generated: unlike inject, nothing normalizes the path (`..`
 * and `%2e%2e` reach the router) and Node's own parser sees the headers. An event stream is cut
 * once its head has arrived.
 */
function sendRaw(port: number, r: FuzzRequest): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = r.payload === undefined ? Buffer.alloc(0) : Buffer.isBuffer(r.payload) ? r.payload : Buffer.from(r.payload, "utf8");
    const lines = [`${r.method} ${r.url} HTTP/1.1`, "host: 127.0.0.1", "connection: close"];
    for (const [k, v] of Object.entries(r.headers)) lines.push(`${k}: ${v}`);
    if (body.length > 0) lines.push(`content-length: ${body.length}`);
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = () => {
      if (settled) return;
      const text = Buffer.concat(chunks).toString("utf8");
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (!m) return; // not even a status line yet
      const head = text.split("\r\n\r\n")[0]!;
      const contentType = /\r\ncontent-type: ([^\r]*)/i.exec(head)?.[1] ?? "";
      if (contentType.includes("text/event-stream") || socketEnded) {
        settled = true;
        socket.destroy();
        resolve({ status: Number(m[1]), contentType, body: text.slice(head.length + 4) });
      }
    };
    let socketEnded = false;
    socket.on("data", (c) => {
      chunks.push(c);
      finish();
    });
    socket.on("close", () => {
      socketEnded = true;
      finish();
      if (!settled) reject(new Error(`connection closed without an answer: ${Buffer.concat(chunks).toString("utf8").slice(0, 200)}`));
    });
    socket.on("error", () => undefined); // reported by "close"
    socket.write(Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1"), body]));
  });
}

/** Sends through inject; an event stream (never ending by design) is cut once its head is written. */
async function send(t: TestServer, r: FuzzRequest): Promise<Answer> {
  const res = await t.app.inject({
    method: r.method as "GET",
    url: r.url,
    headers: r.headers,
    remoteAddress: r.remoteAddress,
    payloadAsStream: true,
    ...(r.payload !== undefined ? { payload: r.payload } : {}),
  });
  const contentType = String(res.headers["content-type"] ?? "");
  if (contentType.includes("text/event-stream")) {
    (res.raw.res as unknown as { destroy(): void }).destroy();
    return { status: res.statusCode, contentType, body: "" };
  }
  const chunks: Buffer[] = [];
  for await (const c of res.stream()) chunks.push(Buffer.from(c as Buffer));
  return { status: res.statusCode, contentType, body: Buffer.concat(chunks).toString("utf8") };
}

const PUBLIC = new Set(["/healthz", "/readyz", "/version", "/api/pool/counts", "/login", "/dashboard/assets/:name"]);

/**
 * The route a request reaches, when its path is one the router can match (a path that does not
 * decode, or a parameter over the router's 100 characters, is refused before any route runs).
 */
function routeOf(routes: ReadonlyArray<{ method: string; url: string }>, r: FuzzRequest, raw: boolean): { method: string; url: string } | null {
  // Node's parser answers 400 itself to a header holding a control character: no route runs.
  // (Header lines go out as latin1: a character above U+00FF is sent as its low byte.)
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters in a header value are exactly what this looks for
  if (raw && Object.values(r.headers).some((v) => /[\x00-\x08\x0a-\x1f\x7f]/.test(Buffer.from(v, "latin1").toString("latin1")))) return null;
  // inject resolves the URL as a browser would (`a/../b` → `b`); a socket delivers it as sent.
  // (light-my-request's parse-url.js, `//` included).
  const path = raw ? r.url.split("?")[0]! : new URL(r.url.startsWith("//") ? `http://localhost${r.url}` : r.url, "http://localhost").pathname;
  try {
    decodeURIComponent(path);
  } catch {
    return null;
  }
  return (
    routes.find((x) => {
      if (x.method !== r.method) return false;
      const re = new RegExp(`^${x.url.replace(/:[A-Za-z]+/g, "[^/]{1,100}")}$`);
      return re.test(path);
    }) ?? null
  );
}

function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms: ${what()}`)), ms))),
  ]);
}

describe(`HTTP fuzz (seed ${SEED})`, () => {
  let store: Store;
  let t: TestServer;

  before(async () => {
    store = await openStore({ dataDir: null });
    // TRUST_PROXY=1: X-Forwarded-For (random, even garbage) becomes the client address of rate limits.
    t = await startTestServer({ store, poolId: POOL, minIdle: 2, maxTotal: MAX_TOTAL, trustProxy: 1, mutationRateLimit: 40, bodyLimit: BODY_LIMIT });
    await ensureIdle(t.ops, 3);
  });
  after(async () => {
    await t?.close();
    await store?.close();
  });

  it("enumerates every route, the OpenAPI document's included", async () => {
    const routes = routeTable(t.app);
    const doc = (await t.app.inject({ method: "GET", url: "/openapi.json", headers: { authorization: `Bearer ${t.apiKey}` } })).json() as {
      paths: Record<string, Record<string, unknown>>;
    };
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const method of Object.keys(ops)) {
        const url = path.replace(/\{(\w+)\}/g, ":$1");
        assert.ok(
          routes.some((r) => r.method === method.toUpperCase() && r.url === url),
          `${method} ${path} is in the route table`,
        );
      }
    }
    for (const url of ["/", "/login", "/dashboard/launch", "/dashboard/instances/:id/kill", "/openapi.json", "/metrics"]) {
      assert.ok(
        routes.some((r) => r.url === url),
        `${url} is in the route table`,
      );
    }
  });

  it(`answers ${REQUESTS} random requests without a 5xx, and no 4xx changes anything`, async () => {
    // A dashboard session and its CSRF token, for the requests that carry them.
    const login = await t.app.inject({
      method: "POST",
      url: "/login",
      payload: `password=${encodeURIComponent(t.apiKey)}`,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      remoteAddress: "192.0.2.200",
    });
    assert.equal(login.statusCode, 303, login.body);
    const sessionCookie = String(login.headers["set-cookie"]).split(";")[0]!;
    const page = await t.app.inject({ method: "GET", url: "/", headers: { cookie: sessionCookie } });
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.body)?.[1];
    assert.ok(csrf, "the page carries a CSRF token");
    const session = readCookie(sessionCookie, "ap_session");
    let claimed = 0;
    const succeeded = new Map<string, number>();

    const routes = routeTable(t.app);
    const address = await t.app.listen({ port: 0, host: "127.0.0.1" });
    const port = Number(new URL(address).port);
    const fuzzer = new RequestFuzzer(SEED);
    const statuses = new Map<number, number>();
    let state = await poolState(store, POOL);
    const t0 = Date.now();
    for (let i = 0; i < REQUESTS; i++) {
      // Between requests, not during one: keep idle instances to claim, and room under max total.
      // Now and then an agent's runtime is lost: crashed agents to dismiss (or not) too.
      if (i % 50 === 25) {
        const agent = (await t.ops.agents()).find((a) => a.status === "claimed");
        if (agent) {
          await store.transition({ id: agent.id, from: "claimed", to: "crashed", actor: "reconciler", reason: "fuzz: runtime lost" });
          state = await poolState(store, POOL);
        }
      }
      const s = await t.ops.summary();
      if (s.counts.idle < 2) {
        if (s.counts.total >= MAX_TOTAL - 4) {
          for (const a of (await t.ops.agents()).slice(0, 8)) await t.ops.kill(a.id).catch(() => undefined);
        }
        await ensureIdle(t.ops, 2);
        state = await poolState(store, POOL);
      }
      const ctx: FuzzContext = { routes, apiKey: t.apiKey, sessionCookie, csrf, instanceIds: state.ids, inviteUrls: state.invites, bodyLimit: BODY_LIMIT };
      const req = fuzzer.next(ctx);
      const where = () => `seed ${SEED}, request #${i}${i % 7 === 0 ? " (socket)" : ""}: ${describeRequest(req)}`;
      // Most through inject (fast, any bytes); some over a real socket (no normalization, Node's parser).
      const raw = i % 7 === 0;
      const res = await withTimeout(raw ? sendRaw(port, req) : send(t, req), 15_000, where);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      assert.ok(res.status < 500, `${where()}\nanswered ${res.status}: ${res.body.slice(0, 500)}`);
      assert.ok(!res.body.includes(t.apiKey), `${where()}\nthe API key is in the answer`);
      const now = await poolState(store, POOL);
      if (res.status >= 400) assert.equal(now.hash, state.hash, `${where()}\nanswered ${res.status} (${res.body.slice(0, 300)}) but changed the pool's state`);
      state = now;
      const route = routeOf(routes, req, raw);
      if (route && !PUBLIC.has(route.url)) {
        const api = route.url.startsWith("/api/") || route.url === "/metrics" || route.url === "/openapi.json";
        const authorized = api ? bearerFrom(req.headers.authorization) === t.apiKey : readCookie(req.headers.cookie, "ap_session") === session;
        if (!authorized) {
          const refused = res.status === 401 || (!api && res.status === 303 && req.method === "GET");
          assert.ok(refused, `${where()}\nreached ${route.method} ${route.url} without credentials and answered ${res.status}: ${res.body.slice(0, 300)}`);
        }
      }
      if (route?.url === "/api/pool/claim" && res.status === 200) claimed++;
      if (route && res.status < 300) succeeded.set(`${route.method} ${route.url}`, (succeeded.get(`${route.method} ${route.url}`) ?? 0) + 1);
    }
    const summary = [...statuses]
      .sort((a, b) => a[0] - b[0])
      .map(([s, n]) => `${s}×${n}`)
      .join(" ");
    console.log(`# fuzz seed ${SEED}: ${REQUESTS} requests in ${Date.now() - t0} ms: ${summary}; ${claimed} claims`);
    console.log(
      `# 2xx by route: ${[...succeeded]
        .sort()
        .map(([r, n]) => `${r} ${n}`)
        .join(", ")}`,
    );
    // The mix must reach the handlers, not only the guards: some requests succeed, some are refused.
    assert.ok((statuses.get(200) ?? 0) > REQUESTS / 20, `too few 200s: ${summary}`);
    assert.ok((statuses.get(400) ?? 0) > REQUESTS / 20, `too few 400s: ${summary}`);
    assert.ok((statuses.get(401) ?? 0) > REQUESTS / 20, `too few 401s: ${summary}`);
    assert.ok(claimed > 0, "some claims went through");
  });
});
