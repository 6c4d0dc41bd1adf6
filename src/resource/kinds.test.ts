/**
 * The resource-kind contract, run against the OpenRouter kind (through the loopback stand-in of
 * OpenRouter's key-management API) and the in-memory kind; then what is particular to OpenRouter:
 * the real request shapes, pagination, and failing the way the real API fails.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { OpenRouterStandin } from "../../test/support/openrouter-standin.ts";
import { ManualClock } from "../clock.ts";
import { nameEnvironment, parseResourceName, resourceName, type ResourceKind } from "./kind.ts";
import { MemoryKind } from "./memory.ts";
import { type OpenRouterError, OpenRouterKind } from "./openrouter.ts";

const PROVISIONING = "sk-or-v1-provisioning-0123456789abcdef0123456789abcdef";
let n = 0;
const target = () => {
  const instanceId = `i-k${String(++n).padStart(4, "0")}`;
  return { resourceId: `r-${n}`, instanceId, poolId: "default", name: resourceName({ ownerId: "own01", poolId: "default", environment: "test", instanceId }) };
};

interface Harness {
  kind: ResourceKind;
  /** The secret the vendor holds for a ref, to check what the instance was given. */
  secretOf(ref: string): string | undefined;
  spend(ref: string, usd: number): void;
  close(): Promise<void>;
}

function contract(name: string, open: () => Promise<Harness>) {
  describe(`resource kind contract: ${name}`, () => {
    let h: Harness;
    before(async () => {
      h = await open();
    });
    after(async () => h?.close());

    it("create gives a ref and the instance's environment; the listing shows it under its name", async () => {
      const t = target();
      const made = await h.kind.create(t);
      assert.ok(made.ref);
      const secrets = Object.values(made.env);
      assert.equal(secrets.length, 1);
      assert.equal(secrets[0], h.secretOf(made.ref), "the env carries the vendor's secret for this resource");
      const listing = await h.kind.list();
      assert.equal(listing.complete, true);
      const entry = listing.resources.find((r) => r.ref === made.ref);
      assert.equal(entry?.name, t.name);
      assert.ok(entry && entry.createdAt instanceof Date && !Number.isNaN(entry.createdAt.getTime()));
      assert.ok(!JSON.stringify(listing).includes(secrets[0]!), "a listing never carries a secret");
    });

    it("usage and setLimit report spend and the limit", async () => {
      const made = await h.kind.create(target());
      h.spend(made.ref, 1.5);
      const u = await h.kind.usage!(made.ref);
      assert.equal(u.usage, 1.5);
      assert.equal(u.remaining, (u.limit ?? 0) - 1.5);
      const raised = await h.kind.setLimit!(made.ref, 40);
      assert.deepEqual(raised, { limit: 40, usage: 1.5, remaining: 38.5 });
    });

    it("delete removes it, and deleting what is already gone succeeds", async () => {
      const made = await h.kind.create(target());
      await h.kind.delete(made.ref);
      assert.ok(!(await h.kind.list()).resources.some((r) => r.ref === made.ref));
      await h.kind.delete(made.ref);
    });

    it("lists many resources in one complete listing", async () => {
      const refs = new Set<string>();
      for (let i = 0; i < 230; i++) refs.add((await h.kind.create(target())).ref);
      const listing = await h.kind.list();
      assert.equal(listing.complete, true);
      const seen = new Set(listing.resources.map((r) => r.ref));
      for (const ref of refs) assert.ok(seen.has(ref), `${ref} listed`);
    });
  });
}

contract("OpenRouter (stand-in)", async () => {
  const standin = await new OpenRouterStandin({ provisioningKey: PROVISIONING }).start();
  const kind = new OpenRouterKind({ apiUrl: standin.apiUrl, provisioningKey: PROVISIONING, keyLimit: 20, maxLimit: 100 });
  return {
    kind,
    secretOf: (ref) => standin.keys.get(ref)?.key,
    spend: (ref, usd) => standin.spend(ref, usd),
    close: () => standin.close(),
  };
});

contract("in-memory", async () => {
  const kind = new MemoryKind();
  return { kind, secretOf: (ref) => kind.secretOf(ref), spend: (ref, usd) => kind.spend(ref, usd), close: async () => {} };
});

describe("resource names", () => {
  it("carry the owner id, pool, environment and instance id, and parse back", () => {
    const name = resourceName({ ownerId: "ab12c", poolId: "pool-1", environment: "production", instanceId: "i-0abc123def45" });
    assert.equal(name, "agent-pool:ab12c:pool-1:production:i-0abc123def45");
    assert.deepEqual(parseResourceName(name), { ownerId: "ab12c", poolId: "pool-1", environment: "production", instanceId: "i-0abc123def45" });
  });

  it("make any environment safe, and refuse names that are not ours", () => {
    assert.equal(nameEnvironment("my env: prod/1"), "my-env-prod-1");
    assert.equal(nameEnvironment("   "), "-");
    const name = resourceName({ ownerId: "ab12c", poolId: "p", environment: "a:b", instanceId: "i-1" });
    assert.equal(parseResourceName(name)?.environment, "a-b");
    for (const other of [
      "assistant-production-i-1",
      "agent-pool:AB12C:p:e:i-1",
      "agent-pool:ab12c:p:e:",
      "agent-pool:ab12c:p:e:i-1:extra",
      "x agent-pool:ab12c:p:e:i-1",
    ]) {
      assert.equal(parseResourceName(other), null, other);
    }
  });
});

describe("OpenRouter kind against the stand-in", () => {
  let standin: OpenRouterStandin;
  let kind: OpenRouterKind;
  const clock = new ManualClock(Date.UTC(2026, 0, 1));
  before(async () => {
    standin = await new OpenRouterStandin({ provisioningKey: PROVISIONING, clock }).start();
    kind = new OpenRouterKind({ apiUrl: standin.apiUrl, provisioningKey: PROVISIONING, keyLimit: 20, maxLimit: 100, requestTimeoutMs: 5_000 });
  });
  after(async () => standin?.close());

  it("sends the real request shapes with the provisioning key, and the new key's limit from config", async () => {
    const t = target();
    const before = standin.requests.length;
    const made = await kind.create(t);
    const [create] = standin.requests.slice(before);
    assert.deepEqual([create?.method, create?.path, create?.authorized, create?.status], ["POST", "/api/v1/keys", true, 201]);
    assert.deepEqual(create?.body, { name: t.name, limit: 20 });
    assert.deepEqual([made.limit, made.usage, Object.keys(made.env)], [20, 0, ["OPENROUTER_API_KEY"]]);
    assert.match(made.env.OPENROUTER_API_KEY!, /^sk-or-v1-[0-9a-f]{64}$/);
    await kind.list();
    assert.match(standin.requests.at(-1)!.path, /^\/api\/v1\/keys\?include_disabled=true&offset=0$/);
    await kind.setLimit(made.ref, 30);
    assert.deepEqual([standin.requests.at(-1)?.method, standin.requests.at(-1)?.body], ["PATCH", { limit: 30 }]);
    await kind.delete(made.ref);
    assert.deepEqual(
      [standin.requests.at(-1)?.method, standin.requests.at(-1)?.path, standin.requests.at(-1)?.status],
      ["DELETE", `/api/v1/keys/${made.ref}`, 200],
    );
  });

  it("pages through the listing 100 keys at a time, disabled keys included", async () => {
    const disabled = await kind.create(target());
    standin.keys.get(disabled.ref)!.disabled = true;
    for (let i = 0; i < 150; i++) await kind.create(target());
    const before = standin.requests.length;
    const listing = await kind.list();
    const pages = standin.requests.slice(before).map((r) => r.path);
    assert.equal(pages.length, Math.ceil(standin.keys.size / 100) + (standin.keys.size % 100 === 0 ? 1 : 0));
    assert.equal(listing.resources.length, standin.keys.size);
    assert.ok(
      listing.resources.some((r) => r.ref === disabled.ref),
      "a disabled key is listed (and so collected)",
    );
  });

  it("a listing that fails on any page throws: never a part taken for the whole", async () => {
    while (standin.keys.size <= 100) await kind.create(target());
    standin.failNext("list", 502, 1);
    await assert.rejects(kind.list(), (err: OpenRouterError) => err.status === 502);
    // The first page answers, the second fails.
    let calls = 0;
    const flaky = new OpenRouterKind({
      apiUrl: standin.apiUrl,
      provisioningKey: PROVISIONING,
      keyLimit: 20,
      maxLimit: 100,
      fetch: async (url, init) =>
        ++calls === 2 ? new Response(JSON.stringify({ error: { code: 503, message: "Service Unavailable" } }), { status: 503 }) : fetch(url, init),
    });
    await assert.rejects(flaky.list(), /openrouter list: answered 503: Service Unavailable/);
    // More pages than it may read: incomplete, not complete.
    const capped = new OpenRouterKind({ apiUrl: standin.apiUrl, provisioningKey: PROVISIONING, keyLimit: 20, maxLimit: 100, maxPages: 1 });
    assert.equal((await capped.list()).complete, false);
  });

  it("an entry it cannot read makes the listing incomplete", async () => {
    const odd = new OpenRouterKind({
      apiUrl: standin.apiUrl,
      provisioningKey: PROVISIONING,
      keyLimit: 20,
      maxLimit: 100,
      fetch: async () =>
        new Response(JSON.stringify({ data: [{ hash: "h", name: "agent-pool:own01:default:test:i-1", created_at: "not a date" }] }), { status: 200 }),
    });
    assert.deepEqual(await odd.list(), { resources: [], complete: false });
  });

  it("fails the way OpenRouter fails: 401, 429 with Retry-After, 5xx, 400; never naming the provisioning key", async () => {
    const wrong = new OpenRouterKind({ apiUrl: standin.apiUrl, provisioningKey: "sk-or-v1-wrong", keyLimit: 20, maxLimit: 100 });
    await assert.rejects(wrong.create(target()), (err: OpenRouterError) => err.status === 401 && /provisioning key was refused/.test(err.message));
    standin.failNext("create", 429);
    await assert.rejects(kind.create(target()), (err: OpenRouterError) => err.status === 429 && err.retryAfterSeconds === 1);
    standin.failNext("delete", 500);
    await assert.rejects(kind.delete("whatever"), (err: OpenRouterError) => err.status === 500);
    standin.failNext("get", 503);
    await assert.rejects(kind.usage("whatever"), (err: OpenRouterError) => err.status === 503);
    await assert.rejects(kind.create({ ...target(), name: "" }), (err: OpenRouterError) => err.status === 400);
    await assert.rejects(kind.usage("no-such-hash"), (err: OpenRouterError) => err.status === 404);
    const unreachable = new OpenRouterKind({ apiUrl: "http://127.0.0.1:1/api/v1", provisioningKey: PROVISIONING, keyLimit: 20, maxLimit: 100 });
    await assert.rejects(unreachable.list(), (err: OpenRouterError) => err.status === null && /unreachable/.test(err.message));
    for (const r of standin.requests) assert.ok(!JSON.stringify(r).includes(PROVISIONING));
  });

  it("a create that made the key but lost the answer throws, and the key is in the next listing under our name", async () => {
    const t = target();
    standin.createThenFail = 1;
    await assert.rejects(kind.create(t), (err: OpenRouterError) => err.status === 500);
    const listed = (await kind.list()).resources.filter((r) => r.name === t.name);
    assert.equal(listed.length, 1, "the reconciler can find it by name");
  });

  it("setLimit refuses a limit above the maximum before asking", async () => {
    const made = await kind.create(target());
    const before = standin.requests.length;
    await assert.rejects(kind.setLimit(made.ref, 100.01), RangeError);
    assert.equal(standin.requests.length, before);
  });
});
