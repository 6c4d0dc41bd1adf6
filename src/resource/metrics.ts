/**
 * Metrics of per-instance resources (issue 12), on the pool's registry: spend and limits per pool and
 * kind (read from the store at scrape time, so every replica reports the same), resources per state,
 * and the kinds' vendor calls by outcome. The earlier system sent per-instance spend to an analytics
 * tool by parsing key names in a cron job; here it is a gauge per pool.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import type { Store } from "../db/store.ts";
import type { ResourceKind } from "./kind.ts";
import type { ResourcePassResult } from "./reconciler.ts";

export class ResourceMetrics {
  readonly calls: Counter<"kind" | "operation" | "outcome">;
  readonly collected: Counter<"kind" | "reason">;

  constructor(registry: Registry, store: Store) {
    const totals = async () => store.resourceTotals();
    new Gauge({
      name: "agent_pool_resource_spend_usd",
      help: "Spend in USD on the per-instance resources (keys) of instances not yet deleted, by pool and kind, as the vendor last reported it.",
      labelNames: ["pool", "kind"],
      registers: [registry],
      async collect() {
        this.reset();
        const sums = new Map<string, number>();
        for (const t of await totals()) sums.set(`${t.poolId}\n${t.kind}`, (sums.get(`${t.poolId}\n${t.kind}`) ?? 0) + t.usage);
        for (const [k, v] of sums) {
          const [pool, kind] = k.split("\n") as [string, string];
          this.set({ pool, kind }, v);
        }
      },
    });
    new Gauge({
      name: "agent_pool_resource_limit_usd",
      help: "Sum of the spending limits in USD of the per-instance resources not yet deleted, by pool and kind.",
      labelNames: ["pool", "kind"],
      registers: [registry],
      async collect() {
        this.reset();
        const sums = new Map<string, number>();
        for (const t of await totals()) sums.set(`${t.poolId}\n${t.kind}`, (sums.get(`${t.poolId}\n${t.kind}`) ?? 0) + t.limit);
        for (const [k, v] of sums) {
          const [pool, kind] = k.split("\n") as [string, string];
          this.set({ pool, kind }, v);
        }
      },
    });
    new Gauge({
      name: "agent_pool_resources",
      help: "Per-instance resources not yet deleted, by pool, kind and state (creating, ready, deleting).",
      labelNames: ["pool", "kind", "state"],
      registers: [registry],
      async collect() {
        this.reset();
        for (const t of await totals()) this.set({ pool: t.poolId, kind: t.kind, state: t.state }, t.count);
      },
    });
    this.calls = new Counter({
      name: "agent_pool_resource_calls_total",
      help: "Calls to resource vendors (OpenRouter, ...) by kind, operation and outcome.",
      labelNames: ["kind", "operation", "outcome"],
      registers: [registry],
    });
    this.collected = new Counter({
      name: "agent_pool_resources_collected_total",
      help: "Resources the resource reconciler deleted: released with their instance, or orphans (a leak caught).",
      labelNames: ["kind", "reason"],
      registers: [registry],
    });
  }

  onPass(r: ResourcePassResult): void {
    for (const x of r.released) this.collected.inc({ kind: x.kind, reason: "released" });
    for (const x of r.orphansDeleted) this.collected.inc({ kind: x.kind, reason: `orphan: ${x.reason}` });
  }

  /** Wraps a kind so that every vendor call is counted by operation and outcome. */
  meter(kind: ResourceKind): ResourceKind {
    const count = async <T>(operation: string, fn: () => Promise<T>): Promise<T> => {
      try {
        const v = await fn();
        this.calls.inc({ kind: kind.kind, operation, outcome: "ok" });
        return v;
      } catch (err) {
        this.calls.inc({ kind: kind.kind, operation, outcome: "error" });
        throw err;
      }
    };
    return {
      kind: kind.kind,
      required: kind.required,
      when: kind.when,
      ...(kind.maxLimit !== undefined ? { maxLimit: kind.maxLimit } : {}),
      create: (t) => count("create", () => kind.create(t)),
      delete: (ref) => count("delete", () => kind.delete(ref)),
      list: () => count("list", () => kind.list()),
      ...(kind.usage ? { usage: (ref: string) => count("usage", () => kind.usage!(ref)) } : {}),
      ...(kind.setLimit ? { setLimit: (ref: string, limit: number) => count("setLimit", () => kind.setLimit!(ref, limit)) } : {}),
    };
  }
}
