/**
 * Live updates by LISTEN/NOTIFY (issue 10): the database's trigger announces every status change,
 * one reader per process reads it once and fans it out to every event stream and dashboard page.
 *
 * - Two replicas on real Postgres: a change made through replica A's API reaches SSE and dashboard
 *   clients of replica B by the notification, not by polling (B's safety read is set to a minute
 *   and never runs).
 * - Forty clients on one process cost what one costs: one read (same statements) per change.
 * - A lost notification is caught by the safety read; a slow client is dropped; clients are bounded.
 * - The trigger path is the same on PGlite (its own LISTEN) and on Postgres.
 * - The reconciler does not wake on "changed" hints (its own writes would loop it).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { randomIds, systemClock } from "../src/clock.ts";
import { ChangeFeed } from "../src/dashboard/live.ts";
import type { KyselyStore } from "../src/db/kysely-store.ts";
import type { PoolHint, Store } from "../src/db/store.ts";
import { PoolChangeWatcher } from "../src/http/changes.ts";
import { PoolEventStream } from "../src/http/events.ts";
import { changeWatcherOf } from "../src/http/server.ts";
import { LIVE_STATUSES } from "../src/instance/status.ts";
import { silentLogger } from "../src/logger.ts";
import type { PoolSummary } from "../src/pool/operations.ts";
import { Reconciler } from "../src/pool/reconciler.ts";
import { MemoryProvider } from "../src/provider/memory.ts";
import { inMemoryPglite, postgresLabel, realPostgres, type TestDatabase } from "./support/databases.ts";
import { InstantRuntimes, startTestServer, type TestServer } from "./support/http-server.ts";
import { waitFor } from "./support/process.ts";

const statements = (s: Store) => (s as KyselyStore).statementCount;

/** Reads a server-sent event stream in the background. */
async function openStream(url: string, headers: Record<string, string>) {
  const res = await fetch(url, { headers });
  assert.equal(res.status, 200, `${url} answered ${res.status}`);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  const s = { text: "" };
  void (async () => {
    for (;;) {
      const r = await reader.read().catch(() => ({ done: true as const, value: undefined }));
      if (r.done) return;
      s.text += dec.decode(r.value, { stream: true });
    }
  })();
  return {
    get text() {
      return s.text;
    },
    count: (re: RegExp) => (s.text.match(new RegExp(re, "g")) ?? []).length,
    cancel: () => reader.cancel().catch(() => undefined),
  };
}

async function listen(t: TestServer): Promise<string> {
  return t.app.listen({ port: 0, host: "127.0.0.1" });
}

async function dashboardCookie(url: string, password: string): Promise<string> {
  const res = await fetch(`${url}/login`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ password }).toString(),
    redirect: "manual",
  });
  const cookie = res.headers.get("set-cookie")?.split(";")[0];
  assert.ok(cookie, `login answered ${res.status} without a cookie`);
  return cookie;
}

describe(`live updates across replicas: ${postgresLabel}`, () => {
  let db: TestDatabase;
  let storeA: Store;
  let storeB: Store;
  let a: TestServer;
  let b: TestServer;
  let urlA: string;
  let urlB: string;
  const streams: Array<{ cancel(): Promise<unknown> }> = [];

  before(async () => {
    db = await realPostgres();
    storeA = await db.open();
    storeB = await db.open();
    a = await startTestServer({ store: storeA, holder: "replica-a", minIdle: 0, maxTotal: 50 });
    // B reads without a hint only once a minute: whatever reaches its clients sooner came by NOTIFY.
    b = await startTestServer({ store: storeB, holder: "replica-b", minIdle: 0, maxTotal: 50, liveSafetyReadMs: 60_000 });
    urlA = await listen(a);
    urlB = await listen(b);
    // B's LISTEN connection is up once a subscription to its store has resolved.
    await storeB.subscribeHints(() => undefined);
  });
  after(async () => {
    for (const s of streams) await s.cancel();
    await a?.close();
    await b?.close();
    await storeA?.close();
    await storeB?.close();
    await db?.stop();
  });

  const api = (url: string, key: string) => async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { "content-type": "application/json" } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json()) as any };
  };

  it("a change made through replica A reaches replica B's SSE and dashboard clients by NOTIFY, without polling", async () => {
    const sse = await openStream(`${urlB}/api/pool/events`, { authorization: `Bearer ${b.apiKey}` });
    const page = await openStream(`${urlB}/dashboard/events`, { cookie: await dashboardCookie(urlB, b.apiKey) });
    streams.push(sse, page);
    await waitFor("B's first messages", () => /event: counts/.test(sse.text) && /event: changed/.test(page.text), 10_000, 10);
    const changedBefore = page.count(/event: changed/);
    const t0 = Date.now();

    const add = await api(urlA, a.apiKey)("POST", "/api/pool/replenish", { count: 1 });
    assert.equal(add.status, 200, JSON.stringify(add.body));
    const id = add.body.created[0] as string;

    await waitFor(
      "the create on B's event stream",
      () => new RegExp(`event: status\\ndata: \\{[^\\n]*"to":"starting"[^\\n]*"instanceId":"${id}"`).test(sse.text),
      10_000,
      10,
    );
    await waitFor("B's dashboard told", () => page.count(/event: changed/) > changedBefore, 10_000, 10);
    const elapsed = Date.now() - t0;
    const watcher = changeWatcherOf(b.app)!;
    assert.equal(watcher.reads.safety, 0, "B never fell back to its safety read");
    assert.ok(watcher.reads.hint >= 1, "B read because of a hint");
    assert.ok(elapsed < 30_000, `delivered in ${elapsed} ms, well under B's one-minute safety read`);
  });

  it("forty clients on one process cost one read per change, the same statements as one client", async () => {
    const watcher = changeWatcherOf(b.app)!;
    type Stream = Awaited<ReturnType<typeof openStream>>;
    /** One change on replica A; B's reads and statements until every client of B has it. */
    const oneChange = async (sse: Stream[], pages: Stream[]) => {
      await watcher.readNow(); // quiet first: no read in flight on B
      const seen = pages.map((p) => p.count(/event: changed/));
      const reads0 = watcher.reads.hint + watcher.reads.safety;
      const s0 = statements(storeB);
      const add = await api(urlA, a.apiKey)("POST", "/api/pool/replenish", { count: 1 });
      const id = add.body.created[0] as string;
      await waitFor(
        `${sse.length + pages.length} clients told of ${id}`,
        () => sse.every((c) => c.text.includes(`"instanceId":"${id}"`)) && pages.every((p, i) => p.count(/event: changed/) > seen[i]!),
        10_000,
        10,
      );
      return { reads: watcher.reads.hint + watcher.reads.safety - reads0, statements: statements(storeB) - s0 };
    };

    const first = await openStream(`${urlB}/api/pool/events`, { authorization: `Bearer ${b.apiKey}` });
    streams.push(first);
    await waitFor("the first client connected", () => /event: counts/.test(first.text), 10_000, 10);
    // One stream and one dashboard page: the dashboard's feed adds its own read of the rollouts
    // (once per process, not per page).
    const cookie = await dashboardCookie(urlB, b.apiKey);
    const firstPage = await openStream(`${urlB}/dashboard/events`, { cookie });
    streams.push(firstPage);
    await waitFor("the first page connected", () => /event: changed/.test(firstPage.text), 10_000, 10);
    const one = await oneChange([first], [firstPage]);

    const sse = [first];
    for (let i = 0; i < 29; i++) sse.push(await openStream(`${urlB}/api/pool/events`, { authorization: `Bearer ${b.apiKey}` }));
    const pages: Stream[] = [firstPage];
    for (let i = 0; i < 9; i++) pages.push(await openStream(`${urlB}/dashboard/events`, { cookie }));
    streams.push(...sse, ...pages);
    await waitFor(
      "40 clients connected",
      () => sse.every((c) => /event: counts/.test(c.text)) && pages.every((p) => /event: changed/.test(p.text)),
      10_000,
      10,
    );
    const forty = await oneChange(sse, pages);

    assert.equal(one.reads, 1, "one read for the change with one client");
    assert.equal(forty.reads, 1, "one read for the change with forty clients");
    assert.equal(forty.statements, one.statements, `statements per change: ${one.statements} with one client, ${forty.statements} with forty`);
    // The new events, then the summary (counts, the pool's record and the foreign-resource
    // notice), then the rollouts' marker (live pages show rollouts).
    assert.ok(one.statements <= 5, `a read is the new events and the summary: ${one.statements} statements`);
  });
});

// ---- the reader, the streams and the trigger, in one process ----

const summaryOf = (store: Store, pool: string) => async (): Promise<PoolSummary> => {
  const c = await store.countByStatus(pool);
  let total = 0;
  for (const s of LIVE_STATUSES) total += c[s];
  return { pool, runtime: "reference", minIdle: 0, maxTotal: 10, templateHash: "t", counts: { ...c, total }, foreign: [] };
};

/** A response that records what it is sent; `backlog` plays a client that stopped reading. */
class FakeResponse extends EventEmitter {
  chunks: string[] = [];
  writableLength = 0;
  writableEnded = false;
  destroyed = false;
  writeHead(): this {
    return this;
  }
  write(chunk: string): boolean {
    this.chunks.push(chunk);
    return true;
  }
  end(): void {
    if (this.writableEnded) return;
    this.writableEnded = true;
    this.emit("close");
  }
  get text(): string {
    return this.chunks.join("");
  }
}
const fakeReq = () => ({ destroyed: false }) as unknown as IncomingMessage;
const asRes = (r: FakeResponse) => r as unknown as ServerResponse;

function backends(): Array<[string, () => Promise<TestDatabase>]> {
  return [
    ["PGlite", inMemoryPglite],
    [postgresLabel, realPostgres],
  ];
}

for (const [label, open] of backends()) {
  describe(`live updates in one process: ${label}`, () => {
    let db: TestDatabase;
    let store: Store;
    let seq = 0;
    const newPool = async () => {
      const id = `p${Date.now().toString(36)}${seq++}`;
      await store.upsertPool({ id, minIdle: 0, maxTotal: 10 });
      return id;
    };
    const addInstance = (pool: string) =>
      store.insertInstance({ id: `i-${pool}-${seq++}`, poolId: pool, provider: "memory", name: "n", gatewayToken: "t", reason: "test" });

    before(async () => {
      db = await open();
      store = await db.open();
    });
    after(async () => {
      await store?.close();
      await db?.stop();
    });

    it("a status change NOTIFYs {pool, kind: changed} through the database's trigger", async () => {
      const pool = await newPool();
      const got: PoolHint[] = [];
      const off = await store.subscribeHints((h) => got.push(h));
      try {
        await addInstance(pool);
        await waitFor("the trigger's hint", () => got.some((h) => h.pool === pool && h.kind === "changed"), 10_000, 10);
      } finally {
        await off();
      }
    });

    it("a lost notification is caught by the safety read", async () => {
      const pool = await newPool();
      // A store whose hints never arrive (a dropped LISTEN connection).
      const deaf = new Proxy(store, {
        get: (t, k) => {
          if (k === "subscribeHints") return async () => async () => undefined;
          const v = Reflect.get(t, k, t);
          return typeof v === "function" ? v.bind(t) : v;
        },
      }) as Store;
      const changes = new PoolChangeWatcher({ store: deaf, poolId: pool, summary: summaryOf(store, pool), logger: silentLogger, safetyReadMs: 100 });
      const stream = new PoolEventStream({ store: deaf, poolId: pool, changes, summary: summaryOf(store, pool), view: (s) => s, logger: silentLogger });
      const res = new FakeResponse();
      try {
        await stream.serve(fakeReq(), { hijack() {}, raw: asRes(res) });
        const inst = await addInstance(pool);
        await waitFor("the change by the safety read", () => res.text.includes(`"instanceId":"${inst.id}"`), 10_000, 10);
        assert.equal(changes.reads.hint, 0);
        assert.ok(changes.reads.safety >= 1);
      } finally {
        await stream.close();
        await changes.close();
      }
    });

    it("streams are bounded, a client that stops reading is dropped, and the others still get every change", async () => {
      const pool = await newPool();
      const summary = summaryOf(store, pool);
      const changes = new PoolChangeWatcher({ store, poolId: pool, summary, logger: silentLogger, minGapMs: 0 });
      const stream = new PoolEventStream({ store, poolId: pool, changes, summary, view: (s) => s, logger: silentLogger, maxClients: 2 });
      const feed = new ChangeFeed({ store, poolId: pool, changes, summary, logger: silentLogger });
      const [fast, slow, page, slowPage] = [new FakeResponse(), new FakeResponse(), new FakeResponse(), new FakeResponse()];
      try {
        await stream.serve(fakeReq(), { hijack() {}, raw: asRes(fast) });
        await stream.serve(fakeReq(), { hijack() {}, raw: asRes(slow) });
        await assert.rejects(stream.serve(fakeReq(), { hijack() {}, raw: asRes(new FakeResponse()) }), { code: "NOT_READY" });
        await feed.add(asRes(page), Date.now() + 60_000);
        await feed.add(asRes(slowPage), Date.now() + 60_000);
        assert.equal(feed.clientCount, 2);
        assert.equal(changes.listenerCount, 2, "one listener per stream kind, not per client");

        slow.writableLength = 2 << 20; // 2 MiB unread
        slowPage.writableLength = 1 << 20;
        const inst = await addInstance(pool);
        await changes.readNow();
        await waitFor("the fast client told", () => fast.text.includes(`"instanceId":"${inst.id}"`), 10_000, 10);
        assert.equal(slow.writableEnded, true, "the slow stream was ended");
        assert.equal(slowPage.writableEnded, true, "the slow page was ended");
        assert.equal(stream.clientCount, 1);
        assert.equal(feed.clientCount, 1);
        assert.ok(!slow.text.includes(inst.id), "nothing more was queued for the slow client");
        assert.equal((page.text.match(/event: changed/g) ?? []).length, 2, "the page got the connect message and the change");
      } finally {
        await stream.close();
        feed.close();
        await changes.close();
      }
      assert.equal(changes.active, false, "the reader stops with its last listener");
    });

    it("the reconciler does not wake on a 'changed' hint (its own writes would loop it)", async () => {
      const pool = await newPool();
      const runtimes = new InstantRuntimes();
      let passes = 0;
      const r = new Reconciler({
        ownerId: "own01",
        store,
        providers: new Map([["memory", new MemoryProvider()]]),
        defaultProvider: "memory",
        health: runtimes,
        statusReader: runtimes,
        clock: systemClock,
        ids: randomIds,
        logger: silentLogger,
        spec: { orphanGraceMs: 60_000, maxDeletesPerTick: 10, maxCreatesPerTick: 10 },
        policy: { stuckTimeoutMs: 900_000, failureThreshold: 3, healthRecordIntervalMs: 60_000, createGraceMs: 120_000 },
        intervalMs: 3_600_000,
        healthTimeoutMs: 1000,
        healthConcurrency: 4,
        onTick: () => void passes++,
      });
      const got: PoolHint[] = [];
      const off = await store.subscribeHints((h) => got.push(h));
      r.start();
      try {
        await waitFor("the first pass", () => passes === 1 && r.lease !== null, 10_000, 10);
        await addInstance(pool);
        await store.publishHint({ pool, kind: "changed" });
        await waitFor("both hints delivered", () => got.filter((h) => h.pool === pool && h.kind === "changed").length >= 2, 10_000, 10);
        // A wake schedules a pass on a 0 ms timer: this is ample time for one to have run.
        await sleep(300);
        assert.equal(passes, 1, "no pass for a 'changed' hint");
      } finally {
        await off();
        await r.stop();
      }
    });
  });
}
