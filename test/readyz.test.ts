/**
 * `/healthz` and `/readyz` of the real server (issue 10): liveness says the process is up;
 * readiness says the database answers and this replica's reconcile loop completed a pass, and it
 * turns 503 NOT_READY (with a reason, never a driver's message) when the database goes away, while
 * liveness stays 200.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { loadConfig } from "../src/config.ts";
import { MemoryProvider } from "../src/provider/memory.ts";
import { serve } from "../src/serve.ts";
import { postgresLabel } from "./support/databases.ts";
import { startTestPostgres } from "./support/postgres.ts";
import { waitFor } from "./support/process.ts";

describe(`/healthz and /readyz: ${postgresLabel}`, () => {
  it("ready once a pass completed; not ready, with a reason, when the database is gone; alive throughout", async () => {
    const pg = await startTestPostgres();
    const dir = mkdtempSync(join(tmpdir(), "agent-pool-readyz-"));
    const logs: string[] = [];
    const pool = await serve(
      loadConfig({
        DATABASE_URL: pg.url,
        DATA_DIR: dir,
        PORT: "0",
        POOL_API_KEY: "readyz-test-key-0123456789",
        POOL_MIN_IDLE: "0",
        TICK_INTERVAL_MS: "1000",
        LOG_LEVEL: "warn",
      }),
      {
        provider: new MemoryProvider(),
        logDestination: new Writable({
          write: (c, _e, cb) => {
            logs.push(String(c));
            cb();
          },
        }),
      },
    );
    let dropped = false;
    try {
      const get = async (path: string) => {
        const res = await fetch(`${pool.url}${path}`);
        return { status: res.status, body: (await res.json()) as any };
      };
      assert.deepEqual(await get("/healthz"), { status: 200, body: { ok: true } });
      const ready = await waitFor(
        "/readyz 200",
        async () => {
          const r = await get("/readyz");
          return r.status === 200 ? r : null;
        },
        15_000,
        20,
      );
      assert.equal(ready.body.ready, true);
      assert.ok(ready.body.lastPassAgeMs >= 0 && ready.body.lastPassAgeMs < 15_000);

      // The database goes away (dropped, its connections terminated).
      await pg.stop();
      dropped = true;
      const down = await waitFor(
        "/readyz 503",
        async () => {
          const r = await get("/readyz");
          return r.status === 503 ? r : null;
        },
        15_000,
        50,
      );
      assert.equal(down.body.code, "NOT_READY");
      assert.match(down.body.error, /^The database (refused the readiness check|did not answer within \d+ ms)\.$/);
      assert.ok(!JSON.stringify(down.body).includes(new URL(pg.url).pathname.slice(1)), "the database's name is not shown");
      assert.deepEqual(await get("/healthz"), { status: 200, body: { ok: true } }, "still alive");
    } finally {
      await pool.close();
      if (!dropped) await pg.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
