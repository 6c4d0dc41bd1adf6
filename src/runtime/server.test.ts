import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { MAX_MESSAGE_CHARS, RUNTIME_NAME, startRuntime } from "./server.ts";
import type { RunningRuntime, RuntimeOptions } from "./server.ts";
import { waitFor as waitForShared } from "../../test/support/process.ts";

/** The shared poller at this file's pace: 25 ms polls catch short in-flight windows. */
const waitFor = <T>(what: string, check: () => Promise<T | null | undefined | false>, timeoutMs = 5000) => waitForShared(what, check, timeoutMs, 25);

const TOKEN = "test-gateway-token-0123456789";
const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PKG_VERSION = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;

const running: RunningRuntime[] = [];
after(async () => {
  await Promise.all(running.map((r) => r.close()));
});

async function start(opts: Partial<RuntimeOptions> = {}): Promise<RunningRuntime> {
  const rt = await startRuntime({ gatewayToken: TOKEN, port: 0, bootDelayMs: 0, log: () => {}, ...opts });
  running.push(rt);
  return rt;
}

interface Res {
  status: number;
  body: any;
  headers: Headers;
  text: string;
}

async function call(base: string, method: string, path: string, body?: unknown, token: string | null = TOKEN): Promise<Res> {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let payload: string | undefined;
  if (typeof body === "string")
    payload = body; // raw, for malformed-JSON tests
  else if (body !== undefined) payload = JSON.stringify(body);
  if (payload !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(base + path, { method, headers, body: payload });
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  return { status: res.status, body: parsed, headers: res.headers, text };
}

const api = (rt: RunningRuntime, method: string, path: string, body?: unknown, token: string | null = TOKEN) => call(rt.url, method, path, body, token);

const CLEAN = { conversationId: null, inboxId: null, pending: false, clean: true, inviteUrl: null };

async function provision(rt: RunningRuntime, body: Record<string, unknown>): Promise<Res> {
  return api(rt, "POST", "/pool/provision", body);
}

/** Room API paths from an invite URL (`http://host:port/i/<slug>`). */
function roomPath(inviteUrl: string): string {
  return new URL(inviteUrl).pathname;
}

async function say(inviteUrl: string, text: string): Promise<Res> {
  return call(new URL(inviteUrl).origin, "POST", `${roomPath(inviteUrl)}/messages`, { text }, null);
}

async function roomState(inviteUrl: string, after = 0): Promise<Res> {
  return call(new URL(inviteUrl).origin, "GET", `${roomPath(inviteUrl)}/messages?after=${after}`, undefined, null);
}

describe("health and boot", () => {
  it("answers 503 while booting, then 200 with version and runtime name", async () => {
    // Long enough that the two early calls land while booting even on a loaded machine (300 ms did not).
    const rt = await start({ bootDelayMs: 3_000, version: "9.9.9" });
    const booting = await api(rt, "GET", "/pool/health", undefined, null);
    assert.equal(booting.status, 503);
    assert.deepEqual(booting.body, { ready: false });

    const early = await provision(rt, { agentName: "A", instructions: "" });
    assert.equal(early.status, 503);
    assert.deepEqual(early.body, { error: "Runtime not ready yet" });

    const ready = await waitFor(
      "health 200",
      async () => {
        const r = await api(rt, "GET", "/pool/health", undefined, null);
        return r.status === 200 ? r : null;
      },
      15_000,
    );
    assert.deepEqual(ready.body, { ready: true, version: "9.9.9", runtime: RUNTIME_NAME });
  });

  it("defaults the version to package.json's", async () => {
    const rt = await start();
    const r = await api(rt, "GET", "/pool/health", undefined, null);
    assert.equal(r.body.version, PKG_VERSION);
  });

  it("refuses to start without a gateway token", async () => {
    await assert.rejects(startRuntime({ gatewayToken: "", port: 0 }), /gatewayToken/);
  });
});

describe("auth", () => {
  const protectedCalls: Array<[string, string, unknown]> = [
    ["POST", "/pool/provision", { agentName: "A", instructions: "" }],
    ["GET", "/convos/status", undefined],
    ["POST", "/convos/reset", {}],
    ["POST", "/convos/conversation", { name: "Room" }],
    ["POST", "/convos/join", { inviteUrl: "http://127.0.0.1:1/i/aaaaaaaaaaaaaaaaaaaaaaaa", profileName: "B" }],
  ];

  for (const [method, path, body] of protectedCalls) {
    it(`${method} ${path} needs the gateway token`, async () => {
      const rt = await start();
      for (const token of [null, "wrong", `${TOKEN}x`, TOKEN.slice(0, -1), ""]) {
        const r = await api(rt, method, path, body, token);
        assert.equal(r.status, 401, `token ${JSON.stringify(token)}`);
        assert.equal(typeof r.body.error, "string");
      }
      const basic = await fetch(rt.url + path, { method, headers: { authorization: `Basic ${TOKEN}` } });
      assert.equal(basic.status, 401);
      await basic.body?.cancel();
      // Nothing was done by the rejected calls.
      assert.deepEqual((await api(rt, "GET", "/convos/status")).body, CLEAN);
    });
  }

  it("leaves /pool/health open and 404s unknown paths", async () => {
    const rt = await start();
    assert.equal((await api(rt, "GET", "/pool/health", undefined, null)).status, 200);
    assert.equal((await api(rt, "GET", "/nope")).status, 404);
    assert.equal((await api(rt, "GET", "/pool/provision")).status, 405);
  });
});

describe("provision lifecycle", () => {
  it("create → bound → 409 → reset → clean → provision again", async () => {
    const rt = await start({ publicUrl: "http://agents.example.test:8080/" });
    assert.deepEqual((await api(rt, "GET", "/convos/status")).body, CLEAN);

    const created = await provision(rt, { agentName: "Ada", instructions: "You are a helpful assistant.", metadata: { user: "u1" } });
    assert.equal(created.status, 200);
    assert.equal(created.body.ok, true);
    assert.equal(created.body.joined, false);
    assert.equal(created.body.status, "created");
    assert.match(created.body.conversationId, /^conv_[0-9a-f]{32}$/);
    assert.match(created.body.inviteUrl, /^http:\/\/agents\.example\.test:8080\/i\/[A-Za-z0-9_-]{24}$/);

    const bound = (await api(rt, "GET", "/convos/status")).body;
    assert.equal(bound.conversationId, created.body.conversationId);
    assert.match(bound.inboxId, /^inbox_[0-9a-f]+$/);
    assert.equal(bound.pending, false);
    assert.equal(bound.clean, false);
    assert.equal(bound.inviteUrl, created.body.inviteUrl);
    assert.equal((await api(rt, "GET", "/convos/status")).body.inboxId, bound.inboxId, "inboxId is stable");

    const again = await provision(rt, { agentName: "Other", instructions: "" });
    assert.equal(again.status, 409);
    assert.equal(typeof again.body.error, "string");

    const slug = new URL(created.body.inviteUrl).pathname;
    assert.equal((await api(rt, "GET", slug, undefined, null)).status, 200);

    const reset = await api(rt, "POST", "/convos/reset", {});
    assert.equal(reset.status, 200);
    assert.deepEqual(reset.body, { ok: true, reset: true, status: CLEAN });
    assert.deepEqual((await api(rt, "GET", "/convos/status")).body, CLEAN);
    // The host closed its room.
    assert.equal((await api(rt, "GET", slug, undefined, null)).status, 404);
    assert.equal((await api(rt, "GET", `${slug}/messages`, undefined, null)).status, 404);

    const second = await provision(rt, { agentName: "Ada", instructions: "" });
    assert.equal(second.status, 200);
    assert.notEqual(second.body.conversationId, created.body.conversationId);
    assert.notEqual(second.body.inviteUrl, created.body.inviteUrl);
    assert.notEqual((await api(rt, "GET", "/convos/status")).body.inboxId, bound.inboxId);
  });

  it("reset accepts no body and skipGreeting", async () => {
    const rt = await start();
    assert.equal((await api(rt, "POST", "/convos/reset")).status, 200);
    assert.equal((await api(rt, "POST", "/convos/reset", { skipGreeting: true })).status, 200);
    assert.equal((await api(rt, "POST", "/convos/reset", { skipGreeting: "yes" })).status, 400);
  });
});

describe("chat room", () => {
  it("serves an escaped, self-contained page and never the token", async () => {
    const rt = await start();
    const p = await provision(rt, { agentName: `<img src=x onerror=alert(1)>"Bob'`, instructions: "You are a pirate." });
    const page = await call(rt.url, "GET", roomPath(p.body.inviteUrl), undefined, null);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'none'/);
    assert.equal(page.headers.get("referrer-policy"), "no-referrer");
    assert.ok(page.text.includes("&lt;img src=x onerror=alert(1)&gt;&quot;Bob&#39;"));
    assert.ok(!page.text.includes("<img"));
    assert.ok(!page.text.includes(TOKEN));
    assert.doesNotMatch(page.text, /(src|href)=["']?https?:/i, "no external resources");
    // The inline script at least parses.
    const script = /<script nonce="[^"]+">([\s\S]*?)<\/script>/.exec(page.text)?.[1];
    assert.ok(script);
    assert.doesNotThrow(() => new Function(script));

    const missing = await call(rt.url, "GET", "/i/AAAAAAAAAAAAAAAAAAAAAAAA", undefined, null);
    assert.equal(missing.status, 404);
    assert.match(missing.text, /Conversation not found/);
  });

  it("answers a human message in character and lists messages after a sequence number", async () => {
    const rt = await start();
    const p = await provision(rt, { agentName: "Captain Bob", instructions: "You are a pirate. Talk about the sea." });
    const invite: string = p.body.inviteUrl;

    const posted = await say(invite, "  Ahoy there!  ");
    assert.equal(posted.status, 201);
    const [human, reply] = posted.body.messages;
    assert.equal(human.role, "human");
    assert.equal(human.text, "Ahoy there!");
    assert.equal(reply.role, "agent");
    assert.equal(reply.from, "Captain Bob");
    assert.equal(reply.text, "Captain Bob: As a pirate, I hear you: you said “Ahoy there!”. (That's your 1st message.)");

    const all = await roomState(invite);
    assert.equal(all.status, 200);
    assert.equal(all.body.conversationId, p.body.conversationId);
    assert.deepEqual(
      all.body.messages.filter((m: any) => m.role !== "system").map((m: any) => m.text),
      [human.text, reply.text],
    );

    const second = await say(invite, "Seen any whales?");
    assert.match(second.body.messages[1].text, /2nd message/);
    const newer = await roomState(invite, reply.seq);
    assert.deepEqual(
      newer.body.messages.map((m: any) => m.role),
      ["human", "agent"],
    );
  });

  it("rejects bad messages", async () => {
    const rt = await start();
    const p = await provision(rt, { agentName: "Ada", instructions: "" });
    const invite: string = p.body.inviteUrl;
    const path = `${roomPath(invite)}/messages`;
    assert.equal((await say(invite, "x".repeat(MAX_MESSAGE_CHARS))).status, 201);
    const big = await say(invite, "x".repeat(MAX_MESSAGE_CHARS + 1));
    assert.equal(big.status, 400);
    assert.match(big.body.error, /longer than 2000/);
    assert.equal((await say(invite, "   ")).status, 400);
    assert.equal((await call(rt.url, "POST", path, { text: 42 }, null)).status, 400);
    assert.equal((await call(rt.url, "POST", path, "{not json", null)).status, 400);
    assert.equal((await call(rt.url, "POST", path, "[]", null)).status, 400);
    assert.equal((await call(rt.url, "GET", `${path}?after=-1`, undefined, null)).status, 400);
    assert.equal((await call(rt.url, "POST", `/i/AAAAAAAAAAAAAAAAAAAAAAAA/messages`, { text: "hi" }, null)).status, 404);
  });
});

describe("joining another runtime's room", () => {
  it("B joins A's invite; a human message gets replies from both agents; B leaves on reset", async () => {
    const a = await start();
    const b = await start();
    const pa = await provision(a, { agentName: "Alice", instructions: "You are a pirate." });
    const invite: string = pa.body.inviteUrl;

    const pb = await provision(b, { agentName: "Bob", instructions: "You are a librarian.", joinUrl: invite });
    assert.equal(pb.status, 200);
    assert.deepEqual(pb.body, { ok: true, inviteUrl: invite, conversationId: pa.body.conversationId, joined: true, status: "joined" });
    const sb = (await api(b, "GET", "/convos/status")).body;
    assert.equal(sb.conversationId, pa.body.conversationId);
    assert.equal(sb.pending, false);
    assert.equal(sb.clean, false);
    assert.equal(sb.inviteUrl, invite);
    assert.ok(sb.inboxId);

    const posted = await say(invite, "Recommend a book?");
    assert.equal(posted.status, 201);
    const replies = posted.body.messages.filter((m: any) => m.role === "agent");
    assert.deepEqual(
      replies.map((m: any) => m.from),
      ["Alice", "Bob"],
    );
    assert.match(replies[0].text, /^Alice: As a pirate, /);
    assert.match(replies[1].text, /^Bob: As a librarian, I hear you: you said “Recommend a book\?”/);
    assert.ok(replies[1].memberId);

    // B remembers what it was told.
    const second = await say(invite, "And another?");
    const bob2 = second.body.messages.find((m: any) => m.from === "Bob");
    assert.match(bob2.text, /2nd message/);

    const members = (await roomState(invite)).body.members;
    assert.deepEqual(
      members.map((m: any) => [m.name, m.status]),
      [["Bob", "active"]],
    );
    assert.ok(!JSON.stringify(members).includes("secret"), "member secrets are never shown");

    // B resets: it leaves A's room and A stops asking it.
    assert.deepEqual((await api(b, "POST", "/convos/reset", {})).body.status, CLEAN);
    assert.deepEqual((await roomState(invite)).body.members, []);
    const third = await say(invite, "Anyone there?");
    assert.deepEqual(
      third.body.messages.filter((m: any) => m.role === "agent").map((m: any) => m.from),
      ["Alice"],
    );
  });

  it("skips a member that does not answer, without failing the message", async () => {
    const a = await start({ deliverTimeoutMs: 300 });
    const b = await start();
    const pa = await provision(a, { agentName: "Alice", instructions: "" });
    await provision(b, { agentName: "Bob", instructions: "", joinUrl: pa.body.inviteUrl });
    await b.close(); // B is gone without leaving
    const posted = await say(pa.body.inviteUrl, "hello?");
    assert.equal(posted.status, 201);
    assert.deepEqual(
      posted.body.messages.filter((m: any) => m.role === "agent").map((m: any) => m.from),
      ["Alice"],
    );
  });

  it("fails provision clearly for an unknown invite and stays clean", async () => {
    const a = await start();
    const b = await start();
    const r = await provision(b, { agentName: "Bob", instructions: "", joinUrl: `${a.url}/i/AAAAAAAAAAAAAAAAAAAAAAAA` });
    assert.equal(r.status, 422);
    assert.match(r.body.error, /Invite not found/);
    assert.deepEqual((await api(b, "GET", "/convos/status")).body, CLEAN);

    const closed = await start();
    const port = closed.port;
    await closed.close();
    const down = await provision(b, { agentName: "Bob", instructions: "", joinUrl: `http://127.0.0.1:${port}/i/AAAAAAAAAAAAAAAAAAAAAAAA` });
    assert.equal(down.status, 502);
    assert.match(down.body.error, /Could not reach/);
    assert.deepEqual((await api(b, "GET", "/convos/status")).body, CLEAN);
  });

  it("protects /convos/deliver with the membership secret", async () => {
    const a = await start();
    const b = await start();
    const pa = await provision(a, { agentName: "Alice", instructions: "" });
    await provision(b, { agentName: "Bob", instructions: "", joinUrl: pa.body.inviteUrl });
    const body = { conversationId: pa.body.conversationId, text: "hi", from: "human" };
    assert.equal((await api(b, "POST", "/convos/deliver", body, null)).status, 401);
    assert.equal((await api(b, "POST", "/convos/deliver", body, TOKEN)).status, 401);
    // Nobody but the member can remove it from the room.
    const member = (await roomState(pa.body.inviteUrl)).body.members[0];
    const kick = await call(a.url, "DELETE", `${roomPath(pa.body.inviteUrl)}/members/${member.id}`, undefined, "guess");
    assert.equal(kick.status, 401);
    assert.equal((await roomState(pa.body.inviteUrl)).body.members.length, 1);
  });

  it("requireApproval: B waits as pending until a human approves it", async () => {
    const a = await start();
    const b = await start({ pendingPollMs: 50 });
    const pa = await provision(a, { agentName: "Alice", instructions: "", metadata: { requireApproval: true } });
    const invite: string = pa.body.inviteUrl;

    const pb = await provision(b, { agentName: "Bob", instructions: "", joinUrl: invite });
    assert.equal(pb.status, 200);
    assert.deepEqual(pb.body, { ok: true, inviteUrl: invite, conversationId: null, joined: false, status: "pending_acceptance" });
    const waiting = (await api(b, "GET", "/convos/status")).body;
    assert.equal(waiting.pending, true);
    assert.equal(waiting.conversationId, null);
    assert.equal(waiting.clean, false);

    const state = await roomState(invite);
    assert.equal(state.body.requireApproval, true);
    const [member] = state.body.members;
    assert.equal(member.name, "Bob");
    assert.equal(member.status, "pending");

    // A pending member is not asked.
    const before = await say(invite, "hi");
    assert.deepEqual(
      before.body.messages.filter((m: any) => m.role === "agent").map((m: any) => m.from),
      ["Alice"],
    );

    const memberPath = `${roomPath(invite)}/members/${member.id}`;
    assert.equal((await call(a.url, "GET", memberPath, undefined, null)).body.status, "pending");
    const approved = await call(a.url, "POST", `${memberPath}/approve`, undefined, null);
    assert.equal(approved.status, 200);
    assert.deepEqual(approved.body, { memberId: member.id, name: "Bob", status: "active", conversationId: pa.body.conversationId });

    const bound = await waitFor("B to learn it was approved", async () => {
      const s = (await api(b, "GET", "/convos/status")).body;
      return s.pending === false && s.conversationId ? s : null;
    });
    assert.equal(bound.conversationId, pa.body.conversationId);

    const afterApproval = await say(invite, "hello both");
    assert.deepEqual(
      afterApproval.body.messages.filter((m: any) => m.role === "agent").map((m: any) => m.from),
      ["Alice", "Bob"],
    );
    assert.equal((await call(a.url, "POST", `${roomPath(invite)}/members/mem_nope/approve`, undefined, null)).status, 404);
  });

  it("a pending member whose host closes the room stops waiting", async () => {
    const a = await start();
    const b = await start({ pendingPollMs: 50 });
    const pa = await provision(a, { agentName: "Alice", instructions: "", metadata: { requireApproval: true } });
    await provision(b, { agentName: "Bob", instructions: "", joinUrl: pa.body.inviteUrl });
    await api(a, "POST", "/convos/reset", {});
    const s = await waitFor("B to stop waiting", async () => {
      const st = (await api(b, "GET", "/convos/status")).body;
      return st.pending === false ? st : null;
    });
    assert.equal(s.conversationId, null);
    assert.equal(s.clean, false, "still carries the claim's agent until reset");
    assert.deepEqual((await api(b, "POST", "/convos/reset", {})).body.status, CLEAN);
  });
});

describe("bad input", () => {
  const cases: Array<[string, unknown]> = [
    ["missing agentName", { instructions: "x" }],
    ["empty agentName", { agentName: "  ", instructions: "x" }],
    ["agentName not a string", { agentName: 7, instructions: "x" }],
    ["missing instructions", { agentName: "A" }],
    ["instructions not a string", { agentName: "A", instructions: ["x"] }],
    ["joinUrl not a string", { agentName: "A", instructions: "", joinUrl: 5 }],
    ["joinUrl not an invite", { agentName: "A", instructions: "", joinUrl: "https://example.com/join/abc" }],
    ["joinUrl not http", { agentName: "A", instructions: "", joinUrl: "ftp://h/i/AAAAAAAAAAAAAAAAAAAAAAAA" }],
    ["profileImage not a string", { agentName: "A", instructions: "", profileImage: {} }],
    ["metadata an array", { agentName: "A", instructions: "", metadata: [1] }],
    ["metadata a string", { agentName: "A", instructions: "", metadata: "x" }],
    ["body an array", [{ agentName: "A", instructions: "" }]],
    ["body a string", '"hello"'],
    ["malformed JSON", '{"agentName": "A",'],
    ["empty body", undefined],
  ];
  for (const [name, body] of cases) {
    it(`/pool/provision: ${name} → 400`, async () => {
      const rt = await start();
      const r = await provision(rt, body as Record<string, unknown>);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.equal(typeof r.body.error, "string");
      assert.deepEqual((await api(rt, "GET", "/convos/status")).body, CLEAN);
    });
  }

  it("accepts null for optional fields", async () => {
    const rt = await start();
    const r = await provision(rt, { agentName: "A", instructions: "", joinUrl: null, metadata: null, profileImage: null });
    assert.equal(r.status, 200);
    assert.equal(r.body.status, "created");
  });

  it("rejects an oversized body with 413", async () => {
    const rt = await start();
    const r = await provision(rt, { agentName: "A", instructions: "x".repeat(300_000) });
    assert.equal(r.status, 413);
  });

  it("validates the member and legacy endpoints", async () => {
    const rt = await start();
    const p = await provision(rt, { agentName: "A", instructions: "" });
    const members = `${roomPath(p.body.inviteUrl)}/members`;
    const good = { name: "B", deliverUrl: "http://127.0.0.1:1/convos/deliver", secret: "s".repeat(32) };
    assert.equal((await call(rt.url, "POST", members, { ...good, deliverUrl: "javascript:alert(1)" }, null)).status, 400);
    assert.equal((await call(rt.url, "POST", members, { ...good, deliverUrl: "not a url" }, null)).status, 400);
    assert.equal((await call(rt.url, "POST", members, { ...good, secret: "short" }, null)).status, 400);
    assert.equal((await call(rt.url, "POST", members, { ...good, name: 1 }, null)).status, 400);
    assert.equal((await call(rt.url, "POST", members, "{", null)).status, 400);

    const other = await start();
    assert.equal((await api(other, "POST", "/convos/join", { profileName: "B" })).status, 400);
    assert.equal((await api(other, "POST", "/convos/join", { inviteUrl: p.body.inviteUrl })).status, 400);
    assert.equal((await api(other, "POST", "/convos/conversation", {})).status, 400);
    assert.equal((await api(other, "POST", "/convos/conversation", { name: "R", metadata: 3 })).status, 400);
  });
});

describe("older /convos calls", () => {
  it("/convos/conversation creates and /convos/join joins", async () => {
    const a = await start();
    const b = await start();
    const c = await api(a, "POST", "/convos/conversation", { name: "Book club", profileName: "Alice", instructions: "You are a critic." });
    assert.equal(c.status, 200);
    assert.deepEqual(Object.keys(c.body).sort(), ["conversationId", "inviteSlug", "inviteUrl"]);
    assert.equal(c.body.inviteUrl, `${a.publicUrl}/i/${c.body.inviteSlug}`);
    assert.equal((await api(a, "POST", "/convos/conversation", { name: "Again" })).status, 409);
    const page = await call(a.url, "GET", `/i/${c.body.inviteSlug}`, undefined, null);
    assert.match(page.text, /<h1>Book club<\/h1>/);

    const j = await api(b, "POST", "/convos/join", { inviteUrl: c.body.inviteUrl, profileName: "Bob" });
    assert.equal(j.status, 200);
    assert.deepEqual(j.body, { status: "joined", conversationId: c.body.conversationId });
    assert.equal((await api(b, "POST", "/convos/join", { inviteUrl: c.body.inviteUrl, profileName: "Bob" })).status, 409);

    const posted = await say(c.body.inviteUrl, "thoughts?");
    assert.deepEqual(
      posted.body.messages.filter((m: any) => m.role === "agent").map((m: any) => m.from),
      ["Alice", "Bob"],
    );
  });

  it("/convos/join reports pending_acceptance", async () => {
    const a = await start();
    const b = await start();
    const c = await api(a, "POST", "/convos/conversation", { name: "Private", metadata: { requireApproval: true } });
    const j = await api(b, "POST", "/convos/join", { inviteUrl: c.body.inviteUrl, profileName: "Bob" });
    assert.deepEqual(j.body, { status: "pending_acceptance" });
  });
});

describe("fault knobs", () => {
  it("failProvision answers 500 and leaves the runtime clean", async () => {
    const rt = await start({ failProvision: true });
    const r = await provision(rt, { agentName: "A", instructions: "" });
    assert.equal(r.status, 500);
    assert.match(r.body.error, /RUNTIME_FAIL_PROVISION/);
    assert.deepEqual((await api(rt, "GET", "/convos/status")).body, CLEAN);
  });

  it("provisionDelayMs delays provision; a concurrent provision gets 409", async () => {
    const rt = await start({ provisionDelayMs: 300 });
    const t0 = Date.now();
    const first = provision(rt, { agentName: "A", instructions: "" });
    const inFlight = await waitFor("provision to be in flight", async () => {
      const s = (await api(rt, "GET", "/convos/status")).body;
      return s.clean === false ? s : null;
    });
    assert.equal(inFlight.conversationId, null);
    const second = await provision(rt, { agentName: "B", instructions: "" });
    assert.equal(second.status, 409);
    const r = await first;
    assert.equal(r.status, 200);
    assert.ok(Date.now() - t0 >= 290, `took ${Date.now() - t0} ms`);
  });

  it("a reset during a delayed provision wins", async () => {
    const rt = await start({ provisionDelayMs: 300 });
    const first = provision(rt, { agentName: "A", instructions: "" });
    await waitFor("provision to be in flight", async () => (await api(rt, "GET", "/convos/status")).body.clean === false);
    await api(rt, "POST", "/convos/reset", {});
    assert.equal((await first).status, 409);
    assert.deepEqual((await api(rt, "GET", "/convos/status")).body, CLEAN);
  });

  it("resetDirty leaves clean:false after reset", async () => {
    const rt = await start({ resetDirty: true });
    await provision(rt, { agentName: "A", instructions: "" });
    const r = await api(rt, "POST", "/convos/reset", {});
    assert.deepEqual(r.body.status, { ...CLEAN, clean: false });
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function spawnRuntime(env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", "src/runtime/main.ts"], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  return { child, exited, out: () => stdout, err: () => stderr };
}

async function withDeadline<T>(what: string, p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe("main.ts as a process", () => {
  it("boots, becomes healthy, and exits 0 on SIGTERM", async () => {
    const port = await freePort();
    const proc = spawnRuntime({ PORT: String(port), GATEWAY_TOKEN: TOKEN, RUNTIME_BOOT_DELAY_MS: "200", INSTANCE_ID: "inst_test" });
    const base = `http://127.0.0.1:${port}`;
    const health = await waitFor(
      "the spawned runtime to be healthy",
      async () => {
        if (proc.child.exitCode !== null) assert.fail(`runtime exited early: ${proc.err()}`);
        const r = await call(base, "GET", "/pool/health", undefined, null);
        return r.status === 200 ? r : null;
      },
      15_000,
    );
    assert.deepEqual(health.body, { ready: true, version: PKG_VERSION, runtime: RUNTIME_NAME });
    assert.equal(proc.out(), `listening on ${base}\n`);
    assert.equal((await call(base, "GET", "/convos/status", undefined, "nope")).status, 401);
    const p = await call(base, "POST", "/pool/provision", { agentName: "A", instructions: "" });
    assert.ok(p.body.inviteUrl.startsWith(`${base}/i/`), "PUBLIC_URL defaults to http://127.0.0.1:<PORT>");

    proc.child.kill("SIGTERM");
    const { code, signal } = await withDeadline("exit after SIGTERM", proc.exited, 5000);
    assert.equal(signal, null);
    assert.equal(code, 0);
  });

  it("RUNTIME_EXIT_AFTER_MS makes it exit on its own", async () => {
    const port = await freePort();
    const proc = spawnRuntime({ PORT: String(port), GATEWAY_TOKEN: TOKEN, RUNTIME_EXIT_AFTER_MS: "300" });
    const { code } = await withDeadline("self-exit", proc.exited, 15_000);
    assert.equal(code, 1);
    assert.match(proc.err(), /RUNTIME_EXIT_AFTER_MS/);
  });

  it("exits 1 with a message when GATEWAY_TOKEN is missing", async () => {
    const env: Record<string, string> = { PORT: "0", GATEWAY_TOKEN: "" };
    const proc = spawnRuntime(env);
    const { code } = await withDeadline("exit", proc.exited, 15_000);
    assert.equal(code, 1);
    assert.match(proc.err(), /GATEWAY_TOKEN is required/);
  });
});
