/**
 * The local provider's state file, `<stateDir>/instances.json`: what this state dir runs, so a
 * restarted manager adopts live instances instead of leaking them. Written atomically (temp file,
 * fsync, rename); read leniently (a malformed entry is skipped, a corrupt file ignored, and what it
 * described is then stopped as strays rather than leaked).
 */
import { createHash } from "node:crypto";
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { dirname, resolve } from "node:path";

/** One line of the state file. */
export interface LocalStateEntry {
  instanceId: string;
  name: string;
  pid: number;
  port: number;
  /** ISO time. */
  startedAt: string;
  command: string[];
  /** The owner id the process carries (`AGENT_POOL_OWNER_ID`); absent: made before owner ids. */
  ownerId?: string;
  /** The `AGENT_POOL_OWNER` tag the process carries; absent: the file's `ownerTag` (earlier versions). */
  ownerTag?: string;
}

export interface LocalStateFile {
  version: 1;
  /** The tag of the manager that wrote the file. */
  ownerTag: string;
  instances: LocalStateEntry[];
}

export interface LocalStateRead {
  /** The file's `ownerTag`, null when absent. */
  fileTag: string | null;
  entries: LocalStateEntry[];
}

/** Instance ids the provider accepts (they name log files and go into process env). */
export const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function defaultOwnerTag(stateDir: string): string {
  return `agent-pool-${createHash("sha256").update(resolve(stateDir)).digest("hex").slice(0, 16)}`;
}

/**
 * Tags a process of this state dir may carry besides the current one: the default derivation and the
 * one serve.ts derived (sha256 of the data dir, the state dir's parent). Accepted so an upgrade or a
 * changed tag never turns running instances into leaks (not adopted, not killed) or strays.
 */
export function legacyOwnerTags(stateDir: string): string[] {
  const dir = resolve(stateDir);
  return [defaultOwnerTag(dir), createHash("sha256").update(dirname(dir)).digest("hex").slice(0, 16)];
}

export function readStateFile(path: string, log: { error(o: object, m?: string): void; warn(o: object, m?: string): void }): LocalStateRead {
  const none = { fileTag: null, entries: [] };
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return none;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    // Unreadable state: its processes become strays and are stopped, rather than leaked.
    log.error({ err, path }, "local provider: state file is corrupt; ignoring it");
    return none;
  }
  const file = parsed as Partial<LocalStateFile> | null;
  const fileTag = typeof file?.ownerTag === "string" && file.ownerTag !== "" ? file.ownerTag : null;
  const list = file?.instances;
  if (!Array.isArray(list)) return { fileTag, entries: [] };
  const entries = list.filter((e): e is LocalStateEntry => {
    const ok =
      e !== null &&
      typeof e === "object" &&
      typeof e.instanceId === "string" &&
      SAFE_ID.test(e.instanceId) &&
      typeof e.name === "string" &&
      Number.isInteger(e.pid) &&
      e.pid > 1 &&
      Number.isInteger(e.port) &&
      typeof e.startedAt === "string" &&
      Array.isArray(e.command) &&
      (e.ownerId === undefined || typeof e.ownerId === "string") &&
      (e.ownerTag === undefined || (typeof e.ownerTag === "string" && e.ownerTag !== ""));
    if (!ok) log.warn({ entry: e }, "local provider: skipping malformed state entry");
    return ok;
  });
  return { fileTag, entries };
}

/** Temp file + fsync + rename: a crash mid-write leaves the old state, never half a file. */
export function writeStateFile(path: string, ownerTag: string, entries: Iterable<LocalStateEntry>): void {
  const state: LocalStateFile = {
    version: 1,
    ownerTag,
    instances: [...entries].map((e) => ({
      instanceId: e.instanceId,
      name: e.name,
      pid: e.pid,
      port: e.port,
      startedAt: e.startedAt,
      command: e.command,
      ...(e.ownerId ? { ownerId: e.ownerId } : {}),
      ...(e.ownerTag ? { ownerTag: e.ownerTag } : {}),
    })),
  };
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, "w");
  try {
    writeSync(fd, `${JSON.stringify(state, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
