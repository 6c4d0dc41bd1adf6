/**
 * Test helpers for running the real pool manager as a child process and watching the process table.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { createServer } from "node:net";
import { rmSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { findProcesses } from "../../src/provider/process-table.ts";

export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value or the deadline passes (then throws with `what`). */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 20_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The owner tag the server gives its local instances (sha256 of the absolute data dir). */
export function ownerTagFor(dataDir: string): string {
  return createHash("sha256").update(resolve(dataDir)).digest("hex").slice(0, 16);
}

/** Live runtime processes of one pool manager, from the process table. */
export function runtimeProcesses(dataDir: string) {
  return findProcesses({ AGENT_POOL_OWNER: ownerTagFor(dataDir) });
}

export interface PoolProcess {
  child: ChildProcess;
  url: string;
  output: () => string;
  exited: Promise<number | null>;
}

/** Starts `agent-pool serve` (as `npm start` does) in a child process and waits for /healthz. */
export async function startPoolProcess(env: Record<string, string>): Promise<PoolProcess> {
  const port = env.PORT ? Number(env.PORT) : await freePort();
  let out = "";
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli.ts", "serve"], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", LOG_LEVEL: "info", ...env, PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    "the pool manager to answer /healthz",
    async () => {
      if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}: ${out}`);
      const r = await fetch(`${url}/healthz`);
      return r.ok;
    },
    // Start-up takes 4 to 9 s alone; on a loaded 2-core machine (two test files beside helpers'
    // runs) one took over 30 s, so the bound is generous: a server that never answers still fails.
    60_000,
  );
  return { child, url, output: () => out, exited };
}

/**
 * Test teardown: SIGTERM the pool manager if it still runs, kill any runtime left behind (a test
 * that failed half-way must not leak processes into the next one), and remove the data dir.
 */
export async function cleanUpPool(pool: PoolProcess | null, dataDir: string): Promise<void> {
  if (pool && pool.child.exitCode === null) {
    pool.child.kill("SIGTERM");
    await pool.exited;
  }
  for (const p of runtimeProcesses(dataDir)) {
    try {
      process.kill(-p.pgid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
}
