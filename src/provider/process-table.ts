/**
 * A small view of the process table, for the local provider: find processes by their environment
 * (orphans of a crashed pool manager carry `AGENT_POOL_OWNER`), tell a live process from a zombie,
 * walk the ppid tree, and stop a set of processes (SIGTERM, grace, SIGKILL) that may keep forking.
 *
 * Linux only (it reads `/proc`); elsewhere every function degrades to "nothing known" and callers fall
 * back to `process.kill(pid, 0)` and process-group signals.
 */
import { readFileSync, readdirSync } from "node:fs";

export const HAS_PROCFS = process.platform === "linux";

export interface ProcessStat {
  pid: number;
  /** One-letter state: R, S, D, Z (zombie), T, X (dead), ... */
  state: string;
  ppid: number;
  pgid: number;
  /** Session id: a child started `detached` is the leader of its own session (setsid). */
  sid: number;
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
  // fields[0] = state (field 3), [1] = ppid, [2] = pgrp, [3] = session, ... [19] = starttime (field 22).
  const state = fields[0];
  const ppid = Number(fields[1]);
  const pgid = Number(fields[2]);
  const sid = Number(fields[3]);
  const startTime = fields[19];
  if (!state || !Number.isInteger(ppid) || !Number.isInteger(pgid) || !Number.isInteger(sid) || startTime === undefined) return null;
  return { pid, state, ppid, pgid, sid, startTime };
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

/**
 * One pass over `/proc`: the live (non-zombie) processes, with their environments read on demand.
 * Used to find everything an instance runs, including descendants that left its process group
 * (a wrapper that starts its runtime with setsid) by walking the ppid links. Empty off Linux.
 */
export class ProcessSnapshot {
  readonly stats = new Map<number, ProcessStat>();
  readonly #env = new Map<number, Record<string, string> | null>();
  #children: Map<number, number[]> | null = null;

  static take(): ProcessSnapshot {
    const snap = new ProcessSnapshot();
    for (const pid of allPids()) {
      const stat = readStat(pid);
      if (stat && !isZombie(stat)) snap.stats.set(pid, stat);
    }
    return snap;
  }

  /** The process's initial environment; null when gone or another user's. Read once per snapshot. */
  env(pid: number): Record<string, string> | null {
    if (!this.#env.has(pid)) this.#env.set(pid, this.stats.has(pid) ? readEnviron(pid) : null);
    return this.#env.get(pid)!;
  }

  /** The seeds that are live in this snapshot, and every live descendant of them. */
  withDescendants(seeds: Iterable<number>): Set<number> {
    if (!this.#children) {
      this.#children = new Map();
      for (const stat of this.stats.values()) {
        const siblings = this.#children.get(stat.ppid);
        if (siblings) siblings.push(stat.pid);
        else this.#children.set(stat.ppid, [stat.pid]);
      }
    }
    const out = new Set<number>();
    const todo = [...seeds].filter((pid) => this.stats.has(pid));
    while (todo.length > 0) {
      const pid = todo.pop()!;
      if (out.has(pid)) continue;
      out.add(pid);
      for (const child of this.#children.get(pid) ?? []) todo.push(child);
    }
    return out;
  }
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

/** Live processes by pid, with the start time that identifies each (a pid alone may be recycled). */
export type ProcessSet = Map<number, string>;

/** What identifies the processes of one child started `detached` (own session and group). */
export interface ProcessTreeRoot {
  /** The child's pid: also the id of its process group and session. */
  pid: number;
  /** The pid's start time when it was started or adopted; null when not known. */
  startTime: string | null;
  /** Without a start time: whether the pid is still our child not seen to exit (not recyclable). */
  alive: boolean;
  /** Whether a process environment carries the child's marker (inherited by its descendants). */
  marked: (env: Record<string, string> | null) => boolean;
}

/**
 * Every live process of the tree in `snap`: the root while it is still the same process (pid and
 * start time), the members of its group and session while the root or one of them is ours (the ids
 * are not reused while a member lives), every marked process (a descendant reparented to init keeps
 * its env), the processes in `known` (found by an earlier look, same start time), and all their
 * descendants by ppid (a runtime its wrapper started with setsid). Never this process or its
 * ancestors. Adds what it finds to `known`, so a descendant whose parent dies between two looks is
 * still found. A descendant that both cleared its env and was orphaned before the first look cannot
 * be told from an unrelated process, and is not found.
 */
export function treeProcesses(snap: ProcessSnapshot, root: ProcessTreeRoot, known: ProcessSet): ProcessSet {
  const rootStat = snap.stats.get(root.pid);
  const rootOurs = rootStat !== undefined && (root.startTime !== null ? rootStat.startTime === root.startTime : root.alive);
  let groupOurs = rootOurs;
  const seeds = new Set<number>();
  const group: number[] = [];
  for (const p of snap.stats.values()) {
    const inGroup = p.pgid === root.pid || p.sid === root.pid;
    if (inGroup) group.push(p.pid);
    if (known.get(p.pid) === p.startTime || root.marked(snap.env(p.pid))) {
      seeds.add(p.pid);
      if (inGroup) groupOurs = true;
    }
  }
  if (rootOurs) seeds.add(root.pid);
  if (groupOurs) for (const pid of group) seeds.add(pid);
  return collect(snap, seeds, new Set(), known);
}

/**
 * Processes carrying one of `tags` in `AGENT_POOL_OWNER` (or in `known`) that are not `accounted`
 * for, with their descendants: the strays of a state dir. Adds what it finds to `known`.
 */
export function strayProcesses(snap: ProcessSnapshot, isOurTag: (tag: string) => boolean, accounted: Set<number>, known: ProcessSet): ProcessSet {
  const seeds: number[] = [];
  for (const p of snap.stats.values()) {
    if (accounted.has(p.pid)) continue;
    const tag = snap.env(p.pid)?.AGENT_POOL_OWNER;
    if (known.get(p.pid) === p.startTime || (tag !== undefined && isOurTag(tag))) seeds.push(p.pid);
  }
  return collect(snap, seeds, accounted, known);
}

/** The seeds and their descendants, less `excluded`, this process and its ancestors (never signalled,
 * whatever env they carry: a manager started from an instance's shell inherits its marker). */
function collect(snap: ProcessSnapshot, seeds: Iterable<number>, excluded: Set<number>, known: ProcessSet): ProcessSet {
  const spared = new Set<number>([process.pid]);
  for (let pid = snap.stats.get(process.pid)?.ppid ?? 0; pid > 1 && !spared.has(pid); pid = snap.stats.get(pid)?.ppid ?? 0) spared.add(pid);
  const out: ProcessSet = new Map();
  for (const pid of snap.withDescendants(seeds)) {
    if (excluded.has(pid) || spared.has(pid)) continue;
    const startTime = snap.stats.get(pid)!.startTime;
    out.set(pid, startTime);
    known.set(pid, startTime);
  }
  return out;
}

export interface StopOptions {
  /** Grace between SIGTERM and SIGKILL; 0 sends SIGKILL at once. */
  graceMs: number;
  /** How long SIGKILLed processes get to disappear before `stopProcesses` gives up. */
  killWaitMs: number;
  /** Called for a signal that failed other than with ESRCH (gone). */
  onSignalError?: (err: unknown, pid: number, sig: NodeJS.Signals) => void;
}

/**
 * Stops every process `look()` returns: SIGTERM, then (after `graceMs`) SIGKILL, looking again every
 * 50 ms so a process forked meanwhile is signalled too. Each signal goes only to a pid that still has
 * the start time it was found with. Resolves true when `look()` finds nothing, false if something
 * survived SIGKILL for `killWaitMs`. Linux only (needs `/proc` to tell a recycled pid).
 */
export async function stopProcesses(look: () => ProcessSet, opts: StopOptions): Promise<boolean> {
  const signal = (procs: ProcessSet, sig: NodeJS.Signals, skip?: Set<number>): boolean => {
    for (const [pid, startTime] of procs) {
      if (skip?.has(pid)) continue;
      skip?.add(pid);
      if (readStat(pid)?.startTime !== startTime) continue; // gone, or the pid was recycled
      try {
        process.kill(pid, sig);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") opts.onSignalError?.(err, pid, sig);
      }
    }
    return procs.size === 0;
  };
  if (opts.graceMs > 0) {
    const termed = new Set<number>(); // one SIGTERM each: a second one means "hurry" to some runtimes
    if (await pollUntil(() => signal(look(), "SIGTERM", termed), opts.graceMs)) return true;
  }
  return pollUntil(() => signal(look(), "SIGKILL"), opts.killWaitMs);
}

/** Polls `pred` every 50 ms until it holds (true) or `timeoutMs` passes (false). */
export async function pollUntil(pred: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (pred()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
