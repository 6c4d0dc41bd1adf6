/**
 * The benchmarks' child processes (the pool manager, the loopback runtimes, the load generator):
 * each its own node process, so each one's CPU counters are its own. Talked to over IPC with
 * request/answer messages matched by type.
 */
import { fork, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";

export interface BenchChild {
  readonly proc: ChildProcess;
  /** Sends `msg` and resolves with the next message of type `answer` (rejects if the child dies). */
  ask<T>(msg: { type: string } & Record<string, unknown>, answer: string, timeoutMs?: number): Promise<T>;
  /** Resident set size of the child now and at its peak, from /proc (bytes). */
  memory(): { rss: number; peak: number };
  close(): Promise<void>;
}

/** Forks `file` (TypeScript, through tsx) and waits for its `spawned` message. */
export async function spawnChild(file: URL, env: Record<string, string> = {}): Promise<BenchChild> {
  const proc = fork(file.pathname, [], {
    execArgv: ["--import", "tsx"],
    env: { ...process.env, ...env },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const exited = new Promise<never>((_, reject) => proc.once("exit", (code, sig) => reject(new Error(`${file.pathname} exited (${code ?? sig})`))));
  exited.catch(() => undefined);
  const next = <T>(type: string, timeoutMs: number) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.off("message", on);
        reject(new Error(`${file.pathname}: no "${type}" within ${timeoutMs} ms`));
      }, timeoutMs);
      const on = (m: { type: string; error?: string }) => {
        if (m.type === "error") {
          clearTimeout(timer);
          proc.off("message", on);
          reject(new Error(`${file.pathname}: ${m.error}`));
        } else if (m.type === type) {
          clearTimeout(timer);
          proc.off("message", on);
          resolve(m as T);
        }
      };
      proc.on("message", on);
      exited.catch(reject);
    });
  await next("spawned", 60_000);
  return {
    proc,
    ask: (msg, answer, timeoutMs = 600_000) => {
      const p = next<never>(answer, timeoutMs);
      proc.send(msg);
      return p;
    },
    memory: () => procMemory(proc.pid!),
    close: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const gone = new Promise((r) => proc.once("exit", r));
      if (proc.connected) proc.send({ type: "close" });
      const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/** VmRSS and VmHWM of a process (bytes); NaN off Linux. */
export function procMemory(pid: number): { rss: number; peak: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
    return { rss: kb("VmRSS"), peak: kb("VmHWM") };
  } catch {
    return { rss: NaN, peak: NaN };
  }
}

/** CPU seconds (user + system) between two process.cpuUsage() readings. */
export function cpuSeconds(from: NodeJS.CpuUsage, to: NodeJS.CpuUsage): number {
  return (to.user - from.user + to.system - from.system) / 1e6;
}
