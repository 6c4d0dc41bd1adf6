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
