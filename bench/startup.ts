/**
 * Start-up (issues 1 and 10): `agent-pool serve` on the embedded defaults (PGlite, local provider,
 * 3 idle), from launch to listening and to 3 idle instances, on a fresh data directory and on a
 * restart, two ways:
 *
 * - loader: `node --import tsx src/cli.ts serve` (what `npm start` runs; TypeScript compiled in
 *   memory at every start, instances through tsx too);
 * - compiled: `node dist/cli.js serve` after `npm run build` (what the Docker image runs; built here
 *   into a temporary directory laid out as the image is), its instances the compiled runtime.
 *
 * With the manager's memory when 3 instances are idle: RSS and its peak so far (VmHWM).
 */
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { procMemory } from "./child.ts";
import { mb, ms } from "./util.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Builds into `<dir>/app/dist` beside a package.json and node_modules (the image's layout). */
export function buildCompiled(dir: string): string {
  const app = join(dir, "app");
  const r = spawnSync(process.execPath, [join(ROOT, "scripts/build.mjs"), "--out-dir", join(app, "dist")], { cwd: ROOT, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`build failed: ${r.stderr || r.stdout}`);
  copyFileSync(join(ROOT, "package.json"), join(app, "package.json"));
  symlinkSync(realpathSync(join(ROOT, "node_modules")), join(app, "node_modules"), "dir");
  return app;
}

interface Start {
  listenMs: number;
  idleMs: number;
  rss: number;
  peak: number;
}

/** Launch → listening → 3 idle, for one start of the CLI on the given data dir. */
async function timeStart(argv: string[], cwd: string, dataDir: string): Promise<Start> {
  const port = await freePort();
  const t0 = performance.now();
  const child = spawn(process.execPath, argv, {
    cwd,
    env: { ...process.env, DATA_DIR: dataDir, PORT: String(port), LOG_LEVEL: "warn", DATABASE_URL: "" },
    stdio: "ignore",
  });
  let listenMs = NaN;
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`serve exited with ${child.exitCode}`);
      if (performance.now() - t0 > 60_000) throw new Error("no 3 idle instances within 60 s");
      try {
        const res = await fetch(`http://127.0.0.1:${port}/api/pool/counts`);
        if (Number.isNaN(listenMs)) listenMs = performance.now() - t0;
        if (((await res.json()) as { idle: number }).idle >= 3) {
          const idleMs = performance.now() - t0;
          return { listenMs, idleMs, ...procMemory(child.pid!) };
        }
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
}

export async function startupBench(): Promise<void> {
  console.log("Start-up of `agent-pool serve` on the embedded defaults (local provider, PGlite, 3 idle): TypeScript loader vs compiled");
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-bench-start-"));
  try {
    const tBuild = performance.now();
    const app = buildCompiled(dir);
    const buildS = (performance.now() - tBuild) / 1000;
    const modes: Array<[string, string[], string]> = [
      ["loader", ["--import", "tsx", "src/cli.ts", "serve"], ROOT],
      ["compiled", [join(app, "dist/cli.js"), "serve"], app],
    ];
    for (const [label, argv, cwd] of modes) {
      const dataDir = mkdtempSync(join(dir, `data-${label}-`));
      for (const when of ["fresh data dir", "restart"]) {
        const t = await timeStart(argv, cwd, dataDir);
        console.log(
          `  ${label.padEnd(9)} ${when.padEnd(15)} listening after ${ms(t.listenMs, 0).padStart(8)}  3 idle after ${ms(t.idleMs, 0).padStart(8)}` +
            `  manager RSS ${mb(t.rss)} (peak ${mb(t.peak)})`,
        );
      }
    }
    console.log(`  (npm run build took ${buildS.toFixed(1)} s)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
