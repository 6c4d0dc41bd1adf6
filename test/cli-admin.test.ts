/**
 * The CLI's pool and agent commands (issue 11) against a running pool manager (the package's bin,
 * local provider, real runtimes): pools and pool show, create / update (flags and a JSON file) /
 * delete, protect and unprotect, release (refused while protected), upgrade of one agent and of a
 * pool's with progress; --json on each; errors with the server's code.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT, cleanUpPool, startPoolProcess, waitFor, type PoolProcess } from "./support/process.ts";

describe("CLI: pools, protection, release and upgrades", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-cli-admin-"));
  let pool: PoolProcess | null = null;
  let env: Record<string, string>;

  const cli = (...args: string[]) => {
    const r = spawnSync(process.execPath, ["bin/agent-pool.mjs", ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      encoding: "utf8",
      timeout: 60_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const json = (...args: string[]) => {
    const r = cli("--json", ...args);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const counts = async () => (await (await fetch(`${pool!.url}/api/pool/counts`)).json()) as Record<string, number>;

  before(async () => {
    pool = await startPoolProcess({ DATA_DIR: dataDir, TICK_INTERVAL_MS: "500", POOL_MIN_IDLE: "2", POOL_MAX_TOTAL: "6" });
    env = { POOL_URL: pool!.url, POOL_API_KEY: readFileSync(join(dataDir, "api-key"), "utf8").trim() };
    await waitFor("2 idle", async () => ((await counts()).idle ?? 0) >= 2, 30_000);
  });
  after(async () => {
    await cleanUpPool(pool, dataDir);
  });

  it("pool update --sizing sets a demand policy (shown by pool <id>), refuses a bad one with its code, and goes back to fixed (issue 13)", () => {
    const set = json(
      "pool",
      "update",
      "default",
      "--sizing",
      '{"mode":"demand","floor":1,"safetyFactor":1.5,"schedule":[{"days":["mon","tue"],"from":"08:00","to":"10:00","floor":4}]}',
    );
    assert.deepEqual([set.pool.sizing.mode, set.pool.sizing.floor, set.pool.sizing.safetyFactor, set.pool.sizing.cooldownMinutes], ["demand", 1, 1.5, 20]);
    const shown = cli("pool", "default");
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(
      shown.stdout,
      /sizing\s+demand: floor 1, ceiling max total, safety ×1.5, window 15 min, cooldown 20 min; schedule \(UTC\) mon,tue 08:00-10:00 ≥4/,
    );
    const bad = cli("--json", "pool", "update", "default", "--sizing", '{"mode":"demand","floor":5,"ceiling":2}');
    assert.equal(bad.code, 1);
    assert.equal(JSON.parse(bad.stdout).code, "VALIDATION_FAILED");
    assert.match(JSON.parse(bad.stdout).error, /sizing/);
    assert.equal(json("pool", "show", "default").pool.sizing.floor, 1, "the refused change changed nothing");
    const usage = cli("pool", "update", "default", "--sizing", "sometimes");
    assert.notEqual(usage.code, 0);
    assert.match(usage.stderr, /--sizing: expected fixed, demand or a JSON policy/);
    assert.deepEqual(json("pool", "update", "default", "--sizing", "fixed").pool.sizing, { mode: "fixed" });
  });

  it("pools, pool create (flags), pool <id> with secrets masked, update from a file, delete when empty", () => {
    const created = json(
      "pool",
      "create",
      "hermes",
      "--runtime",
      "hermes",
      "--min-idle",
      "0",
      "--max-total",
      "2",
      "--env",
      "XMTP_ENV=dev",
      "--env",
      "API_TOKEN=s3cret-value",
      "--join-hosts",
      "convos.org, popup.convos.org",
    );
    assert.equal(created.pool.id, "hermes");
    assert.deepEqual(created.pool.env, { XMTP_ENV: "dev", API_TOKEN: "••••••" });
    assert.deepEqual(created.pool.joinUrlHosts, ["convos.org", "popup.convos.org"]);

    const list = json("pools");
    assert.deepEqual(
      list.pools.map((p: any) => p.pool.id),
      ["default", "hermes"],
    );
    const table = cli("pools");
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^pool\s+runtime\s+provider\s+template/m);
    assert.match(table.stdout, /^hermes\s+hermes\s/m);

    const file = join(dataDir, "hermes.json");
    writeFileSync(file, JSON.stringify({ claimAgentName: "Hermy", maxTotal: 3 }));
    const updated = json("pool", "update", "hermes", "--file", file, "--max-surge", "3");
    assert.deepEqual([updated.pool.claimAgentName, updated.pool.maxTotal, updated.pool.maxSurge, updated.templateChanged], ["Hermy", 3, 3, false]);
    assert.equal(updated.pool.env.API_TOKEN, "••••••", "a change that does not name env keeps it");

    const shown = cli("pool", "hermes");
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /pool hermes \(runtime hermes/);
    assert.match(shown.stdout, /API_TOKEN=••••••/);
    assert.doesNotMatch(shown.stdout + JSON.stringify(json("pool", "show", "hermes")), /s3cret-value/);

    const bad = cli("--json", "pool", "create", "Bad Id");
    assert.equal(bad.code, 1);
    assert.equal(JSON.parse(bad.stdout).code, "VALIDATION_FAILED");
    assert.deepEqual(json("pool", "delete", "hermes"), { ok: true, id: "hermes" });
    const gone = cli("pool", "hermes");
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /\(POOL_NOT_FOUND\)/);
    const notEmpty = cli("pool", "delete", "default");
    assert.equal(notEmpty.code, 1);
    assert.match(notEmpty.stderr, /\(POOL_NOT_EMPTY\)/);
  });

  it("protect, release refused while protected, unprotect, release back to idle", () => {
    const agent = json("claim", "--name", "Ada", "--wait", "30");
    assert.equal(json("protect", agent.instanceId).instance.protected, true);
    const refused = cli("--json", "release", agent.instanceId);
    assert.equal(refused.code, 1);
    assert.equal(JSON.parse(refused.stdout).code, "INSTANCE_PROTECTED");
    assert.match(refused.stderr, /protected: unprotect it before releasing it\. \(INSTANCE_PROTECTED\)/);
    const un = cli("unprotect", agent.instanceId);
    assert.equal(un.code, 0, un.stderr);
    assert.match(un.stdout, /is not protected/);
    const released = cli("release", agent.instanceId);
    assert.equal(released.code, 0, released.stderr);
    assert.match(released.stdout, new RegExp(`released ${agent.instanceId}: reset clean, back in the pool`));
    assert.equal(json("instance", agent.instanceId).instance.status, "idle");
  });

  it("upgrade one agent, then a pool's with --all: progress on stderr, the report or JSON on stdout", async () => {
    await waitFor("2 idle", async () => ((await counts()).idle ?? 0) >= 2, 30_000);
    const a = json("claim", "--name", "Bo", "--wait", "30");
    const b = json("claim", "--name", "Cy", "--wait", "30");
    const updated = json("pool", "update", "default", "--env", "RUNTIME_VERSION=5.0.0");
    assert.equal(updated.templateChanged, true);

    const one = cli("upgrade", a.instanceId);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stderr, /agent-pool: upgrade up-\S+: 1\/1 upgraded, 0 failed, 0 skipped, 0 remaining — done/);
    assert.match(one.stdout, new RegExp(`^${a.instanceId}\\s+upgraded\\s+redeployed with`, "m"));

    const all = cli("--json", "upgrade", "--pool", "default", "--all");
    assert.equal(all.code, 0, all.stderr);
    const job = JSON.parse(all.stdout);
    assert.equal(job.state, "done");
    assert.equal(job.scope, "all");
    assert.ok(
      job.items.some((i: any) => i.instanceId === b.instanceId && i.state === "upgraded"),
      all.stdout,
    );
    assert.ok(!job.items.some((i: any) => i.instanceId === a.instanceId), "already current: not in the job");
    assert.match(all.stderr, /— done/);
    const followed = json("upgrade", "--job", job.id);
    assert.equal(followed.id, job.id);
    for (const id of [a.instanceId, b.instanceId]) assert.equal(json("instance", id).instance.templateHash, updated.pool.templateHash);

    const usage = cli("upgrade");
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /give an instance, or --pool with --all or --ids, or --job/);
    const idle = json("status").instances.find((i: any) => i.status === "idle");
    const notAgent = cli("upgrade", idle.id);
    assert.equal(notAgent.code, 1);
    assert.match(notAgent.stderr, /idle instances are replaced by rollouts/);
  });
});
