/**
 * End to end on the embedded defaults, through the CLI (the package's bin, as `npx agent-pool`
 * runs it): start the server, claim with the CLI, open the invite URL, talk to the agent in its
 * room, and see the pool back to 3 idle; every command's --json output parses; errors carry the
 * server's message and code; --help lists every command with an example.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT, runtimeProcesses, startPoolProcess, waitFor, type PoolProcess } from "./support/process.ts";

describe("CLI against a running pool manager", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "agent-pool-cli-"));
  let pool: PoolProcess;
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
  const counts = async () => (await (await fetch(`${pool.url}/api/pool/counts`)).json()) as Record<string, number>;

  before(async () => {
    pool = await startPoolProcess({ DATA_DIR: dataDir, TICK_INTERVAL_MS: "1000" });
    env = { POOL_URL: pool.url, POOL_API_KEY: readFileSync(join(dataDir, "api-key"), "utf8").trim() };
    await waitFor("3 idle", async () => (await counts()).idle === 3, 30_000);
  });

  after(async () => {
    if (pool && pool.child.exitCode === null) {
      // Ctrl-C in a terminal: as clean as SIGTERM (which test/embedded.test.ts uses).
      pool.child.kill("SIGINT");
      assert.equal(await pool.exited, 0, pool.output().slice(-2000));
    }
    assert.deepEqual(runtimeProcesses(dataDir), [], "no runtime process left after SIGINT");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("migrate applies the migrations to a fresh data dir, and again is a no-op", () => {
    const fresh = mkdtempSync(join(tmpdir(), "agent-pool-migrate-"));
    try {
      for (let i = 0; i < 2; i++) {
        const r = spawnSync(process.execPath, ["--import", "tsx", "src/cli.ts", "migrate"], {
          cwd: REPO_ROOT,
          env: { ...process.env, DATA_DIR: fresh, DATABASE_URL: "" },
          encoding: "utf8",
          timeout: 60_000,
        });
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /migrations applied \(pglite\)/);
      }
    } finally {
      rmSync(fresh, { recursive: true, force: true });
    }
  });

  it("a second process on the running server's data dir (migrate, or another serve) fails clearly", () => {
    for (const args of [["migrate"], ["serve"]]) {
      const r = spawnSync(process.execPath, ["--import", "tsx", "src/cli.ts", ...args], {
        cwd: REPO_ROOT,
        env: { ...process.env, DATA_DIR: dataDir, DATABASE_URL: "", PORT: "0", LOG_LEVEL: "silent" },
        encoding: "utf8",
        timeout: 60_000,
      });
      assert.equal(r.status, 1, `${args[0]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, new RegExp(`data directory .* is in use by process ${pool.child.pid}; stop it first .*\\(DATA_DIR_LOCKED\\)`));
    }
  });

  it("claims with the CLI, talks to the agent at its invite URL, and the pool refills", async () => {
    const r = cli("claim", "--name", "Ada", "--instructions", "You are a pirate who loves maps.", "--json");
    assert.equal(r.code, 0, r.stderr);
    const claim = JSON.parse(r.stdout) as { inviteUrl: string; instanceId: string; status: string };
    assert.equal(claim.status, "claimed");

    const page = await fetch(claim.inviteUrl);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
    const said = await fetch(`${claim.inviteUrl}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: "Where is the treasure?" }),
    });
    assert.ok(said.ok, `message answered ${said.status}`);
    const room = (await said.json()) as { messages: Array<{ role: string; from: string; text: string }> };
    const reply = room.messages.find((m) => m.role === "agent");
    assert.ok(reply, "the agent replied");
    assert.equal(reply.from, "Ada");
    assert.match(reply.text, /pirate/i, "in character");
    assert.match(reply.text, /treasure/i, "about what was said");

    await waitFor(
      "the pool back to 3 idle",
      async () => {
        const c = await counts();
        return c.idle === 3 && c.claimed === 1;
      },
      30_000,
    );
  });

  it("prints status as a table or JSON", async () => {
    const t = cli("status");
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /idle 3/);
    assert.match(t.stdout, /id\s+status\s+deploy/);
    const j = JSON.parse(cli("status", "--json").stdout) as { instances: unknown[] };
    assert.equal(j.instances.length, 4);
  });

  it("drains, kills, and fails with the server's message and a non-zero exit", async () => {
    const d = cli("drain", "1", "--json");
    assert.equal(d.code, 0, d.stderr);
    assert.equal(JSON.parse(d.stdout).drained.length, 1);
    const s = JSON.parse(cli("status", "--json").stdout) as { instances: Array<{ id: string; status: string }> };
    const victim = s.instances.find((i) => i.status === "claimed")!;
    const k = cli("kill", victim.id);
    assert.equal(k.code, 0, k.stderr);
    assert.match(k.stdout, new RegExp(`killed ${victim.id}`));
    const bad = cli("kill", "no-such-instance");
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /No instance "no-such-instance"\. \(INSTANCE_NOT_FOUND\)/);
    const dismiss = cli("dismiss", s.instances.find((i) => i.status === "idle")!.id);
    assert.notEqual(dismiss.code, 0);
    assert.match(dismiss.stderr, /INVALID_TRANSITION/);
    // Without a count, replenish runs a reconcile pass (which refills what was drained and killed).
    const rep = cli("replenish");
    assert.equal(rep.code, 0, rep.stderr);
    assert.match(rep.stdout, /^created \d+/);
    const noServer = spawnSync(process.execPath, ["--import", "tsx", "src/cli.ts", "status"], {
      cwd: REPO_ROOT,
      env: { ...process.env, POOL_URL: "http://127.0.0.1:9", POOL_API_KEY: "x".repeat(20) },
      encoding: "utf8",
    });
    assert.notEqual(noServer.status, 0);
    assert.match(noServer.stderr, /cannot reach the pool manager/);
  });
  it("claims with the server's defaults and says where the claim came from; every command's --json parses", async () => {
    await waitFor("3 idle", async () => (await counts()).idle === 3, 30_000);
    const json = (...args: string[]) => {
      const r = cli(...args, "--json");
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      return JSON.parse(r.stdout);
    };
    const claim = json("claim");
    assert.equal(claim.agentName, "Assistant", "the server's CLAIM_DEFAULT_AGENT_NAME");
    const agents = json("agents").agents as Array<{ id: string; agentName: string; claimSource: string | null }>;
    assert.equal(agents.find((a) => a.id === claim.instanceId)?.claimSource, "cli");
    const human = cli("agents");
    assert.match(human.stdout, new RegExp(`${claim.instanceId}\\s+claimed\\s+Assistant\\s+cli`));
    const detail = json("instance", claim.instanceId);
    assert.equal(detail.instance.agentName, "Assistant");
    assert.ok(detail.events.length >= 3);
    assert.match(cli("instance", claim.instanceId).stdout, /agent\s+Assistant via cli/);
    assert.equal(typeof json("counts").idle, "number");
    assert.equal(json("status").pool, "default");
    assert.ok(Array.isArray(json("add", "1").created));
    assert.ok(Array.isArray(json("drain", "1").drained));
    assert.equal(typeof json("reconcile").durationMs, "number");
    assert.ok(json("replenish").result);
    assert.equal(json("kill", claim.instanceId).status, "dead");
  });

  it("an error prints the server's message and code, on stdout as JSON too with --json", () => {
    const r = cli("instance", "no-such-instance", "--json");
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout), { error: 'No instance "no-such-instance".', code: "INSTANCE_NOT_FOUND", status: 404 });
    assert.match(r.stderr, /^agent-pool: No instance "no-such-instance"\. \(INSTANCE_NOT_FOUND\)$/m);
    const bad = cli("claim", "--join", "not a link", "--wait", "0");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /Invalid request at joinUrl: .*\(VALIDATION_FAILED\)/);
    const unauthorized = spawnSync(process.execPath, ["bin/agent-pool.mjs", "status", "--json"], {
      cwd: REPO_ROOT,
      env: { ...process.env, POOL_URL: pool.url, POOL_API_KEY: "wrong-key-wrong-key" },
      encoding: "utf8",
    });
    assert.equal(unauthorized.status, 1);
    assert.equal(JSON.parse(unauthorized.stdout).code, "UNAUTHORIZED");
    assert.match(unauthorized.stderr, /\(UNAUTHORIZED\)\nagent-pool: set POOL_API_KEY/);
  });

  it("--help through npx lists every command, each with an example", () => {
    const r = spawnSync("npx", ["agent-pool", "--help"], { cwd: REPO_ROOT, env: process.env, encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const section = (name: string) => r.stdout.split(`${name}:\n`)[1]!.split("\n\n")[0]!;
    const commands = section("Commands")
      .split("\n")
      .map((l) => /^ {2}(\S+)/.exec(l)?.[1])
      .filter((c): c is string => c !== undefined && c !== "help");
    assert.deepEqual(commands, [
      "serve",
      "migrate",
      "status",
      "counts",
      "agents",
      "instance",
      "claim",
      "add",
      "replenish",
      "drain",
      "reconcile",
      "kill",
      "dismiss",
      "rollout",
      "pools",
      "pool",
      "protect",
      "unprotect",
      "release",
      "upgrade",
    ]);
    const examples = section("Examples");
    for (const c of commands) assert.match(examples, new RegExp(`\\$ (\\S+=\\S+ )?agent-pool ${c}\\b`), `an example of ${c}`);
  });
});
