/**
 * The data-directory lock: one live process per directory. PGlite needs it (two processes opening
 * one cluster corrupt it) and so does the local provider (two managers adopting the same processes
 * from one state file would each delete what the other runs, whatever database they share).
 *
 * `<dir>/.lock` is created O_EXCL and names its holder by pid AND process start time, so a pid the
 * kernel recycled to an unrelated process (or a container where the manager is pid 1 every time) is
 * not taken for the holder. A lock whose holder is dead is stale and taken over.
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { PoolError } from "./errors.ts";
import { HAS_PROCFS, readStat } from "./provider/process-table.ts";

export interface LockHolder {
  pid: number;
  /** `/proc/<pid>/stat` start time (clock ticks since boot); null off Linux or in an old lock file. */
  startTime: string | null;
  /** Random per take: tells this process's own locks apart, and a lock we hold from one we took over. */
  token: string | null;
}

export interface LockDataDirOptions {
  /** What the directory is, for the error message. Default "data directory". */
  what?: string;
  /** Appended to the error message: what to do about it. Default "stop it first". */
  hint?: string;
}

/** Locks this process holds, by path, with their token. */
const heldLocks = new Map<string, string>();

/** Takes `<dir>/.lock`; returns the release function (idempotent; removes the file only while it is ours). */
export function lockDataDir(dir: string, opts: LockDataDirOptions = {}): () => void {
  const path = resolve(join(dir, ".lock"));
  const me: LockHolder = { pid: process.pid, startTime: processStartTime(process.pid), token: randomBytes(8).toString("hex") };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, "wx");
      try {
        writeSync(fd, `${JSON.stringify(me)}\n`);
      } finally {
        closeSync(fd);
      }
      heldLocks.set(path, me.token!);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        if (heldLocks.get(path) === me.token) heldLocks.delete(path);
        // Only remove the file if it is still ours (not taken over after we were thought dead).
        if (readLockHolder(path)?.token === me.token) rmSync(path, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = readLockHolder(path);
      if (holder && holderAlive(path, holder)) {
        throw new PoolError("DATA_DIR_LOCKED", `${opts.what ?? "data directory"} ${dir} is in use by process ${holder.pid}; ${opts.hint ?? "stop it first"}`, {
          dataDir: dir,
          pid: holder.pid,
        });
      }
      // Stale (dead holder, or unreadable): take it over. Two processes taking over the same stale lock
      // at the same instant could both succeed; that race needs a crash plus a simultaneous double
      // start, and a kernel lock (flock) is not reachable from Node without a native module.
      rmSync(path, { force: true });
    }
  }
  throw new PoolError("DATA_DIR_LOCKED", `could not take the lock ${path}; another process keeps taking it`);
}

/** The holder named in a lock file: the current JSON form, or a bare pid (written by earlier versions). */
export function readLockHolder(path: string): LockHolder | null {
  let text: string;
  try {
    text = readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof parsed === "number") return Number.isInteger(parsed) && parsed > 0 ? { pid: parsed, startTime: null, token: null } : null;
  const o = parsed as Partial<LockHolder> | null;
  if (!o || typeof o !== "object" || !Number.isInteger(o.pid) || o.pid! <= 0) return null;
  return {
    pid: o.pid!,
    startTime: typeof o.startTime === "string" ? o.startTime : null,
    token: typeof o.token === "string" ? o.token : null,
  };
}

function holderAlive(path: string, holder: LockHolder): boolean {
  if (holder.pid === process.pid) {
    // Our own pid: held only if this process took it and has not released it. Otherwise it is a lock
    // of an earlier process that had our pid (pid reuse across container restarts).
    const token = heldLocks.get(path);
    return token !== undefined && (holder.token === null || holder.token === token);
  }
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
    // EPERM: the pid exists but is another user's; the start time below still tells a recycled pid.
  }
  if (!HAS_PROCFS) return true; // no /proc: trust kill(0)
  const stat = readStat(holder.pid);
  if (!stat) return readStat(process.pid) === null; // gone since kill(0), unless /proc is unreadable here
  if (stat.state === "Z" || stat.state === "X") return false;
  return holder.startTime === null || holder.startTime === stat.startTime;
}

function processStartTime(pid: number): string | null {
  return readStat(pid)?.startTime ?? null;
}
