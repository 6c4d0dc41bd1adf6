/**
 * PGlite backend: an in-process Postgres with ONE session, guarded by a lockfile (PGlite corrupts
 * a data directory that two processes open), plus the adapter that lets Kysely's PostgresDialect
 * drive it as if it were a `pg.Pool`.
 */
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { PostgresDialect } from "kysely";
import type { PostgresCursor, PostgresPool, PostgresPoolClient, PostgresQueryResult } from "kysely";
import { lockDataDir } from "../data-dir-lock.ts";
import type { MigrationSession } from "./migrate.ts";

export interface PgliteHandle {
  readonly db: PGlite;
  /** Null for an in-memory database. */
  readonly dataDir: string | null;
  /** Kysely dialect over the single session (see PgliteSessionPool). */
  readonly dialect: PostgresDialect;
  /** Closes PGlite, then releases the data-dir lock. Idempotent. */
  close(): Promise<void>;
}

export interface OpenPgliteOptions {
  /** Cluster template (see pgliteTemplatePath) a fresh database starts from; null = always initdb. */
  template?: string | null;
}

/** Opens PGlite in `dataDir` (which must exist), or in memory when null. */
export async function openPglite(dataDir: string | null, opts: OpenPgliteOptions = {}): Promise<PgliteHandle> {
  const unlock = dataDir === null ? () => {} : lockDataDir(dataDir, { hint: "stop it first (PGlite allows one process)" });
  let db: PGlite;
  try {
    const fresh = dataDir === null || !existsSync(join(dataDir, "PG_VERSION"));
    const template = fresh ? templateFor(opts.template === undefined ? pgliteTemplatePath() : opts.template, dataDir === null) : {};
    if (template.copyFrom && dataDir !== null) copyCluster(template.copyFrom, dataDir);
    db = await PGlite.create({
      ...(dataDir === null ? {} : { dataDir }),
      ...(template.loadDataDir ? { loadDataDir: template.loadDataDir } : {}),
    });
  } catch (err) {
    unlock();
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    db,
    dataDir,
    dialect: new PostgresDialect({ pool: new PgliteSessionPool(db) }),
    close: () =>
      (closing ??= (async () => {
        try {
          await db.close();
        } finally {
          unlock();
        }
      })()),
  };
}

// ---- first start: a cluster template instead of initdb ----

/**
 * initdb in WASM is the slowest step of a first start: 5 to 8 s on these machines, against about
 * 1 s to copy a ready cluster directory and reopen it (or 0.8 s to unpack a dumped one in memory).
 * `npm install` runs initdb once (scripts/prepare-pglite.ts) and keeps the cluster in
 * node_modules/.cache, named after the PGlite version that made it, twice: as a directory that a
 * fresh data directory is copied from, and as the tarball an in-memory database (the tests') loads.
 * That is what gets a fresh clone to 3 idle instances within 10 s of `npm start`. Without the
 * template (installed with --ignore-scripts, or another PGlite version) PGlite runs initdb itself:
 * slower, same result. The copied cluster was shut down cleanly, so it opens like any reopened one.
 */
export function pgliteTemplatePath(): string {
  const entry = createRequire(import.meta.url).resolve("@electric-sql/pglite");
  let dir = dirname(entry);
  while (!existsSync(join(dir, "package.json")) && dirname(dir) !== dir) dir = dirname(dir);
  const version = (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { version: string }).version;
  return fileURLToPath(new URL(`../../node_modules/.cache/agent-pool/pglite-${version}-cluster`, import.meta.url));
}

/** What a fresh database starts from: `cluster` (a directory to copy), `tarball` (to load), or neither. */
function templateFor(base: string | null, inMemory: boolean): { copyFrom?: string; loadDataDir?: Blob } {
  if (base === null) return {};
  if (!inMemory && existsSync(join(base, "PG_VERSION"))) return { copyFrom: base };
  try {
    return { loadDataDir: new Blob([readFileSync(`${base}.tar`)]) };
  } catch {
    return {};
  }
}

/**
 * Copies a cluster into a data directory with PG_VERSION last: PG_VERSION is what marks a
 * directory as holding a cluster, so a copy cut short (the process killed) is redone at the next
 * start instead of being opened half-written.
 */
function copyCluster(from: string, to: string): void {
  const marker = join(from, "PG_VERSION");
  cpSync(from, to, { recursive: true, filter: (src) => src !== marker });
  copyFileSync(marker, join(to, "PG_VERSION"));
}

/** Writes a cluster template at `base` (directory) and `base.tar` from a dump, each atomically. */
export async function writePgliteTemplate(base: string, dump: Blob): Promise<void> {
  mkdirSync(dirname(base), { recursive: true });
  const tmp = `${base}.${process.pid}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  writeFileSync(tmp, Buffer.from(await dump.arrayBuffer()));
  renameSync(tmp, `${base}.tar`);
  const db = await PGlite.create({ dataDir: tmp, loadDataDir: dump });
  await db.close();
  rmSync(base, { recursive: true, force: true });
  renameSync(tmp, base);
}

/** Runs initdb in memory and writes the cluster template. Returns its base path. */
export async function buildPgliteTemplate(base = pgliteTemplatePath()): Promise<string> {
  const db = await PGlite.create();
  let dump: Blob;
  try {
    dump = await db.dumpDataDir("none");
  } finally {
    await db.close();
  }
  await writePgliteTemplate(base, dump);
  return base;
}

// ---- Kysely adapter ----

/** A FIFO mutex: waiters get the session in the order they asked. */
class FifoMutex {
  #locked = false;
  readonly #waiters: Array<() => void> = [];
  async lock(): Promise<void> {
    if (!this.#locked) {
      this.#locked = true;
      return;
    }
    await new Promise<void>((r) => this.#waiters.push(r));
  }
  unlock(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#locked = false;
  }
}

type Command = PostgresQueryResult<unknown>["command"];

/**
 * A `pg.Pool` look-alike over PGlite's single session for Kysely's PostgresDialect. `connect()`
 * hands out the session exclusively, so a Kysely transaction owns it from BEGIN to COMMIT/ROLLBACK.
 * Trade-off: every query of the process queues behind an open transaction (PGlite has no second
 * session); keep transactions short and never use the outer Kysely instance inside one (deadlock).
 */
export class PgliteSessionPool implements PostgresPool {
  readonly #db: PGlite;
  readonly #mutex = new FifoMutex();
  constructor(db: PGlite) {
    this.#db = db;
  }

  async connect(): Promise<PostgresPoolClient> {
    await this.#mutex.lock();
    return new PgliteSessionClient(this.#db, () => this.#mutex.unlock());
  }

  /** PGlite itself is closed by its owner (`PgliteHandle.close`), after Kysely lets go. */
  async end(): Promise<void> {}
}

class PgliteSessionClient implements PostgresPoolClient {
  readonly #db: PGlite;
  readonly #unlock: () => void;
  /** True once a statement may have opened a transaction that was not ended yet. */
  #maybeInTransaction = false;
  #released = false;

  constructor(db: PGlite, unlock: () => void) {
    this.#db = db;
    this.#unlock = unlock;
  }

  query<R>(sql: string, parameters: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>>;
  query<R>(cursor: PostgresCursor<R>): PostgresCursor<R>;
  query<R>(sqlOrCursor: string | PostgresCursor<R>, parameters?: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>> | PostgresCursor<R> {
    if (typeof sqlOrCursor !== "string") throw new Error("PGlite adapter: cursors are not supported");
    return this.#run<R>(sqlOrCursor, parameters ?? []);
  }

  async #run<R>(sqlText: string, parameters: ReadonlyArray<unknown>): Promise<PostgresQueryResult<R>> {
    if (this.#released) throw new Error("PGlite adapter: query on a released connection");
    const keyword = firstKeyword(sqlText);
    if (keyword === "BEGIN" || keyword === "START" || keyword === "SAVEPOINT") this.#maybeInTransaction = true;
    const res = await this.#db.query<R>(sqlText, [...parameters]);
    if (endsTransaction(keyword, sqlText)) this.#maybeInTransaction = false;
    return {
      command: (res.command?.toUpperCase() ?? commandOf(sqlText)) as Command,
      rowCount: res.rowCount ?? res.affectedRows ?? res.rows.length,
      rows: res.rows,
    };
  }

  /** Never hand the session on inside a transaction (possibly an aborted one that would fail every
   * later statement): roll it back first. A ROLLBACK outside a transaction is only a warning. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    if (!this.#maybeInTransaction) {
      this.#unlock();
      return;
    }
    this.#db.exec("ROLLBACK").then(
      () => this.#unlock(),
      () => this.#unlock(),
    );
  }
}

/** COMMIT/ROLLBACK end the transaction; ROLLBACK TO SAVEPOINT does not. Checked only after success:
 * a failed COMMIT keeps the flag set, which costs one harmless ROLLBACK at release. */
function endsTransaction(keyword: string, sqlText: string): boolean {
  if (keyword === "COMMIT" || keyword === "END" || keyword === "ABORT") return true;
  return keyword === "ROLLBACK" && !/^\s*rollback\s+(work\s+|transaction\s+)?to\b/i.test(sqlText);
}

function firstKeyword(sqlText: string): string {
  return /^\s*([a-z]+)/i.exec(sqlText)?.[1]?.toUpperCase() ?? "";
}

/** Fallback when PGlite gives no command tag: the statement keyword; for `WITH ...`, the keyword
 * of the main statement (the last one following a closing parenthesis). */
function commandOf(sqlText: string): string {
  const kw = firstKeyword(sqlText);
  if (kw !== "WITH") return kw;
  const mains = [...sqlText.matchAll(/\)\s*(select|insert|update|delete|merge)\b/gi)];
  return mains.at(-1)?.[1]?.toUpperCase() ?? "SELECT";
}

/** The migration runner's view of a PGlite session (used before Kysely takes the session). */
export function pgliteMigrationSession(db: PGlite): MigrationSession {
  return {
    exec: async (sqlText) => {
      await db.exec(sqlText);
    },
    query: async <R>(sqlText: string, params?: readonly unknown[]) => (await db.query<R>(sqlText, params ? [...params] : [])).rows,
  };
}
