import { test } from "node:test";
import { readFileSync } from "node:fs";
import { railwaySchemaPath } from "../../../test/railway/standin.ts";
import assert from "node:assert/strict";
import { DEPLOY_STATUSES, deriveStatus } from "../../instance/derive.ts";
import { RAILWAY_DEPLOYMENT_STATUSES, mapDeployStatus, pickDeployment } from "./status.ts";

const schemaPath = railwaySchemaPath();

test("our deploy status vocabulary is exactly Railway's DeploymentStatus enum in the published schema", {
  skip: schemaPath ? false : "no Railway schema: set RAILWAY_SCHEMA_PATH",
}, () => {
  const schema = JSON.parse(readFileSync(schemaPath!, "utf8")) as { data?: { __schema: unknown }; __schema?: unknown };
  const types = ((schema.data?.__schema ?? schema.__schema) as { types: Array<{ name: string; enumValues?: Array<{ name: string }> }> }).types;
  const en = types.find((t) => t.name === "DeploymentStatus");
  assert.ok(en?.enumValues, "DeploymentStatus is in the schema");
  assert.deepEqual(en.enumValues.map((v) => v.name).sort(), [...DEPLOY_STATUSES].sort());
});

test("all 13 Railway deployment statuses pass through unchanged and are known to deriveStatus", () => {
  assert.equal(RAILWAY_DEPLOYMENT_STATUSES.length, 13);
  const expected: Record<string, string> = {
    BUILDING: "starting",
    DEPLOYING: "starting",
    INITIALIZING: "starting",
    QUEUED: "starting",
    WAITING: "starting",
    CRASHED: "dead",
    FAILED: "dead",
    REMOVED: "dead",
    REMOVING: "dead",
    SKIPPED: "dead",
    SLEEPING: "sleeping",
    NEEDS_APPROVAL: "starting",
    SUCCESS: "starting", // SUCCESS without health → starting
  };
  for (const s of RAILWAY_DEPLOYMENT_STATUSES) {
    assert.equal(mapDeployStatus(s), s);
    assert.equal(deriveStatus({ deployStatus: mapDeployStatus(s), health: undefined, ageMs: 0, stuckTimeoutMs: 1000 }), expected[s], s);
  }
});

test("unknown strings pass through; no deployment is null", () => {
  assert.equal(mapDeployStatus("SOMETHING_NEW"), "SOMETHING_NEW");
  assert.equal(mapDeployStatus(null), null);
  assert.equal(mapDeployStatus(undefined), null);
  assert.equal(mapDeployStatus(""), null);
  assert.equal(mapDeployStatus(42), null);
});

test("pickDeployment prefers the instance's own latest deployment, else the service's newest only in our environment", () => {
  assert.deepEqual(pickDeployment({ status: "SUCCESS" }, { status: "FAILED", environmentId: "env" }, "env"), { status: "SUCCESS" });
  assert.deepEqual(pickDeployment(null, { status: "FAILED", environmentId: "env" }, "env"), { status: "FAILED", environmentId: "env" });
  assert.equal(pickDeployment(null, { status: "FAILED", environmentId: "other" }, "env"), null);
  assert.equal(pickDeployment(undefined, undefined, "env"), null);
});
