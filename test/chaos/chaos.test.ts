/**
 * The end-to-end fault runs (issue 8) at their default sizes, as CI runs them: three replicas on one
 * Postgres database through 200 claims with 5xx, 429s, outages, a lost create answer, crashed
 * deployments and a SIGKILLed replica; then two deployments sharing a project and pool name. The
 * figures and every check are printed as diagnostics; a failure names its seed, and
 * `CHAOS_SEED=<seed>` (or `npm run chaos -- --seed <seed>`) replays the same schedule.
 *
 * Without Railway's schema (RAILWAY_SCHEMA_PATH) both are reported SKIPPED with the reason.
 */
import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { railwaySchemaPath } from "../railway/standin.ts";
import { DEFAULT_FAULT_RUN, runFaultRun } from "./fault-run.ts";
import { formatFaultRun, formatTwoDeployments } from "./report.ts";
import { randomSeed } from "./rng.ts";
import { DEFAULT_TWO_DEPLOYMENTS, runTwoDeployments } from "./two-deployments.ts";

const skip = railwaySchemaPath() ? false : "no Railway schema: set RAILWAY_SCHEMA_PATH to Railway's introspection schema.json";
const seed = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : randomSeed();
const replay = `replay with CHAOS_SEED=${seed} node scripts/test.mjs test/chaos/chaos.test.ts, or npm run chaos -- --seed ${seed}`;

/** Runs `body` with a timeline logger; an error thrown before the checks still names the seed. */
async function withSeed<T>(t: TestContext, body: (log: (line: string) => void) => Promise<T>): Promise<T> {
  const timeline: string[] = [];
  try {
    return await body((line) => timeline.push(line));
  } catch (err) {
    throw new Error(`seed ${seed}: ${(err as Error).message}\n${timeline.join("\n")}\n(${replay})`, { cause: err });
  } finally {
    for (const line of timeline) t.diagnostic(line);
  }
}

test("fault run: 3 replicas, 200 claims, 5xx/429/outages, crashed deployments, a SIGKILLed replica", { skip, timeout: 300_000 }, async (t) => {
  const report = await withSeed(t, (log) => runFaultRun({ seed, ...DEFAULT_FAULT_RUN, log }));
  for (const line of formatFaultRun(report).split("\n")) t.diagnostic(line);
  // The run did what it is for: claims were served, the replica was killed and came back, both crashes happened.
  assert.ok(report.claims.ok > 0, `no claim succeeded (seed ${seed})`);
  assert.equal(report.kills.length, 1, `one replica killed (seed ${seed})`);
  assert.notEqual(report.kills[0]!.restartedAtMs, null, `the killed replica restarted (seed ${seed})`);
  assert.ok(report.crashes.idle && report.crashes.claimed, `an idle and a claimed deployment crashed (seed ${seed})`);
  for (const c of report.checks) assert.ok(c.ok, `${c.name}: ${c.detail}\n${report.explanations.join("\n")}\n(seed ${seed}; ${replay})`);
});

test("two deployments sharing a project, environment and pool name leave each other's services alone", { skip, timeout: 180_000 }, async (t) => {
  const report = await withSeed(t, (log) => runTwoDeployments({ seed, ...DEFAULT_TWO_DEPLOYMENTS, log }));
  for (const line of formatTwoDeployments(report).split("\n")) t.diagnostic(line);
  for (const c of report.checks) assert.ok(c.ok, `${c.name}: ${c.detail}\n(seed ${seed}; ${replay})`);
});
