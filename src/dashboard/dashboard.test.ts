/**
 * The dashboard in-process: the real server (`serve`) on PGlite with real reference runtimes, driven
 * through Fastify's `inject`. Each page and fragment renders; hostile agent names and instructions
 * render as text; sign-in, sign-out, expired and tampered cookies, rate-limited failures, CSRF; and
 * no response ever carries the API key or an instance's gateway token.
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
import { SessionKeys } from "./session.ts";
import { OpenRouterStandin } from "../../test/support/openrouter-standin.ts";

/** Per-instance keys (issue 12): the first pool gives each instance its own, from a stand-in. */
const PROVISIONING = "sk-or-v1-provisioning-dashboard-test-0000000000000000000";

const HOSTILE_NAME = `<script>alert("name")</script>`;
const HOSTILE_INSTRUCTIONS = `"><img src=x onerror=alert(1)> You are a <b>pirate</b>.`;

interface Res {
  status: number;
  body: string;
  headers: Record<string, string | string[] | number | undefined>;
}

async function startPool(env: Record<string, string>): Promise<{ pool: RunningPool; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "agent-pool-dash-"));
  const pool = await serve(
    loadConfig({
      DATA_DIR: dir,
      PORT: "0",
      POOL_API_KEY: `ap_test_${"k".repeat(24)}_${Math.random().toString(36).slice(2)}`,
      LOG_LEVEL: "silent",
      TICK_INTERVAL_MS: "3600000",
      POOL_MIN_IDLE: "2",
      POOL_MAX_TOTAL: "4",
      ...env,
    }),
    { provider: new RuntimeProvider() },
  );
  await waitFor("2 idle", async () => (await pool.ops.summary()).counts.idle === 2, 15_000, 50);
  return { pool, dir };
}

function browser(pool: RunningPool, seen: string[]) {
  let cookie = "";
  const req = async (
    method: "GET" | "POST",
    url: string,
    o: { form?: Record<string, string>; headers?: Record<string, string>; ip?: string; noCookie?: boolean } = {},
  ): Promise<Res> => {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    if (cookie && !o.noCookie) headers.cookie = cookie;
    if (o.form) headers["content-type"] = "application/x-www-form-urlencoded";
    const r = await pool.app.inject({
      method,
      url,
      headers,
      ...(o.form ? { payload: new URLSearchParams(o.form).toString() } : {}),
      ...(o.ip ? { remoteAddress: o.ip } : {}),
    });
    seen.push(r.body, JSON.stringify(r.headers));
    const set = r.headers["set-cookie"];
    if (typeof set === "string") cookie = set.split(";")[0]!.endsWith("=") ? "" : set.split(";")[0]!;
    return { status: r.statusCode, body: r.body, headers: r.headers };
  };
  return {
    req,
    get cookie() {
      return cookie;
    },
    set cookie(c: string) {
      cookie = c;
    },
    async login(password: string) {
      return req("POST", "/login", { form: { password } });
    },
    async csrf(): Promise<string> {
      const page = await req("GET", "/");
      const m = /name="_csrf" value="([^"]+)"/.exec(page.body);
      assert.ok(m, "the page carries a CSRF token");
      return m[1]!;
    },
  };
}

describe("dashboard (API key as password, local environment)", () => {
  let pool: RunningPool;
  let dir: string;
  let standin: OpenRouterStandin;
  const seen: string[] = [];
  let b: ReturnType<typeof browser>;

  before(async () => {
    standin = await new OpenRouterStandin({ provisioningKey: PROVISIONING }).start();
    ({ pool, dir } = await startPool({ OPENROUTER_PROVISIONING_KEY: PROVISIONING, OPENROUTER_API_URL: standin.apiUrl }));
    b = browser(pool, seen);
  });
  after(async () => {
    await pool?.close();
    await standin?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("sends a signed-out visitor to the login page, which has a strict CSP and no secret", async () => {
    const root = await b.req("GET", "/");
    assert.equal(root.status, 303);
    assert.equal(root.headers.location, "/login");
    const login = await b.req("GET", "/login");
    assert.equal(login.status, 200);
    assert.match(String(login.headers["content-type"]), /text\/html/);
    const csp = String(login.headers["content-security-policy"]);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.match(login.body, /<form[^>]*method="post" action="\/login"/);
    assert.equal(login.headers["referrer-policy"], "same-origin");
    // Fragments, actions and the event stream all need a session.
    for (const [m, u] of [
      ["GET", "/dashboard/pool"],
      ["GET", "/dashboard/agents"],
      ["GET", "/dashboard/instances"],
      ["GET", "/dashboard/events"],
      ["POST", "/dashboard/pool/add"],
    ] as const) {
      const r = await b.req(m, u, { headers: { "hx-request": "true" } });
      assert.equal(r.status, 401, `${m} ${u}`);
      assert.equal(r.headers["hx-redirect"], "/login");
    }
    assert.equal((await b.req("GET", "/dashboard/events")).status, 401);
  });

  it("refuses a wrong password and signs in with the API key: HttpOnly, SameSite=Strict, expiring cookie", async () => {
    const bad = await b.login("not the key");
    assert.equal(bad.status, 401);
    assert.match(bad.body, /Wrong password/);
    assert.equal(b.cookie, "");
    const ok = await b.login(pool.apiKey);
    assert.equal(ok.status, 303);
    assert.equal(ok.headers.location, "/");
    const set = String(ok.headers["set-cookie"]);
    assert.match(set, /^ap_session=v1\./);
    assert.match(set, /HttpOnly/);
    assert.match(set, /SameSite=Strict/);
    assert.match(set, /Max-Age=43200/);
    assert.doesNotMatch(set, /Secure/, "plain http outside production");
    assert.ok(!set.includes(pool.apiKey));
  });

  it("renders the main page: pool bar, launch form, live agents, instances, assets served locally", async () => {
    const page = await b.req("GET", "/");
    assert.equal(page.status, 200);
    assert.equal(page.headers["cache-control"], "no-store");
    const body = page.body;
    assert.match(body, /id="count-idle">2</);
    assert.match(body, /id="count-total">2</);
    assert.match(body, /of 4 max · keeps <strong>2<\/strong> idle/);
    assert.match(body, /class="env "[^>]*>local</);
    assert.match(body, /New conversation/);
    assert.match(body, /Join a conversation/);
    assert.match(body, /2 idle instances ready/);
    assert.match(body, /No live agents/);
    assert.match(body, /hx-get="\/dashboard\/instances\/i-[^/]+\/events"/);
    // Every script and stylesheet comes from this server.
    const srcs = [...body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    for (const s of srcs) assert.ok(s.startsWith("/") || s === "data:" || s.startsWith("data:"), `local asset: ${s}`);
    assert.ok(!/<script>|<style>| style=| on[a-z]+=/i.test(body), "no inline script, style or handler");
    for (const a of [...body.matchAll(/<script src="([^"]+)"/g)].map((m) => m[1]!)) {
      const r = await b.req("GET", a);
      assert.equal(r.status, 200, a);
      assert.match(String(r.headers["content-type"]), /javascript/);
      assert.match(String(r.headers["cache-control"]), /immutable/);
    }
    const htmx = await b.req("GET", "/dashboard/assets/htmx.min.js");
    assert.ok(htmx.body.length > 10_000 && htmx.body.includes("htmx"));
    assert.equal((await b.req("GET", "/dashboard/assets/nope.js")).status, 404);
  });

  it("renders each fragment", async () => {
    const hx = { headers: { "hx-request": "true" } };
    const poolBar = await b.req("GET", "/dashboard/pool", hx);
    assert.equal(poolBar.status, 200);
    assert.match(poolBar.body, /id="count-idle">2</);
    assert.match(poolBar.body, /id="launch-status"[^>]*hx-swap-oob="true"/, "the launch button follows the counts");
    const instances = await b.req("GET", "/dashboard/instances", hx);
    assert.equal((instances.body.match(/class="irow-wrap"/g) ?? []).length, 2);
    assert.match(instances.body, /<span class="badge s-idle">Idle<\/span>/);
    const id = /id="inst-(i-[A-Za-z0-9_-]+)"/.exec(instances.body)![1]!;
    const events = await b.req("GET", `/dashboard/instances/${id}/events`, hx);
    assert.equal(events.status, 200);
    assert.match(events.body, /Starting<\/span> → <span class="badge s-idle">Idle/);
    const missing = await b.req("GET", "/dashboard/instances/i-nope/events", hx);
    assert.equal(missing.status, 404);
    assert.match(missing.body, /class="banner error"/);
  });

  it("launches an agent: QR code as inline SVG, invite link with copy button, instance id; hostile input renders as text", async () => {
    const csrf = await b.csrf();
    const r = await b.req("POST", "/dashboard/launch", {
      headers: { "hx-request": "true" },
      form: { _csrf: csrf, mode: "new", agentName: HOSTILE_NAME, instructions: HOSTILE_INSTRUCTIONS },
    });
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers["hx-trigger"], "pool-changed");
    assert.match(r.body, /<div class="qr" role="img" aria-label="QR code of the invite link"><svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    assert.match(r.body, /data-copy="launch-invite-i-/);
    assert.match(r.body, /value="http:\/\/127\.0\.0\.1:\d+\/i\/[^"]+"/);
    assert.match(r.body, /id="launch-instance">i-/);
    assert.ok(!r.body.includes("<script>alert"), "the name is escaped");
    assert.ok(r.body.includes("&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;"));

    const agents = await b.req("GET", "/dashboard/agents", { headers: { "hx-request": "true" } });
    assert.match(agents.body, /class="agent s-claimed"/);
    assert.ok(agents.body.includes("&lt;script&gt;alert(&quot;name&quot;)&lt;/script&gt;"));
    assert.ok(agents.body.includes("&quot;&gt;&lt;img src=x onerror=alert(1)&gt; You are a &lt;b&gt;pirate&lt;/b&gt;."));
    assert.ok(!/<img|<b>|<script>/.test(agents.body), "no hostile markup survives");
    // The kill confirmation quotes the name as (escaped) text too.
    assert.match(agents.body, /hx-confirm="Kill agent “&lt;script&gt;alert\(&quot;name&quot;\)&lt;\/script&gt;”\?/);
    const page = await b.req("GET", "/");
    assert.ok(!page.body.includes("<script>alert") && !page.body.includes("<img src=x"));

    const id = /id="agent-(i-[A-Za-z0-9_-]+)"/.exec(agents.body)![1]!;
    const qr = await b.req("GET", `/dashboard/agents/${id}/qr`, { headers: { "hx-request": "true" } });
    assert.equal(qr.status, 200);
    assert.match(qr.body, /<svg /);
  });

  it("joins a conversation: a success banner, or a pending one while the owner has not accepted; pending agents are listed", async () => {
    const csrf = await b.csrf();
    const hx = { "hx-request": "true" };
    const made: string[] = [];
    try {
      await waitFor("2 idle", async () => (await pool.ops.summary()).counts.idle >= 2, 15_000, 50);
      // A conversation whose owner approves new members by hand.
      const host = await pool.ops.claim({ agentName: "Host", instructions: "x", metadata: { requireApproval: true } });
      made.push(host.instanceId);
      const pending = await b.req("POST", "/dashboard/launch", {
        headers: hx,
        form: { _csrf: csrf, mode: "join", agentName: "Guest <i>", instructions: "", joinUrl: host.inviteUrl! },
      });
      assert.equal(pending.status, 200, pending.body);
      assert.match(pending.body, /<strong>Guest &lt;i&gt;<\/strong> asked to join the conversation and is waiting for its owner to accept\./);
      const guest = /Instance <code>(i-[^<]+)<\/code>/.exec(pending.body)![1]!;
      made.push(guest);
      const agents = await b.req("GET", "/dashboard/agents", { headers: hx });
      assert.match(agents.body, new RegExp(`class="agent s-pending_acceptance" id="agent-${guest}"`));
      assert.match(agents.body, />Pending</);

      // A conversation that takes anyone with the link: joined at once.
      await waitFor("an idle instance", async () => (await pool.ops.summary()).counts.idle >= 1, 15_000, 50);
      const open = (await pool.ops.agents()).find((a) => a.status === "claimed" && a.id !== host.instanceId && a.inviteUrl)!;
      const joined = await b.req("POST", "/dashboard/launch", {
        headers: hx,
        form: { _csrf: csrf, mode: "join", agentName: "Second", instructions: "", joinUrl: open.inviteUrl! },
      });
      assert.equal(joined.status, 200, joined.body);
      assert.match(joined.body, /<strong>Second<\/strong> joined the conversation\. Instance <code>i-/);
      made.push(/Instance <code>(i-[^<]+)<\/code>/.exec(joined.body)![1]!);
    } finally {
      for (const id of made) await pool.ops.kill(id).catch(() => undefined);
      // Leave the pool as the next tests expect it: 2 idle.
      await waitFor(
        "2 idle again",
        async () => {
          await pool.ops.reconcile();
          return (await pool.ops.summary()).counts.idle >= 2;
        },
        20_000,
        100,
      );
    }
  });

  it("validates the launch form and shows the pool's error message", async () => {
    const csrf = await b.csrf();
    const hx = { "hx-request": "true" };
    const noName = await b.req("POST", "/dashboard/launch", { headers: hx, form: { _csrf: csrf, mode: "new", agentName: " ", instructions: "" } });
    assert.equal(noName.status, 400);
    assert.match(noName.body, /Give the agent a name/);
    const noLink = await b.req("POST", "/dashboard/launch", {
      headers: hx,
      form: { _csrf: csrf, mode: "join", agentName: "Bo", joinUrl: "javascript:alert(1)" },
    });
    assert.equal(noLink.status, 400);
    assert.match(noLink.body, /Paste the invite link/);
    // Drain the idle instances: the form is disabled with a clear message, and a launch says why it failed.
    const drained = await b.req("POST", "/dashboard/pool/drain", { headers: hx, form: { _csrf: csrf, count: "20" } });
    assert.equal(drained.status, 200);
    assert.match(drained.body, /Drained \d idle instance/);
    const bar = await b.req("GET", "/dashboard/pool", { headers: hx });
    assert.match(bar.body, /id="launch-submit" type="submit" class="primary" disabled>/);
    assert.match(bar.body, /No idle instance right now/);
    const empty = await b.req("POST", "/dashboard/launch", { headers: hx, form: { _csrf: csrf, mode: "new", agentName: "Bo", instructions: "" } });
    assert.equal(empty.status, 503);
    assert.match(empty.body, /class="banner error" role="alert">No idle instance is available/);
    const big = await b.req("POST", "/dashboard/pool/add", { headers: hx, form: { _csrf: csrf, count: "999" } });
    assert.equal(big.status, 400);
    assert.match(big.body, /Choose a number from 1 to 20/);
    // Without JavaScript, an action answers with the whole page and the message on top.
    const plain = await b.req("POST", "/dashboard/pool/add", { form: { _csrf: csrf, count: "1" } });
    assert.equal(plain.status, 200);
    assert.match(plain.body, /<div class="flash"><div class="banner ok" role="status">Starting 1 new instance/);
    await waitFor("an idle instance again", async () => (await pool.ops.summary()).counts.idle >= 1, 15_000, 50);
  });

  it("kills an agent and dismisses a crashed one", async () => {
    const csrf = await b.csrf();
    const hx = { "hx-request": "true" };
    const [agent] = await pool.ops.agents();
    assert.ok(agent);
    await pool.store.transition({ id: agent.id, from: "claimed", to: "crashed", actor: "reconciler", reason: "test: runtime lost" });
    const list = await b.req("GET", "/dashboard/agents", { headers: hx });
    assert.match(list.body, /class="agent s-crashed"/);
    assert.match(list.body, />Dismiss<\/button>/);
    const kill = await b.req("POST", `/dashboard/instances/${agent.id}/kill`, { headers: hx, form: { _csrf: csrf } });
    assert.equal(kill.status, 200);
    const dismiss = await b.req("POST", `/dashboard/instances/${agent.id}/dismiss`, { headers: hx, form: { _csrf: csrf } });
    assert.equal(dismiss.status, 409, "it is dead already");
    assert.match(dismiss.body, /Only crashed agents can be dismissed/);
    const after = await b.req("GET", "/dashboard/agents", { headers: hx });
    assert.match(after.body, /No live agents/);
  });

  it("refuses POSTs without the session's CSRF token or from another origin", async () => {
    const csrf = await b.csrf();
    const before = (await pool.ops.summary()).counts.total;
    const cases: Array<[string, { form?: Record<string, string>; headers?: Record<string, string> }]> = [
      ["no token", { form: { count: "1" } }],
      ["wrong token", { form: { count: "1", _csrf: "x".repeat(43) } }],
      [
        "header with another session's token",
        { form: { count: "1" }, headers: { "x-csrf-token": new SessionKeys(pool.apiKey).csrfToken({ sid: "someone-elses-session-id", exp: 0 }) } },
      ],
      ["cross-site origin", { form: { count: "1", _csrf: csrf }, headers: { origin: "https://evil.example" } }],
      ["opaque origin", { form: { count: "1", _csrf: csrf }, headers: { origin: "null" } }],
      ["cross-site fetch metadata", { form: { count: "1", _csrf: csrf }, headers: { "sec-fetch-site": "cross-site" } }],
    ];
    for (const [what, o] of cases) {
      const r = await b.req("POST", "/dashboard/pool/add", o);
      assert.equal(r.status, 403, what);
    }
    const logout = await b.req("POST", "/logout", { form: {} });
    assert.equal(logout.status, 403);
    assert.equal((await pool.ops.summary()).counts.total, before, "nothing was added");
    // The token in a header (as htmx sends it) works.
    const ok = await b.req("POST", "/dashboard/pool/reconcile", { headers: { "x-csrf-token": csrf, "hx-request": "true", origin: "http://localhost:80" } });
    assert.equal(ok.status, 200, ok.body);
  });

  it("rejects expired and tampered cookies", async () => {
    const keys = new SessionKeys(pool.apiKey);
    const expired = keys.issue(Date.now() - 13 * 3600_000, 12 * 3600_000).value;
    const valid = keys.issue(Date.now(), 60_000).value;
    const [v, exp, sid, mac] = valid.split(".");
    const tampered = [
      `${v}.${(parseInt(exp!, 36) + 10 ** 9).toString(36)}.${sid}.${mac}`,
      `${v}.${exp}.${sid!.replace(/^./, (c) => (c === "A" ? "B" : "A"))}.${mac}`,
      `${v}.${exp}.${sid}.${mac!.replace(/.$/, (c) => (c === "A" ? "B" : "A"))}`,
      new SessionKeys("some other password").issue(Date.now(), 60_000).value,
    ];
    const saved = b.cookie;
    try {
      b.cookie = `ap_session=${valid}`;
      assert.equal((await b.req("GET", "/")).status, 200, "a freshly signed cookie works");
      for (const c of [expired, ...tampered]) {
        b.cookie = `ap_session=${c}`;
        const r = await b.req("GET", "/");
        assert.equal(r.status, 303, c);
        assert.equal(r.headers.location, "/login");
      }
    } finally {
      b.cookie = saved;
    }
  });

  it("streams live changes to a signed-in page (server-sent events from our own store)", async () => {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 10_000);
    const res = await fetch(`${pool.url}/dashboard/events`, { headers: { cookie: b.cookie }, signal: ac.signal });
    try {
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
      const reader = res.body!.getReader();
      let text = "";
      const readUntil = async (re: RegExp) => {
        while (!re.test(text)) {
          const { value, done } = await reader.read();
          if (done) throw new Error(`stream ended: ${text}`);
          text += new TextDecoder().decode(value);
        }
      };
      await readUntil(/event: changed\ndata: \{"counts"/);
      const first = text.length;
      await pool.ops.add(1);
      await readUntil(new RegExp(`[\\s\\S]{${first}}[\\s\\S]*event: changed`));
      assert.ok(!text.includes(pool.apiKey));
      seen.push(text);
    } finally {
      clearTimeout(timer);
      ac.abort();
    }
    assert.equal((await fetch(`${pool.url}/dashboard/events`)).status, 401);
  });

  it("never sends the API key, a gateway token, an instance's key or the provisioning key in any response", async () => {
    const rows = await pool.store.listInstances(pool.ops.poolId, { includeDeleted: true });
    assert.ok(rows.length >= 3);
    // An agent's card shows its spend (and so reads its key's record) before the pages are searched.
    await waitFor("an idle instance", async () => (await pool.ops.summary()).counts.idle > 0, 15_000, 50);
    await pool.ops.claim({ agentName: "Spender", instructions: "x" });
    await pool.resources!.reconciler.runOnce();
    assert.match(
      (await b.req("GET", "/dashboard/agents", { headers: { "hx-request": "true" } })).body,
      /Spent <strong class="spend-used">\$0\.00<\/strong> of/,
    );
    // Touch every instance's fragments too.
    for (const r of rows) {
      await b.req("GET", `/dashboard/instances/${r.id}/events`, { headers: { "hx-request": "true" } });
      await b.req("GET", `/dashboard/agents/${r.id}/qr`, { headers: { "hx-request": "true" } });
    }
    await b.req("GET", "/");
    assert.ok(standin.issued.length >= 3, "the instances got keys");
    const secrets = [pool.apiKey, PROVISIONING, ...rows.map((r) => r.gatewayToken), ...standin.issued];
    assert.ok(seen.length > 40);
    for (const body of seen) for (const s of secrets) assert.ok(!body.includes(s), "a secret leaked into a response");
  });

  it("signs out: the cookie is cleared", async () => {
    const csrf = await b.csrf();
    const r = await b.req("POST", "/logout", { form: { _csrf: csrf } });
    assert.equal(r.status, 303);
    assert.equal(r.headers.location, "/login");
    assert.match(String(r.headers["set-cookie"]), /^ap_session=; Path=\/; Max-Age=0/);
    assert.equal(b.cookie, "");
    assert.equal((await b.req("GET", "/")).status, 303);
  });

  it("rate-limits failed sign-ins per address: 5 a minute, then 429 even for the right password", async () => {
    const ip = "198.51.100.7";
    for (let i = 0; i < 5; i++) assert.equal((await b.req("POST", "/login", { form: { password: `guess-${i}` }, ip })).status, 401);
    const limited = await b.req("POST", "/login", { form: { password: pool.apiKey }, ip });
    assert.equal(limited.status, 429);
    assert.match(limited.body, /Too many failed sign-ins/);
    assert.ok(Number(limited.headers["retry-after"]) > 0);
    // Another address is not affected.
    assert.equal((await b.req("POST", "/login", { form: { password: pool.apiKey }, ip: "198.51.100.8" })).status, 303);
  });
});

describe("dashboard (ADMIN_PASSWORD, production)", () => {
  let pool: RunningPool;
  let dir: string;
  const seen: string[] = [];
  const saved = process.env.NODE_ENV;

  before(async () => {
    process.env.NODE_ENV = "production";
    ({ pool, dir } = await startPool({ ADMIN_PASSWORD: "a long admin password", POOL_ENVIRONMENT: "production" }));
  });
  after(async () => {
    if (saved === undefined) delete process.env.NODE_ENV;
    else process.env.NODE_ENV = saved;
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("takes the admin password (not the API key), sets a Secure __Host- cookie, shows a red badge and loud confirmations", async () => {
    const b = browser(pool, seen);
    assert.equal((await b.login(pool.apiKey)).status, 401, "the API key is not the password when ADMIN_PASSWORD is set");
    const ok = await b.login("a long admin password");
    assert.equal(ok.status, 303);
    const set = String(ok.headers["set-cookie"]);
    assert.match(set, /^__Host-ap_session=v1\.[^;]+; Path=\/; Max-Age=43200; HttpOnly; SameSite=Strict; Secure$/);
    const page = await b.req("GET", "/");
    assert.equal(page.status, 200);
    assert.match(page.body, /class="env env-prod"[^>]*>production</);
    assert.match(page.body, /hx-confirm="PRODUCTION: Drain idle instances/);
    const csrf = await b.csrf();
    const r = await b.req("POST", "/dashboard/launch", {
      headers: { "hx-request": "true" },
      form: { _csrf: csrf, mode: "new", agentName: "Prod agent", instructions: "" },
    });
    assert.equal(r.status, 200, r.body);
    const agents = await b.req("GET", "/dashboard/agents", { headers: { "hx-request": "true" } });
    assert.match(agents.body, /hx-confirm="PRODUCTION: Kill agent “Prod agent”\?/);
    for (const body of seen) assert.ok(!body.includes(pool.apiKey) && !body.includes("a long admin password"));
  });
});
