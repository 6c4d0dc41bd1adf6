import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { ResourceOwnership, ResourceRecord } from "../db/store.ts";
import { resourceName, type ExternalResource } from "./kind.ts";
import { planSweep, type SweepInput } from "./sweep.ts";

const NOW = new Date(Date.UTC(2026, 0, 1, 12));
const GRACE = 600_000;
const old = new Date(NOW.getTime() - GRACE - 1);
const fresh = new Date(NOW.getTime() - 1_000);
const nameOf = (instanceId: string, ownerId = "own01") => resourceName({ ownerId, poolId: "p", environment: "test", instanceId });
const entry = (ref: string, instanceId: string, createdAt = old, ownerId = "own01"): ExternalResource => ({
  ref,
  name: nameOf(instanceId, ownerId),
  createdAt,
  limit: 20,
  usage: 0,
});

function row(id: string, instanceId: string, ref: string | null, state: ResourceRecord["state"] = ref ? "ready" : "creating", usage = 0): ResourceRecord {
  return {
    id,
    instanceId,
    poolId: "p",
    kind: "k",
    name: nameOf(instanceId),
    state,
    ref,
    limit: 20,
    usage,
    usageAt: null,
    error: null,
    createdAt: old,
    updatedAt: old,
    deletedAt: null,
  };
}

function input(over: Partial<SweepInput> & { owners?: ResourceOwnership[] } = {}): SweepInput {
  const { owners = [], ...rest } = over;
  return {
    ownerId: "own01",
    listing: { resources: [], complete: true },
    ownership: new Map(owners.map((o) => [o.instanceId, o])),
    stranded: [],
    now: NOW,
    graceMs: GRACE,
    maxDeletes: 10,
    ...rest,
  };
}

const live = (instanceId: string, ...resources: ResourceRecord[]): ResourceOwnership => ({ instanceId, instanceLive: true, resources });
const gone = (instanceId: string, ...resources: ResourceRecord[]): ResourceOwnership => ({ instanceId, instanceLive: false, resources });

describe("planSweep", () => {
  it("a resource its live instance records is owned: kept, its spend recorded when it changed", () => {
    const p = planSweep(
      input({
        listing: { resources: [{ ...entry("h1", "i-1"), usage: 2.5 }, entry("h2", "i-2")], complete: true },
        owners: [live("i-1", row("r1", "i-1", "h1")), live("i-2", row("r2", "i-2", "h2"))],
      }),
    );
    assert.deepEqual(p.deletes, []);
    assert.deepEqual(p.usage, [{ id: "r1", limit: 20, usage: 2.5 }]);
  });

  it("a create in flight (a creating row without a ref) owns what shows up for its instance", () => {
    const p = planSweep(input({ listing: { resources: [entry("h1", "i-1")], complete: true }, owners: [live("i-1", row("r1", "i-1", null))] }));
    assert.deepEqual(p.deletes, []);
  });

  it("a resource whose instance is gone, or was never recorded, is an orphan past the grace period", () => {
    const p = planSweep(
      input({
        listing: { resources: [entry("h1", "i-gone"), entry("h2", "i-unknown"), entry("h3", "i-failed"), entry("h4", "i-dup")], complete: true },
        owners: [gone("i-gone"), gone("i-unknown"), live("i-failed", row("r3", "i-failed", null, "deleting")), live("i-dup", row("r4", "i-dup", "h-other"))],
      }),
    );
    assert.deepEqual(
      p.deletes.map((d) => [d.ref, d.reason]),
      [
        ["h1", "instance gone"],
        ["h2", "instance gone"],
        ["h3", "not recorded"],
        ["h4", "duplicate"],
      ],
    );
  });

  it("never an orphan younger than the grace period", () => {
    const p = planSweep(input({ listing: { resources: [entry("h1", "i-gone", fresh)], complete: true }, owners: [gone("i-gone")] }));
    assert.deepEqual([p.deletes, p.waiting], [[], 1]);
  });

  it("nothing is deleted or resolved on a listing that is not complete (spend is still recorded)", () => {
    const p = planSweep(
      input({
        listing: { resources: [entry("h1", "i-gone"), { ...entry("h2", "i-2"), usage: 1 }], complete: false },
        owners: [gone("i-gone"), live("i-2", row("r2", "i-2", "h2"))],
        stranded: [row("r9", "i-9", null, "deleting")],
      }),
    );
    assert.deepEqual([p.deletes, p.resolved], [[], []]);
    assert.deepEqual(p.usage, [{ id: "r2", limit: 20, usage: 1 }]);
    assert.match(p.notes.join(), /incomplete/);
  });

  it("never touches another owner's resources, nor names that are not ours", () => {
    const p = planSweep(
      input({
        listing: {
          resources: [entry("h1", "i-1", old, "other"), { ref: "h2", name: "assistant-production-i-1", createdAt: old, limit: 1, usage: 0 }],
          complete: true,
        },
      }),
    );
    assert.deepEqual([p.deletes, p.foreign], [[], 1]);
  });

  it("a resource recorded by a row of a gone instance is left to the release phase", () => {
    const p = planSweep(input({ listing: { resources: [entry("h1", "i-gone")], complete: true }, owners: [gone("i-gone", row("r1", "i-gone", "h1"))] }));
    assert.deepEqual(p.deletes, []);
  });

  it("caps deletes per pass and says how many wait", () => {
    const resources = Array.from({ length: 5 }, (_, i) => entry(`h${i}`, `i-${i}`));
    const p = planSweep(input({ listing: { resources, complete: true }, owners: resources.map((_, i) => gone(`i-${i}`)), maxDeletes: 2 }));
    assert.deepEqual([p.deletes.length, p.deferred], [2, 3]);
    assert.match(p.notes.join(), /3 orphans left for later passes/);
  });

  it("a stranded row is resolved once a complete listing shows nothing of its instance", () => {
    const p = planSweep(
      input({
        listing: { resources: [entry("h1", "i-a")], complete: true },
        owners: [gone("i-a", row("ra", "i-a", null, "deleting")), gone("i-b", row("rb", "i-b", null, "deleting"))],
        stranded: [row("ra", "i-a", null, "deleting"), row("rb", "i-b", null, "deleting")],
      }),
    );
    assert.deepEqual(p.resolved, ["rb"], "i-a still has something at the vendor: delete it first");
    assert.deepEqual(
      p.deletes.map((d) => d.ref),
      ["h1"],
    );
  });
});
