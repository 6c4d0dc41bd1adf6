import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { PoolRecord } from "../db/store.ts";
import { effectiveHash, planSeed, seedHash } from "./seed.ts";
import { maskedEnv, poolSettings, templateHash, type PoolSettingsInput } from "./template.ts";

function record(entry: PoolSettingsInput, env: Record<string, string>, over: Partial<PoolRecord> = {}): PoolRecord {
  const s = { ...poolSettings(entry), ...over };
  return {
    ...s,
    templateHash: effectiveHash(s, env),
    previousTemplate: null,
    seedHash: seedHash(entry),
    retiredAt: null,
    createdAt: new Date(0),
    updatedAt: new Date(0),
    ...over,
  };
}

describe("templateHash", () => {
  it("depends on what instances are made from, not on the order it was written in", () => {
    const a = templateHash({ provider: null, image: "img:1", command: null, env: { A: "1", B: "2" } });
    assert.equal(a, templateHash({ provider: null, image: "img:1", command: null, env: { B: "2", A: "1" } }));
    assert.notEqual(a, templateHash({ provider: null, image: "img:2", command: null, env: { A: "1", B: "2" } }));
    assert.notEqual(a, templateHash({ provider: null, image: "img:1", command: null, env: { A: "1", B: "3" } }));
    assert.notEqual(a, templateHash({ provider: "railway", image: "img:1", command: null, env: { A: "1", B: "2" } }));
    assert.notEqual(
      templateHash({ provider: null, image: null, command: ["a", "b"], env: {} }),
      templateHash({ provider: null, image: null, command: ["a b"], env: {} }),
    );
  });

  it("sizes, labels and claim defaults are not part of it (they start no rollout)", () => {
    const a = poolSettings({ id: "p", image: "x", minIdle: 1 });
    const b = poolSettings({ id: "p", image: "x", minIdle: 5, runtime: "hermes", claimAgentName: "Bob" });
    assert.equal(templateHash(a), templateHash(b));
  });
});

describe("poolSettings", () => {
  it("fills defaults, keeps a base's values for fields not given, refuses min idle above max total", () => {
    const s = poolSettings({ id: "hermes" });
    assert.deepEqual([s.runtime, s.minIdle, s.maxTotal, s.maxSurge, s.provider, s.image, s.command], ["hermes", 3, 10, 2, null, null, null]);
    const patched = poolSettings({ id: "hermes", minIdle: 1 }, poolSettings({ id: "hermes", image: "img:1", runtime: "h" }));
    assert.deepEqual([patched.image, patched.runtime, patched.minIdle], ["img:1", "h", 1]);
    assert.throws(() => poolSettings({ id: "x", minIdle: 5, maxTotal: 2 }), /min idle \(5\) is larger than max total \(2\)/);
  });

  it("masks secret-looking environment values", () => {
    assert.deepEqual(maskedEnv({ XMTP_ENV: "dev", OPENAI_API_KEY: "sk-1", GATEWAY_TOKEN: "t", DB_PASSWORD: "p" }), {
      XMTP_ENV: "dev",
      OPENAI_API_KEY: "••••••",
      GATEWAY_TOKEN: "••••••",
      DB_PASSWORD: "••••••",
    });
  });
});

describe("planSeed", () => {
  const env = { XMTP_ENV: "dev" };
  const hermes: PoolSettingsInput = { id: "hermes", runtime: "hermes", image: "ghcr.io/x/hermes:1", minIdle: 2 };
  const openclaw: PoolSettingsInput = { id: "openclaw", runtime: "openclaw", image: "ghcr.io/x/openclaw:1" };

  it("creates pools the database does not have", () => {
    const w = planSeed([hermes, openclaw], [], env);
    assert.deepEqual(
      w.map((x) => [x.pool.id, x.reason, x.templateChanged]),
      [
        ["hermes", "created", false],
        ["openclaw", "created", false],
      ],
    );
    assert.equal(w[0]!.pool.seedHash, seedHash(hermes));
  });

  it("leaves pools alone when their configuration entry did not change, even if the API changed them since", () => {
    const changedByApi = record(hermes, env, { minIdle: 7, image: "ghcr.io/x/hermes:2" });
    assert.deepEqual(planSeed([hermes], [changedByApi], env), []);
  });

  it("applies a changed configuration entry; an image change is a template change (a rollout), a size change is not", () => {
    const have = record(hermes, env);
    const bigger = planSeed([{ ...hermes, minIdle: 4 }], [have], env);
    assert.deepEqual(
      bigger.map((x) => [x.reason, x.templateChanged, x.pool.minIdle]),
      [["configuration changed", false, 4]],
    );
    const upgraded = planSeed([{ ...hermes, image: "ghcr.io/x/hermes:2" }], [have], env);
    assert.equal(upgraded[0]!.templateChanged, true);
    assert.equal(upgraded[0]!.pool.previousTemplate?.image, "ghcr.io/x/hermes:1", "the old template is kept for a rollback");
  });

  it("a changed INSTANCE_ENV_* moves every pool's hash (a rollout each), configured or not", () => {
    const apiPool = record({ id: "extra", image: "img" }, env, { seedHash: null });
    const w = planSeed([hermes], [record(hermes, env), apiPool], { XMTP_ENV: "production" });
    assert.deepEqual(w.map((x) => [x.pool.id, x.reason, x.templateChanged]).sort(), [
      ["extra", "deployment environment changed", true],
      ["hermes", "deployment environment changed", true],
    ]);
  });

  it("never deletes a pool the configuration no longer names, and brings back a retired one it names", () => {
    assert.deepEqual(planSeed([], [record(openclaw, env)], env), []);
    const retired = record(hermes, env, { retiredAt: new Date(0) });
    assert.equal(planSeed([hermes], [retired], env)[0]?.reason, "created");
  });
});

describe("seedHash and sizing (issue 13)", () => {
  it("an entry without sizing hashes as before sizing existed; a sizing policy, and each change of it, changes the hash", () => {
    const entry: PoolSettingsInput = { id: "hermes", minIdle: 2 };
    // Frozen: the hash of an entry without sizing must not change with this feature (no re-seeding on upgrade).
    assert.equal(seedHash(entry), "43e95aaf297b");
    const demand = { mode: "demand" as const, floor: 1, ceiling: null, safetyFactor: 1, windowMinutes: 15, cooldownMinutes: 20, timeZone: "UTC", schedule: [] };
    const a = seedHash({ ...entry, sizing: demand });
    const b = seedHash({ ...entry, sizing: { ...demand, floor: 2 } });
    assert.notEqual(a, seedHash(entry));
    assert.notEqual(a, b);
  });

  it("seeding a changed sizing policy writes it", () => {
    const entry: PoolSettingsInput = { id: "hermes", minIdle: 2 };
    const have = record(entry, {});
    const demand = { mode: "demand" as const, floor: 3, ceiling: null, safetyFactor: 1, windowMinutes: 15, cooldownMinutes: 20, timeZone: "UTC", schedule: [] };
    const writes = planSeed([{ ...entry, sizing: demand }], [have], {});
    assert.equal(writes.length, 1);
    assert.deepEqual(writes[0]!.pool.sizing, demand);
  });
});
