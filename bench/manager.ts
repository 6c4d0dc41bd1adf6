/**
 * The pool manager under measurement, in a child process of its own: the real `serve()` (HTTP API,
 * reconciler, claim path, Postgres store), configured by environment variables as in production.
 * With `fleetUrls` its provider is the in-memory one with every instance's URL pointing at a
 * loopback runtime of bench/fleet.ts (a real HTTP server in another process); without, the
 * configured provider (the Railway stand-in).
 *
 * Driven over IPC by bench/run.ts. `stats` reports this process's own CPU counters and memory, the
 * SQL statements it sent, and every pass since the last call, so the figures are the manager's and
 * nobody else's.
 */
import { loadConfig } from "../src/config.ts";
import type { Store } from "../src/db/store.ts";
import type { CreateInstanceSpec, ProviderInstance } from "../src/provider/provider.ts";
import { MemoryProvider } from "../src/provider/memory.ts";
import { serve, type RunningPool } from "../src/serve.ts";

/** The in-memory provider, each new instance on a free loopback endpoint of the fleet. */
class FleetProvider extends MemoryProvider {
  readonly #free: string[];
  readonly #retired = new Set<string>();

  constructor(urls: string[]) {
    super();
    this.#free = [...urls];
  }

  override async create(spec: CreateInstanceSpec): Promise<ProviderInstance> {
    const url = this.#free.shift();
    if (url === undefined) throw new Error("bench fleet: no free endpoint");
    const inst = await super.create(spec);
    this.fleet.get(inst.ref)!.url = url;
    return { ...inst, url };
  }

  override async delete(ref: string): Promise<void> {
    const url = this.fleet.get(ref)?.url;
    await super.delete(ref);
    if (url && !this.#retired.has(url)) this.#free.push(url);
  }

  /** A killed endpoint is never handed to a new instance. */
  retire(url: string): void {
    this.#retired.add(url);
    const i = this.#free.indexOf(url);
    if (i >= 0) this.#free.splice(i, 1);
  }
}

export interface PassInfo {
  durationMs: number;
  leader: boolean;
  healthChecks: number;
  /** The manager's statement count when the pass ended. */
  statements: number;
}

export interface ManagerStats {
  type: "stats";
  cpu: NodeJS.CpuUsage;
  rss: number;
  statements: number;
  passes: PassInfo[];
  counts: Record<string, number>;
  /** The manager's own share of each claim since the last call (ms: total minus the provision). */
  own: number[];
}

let pool: RunningPool | null = null;
let provider: FleetProvider | null = null;
let passes: PassInfo[] = [];
let own: number[] = [];
const statements = () => (pool?.store as (Store & { statementCount: number }) | undefined)?.statementCount ?? 0;

type Message =
  | { type: "start"; env: Record<string, string>; fleetUrls?: string[] }
  | { type: "add"; count: number }
  | { type: "stats" }
  | { type: "idle" }
  | { type: "retire"; url: string }
  | { type: "killClaimed" }
  | { type: "close" };

async function handle(m: Message): Promise<void> {
  switch (m.type) {
    case "start": {
      provider = m.fleetUrls ? new FleetProvider(m.fleetUrls) : null;
      pool = await serve(loadConfig(m.env), {
        ...(provider ? { provider } : {}),
        onClaim: (outcome, seconds, provisionSeconds) => {
          if (outcome === "claimed") own.push((seconds - provisionSeconds) * 1000);
        },
      });
      // Every pass reports to the metrics (the railway tests observe passes the same way).
      const onTick = pool.metrics.onTick.bind(pool.metrics);
      pool.metrics.onTick = (t) => {
        passes.push({ durationMs: t.durationMs, leader: t.leader, healthChecks: t.healthChecks, statements: statements() });
        onTick(t);
      };
      process.send!({ type: "started", url: pool.url, apiKey: pool.apiKey, poolId: pool.ops.poolId });
      return;
    }
    case "add": {
      const r = await pool!.reconciler.createNow(pool!.ops.poolId, m.count);
      process.send!({ type: "added", created: r.created.length, errors: r.errors.slice(0, 5) });
      return;
    }
    case "stats": {
      const counts = await pool!.store.countByStatus(pool!.ops.poolId);
      const reply: ManagerStats = {
        type: "stats",
        cpu: process.cpuUsage(),
        rss: process.memoryUsage.rss(),
        statements: statements(),
        passes,
        counts: { ...counts },
        own,
      };
      passes = [];
      own = [];
      process.send!(reply);
      return;
    }
    case "idle": {
      const rows = await pool!.store.listInstances(pool!.ops.poolId);
      process.send!({ type: "idle", instances: rows.filter((r) => r.status === "idle").map((r) => ({ id: r.id, url: r.url })) });
      return;
    }
    case "retire":
      provider?.retire(m.url);
      process.send!({ type: "retired" });
      return;
    case "killClaimed": {
      const rows = await pool!.store.listInstances(pool!.ops.poolId);
      let n = 0;
      for (const r of rows) {
        if (r.status !== "claimed") continue;
        await pool!.ops.kill(r.id).catch(() => undefined);
        n++;
      }
      process.send!({ type: "killedClaimed", n });
      return;
    }
    case "close":
      await pool?.close();
      process.disconnect();
      return;
  }
}

process.on("message", (m: Message) => {
  handle(m).catch((err: Error) => process.send!({ type: "error", error: err.stack ?? err.message }));
});
process.send!({ type: "spawned" });
