import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { INSTANCE_STATUSES, canTransition, transitionTable, type InstanceStatus, type TransitionActor } from "./status.ts";

describe("transition table", () => {
  it("only the claim path and the sweeper leave `claiming`", () => {
    for (const to of INSTANCE_STATUSES) {
      for (const actor of ["reconciler", "operator", "instance"] as TransitionActor[]) {
        assert.equal(canTransition("claiming", to, actor), false, `${actor} claiming→${to}`);
      }
    }
    assert.ok(canTransition("claiming", "claimed", "claim"));
    assert.ok(canTransition("claiming", "idle", "sweeper"));
    assert.ok(canTransition("claiming", "crashed", "sweeper"));
  });

  it("only the claim path enters `claiming`, and only from idle", () => {
    for (const from of INSTANCE_STATUSES) {
      for (const actor of ["reconciler", "claim", "sweeper", "operator", "instance"] as TransitionActor[]) {
        const expected = from === "idle" && actor === "claim";
        assert.equal(canTransition(from, "claiming", actor), expected, `${actor} ${from}→claiming`);
      }
    }
  });

  it("dead is terminal", () => {
    for (const to of INSTANCE_STATUSES) {
      for (const actor of ["reconciler", "claim", "sweeper", "operator", "instance"] as TransitionActor[]) {
        assert.equal(canTransition("dead", to, actor), false);
      }
    }
  });

  it("a claimed agent is never silently recycled to idle or starting", () => {
    for (const to of ["idle", "starting"] as InstanceStatus[]) {
      for (const from of ["claimed", "pending_acceptance", "crashed"] as InstanceStatus[]) {
        for (const actor of ["reconciler", "claim", "sweeper"] as TransitionActor[]) {
          assert.equal(canTransition(from, to, actor), false, `${actor} ${from}→${to}`);
        }
        // The operator's release returns it to idle only after a verified reset, never to starting.
        assert.equal(canTransition(from, "starting", "operator"), false, `operator ${from}→starting`);
      }
    }
  });

  // The operator's edges (issue 11 adds release): exactly these.
  const OPERATOR_EDGES: ReadonlyArray<readonly [InstanceStatus, InstanceStatus, string]> = [
    ["starting", "dead", "kill"],
    ["idle", "dead", "kill, drain"],
    ["pending_acceptance", "dead", "kill, release of a dirty runtime"],
    ["claimed", "dead", "kill, release of a dirty runtime"],
    ["crashed", "dead", "kill, dismiss, release of a dirty runtime"],
    ["sleeping", "dead", "kill"],
    ["claimed", "idle", "release of a runtime that reports itself clean"],
    ["pending_acceptance", "idle", "release of a runtime that reports itself clean"],
    ["crashed", "idle", "release of a runtime that reports itself clean (a pass crashed it mid-release)"],
  ];

  it("the operator actor has exactly the edges its actions need", () => {
    const expected = new Set(OPERATOR_EDGES.map(([f, t]) => `${f}>${t}`));
    for (const from of INSTANCE_STATUSES) {
      for (const to of INSTANCE_STATUSES) {
        const key = `${from}>${to}`;
        assert.equal(canTransition(from, to, "operator"), expected.has(key), `operator ${key}`);
      }
    }
  });

  it("the operator can kill any live instance except one mid-claim", () => {
    for (const from of INSTANCE_STATUSES) {
      if (from === "dead" || from === "claiming") continue;
      assert.ok(canTransition(from, "dead", "operator"), `operator ${from}→dead`);
    }
  });

  it("has no self-loops and no duplicate edges", () => {
    const seen = new Set<string>();
    for (const [from, to] of transitionTable()) {
      assert.notEqual(from, to);
      const key = `${from}>${to}`;
      assert.ok(!seen.has(key), `duplicate ${key}`);
      seen.add(key);
    }
  });

  // The instance's own routes (issue 12): exactly these edges, each a row acting on itself.
  const INSTANCE_EDGES: ReadonlyArray<readonly [InstanceStatus, InstanceStatus, string]> = [
    ["pending_acceptance", "claimed", "pending-acceptance/complete"],
    ["pending_acceptance", "dead", "pending-acceptance/fail, self/destroy, self/reset of a dirty runtime"],
    ["starting", "dead", "self/destroy"],
    ["idle", "dead", "self/destroy"],
    ["claimed", "dead", "self/destroy, self/reset of a dirty runtime"],
    ["crashed", "dead", "self/destroy, self/reset of a dirty runtime"],
    ["sleeping", "dead", "self/destroy"],
    ["claimed", "idle", "self/reset of a runtime that reports itself clean"],
    ["pending_acceptance", "idle", "self/reset of a runtime that reports itself clean"],
    ["crashed", "idle", "self/reset of a runtime that reports itself clean"],
  ];

  it("the instance actor has exactly the edges its routes need", () => {
    const expected = new Set(INSTANCE_EDGES.map(([f, t]) => `${f}>${t}`));
    for (const from of INSTANCE_STATUSES) {
      for (const to of INSTANCE_STATUSES) {
        const key = `${from}>${to}`;
        assert.equal(canTransition(from, to, "instance"), expected.has(key), `instance ${key}`);
      }
    }
  });

  it("only a verified reset returns a bound or crashed agent to idle: the instance's own, or an operator's release", () => {
    for (const from of ["claimed", "pending_acceptance", "crashed"] as InstanceStatus[]) {
      for (const actor of ["instance", "operator"] as TransitionActor[]) {
        assert.ok(canTransition(from, "idle", actor), `${actor} ${from}→idle`);
        assert.equal(canTransition(from, "starting", actor), false, `${actor} ${from}→starting`);
      }
    }
  });
});
