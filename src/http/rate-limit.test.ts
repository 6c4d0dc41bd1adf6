import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { FastifyReply, FastifyRequest } from "fastify";
import { openStore } from "../db/open.ts";
import type { Store } from "../db/store.ts";
import { PoolError } from "../errors.ts";
import { silentLogger } from "../logger.ts";
import { LoginThrottle, counterKey, mutationLimit, secondsUntil } from "./rate-limit.ts";

describe("counterKey", () => {
  it("is a fixed-length ASCII key whatever the parts hold, distinct per scope and parts", () => {
    const keys = [
      counterKey("api", "1.2.3.4|tag"),
      counterKey("api", "1.2.3.4|anon"),
      counterKey("login", "1.2.3.4|tag"),
      counterKey("api", "a\u0000\ud800|tag"),
    ];
    assert.equal(new Set(keys).size, keys.length);
    for (const k of keys) assert.match(k, /^(api|login):[A-Za-z0-9_-]{32}$/);
    assert.equal(counterKey("api", "x"), counterKey("api", "x"));
  });
});

describe("secondsUntil", () => {
  const now = 1_700_000_000_000;
  const cases: Array<[string, number, number]> = [
    ["30.2 s ahead", 30_200, 31],
    ["exactly now", 0, 1],
    ["in the past (skewed clock)", -5_000, 1],
    ["beyond the window (skewed clock)", 600_000, 60],
  ];
  for (const [name, ahead, want] of cases) it(name, () => assert.equal(secondsUntil(new Date(now + ahead), now, 60_000), want));
});

describe("shared counters on a real store", () => {
  let store: Store;
  before(async () => {
    store = await openStore({ dataDir: null });
  });
  after(async () => store.close());

  function fakeReply() {
    const headers: Record<string, string> = {};
    return {
      headers,
      reply: {
        header: (k: string, v: string) => {
          headers[k] = v;
        },
      } as unknown as FastifyReply,
    };
  }

  it("mutationLimit: the (max+1)th hit of a client is 429 RATE_LIMITED with Retry-After; other clients have their own count", async () => {
    const hook = mutationLimit({ store, max: 3, windowMs: 60_000, clientOf: (req) => req.ip, logger: silentLogger });
    const from = (ip: string) => ({ ip }) as FastifyRequest;
    for (let i = 1; i <= 3; i++) {
      const r = fakeReply();
      await hook(from("10.0.0.1"), r.reply);
      assert.equal(r.headers["x-ratelimit-remaining"], String(3 - i));
      assert.equal(r.headers["x-ratelimit-limit"], "3");
    }
    const r = fakeReply();
    await assert.rejects(hook(from("10.0.0.1"), r.reply), (err: unknown) => err instanceof PoolError && err.code === "RATE_LIMITED" && err.status === 429);
    assert.ok(Number(r.headers["retry-after"]) >= 1 && Number(r.headers["retry-after"]) <= 60);
    await hook(from("10.0.0.2"), fakeReply().reply);
  });

  it("LoginThrottle: max attempts pass, the next waits; a success clears the address", async () => {
    const t = new LoginThrottle({ store, max: 2, windowMs: 60_000, logger: silentLogger });
    assert.equal(await t.attempt("192.0.2.1"), 0);
    assert.equal(await t.attempt("192.0.2.1"), 0);
    const wait = await t.attempt("192.0.2.1");
    assert.ok(wait >= 1 && wait <= 60, String(wait));
    assert.equal(await t.attempt("192.0.2.9"), 0, "another address");
    await t.succeeded("192.0.2.1");
    assert.equal(await t.attempt("192.0.2.1"), 0, "cleared");
  });

  it("refuses (503 NOT_READY) rather than letting requests through unlimited when the counter store fails", async () => {
    const broken = {
      hitRateLimit: async () => {
        throw new Error("connection refused");
      },
      clearRateLimit: async () => undefined,
    };
    const hook = mutationLimit({ store: broken, max: 3, windowMs: 60_000, clientOf: () => "x", logger: silentLogger });
    await assert.rejects(hook({ ip: "x" } as FastifyRequest, fakeReply().reply), (err: unknown) => err instanceof PoolError && err.code === "NOT_READY");
    const t = new LoginThrottle({ store: broken, max: 2, windowMs: 60_000, logger: silentLogger });
    await assert.rejects(t.attempt("x"), (err: unknown) => err instanceof PoolError && err.code === "NOT_READY");
  });
});
