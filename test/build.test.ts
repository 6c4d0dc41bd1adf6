/**
 * The production build (issue 10): `scripts/build.mjs` compiles src/ into a directory laid out as
 * the Docker image is (package.json and node_modules beside dist/), and the compiled server starts
 * on plain node, without the TypeScript loader: it answers /healthz and /readyz, serves the API,
 * runs its instances from the compiled reference runtime, and hands out a claim. The bin runs
 * dist/ when NODE_ENV=production.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { copyFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT, freePort, runtimeProcesses, waitFor } from "./support/process.ts";

const API_KEY = "build-test-key-0123456789abcdef";

describe("compiled build", () => {
  let root: string;
  let app: string;
  let dataDir: string;
  let child: ChildProcess | null = null;
  let out = "";

  before(() => {
    root = mkdtempSync(join(tmpdir(), "agent-pool-build-"));
    app = join(root, "app");
    dataDir = join(root, "data");
  });
  after(async () => {
    if (child && child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child!.once("exit", r));
    }
    for (const p of runtimeProcesses(dataDir)) {
      try {
        process.kill(-p.pgid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(root, { recursive: true, force: true });
  });

  it("builds into a temp dir: every module, the migrations and the dashboard assets", () => {
    const r = spawnSync(process.execPath, [join(REPO_ROOT, "scripts/build.mjs"), "--out-dir", join(app, "dist")], { cwd: REPO_ROOT, encoding: "utf8" });
    assert.equal(r.status, 0, `build failed:\n${r.stdout}\n${r.stderr}`);
    // The image's layout: package.json and node_modules beside dist/.
    copyFileSync(join(REPO_ROOT, "package.json"), join(app, "package.json"));
    symlinkSync(realpathSync(join(REPO_ROOT, "node_modules")), join(app, "node_modules"), "dir");
    cpSync(join(REPO_ROOT, "bin"), join(app, "bin"), { recursive: true });

    const sql = (dir: string) =>
      readdirSync(dir)
        .filter((n) => n.endsWith(".sql"))
        .sort();
    assert.deepEqual(sql(join(app, "dist/db/migrations")), sql(join(REPO_ROOT, "src/db/migrations")));
    for (const f of ["app.js", "app.css"]) assert.ok(readFileSync(join(app, "dist/dashboard/assets", f)).length > 0, f);
    for (const f of ["cli.js", "serve.js", "runtime/main.js", "client/index.js"]) assert.ok(readFileSync(join(app, "dist", f)).length > 0, f);
    assert.deepEqual(
      readdirSync(join(app, "dist")).filter((n) => n.endsWith(".ts")),
      [],
      "no TypeScript emitted",
    );
    // Imports were rewritten: nothing compiled asks for a .ts file.
    assert.doesNotMatch(readFileSync(join(app, "dist/serve.js"), "utf8"), /from "\.[^"]*\.ts"/);
  });

  it("the compiled server starts without tsx, answers /healthz and /readyz, serves the API and a claim", { timeout: 120_000 }, async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    child = spawn(process.execPath, [join(app, "dist/cli.js"), "serve"], {
      cwd: root,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "/tmp",
        NODE_ENV: "production",
        PORT: String(port),
        DATA_DIR: dataDir,
        POOL_API_KEY: API_KEY,
        POOL_MIN_IDLE: "1",
        POOL_MAX_TOTAL: "3",
        LOG_LEVEL: "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout!.on("data", (d) => (out += d));
    child.stderr!.on("data", (d) => (out += d));
    const get = async (path: string, auth = false) => {
      const res = await fetch(`${url}${path}`, auth ? { headers: { authorization: `Bearer ${API_KEY}` } } : {});
      return { status: res.status, body: (await res.json()) as any };
    };
    await waitFor(
      "/healthz of the compiled server",
      async () => {
        if (child!.exitCode !== null) throw new Error(`exited with ${child!.exitCode}: ${out}`);
        return (await get("/healthz")).status === 200;
      },
      60_000,
      50,
    );
    assert.equal((await get("/api/pool/counts")).status, 200);
    assert.equal((await get("/api/pool/status")).status, 401, "the API key is still required");
    await waitFor("an idle instance", async () => (await get("/api/pool/counts")).body.idle >= 1, 60_000, 100);
    assert.deepEqual((await get("/readyz")).body.ready, true);

    // Nothing runs through the TypeScript loader: neither the manager nor its instances.
    const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    assert.deepEqual(cmdline(child.pid!).slice(1), [join(app, "dist/cli.js"), "serve"]);
    const runtimes = runtimeProcesses(dataDir);
    assert.ok(runtimes.length >= 1);
    for (const p of runtimes) {
      const argv = cmdline(p.pid);
      assert.equal(argv.at(-1), join(app, "dist/runtime/main.js"));
      assert.ok(!argv.some((a) => a.includes("tsx")), `runtime argv: ${argv.join(" ")}`);
    }

    const claim = await fetch(`${url}/api/pool/claim`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ agentName: "Ada" }),
    });
    const body = (await claim.json()) as any;
    assert.equal(claim.status, 200, JSON.stringify(body));
    assert.equal(body.agentName, "Ada");
    assert.match(body.inviteUrl, /^http:\/\/127\.0\.0\.1:\d+\/i\//);
    const css = await fetch(`${url}/dashboard/assets/app.css`);
    assert.equal(css.status, 200, "dashboard assets are served from dist/");

    // The bin runs dist/ in production (there is no src/ here to fall back on).
    const bin = spawnSync(process.execPath, [join(app, "bin/agent-pool.mjs"), "counts", "--json"], {
      cwd: root,
      encoding: "utf8",
      env: { ...process.env, NODE_ENV: "production", POOL_URL: url, POOL_API_KEY: API_KEY },
    });
    assert.equal(bin.status, 0, bin.stderr);
    assert.equal(JSON.parse(bin.stdout).claimed, 1);
    assert.equal(bin.stderr, "");

    child.kill("SIGTERM");
    assert.equal(await new Promise((r) => child!.once("exit", r)), 0, `clean exit: ${out}`);
  });
});
