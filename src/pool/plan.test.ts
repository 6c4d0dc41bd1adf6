import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { planPool, type ObservedInstance, type ObservedOrphan, type PoolSpec } from "./plan.ts";
import type { InstanceStatus } from "../instance/status.ts";

const NOW = new Date("2026-06-01T12:00:00Z");
const spec: PoolSpec = { minIdle: 3, maxTotal: 10, orphanGraceMs: 60_000, maxDeletesPerTick: 5, maxCreatesPerTick: 10 };

let seq = 0;
function rows(status: InstanceStatus, n: number, extra: Partial<ObservedInstance> = {}): ObservedInstance[] {
  return Array.from({ length: n }, () => {
    seq++;
    return { id: `i-${seq}`, status, providerRef: `ref-${seq}`, goneAtProvider: false, ...extra };
  });
}
function orphan(ageMs: number): ObservedOrphan {
  seq++;
  return { ref: `orphan-${seq}`, instanceId: null, createdAt: new Date(NOW.getTime() - ageMs) };
}

describe("planPool", () => {
  const cases: Array<{
    name: string;
    spec?: Partial<PoolSpec>;
    listing?: "complete" | "partial" | "failed";
    instances: ObservedInstance[];
    orphans?: ObservedOrphan[];
    create: number;
    deletes?: number;
    forget?: number;
    notes?: string[];
  }> = [
    { name: "empty pool fills to min idle", instances: [], create: 3 },
    { name: "full pool does nothing", instances: rows("idle", 3), create: 0 },
    { name: "starting instances count toward the target", instances: [...rows("idle", 1), ...rows("starting", 2)], create: 0 },
    {
      name: "in-flight creates (rows written, provider not answered) are counted: no over-creation from a stale count",
      instances: rows("starting", 3, { providerRef: null }),
      create: 0,
    },
    { name: "claimed instances do not count as idle", instances: [...rows("claimed", 4), ...rows("idle", 1)], create: 2 },
    {
      name: "capped by max total",
      instances: [...rows("claimed", 9)],
      create: 1,
      notes: ["max_total_reached"],
    },
    {
      name: "deadlock case: every slot claimed → nothing created, and the plan says why",
      instances: rows("claimed", 10),
      create: 0,
      notes: ["max_total_reached"],
    },
    {
      name: "dead instances free their slot in the same pass (no deadlock at max total)",
      instances: [...rows("claimed", 8), ...rows("dead", 2)],
      create: 2,
      deletes: 2,
      notes: ["max_total_reached"],
    },
    {
      name: "crashed and sleeping instances still hold a provider resource",
      instances: [...rows("claimed", 6), ...rows("crashed", 2), ...rows("sleeping", 1)],
      create: 1,
      notes: ["max_total_reached"],
    },
    {
      name: "failed listing: nothing deleted and nothing created",
      listing: "failed",
      instances: [...rows("dead", 3)],
      orphans: [orphan(10 * 60_000)],
      create: 0,
      deletes: 0,
      notes: ["listing_failed_no_changes"],
    },
    {
      name: "partial listing: no deletions, creations still allowed",
      listing: "partial",
      instances: [...rows("dead", 2)],
      orphans: [orphan(10 * 60_000)],
      create: 3,
      deletes: 0,
      notes: ["listing_partial_no_deletes"],
    },
    {
      name: "orphans are deleted only after the grace period",
      instances: rows("idle", 3),
      orphans: [orphan(30_000), orphan(120_000)],
      create: 0,
      deletes: 1,
    },
    {
      name: "orphans in their grace period count against max total",
      spec: { maxTotal: 4 },
      instances: rows("idle", 1),
      orphans: [orphan(1_000), orphan(2_000)],
      create: 1,
      notes: ["max_total_reached"],
    },
    {
      name: "deletions are capped per pass",
      spec: { maxDeletesPerTick: 2 },
      instances: [...rows("dead", 5), ...rows("idle", 3)],
      create: 0,
      deletes: 2,
      notes: ["deletes_capped"],
    },
    {
      name: "dead rows already gone at the provider are forgotten, not deleted",
      instances: [...rows("dead", 1, { goneAtProvider: true }), ...rows("dead", 1, { providerRef: null }), ...rows("idle", 3)],
      create: 0,
      deletes: 0,
      forget: 2,
    },
    {
      name: "creations are capped per pass",
      spec: { minIdle: 50, maxTotal: 100, maxCreatesPerTick: 10 },
      instances: [],
      create: 10,
      notes: ["creates_capped"],
    },
    { name: "min idle 0 creates nothing", spec: { minIdle: 0 }, instances: [], create: 0 },
    {
      name: "a crashed agent whose resource is gone keeps its row but holds no slot (capacity frees itself)",
      instances: [...rows("claimed", 8), ...rows("crashed", 2, { holdsSlot: false })],
      create: 2,
      notes: ["max_total_reached"],
    },
    {
      name: "the same crashed agents with their resources still there hold their slots",
      instances: [...rows("claimed", 8), ...rows("crashed", 2)],
      create: 0,
      notes: ["max_total_reached"],
    },
    {
      name: "a dead row whose delete waits (capped) still holds its slot: it runs at the provider",
      spec: { maxDeletesPerTick: 1 },
      instances: [...rows("claimed", 8), ...rows("dead", 2)],
      create: 1,
      deletes: 1,
      notes: ["deletes_capped", "max_total_reached"],
    },
    {
      name: "a partial listing deletes nothing, so dead rows keep their slots",
      listing: "partial",
      instances: [...rows("claimed", 8), ...rows("dead", 2)],
      create: 0,
      notes: ["listing_partial_no_deletes", "max_total_reached"],
    },
    { name: "claiming instances count against max", spec: { maxTotal: 3 }, instances: rows("claiming", 3), create: 0, notes: ["max_total_reached"] },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const plan = planPool({ ...spec, ...c.spec }, { listing: c.listing ?? "complete", instances: c.instances, orphans: c.orphans ?? [] }, NOW);
      assert.equal(plan.create, c.create, "create");
      assert.equal(plan.deletes.length, c.deletes ?? 0, "deletes");
      assert.equal(plan.forget.length, c.forget ?? 0, "forget");
      assert.deepEqual(plan.notes, c.notes ?? [], "notes");
    });
  }

  it("deletes dead rows before orphans and names the reason", () => {
    const dead = rows("dead", 1);
    const plan = planPool(spec, { listing: "complete", instances: [...dead, ...rows("idle", 3)], orphans: [orphan(3_600_000)] }, NOW);
    assert.deepEqual(
      plan.deletes.map((d) => d.reason),
      ["dead", "orphan"],
    );
    assert.equal(plan.deletes[0]?.instanceId, dead[0]?.id);
  });

  it("never plans more instances than max total, whatever the mix", () => {
    const statuses: InstanceStatus[] = ["starting", "idle", "claiming", "claimed", "pending_acceptance", "crashed", "dead", "sleeping"];
    for (let trial = 0; trial < 500; trial++) {
      const instances: ObservedInstance[] = [];
      for (const s of statuses) instances.push(...rows(s, (trial * 7 + s.length) % 4));
      const maxTotal = 1 + (trial % 15);
      const minIdle = trial % (maxTotal + 1);
      const plan = planPool(
        { ...spec, maxTotal, minIdle, maxCreatesPerTick: 100, maxDeletesPerTick: trial % 3 },
        { listing: "complete", instances, orphans: [] },
        NOW,
      );
      // Dead rows run at the provider until their delete lands: only the planned deletes free a slot.
      const deleted = new Set(plan.deletes.map((d) => d.instanceId));
      const liveAfter = instances.filter((i) => (i.status !== "dead" ? true : i.providerRef !== null && !deleted.has(i.id))).length + plan.create;
      assert.ok(plan.create === 0 || liveAfter <= maxTotal, `trial ${trial}: ${liveAfter} > ${maxTotal}`);
    }
  });
});
