/**
 * The Railway stand-in holds itself to Railway's real schema and habits. Without the schema every test
 * is reported SKIPPED (never passed): set RAILWAY_SCHEMA_PATH.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { findProcesses } from "../../src/provider/process-table.ts";
import { waitFor } from "../support/process.ts";
import { railwaySchemaPath, startRailwayStandin, DEPLOYMENT_STATUSES, type RailwayStandin } from "./standin.ts";

const SCHEMA = railwaySchemaPath();
const skip = SCHEMA ? false : "no Railway schema: set RAILWAY_SCHEMA_PATH";

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
}

async function gql(s: RailwayStandin, query: string, variables?: Record<string, unknown>, headers?: Record<string, string>): Promise<Reply> {
  const res = await fetch(s.url, {
    method: "POST",
    headers: { "content-type": "application/json", ...(headers ?? { authorization: `Bearer ${s.token}` }) },
    body: JSON.stringify(variables === undefined ? { query } : { query, variables }),
  });
  const text = await res.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    /* HTML or empty */
  }
  return { status: res.status, headers: res.headers, text, body };
}

/** A successful GraphQL call's data (fails the test on anything else). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function data(s: RailwayStandin, query: string, variables?: Record<string, unknown>, headers?: Record<string, string>): Promise<any> {
  const r = await gql(s, query, variables, headers);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.errors, undefined, r.text);
  return r.body.data;
}

// The operations the earlier pool managers sent (railway-api.md §5), verbatim shapes.
const R4_SERVICE_STATUS =
  "query($id: String!) { service(id: $id) { serviceInstances { edges { node { environmentId domains { serviceDomains { domain } customDomains { domain } } source { image } } } } deployments(first: 1) { edges { node { id status } } } } }";
const R15_LIST =
  "query($id: String!) { project(id: $id) { services(first: 500) { edges { node { id name createdAt serviceInstances { edges { node { environmentId domains { serviceDomains { domain } customDomains { domain } } source { image } } } } deployments(first: 1) { edges { node { id status } } } } } } } }";
const SERVICE_CREATE = "mutation($input: ServiceCreateInput!) { serviceCreate(input: $input) { id } }";
const DOMAIN_CREATE = "mutation($input: ServiceDomainCreateInput!) { serviceDomainCreate(input: $input) { domain } }";
const PATCH_COMMIT =
  "mutation($environmentId: String!, $patch: EnvironmentConfig!, $commitMessage: String) { environmentPatchCommit(environmentId: $environmentId, patch: $patch, commitMessage: $commitMessage) }";
const PROJECT_CREATE = "mutation($input: ProjectCreateInput!) { projectCreate(input: $input) { id } }";
const PROJECT_ID = "query($id: String!) { project(id: $id) { id name } }";

async function createService(s: RailwayStandin, input: Record<string, unknown>): Promise<string> {
  return (await data(s, SERVICE_CREATE, { input })).serviceCreate.id as string;
}

async function latestStatus(s: RailwayStandin, serviceId: string): Promise<string | null> {
  const d = await data(s, R4_SERVICE_STATUS, { id: serviceId });
  return d.service.deployments.edges[0]?.node.status ?? null;
}

describe("Railway stand-in: API (no runtimes)", () => {
  let s: RailwayStandin;
  before(async () => {
    if (!SCHEMA) return;
    s = await startRailwayStandin({ runtimes: false, stepMs: 10, rateLimit: { perSecond: null } });
  });
  after(async () => {
    await s?.close();
  });

  it("rejects operations that do not validate against the schema with HTTP 400", { skip }, async () => {
    const { projectId, environmentId } = s.createProject("validation");
    const before = s.validationFailures.length;

    const unknownField = await gql(s, "query($id: String!) { project(id: $id) { id bogusField } }", { id: projectId });
    assert.equal(unknownField.status, 400);
    assert.equal(unknownField.body.data, undefined);
    assert.equal(unknownField.body.errors[0].extensions.code, "GRAPHQL_VALIDATION_FAILED");
    assert.match(unknownField.body.errors[0].message, /Cannot query field "bogusField" on type "Project"/);
    assert.ok(unknownField.body.errors[0].locations);
    assert.equal(typeof unknownField.body.errors[0].traceId, "string");

    const wrongArgType = await gql(s, "{ project(id: 5) { id } }");
    assert.equal(wrongArgType.status, 400);
    assert.match(wrongArgType.body.errors[0].message, /String cannot represent a non string value/);

    // Scalar returns take no selection; deploymentRedeploy has no environmentId (an old xmtplabs bug).
    const scalarSelection = await gql(s, "mutation($id: String!) { serviceDelete(id: $id) { id } }", { id: "x" });
    assert.equal(scalarSelection.status, 400);
    const oldRedeploy = await gql(s, "mutation($id: String!, $environmentId: String!) { deploymentRedeploy(id: $id, environmentId: $environmentId) }", {
      id: "x",
      environmentId: "y",
    });
    assert.equal(oldRedeploy.status, 400);
    assert.equal(oldRedeploy.body.errors.length, 2);

    const syntax = await gql(s, '{ project(id: "x") {');
    assert.equal(syntax.status, 400);
    assert.equal(syntax.body.errors[0].extensions.code, "GRAPHQL_PARSE_FAILED");

    const badVariable = await gql(s, PROJECT_ID, { id: 5 });
    assert.equal(badVariable.status, 400);
    assert.equal(badVariable.body.errors[0].extensions.code, "BAD_USER_INPUT");
    const missingVariable = await gql(s, PROJECT_ID, {});
    assert.equal(missingVariable.status, 400);

    assert.equal(s.validationFailures.length - before, 7);
    assert.ok(s.validationFailures.every((f) => f.status === 400 && f.errors.length > 0));

    // A non-null variable for a nullable argument is legal (R8 declares `EnvironmentConfig!`).
    const ok = await data(s, PATCH_COMMIT, { environmentId, patch: { services: {} }, commitMessage: "noop" });
    assert.equal(typeof ok.environmentPatchCommit, "string");
    assert.equal(s.validationFailures.length - before, 7);
  });

  it("answers an aliased listing of two projects in ONE request and paginates with first/after", { skip }, async () => {
    const a = s.createProject("list-a");
    const b = s.createProject("list-b");
    for (const p of [a, b]) for (const n of [1, 2, 3]) await createService(s, { projectId: p.projectId, environmentId: p.environmentId, name: `svc-${n}` });

    s.resetCounters();
    const page = (alias: string) =>
      `${alias}: project(id: $${alias}) { id services(first: 2, after: $${alias}After) { edges { cursor node { id name createdAt ` +
      "serviceInstances { edges { node { environmentId domains { serviceDomains { domain } customDomains { domain } } source { image } } } } " +
      "deployments(first: 1) { edges { node { id status } } } } } pageInfo { hasNextPage endCursor } } }";
    const query = `query($a: String!, $b: String!, $aAfter: String, $bAfter: String) { ${page("a")} ${page("b")} }`;
    const first = await data(s, query, { a: a.projectId, b: b.projectId });
    assert.equal(s.requests.length, 1);
    assert.equal(s.counts.project, 1);
    assert.deepEqual(s.requests[0]!.rootFields, ["project", "project"]);
    for (const key of ["a", "b"]) {
      const conn = first[key].services;
      assert.deepEqual(
        conn.edges.map((e: { node: { name: string } }) => e.node.name),
        ["svc-1", "svc-2"],
      );
      assert.equal(conn.pageInfo.hasNextPage, true);
      assert.equal(conn.edges[0].node.serviceInstances.edges[0].node.environmentId, key === "a" ? a.environmentId : b.environmentId);
      assert.deepEqual(conn.edges[0].node.deployments.edges, []); // no source, no deployment
    }
    const second = await data(s, query, {
      a: a.projectId,
      b: b.projectId,
      aAfter: first.a.services.pageInfo.endCursor,
      bAfter: first.b.services.pageInfo.endCursor,
    });
    for (const key of ["a", "b"]) {
      assert.deepEqual(
        second[key].services.edges.map((e: { node: { name: string } }) => e.node.name),
        ["svc-3"],
      );
      assert.equal(second[key].services.pageInfo.hasNextPage, false);
    }

    // The tick poller's verbatim query (R15).
    const listed = await data(s, R15_LIST, { id: a.projectId });
    assert.equal(listed.project.services.edges.length, 3);
    // Environments (R3) and domains (P12) as the earlier pools asked.
    const envs = await data(s, "query($id: String!) { project(id: $id) { environments { edges { node { id name } } } } }", { id: a.projectId });
    assert.deepEqual(
      envs.project.environments.edges.map((e: { node: { name: string } }) => e.node.name),
      ["production"],
    );
  });

  it("serviceCreate with image + variables deploys QUEUED → BUILDING → DEPLOYING → SUCCESS, newest deployment first", { skip }, async () => {
    const m = await startRailwayStandin({ runtimes: false, autoAdvance: false });
    try {
      const { projectId, environmentId } = m.createProject("lifecycle");
      const id = await createService(m, {
        projectId,
        environmentId,
        name: "agent-1",
        source: { image: "ghcr.io/acme/runtime:1" },
        variables: { INSTANCE_ID: "i-1", FOO: "bar" },
      });
      const seen: (string | null)[] = [await latestStatus(m, id)];
      for (let i = 0; i < 3; i++) {
        m.advance();
        seen.push(await latestStatus(m, id));
      }
      assert.deepEqual(seen, ["QUEUED", "BUILDING", "DEPLOYING", "SUCCESS"]);

      const vars = await data(m, "query($p: String!, $e: String!, $s: String!) { variables(projectId: $p, environmentId: $e, serviceId: $s) }", {
        p: projectId,
        e: environmentId,
        s: id,
      });
      assert.deepEqual(vars.variables, { INSTANCE_ID: "i-1", FOO: "bar" });
      const status = await data(m, R4_SERVICE_STATUS, { id });
      assert.equal(status.service.serviceInstances.edges[0].node.source.image, "ghcr.io/acme/runtime:1");

      const domain = (await data(m, DOMAIN_CREATE, { input: { serviceId: id, environmentId } })).serviceDomainCreate.domain as string;
      assert.match(domain, /^agent-1-[a-z0-9]{6}\.up\.railway\.app$/);

      await data(
        m,
        "mutation($serviceId: String!, $environmentId: String!) { serviceInstanceRedeploy(serviceId: $serviceId, environmentId: $environmentId) }",
        { serviceId: id, environmentId },
      );
      const deps = async () =>
        (
          await data(
            m,
            "query($id: String!) { service(id: $id) { deployments(first: 5) { edges { node { id status createdAt environmentId serviceId } } } } }",
            { id },
          )
        ).service.deployments.edges.map((e: { node: { status: string } }) => e.node.status);
      assert.deepEqual(await deps(), ["QUEUED", "SUCCESS"]);
      m.advance();
      m.advance();
      m.advance();
      assert.deepEqual(await deps(), ["SUCCESS", "REMOVED"]);

      // setDeploymentStatus freezes the lifecycle at any status of the enum.
      m.setDeploymentStatus(id, "SLEEPING");
      m.advance();
      assert.equal(await latestStatus(m, id), "SLEEPING");
      assert.throws(() => m.setDeploymentStatus(id, "CANCELLED" as never));
      assert.equal(DEPLOYMENT_STATUSES.length, 13);
    } finally {
      await m.close();
    }
  });

  it("caps a project at 100 services with a GraphQL error (HTTP 200, data null)", { skip }, async () => {
    const { projectId, environmentId } = s.createProject("cap");
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) ids.push(await createService(s, { projectId, environmentId, name: `c-${i}` }));
    const over = await gql(s, SERVICE_CREATE, { input: { projectId, environmentId, name: "c-100" } });
    assert.equal(over.status, 200);
    assert.equal(over.body.data, null);
    assert.equal(over.body.errors[0].message, "Project has reached the maximum of 100 services");
    assert.deepEqual(over.body.errors[0].path, ["serviceCreate"]);
    assert.equal(s.services(projectId).length, 100);
    assert.equal((await data(s, "mutation($id: String!) { serviceDelete(id: $id) }", { id: ids[0] })).serviceDelete, true);
    await createService(s, { projectId, environmentId, name: "c-100" });
    assert.equal(s.services(projectId).length, 100);
    // Names longer than Railway's documented 32 characters are refused.
    const long = await gql(s, SERVICE_CREATE, { input: { projectId: s.createProject("long").projectId, name: "x".repeat(33) } });
    assert.equal(long.body.data, null);
    assert.equal(long.body.errors[0].extensions.code, "BAD_USER_INPUT");
  });

  it("answers auth failures with Railway's 200 + Not Authorized shape", { skip }, async () => {
    const { projectId } = s.createProject("auth");
    const other = s.createProject("auth-other");
    const notAuthorized = (r: Reply) => {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.data, null);
      assert.equal(r.body.errors[0].message, "Not Authorized");
      assert.deepEqual(r.body.errors[0].path, ["project"]);
      assert.equal(r.body.errors[0].extensions.code, "INTERNAL_SERVER_ERROR");
    };
    notAuthorized(await gql(s, PROJECT_ID, { id: projectId }, {}));
    notAuthorized(await gql(s, PROJECT_ID, { id: projectId }, { authorization: "Bearer not-a-token" }));
    notAuthorized(await gql(s, PROJECT_ID, { id: projectId }, { "team-access-token": s.token })); // that header does not exist
    notAuthorized(await gql(s, PROJECT_ID, { id: "no-such-project" })); // unknown ids look forbidden
    // Project tokens: only with Project-Access-Token, only for their project.
    const pt = s.projectToken(projectId);
    assert.equal((await data(s, PROJECT_ID, { id: projectId }, { "project-access-token": pt })).project.id, projectId);
    notAuthorized(await gql(s, PROJECT_ID, { id: other.projectId }, { "project-access-token": pt }));
    notAuthorized(await gql(s, PROJECT_ID, { id: projectId }, { authorization: `Bearer ${pt}` }));
    const badPat = await gql(s, PROJECT_ID, { id: projectId }, { "project-access-token": "nope" });
    assert.equal(badPat.body.errors[0].message, "Project Token not found");
    assert.equal((await data(s, "{ projectToken { projectId environmentId } }", undefined, { "project-access-token": pt })).projectToken.projectId, projectId);
    // `me` needs an account token; the workspace token (what a pool holds) cannot.
    const meWs = await gql(s, "{ me { name email } }");
    assert.equal(meWs.body.data, null);
    assert.equal(meWs.body.errors[0].message, "Not Authorized");
    assert.equal((await data(s, "{ me { name email } }", undefined, { authorization: `Bearer ${s.accountToken}` })).me.email, "standin@example.invalid");
    // Another workspace's token sees nothing of ours.
    const ws2 = s.createWorkspace("elsewhere");
    notAuthorized(await gql(s, PROJECT_ID, { id: projectId }, { authorization: `Bearer ${ws2.token}` }));
  });

  it("throttles projectCreate per token with Railway's GraphQL error (HTTP 200)", { skip }, async () => {
    const first = await data(s, PROJECT_CREATE, { input: { name: "made-by-api", workspaceId: s.workspaceId } });
    assert.equal(typeof first.projectCreate.id, "string");
    const again = await gql(s, PROJECT_CREATE, { input: { name: "made-by-api-2", workspaceId: s.workspaceId } });
    assert.equal(again.status, 200);
    assert.equal(again.body.data, null);
    assert.equal(again.body.errors[0].message, "Only one project can be created per user");
    // Another token has its own allowance (xmtplabs rotate tokens for this).
    const t2 = s.createToken("workspace");
    const other = await data(s, PROJECT_CREATE, { input: { name: "made-by-api-3", workspaceId: s.workspaceId } }, { authorization: `Bearer ${t2}` });
    const envs = await data(s, "query($id: String!) { project(id: $id) { environments { edges { node { name } } } } }", { id: other.projectCreate.id });
    assert.equal(envs.project.environments.edges[0].node.name, "production");
    const tooLong = await gql(s, PROJECT_CREATE, { input: { name: "p".repeat(33) } }, { authorization: `Bearer ${s.createToken("workspace")}` });
    assert.equal(tooLong.body.data, null);
  });

  it("injects each fault kind", { skip }, async () => {
    const { projectId, environmentId } = s.createProject("faults");
    const ping = () => gql(s, PROJECT_ID, { id: projectId });

    s.failNext(1, "html5xx");
    const html = await ping();
    assert.equal(html.status, 502);
    assert.match(html.headers.get("content-type") ?? "", /text\/html/);
    assert.match(html.text, /^<html>/);
    s.failNext(1, "html5xx", { status: 503 });
    assert.equal((await ping()).status, 503);
    assert.equal((await ping()).status, 200);

    s.failNext(2, "429burst", { retryAfterSec: 2 });
    for (let i = 0; i < 2; i++) {
      const r = await ping();
      assert.equal(r.status, 429);
      assert.equal(r.headers.get("retry-after"), "2");
    }
    assert.equal((await ping()).status, 200);

    s.failNext(1, "outage");
    await assert.rejects(ping()); // connection dropped, no response
    assert.equal((await ping()).status, 200);
    s.failNext(0, "outage", { durationMs: 300, mode: "503" });
    assert.equal((await ping()).status, 503);
    await waitFor("outage to end", async () => (await ping()).status === 200, 5_000, 50);

    s.failNext(1, "graphqlError");
    const problem = await ping();
    assert.equal(problem.status, 200);
    assert.equal(problem.body.data, null);
    assert.equal(problem.body.errors[0].message, "Problem processing request");

    s.failNext(1, "throttleMessage", { match: "volumeCreate", message: "You are creating volumes too quickly" });
    assert.equal((await ping()).status, 200); // not matched: passes
    const svc = await createService(s, { projectId, environmentId, name: "vol" });
    const vol = await gql(s, "mutation($input: VolumeCreateInput!) { volumeCreate(input: $input) { id name } }", {
      input: { projectId, serviceId: svc, mountPath: "/data", environmentId },
    });
    assert.equal(vol.body.errors[0].message, "You are creating volumes too quickly");
    assert.equal(s.requests.at(-1)!.fault, "throttleMessage");

    // The write happens, the answer is lost: a provider must not create twice blindly.
    s.failNext(1, "html5xx", { match: "serviceCreate", afterExecute: true });
    const lost = await gql(s, SERVICE_CREATE, { input: { projectId, environmentId, name: "ghost" } });
    assert.equal(lost.status, 502);
    assert.ok(s.services(projectId).some((x) => x.name === "ghost"));
  });

  it("rate-limits per token with X-RateLimit headers and 429 + Retry-After", { skip }, async () => {
    const r = await startRailwayStandin({ runtimes: false, rateLimit: { perHour: 1000, perSecond: 5 } });
    try {
      const { projectId } = r.createProject("rl");
      const remaining: number[] = [];
      for (let i = 0; i < 5; i++) {
        const res = await gql(r, PROJECT_ID, { id: projectId });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("x-ratelimit-limit"), "1000");
        assert.ok(Number(res.headers.get("x-ratelimit-reset")) > Date.now() / 1000);
        assert.ok(res.headers.get("ratelimit-policy"));
        remaining.push(Number(res.headers.get("x-ratelimit-remaining")));
      }
      assert.deepEqual(remaining, [999, 998, 997, 996, 995]);
      const limited = await gql(r, PROJECT_ID, { id: projectId });
      assert.equal(limited.status, 429);
      assert.match(limited.headers.get("retry-after") ?? "", /^[1-9]\d*$/);
      assert.equal(limited.headers.get("x-ratelimit-limit"), "1000");
      assert.equal(limited.body.data, null);
      // Another token has its own budget; ours comes back after Retry-After.
      assert.equal((await gql(r, PROJECT_ID, { id: projectId }, { authorization: `Bearer ${r.accountToken}` })).status, 200);
      await waitFor("the per-second window to pass", async () => (await gql(r, PROJECT_ID, { id: projectId })).status === 200, 3_000, 200);
    } finally {
      await r.close();
    }
    const h = await startRailwayStandin({ runtimes: false, rateLimit: { perHour: 3, perSecond: null } });
    try {
      for (let i = 0; i < 3; i++) assert.equal((await gql(h, "{ __typename }")).status, 200);
      const over = await gql(h, "{ __typename }");
      assert.equal(over.status, 429);
      assert.ok(Number(over.headers.get("retry-after")) > 3000);
      assert.equal(over.headers.get("x-ratelimit-remaining"), "0");
    } finally {
      await h.close();
    }
  });

  it("serves the other operations the earlier pools sent (railway-api.md §5)", { skip }, async () => {
    const m = await startRailwayStandin({ runtimes: false, autoAdvance: false });
    const steps = (n: number) => {
      for (let i = 0; i < n; i++) m.advance();
    };
    try {
      const projectId = (await data(m, PROJECT_CREATE, { input: { name: "pool-shard", workspaceId: m.workspaceId } })).projectCreate.id as string; // R1
      const env = await data(m, "query($id: String!) { project(id: $id) { environments { edges { node { id name } } } } }", { id: projectId }); // R3
      const environmentId = env.project.environments.edges[0].node.id as string;
      const id = await createService(m, { projectId, environmentId, name: "agent-x" }); // R5: no source, no deployment
      assert.equal(m.service(id)!.deployments.length, 0);
      const vol = await data(m, "mutation($input: VolumeCreateInput!) { volumeCreate(input: $input) { id name } }", {
        input: { projectId, serviceId: id, mountPath: "/data", environmentId },
      }); // R6
      await data(m, DOMAIN_CREATE, { input: { serviceId: id, environmentId } }); // R7
      await data(m, PATCH_COMMIT, {
        environmentId,
        patch: { services: { [id]: { source: { image: "img:1" }, deploy: { startCommand: "node x.js" }, variables: { A: { value: "1" } } } } },
        commitMessage: "deploy",
      }); // R8
      assert.equal(m.service(id)!.deployments.length, 1);
      // R10 with skipDeploys: no deployment; without: one.
      const upsert = "mutation($input: VariableCollectionUpsertInput!) { variableCollectionUpsert(input: $input) }";
      await data(m, upsert, { input: { projectId, environmentId, serviceId: id, variables: { B: "2" }, skipDeploys: true } });
      assert.equal(m.service(id)!.deployments.length, 1);
      await data(m, upsert, { input: { projectId, environmentId, serviceId: id, variables: { C: "3" } } });
      assert.deepEqual(
        m.service(id)!.deployments.map((d) => d.status),
        ["QUEUED", "REMOVED"],
      ); // the in-flight one is superseded
      assert.deepEqual(m.service(id)!.variables[environmentId], { A: "1", B: "2", C: "3" });
      await data(
        m,
        "mutation($serviceId: String!, $environmentId: String!, $input: ServiceInstanceUpdateInput!) { serviceInstanceUpdate(serviceId: $serviceId, environmentId: $environmentId, input: $input) }",
        { serviceId: id, environmentId, input: { rootDirectory: "agent" } },
      ); // R11
      // P2 + P3: cancel the newest deployment; P4: deploy a commit.
      const newest = await data(m, "query($id: String!) { service(id: $id) { deployments(first: 1) { edges { node { id } } } } }", { id });
      assert.equal(
        (await data(m, "mutation($id: String!) { deploymentCancel(id: $id) }", { id: newest.service.deployments.edges[0].node.id })).deploymentCancel,
        true,
      );
      assert.equal(await latestStatus(m, id), "REMOVED");
      await data(
        m,
        "mutation($serviceId: String!, $environmentId: String!, $commitSha: String!) { serviceInstanceDeploy(serviceId: $serviceId, environmentId: $environmentId, commitSha: $commitSha) }",
        { serviceId: id, environmentId, commitSha: "abc123" },
      );
      steps(3);
      assert.equal(await latestStatus(m, id), "SUCCESS");
      await data(
        m,
        "mutation($serviceId: String!, $environmentId: String!) { serviceInstanceRedeploy(serviceId: $serviceId, environmentId: $environmentId) }",
        { serviceId: id, environmentId },
      ); // R12
      steps(3);
      assert.deepEqual(
        m
          .service(id)!
          .deployments.slice(0, 2)
          .map((d) => d.status),
        ["SUCCESS", "REMOVED"],
      );
      await data(m, "mutation($id: String!) { serviceDisconnect(id: $id) { id } }", { id }); // P5
      await data(m, "mutation($id: String!, $input: ServiceUpdateInput!) { serviceUpdate(id: $id, input: $input) { id } }", {
        id,
        input: { name: "claimed-x" },
      }); // P8
      const info = await data(m, "query($id: String!) { service(id: $id) { id name } }", { id }); // P13
      assert.equal(info.service.name, "claimed-x");
      const doms = await data(
        m,
        "query($serviceId: String!, $environmentId: String!, $projectId: String!) { domains(serviceId: $serviceId, environmentId: $environmentId, projectId: $projectId) { serviceDomains { domain } customDomains { domain } } }",
        { serviceId: id, environmentId, projectId },
      ); // P12
      assert.equal(doms.domains.serviceDomains.length, 1);
      assert.deepEqual(doms.domains.customDomains, []);
      const vols = await data(
        m,
        "query($id: String!) { project(id: $id) { volumes { edges { node { id volumeInstances { edges { node { serviceId } } } } } } } }",
        { id: projectId },
      ); // R13
      assert.equal(vols.project.volumes.edges[0].node.volumeInstances.edges[0].node.serviceId, id);
      assert.equal((await data(m, "mutation($volumeId: String!) { volumeDelete(volumeId: $volumeId) }", { volumeId: vol.volumeCreate.id })).volumeDelete, true); // R14
      const rule = { workspaceId: m.workspaceId, eventTypes: ["Deployment.crashed"], channelConfigs: [{ type: "webhook", url: "http://127.0.0.1:9/hook" }] };
      await data(m, "mutation($input: CreateNotificationRuleInput!) { notificationRuleCreate(input: $input) { id } }", { input: rule }); // R17
      const rules = await data(m, "query($workspaceId: String!) { notificationRules(workspaceId: $workspaceId) { id eventTypes channels { id config } } }", {
        workspaceId: m.workspaceId,
      }); // R16
      assert.equal(rules.notificationRules[0].channels[0].config.url, "http://127.0.0.1:9/hook");
      assert.equal((await data(m, "mutation($id: String!) { serviceDelete(id: $id) }", { id })).serviceDelete, true); // R9
      assert.equal((await data(m, "mutation($id: String!) { projectDelete(id: $id) }", { id: projectId })).projectDelete, true); // R2
      assert.equal((await gql(m, PROJECT_ID, { id: projectId })).body.errors[0].message, "Not Authorized");
      assert.deepEqual(m.validationFailures, []);
    } finally {
      await m.close();
    }
  });

  it("records every request: operation, query, variables, status", { skip }, async () => {
    const { projectId } = s.createProject("rec");
    s.resetCounters();
    await gql(s, PROJECT_ID, { id: projectId });
    await gql(s, "query Named { __typename }");
    await gql(s, "{ nope }");
    assert.deepEqual(
      s.requests.map((r) => [r.op, r.status, r.operationType]),
      [
        ["project", 200, "query"],
        ["Named", 200, "query"],
        ["nope", 400, "query"],
      ],
    );
    assert.equal(s.requests[0]!.query, PROJECT_ID);
    assert.deepEqual(s.requests[0]!.variables, { id: projectId });
    assert.equal(s.requests[0]!.auth, "bearer");
    assert.deepEqual(s.counts, { project: 1, __typename: 1, nope: 1 });
    assert.equal(s.validationFailures.length, 1);
  });
});

describe("Railway stand-in: deployments run real runtimes", () => {
  let s: RailwayStandin;
  let tag = "";
  before(async () => {
    if (!SCHEMA) return;
    s = await startRailwayStandin({ stepMs: 20, rateLimit: { perSecond: null } });
    tag = s.ownerTag;
  });
  after(async () => {
    await s?.close();
  });

  const health = async (domain: string): Promise<number> => {
    try {
      const r = await fetch(`http://${domain}/pool/health`, { signal: AbortSignal.timeout(2_000) });
      await r.body?.cancel();
      return r.status;
    } catch {
      return 0;
    }
  };

  it("serves the runtime at http://<domain>, redeploys behind the same domain, reports a crash", { skip }, async () => {
    const { projectId, environmentId } = s.createProject("runtime");
    const id = await createService(s, {
      projectId,
      environmentId,
      name: "agent-rt",
      source: { image: "ghcr.io/acme/runtime:1" },
      variables: { INSTANCE_ID: "inst-rt", GATEWAY_TOKEN: "gw-secret" },
    });
    const domain = (await data(s, DOMAIN_CREATE, { input: { serviceId: id, environmentId } })).serviceDomainCreate.domain as string;
    assert.match(domain, /^127\.0\.0\.1:\d+$/);

    const seen: string[] = [];
    await waitFor(
      "SUCCESS",
      async () => {
        const st = await latestStatus(s, id);
        if (st && seen.at(-1) !== st) seen.push(st);
        return st === "SUCCESS";
      },
      20_000,
      10,
    );
    const order = ["QUEUED", "BUILDING", "DEPLOYING", "SUCCESS"];
    assert.deepEqual(
      seen,
      order.filter((x) => seen.includes(x)),
      `statuses out of order: ${seen.join(",")}`,
    );
    await waitFor("health 200 through the domain", async () => (await health(domain)) === 200, 20_000);

    // The runtime got the service variables as its env.
    const status = await fetch(`http://${domain}/convos/status`, { headers: { authorization: "Bearer gw-secret" } });
    assert.equal(status.status, 200);
    await status.body?.cancel();
    const procs = findProcesses({ AGENT_POOL_OWNER: tag, INSTANCE_ID: "inst-rt" });
    assert.equal(procs.length, 1);
    assert.equal(procs[0]!.env.RAILWAY_SERVICE_ID, id);
    const firstPid = procs[0]!.pid;

    // One atomic patch = one new deployment; the old one is REMOVED and the domain follows.
    await data(s, PATCH_COMMIT, {
      environmentId,
      patch: { services: { [id]: { source: { image: "ghcr.io/acme/runtime:2" }, variables: { FOO: { value: "bar" } } } } },
      commitMessage: "upgrade",
    });
    await waitFor(
      "the new deployment to be SUCCESS",
      async () => {
        const d = s.service(id)!.deployments;
        return d.length === 2 && d[0]!.status === "SUCCESS" && d[1]!.status === "REMOVED";
      },
      20_000,
      20,
    );
    await waitFor("health 200 from the new process", async () => (await health(domain)) === 200, 20_000);
    const after = findProcesses({ AGENT_POOL_OWNER: tag, INSTANCE_ID: "inst-rt" });
    assert.equal(after.length, 1);
    assert.notEqual(after[0]!.pid, firstPid);
    assert.equal(after[0]!.env.FOO, "bar");
    assert.equal((await data(s, R4_SERVICE_STATUS, { id })).service.serviceInstances.edges[0].node.source.image, "ghcr.io/acme/runtime:2");

    await s.crashDeployment(id);
    assert.equal(await latestStatus(s, id), "CRASHED");
    const edge = await fetch(`http://${domain}/pool/health`);
    assert.equal(edge.status, 502); // Railway's edge: nothing answers behind the domain
    assert.equal(((await edge.json()) as { message: string }).message, "Application failed to respond");
  });

  it("serviceDelete stops the service's process", { skip }, async () => {
    const { projectId, environmentId } = s.createProject("delete");
    const id = await createService(s, { projectId, environmentId, name: "agent-del", source: { image: "img" }, variables: { INSTANCE_ID: "inst-del" } });
    await waitFor("SUCCESS", async () => (await latestStatus(s, id)) === "SUCCESS", 20_000, 20);
    assert.equal(findProcesses({ AGENT_POOL_OWNER: tag, INSTANCE_ID: "inst-del" }).length, 1);
    assert.equal((await data(s, "mutation($id: String!) { serviceDelete(id: $id) }", { id })).serviceDelete, true);
    await waitFor("the process to exit", () => findProcesses({ AGENT_POOL_OWNER: tag, INSTANCE_ID: "inst-del" }).length === 0, 10_000, 50);
    const gone = await gql(s, "query($id: String!) { service(id: $id) { id name } }", { id });
    assert.equal(gone.body.data, null);
    assert.equal(gone.body.errors[0].message, "Not Authorized");
  });

  it("close() leaves no runtime process", { skip }, async () => {
    // The current xmtplabs flow: empty service (R5), domain (R7), then one patch commit with image + vars (R8).
    const { projectId, environmentId } = s.createProject("close");
    const id = await createService(s, { projectId, environmentId, name: "agent-close" });
    const domain = (await data(s, DOMAIN_CREATE, { input: { serviceId: id, environmentId } })).serviceDomainCreate.domain as string;
    assert.equal(await health(domain), 502); // nothing deployed yet
    await data(s, PATCH_COMMIT, {
      environmentId,
      patch: { services: { [id]: { source: { image: "img" }, variables: { INSTANCE_ID: { value: "inst-close" } } } } },
    });
    await waitFor("health 200", async () => (await health(domain)) === 200, 20_000);
    const procs = findProcesses({ AGENT_POOL_OWNER: tag, INSTANCE_ID: "inst-close" });
    assert.equal(procs.length, 1);
    assert.equal(procs[0]!.env.RAILWAY_PUBLIC_DOMAIN, domain);
    await s.close();
    assert.deepEqual(findProcesses({ AGENT_POOL_OWNER: tag }), []);
  });
});
