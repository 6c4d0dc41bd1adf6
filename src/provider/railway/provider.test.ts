import { afterEach, beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { ManualClock } from "../../clock.ts";
import { PoolError } from "../../errors.ts";
import type { CreateInstanceSpec } from "../provider.ts";
import { RailwayProvider, ownPrefixFor, type RailwayOptions } from "./provider.ts";
import { FakeRailway } from "./testkit.ts";

let fake: FakeRailway;
let url = "";
const providers: RailwayProvider[] = [];

beforeEach(async () => {
  fake = new FakeRailway();
  url = await fake.start();
});
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close()));
  await fake.stop();
});

const ENV = (p: string) => `${p}-env-prod`;

function projects(n: number): string[] {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `proj-${i}`;
    fake.addProject(id, [{ id: `${id}-env-staging`, name: "staging" }, { id: ENV(id), name: "production" }]);
    ids.push(id);
  }
  return ids;
}

async function open(extra: Partial<RailwayOptions> = {}, sleeps: number[] = []): Promise<RailwayProvider> {
  const p = await RailwayProvider.open({
    apiUrl: url,
    apiToken: "tok",
    projectIds: ["proj-0"],
    poolId: "default",
    image: "ghcr.io/acme/agent:1",
    urlScheme: "http",
    sleep: async (ms) => void sleeps.push(ms),
    random: () => 0,
    ...extra,
  });
  providers.push(p);
  return p;
}

let seq = 0;
function spec(extra: Partial<CreateInstanceSpec> = {}): CreateInstanceSpec {
  const instanceId = `i-${(++seq).toString(36).padStart(6, "0")}`;
  return { instanceId, poolId: "default", name: `ap-default-${instanceId}`, gatewayToken: `gw-${instanceId}`, ownerId: "own01", env: { XMTP_ENV: "dev" }, ...extra };
}

async function rejects(p: Promise<unknown>, check: (e: PoolError & { failure?: string }) => void): Promise<void> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof PoolError, String(err));
    check(err as PoolError & { failure?: string });
    return;
  }
  assert.fail("expected a rejection");
}

test("open() resolves the production environment of every project in one request", async () => {
  const ids = projects(3);
  const p = await open({ projectIds: ids });
  assert.equal(fake.count("ResolveEnvironments"), 1);
  assert.deepEqual(p.projects.map((x) => x.environmentId), ids.map(ENV));
});

test("open() with an environmentId and one project sends nothing; a missing environment is a config error", async () => {
  projects(1);
  await open({ environmentId: ENV("proj-0") });
  assert.equal(fake.requests.length, 0);
  await rejects(open({ environmentName: "qa" }), (e) => assert.equal(e.code, "CONFIG_INVALID"));
});

test("open() with a project token reads its scope", async () => {
  projects(1);
  const p = await open({ apiToken: undefined, projectToken: "ptok" } as Partial<RailwayOptions>);
  assert.equal(fake.count("ProjectTokenScope"), 1);
  assert.equal(fake.requests[0]!.headers["project-access-token"], "ptok");
  assert.equal(p.projects[0]!.environmentId, "proj-0-env-staging"); // the fake scopes tokens to the first env
});

for (const n of [1, 5]) {
  test(`list() is exactly one request with ${n} project(s) and many instances`, async () => {
    const ids = projects(n);
    for (const id of ids) for (let i = 0; i < 40; i++) fake.addService(id, `ap-default-i-${id.slice(5)}x${i}`, [{ environmentId: ENV(id), status: "SUCCESS", domain: `d${i}.example` }]);
    const p = await open({ projectIds: ids });
    const before = fake.requests.length;
    const l = await p.list();
    assert.equal(fake.requests.length - before, 1);
    assert.equal(fake.requests.at(-1)!.operation, "PoolList");
    assert.equal(l.complete, true);
    assert.equal(l.instances.length, 40 * n);
    await p.list();
    assert.equal(fake.requests.length - before, 2);
  });
}

test("list() fetches follow-up pages only past the page size", async () => {
  const ids = projects(2);
  fake.pageSize = 10;
  for (let i = 0; i < 10; i++) fake.addService("proj-0", `ap-default-i-a${i}`, [{ environmentId: ENV("proj-0") }]);
  const p = await open({ projectIds: ids });
  let before = fake.requests.length;
  let l = await p.list();
  assert.equal(fake.requests.length - before, 1, "exactly a page: no follow-up");
  assert.equal(l.instances.length, 10);
  for (let i = 0; i < 15; i++) fake.addService("proj-1", `ap-default-i-b${i}`, [{ environmentId: ENV("proj-1") }]);
  fake.addService("proj-0", "ap-default-i-a10", [{ environmentId: ENV("proj-0") }]);
  before = fake.requests.length;
  l = await p.list();
  assert.equal(fake.requests.length - before, 2, "one page request covers both projects");
  assert.equal(fake.count("PoolListPage"), 1);
  assert.equal(l.complete, true);
  assert.equal(l.instances.length, 26);
});

test("list() keeps only our prefix and our environment, with the status and domain of our environment", async () => {
  projects(1);
  const env = ENV("proj-0");
  const ours = fake.addService("proj-0", "ap-default-i-aaa111", [
    { environmentId: "proj-0-env-staging", status: "CRASHED", domain: "staging.example", image: "img:staging" },
    { environmentId: env, status: "SUCCESS", domain: "ours.example", image: "img:1" },
  ]);
  const renamed = fake.addService("proj-0", "ap-default-i-bbb222--claimed", [{ environmentId: env, status: "BUILDING" }]);
  fake.addService("proj-0", "ap-default-i-ccc333", [{ environmentId: "proj-0-env-staging", status: "SUCCESS" }]); // other env only
  fake.addService("proj-0", "ap-default-2-i-ddd444", [{ environmentId: env, status: "SUCCESS" }]); // pool "default-2"
  fake.addService("proj-0", "ap-other-i-eee555", [{ environmentId: env, status: "SUCCESS" }]);
  fake.addService("proj-0", "postgres", [{ environmentId: env, status: "SUCCESS" }]);
  const p = await open();
  const l = await p.list();
  assert.equal(l.complete, true);
  assert.deepEqual(l.instances.map((i) => i.ref).sort(), [ours.id, renamed.id].sort());
  const a = l.instances.find((i) => i.ref === ours.id)!;
  assert.equal(a.instanceId, "i-aaa111");
  assert.equal(a.deployStatus, "SUCCESS");
  assert.equal(a.url, "http://ours.example");
  assert.equal(a.image, "img:1");
  assert.equal(a.createdAt.toISOString(), ours.createdAt);
  const b = l.instances.find((i) => i.ref === renamed.id)!;
  assert.equal(b.instanceId, "i-bbb222");
  assert.equal(b.deployStatus, "BUILDING");
  assert.equal(b.url, null);
});

test("a failed listing throws and a partial one is never complete", async () => {
  const ids = projects(3);
  fake.addService("proj-0", "ap-default-i-aaa111", [{ environmentId: ENV("proj-0"), status: "SUCCESS" }]);
  fake.addService("proj-2", "ap-default-i-ccc333", [{ environmentId: ENV("proj-2"), status: "SUCCESS" }]);
  const p = await open({ projectIds: ids });
  const outcomes: Array<[string, object | string]> = [
    ["non_json", { status: 502, body: "<html>502 Bad Gateway</html>" }],
    ["http_5xx", { status: 500, body: { errors: [{ message: "boom" }] } }],
    ["graphql_error", { body: { data: null, errors: [{ message: "Problem processing request" }] } }],
    ["auth", { status: 401, body: { errors: [{ message: "Unauthorized" }] } }],
    ["validation", { status: 400, body: { errors: [{ message: 'Cannot query field "serviceDomains" on type "ServiceInstance".' }] } }],
    ["rate_limited", { status: 429, headers: { "retry-after": "3600" }, body: { data: null } }],
  ];
  for (const [kind, reply] of outcomes) {
    fake.hook = (r) => (r.operation === "PoolList" ? (reply as never) : undefined);
    await rejects(p.list(), (e) => {
      assert.equal(e.code, "PROVIDER_ERROR");
      assert.equal(e.failure, kind);
    });
  }
  fake.hook = null;
});

test("a timed-out listing throws", async () => {
  projects(1);
  const p = await open({ requestTimeoutMs: 100 });
  fake.hook = (r) => (r.operation === "PoolList" ? { delayMs: 500, body: { data: {} } } : undefined);
  await rejects(p.list(), (e) => assert.equal(e.failure, "timeout"));
});

test("errors beside data make the listing incomplete", async () => {
  projects(1);
  fake.addService("proj-0", "ap-default-i-aaa111", [{ environmentId: ENV("proj-0"), status: "SUCCESS" }]);
  const p = await open();
  fake.hook = (r) =>
    r.operation === "PoolList"
      ? { body: { data: { p0: { id: "proj-0", services: { edges: [], pageInfo: { hasNextPage: false } } } }, errors: [{ message: "Problem processing request", path: ["p0", "services", "edges", 0, "node", "serviceInstances"] }] } }
      : undefined;
  const l = await p.list();
  assert.equal(l.complete, false);
  fake.hook = (r) => (r.operation === "PoolList" ? { body: { data: { p0: null } } } : undefined);
  assert.equal((await p.list()).complete, false, "an unreadable project is never an empty complete listing");
});

test("an unreadable project leaves the others listed, as incomplete; all unreadable throws", async () => {
  const ids = projects(3);
  fake.addService("proj-0", "ap-default-i-aaa111", [{ environmentId: ENV("proj-0"), status: "SUCCESS" }]);
  fake.addService("proj-2", "ap-default-i-ccc333", [{ environmentId: ENV("proj-2"), status: "SUCCESS" }]);
  const p = await open({ projectIds: ids });
  fake.projects.delete("proj-1");
  const before = fake.requests.length;
  const l = await p.list();
  assert.equal(l.complete, false);
  assert.deepEqual(l.instances.map((i) => i.instanceId).sort(), ["i-aaa111", "i-ccc333"]);
  assert.equal(fake.requests.length - before, 2);
  fake.projects.clear();
  await rejects(p.list(), (e) => assert.equal(e.failure, "auth"));
});

test("create sends image and every variable inline, then a domain; returns the instance", async () => {
  projects(1);
  const p = await open({ instancePort: 9090 });
  const s = spec({ env: { XMTP_ENV: "dev", OPENAI_KEY: "k", PORT: "1", GATEWAY_TOKEN: "operator-cannot-override" } });
  const inst = await p.create(s);
  const create = fake.requests.find((r) => r.operation === "ServiceCreate")!;
  assert.deepEqual(create.variables.input, {
    projectId: "proj-0",
    environmentId: ENV("proj-0"),
    name: `ap-default-${s.instanceId}`,
    source: { image: "ghcr.io/acme/agent:1" },
    variables: { XMTP_ENV: "dev", OPENAI_KEY: "k", PORT: "9090", GATEWAY_TOKEN: s.gatewayToken, INSTANCE_ID: s.instanceId },
  });
  const domain = fake.requests.find((r) => r.operation === "ServiceDomainCreate")!;
  assert.deepEqual(domain.variables.input, { serviceId: inst.ref, environmentId: ENV("proj-0"), targetPort: 9090 });
  assert.equal(inst.instanceId, s.instanceId);
  assert.equal(inst.url, `http://ap-default-${s.instanceId}.up.railway.test`);
  assert.equal(inst.image, "ghcr.io/acme/agent:1");
  assert.equal(fake.count("ServiceCreate") + fake.count("ServiceDomainCreate"), 2);
  const l = await p.list();
  assert.deepEqual(l.instances.map((i) => i.ref), [inst.ref]);
  assert.equal(l.instances[0]!.deployStatus, "QUEUED");
  assert.ok(!fake.requests.some((r) => r.operation === "ServiceCreate" && JSON.stringify(r.variables).includes("undefined")));
});

test("create deletes the service when the domain call fails, and throws", async () => {
  projects(1);
  const p = await open();
  fake.hook = (r) => (r.operation === "ServiceDomainCreate" ? { status: 500, body: { errors: [{ message: "domain backend down" }] } } : undefined);
  await rejects(p.create(spec()), (e) => assert.equal(e.code, "PROVIDER_ERROR"));
  assert.equal(fake.count("ServiceDelete"), 1);
  assert.equal(fake.projects.get("proj-0")!.services.length, 0);
});

test("create removes a service whose create answer was lost (timeout)", async () => {
  projects(1);
  const p = await open({ requestTimeoutMs: 200 });
  await p.list();
  let first = true;
  fake.hook = (r) => {
    if (r.operation !== "ServiceCreate" || !first) return undefined;
    first = false;
    // Do the create, but answer too late.
    const input = r.variables.input as { projectId: string; environmentId: string; name: string };
    fake.addService(input.projectId, input.name, [{ environmentId: input.environmentId }]);
    return { delayMs: 1_000, body: { data: null } };
  };
  await rejects(p.create(spec()), (e) => assert.equal(e.failure, "timeout"));
  assert.equal(fake.count("ProjectServiceNames"), 1);
  assert.equal(fake.projects.get("proj-0")!.services.length, 0);
});

test("a full project sends creates to the next one; with no room and no workspace, create fails", async () => {
  const ids = projects(2);
  for (let i = 0; i < 100; i++) fake.addService("proj-0", `other-${i}`, [{ environmentId: ENV("proj-0") }]);
  for (let i = 0; i < 99; i++) fake.addService("proj-1", `other-${i}`, [{ environmentId: ENV("proj-1") }]);
  const p = await open({ projectIds: ids });
  const inst = await p.create(spec());
  assert.equal(fake.findService(inst.ref)!.projectId, "proj-1");
  assert.equal(fake.count("PoolList"), 1, "counts came from one listing");
  await rejects(p.create(spec()), (e) => {
    assert.equal(e.code, "PROVIDER_ERROR");
    assert.match(e.message, /full/);
  });
  assert.equal(fake.count("ServiceCreate"), 1);
});

test("when Railway says a project is full, create retries in another project", async () => {
  const ids = projects(2);
  const p = await open({ projectIds: ids });
  await p.list();
  for (let i = 0; i < 100; i++) fake.addService("proj-0", `other-${i}`, [{ environmentId: ENV("proj-0") }]); // added behind our back
  const inst = await p.create(spec());
  assert.equal(fake.findService(inst.ref)!.projectId, "proj-1");
  assert.equal(fake.count("ServiceCreate"), 2);
});

test("every project full + workspaceId: one project is created (waiting out the throttle) and used", async () => {
  projects(1);
  for (let i = 0; i < 100; i++) fake.addService("proj-0", `other-${i}`, [{ environmentId: ENV("proj-0") }]);
  const sleeps: number[] = [];
  const created: string[] = [];
  const p = await open({ workspaceId: "ws-1", projectCreateIntervalMs: 30_000, onProjectCreated: (x) => void created.push(x.id) }, sleeps);
  let throttle = 1;
  fake.hook = (r) => (r.operation === "ProjectCreate" && throttle-- > 0 ? { body: { data: null, errors: [{ message: "Only one project can be created per user" }] } } : undefined);
  const results = await Promise.all([p.create(spec()), p.create(spec()), p.create(spec())]);
  assert.equal(fake.count("ProjectCreate"), 2, "one throttled attempt, then one project for all three creates");
  assert.equal(created.length, 1);
  assert.ok(sleeps.some((s) => s > 25_000 && s <= 30_000), `waited ${JSON.stringify(sleeps)}`);
  const newProject = fake.projects.get(created[0]!)!;
  assert.equal(newProject.services.length, 3);
  assert.ok(newProject.name.startsWith("ap-default-") && newProject.name.length <= 32);
  assert.ok(results.every((r) => fake.findService(r.ref)!.projectId === created[0]));
  const l = await p.list();
  assert.equal(l.instances.length, 3);
});

test("open() with a workspace adopts the projects this pool created earlier", async () => {
  projects(1);
  fake.addProject("proj-old");
  fake.projects.get("proj-old")!.name = "ap-default-abc123";
  fake.addProject("proj-foreign");
  const p = await open({ workspaceId: "ws-1" });
  assert.deepEqual(p.projects.map((x) => x.id).sort(), ["proj-0", "proj-old"]);
  assert.equal(fake.count("ResolveEnvironments"), 1);
});

test("delete: gone counts as success; a service live in another environment loses only our instance", async () => {
  projects(1);
  const shared = fake.addService("proj-0", "ap-default-i-aaa111", [{ environmentId: "proj-0-env-staging", status: "SUCCESS", image: "x" }, { environmentId: ENV("proj-0"), status: "SUCCESS", image: "x" }]);
  const mine = fake.addService("proj-0", "ap-default-i-bbb222", [{ environmentId: "proj-0-env-staging" }, { environmentId: ENV("proj-0"), status: "SUCCESS", image: "x" }]);
  const p = await open();
  await p.list();
  await p.delete(shared.id);
  assert.equal(fake.requests.at(-1)!.operation, "ServiceDeleteInEnvironment");
  assert.deepEqual(fake.findService(shared.id)!.instances.map((i) => i.environmentId), ["proj-0-env-staging"]);
  await p.delete(mine.id);
  assert.equal(fake.requests.at(-1)!.operation, "ServiceDelete", "an empty instance elsewhere does not keep the service");
  assert.equal(fake.findService(mine.id), undefined);
  await p.delete("svc-does-not-exist");
  assert.equal(p.stats.serviceDelete!.not_found, 1);
});

test("'Not Authorized' for a stale id is 'gone' while the token still reads our project, else an auth failure", async () => {
  projects(1);
  const p = await open();
  fake.hook = (r) => (r.operation === "ServiceDelete" ? { body: { data: null, errors: [{ message: "Not Authorized", path: ["serviceDelete"] }] } } : undefined);
  await p.delete("svc-stale");
  assert.equal(p.stats.serviceDelete!.not_found, 1);
  assert.equal(fake.count("TokenCheck"), 1);
  fake.hook = (r) => (r.operation === "ServiceDelete" || r.operation === "TokenCheck" ? { body: { data: null, errors: [{ message: "Not Authorized" }] } } : undefined);
  await rejects(p.delete("svc-stale"), (e) => assert.equal(e.failure, "auth"));
});

test("a same-named service created for another environment is not ours", async () => {
  projects(1);
  // serviceCreate puts an empty instance in every environment; only the target one deploys.
  fake.addService("proj-0", "ap-default-i-aaa111", [{ environmentId: "proj-0-env-staging", status: "SUCCESS", image: "x" }, { environmentId: ENV("proj-0") }]);
  const p = await open();
  const l = await p.list();
  assert.equal(l.complete, true);
  assert.deepEqual(l.instances, []);
});

test("service names fit Railway's 32 characters: the pool id is shortened stably when needed", async () => {
  assert.equal(ownPrefixFor("ap", "default", 18), "ap-default-");
  const long = ownPrefixFor("ap", "a-very-long-pool-identifier", 18);
  assert.equal(long.length <= 18, true);
  assert.equal(long, ownPrefixFor("ap", "a-very-long-pool-identifier", 18), "stable");
  assert.notEqual(long, ownPrefixFor("ap", "a-very-long-pool-identifier-2", 18));
  assert.ok(ownPrefixFor("agent-pool", "default", 18).startsWith("agent-pool-"));
  assert.throws(() => ownPrefixFor("a-very-long-service-prefix", "x", 18), /CONFIG_INVALID|no room/);
  projects(1);
  const p = await open({ poolId: "a-very-long-pool-identifier" });
  const inst = await p.create(spec({ poolId: "a-very-long-pool-identifier" }));
  assert.ok(inst.name.length <= 32, inst.name);
  assert.equal((await p.list()).instances[0]!.instanceId, inst.instanceId);
  await p.rename(inst.ref, `${inst.name}--claimed-by-someone`);
  const renamed = fake.findService(inst.ref)!.name;
  assert.ok(renamed.length <= 32 && renamed.startsWith(inst.name), renamed);
  assert.equal((await p.list()).instances[0]!.instanceId, inst.instanceId);
});

test("a rename that keeps failing on 429 is queued, retried later, and lands", async () => {
  projects(1);
  const svc = fake.addService("proj-0", "ap-default-i-aaa111", [{ environmentId: ENV("proj-0") }]);
  const p = await open({ renameRetryBaseMs: 60_000 });
  let fail = 4; // 1 try + 3 client retries
  fake.hook = (r) => (r.operation === "ServiceRename" && fail-- > 0 ? { status: 429, headers: { "retry-after": "1" }, body: { data: null } } : undefined);
  await p.rename(svc.id, "ap-default-i-aaa111--claimed");
  assert.equal(p.pendingRenames.length, 1);
  assert.equal(p.pendingRenames[0]!.lastFailure, "rate_limited");
  assert.equal(svc.name, "ap-default-i-aaa111");
  await p.retryPendingRenames(); // not due yet
  assert.equal(p.pendingRenames.length, 1);
  await p.retryPendingRenames({ force: true });
  assert.equal(p.pendingRenames.length, 0);
  assert.equal(svc.name, "ap-default-i-aaa111--claimed");
  assert.equal(p.stats.serviceUpdate!.rename_queued, 1);
  assert.equal(p.stats.serviceUpdate!.rename_retried_ok, 1);
  // Still ours after the rename.
  assert.equal((await p.list()).instances[0]!.instanceId, "i-aaa111");
});

test("the rename retry timer fires by itself and close() clears it", async () => {
  projects(1);
  const svc = fake.addService("proj-0", "ap-default-i-aaa111", [{ environmentId: ENV("proj-0") }]);
  const p = await open({ renameRetryBaseMs: 50 });
  let fail = 2; // a rename is resent once after a 5xx
  fake.hook = (r) => (r.operation === "ServiceRename" && fail-- > 0 ? { status: 503, body: { errors: [{ message: "later" }] } } : undefined);
  await p.rename(svc.id, "ap-default-i-aaa111--x");
  assert.equal(p.pendingRenames.length, 1);
  // A real timer is the point here; the deadline is generous because the full suite loads both cores.
  const deadline = Date.now() + 10_000;
  while (p.pendingRenames.length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(p.pendingRenames.length, 0);
  assert.equal(svc.name, "ap-default-i-aaa111--x");
  fail = 2;
  await p.rename(svc.id, "ap-default-i-aaa111--y");
  assert.equal(p.pendingRenames.length, 1);
  await p.close(); // the test process would hang on a live timer otherwise
});

test("a rename that would drop our prefix is refused", async () => {
  projects(1);
  const p = await open();
  await rejects(p.rename("svc-1", "my-agent"), (e) => assert.equal(e.code, "PROVIDER_ERROR"));
  assert.equal(fake.count("ServiceRename"), 0);
});

test("create refuses instance ids the listing could not recognise", async () => {
  projects(1);
  const p = await open();
  await rejects(p.create(spec({ instanceId: "has-two-dashes" })), (e) => assert.equal(e.code, "PROVIDER_ERROR"));
  await rejects(p.create(spec({ poolId: "other" })), (e) => assert.equal(e.code, "PROVIDER_ERROR"));
  assert.equal(fake.count("ServiceCreate"), 0);
});

test("a low remaining hourly budget spaces creates out", async () => {
  projects(1);
  const sleeps: number[] = [];
  const clock = new ManualClock(Date.now());
  const p = await open({ clock, sleep: async (ms) => void (sleeps.push(ms), clock.advance(ms)) });
  const reset = (s: number) => String(Math.floor(clock.now().getTime() / 1000) + s);
  fake.headers = { "x-ratelimit-limit": "10000", "x-ratelimit-remaining": "9000", "x-ratelimit-reset": reset(3600) };
  await p.list();
  await p.create(spec());
  await p.create(spec());
  assert.ok(sleeps.every((s) => s < 1000), `plenty of budget: no spacing (${JSON.stringify(sleeps)})`);
  fake.headers = { "x-ratelimit-limit": "10000", "x-ratelimit-remaining": "300", "x-ratelimit-reset": reset(600) };
  await p.list();
  for (let i = 0; i < 3; i++) await p.create(spec());
  const spaced = sleeps.filter((s) => s >= 1000);
  assert.equal(spaced.length, 2, JSON.stringify(sleeps));
  // ~600 s to the reset, 300 left, 2 calls per create → ~4 s apart.
  assert.ok(spaced.every((s) => s >= 3500 && s <= 4100), JSON.stringify(spaced));
  assert.equal(p.stats.serviceCreate!.budget_wait, 3);
  assert.equal(p.rateLimit.remaining, 300);
});

test("60 concurrent creates against a 50/s limit draw no 429", { timeout: 30_000 }, async () => {
  projects(1);
  fake.perSecondLimit = 50;
  const p = await RailwayProvider.open({ apiUrl: url, apiToken: "tok", projectIds: ["proj-0"], poolId: "default", image: "img", urlScheme: "http", maxRequestsPerSecond: 50 });
  providers.push(p);
  const t0 = Date.now();
  const made = await Promise.all(Array.from({ length: 60 }, () => p.create(spec())));
  const took = Date.now() - t0;
  assert.equal(made.length, 60);
  assert.equal(fake.throttled, 0);
  assert.equal(p.rateLimit.throttled, 0);
  assert.equal(fake.projects.get("proj-0")!.services.length, 60);
  assert.ok(took >= 2500, `paced: ${took} ms for ${fake.requests.length} requests`);
});
