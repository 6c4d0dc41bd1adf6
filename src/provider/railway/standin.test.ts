/**
 * The Railway provider against the Railway stand-in (`test/railway/standin.ts`), which validates every
 * operation against Railway's real schema and runs real runtime processes. Skips visibly when the
 * schema file is not available.
 */
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { request } from "undici";
import { railwaySchemaPath, startRailwayStandin, type RailwayStandin, type RailwayStandinOptions } from "../../../test/railway/standin.ts";
import type { CreateInstanceSpec, ProviderInstance } from "../provider.ts";
import { GraphQLClient } from "./client.ts";
import { RailwayProvider, type RailwayOptions } from "./provider.ts";

const schema = railwaySchemaPath();
const skip = schema ? false : "Railway schema not found: set RAILWAY_SCHEMA_PATH to Railway's introspection schema.json";

let standin: RailwayStandin | null = null;
const providers: RailwayProvider[] = [];

afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close()));
  const s = standin;
  standin = null;
  if (s) {
    try {
      // Every operation the provider sent was valid against the real schema.
      assert.deepEqual(
        s.validationFailures.map((f) => f.errors),
        [],
      );
    } finally {
      await s.close();
    }
  }
});

async function start(opts: RailwayStandinOptions = {}): Promise<RailwayStandin> {
  standin = await startRailwayStandin(opts);
  return standin;
}

async function open(s: RailwayStandin, extra: Partial<RailwayOptions> & Pick<RailwayOptions, "projectIds">): Promise<RailwayProvider> {
  const p = await RailwayProvider.open({
    apiUrl: s.url,
    apiToken: s.token,
    poolId: "default",
    ownerId: "own01",
    image: "ghcr.io/acme/agent-runtime:1",
    urlScheme: "http",
    requestTimeoutMs: 10_000,
    ...extra,
  });
  providers.push(p);
  return p;
}

let seq = 0;
function spec(): CreateInstanceSpec {
  const instanceId = `i-${Date.now().toString(36)}${(++seq).toString(36)}`.slice(0, 14);
  return {
    instanceId,
    poolId: "default",
    name: `agent-pool-default-${instanceId}`,
    gatewayToken: `gw-${instanceId}-secret`,
    ownerId: "own01",
    env: { INSTANCE_ENV_CHECK: "yes" },
  };
}

/** Lists until `done` holds (one request per poll). */
async function until(p: RailwayProvider, done: (i: ProviderInstance[]) => boolean, timeoutMs = 60_000): Promise<ProviderInstance[]> {
  const end = Date.now() + timeoutMs;
  let last: ProviderInstance[] = [];
  while (Date.now() < end) {
    const l = await p.list();
    last = l.instances;
    if (l.complete && done(last)) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`condition not reached; last listing: ${JSON.stringify(last)}`);
}

/** Fills a project with `n` empty services through the API (a separate token: its own rate budget). */
async function fill(s: RailwayStandin, projectId: string, n: number): Promise<void> {
  const c = new GraphQLClient({ apiUrl: s.url, apiToken: s.createToken("workspace") });
  try {
    for (let i = 0; i < n; i++) {
      await c.call(
        "mutation Fill($input: ServiceCreateInput!) { serviceCreate(input: $input) { id } }",
        { input: { projectId, name: `filler-${i}` } },
        { operation: "fill", idempotent: false },
      );
    }
  } finally {
    await c.close();
  }
}

test("create → listed progressing to SUCCESS with a domain that reaches the runtime → delete", { skip, timeout: 120_000 }, async () => {
  const s = await start({ autoAdvance: false });
  const { projectId, environmentId } = s.createProject("pool-one");
  s.createProject("unrelated"); // not configured: never listed
  const p = await open(s, { projectIds: [projectId] });
  const sp = spec();
  const inst = await p.create(sp);
  assert.equal(inst.instanceId, sp.instanceId);
  assert.match(inst.url ?? "", /^http:\/\//);

  // Variables went in with the create: the first and only deployment booted with them.
  const snap = s.service(inst.ref)!;
  assert.equal(snap.deployments.length, 1);
  assert.equal(snap.variables[environmentId]!.GATEWAY_TOKEN, sp.gatewayToken);
  assert.equal(snap.variables[environmentId]!.INSTANCE_ID, sp.instanceId);
  assert.equal(snap.variables[environmentId]!.INSTANCE_ENV_CHECK, "yes");
  assert.equal(snap.variables[environmentId]!.PORT, "8080");
  assert.equal(snap.variables[environmentId]!.AGENT_POOL_OWNER, "own01");
  assert.equal(snap.name, `ap-default-${sp.instanceId}-own01`);
  assert.equal(snap.image, "ghcr.io/acme/agent-runtime:1");

  // Step the deployment and watch the listing follow it.
  const statuses: Array<string | null> = [];
  const look = async () => {
    const l = await p.list();
    assert.equal(l.complete, true);
    assert.equal(l.instances.length, 1);
    statuses.push(l.instances[0]!.deployStatus);
  };
  await look();
  s.advance();
  await look();
  s.advance(); // DEPLOYING: the runtime process starts
  await look();
  const [up] = await until(p, (l) => l.length === 1 && l[0]!.deployStatus === "SUCCESS");
  statuses.push("SUCCESS");
  assert.deepEqual(statuses, ["QUEUED", "BUILDING", "DEPLOYING", "SUCCESS"]);
  assert.equal(up!.ref, inst.ref);
  assert.equal(up!.url, inst.url);
  assert.equal(up!.image, "ghcr.io/acme/agent-runtime:1");

  // The domain reaches the runtime, which knows its gateway token.
  // (SUCCESS means the port accepts; the runtime may still be booting.)
  let healthStatus = 0;
  for (let i = 0; i < 120 && healthStatus !== 200; i++) {
    const health = await request(`${inst.url}/pool/health`);
    healthStatus = health.statusCode;
    await health.body.text();
    if (healthStatus !== 200) await new Promise((r) => setTimeout(r, 250));
  }
  assert.equal(healthStatus, 200);
  const status = await request(`${inst.url}/convos/status`, { headers: { authorization: `Bearer ${sp.gatewayToken}` } });
  assert.equal(status.statusCode, 200);
  await status.body.text();

  await p.delete(inst.ref);
  await p.delete(inst.ref); // idempotent
  assert.equal(s.service(inst.ref), null);
  const after = await p.list();
  assert.equal(after.complete, true);
  assert.deepEqual(after.instances, []);
  assert.ok(p.rateLimit.remaining !== null && p.rateLimit.limit !== null);
});

test("a project token works: its scope gives the environment, listing and creating work", { skip, timeout: 120_000 }, async () => {
  const s = await start({ runtimes: false });
  const { projectId, environmentId } = s.createProject("tokened");
  const p = await RailwayProvider.open({
    apiUrl: s.url,
    projectToken: s.projectToken(projectId, environmentId),
    projectIds: [projectId],
    poolId: "default",
    ownerId: "own01",
    image: "img:1",
    urlScheme: "http",
  });
  providers.push(p);
  assert.equal(p.projects[0]!.environmentId, environmentId);
  const inst = await p.create(spec());
  const l = await p.list();
  assert.equal(l.complete, true);
  assert.deepEqual(
    l.instances.map((i) => i.ref),
    [inst.ref],
  );
  await p.delete(inst.ref);
  assert.equal(s.requests.filter((r) => r.auth !== "project").length, 0);
});

test("list() is one request with 1 and with 5 projects", { skip, timeout: 120_000 }, async () => {
  const s = await start({ runtimes: false });
  const ids = Array.from({ length: 5 }, (_, i) => s.createProject(`pool-${i}`).projectId);
  const one = await open(s, { projectIds: [ids[0]!] });
  let before = s.requests.length;
  assert.equal((await one.list()).complete, true);
  assert.equal(s.requests.length - before, 1);

  // One service per project, so every project has one of ours.
  const five = await open(s, { projectIds: ids, maxServicesPerProject: 1 });
  const made = [];
  for (let i = 0; i < 5; i++) made.push(await five.create(spec()));
  assert.deepEqual(new Set(made.map((m) => s.service(m.ref)!.projectId)), new Set(ids));
  before = s.requests.length;
  const l = await five.list();
  assert.equal(s.requests.length - before, 1);
  assert.equal(l.complete, true);
  assert.deepEqual(l.instances.map((i) => i.ref).sort(), made.map((m) => m.ref).sort());
  assert.ok(l.instances.every((i) => i.url !== null && i.image === "ghcr.io/acme/agent-runtime:1"));
});

test("a full project (100 services) sends creates to the next project", { skip, timeout: 120_000 }, async () => {
  const s = await start({ runtimes: false });
  const full = s.createProject("full").projectId;
  const spare = s.createProject("spare").projectId;
  await fill(s, full, 100);
  const p = await open(s, { projectIds: [full, spare] });
  const inst = await p.create(spec());
  assert.equal(s.service(inst.ref)!.projectId, spare);
  assert.equal(s.services(full).length, 100);
});

test("a full project with workspaceId creates a project and uses it", { skip, timeout: 120_000 }, async () => {
  const s = await start({ runtimes: false });
  const full = s.createProject("full").projectId;
  await fill(s, full, 100);
  const created: Array<{ id: string; environmentId: string }> = [];
  const p = await open(s, { projectIds: [full], workspaceId: s.workspaceId, onProjectCreated: (x) => void created.push(x) });
  const [a, b] = await Promise.all([p.create(spec()), p.create(spec())]);
  assert.equal(created.length, 1);
  assert.equal(s.counts.projectCreate, 1);
  assert.equal(s.service(a!.ref)!.projectId, created[0]!.id);
  assert.equal(s.service(b!.ref)!.projectId, created[0]!.id);
  const l = await p.list();
  assert.equal(l.complete, true);
  assert.equal(l.instances.length, 2);

  // A restarted manager finds the project it created, by name, in the workspace.
  const again = await open(s, { projectIds: [full], workspaceId: s.workspaceId });
  assert.ok(again.projects.some((x) => x.id === created[0]!.id));
  assert.equal((await again.list()).instances.length, 2);
});

test("faults: an HTML 502 or a GraphQL error is never a listing; a 429 burst is waited out", { skip, timeout: 120_000 }, async () => {
  const s = await start({ runtimes: false });
  const { projectId } = s.createProject("faults");
  const p = await open(s, { projectIds: [projectId] });
  await p.create(spec());
  s.failNext(2, "html5xx", { match: "PoolList" });
  await assert.rejects(p.list(), (e: { failure?: string }) => e.failure === "non_json");
  s.failNext(1, "graphqlError", { match: "PoolList" });
  await assert.rejects(p.list(), (e: { failure?: string }) => e.failure === "graphql_error");
  s.failNext(1, "429burst", { match: "PoolList", retryAfterSec: 1 });
  const l = await p.list();
  assert.equal(l.complete, true);
  assert.equal(l.instances.length, 1);
  assert.equal(p.stats.list!.rate_limited, 1);
  assert.equal(p.stats.list!.non_json, 2);
});

test("60 concurrent creates against the 50/s limit draw no 429", { skip, timeout: 120_000 }, async () => {
  const s = await start({ runtimes: false });
  const { projectId } = s.createProject("burst");
  const p = await open(s, { projectIds: [projectId] });
  const made = await Promise.all(Array.from({ length: 60 }, () => p.create(spec())));
  assert.equal(made.length, 60);
  assert.equal(s.requests.filter((r) => r.status === 429).length, 0);
  assert.equal(p.rateLimit.throttled, 0);
  assert.equal(s.services(projectId).length, 60);
});
