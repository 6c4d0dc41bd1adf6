/**
 * No key leaks across runs with injected faults (issue 12's "done when"), on real Postgres: seeded
 * schedules of reconcile passes, resource passes (sometimes at once), kills and self-destructs,
 * against an OpenRouter stand-in that fails at random (5xx, 429, and creates that make the key and
 * then answer 500) and a provider whose creates fail at random after the key was made.
 *
 * Checked after every step: a key recorded for a live instance is never deleted. Checked at the
 * end, once the faults stop and the grace period has passed: every key of ours at the stand-in
 * belongs to a live instance that records it, and every live instance has exactly one.
 * A failure prints its seed; `RESOURCE_LEAK_SEED=<seed> RESOURCE_LEAK_SCHEDULES=1` replays it.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { ManualClock, type IdSource } from "../src/clock.ts";
import type { Store } from "../src/db/store.ts";
import type { Provider } from "../src/provider/provider.ts";
import type { HealthChecker, InstanceTarget, RuntimeStatus } from "../src/instance/client.ts";
import { silentLogger } from "../src/logger.ts";
import { Reconciler } from "../src/pool/reconciler.ts";
import { MemoryProvider } from "../src/provider/memory.ts";
import { parseResourceName } from "../src/resource/kind.ts";
import { OpenRouterKind } from "../src/resource/openrouter.ts";
import { ResourceReconciler } from "../src/resource/reconciler.ts";
import { ResourceService } from "../src/resource/service.ts";
import { realPostgres, type TestDatabase } from "./support/databases.ts";
import { prng } from "./support/faulty-fleet.ts";
import { OpenRouterStandin } from "./support/openrouter-standin.ts";

const PROVISIONING = "sk-or-v1-provisioning-leak-test-000000000000000000000000";
const GRACE = 10 * 60_000;
const SCHEDULES = Number(process.env.RESOURCE_LEAK_SCHEDULES ?? 25);
const ROUNDS = 40;
const FIRST_SEED = Number(process.env.RESOURCE_LEAK_SEED ?? 1);

class Healthy implements HealthChecker {
  async check() {
    return { health: { ready: true, conversationId: null, pending: false, clean: true, version: "1" } };
  }
  async status(_t: InstanceTarget): Promise<RuntimeStatus> {
    return { conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null };
  }
}

describe("no key leaks across runs with injected faults", () => {
  let db: TestDatabase;
  let store: Store;
  before(async () => {
    db = await realPostgres();
    store = await db.open();
  });
  after(async () => {
    await store?.close();
    await db?.stop();
  });

  async function runSchedule(seed: number): Promise<string[]> {
    const rnd = prng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const clock = new ManualClock(Date.UTC(2026, 0, 1) + seed * 86_400_000);
    const standin = await new OpenRouterStandin({ provisioningKey: PROVISIONING, clock }).start();
    const poolId = `leak${seed}`;
    const violations: string[] = [];
    try {
      // One reconciler serves every pool of a database: each schedule starts from an empty one.
      // Every table but the migrations' record, so a table a later migration adds is emptied too.
      await db.withSession((s) =>
        s.exec(
          `DO $$ BEGIN EXECUTE (SELECT 'TRUNCATE ' || string_agg(quote_ident(tablename), ', ') FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'); END $$`,
        ),
      );
      await store.ensureOwnerId("own01");
      await store.upsertPool({ id: poolId, minIdle: 3, maxTotal: 6 });
      const provider = new MemoryProvider({ clock });
      const kind = new OpenRouterKind({ apiUrl: standin.apiUrl, provisioningKey: PROVISIONING, keyLimit: 20, maxLimit: 100, requestTimeoutMs: 5_000 });
      const service = new ResourceService({ store, kinds: [kind], ownerId: "own01", environment: "test", logger: silentLogger });
      let n = 0;
      const ids: IdSource = { instanceId: () => `i-${seed}x${++n}`, token: () => `tok-${seed}-${n}` };
      const runtimes = new Healthy();
      const reconciler = new Reconciler({
        ownerId: "own01",
        store,
        providers: new Map([["memory", provider as Provider]]),
        defaultProvider: "memory",
        health: runtimes,
        statusReader: runtimes,
        clock,
        ids,
        logger: silentLogger,
        spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 4 },
        policy: { stuckTimeoutMs: 15 * 60_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 },
        intervalMs: 1000,
        healthTimeoutMs: 1000,
        healthConcurrency: 8,
        holder: `pool-${seed}`,
        resources: service,
      });
      const collector = new ResourceReconciler({
        store,
        kinds: [kind],
        ownerId: "own01",
        clock,
        logger: silentLogger,
        orphanGraceMs: GRACE,
        maxDeletesPerPass: 5,
        intervalMs: 1000,
        holder: "leak-collector",
      });

      /** A key recorded for a live instance must never be gone. */
      const checkLiveKeys = async (when: string) => {
        for (const r of await store.listInstances(poolId)) {
          if (r.status === "dead") continue;
          for (const res of await store.listResources({ instanceId: r.id })) {
            if (res.state === "ready" && res.ref && !standin.keys.has(res.ref))
              violations.push(`${when}: the key of live instance ${r.id} (${r.status}) was deleted`);
          }
        }
      };

      for (let round = 0; round < ROUNDS; round++) {
        // Faults for this round.
        standin.chaos = rnd() < 0.7 ? { rate: rnd() * 0.4, rng: rnd } : null;
        if (rnd() < 0.2) standin.createThenFail = 1;
        provider.failCreates = rnd() < 0.3 ? 1 + Math.floor(rnd() * 2) : 0;
        const action = rnd();
        if (action < 0.35) await reconciler.tick();
        else if (action < 0.55) await collector.runOnce();
        else if (action < 0.75) await Promise.all([reconciler.tick(), collector.runOnce()]);
        else {
          const live = (await store.listInstances(poolId)).filter((r) => r.status !== "dead" && r.status !== "claiming");
          if (live.length > 0) {
            const victim = pick(live);
            const dead = await store.transition({
              id: victim.id,
              from: victim.status,
              to: "dead",
              actor: rnd() < 0.5 ? "operator" : "instance",
              reason: "killed in a fault run",
            });
            // Half the time its resources go at once (self/destroy); else the collector finds them.
            if (dead && rnd() < 0.5) await Promise.all([service.release(victim.id), rnd() < 0.5 ? collector.runOnce() : Promise.resolve()]);
          }
        }
        clock.advance(Math.floor(rnd() * 180_000));
        await checkLiveKeys(`round ${round}`);
      }

      // The faults stop; time passes beyond the grace period; the pool settles.
      standin.chaos = null;
      standin.createThenFail = 0;
      provider.failCreates = 0;
      for (let i = 0; i < 6; i++) {
        clock.advance(GRACE + 1);
        await reconciler.tick();
        await collector.runOnce();
        await checkLiveKeys(`settling ${i}`);
      }

      const live = (await store.listInstances(poolId)).filter((r) => r.status !== "dead");
      const liveIds = new Set(live.map((r) => r.id));
      for (const k of standin.keys.values()) {
        const n = parseResourceName(k.name);
        if (n?.ownerId !== "own01") continue;
        if (!liveIds.has(n.instanceId)) {
          violations.push(`leak: key ${k.hash.slice(0, 8)} of ${n.instanceId}, which is not live`);
          continue;
        }
        const rows = await store.listResources({ instanceId: n.instanceId });
        if (!rows.some((r) => r.ref === k.hash && r.state === "ready"))
          violations.push(`leak: key ${k.hash.slice(0, 8)} of live ${n.instanceId} is not the one it records`);
      }
      for (const r of live) {
        const keys = [...standin.keys.values()].filter((k) => parseResourceName(k.name)?.instanceId === r.id);
        if (keys.length !== 1) violations.push(`live instance ${r.id} (${r.status}) has ${keys.length} keys`);
      }
      if (live.length === 0) violations.push("the pool never recovered any live instance");
      await reconciler.stop();
      return violations;
    } finally {
      await standin.close();
    }
  }

  it(`${SCHEDULES} seeded schedules end with every key belonging to a live instance`, async () => {
    const failed: string[] = [];
    for (let seed = FIRST_SEED; seed < FIRST_SEED + SCHEDULES; seed++) {
      const v = await runSchedule(seed);
      if (v.length > 0)
        failed.push(
          `seed ${seed}:\n  ${v.slice(0, 10).join("\n  ")}\n  replay: RESOURCE_LEAK_SEED=${seed} RESOURCE_LEAK_SCHEDULES=1 node scripts/test.mjs test/resource-leaks.test.ts`,
        );
    }
    assert.deepEqual(failed, []);
  });
});
