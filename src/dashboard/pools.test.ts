/**
 * The dashboard with several pools and operators' actions on agents (issue 11), in-process: the
 * real server (`serve`) on PGlite with real reference runtimes, driven through Fastify's `inject`.
 * Every page and fragment takes its pool (default POOL_ID); the pools page shows each pool's bar
 * and manages pools through the registry (secret-looking env values masked, never sent back);
 * agents' cards carry protect / release / upgrade controls; versions and upgrade progress render;
 * hostile values render as text; no response carries a secret.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../config.ts";
import { serve, type RunningPool } from "../serve.ts";
import { RuntimeProvider } from "../../test/support/runtime-provider.ts";
import { waitFor } from "../../test/support/process.ts";

const SECRET = "sk-live-very-secret-value-0123456789";
const HOSTILE = `<script>alert("env")</script>`;

describe("dashboard: several pools, versions, upgrades and agent controls", () => {
  let pool: RunningPool;
  let dir: string;
  let provider: RuntimeProvider;
  const seen: string[] = [];
  let cookie = "";

  const req = async (
    method: "GET" | "POST",
    url: string,
    o: { form?: Record<string, string>; hx?: boolean; csrf?: boolean | string; noCookie?: boolean } = {},
  ) => {
    const headers: Record<string, string> = {};
    if (cookie && !o.noCookie) headers.cookie = cookie;
    if (o.hx) headers["hx-request"] = "true";
    if (o.form) headers["content-type"] = "application/x-www-form-urlencoded";
    const form = o.form && o.csrf !== false ? { _csrf: typeof o.csrf === "string" ? o.csrf : await csrf(), ...o.form } : o.form;
    const r = await pool.app.inject({ method, url, headers, ...(form ? { payload: new URLSearchParams(form).toString() } : {}) });
    seen.push(r.body, JSON.stringify(r.headers));
    const set = r.headers["set-cookie"];
    if (typeof set === "string") cookie = set.split(";")[0]!;
    return { status: r.statusCode, body: r.body, headers: r.headers };
  };
  let token = "";
  const csrf = async (): Promise<string> => {
    if (token) return token;
    const page = await pool.app.inject({ method: "GET", url: "/", headers: { cookie } });
    token = /name="_csrf" value="([^"]+)"/.exec(page.body)![1]!;
    return token;
  };
  const idleOf = async (p: string) => (await pool.ops.summary(p)).counts.idle;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agent-pool-dash-pools-"));
    provider = new RuntimeProvider();
    pool = await serve(
      loadConfig({
        DATA_DIR: dir,
        PORT: "0",
        POOL_API_KEY: `ap_test_${"k".repeat(24)}`,
        LOG_LEVEL: "silent",
        TICK_INTERVAL_MS: "3600000",
        POOL_MIN_IDLE: "2",
        POOL_MAX_TOTAL: "5",
        UPGRADE_CONCURRENCY: "1",
      }),
      { provider },
    );
    await pool.ops.registry.create({ id: "hermes", runtime: "hermes", minIdle: 1, maxTotal: 3, env: { OPENAI_API_KEY: SECRET, GREETING: HOSTILE } });
    await pool.ops.reconcile();
    await waitFor("idle in both pools", async () => (await idleOf("default")) === 2 && (await idleOf("hermes")) === 1, 15_000, 50);
    const login = await pool.app.inject({
      method: "POST",
      url: "/login",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: `password=${pool.apiKey}`,
    });
    cookie = String(login.headers["set-cookie"]).split(";")[0]!;
  });
  after(async () => {
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("every new page, fragment and action needs a session", async () => {
    for (const [m, u] of [
      ["GET", "/dashboard/pools"],
      ["GET", "/dashboard/pools/list"],
      ["GET", "/dashboard/versions"],
      ["GET", "/dashboard/upgrades"],
      ["POST", "/dashboard/pools"],
      ["POST", "/dashboard/pools/hermes/update"],
      ["POST", "/dashboard/pools/hermes/delete"],
      ["POST", "/dashboard/pools/hermes/upgrade"],
      ["POST", "/dashboard/instances/i-x/protect"],
      ["POST", "/dashboard/instances/i-x/release"],
      ["POST", "/dashboard/instances/i-x/upgrade"],
    ] as const) {
      const r = await req(m, u, { hx: true, noCookie: true });
      assert.equal(r.status, 401, `${m} ${u}`);
      assert.equal(r.headers["hx-redirect"], "/login");
    }
    const page = await req("GET", "/dashboard/pools", { noCookie: true });
    assert.equal(page.status, 303);
  });

  it("the main page switches pools: the header lists them, every fragment, form and the live feed name the pool", async () => {
    const main = await req("GET", "/");
    assert.match(
      main.body,
      /<nav class="pools-nav" id="pools-nav" aria-label="Pools"><a href="\/\?pool=default" id="pool-link-default" title="runtime default" aria-current="page">default<\/a><a href="\/\?pool=hermes"/,
    );
    const page = await req("GET", "/?pool=hermes");
    assert.equal(page.status, 200);
    assert.match(page.body, /<title>agent-pool · hermes \(local\)<\/title>/);
    assert.match(page.body, /id="pool-link-hermes" title="runtime hermes" aria-current="page"/);
    assert.match(page.body, /id="count-idle">1</);
    assert.match(page.body, /hx-get="\/dashboard\/pool\?pool=hermes"/);
    assert.match(page.body, /hx-get="\/dashboard\/agents\?pool=hermes"/);
    assert.match(page.body, /hx-get="\/dashboard\/instances\?pool=hermes"/);
    assert.match(page.body, /data-events="\/dashboard\/events\?pool=hermes"/);
    assert.match(page.body, /<input type="hidden" name="pool" value="hermes">/);
    assert.match(page.body, /id="versions-table"/);
    const bar = await req("GET", "/dashboard/pool?pool=hermes", { hx: true });
    assert.match(bar.body, /id="count-total">1</);
    const inst = await req("GET", "/dashboard/instances?pool=hermes", { hx: true });
    assert.equal((inst.body.match(/class="irow-wrap"/g) ?? []).length, 1);
    for (const u of ["/?pool=nope", "/?pool=Bad%20Id", "/dashboard/pool?pool=nope", "/dashboard/events?pool=nope"]) {
      assert.equal((await req("GET", u)).status, 404, u);
    }
    // An action on the page's pool: the form's hidden field names it.
    const added = await req("POST", "/dashboard/pool/add", { hx: true, form: { count: "1", pool: "hermes" } });
    assert.equal(added.status, 200, added.body);
    assert.equal((await pool.ops.summary("hermes")).counts.total, 2);
    assert.equal((await pool.ops.summary("default")).counts.total, 2, "the other pool is untouched");
  });

  it("streams the page's pool's changes", async () => {
    const res = await pool.app.inject({ method: "GET", url: "/dashboard/events?pool=hermes", headers: { cookie }, payloadAsStream: true });
    assert.equal(res.statusCode, 200);
    const stream = res.stream();
    const first = await new Promise<string>((r) => stream.once("data", (d: Buffer) => r(String(d))));
    assert.match(first, /retry: 2000/);
    stream.destroy();
  });

  it("the pools page: each pool's bar and settings, secrets masked, hostile values as text", async () => {
    const page = await req("GET", "/dashboard/pools");
    assert.equal(page.status, 200);
    assert.match(page.body, /id="pool-card-default"/);
    assert.match(page.body, /id="pool-card-hermes"/);
    assert.match(page.body, /<code>OPENAI_API_KEY=••••••<\/code>/);
    assert.ok(!page.body.includes(SECRET), "the secret never reaches the page");
    assert.ok(!page.body.includes(HOSTILE));
    assert.ok(page.body.includes("GREETING=&lt;script&gt;alert(&quot;env&quot;)&lt;/script&gt;"));
    assert.match(page.body, /class="capbar"/);
    assert.match(page.body, /id="pools-manage"[^>]*aria-current="page"/);
    assert.ok(!/<script>|<style>| style=| on[a-z]+=/i.test(page.body.replaceAll("&lt;script&gt;", "")), "no inline script, style or handler");
    const list = await req("GET", "/dashboard/pools/list", { hx: true });
    assert.match(list.body, /id="pool-card-hermes"/);
    assert.match(list.body, /<nav class="pools-nav" id="pools-nav" aria-label="Pools" hx-swap-oob="true">/, "the switcher follows new pools");
  });

  it("creates, changes and deletes pools through the registry's validation; a masked secret sent back is kept", async () => {
    const bad = await req("POST", "/dashboard/pools", { hx: true, form: { id: "Bad Id", minIdle: "1" } });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /class="banner error"/);
    assert.match(bad.body, /Invalid pool at id/);
    const badEnv = await req("POST", "/dashboard/pools", { hx: true, form: { id: "x1", env: "NOEQUALS" } });
    assert.equal(badEnv.status, 400);
    assert.match(badEnv.body, /KEY=value/);
    const noToken = await req("POST", "/dashboard/pools", { hx: true, csrf: false, form: { id: "sneaky" } });
    assert.equal(noToken.status, 403);

    const created = await req("POST", "/dashboard/pools", {
      hx: true,
      form: {
        id: "spare",
        runtime: "spare-rt",
        provider: "",
        image: "",
        command: "",
        minIdle: "0",
        maxTotal: "2",
        maxSurge: "",
        claimAgentName: "Sparky",
        joinUrlHosts: "convos.org, popup.convos.org",
        env: "TOKEN_X=abc\nMODE=dev\n",
        claimInstructions: "",
      },
    });
    assert.equal(created.status, 200, created.body);
    assert.equal(created.headers["hx-trigger"], "pool-changed");
    assert.match(created.body, /Created pool <strong>spare<\/strong>/);
    const spare = (await pool.store.getPool("spare"))!;
    assert.deepEqual(
      [spare.runtime, spare.minIdle, spare.maxTotal, spare.claimAgentName, spare.joinUrlHosts, spare.env],
      ["spare-rt", 0, 2, "Sparky", ["convos.org", "popup.convos.org"], { TOKEN_X: "abc", MODE: "dev" }],
    );
    assert.equal((await req("POST", "/dashboard/pools", { hx: true, form: { id: "spare" } })).status, 409);

    // The edit form shows the secret masked; sending the mask back keeps it, a new value replaces.
    const page = await req("GET", "/dashboard/pools");
    assert.match(page.body, /MODE=dev\nTOKEN_X=••••••<\/textarea>/);
    const saved = await req("POST", "/dashboard/pools/spare/update", {
      hx: true,
      form: { runtime: "spare-rt", maxTotal: "3", env: "TOKEN_X=••••••\nMODE=prod" },
    });
    assert.equal(saved.status, 200, saved.body);
    assert.match(saved.body, /New template/);
    const after = (await pool.store.getPool("spare"))!;
    assert.deepEqual([after.maxTotal, after.env], [3, { TOKEN_X: "abc", MODE: "prod" }]);

    const notEmpty = await req("POST", "/dashboard/pools/hermes/delete", { hx: true, form: {} });
    assert.equal(notEmpty.status, 409);
    assert.match(notEmpty.body, /still holds instances/);
    const deleted = await req("POST", "/dashboard/pools/spare/delete", { hx: true, form: {} });
    assert.equal(deleted.status, 200, deleted.body);
    assert.equal((await pool.store.getPool("spare"))?.retiredAt !== null, true);
    // Without htmx the answer is the pools page with the message on top.
    const noJs = await req("POST", "/dashboard/pools/hermes/delete", { form: {} });
    assert.equal(noJs.status, 409);
    assert.match(noJs.body, /<div class="flash"><div class="banner error"/);
    assert.match(noJs.body, /id="pool-card-hermes"/);
  });

  let agentId = "";
  it("an agent's card: protect (then release is refused), unprotect, release back to the pool", async () => {
    const r = await pool.ops.claim({ agentName: "Guinevere", instructions: "x" });
    agentId = r.instanceId;
    const cards = await req("GET", "/dashboard/agents", { hx: true });
    assert.match(
      cards.body,
      new RegExp(
        `id="release-${agentId}" hx-post="/dashboard/instances/${agentId}/release" hx-target="#agents-notice" hx-confirm="Release agent “Guinevere”\\?`,
      ),
    );
    assert.match(cards.body, new RegExp(`id="protect-${agentId}"[^>]*hx-vals="\\{&quot;protected&quot;:&quot;1&quot;\\}"`));
    assert.doesNotMatch(cards.body, new RegExp(`id="upgrade-${agentId}"`), "on the current template: nothing to upgrade");

    const prot = await req("POST", `/dashboard/instances/${agentId}/protect`, { hx: true, form: { protected: "1" } });
    assert.equal(prot.status, 200, prot.body);
    assert.match(prot.body, /is protected/);
    const after = await req("GET", "/dashboard/agents", { hx: true });
    assert.match(after.body, /class="badge mark-protected"/);
    assert.match(after.body, new RegExp(`id="release-${agentId}" disabled`));
    assert.match(after.body, new RegExp(`id="unprotect-${agentId}"`));
    const refused = await req("POST", `/dashboard/instances/${agentId}/release`, { hx: true, form: {} });
    assert.equal(refused.status, 409);
    assert.match(refused.body, /protected: unprotect it before releasing it/);

    assert.equal((await req("POST", `/dashboard/instances/${agentId}/protect`, { hx: true, form: { protected: "0" } })).status, 200);
    const released = await req("POST", `/dashboard/instances/${agentId}/release`, { hx: true, form: {} });
    assert.equal(released.status, 200, released.body);
    assert.match(released.body, /Released <strong>Guinevere<\/strong>: its instance was reset clean and is back in the pool/);
    assert.equal((await pool.store.getInstance(agentId))?.status, "idle");
    // The instance's detail carries its protect control too.
    const events = await req("GET", `/dashboard/instances/${agentId}/events`, { hx: true });
    assert.match(
      events.body,
      new RegExp(`<div class="inst-controls"><button type="button" class="ghost" id="protect-${agentId}"[^>]*hx-target="#inst-notice-${agentId}"`),
    );
  });

  it("versions and upgrades: older templates marked, one agent upgraded, a bulk upgrade's progress", async () => {
    const a = await pool.ops.claim({ agentName: "Old One", instructions: "x" });
    const b = await pool.ops.claim({ agentName: "Old Two", instructions: "x" });
    const { pool: p } = await pool.ops.registry.update("default", { env: { RUNTIME_VERSION: "7.0.0" } });
    const cards = await req("GET", "/dashboard/agents", { hx: true });
    assert.match(cards.body, /class="badge mark-old"/);
    assert.match(
      cards.body,
      new RegExp(`id="upgrade-${a.instanceId}" hx-post="/dashboard/instances/${a.instanceId}/upgrade"[^>]*hx-confirm="Upgrade agent “Old One”`),
    );
    const versions = await req("GET", "/dashboard/versions", { hx: true });
    assert.match(versions.body, /<span class="badge mark-old">older<\/span>/);
    let panel = await req("GET", "/dashboard/upgrades", { hx: true });
    assert.match(panel.body, /id="outdated-count"><strong>2<\/strong> agents on an older template/);
    assert.doesNotMatch(panel.body, /id="upgrade-all"[^>]*disabled/);

    const one = await req("POST", `/dashboard/instances/${a.instanceId}/upgrade`, { hx: true, form: {} });
    assert.equal(one.status, 200, one.body);
    assert.match(one.body, /Upgrading <strong>Old One<\/strong>/);
    await waitFor("a upgraded", async () => (await pool.store.getInstance(a.instanceId))?.templateHash === p.templateHash, 10_000, 50);

    // Hold the bulk upgrade at its first agent: the panel shows it running, and polls while it runs.
    const gates: Array<() => void> = [];
    provider.upgradeGate = () => new Promise<void>((r) => gates.push(r));
    const bulk = await req("POST", "/dashboard/pools/default/upgrade", { hx: true, form: {} });
    assert.equal(bulk.status, 200, bulk.body);
    assert.match(bulk.body, /Upgrading 1 agent of pool <strong>default<\/strong>/);
    await waitFor("the bulk upgrade in flight", () => gates.length === 1, 5_000, 20);
    panel = await req("GET", "/dashboard/upgrades", { hx: true });
    assert.match(panel.body, /hx-trigger="pool-changed from:body, every 1s" hx-swap="outerHTML"/);
    assert.match(panel.body, /<progress max="1" value="0"/);
    assert.match(panel.body, /0 of 1 upgraded · 0 failed · 0 skipped/);
    assert.match(panel.body, new RegExp(`<code>${b.instanceId}</code> <span class="badge job-running">running</span>`));
    provider.upgradeGate = null;
    gates.shift()!();
    await waitFor("the bulk upgrade done", async () => (await pool.agents.jobs("default", 1))[0]?.state === "done", 10_000, 50);
    panel = await req("GET", "/dashboard/upgrades", { hx: true });
    assert.match(panel.body, /hx-trigger="pool-changed from:body" hx-swap="outerHTML"/, "no more polling once nothing runs");
    assert.match(panel.body, /1 of 1 upgraded/);
    assert.match(panel.body, /id="upgrade-all"[^>]*disabled/);
    const main = await req("GET", "/");
    assert.match(main.body, /Versions and upgrades/);
  });

  it("never sends the API key, a gateway token or a pool's secret", async () => {
    const rows = await pool.store.listInstances(null, { includeDeleted: true });
    const secrets = [pool.apiKey, SECRET, "abc\n", ...rows.map((r) => r.gatewayToken)];
    assert.ok(seen.length > 40);
    for (const body of seen) for (const s of secrets) assert.ok(!body.includes(s), `a secret leaked: ${s.slice(0, 6)}…`);
  });
  it("a pool card says when the pool is sized by demand, and the main page has the history panel (issue 13)", async () => {
    await pool.ops.registry.update("hermes", { sizing: { mode: "demand", floor: 2, safetyFactor: 1.5 } });
    const page = await req("GET", "/dashboard/pools");
    assert.match(page.body, /id="pool-card-hermes"[\s\S]*?sizing <strong>demand<\/strong> \(floor 2, ×1.5\)/);
    assert.match(page.body, /id="pool-card-default"[\s\S]*?keeps \d+ idle/);
    const main = await req("GET", "/?pool=hermes");
    assert.match(main.body, /<section class="card" aria-labelledby="history-h" id="history-card">/);
    const week = await req("GET", "/dashboard/history?pool=hermes&range=week", { hx: true });
    assert.equal(week.status, 200);
    assert.match(week.body, /id="history-range-week" hx-get="[^"]*" hx-target="#history" aria-pressed="true"/);
    await pool.ops.registry.update("hermes", { sizing: { mode: "fixed" } });
  });
});
