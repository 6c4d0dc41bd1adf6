/**
 * The client library (`agent-pool/client`) against a real server: `serve()` on PGlite with real
 * reference runtimes. A claim; a claim that waits out an empty pool while it refills; a claim whose
 * first answer is lost by a proxy after the server handled it (the retry, with the same key, gets
 * the same agent and no second instance is taken); typed errors; every admin call; and the
 * client's schemas against the server's OpenAPI document, so the two cannot drift.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { z } from "zod";
import { ClaimBody, PoolApiError, PoolClient, PoolUnreachableError, ROUTES, isPoolApiError } from "agent-pool/client";
import { loadConfig } from "../src/config.ts";
import { serve, type RunningPool } from "../src/serve.ts";
import { RuntimeProvider } from "./support/runtime-provider.ts";
import { freePort, waitFor } from "./support/process.ts";

/** A fetch that records each claim's idempotency key before sending it on. */
function recordingFetch(keys: string[]): typeof fetch {
  return (input, init) => {
    const h = new Headers(init?.headers);
    if (String(input).endsWith("/api/pool/claim")) keys.push(h.get("idempotency-key") ?? "(none)");
    return fetch(input, init);
  };
}

/**
 * An HTTP proxy in front of the server that loses the first claim's answer: it forwards the
 * request, waits for the server's whole answer, then closes the client's connection without
 * sending it. What a client sees when a load balancer or a network drops a response.
 */
async function droppingProxy(upstream: string): Promise<{ url: string; dropped: string[]; claimKeys: string[]; close: () => Promise<void> }> {
  const dropped: string[] = [];
  const claimKeys: string[] = [];
  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string" && !["host", "connection", "content-length"].includes(k)) headers.set(k, v);
    const isClaim = req.method === "POST" && req.url === "/api/pool/claim";
    if (isClaim) claimKeys.push(headers.get("idempotency-key") ?? "(none)");
    const up = await fetch(`${upstream}${req.url}`, { method: req.method!, headers, ...(chunks.length ? { body: Buffer.concat(chunks) } : {}) });
    const text = await up.text();
    if (isClaim && dropped.length === 0) {
      dropped.push(text);
      req.socket.destroy();
      return;
    }
    res.writeHead(up.status, { "content-type": up.headers.get("content-type") ?? "application/json" });
    res.end(text);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    dropped,
    claimKeys,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe("client library against a real server", () => {
  let pool: RunningPool;
  let provider: RuntimeProvider;
  let dir: string;
  let client: PoolClient;
  const idle = async () => (await pool.ops.summary()).counts.idle;
  const claimedCount = async () => (await pool.store.listInstances("default")).filter((r) => r.status === "claimed" || r.status === "claiming").length;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agent-pool-client-"));
    provider = new RuntimeProvider();
    pool = await serve(loadConfig({ DATA_DIR: dir, PORT: "0", LOG_LEVEL: "silent", TICK_INTERVAL_MS: "3600000", POOL_MIN_IDLE: "1", POOL_MAX_TOTAL: "3" }), {
      provider,
    });
    client = new PoolClient({ url: pool.url, apiKey: pool.apiKey });
    await waitFor("1 idle", async () => (await idle()) === 1, 15_000, 50);
  });
  after(async () => {
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("its schemas are the server's: every response, and the claim body, match the OpenAPI document", async () => {
    const doc = (await (await fetch(`${pool.url}/openapi.json`, { headers: { authorization: `Bearer ${pool.apiKey}` } })).json()) as any;
    const jsonSchema = (s: z.ZodType, io: "input" | "output") => {
      const { $schema: _, ...rest } = z.toJSONSchema(s, { io, target: "openapi-3.0" }) as Record<string, unknown>;
      return rest;
    };
    for (const [name, r] of Object.entries(ROUTES)) {
      const op = doc.paths[r.path]?.[r.method.toLowerCase()];
      assert.ok(op, `${name}: ${r.method} ${r.path} is a route of the server`);
      const status = "status" in r ? r.status : "200";
      assert.deepEqual(
        op.responses[status].content["application/json"].schema,
        jsonSchema(r.response, "output"),
        `${name}: the client's response schema is the server's`,
      );
    }
    assert.deepEqual(doc.paths["/api/pool/claim"].post.requestBody.content["application/json"].schema, jsonSchema(ClaimBody, "input"));
  });

  let first: Awaited<ReturnType<PoolClient["claim"]>>;
  it("claims an agent", async () => {
    first = await client.claim({ agentName: "Ada", instructions: "You are a pirate.", source: "client-test" });
    assert.equal(first.status, "claimed");
    assert.match(first.inviteUrl ?? "", /^http:\/\/127\.0\.0\.1:\d+\/i\//);
    const { instance } = await client.instance(first.instanceId);
    assert.equal(instance.agentName, "Ada");
    assert.equal(instance.claimSource, "client-test");
  });

  it("waits out an empty pool, as Retry-After says, until the refill is handed out; one key throughout", async () => {
    // The pool holds 1 idle instance; the replacement for it boots for 1.5 s.
    await waitFor("1 idle", async () => (await idle()) === 1, 15_000, 50);
    provider.defaults = { ...provider.defaults, bootDelayMs: 1_500 };
    const keys: string[] = [];
    const c = new PoolClient({ url: pool.url, apiKey: pool.apiKey, fetch: recordingFetch(keys) });
    const taken = await c.claim({ agentName: "Bea" });
    const before = new Set((await pool.store.listInstances("default")).map((r) => r.id));
    keys.length = 0;

    const retries: Array<{ code: string; delayMs: number }> = [];
    const got = await c.claim({ agentName: "Cy" }, { deadlineMs: 20_000, onRetry: (r) => retries.push({ code: r.error.code, delayMs: r.delayMs }) });
    provider.defaults = { ...provider.defaults, bootDelayMs: 0 };

    assert.ok(retries.length >= 1, "the pool was empty at first");
    assert.ok(
      retries.every((r) => r.code === "POOL_EMPTY"),
      JSON.stringify(retries),
    );
    // Retry-After is whole seconds (at least 1): each wait honoured it.
    assert.ok(
      retries.every((r) => r.delayMs >= 1_000),
      JSON.stringify(retries),
    );
    assert.notEqual(got.instanceId, taken.instanceId);
    assert.ok(before.has(got.instanceId), "the instance that was booting when the claim began");
    assert.equal(keys.length, retries.length + 1, "one request per try");
    assert.equal(new Set(keys).size, 1, `the same idempotency key on every try: ${keys.join(", ")}`);
  });

  it("a claim whose answer a proxy drops is retried with the same key: same agent, no second instance", async () => {
    // Free a slot (max total 3, all claimed) and wait for its replacement.
    await client.kill(first.instanceId);
    await waitFor("1 idle", async () => (await idle()) === 1, 15_000, 50);
    const proxy = await droppingProxy(pool.url);
    try {
      const before = await claimedCount();
      const retries: string[] = [];
      const c = new PoolClient({ url: proxy.url, apiKey: pool.apiKey });
      const got = await c.claim({ agentName: "Dee" }, { deadlineMs: 10_000, onRetry: (r) => retries.push(r.error.code) });

      assert.equal(proxy.dropped.length, 1, "the server handled the first try; its answer was lost");
      const lost = JSON.parse(proxy.dropped[0]!) as { instanceId: string };
      assert.deepEqual(retries, ["UNREACHABLE"]);
      assert.equal(got.instanceId, lost.instanceId, "the retry got the agent the lost answer named");
      assert.equal(proxy.claimKeys.length, 2);
      assert.equal(proxy.claimKeys[0], proxy.claimKeys[1], "same idempotency key");
      assert.equal(await claimedCount(), before + 1, "exactly one instance taken");
      assert.equal((await client.agents()).agents.filter((a) => a.agentName === "Dee").length, 1);
    } finally {
      await proxy.close();
    }
  });

  it("throws typed errors with the server's code, status and message", async () => {
    await assert.rejects(client.kill("no-such-instance"), (err) => {
      assert.ok(err instanceof PoolApiError);
      assert.equal(err.code, "INSTANCE_NOT_FOUND");
      assert.equal(err.status, 404);
      assert.equal(err.message, 'No instance "no-such-instance".');
      return true;
    });
    await assert.rejects(
      new PoolClient({ url: pool.url, apiKey: "wrong-key-wrong-key" }).status(),
      (err) => isPoolApiError(err, "UNAUTHORIZED") && err.status === 401,
    );
    await assert.rejects(client.claim({ agentName: "" }), (err) => isPoolApiError(err, "VALIDATION_FAILED") && err.status === 400);
    // Nothing listens on that port: connection refused, retried with backoff until the deadline.
    const closed = `http://127.0.0.1:${await freePort()}`;
    const t0 = performance.now();
    const retries: number[] = [];
    await assert.rejects(new PoolClient({ url: closed }).claim({}, { deadlineMs: 800, onRetry: (r) => retries.push(r.delayMs) }), (err) => {
      assert.ok(err instanceof PoolUnreachableError);
      assert.equal(err.code, "UNREACHABLE");
      assert.match(err.message, /cannot reach the pool manager at http:\/\/127\.0\.0\.1:\d+ \(.*ECONNREFUSED/);
      return true;
    });
    assert.ok(retries.length >= 1, "retried");
    assert.ok(performance.now() - t0 < 3_000, "gave up at the deadline");
  });

  it("an empty pool past the caller's deadline is thrown at once, with the server's Retry-After", async () => {
    // Three agents hold max total: nothing idle, nothing starting.
    assert.equal((await client.counts()).claimed, 3);
    const t0 = performance.now();
    await assert.rejects(client.claim({ agentName: "Fay" }, { deadlineMs: 0 }), (err) => {
      assert.ok(isPoolApiError(err, "POOL_EMPTY"));
      assert.equal(err.status, 503);
      assert.ok(err.retryAfterSeconds !== undefined && err.retryAfterSeconds >= 1, String(err.retryAfterSeconds));
      return true;
    });
    assert.ok(performance.now() - t0 < 1_000, "no wait");
  });

  it("makes every admin call", async () => {
    for (const a of (await client.agents()).agents.filter((a) => a.agentName !== "Dee")) await client.kill(a.id);
    await waitFor("1 idle", async () => (await idle()) === 1, 15_000, 50);
    const status = await client.status();
    assert.equal(status.pool, "default");
    assert.equal(status.maxTotal, 3);
    assert.ok(status.instances.length >= 1);
    assert.deepEqual(await client.counts(), status.counts);
    assert.equal((await client.summary()).minIdle, 1);
    const agents = (await client.agents()).agents;
    assert.ok(agents.some((a) => a.agentName === "Dee"));
    const dee = agents.find((a) => a.agentName === "Dee")!;
    const detail = await client.instance(dee.id);
    assert.equal(detail.instance.status, "claimed");
    assert.ok(detail.events.length >= 3);
    const drained = await client.drain(1);
    assert.equal(drained.drained.length, 1);
    const added = await client.add(1);
    assert.equal(added.created?.length, 1);
    const pass = await client.reconcile();
    assert.equal(typeof pass.durationMs, "number");
    const viaReplenish = await client.replenish();
    assert.ok(viaReplenish.result, "replenish without a count runs a pass");
    await assert.rejects(client.dismiss(dee.id), (err) => isPoolApiError(err, "INVALID_TRANSITION") && err.status === 409);
    const killed = await client.kill(dee.id);
    assert.deepEqual(killed, { ok: true, id: dee.id, status: "dead" });
    const v = await new PoolClient({ url: pool.url }).version();
    assert.match(v.version, /^\d+\.\d+\.\d+/);
  });
});
