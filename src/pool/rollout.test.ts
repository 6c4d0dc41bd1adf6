import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { RolloutOutcome } from "../db/rollouts.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { ObservedInstance } from "./plan.ts";
import { describeFailure, haltReason, planRollout, progressAfter, rolloutToStart, tallyOutcomes, warmSize, type RolloutPlanInput } from "./rollout.ts";

const OLD = "old-hash";
const NEW = "new-hash";
const T0 = Date.UTC(2026, 0, 1);
const at = (s: number) => new Date(T0 + s * 1000);

let seq = 0;
function inst(status: InstanceStatus, hash = OLD, extra: Partial<ObservedInstance> = {}): ObservedInstance {
  return { id: `i-${++seq}`, status, providerRef: `ref-${seq}`, goneAtProvider: false, templateHash: hash, protected: false, ...extra };
}
const many = (n: number, status: InstanceStatus, hash = OLD, extra: Partial<ObservedInstance> = {}) =>
  Array.from({ length: n }, () => inst(status, hash, extra));

/** New-template outcomes: `ok` became idle at second i, `fail` died before idle at second i. */
function outcomes(...marks: Array<"ok" | "fail" | "starting">): RolloutOutcome[] {
  return marks.map((m, i) => ({
    instanceId: `n-${i}`,
    createdAt: at(i),
    idleAt: m === "ok" ? at(i + 1) : null,
    deadAt: m === "fail" ? at(i + 1) : null,
    deadReason: m === "fail" ? "deploy CRASHED" : null,
  }));
}

function input(
  over: Omit<Partial<RolloutPlanInput>, "rollout"> & { instances: ObservedInstance[]; rollout?: Partial<RolloutPlanInput["rollout"]> },
): RolloutPlanInput {
  return {
    rollout: { status: "running", toHash: NEW, haltAfter: 3, retired: 0, target: 3, countedSince: at(0), ...(over.rollout ?? {}) },
    pool: { minIdle: 3, maxTotal: 10, maxSurge: 2, ...(over.pool ?? {}) },
    outcomes: over.outcomes ?? [],
    createsLeft: over.createsLeft ?? 10,
    retiresLeft: over.retiresLeft ?? 10,
    globalRoom: over.globalRoom ?? null,
    instances: over.instances,
  };
}

describe("planRollout", () => {
  const cases: Array<{ name: string; in: RolloutPlanInput; create: number; retire: number; outcome?: string | null; notes?: string[]; remaining?: number }> = [
    {
      name: "surge: new instances first, nothing retired before one of them is idle",
      in: input({ instances: many(3, "idle") }),
      create: 2,
      retire: 0,
      notes: ["waiting_for_new", "max_surge"],
      remaining: 3,
    },
    {
      name: "surge: no more than max surge in flight",
      in: input({ instances: [...many(3, "idle"), ...many(2, "starting", NEW)], outcomes: outcomes("starting", "starting") }),
      create: 0,
      retire: 0,
      notes: ["waiting_for_new", "max_surge"],
    },
    {
      name: "floor: old ones retired one for one against new idle ones, min idle kept claimable",
      in: input({ instances: [...many(3, "idle"), ...many(2, "idle", NEW)], outcomes: outcomes("ok", "ok") }),
      create: 1,
      retire: 2,
      remaining: 3,
    },
    {
      name: "floor: new ones taken by claims meanwhile; only what keeps min idle claimable is retired, more are made",
      in: input({ instances: [...many(3, "idle"), ...many(1, "idle", NEW), ...many(2, "claimed", NEW)], outcomes: outcomes("ok", "ok", "ok") }),
      create: 2,
      retire: 1,
    },
    {
      name: "floor: a pool already below min idle claimable retires nothing and makes new ones",
      in: input({ instances: [...many(2, "idle"), ...many(1, "idle", NEW, { protected: true })], outcomes: outcomes("ok") }),
      create: 2,
      retire: 0,
      notes: ["waiting_for_new", "max_surge"],
    },
    {
      name: "floor: with enough ready beyond the warm size, still no retirement below min idle claimable",
      in: input({
        pool: { minIdle: 3, maxTotal: 10, maxSurge: 2 },
        rollout: { target: 1 },
        instances: [...many(2, "idle"), ...many(1, "idle", NEW), ...many(2, "sleeping", NEW)],
      }),
      create: 0,
      retire: 0,
      notes: ["floor"],
    },
    {
      name: "surplus above min idle is replaced, not shed (one for one)",
      in: input({ pool: { minIdle: 3, maxTotal: 10, maxSurge: 2 }, rollout: { target: 5 }, instances: many(5, "idle") }),
      create: 2,
      retire: 0,
    },
    {
      name: "halt: 3 new instances in a row failed before becoming idle",
      in: input({ instances: [...many(3, "idle")], outcomes: outcomes("ok", "fail", "fail", "fail"), rollout: { retired: 1 } }),
      create: 0,
      retire: 0,
      outcome: "halted",
    },
    {
      name: "halt: a success breaks the streak",
      in: input({ instances: [...many(3, "idle"), ...many(1, "idle", NEW)], outcomes: outcomes("fail", "fail", "ok", "fail", "fail") }),
      create: 2,
      retire: 1,
      outcome: null,
    },
    {
      name: "halt: failures before a resume do not count",
      in: input({ instances: many(3, "idle"), outcomes: outcomes("fail", "fail", "fail", "fail"), rollout: { countedSince: at(3) } }),
      create: 2,
      retire: 0,
      outcome: null,
    },
    {
      name: "halt: configurable (1 failure halts)",
      in: input({ instances: many(3, "idle"), outcomes: outcomes("fail"), rollout: { haltAfter: 1 } }),
      create: 0,
      retire: 0,
      outcome: "halted",
    },
    {
      name: "pause: no action while paused, progress still reported",
      in: input({ instances: [...many(3, "idle"), ...many(2, "idle", NEW)], outcomes: outcomes("ok", "ok"), rollout: { status: "paused" } }),
      create: 0,
      retire: 0,
      notes: ["paused"],
      remaining: 3,
    },
    {
      name: "pause: nothing left to replace completes even while paused",
      in: input({ instances: many(3, "idle", NEW), rollout: { status: "paused", retired: 3 } }),
      create: 0,
      retire: 0,
      outcome: "complete",
    },
    {
      name: "complete: no old instance left to replace",
      in: input({ instances: [...many(3, "idle", NEW), ...many(1, "starting", NEW)] }),
      create: 0,
      retire: 0,
      outcome: "complete",
      remaining: 0,
    },
    {
      name: "protected: never replaced, and not waited for",
      in: input({ instances: [...many(2, "idle", OLD, { protected: true }), ...many(3, "idle", NEW)] }),
      create: 0,
      retire: 0,
      outcome: "complete",
      remaining: 0,
    },
    {
      name: "old instances claimed meanwhile keep their template and leave the rollout",
      in: input({
        instances: [...many(2, "claimed"), ...many(1, "claiming"), ...many(1, "crashed"), ...many(1, "idle"), ...many(3, "idle", NEW)],
        outcomes: outcomes("ok", "ok", "ok"),
      }),
      create: 0,
      retire: 1,
      remaining: 1,
    },
    {
      name: "old starting ones are waited for, not retired",
      in: input({ instances: [...many(1, "starting"), ...many(3, "idle", NEW)], outcomes: outcomes("ok", "ok", "ok") }),
      create: 0,
      retire: 0,
      remaining: 1,
    },
    {
      name: "sleeping old ones go first and do not lower the floor",
      in: input({ rollout: { target: 4 }, instances: [...many(1, "sleeping"), ...many(3, "idle"), ...many(1, "idle", NEW)], outcomes: outcomes("ok") }),
      create: 2,
      retire: 1,
    },
    {
      name: "max total: the pool may hold max total + max surge, no more",
      in: input({ pool: { minIdle: 3, maxTotal: 4, maxSurge: 2 }, instances: [...many(3, "idle"), ...many(2, "claimed", NEW)] }),
      create: 1,
      retire: 0,
      notes: ["waiting_for_new", "max_surge", "max_total"],
    },
    {
      name: "max total: a dead row whose delete has not landed holds its slot",
      in: input({ pool: { minIdle: 3, maxTotal: 3, maxSurge: 1 }, instances: [...many(3, "idle"), inst("dead")] }),
      create: 0,
      retire: 0,
      notes: ["waiting_for_new", "max_surge", "max_total"],
    },
    {
      name: "global cap: it wins over max surge",
      in: input({ instances: many(3, "idle"), globalRoom: 1 }),
      create: 1,
      retire: 0,
      notes: ["waiting_for_new", "max_surge", "global_cap"],
    },
    {
      name: "per-pass caps of creates and retirements",
      in: input({
        pool: { minIdle: 0, maxTotal: 10, maxSurge: 5 },
        rollout: { target: 4 },
        instances: [...many(4, "idle"), ...many(4, "idle", NEW)],
        outcomes: outcomes("ok", "ok", "ok", "ok"),
        createsLeft: 0,
        retiresLeft: 1,
      }),
      create: 0,
      retire: 1,
      notes: ["retires_capped"],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const p = planRollout(c.in);
      assert.equal(p.create, c.create, "create");
      assert.equal(p.retire.length, c.retire, "retire");
      assert.equal(p.outcome?.status ?? null, c.outcome === undefined ? null : c.outcome, "outcome");
      if (c.notes) assert.deepEqual(p.notes, c.notes);
      if (c.remaining !== undefined) assert.equal(p.progress.remaining, c.remaining, "remaining");
    });
  }

  it("retires the oldest old idle instances, never a new or protected one", () => {
    const olds = many(3, "idle");
    const prot = inst("idle", OLD, { protected: true });
    const p = planRollout(input({ instances: [...olds, prot, ...many(3, "idle", NEW)], outcomes: outcomes("ok", "ok", "ok") }));
    assert.deepEqual(
      p.retire,
      olds.map((o) => o.id),
    );
  });

  it("says why it halted: the failures' reasons, most recent first", () => {
    const o = outcomes("fail", "fail", "fail");
    o[0]!.deadReason = "create failed: provider create: quota exceeded";
    o[2]!.deadReason = "did not become healthy in time";
    const p = planRollout(input({ instances: many(3, "idle"), outcomes: o }));
    assert.equal(p.outcome?.status, "halted");
    assert.equal(
      (p.outcome as { reason: string }).reason,
      "3 new instances in a row failed before becoming idle: its health check never passed (did not become healthy in time); it crashed at boot (deploy CRASHED); the provider refused the create (provider create: quota exceeded)",
    );
    assert.equal(p.progress.failuresInARow, 3);
    assert.equal(p.progress.failed, 3);
  });
});

describe("a rollout run pass after pass (simulated pool)", () => {
  /**
   * Applies plans pass after pass: a new instance is idle the pass after its create (or dies, when
   * the template is broken), retirements land, and a claim takes the newest idle instance at the
   * given passes. Checks after every pass: claimable never lower than min idle minus the claims of
   * that pass, the rollout's creates keep at most max surge in flight, held slots ≤ max total + max surge.
   */
  function simulate(o: { oldIdle: number; minIdle: number; maxTotal: number; maxSurge: number; claimsAt?: number[]; broken?: boolean; passes?: number }) {
    const pool = { minIdle: o.minIdle, maxTotal: o.maxTotal, maxSurge: o.maxSurge };
    let rows: Array<ObservedInstance & { born: number }> = many(o.oldIdle, "idle").map((r) => ({ ...r, born: 0 }));
    const outs: RolloutOutcome[] = [];
    let retired = 0;
    let minClaimable = Number.POSITIVE_INFINITY;
    let result: string | null = null;
    const target = warmSize(o.minIdle, rows);
    const newInstance = (born: number) => {
      const r = { ...inst("starting", NEW), born };
      rows.push(r);
      outs.push({ instanceId: r.id, createdAt: at(born), idleAt: null, deadAt: null, deadReason: null });
    };
    let pass = 1;
    for (; pass <= (o.passes ?? 60) && result === null; pass++) {
      // Boots: last pass's creates answer now.
      for (const r of rows) {
        if (r.status !== "starting") continue;
        const out = outs.find((x) => x.instanceId === r.id)!;
        if (o.broken) {
          r.status = "dead";
          out.deadAt = at(pass);
          out.deadReason = "deploy CRASHED";
        } else {
          r.status = "idle";
          out.idleAt = at(pass);
        }
      }
      rows = rows.filter((r) => r.status !== "dead");
      let claims = 0;
      if (o.claimsAt?.includes(pass)) {
        const newest = rows.filter((r) => r.status === "idle" && !r.protected).sort((a, b) => b.born - a.born)[0];
        if (newest) {
          newest.status = "claimed";
          claims++;
        }
      }
      // The pass's own replenishment (planPool) comes first: idle + starting up to min idle.
      const deficit = o.minIdle - rows.filter((r) => r.status === "idle" || r.status === "starting").length;
      for (let k = 0; k < deficit; k++) newInstance(pass);
      const plan = planRollout(input({ pool, instances: rows, outcomes: outs, rollout: { retired, target } }));
      if (plan.outcome) {
        result = plan.outcome.status;
        break;
      }
      const inFlight = rows.filter((r) => r.status === "starting").length;
      assert.ok(plan.create === 0 || inFlight + plan.create <= o.maxSurge, `pass ${pass}: at most max surge in flight`);
      for (const id of plan.retire) rows.find((r) => r.id === id)!.status = "dead";
      retired += plan.retire.length;
      rows = rows.filter((r) => r.status !== "dead");
      for (let k = 0; k < plan.create; k++) newInstance(pass);
      const claimable = rows.filter((r) => r.status === "idle" && !r.protected).length;
      minClaimable = Math.min(minClaimable, claimable);
      assert.ok(claimable >= Math.min(o.minIdle, o.oldIdle) - claims, `pass ${pass}: ${claimable} claimable`);
      assert.ok(rows.length <= o.maxTotal + o.maxSurge, `pass ${pass}: slots`);
    }
    return { result, passes: pass, rows, retired, minClaimable };
  }

  it("replaces 10 idle instances with min idle 10, max surge 3: never fewer than 10 claimable, ends with 10 new", () => {
    const r = simulate({ oldIdle: 10, minIdle: 10, maxTotal: 10, maxSurge: 3 });
    assert.equal(r.result, "complete");
    assert.equal(r.minClaimable, 10);
    assert.equal(r.retired, 10);
    assert.deepEqual(
      r.rows.map((x) => [x.status, x.templateHash]),
      Array(10).fill(["idle", NEW]),
    );
  });

  it("keeps a surplus above min idle (5 idle, min idle 2)", () => {
    const r = simulate({ oldIdle: 5, minIdle: 2, maxTotal: 10, maxSurge: 2 });
    assert.equal(r.result, "complete");
    assert.equal(r.rows.filter((x) => x.status === "idle").length, 5);
  });

  it("under claims that take new instances as soon as they are idle, still completes with min idle claimable", () => {
    const r = simulate({ oldIdle: 4, minIdle: 4, maxTotal: 20, maxSurge: 2, claimsAt: [2, 3, 4, 6, 8] });
    assert.equal(r.result, "complete");
    assert.ok(r.rows.filter((x) => x.status === "idle" || x.status === "starting").length >= 4, "min idle kept (with the pass's replenishment)");
    assert.ok(
      r.rows.every((x) => x.templateHash === NEW),
      "every instance is new",
    );
  });

  it("a broken template halts after 3 failures in a row, with the old instances still all there", () => {
    const r = simulate({ oldIdle: 3, minIdle: 3, maxTotal: 10, maxSurge: 2, broken: true });
    assert.equal(r.result, "halted");
    assert.equal(r.retired, 0);
    assert.deepEqual(
      r.rows.map((x) => [x.status, x.templateHash]),
      Array(3).fill(["idle", OLD]),
    );
  });
});

describe("rollout helpers", () => {
  it("tallyOutcomes: made, failed before idle, became idle, the current streak", () => {
    const o = outcomes("ok", "fail", "starting", "fail");
    // An instance that became idle and died later is a success, not a failure.
    o.push({ instanceId: "late", createdAt: at(0), idleAt: at(1), deadAt: at(9), deadReason: "unhealthy: x" });
    const t = tallyOutcomes(o, at(0));
    assert.deepEqual([t.created, t.failed, t.ready, t.streak.map((x) => x.instanceId)], [5, 2, 2, ["n-1", "n-3"]]);
  });

  it("describeFailure names the provider's error, a crash, a health check that never passes", () => {
    assert.match(describeFailure("create failed: provider create: 500"), /^the provider refused the create \(provider create: 500\)$/);
    assert.match(describeFailure("deploy CRASHED"), /crashed at boot/);
    assert.match(describeFailure("gone at the provider"), /crashed at boot/);
    assert.match(describeFailure("did not become healthy in time"), /health check never passed/);
    assert.match(describeFailure("unhealthy: connect ECONNREFUSED"), /health check never passed/);
    assert.equal(describeFailure("something else"), "something else");
    assert.match(haltReason(outcomes("fail")), /^1 new instance in a row failed/);
  });

  it("progressAfter: what the pass did, and the fewest claimable seen", () => {
    const p = progressAfter(
      { retired: 1, remaining: 4, created: 3, failed: 0, failuresInARow: 0, inFlight: 1, claimable: 5, minClaimable: null },
      { retired: 2, retiredIdle: 2, created: 1 },
    );
    assert.deepEqual(p, { retired: 3, remaining: 2, created: 4, failed: 0, failuresInARow: 0, inFlight: 2, claimable: 3, minClaimable: 3 });
  });

  it("rolloutToStart: a changed template starts one, a new pool or an unchanged one none, a return to the previous one is a rollback", () => {
    const rows = [...many(2, "idle", "a"), ...many(1, "claimed", "b"), ...many(3, "idle", "c")];
    assert.equal(rolloutToStart({ templateHash: "c", previousTemplate: null }, null, many(3, "idle", "c")), null, "a new pool");
    assert.equal(rolloutToStart({ templateHash: "c", previousTemplate: {} }, { toHash: "c", fromHash: "a" }, rows), null, "already rolled out to it");
    assert.deepEqual(
      rolloutToStart({ templateHash: "c", previousTemplate: {} }, null, rows),
      { fromHash: "a", reason: "template changed" },
      "from the template most old ones have",
    );
    assert.deepEqual(rolloutToStart({ templateHash: "d", previousTemplate: null }, { toHash: "c", fromHash: "a" }, rows), {
      fromHash: "c",
      reason: "template changed",
    });
    assert.deepEqual(rolloutToStart({ templateHash: "a", previousTemplate: {} }, { toHash: "c", fromHash: "a" }, rows), {
      fromHash: "c",
      reason: "rolled back",
    });
    assert.deepEqual(
      rolloutToStart({ templateHash: "z", previousTemplate: {} }, null, []),
      { fromHash: null, reason: "template changed" },
      "an empty pool's change is recorded too",
    );
  });
});
