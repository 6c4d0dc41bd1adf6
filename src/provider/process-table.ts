/**
 * A small read-only view of the process table, for the local provider: find processes by their
 * environment (orphans of a crashed pool manager carry `AGENT_POOL_OWNER`), tell a live process from a
 * zombie, and list the members of a process group.
 *
 * Linux only (it reads `/proc`); elsewhere every function degrades to "nothing known" and callers fall
 * back to `process.kill(pid, 0)`.
 */
import { readFileSync, readdirSync } from "node:fs";

export const HAS_PROCFS = process.platform === "linux";

export interface ProcessStat {
  pid: number;
  /** One-letter state: R, S, D, Z (zombie), T, X (dead), ... */
  state: string;
  ppid: number;
  pgid: number;
  /** Start time in clock ticks since boot: with the pid, identifies one process (pids get recycled). */
  startTime: string;
}

export interface FoundProcess {
  pid: number;
  pgid: number;
  env: Record<string, string>;
}

/** Parses `/proc/<pid>/stat`; null when the process is gone or unreadable. */
export function readStat(pid: number): ProcessStat | null {
  if (!HAS_PROCFS) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // `comm` is in parentheses and may itself contain spaces and parentheses: split after the last `)`.
  const close = text.lastIndexOf(")");
  if (close < 0) return null;
  const fields = text.slice(close + 2).split(" ");
  // fields[0] = state (field 3), [1] = ppid, [2] = pgrp, ... [19] = starttime (field 22).
  const state = fields[0];
  const ppid = Number(fields[1]);
  const pgid = Number(fields[2]);
  const startTime = fields[19];
  if (!state || !Number.isInteger(ppid) || !Number.isInteger(pgid) || startTime === undefined) return null;
  return { pid, state, ppid, pgid, startTime };
}

/** The initial environment of a process (`/proc/<pid>/environ`); null when gone or not ours to read. */
export function readEnviron(pid: number): Record<string, string> | null {
  if (!HAS_PROCFS) return null;
  let raw: string;
  try {
    raw = readFileSync(`/proc/${pid}/environ`, "utf8");
  } catch {
    return null;
  }
  const env: Record<string, string> = {};
  for (const pair of raw.split("\0")) {
    const eq = pair.indexOf("=");
    if (eq > 0) env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** Pids of every process in `/proc` (empty off Linux). */
export function allPids(): number[] {
  if (!HAS_PROCFS) return [];
  let names: string[];
  try {
    names = readdirSync("/proc");
  } catch {
    return [];
  }
  const pids: number[] = [];
  for (const name of names) {
    if (/^\d+$/.test(name)) pids.push(Number(name));
  }
  return pids;
}

function isZombie(stat: ProcessStat): boolean {
  return stat.state === "Z" || stat.state === "X";
}

/**
 * Live (non-zombie) processes whose environment contains every `envMatch` entry. Processes that vanish
 * or belong to another user while we read are skipped. Returns [] off Linux.
 */
export function findProcesses(envMatch: Record<string, string>): FoundProcess[] {
  const out: FoundProcess[] = [];
  const wanted = Object.entries(envMatch);
  for (const pid of allPids()) {
    const env = readEnviron(pid);
    if (!env) continue;
    if (!wanted.every(([k, v]) => env[k] === v)) continue;
    const stat = readStat(pid);
    if (!stat || isZombie(stat)) continue;
    out.push({ pid, pgid: stat.pgid, env });
  }
  return out;
}

/** Live (non-zombie) members of a process group. Returns [] off Linux. */
export function groupMembers(pgid: number): ProcessStat[] {
  const out: ProcessStat[] = [];
  for (const pid of allPids()) {
    const stat = readStat(pid);
    if (stat && stat.pgid === pgid && !isZombie(stat)) out.push(stat);
  }
  return out;
}

/**
 * Whether `pid` is a running process: exists, is not a zombie, and (when given) has the same start
 * time as when we first saw it, so a recycled pid does not pass. EPERM means some other user's process
 * holds the pid, which cannot be one of ours.
 */
export function isRunning(pid: number, startTime?: string | null): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false; // ESRCH: gone; EPERM: not ours.
  }
  if (!HAS_PROCFS) return true;
  const stat = readStat(pid);
  if (!stat || isZombie(stat)) return false;
  return startTime == null || stat.startTime === startTime;
}

/** Whether any non-zombie process is left in the group. */
export function groupAlive(pgid: number): boolean {
  if (HAS_PROCFS) return groupMembers(pgid).length > 0;
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
