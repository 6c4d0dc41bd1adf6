import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { DEPLOY_STATUSES, deriveStatus, type DerivedStatus, type HealthObservation } from "./derive.ts";

const STUCK = 15 * 60 * 1000;
const YOUNG = 60_000;
const OLD = STUCK + 60_000;
const ready: HealthObservation = { ready: true, conversationId: null, pending: false, clean: true, version: "1.0.0" };
const bound: HealthObservation = { ...ready, conversationId: "conv-123", clean: false };
const pending: HealthObservation = { ...ready, pending: true, clean: false };
const dirty: HealthObservation = { ...ready, clean: false };
const booting: HealthObservation = { ...ready, ready: false };

type Row = [deploy: string | null, health: HealthObservation | null | undefined, age: number, expected: DerivedStatus];

// The table of seed 000 task 3 (deploy status × health × age), extended to all 13 deploy statuses.
const TABLE: Row[] = [
  ["BUILDING", undefined, YOUNG, "starting"],
  ["DEPLOYING", undefined, YOUNG, "starting"],
  ["QUEUED", undefined, YOUNG, "starting"],
  ["WAITING", undefined, YOUNG, "starting"],
  ["INITIALIZING", undefined, YOUNG, "starting"],
  ["BUILDING", undefined, OLD, "dead"],
  ["DEPLOYING", null, OLD, "dead"],
  ["FAILED", undefined, YOUNG, "dead"],
  ["CRASHED", undefined, YOUNG, "dead"],
  ["REMOVED", undefined, YOUNG, "dead"],
  ["REMOVING", undefined, YOUNG, "dead"],
  ["SKIPPED", undefined, YOUNG, "dead"],
  ["CRASHED", ready, YOUNG, "dead"],
  ["SLEEPING", undefined, YOUNG, "sleeping"],
  ["SLEEPING", undefined, OLD, "sleeping"],
  ["SUCCESS", ready, YOUNG, "idle"],
  ["SUCCESS", ready, OLD, "idle"],
  ["SUCCESS", bound, YOUNG, "claimed"],
  ["SUCCESS", pending, YOUNG, "pending"],
  ["SUCCESS", dirty, YOUNG, "dirty"],
  ["SUCCESS", booting, YOUNG, "starting"],
  ["SUCCESS", booting, OLD, "dead"],
  ["SUCCESS", null, YOUNG, "starting"],
  ["SUCCESS", null, OLD, "dead"],
  ["SUCCESS", undefined, YOUNG, "starting"],
  ["NEEDS_APPROVAL", undefined, YOUNG, "starting"],
  ["NEEDS_APPROVAL", undefined, OLD, "dead"],
  [null, undefined, YOUNG, "starting"],
  [null, undefined, OLD, "dead"],
  // No deployment status in the listing, but the runtime answers: it is running.
  [null, ready, OLD, "idle"],
  [null, pending, YOUNG, "pending"],
  [null, null, YOUNG, "starting"],
  [null, null, OLD, "dead"],
  ["SOMETHING_NEW", undefined, YOUNG, "starting"],
  ["SOMETHING_NEW", undefined, OLD, "dead"],
];

describe("deriveStatus", () => {
  for (const [deploy, health, age, expected] of TABLE) {
    const h = health === undefined ? "unchecked" : health === null ? "unreachable" : JSON.stringify(health);
    it(`${deploy} + ${h} + ${age === YOUNG ? "young" : "old"} → ${expected}`, () => {
      assert.equal(deriveStatus({ deployStatus: deploy, health, ageMs: age, stuckTimeoutMs: STUCK }), expected);
    });
  }

  it("the table covers every one of the 13 deploy statuses", () => {
    const covered = new Set(TABLE.map((r) => r[0]));
    for (const s of DEPLOY_STATUSES) assert.ok(covered.has(s), `${s} not covered`);
    assert.equal(DEPLOY_STATUSES.length, 13);
  });

  it("the stuck timeout boundary is inclusive", () => {
    assert.equal(deriveStatus({ deployStatus: "SUCCESS", health: null, ageMs: STUCK - 1, stuckTimeoutMs: STUCK }), "starting");
    assert.equal(deriveStatus({ deployStatus: "SUCCESS", health: null, ageMs: STUCK, stuckTimeoutMs: STUCK }), "dead");
  });
});
