/**
 * The dashboard's rollout page in-process (issue 11): the real server over a real store, driven
 * through Fastify's `inject` (and a real socket for the live feed). A session is needed before
 * anything; the page and its live panel show a pool's current rollout, its progress and its
 * history; pause, resume and roll back need the CSRF token and answer a banner (htmx) or the page
 * (no JavaScript); a halted rollout shows its reason; the live feed pushes a change when only a
 * rollout moved.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { openStore } from "../src/db/open.ts";
import type { Store } from "../src/db/store.ts";
import { ensureIdle, startTestServer, type TestServer } from "./support/http-server.ts";

describe("dashboard rollout page", () => {
  let store: Store;
  let t: TestServer;
  let cookie = "";
  let csrf = "";
  const req = async (method: "GET" | "POST", url: string, o: { form?: Record<string, string>; headers?: Record<string, string> } = {}) => {
    const r = await t.app.inject({
      method,
      url,
      headers: { ...(cookie ? { cookie } : {}), ...(o.form ? { "content-type": "application/x-www-form-urlencoded" } : {}), ...(o.headers ?? {}) },
      ...(o.form ? { payload: new URLSearchParams(o.form).toString() } : {}),
    });
    return { status: r.statusCode, body: r.body, headers: r.headers };
  };
  const htmx = { "hx-request": "true" };

  before(async () => {
    store = await openStore({ dataDir: null });
    t = await startTestServer({ store, minIdle: 2, maxTotal: 4 });
    await ensureIdle(t.ops, 2);
  });
  after(async () => {
    await t?.close();
    await store?.close();
  });

  it("needs a session: signed out, the page redirects to the login and actions are refused", async () => {
    const page = await req("GET", "/dashboard/rollouts/default");
    assert.deepEqual([page.status, page.headers.location], [303, "/login"]);
    assert.equal((await req("GET", "/dashboard/rollouts/default/panel", { headers: htmx })).status, 401);
    assert.equal((await req("POST", "/dashboard/rollouts/default/pause", { form: { _csrf: "x" } })).status, 401);
    const login = await req("POST", "/login", { form: { password: t.apiKey } });
    assert.equal(login.status, 303);
    cookie = String(login.headers["set-cookie"]).split(";")[0]!;
    csrf = /name="_csrf" value="([^"]+)"/.exec((await req("GET", "/")).body)![1]!;
  });

  it("the main page links to it; a pool with no rollout says so; an unknown pool is a 404", async () => {
    assert.match((await req("GET", "/")).body, /<a id="rollouts-link" class="small" href="\/dashboard\/rollouts\/default">Rollouts<\/a>/);
    const page = await req("GET", "/dashboard/rollouts/default");
    assert.equal(page.status, 200);
    assert.match(page.body, /<title>Rollouts · default · agent-pool/);
    assert.match(page.body, /id="rollout-none"/);
    assert.doesNotMatch(page.body, /id="rollout-pause"/, "nothing to pause");
    assert.match(page.body, /id="history-none"/);
    assert.equal((await req("GET", "/dashboard/rollouts/nope")).status, 404);
    assert.equal((await req("GET", "/dashboard/rollouts/NOT..A..POOL")).status, 404);
    assert.ok(!page.body.includes(t.apiKey));
  });

  it("shows a running rollout's progress; pause and resume need the CSRF token and answer a banner or the page", async () => {
    await t.ops.registry.update("default", { env: { RUNTIME_VERSION: "2" } });
    await t.ops.reconcile();
    const page = await req("GET", "/dashboard/rollouts/default");
    assert.match(page.body, /<span id="rollout-status" class="badge r-running">Running<\/span>/);
    assert.match(page.body, /<strong id="rollout-updated">0<\/strong> of <strong id="rollout-total">2<\/strong> replaced/);
    assert.match(page.body, /<dd id="rollout-inflight">2<\/dd>/, "max surge 2 new instances in flight");
    assert.match(page.body, /id="rollout-pause"/);
    assert.match(page.body, /hx-get="\/dashboard\/rollouts\/default\/panel" hx-trigger="pool-changed from:body, every 30s"/, "the panel follows the live feed");

    assert.equal((await req("POST", "/dashboard/rollouts/default/pause", { form: {} })).status, 403, "no CSRF token");
    const paused = await req("POST", "/dashboard/rollouts/default/pause", { form: { _csrf: csrf }, headers: htmx });
    assert.equal(paused.status, 200);
    assert.match(paused.body, /<div class="banner ok" role="status">Rollout \d+ of <strong>default<\/strong> is paused\.<\/div>/);
    assert.equal(paused.headers["hx-trigger"], "pool-changed");
    const again = await req("POST", "/dashboard/rollouts/default/pause", { form: { _csrf: csrf }, headers: htmx });
    assert.equal(again.status, 409);
    assert.match(again.body, /banner error.*no running rollout to pause/);
    const panel = await req("GET", "/dashboard/rollouts/default/panel", { headers: htmx });
    assert.match(panel.body, /^<div id="rollout-panel"/);
    assert.match(panel.body, /r-paused">Paused/);
    assert.match(panel.body, /id="rollout-resume"[^>]*>Resume</);
    // Without JavaScript: the whole page, the banner on top.
    const resumed = await req("POST", "/dashboard/rollouts/default/resume", { form: { _csrf: csrf } });
    assert.equal(resumed.status, 200);
    assert.match(resumed.body, /<div class="flash"><div class="banner ok" role="status">Rollout \d+ of <strong>default<\/strong> is running\.<\/div><\/div>/);
    assert.match(resumed.body, /r-running">Running/);
  });

  it("shows the outcome and the history; roll back starts a rollout back", async () => {
    for (let i = 0; i < 20 && (await t.rollouts.state("default")).current?.status !== "complete"; i++) await t.ops.reconcile();
    const done = await req("GET", "/dashboard/rollouts/default");
    assert.match(done.body, /r-complete">Complete/);
    assert.match(done.body, /id="rollout-outcome"/);
    assert.match(done.body, /<strong id="rollout-updated">2<\/strong> of <strong id="rollout-total">2<\/strong>/);
    const back = await req("POST", "/dashboard/rollouts/default/rollback", { form: { _csrf: csrf }, headers: htmx });
    assert.equal(back.status, 200);
    assert.match(back.body, /goes back to template <code>\w+<\/code>; a rollout of it started/);
    const page = await req("GET", "/dashboard/rollouts/default");
    assert.match(page.body, /\(rolled back\)/);
    assert.match(page.body, /<tr id="history-\d+">[\s\S]*r-complete">Complete[\s\S]*template changed/);
  });

  it("a halted rollout shows why, and offers a retry", async () => {
    for (let i = 0; i < 20 && (await t.rollouts.state("default")).current?.status !== "complete"; i++) await t.ops.reconcile();
    await t.ops.registry.update("default", { env: { RUNTIME_VERSION: "broken" } });
    t.provider.failCreates = 100;
    for (let i = 0; i < 10 && (await t.rollouts.state("default")).current?.status !== "halted"; i++) await t.ops.reconcile();
    t.provider.failCreates = 0;
    const page = await req("GET", "/dashboard/rollouts/default");
    assert.match(
      page.body,
      /<div id="rollout-halt" class="banner error" role="alert"><strong>Halted:<\/strong> \d new instances in a row failed before becoming idle: the provider refused the create \(simulated create failure\)/,
    );
    assert.match(page.body, /id="rollout-resume"[^>]*>Retry</);
    assert.match(page.body, /id="rollout-rollback"/);
  });

  it("the live feed pushes a change when only a rollout moved", async () => {
    const url = await t.app.listen({ port: 0, host: "127.0.0.1" });
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 15_000);
    try {
      const res = await fetch(`${url}/dashboard/events`, { headers: { cookie }, signal: ac.signal });
      assert.equal(res.status, 200);
      const reader = res.body!.getReader();
      let text = "";
      const readUntil = async (re: RegExp) => {
        while (!re.test(text)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`stream ended: ${text}`);
          text += new TextDecoder().decode(value);
        }
      };
      await readUntil(/event: changed/);
      const first = text.length;
      // A halted rollout retried: no instance event, no count moved; only the rollouts table.
      await t.rollouts.resume("default");
      await readUntil(new RegExp(`[\\s\\S]{${first}}[\\s\\S]*event: changed`));
    } finally {
      clearTimeout(timer);
      ac.abort();
    }
  });
});
