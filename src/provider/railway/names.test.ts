import { test } from "node:test";
import assert from "node:assert/strict";
import { ServiceNames, type ParsedServiceName } from "./names.ts";

const ID_PATTERN = /^[a-z0-9]+-[a-z0-9]+$/;
const names = (poolId: string, ownerId = "own01", prefix = "ap") =>
  new ServiceNames({ prefix, poolId, ownerId, maxName: 32, maxInstanceIdLength: 14, idPattern: ID_PATTERN });

test("parse: both forms, any owner, and nothing of other pools", () => {
  const d = names("default");
  const cases: Array<[string, ParsedServiceName | null]> = [
    // Ours, another deployment's (same pool name), renamed ones.
    ["ap-default-i-3k9x0q2m1b7a-own01", { instanceId: "i-3k9x0q2m1b7a", owner: "own01", label: null }],
    ["ap-default-i-3k9x0q2m1b7a-k2f9q", { instanceId: "i-3k9x0q2m1b7a", owner: "k2f9q", label: null }],
    ["ap-default-i-3k9x0q2m1b7a-own01--a", { instanceId: "i-3k9x0q2m1b7a", owner: "own01", label: "a" }],
    ["ap-default-i-abc-k2f9q--bob-x", { instanceId: "i-abc", owner: "k2f9q", label: "bob-x" }],
    // The form before owner ids (upgrade path): no owner.
    ["ap-default-i-3k9x0q2m1b7a", { instanceId: "i-3k9x0q2m1b7a", owner: null, label: null }],
    ["ap-default-i-3k9x0q2m1b7a--ada-l", { instanceId: "i-3k9x0q2m1b7a", owner: null, label: "ada-l" }],
    // Pool `default-2` (both forms), pool `defaults`, and names that are nobody's.
    ["ap-default-2-i-3k9x0q2m1b7a-own01", null],
    ["ap-default-2-i-3k9x0q2m1b7a", null],
    ["ap-defaults-i-3k9x0q2m1b7a-own01", null],
    ["ap-default-i-3k9x0q2m1b7a-own1", null], // 4-character owner part
    ["ap-default-i-3k9x0q2m1b7a-OWN01", null],
    ["ap-default-i-x-y-own01", null], // id with two dashes
    ["ap-default-i3k9x0q2m1b7a-own01", { instanceId: "i3k9x0q2m1b7a-own01", owner: null, label: null }], // an id without its dash is read as an old-form id
    ["ap-default-", null],
    ["xp-default-i-abc-own01", null],
    ["postgres", null],
  ];
  for (const [name, want] of cases) assert.deepEqual(d.parse(name), want, name);
});

test("parse: pools whose ids prefix each other stay apart in both directions, in both forms", () => {
  for (const [a, b] of [
    ["dev", "dev-2"],
    ["default", "default-2"],
    ["p", "p-x"],
  ]) {
    const na = names(a!);
    const nb = names(b!);
    const all = [
      [na.serviceName("i-3k9x0q2m1b7a"), na],
      [`${na.legacyPrefix}i-3k9x0q2m1b7a`, na],
      [nb.serviceName("i-3k9x0q2m1b7a"), nb],
      [`${nb.legacyPrefix}i-3k9x0q2m1b7a`, nb],
    ] as const;
    for (const [name, owner] of all) {
      assert.equal(na.parse(name) !== null, owner === na, `${name} in ${a}`);
      assert.equal(nb.parse(name) !== null, owner === nb, `${name} in ${b}`);
    }
  }
  // The one overlap, documented in names.ts: a pool named `<other pool>-i` reads that pool's names
  // as its own of the old form, i.e. without an owner and matching none of its rows: it reports
  // them and never touches them.
  assert.deepEqual(names("p-i").parse(names("p").serviceName("i-3k9x0q2m1b7a")), { instanceId: "3k9x0q2m1b7a-own01", owner: null, label: null });
});

test("names fit 32 characters; the old form of a long pool id keeps its longer tag", () => {
  for (const poolId of ["x", "default", "stagingx", "production", "a-very-long-pool-identifier-of32"]) {
    for (const prefix of ["a", "ap", "abcde"]) {
      const n = names(poolId, "k2f9q", prefix);
      const name = n.serviceName("i-3k9x0q2m1b7a");
      assert.ok(name.length <= 32, `${name} is ${name.length}`);
      assert.deepEqual(n.parse(name), { instanceId: "i-3k9x0q2m1b7a", owner: "k2f9q", label: null });
      assert.ok(n.legacyPrefix.length <= 18 && n.ownPrefix.length <= 12);
      assert.deepEqual(n.parse(`${n.legacyPrefix}i-3k9x0q2m1b7a`), { instanceId: "i-3k9x0q2m1b7a", owner: null, label: null });
    }
  }
  const p = names("production");
  assert.equal(p.legacyPrefix, "ap-production-");
  assert.match(p.ownPrefix, /^ap-prod[a-z0-9]{4}-$/);
  assert.equal(names("default").ownPrefix, names("default").legacyPrefix);
  assert.throws(() => names("a-long-pool", "own01", "abcdef"), /no room/);
  assert.throws(() => names("default", "Own-1"), /owner id/);
});

test("nameFor: cuts the label to fit, keeps the instance id and the owner id, refuses names that are not ours", () => {
  const short = names("p");
  const base = short.serviceName("i-3k9x0q2m1b7a"); // ap-p-i-3k9x0q2m1b7a-own01: 25, room for `--` + 5
  assert.equal(short.nameFor(`${base}--ada-lovelace`), `${base}--ada-l`);
  assert.equal(short.nameFor(`${base}-ada`), `${base}--ada`);
  const d = names("default");
  const full = d.serviceName("i-3k9x0q2m1b7a"); // 31 characters: no label fits
  assert.equal(full.length, 31);
  assert.equal(d.nameFor(`${full}--ada-lovelace`), full);
  assert.equal(d.nameFor(full), full);
  for (const bad of ["my-agent", "ap-default-i-3k9x0q2m1b7a--ada", "ap-default-i-3k9x0q2m1b7a-k2f9q--ada", "ap-default-2-i-3k9x0q2m1b7a-own01"]) {
    assert.throws(() => d.nameFor(bad), /PROVIDER|prefix|owner/, bad);
  }
});
