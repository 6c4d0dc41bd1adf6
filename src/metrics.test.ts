/**
 * The metered provider (PoolMetrics.meter) is the provider the reconciler, the actuator and the
 * upgrade runner talk to: it must pass everything through that the provider offers (an upgrade, the
 * pool id of a service name, the pools told every pass), and count each call.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { openStore } from "./db/open.ts";
import { PoolMetrics } from "./metrics.ts";
import { MemoryProvider } from "./provider/memory.ts";
import type { Provider } from "./provider/provider.ts";

describe("metered provider", () => {
  it("passes upgrades, service names with their pool, and the pools told through, counting upgrades", async () => {
    const store = await openStore({ dataDir: null });
    try {
      const metrics = new PoolMetrics(store, () => []);
      const memory = new MemoryProvider();
      const told: string[][] = [];
      const names: Array<[string, string | undefined]> = [];
      const inner: Provider = Object.assign(memory, {
        serviceName: (id: string, poolId?: string) => {
          names.push([id, poolId]);
          return `svc-${poolId}-${id}`;
        },
        knowPools: (ids: readonly string[]) => void told.push([...ids]),
      });
      const p = metrics.meter(inner);
      assert.equal(p.serviceName?.("i-1", "hermes"), "svc-hermes-i-1");
      assert.deepEqual(names, [["i-1", "hermes"]]);
      p.knowPools?.(["default", "hermes"]);
      assert.deepEqual(told, [["default", "hermes"]]);
      const made = await p.create({ instanceId: "i-1", poolId: "p", name: "n", gatewayToken: "t", ownerId: "own01", env: {} });
      await p.upgrade!(made.ref, { instanceId: "i-1", poolId: "p", gatewayToken: "t", ownerId: "own01", env: {}, image: "img:2" });
      assert.equal(memory.fleet.get(made.ref)?.image, "img:2");
      memory.failUpgrades = 1;
      await assert.rejects(p.upgrade!(made.ref, { instanceId: "i-1", poolId: "p", gatewayToken: "t", ownerId: "own01", env: {} }));
      const text = await metrics.registry.metrics();
      assert.match(text, /agent_pool_provider_calls_total\{provider="memory",operation="upgrade",outcome="ok"\} 1/);
      assert.match(text, /agent_pool_provider_calls_total\{provider="memory",operation="upgrade",outcome="error"\} 1/);
    } finally {
      await store.close();
    }
  });
});

describe("warm-hit, wait, refill and sizing metrics (issue 13)", () => {
  it("counts claims by launch type, warm and cold latency, waits, refills, idle seconds and the target", async () => {
    const store = await openStore({ dataDir: null });
    try {
      const m = new PoolMetrics(store, () => []);
      m.onLaunch({ pool: "p", launch: "warm", failed: false, seconds: 0.2, waitedMs: 0 });
      m.onLaunch({ pool: "p", launch: "warm", failed: false, seconds: 0.3, waitedMs: 0 });
      m.onLaunch({ pool: "p", launch: "waited", failed: false, seconds: 40, waitedMs: 38_000 });
      m.onLaunch({ pool: "p", launch: "empty", failed: false, seconds: 0.01, waitedMs: 0 });
      m.onLaunch({ pool: "p", launch: null, failed: true, seconds: 1, waitedMs: 0 });
      m.onRefill("p", 150_000);
      m.onIdle("p", 30);
      m.onIdle("p", 12.5);
      m.onSizing("p", {
        target: 7,
        demand: 7,
        floor: 1,
        ceiling: 10,
        arrivalsPerMinute: 2.1,
        refillP95Ms: 192_000,
        safetyFactor: 1,
        reason: "demand",
        state: { target: 7, justifiedAt: 0 },
        summary: "",
      });
      const text = await m.registry.metrics();
      assert.match(text, /agent_pool_claim_launches_total\{pool="p",launch_type="warm"\} 2/);
      assert.match(text, /agent_pool_claim_launches_total\{pool="p",launch_type="waited"\} 1/);
      assert.match(text, /agent_pool_claim_launches_total\{pool="p",launch_type="empty"\} 1/);
      assert.match(text, /agent_pool_claim_startup_latency_seconds_count\{pool="p",launch_type="warm"\} 2/);
      assert.match(text, /agent_pool_claim_startup_latency_seconds_count\{pool="p",launch_type="cold"\} 1/);
      assert.match(text, /agent_pool_claim_wait_seconds_sum\{pool="p",served="true"\} 38/);
      assert.match(text, /agent_pool_claim_wait_seconds_count\{pool="p",served="false"\} 1/);
      assert.match(text, /agent_pool_refill_seconds_sum\{pool="p"\} 150/);
      assert.match(text, /agent_pool_idle_instance_seconds_total\{pool="p"\} 42.5/);
      assert.match(text, /agent_pool_sizing_target_idle\{pool="p"\} 7/);
      assert.match(text, /agent_pool_claim_arrival_rate_per_minute\{pool="p"\} 2.1/);
      assert.match(text, /agent_pool_sizing_refill_p95_seconds\{pool="p"\} 192/);
    } finally {
      await store.close();
    }
  });
});
