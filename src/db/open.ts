/**
 * Picks the backend, migrates it and returns the Store: a database URL means real Postgres;
 * otherwise PGlite in a data directory (or in memory).
 */
import { mkdirSync } from "node:fs";
import { PgliteHintBus, PostgresHintBus } from "./hints.ts";
import { KyselyStore } from "./kysely-store.ts";
import { migrate } from "./migrate.ts";
import { openPglite, pgliteMigrationSession } from "./pglite.ts";
import { openPostgres, withPostgresMigrationSession } from "./postgres.ts";
import type { Store } from "./store.ts";

export interface OpenStoreOptions {
  /** `postgres://...`: use real Postgres (wins over `dataDir`). */
  databaseUrl?: string;
  /** PGlite data directory, created if missing; null or absent = in-memory PGlite. */
  dataDir?: string | null;
  logger?: { warn(obj: unknown, msg?: string): void };
  /** Postgres only: connections per process and the statement timeout (see postgres.ts). */
  postgres?: { poolMax?: number; statementTimeoutMs?: number };
}

export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  if (opts.databaseUrl) {
    const pg = openPostgres(opts.databaseUrl, {
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.postgres?.poolMax !== undefined ? { max: opts.postgres.poolMax } : {}),
      ...(opts.postgres?.statementTimeoutMs !== undefined ? { statementTimeoutMs: opts.postgres.statementTimeoutMs } : {}),
    });
    try {
      await withPostgresMigrationSession(pg.pool, migrate);
    } catch (err) {
      await pg.pool.end().catch(() => {});
      throw err;
    }
    const hints = new PostgresHintBus({ connectionString: opts.databaseUrl, ...(opts.logger ? { logger: opts.logger } : {}) });
    return new KyselyStore({ backend: "postgres", dialect: pg.dialect, hints });
  }

  const dataDir = opts.dataDir ?? null;
  if (dataDir !== null) mkdirSync(dataDir, { recursive: true });
  const lite = await openPglite(dataDir);
  let hints: PgliteHintBus;
  try {
    await migrate(pgliteMigrationSession(lite.db));
    // Before Kysely takes the session (see PgliteHintBus).
    hints = await PgliteHintBus.open(lite.db);
  } catch (err) {
    await lite.close().catch(() => {});
    throw err;
  }
  return new KyselyStore({ backend: "pglite", dialect: lite.dialect, hints, onClose: () => lite.close() });
}
