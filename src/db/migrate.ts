/**
 * Migration runner: applies the numbered `.sql` files of `./migrations/` in order, once each.
 * Everything runs in ONE transaction behind an advisory lock, so several replicas starting at once
 * serialize here and the later ones find the work done.
 */
import { readdir, readFile } from "node:fs/promises";

/** The two calls the runner needs; both backends provide them (see pglite.ts / postgres.ts). */
export interface MigrationSession {
  /** Runs one or more statements with the simple query protocol (no parameters). */
  exec(sqlText: string): Promise<void>;
  /** Runs one statement with parameters and returns its rows. */
  query<R = Record<string, unknown>>(sqlText: string, params?: readonly unknown[]): Promise<R[]>;
}

export interface Migration {
  /** File name without `.sql`, e.g. `0001_init`. */
  id: string;
  sql: string;
}

/** Arbitrary constant that names "the migration lock" among the database's advisory locks. */
export const MIGRATION_LOCK_KEY = 7_348_112_019_004_231n;

const MIGRATIONS_DIR = new URL("./migrations/", import.meta.url);

/** The migration files, ordered by their numeric prefix. */
export async function listMigrations(): Promise<Migration[]> {
  const names = (await readdir(MIGRATIONS_DIR)).filter((n) => /^\d+_.+\.sql$/.test(n)).sort();
  return Promise.all(names.map(async (n) => ({ id: n.slice(0, -".sql".length), sql: await readFile(new URL(n, MIGRATIONS_DIR), "utf8") })));
}

/** Applies the migrations not yet recorded; returns the ids applied (empty when up to date). */
export async function migrate(session: MigrationSession): Promise<string[]> {
  const migrations = await listMigrations();
  const applied: string[] = [];
  await session.exec("BEGIN");
  try {
    // No statement timeout here (PG_STATEMENT_TIMEOUT_MS): a replica may wait for another's
    // migration behind the lock, and a migration of a large table may take longer than a query.
    await session.exec("SET LOCAL statement_timeout = 0");
    await session.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
    await session.exec("CREATE TABLE IF NOT EXISTS schema_migrations (id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
    const done = new Set((await session.query<{ id: string }>("SELECT id FROM schema_migrations")).map((r) => r.id));
    for (const m of migrations) {
      if (done.has(m.id)) continue;
      await session.exec(m.sql);
      await session.query("INSERT INTO schema_migrations (id) VALUES ($1)", [m.id]);
      applied.push(m.id);
    }
    await session.exec("COMMIT");
  } catch (err) {
    await session.exec("ROLLBACK").catch(() => {}); // the original error matters more
    throw err;
  }
  return applied;
}
