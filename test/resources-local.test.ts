/**
 * Issue 12's "done when", on the local provider (real child processes of the reference runtime)
 * with the OpenRouter stand-in configured: each new instance boots with its own key in its process
 * environment; the dashboard shows an agent's spend and tops its limit up within the maximum; the
 * spend is in the metrics; killing the agent deletes its key; and no response, page or log line
 * carries a key or the provisioning key.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { loadConfig } from "../src/config.ts";
import { HAS_PROCFS, readEnviron } from "../src/provider/process-table.ts";
import { serve, type RunningPool } from "../src/serve.ts";
import { OpenRouterStandin } from "./support/openrouter-standin.ts";
import { waitFor } from "./support/process.ts";

const PROVISIONING = "sk-or-v1-provisioning-local-e2e-00000000000000000000000";

describe("per-instance OpenRouter keys on the local provider", () => {
  let pool: RunningPool;
  let standin: OpenRouterStandin;
  let dir: string;
  const seen: string[] = [];
  const logs: string[] = [];
  let cookie = "";

  before(async () => {
    assert.ok(HAS_PROCFS, "this test reads the instances' environments from /proc");
    standin = await new OpenRouterStandin({ provisioningKey: PROVISIONING }).start();
    dir = mkdtempSync(join(tmpdir(), "agent-pool-resources-local-"));
    const logStream = new PassThrough();
    logStream.on("data", (c: Buffer) => logs.push(c.toString("utf8")));
    pool = await serve(
      loadConfig({
        DATA_DIR: dir,
        PORT: "0",
        LOG_LEVEL: "debug",
        POOL_MIN_IDLE: "2",
        POOL_MAX_TOTAL: "4",
        TICK_INTERVAL_MS: "1000",
        RESOURCE_TICK_INTERVAL_MS: "200",
        OPENROUTER_PROVISIONING_KEY: PROVISIONING,
        OPENROUTER_API_URL: standin.apiUrl,
        OPENROUTER_KEY_LIMIT: "20",
        OPENROUTER_KEY_LIMIT_MAX: "35",
      }),
      { logDestination: logStream },
    );
    await waitFor("2 idle instances", async () => (await pool.ops.summary()).counts.idle === 2, 30_000, 100);
  });
  after(async () => {
    await pool?.close();
    await standin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function req(
    method: string,
    path: string,
    o: { body?: unknown; form?: Record<string, string>; headers?: Record<string, string>; admin?: boolean } = {},
  ) {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    if (o.admin) headers.authorization = `Bearer ${pool.apiKey}`;
    if (cookie) headers.cookie = cookie;
    let payload: string | undefined;
    if (o.body !== undefined) {
      headers["content-type"] = "application/json";
      payload = JSON.stringify(o.body);
    }
    if (o.form) {
      headers["content-type"] = "application/x-www-form-urlencoded";
      payload = new URLSearchParams(o.form).toString();
    }
    const r = await fetch(`${pool.url}${path}`, { method, headers, redirect: "manual", ...(payload !== undefined ? { body: payload } : {}) });
    const text = await r.text();
    seen.push(text, JSON.stringify([...r.headers]));
    const set = r.headers.get("set-cookie");
    if (set) cookie = set.split(";")[0]!;
    return {
      status: r.status,
      text,
      json: (() => {
        try {
          return JSON.parse(text);
        } catch {
          return null;
        }
      })(),
    };
  }

  /** The pid of each local instance, from the provider's state file. */
  function pids(): Map<string, number> {
    const state = JSON.parse(readFileSync(join(dir, "local", "instances.json"), "utf8")) as { instances: Array<{ instanceId: string; pid: number }> };
    return new Map(state.instances.map((e) => [e.instanceId, e.pid]));
  }

  let agent = "";

  it("each new instance boots with its own key in its process environment", async () => {
    const rows = (await pool.store.listInstances("default")).filter((r) => r.status === "idle");
    assert.equal(rows.length, 2);
    const byInstance = pids();
    const seenKeys = new Set<string>();
    for (const r of rows) {
      const key = standin.keyOfInstance(r.id);
      assert.ok(key, `a key for ${r.id}`);
      const env = readEnviron(byInstance.get(r.id)!);
      assert.equal(env?.OPENROUTER_API_KEY, key.key, `${r.id} runs with its own key`);
      assert.equal(env?.INSTANCE_ID, r.id);
      seenKeys.add(key.key);
      const [res] = await pool.store.listResources({ instanceId: r.id });
      assert.deepEqual([res?.kind, res?.state, res?.ref], ["openrouter", "ready", key.hash]);
    }
    assert.equal(seenKeys.size, 2, "one key per instance");
    assert.ok(!readFileSync(join(dir, "local", "instances.json"), "utf8").includes("sk-or-v1-"), "the provider's state file holds no key");
  });

  it("the dashboard shows an agent's spend, and tops its limit up within the maximum", async () => {
    const c = await req("POST", "/api/pool/claim", { admin: true, body: { agentName: "Spender", instructions: "x" } });
    assert.equal(c.status, 200, c.text);
    agent = c.json.instanceId;
    const key = standin.keyOfInstance(agent)!;
    standin.spend(key.hash, 1.5);
    await waitFor("the spend to be recorded", async () => (await pool.store.listResources({ instanceId: agent }))[0]?.usage === 1.5, 10_000, 50);

    assert.equal((await req("POST", "/login", { form: { password: pool.apiKey } })).status, 303);
    const page = await req("GET", "/");
    assert.equal(page.status, 200);
    assert.match(page.text, /Spent <strong class="spend-used">\$1\.50<\/strong> of <span class="spend-limit">\$20\.00<\/span>/);
    assert.match(page.text, new RegExp(`hx-post="/dashboard/agents/${agent}/top-up"`));
    assert.match(page.text, /at most \$15\.00 more/);
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.text)![1]!;
    const htmx = { "x-csrf-token": csrf, "hx-request": "true" };

    const up = await req("POST", `/dashboard/agents/${agent}/top-up`, { form: { amount: "10" }, headers: htmx });
    assert.equal(up.status, 200, up.text);
    assert.match(up.text, /Raised the spending limit of <strong>Spender<\/strong> to \$30\.00/);
    assert.equal(standin.keys.get(key.hash)?.limit, 30);
    const over = await req("POST", `/dashboard/agents/${agent}/top-up`, { form: { amount: "5.01" }, headers: htmx });
    assert.equal(over.status, 409);
    assert.match(over.text, /above the maximum of \$35\.00; at most \$5\.00 more/);
    assert.equal(standin.keys.get(key.hash)?.limit, 30, "refused: nothing changed at the vendor");
    const fragment = await req("GET", "/dashboard/agents");
    assert.match(fragment.text, /of <span class="spend-limit">\$30\.00<\/span>/);
  });

  it("exports spend per pool", async () => {
    const m = await req("GET", "/metrics", { admin: true });
    assert.match(m.text, /agent_pool_resource_spend_usd\{pool="default",kind="openrouter"\} 1\.5/);
    assert.match(m.text, /agent_pool_resources\{pool="default",kind="openrouter",state="ready"\} \d+/);
    assert.match(m.text, /agent_pool_resource_calls_total\{kind="openrouter",operation="create",outcome="ok"\} \d+/);
  });

  it("killing the agent deletes its key", async () => {
    const key = standin.keyOfInstance(agent)!;
    const k = await req("DELETE", `/api/pool/instances/${agent}`, { admin: true });
    assert.equal(k.status, 200, k.text);
    await waitFor("the key to be deleted", async () => !standin.keys.has(key.hash), 10_000, 50);
    assert.equal(standin.deleted.get(key.hash), key.name);
    await waitFor("the resource row to be marked deleted", async () => (await pool.store.listResources({ instanceId: agent })).length === 0, 5_000, 50);
    // The pool refilled with a new instance that has its own key.
    await waitFor("2 idle again", async () => (await pool.ops.summary()).counts.idle === 2, 30_000, 100);
    for (const r of (await pool.store.listInstances("default")).filter((x) => x.status === "idle")) assert.ok(standin.keyOfInstance(r.id));
  });

  it("no response, page or log line carries a key or the provisioning key", async () => {
    const rows = await pool.store.listInstances("default", { includeDeleted: true });
    for (const r of rows) await req("GET", `/api/pool/instances/${r.id}`, { admin: true });
    await req("GET", "/api/pool/status", { admin: true });
    await req("GET", "/");
    const out = seen.join("\n");
    const log = logs.join("");
    assert.ok(log.length > 1000, "there is a log to search");
    assert.ok(standin.issued.length >= 3);
    for (const text of [out, log]) {
      assert.ok(!text.includes(PROVISIONING), "provisioning key leaked");
      for (const k of standin.issued) assert.ok(!text.includes(k), "an instance's key leaked");
      for (const r of rows) assert.ok(!text.includes(r.gatewayToken), "a gateway token leaked");
    }
  });
});
