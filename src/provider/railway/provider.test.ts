import { afterEach, beforeEach, test } from "node:test";
import assert from "node:assert/strict";
import { ManualClock } from "../../clock.ts";
import { PoolError } from "../../errors.ts";
import type { CreateInstanceSpec } from "../provider.ts";
import { loadConfig } from "../../config.ts";
import { ownPrefixFor } from "./names.ts";
import { RailwayProvider, type RailwayOptions } from "./provider.ts";
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
/** This deployment's owner id, and another deployment's (same pool name, same project). */
const OWN = "own01";
const THEIRS = "oth02";
/** A service name of pool `default` in the form with an owner id. */
const nm = (instanceId: string, owner = OWN) => `ap-default-${instanceId}-${owner}`;

function projects(n: number): string[] {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `proj-${i}`;
    fake.addProject(id, [
      { id: `${id}-env-staging`, name: "staging" },
      { id: ENV(id), name: "production" },
    ]);
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
    ownerId: OWN,
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
  return { instanceId, poolId: "default", name: nm(instanceId), gatewayToken: `gw-${instanceId}`, ownerId: OWN, env: { XMTP_ENV: "dev" }, ...extra };
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
  assert.deepEqual(
    p.projects.map((x) => x.environmentId),
    ids.map(ENV),
  );
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
    for (const id of ids)
      for (let i = 0; i < 40; i++) fake.addService(id, nm(`i-${id.slice(5)}x${i}`), [{ environmentId: ENV(id), status: "SUCCESS", domain: `d${i}.example` }]);
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
  for (let i = 0; i < 10; i++) fake.addService("proj-0", nm(`i-a${i}`), [{ environmentId: ENV("proj-0") }]);
  const p = await open({ projectIds: ids });
  let before = fake.requests.length;
  let l = await p.list();
  assert.equal(fake.requests.length - before, 1, "exactly a page: no follow-up");
  assert.equal(l.instances.length, 10);
  for (let i = 0; i < 15; i++) fake.addService("proj-1", nm(`i-b${i}`), [{ environmentId: ENV("proj-1") }]);
  fake.addService("proj-0", nm("i-a10"), [{ environmentId: ENV("proj-0") }]);
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
  const ours = fake.addService("proj-0", nm("i-aaa111"), [
    { environmentId: "proj-0-env-staging", status: "CRASHED", domain: "staging.example", image: "img:staging" },
    { environmentId: env, status: "SUCCESS", domain: "ours.example", image: "img:1" },
  ]);
  const renamed = fake.addService("proj-0", `${nm("i-bbb222")}--ada`, [{ environmentId: env, status: "BUILDING" }]);
  fake.addService("proj-0", nm("i-ccc333"), [{ environmentId: "proj-0-env-staging", status: "SUCCESS" }]); // other env only
  fake.addService("proj-0", "ap-default-2-i-ddd444-own01", [{ environmentId: env, status: "SUCCESS" }]); // pool "default-2"
  fake.addService("proj-0", "ap-default-2-i-ddd444", [{ environmentId: env, status: "SUCCESS" }]); // pool "default-2", before owner ids
  fake.addService("proj-0", "ap-other-i-eee555-own01", [{ environmentId: env, status: "SUCCESS" }]);
  fake.addService("proj-0", "postgres", [{ environmentId: env, status: "SUCCESS" }]);
  const p = await open();
  const l = await p.list();
  assert.equal(l.complete, true);
  assert.deepEqual(l.instances.map((i) => i.ref).sort(), [ours.id, renamed.id].sort());
  const a = l.instances.find((i) => i.ref === ours.id)!;
  assert.equal(a.instanceId, "i-aaa111");
  assert.equal(a.owner, OWN);
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
  fake.addService("proj-0", nm("i-aaa111"), [{ environmentId: ENV("proj-0"), status: "SUCCESS" }]);
  fake.addService("proj-2", nm("i-ccc333"), [{ environmentId: ENV("proj-2"), status: "SUCCESS" }]);
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
  fake.addService("proj-0", nm("i-aaa111"), [{ environmentId: ENV("proj-0"), status: "SUCCESS" }]);
  const p = await open();
  fake.hook = (r) =>
    r.operation === "PoolList"
      ? {
          body: {
            data: { p0: { id: "proj-0", services: { edges: [], pageInfo: { hasNextPage: false } } } },
            errors: [{ message: "Problem processing request", path: ["p0", "services", "edges", 0, "node", "serviceInstances"] }],
          },
        }
      : undefined;
  const l = await p.list();
  assert.equal(l.complete, false);
  fake.hook = (r) => (r.operation === "PoolList" ? { body: { data: { p0: null } } } : undefined);
  assert.equal((await p.list()).complete, false, "an unreadable project is never an empty complete listing");
});

test("an unreadable project leaves the others listed, as incomplete; all unreadable throws", async () => {
  const ids = projects(3);
  fake.addService("proj-0", nm("i-aaa111"), [{ environmentId: ENV("proj-0"), status: "SUCCESS" }]);
  fake.addService("proj-2", nm("i-ccc333"), [{ environmentId: ENV("proj-2"), status: "SUCCESS" }]);
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
    name: `ap-default-${s.instanceId}-${OWN}`,
    source: { image: "ghcr.io/acme/agent:1" },
    variables: { XMTP_ENV: "dev", OPENAI_KEY: "k", PORT: "9090", GATEWAY_TOKEN: s.gatewayToken, INSTANCE_ID: s.instanceId, AGENT_POOL_OWNER: OWN },
  });
  const domain = fake.requests.find((r) => r.operation === "ServiceDomainCreate")!;
  assert.deepEqual(domain.variables.input, { serviceId: inst.ref, environmentId: ENV("proj-0"), targetPort: 9090 });
  assert.equal(inst.instanceId, s.instanceId);
  assert.equal(inst.url, `http://ap-default-${s.instanceId}-${OWN}.up.railway.test`);
  assert.equal(inst.owner, OWN);
  assert.equal(inst.image, "ghcr.io/acme/agent:1");
  assert.equal(fake.count("ServiceCreate") + fake.count("ServiceDomainCreate"), 2);
  const l = await p.list();
  assert.deepEqual(
    l.instances.map((i) => [i.ref, i.owner]),
    [[inst.ref, OWN]],
  );
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
  fake.hook = (r) =>
    r.operation === "ProjectCreate" && throttle-- > 0 ? { body: { data: null, errors: [{ message: "Only one project can be created per user" }] } } : undefined;
  const results = await Promise.all([p.create(spec()), p.create(spec()), p.create(spec())]);
  assert.equal(fake.count("ProjectCreate"), 2, "one throttled attempt, then one project for all three creates");
  assert.equal(created.length, 1);
  assert.ok(
    sleeps.some((s) => s > 25_000 && s <= 30_000),
    `waited ${JSON.stringify(sleeps)}`,
  );
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
  const shared = fake.addService("proj-0", nm("i-aaa111"), [
    { environmentId: "proj-0-env-staging", status: "SUCCESS", image: "x" },
    { environmentId: ENV("proj-0"), status: "SUCCESS", image: "x" },
  ]);
  const mine = fake.addService("proj-0", nm("i-bbb222"), [
    { environmentId: "proj-0-env-staging" },
    { environmentId: ENV("proj-0"), status: "SUCCESS", image: "x" },
  ]);
  const p = await open();
  await p.list();
  await p.delete(shared.id);
  assert.equal(fake.requests.at(-1)!.operation, "ServiceDeleteInEnvironment");
  assert.deepEqual(
    fake.findService(shared.id)!.instances.map((i) => i.environmentId),
    ["proj-0-env-staging"],
  );
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
  fake.hook = (r) =>
    r.operation === "ServiceDelete" || r.operation === "TokenCheck" ? { body: { data: null, errors: [{ message: "Not Authorized" }] } } : undefined;
  await rejects(p.delete("svc-stale"), (e) => assert.equal(e.failure, "auth"));
});

test("a same-named service created for another environment is not ours", async () => {
  projects(1);
  // serviceCreate puts an empty instance in every environment; only the target one deploys.
  fake.addService("proj-0", nm("i-aaa111"), [{ environmentId: "proj-0-env-staging", status: "SUCCESS", image: "x" }, { environmentId: ENV("proj-0") }]);
  const p = await open();
  const l = await p.list();
  assert.equal(l.complete, true);
  assert.deepEqual(l.instances, []);
});

test("service names fit Railway's 32 characters with the owner id: the pool tag is shortened stably when needed", () => {
  // 32 − 14 (instance id) − 6 (`-<owner id>`) = 12 for `<prefix>-<pool tag>-`.
  assert.equal(ownPrefixFor("ap", "default", 12), "ap-default-");
  const long = ownPrefixFor("ap", "a-very-long-pool-identifier", 12);
  assert.ok(long.length <= 12, long);
  assert.equal(long, ownPrefixFor("ap", "a-very-long-pool-identifier", 12), "stable");
  assert.notEqual(long, ownPrefixFor("ap", "a-very-long-pool-identifier-2", 12));
  assert.throws(() => ownPrefixFor("abcdef", "x-long-pool", 12), /no room/);
});

test("every prefix the configuration accepts fits every pool id: create, list, rename stay within 32 characters", async () => {
  // The longest prefix RAILWAY_SERVICE_PREFIX accepts, and one character more.
  assert.equal(loadConfig({ RAILWAY_SERVICE_PREFIX: "abcde" }).RAILWAY_SERVICE_PREFIX, "abcde");
  assert.throws(() => loadConfig({ RAILWAY_SERVICE_PREFIX: "abcdef" }), /RAILWAY_SERVICE_PREFIX/);
  projects(1);
  for (const prefix of ["ap", "abcde"]) {
    for (const poolId of ["x", "default", "production", "a-very-long-pool-identifier-of32"]) {
      const p = await open({ poolId, servicePrefix: prefix });
      const instanceId = `i-${"z".repeat(11)}${poolId.length.toString(36)}`; // the default ids' 14 characters
      const inst = await p.create(spec({ poolId, instanceId }));
      assert.ok(inst.name.length <= 32, `${inst.name} (${inst.name.length})`);
      assert.ok(inst.name.startsWith(`${prefix}-`) && inst.name.endsWith(`-${instanceId}-${OWN}`), inst.name);
      assert.deepEqual(p.parseServiceName(inst.name), { instanceId, owner: OWN, label: null });
      const listed = (await p.list()).instances.find((i) => i.ref === inst.ref)!;
      assert.deepEqual([listed.instanceId, listed.owner], [instanceId, OWN]);
      // The label is what is cut: never the instance id or the owner id.
      const renamed = p.nameFor(`${inst.name}--claimed-by-someone`);
      assert.ok(renamed.length <= 32 && renamed.startsWith(inst.name), renamed);
      assert.deepEqual([p.parseServiceName(renamed)?.instanceId, p.parseServiceName(renamed)?.owner], [instanceId, OWN]);
      await p.delete(inst.ref);
    }
  }
  // With the default prefix, pool ids up to 8 characters are the tag as they are; longer ones are shortened.
  assert.equal((await open({ poolId: "staging1" })).serviceName("i-abc"), "ap-staging1-i-abc-own01");
  assert.match((await open({ poolId: "staging12" })).serviceName("i-abc"), /^ap-stag[a-z0-9]{4}-i-abc-own01$/);
});

test("list() takes every owner's services of this pool, each with its owner; the old form has none", async () => {
  projects(1);
  const env = ENV("proj-0");
  const made = {
    ours: fake.addService("proj-0", nm("i-aaa111"), [{ environmentId: env, status: "SUCCESS" }]),
    oursRenamed: fake.addService("proj-0", `${nm("i-aaa112")}--ada`, [{ environmentId: env, status: "SUCCESS" }]),
    theirs: fake.addService("proj-0", nm("i-bbb222", THEIRS), [{ environmentId: env, status: "SUCCESS" }]),
    theirsRenamed: fake.addService("proj-0", `${nm("i-bbb223", THEIRS)}--bob`, [{ environmentId: env, status: "SUCCESS" }]),
    old: fake.addService("proj-0", "ap-default-i-ccc333", [{ environmentId: env, status: "SUCCESS" }]),
    oldRenamed: fake.addService("proj-0", "ap-default-i-ccc334--cy", [{ environmentId: env, status: "SUCCESS" }]),
  };
  // Not this pool's: other pools (with and without owner ids), a malformed owner part, other services.
  for (const name of [
    "ap-default-2-i-ddd444-own01",
    "ap-default-2-i-ddd444",
    "ap-defaults-i-eee555-own01",
    "ap-default-i-fff666-own1",
    "ap-default-i-fff667-own012",
    "ap-default-i-x-y-own01",
    "postgres",
  ]) {
    fake.addService("proj-0", name, [{ environmentId: env, status: "SUCCESS" }]);
  }
  const p = await open();
  const l = await p.list();
  assert.equal(l.complete, true);
  const got = Object.fromEntries(l.instances.map((i) => [i.ref, [i.instanceId, i.owner]]));
  assert.deepEqual(got, {
    [made.ours.id]: ["i-aaa111", OWN],
    [made.oursRenamed.id]: ["i-aaa112", OWN],
    [made.theirs.id]: ["i-bbb222", THEIRS],
    [made.theirsRenamed.id]: ["i-bbb223", THEIRS],
    [made.old.id]: ["i-ccc333", null],
    [made.oldRenamed.id]: ["i-ccc334", null],
  });
});

test("a long pool id keeps reading its services of the old form (a 6-character longer tag) and its projects", async () => {
  projects(1);
  const env = ENV("proj-0");
  const old = fake.addService("proj-0", "ap-production-i-ccc333", [{ environmentId: env, status: "SUCCESS" }]);
  fake.addProject("proj-made-before");
  fake.projects.get("proj-made-before")!.name = "ap-production-lq3k1x"; // created by this pool before owner ids
  const p = await open({ poolId: "production", workspaceId: "ws-1" });
  assert.ok(
    p.projects.some((x) => x.id === "proj-made-before"),
    "projects are still found by the name they were created with",
  );
  const inst = await p.create(spec({ poolId: "production" }));
  assert.notEqual(inst.name.slice(0, 14), "ap-production-", "new names use the shorter tag");
  const l = await p.list();
  assert.deepEqual(
    l.instances.map((i) => [i.ref, i.instanceId, i.owner]).sort(),
    [
      [old.id, "i-ccc333", null],
      [inst.ref, inst.instanceId, OWN],
    ].sort(),
  );
});

test("delete and rename refuse a service another deployment owns: nothing is sent", async () => {
  projects(1);
  const env = ENV("proj-0");
  const theirs = fake.addService("proj-0", nm("i-bbb222", THEIRS), [{ environmentId: env, status: "SUCCESS" }]);
  const old = fake.addService("proj-0", "ap-default-i-ccc333", [{ environmentId: env, status: "SUCCESS" }]);
  const p = await open();
  await p.list();
  const before = fake.requests.length;
  await rejects(p.delete(theirs.id), (e) => {
    assert.equal(e.code, "PROVIDER_ERROR");
    assert.match(e.message, /another deployment.*oth02/);
  });
  await rejects(p.rename(theirs.id, `${nm("i-bbb222")}--ada`), (e) => assert.equal(e.code, "PROVIDER_ERROR"));
  assert.equal(fake.requests.length, before, "no request for another deployment's service");
  assert.equal(fake.findService(theirs.id)!.name, nm("i-bbb222", THEIRS));
  assert.equal(p.stats.serviceDelete!.refused_foreign, 1);
  assert.equal(p.stats.serviceUpdate!.refused_foreign, 1);

  // A service of the old form (no owner) that a row matched is ours to rename: it then carries our owner id.
  await p.rename(old.id, `${nm("i-ccc333")}--cy`);
  assert.equal(fake.findService(old.id)!.name, `${nm("i-ccc333")}--cy`);
  assert.equal((await p.list()).instances.find((i) => i.ref === old.id)!.owner, OWN);
  await p.delete(old.id);
  assert.equal(fake.findService(old.id), undefined);
});

test("a rename must keep our owner id and our prefix; the label is cut to fit; an unchanged name sends nothing", async () => {
  projects(1);
  const svc = fake.addService("proj-0", nm("i-aaa111"), [{ environmentId: ENV("proj-0") }]);
  const p = await open();
  await p.list();
  await rejects(p.rename(svc.id, "my-agent"), (e) => assert.match(e.message, /prefix/));
  await rejects(p.rename(svc.id, `${nm("i-aaa111", THEIRS)}--ada`), (e) => assert.match(e.message, /owner id own01/));
  await rejects(p.rename(svc.id, "ap-default-i-aaa111--ada"), (e) => assert.match(e.message, /owner id own01/));
  assert.equal(fake.count("ServiceRename"), 0);
  // `<name>-<label>` (one dash) is fixed to `<name>--<label>`; a 5-character label is not an owner id.
  assert.equal(p.nameFor(`${nm("i-aaa111")}-alice`), `${nm("i-aaa111")}--alice`);
  assert.equal(p.nameFor(`${nm("i-aaa111")}--ada-lovelace`), `${nm("i-aaa111")}--ada-l`);
  await p.rename(svc.id, `${nm("i-aaa111")}--ada-lovelace`);
  assert.equal(svc.name, `${nm("i-aaa111")}--ada-l`);
  assert.equal(fake.count("ServiceRename"), 1);
  await p.rename(svc.id, `${nm("i-aaa111")}--ada-lovelace`);
  assert.equal(fake.count("ServiceRename"), 1, "already so named: no request");
  assert.equal(p.stats.serviceUpdate!.unchanged, 1);
});

test("create refuses a spec of another owner; the service carries AGENT_POOL_OWNER", async () => {
  projects(1);
  const p = await open();
  await rejects(p.create(spec({ ownerId: THEIRS })), (e) => {
    assert.equal(e.code, "PROVIDER_ERROR");
    assert.match(e.message, /owner/);
  });
  assert.equal(fake.count("ServiceCreate"), 0);
  // An operator variable cannot replace it.
  const inst = await p.create(spec({ env: { AGENT_POOL_OWNER: "forged" } }));
  const input = fake.requests.find((r) => r.operation === "ServiceCreate")!.variables.input as { variables: Record<string, string> };
  assert.equal(input.variables.AGENT_POOL_OWNER, OWN);
  assert.equal(inst.owner, OWN);
  await rejects(open({ ownerId: "NOT-VALID" }), (e) => assert.equal(e.code, "CONFIG_INVALID"));
});

test("the cleanup after a lost create answer removes only the service with our full name", async () => {
  projects(1);
  const p = await open({ requestTimeoutMs: 200 });
  await p.list();
  const s = spec();
  // Another deployment's service with the same instance id (same pool, same project), and one of the old form.
  const theirs = fake.addService("proj-0", nm(s.instanceId, THEIRS), [{ environmentId: ENV("proj-0"), status: "SUCCESS" }]);
  const old = fake.addService("proj-0", `ap-default-${s.instanceId}`, [{ environmentId: ENV("proj-0"), status: "SUCCESS" }]);
  let first = true;
  fake.hook = (r) => {
    if (r.operation !== "ServiceCreate" || !first) return undefined;
    first = false;
    const input = r.variables.input as { projectId: string; environmentId: string; name: string };
    fake.addService(input.projectId, input.name, [{ environmentId: input.environmentId }]);
    return { delayMs: 1_000, body: { data: null } };
  };
  await rejects(p.create(s), (e) => assert.equal(e.failure, "timeout"));
  assert.deepEqual(
    fake.projects
      .get("proj-0")!
      .services.map((x) => x.id)
      .sort(),
    [theirs.id, old.id].sort(),
  );
  assert.equal(fake.count("ServiceDelete"), 1);
});

test("a rename that keeps failing on 429 is queued, retried later, and lands", async () => {
  projects(1);
  const svc = fake.addService("proj-0", nm("i-aaa111"), [{ environmentId: ENV("proj-0") }]);
  const p = await open({ renameRetryBaseMs: 60_000 });
  let fail = 4; // 1 try + 3 client retries
  fake.hook = (r) => (r.operation === "ServiceRename" && fail-- > 0 ? { status: 429, headers: { "retry-after": "1" }, body: { data: null } } : undefined);
  await p.rename(svc.id, `${nm("i-aaa111")}--ada`);
  assert.equal(p.pendingRenames.length, 1);
  assert.equal(p.pendingRenames[0]!.lastFailure, "rate_limited");
  assert.equal(svc.name, nm("i-aaa111"));
  await p.retryPendingRenames(); // not due yet
  assert.equal(p.pendingRenames.length, 1);
  await p.retryPendingRenames({ force: true });
  assert.equal(p.pendingRenames.length, 0);
  assert.equal(svc.name, `${nm("i-aaa111")}--ada`);
  assert.equal(p.stats.serviceUpdate!.rename_queued, 1);
  assert.equal(p.stats.serviceUpdate!.rename_retried_ok, 1);
  // Still ours after the rename.
  assert.equal((await p.list()).instances[0]!.instanceId, "i-aaa111");
});

test("the rename retry timer fires by itself and close() clears it", async () => {
  projects(1);
  const svc = fake.addService("proj-0", nm("i-aaa111"), [{ environmentId: ENV("proj-0") }]);
  const p = await open({ renameRetryBaseMs: 50 });
  let fail = 2; // a rename is resent once after a 5xx
  fake.hook = (r) => (r.operation === "ServiceRename" && fail-- > 0 ? { status: 503, body: { errors: [{ message: "later" }] } } : undefined);
  await p.rename(svc.id, `${nm("i-aaa111")}--x`);
  assert.equal(p.pendingRenames.length, 1);
  // A real timer is the point here; the deadline is generous because the full suite loads both cores.
  const deadline = Date.now() + 10_000;
  while (p.pendingRenames.length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(p.pendingRenames.length, 0);
  assert.equal(svc.name, `${nm("i-aaa111")}--x`);
  fail = 2;
  await p.rename(svc.id, `${nm("i-aaa111")}--y`);
  assert.equal(p.pendingRenames.length, 1);
  await p.close(); // the test process would hang on a live timer otherwise
});

test("create refuses instance ids the listing could not recognise", async () => {
  projects(1);
  const p = await open();
  await rejects(p.create(spec({ instanceId: "has-two-dashes" })), (e) => assert.equal(e.code, "PROVIDER_ERROR"));
  assert.equal(fake.count("ServiceCreate"), 0);
});

test("one provider serves several pools: each pool's services carry its tag, the one listing returns them all", async () => {
  projects(1);
  const p = await open();
  p.knowPools(["default", "hermes"]);
  const a = await p.create(spec());
  const b = await p.create(spec({ poolId: "hermes" }));
  assert.match(a.name, /^ap-default-i-/);
  assert.match(b.name, /^ap-hermes-i-/);
  assert.equal(p.serviceName(b.instanceId!, "hermes"), b.name);
  const before = fake.count("PoolList");
  const listed = await p.list();
  assert.deepEqual(listed.instances.map((i) => i.instanceId).sort(), [a.instanceId, b.instanceId].sort());
  assert.equal(fake.count("PoolList") - before, 1, "one listing for both pools");
  await p.close();
});

test("a low remaining hourly budget spaces creates out, deferring a create rather than stalling the pass that asked", async () => {
  projects(1);
  const sleeps: number[] = [];
  const clock = new ManualClock(Date.now());
  const p = await open({
    clock,
    sleep: async (ms) => {
      sleeps.push(ms);
      clock.advance(ms);
    },
  });
  const reset = (s: number) => String(Math.floor(clock.now().getTime() / 1000) + s);
  fake.headers = { "x-ratelimit-limit": "10000", "x-ratelimit-remaining": "9000", "x-ratelimit-reset": reset(3600) };
  await p.list();
  await p.create(spec());
  await p.create(spec());
  assert.ok(
    sleeps.every((s) => s < 1000),
    `plenty of budget: no spacing (${JSON.stringify(sleeps)})`,
  );
  fake.headers = { "x-ratelimit-limit": "10000", "x-ratelimit-remaining": "300", "x-ratelimit-reset": reset(600) };
  await p.list();
  await p.create(spec()); // the first one goes at once
  // ~600 s to the reset, 300 left, 2 calls per create → ~4 s apart: the next one is deferred (a
  // pass must not sleep 4 s per create), saying when to try again.
  await rejects(p.create(spec()), (e) => {
    assert.equal(e.code, "PROVIDER_ERROR");
    assert.match(e.message, /budget low .* create deferred/);
    const retry = (e.details as { retryInMs: number }).retryInMs;
    assert.ok(retry >= 3500 && retry <= 4100, String(retry));
  });
  const creates = fake.count("ServiceCreate");
  clock.advance(4_100);
  await p.create(spec()); // its slot has come
  assert.equal(fake.count("ServiceCreate"), creates + 1);
  assert.ok(
    sleeps.every((s) => s <= 2_000),
    `never a long sleep inside a create (${JSON.stringify(sleeps)})`,
  );
  assert.equal(p.stats.serviceCreate!.budget_deferred, 1);
  assert.equal(p.rateLimit.remaining, 300);
});

test("60 concurrent creates against a 50/s limit draw no 429", { timeout: 30_000 }, async () => {
  projects(1);
  fake.perSecondLimit = 50;
  const p = await RailwayProvider.open({
    apiUrl: url,
    apiToken: "tok",
    projectIds: ["proj-0"],
    poolId: "default",
    ownerId: OWN,
    image: "img",
    urlScheme: "http",
    maxRequestsPerSecond: 50,
  });
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
