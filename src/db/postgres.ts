/**
 * Real Postgres backend: a `pg.Pool` that Kysely's PostgresDialect drives directly.
 */
import { PostgresDialect } from "kysely";
import pg from "pg";
import type { MigrationSession } from "./migrate.ts";

export interface PostgresPoolOptions {
  /** Connections per process (PG_POOL_MAX, default 10). Small on purpose: the hot paths are one
   * statement each, and several replicas share the server's `max_connections`. */
  max?: number;
  /**
   * The server cancels a statement that runs longer (PG_STATEMENT_TIMEOUT_MS; 0 or absent: no
   * limit). Sent as a connection parameter, so it holds for every statement of every connection
   * without a round trip; a migration lifts it for its own transaction (migrate.ts).
   */
  statementTimeoutMs?: number;
  logger?: { warn(obj: unknown, msg?: string): void };
}

export interface PostgresHandle {
  readonly pool: pg.Pool;
  /** Kysely dialect over `pool`; Kysely's `destroy()` ends the pool. */
  readonly dialect: PostgresDialect;
}

export function openPostgres(databaseUrl: string, opts: PostgresPoolOptions = {}): PostgresHandle {
  const pool = openPostgresPool(databaseUrl, opts);
  return { pool, dialect: new PostgresDialect({ pool }) };
}

export function openPostgresPool(databaseUrl: string, opts: PostgresPoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: opts.max ?? 10,
    ...(opts.statementTimeoutMs ? { statement_timeout: opts.statementTimeoutMs } : {}),
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    application_name: "agent-pool",
  });
  // An idle client losing its connection (server restart, network) emits here; without a listener
  // Node would crash the process. The pool drops that client and opens a new one on demand.
  pool.on("error", (err) => {
    opts.logger?.warn({ err: err.message }, "postgres: idle connection error");
  });
  return pool;
}

/** Runs `fn` with a migration session on one pooled connection. */
export async function withPostgresMigrationSession<T>(pool: pg.Pool, fn: (session: MigrationSession) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let failed: Error | undefined;
  try {
    return await fn({
      exec: async (sqlText) => {
        await client.query(sqlText); // no params: simple protocol, several statements allowed
      },
      query: async <R>(sqlText: string, params?: readonly unknown[]) => (await client.query(sqlText, params ? [...params] : [])).rows as R[],
    });
  } catch (err) {
    failed = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    client.release(failed); // a failed session is discarded, not reused
  }
}
