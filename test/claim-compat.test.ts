/**
 * Claims as today's clients send them (issue 9), through the real server (`serve`) on PGlite with
 * real reference runtimes: the earlier system's landing page posts only `{joinUrl}`, its web proxy
 * adds `source: "landing"` to every body, and newer clients may send fields this server does not
 * know. A known field with a bad value is still refused, and JOIN_URL_HOSTS refuses an invite link
 * of another host (the earlier system refused `dev.` links in production) before an instance is
 * spent on it, on the API and in the dashboard alike.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_CLAIM_INSTRUCTIONS, loadConfig } from "../src/config.ts";
import { serve, type RunningPool } from "../src/serve.ts";
import { RuntimeProvider } from "./support/runtime-provider.ts";
import { waitFor } from "./support/process.ts";

describe("claim bodies of today's clients", () => {
  let pool: RunningPool;
  let provider: RuntimeProvider;
  let dir: string;

  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${pool.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${pool.apiKey}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await r.text();
    return { status: r.status, text, body: JSON.parse(text) as any };
  };
  const claimed = async () => (await pool.store.listInstances("default")).filter((r) => r.status === "claimed" || r.status === "claiming").length;
  const idle = async () => (await pool.ops.summary()).counts.idle;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "agent-pool-compat-"));
    provider = new RuntimeProvider();
    pool = await serve(
      loadConfig({
        DATA_DIR: dir,
        PORT: "0",
        LOG_LEVEL: "silent",
        TICK_INTERVAL_MS: "3600000",
        POOL_MIN_IDLE: "2",
        POOL_MAX_TOTAL: "6",
        // A configured default name; the instructions keep the documented default.
        CLAIM_DEFAULT_AGENT_NAME: "Concierge",
        JOIN_URL_HOSTS: "127.0.0.1, convos.org",
      }),
      { provider },
    );
    await waitFor("2 idle", async () => (await idle()) === 2, 15_000, 50);
  });
  after(async () => {
    await pool?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  let host: { inviteUrl: string; conversationId: string; instanceId: string };
  it("a landing-page claim: source and an unknown field are accepted, the source is recorded and shown", async () => {
    const r = await api("POST", "/api/pool/claim", {
      agentName: "Lan",
      instructions: "Greets visitors.",
      source: "landing",
      model: "claude",
      utm: { campaign: "x" },
    });
    assert.equal(r.status, 200, r.text);
    host = r.body;
    assert.deepEqual(
      Object.keys(r.body).sort(),
      ["agentName", "conversationId", "instanceId", "inviteUrl", "joined", "pool", "runtime", "status"],
      "unknown fields are not echoed",
    );

    const inst = (await api("GET", `/api/pool/instances/${host.instanceId}`)).body.instance;
    assert.equal(inst.claimSource, "landing");
    assert.equal(inst.agentName, "Lan");
    assert.equal(inst.instructions, "Greets visitors.");
    const agent = (await api("GET", "/api/pool/agents")).body.agents.find((a: any) => a.id === host.instanceId);
    assert.equal(agent.claimSource, "landing");

    // The dashboard's agent card says where the claim came from.
    const login = await pool.app.inject({
      method: "POST",
      url: "/login",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({ password: pool.apiKey }).toString(),
    });
    const cookie = String(login.headers["set-cookie"]).split(";")[0]!;
    const cards = await pool.app.inject({ method: "GET", url: "/dashboard/agents", headers: { cookie } });
    assert.equal(cards.statusCode, 200);
    const card = new RegExp(`<li class="agent s-claimed" id="agent-${host.instanceId}">[\\s\\S]*?</li>`).exec(cards.body)?.[0] ?? "";
    assert.match(card, /<span class="source">via landing<\/span>/);
  });

  it("a join-only body {joinUrl} claims with the configured default name and the default instructions", async () => {
    await waitFor("the pool to refill", async () => (await idle()) === 2, 15_000, 50);
    const r = await api("POST", "/api/pool/claim", { joinUrl: host.inviteUrl });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.joined, true);
    assert.equal(r.body.agentName, "Concierge");
    const inst = (await api("GET", `/api/pool/instances/${r.body.instanceId}`)).body.instance;
    assert.equal(inst.agentName, "Concierge");
    assert.equal(inst.instructions, DEFAULT_CLAIM_INSTRUCTIONS);
    assert.equal(inst.joinUrl, host.inviteUrl);
    assert.equal(inst.claimSource, null, "no source given, none recorded");
    // The runtime joined the conversation under that name.
    const invite = new URL(host.inviteUrl);
    const room = (await (await fetch(`${invite.origin}${invite.pathname}/messages`)).json()) as { members: Array<{ name: string; status: string }> };
    assert.ok(
      room.members.some((m) => m.name === "Concierge" && m.status === "active"),
      JSON.stringify(room.members),
    );
  });

  it("an empty body {} creates a conversation with both defaults", async () => {
    await waitFor("the pool to refill", async () => (await idle()) === 2, 15_000, 50);
    const r = await api("POST", "/api/pool/claim", {});
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.joined, false);
    assert.equal(r.body.agentName, "Concierge");
  });

  it("a link of a host outside JOIN_URL_HOSTS is 400 JOIN_URL_NOT_ALLOWED and claims nothing", async () => {
    await waitFor("the pool to refill", async () => (await idle()) === 2, 15_000, 50);
    const before = await claimed();
    for (const joinUrl of ["https://dev.convos.org/v2?i=abc", "https://popup.convos.org/v2?i=abc", "http://localhost:9/i/x"]) {
      const r = await api("POST", "/api/pool/claim", { joinUrl, source: "landing" });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.body.code, "JOIN_URL_NOT_ALLOWED");
      assert.match(
        r.body.error,
        new RegExp(`does not accept invite links of ${new URL(joinUrl).hostname}; it accepts links of 127\\.0\\.0\\.1, convos\\.org\\.`),
      );
    }
    assert.equal(await claimed(), before, "nothing claimed");
    assert.equal(await idle(), 2, "no instance spent");

    // The dashboard's launch form applies the same list.
    const login = await pool.app.inject({
      method: "POST",
      url: "/login",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams({ password: pool.apiKey }).toString(),
    });
    const cookie = String(login.headers["set-cookie"]).split(";")[0]!;
    const page = await pool.app.inject({ method: "GET", url: "/", headers: { cookie } });
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page.body)![1]!;
    const launch = await pool.app.inject({
      method: "POST",
      url: "/dashboard/launch",
      headers: { cookie, "content-type": "application/x-www-form-urlencoded", "hx-request": "true" },
      payload: new URLSearchParams({ _csrf: csrf, mode: "join", agentName: "Dev", instructions: "", joinUrl: "https://dev.convos.org/v2?i=abc" }).toString(),
    });
    assert.equal(launch.statusCode, 400, launch.body);
    assert.match(launch.body, /does not accept invite links of dev\.convos\.org/);
    assert.equal(await claimed(), before, "nothing claimed from the dashboard either");
  });

  it("a bad value of a known field is still 400 VALIDATION_FAILED, unknown fields or not, and claims nothing", async () => {
    const before = await claimed();
    const cases: Array<[string, unknown]> = [
      ["joinUrl not http(s)", { joinUrl: "ftp://convos.org/x", source: "landing" }],
      ["joinUrl not a URL", { joinUrl: "convos.org/x", extra: 1 }],
      ["source not a string", { source: 42 }],
      ["source too long", { source: "s".repeat(65) }],
      ["source with a control character", { source: "land\u0007ing" }],
      ["empty agent name", { agentName: "", source: "landing", extra: true }],
      ["instructions not a string", { instructions: ["x"], source: "landing" }],
      ["body not an object", "landing"],
    ];
    for (const [name, body] of cases) {
      const r = await api("POST", "/api/pool/claim", body);
      assert.equal(r.status, 400, `${name}: ${r.text}`);
      assert.equal(r.body.code, "VALIDATION_FAILED", name);
      assert.equal(typeof r.body.error, "string", name);
    }
    assert.equal(await claimed(), before, "nothing claimed");
  });
});
