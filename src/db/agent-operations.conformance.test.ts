/**
 * Operators' operations on claimed agents (issue 11; migration 0010) on both backends: the hold an
 * operation takes on a row (one at a time, never on a protected or mid-claim row when refused,
 * taken over after its deadline), the writes fenced on it (the release's transition, the upgrade's
 * template hash), the versions view, and upgrade jobs (items fenced on the runner's token, a stale
 * job taken over with its interrupted items and holds released).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { inMemoryPglite, postgresLabel, realPostgres, type TestDatabase, storeForSuite, uniqueId } from "../../test/support/databases.ts";
import type { InstanceStatus } from "../instance/status.ts";
import type { Store } from "./store.ts";

const uid = uniqueId;
const AGENT: readonly InstanceStatus[] = ["claimed", "pending_acceptance", "crashed"];

function operations(name: string, open: () => Promise<TestDatabase>) {
  describe(`Store operations and upgrade jobs: ${name}`, () => {
    let store!: Store;
    storeForSuite(open, (s) => {
      store = s;
    });

    const newPool = async () => {
      const id = uid("p");
      await store.upsertPool({ id, minIdle: 0, maxTotal: 10 });
      return id;
    };
    /** An instance of `pool`, brought to `status` along allowed edges. */
    const newInstance = async (pool: string, status: InstanceStatus = "claimed", templateHash = "old") => {
      const id = uid("i");
      await store.insertInstance({ id, poolId: pool, provider: "memory", name: id, gatewayToken: `tok-${id}`, templateHash, reason: "test" });
      if (status === "starting") return id;
      await store.transition({ id, from: "starting", to: "idle", actor: "reconciler", reason: "up" });
      if (status === "idle") return id;
      const pick = await store.claimIdle({
        poolIds: [pool],
        owner: "test",
        attempt: `a-${id}`,
        attemptTtlMs: 60_000,
        claimKey: null,
        source: null,
        agentName: "Ada",
        instructions: "x",
        joinUrl: null,
        profileImage: null,
        metadata: null,
        exclude: [],
      });
      assert.equal(pick.kind, "picked");
      if (status === "claiming") return id;
      await store.transition({
        id,
        from: "claiming",
        to: "claimed",
        actor: "claim",
        reason: "ok",
        set: { conversationId: `c-${id}` },
        fence: { claimAttempt: `a-${id}` },
      });
      if (status === "claimed") return id;
      if (status === "crashed") await store.transition({ id, from: "claimed", to: "crashed", actor: "reconciler", reason: "broke" });
      return id;
    };
    const begin = (id: string, token: string, o: { kind?: "release" | "upgrade"; ttlMs?: number; refuseProtected?: boolean } = {}) =>
      store.beginOperation({ id, kind: o.kind ?? "release", token, ttlMs: o.ttlMs ?? 60_000, from: AGENT, refuseProtected: o.refuseProtected ?? true });

    it("an operation holds a claimed agent alone: a second one is refused until the first ends or its deadline passes", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const first = await begin(a, "t1", { kind: "upgrade", ttlMs: 200 });
      assert.equal(first.kind, "begun");
      assert.equal(first.kind === "begun" && first.instance.operation, "upgrade");
      const second = await begin(a, "t2");
      assert.equal(second.kind, "refused");
      assert.equal(second.instance?.operation, "upgrade", "the refusal shows what holds the row");
      // The first holder's deadline passes (database clock): the row can be taken again.
      await sleep(300);
      const third = await begin(a, "t3");
      assert.equal(third.kind, "begun");
      // The first holder's late writes change nothing: its token is gone.
      assert.equal(await store.endOperation(a, "t1", { templateHash: "new" }), false);
      assert.equal((await store.getInstance(a))?.templateHash, "old");
      assert.equal(await store.endOperation(a, "t3"), true);
      const row = await store.getInstance(a);
      assert.deepEqual([row?.operation, row?.operationDeadline], [null, null]);
    });

    it("refuses a protected row when asked, a row mid-claim, idle or dead, and an unknown id", async () => {
      const pool = await newPool();
      const prot = await newInstance(pool);
      await store.setProtected(prot, true);
      assert.equal((await begin(prot, "t", { refuseProtected: true })).kind, "refused");
      assert.equal((await begin(prot, "t2", { refuseProtected: false, kind: "upgrade" })).kind, "begun", "a single upgrade may act on a protected agent");
      for (const st of ["claiming", "idle", "starting"] as InstanceStatus[]) {
        const id = await newInstance(pool, st);
        const r = await begin(id, `t-${st}`);
        assert.equal(r.kind, "refused", st);
        assert.equal(r.instance?.status, st);
      }
      const r = await begin("i-nobody", "t");
      assert.deepEqual(r, { kind: "refused", instance: null });
    });

    it("a transition fenced on the operation happens only while the operation holds the row, and ends it", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      assert.equal((await begin(a, "rel-1")).kind, "begun");
      // Another token does not move it.
      assert.equal(await store.transition({ id: a, from: AGENT, to: "idle", actor: "operator", reason: "released", fence: { operation: "rel-x" } }), null);
      const row = await store.transition({
        id: a,
        from: AGENT,
        to: "idle",
        actor: "operator",
        reason: "released",
        set: { agentName: null, conversationId: null },
        fence: { operation: "rel-1" },
      });
      assert.ok(row);
      assert.deepEqual([row.status, row.agentName, row.conversationId, row.operation], ["idle", null, null, null]);
      assert.equal(await store.endOperation(a, "rel-1"), false, "ended by the transition");
      // A crashed agent (a pass crashed it while it was being released) is released too.
      const b = await newInstance(pool, "crashed");
      assert.equal((await begin(b, "rel-2")).kind, "begun");
      assert.equal(
        (await store.transition({ id: b, from: AGENT, to: "dead", actor: "operator", reason: "dirty", fence: { operation: "rel-2" } }))?.status,
        "dead",
      );
    });

    it("the upgrade's template hash is recorded on a live row only, with its hold", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      assert.equal((await begin(a, "up-1", { kind: "upgrade" })).kind, "begun");
      assert.equal(await store.endOperation(a, "up-1", { templateHash: "new" }), true);
      assert.equal((await store.getInstance(a))?.templateHash, "new");
      // Killed mid-upgrade: the hash is not recorded (and the hold stays on a dead row: harmless).
      const b = await newInstance(pool);
      assert.equal((await begin(b, "up-2", { kind: "upgrade" })).kind, "begun");
      await store.transition({ id: b, from: "claimed", to: "dead", actor: "operator", reason: "killed" });
      assert.equal(await store.endOperation(b, "up-2", { templateHash: "new" }), false);
      assert.equal((await store.getInstance(b))?.templateHash, "old");
    });

    it("counts a pool's live instances by template, runtime type, version and status", async () => {
      const pool = await newPool();
      const a = await newInstance(pool, "idle", "h1");
      const b = await newInstance(pool, "idle", "h1");
      const c = await newInstance(pool, "claimed", "h0");
      const d = await newInstance(pool, "idle", "h1");
      await store.transition({ id: d, from: "idle", to: "dead", actor: "operator", reason: "drained" });
      const obs = (id: string, status: InstanceStatus, version: string) => ({
        id,
        expectedStatus: status,
        status,
        reason: "",
        providerRef: null,
        url: null,
        deployStatus: "SUCCESS",
        runtimeVersion: version,
        runtimeType: "openclaw",
        image: null,
        healthCheckedAt: new Date(),
        healthOkAt: new Date(),
        healthFailures: 0,
        healthError: null,
        conversationId: null,
        resourceGone: false,
      });
      await store.applyObservations([obs(a, "idle", "2.0"), obs(b, "idle", "2.0"), obs(c, "claimed", "1.0")]);
      const counts = await store.versionCounts(pool);
      assert.deepEqual(
        counts.map((x) => [x.templateHash, x.runtimeType, x.runtimeVersion, x.status, x.count]),
        [
          ["h0", "openclaw", "1.0", "claimed", 1],
          ["h1", "openclaw", "2.0", "idle", 2],
        ],
      );
    });

    it("jobs: items move only under the runner's token; a stale job is taken over with its running items back to pending and its holds released", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const b = await newInstance(pool);
      const c = await newInstance(pool);
      const jobId = uid("j");
      const job = await store.createUpgradeJob({
        id: jobId,
        poolId: pool,
        templateHash: "new",
        scope: "ids",
        runner: "r1",
        runnerToken: "tok-r1",
        items: [
          { instanceId: a, state: "pending", fromHash: "old", detail: null },
          { instanceId: b, state: "pending", fromHash: "old", detail: null },
          { instanceId: c, state: "skipped", fromHash: "old", detail: "protected" },
        ],
      });
      assert.equal(job.state, "running");
      assert.deepEqual(
        job.items.map((i) => [i.instanceId, i.state, i.position]),
        [
          [a, "pending", 0],
          [b, "pending", 1],
          [c, "skipped", 2],
        ],
      );
      assert.ok(job.items[2]?.finishedAt, "a skipped item is finished from the start");
      const held = { id: jobId, runnerToken: "tok-r1" };
      assert.deepEqual(await store.heldUpgradeJobs("r1"), [held]);

      assert.equal(await store.updateUpgradeItem(held, a, { state: "running" }), true);
      assert.equal(await store.updateUpgradeItem(held, a, { state: "upgraded", toHash: "new", detail: "redeployed" }), true);
      assert.equal(await store.updateUpgradeItem({ id: jobId, runnerToken: "wrong" }, b, { state: "running" }), false);
      // b is mid-upgrade when its runner stops: running item, and a hold with the job's prefix.
      assert.equal(await store.updateUpgradeItem(held, b, { state: "running" }), true);
      assert.equal((await begin(b, `upgrade:${jobId}:tok-r1:1`, { kind: "upgrade", ttlMs: 600_000 })).kind, "begun");
      // A hold of another job is not released by the takeover.
      const other = await newInstance(pool);
      assert.equal((await begin(other, "upgrade:jzzz:tok:0", { kind: "upgrade", ttlMs: 600_000 })).kind, "begun");

      // Not stale yet: nobody takes it.
      assert.deepEqual(await store.takeOverStaleUpgradeJobs("r2", "tok-r2", 60_000, 10), []);
      await sleep(300);
      const taken = await store.takeOverStaleUpgradeJobs("r2", "tok-r2", 200, 10);
      assert.deepEqual(
        taken.filter((t) => t.id === jobId),
        [{ id: jobId, runnerToken: "tok-r2" }],
      );
      const now = (await store.getUpgradeJob(jobId))!;
      assert.deepEqual([now.runner, now.resumed, now.state], ["r2", 1, "running"]);
      assert.deepEqual(
        now.items.map((i) => i.state),
        ["upgraded", "pending", "skipped"],
      );
      assert.match(now.items[1]!.detail ?? "", /interrupted/);
      assert.equal((await store.getInstance(b))?.operation, null, "the old runner's hold is released");
      assert.equal((await store.getInstance(other))?.operation, "upgrade", "another job's hold is kept");
      // The old runner's late writes change nothing.
      assert.equal(await store.updateUpgradeItem(held, b, { state: "upgraded" }), false);
      assert.equal(await store.heartbeatUpgradeJob(held), false);
      assert.equal(await store.finishUpgradeJob(held), false);
      assert.equal(await store.endOperation(b, `upgrade:${jobId}:tok-r1:1`, { templateHash: "new" }), false);

      const mine = { id: jobId, runnerToken: "tok-r2" };
      assert.equal(await store.heartbeatUpgradeJob(mine), true);
      assert.equal(await store.updateUpgradeItem(mine, b, { state: "failed", detail: "provider said no" }), true);
      assert.equal(await store.finishUpgradeJob(mine), true);
      const done = (await store.getUpgradeJob(jobId))!;
      assert.equal(done.state, "done");
      assert.ok(done.finishedAt);
      assert.equal(await store.updateUpgradeItem(mine, b, { state: "upgraded" }), false, "a done job is no longer written");
      assert.deepEqual(await store.heldUpgradeJobs("r2"), []);

      const listed = await store.listUpgradeJobs(pool, 10);
      assert.deepEqual(
        listed.map((j) => j.id),
        [jobId],
      );
      assert.equal(listed[0]!.items.length, 3);
      assert.equal(await store.getUpgradeJob("j-nope"), null);
    });

    it("a job with nothing to do is done at once", async () => {
      const pool = await newPool();
      const a = await newInstance(pool);
      const job = await store.createUpgradeJob({
        id: uid("j"),
        poolId: pool,
        templateHash: "new",
        scope: "all",
        runner: "r1",
        runnerToken: "t",
        items: [{ instanceId: a, state: "skipped", fromHash: "new", detail: "already current" }],
      });
      assert.equal(job.state, "done");
      assert.ok(job.finishedAt);
    });
  });
}

operations("PGlite (in-memory)", inMemoryPglite);
operations(postgresLabel, realPostgres);
