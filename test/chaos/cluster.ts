/**
 * The pool-manager replicas of a fault run (real child processes, `agent-pool serve`) and the
 * client that talks to them. The client records every answer that is not a 2xx, so the run can
 * check that the pool managers only fail in the documented ways and always say why (a `code`).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { REPO_ROOT, freePort, type PoolProcess } from "../support/process.ts";

export const CHAOS_API_KEY = "chaos-run-api-key-0123456789abcdef";

/** One pool-manager replica; killing and restarting it keeps its port (clients keep its address). */
export class Replica {
  proc: PoolProcess | null = null;
  starts = 0;
  kills = 0;
  /** Why starts exited before answering (each was retried). */
  readonly failedStarts: string[] = [];
  readonly #outputs: string[] = [];
  readonly #dataDir: string;
  #port = 0;

  constructor(
    readonly name: string,
    readonly env: Record<string, string>,
  ) {
    // A data dir of its own: the API key is fixed and the database is Postgres, but `serve` locks it.
    this.#dataDir = mkdtempSync(join(tmpdir(), `agent-pool-chaos-${name}-`));
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  get up(): boolean {
    return this.proc !== null && this.proc.child.exitCode === null && this.proc.child.signalCode === null;
  }

  /**
   * Starts the replica as Railway's restart policy would (railway.toml: ON_FAILURE, 10 retries): a
   * start that exits (e.g. the provider answered 5xx while the environments were resolved) is
   * started again. Each such exit is counted in `failedStarts`.
   */
  async start(): Promise<void> {
    if (this.#port === 0) this.#port = await freePort();
    for (let attempt = 0; ; attempt++) {
      const started = await spawnPool({ ...this.env, DATA_DIR: this.#dataDir, POOL_API_KEY: CHAOS_API_KEY, PORT: String(this.#port) });
      if ("proc" in started) {
        this.proc = started.proc;
        this.starts++;
        return;
      }
      this.#outputs.push(started.output);
      const why = started.output
        .split("\n")
        .filter((l) => l.trim() && !l.startsWith("{"))
        .join(" ")
        .trim();
      this.failedStarts.push(`exit ${started.code}: ${why.slice(0, 300)}`);
      if (attempt >= 10) throw new Error(`${this.name} exited at start ${attempt + 1} times; last: ${why}`);
    }
  }

  /** SIGKILL: no shutdown hook runs, the lease is not given up, claims in flight are cut off. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p) return;
    p.child.kill("SIGKILL");
    await p.exited;
    this.#outputs.push(p.output());
    this.proc = null;
    this.kills++;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.child.exitCode === null && p.child.signalCode === null) {
      p.child.kill("SIGTERM");
      const timer = setTimeout(() => p.child.kill("SIGKILL"), 15_000);
      await p.exited;
      clearTimeout(timer);
    }
    if (p) this.#outputs.push(p.output());
    this.proc = null;
    rmSync(this.#dataDir, { recursive: true, force: true });
  }

  /** Everything every incarnation of this replica printed. */
  output(): string {
    return [...this.#outputs, this.proc?.output() ?? ""].filter(Boolean).join(`\n--- ${this.name} restarted ---\n`);
  }
}

/**
 * `agent-pool serve` as a child process (as test/support/process.ts startPoolProcess, but a start
 * that exits is reported at once with its output instead of after the /healthz timeout).
 */
async function spawnPool(env: Record<string, string>): Promise<{ proc: PoolProcess } | { code: number | null; output: string }> {
  let out = "";
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli.ts", "serve"], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  const exited = new Promise<number | null>((res) => child.once("exit", (code) => res(code)));
  const url = `http://127.0.0.1:${env.PORT}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await exited;
      return { code: child.exitCode, output: out };
    }
    const ok = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return { proc: { child, url, output: () => out, exited } };
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      await exited;
      throw new Error(`the pool manager did not answer /healthz within 60 s:\n${out.slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface HttpAnswer {
  /** null: no HTTP answer (connection refused, reset, timeout). */
  status: number | null;
  json: unknown;
  /** Why there was no answer. */
  error?: string;
  /** The connection was refused: the request certainly did not reach a pool manager. */
  refused?: boolean;
}

export interface HttpErrorRecord {
  replica: string;
  method: string;
  path: string;
  status: number;
  code: string | null;
  /** The body, cut to 300 characters. */
  body: string;
}

export interface ClaimBody {
  agentName: string;
  instructions: string;
  waitMs?: number;
}

export class PoolClient {
  readonly errors: HttpErrorRecord[] = [];
  /** Claim requests sent and not answered yet, per replica name: start times (ms since epoch). */
  readonly inFlight = new Map<string, Set<number>>();

  async call(
    replica: Replica,
    method: "GET" | "POST" | "DELETE",
    path: string,
    opts: { body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<HttpAnswer> {
    let res: Response;
    try {
      res = await fetch(`${replica.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${CHAOS_API_KEY}`,
          ...(opts.body !== undefined ? { "content-type": "application/json" } : {}),
          ...(opts.headers ?? {}),
        },
        ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
        signal: AbortSignal.timeout(opts.timeoutMs ?? 60_000),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      return { status: null, json: null, error: cause?.code ?? (err as Error).name ?? String(err), refused: cause?.code === "ECONNREFUSED" };
    }
    let text = "";
    try {
      text = await res.text();
    } catch (err) {
      // Headers came, the body did not: the replica died while answering.
      return { status: null, json: null, error: `body lost after ${res.status}: ${(err as Error).message}` };
    }
    let json: unknown = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (res.status >= 300) {
      const code = typeof (json as { code?: unknown } | null)?.code === "string" ? (json as { code: string }).code : null;
      this.errors.push({ replica: replica.name, method, path, status: res.status, code, body: text.slice(0, 300) });
    }
    return { status: res.status, json };
  }

  async claim(replica: Replica, body: ClaimBody, key: string | null): Promise<HttpAnswer> {
    const mine = new Set<number>();
    const set = this.inFlight.get(replica.name) ?? this.inFlight.set(replica.name, mine).get(replica.name)!;
    const started = Date.now();
    set.add(started);
    try {
      return await this.call(replica, "POST", "/api/pool/claim", { body, headers: key ? { "idempotency-key": key } : {} });
    } finally {
      set.delete(started);
    }
  }

  /** Claims in flight at `replica` sent at least `minAgeMs` ago. */
  claimsInFlight(replica: Replica, minAgeMs: number): number {
    const now = Date.now();
    return [...(this.inFlight.get(replica.name) ?? [])].filter((t) => now - t >= minAgeMs).length;
  }

  /** Counts and every live instance, from the first replica that answers. */
  async status(replicas: readonly Replica[]): Promise<PoolStatus | null> {
    for (const r of replicas) {
      if (!r.up) continue;
      const a = await this.call(r, "GET", "/api/pool/status", { timeoutMs: 15_000 });
      if (a.status === 200) return a.json as PoolStatus;
    }
    return null;
  }

  /** One instance with its events (for the report of a broken invariant). */
  async instance(replicas: readonly Replica[], id: string): Promise<unknown> {
    for (const r of replicas) {
      if (!r.up) continue;
      const a = await this.call(r, "GET", `/api/pool/instances/${encodeURIComponent(id)}`, { timeoutMs: 15_000 });
      if (a.status === 200 || a.status === 404) return a.json;
    }
    return null;
  }
}

export interface InstanceView {
  id: string;
  status: string;
  providerRef: string | null;
  conversationId: string | null;
  agentName: string | null;
}

export interface PoolStatus {
  counts: Record<string, number>;
  instances: InstanceView[];
}
