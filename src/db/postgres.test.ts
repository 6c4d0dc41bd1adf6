/**
 * Postgres settings from the configuration (issue 10): the statement timeout and the pool size
 * reach the connections, and a migration is not cut short by the timeout while it waits for
 * another replica's.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { postgresLabel } from "../../test/support/databases.ts";
import { startTestPostgres, type TestPostgres } from "../../test/support/postgres.ts";
import { waitFor } from "../../test/support/process.ts";
import { MIGRATION_LOCK_KEY } from "./migrate.ts";
import { openStore } from "./open.ts";
import { openPostgres } from "./postgres.ts";

describe(`Postgres settings: ${postgresLabel}`, () => {
  let server: TestPostgres;
  before(async () => {
    server = await startTestPostgres();
  });
  after(async () => {
    await server?.stop();
  });

  it("applies the statement timeout to every connection and sizes the pool", async () => {
    const { pool } = openPostgres(server.url, { max: 3, statementTimeoutMs: 150 });
    try {
      assert.equal(pool.options.max, 3);
      const shown = await Promise.all(
        [1, 2, 3].map(async () => (await pool.query<{ statement_timeout: string }>("SHOW statement_timeout")).rows[0]!.statement_timeout),
      );
      assert.deepEqual(shown, ["150ms", "150ms", "150ms"]);
      await assert.rejects(pool.query("SELECT pg_sleep(2)"), (err: { code?: string }) => err.code === "57014", "query_canceled by the server");
      assert.equal((await pool.query("SELECT 1 AS one")).rows[0].one, 1, "the pool works after a cancelled statement");
    } finally {
      await pool.end();
    }
  });

  it("no timeout when it is 0", async () => {
    const { pool } = openPostgres(server.url, { statementTimeoutMs: 0 });
    try {
      assert.equal((await pool.query<{ statement_timeout: string }>("SHOW statement_timeout")).rows[0]!.statement_timeout, "0");
    } finally {
      await pool.end();
    }
  });

  it("a replica waiting longer than the timeout for another's migration still migrates", async () => {
    const fresh = await startTestPostgres();
    const holder = new pg.Client({ connectionString: fresh.url });
    await holder.connect();
    try {
      // Another replica in the middle of migrating: it holds the migration lock.
      await holder.query("BEGIN");
      await holder.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
      const opening = openStore({ databaseUrl: fresh.url, postgres: { statementTimeoutMs: 100, poolMax: 2 } });
      await waitFor(
        "the new replica waiting for the migration lock",
        async () => {
          const { rows } = await holder.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted");
          return rows[0].n === 1;
        },
        10_000,
        10,
      );
      // Held well past the 100 ms timeout: the waiting lock statement must not be cancelled.
      await new Promise((r) => setTimeout(r, 600));
      await holder.query("COMMIT");
      const store = await opening;
      try {
        await store.ping();
        await store.upsertPool({ id: "p", minIdle: 0, maxTotal: 1 });
      } finally {
        await store.close();
      }
    } finally {
      await holder.end();
      await fresh.stop();
    }
  });
});
