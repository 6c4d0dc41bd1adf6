import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { ConfigError, loadConfig, proxyPlatform, trustProxyWarning } from "./config.ts";
import { poolsFromConfig } from "./pool/config-file.ts";

describe("loadConfig", () => {
  it("gives the documented defaults on an empty environment", () => {
    const c = loadConfig({});
    assert.equal(c.PORT, 3001);
    assert.equal(c.DATABASE_URL, undefined);
    assert.equal(c.DATA_DIR, "./.data");
    assert.equal(c.POOL_MIN_IDLE, 3);
    assert.equal(c.POOL_MAX_TOTAL, 10);
    assert.equal(c.POOL_STUCK_TIMEOUT_MS, 15 * 60 * 1000);
    assert.equal(c.PROVIDER, "local");
    assert.equal(c.POOL_API_KEY, undefined);
    assert.deepEqual(c.instanceEnv, {});
  });

  it("parses given values", () => {
    const c = loadConfig({ PORT: "4000", POOL_MIN_IDLE: "5", POOL_MAX_TOTAL: "20", DATABASE_URL: "postgres://u@h/db" });
    assert.equal(c.PORT, 4000);
    assert.equal(c.POOL_MIN_IDLE, 5);
    assert.equal(c.POOL_MAX_TOTAL, 20);
    assert.equal(c.DATABASE_URL, "postgres://u@h/db");
  });

  it("sets Postgres's statement timeout and pool size, 0 meaning no timeout", () => {
    assert.equal(loadConfig({}).PG_STATEMENT_TIMEOUT_MS, 15_000);
    assert.equal(loadConfig({}).PG_POOL_MAX, 10);
    const c = loadConfig({ PG_STATEMENT_TIMEOUT_MS: "0", PG_POOL_MAX: "25" });
    assert.equal(c.PG_STATEMENT_TIMEOUT_MS, 0);
    assert.equal(c.PG_POOL_MAX, 25);
    assert.throws(() => loadConfig({ PG_POOL_MAX: "0" }), /PG_POOL_MAX: .*a whole number from 1 to 1000/);
    assert.throws(() => loadConfig({ PG_STATEMENT_TIMEOUT_MS: "15s" }), /PG_STATEMENT_TIMEOUT_MS/);
  });

  it("polls starting instances fast locally and slowly on Railway unless STARTING_POLL_MS says otherwise", () => {
    const railway = { PROVIDER: "railway", RAILWAY_API_TOKEN: "t", RAILWAY_PROJECT_IDS: "p1", INSTANCE_IMAGE: "img" };
    assert.equal(loadConfig({}).STARTING_POLL_MS, 250);
    assert.equal(loadConfig(railway).STARTING_POLL_MS, 5_000);
    assert.equal(loadConfig({ ...railway, STARTING_POLL_MS: "2000" }).STARTING_POLL_MS, 2_000);
    assert.equal(loadConfig({ STARTING_POLL_MS: "100" }).STARTING_POLL_MS, 100);
    assert.throws(() => loadConfig({ STARTING_POLL_MS: "50" }), /STARTING_POLL_MS: expected a whole number/);
  });

  it("takes RAILWAY_ENVIRONMENT_ID/_NAME for the instances only outside a Railway deployment", () => {
    const outside = loadConfig({ RAILWAY_ENVIRONMENT_ID: "env-1", RAILWAY_ENVIRONMENT_NAME: "staging" });
    assert.equal(outside.RAILWAY_INSTANCE_ENVIRONMENT_ID, "env-1");
    assert.equal(outside.RAILWAY_INSTANCE_ENVIRONMENT_NAME, "staging");
    // Inside a deployment Railway sets them to the pool manager's own environment: ignored.
    const inside = loadConfig({ RAILWAY_SERVICE_ID: "svc", RAILWAY_ENVIRONMENT_ID: "env-own", RAILWAY_ENVIRONMENT_NAME: "own" });
    assert.equal(inside.RAILWAY_INSTANCE_ENVIRONMENT_ID, undefined);
    assert.equal(inside.RAILWAY_INSTANCE_ENVIRONMENT_NAME, "production");
    // The explicit settings win everywhere.
    const explicit = loadConfig({ RAILWAY_INSTANCE_ENVIRONMENT_ID: "env-2", RAILWAY_ENVIRONMENT_ID: "env-1" });
    assert.equal(explicit.RAILWAY_INSTANCE_ENVIRONMENT_ID, "env-2");
  });

  it("per-instance resources: none unless a provisioning key is set; limits in dollars, the maximum no smaller than a new key's", () => {
    const d = loadConfig({});
    assert.equal(d.OPENROUTER_PROVISIONING_KEY, undefined);
    assert.deepEqual(
      [
        d.OPENROUTER_API_URL,
        d.OPENROUTER_KEY_LIMIT,
        d.OPENROUTER_KEY_LIMIT_MAX,
        d.RESOURCE_TICK_INTERVAL_MS,
        d.RESOURCE_ORPHAN_GRACE_MS,
        d.MAX_RESOURCE_DELETES_PER_TICK,
        d.INSTANCE_RATE_LIMIT_PER_MIN,
      ],
      ["https://openrouter.ai/api/v1", 20, 100, 15_000, 600_000, 10, 60],
    );
    const c = loadConfig({ OPENROUTER_PROVISIONING_KEY: " sk-or-v1-x ", OPENROUTER_KEY_LIMIT: "12.50", OPENROUTER_KEY_LIMIT_MAX: "12.5" });
    assert.deepEqual([c.OPENROUTER_PROVISIONING_KEY, c.OPENROUTER_KEY_LIMIT, c.OPENROUTER_KEY_LIMIT_MAX], ["sk-or-v1-x", 12.5, 12.5]);
    assert.throws(
      () => loadConfig({ OPENROUTER_KEY_LIMIT: "50", OPENROUTER_KEY_LIMIT_MAX: "40" }),
      /OPENROUTER_KEY_LIMIT_MAX: expected an amount no smaller than OPENROUTER_KEY_LIMIT/,
    );
    assert.throws(() => loadConfig({ OPENROUTER_KEY_LIMIT: "1.005" }), /OPENROUTER_KEY_LIMIT: expected an amount in dollars/);
    assert.throws(() => loadConfig({ OPENROUTER_KEY_LIMIT: "-1" }), /OPENROUTER_KEY_LIMIT: expected an amount in dollars/);
    // The provisioning key is never echoed back in an error.
    try {
      loadConfig({ OPENROUTER_PROVISIONING_KEY: "sk-or-v1-secret", OPENROUTER_API_URL: "not a url" });
      assert.fail("expected a ConfigError");
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      assert.ok(!err.message.includes("sk-or-v1-secret"));
    }
  });

  it("gives claims documented defaults and parses the invite-link host list", () => {
    const d = loadConfig({});
    assert.equal(d.CLAIM_DEFAULT_AGENT_NAME, "Assistant");
    assert.equal(d.CLAIM_DEFAULT_INSTRUCTIONS, "You are a helpful AI assistant.");
    assert.equal(d.JOIN_URL_HOSTS, undefined, "unset: any host");
    assert.equal(loadConfig({ JOIN_URL_HOSTS: " " }).JOIN_URL_HOSTS, undefined);
    assert.equal(loadConfig({ CLAIM_DEFAULT_AGENT_NAME: "" }).CLAIM_DEFAULT_AGENT_NAME, "Assistant", "empty: the default");
    const c = loadConfig({
      CLAIM_DEFAULT_AGENT_NAME: " Concierge ",
      CLAIM_DEFAULT_INSTRUCTIONS: "Be brief.",
      JOIN_URL_HOSTS: "Convos.org., popup.convos.org,,",
    });
    assert.equal(c.CLAIM_DEFAULT_AGENT_NAME, "Concierge");
    assert.equal(c.CLAIM_DEFAULT_INSTRUCTIONS, "Be brief.");
    assert.deepEqual(c.JOIN_URL_HOSTS, ["convos.org", "popup.convos.org"]);
  });

  it("treats an empty DATABASE_URL as unset (embedded database)", () => {
    assert.equal(loadConfig({ DATABASE_URL: "" }).DATABASE_URL, undefined);
  });

  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: "abc" }, /PORT: expected a whole number from 0 to 65535 \(got "abc"\)/],
    [{ PORT: "70000" }, /PORT: expected a whole number/],
    [{ POOL_MIN_IDLE: "-1" }, /POOL_MIN_IDLE: expected a whole number/],
    [{ POOL_MIN_IDLE: "11", POOL_MAX_TOTAL: "10" }, /POOL_MIN_IDLE: expected a number no larger than POOL_MAX_TOTAL \(got "11"\)/],
    [{ PROVIDER: "aws" }, /PROVIDER: expected one of: local, railway/],
    [
      { JOIN_URL_HOSTS: "https://convos.org" },
      /JOIN_URL_HOSTS: expected comma-separated host names, e\.g\. convos\.org,popup\.convos\.org \(got "https:\/\/convos\.org"\)/,
    ],
    [{ JOIN_URL_HOSTS: "," }, /JOIN_URL_HOSTS: expected comma-separated host names/],
    [{ CLAIM_DEFAULT_AGENT_NAME: "n".repeat(201) }, /CLAIM_DEFAULT_AGENT_NAME: expected a name of at most 200 characters/],
    [{ PROVIDER: "railway", RAILWAY_PROJECT_IDS: "p1", INSTANCE_IMAGE: "img" }, /RAILWAY_API_TOKEN: expected RAILWAY_API_TOKEN or RAILWAY_PROJECT_TOKEN/],
    [{ PROVIDER: "railway", RAILWAY_API_TOKEN: "t", INSTANCE_IMAGE: "img" }, /RAILWAY_PROJECT_IDS: expected at least one project id/],
    [{ PROVIDER: "railway", RAILWAY_API_TOKEN: "t", RAILWAY_PROJECT_IDS: "p1" }, /INSTANCE_IMAGE: expected the runtime image/],
    [{ DATABASE_URL: "mysql://x" }, /DATABASE_URL: expected a postgres:\/\/ or postgresql:\/\/ URL$/m],
    [{ POOL_API_KEY: "short" }, /POOL_API_KEY: expected at least 16 characters$/m],
    [{ TICK_INTERVAL_MS: "1.5" }, /TICK_INTERVAL_MS: expected a whole number/],
    [{ TRUST_PROXY: "yes" }, /TRUST_PROXY: expected a whole number from 0 to 10 \(got "yes"\)/],
    [{ TRUST_PROXY: "11" }, /TRUST_PROXY: expected a whole number from 0 to 10/],
  ];
  for (const [env, pattern] of bad) {
    it(`rejects ${JSON.stringify(env)} naming the variable`, () => {
      assert.throws(
        () => loadConfig(env),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.match(err.message, pattern);
          return true;
        },
      );
    });
  }

  it("reports a value that is not a number once, not also as larger than POOL_MAX_TOTAL", () => {
    assert.throws(
      () => loadConfig({ POOL_MIN_IDLE: "abc" }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.deepEqual(err.problems, ['POOL_MIN_IDLE: expected a whole number from 0 to 1000 (got "abc")']);
        return true;
      },
    );
  });

  it("never echoes a secret value in the error", () => {
    assert.throws(
      () => loadConfig({ POOL_API_KEY: "tiny-secret" }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.doesNotMatch(err.message, /tiny-secret/);
        return true;
      },
    );
  });

  it("accepts a complete Railway configuration", () => {
    const c = loadConfig({ PROVIDER: "railway", RAILWAY_API_TOKEN: "t", RAILWAY_PROJECT_IDS: "p1, p2", INSTANCE_IMAGE: "ghcr.io/x/y:1" });
    assert.equal(c.PROVIDER, "railway");
    assert.equal(c.RAILWAY_API_URL, "https://backboard.railway.com/graphql/v2");
    assert.equal(c.RAILWAY_MAX_RPS, 50);
  });

  it("passes INSTANCE_ENV_* through without the prefix", () => {
    const c = loadConfig({ INSTANCE_ENV_XMTP_ENV: "dev", INSTANCE_ENV_: "ignored", OTHER: "x" });
    assert.deepEqual(c.instanceEnv, { XMTP_ENV: "dev" });
  });

  it("parses LOCAL_RUNTIME_COMMAND as JSON or a plain command line", () => {
    assert.deepEqual(loadConfig({ LOCAL_RUNTIME_COMMAND: '["node","x.js"]' }).localRuntimeCommand, ["node", "x.js"]);
    assert.deepEqual(loadConfig({ LOCAL_RUNTIME_COMMAND: "python3 -m runtime" }).localRuntimeCommand, ["python3", "-m", "runtime"]);
    assert.throws(() => loadConfig({ LOCAL_RUNTIME_COMMAND: "[1,2]" }), /LOCAL_RUNTIME_COMMAND/);
  });

  describe("TRUST_PROXY", () => {
    const cases: Array<[string, Record<string, string>, number, string, string | null, boolean]> = [
      // what, environment, TRUST_PROXY, from, platform, warns at start-up
      ["unset, no platform: 0", {}, 0, "default", null, false],
      ["unset on Railway (RAILWAY_SERVICE_ID): its edge is one hop", { RAILWAY_SERVICE_ID: "svc" }, 1, "platform", "Railway", false],
      ["unset on Railway (RAILWAY_PUBLIC_DOMAIN only)", { RAILWAY_PUBLIC_DOMAIN: "pool.up.railway.app" }, 1, "platform", "Railway", false],
      ["set on Railway: the setting wins", { RAILWAY_SERVICE_ID: "svc", TRUST_PROXY: "2" }, 2, "env", "Railway", false],
      ["set to 0 on Railway: kept, with a warning", { RAILWAY_SERVICE_ID: "svc", TRUST_PROXY: "0" }, 0, "env", "Railway", true],
      [
        "RAILWAY_ENVIRONMENT_ID alone is no deployment (people set it by hand)",
        { RAILWAY_ENVIRONMENT_ID: "env-1", RAILWAY_API_TOKEN: "t" },
        0,
        "default",
        null,
        false,
      ],
      ["an empty RAILWAY_SERVICE_ID is none", { RAILWAY_SERVICE_ID: "" }, 0, "default", null, false],
      ["Heroku: hop count not assumed, a warning", { DYNO: "web.1" }, 0, "default", "Heroku", true],
      ["Fly.io", { FLY_APP_NAME: "pool" }, 0, "default", "Fly.io", true],
      ["Render", { RENDER_SERVICE_ID: "srv-1" }, 0, "default", "Render", true],
      ["Cloud Run", { K_SERVICE: "pool" }, 0, "default", "Cloud Run", true],
      ["Heroku with TRUST_PROXY set: no warning", { DYNO: "web.1", TRUST_PROXY: "1" }, 1, "env", "Heroku", false],
    ];
    for (const [what, env, value, from, platform, warns] of cases) {
      it(what, () => {
        const c = loadConfig(env);
        assert.equal(c.TRUST_PROXY, value);
        assert.equal(c.trustProxyFrom, from);
        assert.equal(c.proxyPlatform?.name ?? null, platform);
        assert.equal(proxyPlatform(env)?.name ?? null, platform);
        const warning = trustProxyWarning(c);
        assert.equal(warning !== null, warns, String(warning));
        if (warning) assert.match(warning, new RegExp(`${platform!.replace(".", "\\.")} with TRUST_PROXY=0.*share one rate-limit bucket`));
      });
    }

    it("says in the warning when 0 was set explicitly, and the hop count where it is known", () => {
      assert.match(trustProxyWarning(loadConfig({ RAILWAY_SERVICE_ID: "svc", TRUST_PROXY: "0" }))!, /\(set explicitly\).*\(1 on Railway\)$/);
      assert.doesNotMatch(trustProxyWarning(loadConfig({ DYNO: "web.1" }))!, /set explicitly|\d on Heroku/);
    });
  });
});

describe("POOL_SIZING (issue 13)", () => {
  it("gives the default pool its sizing policy, defaults filled in; fixed when unset", () => {
    assert.equal(poolsFromConfig(loadConfig({})).pools[0]!.sizing, undefined);
    const p = poolsFromConfig(loadConfig({ POOL_SIZING: '{"mode":"demand","floor":2,"schedule":[{"days":["mon"],"from":"08:00","to":"10:00","floor":6}]}' }))
      .pools[0]!;
    assert.deepEqual(p.sizing, {
      mode: "demand",
      floor: 2,
      ceiling: null,
      safetyFactor: 1,
      windowMinutes: 15,
      cooldownMinutes: 20,
      timeZone: "UTC",
      schedule: [{ days: ["mon"], from: "08:00", to: "10:00", floor: 6 }],
    });
  });
  it("refuses a bad policy, naming the variable and the field", () => {
    assert.throws(
      () => poolsFromConfig(loadConfig({ POOL_SIZING: "demand" })),
      (e: unknown) => e instanceof ConfigError && /POOL_SIZING: not valid JSON/.test(e.message),
    );
    assert.throws(
      () => poolsFromConfig(loadConfig({ POOL_SIZING: '{"mode":"demand","floor":9,"ceiling":2}' })),
      (e: unknown) => e instanceof ConfigError && /POOL_SIZING: .*floor must not be larger than ceiling/.test(e.message),
    );
  });
});
