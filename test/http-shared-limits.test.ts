/**
 * Rate limits across replicas: two servers (`buildServer` twice, each with its own store and
 * connection pool, as two replicas are) on ONE real Postgres database, behind a proxy
 * (TRUST_PROXY=1, clients told apart by X-Forwarded-For). Mutation limits and the sign-in
 * throttle are shared (hits on one replica count on the other), kept per client, and a successful
 * sign-in clears that client's failures. Before, each replica counted in its own memory: N
 * replicas gave every client N times its budget.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { startTestPostgres, type TestPostgres } from "./support/postgres.ts";
import { startTestServer, type TestServer } from "./support/http-server.ts";

describe("rate limits shared by replicas on one Postgres", () => {
  let pg: TestPostgres;
  const stores: Store[] = [];
  const servers: TestServer[] = [];

  before(async () => {
    pg = await startTestPostgres();
    for (const holder of ["replica-a", "replica-b"]) {
      const store = await openStore({ databaseUrl: pg.url });
      stores.push(store);
      servers.push(await startTestServer({ store, holder, trustProxy: 1, mutationRateLimit: 3, loginAttemptsPerMinute: 3 }));
    }
  });
  after(async () => {
    for (const s of servers) await s.close();
    for (const s of stores) await s.close();
    await pg?.stop();
  });

  /** A mutating request (a kill of an unknown instance: 404, but counted) from a client behind the proxy. */
  const mutate = (server: TestServer, client: string, key: string | null = server.apiKey) =>
    server.app.inject({
      method: "DELETE",
      url: "/api/pool/instances/i-nope",
      headers: { "x-forwarded-for": client, ...(key ? { authorization: `Bearer ${key}` } : {}) },
      remoteAddress: "10.0.0.2", // the proxy
    });

  const signIn = (server: TestServer, client: string, password: string) =>
    server.app.inject({
      method: "POST",
      url: "/login",
      payload: `password=${encodeURIComponent(password)}`,
      headers: { "content-type": "application/x-www-form-urlencoded", "x-forwarded-for": client },
      remoteAddress: "10.0.0.2",
    });

  it("counts a client's mutations on every replica together, and each client apart", async () => {
    const [a, b] = servers as [TestServer, TestServer];
    const alice = "203.0.113.1";
    const seen: Array<[number, string]> = [];
    for (const s of [a, b, a]) {
      const r = await mutate(s, alice);
      seen.push([r.statusCode, String(r.headers["x-ratelimit-remaining"])]);
    }
    assert.deepEqual(
      seen,
      [
        [404, "2"],
        [404, "1"],
        [404, "0"],
      ],
      "one budget across both replicas",
    );
    for (const s of [b, a]) {
      const r = await mutate(s, alice);
      assert.equal(r.statusCode, 429, r.body);
      assert.equal(r.json().code, "RATE_LIMITED");
      assert.ok(Number(r.headers["retry-after"]) >= 1 && Number(r.headers["retry-after"]) <= 60, String(r.headers["retry-after"]));
    }
    // Another client behind the same proxy has its own budget, on either replica.
    assert.equal((await mutate(b, "203.0.113.2")).statusCode, 404);
    // Without the key: 401 before any counting.
    assert.equal((await mutate(a, "203.0.113.3", null)).statusCode, 401);
    assert.equal((await mutate(a, "203.0.113.3")).headers["x-ratelimit-remaining"], "2", "the 401 did not count");
  });

  it("throttles a client's failed sign-ins across replicas; other clients can still sign in", async () => {
    const [a, b] = servers as [TestServer, TestServer];
    const carol = "198.51.100.7";
    for (const s of [a, b, a]) assert.equal((await signIn(s, carol, "guess")).statusCode, 401);
    const locked = await signIn(b, carol, a.apiKey);
    assert.equal(locked.statusCode, 429, "locked out on the other replica, even with the right password");
    assert.match(locked.body, /Too many failed sign-ins/);
    assert.ok(Number(locked.headers["retry-after"]) >= 1);
    assert.equal((await signIn(b, "198.51.100.8", b.apiKey)).statusCode, 303, "another operator behind the same proxy signs in");
  });

  it("clears a client's failures when it signs in", async () => {
    const [a, b] = servers as [TestServer, TestServer];
    const dave = "192.0.2.44";
    assert.equal((await signIn(a, dave, "typo-1")).statusCode, 401);
    assert.equal((await signIn(a, dave, "typo-2")).statusCode, 401);
    assert.equal((await signIn(b, dave, b.apiKey)).statusCode, 303);
    // Without the clear, the next failure would be the fourth attempt in the window: 429.
    for (let i = 0; i < 3; i++) assert.equal((await signIn(a, dave, `typo-${i}`)).statusCode, 401, `failure ${i + 1} after the sign-in`);
    assert.equal((await signIn(b, dave, "typo-x")).statusCode, 429);
  });
});
