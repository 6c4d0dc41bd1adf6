import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { observeInstance, type Observation, type ObservePolicy } from "./observe.ts";
import type { HealthObservation } from "./derive.ts";
import type { InstanceRecord } from "../db/store.ts";
import type { InstanceStatus } from "./status.ts";
import type { ProviderInstance } from "../provider/provider.ts";

const NOW = new Date("2026-06-01T12:00:00Z");
const policy: ObservePolicy = { stuckTimeoutMs: 15 * 60_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 };
const ago = (ms: number) => new Date(NOW.getTime() - ms);

function row(status: InstanceStatus, extra: Partial<InstanceRecord> = {}): InstanceRecord {
  return {
    id: "i-1",
    poolId: "default",
    provider: "local",
    providerRef: "ref-1",
    name: "n",
    url: "http://127.0.0.1:1",
    status,
    deployStatus: "SUCCESS",
    runtimeVersion: "1.0.0",
    image: null,
    gatewayToken: "t",
    healthCheckedAt: ago(5_000),
    healthOkAt: status === "starting" ? null : ago(5_000),
    healthFailures: 0,
    healthError: null,
    agentName: null,
    instructions: null,
    conversationId: status === "claimed" ? "conv-1" : null,
    inviteUrl: null,
    joinUrl: null,
    profileImage: null,
    claimMetadata: null,
    claimKey: null,
    claimOwner: null,
    claimStartedAt: null,
    claimedAt: null,
    claimAttempt: null,
    claimDeadline: null,
    claimSource: null,
    createdAt: ago(60_000),
    updatedAt: ago(5_000),
    statusChangedAt: ago(5_000),
    deletedAt: null,
    resourceGoneAt: null,
    templateHash: "",
    runtimeType: null,
    protected: false,
    operation: null,
    operationDeadline: null,
    ...extra,
  };
}
function prov(deployStatus: string | null, extra: Partial<ProviderInstance> = {}): ProviderInstance {
  return { ref: "ref-1", instanceId: "i-1", name: "n", deployStatus, url: "http://127.0.0.1:1", image: null, createdAt: ago(60_000), owner: "own01", ...extra };
}
const H = (o: Partial<HealthObservation> = {}): HealthObservation => ({
  ready: true,
  conversationId: null,
  pending: false,
  clean: true,
  version: "1.0.0",
  ...o,
});
const seen = (p: ProviderInstance | undefined, health: Observation["health"], listingComplete = true): Observation => ({
  provider: p,
  health,
  listingComplete,
});

type Case = [name: string, r: InstanceRecord, o: Observation, to: InstanceStatus, gone?: boolean];

const CASES: Case[] = [
  ["starting + healthy clean → idle", row("starting"), seen(prov("SUCCESS"), H()), "idle"],
  ["starting + booting (not ready) → stays starting", row("starting"), seen(prov("SUCCESS"), H({ ready: false })), "starting"],
  ["starting + DEPLOYING → stays starting", row("starting"), seen(prov("DEPLOYING"), undefined), "starting"],
  ["starting + CRASHED deploy → dead", row("starting"), seen(prov("CRASHED"), undefined), "dead"],
  [
    "starting, no address past the create grace (an interrupted create) → dead",
    row("starting", { url: null, createdAt: ago(3 * 60_000) }),
    seen(prov("SUCCESS", { url: null }), undefined),
    "dead",
  ],
  [
    "starting, no address yet within the create grace → stays starting",
    row("starting", { url: null, createdAt: ago(30_000) }),
    seen(prov("SUCCESS", { url: null }), undefined),
    "starting",
  ],
  [
    "starting past the stuck timeout → dead",
    row("starting", { createdAt: ago(16 * 60_000), statusChangedAt: ago(16 * 60_000) }),
    seen(prov("SUCCESS"), null),
    "dead",
  ],
  [
    "redeploying past the stuck timeout (since it went back to starting) → dead",
    row("starting", { createdAt: ago(60 * 60_000), statusChangedAt: ago(16 * 60_000), healthOkAt: ago(16 * 60_000) }),
    seen(prov("DEPLOYING"), undefined),
    "dead",
  ],
  [
    "redeploying briefly, created long ago → stays starting",
    row("starting", { createdAt: ago(60 * 60_000), statusChangedAt: ago(60_000), healthOkAt: ago(60_000) }),
    seen(prov("DEPLOYING"), undefined),
    "starting",
  ],
  // seed-system §8 f1a1fab: one listing that says less than usual must not kill healthy instances.
  [
    "old idle, listing without a URL or health this pass → stays idle",
    row("idle", { createdAt: ago(60 * 60_000) }),
    seen(prov("SUCCESS", { url: null }), undefined),
    "idle",
  ],
  ["old idle, listing without a deployment status, runtime healthy → stays idle", row("idle", { createdAt: ago(60 * 60_000) }), seen(prov(null), H()), "idle"],
  ["old idle, no deployment status and no answer → one failure tolerated", row("idle", { createdAt: ago(60 * 60_000) }), seen(prov(null), null), "idle"],
  [
    "old claimed, listing without a URL this pass → stays claimed",
    row("claimed", { createdAt: ago(60 * 60_000) }),
    seen(prov("SUCCESS", { url: null }), undefined),
    "claimed",
  ],
  [
    "old claimed, no deployment status, runtime has its conversation → claimed",
    row("claimed", { createdAt: ago(60 * 60_000) }),
    seen(prov(null), H({ conversationId: "conv-1", clean: false })),
    "claimed",
  ],
  [
    "idle with no sign of life for the stuck timeout → dead",
    row("idle", { createdAt: ago(60 * 60_000), healthOkAt: ago(16 * 60_000) }),
    seen(prov("SUCCESS", { url: null }), undefined),
    "dead",
  ],
  [
    "claimed with no sign of life for the stuck timeout → crashed",
    row("claimed", { createdAt: ago(60 * 60_000), healthOkAt: ago(16 * 60_000) }),
    seen(prov(null), undefined),
    "crashed",
  ],
  ["starting + dirty runtime → dead", row("starting"), seen(prov("SUCCESS"), H({ clean: false })), "dead"],
  ["starting + bound without a claim → dead", row("starting"), seen(prov("SUCCESS"), H({ conversationId: "x", clean: false })), "dead"],
  ["idle + one failed check → stays idle (no false death)", row("idle"), seen(prov("SUCCESS"), null), "idle"],
  ["idle + third consecutive failure → dead", row("idle", { healthFailures: 2 }), seen(prov("SUCCESS"), null), "dead"],
  ["idle + CRASHED deploy → dead", row("idle"), seen(prov("CRASHED"), undefined), "dead"],
  ["idle + redeploying → starting", row("idle"), seen(prov("DEPLOYING"), undefined), "starting"],
  ["idle + SLEEPING → sleeping", row("idle"), seen(prov("SLEEPING"), undefined), "sleeping"],
  ["sleeping + awake and healthy → idle", row("sleeping"), seen(prov("SUCCESS"), H()), "idle"],
  ["idle gone from a complete listing → dead, gone", row("idle"), seen(undefined, undefined), "dead", true],
  ["idle missing from a partial listing → unchanged", row("idle"), seen(undefined, undefined, false), "idle"],
  ["in-flight create (no ref yet, young) → unchanged", row("starting", { providerRef: null, createdAt: ago(10_000) }), seen(undefined, undefined), "starting"],
  ["never created (no ref, past grace) → dead", row("starting", { providerRef: null, createdAt: ago(10 * 60_000) }), seen(undefined, undefined), "dead"],
  ["claiming is never moved by the reconciler", row("claiming"), seen(prov("CRASHED"), undefined), "claiming"],
  ["claiming gone at the provider is still not moved", row("claiming"), seen(undefined, undefined), "claiming"],
  ["claimed + same conversation → claimed", row("claimed"), seen(prov("SUCCESS"), H({ conversationId: "conv-1", clean: false })), "claimed"],
  ["claimed + CRASHED deploy → crashed", row("claimed"), seen(prov("CRASHED"), undefined), "crashed"],
  [
    "crashed agent (was handed out) → waits for an operator",
    row("crashed", { agentName: "Ada", claimedAt: ago(60_000) }),
    seen(prov("SUCCESS"), H({ clean: false })),
    "crashed",
  ],
  ["crashed in a stale claim, agent unknown → waits for an operator", row("crashed", { agentName: "Ada" }), seen(prov("SUCCESS"), null), "crashed"],
  ["crashed in a failed claim, never handed out → dead", row("crashed"), seen(prov("SUCCESS"), H({ clean: false })), "dead"],
  ["crashed in a failed claim and gone at the provider → dead, gone", row("crashed"), seen(undefined, undefined), "dead", true],
  [
    "claimed, runtime answering 'not ready' past the stuck timeout → crashed",
    row("claimed", { createdAt: ago(60 * 60_000), healthOkAt: ago(16 * 60_000) }),
    seen(prov("SUCCESS"), H({ ready: false, conversationId: null })),
    "crashed",
  ],
  ["claimed + gone at the provider → crashed", row("claimed"), seen(undefined, undefined), "crashed", true],
  ["claimed + one failed check → claimed", row("claimed"), seen(prov("SUCCESS"), null), "claimed"],
  ["claimed + third failed check → crashed", row("claimed", { healthFailures: 2 }), seen(prov("SUCCESS"), null), "crashed"],
  ["claimed + runtime lost its conversation → crashed", row("claimed"), seen(prov("SUCCESS"), H()), "crashed"],
  ["claimed + another conversation → crashed", row("claimed"), seen(prov("SUCCESS"), H({ conversationId: "other", clean: false })), "crashed"],
  [
    "pending + runtime reports its conversation → claimed",
    row("pending_acceptance"),
    seen(prov("SUCCESS"), H({ conversationId: "c9", clean: false })),
    "claimed",
  ],
  ["pending + still pending → pending", row("pending_acceptance"), seen(prov("SUCCESS"), H({ pending: true, clean: false })), "pending_acceptance"],
  ["pending + join refused (clean again) → crashed", row("pending_acceptance"), seen(prov("SUCCESS"), H()), "crashed"],
  [
    "crashed + healthy with its conversation → claimed",
    row("crashed", { conversationId: "conv-1", agentName: "Ada", claimedAt: ago(60_000) }),
    seen(prov("SUCCESS"), H({ conversationId: "conv-1", clean: false })),
    "claimed",
  ],
  ["crashed + still crashed deploy → crashed", row("crashed", { agentName: "Ada", claimedAt: ago(60_000) }), seen(prov("CRASHED"), undefined), "crashed"],
  [
    "crashed gone at the provider stays crashed for dismissal",
    row("crashed", { agentName: "Ada", claimedAt: ago(60_000) }),
    seen(undefined, undefined),
    "crashed",
    true,
  ],
  ["dead rows are left alone", row("dead"), seen(prov("SUCCESS"), H()), "dead"],
];

describe("observeInstance", () => {
  for (const [name, r, o, to, gone] of CASES) {
    it(name, () => {
      const out = observeInstance(r, o, NOW, policy);
      assert.equal(out.status, to);
      assert.equal(out.goneAtProvider, gone ?? false);
      if (to !== r.status) {
        assert.ok(out.change, "a status change is written");
        assert.equal(out.change.expectedStatus, r.status);
        assert.equal(out.change.status, to);
        assert.ok(out.change.reason.length > 0, "a status change has a reason");
      }
    });
  }

  it("a crashed agent whose resource is gone frees its slot: resourceGone is written once, and cleared if it shows up again", () => {
    const claimed = observeInstance(row("claimed"), seen(undefined, undefined), NOW, policy);
    assert.deepEqual([claimed.status, claimed.change?.resourceGone], ["crashed", true]);
    const kept = row("crashed", { agentName: "Ada", claimedAt: ago(60_000), resourceGoneAt: ago(30_000) });
    assert.equal(observeInstance(kept, seen(undefined, undefined), NOW, policy).change, null, "already recorded: nothing to write");
    const back = observeInstance(kept, seen(prov("CRASHED"), undefined), NOW, policy);
    assert.equal(back.change?.resourceGone, false, "the resource is there after all: it holds a slot again");
    // A partial listing proves nothing gone.
    const partial = observeInstance(row("claimed"), seen(undefined, undefined, false), NOW, policy);
    assert.deepEqual([partial.status, partial.change?.resourceGone ?? false], ["claimed", false]);
  });

  it("pending_acceptance times out: still pending after the timeout → retired (dead); before it, or accepted, not", () => {
    const timed: ObservePolicy = { ...policy, pendingTimeoutMs: 5 * 60_000 };
    const pending = H({ pending: true, clean: false });
    const old = observeInstance(row("pending_acceptance", { statusChangedAt: ago(6 * 60_000) }), seen(prov("SUCCESS"), pending), NOW, timed);
    assert.equal(old.status, "dead");
    assert.match(old.change!.reason, /join not accepted within 300 s/);
    const young = observeInstance(row("pending_acceptance", { statusChangedAt: ago(4 * 60_000) }), seen(prov("SUCCESS"), pending), NOW, timed);
    assert.equal(young.status, "pending_acceptance");
    const accepted = observeInstance(
      row("pending_acceptance", { statusChangedAt: ago(60 * 60_000) }),
      seen(prov("SUCCESS"), H({ conversationId: "c9", clean: false })),
      NOW,
      timed,
    );
    assert.equal(accepted.status, "claimed", "accepted late: kept");
    const unreachable = observeInstance(row("pending_acceptance", { statusChangedAt: ago(60 * 60_000) }), seen(prov("SUCCESS"), null), NOW, timed);
    assert.equal(unreachable.status, "pending_acceptance", "not asked successfully: nothing decided on a timeout alone");
    const noPolicy = observeInstance(row("pending_acceptance", { statusChangedAt: ago(60 * 60_000) }), seen(prov("SUCCESS"), pending), NOW, policy);
    assert.equal(noPolicy.status, "pending_acceptance");
  });

  it("writes nothing when nothing changed and bookkeeping is recent (quiet ticks are write-free)", () => {
    const out = observeInstance(row("idle"), seen(prov("SUCCESS"), H()), NOW, policy);
    assert.equal(out.change, null);
  });

  it("rewrites health bookkeeping once the record interval has passed", () => {
    const out = observeInstance(row("idle", { healthCheckedAt: ago(61_000) }), seen(prov("SUCCESS"), H()), NOW, policy);
    assert.ok(out.change);
    assert.equal(out.change.status, "idle");
    assert.equal(out.change.healthCheckedAt?.getTime(), NOW.getTime());
  });

  it("a 'not ready' answer is not a sign of life: it does not move healthOkAt", () => {
    const r = row("claimed", { createdAt: ago(60 * 60_000), healthOkAt: ago(5 * 60_000), healthCheckedAt: ago(5 * 60_000) });
    const out = observeInstance(r, seen(prov("SUCCESS"), H({ ready: false, conversationId: null })), NOW, policy);
    assert.equal(out.status, "claimed", "not stuck yet");
    assert.equal((out.change?.healthOkAt ?? r.healthOkAt)!.getTime(), ago(5 * 60_000).getTime());
    const ready = observeInstance(r, seen(prov("SUCCESS"), H({ conversationId: "conv-1", clean: false })), NOW, policy);
    assert.equal(ready.change?.healthOkAt?.getTime(), NOW.getTime());
  });

  it("counts consecutive failures and resets them on success", () => {
    const failed = observeInstance(row("idle", { healthFailures: 1 }), { ...seen(prov("SUCCESS"), null), healthError: "timeout" }, NOW, policy);
    assert.equal(failed.change?.healthFailures, 2);
    assert.equal(failed.change?.healthError, "timeout");
    const ok = observeInstance(row("idle", { healthFailures: 2, healthError: "timeout" }), seen(prov("SUCCESS"), H()), NOW, policy);
    assert.equal(ok.change?.healthFailures, 0);
    assert.equal(ok.change?.healthError, null);
  });

  it("fills in the provider ref, url and runtime version it learns", () => {
    const out = observeInstance(
      row("starting", { providerRef: null, url: null, runtimeVersion: null }),
      seen(prov("SUCCESS", { ref: "new-ref", url: "http://x" }), H({ version: "2.0.0" })),
      NOW,
      policy,
    );
    assert.equal(out.change?.providerRef, "new-ref");
    assert.equal(out.change?.url, "http://x");
    assert.equal(out.change?.runtimeVersion, "2.0.0");
    assert.equal(out.change?.status, "idle");
  });

  it("a pending join that completes records the conversation id", () => {
    const out = observeInstance(row("pending_acceptance"), seen(prov("SUCCESS"), H({ conversationId: "c9", clean: false })), NOW, policy);
    assert.equal(out.change?.conversationId, "c9");
  });
});
