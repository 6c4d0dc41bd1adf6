/**
 * `agent-pool rollout …` (the package's bin, as a user runs it) against the real HTTP server over
 * a real store, instances from an in-memory provider: status and history of a template change,
 * pause and resume with the server's 409 when there is nothing to act on, undo (a rollback), and
 * --json output typed by the client's schemas.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { RolloutActionView, RolloutView } from "agent-pool/client";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { REPO_ROOT } from "./support/process.ts";
import { ensureIdle, startTestServer, type TestServer } from "./support/http-server.ts";

describe("agent-pool rollout", () => {
  let store: Store;
  let t: TestServer;
  let url = "";

  /** Runs the CLI without blocking this process's event loop (the server answers it from here). */
  const cli = (...args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ["bin/agent-pool.mjs", ...args], {
        cwd: REPO_ROOT,
        env: { ...process.env, POOL_URL: url, POOL_API_KEY: t.apiKey },
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });

  before(async () => {
    store = await openStore({ dataDir: null });
    t = await startTestServer({ store, minIdle: 2, maxTotal: 4 });
    await ensureIdle(t.ops, 2);
    url = await t.app.listen({ port: 0, host: "127.0.0.1" });
  });
  after(async () => {
    await t?.close();
    await store?.close();
  });

  it("status, pause, resume, history and undo of a template change", async () => {
    const none = await cli("rollout", "status", "default");
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /pool default has had no rollout/);

    await t.ops.registry.update("default", { env: { RUNTIME_VERSION: "2" } });
    const status = await cli("rollout", "status", "default");
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^rollout \d+ of pool default: running \(template changed\), template \w+ → \w+\n {2}updated 0\/2, 2 left/m);

    const paused = await cli("rollout", "pause", "default", "--json");
    assert.equal(paused.code, 0, paused.stderr);
    assert.equal(RolloutActionView.parse(JSON.parse(paused.stdout)).rollout.status, "paused");
    const again = await cli("rollout", "pause", "default");
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^agent-pool: Pool "default" has no running rollout to pause\. \(INVALID_TRANSITION\)$/m);
    const resumed = await cli("rollout", "resume", "default");
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, /: running /);

    for (let i = 0; i < 20 && (await t.rollouts.state("default")).current?.status !== "complete"; i++) await t.ops.reconcile();
    const done = RolloutView.parse(JSON.parse((await cli("rollout", "status", "default", "--json")).stdout));
    assert.deepEqual([done.status, done.progress.updated, done.progress.total], ["complete", 2, 2]);

    const undo = await cli("rollout", "undo", "default");
    assert.equal(undo.code, 0, undo.stderr);
    assert.match(undo.stdout, /^pool default back to template \w+\nrollout \d+ of pool default: running \(rolled back\)/);
    const history = await cli("rollout", "history", "default");
    assert.match(history.stdout, /^id\s+status\s+reason/);
    assert.match(history.stdout, /running\s+rolled back/);
    assert.match(history.stdout, /complete\s+template changed\s+\w+\s+\w+\s+2\/2/);
    assert.equal(JSON.parse((await cli("rollout", "history", "default", "--json")).stdout).length, 2);
    const missing = await cli("rollout", "status", "nope");
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /\(POOL_NOT_FOUND\)/);
  });
});
